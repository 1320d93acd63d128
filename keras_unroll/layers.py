"""`StaticUnroll` and `DynamicUnroll`: the two loops as drop-in Keras layers.

The layers are thin Keras glue over the planner (`keras_unroll.plan`): they check and store their arguments,
build the cell, and hand each call to `plan.run` asking for their loop (`"static"` or `"dynamic"`).
Everything else is shared, including what makes them drop-ins for `keras.layers.RNN(cell)` and
`keras.layers.SimpleRNN(units)`: SimpleRNN's cell arguments for an int `cell`, Keras' `stateful` machinery
(state variables fed to the loop as its initial state and assigned its final state), `reset_state`,
`get_initial_state`, `state_size` and `unroll`.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import warnings
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import _private, plan
from keras_unroll import step as step_lib
from keras_unroll.cell import BasicRNNCell, check_units, not_converted
from keras_unroll.cell import check_bool as _check_bool
from keras_unroll.loops import checkpointed as memory
from keras_unroll.types import (
    Activation,
    Cell,
    Constraint,
    Initializer,
    JitCompile,
    Nested,
    Recompute,
    Regularizer,
    State,
    TensorLike,
)


@dataclasses.dataclass(frozen=True)
class _CellArgs:
    """SimpleRNN's cell arguments and their defaults: taken when `cell` is an int, passed to the `BasicRNNCell`."""

    activation: Activation = "tanh"
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    recurrent_initializer: Initializer = "orthogonal"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer = None
    recurrent_regularizer: Regularizer = None
    bias_regularizer: Regularizer = None
    kernel_constraint: Constraint = None
    recurrent_constraint: Constraint = None
    bias_constraint: Constraint = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    seed: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def changed(self) -> Dict[str, Any]:
        """The arguments given another value than SimpleRNN's default, in the signature's order."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if not _is_default(getattr(self, field.name), field.default)
        }


_CELL_ARGS = tuple(field.name for field in dataclasses.fields(_CellArgs))


def _is_default(value: Any, default: Any) -> bool:
    if default is None or isinstance(default, bool):
        return value is default
    return type(value) in (str, int, float) and not isinstance(value, bool) and value == default


def _called_by_bidirectional() -> bool:
    """Whether a `keras.layers.Bidirectional` is calling this layer (the innermost layer call running now).

    Keras 3 passes a wrapped layer no sign of its wrapper; its own record of the running layer calls (its
    name scopes) tells, read through `_private.calling_layer`. Used only by `time_major` layers that return
    sequences.
    """
    return isinstance(_private.calling_layer(), keras.layers.Bidirectional)


def _check_float_dtype(layer: keras.layers.Layer) -> None:
    if not tf.as_dtype(layer.compute_dtype).is_floating:
        raise TypeError(
            f"{type(layer).__name__} computes in a floating-point dtype (the cell's weights and states); "
            'integer inputs are cast to it. Use e.g. `dtype="float32"`. '
            f"Received: dtype={layer.dtype_policy.name!r}"
        )


def _check_jit(value: Any) -> JitCompile:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise ValueError(f'`jit_compile` must be True, False or "auto". Received: jit_compile={value!r}')


def _integers_as(x: Any, dtype: Any) -> Any:
    """Integer sequences (token ids, counts) cast to the compute dtype, as Keras' RNN layers take them."""
    if isinstance(x, (tf.RaggedTensor, tf.SparseTensor)) or not hasattr(x, "dtype"):
        return x
    try:
        integer = tf.as_dtype(x.dtype).is_integer
    except TypeError:  # NumPy strings and objects: `to_float_tensor` refuses them with a clear message
        return x
    return tf.cast(x, dtype) if integer else x


def _shape_of(shape: Any) -> Any:
    if isinstance(shape, list) and shape and isinstance(shape[0], (list, tuple)):
        return f"a list of {len(shape)} steps of shape {tuple(shape[0])}"
    return tuple(shape)


