"""Speed of every way to run an Elman RNN, timed side by side in one process: medians and ratios.

For each shape (B, T, F, H) every variant is built and warmed up (tracing, XLA compilation), then the
variants are timed *interleaved* -- round 1 of every variant, round 2 of every variant, ..., each round in a
new seeded random order -- so that a machine whose load changes during the run slows all of them alike, and
no variant always runs right after the same neighbour. Each sample times a few calls (enough
for ~20 ms); the table shows the median sample per call and the ratio to `SimpleRNN(unroll=False)`.

Measured for every variant (`Input((T, F)) -> RNN(H) -> Dense(1)`, float32, MSE loss):
- forward: the model on one batch, in a `tf.function` (inference);
- train step: `GradientTape` + Adam update, in a `tf.function`;
- fit epoch: `model.fit` over `FIT_BATCHES` batches (Keras' own training loop, `jit_compile="auto"`).

Variants: `StaticUnroll` / `DynamicUnroll` with and without XLA (`jit_compile`), `keras.layers.SimpleRNN`
with `unroll=False` (the reference) and `unroll=True`, TF1's `tf.compat.v1.nn.dynamic_rnn` (with Keras'
`SimpleRNNCell`), PyTorch `nn.RNN` when torch is installed, and a NumPy loop (forward only: the hoisted
input product, then T dependent `tanh(xw_t + h U)` steps -- the latency floor of a hand-written loop).

Usage:
    python -m benchmarks                        # the full table (minutes)
    python -m benchmarks --quick                # tiny smoke run (seconds; what CI runs)
    python -m benchmarks --shapes 32x1000x8x32 --repeats 15 --json bench-output/speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

Shape = Tuple[int, int, int, int]

FULL_SHAPES: Tuple[Shape, ...] = ((1, 2, 3, 5), (32, 28, 28, 128), (64, 100, 16, 64), (256, 50, 64, 256), (32, 1000, 8, 32))
QUICK_SHAPES: Tuple[Shape, ...] = ((2, 3, 3, 4),)
REFERENCE = "SimpleRNN(unroll=False)"
VARIANTS = (
    "StaticUnroll",
    "StaticUnroll+XLA",
    "DynamicUnroll",
    "DynamicUnroll+XLA",
    REFERENCE,
    "SimpleRNN(unroll=True)",
    "TF1 dynamic_rnn",
    "torch nn.RNN",
    "NumPy loop",
)
#: Python-unrolled graphs (StaticUnroll, SimpleRNN(unroll=True)) grow with T: at T=1000 tracing takes tens
#: of seconds and ~1 GB (XLA: minutes). They are timed up to this T unless `--max-unrolled-steps` says more.
MAX_UNROLLED_STEPS = 100
FIT_BATCHES = 8
MIN_SAMPLE_SECONDS = 0.02
DEFAULT_JSON = pathlib.Path("bench-output") / "speed.json"


@dataclasses.dataclass
class Runner:
    """The three timed calls of one variant (None where a variant has no such thing)."""

    forward: Optional[Callable[[], Any]]
    train: Optional[Callable[[], Any]]
    fit: Optional[Callable[[], Any]]


# ------------------------------------------------------------------------------------ the variants
def _tf_runner(name: str, shape: Shape, seed: int) -> Runner:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_unroll as ku

    batch, steps, features, units = shape
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, steps, features), dtype=np.float32))
    y = tf.constant(rng.standard_normal((batch, 1), dtype=np.float32))

    if name == "TF1 dynamic_rnn":
        cell = keras.layers.SimpleRNNCell(units)
        cell.build((None, features))
        dense = keras.layers.Dense(1)
        dense.build((None, units))
        weights = cell.trainable_variables + dense.trainable_variables

        def model(inputs: Any, training: bool = False) -> Any:
            zeros = tf.zeros([tf.shape(inputs)[0], units])
            _, state = tf.compat.v1.nn.dynamic_rnn(cell, inputs, initial_state=zeros)
            return dense(state)

        fit = None
    else:
        if name.startswith("SimpleRNN"):
            layer = keras.layers.SimpleRNN(units, unroll="unroll=True" in name)
        else:
            kind = ku.StaticUnroll if name.startswith("StaticUnroll") else ku.DynamicUnroll
            layer = kind(ku.BasicRNNCell(units), jit_compile=name.endswith("+XLA"))
        model = keras.Sequential([keras.Input((steps, features)), layer, keras.layers.Dense(1)])
        weights = model.trainable_variables
        fit_model = keras.models.clone_model(model)
        fit_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        # tf.data's autotuning thread made some `fit` calls take ~300 ms longer at random (measured with
        # keras.layers.SimpleRNN alone at 256·50·64·256: 625 instead of ~300 ms in 2-3 of 8 calls, none with
        # autotune off): it timed the iterator's teardown, not the layer.
        no_autotune = tf.data.Options()
        no_autotune.autotune.enabled = False
        data = tf.data.Dataset.from_tensors((x, y)).repeat(FIT_BATCHES).cache().with_options(no_autotune)

        def fit() -> Any:
            return fit_model.fit(data, epochs=1, verbose=0, shuffle=False)

    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(weights)

    @tf.function
    def forward() -> Any:
        return model(x, training=False)

    @tf.function
    def train() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    return Runner(forward=lambda: forward().numpy(), train=lambda: train().numpy(), fit=fit)


def _torch_runner(shape: Shape, seed: int) -> Runner:
    import numpy as np
    import torch

    batch, steps, features, units = shape
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((batch, steps, features), dtype=np.float32))
    y = torch.from_numpy(rng.standard_normal((batch, 1), dtype=np.float32))
    rnn = torch.nn.RNN(features, units, batch_first=True)
    dense = torch.nn.Linear(units, 1)
    params = list(rnn.parameters()) + list(dense.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def forward() -> Any:
        with torch.no_grad():
            return dense(rnn(x)[1][0]).numpy()

    def train() -> Any:
        optimizer.zero_grad()
        loss = torch.mean((dense(rnn(x)[1][0]) - y) ** 2)
        loss.backward()
        optimizer.step()
        return loss.item()

    return Runner(forward=forward, train=train, fit=None)


def _numpy_runner(shape: Shape, seed: int) -> Runner:
    import numpy as np

    batch, steps, features, units = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, features), dtype=np.float32)
    kernel = (rng.standard_normal((features, units)) / np.sqrt(features)).astype(np.float32)
    recurrent = np.linalg.qr(rng.standard_normal((units, units)))[0].astype(np.float32)
    bias = np.zeros(units, np.float32)

    def forward() -> Any:
        xw = (x.reshape(-1, features) @ kernel + bias).reshape(steps, batch, units)
        h = np.zeros((batch, units), np.float32)
        for t in range(steps):
            h = np.tanh(xw[t] + h @ recurrent)
        return h

    return Runner(forward=forward, train=None, fit=None)


def available(name: str, shape: Shape, max_unrolled_steps: int) -> Optional[str]:
    """None if `name` runs at `shape`, else the reason it is skipped."""
    unrolled = name.startswith("StaticUnroll") or name == "SimpleRNN(unroll=True)"
    if unrolled and shape[1] > max_unrolled_steps:
        return f"T > {max_unrolled_steps} (Python-unrolled graph; raise --max-unrolled-steps)"
    if name == "torch nn.RNN":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch not installed (pip install 'keras-unroll[torch]')"
    return None


def make_runner(name: str, shape: Shape, seed: int = 0) -> Runner:
    if name == "torch nn.RNN":
        return _torch_runner(shape, seed)
    if name == "NumPy loop":
        return _numpy_runner(shape, seed)
    return _tf_runner(name, shape, seed)


# ------------------------------------------------------------------------------------------ timing
def _calls_per_sample(fn: Callable[[], Any], quick: bool) -> int:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    if quick:
        return 1
    return max(1, min(50, int(MIN_SAMPLE_SECONDS / max(elapsed, 1e-6)) + 1))


def _sample(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_shape(
    shape: Shape, variants: Sequence[str], repeats: int, quick: bool, max_unrolled_steps: int
) -> List[Dict[str, Any]]:
    """Times every variant at `shape`, interleaved. Returns one result dict per variant."""
    results: Dict[str, Dict[str, Any]] = {}
    timed: List[Tuple[str, str, Callable[[], Any], int]] = []
    for name in variants:
        entry: Dict[str, Any] = {"shape": list(shape), "variant": name}
        results[name] = entry
        reason = available(name, shape, max_unrolled_steps)
        if reason is not None:
            entry["skipped"] = reason
            continue
        _progress(f"  build + warm-up {name} ...")
        start = time.perf_counter()
        try:
            runner = make_runner(name, shape)
            for measure in ("forward", "train", "fit"):
                fn = getattr(runner, measure)
                if fn is None:
                    continue
                warm = time.perf_counter()
                fn()  # trace / compile
                entry[f"{measure}_first_call_s"] = round(time.perf_counter() - warm, 3)
                timed.append((name, measure, fn, _calls_per_sample(fn, quick)))
        except Exception as error:  # a variant that cannot run here is reported, not fatal
            entry["skipped"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            timed = [item for item in timed if item[0] != name]
        entry["setup_s"] = round(time.perf_counter() - start, 2)
    samples: Dict[Tuple[str, str], List[float]] = {(n, m): [] for n, m, _, _ in timed}
    names = list(dict.fromkeys(name for name, _, _, _ in timed))
    # A Keras progress bar on a terminal (with an estimate of the time left), one line per round otherwise.
    bar = None
    if sys.stdout.isatty():
        from keras.utils import Progbar

        bar = Progbar(repeats, unit_name="round")
    for round_index in range(repeats):
        if bar is None:
            _progress(f"  round {round_index + 1}/{repeats}")
        # A new variant order every round (seeded): in a fixed order each variant always ran right after
        # the same neighbour, and the one after the NumPy loop was slowed for the whole run (measured at
        # 32·28·28·128: StaticUnroll's train step 1.11-1.40x SimpleRNN(unroll=True) while it followed the
        # NumPy loop, 0.83x placed elsewhere; TF1 dynamic_rnn 1.19-1.28x the reference there, ~1.0x elsewhere).
        order = {name: index for index, name in enumerate(random.Random(round_index).sample(names, len(names)))}
        for name, measure, fn, calls in sorted(timed, key=lambda item: order[item[0]]):
            samples[(name, measure)].append(_sample(fn, calls))
        if bar is not None:
            bar.update(round_index + 1)
    for (name, measure), values in samples.items():
        results[name][f"{measure}_ms"] = statistics.median(values) * 1e3
        results[name][f"{measure}_samples_ms"] = [round(v * 1e3, 4) for v in values]
    reference = results.get(REFERENCE, {})
    for entry in results.values():
        for measure in ("forward", "train", "fit"):
            value, base = entry.get(f"{measure}_ms"), reference.get(f"{measure}_ms")
            if value is not None and base:
                entry[f"{measure}_ratio"] = value / base
    return list(results.values())


# ----------------------------------------------------------------------------------------- output
def _cell(entry: Dict[str, Any], measure: str) -> str:
    value = entry.get(f"{measure}_ms")
    if value is None:
        return "—"
    ratio = entry.get(f"{measure}_ratio")
    text = f"{value:.3g} ms" if value >= 0.1 else f"{value * 1e3:.3g} µs"
    return f"{text} ({ratio:.2f}×)" if ratio is not None else text


def markdown_table(results: Sequence[Dict[str, Any]]) -> str:
    """Medians per call and, in parentheses, the ratio to SimpleRNN(unroll=False) at the same shape."""
    lines = [
        "| B·T·F·H | variant | forward | train step | fit epoch |",
        "|---|---|---|---|---|",
    ]
    for entry in results:
        shape = "·".join(str(n) for n in entry["shape"])
        if "skipped" in entry:
            lines.append(f"| {shape} | {entry['variant']} | skipped: {entry['skipped']} | | |")
            continue
        cells = " | ".join(_cell(entry, m) for m in ("forward", "train", "fit"))
        lines.append(f"| {shape} | {entry['variant']} | {cells} |")
    return "\n".join(lines)


def _environment() -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    info = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _parse_shape(text: str) -> Shape:
    try:
        parts = tuple(int(p) for p in text.lower().replace("·", "x").split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a shape is BxTxFxH with positive ints, e.g. 32x28x28x128. Received: {text!r}")
    return parts  # type: ignore[return-value]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time StaticUnroll/DynamicUnroll against keras.layers.SimpleRNN, TF1, PyTorch and NumPy.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds, 1 call per sample (a smoke run)")
    p.add_argument("--shapes", type=_parse_shape, nargs="+", metavar="BxTxFxH", help="shapes to time")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per variant (default 11; 2 with --quick)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, metavar="NAME", help="subset of variants")
    p.add_argument("--max-unrolled-steps", type=int, default=MAX_UNROLLED_STEPS, help="longest T for static graphs")
    p.add_argument("--json", type=pathlib.Path, default=DEFAULT_JSON, help=f"where to write results ({DEFAULT_JSON})")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    if args.repeats is not None and args.repeats < 1:
        parser().error(f"--repeats must be a positive integer. Received: --repeats {args.repeats}")
    repeats = args.repeats or (2 if args.quick else 11)
    variants = list(args.variants or VARIANTS)
    if REFERENCE not in variants:
        variants.insert(0, REFERENCE)
    results: List[Dict[str, Any]] = []
    started = time.perf_counter()
    for index, shape in enumerate(shapes):
        _progress(f"[{index + 1}/{len(shapes)}] B·T·F·H = {'·'.join(map(str, shape))}")
        results.extend(bench_shape(shape, variants, repeats, args.quick, args.max_unrolled_steps))
    table = markdown_table(results)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": command.strip(),
        "environment": _environment(),
        "repeats": repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(table)
    print(f"\n{report['command']}  ({report['seconds']} s; JSON: {args.json})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
