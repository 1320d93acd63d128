"""The functional forms: TF1's `static_rnn` and `dynamic_rnn` for Keras cells.

`static_rnn` and `dynamic_rnn` share one signature core and one return shape `(outputs, final_state)`;
they differ only in the loop the planner (`keras_unroll.plan`) runs: a Python `for` (one copy of the step
per time step) or a `tf.while_loop` (one copy, any T).

They take and return states in TF1's structures (`to_tf1_state` / `from_tf1_state`, also `ku.tf1.*`):
`LSTMStateTuple(c, h)` for an LSTM, a tuple with one entry per layer for a stack; the loops and the layers
keep Keras' lists (`[h, c]`). The `ku.tf1` cells mark themselves with class attributes
(`_keras_unroll_tf1_lstm`, `_keras_unroll_wrapper`), so this module needs no import from above it.
"""

from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import plan
from keras_unroll import step as step_lib
from keras_unroll.step import LSTMStateTuple, _is_lstm_state_tuple, lstm_state_tuples_to_keras  # noqa: F401  (re-exported)
from keras_unroll.layers import _symbolic_rnn
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


def _cell_tree(cell: Any) -> List[Any]:
    """The cell and every cell inside it (a wrapper's `cell`, a stack's `cells`), each once."""
    found, todo = [], [cell]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found) or not isinstance(current, keras.layers.Layer):
            continue
        found.append(current)
        inner = getattr(current, "cell", None)
        todo += [inner] if inner is not None else []
        todo += list(getattr(current, "cells", None) or [])
    return found


def _first_input(inputs: Any) -> Any:
    """The first tensor of a (possibly nested) input: what TF1 reads the dtype and batch size from."""
    flat = tf.nest.flatten(inputs)
    return flat[0] if flat else None


def _input_dtype(inputs: Any, dtype: Any) -> Optional[tf.DType]:
    """The dtype TF1 would compute in: the input tensor's, else `dtype=`, else a NumPy array's (None: floatx).

    A TF tensor's dtype is its own (TF1 neither casts it nor builds the cell in another dtype); a NumPy array
    is what TF1 code fed to a placeholder of `dtype`, so `dtype=` decides for it when given.
    """
    first = _first_input(inputs)
    given = None if dtype is None else tf.as_dtype(dtype)
    if isinstance(first, (tf.Tensor, tf.Variable)) and first.dtype.is_floating:
        if given is not None and given.is_floating and given != first.dtype:
            raise ValueError(
                f"`dtype` must match the inputs' dtype: TF1 builds the cell in the inputs' dtype and starts the "
                f"state in `dtype`, so the two must agree. Cast the inputs (`tf.cast(inputs, {given.name!r})`) or "
                f"drop `dtype`. Received: dtype={given.name}, inputs.dtype={first.dtype.name}"
            )
        return first.dtype
    if given is not None:
        return given if given.is_floating else None
    if isinstance(first, np.ndarray) and np.issubdtype(first.dtype, np.floating):
        return tf.as_dtype(first.dtype)
    return None


def _mixed(layer: Any) -> bool:
    return layer.compute_dtype != layer.variable_dtype


