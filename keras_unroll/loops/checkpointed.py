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
from typing import Any, Callable, Optional, Tuple, Union

import tensorflow as tf
from tensorflow.python.ops import list_ops  # TensorListPopBack: a TensorArray can read, not pop

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
    if not 1 <= recompute <= _MAX_INT32:
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


def checkpointed_loop(
    step: step_lib.StepFn,
    prepared: step_lib.Prepared,
    units: int,
    masks: step_lib.DropoutMasks,
    *,
    segment_kernel: Optional[SegmentKernel] = None,
    return_all_outputs: bool = True,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    recompute: Recompute = None,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, Any]:
    """`while_loop` with a custom gradient that stores checkpoints (on the host with `swap_memory`).

    Same contract as `while_loop`: returns `(outputs (T, B, H) or None, last_output, final_state)`, the
    same numbers, and the same gradients (to float rounding) for the inputs, the initial state and the
    cell's variables. Segments of more than one step run `segment_kernel(segment, collect)` when given (a
    fused kernel over a `Prepared` segment), else `step` in a while loop. `masks` are the sequence's dropout
    masks: the step runs inside `masks.applied()` in both passes. Must run in a graph.
    """
    if step_lib.in_xla_context():
        raise ValueError(
            "`swap_memory` and `recompute` cannot run inside an XLA-compiled function (such as "
            "`model.compile(jit_compile=True)`): their segments have run-time lengths and XLA ignores host "
            "placement. Compile without XLA (`jit_compile=False`) or drop these arguments. "
            f"Received: swap_memory={swap_memory!r}, recompute={recompute!r}"
        )
    inputs = prepared.inputs
    dtype = inputs.dtype
    valid = prepared.valid
    num_steps = tf.shape(inputs)[0]
    stop = num_steps if prepared.max_length is None else tf.minimum(num_steps, prepared.max_length)
    k = segment_length(recompute, num_steps)
    if not isinstance(k, int) or k > 1:
        k = tf.minimum(k, tf.maximum(num_steps, 1))  # a segment longer than the sequence is the sequence
    single_step_segments = isinstance(k, int) and k == 1
    if not single_step_segments:
        k = tf.cast(k, tf.int32)
    num_segments = (stop + k - 1) // k
    store_device = "/CPU:0" if swap_memory else None
    keep_last = valid is not None  # without a mask, a step never reads the previous output
    iterations = parallel_iterations or 10
    structure = prepared.initial_state
    flat_initial = [tf.convert_to_tensor(s) for s in tf.nest.flatten(structure)]
    last_initial = step_lib.initial_last_output(units, prepared)
    batch_size = prepared.batch_size

    def run_segment(x_seg, valid_seg, length, flat_state, last, collect):
        """Runs `length` steps from a carry. Returns `(outputs (length, B, H) or None, last, flat_state)`."""
        state = tf.nest.pack_sequence_as(structure, flat_state)
        if single_step_segments:
            emitted, state, last = step(x_seg[0], None if valid_seg is None else valid_seg[0], state, last)
            return (emitted[None] if collect else None), last, tf.nest.flatten(state)
        fused = run_fused_segment(x_seg, valid_seg, state, last, collect)
        if fused is not None:
            return fused
        x_ta = tf.TensorArray(dtype, size=length, element_shape=x_seg.shape[1:]).unstack(x_seg)
        valid_ta = None
        if valid_seg is not None:
            valid_ta = tf.TensorArray(tf.bool, size=length, element_shape=valid_seg.shape[1:]).unstack(valid_seg)
        out_ta = tf.TensorArray(dtype, size=length if collect else 0, element_shape=[x_seg.shape[1], units])

        def body(i, out_ta, state, last):
            emitted, state, last = step(x_ta.read(i), None if valid_ta is None else valid_ta.read(i), state, last)
            if collect:
                out_ta = out_ta.write(i, emitted)
            return i + 1, out_ta, state, last

        _, out_ta, state, last = tf.while_loop(
            lambda i, *_: i < length,
            body,
            (tf.constant(0, tf.int32), out_ta, state, last),
            maximum_iterations=length,
            parallel_iterations=iterations,
        )
        return (out_ta.stack() if collect else None), last, tf.nest.flatten(state)

    def run_fused_segment(x_seg, valid_seg, state, last, collect):
        """The segment on `segment_kernel` when there is one, else None."""
        if segment_kernel is None:
            return None
        segment = dataclasses.replace(
            prepared, inputs=x_seg, valid=valid_seg, initial_state=state, num_steps=None, max_length=None
        )
        outs, seg_last, seg_state = segment_kernel(segment, collect)
        if valid_seg is not None:
            # The kernel starts each segment with a zero "last valid output": carry the real one in.
            seg_last = tf.where(tf.reduce_any(valid_seg, axis=0)[:, None], seg_last, last)
            if collect and not prepared.zero_output:
                seen = tf.cumsum(tf.cast(valid_seg, tf.int32), axis=0) > 0
                outs = tf.where(seen[:, :, None], outs, last[None])
        return outs, seg_last, tf.nest.flatten(seg_state)

    def bounds(segment):
        start = segment * k
        end = tf.minimum(start + k, stop)
        return start, end

    def on_store():
        return tf.device(store_device) if store_device else contextlib.nullcontext()

    def store(ta, index, value):
        with on_store():
            return ta.write(index, tf.identity(value, name=SAVE_OP_NAME))

    def load_last(checkpoint_list, like):
        """Pops the last checkpoint of a list (the backward pass takes them last first): each one is freed
        once its segment has run, instead of all of them living to the end of the backward pass."""
        with on_store():
            checkpoint_list, value = list_ops.tensor_list_pop_back(checkpoint_list, element_dtype=dtype)
            value = tf.identity(value, name=LOAD_OP_NAME)
        value.set_shape(like.shape)
        return checkpoint_list, tf.identity(value)  # the copy back to the compute device, one at a time

    def new_checkpoints():
        carry = flat_initial + ([last_initial] if keep_last else [])
        with on_store():
            return [tf.TensorArray(dtype, size=num_segments, element_shape=c.shape) for c in carry]

    def scatter(ta, start, end, values):
        return ta.scatter(tf.range(start, end), values)

    def zero_fill(ta, feature_size):
        """Writes zeros for the steps the loop skipped (`stop <= t < T`), so the array stacks."""
        if prepared.max_length is None:  # the loop runs to T: nothing to fill (and XLA needs no scatter)
            return ta
        zeros = tf.zeros(tf.stack([num_steps - stop, batch_size, feature_size]), dtype)
        return scatter(ta, stop, num_steps, zeros)

    # The forward pass, with the checkpoints. Masks are created once here and reused by the backward pass.
    with masks.applied():

        @tf.custom_gradient
        def recurrence(x, *flat_state):
            out_ta = tf.TensorArray(
                dtype, size=num_steps if return_all_outputs else 0, element_shape=[x.shape[1], units]
            )

            def body(segment, out_ta, checkpoints, flat_state, last):
                start, end = bounds(segment)
                carry = list(flat_state) + ([last] if keep_last else [])
                checkpoints = [store(ta, segment, c) for ta, c in zip(checkpoints, carry)]
                valid_seg = None if valid is None else valid[start:end]
                outs, last, flat_state = run_segment(
                    x[start:end], valid_seg, end - start, flat_state, last, return_all_outputs
                )
                if return_all_outputs:
                    out_ta = scatter(out_ta, start, end, outs)
                return segment + 1, out_ta, checkpoints, flat_state, last

            _, out_ta, checkpoints, final_flat, last = tf.while_loop(
                lambda segment, *_: segment < num_segments,
                body,
                (tf.constant(0, tf.int32), out_ta, new_checkpoints(), list(flat_state), last_initial),
                maximum_iterations=num_segments,
                # One segment ahead at most: what a segment does before its first step (a fused kernel's
                # input projection) does not wait for the carry, and with 10 the loop projected 10
                # segments ahead and held them (14 of 19 MB at 32·2000·8·256, BasicRNNCell; 12 with 2).
                parallel_iterations=2,
            )
            results = [last] + list(final_flat)
            if return_all_outputs:
                outputs = zero_fill(out_ta, units).stack()
                outputs.set_shape(x.shape[:2].concatenate([units]))
                results = [outputs] + results

            def grad(*result_grads, variables=None):
                variables = list(variables or [])
                result_grads = [
                    tf.zeros_like(r) if g is None else tf.convert_to_tensor(g) for g, r in zip(result_grads, results)
                ]
                d_outputs = result_grads.pop(0) if return_all_outputs else None
                d_last, d_flat = result_grads[0], result_grads[1:]
                var_grads = [tf.zeros_like(v) for v in variables]
                dx_ta = zero_fill(tf.TensorArray(dtype, size=num_steps, element_shape=x.shape[1:]), int(x.shape[2]))

                def back_body(segment, dx_ta, d_flat, d_last, var_grads, lists):
                    start, end = bounds(segment)
                    popped = [load_last(lst, like) for lst, like in zip(lists, carry_like)]
                    lists, carry = [p[0] for p in popped], [p[1] for p in popped]
                    seg_flat, seg_last = carry[: len(flat_initial)], (carry[-1] if keep_last else last_initial)
                    x_seg = x[start:end]
                    valid_seg = None if valid is None else valid[start:end]
                    with tf.GradientTape() as tape:
                        tape.watch([x_seg, seg_last, *seg_flat])
                        outs, new_last, new_flat = run_segment(
                            x_seg, valid_seg, end - start, seg_flat, seg_last, return_all_outputs
                        )
                    targets = [new_last, *new_flat]
                    target_grads = [d_last, *d_flat]
                    if return_all_outputs:
                        targets.append(outs)
                        target_grads.append(d_outputs[start:end])
                    grads = tape.gradient(
                        targets,
                        [x_seg, seg_last, *seg_flat, *variables],
                        output_gradients=target_grads,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO,
                    )
                    n = len(seg_flat)
                    dx_seg, d_last, d_flat, dvars = grads[0], grads[1], grads[2 : 2 + n], grads[2 + n :]
                    dvars = [tf.convert_to_tensor(g) for g in dvars]
                    var_grads = [a + g for a, g in zip(var_grads, dvars)]
                    return segment - 1, scatter(dx_ta, start, end, dx_seg), list(d_flat), d_last, var_grads, lists

                carry_like = flat_initial + ([last_initial] if keep_last else [])
                lists = [ta.flow for ta in checkpoints]  # the TensorLists behind the TensorArrays
                with masks.applied():
                    _, dx_ta, d_flat, _, var_grads, _ = tf.while_loop(
                        lambda segment, *_: segment >= 0,
                        back_body,
                        (num_segments - 1, dx_ta, list(d_flat), d_last, var_grads, lists),
                        maximum_iterations=num_segments,
                        # One segment at a time: the recomputation of a segment does not depend on the
                        # gradient carried in, so with more the loop would recompute several ahead and hold
                        # their intermediates at once (measured: 10 segments' worth with the default 10).
                        parallel_iterations=1,
                    )
                dx = dx_ta.stack()
                dx.set_shape(x.shape)
                return [dx, *d_flat], var_grads

            return results, grad

        results = recurrence(inputs, *flat_initial)
    results = list(results)
    outputs = results.pop(0) if return_all_outputs else None
    last, final_flat = results[0], results[1:]
    return outputs, last, tf.nest.pack_sequence_as(structure, final_flat)
