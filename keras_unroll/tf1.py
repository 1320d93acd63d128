"""TF1's `tf.nn.rnn_cell` vocabulary as Keras 3 RNN cells: a `tf.nn.rnn_cell.X` line becomes `ku.tf1.X`.

Every cell here is a Keras RNN cell (`state_size`, `output_size`, `call(inputs, states, training)`), so it
runs in `ku.DynamicUnroll`, `ku.StaticUnroll`, `ku.dynamic_rnn`, `ku.static_rnn`, `keras.layers.RNN` and
`keras.layers.Bidirectional`, and saves to `.keras` files. The arithmetic is TF1's; the weights are stored
in Keras' layout (see each cell), which is what `ku.load_tf1_weights` converts a TF1 checkpoint into.

Two conventions differ between TF1 and Keras, and this module keeps both, each where it belongs:

- Inside the cells and in the layers (`(output, *states)` with `return_state=True`) states are Keras'
  flat lists: an LSTM state is `[h, c]`, a stack's state is one entry per layer in Keras' nesting.
- In the functional API (`ku.dynamic_rnn`, `ku.static_rnn`, the bidirectional functions) states are TF1's
  structures: `LSTMStateTuple(c, h)` for an LSTM, a tuple with one entry per layer for a stack. The two
  functions `to_tf1_state` / `from_tf1_state` convert between them.

TF1's `forget_bias` is added at run time; here it initializes the forget-gate slice of the bias instead:
the same numbers and the same gradients, and a loaded TF1 checkpoint has it folded into that slice.
"""

from __future__ import annotations

import numbers
import random
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Sequence, Union, overload

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll._private import DropoutRNNCell, lambda_code  # Keras' per-sequence mask hooks; a lambda's code
from keras_unroll.cell import BasicRNNCell, check_bool, check_units, not_converted
from keras_unroll.step import _is_lstm_state_tuple
from keras_unroll.tf1_states import (  # TF1's state structures, shared with the functional API
    LSTMStateTuple,
    from_tf1_state,
    lstm_like,
    to_tf1_state,
)
from keras_unroll.types import Activation, DTypeLike, Initializer, Nested

__all__ = [
    "BasicLSTMCell",
    "BasicRNNCell",
    "DeviceWrapper",
    "DropoutWrapper",
    "GRUCell",
    "LSTMCell",
    "LSTMStateTuple",
    "MultiRNNCell",
    "OutputProjectionWrapper",
    "ResidualWrapper",
    "from_tf1_state",
    "to_tf1_state",
]

_PACKAGE = "keras_unroll"


