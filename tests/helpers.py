"""The vocabulary the tests share: the unrolls under test, the cells, the tolerances and the comparison.

Import what a test file needs (`from helpers import LAYERS, close, layers`) instead of defining it again, so
that a new unroll, cell or tolerance changes in one place:

- `LAYERS`, `FUNCTIONS`, `UNROLLS`: the two layers, the two TF1 functions, and the four unroll names.
- `unroll_calls(**layer_kwargs)`: the four unrolls as `fn(cell, x, **call_kwargs)`, layers built with
  `layer_kwargs`.
- `layers`, `unrolls`: the `pytest.mark.parametrize` marks over `layer_cls` and over `unroll_calls()`.
- `GATED_CELLS`, `make_cell`: the cells most tests run (`BasicRNNCell` and Keras' LSTM and GRU cells).
- `RTOL`, `ATOL`, `close`, `close_nested`: float32 results against float64 NumPy or another float32 path.
- `child_env(**extra)`: the environment of a child Python: quiet TensorFlow, this repository importable;
  `AS_USERS_RUN`: what a child that runs as a user runs leaves out of it (the suite's compile tier).
- `pairwise(**axes)`: a `pytest.mark.parametrize` over a covering design of axes that do not interact as a
  whole (every pair of values of any two axes runs once at least) instead of their full product.
- TF1 itself as the oracle of the parity tests: `tf1_reference.run_tf1(argv)` and
  `tf1_reference.run_fn_in_tf1(child, out_dir, archive)` (a child process with TF1's cells; `load_npz` reads
  its archive back).
- A fresh Python process for a test's child without another TensorFlow import: `fork_server.run_forked(argv)`
  (forked from a server that imported TensorFlow and Keras once; the TF1 oracles use its `"tf1"` flavor);
  `fork_server.start_forked(argv)` starts one without waiting (children of one server run at the same time).
"""

from __future__ import annotations

import itertools
import pathlib
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import keras
import numpy as np
import pytest
import tensorflow as tf
from fork_server import child_env  # noqa: F401  # the children's environment, defined where servers use it

import keras_unroll as ku

# float32 against float64 NumPy (or against another float32 computation) over a handful of steps.
RTOL, ATOL = 1e-5, 1e-6

LAYERS = [ku.StaticUnroll, ku.DynamicUnroll]
FUNCTIONS = [ku.static_rnn, ku.dynamic_rnn]
UNROLLS = ["StaticUnroll", "DynamicUnroll", "static_rnn", "dynamic_rnn"]

layers = pytest.mark.parametrize("layer_cls", LAYERS, ids=lambda cls: cls.__name__)


def unroll_calls(**layer_kwargs: Any) -> Dict[str, Callable[..., Any]]:
    """The four unrolls by name, each as `fn(cell, x, **call_kwargs)`.

    The layers are built with `layer_kwargs` (e.g. `return_sequences=True, return_state=True`, and then return
    a tuple); the functions return TF1's `(outputs, state)` and take no layer arguments.
    """

    def layer(cls):
        def run(cell, x, **call_kwargs):
            result = cls(cell, **layer_kwargs)(x, **call_kwargs)
            return tuple(result) if isinstance(result, list) else result

        return run

    return {
        "StaticUnroll": layer(ku.StaticUnroll),
        "DynamicUnroll": layer(ku.DynamicUnroll),
        "static_rnn": lambda cell, x, **kw: ku.static_rnn(cell, x, **kw),
        "dynamic_rnn": lambda cell, x, **kw: ku.dynamic_rnn(cell, x, **kw),
    }


_CALLS = unroll_calls()
unrolls = pytest.mark.parametrize("unroll", list(_CALLS.values()), ids=list(_CALLS))

GATED_CELLS = {"LSTMCell": keras.layers.LSTMCell, "GRUCell": keras.layers.GRUCell}


def make_cell(kind: str, units: int, **kwargs: Any) -> Any:
    """A new cell by name: `"BasicRNNCell"` (this package's), `"SimpleRNNCell"`, `"LSTMCell"`, `"GRUCell"`."""
    classes = {"BasicRNNCell": ku.BasicRNNCell, "SimpleRNNCell": keras.layers.SimpleRNNCell, **GATED_CELLS}
    return classes[kind](units, **kwargs)