def settle_dtype(cell: Any, inputs: Any, dtype: Any = None) -> None:
    """TF1's dtype rule for a cell, the one place the functions apply it: an unbuilt cell is built in the
    inputs' dtype (or `dtype=`).

    Each unbuilt cell in the tree whose dtype the user did not give takes the dtype TF1 would compute in
    (float64 inputs give float64 weights, outputs and states): a `ku.tf1` cell through its own hook
    (`_keras_unroll_adopt_dtype`, which knows whether `dtype=` was given; `step.build_cell` calls the same
    hook for the layers), any other cell when it is at the default dtype policy. A cell whose weights are
    narrower than the inputs (built float32, or given `dtype='float32'`, for float64 inputs) says so instead
    of computing in float32. Inputs narrower than the cell are cast up (nothing is lost); a mixed-precision
    policy is left as it is (its inputs are cast to its compute dtype).

    Raises:
        ValueError: A cell with a non-float dtype, a cell with narrower weights than the inputs, or
            `dtype` disagreeing with a tensor input.
    """
    layers = _cell_tree(cell)
    for layer in layers:
        if not tf.as_dtype(layer.compute_dtype).is_floating:
            raise ValueError(
                "RNN cell only supports floating point inputs and weights (TF1's rule): give the cell a float "
                f"dtype such as 'float32'. Received: cell {layer.name!r} with dtype {layer.compute_dtype}"
            )
    target = _input_dtype(inputs, dtype)
    if target is None or not layers:
        return
    default = keras.config.dtype_policy().name
    for layer in layers:
        if layer.built:
            continue
        adopt = getattr(layer, "_keras_unroll_adopt_dtype", None)
        if adopt is not None:
            adopt(target)
        elif layer.dtype_policy.name == default and not _mixed(layer) and layer.compute_dtype != target.name:
            layer.dtype_policy = target.name
    for layer in layers:
        weights = tf.as_dtype(layer.variable_dtype)
        if not _mixed(layer) and weights.is_floating and target.size > weights.size:
            how = "was built in" if layer.built else "was given dtype"
            raise ValueError(
                f"The cell {layer.name!r} {how} {weights.name} (TF1 builds a cell in the dtype of its first "
                f"inputs), and these inputs are {target.name}: computing them in {weights.name} would drop "
                f"precision silently. Cast the inputs to {weights.name}, or use a new cell for {target.name} "
                f"inputs. Received: inputs dtype {target.name}, cell weights {weights.name}"
            )


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
    from keras_unroll import raw  # lazy: `raw` builds on this module

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


def _check_unknown_rank_lengths(sequence_length: Any) -> Any:
    """A `sequence_length` of unknown rank (a `tf.function` with `TensorSpec(shape=None)`): as TF1, taken,
    and checked to be a vector when it runs."""
    if isinstance(sequence_length, tf.Tensor) and sequence_length.shape.rank is None:
        return tf.ensure_shape(sequence_length, [None])
    return sequence_length


def _begin(kind: str, cell: Any, inputs: Any, initial_state: Any, sequence_length: Any, time_major: Any,
           training: Any, **options: Any) -> Tuple[Any, Any, Any]:
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
        from keras_unroll import raw  # lazy: `raw` builds on this module

        cell = cell if raw.is_tf1_style_cell(cell) else step_lib.as_cell(cell)
        if not raw.is_tf1_style_cell(cell):
            settle_dtype(cell, inputs, dtype)
        return raw.tf1_static_loop(
            cell, inputs, initial_state=initial_state, dtype=dtype, sequence_length=sequence_length, training=training
        )
    symbolic, cell, initial_state = _begin("static", cell, inputs, initial_state, sequence_length, time_major, training)
    if symbolic is not None:
        return symbolic
    list_input = isinstance(inputs, (list, tuple))
    settle_dtype(cell, inputs, dtype)
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
    state = to_tf1_state(cell, state)  # TF1's structure: LSTMStateTuple(c, h), one entry per layer
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
        from keras_unroll import raw  # lazy: `raw` builds on this module

        cell = cell if raw.is_tf1_style_cell(cell) else step_lib.as_cell(cell)
        if not raw.is_tf1_style_cell(cell):
            settle_dtype(cell, inputs, dtype)
        return raw.tf1_dynamic_loop(
            cell, inputs, sequence_length=sequence_length, initial_state=initial_state, dtype=dtype,
            parallel_iterations=check_parallel_iterations(parallel_iterations),
            swap_memory=check_swap_memory(swap_memory), time_major=_check_bool(time_major, "time_major"),
            training=training,
        )  # fmt: skip
    symbolic, cell, initial_state = _begin(
        "dynamic", cell, inputs, initial_state, sequence_length, time_major, training,
        swap_memory=swap_memory, recompute=recompute,
    )  # fmt: skip
    if symbolic is not None:
        return symbolic
    if isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
        # A list of step tensors would silently stack into (T, B, F) and be read as (B, T, F).
        raise TypeError(
            "dynamic_rnn takes one 3D tensor (batch, time, features); a Python list of (batch, features) steps "
            "is for `static_rnn`. Stack the list with `tf.stack(steps, axis=1)`. "
            f"Received: inputs=a list of {len(inputs)} items"
        )
    settle_dtype(cell, inputs, dtype)
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
        return outputs, to_tf1_state(cell, prepared.initial_state)
    request = plan.Request(
        "dynamic",
        training=training,
        parallel_iterations=check_parallel_iterations(parallel_iterations),
        swap_memory=check_swap_memory(swap_memory),
        recompute=check_recompute(recompute),
    )
    outputs, _, state = plan.run(cell, prepared, request)
    outputs = outputs if time_major else tf.transpose(outputs, [1, 0, 2])
    return outputs, to_tf1_state(cell, state)


