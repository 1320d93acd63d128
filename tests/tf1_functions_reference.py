"""TF1's own functions (`dynamic_rnn`, `static_rnn`, `raw_rnn`) on the inputs of `tests/test_tf1_functions.py`.

Run as a script in a child process (TF1 needs tf-keras: `TF_USE_LEGACY_KERAS=1`, graph mode):

    TF_USE_LEGACY_KERAS=1 python tests/tf1_functions_reference.py OUT_DIR

It writes `OUT_DIR/reference.npz` (every case's results, the structure names TF1 returned) and a TF1
checkpoint `OUT_DIR/model.ckpt` holding every case's cell under the case's variable scope, with non-zero
biases. Imported, `functions_reference(tmp_path_factory)` runs the child once per session.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, Dict

import numpy as np

BATCH, STEPS, FEATURES = 2, 4, 3
GRU_UNITS, LSTM_UNITS = 5, 4
LENGTHS = np.array([4, 2], np.int32)
CLASSES = 3


def inputs() -> Dict[str, np.ndarray]:
    """The inputs every case reads (float64; a float32 case casts them)."""
    rng = np.random.default_rng(21)
    return {
        "x": rng.random((BATCH, STEPS, FEATURES)),
        "c0": 0.5 * rng.standard_normal((BATCH, LSTM_UNITS)),
        "h0": 0.5 * rng.standard_normal((BATCH, LSTM_UNITS)),  # c0 != h0: a swapped state shows
        "gru_bias": 0.3 * rng.standard_normal(3 * GRU_UNITS),
        "lstm_bias": 0.3 * rng.standard_normal(4 * LSTM_UNITS),
    }


def main(out_dir: str) -> None:  # pragma: no cover - runs in the child process
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("tf1_functions_reference.py needs TF_USE_LEGACY_KERAS=1")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond: half the graph-building time
    v1 = tf.compat.v1
    data = inputs()
    x64 = tf.constant(data["x"], tf.float64)
    init = v1.random_uniform_initializer(-0.8, 0.8, seed=7)
    fetches: Dict[str, Any] = {}
    biases = []
    names: Dict[str, str] = {}

    # Item 3: an unbuilt GRUCell given float64 inputs is built, and computes, in float64.
    with v1.variable_scope("gru64", initializer=init):
        cell = v1.nn.rnn_cell.GRUCell(GRU_UNITS)
        outputs, state = v1.nn.dynamic_rnn(cell, x64, dtype=tf.float64)
        fetches["gru64/outputs"], fetches["gru64/state"] = outputs, state
        names["gru64/dtype"] = outputs.dtype.name
        names["gru64/state_dtype"] = state.dtype.name
        names["gru64/kernel_dtype"] = cell.weights[0].dtype.base_dtype.name
        gate_bias, candidate_bias = cell.weights[1], cell.weights[3]
        biases += [
            gate_bias.assign(data["gru_bias"][: 2 * GRU_UNITS]),
            candidate_bias.assign(data["gru_bias"][2 * GRU_UNITS :]),
        ]

    # Item 3 with an LSTM: float64, c0 != h0, lengths, a non-zero bias.
    with v1.variable_scope("lstm64", initializer=init):
        cell = v1.nn.rnn_cell.BasicLSTMCell(LSTM_UNITS)
        start = v1.nn.rnn_cell.LSTMStateTuple(tf.constant(data["c0"]), tf.constant(data["h0"]))
        outputs, state = v1.nn.dynamic_rnn(cell, x64, sequence_length=LENGTHS, initial_state=start)
        fetches["lstm64/outputs"], fetches["lstm64/c"], fetches["lstm64/h"] = outputs, state.c, state.h
        names["lstm64/state_type"] = type(state).__name__
        names["lstm64/dtype"] = outputs.dtype.name
        biases.append(cell.weights[1].assign(data["lstm_bias"]))

    # Item 3, static_rnn: a list of float64 steps.
    with v1.variable_scope("static64", initializer=init):
        cell = v1.nn.rnn_cell.GRUCell(GRU_UNITS)
        steps = [x64[:, t] for t in range(STEPS)]
        outputs, state = v1.nn.static_rnn(cell, steps, dtype=tf.float64)
        fetches["static64/outputs"], fetches["static64/state"] = tf.stack(outputs, 1), state
        names["static64/dtype"] = outputs[0].dtype.name
        biases += [
            cell.weights[1].assign(data["gru_bias"][: 2 * GRU_UNITS]),
            cell.weights[3].assign(data["gru_bias"][2 * GRU_UNITS :]),
        ]

    # Item 6: no time steps give the initial state back, as an LSTMStateTuple.
    with v1.variable_scope("lstm_t0", initializer=init):
        cell = v1.nn.rnn_cell.BasicLSTMCell(LSTM_UNITS)
        start = v1.nn.rnn_cell.LSTMStateTuple(tf.constant(data["c0"], tf.float32), tf.constant(data["h0"], tf.float32))
        outputs, state = v1.nn.dynamic_rnn(cell, tf.constant(data["x"][:, :0], tf.float32), initial_state=start)
        fetches["lstm_t0/outputs"], fetches["lstm_t0/c"], fetches["lstm_t0/h"] = outputs, state.c, state.h
        names["lstm_t0/state_type"] = type(state).__name__

    # Item 10: raw_rnn over an LSTMCell, the loop of TF's own documentation (lengths end rows early).
    with v1.variable_scope("raw", initializer=init):
        cell = v1.nn.rnn_cell.LSTMCell(LSTM_UNITS)
        time_major = tf.constant(np.transpose(data["x"], (1, 0, 2)), tf.float32)
        inputs_ta = tf.TensorArray(tf.float32, size=STEPS).unstack(time_major)
        lengths = tf.constant(LENGTHS)

        def loop_fn(time, cell_output, cell_state, loop_state):
            emit = cell_output
            state = cell.zero_state(BATCH, tf.float32) if cell_output is None else cell_state
            finished = time >= lengths
            next_input = tf.cond(
                tf.reduce_all(finished), lambda: tf.zeros([BATCH, FEATURES]), lambda: inputs_ta.read(time)
            )
            return finished, next_input, state, emit, None

        emit_ta, state, loop_state = v1.nn.raw_rnn(cell, loop_fn)
        fetches["raw/outputs"], fetches["raw/c"], fetches["raw/h"] = emit_ta.stack(), state.c, state.h
        names["raw/loop_state"] = repr(loop_state)
        biases.append(cell.weights[1].assign(data["lstm_bias"].astype(np.float32)))

    # Item 15: a TF1 script's output layer as raw variables, saved as `Variable`, `Variable_1`.
    cell = v1.nn.rnn_cell.BasicLSTMCell(LSTM_UNITS)
    outputs, _ = v1.nn.dynamic_rnn(cell, tf.constant(data["x"], tf.float32), dtype=tf.float32)
    weights = {"out": tf.Variable(v1.random_normal([LSTM_UNITS, CLASSES], seed=1))}
    out_biases = {"out": tf.Variable(v1.random_normal([CLASSES], seed=2))}
    fetches["logits"] = tf.matmul(outputs[:, -1], weights["out"]) + out_biases["out"]
    names["logits/names"] = " ".join([weights["out"].op.name, out_biases["out"].op.name])
    biases.append(cell.weights[1].assign(data["lstm_bias"].astype(np.float32)))

    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run(biases)
        results = session.run(fetches)
        v1.train.Saver().save(session, os.path.join(out_dir, "model.ckpt"))
    saved = {**data, **results, **{key: np.array(value) for key, value in names.items()}}
    np.savez(os.path.join(out_dir, "reference.npz"), **saved)


_CACHE: Dict[str, Any] = {}


def functions_reference(tmp_path_factory: Any) -> Dict[str, Any]:
    """Runs this script once per test session in a child process; returns the arrays and `checkpoint`."""
    if "data" not in _CACHE:
        from helpers import load_npz  # the tests' helpers (this file also runs as the TF1 child)
        from tf1_reference import run_tf1

        out_dir = tmp_path_factory.mktemp("tf1_functions_reference")
        run_tf1([str(pathlib.Path(__file__).resolve()), str(out_dir)], timeout=300)
        data = load_npz(out_dir / "reference.npz")
        data["checkpoint"] = str(out_dir / "model.ckpt")
        _CACHE["data"] = data
    return _CACHE["data"]


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
