"""Where the fused LSTM/GRU kernel spends its time: its parts timed beside Keras' layer compiled by XLA.

The figures behind docs/performance.md ("The fused LSTM/GRU kernel"), each part in its own `tf.function`,
all timed interleaved in one process (median of the rounds, ms per call):

- `layer forward`: `DynamicUnroll(cell)` in a `tf.function` with no tape (the inference loop);
- `projection`: `x W + b` for the whole sequence at once, `(T, B, gH)` (the training passes project it
  chunk by chunk inside their loops: this is what that work costs);
- `compiled forward`: the training forward pass alone (projection included), keeping what the backward
  pass reads;
- `compiled backward`: the backward pass alone (with `dW`, `db`, `dx`);
- `train`: `DynamicUnroll(cell)`'s gradient of a sum, against `Keras+XLA`: the same for `keras.layers.LSTM`/
  `GRU` with the whole step in `tf.function(jit_compile=True)`, and `Keras+XLA forward`.

With `--writes`, also a plain LSTM loop under XLA that writes nothing, `h`, `h` and `c`, or `h` and the
kernel's residuals per step.

Usage:
    python -m benchmarks parts --writes              # LSTM and GRU at 32·1000·8·32
    python -m benchmarks parts --cells gru --shape 64x100x16x64 --repeats 15
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.speed import _parse_shape, cpu_description


def parts(kind: str, shape: Sequence[int]) -> Dict[str, Callable[[], Any]]:
    """The timed calls for `kind` ("lstm" or "gru") at `shape` (B, T, F, H)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_unroll as ku
    from keras_unroll import plan, step
    from keras_unroll.kernels import cells, chunks, recurrence

    batch, steps, features, units = shape
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, steps, features), dtype=np.float32))
    cell = (keras.layers.LSTMCell if kind == "lstm" else keras.layers.GRUCell)(units)
    layer = ku.DynamicUnroll(cell)
    layer(x)
    # The passes as `DynamicUnroll` runs them for this shape: the planner's choices, the kernel's tensors.
    prepared = step.prepare(cell, x, time_major=False)
    request = plan.Request("dynamic", jit_compile=True)
    choices = plan.make_plan(cell, prepared, request, plan.Tuning(gated_max_macs=2**62)).choices
    mode = cells.mode_of(cell)
    t = recurrence.cell_tensors(cell, mode, prepared, step.DropoutMasks())
    t.setdefault("bias", tf.zeros(t["kernel"].shape[-1:]))
    t["stop"] = tf.constant(steps)
    found = recurrence.run_pass("forward", mode, choices, 2, t)
    back = {**t, "hs": found["hs"], "residuals": found["residuals"], "d_h": tf.ones([batch, units])}
    back.update({"d_c": back["d_h"]} if mode.has_carry else {})
    keras_layer = (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(units)
    keras_layer(x)

    @tf.function
    def train() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.trainable_weights)

    @tf.function(jit_compile=True)
    def keras_train() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(keras_layer(x))
        return tape.gradient(loss, keras_layer.trainable_weights)

    return {
        "layer forward": tf.function(lambda: layer(x, training=False)),  # not a serving trace (plan.serving_trace)
        "projection": tf.function(lambda: chunks.project(t["x"], t["kernel"], t["bias"])),
        "compiled forward": lambda: recurrence.run_pass("forward", mode, choices, 2, t)["h"],
        "compiled backward": lambda: recurrence.run_pass("backward", mode, choices, 0, back)["x"],
        "train": train,
        "Keras+XLA forward": tf.function(lambda: keras_layer(x), jit_compile=True),
        "Keras+XLA train": keras_train,
    }


def loop_writes(shape: Sequence[int]) -> Dict[str, Callable[[], Any]]:
    """An LSTM forward loop under XLA writing nothing, `h`, `h` and `c`, or `h` and the kernel's residuals
    `[i, f, g, o, c_{t-1}]` per step: what keeping the backward pass's inputs costs (`--writes`)."""
    import numpy as np
    import tensorflow as tf

    batch, steps, _, units = shape
    rng = np.random.default_rng(0)
    xw = tf.constant(rng.standard_normal((steps, batch, 4 * units), dtype=np.float32))
    recurrent = tf.constant(rng.standard_normal((units, 4 * units), dtype=np.float32) * 0.1)
    h0 = tf.zeros([batch, units])
    widths = {
        "writes none": [],
        "writes h": [units],
        "writes h, c": [units, units],
        "writes h, residuals": [units, 5 * units],
    }

    def loop(name: str) -> Any:
        count = tf.shape(xw)[0]
        tas = [tf.TensorArray(tf.float32, size=count, element_shape=[batch, w]) for w in widths[name]]

        def body(t, h, c, x_t, *tas):
            i, f, g, o = tf.split(x_t + tf.matmul(h, recurrent), 4, axis=1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            values = [h_new, c_new] if name == "writes h, c" else [h_new, tf.concat([i, f, g, o, c], 1)]
            tas = [ta.write(t, v) for ta, v in zip(tas, values)]
            return (t + 1, h_new, c_new, tf.gather(xw, tf.minimum(t + 1, count - 1)), *tas)

        out = tf.while_loop(lambda t, *_: t < count, body, (0, h0, h0, xw[0], *tas))
        return [out[1]] + [ta.stack() for ta in out[4:]]

    return {name: tf.function(lambda name=name: loop(name), jit_compile=True) for name in widths}


def bench(calls: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, float]:
    """Median ms per call of each entry, timed interleaved (a new seeded order each round)."""
    import tensorflow as tf

    def run(fn: Callable[[], Any]) -> None:
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn())

    for fn in calls.values():
        run(fn)
    samples: Dict[str, list] = {name: [] for name in calls}
    for round_index in range(repeats):
        order = list(calls)
        random.Random(round_index).shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(3):
                run(calls[name])
            samples[name].append((time.perf_counter() - start) / 3 * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks parts", description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", choices=("lstm", "gru"), default=["lstm", "gru"])
    p.add_argument("--shape", type=_parse_shape, default=(32, 1000, 8, 32), metavar="BxTxFxH")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="a tiny shape, 2 rounds (a smoke run)")
    p.add_argument("--writes", action="store_true", help="also: what the LSTM forward loop's writes cost under XLA")
    args = p.parse_args(argv)
    shape, repeats = ((2, 5, 3, 4), 2) if args.quick else (args.shape, args.repeats)
    print(f"CPU: {cpu_description()}; B·T·F·H = {'·'.join(map(str, shape))}; median ms per call, {repeats} rounds")
    for kind in args.cells:
        medians = bench(parts(kind, shape), repeats)
        print(f"{kind.upper()}: " + ", ".join(f"{name} {value:.3g}" for name, value in medians.items()))
    if args.writes:
        medians = bench(loop_writes(shape), repeats)
        print("LSTM loop under XLA: " + ", ".join(f"{name} {value:.3g}" for name, value in medians.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
