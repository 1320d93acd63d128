"""The functional forms: TF1's `static_rnn` and `dynamic_rnn` for Keras cells.

`static_rnn` and `dynamic_rnn` share one signature core and one return shape `(outputs, final_state)`;
they differ only in the loop the planner (`keras_unroll.plan`) runs: a Python `for` (one copy of the step
per time step) or a `tf.while_loop` (one copy, any T).

They take and return states in TF1's structures (`tf1_states.to_tf1_state` / `from_tf1_state`, also `ku.tf1.*`):
`LSTMStateTuple(c, h)` for an LSTM, a tuple with one entry per layer for a stack; the loops and the layers
keep Keras' lists (`[h, c]`). The `ku.tf1` cells mark themselves with class attributes
(`_keras_unroll_tf1_lstm`, `_keras_unroll_wrapper`), so this module needs no import from above it.
"""

from __future__ import annotations

from typing import Any, List, Literal, Optional, Sequence, Tuple, Union

import tensorflow as tf

from keras_unroll import plan, raw
from keras_unroll import step as step_lib
from keras_unroll.cell import not_converted
from keras_unroll.layers import _symbolic_rnn
from keras_unroll.loops.checkpointed import check_recompute, check_swap_memory
from keras_unroll.tf1_states import (
    LSTMStateTuple as LSTMStateTuple,  # re-exported, with the conversions
)
from keras_unroll.tf1_states import (
    _check_bool,
    check_parallel_iterations,
    from_tf1_state,
    settle_dtype,
    to_tf1_state,
)
from keras_unroll.types import AnyCell, Cell, DTypeLike, Nested, Recompute, State, TensorLike


def _rank(x: Any) -> Optional[int]:
    shape = getattr(x, "shape", None)
    try:
        return None if shape is None else len(shape)
    except (TypeError, ValueError):  # a TensorShape of unknown rank
        return None


def _takes_tf1_loop(cell: Any, inputs: Any, static: bool) -> bool:
    """Whether the call needs TF1's own loop (`keras_unroll.raw`) rather than the planner's.

    The planner's loops take a Keras cell, one tensor of `(batch, features)` steps and `(batch, size)`
    states. TF1's functions also took TF1-style cells (not Keras layers; with them, any nesting and steps
    with more than one feature axis), nested inputs (a tuple of tensors per step), nested outputs and scalar
    or `TensorShape` states.
    """

    if raw.is_tf1_style_cell(cell):
        return True
    if not isinstance(cell, (list, tuple)) and getattr(cell, "state_size", None) is not None:
        if raw._sizes_are_tf1_only(cell):
            return True
    # A Keras cell takes nested inputs when it was written for them (Keras' RNN passes them on); steps with
    # more than one feature axis stay an error for it (they are for TF1-style cells, taken above).
    if static:
        steps = inputs if isinstance(inputs, (list, tuple)) else []
        return any(isinstance(x, (tuple, dict)) for x in steps)
    return isinstance(inputs, (tuple, dict)) and not hasattr(inputs, "shape")


def _for_tf1_loop(cell: Any, inputs: Any, dtype: Any) -> Any:
    """The cell TF1's own loop (`raw`) runs: a TF1-style cell as it is; a Keras cell (or list of cells) as a
    cell, built by TF1's dtype rule."""
    if raw.is_tf1_style_cell(cell):
        return cell
    cell = step_lib.as_cell(cell)
    if not raw.is_tf1_style_cell(cell):
        settle_dtype(cell, inputs, dtype)
    return cell


def _check_unknown_rank_lengths(sequence_length: Any) -> Any:
    """A `sequence_length` of unknown rank (a `tf.function` with `TensorSpec(shape=None)`): as TF1, taken,
    and checked to be a vector when it runs."""
    if isinstance(sequence_length, tf.Tensor) and sequence_length.shape.rank is None:
        return tf.ensure_shape(sequence_length, [None])
    return sequence_length


