"""Speed of every way to run an RNN (SimpleRNN, LSTM, GRU), timed side by side in one process: medians and ratios.

For each cell and shape (B, T, F, H) every variant is built and warmed up (tracing, XLA compilation), then
the variants are timed *interleaved* -- round 1 of every variant, round 2 of every variant, ..., each round
in a new seeded random order -- so that a machine whose load changes during the run slows all of them alike,
and no variant always runs right after the same neighbour. Each sample times a few calls (enough for
~20 ms); the table shows the median sample per call and the ratio to the Keras layer of the same cell
(`keras.layers.SimpleRNN`/`LSTM`/`GRU`, `unroll=False`), then every target of `TARGETS` with the ratio
measured for it in this run.

Measured for every variant (`Input((T, F)) -> RNN(H) -> Dense(1)`, float32, MSE loss):
- forward: the model on one batch, in a `tf.function` (inference);
- train step: `GradientTape` + Adam update, in a `tf.function`;
- fit epoch: `model.fit` over `FIT_BATCHES` batches (Keras' own training loop, `jit_compile="auto"`).

Variants: `StaticUnroll` / `DynamicUnroll` over the cell (`ku.BasicRNNCell`, `keras.layers.LSTMCell`,
`GRUCell`) with `jit_compile=False` and `True`, `DynamicUnroll default` (`jit_compile="auto"`, what users
get), the Keras layer with `unroll=False` (the reference) and `unroll=True`, `Keras+XLA` (the Keras layer
with the train step and the forward in `tf.function(jit_compile=True)` and `model.compile(jit_compile=True)`:
the strongest peer on a CPU), TF1's `tf.compat.v1.nn.dynamic_rnn` over the Keras cell, PyTorch
`nn.RNN`/`nn.LSTM`/`nn.GRU` when torch is installed, and for SimpleRNN a NumPy loop (forward only: the
hoisted input product, then T dependent `tanh(xw_t + h U)` steps -- the latency floor of a hand-written loop).

Usage:
    python -m benchmarks                        # every cell, shape and variant (~15 min)
    python -m benchmarks --quick                # tiny smoke run (seconds; what CI runs)
    python -m benchmarks --cells lstm gru --shapes 32x1000x8x32 --variants "DynamicUnroll default" Keras+XLA
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

FULL_SHAPES: Tuple[Shape, ...] = (
    (1, 2, 3, 5),
    (32, 28, 28, 128),
    (64, 100, 16, 64),
    (256, 50, 64, 256),
    (32, 1000, 8, 32),
)
QUICK_SHAPES: Tuple[Shape, ...] = ((2, 3, 3, 4),)
CELLS = ("simple", "lstm", "gru")
#: cell -> (the Keras layer's name, PyTorch's module)
KERAS_NAMES = {"simple": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
TORCH_NAMES = {"simple": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}
REFERENCE = "Keras(unroll=False)"
DEFAULT = "DynamicUnroll default"
PEER = "Keras+XLA"
VARIANTS = (
    "StaticUnroll",
    "StaticUnroll+XLA",
    "DynamicUnroll",
    "DynamicUnroll+XLA",
    DEFAULT,
    REFERENCE,
    "Keras(unroll=True)",
    PEER,
    "TF1 dynamic_rnn",
    "torch",
    "NumPy loop",
)
#: Names earlier versions of this suite used (still accepted by `--variants`).
ALIASES = {
    "SimpleRNN(unroll=False)": REFERENCE,
    "SimpleRNN(unroll=True)": "Keras(unroll=True)",
    "torch nn.RNN": "torch",
}
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
def label(cell: str, name: str) -> str:
    """The variant's name in the table: the Keras and PyTorch variants say which layer they are."""
    if name.startswith("Keras"):
        return KERAS_NAMES[cell] + name[len("Keras") :]
    if name == "torch":
        return f"torch {TORCH_NAMES[cell]}"
    return name


def _our_cell(cell: str, units: int) -> Any:
    import keras

    import keras_unroll as ku

    if cell == "simple":
        return ku.BasicRNNCell(units)
    return keras.layers.LSTMCell(units) if cell == "lstm" else keras.layers.GRUCell(units)


def _keras_layer(cell: str, units: int, unroll: bool) -> Any:
    import keras

    layer = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    return layer(units, unroll=unroll)