class _Unroll(keras.layers.Layer):
    """What `StaticUnroll` and `DynamicUnroll` share: everything but the loop."""

    _loop: str  # the loop family the layer asks the planner for: "static" or "dynamic"; the rest follows

    # What the loop implies: a Python loop needs a known T, takes a list of steps and is Keras' `unroll=True`;
    # a while loop takes `swap_memory`/`recompute` (loops/checkpointed.py).
    _static_steps_required = property(lambda self: self._loop == "static")
    _list_input_allowed = property(lambda self: self._loop == "static")
    _memory_strategies = property(lambda self: self._loop == "dynamic")
    _other_layer = property(lambda self: "DynamicUnroll" if self._loop == "static" else "StaticUnroll")

    def __init__(
        self,
        cell: Cell,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: Optional[bool] = None,
        zero_output_for_mask: bool = False,
        *,
        time_major: bool = False,
        jit_compile: JitCompile = "auto",
        swap_memory: bool = False,
        recompute: Recompute = None,
        activation: Activation = "tanh",
        use_bias: bool = True,
        kernel_initializer: Initializer = "glorot_uniform",
        recurrent_initializer: Initializer = "orthogonal",
        bias_initializer: Initializer = "zeros",
        kernel_regularizer: Regularizer = None,
        recurrent_regularizer: Regularizer = None,
        bias_regularizer: Regularizer = None,
        kernel_constraint: Constraint = None,
        recurrent_constraint: Constraint = None,
        bias_constraint: Constraint = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_float_dtype(self)
        cell_args = _CellArgs(
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
        )
        self._units_cell = isinstance(cell, numbers.Integral) and not isinstance(cell, bool)
        self.cell = self._make_cell(cell, cell_args, kwargs)
        self.return_sequences = _check_bool(return_sequences, "return_sequences")
        self.return_state = _check_bool(return_state, "return_state")
        self.go_backwards = _check_bool(go_backwards, "go_backwards")
        self.stateful = _check_bool(stateful, "stateful")
        self._check_unroll(unroll)
        self.time_major = _check_bool(time_major, "time_major")
        self.zero_output_for_mask = _check_bool(zero_output_for_mask, "zero_output_for_mask")
        self.supports_masking = True
        self.jit_compile = _check_jit(jit_compile)
        self.swap_memory = memory.check_swap_memory(swap_memory)
        self.recompute = memory.check_recompute(recompute)
        self._check_memory_options(swap_memory, recompute)
        # The loops compile under XLA (model.fit(jit_compile=True) included), except cuDNN's: where the planner
        # takes it, `model.compile(jit_compile="auto")` keeps the step uncompiled, as for Keras' LSTM/GRU.
        self.supports_jit = not plan.takes_cudnn(self.cell, self._request(None))
        # As `keras.layers.RNN`: `None` until a stateful layer is built, then one non-trainable variable per
        # state, in the structure of `get_initial_state` (`Bidirectional.states` reads it).
        self.states: Any = None
        self._expected_batch_size: Optional[int] = None
        self._state_sizes = step_lib.state_sizes(self.cell)

    def _make_cell(self, cell: Cell, cell_args: _CellArgs, kwargs: Dict[str, Any]) -> keras.layers.Layer:
        """The cell to unroll: a `BasicRNNCell` from SimpleRNN's arguments for an int, else `cell` checked."""
        if self._units_cell:
            # As `keras.layers.SimpleRNN`: the cell takes the layer's dtype policy and trainability.
            units = check_units(cell, "cell")
            return BasicRNNCell(
                units, dtype=kwargs.get("dtype"), trainable=kwargs.get("trainable", True), **cell_args.as_dict()
            )
        changed = cell_args.changed()
        if changed:
            listed = ", ".join(f"{name}={value!r}" for name, value in changed.items())
            raise ValueError(
                f"{type(self).__name__} takes SimpleRNN's cell arguments ({', '.join(changed)}) only when `cell` "
                "is an int (a `BasicRNNCell` of that many units). With a cell object, give them to the cell, "
                f"e.g. `keras.layers.LSTMCell(8, {listed})`. Received: cell={cell!r}, {listed}"
            )
        return step_lib.as_cell(cell)

    def _check_unroll(self, unroll: Optional[bool]) -> None:
        if unroll is not None and _check_bool(unroll, "unroll") != self.unroll:
            raise ValueError(
                f"{type(self).__name__} {'unrolls every step in Python' if self.unroll else 'runs a tf.while_loop'}, "
                f"which is Keras' `unroll={self.unroll}`; for `unroll={unroll}` use `{self._other_layer}` (same "
                f"arguments, same results). Received: unroll={unroll!r}"
            )

    def _check_memory_options(self, swap_memory: Any, recompute: Any) -> None:
        """`swap_memory`/`recompute` (checked) against the loop and `jit_compile`; warns when XLA cannot apply."""
        if self.swap_memory or self.recompute is not None:
            if not self._memory_strategies:
                raise ValueError(
                    f"{type(self).__name__} does not take `swap_memory` or `recompute`: its graph already holds "
                    "every step (Python unrolling is for short sequences). For long sequences use "
                    '`DynamicUnroll(cell, swap_memory=True)` or `DynamicUnroll(cell, recompute="sqrt")`. '
                    f"Received: swap_memory={swap_memory!r}, recompute={recompute!r}"
                )
            if self.jit_compile is True:
                raise ValueError(
                    "`swap_memory`/`recompute` run their own uncompiled loops (XLA would keep every checkpoint "
                    'on the device); use `jit_compile=False` or "auto" with them. '
                    f"Received: jit_compile=True, swap_memory={swap_memory!r}, recompute={recompute!r}"
                )
        if self.jit_compile is True and self._loop == "dynamic" and not plan.compiles_alone(self.cell):
            warnings.warn(
                f"jit_compile=True: the while loop of {type(self.cell).__name__} cannot be XLA-compiled on its own "
                "(only the SimpleRNN family's fused loop can); it runs uncompiled. To compile it, compile the whole "
                "train step: `model.compile(..., jit_compile=True)`.",
                stacklevel=4,
            )

    # ------------------------------------------------------------------------- keras.layers.RNN API
    @property
    def unroll(self) -> bool:
        """Keras' `unroll` flag: `True` for `StaticUnroll`, `False` for `DynamicUnroll`."""
        return self._loop == "static"

    @property
    def state_size(self) -> List[Any]:
        """The cell's state sizes as a list, one entry per state (as `keras.layers.RNN.state_size`)."""
        return list(self._state_sizes)

    def get_initial_state(self, batch_size: Union[int, tf.Tensor]) -> List[Nested]:
        """The cell's initial state for `batch_size` rows, as a list (as `keras.layers.RNN`)."""
        states: List[Nested] = step_lib.zero_state(self.cell, batch_size, step_lib.compute_dtype(self.cell))
        return states

    @_private.no_automatic_dependency_tracking
    def _create_state_variables(self, batch_size: int) -> None:
        # Not tracked as weights, as in `keras.layers.RNN`: `get_weights()` matches a non-stateful layer's
        # (and SimpleRNN's), and `.keras` files hold no states (they start at zero after loading).
        with keras.name_scope(self.name, caller=self):
            self.states = keras.tree.map_structure(
                lambda value: keras.Variable(value, trainable=False, dtype=self.variable_dtype, name="rnn_state"),
                self.get_initial_state(batch_size),
            )
        self._expected_batch_size = batch_size

    def reset_state(self, states: Optional[Union[TensorLike, Sequence[TensorLike]]] = None) -> None:
        """Sets a stateful layer's states to zeros, or to `states` (an array per state, `(batch, size)`).

        A layer that is not stateful keeps no states: `reset_state()` does nothing there (as
        `keras.layers.RNN`), and giving `states` is an `AttributeError`.
        """
        if not self.stateful:
            if states is None:
                return
            raise AttributeError(
                f"`reset_state(states=...)` sets the states a stateful layer carries between batches; {self.name} "
                f"was built with `stateful=False`. Pass `initial_state=` to the call instead. "
                f"Received: states={states!r}"
            )
        if self.states is None:
            if states is None:
                return
            raise ValueError(
                f"{self.name} has no states yet: a stateful layer creates them when it is built, for its fixed batch "
                f"size. Call it once (or build the model) first. Received: states={states!r}"
            )
        variables = keras.tree.flatten(self.states)
        if states is None:
            for variable in variables:
                variable.assign(tf.zeros(variable.shape, variable.dtype))
            return
        values = keras.tree.flatten(states)
        if len(values) != len(variables):
            raise ValueError(
                f"{self.name} has {len(variables)} state(s) (state sizes {self.state_size}); `reset_state` needs one "
                f"value per state. Received: {len(values)} value(s)"
            )
        checked = []
        for i, (value, variable) in enumerate(zip(values, variables)):
            value = np.asarray(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"State {i} of {self.name} must have shape {tuple(variable.shape)} (batch, state size). "
                    f"Received: states[{i}].shape={tuple(value.shape)}"
                )
            checked.append(value)
        for value, variable in zip(checked, variables):
            variable.assign(value.astype(variable.dtype))

    def reset_states(self, states: Optional[Union[TensorLike, Sequence[TensorLike]]] = None) -> None:
        """Alias of `reset_state` (Keras 2's name)."""
        self.reset_state(states)

    def _cell_argument(self, name: str) -> Any:
        if not self._units_cell:
            raise AttributeError(
                f"`{name}` is an attribute of the layer only when it was built from an int (as SimpleRNN); "
                f"here it belongs to the cell: use `layer.cell.{name}`. Received: cell={self.cell!r}"
            )
        return getattr(self.cell, name)

    units = property(lambda self: self._cell_argument("units"), doc="The number of units (int `cell` only).")
    activation = property(lambda self: self._cell_argument("activation"))
    use_bias = property(lambda self: self._cell_argument("use_bias"))
    kernel_initializer = property(lambda self: self._cell_argument("kernel_initializer"))
    recurrent_initializer = property(lambda self: self._cell_argument("recurrent_initializer"))
    bias_initializer = property(lambda self: self._cell_argument("bias_initializer"))
    kernel_regularizer = property(lambda self: self._cell_argument("kernel_regularizer"))
    recurrent_regularizer = property(lambda self: self._cell_argument("recurrent_regularizer"))
    bias_regularizer = property(lambda self: self._cell_argument("bias_regularizer"))
    kernel_constraint = property(lambda self: self._cell_argument("kernel_constraint"))
    recurrent_constraint = property(lambda self: self._cell_argument("recurrent_constraint"))
    bias_constraint = property(lambda self: self._cell_argument("bias_constraint"))
    dropout = property(lambda self: self._cell_argument("dropout"))
    recurrent_dropout = property(lambda self: self._cell_argument("recurrent_dropout"))

    # ------------------------------------------------------------------------------------- shapes
    def _sequence_shape(self, sequences_shape: Any) -> Tuple[Any, ...]:
        """`(batch, time, features)` of the input, whatever form it came in."""
        if isinstance(sequences_shape, list) and sequences_shape and isinstance(sequences_shape[0], (list, tuple)):
            first = tuple(sequences_shape[0])
            if len(first) != 2:
                raise ValueError(
                    f"{type(self).__name__} takes a list of 2D (batch, features) steps. "
                    f"Received: sequences[0].shape={first}"
                )
            return (first[0], len(sequences_shape), first[1])
        shape = tuple(sequences_shape)
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects a 3D input (batch, time, features). Received: inputs.shape={shape}"
            )
        return (shape[1], shape[0], shape[2]) if self.time_major else shape

    def build(
        self, sequences_shape: Any = None, initial_state_shape: Any = None, sequence_length_shape: Any = None
    ) -> None:
        if not sequences_shape:  # Keras calls `build()` without a shape for an empty list input
            raise ValueError(
                f"{type(self).__name__} got no input steps: give a 3D tensor (batch, time, features) or a "
                "non-empty list of (batch, features) steps. Received: sequences=[] (no input shape)"
            )
        batch, steps, features = self._sequence_shape(sequences_shape)
        # Keras' symbolic path (`keras.Input`) uses `compute_output_shape`, never `call`: check T here too.
        step_lib.check_num_steps(steps, tuple(sequences_shape), self._static_steps_required, type(self).__name__)
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs the feature axis (last axis) of its input to be known. "
                f"Received: inputs.shape={tuple(sequences_shape)}"
            )
        step_lib.build_cell(self.cell, features, self.compute_dtype)
        self._features = features
        if self.stateful:
            if self.states is not None:  # rebuilt: start again from zeros, as `keras.layers.RNN`
                self.reset_state()
                return
            if batch is None:
                raise ValueError(
                    f"{type(self).__name__} with `stateful=True` carries each row's state to the same row of the "
                    "next batch, so the batch size must be static (fixed). Found a dynamic batch size. Fix: give the "
                    "model an input with a batch size, e.g. `keras.Input(shape=(20, 3), batch_size=32)` (or "
                    "`batch_shape=(32, 20, 3)`), and the same `batch_size` to `fit`/`predict`. "
                    f"Received: sequences.shape={_shape_of(sequences_shape)}"
                )
            self._create_state_variables(int(batch))

    def compute_output_shape(
        self, sequences_shape: Any, initial_state_shape: Any = None, sequence_length_shape: Any = None
    ) -> Any:
        list_input = (
            isinstance(sequences_shape, list) and sequences_shape and isinstance(sequences_shape[0], (list, tuple))
        )
        batch, steps, _ = self._sequence_shape(sequences_shape)
        units = step_lib.output_size(self.cell)
        if not self.return_sequences:
            output_shape: Any = (batch, units)
        elif list_input:
            output_shape = [(batch, units) for _ in range(steps)]
        else:
            output_shape = (steps, batch, units) if self.time_major else (batch, steps, units)
        if not self.return_state:
            return output_shape
        states = tf.nest.map_structure(lambda size: (batch, int(size)), self._state_sizes)
        return (output_shape, *states)  # a tuple, as `keras.layers.RNN` (`Bidirectional` concatenates tuples)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask and not isinstance(inputs, (list, tuple)) else None
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None for _ in self._state_sizes]
        return output_mask

    # --------------------------------------------------------------------------------------- call
    @not_converted
    def __call__(self, sequences: Any = None, *args: Any, **kwargs: Any) -> Any:
        if sequences is None or isinstance(sequences, (numbers.Number, str, bytes, dict)):
            what = f"a dict with keys {sorted(sequences)}" if isinstance(sequences, dict) else repr(sequences)
            raise TypeError(
                f"{type(self).__name__} takes a 3D tensor (batch, time, features)"
                f"{' or a list of (batch, features) steps' if self._list_input_allowed else ''}. "
                f"Received: sequences={what}"
            )
        if isinstance(sequences, (tf.RaggedTensor, tf.SparseTensor)):
            # Say "ragged" before `build` sees a shape with an undefined time axis and says something else.
            step_lib.to_float_tensor(sequences, "sequences", self.compute_dtype)
        if self.time_major and self.return_sequences and _called_by_bidirectional():
            raise ValueError(
                "`keras.layers.Bidirectional` reverses the backward layer's sequence output along axis 1, which "
                "is the batch axis of a `time_major=True` layer: the result would be silently wrong (Keras 3's "
                "`Bidirectional` has no time-major mode). Use `time_major=False` and give the input as "
                f"(batch, time, features), e.g. `keras.ops.transpose(x, (1, 0, 2))`. Received: {self.name} with "
                "time_major=True, return_sequences=True inside Bidirectional"
            )
        return super().__call__(sequences, *args, **kwargs)

    def _request(self, training: Any) -> plan.Request:
        return plan.Request(
            self._loop,
            training=training,
            return_all_outputs=self.return_sequences,
            jit_compile=self.jit_compile,
            swap_memory=self.swap_memory,
            recompute=self.recompute,
            serving=plan.serving_trace(training),
        )

    def call(
        self,
        sequences: Any,  # a 3D tensor, or a list of 2D steps (StaticUnroll): checked below
        initial_state: Optional[State] = None,
        mask: Optional[TensorLike] = None,
        training: Optional[bool] = None,
        sequence_length: Optional[TensorLike] = None,
    ) -> Union[Nested, List[Nested]]:
        list_input = isinstance(sequences, (list, tuple))
        # The loop runs in the cell's compute dtype; results are cast to the layer's (as `keras.layers.RNN`),
        # so a `mixed_float16` layer around a float32 cell returns float16.
        loop_dtype = step_lib.compute_dtype(self.cell)
        if list_input:
            if not self._list_input_allowed:
                raise TypeError(
                    f"{type(self).__name__} takes one 3D tensor (batch, time, features); a Python list of steps is "
                    "for `StaticUnroll`. Stack the list with `tf.stack(steps, axis=1)`. "
                    f"Received: a list of {len(sequences)} tensors"
                )
            if any(m is not None for m in tf.nest.flatten(mask)):
                raise ValueError(
                    f"{type(self).__name__} takes no `mask` with a list of steps (Keras masks belong to 3D "
                    "sequences); give `sequence_length=` instead, or stack the steps into a (batch, time, "
                    f"features) tensor. Received: mask={mask!r}"
                )
            inputs = step_lib.stack_inputs([_integers_as(step, loop_dtype) for step in sequences], loop_dtype)
            time_major = True
            mask = None
        else:
            inputs = step_lib.to_float_tensor(_integers_as(sequences, loop_dtype), "sequences", loop_dtype)
            time_major = self.time_major
        initial_state = step_lib.lstm_state_tuples_to_keras(initial_state)  # never ambiguous: (c, h) by name
        if self.stateful and self.states is not None:
            inputs = self._check_stateful_batch(
                inputs, batch_axis=1 if time_major else 0, serving=plan.serving_trace(training)
            )
            if initial_state is None:
                initial_state = keras.tree.map_structure(lambda variable: variable.value, self.states)
        prepared = step_lib.prepare(
            self.cell,
            inputs,
            time_major=time_major,
            initial_state=initial_state,
            sequence_length=sequence_length,
            mask=mask,
            go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask,
            require_static_steps=self._static_steps_required,
            layer_name=type(self).__name__,
        )
        outputs, last, state = plan.run(self.cell, prepared, self._request(training))
        if self.stateful and self.states is not None:
            # The final state of this batch is the initial state of the next (as `keras.layers.RNN`).
            for variable, value in zip(keras.tree.flatten(self.states), tf.nest.flatten(state)):
                variable.assign(tf.cast(value, variable.dtype))
        if not self.return_sequences:
            output: Any = last
        elif list_input:
            output = list(tf.unstack(outputs)) if isinstance(outputs, tf.Tensor) else list(outputs)
        else:
            if isinstance(outputs, list):
                outputs = tf.stack(outputs, axis=0)
            output = outputs if self.time_major else tf.transpose(outputs, [1, 0, 2])
        cast = lambda t: tf.cast(t, self.compute_dtype)  # noqa: E731  (one expression, mapped twice below)
        output = tf.nest.map_structure(cast, output)
        if self.return_state:
            return (output, *tf.nest.map_structure(cast, list(state)))  # a tuple, as `keras.layers.RNN`
        return output

    def _check_stateful_batch(self, inputs: tf.Tensor, batch_axis: int, serving: bool = False) -> tf.Tensor:
        """A stateful layer's batch size is the one its states were made for; returns `inputs`.

        In a serving graph (`plan.serving_trace`), an open batch becomes the states' batch by a reshape (which
        fails at run time for another batch): converters reject the assertion's control dependency.
        """
        expected = self._expected_batch_size
        actual = inputs.shape[batch_axis]
        message = (
            f"If an RNN is stateful, the batch size of the input sequences must be the same as the batch size of "
            f"its states ({self.name} was built for {expected} rows: keep `batch_size={expected}` in "
            f"`fit`/`predict`, and drop or pad a last, smaller batch). Expected batch size: {expected}. "
        )
        if actual is not None:
            if actual != expected:
                raise ValueError(message + f"Received: batch size {actual} (sequences.shape={tuple(inputs.shape)})")
            return inputs
        if serving:
            shape = [-1 if size is None else size for size in inputs.shape.as_list()]
            shape[batch_axis] = expected
            return tf.reshape(inputs, shape) if shape.count(-1) <= 1 else inputs
        check = tf.debugging.assert_equal(
            tf.shape(inputs)[batch_axis], expected, message="keras_unroll: " + message + "Received: another batch size"
        )
        with tf.control_dependencies([check]):
            return tf.identity(inputs)

    # ------------------------------------------------------------------------------------- config
    def get_config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "time_major": self.time_major,
            "zero_output_for_mask": self.zero_output_for_mask,
            "jit_compile": self.jit_compile,
            "swap_memory": self.swap_memory,
            "recompute": self.recompute,
        }
        if self._units_cell:
            # As `keras.layers.SimpleRNN`: the units and the cell arguments, not the cell (which they rebuild).
            cell_config = self.cell.get_config()
            config["cell"] = self.cell.units
            config.update({name: cell_config[name] for name in _CELL_ARGS})
        else:
            config["cell"] = keras.saving.serialize_keras_object(self.cell)
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "_Unroll":
        if not isinstance(config, dict):
            raise TypeError(
                f"{cls.__name__}.from_config takes the dict that `get_config()` returned. Received: config={config!r}"
            )
        config = copy.deepcopy(config)  # deserializing pops keys (StackedRNNCells' `cells`) from nested dicts
        cell = config.pop("cell", None)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell, custom_objects=custom_objects)
        return cls(cell, **config)