# ----------------------------------------------------------------- TF1's state structures
def _inner(cell: Any) -> Any:
    """The cell a `ku.tf1` wrapper wraps (its state is that cell's), through any number of wrappers."""
    while getattr(type(cell), "_keras_unroll_wrapper", False):
        cell = cell.cell
    return cell


def lstm_like(cell: Any) -> bool:
    """Keras' `LSTMCell` (and subclasses such as `ku.tf1.BasicLSTMCell`) or `ku.tf1.LSTMCell`: state `[h, c]`."""
    return isinstance(cell, keras.layers.LSTMCell) or getattr(type(cell), "_keras_unroll_tf1_lstm", False)


def _tf1_lstm(cell: Any) -> bool:
    return getattr(type(cell), "_keras_unroll_tf1_lstm", False)


def _as_cells(cell: Any) -> Any:
    return step_lib.as_cell(cell) if isinstance(cell, (list, tuple)) else cell


def _state_is_tuple(cell: Any) -> bool:
    return getattr(cell, "state_is_tuple", True)


def to_tf1_state(cell: Any, keras_state: Any) -> Any:
    """A cell's state in Keras' structure → TF1's structure (what `ku.dynamic_rnn` returns).

    - a single-state cell (`BasicRNNCell`, `GRUCell`, Keras' `SimpleRNNCell`/`GRUCell`): one tensor;
    - an LSTM (`ku.tf1.BasicLSTMCell`, `ku.tf1.LSTMCell`, Keras' `LSTMCell`): `LSTMStateTuple(c, h)` from
      Keras' `[h, c]` (TF1's concatenated `[c, h]` tensor for `state_is_tuple=False`);
    - a stack (`MultiRNNCell`, `keras.layers.StackedRNNCells`, a Python list of cells): a tuple, one entry
      per layer, each in its own cell's TF1 structure;
    - a wrapper: its wrapped cell's structure; any other cell: its Keras list, unchanged.

    Args:
        cell: The cell (or list of cells) the state belongs to.
        keras_state: Its state as the loops and layers hold it (`[h, c]`, `[[h1], [h2]]`, ...).

    Returns:
        The state in TF1's structure.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> h, c = np.zeros((2, 3), "float32"), np.ones((2, 3), "float32")
    >>> state = ku.tf1.to_tf1_state(ku.tf1.BasicLSTMCell(3), [h, c])
    >>> float(state.c[0, 0]), float(state.h[0, 0])
    (1.0, 0.0)
    """
    cell = _as_cells(cell)
    hook = getattr(cell, "_keras_unroll_to_tf1", None)  # a `ku.tf1` cell knows its own TF1 structure
    if hook is not None:
        return hook(keras_state)
    cell = _inner(cell)
    if isinstance(cell, keras.layers.StackedRNNCells):
        states = list(keras_state) if isinstance(keras_state, (list, tuple)) else [keras_state]
        if len(states) != len(cell.cells):
            flat = tf.nest.flatten(keras_state)
            states = tf.nest.pack_sequence_as(cell.state_size, flat)
        return tuple(to_tf1_state(sub, sub_state) for sub, sub_state in zip(cell.cells, states))
    flat = tf.nest.flatten(keras_state)
    if lstm_like(cell) and len(flat) == 2:
        h, c = flat
        return LSTMStateTuple(c, h) if _state_is_tuple(cell) else tf.concat([c, h], 1)
    if not isinstance(cell.state_size, (list, tuple)) or len(tf.nest.flatten(cell.state_size)) == 1:
        if len(flat) == 1:
            return flat[0]
    return keras_state