# ------------------------------------------------------------------------------------ initializers
@keras.saving.register_keras_serializable(package=_PACKAGE)
class TF1GlorotUniform(keras.initializers.Initializer):
    """TF1's default initializer for a gated cell's kernel, for the Keras split of that kernel.

    TF1 kept one kernel of shape `(fan_in, sum(blocks))` over the concatenated `[inputs, state]` and drew
    it from glorot-uniform: every entry uniform in `±sqrt(6 / (fan_in + block))` for its block of columns
    (one block for an LSTM's `4H`; the GRU's `gates` `2H` and `candidate` `H` were separate variables).
    Keras splits that kernel into `kernel (F, ·)` and `recurrent_kernel (H, ·)`; drawing each part with
    TF1's limits gives exactly TF1's distribution (Keras' own glorot would use each part's shape instead).

    Args:
        fan_in: The rows of TF1's concatenated kernel, `F + H` (`F + P` with a projection).
        blocks: Column counts of TF1's separate variables, e.g. `[4 * H]` (LSTM) or `[2 * H, H]` (GRU).
        seed: Optional random seed.
    """

    def __init__(self, fan_in: int, blocks: Sequence[int], seed: Optional[int] = None) -> None:
        self.fan_in = int(fan_in)
        self.blocks = [int(b) for b in blocks]
        self.seed = seed

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        shape = tuple(shape)
        if shape[-1] != sum(self.blocks):
            raise ValueError(
                f"TF1GlorotUniform was set up for {sum(self.blocks)} columns ({self.blocks}). Received: shape={shape}"
            )
        parts = []
        # Unseeded, draw an int seed as Keras' own initializers do (Python's `random`, which
        # `keras.utils.set_random_seed` seeds): a stateless draw, so a cell builds inside a `tf.function` too.
        base = random.randint(1, int(1e9)) if self.seed is None else self.seed
        for index, block in enumerate(self.blocks):
            limit = float(np.sqrt(6.0 / (self.fan_in + block)))
            seed = base + index
            parts.append(keras.random.uniform(shape[:-1] + (block,), -limit, limit, dtype=dtype, seed=seed))
        return keras.ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def get_config(self) -> Dict[str, Any]:
        return {"fan_in": self.fan_in, "blocks": list(self.blocks), "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GateBias(keras.initializers.Initializer):
    """A gated cell's bias: one constant per gate block, e.g. `[0, forget_bias, 0, 0]` for an LSTM.

    Args:
        values: One float per gate block, in Keras' gate order (the bias is split into `len(values)` equal
            blocks).
    """

    def __init__(self, values: Sequence[float]) -> None:
        self.values = [float(v) for v in values]

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        shape = tuple(shape)
        blocks = len(self.values)
        if len(shape) != 1 or shape[0] % blocks:
            raise ValueError(f"GateBias needs a 1D shape divisible by {blocks}. Received: shape={shape}")
        size = shape[0] // blocks
        values = np.repeat(np.asarray(self.values, np.float64), size)
        return keras.ops.convert_to_tensor(values, dtype=dtype or keras.backend.floatx())

    def get_config(self) -> Dict[str, Any]:
        return {"values": list(self.values)}


# ------------------------------------------------------------------------------------ argument checks
_TF_ACTIVATIONS = {  # TF1 code passes TF functions; keep Keras' own (serializable, fast-path) callables
    "tanh": ("tanh", "nn.tanh", "math.tanh"),
    "sigmoid": ("sigmoid", "nn.sigmoid", "math.sigmoid"),
    "relu": ("nn.relu",),
    "relu6": ("nn.relu6",),
    "elu": ("nn.elu",),
    "selu": ("nn.selu",),
    "softsign": ("nn.softsign", "math.softsign"),
    "softplus": ("nn.softplus", "math.softplus"),
}


def _resolve_attr(path: str) -> Any:
    obj: Any = tf
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _activation(activation: Any, name: str = "activation") -> Any:
    """TF1's `activation=None` means tanh; TF functions (`tf.tanh`, `tf.nn.relu`) map to Keras' names."""
    if activation is None:
        return "tanh"
    if callable(activation):
        for keras_name, paths in _TF_ACTIVATIONS.items():
            if any(_resolve_attr(path) is activation for path in paths):
                return keras_name
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` must be a Keras activation name (e.g. 'tanh', 'relu'), a TF function such as `tf.tanh`, "
            f"or a callable. Received: {name}={activation!r}"
        ) from error
    return activation


_BASE_LAYER_KWARGS = ("name", "dtype", "trainable", "autocast")


def _check_kwargs(kwargs: Dict[str, Any], owner: str, keras_cell: str) -> None:
    """TF1's cells take TF1's arguments plus the base layer's; Keras' extras would be lost on saving."""
    extra = sorted(set(kwargs) - set(_BASE_LAYER_KWARGS))
    if extra:
        shown = ", ".join(f"{key}={kwargs[key]!r}" for key in extra)
        raise TypeError(
            f"{owner} takes TF1's arguments and the base layer's ({', '.join(_BASE_LAYER_KWARGS)}). For Keras' "
            f"options use `{keras_cell}`; for dropout wrap the cell in `ku.tf1.DropoutWrapper`. Received: {shown}"
        )


def _serialize_initializer(initializer: Any) -> Any:
    """`None` (TF1's default, resolved when the cell is built) stays `None`."""
    return None if initializer is None else keras.initializers.serialize(keras.initializers.get(initializer))


def _units(units: Any, num_units: Any, owner: str) -> int:
    if units is None and num_units is None:
        raise TypeError(f"{owner} needs the number of units: pass `num_units`. Received: num_units=None")
    if units is not None and num_units is not None and units != num_units:
        raise ValueError(
            f"Give either `num_units` or its Keras alias `units`, not two different values. "
            f"Received: num_units={num_units!r}, units={units!r}"
        )
    return check_units(num_units if num_units is not None else units, "num_units" if num_units is not None else "units")


@overload
def _float(value: Any, name: str, allow_none: Literal[False] = False, positive: bool = False) -> float: ...
@overload
def _float(value: Any, name: str, allow_none: bool, positive: bool = False) -> Optional[float]: ...
def _float(value: Any, name: str, allow_none: bool = False, positive: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float{' or None' if allow_none else ''}. Received: {name}={value!r}")
    if positive and not float(value) > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return float(value)


def _clip(value: Any, name: str) -> Optional[float]:
    """A clip value: None, or a float >= 0 (TF1 accepts 0, which clips to 0)."""
    clip = _float(value, name, allow_none=True)
    if clip is not None and clip < 0:
        raise ValueError(f"`{name}` must be >= 0 (values are clipped to [-{name}, {name}]). Received: {name}={clip}")
    return clip


def _is_rnn_layer(obj: Any) -> bool:
    if isinstance(obj, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    from keras_unroll.layers import DynamicUnroll, StaticUnroll  # lazy: layers imports the loops

    return isinstance(obj, (StaticUnroll, DynamicUnroll))


def check_cell(cell: Any, name: str = "cell") -> Any:
    """Checks that `cell` is an RNN *cell* (not an RNN layer); returns it."""
    if _is_rnn_layer(cell):
        inner = getattr(cell, "cell", None) or getattr(cell, "forward_layer", None)
        raise TypeError(
            f"`{name}` must be an RNN cell (one time step, e.g. `ku.tf1.BasicLSTMCell(8)` or "
            "`keras.layers.LSTMCell(8)`), not an RNN layer that runs a whole sequence. Pass the layer's cell "
            f"(`layer.cell`{'' if inner is None else ', here ' + type(inner).__name__}) or the matching cell class. "
            f"Received: {name}={type(cell).__name__} layer {getattr(cell, 'name', '')!r}"
        )
    if not callable(cell) or getattr(cell, "state_size", None) is None:
        raise TypeError(
            f"`{name}` must be a Keras RNN cell (a layer with `state_size` and `call(inputs, states)`). "
            f"Received: {name}={cell!r}"
        )
    return cell


def _as_cell(cell: Any) -> Any:
    """A Python list of cells is a stack, as the functional API reads it."""
    if isinstance(cell, (list, tuple)):
        cells = [check_cell(c, f"cell[{i}]") for i, c in enumerate(cell)]
        return cells[0] if len(cells) == 1 else keras.layers.StackedRNNCells(cells)
    return cell


def _output_size(cell: Any) -> int:
    size = getattr(cell, "output_size", None)
    if size is None:
        size = tf.nest.flatten(cell.state_size)[0]
    return int(size)


# ------------------------------------------------------------------------ TF1's calling convention
# A `ku.tf1` cell is called two ways. The loops, the layers and `keras.layers.RNN` use Keras' convention:
# states in Keras' nesting and order (an LSTM's `[h, c]`, a stack's list with one entry per layer; Keras'
# RNN layer hands them over as a tuple at the top level). TF1 code calls the cell with TF1's structures:
# `LSTMStateTuple(c, h)`, a stack's tuple of per-layer states (in which a plain pair is TF1's `(c, h)`),
# or one concatenated tensor with `state_is_tuple=False`. The two are told apart by type: an
# `LSTMStateTuple`, a concatenated tensor, or a stack's tuple holding no list is TF1's, and the answer is
# given in TF1's structure; anything else is Keras', and passes through untouched.
def _is_stack(cell: Any) -> bool:
    return isinstance(cell, keras.layers.StackedRNNCells)


def _is_wrapper(cell: Any) -> bool:
    return bool(getattr(type(cell), "_keras_unroll_wrapper", False))


def _keras_state_size(cell: Any) -> Any:
    """The state sizes in Keras' nesting and order (what the loops and Keras' RNN layer hold)."""
    view = getattr(cell, "_keras_unroll_state_size", None)
    return cell.state_size if view is None else view


def _flat_size(size: Any) -> int:
    return sum(int(s) for s in tf.nest.flatten(size))


def tf1_state_size(cell: Any) -> Any:
    """A cell's `state_size` in TF1's structure: `LSTMStateTuple(c, h)` of sizes for an LSTM, a tuple
    with one entry per layer for a stack, an int for a single state or a concatenated (`state_is_tuple=False`) one."""
    if _is_wrapper(cell):
        return tf1_state_size(cell.cell)
    if _is_stack(cell):
        sizes = tuple(tf1_state_size(sub) for sub in cell.cells)
        return sizes if getattr(cell, "state_is_tuple", True) else sum(_flat_size(s) for s in sizes)
    if lstm_like(cell):
        c, h = int(cell.units), _output_size(cell)
        return LSTMStateTuple(c, h) if getattr(cell, "state_is_tuple", True) else c + h
    size = cell.state_size
    if isinstance(size, (list, tuple)) and len(size) == 1 and not tf.nest.is_nested(size[0]):
        return int(size[0])
    return size


def _tf1_form(cell: Any, states: Any) -> bool:
    """Whether `states` is in TF1's structure for `cell` (else it is Keras' and passes through)."""
    if states is None:
        return False
    if _is_wrapper(cell):
        return _tf1_form(cell.cell, states)
    if _is_stack(cell):
        if isinstance(states, list):
            return False
        if not tf.nest.is_nested(states):
            return True  # TF1's concatenated state (or, for a tuple stack, the error TF1 gives)
        return isinstance(states, tuple) and not any(isinstance(s, list) for s in states)
    if lstm_like(cell):
        if _is_lstm_state_tuple(states):
            return True
        return not getattr(cell, "state_is_tuple", True) and not tf.nest.is_nested(states)
    return False


def _split_concatenated(cell: Any, state: Any, size: int) -> tf.Tensor:
    state = tf.convert_to_tensor(state)
    if state.shape.rank != 2 or (state.shape[-1] is not None and state.shape[-1] != size):
        raise ValueError(
            f"{type(cell).__name__} {cell.name!r} has `state_is_tuple=False`, so its state is one (batch, {size}) "
            f"tensor (TF1's concatenation of its states). Received: state.shape={tuple(state.shape)}"
        )
    return state


def _keras_from_tf1(cell: Any, state: Any, concatenated: bool = False) -> Any:
    """A state in TF1's structure -> Keras' (what `cell.call` takes). `concatenated`: a stack without
    tuples handed this cell its slice of the concatenated state."""
    if _is_wrapper(cell):
        return _keras_from_tf1(cell.cell, state, concatenated)
    if _is_stack(cell):
        count = len(cell.cells)
        if concatenated or not tf.nest.is_nested(state):
            if not concatenated and getattr(cell, "state_is_tuple", True):
                raise ValueError(
                    f"Expected state to be a tuple of length {count} (one state per layer of the MultiRNNCell "
                    f"{cell.name!r}), but received: {state!r}. Give one state per layer, e.g. `cell.zero_state("
                    "batch_size, dtype)`, or build the stack with `state_is_tuple=False` for one concatenated tensor."
                )
            sizes = [_flat_size(tf1_state_size(sub)) for sub in cell.cells]
            parts = tf.split(_split_concatenated(cell, state, sum(sizes)), sizes, axis=-1)
            return [_keras_from_tf1(sub, part, concatenated=True) for sub, part in zip(cell.cells, parts)]
        if not isinstance(state, (list, tuple)) or len(state) != count:
            raise ValueError(
                f"Expected state to be a tuple of length {count} (one state per layer of the MultiRNNCell "
                f"{cell.name!r}), but received a structure of {len(tf.nest.flatten(state))} tensor(s): {state!r}"
            )
        return [_keras_from_tf1(sub, sub_state) for sub, sub_state in zip(cell.cells, state)]
    if lstm_like(cell):
        if isinstance(state, tuple) and len(state) == 2:  # LSTMStateTuple, or TF1's plain (c, h) in a stack
            c, h = state
            return [h, c]
        if concatenated or not tf.nest.is_nested(state):
            units, proj = int(cell.units), _output_size(cell)
            c, h = tf.split(_split_concatenated(cell, state, units + proj), [units, proj], axis=-1)
            return [h, c]
        return state
    if concatenated and len(tf.nest.flatten(_keras_state_size(cell))) > 1:
        sizes = [int(s) for s in tf.nest.flatten(_keras_state_size(cell))]
        parts = tf.split(tf.convert_to_tensor(state), sizes, axis=-1)
        return tf.nest.pack_sequence_as(_keras_state_size(cell), parts)
    return state


def _tf1_from_keras(cell: Any, state: Any) -> Any:
    """A state in Keras' structure (what `cell.call` returned) -> TF1's."""
    if _is_wrapper(cell):
        return _tf1_from_keras(cell.cell, state)
    flat = tf.nest.flatten(state)
    if _is_stack(cell):
        layers, start = [], 0
        for sub in cell.cells:
            count = len(tf.nest.flatten(_keras_state_size(sub)))
            part = flat[start : start + count]
            start += count
            layers.append(_tf1_from_keras(sub, part if count > 1 else part[0]))
        if getattr(cell, "state_is_tuple", True):
            return tuple(layers)
        return tf.concat([t for layer in layers for t in tf.nest.flatten(layer)], axis=-1)
    if lstm_like(cell):
        h, c = flat
        return LSTMStateTuple(c, h) if getattr(cell, "state_is_tuple", True) else tf.concat([c, h], axis=-1)
    return flat[0] if len(flat) == 1 else state


def _adopt_dtype(cell: Any, dtype: str) -> None:
    """TF1 builds a cell in the dtype of its first input: an unbuilt `ku.tf1` cell whose dtype the user did
    not set takes `dtype` (a float type), and so do the unbuilt cells inside it."""
    if getattr(cell, "built", False) or cell.__dict__.get("_keras_unroll_dtype_given", True):
        return
    policy = cell.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:  # a mixed-precision policy is the user's choice
        return
    if policy.compute_dtype != dtype:
        cell.dtype_policy = keras.DTypePolicy(dtype)
    for sub in list(getattr(cell, "cells", None) or []) + ([cell.cell] if _is_wrapper(cell) else []):
        _adopt_dtype(sub, dtype)


def _check_input_dtype(cell: Any, inputs: Any) -> None:
    """An unbuilt cell adopts its first input's float dtype; a built one refuses another float dtype."""
    dtype = getattr(inputs, "dtype", None)
    if dtype is None:
        return
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:  # pragma: no cover - e.g. a KerasTensor's string dtype is handled below
        return
    if not dtype.is_floating:
        return
    if not cell.built:
        _adopt_dtype(cell, dtype.name)
        return
    policy = cell.dtype_policy
    if policy.compute_dtype == policy.variable_dtype and dtype.name != policy.compute_dtype:
        raise TypeError(
            f"{type(cell).__name__} {cell.name!r} was built for {policy.compute_dtype} inputs (TF1 builds a cell in "
            "the dtype of its first input, and so does ku.tf1), so it cannot take another float type. Cast the "
            f"inputs (`tf.cast(x, '{policy.compute_dtype}')`) or use a new cell. Received: inputs.dtype={dtype.name}"
        )


def _check_batch(inputs: Any, states: Any) -> None:
    shape = getattr(inputs, "shape", None)
    batch = shape[0] if shape is not None and len(shape) else None
    for state in tf.nest.flatten(states):
        rows = getattr(state, "shape", (None,))[0]
        if batch is not None and rows is not None and int(rows) != int(batch):
            raise ValueError(
                f"The state's batch size must be the input's. Received: inputs.shape={tuple(inputs.shape)}, "
                f"a state of shape {tuple(state.shape)}"
            )


def _no_dropout_state(cell: Any) -> None:
    """TF1's cells have no dropout (that is `DropoutWrapper`), so no non-trainable variable: Keras' cell
    keeps a seed generator for its own dropout, which these cells refuse; it is left out of the variables."""
    cell._tracker.untrack(cell.seed_generator)


# The Keras layer each `ku.tf1` cell also derives from, for the type checker: `_TF1Cell` calls its methods.
if TYPE_CHECKING:
    from keras.layers import Layer as _KerasCell
else:
    _KerasCell = object


class _TF1Cell(_KerasCell):
    """What every `ku.tf1` cell adds to its Keras base: TF1's calling convention and TF1's dtype rule.

    - `cell(inputs, state)` with TF1's state structure (see above) answers `(output, new_state)` in that
      structure; `state=` is accepted as a keyword, as TF1 wrote it.
    - An unbuilt cell whose `dtype` was not given adopts the float dtype of its first input (TF1 builds a
      cell in its input's dtype); a built cell given another float dtype raises a `TypeError`.
    - `get_initial_state(inputs=None, batch_size=None, dtype=None)`: TF1's signature (TF1's structure, as
      `zero_state`) when `inputs` or `dtype` is given; Keras' `get_initial_state(batch_size)` otherwise.
    """

    def _note_dtype(self, kwargs: Dict[str, Any]) -> None:
        self.__dict__["_keras_unroll_dtype_given"] = kwargs.get("dtype") is not None

    @not_converted
    def __call__(self, inputs: Any, states: Any = None, *args: Any, **kwargs: Any) -> Any:
        if "state" in kwargs:
            if states is not None:
                raise TypeError("Give the state once, as `states` or as TF1's `state`. Received: both")
            states = kwargs.pop("state")
        _check_input_dtype(self, inputs)
        if not _tf1_form(self, states):
            return super().__call__(inputs, states, *args, **kwargs)
        keras_states = _keras_from_tf1(self, states)
        _check_batch(inputs, keras_states)
        output, new_states = super().__call__(inputs, keras_states, *args, **kwargs)
        return output, _tf1_from_keras(self, new_states)

    def get_initial_state(self, inputs: Any = None, batch_size: Any = None, dtype: Any = None) -> Any:
        if inputs is not None and not hasattr(inputs, "shape"):  # Keras' positional `get_initial_state(batch)`
            inputs, batch_size = None, inputs
        if inputs is None and dtype is None:
            return self._keras_initial_state(batch_size)
        if inputs is not None:
            inputs = tf.convert_to_tensor(inputs)
            batch_size = tf.shape(inputs)[0] if batch_size is None else batch_size
            dtype = inputs.dtype if dtype is None else dtype
        return self.zero_state(batch_size, dtype)

    def _keras_initial_state(self, batch_size: Any) -> Any:
        return super().get_initial_state(batch_size=batch_size)

    def _keras_unroll_adopt_dtype(self, dtype: Any) -> None:
        """Builds in `dtype` (a float type) when unbuilt and no dtype was given: TF1's rule, for the loops."""
        dtype = tf.as_dtype(dtype)
        if dtype.is_floating:
            _adopt_dtype(self, dtype.name)

    # The functional API's hooks: TF1's structure <-> Keras' for this cell.
    def _keras_unroll_to_tf1(self, keras_state: Any) -> Any:
        return _tf1_from_keras(self, keras_state)

    def _keras_unroll_from_tf1(self, tf1_state: Any) -> Any:
        return _keras_from_tf1(self, tf1_state) if _tf1_form(self, tf1_state) else tf1_state


# ------------------------------------------------------------------------------------------ LSTM cells
@keras.saving.register_keras_serializable(package=_PACKAGE)
class BasicLSTMCell(_TF1Cell, keras.layers.LSTMCell):
    """TF1's `BasicLSTMCell`: an LSTM without peepholes or projection (`keras.layers.LSTMCell`'s maths).

    With gates `i, f, o = sigmoid(·)` and candidate `g = activation(·)`, each `x_t W_· + h_{t-1} U_· + b_·`:

        c_t = sigmoid(f + forget_bias) * c_{t-1} + sigmoid(i) * activation(g)
        h_t = sigmoid(o) * activation(c_t)

    This is exactly `keras.layers.LSTMCell` (a subclass that keeps its `call`, so every loop's LSTM fast
    path applies). Weights are Keras': `kernel (F, 4H)`, `recurrent_kernel (H, 4H)`, `bias (4H,)`, gates in
    Keras' order `i, f, c, o` (TF1: one `kernel (F + H, 4H)` in order `i, j, f, o`). `forget_bias` is the
    initial value of the bias' `f` slice rather than a constant added at run time: the same numbers and
    gradients. Default initializers draw TF1's distribution (glorot-uniform over the `(F + H, 4H)` kernel,
    zero bias). The state is `[h, c]` inside (Keras' order, as `keras.layers.RNN` returns it); the
    functional API returns it as `LSTMStateTuple(c, h)`.

    Args:
        num_units: Positive integer, the number of units `H`. `units` (Keras' name) is accepted too.
        forget_bias: Float added to the forget gate (here: its bias' initial value). Default: `1.0`.
        state_is_tuple: `True` (default): the functional API returns `LSTMStateTuple(c, h)`. `False`:
            TF1's deprecated concatenated state `(batch, 2H)` = `[c, h]`.
        activation: The activation of the candidate and of the output. Default (`None`): tanh. TF
            functions (`tf.tanh`, `tf.nn.relu`) are accepted.
        kernel_initializer: Initializer for `kernel`. Default (`None`): TF1's glorot-uniform.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default (`None`): TF1's glorot-uniform.
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: TF1's `LSTMStateTuple(c, h)` (or the concatenated `[c, h]` with `state_is_tuple=False`), or
            Keras' list `[h, c]` (what the layers pass), each `(batch, units)`. `state=` is accepted too.
        training: Unused (no dropout; wrap the cell in `DropoutWrapper`).

    Returns:
        `(h, new_state)`, the new state in the structure given: `LSTMStateTuple(c, h)` or `[h, c]`.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> x = np.ones((4, 6, 3), "float32")                       # (batch, time, features)
    >>> outputs, state = ku.dynamic_rnn(ku.tf1.BasicLSTMCell(5), x)
    >>> tuple(outputs.shape), tuple(state.c.shape), tuple(state.h.shape)
    ((4, 6, 5), (4, 5), (4, 5))
    """

    _keras_unroll_tf1_lstm = True  # the functional API reads a plain pair as TF1's (c, h) for this cell

    def __init__(
        self,
        num_units: Optional[int] = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Activation = None,
        kernel_initializer: Initializer = None,
        recurrent_initializer: Initializer = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, type(self).__name__)
        _check_kwargs(kwargs, type(self).__name__, "keras.layers.LSTMCell")
        self._note_dtype(kwargs)
        self.forget_bias = _float(forget_bias, "forget_bias")
        self.state_is_tuple = check_bool(state_is_tuple, "state_is_tuple")
        self._tf1_initializers = (kernel_initializer, recurrent_initializer)
        super().__init__(
            units=units,
            activation=_activation(activation),
            recurrent_activation="sigmoid",
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=GateBias([0.0, self.forget_bias, 0.0, 0.0]),
            unit_forget_bias=False,
            **kwargs,
        )
        _no_dropout_state(self)

    @property
    def num_units(self) -> int:
        """TF1's name for `units`."""
        return int(self.units)

    def build(self, input_shape: Any) -> None:
        fan_in = int(input_shape[-1]) + self.units
        kernel, recurrent = self._tf1_initializers
        self.kernel_initializer = keras.initializers.get(kernel) or TF1GlorotUniform(fan_in, [4 * self.units])
        self.recurrent_initializer = keras.initializers.get(recurrent) or TF1GlorotUniform(fan_in, [4 * self.units])
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> LSTMStateTuple:
        """TF1's `cell.zero_state(batch_size, dtype)`: `LSTMStateTuple(c, h)` of zeros."""
        zeros = tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)
        return LSTMStateTuple(zeros, zeros) if self.state_is_tuple else tf.concat([zeros, zeros], 1)

    def get_config(self) -> Dict[str, Any]:
        kernel, recurrent = self._tf1_initializers
        return {
            **keras.layers.Layer.get_config(self),
            "num_units": self.units,
            "forget_bias": self.forget_bias,
            "state_is_tuple": self.state_is_tuple,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": _serialize_initializer(kernel),
            "recurrent_initializer": _serialize_initializer(recurrent),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LSTMCell(_TF1Cell, keras.layers.Layer):
    """TF1's full `LSTMCell`: optional peepholes, cell clipping and an output projection.

    With `x_t W + h_{t-1} U + b` split into `i, f, g, o` (Keras' gate order) and `H` units:

        c_t = sigmoid(f + w_f ⊙ c_{t-1}) * c_{t-1} + sigmoid(i + w_i ⊙ c_{t-1}) * activation(g)
        c_t = clip(c_t, ±cell_clip)                                 # with cell_clip
        m_t = sigmoid(o + w_o ⊙ c_t) * activation(c_t)
        h_t = clip(m_t P, ±proj_clip)                               # with num_proj (else h_t = m_t)

    (the `w_·` terms only with `use_peepholes`). `forget_bias` initializes the bias' `f` slice (TF1 adds
    it at run time: the same numbers and gradients). Without peepholes, clipping and projection it is
    `BasicLSTMCell`'s maths, and the layers run it on the same fused LSTM kernels.

    Weights (Keras' layout; `ku.load_tf1_weights` converts TF1's): `kernel (F, 4H)`, `recurrent_kernel
    (P, 4H)` with `P = num_proj or H`, `bias (4H,)`, gates `i, f, c, o`; with peepholes `w_f_diag`,
    `w_i_diag`, `w_o_diag (H,)` (TF1's names and creation order); with a projection `projection_kernel
    (H, P)` (TF1's `projection/kernel`). Default initializers draw TF1's distribution (glorot-uniform over
    TF1's `(F + P, 4H)` kernel; TF1's glorot for the diagonals and the projection; zero bias but for
    `forget_bias`). The state is `[h, c]` inside (`h` has `P` units, `c` has `H`); the functional API
    returns `LSTMStateTuple(c, h)`.

    Args:
        num_units: Positive integer, the number of units `H`. `units` is accepted too.
        use_peepholes: Boolean, add the diagonal peephole connections. Default: `False`.
        cell_clip: Optional float >= 0: `c_t` is clipped to `[-cell_clip, cell_clip]`.
        initializer: Initializer for `kernel`, `recurrent_kernel`, the diagonals and the projection
            (TF1's single `initializer`). Default (`None`): TF1's glorot-uniform.
        num_proj: Optional positive int `P`: the output (and `h`) is projected to `P` units.
        proj_clip: Optional float >= 0: the projected output is clipped to `[-proj_clip, proj_clip]`
            (needs `num_proj`).
        num_unit_shards: Accepted for TF1 compatibility (TF1 split the kernel into shards: the same
            numbers); ignored.
        num_proj_shards: The same, for the projection; ignored.
        forget_bias: Float added to the forget gate (here: its bias' initial value). Default: `1.0`.
        state_is_tuple: `True` (default): `LSTMStateTuple(c, h)`; `False`: TF1's concatenated `[c, h]`.
        activation: Activation of the candidate and the output. Default (`None`): tanh.
        reuse: Accepted for TF1 compatibility (Keras shares weights by sharing the cell); ignored.
        name: The layer's name. dtype: The layer's dtype (default: the first input's float type).
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: TF1's `LSTMStateTuple(c, h)` (or the concatenated `[c, h]` with `state_is_tuple=False`), or
            Keras' list `[h, c]`: `h` is `(batch, P)`, `c` is `(batch, H)`.
        training: Unused.

    Returns:
        `(h, new_state)`, the new state in the structure given.

    Raises:
        ValueError: `proj_clip` without `num_proj`, or a clip that is not positive.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.LSTMCell(6, use_peepholes=True, num_proj=4, cell_clip=3.0)
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.c.shape), tuple(state.h.shape)
    ((2, 5, 4), (2, 6), (2, 4))
    """

    _keras_unroll_tf1_lstm = True  # an LSTM state (Keras' [h, c] inside, TF1's (c, h) in the functional API)
    # What the fused and hoisted LSTM kernels read of a Keras `LSTMCell` (`kernels.cells.FAMILY_ATTRIBUTE`):
    # TF1's cell has no dropout of its own (that is `DropoutWrapper`), a bias and sigmoid gates.
    dropout = 0.0
    recurrent_dropout = 0.0
    use_bias = True
    implementation = 2
    recurrent_activation = staticmethod(keras.activations.sigmoid)

    @property
    def _keras_unroll_gated_family(self) -> Optional[str]:
        """`"lstm"` when this cell computes `keras.layers.LSTMCell`'s maths (no peepholes, clipping or
        projection, and `call` not overridden), so `DynamicUnroll`/`StaticUnroll` run it on their fused LSTM
        kernels; else None (the generic step)."""
        plain = not self.use_peepholes and self.cell_clip is None and self.num_proj is None
        return "lstm" if plain and type(self).call is LSTMCell.call else None

    def __init__(
        self,
        num_units: Optional[int] = None,
        use_peepholes: bool = False,
        cell_clip: Optional[float] = None,
        initializer: Initializer = None,
        num_proj: Optional[int] = None,
        proj_clip: Optional[float] = None,
        num_unit_shards: Optional[int] = None,
        num_proj_shards: Optional[int] = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Activation = None,
        reuse: object = None,  # TF1's variable-scope reuse (a bool or AUTO_REUSE): ignored
        name: Optional[str] = None,
        dtype: Optional[DTypeLike] = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, "LSTMCell")
        del num_unit_shards, num_proj_shards, reuse  # TF1's variable sharding and scope reuse: same numbers
        kwargs.update({key: value for key, value in (("name", name), ("dtype", dtype)) if value is not None})
        _check_kwargs(kwargs, "LSTMCell", "keras.layers.LSTMCell")
        self._note_dtype(kwargs)
        super().__init__(**kwargs)
        self.units = units
        if isinstance(use_peepholes, numbers.Integral) and not isinstance(use_peepholes, (bool, np.bool_)):
            # TF1's old form `LSTMCell(num_units, input_size)`: since TF 1.0 the second argument is
            # `use_peepholes`, so TF1 reads the size as a truthy flag. Do the same, and say so.
            warnings.warn(
                f"LSTMCell's second argument is `use_peepholes`; the old form `LSTMCell(num_units, input_size)` "
                f"turns peepholes on (as TF1 does). Received: use_peepholes={use_peepholes!r}",
                stacklevel=2,
            )
            use_peepholes = bool(use_peepholes)
        self.use_peepholes = check_bool(use_peepholes, "use_peepholes")
        self.cell_clip = _clip(cell_clip, "cell_clip")
        self.num_proj = None if num_proj is None else check_units(num_proj, "num_proj")
        self.proj_clip = _clip(proj_clip, "proj_clip")
        if self.proj_clip is not None and self.num_proj is None:
            raise ValueError(
                "`proj_clip` clips the projected output, so it needs `num_proj`. "
                f"Received: proj_clip={proj_clip!r}, num_proj=None"
            )
        self.forget_bias = _float(forget_bias, "forget_bias")
        self.state_is_tuple = check_bool(state_is_tuple, "state_is_tuple")
        self.activation = keras.activations.get(_activation(activation))
        self.initializer = initializer
        self.output_size = self.num_proj or self.units
        self.state_size = [self.output_size, self.units]  # Keras' order: [h, c]

    @property
    def num_units(self) -> int:
        return int(self.units)

    def build(self, input_shape: Any) -> None:
        features = int(input_shape[-1])
        units, proj = self.units, self.output_size
        custom = keras.initializers.get(self.initializer) if self.initializer is not None else None

        def init(default: Any) -> Any:
            return custom if custom is not None else default

        glorot = TF1GlorotUniform(features + proj, [4 * units])
        self.kernel = self.add_weight(shape=(features, 4 * units), name="kernel", initializer=init(glorot))
        self.recurrent_kernel = self.add_weight(
            shape=(proj, 4 * units), name="recurrent_kernel", initializer=init(glorot)
        )
        self.bias = self.add_weight(
            shape=(4 * units,), name="bias", initializer=GateBias([0.0, self.forget_bias, 0.0, 0.0])
        )
        if self.use_peepholes:  # TF1's names and creation order
            for gate in ("f", "i", "o"):
                weight = self.add_weight(shape=(units,), name=f"w_{gate}_diag", initializer=init("glorot_uniform"))
                setattr(self, f"w_{gate}_diag", weight)
        if self.num_proj is not None:
            self.projection_kernel = self.add_weight(
                shape=(units, self.num_proj), name="projection_kernel", initializer=init("glorot_uniform")
            )
        self.built = True

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        h_prev, c_prev = states[0], states[1]
        z = tf.matmul(inputs, self.kernel) + tf.matmul(h_prev, self.recurrent_kernel) + self.bias
        i, f, g, o = tf.split(z, 4, axis=1)
        if self.use_peepholes:
            forget, keep = tf.sigmoid(f + self.w_f_diag * c_prev), tf.sigmoid(i + self.w_i_diag * c_prev)
            c = forget * c_prev + keep * self.activation(g)
        else:
            c = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * self.activation(g)
        if self.cell_clip is not None:
            c = tf.clip_by_value(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            h = tf.sigmoid(o + self.w_o_diag * c) * self.activation(c)
        else:
            h = tf.sigmoid(o) * self.activation(c)
        if self.num_proj is not None:
            h = tf.matmul(h, self.projection_kernel)
            if self.proj_clip is not None:
                h = tf.clip_by_value(h, -self.proj_clip, self.proj_clip)
        return h, [h, c]

    def _keras_initial_state(self, batch_size: Any) -> List[tf.Tensor]:
        return [tf.zeros(tf.stack([batch_size, size]), self.compute_dtype) for size in self.state_size]

    def zero_state(self, batch_size: int, dtype: Any = None) -> LSTMStateTuple:
        """TF1's `cell.zero_state(batch_size, dtype)`: `LSTMStateTuple(c, h)` of zeros."""
        dtype = dtype or self.compute_dtype
        c, h = tf.zeros((batch_size, self.units), dtype), tf.zeros((batch_size, self.output_size), dtype)
        return LSTMStateTuple(c, h) if self.state_is_tuple else tf.concat([c, h], 1)

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "num_units": self.units,
            "use_peepholes": self.use_peepholes,
            "cell_clip": self.cell_clip,
            "initializer": _serialize_initializer(self.initializer),
            "num_proj": self.num_proj,
            "proj_clip": self.proj_clip,
            "forget_bias": self.forget_bias,
            "state_is_tuple": self.state_is_tuple,
            "activation": keras.activations.serialize(self.activation),
        }


# ------------------------------------------------------------------------------------------ GRU cell
@keras.saving.register_keras_serializable(package=_PACKAGE)
class GRUCell(_TF1Cell, keras.layers.GRUCell):
    """TF1's `GRUCell`: `keras.layers.GRUCell(reset_after=False)`'s maths, with TF1's initialization.

        z = sigmoid(x_t W_z + h_{t-1} U_z + b_z)            # TF1's update gate "u"
        r = sigmoid(x_t W_r + h_{t-1} U_r + b_r)
        g = activation(x_t W_h + (r * h_{t-1}) U_h + b_h)  # the reset gate is applied *before* U_h
        h_t = z * h_{t-1} + (1 - z) * g

    Keras' default `GRUCell(reset_after=True)` applies `r` after `U_h` and gives other numbers; this cell
    fixes `reset_after=False`, and keeps Keras' `call`, so the GRU fast paths apply. Weights are Keras':
    `kernel (F, 3H)`, `recurrent_kernel (H, 3H)`, `bias (3H,)`, gates `z, r, h` (TF1: `gates/kernel
    (F + H, 2H)` split `r, u`, `candidate/kernel (F + H, H)` and their biases). The bias starts as TF1's:
    1.0 for the gates, 0.0 for the candidate; the kernels from TF1's glorot-uniform (over `(F + H, 2H)`
    for the gates and `(F + H, H)` for the candidate).

    Args:
        num_units: Positive integer, the number of units `H`. `units` is accepted too.
        activation: The candidate's activation. Default (`None`): tanh.
        kernel_initializer: Initializer for `kernel` and `recurrent_kernel` (TF1 used it for both parts of
            each concatenated kernel). Default (`None`): TF1's glorot-uniform.
        bias_initializer: Initializer for the whole bias (TF1: for both biases). Default (`None`): gates
            1.0, candidate 0.0.
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: One `(batch, units)` tensor (or a list holding it).
        training: Unused.

    Returns:
        `(h, h)` (a list `[h]` when the state came as a list).

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), np.ones((4, 6, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.shape)
    ((4, 6, 5), (4, 5))
    """

    def __init__(
        self,
        num_units: Optional[int] = None,
        activation: Activation = None,
        kernel_initializer: Initializer = None,
        bias_initializer: Initializer = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, "GRUCell")
        _check_kwargs(kwargs, "GRUCell", "keras.layers.GRUCell(reset_after=False)")
        self._note_dtype(kwargs)
        self._tf1_initializers = (kernel_initializer, bias_initializer)
        super().__init__(
            units=units,
            activation=_activation(activation),
            recurrent_activation="sigmoid",
            kernel_initializer=kernel_initializer,
            recurrent_initializer=kernel_initializer,
            bias_initializer=bias_initializer if bias_initializer is not None else GateBias([1.0, 1.0, 0.0]),
            reset_after=False,
            **kwargs,
        )
        _no_dropout_state(self)

    @property
    def num_units(self) -> int:
        return int(self.units)

    def build(self, input_shape: Any) -> None:
        kernel, _ = self._tf1_initializers
        if kernel is None:
            glorot = TF1GlorotUniform(int(input_shape[-1]) + self.units, [2 * self.units, self.units])
            self.kernel_initializer = self.recurrent_initializer = glorot
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> tf.Tensor:
        return tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)

    def get_config(self) -> Dict[str, Any]:
        kernel, bias = self._tf1_initializers
        return {
            **keras.layers.Layer.get_config(self),
            "num_units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": _serialize_initializer(kernel),
            "bias_initializer": _serialize_initializer(bias),
        }