_SHARED_DOC = """
    An unroll runs `output, state = cell(x[t], state)` for every time step `t` and returns the outputs
    and the final state. `StaticUnroll` and `DynamicUnroll` are twins: the same constructor, the same call
    signature, the same results (to float rounding); they differ only in how they loop.

    Both stand in for `keras.layers.RNN(cell)` and, given an int, for `keras.layers.SimpleRNN(units)`:
    the same arguments in the same positional order, the same weights (`set_weights` moves them both
    ways), the same call order `(sequences, initial_state, mask, training)`, the same outputs.
    Keras' `unroll` is the choice of layer: `StaticUnroll` is `unroll=True`, `DynamicUnroll` `unroll=False`.

    Args:
        cell: A Keras RNN cell (`keras_unroll.BasicRNNCell`, `keras.layers.SimpleRNNCell`, `LSTMCell`,
            `GRUCell`, a custom cell with nested states), a list of cells (stacked, as
            `keras.layers.StackedRNNCells`), or a positive int: a `BasicRNNCell` of that many units built
            from SimpleRNN's cell arguments below. A whole RNN layer (`LSTM(8)`) is a `TypeError`: give its
            cell (`LSTMCell(8)`).
        return_sequences: Boolean. `True`: return the output at every step; `False`: return each row's
            last *valid* output (for masked or short rows, the output of their last valid step).
            Default: `False`.
        return_state: Boolean. `True`: return the tuple `(output, *states)` (flat, as `keras.layers.RNN`).
            Default: `False`.
        go_backwards: Boolean. `True`: process the sequence in reverse and return the reversed
            sequence (as `keras.layers.RNN`). Default: `False`.
        stateful: Boolean. `True`: the final state of each row in a batch is the initial state of the
            same row in the next batch (as `keras.layers.RNN`). Needs a fixed batch size
            (`keras.Input(shape, batch_size=...)`), the same `batch_size` in `fit`/`predict`, and
            `shuffle=False`; `reset_state()` zeroes the states, `reset_state(states)` sets them. The states
            are non-trainable variables outside `get_weights()` and `.keras` files. Default: `False`.
        unroll: Keras' flag, accepted when it names this layer's loop (`True` for `StaticUnroll`, `False`
            or `None` for `DynamicUnroll`); the other value is a `ValueError` naming the other layer.
        zero_output_for_mask: Boolean. With a Keras mask, `True` emits zeros at masked steps, `False`
            repeats the last valid output (Keras' default). `sequence_length` always emits zeros (TF1).
        time_major: Boolean (keyword only, as are the arguments below). `True`: inputs and sequence
            outputs are `(time, batch, ...)`. Default: `False`.
        jit_compile: `True`, `False` or `"auto"`. `True` compiles the loop with XLA in its own
            `tf.function(jit_compile=True)`, also inside `model.fit` on CPU (where Keras' own
            `jit_compile="auto"` means no XLA); `"auto"` picks the layer's measured default (below),
            and compiles only where it pays back (`DynamicUnroll`: T known and ≥ 64 steps in a graph, a
            shape's second eager call; `docs/performance.md`, "The first minute"). XLA compiles once per
            input shape. Default: `"auto"`.
        swap_memory: Boolean (`DynamicUnroll` only; `StaticUnroll` raises `ValueError`). `True` keeps
            what the backward pass needs, one `(batch, state)` carry per step, in host memory (`/CPU:0`)
            and brings it back one step at a time; each step is re-run once in the backward pass. TF2's
            `while_v2` ignores TF1's flag; this one works. Saves: device memory for activations becomes
            flat in T (argued from the graph's op placement; not yet measured on a GPU). Costs: a host
            copy of every step's state (T·B·H·4 bytes: 164 MB at T=5000, B=32, H=256), one device↔host
            copy per step each way, and one more forward pass; on a CPU, where host and device memory
            are one, it keeps about what the default does, at 1.5-2.6× its step time (figures:
            `docs/memory.md`). No XLA with it. Default: `False`.
        recompute: `None`, `"sqrt"` or a positive int k (`DynamicUnroll` only). Keep only every k-th
            state for the backward pass (k = ceil(sqrt(T)) for `"sqrt"`) and recompute each segment of k
            steps from its checkpoint there: activation memory `O((T/k + k)·B·H)` instead of
            `O(T·B·H)`, for one more forward pass: about a tenth of the default's activation memory
            at T=5000, growing like √T, at 1.2-1.4× its step time for `BasicRNNCell`/`SimpleRNNCell`
            (their segments run the fused kernel) and about 2× for LSTM/GRU (their segments run the
            generic step); figures in `docs/memory.md`. With `return_sequences=True` the `(T, B, H)`
            outputs and their gradient remain. Combines with `swap_memory=True` (checkpoints on the
            host). No XLA with it. Default: `None`.
        activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
        kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
        recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed: `keras.layers.SimpleRNN`'s
            cell arguments, with its defaults, for an int `cell` (then also readable as layer attributes:
            `layer.units`, `layer.activation`, ...). With a cell object a non-default value is a
            `ValueError`: give it to the cell. (`activity_regularizer`, a base layer argument, applies to
            the layer's outputs with any cell, as in Keras.)
        **kwargs: Base layer arguments (`name`, `dtype`, `activity_regularizer`, ...).

    Call arguments:
        sequences: A 3D tensor `(batch, time, features)`; integer tensors are cast to the compute dtype
            (as Keras does), bool and string are a `TypeError`.{list_note}
        initial_state: Optional initial state: a tensor `(batch, units)` for single-state cells, or a list
            of tensors (one per state). Default: the cell's zero state (a stateful layer's stored states).
        mask: Optional boolean tensor `(batch, time)` (`(time, batch)` with `time_major=True`), Keras
            semantics (from `Embedding(mask_zero=True)` or `Masking`, passed automatically): masked steps
            copy the state through and emit the last valid output (or zeros with `zero_output_for_mask=True`).
            Not taken with a list of steps: give `sequence_length` there.
        training: Python boolean, passed to the cell (dropout, recurrent dropout).
        sequence_length: Optional int tensor `(batch,)`, keyword only, values in `[0, T]`, TF1 semantics:
            steps at `t >= length` emit zeros and copy the state through.

    Input shape:
        3D tensor `(batch, time, features)` (`(time, batch, features)` with `time_major=True`).

    Output shape:
        - `return_sequences=True`: `(batch, time, units)`; else `(batch, units)`.
        - `return_state=True`: a tuple `(output, *states)`, each state `(batch, state_size)`.
"""


