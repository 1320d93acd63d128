"""Dynamic unrolling: one `tf.while_loop` over the time steps, TF1's `dynamic_rnn`.

The graph holds the step once, whatever T is, and T may be unknown until run time. The loop is always
given `maximum_iterations`, so it compiles under XLA. With `sequence_length` (and no `go_backwards`) the loop
stops at `max(sequence_length)` and the remaining outputs are zeros, as in TF1.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import tensorflow as tf

from keras_unroll.loops import _core, fast, memory


def dynamic_loop(
    cell: Any,
    prepared: _core.Prepared,
    *,
    training: Any = None,
    return_all_outputs: bool = True,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    recompute: memory.Recompute = None,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, Any]:
    """Runs the step in a `tf.while_loop`. Returns `(outputs (T, B, H) or None, last_output, final_state)`."""
    if prepared.inputs.shape[1] == 0:  # an empty batch: nothing to run (and LSTMCell cannot trace it)
        return _core.empty_batch_result(cell, prepared, return_all_outputs)
    if swap_memory or recompute is not None:  # checkpoints on the host and/or recomputed segments
        return memory.checkpointed_loop(
            cell,
            prepared,
            training=training,
            return_all_outputs=return_all_outputs,
            parallel_iterations=parallel_iterations,
            swap_memory=swap_memory,
            recompute=recompute,
        )
    fast_result = fast.dynamic_fast_path(cell, prepared, training=training, return_all_outputs=return_all_outputs)
    if fast_result is not None:  # SimpleRNN family: hoisted projection + fused backward pass
        return fast_result
    step = _core.make_step(cell, training, prepared.zero_output)
    inputs = prepared.inputs
    dtype = inputs.dtype
    num_steps = prepared.num_steps if prepared.num_steps is not None else tf.shape(inputs)[0]
    stop = num_steps if prepared.max_length is None else tf.minimum(num_steps, prepared.max_length)
    inputs_ta = tf.TensorArray(dtype, size=num_steps, element_shape=inputs.shape[1:]).unstack(inputs)
    valid_ta = None
    if prepared.valid is not None:
        valid_ta = tf.TensorArray(tf.bool, size=num_steps, element_shape=prepared.valid.shape[1:]).unstack(
            prepared.valid
        )
    out_shape = tf.TensorShape([inputs.shape[1], _core.output_size(cell)])
    # Without outputs a scalar stands in for the TensorArray: XLA cannot differentiate an empty, unwritten one.
    outputs_ta = tf.TensorArray(dtype, size=num_steps, element_shape=out_shape) if return_all_outputs else tf.zeros([])
    last = _core.initial_last_output(cell, prepared)

    def body(t, outputs_ta, state, last):
        valid_t = None if valid_ta is None else valid_ta.read(t)
        emitted, state, last = step(inputs_ta.read(t), valid_t, state, last)
        if return_all_outputs:
            outputs_ta = outputs_ta.write(t, emitted)
        return t + 1, outputs_ta, state, last

    with _core.dropout_masks(cell, prepared, training):
        t, outputs_ta, state, last = tf.while_loop(
            lambda t, *_: t < stop,
            body,
            (tf.constant(0, tf.int32), outputs_ta, prepared.initial_state, last),
            maximum_iterations=num_steps,
            parallel_iterations=parallel_iterations or 10,
        )
    if not return_all_outputs:
        return None, last, state
    if prepared.max_length is not None:
        # Rows all ended before T: the steps the loop skipped emit zeros, as in TF1.
        zeros = tf.zeros(tf.stack([prepared.batch_size, _core.output_size(cell)]), dtype)
        _, outputs_ta = tf.while_loop(
            lambda t, _: t < num_steps,
            lambda t, ta: (t + 1, ta.write(t, zeros)),
            (t, outputs_ta),
            maximum_iterations=num_steps,
        )
    outputs = outputs_ta.stack()
    outputs.set_shape(inputs.shape[:2].concatenate([_core.output_size(cell)]))
    return outputs, last, state


def run_dynamic(cell: Any, prepared: _core.Prepared, **options: Any) -> Tuple[Optional[tf.Tensor], tf.Tensor, Any]:
    """`dynamic_loop`, run as a graph even when called eagerly (through a `tf.function` cached per cell)."""
    if tf.inside_function():
        return dynamic_loop(cell, prepared, **options)
    training = options.get("training")
    if isinstance(training, tf.Tensor):
        options["training"] = bool(training.numpy())
    key = tuple(sorted(options.items())) + (prepared.zero_output, prepared.num_steps, prepared.max_length is None)
    cache = cell.__dict__.setdefault("_keras_unroll_dynamic_fns", {})
    fn = cache.get(key)
    if fn is None:
        settings = prepared.settings_only()

        def fn(inputs, valid, initial_state, max_length):
            rebuilt = _core.same_sequence_as(settings, inputs, valid, initial_state, max_length)
            return dynamic_loop(cell, rebuilt, **options)

        fn = cache[key] = tf.function(fn, reduce_retracing=True, autograph=False)
    return fn(prepared.inputs, prepared.valid, prepared.initial_state, prepared.max_length)


def dynamic_rnn(
    cell: Any,
    inputs: Any,
    sequence_length: Any = None,
    initial_state: Any = None,
    dtype: Any = None,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: Optional[str] = None,
    *,
    training: Optional[bool] = None,
    recompute: memory.Recompute = None,
) -> Tuple[tf.Tensor, Any]:
    """Creates a dynamically unrolled RNN: TF1's `tf.nn.dynamic_rnn` for Keras cells.

    An unroll runs `output, state = cell(x[t], state)` for each step `t`; `dynamic_rnn` runs that step in
    one `tf.while_loop` (graph size independent of T, T may be unknown until run time), while `static_rnn`
    writes a copy per step. Both return `(outputs, final_state)`. Called eagerly, the loop still runs as a
    graph (a `tf.function` traced once per input signature).

    Args:
        cell: A Keras RNN cell (`BasicRNNCell`, `keras.layers.SimpleRNNCell`, `LSTMCell`, `GRUCell`, a
            custom cell), a list of cells (stacked), or an int (a `BasicRNNCell` of that many units).
        inputs: A 3D tensor `(batch, time, features)`, or `(time, batch, features)` with `time_major`.
        sequence_length: Optional int tensor `(batch,)` with values in `[0, T]`. At `t >= length` the
            output is zero and the state is copied through, so the final state is the state at each row's
            last valid step (the initial state for a length-0 row). The loop stops at
            `max(sequence_length)`.
        initial_state: The initial state in TF1's structure (`ku.tf1.from_tf1_state`): a tensor
            `(batch, units)` for single-state cells, `LSTMStateTuple(c, h)` for an LSTM, a tuple with one
            entry per layer for a stack; a Keras list (`[h, c]` for Keras' `LSTMCell`) is accepted too.
            Default: the cell's zero state (no `dtype` needed).
        dtype: Accepted for TF1 compatibility; the input is cast to the cell's compute dtype.
        parallel_iterations: Passed to `tf.while_loop` (default 10). Measured: no effect on CPU.
        swap_memory: Boolean. `True` stores what the backward pass needs (each step's input state) in
            host memory (`/CPU:0`) and brings it back one step at a time, as TF1 promised (TF2's
            `while_v2` ignores the flag; this does not pass it on). See `DynamicUnroll` for the cost.
        time_major: `True` if `inputs` (and the returned outputs) are `(time, batch, ...)`.
        scope: Accepted for TF1 compatibility; Keras names the weights after the cell.
        training: Passed to the cell (dropout). Default: `None` (inference).
        recompute: `None`, `"sqrt"` or a positive int k: keep only every k-th state for the backward pass
            (k = ceil(sqrt(T)) for `"sqrt"`) and recompute the steps in between. See `DynamicUnroll`.

    Returns:
        `(outputs, final_state)`: `outputs` is `(batch, time, units)` (time-major with `time_major`);
        `final_state` is in TF1's structure (`ku.tf1.to_tf1_state`): one `(batch, units)` tensor for
        single-state cells, `LSTMStateTuple(c, h)` for an LSTM, a tuple with one entry per layer for a stack.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> X = np.ones((4, 2, 3), "float32")                 # (batch, time, features)
    >>> outputs, state = ku.dynamic_rnn(ku.BasicRNNCell(5), X, sequence_length=[2, 1, 2, 0])
    >>> tuple(outputs.shape), tuple(state.shape)
    ((4, 2, 5), (4, 5))
    >>> float(abs(outputs[1, 1]).sum()), float(abs(state[3]).sum())   # zero past the end; initial state
    (0.0, 0.0)
    """
    del dtype, scope  # TF1 compatibility only
    from keras_unroll import tf1  # lazy: tf1 imports the layers, which import the loops

    cell = _core.as_cell(cell)
    initial_state = tf1.from_tf1_state(cell, initial_state)  # e.g. LSTMStateTuple(c, h) -> Keras' [h, c]
    if isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
        # A list of step tensors would silently stack into (T, B, F) and be read as (B, T, F).
        raise TypeError(
            "dynamic_rnn takes one 3D tensor (batch, time, features); a Python list of (batch, features) steps "
            "is for `static_rnn`. Stack the list with `tf.stack(steps, axis=1)`. "
            f"Received: inputs=a list of {len(inputs)} items"
        )
    inputs = _core.to_float_tensor(inputs, "inputs", _core.compute_dtype(cell))
    prepared = _core.prepare(
        cell,
        inputs,
        time_major=time_major,
        initial_state=initial_state,
        sequence_length=sequence_length,
        layer_name="dynamic_rnn",
    )
    outputs, _, state = run_dynamic(
        cell,
        prepared,
        training=training,
        parallel_iterations=parallel_iterations,
        swap_memory=memory.check_swap_memory(swap_memory),
        recompute=memory.check_recompute(recompute),
    )
    outputs = outputs if time_major else tf.transpose(outputs, [1, 0, 2])
    return outputs, tf1.to_tf1_state(cell, state)