def _tf_runner(cell: str, name: str, shape: Shape, seed: int) -> Runner:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_unroll as ku

    batch, steps, features, units = shape
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, steps, features), dtype=np.float32))
    y = tf.constant(rng.standard_normal((batch, 1), dtype=np.float32))
    compiled = name == PEER  # the strongest peer: the Keras layer, the whole step compiled by XLA

    if name == "TF1 dynamic_rnn":
        rnn_cell = {"simple": keras.layers.SimpleRNNCell, "lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}[
            cell
        ](units)
        rnn_cell.build((None, features))
        dense = keras.layers.Dense(1)
        dense.build((None, units))
        weights = rnn_cell.trainable_variables + dense.trainable_variables

        def model(inputs: Any, training: bool = False) -> Any:
            zeros = tf.zeros([tf.shape(inputs)[0], units])
            outputs, _ = tf.compat.v1.nn.dynamic_rnn(
                rnn_cell, inputs, initial_state=[zeros, zeros] if cell == "lstm" else zeros
            )
            return dense(outputs[:, -1])

        fit = None
    else:
        if name.startswith("Keras"):
            layer = _keras_layer(cell, units, unroll=name == "Keras(unroll=True)")
        else:
            kind = ku.StaticUnroll if name.startswith("StaticUnroll") else ku.DynamicUnroll
            jit_compile: Any = "auto" if name == DEFAULT else name.endswith("+XLA")
            layer = kind(_our_cell(cell, units), jit_compile=jit_compile)
        model = keras.Sequential([keras.Input((steps, features)), layer, keras.layers.Dense(1)])
        weights = model.trainable_variables
        fit_model = keras.models.clone_model(model)
        fit_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=True if compiled else "auto")
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

    @tf.function(jit_compile=compiled)
    def forward() -> Any:
        return model(x, training=False)

    @tf.function(jit_compile=compiled)
    def train() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    return Runner(forward=lambda: forward().numpy(), train=lambda: train().numpy(), fit=fit)