@keras.saving.register_keras_serializable(package="keras_unroll")
class StaticUnroll(_Unroll):
    __doc__ = (
        """Unrolls an RNN cell over time in Python: one copy of the step in the graph per time step.

    TF1's `static_rnn` as a Keras layer. The graph grows linearly with T (`BasicRNNCell`: 4.25 ops a
    step forward and 9.5 with the backward pass, input products included, measured with
    `keras_unroll.inspect.graph_stats`), so tracing takes seconds at T≈1000; in exchange there is no loop
    machinery.
    It needs a known number of time steps: use `DynamicUnroll` for unknown or long T.

    Speed: `BasicRNNCell`/`SimpleRNNCell` get the input projection hoisted out of the steps (four steps per
    matrix product when a step is small, so the products overlap the recurrence on another core; one
    product for large steps) and plain autodiff; `LSTMCell`/`GRUCell` get the hoisted input projection;
    other cells run the generic step. `jit_compile="auto"` means *no* XLA here: compiling a Python-unrolled
    graph takes seconds to minutes (24 s at T=100 on a 2-core CPU, tens of seconds and ~1.5 GB at T=1000),
    and it paid off only at the compute-bound benchmark shape (train step 0.73-0.81× of uncompiled at
    256·50·64·256, 1.15-1.6× at 32·28·28·128 and 64·100·16·64; `docs/performance.md`).
"""
        + _SHARED_DOC.format(
            list_note=" `StaticUnroll` also takes a Python list of T `(batch, features)` tensors (TF1's "
            "`[X0, X1]`) and then returns a list of per-step outputs."
        )
        + """
    Example:

    >>> import numpy as np, keras
    >>> import keras_unroll as ku
    >>> model = keras.Sequential([keras.Input((20, 1)), ku.StaticUnroll(ku.BasicRNNCell(8)), keras.layers.Dense(1)])
    >>> model(np.zeros((2, 20, 1), "float32")).shape            # (batch, 1)
    TensorShape([2, 1])
"""
    )

    _loop = "static"


