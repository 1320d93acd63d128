"""cuDNN's LSTM/GRU kernel, called the way Keras' TensorFlow backend calls it for `keras.layers.LSTM`/`GRU`.

On a GPU, Keras' `LSTM`/`GRU` layers run `tf.raw_ops.CudnnRNNV3` through the backend's `_cudnn_lstm` /
`_cudnn_gru` (`keras/src/backend/tensorflow/rnn.py`), which convert Keras' weights to cuDNN's layout and
handle masks and `go_backwards`. `cudnn_loop` calls those same two functions with an `LSTMCell`/`GRUCell`'s
weights, so `DynamicUnroll(LSTMCell)` runs the kernel `keras.layers.LSTM` runs, in the same layout
(Keras' weight conversion, its gate order for CUDA and ROCm builds). Whether it runs is the planner's
decision (`keras_unroll/plan.py`: a GPU, no XLA); this module decides nothing about devices.

`eligible` holds Keras' argument conditions: activation `tanh`, recurrent activation `sigmoid`, `use_bias`,
GRU `reset_after=True`, no recurrent dropout (Keras' layers check the rate, whatever `training` is), and
the cell's own maths (`cells.gated_family`: no subclass overriding them). One condition of ours: a cell with
`implementation=1` and input dropout draws one input mask per gate, which one cuDNN call cannot apply
(Keras' layer fails on it); it is not eligible.

Masks. cuDNN takes a length per row, so it runs only right-padded rows (each row's valid steps first, in
the sequence's own order); Keras asserts that at run time, and fails otherwise. Here:

- no mask: every row runs all T steps;
- `sequence_length` alone (`Prepared.lengths_only`): right-padded by construction;
- a Keras mask: `right_padded` is the run-time check; the planner's `execute` runs cuDNN under it and the
  generic while loop otherwise (`tf.cond`), so a mask Keras would refuse on a GPU still gives the
  generic path's numbers.

Rows with no valid step at all (cuDNN fails on them, Keras asserts against them) run one step, whose
results are replaced by what the generic step gives: zero outputs, the initial state.

Dropout: the input mask is the sequence's (`step.DropoutMasks`, drawn by the cell's own
`_create_dropout_mask`), applied to every step's input before the call, as Keras' layer applies it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import tensorflow as tf

from keras_unroll import _private
from keras_unroll import step as step_lib
from keras_unroll.kernels import cells, chunks


def eligible(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if `cell` can run cuDNN's kernel as Keras' layers run it, else None.

    None too when this Keras has no such backend functions (they are private: a Keras that moved them
    makes the planner keep its other kernels).
    """
    name = cells.gated_family(cell)
    if name is None or cell.recurrent_dropout > 0:
        return None
    if cell.dropout > 0 and getattr(cell, "dropout_mask_count", None) is not None:
        return None  # implementation=1: one input mask per gate
    options = {} if name == "lstm" else {"reset_after": cell.reset_after}
    try:
        supported = _private.cudnn_supports(
            name,
            activation=cell.activation,
            recurrent_activation=cell.recurrent_activation,
            use_bias=cell.use_bias,
            **options,
        )
    except ImportError:  # a Keras that moved its cuDNN functions: the other kernels compute the same maths
        return None
    return name if supported else None


def right_padded(prepared: step_lib.Prepared) -> Optional[tf.Tensor]:
    """A scalar bool tensor: whether every row of `prepared`'s mask is right-padded in the sequence's own
    order (what cuDNN can run); None when nothing needs checking (no mask, or `sequence_length` alone)."""
    if prepared.valid is None or prepared.lengths_only:
        return None
    valid = _own_order(prepared, prepared.valid)
    lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=0)
    prefix = tf.transpose(tf.sequence_mask(lengths, tf.shape(valid)[0]))
    return tf.reduce_all(tf.equal(valid, prefix))


def _own_order(prepared: step_lib.Prepared, tensor: tf.Tensor) -> tf.Tensor:
    """A time-major tensor of the loop (reversed with `go_backwards`) in the sequence's own order."""
    return tf.reverse(tensor, [0]) if prepared.go_backwards else tensor


def cudnn_loop(
    cell: Any,
    prepared: step_lib.Prepared,
    masks: step_lib.DropoutMasks,
    *,
    return_all_outputs: bool = True,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """cuDNN's unroll of an `LSTMCell`/`GRUCell`: returns `(outputs (T, B, H) or None, last_output, final_state)`.

    The contract of `recurrence.fused_loop`: `prepared` is time-major (reversed for `go_backwards`),
    `final_state` is in Keras' order (`[h, c]` for LSTM, `[h]` for GRU), outputs at invalid steps follow
    `step.make_step` (zeros with `zero_output`, else the last valid output). A Keras mask must be
    right-padded (`right_padded`; the caller checks it): each row then runs its valid steps.
    """
    name = eligible(cell)
    if name is None:
        raise ValueError(f"`cell` cannot take cuDNN's LSTM/GRU kernel (see `cudnn.eligible`). Received: cell={cell!r}")
    inputs = prepared.inputs
    dtype = inputs.dtype
    dp_mask, _ = masks.of(cell)
    if dp_mask is not None and 0.0 < cell.dropout < 1.0:
        inputs = inputs * dp_mask[None]  # the same mask at every step, as Keras' layer applies it
    weights = [chunks.as_tensor(w, dtype) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)]
    state = list(prepared.initial_state)
    if prepared.valid is None:
        # Every row runs all T steps, in the loop's order (already reversed for `go_backwards`).
        _, outputs, final = _private.cudnn_rnn(
            name,
            inputs,
            state,
            *weights,
            mask=None,
            time_major=True,
            go_backwards=False,
            return_sequences=return_all_outputs,
        )
        return (outputs if return_all_outputs else None), final[0], final
    # Lengths: Keras' function takes a batch-major (B, T) mask, in the sequence's own order, and with
    # `go_backwards` reverses each row within its length. A row without a valid step runs one.
    valid = prepared.valid
    lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=0)
    runs = tf.sequence_mask(tf.maximum(lengths, 1), tf.shape(valid)[0])  # (B, T)
    batch_major = tf.transpose(_own_order(prepared, inputs), [1, 0, 2])
    _, outputs, final = _private.cudnn_rnn(
        name,
        batch_major,
        state,
        *weights,
        mask=runs,
        time_major=False,
        go_backwards=prepared.go_backwards,
        return_sequences=True,
    )
    empty = (lengths == 0)[:, None]
    final = [tf.where(empty, initial, value) for initial, value in zip(state, final)]
    # cuDNN writes zeros at invalid steps; `outputs_from_states` reads copied states there.
    states = tf.where(valid[:, :, None], tf.transpose(outputs, [1, 0, 2]), final[0][None])
    outputs, last = step_lib.outputs_from_states(prepared, states, final[0], return_all_outputs)
    return outputs, last, final