def _torch_runner(cell: str, shape: Shape, seed: int) -> Runner:
    import numpy as np
    import torch

    batch, steps, features, units = shape
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((batch, steps, features), dtype=np.float32))
    y = torch.from_numpy(rng.standard_normal((batch, 1), dtype=np.float32))
    rnn = {"simple": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](features, units, batch_first=True)
    dense = torch.nn.Linear(units, 1)
    params = list(rnn.parameters()) + list(dense.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def predict() -> Any:
        return dense(rnn(x)[0][:, -1])

    def forward() -> Any:
        with torch.no_grad():
            return predict().numpy()

    def train() -> Any:
        optimizer.zero_grad()
        loss = torch.mean((predict() - y) ** 2)
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


def available(name: str, shape: Shape, max_unrolled_steps: int, cell: str = "simple") -> Optional[str]:
    """None if `name` runs at `shape` for `cell`, else the reason it is skipped."""
    name = ALIASES.get(name, name)
    unrolled = name.startswith("StaticUnroll") or name == "Keras(unroll=True)"
    if unrolled and shape[1] > max_unrolled_steps:
        return f"T > {max_unrolled_steps} (Python-unrolled graph; raise --max-unrolled-steps)"
    if name == "NumPy loop" and cell != "simple":
        return "the NumPy loop is the SimpleRNN floor only"
    if name == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch not installed (pip install 'keras-unroll[torch]')"
    return None


def make_runner(name: str, shape: Shape, seed: int = 0, cell: str = "simple") -> Runner:
    name = ALIASES.get(name, name)
    if name == "torch":
        return _torch_runner(cell, shape, seed)
    if name == "NumPy loop":
        return _numpy_runner(shape, seed)
    return _tf_runner(cell, name, shape, seed)


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
    shape: Shape, variants: Sequence[str], repeats: int, quick: bool, max_unrolled_steps: int, cell: str = "simple"
) -> List[Dict[str, Any]]:
    """Times every variant of `cell` at `shape`, interleaved. Returns one result dict per variant."""
    results: Dict[str, Dict[str, Any]] = {}
    timed: List[Tuple[str, str, Callable[[], Any], int]] = []
    for name in variants:
        entry: Dict[str, Any] = {"cell": cell, "shape": list(shape), "variant": name, "label": label(cell, name)}
        results[name] = entry
        reason = available(name, shape, max_unrolled_steps, cell)
        if reason is not None:
            entry["skipped"] = reason
            continue
        _progress(f"  build + warm-up {label(cell, name)} ...")
        start = time.perf_counter()
        try:
            runner = make_runner(name, shape, cell=cell)
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
    """Medians per call and, in parentheses, the ratio to the Keras layer (`unroll=False`) at the same shape."""
    lines = [
        "| B·T·F·H | cell | variant | forward | train step | fit epoch |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results:
        shape = "·".join(str(n) for n in entry["shape"])
        cell = KERAS_NAMES[entry.get("cell", "simple")]
        name = entry.get("label", entry["variant"])
        if "skipped" in entry:
            lines.append(f"| {shape} | {cell} | {name} | skipped: {entry['skipped']} | | |")
            continue
        cells = " | ".join(_cell(entry, m) for m in ("forward", "train", "fit"))
        lines.append(f"| {shape} | {cell} | {name} | {cells} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- targets
@dataclasses.dataclass(frozen=True)
class Target:
    """`variant`'s `measure` ÷ `peer`'s, for `cells` at `shapes` (None: every timed shape with T ≤ max_steps)."""

    cells: Tuple[str, ...]
    variant: str
    measure: str
    peer: str
    bound: float
    shapes: Optional[Tuple[Shape, ...]] = None
    max_steps: Optional[int] = None

    def text(self, cell: str) -> str:
        where = (
            " and ".join("·".join(map(str, s)) for s in self.shapes)
            if self.shapes
            else ("every shape" + (f" with T ≤ {self.max_steps}" if self.max_steps else ""))
        )
        measure = {"train": "train step", "forward": "forward", "fit": "fit epoch"}[self.measure]
        return f"{label(cell, self.variant)} {measure} ≤ {self.bound}× {label(cell, self.peer)}, {where}"


LONG, MIXED, MEDIUM, LARGE = (32, 1000, 8, 32), (32, 28, 28, 128), (64, 100, 16, 64), (256, 50, 64, 256)
GATED = ("lstm", "gru")
ALL_CELLS = CELLS
#: What docs/performance.md promises (issues 5 and 15), checked against the ratios of one run.
TARGETS: Tuple[Target, ...] = (
    Target(("simple",), DEFAULT, "train", REFERENCE, 0.35, (LONG,)),
    Target(("simple",), DEFAULT, "forward", REFERENCE, 0.3, (LONG,)),
    Target(("simple",), DEFAULT, "train", REFERENCE, 0.75, (MIXED, MEDIUM)),
    Target(GATED, DEFAULT, "train", REFERENCE, 0.4, (LONG,)),
    Target(GATED, DEFAULT, "train", REFERENCE, 0.8, (MEDIUM, MIXED)),
    Target(ALL_CELLS, DEFAULT, "train", REFERENCE, 1.0, (LARGE,)),
    Target(GATED, DEFAULT, "train", PEER, 0.8, (LONG,)),
    Target(ALL_CELLS, DEFAULT, "forward", PEER, 1.0, (LONG,)),
    Target(ALL_CELLS, DEFAULT, "train", REFERENCE, 1.0),  # the default never slower than Keras...
    Target(ALL_CELLS, DEFAULT, "forward", REFERENCE, 1.0),  # ... on the machine it runs on
    Target(("simple",), "StaticUnroll", "train", "Keras(unroll=True)", 0.9, max_steps=100),
    Target(GATED, "StaticUnroll", "train", "Keras(unroll=True)", 1.0, max_steps=100),
    Target(GATED, "StaticUnroll", "forward", "Keras(unroll=True)", 1.0, max_steps=100),
)


def check_targets(results: Sequence[Dict[str, Any]], targets: Sequence[Target] = TARGETS) -> List[Dict[str, Any]]:
    """One row per target and cell timed in `results`: the ratios measured for it and whether all hold."""
    by_key = {(r.get("cell", "simple"), tuple(r["shape"]), r["variant"]): r for r in results}
    timed = list(dict.fromkeys((r.get("cell", "simple"), tuple(r["shape"])) for r in results))
    rows = []
    for target in targets:
        for cell in target.cells:
            shapes = [
                shape
                for c, shape in timed
                if c == cell
                and (target.shapes is None or shape in target.shapes)
                and (target.max_steps is None or shape[1] <= target.max_steps)
            ]
            measured = []
            for shape in shapes:
                ours, peer = by_key.get((cell, shape, target.variant)), by_key.get((cell, shape, target.peer))
                mine = (ours or {}).get(f"{target.measure}_ms")
                theirs = (peer or {}).get(f"{target.measure}_ms")
                if mine is not None and theirs:
                    measured.append((shape, mine / theirs))
            if not measured:
                continue
            rows.append(
                {
                    "target": target.text(cell),
                    "cell": cell,
                    "measured": [["·".join(map(str, shape)), round(ratio, 3)] for shape, ratio in measured],
                    "holds": all(ratio <= target.bound for _, ratio in measured),
                }
            )
    return rows


def targets_table(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["| target | measured (ratio) | holds? |", "|---|---|---|"]
    for row in rows:
        measured = ", ".join(
            f"{ratio:.2f}× ({shape})" if len(row["measured"]) > 1 else f"{ratio:.2f}×"
            for shape, ratio in row["measured"]
        )
        lines.append(f"| {row['target']} | {measured} | {'yes' if row['holds'] else '**no**'} |")
    return "\n".join(lines)


def cpu_description() -> str:
    """The CPU model, its vector extensions and the number of cores, from /proc/cpuinfo where it exists."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx512f", "avx512_bf16", "avx512_vnni", "avx2", "fma", "avx")
    extensions = [name for name in wanted if name in flags]
    return f"{model}, {' '.join(extensions) or 'no AVX'}, {os.cpu_count()} cores"


def _environment() -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    info = {
        "cpu": cpu_description(),
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
        raise argparse.ArgumentTypeError(
            f"a shape is BxTxFxH with positive ints, e.g. 32x28x28x128. Received: {text!r}"
        )
    return parts  # type: ignore[return-value]


def _parse_variant(text: str) -> str:
    name = ALIASES.get(text, text)
    if name not in VARIANTS:
        choices = ", ".join(repr(v) for v in VARIANTS)
        raise argparse.ArgumentTypeError(f"a variant is one of {choices}. Received: {text!r}")
    return name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time StaticUnroll/DynamicUnroll against Keras' SimpleRNN/LSTM/GRU (also XLA-compiled), TF1, "
        "PyTorch and NumPy.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds, 1 call per sample (a smoke run)")
    p.add_argument(
        "--cells", nargs="+", choices=CELLS, default=None, help="cells to time (default: all; --quick: simple)"
    )
    p.add_argument("--shapes", type=_parse_shape, nargs="+", metavar="BxTxFxH", help="shapes to time")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per variant (default 11; 2 with --quick)")
    p.add_argument(
        "--variants", nargs="+", type=_parse_variant, default=None, metavar="NAME", help="subset of variants"
    )
    p.add_argument("--max-unrolled-steps", type=int, default=MAX_UNROLLED_STEPS, help="longest T for static graphs")
    p.add_argument("--json", type=pathlib.Path, default=DEFAULT_JSON, help=f"where to write results ({DEFAULT_JSON})")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    cells = list(args.cells or (("simple",) if args.quick else CELLS))
    if args.repeats is not None and args.repeats < 1:
        parser().error(f"--repeats must be a positive integer. Received: --repeats {args.repeats}")
    repeats = args.repeats or (2 if args.quick else 11)
    variants = list(dict.fromkeys(args.variants or VARIANTS))
    if REFERENCE not in variants:
        variants.insert(0, REFERENCE)
    results: List[Dict[str, Any]] = []
    started = time.perf_counter()
    jobs = [(cell, shape) for cell in cells for shape in shapes]
    for index, (cell, shape) in enumerate(jobs):
        _progress(f"[{index + 1}/{len(jobs)}] {KERAS_NAMES[cell]}, B·T·F·H = {'·'.join(map(str, shape))}")
        results.extend(bench_shape(shape, variants, repeats, args.quick, args.max_unrolled_steps, cell))
    table = markdown_table(results)
    target_rows = check_targets(results)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    environment = _environment()
    report = {
        "command": command.strip(),
        "environment": environment,
        "repeats": repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "table": table,
        "targets": target_rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(
        f"CPU: {environment['cpu']}; TensorFlow {environment['tensorflow']}, Keras {environment['keras']}; "
        f"medians of {repeats} interleaved rounds; ratios to the Keras layer in the same run\n"
    )
    print(table)
    if target_rows:
        print("\n" + targets_table(target_rows))
    print(f"\n{report['command']}  ({report['seconds']} s; JSON: {args.json})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