# ------------------------------------------------------------------------------------------ stacks
@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiRNNCell(_TF1Cell, keras.layers.StackedRNNCells):
    """TF1's `MultiRNNCell`: cells stacked in depth, each layer's output the next layer's input.

    A `keras.layers.StackedRNNCells` (so `keras.layers.RNN` and both unroll layers take it as is) whose
    state, as TF1 code sees it (the functional API, `zero_state`, `state_size`, a direct call with TF1's
    tuple), is TF1's: a tuple with one entry per layer (`LSTMStateTuple(c, h)` for an LSTM layer), so TF1's
    `tf.concat(axis=1, values=states)` gives `(batch, sum of units)` and `states[-1].h` (or TF1's
    `states[-1][1]`) is the top layer's output. Inside the loops, and in the layers' `return_state`, the
    state is Keras' nested list (`_keras_unroll_state_size` gives those sizes).

    Give each layer its own cell (`[BasicRNNCell(n) for _ in range(3)]`): one cell object repeated
    (`[cell] * 3`) shares its weights across the layers, as in TF1 (which warned), and only works when every
    layer sees inputs of the same size.

    Args:
        cells: A list of RNN cells (not RNN layers), bottom layer first.
        state_is_tuple: `True` (default): the state is a tuple with one entry per layer. `False`: TF1's
            deprecated concatenation of every layer's state (in TF1's order, `[c, h]` per LSTM) in one tensor.
        **kwargs: Base layer arguments.

    Raises:
        TypeError: An entry is an RNN layer or not a cell.
        ValueError: An empty list; called with a state that is not one entry per layer (TF1's message,
            `Expected state to be a tuple of length N`).

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import keras_unroll as ku
    >>> stack = ku.tf1.MultiRNNCell([ku.tf1.BasicRNNCell(5) for _ in range(3)])
    >>> outputs, states = ku.dynamic_rnn(stack, np.ones((8, 4, 2), "float32"))
    >>> len(states), tuple(tf.concat(axis=1, values=states).shape)     # one state per layer
    (3, (8, 15))
    """

    def __init__(self, cells: Sequence[keras.layers.Layer], state_is_tuple: bool = True, **kwargs: Any) -> None:
        if not isinstance(cells, (list, tuple)) or not cells:
            raise ValueError(f"`cells` must be a non-empty list of RNN cells. Received: cells={cells!r}")
        state_is_tuple = check_bool(state_is_tuple, "state_is_tuple")
        self._note_dtype(kwargs)
        cells = [check_cell(cell, f"cells[{i}]") for i, cell in enumerate(cells)]
        if len({id(cell) for cell in cells}) < len(cells):
            warnings.warn(
                "At least two cells given to MultiRNNCell are the same object, so those layers share their "
                "weights (as in TF1). For separate layers give separate cells: `[Cell(n) for _ in range(k)]`.",
                stacklevel=2,
            )
        super().__init__(list(cells), **kwargs)
        self.state_is_tuple = state_is_tuple
        for index, cell in enumerate(cells):
            # Keras keeps `cells` in a list that `tf.train.Checkpoint` does not see: name each cell as TF1 did.
            self._track_trackable(cell, name=f"cell-{index}", overwrite=True)

    @property
    def state_size(self) -> Any:
        """TF1's structure: a tuple with one entry per layer (`LSTMStateTuple(c, h)` of sizes for an LSTM
        layer), or the total size with `state_is_tuple=False`. The loops use Keras' view of it."""
        return tf1_state_size(self)

    @property
    def _keras_unroll_state_size(self) -> List[Any]:
        """The state sizes in Keras' nesting and order (`[h, c]` per LSTM layer), as the loops hold them."""
        return [_keras_state_size(cell) for cell in self.cells]

    def build(self, input_shape: Any) -> None:
        seen: Dict[int, int] = {}
        size = int(input_shape[-1])
        for i, cell in enumerate(self.cells):
            if id(cell) in seen and seen[id(cell)] != size:
                raise ValueError(
                    f"cells[{i}] is the same object as an earlier layer, which shares its weights, but it gets "
                    f"{size} input features there and {seen[id(cell)]} before. Give each layer its own cell, "
                    f"e.g. `[BasicRNNCell(n) for _ in range({len(self.cells)})]`. Received: cells[{i}]={cell.name!r}"
                )
            seen[id(cell)] = size
            size = _output_size(cell)
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> Any:
        """TF1's `cell.zero_state`: a tuple with each layer's zero state in TF1's structure (one
        concatenated tensor with `state_is_tuple=False`)."""
        layers = tuple(_tf1_zero_state(cell, batch_size, dtype or self.compute_dtype) for cell in self.cells)
        if self.state_is_tuple:
            return layers
        return tf.concat([t for layer in layers for t in tf.nest.flatten(layer)], axis=-1)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "state_is_tuple": self.state_is_tuple}


