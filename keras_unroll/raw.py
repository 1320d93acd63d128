"""TF1's loops written plainly: `raw_rnn`, and the TF1-structure loop behind `dynamic_rnn`/`static_rnn`.

The planner's loops (`keras_unroll.plan`) take a Keras cell, one `(batch, time, features)` tensor and
states of shape `(batch, size)`. TF1's functions took more, and TF1 code uses it:

- TF1-style cells: any object with `state_size`, `output_size` and `__call__(inputs, state)` returning
  `(output, new_state)` (and, optionally, `zero_state(batch_size, dtype)`), as TF1 users wrote them by
  subclassing `tf.nn.rnn_cell.RNNCell`;
- nested inputs and outputs (tuples of tensors), per-step inputs with more than one feature axis,
  scalar states and `tf.TensorArray` states.

`tf1_dynamic_loop` and `tf1_static_loop` run those with TF1's semantics (`tf.nn.dynamic_rnn`'s
`_rnn_step`): the cell sees TF1's structures; past a row's `sequence_length` its outputs are zeros and its
state is copied through row by row (a scalar or `TensorArray` state is always the new one, as in TF1).
`raw_rnn` is TF1's `tf.nn.raw_rnn`. A Keras cell (the `ku.tf1` cells included) is called with its state
converted between TF1's structure (`LSTMStateTuple(c, h)`, one entry per layer) and Keras' lists.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Tuple, Union

import keras
import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll import tf1_states
from keras_unroll.cell import not_converted
from keras_unroll.types import Nested, RawLoopFn, State, TF1StyleCell

TF1Call = Callable[[Nested, Nested], Tuple[Nested, Nested]]  # (inputs, state) -> (output, new state)


# ------------------------------------------------------------------------------------------- cells
def is_tf1_style_cell(cell: Any) -> bool:
    """A cell written the TF1 way: not a Keras layer, but callable with `state_size` and `output_size`."""
    return (
        not isinstance(cell, keras.layers.Layer)
        and callable(cell)
        and getattr(cell, "state_size", None) is not None
        and getattr(cell, "output_size", None) is not None
    )


def _sizes_are_tf1_only(cell: Any) -> bool:
    """Sizes only TF1's loop takes: nested outputs, `TensorShape` sizes (scalar or several axes)."""
    output_size = getattr(cell, "output_size", None)
    if tf.nest.is_nested(output_size):
        return True
    sizes = tf.nest.flatten(getattr(cell, "state_size", None)) + [output_size]
    return any(isinstance(size, tf.TensorShape) and size.rank != 1 for size in sizes)


def _accepts_training(cell: Any) -> bool:
    return isinstance(cell, keras.layers.Layer) and step_lib.accepts_training(cell)


def tf1_call(cell: Any, training: Optional[bool] = None) -> TF1Call:
    """`call(inputs, tf1_state) -> (output, tf1_state)`: the cell called with TF1's state structures.

    A TF1-style cell is called as it is. A Keras cell gets its state in Keras' structure
    (`tf1_states.from_tf1_state`) and its new state is given back in TF1's (`tf1_states.to_tf1_state`).
    """
    if is_tf1_style_cell(cell):
        return lambda inputs, state: cell(inputs, state)
    kwargs = {"training": training} if _accepts_training(cell) else {}

    def call(inputs: Nested, state: Nested) -> Tuple[Nested, Nested]:
        keras_state = tf1_states.from_tf1_state(cell, state)
        if not tf.nest.is_nested(keras_state):
            keras_state = [keras_state]
        output, new_state = cell(inputs, keras_state, **kwargs)
        if _holds_lstm_state_tuple(new_state):  # the cell already answers in TF1's structure
            return output, new_state
        return output, tf1_states.to_tf1_state(cell, new_state)

    return call


def _holds_lstm_state_tuple(state: Any) -> bool:
    if step_lib._is_lstm_state_tuple(state):
        return True
    return isinstance(state, (list, tuple)) and any(_holds_lstm_state_tuple(s) for s in state)


def _size_shape(size: Any) -> tf.TensorShape:
    return tf.TensorShape(size) if isinstance(size, tf.TensorShape) else tf.TensorShape([size])