def _begin(
    kind: Literal["static", "dynamic"],
    cell: Cell,
    inputs: Any,
    initial_state: Optional[State],
    sequence_length: Optional[TensorLike],
    time_major: bool,
    training: Optional[bool],
    **options: Any,
) -> Tuple[Optional[Tuple[Any, State]], Any, State]:
    """What both functions do first: `(result, None, None)` for `keras.Input` tensors (the equivalent layer
    call, its states in TF1's structure), else `(None, cell, initial_state)`: the cell made from the argument
    and the initial state in Keras' structure (e.g. `LSTMStateTuple(c, h)` -> `[h, c]`)."""
    _check_bool(time_major, "time_major")
    symbolic = _symbolic_rnn(
        kind, cell, inputs, initial_state=from_tf1_state(cell, initial_state), sequence_length=sequence_length,
        time_major=time_major, training=training, **options,
    )  # fmt: skip
    if symbolic is not None:
        return (symbolic[0], to_tf1_state(step_lib.as_cell(cell), symbolic[1])), None, None
    cell = step_lib.as_cell(cell)
    return None, cell, from_tf1_state(cell, initial_state)


@not_converted
def static_rnn(
    cell: AnyCell,
    inputs: Union[Sequence[TensorLike], TensorLike],
    initial_state: Optional[State] = None,
    dtype: Optional[DTypeLike] = None,
    sequence_length: Optional[TensorLike] = None,
    scope: Optional[str] = None,
    *,
    time_major: bool = False,
    training: Optional[bool] = None,
) -> Tuple[Union[List[tf.Tensor], tf.Tensor], State]:
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
        dtype: TF1's `dtype`: the dtype of a NumPy input (what TF1 fed to a placeholder of `dtype`)
            and of the state. As in TF1, a cell not yet built is built in the inputs' dtype (float64 inputs
            give float64 weights, outputs and states); a built cell given wider inputs is a `ValueError`.
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
    del scope  # TF1 compatibility only
    sequence_length = _check_unknown_rank_lengths(sequence_length)
    if _takes_tf1_loop(cell, inputs, static=True):
        cell = _for_tf1_loop(cell, inputs, dtype)
        return raw.tf1_static_loop(
            cell, inputs, initial_state=initial_state, dtype=dtype, sequence_length=sequence_length, training=training
        )
    symbolic, cell, initial_state = _begin("static", cell, inputs, initial_state, sequence_length, time_major, training)
    if symbolic is not None:
        return symbolic
    prepared = _prepare("static", cell, inputs, dtype, time_major, initial_state, sequence_length)
    outputs, _, state = plan.run(cell, prepared, plan.Request("static", training=training))
    state = to_tf1_state(cell, state)  # TF1's structure: LSTMStateTuple(c, h), one entry per layer
    if isinstance(inputs, (list, tuple)):
        return outputs, state
    outputs = tf.stack(outputs, axis=0)
    return (outputs if time_major else tf.transpose(outputs, [1, 0, 2])), state


