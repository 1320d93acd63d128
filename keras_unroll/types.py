"""The types the public signatures share, written once.

TensorFlow and Keras ship no type information, so a type checker reads their names (`tf.Tensor`,
`keras.layers.Layer`) as `Any`: these aliases say what an argument takes to a reader and an editor, while the
functions keep checking their arguments at run time. This module sits below every other one (it imports only
TensorFlow, Keras, NumPy and `typing`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Optional, Protocol, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

# What `tf.convert_to_tensor` takes: a tensor, a variable, a NumPy array, nested Python lists or a number.
TensorLike = Union[tf.Tensor, tf.Variable, np.ndarray, Sequence[Any], float]

# A tensor or a nested structure of tensors (tuple, list, namedtuple such as `LSTMStateTuple`, dict).
Nested = Any

# A cell's state: one tensor `(batch, size)` or a structure of them, in TF1's form in the functional API
# (`LSTMStateTuple(c, h)`, a tuple per layer for a stack) and Keras' form in the layers (`[h, c]`).
State = Nested

# A Keras RNN cell (`state_size`, `call(inputs, states)`), a list of cells (stacked, as
# `keras.layers.StackedRNNCells`) or a positive int: a `BasicRNNCell` of that many units.
Cell = Union[keras.layers.Layer, Sequence[keras.layers.Layer], int]

# A dtype: a name (`"float32"`), a `tf.DType`, a NumPy dtype or type, or a Keras `DTypePolicy`.
DTypeLike = Union[str, tf.DType, np.dtype, type, keras.DTypePolicy]

# Keras' ways to name an activation, an initializer, a regularizer or a constraint: a name, an object, a
# callable or a serialized config; `None` is the argument's default (none, or the layer's own).
Activation = Union[str, Callable[[Any], Any], None]
Initializer = Union[str, keras.initializers.Initializer, Callable[..., Any], Dict[str, Any], None]
Regularizer = Union[str, keras.regularizers.Regularizer, Callable[[Any], Any], Dict[str, Any], None]
Constraint = Union[str, keras.constraints.Constraint, Callable[[Any], Any], Dict[str, Any], None]

# `jit_compile`: compile the loop with XLA (`True`), never (`False`), or where it pays back (`"auto"`).
JitCompile = Union[bool, Literal["auto"]]

# `recompute`: keep every state (`None`), every ceil(sqrt(T))-th (`"sqrt"`) or every k-th (a positive int).
Recompute = Union[None, Literal["sqrt"], int]


class TF1StyleCell(Protocol):
    """A cell written for TF1 (a `tf.nn.rnn_cell.RNNCell` subclass, or any object of this shape): the
    functional API runs it with TF1's own loop. `zero_state(batch_size, dtype)` is optional."""

    @property
    def state_size(self) -> Any: ...

    @property
    def output_size(self) -> Any: ...

    def __call__(self, inputs: Any, state: Any) -> Tuple[Any, Any]: ...


# What the functional API (`static_rnn`, `dynamic_rnn`, `raw_rnn`, ...) takes as a cell: the layers' cells
# and TF1-style ones.
AnyCell = Union[Cell, TF1StyleCell]

# `raw_rnn`'s `loop_fn(time, cell_output, cell_state, loop_state)` -> `(finished, next_input,
# next_cell_state, emit_output, next_loop_state)`; at time 0 the three last arguments are `None`.
RawLoopFn = Callable[
    [tf.Tensor, Optional[Nested], Optional[State], Optional[Nested]],
    Tuple[tf.Tensor, Nested, State, Optional[Nested], Optional[Nested]],
]

# A shape: a tuple or list of ints (`None` for an axis known only at run time), or a `tf.TensorShape`.
Shape = Union[Sequence[Optional[int]], tf.TensorShape]
