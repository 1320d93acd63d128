"""`python -m benchmarks shapes`: costs that grow with the shapes a model sees, not with one shape's size.

Two rows, each measured side by side in one run:

- *changing lengths*: one `train_on_batch` per length 5..64 through `DynamicUnroll(8)` with an open time
  axis, default (`jit_compile="auto"`: the XLA fused loop, lengths padded to buckets) against
  `jit_compile=False`: total time and peak RSS growth (docs/performance.md, "Lengths that change");
- *long T*: one training step of `DynamicUnroll(keras.layers.LSTMCell(32))` (the generic while loop) at
  T and 4·T, and their ratio (linear training: about 4; quadratic: about 16).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import List, Optional, Sequence

_LENGTHS_CHILD = """
import resource, sys, time
import numpy as np, keras
import keras_unroll as ku
top = int(sys.argv[1])
for name in sys.argv[2:]:  # one jit_compile value per process, but for --quick
    jit = {"auto": "auto", "False": False}[name]
    m = keras.Sequential([keras.Input((None, 2)), ku.DynamicUnroll(8, jit_compile=jit), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    m.train_on_batch(np.random.rand(4, 3, 2).astype("float32"), np.random.rand(4, 1).astype("float32"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for steps in range(5, top + 1):
        m.train_on_batch(np.random.rand(4, steps, 2).astype("float32"), np.random.rand(4, 1).astype("float32"))
    seconds = time.perf_counter() - start
    print(name, seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024, flush=True)
"""


def _changing_lengths(top: int, one_process: bool = False) -> List[str]:
    """Each `jit_compile` value in a fresh process (its RSS growth its own); both in one with `one_process`
    (`--quick`: the rows then only show that everything runs)."""
    groups = [("auto", "False")] if one_process else [("auto",), ("False",)]
    rows = []
    for group in groups:
        done = subprocess.run(
            [sys.executable, "-c", _LENGTHS_CHILD, str(top), *group], capture_output=True, text=True, check=True
        )
        for line in done.stdout.splitlines()[-len(group) :]:
            jit, seconds, megabytes = line.split()
            rows.append(f"| lengths 5..{top}, jit_compile={jit} | {float(seconds):.1f} s | {float(megabytes):.0f} MB |")
    return rows


def _long_t(steps: int) -> str:
    import keras
    import tensorflow as tf

    import keras_unroll as ku

    times = []
    for length in (steps, 4 * steps):
        layer = ku.DynamicUnroll(keras.layers.LSTMCell(32))
        x = tf.random.normal((32, length, 8))
        layer(x)

        @tf.function
        def train_step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(loss, [x] + layer.trainable_weights)

        train_step(x)
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            train_step(x)
            best = min(best, time.perf_counter() - start)
        times.append(best)
    return (
        f"| LSTM training step, T = {steps} / {4 * steps} | {times[0]:.2f} s / {times[1]:.2f} s "
        f"| ratio {times[1] / times[0]:.1f} |"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shapes", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one child process: a smoke test, not numbers to compare"
    )
    args = parser.parse_args(argv)
    top, steps = (8, 20) if args.quick else (64, 5000)
    print("| case | time | memory / ratio |\n|---|---|---|")
    for row in _changing_lengths(top, one_process=args.quick):
        print(row, flush=True)
    print(_long_t(steps), flush=True)
    return 0
