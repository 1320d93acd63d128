"""`keras-unroll demo`: the package's main job in one command.

It compares the two ways of unrolling an RNN, on the same model and the same data. With no arguments and
no download it:

1. makes the time series of *Hands-On Machine Learning*, chapter 14 (`t·sin(t)/3 + 2·sin(5t)`) and cuts it
   into windows of 20 steps, each labelled with the next value;
2. trains two `keras.Sequential` models, identical but for the unrolling (`StaticUnroll` and
   `DynamicUnroll` over a `BasicRNNCell(100)`), with `model.fit`, from the same initial weights;
3. prints a side-by-side table: final loss, graph ops (and how many of them XLA compiles), trace time, step
   time, peak memory;
4. exports one model as a SavedModel (the one with the lower test loss when the losses differ by more than
   `SAME_LOSS_RTOL`, else `DynamicUnroll`), reloads it in a fresh Python process (without keras_unroll) and
   checks its predictions;
5. measures the unrollings with `compare_unrolling` at T = 2, 20, 100, 500: `StaticUnroll`, TF1's plain while
   loop (`DynamicUnroll` with the generic step) and `DynamicUnroll`'s fused, XLA-compiled kernel (the tier
   `jit_compile="auto"` takes from `Tuning.compile_min_steps` steps on, measured here at every T);
6. writes to `--out` (default `demo-output/`) the tables (`results.md`, `results.json`), the SavedModel and,
   when matplotlib is installed (the `plot` extra), `demo_predictions.png` and `compare_unrolling.png`.

The comparison stops at T=500 by default: a static unroll at T=1000 costs 5-15 s of tracing and much memory
on a 2-core CPU (`--steps 2,10,100,1000` to see it). `--quick` runs everything small (CI).
`--data FILE.npz` trains on your own arrays `x` `(N, T, F)` and `y` `(N,)` or `(N, outputs)` instead.
Every number but the times is the same on every run: the weights are seeded and the plan is deterministic
(the planner's timed trial is off by default). Peak memory is measured with TensorFlow's BFC allocator on
CPU (`TF_CPU_ALLOCATOR_USE_BFC=true`, set before TensorFlow's first op), in a region reserved up front.
The options are parsed by `keras_unroll_cli` (the command line, on top of the library), before TensorFlow is
imported; `run(args)` takes the parsed arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, List, Optional, Sequence, Tuple

_PROG = "keras-unroll demo"
# The sequence lengths the comparison measures by default, and with `--quick`.
DEFAULT_STEPS = (2, 20, 100, 500)
QUICK_STEPS = (2, 20, 100)
# Test losses closer than this (relative) are "about the same": the twins run the same maths, and
# float32 reductions in a different order differ by far less.
SAME_LOSS_RTOL = 0.01


class DemoError(Exception):
    """A problem with the user's options, files or setup: reported as one line on stderr, exit code 2."""


class ReloadError(RuntimeError):
    """The exported SavedModel did not reload in a fresh process, or predicted differently: exit code 1."""


# --------------------------------------------------------------------------------------------- data
def time_series(t: Any) -> Any:
    """The series of Hands-On ML, chapter 14: `t·sin(t)/3 + 2·sin(5t)`."""
    import numpy as np

    t = np.asarray(t, dtype="float64")
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training and test windows. `test_t` is the time of each test target (None for user data)."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    test_t: Any
    source: str


