"""What every unroll shares: argument checks, the prepared sequence, and the one step function.

An unroll, whichever loop runs it, is:

    state = initial_state;  last = 0
    for t in range(T):                               # reversed with go_backwards
        output, new_state = cell(x[t], state)
        if valid[t]:  state, last = new_state, output
        emit (output if valid[t] else (0 if zero_output else last))
    return emitted outputs, last, state

`valid[t]` comes from a Keras mask and/or TF1's `sequence_length` (`t < length`). This module is the
bottom layer of the package (see docs/architecture.md): the cell helpers, the argument checks, the prepared
sequence (`Prepared`), the one step function (`make_step`), the dropout masks of one sequence
(`DropoutMasks`), and the bookkeeping that turns a state sequence into emitted outputs (`outputs_from_states`).
The kernels (`keras_unroll.kernels`) and loops (`keras_unroll.loops`) build on it; the planner
(`keras_unroll.plan`) chooses between them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import numbers
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import _private
from keras_unroll.cell import BasicRNNCell, check_units

Nested = Any
StepFn = Callable[[tf.Tensor, Optional[tf.Tensor], Nested, tf.Tensor], Tuple[tf.Tensor, Nested, tf.Tensor]]


# --------------------------------------------------------------------------------------------- cells
def as_cell(cell: Any) -> Any:
    """Turns the `cell` argument (a cell, a list of cells, or an int) into one Keras RNN cell."""
    if isinstance(cell, bool):
        raise TypeError(f"`cell` must be a Keras RNN cell, a list of cells or a positive int. Received: cell={cell!r}")
    if isinstance(cell, numbers.Integral):
        return BasicRNNCell(check_units(cell, "cell"))
    if isinstance(cell, (list, tuple)):
        if not cell:
            raise ValueError("`cell` must not be an empty list; give at least one RNN cell. Received: cell=[]")
        cells = [as_cell(c) for c in cell]
        if len(cells) == 1:
            return cells[0]
        # The stack computes in its first cell's dtype (Keras' own default would be float32).
        return keras.layers.StackedRNNCells(cells, dtype=getattr(cells[0], "dtype_policy", None))
    if isinstance(cell, keras.layers.Layer) and (hasattr(cell, "forward_layer") or hasattr(cell, "return_sequences")):
        raise TypeError(_rnn_layer_as_cell_message(cell))
    if not callable(cell) or getattr(cell, "state_size", None) is None:
        raise TypeError(
            "`cell` must be a Keras RNN cell (a layer with `state_size` and `call(inputs, states)`), "
            f"a list of cells, or a positive int. Received: cell={cell!r}"
        )
    return cell


def _rnn_layer_as_cell_message(layer: Any) -> str:
    """What to say for a whole RNN layer (SimpleRNN, LSTM, GRU, RNN, Bidirectional, ours) given as `cell`."""
    bidirectional = hasattr(layer, "forward_layer")
    inner = getattr(layer.forward_layer if bidirectional else layer, "cell", None)
    suggestion = "its cell (`layer.cell`)"
    if inner is not None and hasattr(inner, "units"):
        module = "keras_unroll" if isinstance(inner, BasicRNNCell) else "keras.layers"
        suggestion = f"`{module}.{type(inner).__name__}({inner.units})`"
    if bidirectional:
        fix = f"wrap the unroll in it: `keras.layers.Bidirectional(DynamicUnroll(cell))` with cell = {suggestion}"
    else:
        fix = f"give its cell instead: {suggestion}"
    return (
        f"`cell` must be an RNN cell (one step), not a whole recurrent layer: {type(layer).__name__} already loops "
        f"over time. To unroll it here, {fix}. Received: cell={layer!r}"
    )


def output_size(cell: Any) -> int:
    size = getattr(cell, "output_size", None)
    if size is None:
        size = tf.nest.flatten(cell.state_size)[0]
    return int(size)


def keras_state_size(cell: Any) -> Any:
    """`cell.state_size` in Keras' nesting and order, as the loops hold the states. A cell whose public
    `state_size` is TF1's structure (`ku.tf1.MultiRNNCell`: a tuple of `LSTMStateTuple(c, h)`) gives Keras'
    view as `_keras_unroll_state_size`."""
    view = getattr(cell, "_keras_unroll_state_size", None)
    return cell.state_size if view is None else view


def state_sizes(cell: Any) -> List[Any]:
    """The cell's state sizes as a list (one entry per top-level state), as `keras.layers.RNN` sees them."""
    size = keras_state_size(cell)
    return list(size) if isinstance(size, (list, tuple)) else [size]


def single_state(cell: Any) -> bool:
    return not isinstance(keras_state_size(cell), (list, tuple))


def _kernel_families() -> tuple:
    """The Keras cells whose `kernel` is `(features, k·units)`: their feature size can be read off it."""
    return (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)


