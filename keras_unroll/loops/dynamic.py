"""Dynamic unrolling: one `tf.while_loop` over the time steps, TF1's `dynamic_rnn`.

The graph holds the step once, whatever T is, and T may be unknown until run time. The loop is always
given `maximum_iterations`, so it compiles under XLA. With `sequence_length` (and no `go_backwards`) the loop
stops at `max(sequence_length)` and the remaining outputs are zeros, as in TF1. This module only iterates;
`keras_unroll.plan` decides what runs in it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.kernels.chunks import zero_fill


def step_reader(sequence: tf.Tensor) -> Tuple[tf.Tensor, Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]]:
    """Reads step t of a differentiable `(T, ...)` sequence inside a while loop, in O(1) for the gradient.

    Returns `(handle, read)`: `handle` is a TensorList of the steps, carried as a loop variable, and
    `read(handle, t) -> (step t, handle)`. Reading a differentiable TensorArray (or slicing a captured
    tensor) costs O(T) per step in TF2's gradient of a while loop: each step's gradient is a full-length
    list that is added to the others, so training is quadratic in T (1.5 s at T = 5000, 24.7 s at 20 000
    for an LSTM). Here the gradient of a read writes into the gradient of the carried handle, one item per
    step, so the backward pass is linear in T with the same numbers.
    """
    shape, dtype = sequence.shape[1:], sequence.dtype
    element_shape = tf.constant([-1 if d is None else d for d in shape.as_list()], tf.int32)
    handle = tf.raw_ops.TensorListFromTensor(tensor=sequence, element_shape=element_shape)

    @tf.custom_gradient
    def read(handle: tf.Tensor, t: tf.Tensor) -> Any:
        item = tf.raw_ops.TensorListGetItem(
            input_handle=handle, index=t, element_shape=element_shape, element_dtype=dtype
        )
        item.set_shape(shape)

        def grad(d_item, d_handle):
            return tf.raw_ops.TensorListSetItem(input_handle=d_handle, index=t, item=d_item), None

        return (item, tf.identity(handle)), grad

    return handle, read


class _Gathered:
    """Step t of a tensor, read with `tf.gather` (a `TensorArray.read` stand-in for serving graphs)."""

    def __init__(self, sequence: tf.Tensor) -> None:
        self.sequence = sequence

    def read(self, t: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.sequence, t)


def _write_step(outputs: tf.Tensor, t: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """`outputs` (T, B, H) with step t set to `value`: a serving graph's stand-in for `TensorArray.write`
    (TFLite lowers TensorLists only with fully static element shapes, and a served batch is open)."""
    return tf.tensor_scatter_nd_update(outputs, tf.reshape(t, [1, 1]), tf.expand_dims(value, 0))


def while_loop(
    step: step_lib.StepFn,
    prepared: step_lib.Prepared,
    units: int,
    return_all_outputs: bool = True,
    ahead: int = 10,
    *,
    serving: bool = False,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, step_lib.Nested]:
    """Runs `step` in a `tf.while_loop`. Returns `(outputs (T, B, H) or None, last_output, final_state)`.

    `ahead`: the loop's `parallel_iterations` (the caller's, else the planner's default).

    `serving=True` builds an inference graph for deployment (`model.export`, TFLite, ONNX): steps are read
    with `tf.gather` (no custom gradient, whose `IdentityN` converters reject; the reads' O(T) gradient does
    not matter where nothing is differentiated) and outputs written into a `(T, B, H)` tensor (no TensorList,
    which TFLite's builtin ops cannot hold for an open batch).
    """
    inputs = prepared.inputs
    dtype = inputs.dtype
    num_steps = tf.shape(inputs)[0]
    stop = num_steps if prepared.max_length is None else tf.minimum(num_steps, prepared.max_length)
    if serving:
        # An empty batch (its size unknown when traced) runs no step: the written outputs would have no
        # element to update, and the result is the empty one anyway.
        stop = stop * tf.minimum(tf.cast(prepared.batch_size, stop.dtype), 1)
        handle, read = tf.zeros([]), lambda handle, t: (tf.gather(inputs, t), handle)
    else:
        handle, read = step_reader(inputs)
    valid_ta = None
    if prepared.valid is not None and serving:
        valid_ta = _Gathered(prepared.valid)
    elif prepared.valid is not None:
        valid_ta = tf.TensorArray(tf.bool, size=num_steps, element_shape=prepared.valid.shape[1:]).unstack(
            prepared.valid
        )
    out_shape = tf.TensorShape([inputs.shape[1], units])
    # Without outputs a scalar stands in for the TensorArray: XLA cannot differentiate an empty, unwritten one.
    if not return_all_outputs:
        outputs_ta = tf.zeros([])
    elif serving:  # zeros: the steps past `stop` emit zeros, as in TF1
        outputs_ta = tf.zeros(tf.stack([num_steps, prepared.batch_size, units]), dtype)
    else:
        outputs_ta = tf.TensorArray(dtype, size=num_steps, element_shape=out_shape)
    last = step_lib.initial_last_output(units, prepared)

    def body(t, handle, outputs_ta, state, last):
        valid_t = None if valid_ta is None else valid_ta.read(t)
        x_t, handle = read(handle, t)
        emitted, state, last = step(x_t, valid_t, state, last)
        if return_all_outputs:
            outputs_ta = _write_step(outputs_ta, t, emitted) if serving else outputs_ta.write(t, emitted)
        return t + 1, handle, outputs_ta, state, last

    t, _, outputs_ta, state, last = tf.while_loop(
        lambda t, *_: t < stop,
        body,
        (tf.constant(0, tf.int32), handle, outputs_ta, prepared.initial_state, last),
        # No bound in a serving graph (nothing compiles it): tf2onnx gave the bound and the condition's
        # `stop`, one tensor, two types (int64 and int32) in ONNX's Loop.
        maximum_iterations=None if serving else num_steps,
        parallel_iterations=ahead,
    )
    if not return_all_outputs:
        return None, last, state
    if serving:
        outputs_ta.set_shape(inputs.shape[:2].concatenate([units]))
        return outputs_ta, last, state
    if prepared.max_length is not None:  # rows all ended before T: the skipped steps emit zeros, as in TF1
        outputs_ta = zero_fill(outputs_ta, t, num_steps, tf.zeros(tf.stack([prepared.batch_size, units]), dtype))
    outputs = outputs_ta.stack()
    outputs.set_shape(inputs.shape[:2].concatenate([units]))
    return outputs, last, state