def make_series_data(
    num_train: int, num_test: int = 200, window: int = 20, resolution: float = 0.1, seed: int = 42
) -> Dataset:
    """Windows of the book's series: `window` values as input, the next value as target.

    Training windows start at random times in [0, 30) as in the book; the test windows slide one step at
    a time over a stretch of the series, so their predictions draw a curve.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    offsets = np.arange(window + 1) * resolution
    starts = rng.uniform(0.0, 30.0 - window * resolution, size=(num_train, 1))
    values = time_series(starts + offsets)
    test_start = 12.2 - window * resolution
    test_starts = test_start + np.arange(num_test)[:, None] * resolution
    test_values = time_series(test_starts + offsets)
    return Dataset(
        x_train=values[:, :-1, None].astype("float32"),
        y_train=values[:, -1:].astype("float32"),
        x_test=test_values[:, :-1, None].astype("float32"),
        y_test=test_values[:, -1:].astype("float32"),
        test_t=(test_starts[:, 0] + window * resolution),
        source=f"Hands-On ML ch. 14 series t·sin(t)/3 + 2·sin(5t), {num_train} windows of {window} steps",
    )


def load_npz(path: str) -> Dataset:
    """Reads a user's `.npz` with `x` `(N, T, F)` and `y` `(N,)`/`(N, outputs)`; the last 20 % is the test set.

    Training uses whole batches of 32: up to 31 training samples beyond the last full batch are left out.

    Raises:
        DemoError: a missing file, not an npz, missing keys, wrong shapes or non-numeric values.
    """
    import zipfile

    import numpy as np

    if not os.path.exists(path):
        raise DemoError(f"--data: no such file: {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DemoError(f"--data: {path!r} is not a NumPy .npz file ({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DemoError(f"--data: {path!r} is a single .npy array; expected an .npz with arrays `x` and `y`")
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise DemoError(
                f"--data: {path!r} has no array {' or '.join(repr(k) for k in missing)}; expected `x` (N, T, F) "
                f"and `y` (N,) or (N, outputs). It holds: {sorted(archive.files)}"
            )
        try:
            x, y = archive["x"], archive["y"]
        except ValueError as error:
            raise DemoError(f"--data: cannot read {path!r} without pickle: {error}") from None
    if x.ndim != 3 or 0 in x.shape:
        raise DemoError(
            f"--data: `x` must be 3D (samples, time steps, features), non-empty. Received: x.shape={x.shape}"
        )
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise DemoError(
            f"--data: `y` must be (N,) or (N, outputs) with N = len(x) = {x.shape[0]}. Received: y.shape={y.shape}"
        )
    if x.shape[0] < 5:
        raise DemoError(f"--data: need at least 5 samples (80 % train, 20 % test). Received: x.shape={x.shape}")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise DemoError(f"--data: `x` and `y` must be numeric. Received: x.dtype={x.dtype}, y.dtype={y.dtype}")
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise DemoError(
            "--data: `x` and `y` must be real-valued (the layers compute in float32; a complex array would "
            "lose its imaginary part). Split real and imaginary parts into features. "
            f"Received: x.dtype={x.dtype}, y.dtype={y.dtype}"
        )
    x, y = x.astype("float32"), y.astype("float32").reshape(len(y), -1)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DemoError(f"--data: `x` and `y` must be finite (no NaN or inf) in {path!r}")
    split = max(1, int(round(len(x) * 0.8)))
    split = min(split, len(x) - 1)
    return Dataset(x[:split], y[:split], x[split:], y[split:], None, f"{path}: x {x.shape}, y {y.shape}")


# ----------------------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: int
    steps: Tuple[int, ...]
    units: int
    batch: int
    num_train: int
    repeats: int


def _settings(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(args.epochs or 1, args.steps or QUICK_STEPS, units=16, batch=32, num_train=256, repeats=2)
    return Settings(args.epochs or 10, args.steps or DEFAULT_STEPS, units=100, batch=32, num_train=4096, repeats=5)


def _build_model(layer_class: Any, window: int, features: int, outputs: int, units: int) -> Any:
    import keras

    from keras_unroll.cell import BasicRNNCell

    model = keras.Sequential(
        [
            keras.Input((window, features)),
            layer_class(BasicRNNCell(units), name=layer_class.__name__.lower()),
            keras.layers.Dense(outputs),
        ],
        name=layer_class.__name__.lower() + "_model",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _step_timer() -> Any:
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Times each training batch; the first batch (trace + compile) is left out of `median`."""

        def __init__(self) -> None:
            super().__init__()
            self.times: List[float] = []
            self._start = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self._start)

        @property
        def median(self) -> float:
            import statistics

            return statistics.median(self.times[1:] or self.times)

    return StepTimer()


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    model: Any
    train_loss: float
    test_loss: float
    forward_ops: int
    training_ops: int
    compiled_ops: int
    trace_seconds: float
    step_seconds: float
    peak_bytes: Optional[int]
    predictions: Any