def _zeros(batch_size: Any, size: Any, dtype: Any) -> tf.Tensor:
    """Zeros of shape `[batch_size] + size` (`size` an int or a `TensorShape`)."""
    shape = _size_shape(size).as_list()
    if isinstance(batch_size, numbers.Integral):
        return tf.zeros([int(batch_size), *shape], dtype)
    return tf.zeros(tf.concat([tf.reshape(batch_size, [1]), tf.constant(shape, tf.int32)], 0), dtype)


def tf1_zero_state(cell: Any, batch_size: Any, dtype: Any) -> Nested:
    """The cell's zero state in TF1's structure: its `zero_state`, else zeros for each `state_size` entry."""
    if is_tf1_style_cell(cell) and callable(getattr(cell, "zero_state", None)):
        return cell.zero_state(batch_size, dtype)
    if is_tf1_style_cell(cell):
        sizes = cell.state_size
        return tf.nest.map_structure(lambda size: _zeros(batch_size, size, dtype), sizes)
    return tf1_states.to_tf1_state(cell, step_lib.zero_state(cell, batch_size, dtype))


# ---------------------------------------------------------------------------------- TF1's step
def _copy_rows(copy: Optional[tf.Tensor], old: Any, new: Any) -> Any:
    """`new`, with the rows where `copy` holds taken from `old` (TF1's `_copy_one_through`).

    A `TensorArray` or a scalar has no rows: the new one is kept, as TF1 keeps it.
    """
    if copy is None or isinstance(new, tf.TensorArray):
        return new
    new = tf.convert_to_tensor(new)
    if new.shape.rank == 0:
        return new
    condition = tf.reshape(copy, [-1] + [1] * (new.shape.rank - 1))
    return tf.where(condition, tf.convert_to_tensor(old, new.dtype), new)


def _pack_like(structure: Nested, value: Nested) -> Nested:
    """`value` in `structure`'s nesting (a cell may answer a tuple state with a list)."""
    return tf.nest.pack_sequence_as(structure, tf.nest.flatten(value))


def _tf1_step(call: TF1Call, lengths: Optional[tf.Tensor]) -> Callable[[Any, Nested, Nested], Tuple[Nested, Nested]]:
    def step(time: Any, inputs: Nested, state: Nested) -> Tuple[Nested, Nested]:
        output, new_state = call(inputs, state)
        new_state = _pack_like(state, new_state)
        if lengths is None:
            return output, new_state
        copy = time >= lengths  # (batch,): the row has ended
        output = tf.nest.map_structure(lambda o: _copy_rows(copy, tf.zeros_like(o), o), output)
        new_state = tf.nest.map_structure(lambda old, new: _copy_rows(copy, old, new), state, new_state)
        return output, new_state

    return step


def _lengths(sequence_length: Any) -> Optional[tf.Tensor]:
    if sequence_length is None:
        return None
    lengths = tf.convert_to_tensor(sequence_length)
    if lengths.shape.rank is not None and lengths.shape.rank != 1:
        raise ValueError(
            "`sequence_length` must be a vector of shape (batch,), one length per row. "
            f"Received: sequence_length.shape={lengths.shape}"
        )
    if not lengths.dtype.is_integer:
        raise TypeError(f"`sequence_length` must hold integers. Received: sequence_length.dtype={lengths.dtype.name}")
    return tf.cast(lengths, tf.int32)


def _batch_size(tensor: tf.Tensor, axis: int) -> Any:
    static = tensor.shape[axis] if tensor.shape.rank is not None else None
    return static if static is not None else tf.shape(tensor)[axis]


