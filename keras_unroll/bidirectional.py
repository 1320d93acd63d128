"""TF1's `bidirectional_dynamic_rnn` and `static_bidirectional_rnn`, built on `dynamic_rnn` / `static_rnn`.

A bidirectional unroll runs one cell forward and another over each row reversed *within its own length*
(TF1's `tf.reverse_sequence`), then reverses the backward outputs back, so that step `t` of both output
sequences describes the same input step. Padding past a row's length stays where it is and its outputs are
zero, exactly as TF1 returns them. States come back in TF1's structure, as from `ku.dynamic_rnn`.

For Keras layers use `keras.layers.Bidirectional(ku.DynamicUnroll(cell, return_sequences=True))`, which
reverses with a mask the same way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from keras_unroll.cell import not_converted
from keras_unroll.functional import dynamic_rnn, static_rnn
from keras_unroll.raw import is_tf1_style_cell
from keras_unroll.types import AnyCell, DTypeLike, Nested, State, TensorLike


def _reverse(inputs: tf.Tensor, lengths: Optional[tf.Tensor], time_axis: int) -> tf.Tensor:
    """Reverses each row within its length (TF1's `reverse_sequence`), or whole rows without lengths."""
    if lengths is None:
        return tf.reverse(inputs, [time_axis])
    return tf.reverse_sequence(inputs, lengths, seq_axis=time_axis, batch_axis=1 - time_axis)


def _lengths(sequence_length: Any) -> Optional[tf.Tensor]:
    if sequence_length is None:
        return None
    lengths = tf.convert_to_tensor(sequence_length)
    if lengths.dtype.is_floating:  # dynamic_rnn accepts whole-number floats; reverse_sequence needs ints
        lengths = tf.cast(lengths, tf.int32)
    if not lengths.dtype.is_integer:
        raise TypeError(f"`sequence_length` must hold integers. Received: sequence_length.dtype={lengths.dtype.name}")
    return tf.cast(lengths, tf.int64)


@not_converted
def bidirectional_dynamic_rnn(
    cell_fw: AnyCell,
    cell_bw: AnyCell,
    inputs: TensorLike,
    sequence_length: Optional[TensorLike] = None,
    initial_state_fw: Optional[State] = None,
    initial_state_bw: Optional[State] = None,
    dtype: Optional[DTypeLike] = None,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: Optional[str] = None,
    *,
    training: Optional[bool] = None,
) -> Tuple[Tuple[Nested, Nested], Tuple[State, State]]:
    """TF1's `tf.nn.bidirectional_dynamic_rnn`: a forward and a backward `dynamic_rnn` over one input.

    The forward cell reads `inputs` as they are; the backward cell reads each row reversed within its
    length (`tf.reverse_sequence`; the whole row without `sequence_length`), and its outputs are reversed
    back, so `out_bw[:, t]` is the backward cell's output at input step `t`. Outputs past a row's length
    are zeros; each final state is the state at the row's last valid step (for the backward cell: after
    reading the row's first step), in TF1's structure.

    Args:
        cell_fw: The forward cell (a Keras RNN cell, a list of cells, or an int), as for `dynamic_rnn`.
        cell_bw: The backward cell. Give a different object than `cell_fw` unless the two directions
            should share their weights.
        inputs: A 3D tensor `(batch, time, features)`, or `(time, batch, features)` with `time_major`.
        sequence_length: Optional int tensor `(batch,)` with values in `[0, T]`.
        initial_state_fw: The forward cell's initial state, in TF1's structure (see `dynamic_rnn`).
        initial_state_bw: The backward cell's initial state.
        dtype: Accepted for TF1 compatibility.
        parallel_iterations: Passed to both `dynamic_rnn` calls.
        swap_memory: Passed to both `dynamic_rnn` calls.
        time_major: `True` if `inputs` (and the outputs) are `(time, batch, ...)`.
        scope: Accepted for TF1 compatibility; Keras names the weights after the cells.
        training: Passed to the cells (dropout). Default: `None` (inference).

    Returns:
        `((out_fw, out_bw), (state_fw, state_bw))`: each output `(batch, time, units)` (time-major with
        `time_major`); concatenate them with `tf.concat((out_fw, out_bw), axis=2)` as TF1 code does.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> x = np.ones((4, 6, 3), "float32")
    >>> (out_fw, out_bw), (state_fw, state_bw) = ku.bidirectional_dynamic_rnn(
    ...     ku.tf1.GRUCell(5), ku.tf1.BasicLSTMCell(7), x, sequence_length=[6, 2, 0, 4])
    >>> tuple(out_fw.shape), tuple(out_bw.shape), tuple(state_bw.h.shape)
    ((4, 6, 5), (4, 6, 7), (4, 7))
    """
    del dtype, scope  # TF1 compatibility only
    options: Dict[str, Any] = dict(
        sequence_length=sequence_length,
        parallel_iterations=parallel_iterations,
        swap_memory=swap_memory,
        time_major=time_major,
        training=training,
    )
    out_fw, state_fw = dynamic_rnn(cell_fw, inputs, initial_state=initial_state_fw, **options)
    # dynamic_rnn has checked `inputs` and `sequence_length`; convert them the same way for the reversal.
    # Every tensor of a nested input (a tuple of tensors, as TF1 took) is reversed alike.
    inputs = (
        tf.convert_to_tensor(inputs)
        if isinstance(inputs, list)
        else tf.nest.map_structure(tf.convert_to_tensor, inputs)
    )
    lengths = _lengths(sequence_length)
    time_axis = 0 if time_major else 1

    def reverse(structure: Nested) -> Nested:
        return tf.nest.map_structure(lambda x: _reverse(x, lengths, time_axis), structure)

    out_bw, state_bw = dynamic_rnn(cell_bw, reverse(inputs), initial_state=initial_state_bw, **options)
    return (out_fw, reverse(out_bw)), (state_fw, state_bw)


@not_converted
def static_bidirectional_rnn(
    cell_fw: AnyCell,
    cell_bw: AnyCell,
    inputs: Union[Sequence[TensorLike], TensorLike],
    initial_state_fw: Optional[State] = None,
    initial_state_bw: Optional[State] = None,
    dtype: Optional[DTypeLike] = None,
    sequence_length: Optional[TensorLike] = None,
    scope: Optional[str] = None,
    *,
    training: Optional[bool] = None,
) -> Tuple[Union[List[tf.Tensor], tf.Tensor], State, State]:
    """TF1's `tf.nn.static_bidirectional_rnn`: a forward and a backward `static_rnn`, outputs concatenated.

    The backward cell reads each row reversed within its length, as in `bidirectional_dynamic_rnn`; step
    `t` of the result is `concat([out_fw[t], out_bw[t]], axis=1)`.

    Args:
        cell_fw: The forward cell (a Keras RNN cell, a list of cells, or an int).
        cell_bw: The backward cell.
        inputs: A Python list of T tensors `(batch, features)` (TF1's form), or one 3D tensor
            `(batch, time, features)`.
        initial_state_fw: The forward cell's initial state, in TF1's structure.
        initial_state_bw: The backward cell's initial state.
        dtype: Accepted for TF1 compatibility.
        sequence_length: Optional int tensor `(batch,)` with values in `[0, T]`.
        scope: Accepted for TF1 compatibility.
        training: Passed to the cells (dropout). Default: `None` (inference).

    Returns:
        `(outputs, state_fw, state_bw)`: `outputs` a list of T `(batch, units_fw + units_bw)` tensors for a
        list input, one `(batch, time, units_fw + units_bw)` tensor for a tensor input.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> steps = [np.ones((4, 3), "float32") for _ in range(5)]
    >>> outputs, state_fw, state_bw = ku.static_bidirectional_rnn(ku.tf1.GRUCell(2), ku.tf1.GRUCell(3), steps)
    >>> len(outputs), tuple(outputs[0].shape)
    (5, (4, 5))
    """
    del dtype, scope  # TF1 compatibility only
    list_input = isinstance(inputs, (list, tuple))
    options: Dict[str, Any] = dict(sequence_length=sequence_length, training=training)
    if isinstance(inputs, (list, tuple)) and (
        _nested_steps(inputs) or is_tf1_style_cell(cell_fw) or is_tf1_style_cell(cell_bw)
    ):
        return _static_bidirectional_steps(cell_fw, cell_bw, inputs, initial_state_fw, initial_state_bw, options)
    fw_outputs, state_fw = static_rnn(cell_fw, inputs, initial_state=initial_state_fw, **options)
    out_fw: tf.Tensor = tf.stack(fw_outputs, axis=1) if list_input else fw_outputs
    # static_rnn has checked the inputs; stack them batch-major for the reversal.
    stacked = (
        tf.stack([tf.convert_to_tensor(x, out_fw.dtype) for x in inputs], axis=1)
        if isinstance(inputs, (list, tuple))
        else inputs
    )
    stacked = tf.convert_to_tensor(stacked)
    lengths = _lengths(sequence_length)
    out_bw, state_bw = static_rnn(cell_bw, _reverse(stacked, lengths, 1), initial_state=initial_state_bw, **options)
    outputs = tf.concat([out_fw, _reverse(out_bw, lengths, 1)], axis=2)
    if list_input:
        return tf.unstack(outputs, axis=1), state_fw, state_bw
    return outputs, state_fw, state_bw


def _nested_steps(steps: Sequence[Any]) -> bool:
    """Steps TF1 took and the stacked path does not: tuples of tensors, or more than one feature axis."""
    return any(isinstance(x, (tuple, dict)) or len(getattr(x, "shape", (0, 0))) > 2 for x in steps)


def _reverse_steps(steps: Sequence[Any], lengths: Optional[tf.Tensor]) -> List[Any]:
    """A list of (nested) steps, each row reversed within its length (TF1's `_reverse_seq`)."""
    flat = [tf.nest.flatten(step) for step in steps]
    columns = [_reverse(tf.stack([tf.convert_to_tensor(f[i]) for f in flat]), lengths, 0) for i in range(len(flat[0]))]
    return [tf.nest.pack_sequence_as(steps[t], [c[t] for c in columns]) for t in range(len(steps))]


def _static_bidirectional_steps(
    cell_fw: AnyCell,
    cell_bw: AnyCell,
    steps: Sequence[Any],
    state_fw: Optional[State],
    state_bw: Optional[State],
    options: Dict[str, Any],
) -> Tuple[List[Any], State, State]:
    """`static_bidirectional_rnn` over nested or many-axis steps: each output concatenated on axis 1, as TF1."""
    lengths = _lengths(options["sequence_length"])
    out_fw, state_fw = static_rnn(cell_fw, list(steps), initial_state=state_fw, **options)
    out_bw, state_bw = static_rnn(cell_bw, _reverse_steps(steps, lengths), initial_state=state_bw, **options)
    out_bw = _reverse_steps(out_bw, lengths)
    outputs = [
        tf.nest.pack_sequence_as(fw, [tf.concat([f, b], 1) for f, b in zip(tf.nest.flatten(fw), tf.nest.flatten(bw))])
        for fw, bw in zip(out_fw, out_bw)
    ]
    return outputs, state_fw, state_bw