def _train(layer_class: Any, data: Dataset, settings: Settings) -> Result:
    import keras

    from keras_unroll.inspect import _trace, graph_stats

    count, window, features = data.x_train.shape
    outputs = data.y_train.shape[1]
    # Whole batches only: a smaller last batch is another input shape, so another trace (and XLA compile)
    # inside every epoch, which would also skew the step times.
    batch = min(settings.batch, count)
    x_train, y_train = data.x_train[: count - count % batch], data.y_train[: count - count % batch]
    keras.utils.set_random_seed(0)
    model = _build_model(layer_class, window, features, outputs, settings.units)
    shape = (batch, window, features)
    forward, _, _ = _trace(model, shape, training=False, run=False)  # the table shows its op count only
    training = graph_stats(model, shape, training=True)
    timer = _step_timer()
    print(f"\n== {layer_class.__name__}: {model.count_params()} parameters, {settings.epochs} epoch(s)", flush=True)
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch,
        epochs=settings.epochs,
        callbacks=[timer],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    predictions = model.predict(data.x_test, batch_size=256, verbose=0)
    test_loss = float(((predictions - data.y_test) ** 2).mean())  # the MSE, without tracing `evaluate`
    return Result(
        name=layer_class.__name__,
        model=model,
        train_loss=float(history.history["loss"][-1]),
        test_loss=test_loss,
        forward_ops=forward.num_ops,
        training_ops=training.num_ops,
        compiled_ops=training.compiled_ops,
        trace_seconds=training.trace_seconds + training.first_call_seconds,
        step_seconds=timer.median,
        peak_bytes=training.peak_bytes,
        predictions=predictions,
    )