# ------------------------------------------------------------------------- dynamic_rnn, static_rnn
def tf1_dynamic_loop(
    cell: Any,
    inputs: Nested,
    *,
    sequence_length: Any = None,
    initial_state: Nested = None,
    dtype: Any = None,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    time_major: bool = False,
    training: Optional[bool] = None,
) -> Tuple[Nested, Nested]:
    """TF1's `dynamic_rnn` for any cell and any nesting of inputs (see the module's docstring).

    Each input is `(batch, time, ...)` (`(time, batch, ...)` with `time_major`); every one of them must
    agree on the batch and time axes. Returns `(outputs, final_state)`: the outputs in the cell's output
    structure, each `(batch, time, ...)`; the state in the structure the cell (or `initial_state`) gave.
    """
    flat = [tf.convert_to_tensor(x) for x in tf.nest.flatten(inputs)]
    for i, x in enumerate(flat):
        if x.shape.rank is None or x.shape.rank < 3:
            raise ValueError(
                "Each input of `dynamic_rnn` must have a batch, a time and at least one feature axis, "
                f"(batch, time, ...). Received: input {i} of shape {x.shape}"
            )
    if not time_major:
        flat = [tf.transpose(x, [1, 0, *range(2, x.shape.rank)]) for x in flat]
    num_steps = flat[0].shape[0]
    steps = num_steps if num_steps is not None else tf.shape(flat[0])[0]
    batch_size = _batch_size(flat[0], 1)
    dtype = tf.as_dtype(dtype) if dtype is not None else flat[0].dtype
    state = initial_state if initial_state is not None else tf1_zero_state(cell, batch_size, dtype)
    lengths = _lengths(sequence_length)
    step = _tf1_step(tf1_call(cell, training), lengths)
    # Steps are read from TensorArrays: a gradient per step, not a dense (T, B, ...) zero tensor per step.
    arrays_in = [tf.TensorArray(x.dtype, size=steps, element_shape=x.shape[1:]).unstack(x) for x in flat]

    def read(t: Any) -> Nested:
        return tf.nest.pack_sequence_as(inputs, [a.read(t) for a in arrays_in])

    if num_steps == 0:  # TF1: no steps give empty outputs and the initial state
        output_size = cell.output_size
        outputs = tf.nest.map_structure(lambda size: _zeros(batch_size, size, dtype)[None][:0], output_size)
    else:
        # The first step runs before the loop: it builds a Keras cell's weights outside any loop and gives
        # the outputs' structure, dtypes and shapes.
        first, state = step(0, read(0), state)
        arrays = [
            tf.TensorArray(o.dtype, size=steps, element_shape=o.shape).write(0, o) for o in tf.nest.flatten(first)
        ]

        def body(time: tf.Tensor, arrays: List[Any], state: Nested) -> Tuple[tf.Tensor, List[Any], Nested]:
            output, state = step(time, read(time), state)
            return time + 1, [a.write(time, o) for a, o in zip(arrays, tf.nest.flatten(output))], state

        _, arrays, state = tf.while_loop(
            lambda time, *_: time < steps,
            body,
            (tf.constant(1), arrays, state),
            parallel_iterations=parallel_iterations or 10,
            swap_memory=swap_memory,
        )
        outputs = tf.nest.pack_sequence_as(first, [a.stack() for a in arrays])
    if not time_major:
        outputs = tf.nest.map_structure(lambda o: tf.transpose(o, [1, 0, *range(2, o.shape.rank)]), outputs)
    return outputs, state


def tf1_static_loop(
    cell: Any,
    inputs: Any,
    *,
    initial_state: Nested = None,
    dtype: Any = None,
    sequence_length: Any = None,
    training: Optional[bool] = None,
) -> Tuple[List[Nested], Nested]:
    """TF1's `static_rnn` for any cell and any nesting of each step's input: one cell call per step."""
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"`inputs` must be a Python list of steps. Received: inputs of type {type(inputs).__name__}")
    if not inputs:
        raise ValueError("`inputs` must not be empty; give at least one step. Received: inputs=[]")
    steps = [tf.nest.map_structure(tf.convert_to_tensor, x) for x in inputs]
    first = tf.nest.flatten(steps[0])[0]
    if first.shape.rank is None or first.shape.rank < 2:
        raise ValueError(
            "Each step of `static_rnn` must have a batch axis and a feature axis. "
            f"Received: a step of shape {first.shape}"
        )
    dtype = tf.as_dtype(dtype) if dtype is not None else first.dtype
    state = initial_state if initial_state is not None else tf1_zero_state(cell, _batch_size(first, 0), dtype)
    step = _tf1_step(tf1_call(cell, training), _lengths(sequence_length))
    outputs = []
    for time, x in enumerate(steps):
        output, state = step(time, x, state)
        outputs.append(output)
    return outputs, state


