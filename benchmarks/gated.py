"""Speed of the fused LSTM/GRU kernels (`keras_unroll/kernels/gated.py`) against Keras' own layers.

For each cell (LSTM, GRU) and shape B·T·F·H, `Input((T, F)) -> RNN(H) -> Dense(1)` with float32 and an MSE
loss is timed four ways, interleaved (each round runs every variant once, in a new seeded random order; each
sample times a few calls, ~20 ms), and the medians are shown with their ratio to the Keras layer in the
same run:

- `Keras`: `keras.layers.LSTM`/`GRU` (the reference);
- `Keras+XLA`: the same layer with the train step (and the forward) in `tf.function(jit_compile=True)`:
  the strongest peer on CPU (the forward is the layer compiled whole with XLA);
- `gated`: `gated_loop(cell, ..., jit=False)` on the same cell;
- `gated+XLA`: `gated_loop(cell, ..., jit=True)` (its forward and backward loops XLA-compiled).

Measured: the forward (inference, `training=False`, in a `tf.function`) and the train step (`GradientTape`
+ SGD update, in a `tf.function`). The machine may be shared: numbers are noisy, compare ratios in one run.

Usage:
    python -m benchmarks.gated                     # all shapes (minutes)
    python -m benchmarks.gated --quick             # a tiny smoke run
    python -m benchmarks.gated --shapes 32x1000x8x32 --cells lstm --repeats 15
    python -m benchmarks.gated --clock cpu         # CPU time: steadier when other processes load the CPU
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.speed import _calls_per_sample, _parse_shape, _progress, _sample  # noqa: E402

Shape = Tuple[int, int, int, int]
FULL_SHAPES: Tuple[Shape, ...] = ((32, 1000, 8, 32), (64, 100, 16, 64), (32, 28, 28, 128), (256, 50, 64, 256))
QUICK_SHAPES: Tuple[Shape, ...] = ((2, 5, 3, 4),)
CELLS = ("lstm", "gru")
REFERENCE = "Keras"
VARIANTS = (REFERENCE, "Keras+XLA", "gated", "gated+XLA")
MEASURES = ("forward", "train")


def cpu_description() -> str:
    """The CPU model, its vector extensions and the number of cores, from /proc/cpuinfo where it exists."""
    import platform

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


def make_runners(cell_kind: str, variant: str, shape: Shape, seed: int = 0) -> Dict[str, Callable[[], Any]]:
    """The timed calls of one variant: `{"forward": fn, "train": fn}`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_unroll.kernels import gated
    from keras_unroll.loops import _core

    batch, steps, features, units = shape
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, steps, features), dtype=np.float32))
    y = tf.constant(rng.standard_normal((batch, 1), dtype=np.float32))
    layer_class = keras.layers.LSTM if cell_kind == "lstm" else keras.layers.GRU
    layer = layer_class(units)
    dense = keras.layers.Dense(1)
    dense(layer(x[:, :1]))
    weights = layer.trainable_variables + dense.trainable_variables

    if variant.startswith("Keras"):

        def model(inputs: Any, training: bool) -> Any:
            return dense(layer(inputs, training=training))

    else:
        jit = variant.endswith("+XLA")

        def model(inputs: Any, training: bool) -> Any:
            prepared = _core.prepare(layer.cell, inputs, time_major=False)
            _, last, _ = gated.gated_loop(layer.cell, prepared, training=training, return_all_outputs=False, jit=jit)
            return dense(last)

    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(weights)
    compiled = variant == "Keras+XLA"

    @tf.function(jit_compile=compiled, autograph=False)
    def forward() -> Any:
        return model(x, training=False)

    @tf.function(jit_compile=compiled, autograph=False)
    def train() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    return {"forward": lambda: forward().numpy(), "train": lambda: train().numpy()}


def _cpu_sample(fn: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def bench(cell_kind: str, shape: Shape, repeats: int, quick: bool, clock: str = "wall") -> Dict[str, Dict[str, float]]:
    """Median seconds per call, `{variant: {measure: s}}`, timed interleaved (`clock`: "wall" or "cpu")."""
    sample = _sample if clock == "wall" else _cpu_sample
    timed: List[Tuple[str, str, Callable[[], Any], int]] = []
    for variant in VARIANTS:
        _progress(f"  {cell_kind} {'x'.join(map(str, shape))}: build + warm-up {variant} ...")
        runners = make_runners(cell_kind, variant, shape)
        for measure in MEASURES:
            fn = runners[measure]
            fn()  # trace / compile
            timed.append((variant, measure, fn, _calls_per_sample(fn, quick)))
    samples: Dict[Tuple[str, str], List[float]] = {(v, m): [] for v, m, _, _ in timed}
    for round_index in range(repeats):
        order = list(timed)
        random.Random(round_index).shuffle(order)
        for variant, measure, fn, calls in order:
            samples[(variant, measure)].append(sample(fn, calls))
    results: Dict[str, Dict[str, float]] = {v: {} for v in VARIANTS}
    for (variant, measure), values in samples.items():
        results[variant][measure] = statistics.median(values)
    return results


def _row(cell_kind: str, shape: Shape, results: Dict[str, Dict[str, float]]) -> List[str]:
    lines = []
    for variant in VARIANTS:
        cells = []
        for measure in MEASURES:
            value, base = results[variant][measure], results[REFERENCE][measure]
            cells.append(f"{value * 1e3:.3g} ms ({value / base:.2f}×)")
        lines.append(f"| {'·'.join(map(str, shape))} | {cell_kind.upper()} | {variant} | {' | '.join(cells)} |")
    gated_xla, peer = results["gated+XLA"], results["Keras+XLA"]
    lines.append(
        f"| | | gated+XLA ÷ Keras+XLA | {gated_xla['forward'] / peer['forward']:.2f}× | "
        f"{gated_xla['train'] / peer['train']:.2f}× |"
    )
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gated", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny shape, 2 rounds, 1 call per sample (smoke run)")
    p.add_argument("--shapes", type=_parse_shape, nargs="+", metavar="BxTxFxH", help="shapes to time")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS), help="cells to time")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 11; 2 with --quick)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (what users feel), or this process's CPU time (steadier on a loaded shared machine; "
        "counts both threads of a 2-thread op)",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser().error(f"--repeats must be a positive integer. Received: --repeats {args.repeats}")
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    repeats = args.repeats or (2 if args.quick else 11)
    import keras
    import tensorflow as tf

    header = [
        f"CPU: {cpu_description()}; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"load average at start {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"{args.clock} time, medians of {repeats} interleaved rounds; ratios to the Keras layer in the same run "
        "(noisy on a shared machine)",
        "",
        "| B·T·F·H | cell | variant | forward | train step |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    for shape in shapes:
        for cell_kind in args.cells:
            start = time.perf_counter()
            results = bench(cell_kind, shape, repeats, args.quick, args.clock)
            print("\n".join(_row(cell_kind, shape, results)), flush=True)
            _progress(f"  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
