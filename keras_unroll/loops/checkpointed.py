"""Memory strategies for long sequences: a `swap_memory` that works in TF2, and recomputation.

Plain autodiff through a `tf.while_loop` (TF2's `while_v2`) keeps every intermediate of every step on the
device for the backward pass (several `(batch, units)` tensors per step), and ignores `swap_memory`. The
strategy here replaces that with one custom gradient over the whole recurrence:

    forward:   run the loop; every k-th carry (state, and last valid output with masks) is a *checkpoint*,
               stored in host memory (`/CPU:0`) with `swap_memory=True`, else on the device
    backward:  for each segment of k steps, last segment first:
                   bring its checkpoint back, re-run the k steps under a `GradientTape`, and
                   back-propagate the carry's gradient through them (plain autodiff, k steps deep)

`recompute=None` with `swap_memory=True` is k = 1 (every step's input carry is saved and the step is
re-run once in the backward pass); `recompute="sqrt"` is k = ceil(sqrt(T)), `recompute=k` any k. What the
backward pass needs then grows like `(T/k)` checkpoints plus one segment's intermediates, `O((T/k + k)·B·H)`,
instead of `O(T·B·H)`; the price is one more forward pass. Dropout masks, `valid` steps (masks and
`sequence_length`) and the early stop at `max(sequence_length)` are the same tensors in both passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, Union

import tensorflow as tf

from keras_unroll import step as step_lib

Recompute = Union[None, str, int]
_MAX_INT32 = 2**31 - 1

#: Name prefix of the ops that store and load checkpoints; tests find them in the graph by it.
SAVE_OP_NAME = "keras_unroll_checkpoint_save"
LOAD_OP_NAME = "keras_unroll_checkpoint_load"


def check_recompute(recompute: Any) -> Recompute:
    """Checks the `recompute` argument: `None`, `"sqrt"` or a positive int (the segment length k)."""
    if recompute is None:
        return None
    if isinstance(recompute, str):
        if recompute != "sqrt":
            raise ValueError(
                '`recompute` must be None, "sqrt" or a positive int (steps per recomputed segment). '
                f"Received: recompute={recompute!r}"
            )
        return recompute
    if isinstance(recompute, bool) or not isinstance(recompute, numbers.Integral):
        raise TypeError(
            '`recompute` must be None, "sqrt" or a positive int (steps per recomputed segment). '
            f"Received: recompute={recompute!r} of type {type(recompute).__name__}"
        )
    if not 1 <= int(recompute) <= _MAX_INT32:
        raise ValueError(
            '`recompute` must be None, "sqrt" or a positive int (steps per recomputed segment) at most '
            f"{_MAX_INT32}, what a loop can index. Received: recompute={recompute!r}"
        )
    return int(recompute)


def check_swap_memory(swap_memory: Any) -> bool:
    """Checks the `swap_memory` argument: a bool."""
    if not isinstance(swap_memory, bool):
        raise TypeError(f"`swap_memory` must be a bool (True or False). Received: swap_memory={swap_memory!r}")
    return swap_memory


def segment_length(recompute: Recompute, num_steps: Union[int, tf.Tensor]) -> Union[int, tf.Tensor]:
    """Steps per segment k: 1 without recomputation, ceil(sqrt(T)) for "sqrt", else the given k."""
    if recompute is None:
        return 1
    if recompute == "sqrt":
        if isinstance(num_steps, int):
            return max(1, math.ceil(math.sqrt(num_steps)))
        root = tf.math.ceil(tf.sqrt(tf.cast(num_steps, tf.float32)))
        return tf.maximum(tf.cast(root, tf.int32), 1)
    return recompute


# ------------------------------------------------------------------------------------ the loop
SegmentKernel = Callable[[step_lib.Prepared, bool], Tuple[Optional[tf.Tensor], tf.Tensor, Any]]


class Segments(NamedTuple):
    """How the checkpointed loop runs (the planner's choices).

    Attributes:
        swap_memory: Checkpoints stored in host memory (`/CPU:0`).
        recompute: Steps per recomputed segment: None (1), `"sqrt"` or an int (`segment_length`).
        ahead: `parallel_iterations` of the generic step loop inside a segment.
        kernel: A fused kernel over a `Prepared` segment (`kernel(segment, collect)`), else None: the step.
        segment_ahead: `(forward, backward)` `parallel_iterations` of the loops over segments.
    """

    swap_memory: bool = False
    recompute: Recompute = None
    ahead: int = 10
    kernel: Optional[SegmentKernel] = None
    segment_ahead: Tuple[int, int] = (2, 1)


class _Loop:
    """One checkpointed recurrence: the sequence, its segments, and where checkpoints are stored."""

    def __init__(self, step: step_lib.StepFn, prepared: step_lib.Prepared, units: int, options: Segments) -> None:
        self.step, self.prepared, self.units, self.options = step, prepared, units, options
        self.dtype = prepared.inputs.dtype
        self.num_steps = tf.shape(prepared.inputs)[0]
        self.stop = self.num_steps if prepared.max_length is None else tf.minimum(self.num_steps, prepared.max_length)
        k = segment_length(options.recompute, self.num_steps)
        if not isinstance(k, int) or k > 1:
            k = tf.minimum(k, tf.maximum(self.num_steps, 1))  # a segment longer than the sequence is the sequence
        self.single_step = isinstance(k, int) and k == 1
        self.k = k if self.single_step else tf.cast(k, tf.int32)
        self.num_segments = (self.stop + self.k - 1) // self.k
        self.keep_last = prepared.valid is not None  # without a mask, a step never reads the previous output
        self.structure = prepared.initial_state
        self.flat_initial = [tf.convert_to_tensor(s) for s in tf.nest.flatten(self.structure)]
        self.last_initial = step_lib.initial_last_output(units, prepared)
        self.carry_like = self.flat_initial + ([self.last_initial] if self.keep_last else [])

    # ------------------------------------------------------------------ one segment
    def run_segment(self, x_seg, valid_seg, flat_state, last, collect):
        """Runs a segment's steps from a carry. Returns `(outputs (k, B, H) or None, last, flat_state)`."""
        state = tf.nest.pack_sequence_as(self.structure, flat_state)
        if self.single_step:
            emitted, state, last = self.step(x_seg[0], None if valid_seg is None else valid_seg[0], state, last)
            return (emitted[None] if collect else None), last, tf.nest.flatten(state)
        if self.options.kernel is not None:
            return self.fused_segment(self.options.kernel, x_seg, valid_seg, state, last, collect)
        length = tf.shape(x_seg)[0]
        x_ta = tf.TensorArray(self.dtype, size=length, element_shape=x_seg.shape[1:]).unstack(x_seg)
        valid_ta = None
        if valid_seg is not None:
            valid_ta = tf.TensorArray(tf.bool, size=length, element_shape=valid_seg.shape[1:]).unstack(valid_seg)
        out_ta = tf.TensorArray(self.dtype, size=length if collect else 0, element_shape=[x_seg.shape[1], self.units])

        def body(i, out_ta, state, last):
            emitted, state, last = self.step(x_ta.read(i), None if valid_ta is None else valid_ta.read(i), state, last)
            return i + 1, (out_ta.write(i, emitted) if collect else out_ta), state, last

        _, out_ta, state, last = tf.while_loop(
            lambda i, *_: i < length, body, (tf.constant(0, tf.int32), out_ta, state, last),
            maximum_iterations=length, parallel_iterations=self.options.ahead,
        )  # fmt: skip
        return (out_ta.stack() if collect else None), last, tf.nest.flatten(state)

    def fused_segment(self, kernel: SegmentKernel, x_seg, valid_seg, state, last, collect):
        """The segment on the fused `kernel`, with the last valid output carried in."""
        segment = dataclasses.replace(
            self.prepared, inputs=x_seg, valid=valid_seg, initial_state=state, num_steps=None, max_length=None
        )
        outs, seg_last, seg_state = kernel(segment, collect)
        if valid_seg is not None:
            # The kernel starts each segment with a zero "last valid output": carry the real one in.
            seg_last = tf.where(tf.reduce_any(valid_seg, axis=0)[:, None], seg_last, last)
            if collect and not self.prepared.zero_output:
                seen = tf.cumsum(tf.cast(valid_seg, tf.int32), axis=0) > 0
                outs = tf.where(seen[:, :, None], outs, last[None])
        return outs, seg_last, tf.nest.flatten(seg_state)

    def bounds(self, segment):
        start = segment * self.k
        return start, tf.minimum(start + self.k, self.stop)

    def valid_of(self, start, end):
        return None if self.prepared.valid is None else self.prepared.valid[start:end]

    # ------------------------------------------------------------------ checkpoints
    def on_store(self):
        return tf.device("/CPU:0") if self.options.swap_memory else contextlib.nullcontext()

    def store(self, ta, index, value):
        with self.on_store():
            return ta.write(index, tf.identity(value, name=SAVE_OP_NAME))

    def load_last(self, checkpoint_list, like):
        """Pops the last checkpoint of a list (the backward pass takes them last first): each one is freed
        once its segment has run, instead of all of them living to the end of the backward pass."""
        with self.on_store():
            checkpoint_list, value = tf.raw_ops.TensorListPopBack(
                input_handle=checkpoint_list, element_shape=tf.constant(-1, tf.int32), element_dtype=self.dtype
            )
            value = tf.identity(value, name=LOAD_OP_NAME)
        value.set_shape(like.shape)
        return checkpoint_list, tf.identity(value)  # the copy back to the compute device, one at a time

    def new_checkpoints(self):
        with self.on_store():
            return [tf.TensorArray(self.dtype, size=self.num_segments, element_shape=c.shape) for c in self.carry_like]

    def zero_fill(self, ta, feature_size):
        """Writes zeros for the steps the loop skipped (`stop <= t < T`), so the array stacks."""
        if self.prepared.max_length is None:  # the loop runs to T: nothing to fill (and XLA needs no scatter)
            return ta
        zeros = tf.zeros(tf.stack([self.num_steps - self.stop, self.prepared.batch_size, feature_size]), self.dtype)
        return ta.scatter(tf.range(self.stop, self.num_steps), zeros)

    # ------------------------------------------------------------------ the passes
    def forward(self, x, flat_state, collect):
        """The loop over segments, storing each segment's entering carry. Returns `(results, checkpoints)`,
        `results` = `[outputs (with collect), last, *flat_state]`."""
        out_ta = tf.TensorArray(
            self.dtype, size=self.num_steps if collect else 0, element_shape=[x.shape[1], self.units]
        )

        def body(segment, out_ta, checkpoints, flat_state, last):
            start, end = self.bounds(segment)
            carry = list(flat_state) + ([last] if self.keep_last else [])
            checkpoints = [self.store(ta, segment, c) for ta, c in zip(checkpoints, carry)]
            outs, last, flat_state = self.run_segment(
                x[start:end], self.valid_of(start, end), flat_state, last, collect
            )
            if collect:
                out_ta = out_ta.scatter(tf.range(start, end), outs)
            return segment + 1, out_ta, checkpoints, flat_state, last

        _, out_ta, checkpoints, final_flat, last = tf.while_loop(
            lambda segment, *_: segment < self.num_segments, body,
            (tf.constant(0, tf.int32), out_ta, self.new_checkpoints(), list(flat_state), self.last_initial),
            maximum_iterations=self.num_segments, parallel_iterations=self.options.segment_ahead[0],
        )  # fmt: skip
        results = [last] + list(final_flat)
        if collect:
            outputs = self.zero_fill(out_ta, self.units).stack()
            outputs.set_shape(x.shape[:2].concatenate([self.units]))
            results = [outputs] + results
        return results, checkpoints

    def backward_segment(self, x, segment, carry_in, variables, d_outputs):
        """Recomputes one segment from its checkpoint and back-propagates through it: returns
        `(dx_seg, d_last, d_flat, d_variables)` for the segment's carry gradients `carry_in`."""
        d_flat, d_last, seg_flat, seg_last = carry_in
        start, end = self.bounds(segment)
        x_seg = x[start:end]
        with tf.GradientTape() as tape:
            tape.watch([x_seg, seg_last, *seg_flat])
            outs, new_last, new_flat = self.run_segment(
                x_seg, self.valid_of(start, end), seg_flat, seg_last, d_outputs is not None
            )
        targets, target_grads = [new_last, *new_flat], [d_last, *d_flat]
        if d_outputs is not None:
            targets.append(outs)
            target_grads.append(d_outputs[start:end])
        grads = tape.gradient(
            targets, [x_seg, seg_last, *seg_flat, *variables], output_gradients=target_grads,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )  # fmt: skip
        n = len(seg_flat)
        return grads[0], grads[1], list(grads[2 : 2 + n]), [tf.convert_to_tensor(g) for g in grads[2 + n :]]

    def backward(self, x, checkpoints, result_grads: List[Any], variables: List[Any], collect: bool):
        """The backward loop over segments, last first. Returns `(dx, d_flat_initial, d_variables)`."""
        d_outputs = result_grads.pop(0) if collect else None
        dx_ta = self.zero_fill(
            tf.TensorArray(self.dtype, size=self.num_steps, element_shape=x.shape[1:]), int(x.shape[2])
        )

        def body(segment, dx_ta, d_flat, d_last, var_grads, lists):
            popped = [self.load_last(lst, like) for lst, like in zip(lists, self.carry_like)]
            lists, carry = [p[0] for p in popped], [p[1] for p in popped]
            n = len(self.flat_initial)
            seg_last = carry[-1] if self.keep_last else self.last_initial
            dx_seg, d_last, d_flat, dvars = self.backward_segment(
                x, segment, (d_flat, d_last, carry[:n], seg_last), variables, d_outputs
            )
            start, end = self.bounds(segment)
            var_grads = [a + g for a, g in zip(var_grads, dvars)]
            return segment - 1, dx_ta.scatter(tf.range(start, end), dx_seg), d_flat, d_last, var_grads, lists

        initial: Tuple[Any, ...] = (self.num_segments - 1, dx_ta, list(result_grads[1:]), result_grads[0])
        initial += ([tf.zeros_like(v) for v in variables], [ta.flow for ta in checkpoints])  # TensorLists
        _, dx_ta, d_flat, _, var_grads, _ = tf.while_loop(
            lambda segment, *_: segment >= 0, body, initial,
            maximum_iterations=self.num_segments, parallel_iterations=self.options.segment_ahead[1],
        )  # fmt: skip
        dx = dx_ta.stack()
        dx.set_shape(x.shape)
        return dx, d_flat, var_grads


def checkpointed_loop(
    step: step_lib.StepFn,
    prepared: step_lib.Prepared,
    units: int,
    masks: step_lib.DropoutMasks,
    options: Optional[Segments] = None,
    return_all_outputs: bool = True,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, Any]:
    """`while_loop` with a custom gradient that stores checkpoints (on the host with `swap_memory`).

    Same contract as `while_loop`: returns `(outputs (T, B, H) or None, last_output, final_state)`, the
    same numbers, and the same gradients (to float rounding) for the inputs, the initial state and the
    cell's variables. Segments of more than one step run `options.kernel(segment, collect)` when given (a
    fused kernel over a `Prepared` segment), else `step` in a while loop. `masks` are the sequence's dropout
    masks: the step runs inside `masks.applied()` in both passes. Must run in a graph, outside XLA (the
    planner refuses it there).
    """
    loop = _Loop(step, prepared, units, options or Segments())
    # The forward pass, with the checkpoints. Masks are created once here and reused by the backward pass.
    with masks.applied():

        @tf.custom_gradient
        def recurrence(x, *flat_state):
            results, checkpoints = loop.forward(x, flat_state, return_all_outputs)

            def grad(*result_grads, variables=None):
                variables = list(variables or [])
                grads = [
                    tf.zeros_like(r) if g is None else tf.convert_to_tensor(g) for g, r in zip(result_grads, results)
                ]
                with masks.applied():
                    dx, d_flat, var_grads = loop.backward(x, checkpoints, grads, variables, return_all_outputs)
                return [dx, *d_flat], var_grads

            return results, grad

        results = list(recurrence(prepared.inputs, *loop.flat_initial))
    outputs = results.pop(0) if return_all_outputs else None
    last, final_flat = results[0], results[1:]
    return outputs, last, tf.nest.pack_sequence_as(loop.structure, final_flat)