# ------------------------------------------------------------------------------------------ raw_rnn
@not_converted
def raw_rnn(
    cell: Union[keras.layers.Layer, TF1StyleCell],
    loop_fn: RawLoopFn,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    scope: Optional[str] = None,
) -> Tuple[Nested, State, Optional[Nested]]:
    """TF1's `tf.nn.raw_rnn`: a loop whose inputs, states and outputs a function of yours decides each step.

    It is how TF1 code wrote decoders that feed each output back as the next input. States are in TF1's structures
    (`LSTMStateTuple(c, h)` for an LSTM, what `cell.zero_state(batch_size, dtype)` returns). The loop, step
    by step: `docs/tf1-semantics.md`, "The loop of `raw_rnn`".

    Args:
        cell: A `ku.tf1` / Keras RNN cell, or a TF1-style cell (`state_size`, `output_size`,
            `__call__(inputs, state)`).
        loop_fn: `loop_fn(time, cell_output, cell_state, loop_state) -> (finished, next_input,
            next_cell_state, emit_output, next_loop_state)`. At `time == 0` the three last arguments are
            `None`: return the initial state as `next_cell_state`, and as `emit_output` either `None` (the
            emitted outputs are the cell's, `cell.output_size` wide) or a structure of tensors of one row's
            shape (e.g. `tf.zeros([units])`) that gives the emitted structure. `finished` is a `(batch,)`
            bool tensor; `next_loop_state` may be `None` (kept as it was). Finished rows emit zeros and keep
            their state, as in `dynamic_rnn`.
        parallel_iterations: Passed to `tf.while_loop` (default 32, TF1's).
        swap_memory: Passed to `tf.while_loop` (TF2's while loop ignores it).
        scope: Accepted for TF1 compatibility; Keras names the weights after the cell.

    Returns:
        `(emit_ta, final_state, final_loop_state)`: `emit_ta` a `tf.TensorArray` (or a structure of them)
        with one entry per step (`emit_ta.stack()` is `(time, batch, ...)`), the final cell state, and the
        final loop state (`None` when `loop_fn` gave none at time 0).

    Raises:
        TypeError: `loop_fn` is not callable.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import keras_unroll as ku
    >>> x = tf.constant(np.ones((3, 2, 4), "float32"))            # (time, batch, features)
    >>> cell = ku.tf1.BasicLSTMCell(5)
    >>> def loop_fn(time, cell_output, cell_state, loop_state):
    ...     state = cell.zero_state(2, tf.float32) if cell_output is None else cell_state
    ...     finished = tf.fill([2], time >= 3)
    ...     next_input = tf.cond(time >= 3, lambda: tf.zeros([2, 4]), lambda: x[tf.minimum(time, 2)])
    ...     return finished, next_input, state, cell_output, None
    >>> emit_ta, state, _ = ku.raw_rnn(cell, loop_fn)
    >>> tuple(emit_ta.stack().shape), tuple(state.h.shape)
    ((3, 2, 5), (2, 5))
    """
    del scope  # TF1 compatibility only
    if not callable(loop_fn):
        raise TypeError(
            f"`loop_fn` must be a callable (time, cell_output, cell_state, loop_state). Received: loop_fn={loop_fn!r}"
        )
    if not is_tf1_style_cell(cell):
        cell = step_lib.as_cell(cell)
    parallel_iterations = tf1_states.check_parallel_iterations(parallel_iterations) or 32
    time = tf.constant(0, tf.int32)
    finished, next_input, state, emit_structure, init_loop_state = loop_fn(time, None, None, None)
    next_input, state, static_batch, batch_size = _first_input_and_state(cell, next_input, state)
    loop_state = init_loop_state if init_loop_state is not None else tf.constant(0, tf.int32)
    emit_ta, zero_emit = _emit_arrays_and_zeros(cell, emit_structure, state, static_batch, batch_size)
    returned = tf.while_loop(
        lambda time, finished, *_: tf.logical_not(tf.reduce_all(finished)),
        _raw_rnn_body(tf1_call(cell), loop_fn, zero_emit),
        [time, tf.convert_to_tensor(finished), next_input, emit_ta, state, loop_state],
        parallel_iterations=parallel_iterations,
        swap_memory=swap_memory,
    )
    emit_ta, final_state, final_loop_state = returned[-3:]
    return emit_ta, final_state, (final_loop_state if init_loop_state is not None else None)


