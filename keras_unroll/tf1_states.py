"""TF1's conventions for cells, shared by the functional API (`functional.py`) and TF1's own loops (`raw.py`).

- The dtype rule (`settle_dtype`): an unbuilt cell is built in its inputs' dtype (or `dtype=`), as TF1 does;
  a cell with narrower weights than its inputs is an error, never a silent cast down.
- The state structures (`to_tf1_state` / `from_tf1_state`): TF1's `LSTMStateTuple(c, h)` and per-layer tuples
  on one side, the Keras lists the loops and layers hold (`[h, c]`) on the other.

It sits below both of its users, so that `functional` can hand TF1-style cells to `raw` and `raw` can use these
rules without importing `functional` (imports flow one way).
"""

from __future__ import annotations

import numbers
from typing import Any, List, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.step import LSTMStateTuple as LSTMStateTuple  # re-exported: tf1.py, functional.py
from keras_unroll.step import _is_lstm_state_tuple
from keras_unroll.types import AnyCell, DTypeLike, Nested, State


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool (True or False). Received: {name}={value!r}")
    return value


def check_parallel_iterations(value: Any) -> Optional[int]:
    """Checks `parallel_iterations`: None or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            "`parallel_iterations` must be None or a positive integer (default 10). "
            f"Received: parallel_iterations={value!r}"
        )
    return int(value)


def _cell_tree(cell: Any) -> List[Any]:
    """The cell and every cell inside it (a wrapper's `cell`, a stack's `cells`), each once."""
    found: List[Any] = []
    todo = [cell]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found) or not isinstance(current, keras.layers.Layer):
            continue
        found.append(current)
        inner = getattr(current, "cell", None)
        todo += [inner] if inner is not None else []
        todo += list(getattr(current, "cells", None) or [])
    return found


def _first_input(inputs: Any) -> Any:
    """The first tensor of a (possibly nested) input: what TF1 reads the dtype and batch size from."""
    flat = tf.nest.flatten(inputs)
    return flat[0] if flat else None


def _input_dtype(inputs: Any, dtype: Any) -> Optional[tf.DType]:
    """The dtype TF1 would compute in: the input tensor's, else `dtype=`, else a NumPy array's (None: floatx).

    A TF tensor's dtype is its own (TF1 neither casts it nor builds the cell in another dtype); a NumPy array
    is what TF1 code fed to a placeholder of `dtype`, so `dtype=` decides for it when given.
    """
    first = _first_input(inputs)
    given = None if dtype is None else tf.as_dtype(dtype)
    if isinstance(first, (tf.Tensor, tf.Variable)) and first.dtype.is_floating:
        if given is not None and given.is_floating and given != first.dtype:
            raise ValueError(
                f"`dtype` must match the inputs' dtype: TF1 builds the cell in the inputs' dtype and starts the "
                f"state in `dtype`, so the two must agree. Cast the inputs (`tf.cast(inputs, {given.name!r})`) or "
                f"drop `dtype`. Received: dtype={given.name}, inputs.dtype={first.dtype.name}"
            )
        return first.dtype
    if given is not None:
        return given if given.is_floating else None
    if isinstance(first, np.ndarray) and np.issubdtype(first.dtype, np.floating):
        return tf.as_dtype(first.dtype)
    return None


def _mixed(layer: Any) -> bool:
    return bool(layer.compute_dtype != layer.variable_dtype)


def settle_dtype(cell: AnyCell, inputs: Nested, dtype: Optional[DTypeLike] = None) -> None:
    """TF1's dtype rule for a cell, the one place the functions apply it: an unbuilt cell is built in the
    inputs' dtype (or `dtype=`).

    Each unbuilt cell in the tree whose dtype the user did not give takes the dtype TF1 would compute in
    (float64 inputs give float64 weights, outputs and states): a `ku.tf1` cell through its own hook
    (`_keras_unroll_adopt_dtype`, which knows whether `dtype=` was given; `step.build_cell` calls the same
    hook for the layers), any other cell when it is at the default dtype policy. A cell whose weights are
    narrower than the inputs (built float32, or given `dtype='float32'`, for float64 inputs) says so instead
    of computing in float32. Inputs narrower than the cell are cast up (nothing is lost); a mixed-precision
    policy is left as it is (its inputs are cast to its compute dtype).

    Raises:
        ValueError: A cell with a non-float dtype, a cell with narrower weights than the inputs, or
            `dtype` disagreeing with a tensor input.
    """
    layers = _cell_tree(cell)
    for layer in layers:
        if not tf.as_dtype(layer.compute_dtype).is_floating:
            raise ValueError(
                "RNN cell only supports floating point inputs and weights (TF1's rule): give the cell a float "
                f"dtype such as 'float32'. Received: cell {layer.name!r} with dtype {layer.compute_dtype}"
            )
    target = _input_dtype(inputs, dtype)
    if target is None or not layers:
        return
    default = keras.config.dtype_policy().name
    for layer in layers:
        if layer.built:
            continue
        adopt = getattr(layer, "_keras_unroll_adopt_dtype", None)
        if adopt is not None:
            adopt(target)
        elif layer.dtype_policy.name == default and not _mixed(layer) and layer.compute_dtype != target.name:
            layer.dtype_policy = target.name
    for layer in layers:
        weights = tf.as_dtype(layer.variable_dtype)
        if not _mixed(layer) and weights.is_floating and target.size > weights.size:
            how = "was built in" if layer.built else "was given dtype"
            raise ValueError(
                f"The cell {layer.name!r} {how} {weights.name} (TF1 builds a cell in the dtype of its first "
                f"inputs), and these inputs are {target.name}: computing them in {weights.name} would drop "
                f"precision silently. Cast the inputs to {weights.name}, or use a new cell for {target.name} "
                f"inputs. Received: inputs dtype {target.name}, cell weights {weights.name}"
            )


# ----------------------------------------------------------------- TF1's state structures
def _inner(cell: Any) -> Any:
    """The cell a `ku.tf1` wrapper wraps (its state is that cell's), through any number of wrappers."""
    while getattr(type(cell), "_keras_unroll_wrapper", False):
        cell = cell.cell
    return cell


def lstm_like(cell: AnyCell) -> bool:
    """Keras' `LSTMCell` (and subclasses such as `ku.tf1.BasicLSTMCell`) or `ku.tf1.LSTMCell`: state `[h, c]`."""
    return isinstance(cell, keras.layers.LSTMCell) or getattr(type(cell), "_keras_unroll_tf1_lstm", False)


def _tf1_lstm(cell: Any) -> bool:
    return getattr(type(cell), "_keras_unroll_tf1_lstm", False)


def _as_cells(cell: Any) -> Any:
    return step_lib.as_cell(cell) if isinstance(cell, (list, tuple)) else cell


def _state_is_tuple(cell: Any) -> bool:
    return getattr(cell, "state_is_tuple", True)


def to_tf1_state(cell: AnyCell, keras_state: State) -> State:
    """A cell's state in Keras' structure → TF1's structure (what `ku.dynamic_rnn` returns).

    - a single-state cell (`BasicRNNCell`, `GRUCell`, Keras' `SimpleRNNCell`/`GRUCell`): one tensor;
    - an LSTM (`ku.tf1.BasicLSTMCell`, `ku.tf1.LSTMCell`, Keras' `LSTMCell`): `LSTMStateTuple(c, h)` from
      Keras' `[h, c]` (TF1's concatenated `[c, h]` tensor for `state_is_tuple=False`);
    - a stack (`MultiRNNCell`, `keras.layers.StackedRNNCells`, a Python list of cells): a tuple, one entry
      per layer, each in its own cell's TF1 structure;
    - a wrapper: its wrapped cell's structure; any other cell: its Keras list, unchanged.

    Args:
        cell: The cell (or list of cells) the state belongs to.
        keras_state: Its state as the loops and layers hold it (`[h, c]`, `[[h1], [h2]]`, ...).

    Returns:
        The state in TF1's structure.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> h, c = np.zeros((2, 3), "float32"), np.ones((2, 3), "float32")
    >>> state = ku.tf1.to_tf1_state(ku.tf1.BasicLSTMCell(3), [h, c])
    >>> float(state.c[0, 0]), float(state.h[0, 0])
    (1.0, 0.0)
    """
    cell = _as_cells(cell)
    hook = getattr(cell, "_keras_unroll_to_tf1", None)  # a `ku.tf1` cell knows its own TF1 structure
    if hook is not None:
        return hook(keras_state)
    cell = _inner(cell)
    if isinstance(cell, keras.layers.StackedRNNCells):
        states = list(keras_state) if isinstance(keras_state, (list, tuple)) else [keras_state]
        if len(states) != len(cell.cells):
            flat = tf.nest.flatten(keras_state)
            states = tf.nest.pack_sequence_as(cell.state_size, flat)
        return tuple(to_tf1_state(sub, sub_state) for sub, sub_state in zip(cell.cells, states))
    flat = tf.nest.flatten(keras_state)
    if lstm_like(cell) and len(flat) == 2:
        h, c = flat
        return LSTMStateTuple(c, h) if _state_is_tuple(cell) else tf.concat([c, h], 1)
    if not isinstance(cell.state_size, (list, tuple)) or len(tf.nest.flatten(cell.state_size)) == 1:
        if len(flat) == 1:
            return flat[0]
    return keras_state


def from_tf1_state(cell: AnyCell, tf1_state: State) -> State:
    """A state in TF1's structure → the Keras structure the loops take (what `initial_state=` becomes).

    - `LSTMStateTuple(c, h)` (ours, or any namedtuple with fields `c, h` such as tf-keras') → `[h, c]`, for
      any LSTM cell (Keras' own included);
    - a plain tuple for a `ku.tf1` LSTM cell is TF1's `(c, h)` (TF1 unpacks `c, h = state`), a plain list
      is refused (Keras' layers return `[h, c]`: ambiguous); for Keras' `LSTMCell` a list or tuple keeps
      Keras' `[h, c]`; a `(batch, 2H)` tensor for `state_is_tuple=False` is `[c, h]`;
    - a stack's tuple with one entry per layer → one Keras entry per layer (a flat Keras list is kept);
    - anything else is returned unchanged (the loops then check it against the cell's state sizes).

    Args:
        cell: The cell (or list of cells) the state is for.
        tf1_state: The state in TF1's structure (or already in Keras' structure).

    Returns:
        The state in Keras' structure.

    Raises:
        ValueError: A plain list `[., .]` for a `ku.tf1` LSTM cell (use `LSTMStateTuple(c, h)`).

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> c, h = np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")
    >>> h_first, c_second = ku.tf1.from_tf1_state(ku.tf1.BasicLSTMCell(3), ku.tf1.LSTMStateTuple(c, h))
    >>> float(h_first[0, 0]), float(c_second[0, 0])
    (0.0, 1.0)
    """
    cell = _as_cells(cell)
    if tf1_state is None:
        return None
    hook = getattr(cell, "_keras_unroll_from_tf1", None)  # a `ku.tf1` cell reads its own TF1 structure
    if hook is not None:
        converted = hook(tf1_state)
        if converted is not tf1_state:
            return converted
    cell = _inner(cell)
    if isinstance(cell, keras.layers.StackedRNNCells):
        if isinstance(tf1_state, (list, tuple)) and len(tf1_state) == len(cell.cells):
            return [from_tf1_state(sub, sub_state) for sub, sub_state in zip(cell.cells, tf1_state)]
        return tf1_state
    if lstm_like(cell):
        if _is_lstm_state_tuple(tf1_state):
            return [tf1_state.h, tf1_state.c]
        tf1_cell = _tf1_lstm(cell)
        if tf1_cell and isinstance(tf1_state, tuple) and len(tf1_state) == 2:
            c, h = tf1_state  # TF1's order for TF1's cells (TF1 unpacked `c, h = state`)
            return [h, c]
        if tf1_cell and isinstance(tf1_state, list) and len(tf1_state) == 2:
            # A list is what Keras' layers return ([h, c]); TF1 code writes (c, h). Refuse to guess.
            raise ValueError(
                f"An initial state for `ku.tf1.{type(cell).__name__}` in the functional API is TF1's "
                "`LSTMStateTuple(c, h)` (or a tuple `(c, h)`); a list is ambiguous, since Keras' layers return "
                "`[h, c]`. Give `ku.tf1.LSTMStateTuple(c=c, h=h)`. Received: initial_state=a list of 2 tensors"
            )
        if tf1_cell and not _state_is_tuple(cell) and not tf.nest.is_nested(tf1_state):
            state = tf.convert_to_tensor(tf1_state)
            if state.shape.rank == 2 and state.shape[-1] == cell.units + step_lib.output_size(cell):
                c, h = tf.split(state, [cell.units, step_lib.output_size(cell)], axis=1)
                return [h, c]
    return tf1_state