def from_tf1_state(cell: Any, tf1_state: Any) -> Any:
    """A state in TF1's structure → the Keras structure the loops take (what `initial_state=` becomes).

    - `LSTMStateTuple(c, h)` (ours, or any namedtuple with fields `c, h` such as tf-keras') → `[h, c]`, for
      any LSTM cell (Keras' own included);
    - a plain tuple for a `ku.tf1` LSTM cell is TF1's `(c, h)` (TF1 unpacks `c, h = state`), a plain list
      is refused (Keras' layers return `[h, c]`: ambiguous); for Keras' `LSTMCell` a list or tuple keeps
      Keras' `[h, c]`; a `(batch, 2H)` tensor for `state_is_tuple=False` is `[c, h]`;
    - a stack's tuple with one entry per layer → one Keras entry per layer (a flat Keras list is kept);
    - anything else is returned unchanged (the loops then check it against the cell's state sizes).

    Args:
        cell: The cell (or list of cells) the state is for.
        tf1_state: The state in TF1's structure (or already in Keras' structure).

    Returns:
        The state in Keras' structure.

    Raises:
        ValueError: A plain list `[., .]` for a `ku.tf1` LSTM cell (use `LSTMStateTuple(c, h)`).

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> c, h = np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")
    >>> h_first, c_second = ku.tf1.from_tf1_state(ku.tf1.BasicLSTMCell(3), ku.tf1.LSTMStateTuple(c, h))
    >>> float(h_first[0, 0]), float(c_second[0, 0])
    (0.0, 1.0)
    """
    cell = _as_cells(cell)
    if tf1_state is None:
        return None
    hook = getattr(cell, "_keras_unroll_from_tf1", None)  # a `ku.tf1` cell reads its own TF1 structure
    if hook is not None:
        converted = hook(tf1_state)
        if converted is not tf1_state:
            return converted
    cell = _inner(cell)
    if isinstance(cell, keras.layers.StackedRNNCells):
        if isinstance(tf1_state, (list, tuple)) and len(tf1_state) == len(cell.cells):
            return [from_tf1_state(sub, sub_state) for sub, sub_state in zip(cell.cells, tf1_state)]
        return tf1_state
    if lstm_like(cell):
        if _is_lstm_state_tuple(tf1_state):
            return [tf1_state.h, tf1_state.c]
        tf1_cell = _tf1_lstm(cell)
        if tf1_cell and isinstance(tf1_state, tuple) and len(tf1_state) == 2:
            c, h = tf1_state  # TF1's order for TF1's cells (TF1 unpacked `c, h = state`)
            return [h, c]
        if tf1_cell and isinstance(tf1_state, list) and len(tf1_state) == 2:
            # A list is what Keras' layers return ([h, c]); TF1 code writes (c, h). Refuse to guess.
            raise ValueError(
                f"An initial state for `ku.tf1.{type(cell).__name__}` in the functional API is TF1's "
                "`LSTMStateTuple(c, h)` (or a tuple `(c, h)`); a list is ambiguous, since Keras' layers return "
                "`[h, c]`. Give `ku.tf1.LSTMStateTuple(c=c, h=h)`. Received: initial_state=a list of 2 tensors"
            )
        if tf1_cell and not _state_is_tuple(cell) and not tf.nest.is_nested(tf1_state):
            state = tf.convert_to_tensor(tf1_state)
            if state.shape.rank == 2 and state.shape[-1] == cell.units + step_lib.output_size(cell):
                c, h = tf.split(state, [cell.units, step_lib.output_size(cell)], axis=1)
                return [h, c]
    return tf1_state
