"""Long-run stability: `DynamicUnroll` trains at T = 10 000 without retracing or memory growth.

(That its graph does not grow with T is tested once, on the traced forward and training graphs with and without
XLA, in test_inspect.py: `test_dynamic_op_count_does_not_depend_on_steps`.)

- Traces: a subclass counts how often its `call` runs as Python. In graph mode that happens only while
  TensorFlow traces, so the count after the first epoch must stay the same for every later epoch.
- Memory: the process's resident set size (RSS, from /proc/self/statm) after each epoch. The first epochs
  warm caches up, so growth is measured from the end of epoch 3 to the end of the last epoch and must stay
  under 16 MB (measured: 0.1-1.6 MB). A retrace per epoch would also grow it (each trace keeps a graph and,
  with XLA, an executable), but the trace count is the exact check.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import keras_unroll as ku

T, B, F, H = 10_000, 2, 1, 4
EPOCHS, WARMUP_EPOCHS = 8, 3
RSS_GROWTH_LIMIT_MB = 16.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:  # Linux (CI); resident pages are the second field
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class TraceCountingUnroll(ku.DynamicUnroll):
    """`DynamicUnroll` that counts how often its `call` runs in Python (= how often it is traced)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traces = 0

    def call(self, sequences, initial_state=None, sequence_length=None, mask=None, training=None):
        self.traces += 1
        return super().call(
            sequences, initial_state=initial_state, sequence_length=sequence_length, mask=mask, training=training
        )


class _PerEpoch(keras.callbacks.Callback):
    def __init__(self, layer: TraceCountingUnroll) -> None:
        super().__init__()
        self.layer = layer
        self.traces, self.rss, self.losses = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.traces.append(self.layer.traces)
        self.rss.append(_rss_mb())
        self.losses.append(float(logs["loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True], ids=["while_loop", "xla"])
def test_trains_at_ten_thousand_steps_without_retracing_or_memory_growth(jit_compile, rng):
    x = rng.normal(size=(B, T, F)).astype("float32")
    y = rng.normal(size=(B, 1)).astype("float32")
    layer = TraceCountingUnroll(ku.BasicRNNCell(H), jit_compile=jit_compile)
    model = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    per_epoch = _PerEpoch(layer)

    model.fit(x, y, batch_size=B, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[per_epoch])

    assert per_epoch.traces[0] >= 1
    assert per_epoch.traces == [per_epoch.traces[0]] * EPOCHS, per_epoch.traces  # traced in epoch 1 only
    growth = per_epoch.rss[-1] - per_epoch.rss[WARMUP_EPOCHS - 1]
    assert growth < RSS_GROWTH_LIMIT_MB, per_epoch.rss
    assert np.all(np.isfinite(per_epoch.losses)), per_epoch.losses
    assert per_epoch.losses[-1] < per_epoch.losses[0], per_epoch.losses  # it does learn the two targets
    assert all(np.abs(a - b).max() > 0 for a, b in zip(model.get_weights(), before))