def built_input_dim(cell: Any) -> Optional[int]:
    """The feature size the cell was built for, when it can be told.

    Only Keras' own cell families are known to keep a `(features, k·units)` `kernel`; any other cell (a
    TF1-layout cell with one `(F + H, H)` kernel, say) is only checked against the size it was built for here.
    """
    if not getattr(cell, "built", False):
        return None
    if isinstance(cell, keras.layers.StackedRNNCells):
        return built_input_dim(cell.cells[0])
    kernel = getattr(cell, "kernel", None)
    if isinstance(cell, _kernel_families()) and kernel is not None and len(kernel.shape) == 2:
        return int(kernel.shape[0])
    return cell.__dict__.get("_keras_unroll_input_dim")


def build_cell(cell: Any, features: int, dtype: Any) -> None:
    """Builds the cell for `features` inputs, or checks it was built for that many."""
    built = built_input_dim(cell)
    if built is not None and built != features:
        raise ValueError(
            f"The cell was built for inputs with {built} features, but this input has {features}. "
            "A cell's weights fix the feature size; use a new cell (or layer) for another size. "
            f"Received: inputs with last axis {features}"
        )
    if not getattr(cell, "built", False):
        adopt = getattr(cell, "_keras_unroll_adopt_dtype", None)  # `ku.tf1` cells build in the input's dtype
        if adopt is not None:
            adopt(dtype)
        cell.build((None, features))
        cell.built = True
    if not isinstance(cell, _kernel_families()):
        cell.__dict__["_keras_unroll_input_dim"] = features  # bypasses Keras' attribute tracking


def accepts_training(cell: Any) -> bool:
    """Whether the cell's `call` (else the cell itself) takes `training`: Keras' own rule for a layer's
    `_call_has_training_arg`, read through the public signature."""
    try:
        return "training" in inspect.signature(getattr(cell, "call", cell)).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return False


def compute_dtype(cell: Any) -> Any:
    return getattr(cell, "compute_dtype", None) or keras.backend.floatx()


def _dropout_cells(cell: Any, features: int) -> List[Tuple[Any, int]]:
    """`(cell, input size)` for every cell (in a stack too) that draws Keras dropout masks."""
    if isinstance(cell, keras.layers.StackedRNNCells):
        found, in_dim = [], features
        for sub_cell in cell.cells:
            found += _dropout_cells(sub_cell, in_dim)
            in_dim = output_size(sub_cell)
        return found
    return [(cell, features)] if isinstance(cell, _private.DropoutRNNCell) else []


def _own_masks(cell: Any) -> bool:
    return getattr(cell, "_keras_unroll_draws_masks", None) is not None


def draws_dropout_masks(cell: Any) -> bool:
    """Whether `cell` draws per-sequence dropout masks (Keras' `DropoutRNNCell` protocol): a positive `dropout`
    or `recurrent_dropout`; a cell whose mask is of its own kind (`ku.tf1`'s wrappers keep the masks of the cells
    they wrap) answers with its `_keras_unroll_draws_masks()`."""
    if not isinstance(cell, _private.DropoutRNNCell):
        return False
    if _own_masks(cell):
        return bool(cell._keras_unroll_draws_masks())
    return cell.dropout > 0 or cell.recurrent_dropout > 0


def needs_dropout_masks(cell: Any) -> bool:
    """Whether `cell`, or a cell of its stack, draws per-sequence dropout masks."""
    return any(draws_dropout_masks(dropout_cell) for dropout_cell, _ in _dropout_cells(cell, 0))