def _tf1_zero_state(cell: Any, batch_size: Any, dtype: Any) -> Any:
    """The cell's own `zero_state` (TF1's structure), else zeros in TF1's structure."""
    own = getattr(cell, "zero_state", None)
    if own is not None:
        return own(batch_size, dtype)
    sizes = _keras_state_size(cell)
    zeros = [tf.zeros(tf.stack([batch_size, int(size)]), dtype) for size in tf.nest.flatten(sizes)]
    return _tf1_from_keras(cell, zeros)


# ------------------------------------------------------------------------------------------ wrappers
class _Wrapper(_TF1Cell, keras.layers.Layer, DropoutRNNCell):
    """A cell around a cell: the same state, its own change to the inputs or the output.

    It takes part in Keras' per-sequence dropout-mask protocol (`DropoutRNNCell`) for the cells it wraps:
    the loops and `keras.layers.RNN` draw one mask per sequence for a wrapped `keras.layers.LSTMCell(
    dropout=...)` or a `DropoutWrapper(variational_recurrent=True)` before they run, as for a bare cell. Its
    one mask is a dict: its own masks and, under "inner", those of the cells it wraps (`step.DropoutMasks`,
    drawn, set and cleared as the loops do it for a bare cell).
    """

    # A wrapper has no rates of its own: whether it draws masks is `_keras_unroll_draws_masks()`.
    dropout = recurrent_dropout = 0.0
    _keras_unroll_wrapper = True  # the functional API gives it the state structure of `self.cell`

    def _keras_unroll_draws_masks(self) -> bool:
        """Whether this wrapper (or a cell inside it) draws per-sequence masks: the loops then draw them."""
        return self._own_masks() or step_lib.needs_dropout_masks(self.cell)

    def _own_masks(self) -> bool:
        return False

    def __init__(self, cell: keras.layers.Layer, **kwargs: Any) -> None:
        self._note_dtype(kwargs)
        super().__init__(**kwargs)
        self.cell = check_cell(cell, "cell")

    @property
    def wrapped_cell(self) -> Any:
        """The cell this wrapper wraps (TF1's name)."""
        return self.cell

    @property
    def state_size(self) -> Any:
        return self.cell.state_size

    @property
    def _keras_unroll_state_size(self) -> Any:
        return _keras_state_size(self.cell)

    @property
    def output_size(self) -> int:
        return _output_size(self.cell)

    def build(self, input_shape: Any) -> None:
        if isinstance(self.cell, keras.layers.Layer) and not self.cell.built:  # a TF1-style cell builds itself
            self.cell.build(input_shape)
            self.cell.built = True
        self.built = True

    def _keras_initial_state(self, batch_size: Any) -> Any:
        getter = getattr(self.cell, "get_initial_state", None)
        if getter is not None:
            return getter(batch_size=batch_size)
        sizes = _keras_state_size(self.cell)
        zeros = [tf.zeros(tf.stack([batch_size, int(s)]), self.compute_dtype) for s in tf.nest.flatten(sizes)]
        return tf.nest.pack_sequence_as(sizes, zeros) if tf.nest.is_nested(sizes) else zeros

    def zero_state(self, batch_size: int, dtype: Any = None) -> Any:
        """TF1's `zero_state`: the wrapped cell's own."""
        return _tf1_zero_state(self.cell, batch_size, dtype or self.compute_dtype)

    def _call_cell(self, inputs: Any, states: Any, training: Any) -> Any:
        if not isinstance(self.cell, keras.layers.Layer):
            # A TF1-style cell (`__call__(inputs, state)`, no `training`): TF1's state in, Keras' list out.
            flat = tf.nest.flatten(states)
            tf1_state = flat[0] if isinstance(states, list) and len(flat) == 1 else states
            output, new_state = self.cell(inputs, tf1_state)
            return output, ([new_state] if isinstance(states, list) and len(flat) == 1 else new_state)
        kwargs = {"training": training} if step_lib.accepts_training(self.cell) else {}
        inner = self._masks_for_step(inputs, training).get("inner") if step_lib.needs_dropout_masks(self.cell) else None
        if not inner:
            return self.cell(inputs, states, **kwargs)
        with step_lib.DropoutMasks.from_tensors(self.cell, inner).applied():  # nothing is left after the step
            return self.cell(inputs, states, **kwargs)

    def _masks_for_step(self, inputs: Any, training: Any) -> Dict[str, Any]:
        """This sequence's masks: drawn by the loop before it ran (or now, in a hand-written eager loop)."""
        if training is None or training is False:
            return {}
        masks = getattr(self, "_dropout_mask", None)
        if masks is None:
            if not tf.executing_eagerly():
                raise RuntimeError(
                    f"{type(self).__name__} {self.name!r} needs its per-sequence dropout masks, which the loop "
                    "draws before it runs, and this loop did not. Run the cell in `ku.dynamic_rnn`, "
                    "`ku.static_rnn`, `ku.DynamicUnroll`, `ku.StaticUnroll` or `keras.layers.RNN` (as the cell, "
                    "or inside `MultiRNNCell`), or call `cell.get_dropout_mask(first_inputs)` before your own "
                    f"loop. Received: training={training!r}"
                )
            masks = self.get_dropout_mask(inputs)  # eager, by hand: one mask until `reset_dropout_mask()`
        return masks or {}

    # Keras' per-sequence dropout protocol (`keras.layers.RNN` and the package's loops call these).
    def _create_dropout_mask(self, step_input: Any, dropout_rate: Any = None) -> Any:
        """This sequence's masks (the wrapper's own and those of the cells it wraps), as a dict of tensors."""
        del dropout_rate  # each DropoutWrapper has its own keep probabilities
        masks = self._draw_own_masks(step_input)
        features = step_input.shape[-1] if step_input.shape[-1] is not None else tf.shape(step_input)[-1]
        inner = step_lib.DropoutMasks.draw_for(self.cell, tf.shape(step_input)[0], features, step_input.dtype)
        if inner:
            masks["inner"] = inner.tensors()
        return masks or None

    def get_dropout_mask(self, step_input: Any) -> Any:
        if getattr(self, "_dropout_mask", None) is None and self._keras_unroll_draws_masks():
            self._dropout_mask = self._create_dropout_mask(step_input)
        return getattr(self, "_dropout_mask", None)

    def _draw_own_masks(self, step_input: Any) -> Dict[str, Any]:
        return {}

    def get_recurrent_dropout_mask(self, step_input: Any) -> Any:
        return None

    def reset_dropout_mask(self) -> None:
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        self._recurrent_dropout_mask = None

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell)}

    @classmethod
    def from_config(
        cls, config: Dict[str, Any], custom_objects: Any = None, safe_mode: Optional[bool] = None
    ) -> "_Wrapper":
        del safe_mode  # only code in a config (a wrapper's function) needs it
        config = dict(config)
        if not isinstance(config["cell"], keras.layers.Layer):  # TF1's contract: a cell instance is taken as is
            config["cell"] = keras.saving.deserialize_keras_object(config["cell"], custom_objects=custom_objects)
        return cls(**config)


