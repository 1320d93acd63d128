"""Static unrolling: a Python `for` over the time steps, TF1's `static_rnn`.

The graph holds one copy of the step per time step: it grows linearly with T (`BasicRNNCell`: 3 ops a
step forward and 6 with the backward pass, plus the input products, one per four steps for small steps:
4.25 and 9.5 ops a step in all; more for other cells), so tracing costs seconds at T≈1000 and
memory with it. In exchange there is no loop machinery at all, which is the fastest choice for short
sequences.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from keras_unroll.loops import _core, fast


def static_loop(
    cell: Any, prepared: _core.Prepared, *, training: Any = None, return_all_outputs: bool = True
) -> Tuple[Optional[List[tf.Tensor]], tf.Tensor, Any]:
    """Runs the step T times in Python. Returns `(per-step outputs or None, last_output, final_state)`."""
    if prepared.inputs.shape[1] == 0:  # an empty batch: nothing to run (and LSTMCell cannot run it)
        outputs, last, state = _core.empty_batch_result(cell, prepared, return_all_outputs)
        return (None if outputs is None else tf.unstack(outputs, num=prepared.num_steps)), last, state
    fast_result = fast.static_fast_path(cell, prepared, training=training, return_all_outputs=return_all_outputs)
    if fast_result is not None:  # SimpleRNN family: fused; LSTM/GRU: hoisted input projection
        return fast_result
    step = _core.make_step(cell, training, prepared.zero_output)
    inputs = tf.unstack(prepared.inputs, num=prepared.num_steps, axis=0)
    valid = tf.unstack(prepared.valid, num=prepared.num_steps, axis=0) if prepared.valid is not None else None
    state = prepared.initial_state
    last = _core.initial_last_output(cell, prepared)
    outputs = []
    with _core.dropout_masks(cell, prepared, training):
        for t, x_t in enumerate(inputs):
            emitted, state, last = step(x_t, None if valid is None else valid[t], state, last)
            if return_all_outputs:
                outputs.append(emitted)
    return (outputs if return_all_outputs else None), last, state


def static_rnn(
    cell: Any,
    inputs: Union[Sequence[Any], Any],
    initial_state: Any = None,
    dtype: Any = None,
    sequence_length: Any = None,
    scope: Optional[str] = None,
    *,
    time_major: bool = False,
    training: Optional[bool] = None,
) -> Tuple[Union[List[tf.Tensor], tf.Tensor], Any]:
    """Creates a statically unrolled RNN: TF1's `tf.nn.static_rnn` for Keras cells.

    An unroll runs `output, state = cell(x[t], state)` for each step `t`; `static_rnn` writes one copy of
    that step into the graph per time step (the graph grows with T), while `dynamic_rnn` runs it in a
    `tf.while_loop` (constant graph size). Both share this signature's core and return
    `(outputs, final_state)`.

    Args:
        cell: A Keras RNN cell (`BasicRNNCell`, `keras.layers.SimpleRNNCell`, `LSTMCell`, `GRUCell`, a
            custom cell), a list of cells (stacked), or an int (a `BasicRNNCell` of that many units).
        inputs: A Python list of T tensors of shape `(batch, features)` (TF1's form, e.g. `[X0, X1]`),
            or one 3D tensor `(batch, time, features)` (`(time, batch, features)` with `time_major`).
        initial_state: The initial state in TF1's structure (`ku.tf1.from_tf1_state`): a tensor
            `(batch, units)` for single-state cells, `LSTMStateTuple(c, h)` for an LSTM, a tuple with one
            entry per layer for a stack; a Keras list (`[h, c]` for Keras' `LSTMCell`) is accepted too.
            Default: the cell's zero state (no `dtype` needed).
        dtype: Accepted for TF1 compatibility; the input is cast to the cell's compute dtype.
        sequence_length: Optional int tensor `(batch,)` with values in `[0, T]`. At `t >= length` the
            output is zero and the state is copied through, so the final state is the state at each row's
            last valid step (the initial state for a length-0 row).
        scope: Accepted for TF1 compatibility; Keras names the weights after the cell.
        time_major: Only for a 3D tensor input: `True` if it is `(time, batch, features)`.
        training: Passed to the cell (dropout). Default: `None` (inference).

    Returns:
        `(outputs, final_state)`. `outputs` is a list of T `(batch, units)` tensors for a list input, a
        3D tensor in the input's layout for a tensor input. `final_state` is in TF1's structure
        (`ku.tf1.to_tf1_state`): one `(batch, units)` tensor for single-state cells, `LSTMStateTuple(c, h)`
        for an LSTM, a tuple with one entry per layer for a stack.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> X0 = np.ones((4, 3), "float32"); X1 = np.ones((4, 3), "float32")
    >>> (Y0, Y1), state = ku.static_rnn(ku.BasicRNNCell(5), [X0, X1])
    >>> tuple(Y1.shape), bool(np.allclose(Y1, state))     # (batch, units); BasicRNNCell's state is its output
    ((4, 5), True)
    """
    del dtype, scope  # TF1 compatibility only
    from keras_unroll import tf1  # lazy: tf1 imports the layers, which import the loops

    cell = _core.as_cell(cell)
    initial_state = tf1.from_tf1_state(cell, initial_state)  # e.g. LSTMStateTuple(c, h) -> Keras' [h, c]
    list_input = isinstance(inputs, (list, tuple))
    dtype = _core.compute_dtype(cell)
    if list_input:
        stacked, time_major_in = _core.stack_inputs(inputs, dtype), True
    else:
        stacked, time_major_in = _core.to_float_tensor(inputs, "inputs", dtype), time_major
    prepared = _core.prepare(
        cell,
        stacked,
        time_major=time_major_in,
        initial_state=initial_state,
        sequence_length=sequence_length,
        require_static_steps=True,
        layer_name="static_rnn",
    )
    outputs, _, state = static_loop(cell, prepared, training=training)
    state = tf1.to_tf1_state(cell, state)  # TF1's structure: LSTMStateTuple(c, h), one entry per layer
    if list_input:
        return outputs, state
    outputs = tf.stack(outputs, axis=0)
    return (outputs if time_major else tf.transpose(outputs, [1, 0, 2])), state