def _first_input_and_state(cell: Any, next_input: Nested, state: Nested) -> Tuple[Nested, Nested, Optional[int], Any]:
    """`loop_fn`'s first input and initial state as tensors, with the batch size (static, and static or
    dynamic); builds a Keras cell's weights here, outside the loop, when the input is one `(batch, features)`."""
    next_input = tf.nest.map_structure(tf.convert_to_tensor, next_input)
    flat_input = tf.nest.flatten(next_input)
    static_batch = flat_input[0].shape[0]
    batch_size = static_batch if static_batch is not None else tf.shape(flat_input[0])[0]
    state = tf.nest.map_structure(lambda s: s if isinstance(s, tf.TensorArray) else tf.convert_to_tensor(s), state)
    if isinstance(cell, keras.layers.Layer) and len(flat_input) == 1 and flat_input[0].shape.rank == 2:
        tf1_states.settle_dtype(cell, flat_input[0])
        step_lib.build_cell(cell, int(flat_input[0].shape[-1]), flat_input[0].dtype)  # weights outside the loop
    return next_input, state, static_batch, batch_size


def _emit_arrays_and_zeros(
    cell: Any, emit_structure: Nested, state: Nested, static_batch: Optional[int], batch_size: Any
) -> Tuple[Nested, Nested]:
    """The growing `TensorArray`s of the emitted outputs, and the zeros finished rows emit: in the structure,
    dtypes and per-row shapes of `emit_structure` (`loop_fn`'s `emit_output` at time 0), or when it is `None`
    of `cell.output_size` in the state's dtype."""
    if emit_structure is not None:
        flat_emit = tf.nest.flatten(emit_structure)
        sizes = [e.shape if e.shape.is_fully_defined() else tf.shape(e) for e in flat_emit]
        dtypes = [e.dtype for e in flat_emit]
    else:
        emit_structure = cell.output_size
        sizes = tf.nest.flatten(emit_structure)
        dtypes = [tf.nest.flatten(state)[0].dtype] * len(sizes)
    emit_ta = tf.nest.pack_sequence_as(
        emit_structure,
        [
            tf.TensorArray(d, size=0, dynamic_size=True, element_shape=_emit_element_shape(s, static_batch))
            for s, d in zip(sizes, dtypes)
        ],
    )
    zero_emit = tf.nest.pack_sequence_as(emit_structure, [_emit_zeros(s, d, batch_size) for s, d in zip(sizes, dtypes)])
    return emit_ta, zero_emit


def _emit_element_shape(size: Any, static_batch: Optional[int]) -> tf.TensorShape:
    """The `(batch, ...)` shape of one emitted entry; unknown when the per-row size is a dynamic shape tensor."""
    per_row = size if isinstance(size, tf.TensorShape) else (tf.TensorShape([size]) if isinstance(size, int) else None)
    return tf.TensorShape([static_batch]).concatenate(per_row) if per_row is not None else tf.TensorShape(None)


def _emit_zeros(size: Any, dtype: Any, batch_size: Any) -> tf.Tensor:
    """Zeros `(batch, ...)` for a per-row size given as an int, a `TensorShape` or a dynamic shape tensor."""
    if isinstance(size, (int, tf.TensorShape)):
        return _zeros(batch_size, size, dtype)
    return tf.zeros(tf.concat([[batch_size], size], 0), dtype)


def _raw_rnn_body(call: TF1Call, loop_fn: RawLoopFn, zero_emit: Nested) -> Callable[..., Tuple[Any, ...]]:
    """The while loop's body: one cell call, then `loop_fn`; finished rows emit zeros and keep their state."""

    def body(
        time: tf.Tensor, finished: tf.Tensor, current_input: Nested, emit_ta: Nested, state: State, loop_state: Nested
    ) -> Tuple[Any, ...]:
        output, cell_state = call(current_input, state)
        next_time = time + 1
        next_finished, next_input, next_state, emit, next_loop_state = loop_fn(
            next_time, output, cell_state, loop_state
        )
        loop_state = loop_state if next_loop_state is None else next_loop_state
        emit = tf.nest.map_structure(lambda zero, e: _copy_rows(finished, zero, e), zero_emit, emit)
        next_state = tf.nest.map_structure(
            lambda old, new: _copy_rows(finished, old, new), state, _pack_like(state, next_state)
        )
        emit_ta = tf.nest.map_structure(lambda ta, e: ta.write(time, e), emit_ta, emit)
        return next_time, tf.logical_or(finished, next_finished), next_input, emit_ta, next_state, loop_state

    return body
