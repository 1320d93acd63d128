"""The functional forms: TF1's `static_rnn` and `dynamic_rnn` for Keras cells.

`static_rnn` and `dynamic_rnn` share one signature core and one return shape `(outputs, final_state)`;
they differ only in the loop the planner (`keras_unroll.plan`) runs: a Python `for` (one copy of the step
per time step) or a `tf.while_loop` (one copy, any T).
"""

from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from keras_unroll import plan
from keras_unroll import step as step_lib
from keras_unroll.loops.checkpointed import Recompute, check_recompute, check_swap_memory


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool (True or False). Received: {name}={value!r}")
    return value


def check_parallel_iterations(value: Any) -> Optional[int]:
    """Checks `parallel_iterations`: None or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"`parallel_iterations` must be None or a positive integer (default 10). Received: parallel_iterations={value!r}"
        )
    return int(value)


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
    from keras_unroll import tf1  # lazy: tf1 imports the layers, which import this module

    cell = step_lib.as_cell(cell)
    initial_state = tf1.from_tf1_state(cell, initial_state)  # e.g. LSTMStateTuple(c, h) -> Keras' [h, c]
    time_major = _check_bool(time_major, "time_major")
    list_input = isinstance(inputs, (list, tuple))
    dtype = step_lib.compute_dtype(cell)
    if list_input:
        stacked, time_major_in = step_lib.stack_inputs(inputs, dtype), True
    else:
        stacked, time_major_in = step_lib.to_float_tensor(inputs, "inputs", dtype), time_major
    prepared = step_lib.prepare(
        cell,
        stacked,
        time_major=time_major_in,
        initial_state=initial_state,
        sequence_length=sequence_length,
        require_static_steps=True,
        layer_name="static_rnn",
    )
    outputs, _, state = plan.run(cell, prepared, plan.Request("static", training=training))
    state = tf1.to_tf1_state(cell, state)  # TF1's structure: LSTMStateTuple(c, h), one entry per layer
    if list_input:
        return outputs, state
    outputs = tf.stack(outputs, axis=0)
    return (outputs if time_major else tf.transpose(outputs, [1, 0, 2])), state


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
    recompute: Recompute = None,
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
    >>> float(np.abs(outputs[1, 1]).sum()), float(np.abs(state[3]).sum())   # zero past the end; initial state
    (0.0, 0.0)
    """
    del dtype, scope  # TF1 compatibility only
    from keras_unroll import tf1  # lazy: tf1 imports the layers, which import this module

    cell = step_lib.as_cell(cell)
    initial_state = tf1.from_tf1_state(cell, initial_state)  # e.g. LSTMStateTuple(c, h) -> Keras' [h, c]
    time_major = _check_bool(time_major, "time_major")
    if isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
        # A list of step tensors would silently stack into (T, B, F) and be read as (B, T, F).
        raise TypeError(
            "dynamic_rnn takes one 3D tensor (batch, time, features); a Python list of (batch, features) steps "
            "is for `static_rnn`. Stack the list with `tf.stack(steps, axis=1)`. "
            f"Received: inputs=a list of {len(inputs)} items"
        )
    inputs = step_lib.to_float_tensor(inputs, "inputs", step_lib.compute_dtype(cell))
    prepared = step_lib.prepare(
        cell,
        inputs,
        time_major=time_major,
        initial_state=initial_state,
        sequence_length=sequence_length,
        layer_name="dynamic_rnn",
        allow_no_steps=True,
    )
    if prepared.num_steps == 0:  # TF1: no steps give empty outputs and the initial state
        units = step_lib.output_size(cell)
        outputs = tf.zeros(tf.stack([0, prepared.batch_size, units]), prepared.inputs.dtype)
        outputs = outputs if time_major else tf.transpose(outputs, [1, 0, 2])
        return outputs, step_lib.unpack_state(cell, prepared.initial_state)
    request = plan.Request(
        "dynamic",
        training=training,
        parallel_iterations=check_parallel_iterations(parallel_iterations),
        swap_memory=check_swap_memory(swap_memory),
        recompute=check_recompute(recompute),
    )
    outputs, _, state = plan.run(cell, prepared, request)
    outputs = outputs if time_major else tf.transpose(outputs, [1, 0, 2])
    return outputs, tf1.to_tf1_state(cell, state)
