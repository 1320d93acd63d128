"""Switches for tests and comparisons: run the generic path, or plan with other tuning bounds.

Every fast path of the package (the fused SimpleRNN kernel, the hoisted LSTM/GRU projection) must give
the numbers of the generic step, the cell called once per time step. `generic_only()` makes that comparison
possible from the public API, for this package's tests and for downstream users who check their own models:

    with keras_unroll.testing.generic_only():
        expected = layer(x)          # traced here: the generic step, whatever was traced before
    actual = layer(x)                # the fast path

The switch takes effect for calls (and traces) made inside the block; functions traced earlier under another
setting are kept apart (the planner keys them on it), so the switch is never silently ignored.

With `use_tuning(Tuning(timed_trial=True))` or `KERAS_UNROLL_TIMED_TRIAL=1` (off by default, so that the same
program gets the same plan), `DynamicUnroll` under `jit_compile="auto"` times its fused kernel against the
generic step once per shape on the machine it runs on; `timed_trials(layer)` shows what it measured and chose.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Iterator, List

import keras

from keras_unroll import plan as _plan
from keras_unroll.plan import Tuning, trials, tuning, use_tuning

__all__ = ["Tuning", "cache_sizes", "generic_only", "plans", "timed_trials", "tuning", "use_tuning"]


def plans(layer_or_cell: keras.layers.Layer) -> List[Dict[str, Any]]:
    """What the planner chose for a layer's (or a cell's) latest calls and traces, oldest first (at most 16):
    one dict per call with `loop` (`"while"`, `"static"`, ...), `kernel` (`"generic"`, `"simple_rnn"`,
    `"gated"`, ...), `compile` (`"none"`, `"kernel"`: the XLA-compiled fused kernel, `"loop"`: the whole loop
    compiled), `shape` `(B, T, F)` (None where open) and `eager`.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> from keras_unroll.testing import Tuning, plans, use_tuning
    >>> layer = ku.DynamicUnroll(4)
    >>> with use_tuning(Tuning(compile_min_steps=64)):  # the default
    ...     for _ in range(2):
    ...         _ = layer(np.ones((2, 3, 1), "float32"))
    >>> [(p["kernel"], p["compile"]) for p in plans(layer)]  # 3 steps: not worth compiling
    [('simple_rnn', 'none'), ('simple_rnn', 'none')]
    """
    return _plan.plans(getattr(layer_or_cell, "cell", layer_or_cell))


def cache_sizes(layer_or_cell: keras.layers.Layer) -> Dict[str, Any]:
    """The sizes of the bounded caches behind a layer's calls: per cell (`functions`: traced `tf.function`s,
    `trials`, `seen_shapes`: the compile tier's evidence, `plans`) and process-wide (the fused kernels'
    compiled functions), with each bound under `"bounds"`."""
    return _plan.cache_sizes(getattr(layer_or_cell, "cell", layer_or_cell))


def timed_trials(layer_or_cell: keras.layers.Layer) -> List[Dict[str, Any]]:
    """The planner's timed trials for a layer's cell (or a cell): one dict per shape class, with the shape
    `(T, B, F)`, `training` (whether a tape recorded: forward and backward timed), the median `seconds` of
    the `"fused"` and the `"generic"` candidate, which was `chosen`, and the fused `kernel`'s name."""
    return trials(getattr(layer_or_cell, "cell", layer_or_cell))


@contextlib.contextmanager
def generic_only() -> Iterator[Tuning]:
    """Within this block every loop uses the generic step (no fused or hoisted kernel).

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> from keras_unroll.testing import generic_only
    >>> cell, x = ku.BasicRNNCell(4), np.ones((2, 3, 1), "float32")
    >>> fast, _ = ku.dynamic_rnn(cell, x)
    >>> with generic_only():
    ...     generic, _ = ku.dynamic_rnn(cell, x)
    >>> bool(np.allclose(fast, generic, atol=1e-6))
    True
    """
    with use_tuning(dataclasses.replace(tuning(), fast_paths=False)) as value:
        yield value