def format_results(results: Sequence[Result]) -> str:
    """The side-by-side table the demo prints."""
    from keras_unroll._format import format_bytes, format_seconds, table

    rows = [
        ("final training loss (MSE)", *(f"{r.train_loss:.4f}" for r in results)),
        ("test loss (MSE)", *(f"{r.test_loss:.4f}" for r in results)),
        ("graph ops, forward", *(str(r.forward_ops) for r in results)),
        ("graph ops, training step", *(str(r.training_ops) for r in results)),
        ("  of which XLA-compiled", *(str(r.compiled_ops) for r in results)),
        ("trace + first call", *(format_seconds(r.trace_seconds) for r in results)),
        ("step time in fit (median)", *(format_seconds(r.step_seconds) for r in results)),
        ("peak memory, training step", *(format_bytes(r.peak_bytes) for r in results)),
    ]
    lines = [table(("", *(r.name for r in results)), rows)]
    for r in results:
        if r.compiled_ops:
            lines.append(
                f"{r.name} runs a fused kernel: {r.compiled_ops} of its {r.training_ops} training ops are in "
                "XLA-compiled functions (its forward and backward passes), each run as one compiled call. Its "
                "graph does not grow with T; the comparison below shows it beside TF1's plain while loop."
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- SavedModel
_RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    x = np.load(sys.argv[2])["x"]
    y = loaded.serve(tf.constant(x)).numpy()
    np.save(sys.argv[3], y)
    print("keras_unroll imported in the child process:", "keras_unroll" in sys.modules)
    """
)


def export_and_check(model: Any, export_dir: str, x: Any, expected: Any) -> Tuple[float, str]:
    """Exports `model` as a SavedModel, reloads it in a fresh process and compares its predictions.

    Returns:
        `(max_abs_difference, child's output line)`.

    Raises:
        ReloadError: the child process failed, or its predictions differ from `expected`.
    """
    import numpy as np

    model.export(export_dir, verbose=False)
    with tempfile.TemporaryDirectory(prefix="keras_unroll_demo_") as tmp:
        inputs, outputs = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npy")
        np.savez(inputs, x=x)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        child = subprocess.run(
            [sys.executable, "-c", _RELOAD_SCRIPT, export_dir, inputs, outputs],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if child.returncode != 0:
            tail = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ReloadError(f"reloading the SavedModel in a fresh process failed: {tail}")
        reloaded = np.load(outputs)
    difference = float(np.max(np.abs(reloaded - expected)))
    if not np.allclose(reloaded, expected, rtol=1e-4, atol=1e-5):
        raise ReloadError(f"the reloaded SavedModel's predictions differ from the model's by up to {difference}")
    return difference, child.stdout.strip()


# ------------------------------------------------------------------------------------------- plots
def plot_predictions(
    data: Dataset, results: Sequence[Result], path: str, limit: int = 200, max_outputs: int = 4
) -> str:
    """Draws the test targets and each model's predictions, one panel per output (at most `max_outputs`);
    saves a PNG."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    outputs = data.y_test.shape[1]
    shown = min(outputs, max_outputs)
    figure = Figure(figsize=(9, 3.2 + 1.8 * shown), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(shown, 1, sharex=True, squeeze=False)[:, 0])
    count = min(limit, len(data.y_test))
    series = data.test_t is not None
    x_axis = data.test_t[:count] if series else np.arange(count)
    styles = {"StaticUnroll": ("tab:red", "--"), "DynamicUnroll": ("tab:blue", ":")}
    for index, axis in enumerate(axes):
        axis.plot(x_axis, data.y_test[:count, index], "k-", linewidth=3, alpha=0.35, label="truth")
        for result in results:
            color, style = styles.get(result.name, (None, "-"))
            label = (
                f"{result.name} (test MSE {result.test_loss:.4g}, all outputs)"
                if outputs > 1
                else (f"{result.name} (test MSE {result.test_loss:.4g})")
            )
            axis.plot(x_axis, result.predictions[:count, index], linestyle=style, color=color, label=label)
        axis.set_ylabel("next value" if series else (f"output {index}" if outputs > 1 else "target"))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[-1].set_xlabel("t" if series else "test sample")
    if series:
        title = "Next-value predictions vs truth on the test windows"
    else:
        title = (
            f"Predictions vs targets on the first {count} test samples of {os.path.basename(data.source.split(':')[0])}"
        )
        if outputs > shown:
            title += f" (outputs 0-{shown - 1} of {outputs})"
    figure.suptitle(title)
    figure.savefig(path, dpi=80)
    return path


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pick_export(results: Sequence[Result]) -> Tuple[Result, Optional[Result], str]:
    """`(exported, better or None, sentence)`: a model is "better" only if its test loss is lower by more than
    SAME_LOSS_RTOL."""
    static, dynamic = results
    low, high = sorted(results, key=lambda result: result.test_loss)
    scale = max(abs(high.test_loss), 1e-12)
    difference = (high.test_loss - low.test_loss) / scale
    if difference > SAME_LOSS_RTOL:
        return (
            low,
            low,
            (
                f"{low.name} reached the lower test loss ({low.test_loss:.4g} vs {high.test_loss:.4g}, "
                f"{difference:.0%} lower); exported it"
            ),
        )
    return (
        dynamic,
        None,
        (
            f"Both reached the same test loss (within {SAME_LOSS_RTOL:.0%}: {static.test_loss:.6g} vs "
            f"{dynamic.test_loss:.6g}), as expected of the same maths; exported the {dynamic.name} model "
            "(its graph does not grow with T)"
        ),
    )


# --------------------------------------------------------------------------------------------- run
# The allocator region reserved before anything else (see `_reserve_allocator_region`), in MB.
_RESERVE_MB = 1024


def _enable_cpu_memory_stats() -> None:
    """Lets `get_memory_info("CPU:0")` count every allocation; effective only before TF's first op."""
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def _reserve_allocator_region() -> None:
    """Reserves one large BFC region before the first tensor, so that every tensor counts its own bytes.

    A BFC allocator that grows on demand adds regions of doubling size and can hand a tensor that lands in
    a fresh region the whole region, which would inflate some rows' peak memory. An uninitialised tensor,
    freed at once, reserves the region without touching its pages (as `benchmarks/memory.py` does).
    """
    import tensorflow as tf

    region = tf.raw_ops.Empty(shape=[_RESERVE_MB * 2**20 // 4], dtype=tf.float32)
    del region


def _prepare_out(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise DemoError(f"--out: {path!r} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise DemoError(f"--out: cannot create the folder {path!r} ({error.strerror})") from None
    return path


def _main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = _settings(args)
    data = load_npz(args.data) if args.data else None
    out = _prepare_out(args.out)
    plots = _have_matplotlib()
    _enable_cpu_memory_stats()
    _reserve_allocator_region()
    from keras_unroll.cell import BasicRNNCell
    from keras_unroll.inspect import compare_unrolling
    from keras_unroll.layers import DynamicUnroll, StaticUnroll

    if data is None:
        data = make_series_data(settings.num_train)
    print(
        "Comparing StaticUnroll (a Python loop: the graph holds one copy of the step per time step) with "
        "DynamicUnroll (a tf.while_loop: one copy of the step, run T times) on the same model, weights and data.",
        flush=True,
    )
    print(f"Data: {data.source}; test windows: {len(data.x_test)}", flush=True)

    results = [_train(layer_class, data, settings) for layer_class in (StaticUnroll, DynamicUnroll)]
    table = format_results(results)
    print("\nStatic vs dynamic unrolling, same model and data:\n" + table, flush=True)

    exported, better, choice = _pick_export(results)
    export_dir = os.path.join(out, "saved_model")
    difference, child_line = export_and_check(exported.model, export_dir, data.x_test, exported.predictions)
    print(
        f"\n{choice} to {export_dir}; reloaded it in a fresh process ({child_line}): predictions match "
        f"(max |difference| {difference:.2g}).\n"
        'Serving it with TensorFlow alone may log "Importing a function ... with ops with unsaved custom '
        'gradients": harmless for predictions; to train it further, load the model with keras_unroll installed.',
        flush=True,
    )

    written = []
    if plots:
        written.append(plot_predictions(data, results, os.path.join(out, "demo_predictions.png")))
    print(
        f"\nComparing the unrollings at T = {', '.join(map(str, settings.steps))}: StaticUnroll, TF1's plain "
        "while loop (DynamicUnroll with the generic step) and DynamicUnroll as planned (training step, batch "
        f"{settings.batch}, {BasicRNNCell.__name__}({settings.units})) ...",
        flush=True,
    )
    interactive = sys.stdout.isatty()
    comparison = compare_unrolling(
        BasicRNNCell(settings.units),
        steps=settings.steps,
        batch=settings.batch,
        features=data.x_train.shape[2],
        repeats=settings.repeats,
        progress=None if interactive else (lambda message: print(f"  {message}", flush=True)),
        verbose=1 if interactive else 0,
    )
    print(comparison, flush=True)
    if plots:
        written.append(comparison.plot(os.path.join(out, "compare_unrolling.png")))
    written += [f"{export_dir}/", *_write_results(out, data, table, comparison, results, exported, better)]
    print(f"\nWrote {', '.join(written)} in {time.perf_counter() - started:.0f} s.", flush=True)
    if not plots:
        print('No PNGs: matplotlib is not installed. To get them: pip install "keras-unroll[plot]"', flush=True)
    return 0


def _write_results(
    out: str, data: Dataset, table: str, comparison: Any, results: Sequence[Result], exported: Result, better: Any
) -> List[str]:
    """Writes results.md (the tables) and results.json (every number); returns their paths."""
    markdown, data_json = os.path.join(out, "results.md"), os.path.join(out, "results.json")
    with open(markdown, "w", encoding="utf-8") as handle:
        handle.write("# keras-unroll demo\n\n" + data.source + "\n\n```\n" + table + "\n```\n\n")
        handle.write(comparison.to_markdown() + "\n")
    models = [
        {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name not in ("model", "predictions")}
        for r in results
    ]
    summary = {
        "models": models,
        "best": None if better is None else better.name,
        "exported": exported.name,
        "comparison": comparison.to_dicts(),
    }
    with open(data_json, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    return [markdown, data_json]


def run(args: argparse.Namespace) -> int:
    """Runs the demo for parsed arguments; returns the exit code (2 for bad options or files)."""
    try:
        return _main(args)
    except DemoError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 2
    except ReloadError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