def _keep_prob(value: Any, name: str) -> Any:
    """A keep probability: a float in (0, 1], or (as TF1 took them) a scalar tensor or variable."""
    if isinstance(value, (tf.Tensor, tf.Variable, keras.Variable)):
        if not tf.as_dtype(value.dtype).is_floating:
            raise TypeError(f"`{name}` must be a float scalar tensor. Received: {name}.dtype={value.dtype}")
        if tf.TensorShape(value.shape).rank not in (0, None):
            raise ValueError(f"`{name}` must be a scalar. Received: {name}.shape={tuple(value.shape)}")
        static = tf.get_static_value(value) if isinstance(value, tf.Tensor) else None
        return value if static is None else _keep_prob(float(static), name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in (0, 1] or a scalar tensor. Received: {name}={value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(
            f"`{name}` must be in (0, 1] (the probability of keeping a unit; 1 keeps all). Received: {name}={value}"
        )
    return float(value)


def _keep_value(value: Any) -> Any:
    """A keep probability for `get_config`: a float (a variable's current value)."""
    if isinstance(value, float):
        return value
    return float(keras.ops.convert_to_numpy(value))


def default_dropout_state_filter_visitor(substate: Any) -> Any:
    """TF1's default: drop an LSTM's `h`, never its `c`; drop every other state."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


def _traverse_shallow(visitor: Callable[[Any], Any], structure: Any) -> Any:
    """TF1's `nest.get_traverse_shallow_structure`: which parts of `structure` the visitor selects."""
    chosen = visitor(structure)
    if not tf.nest.is_nested(structure):
        if not isinstance(chosen, (bool, np.bool_)):
            raise TypeError(
                "`dropout_state_filter_visitor` must return a bool for a single state size. "
                f"Received: {chosen!r} for {structure!r}"
            )
        return bool(chosen)
    branches = list(structure)
    if isinstance(chosen, (bool, np.bool_)):
        if not chosen:
            return False
        level = [_traverse_shallow(visitor, branch) for branch in branches]
    else:
        picks = list(chosen)
        if len(picks) != len(branches):
            raise ValueError(
                "`dropout_state_filter_visitor` returned a structure that does not match the state's. "
                f"Received: {chosen!r} for {structure!r}"
            )
        level = [_traverse_shallow(visitor, b) if bool(p) else False for p, b in zip(picks, branches)]
    return type(structure)(*level) if _is_lstm_state_tuple(structure) else type(structure)(level)


def _flags_in_keras_order(cell: Any, flags: Any) -> List[bool]:
    """Flags in TF1's state structure for `cell` -> one flag per Keras flat state."""
    count = len(tf.nest.flatten(_keras_state_size(cell)))
    if isinstance(flags, (bool, np.bool_)):
        return [bool(flags)] * count
    if _is_wrapper(cell):
        return _flags_in_keras_order(cell.cell, flags)
    if _is_stack(cell):
        return [flag for sub, sub_flags in zip(cell.cells, flags) for flag in _flags_in_keras_order(sub, sub_flags)]
    if lstm_like(cell):
        c, h = flags
        return [bool(h), bool(c)]  # Keras' order [h, c]
    return [bool(flag) for flag in tf.nest.flatten(flags)]


def _state_filter(cell: Any, visitor: Optional[Callable[[Any], Any]] = None) -> List[bool]:
    """Which of the cell's flat (Keras-order) states TF1's `DropoutWrapper` drops: the visitor applied to
    TF1's `state_size` structure (default: an LSTM's `h`, not its `c`)."""
    visitor = visitor or default_dropout_state_filter_visitor
    return _flags_in_keras_order(cell, _traverse_shallow(visitor, tf1_state_size(cell)))


def _serialize_function(fn: Any) -> Any:
    """A user function in a config. Lambdas and local functions are kept as code (Keras' lambda format,
    TF1 kept them as code too); loading them needs `safe_mode=False`, Keras' rule for code in a file."""
    if fn is None:
        return None
    name = getattr(fn, "__qualname__", "")
    if name == "<lambda>" or "<locals>" in name:
        return {"class_name": "__lambda__", "config": {"value": lambda_code(fn)}}  # Keras' format for lambdas
    return keras.saving.serialize_keras_object(fn)


def _deserialize_function(config: Any, safe_mode: Optional[bool] = None) -> Any:
    if config is None or callable(config):
        return config
    return keras.saving.deserialize_keras_object(config, safe_mode=True if safe_mode is None else safe_mode)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropoutWrapper(_Wrapper):
    """TF1's `DropoutWrapper`: dropout on a cell's inputs, outputs and state, while training.

    Each kept unit is scaled by `1 / keep_prob` (so the expected value is unchanged), as `tf.nn.dropout`.

    - `variational_recurrent=False` (TF1's default): a new mask at every time step, for each of the input,
      the output and the new state.
    - `variational_recurrent=True` (Gal & Ghahramani): one mask per sequence for each of them, reused at
      every step and shared by every row of the batch (noise of shape `(1, size)`), as TF1 drew it.
    - The state mask follows `dropout_state_filter_visitor` over TF1's `state_size` structure; TF1's default
      drops an LSTM's `h` and leaves its `c` alone, and drops every state of other cells (in a stack, each
      layer's state is filtered this way).
    - Only while training (`training=True`, e.g. in `model.fit`); at inference the wrapper is the identity.
      TF1 had no such switch (code fed `keep_prob=1.0` at test time); a keep probability of 1 is always the
      identity.

    TF1's random numbers cannot be matched; the semantics above are what the tests check.

    Args:
        cell: The RNN cell to wrap (not an RNN layer).
        input_keep_prob: Float in (0, 1], the probability of keeping each input unit, or a scalar tensor or
            variable (TF1's placeholder idiom; read at every call). Default: `1.0`.
        output_keep_prob: The same, for each output unit. Default: `1.0`.
        state_keep_prob: The same, for each unit of the new state (see the filter above). Default: `1.0`.
        variational_recurrent: Boolean, one mask per sequence instead of one per step. Default: `False`.
        input_size: Accepted for TF1 compatibility (TF1 needed it for variational masks); ignored.
        dtype: Base layer argument (TF1's position).
        seed: Optional integer seed.
        dropout_state_filter_visitor: Optional function of a piece of TF1's `state_size` structure that
            returns a bool (drop it or not) or a structure of bools one level down, as TF1's. Default: TF1's
            (`LSTMStateTuple(c=False, h=True)` for an LSTM's state, `True` for anything else).
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(batch, features)`. states: the wrapped cell's states. training: Python boolean.

    Raises:
        ValueError: A keep probability outside (0, 1].
        TypeError: `cell` not a cell, or a keep probability of another type.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.DropoutWrapper(ku.tf1.BasicLSTMCell(5), input_keep_prob=0.5, seed=1)
    >>> x = np.ones((4, 6, 3), "float32")
    >>> outputs, state = ku.dynamic_rnn(cell, x, training=True)    # dropout on
    >>> outputs, state = ku.dynamic_rnn(cell, x)                   # inference: identity
    >>> tuple(outputs.shape)
    (4, 6, 5)
    """

    def __init__(
        self,
        cell: keras.layers.Layer,
        input_keep_prob: Union[float, tf.Tensor, tf.Variable] = 1.0,
        output_keep_prob: Union[float, tf.Tensor, tf.Variable] = 1.0,
        state_keep_prob: Union[float, tf.Tensor, tf.Variable] = 1.0,
        variational_recurrent: bool = False,
        input_size: object = None,  # TF1's sizes for `variational_recurrent`: known when the cell is built
        dtype: Optional[DTypeLike] = None,
        seed: Optional[int] = None,
        dropout_state_filter_visitor: Optional[Callable[[Any], Any]] = None,
        **kwargs: Any,
    ) -> None:
        del input_size  # TF1 compatibility: the sizes are known when the cell is built
        if dtype is not None:
            kwargs["dtype"] = dtype
        super().__init__(cell, **kwargs)
        self.input_keep_prob = _keep_prob(input_keep_prob, "input_keep_prob")
        self.output_keep_prob = _keep_prob(output_keep_prob, "output_keep_prob")
        self.state_keep_prob = _keep_prob(state_keep_prob, "state_keep_prob")
        self.variational_recurrent = check_bool(variational_recurrent, "variational_recurrent")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        if dropout_state_filter_visitor is not None and not callable(dropout_state_filter_visitor):
            raise TypeError(
                "`dropout_state_filter_visitor` must be a function of a state size structure. "
                f"Received: dropout_state_filter_visitor={dropout_state_filter_visitor!r}"
            )
        self._dropout_state_filter = dropout_state_filter_visitor or default_dropout_state_filter_visitor
        self._custom_filter = dropout_state_filter_visitor
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _applies(self, keep: Any) -> bool:
        return not isinstance(keep, float) or keep < 1.0

    def _active(self) -> bool:
        return any(self._applies(k) for k in (self.input_keep_prob, self.output_keep_prob, self.state_keep_prob))

    def _own_masks(self) -> bool:
        return self.variational_recurrent and self._active()

    def _draw_own_masks(self, step_input: Any) -> Dict[str, Any]:
        """One mask per sequence for the input, the output and each dropped state, shared by the batch."""
        if not self._own_masks():
            return {}
        dtype = step_input.dtype

        def mask(size: int, keep: Any) -> tf.Tensor:
            ones = tf.ones((1, int(size)), dtype)  # TF1's noise shape: one mask for every row
            return self._dropout(ones, keep)

        masks: Dict[str, Any] = {}
        if self._applies(self.input_keep_prob):
            masks["input"] = mask(int(step_input.shape[-1]), self.input_keep_prob)
        if self._applies(self.output_keep_prob):
            masks["output"] = mask(self.output_size, self.output_keep_prob)
        if self._applies(self.state_keep_prob):
            sizes = tf.nest.flatten(_keras_state_size(self.cell))
            for index, (size, drop) in enumerate(zip(sizes, _state_filter(self.cell, self._dropout_state_filter))):
                if drop:
                    masks[f"state{index}"] = mask(size, self.state_keep_prob)
        return masks

    def _dropout(self, x: tf.Tensor, keep: Any) -> tf.Tensor:
        """`tf.nn.dropout`: keep each unit with probability `keep` (a float or a scalar tensor), scaled by 1 / keep."""
        if isinstance(keep, float):
            return keras.random.dropout(x, rate=1.0 - keep, seed=self.seed_generator)
        keep = tf.cast(keep, x.dtype)
        noise = keras.random.uniform(tf.shape(x), dtype=x.dtype, seed=self.seed_generator)
        return tf.where(noise < keep, x / keep, tf.zeros_like(x))

    def _drop(self, x: tf.Tensor, keep: Any, mask: Optional[tf.Tensor]) -> tf.Tensor:
        if self.variational_recurrent:
            return x * mask
        return self._dropout(x, keep)  # a new mask every step

    def _apply(self, inputs: Any, states: Any, masks: Dict[str, Any]) -> Any:
        if self._applies(self.input_keep_prob):
            inputs = self._drop(inputs, self.input_keep_prob, masks.get("input"))
        output, new_states = self._call_cell(inputs, states, True)
        if self._applies(self.state_keep_prob):
            flat = tf.nest.flatten(new_states)
            flags = _state_filter(self.cell, self._dropout_state_filter)
            dropped = [
                self._drop(s, self.state_keep_prob, masks.get(f"state{i}")) if drop else s
                for i, (s, drop) in enumerate(zip(flat, flags))
            ]
            new_states = tf.nest.pack_sequence_as(new_states, dropped)
        if self._applies(self.output_keep_prob):
            output = self._drop(output, self.output_keep_prob, masks.get("output"))
        return output, new_states

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        if isinstance(training, tf.Tensor) and tf.executing_eagerly():
            training = bool(training.numpy())
        if not self._active() or training is None or training is False:
            return self._call_cell(inputs, states, training)
        masks = self._masks_for_step(inputs, training) if self._own_masks() else {}
        if isinstance(training, tf.Tensor):  # a symbolic flag: choose in the graph
            dropped = self._apply(inputs, states, masks)
            plain = self._call_cell(inputs, states, False)
            return tf.nest.map_structure(lambda a, b: tf.where(training, a, b), dropped, plain)
        return self._apply(inputs, states, masks)

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "input_keep_prob": _keep_value(self.input_keep_prob),
            "output_keep_prob": _keep_value(self.output_keep_prob),
            "state_keep_prob": _keep_value(self.state_keep_prob),
            "variational_recurrent": self.variational_recurrent,
            "seed": self.seed,
            "dropout_state_filter_visitor": _serialize_function(self._custom_filter),
        }

    @classmethod
    def from_config(
        cls, config: Dict[str, Any], custom_objects: Any = None, safe_mode: Optional[bool] = None
    ) -> "DropoutWrapper":
        """As TF1's, and `config["cell"]` may be a cell. A lambda or local `dropout_state_filter_visitor` is code:
        it loads with `safe_mode=False` only (Keras' rule)."""
        config = dict(config)
        visitor = config.get("dropout_state_filter_visitor")
        config["dropout_state_filter_visitor"] = _deserialize_function(visitor, safe_mode)
        return super().from_config(config, custom_objects)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OutputProjectionWrapper(_Wrapper):
    """TF1's `OutputProjectionWrapper`: `output = activation(cell_output W + b)`; the state is the cell's.

    The projection's weights are the attributes `projection_kernel (cell_units, output_size)` and
    `projection_bias (output_size,)`, named `kernel` and `bias` (TF1's variables
    `output_projection_wrapper/kernel` and `/bias`, `ku.load_tf1_weights` fills them). Initialized as TF1:
    glorot-uniform kernel, zero bias. TF1 projected each step's output inside the loop; projecting all
    outputs after the loop with a `Dense` layer gives the same numbers (and is what Keras code does).

    Args:
        cell: The RNN cell to wrap.
        output_size: Positive integer, the projected size.
        activation: Optional activation of the projection. Default: `None` (linear).
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.OutputProjectionWrapper(ku.tf1.BasicRNNCell(100), output_size=1)
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 20, 1), "float32"))
    >>> tuple(outputs.shape), tuple(state.shape)          # projected outputs, the cell's own state
    ((2, 20, 1), (2, 100))
    """

    def __init__(
        self, cell: keras.layers.Layer, output_size: int, activation: Activation = None, **kwargs: Any
    ) -> None:
        super().__init__(cell, **kwargs)
        self.projection_size = check_units(output_size, "output_size")
        self.activation = keras.activations.get(activation)

    @property
    def output_size(self) -> int:
        return self.projection_size

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        cell_units = _output_size(self.cell)
        self.projection_kernel = self.add_weight(
            shape=(cell_units, self.projection_size), name="kernel", initializer="glorot_uniform"
        )
        self.projection_bias = self.add_weight(shape=(self.projection_size,), name="bias", initializer="zeros")

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        output, new_states = self._call_cell(inputs, states, training)
        return self.activation(tf.matmul(output, self.projection_kernel) + self.projection_bias), new_states

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "output_size": self.projection_size,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualWrapper(_Wrapper):
    """TF1's `ResidualWrapper`: `output = inputs + cell_output` (a residual connection); the state is the cell's.

    The input and the cell's output must have the same size (checked when the cell is built), unless a
    `residual_fn` combines them.

    Args:
        cell: The RNN cell to wrap.
        residual_fn: Optional function `(inputs, cell_output) -> output` (TF1's), e.g. one that slices the
            inputs first. Default (`None`): `inputs + cell_output`.
        **kwargs: Base layer arguments.

    Raises:
        ValueError: When built for inputs whose size differs from the cell's output size.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.ResidualWrapper(ku.tf1.GRUCell(3))
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 4, 3), "float32"))   # 3 features = 3 units
    >>> tuple(outputs.shape)
    (2, 4, 3)
    """

    def __init__(
        self, cell: keras.layers.Layer, residual_fn: Optional[Callable[[Nested, Nested], Nested]] = None, **kwargs: Any
    ) -> None:
        super().__init__(cell, **kwargs)
        if residual_fn is not None and not callable(residual_fn):
            raise TypeError(f"`residual_fn` must be a function (inputs, outputs) -> outputs. Received: {residual_fn!r}")
        self._residual_fn = residual_fn

    def build(self, input_shape: Any) -> None:
        features, units = int(input_shape[-1]), _output_size(self.cell)
        if self._residual_fn is None and features != units:
            raise ValueError(
                "ResidualWrapper adds the input to the cell's output, so they must have the same size: the "
                f"input has {features} features and the cell outputs {units} units. Project the input first or "
                f"use a cell with {features} units. Received: input features={features}, cell output_size={units}"
            )
        super().build(input_shape)

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        output, new_states = self._call_cell(inputs, states, training)
        if self._residual_fn is not None:
            return self._residual_fn(inputs, output), new_states
        return inputs + output, new_states

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "residual_fn": _serialize_function(self._residual_fn)}

    @classmethod
    def from_config(
        cls, config: Dict[str, Any], custom_objects: Any = None, safe_mode: Optional[bool] = None
    ) -> "ResidualWrapper":
        """As TF1's, and `config["cell"]` may be a cell. A lambda or local `residual_fn` is code: it loads with
        `safe_mode=False` only (Keras' rule)."""
        config = dict(config)
        config["residual_fn"] = _deserialize_function(config.get("residual_fn"), safe_mode)
        return super().from_config(config, custom_objects)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DeviceWrapper(_Wrapper):
    """TF1's `DeviceWrapper`: runs the wrapped cell's step on `device` (e.g. `"/CPU:0"`, `"/GPU:1"`).

    The placement applies to the step's ops; the weights live where Keras created them (use
    `with tf.device(...)` around the model's construction to place those).

    Args:
        cell: The RNN cell to wrap.
        device: A device string, as `tf.device` takes it.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.DeviceWrapper(ku.tf1.BasicRNNCell(4), "/CPU:0")
    >>> tuple(ku.dynamic_rnn(cell, np.ones((2, 3, 1), "float32"))[0].shape)
    (2, 3, 4)
    """

    def __init__(self, cell: keras.layers.Layer, device: str, **kwargs: Any) -> None:
        super().__init__(cell, **kwargs)
        if not isinstance(device, str):
            raise TypeError(f"`device` must be a device string such as '/CPU:0'. Received: device={device!r}")
        self.device = device

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        with tf.device(self.device):
            return self._call_cell(inputs, states, training)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "device": self.device}


# ------------------------------------------------------------------------------- state structures


# ------------------------------------------------------------------------------ TF1's functions
# `ku.tf1` stands in for `tf.contrib.rnn` / `tf.nn.rnn_cell` as a module: `from keras_unroll import tf1 as rnn`
# then `rnn.static_rnn(rnn.BasicLSTMCell(n), steps, dtype=tf.float32)`, as TF1 scripts wrote it.
from keras_unroll.bidirectional import bidirectional_dynamic_rnn, static_bidirectional_rnn  # noqa: E402  (TF1's functions, after its cells)
from keras_unroll.functional import dynamic_rnn, static_rnn  # noqa: E402  (TF1's functions, after its cells)
from keras_unroll.raw import raw_rnn  # noqa: E402  (TF1's functions, after its cells)

__all__ += ["bidirectional_dynamic_rnn", "dynamic_rnn", "raw_rnn", "static_bidirectional_rnn", "static_rnn"]