@keras.saving.register_keras_serializable(package="keras_unroll")
class DynamicUnroll(_Unroll):
    __doc__ = (
        """Unrolls an RNN cell over time with one `tf.while_loop` inside a `tf.function`.

    TF1's `dynamic_rnn` as a Keras layer. The graph holds the step once whatever T is, and T may be unknown
    (`None`) until run time. The loop always has `maximum_iterations`, so it compiles under XLA.

    Speed: `BasicRNNCell`/`SimpleRNNCell` run a fused loop (input projection hoisted into one matrix
    product, a hand-written backward pass whose loop only does `dz_t Uᵀ`), and `jit_compile="auto"`
    compiles it with XLA: per-step overhead drops from ~10 µs to ~2.5 µs, which measured 0.2-0.3× the time
    of `keras.layers.SimpleRNN` for a training step at T=1000 (`docs/performance.md`); one compile per
    input shape (~1-2 s), so under "auto" only where that pays back: sequences of 64 steps or more
    (`Tuning.compile_min_steps`), eagerly from a shape's second call; shorter ones run the same fused loop
    uncompiled. For large steps (`B·H·H ≥ 2²¹` with at most 256 units) only the forward loop is
    compiled: TensorFlow's own matmul kernels ran the backward loop 24-41 % faster than XLA's there.
    Other cells run the generic step without XLA under "auto": TensorFlow cannot
    differentiate a `tf.while_loop` compiled as a function of its own (its gradient accumulators may not
    cross the XLA boundary); `jit_compile=True` then warns and runs uncompiled, and
    `model.compile(jit_compile=True)` compiles the whole step instead. The compiled fused loop takes any
    first-order tape (persistent, nested, `jacobian`, `model.fit`); second-order gradients and
    `tf.autodiff.ForwardAccumulator` raise `NotImplementedError` and need `jit_compile=False`.

    On a GPU, an `LSTMCell`/`GRUCell` that meets Keras' cuDNN conditions runs cuDNN's kernel, as
    `keras.layers.LSTM`/`GRU` do (not with `jit_compile=True`; `supports_jit` is then False, as theirs):
    `docs/performance.md`, "On a GPU: cuDNN".
"""
        + _SHARED_DOC.format(list_note="")
        + """
    Example:

    >>> import numpy as np, keras
    >>> import keras_unroll as ku
    >>> model = keras.Sequential([keras.Input((None, 1)), ku.DynamicUnroll(8), keras.layers.Dense(1)])
    >>> model(np.zeros((2, 50, 1), "float32")).shape            # any length: (batch, 1)
    TensorShape([2, 1])

    `keras.layers.SimpleRNN`'s arguments, unchanged, and a stateful layer (a fixed batch size):

    >>> rnn = ku.DynamicUnroll(20, return_sequences=True, activation="relu", dropout=0.1, stateful=True)
    >>> model = keras.Sequential([keras.Input((None, 3), batch_size=4), rnn])
    >>> model(np.ones((4, 7, 3), "float32")).shape               # (batch, time, units)
    TensorShape([4, 7, 20])
    >>> [tuple(s.shape) for s in rnn.states]                     # the state the next batch starts from
    [(4, 20)]
    >>> rnn.reset_states()                                       # back to zeros
"""
    )

    _loop = "dynamic"