@not_converted
def dynamic_rnn(
    cell: AnyCell,
    inputs: TensorLike,
    sequence_length: Optional[TensorLike] = None,
    initial_state: Optional[State] = None,
    dtype: Optional[DTypeLike] = None,
    parallel_iterations: Optional[int] = None,
    swap_memory: bool = False,
    time_major: bool = False,
    scope: Optional[str] = None,
    *,
    training: Optional[bool] = None,
    recompute: Recompute = None,
) -> Tuple[Nested, State]:
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
        dtype: TF1's `dtype`: the dtype of a NumPy input (what TF1 fed to a placeholder of `dtype`)
            and of the state. As in TF1, a cell not yet built is built in the inputs' dtype (float64 inputs
            give float64 weights, outputs and states); a built cell given wider inputs is a `ValueError`.
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
    del scope  # TF1 compatibility only
    sequence_length = _check_unknown_rank_lengths(sequence_length)
    if _takes_tf1_loop(cell, inputs, static=False):
        return _tf1_dynamic_loop(
            cell, inputs, sequence_length, initial_state, dtype, parallel_iterations, swap_memory, time_major, training
        )
    symbolic, cell, initial_state = _begin(
        "dynamic", cell, inputs, initial_state, sequence_length, time_major, training,
        swap_memory=swap_memory, recompute=recompute,
    )  # fmt: skip
    if symbolic is not None:
        return symbolic
    _check_not_a_list_of_steps(inputs)
    prepared = _prepare("dynamic", cell, inputs, dtype, time_major, initial_state, sequence_length)
    request = _dynamic_request(training, parallel_iterations, swap_memory, recompute)
    outputs, _, state = plan.run(cell, prepared, request)
    return (outputs if time_major else tf.transpose(outputs, [1, 0, 2])), to_tf1_state(cell, state)


def _dynamic_request(
    training: Optional[bool], parallel_iterations: Optional[int], swap_memory: bool, recompute: Recompute
) -> plan.Request:
    """What `dynamic_rnn` asks the planner for, its loop options checked."""
    return plan.Request(
        "dynamic",
        training=training,
        parallel_iterations=check_parallel_iterations(parallel_iterations),
        swap_memory=check_swap_memory(swap_memory),
        recompute=check_recompute(recompute),
    )


def _prepare(
    kind: Literal["static", "dynamic"],
    cell: Any,
    inputs: Any,
    dtype: Any,
    time_major: bool,
    initial_state: Any,
    sequence_length: Any,
) -> step_lib.Prepared:
    """The planner's path of both functions: the cell built by TF1's dtype rule, the inputs as one float tensor
    in the cell's dtype (`static_rnn`'s list of steps stacked time-major), checked by `step.prepare`."""
    settle_dtype(cell, inputs, dtype)
    dtype = step_lib.compute_dtype(cell)
    if kind == "static" and isinstance(inputs, (list, tuple)):
        inputs, time_major = step_lib.stack_inputs(inputs, dtype), True
    else:
        inputs = step_lib.to_float_tensor(inputs, "inputs", dtype)
    return step_lib.prepare(
        cell,
        inputs,
        time_major=time_major,
        initial_state=initial_state,
        sequence_length=sequence_length,
        require_static_steps=kind == "static",
        layer_name=f"{kind}_rnn",
        allow_no_steps=kind == "dynamic",
    )


def _check_not_a_list_of_steps(inputs: Any) -> None:
    """`dynamic_rnn` refuses `static_rnn`'s list of `(batch, features)` steps."""
    if isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
        # A list of step tensors would silently stack into (T, B, F) and be read as (B, T, F).
        raise TypeError(
            "dynamic_rnn takes one 3D tensor (batch, time, features); a Python list of (batch, features) steps "
            "is for `static_rnn`. Stack the list with `tf.stack(steps, axis=1)`. "
            f"Received: inputs=a list of {len(inputs)} items"
        )


def _tf1_dynamic_loop(
    cell: Any,
    inputs: Any,
    sequence_length: Any,
    initial_state: Any,
    dtype: Any,
    parallel_iterations: Optional[int],
    swap_memory: bool,
    time_major: bool,
    training: Optional[bool],
) -> Tuple[Nested, State]:
    """`dynamic_rnn` in TF1's own loop (`raw`), for what the planner does not take (`_takes_tf1_loop`)."""
    cell = _for_tf1_loop(cell, inputs, dtype)
    return raw.tf1_dynamic_loop(
        cell, inputs, sequence_length=sequence_length, initial_state=initial_state, dtype=dtype,
        parallel_iterations=check_parallel_iterations(parallel_iterations),
        swap_memory=check_swap_memory(swap_memory), time_major=_check_bool(time_major, "time_major"),
        training=training,
    )  # fmt: skip