@dataclasses.dataclass(frozen=True)
class DropoutMasks:
    """The dropout masks of one sequence: drawn once before the loop, set on the cells while it is traced.

    Keras' cells (`DropoutRNNCell`) draw a mask at their first step and keep it on the cell until the RNN
    layer clears it, so that every step of a sequence uses the same mask. This is the one place that draws,
    keeps, sets and clears those masks: every loop traces its steps inside `applied()`, and a loop traced
    again (inside a cached or XLA-compiled function, or a segment recomputed in the backward pass) gets the
    same masks as tensors (`tensors()` / `with_tensors()`), so a seed gives the same numbers on every path.
    Nothing is left on a cell after a call. As in Keras' `RNN.call`, the masks are drawn on every call,
    inference included (`draw`), so a cell's seed generator advances exactly as Keras' does.
    """

    cells: Tuple[Any, ...] = ()
    masks: Tuple[Tuple[Any, Any], ...] = ()  # per cell: (input mask, recurrent mask), each a tensor, list or None

    @classmethod
    def draw(cls, cell: Any, prepared: "Prepared", training: Any) -> "DropoutMasks":
        """The masks for `prepared`'s sequence while training; none at inference, where the seeds still advance.

        Keras' `RNN.call` draws every cell's masks (input mask, then recurrent mask, from the cell's
        `seed_generator`) on every call, inference included, and uses them only while training. So after a
        `predict`, an `evaluate` or a validation pass its next training masks come from a later seed. To
        give the same masks as Keras' layers with the same seed on every call of a `fit`, this draws them
        at inference too and drops them: the seed generator advances exactly as Keras' does.
        `training="symbolic"` (a flag whose value the trace does not know) draws nothing: the cells then
        draw their own masks in their steps.
        """
        if training == "symbolic":
            return cls()
        masks = cls.draw_for(cell, prepared.batch_size, prepared.features, prepared.inputs.dtype)
        if training is None or training is False:
            return (
                cls()
            )  # drawn for the seeds' sake only (the random ops are pruned from a graph, the seed updates are not)
        return masks

    @classmethod
    def draw_for(cls, cell: Any, batch_size: Any, features: Any, dtype: Any) -> "DropoutMasks":
        """New masks for every cell in `cell` (a stack too) that draws them, for steps of `features` inputs:
        each cell's input mask, then its recurrent mask, by the cell's own maker (as `keras.layers.RNN`)."""
        cells, masks = [], []
        for dropout_cell, in_dim in _dropout_cells(cell, features):
            if not draws_dropout_masks(dropout_cell):
                continue
            mask = recurrent = None
            if dropout_cell.dropout > 0 or _own_masks(dropout_cell):
                step_input = tf.zeros(tf.stack([batch_size, in_dim]), dtype)
                mask = _private.create_dropout_mask(dropout_cell, step_input, dropout_cell.dropout)
            if dropout_cell.recurrent_dropout > 0:
                state = tf.zeros(tf.stack([batch_size, state_sizes_flat(dropout_cell)[0]]), dtype)
                recurrent = _private.create_dropout_mask(dropout_cell, state, dropout_cell.recurrent_dropout)
            masks.append((mask, recurrent))
            cells.append(dropout_cell)
        return cls(tuple(cells), tuple(masks))

    @classmethod
    def from_tensors(cls, cell: Any, tensors: Dict[str, Any]) -> "DropoutMasks":
        """The masks `draw_for(cell, ...).tensors()` gave, for the same cells again (a later step's trace)."""
        cells = tuple(dropout_cell for dropout_cell, _ in _dropout_cells(cell, 0) if draws_dropout_masks(dropout_cell))
        return cls(cells, ((None, None),) * len(cells)).with_tensors(tensors)

    def __bool__(self) -> bool:
        return bool(self.cells)

    def of(self, cell: Any) -> Tuple[Any, Any]:
        """`(input mask, recurrent mask)` of `cell` (None, None when it draws none)."""
        for known, masks in zip(self.cells, self.masks):
            if known is cell:
                return masks
        return None, None

    def tensors(self) -> Dict[str, Any]:
        """The masks as a flat dict of tensors (no None), to pass into a `tf.function`."""
        return {
            f"{i}.{j}": mask for i, pair in enumerate(self.masks) for j, mask in enumerate(pair) if mask is not None
        }

    def with_tensors(self, tensors: Dict[str, Any]) -> "DropoutMasks":
        """These cells with the masks `tensors` (what `tensors()` returned, seen inside a `tf.function`)."""
        masks = tuple((tensors.get(f"{i}.0"), tensors.get(f"{i}.1")) for i in range(len(self.cells)))
        return DropoutMasks(self.cells, masks)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Sets the masks on their cells (a cell's step then uses them), and always clears them afterwards."""
        with _SETTING_MASKS:
            for dropout_cell in self.cells:
                if dropout_cell.__dict__.get(_MASKS_IN_USE):
                    raise RuntimeError(
                        f"The dropout cell {dropout_cell.name} is being traced by another call right now: Keras "
                        "cells keep their dropout masks on themselves while a loop is traced, so a layer is not "
                        "to be trained from two threads at once. Give each thread its own layer (or model). "
                        f"Received: a second concurrent call of {dropout_cell.name}"
                    )
            for dropout_cell, (mask, recurrent_mask) in zip(self.cells, self.masks):
                _private.set_dropout_masks(dropout_cell, mask, recurrent_mask)
                dropout_cell.__dict__[_MASKS_IN_USE] = True
        try:
            yield
        finally:
            for dropout_cell in self.cells:
                _clear(dropout_cell)
                dropout_cell.__dict__[_MASKS_IN_USE] = False


def _clear(dropout_cell: Any) -> None:
    dropout_cell.reset_dropout_mask()
    dropout_cell.reset_recurrent_dropout_mask()


@contextlib.contextmanager
def masks_cleared(cell: Any, features: int) -> Iterator[None]:
    """Clears whatever masks the cells drew for themselves during the block (a symbolic training flag)."""
    try:
        yield
    finally:
        for dropout_cell, _ in _dropout_cells(cell, features):
            _clear(dropout_cell)


_SETTING_MASKS = threading.Lock()  # makes "are these cells free, then set their masks" one step
_MASKS_IN_USE = "_keras_unroll_masks_in_use"  # a cell's own flag (in its __dict__, not tracked by Keras)


def state_sizes_flat(cell: Any) -> List[int]:
    return [int(size) for size in tf.nest.flatten(keras_state_size(cell))]


# ---------------------------------------------------------------------------------------- the step
def make_step(cell: Any, training: Optional[bool], zero_output: bool) -> StepFn:
    """The one step of every unroll: call the cell, then apply the validity of this step.

    `step(x_t, valid_t, states, last_output) -> (emitted_output, new_states, new_last_output)`, where
    `valid_t` is a `(batch,)` bool tensor or `None` (every row valid).
    """
    kwargs = {"training": training} if accepts_training(cell) else {}

    def step(x_t: tf.Tensor, valid_t: Optional[tf.Tensor], states: Nested, last_output: tf.Tensor):
        output, new_states = cell(x_t, states, **kwargs)
        if not tf.nest.is_nested(new_states):
            new_states = [new_states]
        flat_new, flat_old = tf.nest.flatten(new_states), tf.nest.flatten(states)
        for new, old in zip(flat_new, flat_old):
            if not new.shape.is_compatible_with(old.shape):
                raise ValueError(
                    f"The cell {type(cell).__name__} declares `state_size` {cell.state_size}, so its states are "
                    f"{_shape_str(old.shape)}, but its `call` returned a state of shape {_shape_str(new.shape)}. "
                    f"Make `state_size` match what `call` returns. Received: state shapes "
                    f"{[_shape_str(t.shape) for t in flat_new]}"
                )
        new_states = tf.nest.pack_sequence_as(states, flat_new)
        if valid_t is None:
            return output, new_states, output
        valid = valid_t[:, None]
        new_states = tf.nest.map_structure(lambda new, old: tf.where(valid, new, old), new_states, states)
        carried = tf.where(valid, output, last_output)
        emitted = tf.where(valid, output, tf.zeros_like(output)) if zero_output else carried
        return emitted, new_states, carried

    return step


# ------------------------------------------------------------------------------ prepared sequences
@dataclasses.dataclass
class Prepared:
    """A checked, time-major sequence ready for a loop."""

    inputs: tf.Tensor  # (T, B, F), already reversed for go_backwards
    valid: Optional[tf.Tensor]  # (T, B) bool, or None when every step is valid
    initial_state: Nested  # list structure as the cell takes it
    zero_output: bool
    num_steps: Optional[int]  # static T, or None
    batch_size: tf.Tensor  # scalar int32
    features: int
    max_length: Optional[tf.Tensor]  # max(sequence_length) when the loop may stop early
    invalid_rows: Optional[tf.Tensor] = None  # (B,) rows with out-of-range lengths under XLA: results are NaN
    go_backwards: bool = False  # inputs and valid are in reversed order (step 0 is the sequence's last)
    # valid comes from `sequence_length` alone: each row's valid steps are a prefix of the sequence in its own
    # order (right-padded by construction; a Keras mask may be anything)
    lengths_only: bool = False

    def settings_only(self) -> "Prepared":
        """These settings with the tensors dropped: safe to keep in a cached function's closure."""
        return dataclasses.replace(
            self, inputs=None, valid=None, initial_state=None, batch_size=None, max_length=None, invalid_rows=None
        )

    def with_open_time(self) -> "Prepared":
        """These tensors with their static time axis left open (an identity in values and gradients).

        A while loop needs no static T; without one, its graph is the same for every length (TensorFlow
        otherwise writes small zero tensors as constants and large ones as fills, so op counts moved with T).
        """
        if not isinstance(self.inputs, tf.Tensor) or self.inputs.shape[0] is None or tf.executing_eagerly():
            return self
        open_time = lambda t: tf.compat.v1.placeholder_with_default(t, [None, *t.shape[1:]])  # noqa: E731
        valid = None if self.valid is None else open_time(self.valid)
        return dataclasses.replace(self, inputs=open_time(self.inputs), valid=valid, num_steps=None)

    def around(
        self, inputs: tf.Tensor, valid: Optional[tf.Tensor], initial_state: Nested, max_length: Any
    ) -> "Prepared":
        """These settings around new tensors: how a cached `tf.function` rebuilds its argument.

        The number of steps is read from `inputs` again: a `tf.function` traced for any T sees `None`.
        """
        return dataclasses.replace(
            self,
            inputs=inputs,
            valid=valid,
            initial_state=initial_state,
            num_steps=inputs.shape[0],
            batch_size=tf.shape(inputs)[1],
            max_length=max_length,
        )


def _shape_str(shape: Any) -> str:
    return str(tuple(shape.as_list()) if isinstance(shape, tf.TensorShape) and shape.rank is not None else shape)


def to_float_tensor(x: Any, name: str, dtype: Any) -> tf.Tensor:
    """Converts `x` to a floating tensor of `dtype`; non-float input is a `TypeError`."""
    if isinstance(x, (tf.RaggedTensor, tf.SparseTensor)):
        raise TypeError(
            f"`{name}` must be a dense tensor; pad ragged/sparse sequences and pass `sequence_length` or a mask "
            f"(e.g. `x.to_tensor()` and `x.row_lengths()`). Received: {name} of type {type(x).__name__}"
        )
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` must be a float tensor or array. Received: {name}={x!r}") from error
    if not x.dtype.is_floating:
        raise TypeError(
            f"`{name}` must be a floating-point tensor (e.g. float32); cast it first. "
            f"Received: {name}.dtype={x.dtype.name}"
        )
    return tf.cast(x, dtype) if x.dtype != dtype else x


def _static_values(x: tf.Tensor) -> Optional[np.ndarray]:
    """The value of `x` if it is known now (eager tensor or graph constant)."""
    if isinstance(x, tf.Tensor) and hasattr(x, "numpy") and tf.executing_eagerly():
        return x.numpy()
    try:
        return tf.get_static_value(x)
    except (TypeError, ValueError):  # pragma: no cover
        return None


#: Whether the graph being built is compiled by XLA, where `tf.debugging` assertions are dropped (TF's
#: internals: `_private.in_xla_context` fails loudly where they moved, never guesses "no").
in_xla_context = _private.in_xla_context


def check_sequence_length(
    sequence_length: Any, batch_size: Optional[int], num_steps: Any, batch_tensor: Any = None
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """Checks `sequence_length`: shape `(batch,)`, integers in `[0, T]`.

    Returns `(lengths as int32, invalid rows)`. Values are checked in their own integer type before the
    cast, so `2**32 + 1` is refused rather than read as 1. Known values are checked now; others by
    assertions in the graph, or, where XLA drops assertions, by the second result: a `(batch,)` bool tensor
    of the rows whose length is out of range (their results become NaN), else None.
    """
    try:
        lengths = tf.convert_to_tensor(sequence_length)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "`sequence_length` must be a 1D integer tensor of shape (batch,). "
            f"Received: sequence_length={sequence_length!r}"
        ) from error
    if not lengths.dtype.is_integer:
        if lengths.dtype.is_floating:
            values = _static_values(lengths)
            if values is not None and np.all(np.mod(values, 1) == 0):
                lengths = tf.cast(lengths, tf.int64)
        if not lengths.dtype.is_integer:
            raise TypeError(
                f"`sequence_length` must hold integers. Received: sequence_length.dtype={lengths.dtype.name}"
            )
    if lengths.shape.rank != 1 or (batch_size is not None and lengths.shape[0] not in (None, batch_size)):
        raise ValueError(
            f"`sequence_length` must have shape (batch,) = ({batch_size},), one length per row. "
            f"Received: sequence_length.shape={_shape_str(lengths.shape)}"
        )
    wide = tf.cast(lengths, tf.int64)
    values = _static_values(wide)
    static_t = num_steps if isinstance(num_steps, int) else None
    invalid = None
    if values is not None:
        bad = values[(values < 0) | ((values > static_t) if static_t is not None else False)]
        if bad.size:
            raise ValueError(
                f"`sequence_length` values must lie in [0, T] with T={static_t}. "
                f"Received: sequence_length={values.tolist()}"
            )
    if values is None or static_t is None:
        steps = tf.cast(num_steps, tf.int64)
        if in_xla_context():
            invalid = (wide < 0) | (wide > steps)
        else:
            checks = [
                tf.debugging.assert_non_negative(wide, message="keras_unroll: `sequence_length` values must be >= 0"),
                tf.debugging.assert_less_equal(
                    wide, steps, message="keras_unroll: `sequence_length` values must be <= T, the number of time steps"
                ),
            ]
            if batch_tensor is not None and lengths.shape[0] is None:
                checks.append(
                    tf.debugging.assert_equal(
                        tf.shape(wide, out_type=tf.int32)[0],
                        batch_tensor,
                        message="keras_unroll: `sequence_length` must hold one length per row of the batch",
                    )
                )
            with tf.control_dependencies(checks):
                wide = tf.identity(wide)
    if invalid is not None:
        wide = tf.clip_by_value(wide, 0, tf.cast(num_steps, tf.int64))  # the rows are NaN; keep indices in range
    return tf.cast(wide, tf.int32), invalid


def check_mask(mask: Any) -> tf.Tensor:
    """Checks a Keras mask: boolean, or numbers that are exactly 0 or 1 (as `keras.layers.Masking` gives).
    Returns a bool tensor."""
    try:
        mask = tf.convert_to_tensor(mask)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`mask` must be a boolean (batch, time) tensor. Received: mask={mask!r}") from error
    if mask.dtype == tf.bool:
        return mask
    if not (mask.dtype.is_integer or mask.dtype.is_floating):
        raise TypeError(f"`mask` must be a boolean (batch, time) tensor. Received: mask.dtype={mask.dtype.name}")
    values = _static_values(mask)
    if values is not None:
        bad = values[(values != 0) & (values != 1)]
        if bad.size:
            raise ValueError(
                "`mask` must be boolean, or hold only 0 and 1 (a float mask is not a weight). "
                f"Received: mask values {sorted(set(np.asarray(bad).ravel().tolist()), key=str)[:5]}"
            )
    elif not in_xla_context():
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(mask, 0) | tf.equal(mask, 1)),
            ["keras_unroll: `mask` must be boolean, or hold only 0 and 1"],
        )
        with tf.control_dependencies([check]):
            mask = tf.identity(mask)
    return tf.cast(mask, tf.bool)


def check_initial_state(cell: Any, initial_state: Any, batch_size: Optional[int], dtype: Any) -> Nested:
    """Checks a user's initial state against the cell's state sizes; returns it in the cell's structure."""
    sizes = state_sizes(cell)
    flat_sizes = tf.nest.flatten(sizes)
    state = initial_state
    if isinstance(state, dict):
        raise TypeError(
            "`initial_state` must be a tensor (batch, units) or a list of them, one per state of the cell "
            f"(state sizes {sizes}); a dict has no order to match them by. Received: a dict with keys {sorted(state)}"
        )
    if not tf.nest.is_nested(state):
        state = [state]
    state = list(state)
    flat = tf.nest.flatten(state)
    if len(flat) != len(flat_sizes):
        raise ValueError(
            f"`initial_state` must hold {len(flat_sizes)} tensor(s), one per state of the cell "
            f"(state sizes {sizes}). Received: {len(flat)} tensor(s)"
        )
    checked = []
    for i, (tensor, size) in enumerate(zip(flat, flat_sizes)):
        tensor = to_float_tensor(tensor, f"initial_state[{i}]", dtype)
        shape = tensor.shape
        if (
            shape.rank != 2
            or (shape[1] is not None and shape[1] != size)
            or (batch_size is not None and shape[0] is not None and shape[0] != batch_size)
        ):
            raise ValueError(
                f"`initial_state[{i}]` must have shape (batch, {size}) = ({batch_size}, {size}). "
                f"Received: initial_state[{i}].shape={_shape_str(shape)}"
            )
        checked.append(tensor)
    return tf.nest.pack_sequence_as(sizes, checked) if len(sizes) > 1 or tf.nest.is_nested(sizes[0]) else checked


def zero_state(cell: Any, batch_size: tf.Tensor, dtype: Any) -> Nested:
    """The cell's initial state (its `get_initial_state`, else zeros), as a list structure."""
    getter = getattr(cell, "get_initial_state", None)
    if getter is not None:
        state = getter(batch_size=batch_size)
    else:
        sizes = state_sizes(cell)  # keep nesting such as [1, [2, 3]]: the cell unpacks what it declared
        zeros = [tf.zeros(tf.stack([batch_size, size]), dtype) for size in tf.nest.flatten(sizes)]
        state = tf.nest.pack_sequence_as(sizes, zeros)
    if not tf.nest.is_nested(state):
        state = [state]
    return list(state)


def stack_inputs(inputs: Sequence[Any], dtype: Any) -> tf.Tensor:
    """Checks a Python list of `(batch, features)` steps and stacks it time-major: `(T, B, F)`."""
    if len(inputs) == 0:
        raise ValueError("The list of input steps is empty; give at least one (batch, features) tensor. Received: []")
    steps = [to_float_tensor(x, f"inputs[{i}]", dtype) for i, x in enumerate(inputs)]
    first = steps[0]
    for i, x in enumerate(steps):
        if x.shape.rank != 2:
            raise ValueError(
                "Each input step must be a 2D (batch, features) tensor. "
                f"Received: inputs[{i}].shape={_shape_str(x.shape)}"
            )
        if not x.shape.is_compatible_with(first.shape):
            raise ValueError(
                "All input steps must have the same (batch, features) shape. "
                f"Received: inputs[0].shape={_shape_str(first.shape)}, inputs[{i}].shape={_shape_str(x.shape)}"
            )
    return tf.stack(steps, axis=0)


def check_num_steps(
    num_steps: Optional[int], shape: Any, require_static_steps: bool, layer_name: str = "", allow_no_steps: bool = False
) -> None:
    """Checks the number of time steps T: known when the loop needs it (static), and at least 1 (unless
    `allow_no_steps`: TF1's `dynamic_rnn` returns the initial state for T = 0)."""
    if num_steps is None and require_static_steps:
        raise ValueError(
            f"{layer_name or 'StaticUnroll'} unrolls the time axis in Python, so it needs a known number of time "
            "steps, and this input has an undefined time dimension. Fix: give the model an `Input()` with a "
            "fixed shape, e.g. `keras.Input(shape=(20, 3))` (or `batch_shape=(None, 20, 3)`), or use "
            f"`DynamicUnroll`, which accepts any length. Received: inputs.shape={_shape_str(shape)}"
        )
    if num_steps == 0 and not allow_no_steps:
        raise ValueError(
            f"The input has no time steps; an RNN needs T >= 1. Received: inputs.shape={_shape_str(shape)}"
        )


def prepare(
    cell: Any,
    inputs: tf.Tensor,
    *,
    time_major: bool,
    initial_state: Any = None,
    sequence_length: Any = None,
    mask: Any = None,
    go_backwards: bool = False,
    zero_output_for_mask: bool = False,
    require_static_steps: bool = False,
    layer_name: str = "",
    allow_no_steps: bool = False,
) -> Prepared:
    """Checks everything once and returns the time-major sequence, validity and initial state."""
    inputs_tm, num_steps, static_batch, features = _time_major_inputs(inputs, time_major, layer_name)
    check_num_steps(num_steps, inputs.shape, require_static_steps, layer_name, allow_no_steps)
    dtype = inputs.dtype
    build_cell(cell, features, dtype)
    batch_size = tf.shape(inputs_tm)[1]
    steps = num_steps if num_steps is not None else tf.shape(inputs_tm)[0]

    valid = None
    zero_output = zero_output_for_mask
    max_length = invalid_rows = None
    if sequence_length is not None:
        valid, max_length, invalid_rows = _validity_from_lengths(
            sequence_length, static_batch, steps, batch_size, go_backwards
        )
        zero_output = True
    if mask is not None:
        mask_tm = _time_major_mask(mask, time_major, inputs_tm, inputs.shape)
        valid = mask_tm if valid is None else tf.logical_and(valid, mask_tm)
        max_length = None

    state = _checked_initial_state(cell, initial_state, static_batch, batch_size, dtype)
    inputs_tm, valid = _padding_zeroed_in_loop_order(inputs_tm, valid, go_backwards)
    return Prepared(
        inputs=inputs_tm,
        valid=valid,
        initial_state=state,
        zero_output=zero_output,
        num_steps=num_steps,
        batch_size=batch_size,
        features=features,
        max_length=max_length,
        invalid_rows=invalid_rows,
        go_backwards=go_backwards,
        lengths_only=sequence_length is not None and mask is None,
    )


def _time_major_inputs(
    inputs: tf.Tensor, time_major: bool, layer_name: str
) -> Tuple[tf.Tensor, Optional[int], Optional[int], int]:
    """Checks the input is 3D with known features; returns it time-major `(T, B, F)` with its static T, B and F."""
    if inputs.shape.rank != 3:
        raise ValueError(
            f"{layer_name or 'The RNN'} expects a 3D input (batch, time, features)"
            f"{' in time-major order (time, batch, features)' if time_major else ''}. "
            f"Received: inputs.shape={_shape_str(inputs.shape)}"
        )
    inputs_tm = inputs if time_major else tf.transpose(inputs, [1, 0, 2])
    num_steps, static_batch, features = inputs_tm.shape.as_list()
    if features is None:
        raise ValueError(
            "The last axis of the input (features) must be known when the layer is built. "
            f"Received: inputs.shape={_shape_str(inputs.shape)}"
        )
    return inputs_tm, num_steps, static_batch, features


def _validity_from_lengths(
    sequence_length: Any, static_batch: Optional[int], steps: Any, batch_size: tf.Tensor, go_backwards: bool
) -> Tuple[tf.Tensor, Optional[tf.Tensor], Optional[tf.Tensor]]:
    """The time-major `(T, B)` validity of checked `sequence_length`, the longest length (the loop may stop
    there; `None` when going backwards) and the rows whose length is out of range."""
    lengths, invalid_rows = check_sequence_length(sequence_length, static_batch, steps, batch_size)
    valid = tf.transpose(tf.sequence_mask(lengths, steps))
    max_length = None
    if not go_backwards:
        # `initial=0`: an empty batch of unknown size has max 0 steps, not INT32_MIN.
        max_length = tf.maximum(tf.reduce_max(lengths), 0) if static_batch != 0 else tf.constant(0, tf.int32)
    return valid, max_length, invalid_rows


def _time_major_mask(mask: Any, time_major: bool, inputs_tm: tf.Tensor, input_shape: Any) -> tf.Tensor:
    """Checks a `(batch, time)` (or `(batch, time, 1)`) boolean mask against the input; returns it time-major."""
    mask = check_mask(mask)
    if mask.shape.rank == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape.rank != 2:
        raise ValueError(
            f"`mask` must be a 2D (batch, time) boolean tensor. Received: mask.shape={_shape_str(mask.shape)}"
        )
    mask_tm = mask if time_major else tf.transpose(mask)
    if not mask_tm.shape.is_compatible_with(inputs_tm.shape[:2]):
        raise ValueError(
            f"`mask` must match the input's (batch, time) axes. Received: mask.shape={_shape_str(mask.shape)} "
            f"for inputs.shape={_shape_str(input_shape)}"
        )
    return mask_tm


def _checked_initial_state(
    cell: Any, initial_state: Any, static_batch: Optional[int], batch_size: tf.Tensor, dtype: Any
) -> Nested:
    """The cell's zero state when `initial_state` is `None`, else the checked `initial_state` with the
    input's static batch size."""
    if initial_state is None:
        return zero_state(cell, batch_size, dtype)
    state = check_initial_state(cell, initial_state, static_batch, dtype)
    return tf.nest.map_structure(lambda s: _batch_like(s, static_batch, batch_size), state)


def _padding_zeroed_in_loop_order(
    inputs_tm: tf.Tensor, valid: Optional[tf.Tensor], go_backwards: bool
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """The time-major inputs with padded steps set to zero, and the validity, both reversed in time when
    `go_backwards`."""
    if valid is not None:
        # Padding must not influence anything: NaN or Inf in a step that is not used would still reach the
        # gradients through the discarded branch of the step's select (0 * NaN).
        inputs_tm = tf.where(valid[:, :, None], inputs_tm, tf.zeros_like(inputs_tm))
    if go_backwards:
        inputs_tm = tf.reverse(inputs_tm, [0])
        if valid is not None:
            valid = tf.reverse(valid, [0])
    return inputs_tm, valid


def _batch_like(state: tf.Tensor, static_batch: Optional[int], batch_size: tf.Tensor) -> tf.Tensor:
    """`state` with the input's static batch size where one of the two leaves it open (a while loop's
    shape invariants need the state and the steps to agree)."""
    if state.shape[0] == static_batch:
        return state
    if static_batch is None:  # the input's batch is open: open the state's too (an identity with a looser shape)
        return tf.compat.v1.placeholder_with_default(state, [None, *state.shape[1:]])
    return tf.ensure_shape(state, [static_batch, *state.shape[1:]])


def empty_batch_result(units: int, prepared: Prepared, return_all_outputs: bool) -> Tuple[Any, tf.Tensor, Nested]:
    """The exact result for a batch of 0 rows, computed without calling the cell.

    Keras' TensorFlow `ops.add` mistakes a `(0, n)` tensor for a bias (it drops dimensions <= 1), so
    `LSTMCell` fails on a static batch of 0 inside a graph; with no rows there is nothing to compute.
    """
    dtype = prepared.inputs.dtype
    outputs = None
    if return_all_outputs:
        outputs = tf.zeros(tf.stack([tf.shape(prepared.inputs)[0], 0, units]), dtype)
        outputs.set_shape([prepared.num_steps, 0, units])
    return outputs, tf.zeros((0, units), dtype), prepared.initial_state


def initial_last_output(units: int, prepared: Prepared) -> tf.Tensor:
    """Zeros `(batch, units)`: the last valid output before the first step."""
    return tf.zeros(tf.stack([prepared.batch_size, units]), prepared.inputs.dtype)


def unpack_state(cell: Any, state: Nested) -> Union[tf.Tensor, Nested]:
    """The final state as TF1 returns it: one tensor for single-state cells, else the list structure."""
    return state[0] if single_state(cell) else state


def outputs_from_states(
    prepared: Prepared, states: tf.Tensor, final: tf.Tensor, return_all_outputs: bool, last_before: Any = None
) -> Tuple[Optional[tf.Tensor], tf.Tensor]:
    """Emitted outputs and last valid output of a cell whose output is its state `h`, from the state sequence.

    `states` is `(T, B, H)`, where an invalid step copied the state through; `final` is the state after the
    last step. After a row's first valid step the state *is* its last valid output, so the bookkeeping of
    `make_step` (zeros or the last valid output at invalid steps) follows from `valid` alone. `last_before`
    is the last valid output before this sequence (a recomputed segment's), zeros when None.
    """
    valid = prepared.valid
    if valid is None:
        return (states if return_all_outputs else None), final
    before = tf.zeros_like(final) if last_before is None else last_before
    last = tf.where(tf.reduce_any(valid, axis=0)[:, None], final, before)
    outputs = None
    if return_all_outputs:
        if prepared.zero_output:
            outputs = tf.where(valid[:, :, None], states, tf.zeros_like(states))
        else:
            seen = tf.cumsum(tf.cast(valid, tf.int32), axis=0) > 0  # (T, B): a valid step at or before t
            outputs = tf.where(seen[:, :, None], states, before[None])
    return outputs, last


# ----------------------------------------------------------------- TF1's LSTM state, read by every unroll
#: TF1's LSTM state: `c` (the cell/carry state) first, then `h` (the output). Keras orders it `[h, c]`.
LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ("c", "h"))
LSTMStateTuple.__doc__ = """TF1's LSTM state `(c, h)`: the carry `c` first, then the output `h`.

Keras' LSTM cells keep `[h, c]` internally; `ku.dynamic_rnn` / `ku.static_rnn` return an LSTM's final
state as `LSTMStateTuple(c, h)` and read an `initial_state` given as one correctly.
"""


def _is_lstm_state_tuple(state: Any) -> bool:
    """`ku.tf1.LSTMStateTuple`, or any namedtuple `(c, h)` such as tf-keras' own `LSTMStateTuple`."""
    return isinstance(state, tuple) and getattr(state, "_fields", None) == ("c", "h")


def lstm_state_tuples_to_keras(state: Any) -> Any:
    """Every `LSTMStateTuple(c, h)` in a nested state becomes Keras' `[h, c]`; everything else is kept.

    The one conversion that is never ambiguous, so a layer (which otherwise takes Keras' structure) can
    apply it to its `initial_state` too: flattened as it is, an `LSTMStateTuple(c, h)` would be read as
    `[h, c]`.
    """
    if _is_lstm_state_tuple(state):
        return [state.h, state.c]
    if isinstance(state, (list, tuple)):
        return type(state)(lstm_state_tuples_to_keras(s) for s in state) if type(state) in (list, tuple) else state
    return state