def _symbolic_rnn(
    kind: Literal["static", "dynamic"],
    cell: Cell,
    inputs: Union[TensorLike, Sequence[TensorLike]],
    *,
    initial_state: Optional[State] = None,
    sequence_length: Optional[TensorLike] = None,
    time_major: bool = False,
    training: Optional[bool] = None,
    **options: Any,
) -> Optional[Tuple[Any, State]]:
    """`static_rnn`/`dynamic_rnn` on Keras symbolic tensors (`keras.Input`); `None` for ordinary tensors.

    A functional model records layer calls, so the TF1 line `outputs, state = static_rnn(cell, [X0, X1])`
    becomes one `StaticUnroll` (or `DynamicUnroll`) call returning every step's output and the final state,
    with the function's TF1 semantics (`sequence_length`: zeros past each row's end, its last valid state).
    """
    tensors = keras.tree.flatten([inputs, initial_state, sequence_length])
    if not any(keras.backend.is_keras_tensor(t) for t in tensors):
        return None
    layer_cls = StaticUnroll if kind == "static" else DynamicUnroll
    layer = layer_cls(cell, return_sequences=True, return_state=True, time_major=time_major, **options)
    output, *states = layer(inputs, initial_state=initial_state, training=training, sequence_length=sequence_length)
    return output, step_lib.unpack_state(layer.cell, states)