def close(actual: Any, expected: Any, what: str = "", *, rtol: float = RTOL, atol: float = ATOL) -> None:
    """`actual` equals `expected` within `rtol`/`atol` (tensors, arrays or lists of them)."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=what)


def close_nested(actual: Any, expected: Any, what: str = "", *, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Same number of tensors in the same (flattened) order, each of the same shape and close."""
    actual, expected = tf.nest.flatten(actual), tf.nest.flatten(expected)
    assert len(actual) == len(expected), (what, len(actual), len(expected))
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert tuple(np.shape(a)) == tuple(np.shape(e)), (what, i, np.shape(a), np.shape(e))
        close(a, e, f"{what} [{i}]", rtol=rtol, atol=atol)


Axis = Union[Sequence[Any], Mapping[str, Any]]


def _value_id(value: Any) -> str:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return str(value)
    return getattr(value, "__name__", repr(value))


def pairwise_cases(axes: Mapping[str, Axis]) -> List[Tuple[str, Tuple[Any, ...]]]:
    """`(id, values)` for the cases of a pairwise covering design of `axes` (`{name: values}`; values as a list,
    or as `{id: value}` to name them), in a fixed order.

    Every pair of values of any two axes is in one case at least, so every value of every axis runs too, and
    with two axes (or one) this is their full product. Built greedily: from the full product in order, each
    next case is the first that covers the most pairs not covered yet. E.g. 3 kinds x 2 rates x 2 jits is 6
    cases instead of 12 (each kind with each rate and each jit, each rate with each jit); 7 x 3 x 3 is 21 (a
    Latin square) instead of 63.

    Use it where what a test checks depends on each axis and on pairs of them, not on a whole combination
    of three or more; a combination that matters on its own gets its own test.
    """
    named = [
        list(axis.items()) if isinstance(axis, Mapping) else [(_value_id(v), v) for v in axis] for axis in axes.values()
    ]
    product = list(itertools.product(*[range(len(axis)) for axis in named]))
    pairs = list(itertools.combinations(range(len(named)), 2))
    uncovered = {(a, row[a], b, row[b]) for row in product for a, b in pairs}
    chosen = [] if pairs else product  # one axis: each of its values
    while uncovered:
        best = max(product, key=lambda row: sum((a, row[a], b, row[b]) in uncovered for a, b in pairs))
        chosen.append(best)
        product.remove(best)
        uncovered -= {(a, best[a], b, best[b]) for a, b in pairs}
    return [
        (
            "-".join(named[axis][i][0] for axis, i in enumerate(row)),
            tuple(named[axis][i][1] for axis, i in enumerate(row)),
        )
        for row in chosen
    ]


def pairwise(**axes: Axis) -> pytest.MarkDecorator:
    """`pytest.mark.parametrize` over `pairwise_cases(axes)`: the test takes one argument per axis, ids read
    `"value-value-..."`. `@pairwise(kind=["lstm", "gru"], jit={"graph": False, "xla": True}, ...)`."""
    cases = pairwise_cases(axes)
    return pytest.mark.parametrize(list(axes), [values for _, values in cases], ids=[case_id for case_id, _ in cases])


ROOT = pathlib.Path(__file__).resolve().parent.parent


#: What a child that runs as a user runs (the README's blocks, the examples) leaves out of its environment
#: (`fork_server.start_forked(..., unset=AS_USERS_RUN)`): the suite compiles every `DynamicUnroll` from its first
#: call (`KERAS_UNROLL_COMPILE_MIN_STEPS=0`, tests/conftest.py) so that its tiny shapes cover the compiled kernels;
#: a user's short sequences stay uncompiled, at the package's own compile tier.
AS_USERS_RUN: Tuple[str, ...] = ("KERAS_UNROLL_COMPILE_MIN_STEPS",)


def load_npz(path: Any) -> Dict[str, np.ndarray]:
    """Every array of an `.npz` file, read into memory (the file is closed again)."""
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}
