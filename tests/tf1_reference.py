"""TF1's own `static_rnn`/`dynamic_rnn` run on fixed inputs, as the reference `keras_unroll` must match.

Run as a script in a child process (TF1 needs tf-keras: `TF_USE_LEGACY_KERAS=1`, graph mode):

    TF_USE_LEGACY_KERAS=1 python tests/tf1_reference.py OUT_DIR

It writes `OUT_DIR/reference.npz` (inputs, lengths, initial states, outputs, final states and the cell's
`kernel`/`bias` of every case, plus the TF1 variable names) and a TF1 checkpoint `OUT_DIR/model.ckpt`
(`tf.compat.v1.train.Saver`, with its `checkpoint` index file) holding every case's cell.

Imported by the tests, it gives `tf1_reference(tmp_path_factory)`, which runs the child once per
test session (whichever test file asks first) and returns the loaded `Reference`.

It also holds the one way the tests start TensorFlow 1 as an oracle: `run_tf1(argv)` runs `python *argv` with
TF1's cells, and `run_fn_in_tf1(child, out_dir, archive)` runs a function's source and reads its `.npz` back, each in a
fresh process from `fork_server.py`'s `"tf1"` flavor (tf-keras imported once; see there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Callable, Dict, Sequence

import numpy as np

BATCH, STEPS, FEATURES, UNITS = 4, 3, 2, 5
# Every length TF1 treats specially: 0 (the initial state comes back), 1, T, and one in between.
LENGTHS = np.array([0, 1, STEPS, 2], np.int32)
# All rows shorter than T: dynamic_rnn stops at max(sequence_length) and emits zeros after it.
SHORT_LENGTHS = np.array([0, 1, 1, 2], np.int32)

# name -> which TF1 function, the `sequence_length` given (or None), whether `initial_state` is given,
# whether the input (and outputs) are time-major.
CASES: Dict[str, Dict[str, Any]] = {
    "static_list": dict(fn="static_rnn", lengths=None, initial_state=False, time_major=False),
    "static_len": dict(fn="static_rnn", lengths=LENGTHS, initial_state=True, time_major=False),
    "dynamic": dict(fn="dynamic_rnn", lengths=None, initial_state=False, time_major=False),
    "dynamic_len": dict(fn="dynamic_rnn", lengths=LENGTHS, initial_state=True, time_major=False),
    "dynamic_time_major": dict(fn="dynamic_rnn", lengths=LENGTHS, initial_state=False, time_major=True),
    "dynamic_short": dict(fn="dynamic_rnn", lengths=SHORT_LENGTHS, initial_state=True, time_major=False),
}


def _inputs() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    return {
        "x": rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32),
        "h0": (0.5 * rng.standard_normal((BATCH, UNITS))).astype(np.float32),
        "biases": (0.3 * rng.standard_normal((len(CASES), UNITS))).astype(np.float32),
    }


def main(out_dir: str) -> None:  # pragma: no cover - runs in the child process
    """Builds one TF1 graph with every case in its own variable scope, runs it, saves results and weights."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("tf1_reference.py needs TF_USE_LEGACY_KERAS=1 (TF1's BasicRNNCell lives in tf-keras)")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond: half the graph-building time
    v1 = tf.compat.v1
    data = _inputs()
    x = data["x"]
    saved: Dict[str, Any] = {"x": x, "h0": data["h0"]}
    fetches = {}
    cells = {}
    assigns = []
    for index, (name, case) in enumerate(CASES.items()):
        with v1.variable_scope(name, initializer=v1.random_uniform_initializer(-0.8, 0.8, seed=index)):
            cell = v1.nn.rnn_cell.BasicRNNCell(num_units=UNITS)
            kwargs: Dict[str, Any] = {"dtype": tf.float32}
            if case["lengths"] is not None:
                kwargs["sequence_length"] = tf.constant(case["lengths"])
                saved[f"{name}/lengths"] = case["lengths"]
            if case["initial_state"]:
                kwargs["initial_state"] = tf.constant(data["h0"])
            if case["fn"] == "static_rnn":
                steps = [tf.constant(x[:, t]) for t in range(STEPS)]
                outputs, state = v1.nn.static_rnn(cell, steps, **kwargs)
                outputs = tf.stack(outputs, axis=1)  # saved batch-major (B, T, H), like the input
            else:
                inputs = np.transpose(x, (1, 0, 2)) if case["time_major"] else x
                outputs, state = v1.nn.dynamic_rnn(cell, tf.constant(inputs), time_major=case["time_major"], **kwargs)
            fetches[name] = (outputs, state)
            cells[name] = cell
            assigns.append(cell.weights[1].assign(data["biases"][index]))  # TF1 starts the bias at zero
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run(assigns)
        results = session.run(fetches)
        for name, cell in cells.items():
            kernel, bias = cell.weights
            saved[f"{name}/outputs"], saved[f"{name}/state"] = results[name]
            saved[f"{name}/kernel"], saved[f"{name}/bias"] = session.run([kernel, bias])
            # The variable scope the cell's weights live under, e.g. "static_list/rnn/basic_rnn_cell".
            saved[f"{name}/scope"] = np.array(kernel.op.name.rsplit("/", 1)[0])
        saved["variables"] = np.array(sorted(v.op.name for v in v1.global_variables()))
        v1.train.Saver().save(session, os.path.join(out_dir, "model.ckpt"))
    np.savez(os.path.join(out_dir, "reference.npz"), **saved)


@dataclasses.dataclass
class Reference:
    """What the TF1 child produced: `data["<case>/outputs"]` etc., and the checkpoint prefix."""

    data: Dict[str, np.ndarray]
    checkpoint: str  # prefix, e.g. ".../model.ckpt"
    directory: str

    def case(self, name: str) -> Dict[str, Any]:
        """One case's arrays: `outputs` (in the case's layout, `(T, B, H)` for `time_major`), `state`,
        `kernel` `(F + H, H)`, `bias`, `scope`, `lengths` (or None), `initial_state` (or None), `time_major`."""
        found = {key.split("/", 1)[1]: value for key, value in self.data.items() if key.startswith(name + "/")}
        found["scope"] = str(found["scope"])
        found.setdefault("lengths", None)
        found["initial_state"] = self.data["h0"] if CASES[name]["initial_state"] else None
        found["time_major"] = CASES[name]["time_major"]
        return found


_CACHE: Dict[str, Reference] = {}


def tf1_reference(tmp_path_factory: Any) -> Reference:
    """Runs this script once per test session in a child process (legacy Keras, graph mode)."""
    if "reference" not in _CACHE:
        from helpers import load_npz  # the tests' helpers (this file also runs as the TF1 child)

        out_dir = tmp_path_factory.mktemp("tf1_reference")
        run_tf1([str(pathlib.Path(__file__).resolve()), str(out_dir)], timeout=300)
        data = load_npz(out_dir / "reference.npz")
        _CACHE["reference"] = Reference(data=data, checkpoint=str(out_dir / "model.ckpt"), directory=str(out_dir))
    return _CACHE["reference"]


# ------------------------------------------------------------------------ one TF1 process for the oracles
def run_tf1(argv: Sequence[str], *, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    """Runs `python *argv` in a child forked from this process's TF1 server (`fork_server`, flavor `"tf1"`): TF1's
    cells (tf-keras: `TF_USE_LEGACY_KERAS=1`), this repository importable, from the repository's root and with
    `extra_env`; a child that fails raises `RuntimeError` with the end of its output."""
    from fork_server import run_forked

    done = run_forked(argv, flavor="tf1", timeout=timeout, env=extra_env)
    if done.returncode != 0:
        raise RuntimeError(f"The TF1 child failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def run_fn_in_tf1(child: Callable[[str], None], out_dir: Any, archive: str) -> Dict[str, Any]:
    """Runs `child(out_dir)` through `run_tf1`, from its source (`child` must import what it uses), by TF1;
    returns the arrays it saved in `out_dir/archive`, a JSON `meta` entry decoded."""
    import inspect
    import textwrap

    from helpers import load_npz

    source = textwrap.dedent(inspect.getsource(child)) + f"\n{child.__name__}({str(out_dir)!r})\n"
    run_tf1(["-c", source])
    data: Dict[str, Any] = load_npz(pathlib.Path(out_dir) / archive)
    if "meta" in data:
        data["meta"] = json.loads(str(data["meta"]))
    return data


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
