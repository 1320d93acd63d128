"""`BasicRNNCell`: TF1's `BasicRNNCell` as a Keras 3 RNN cell.

The cell is weight-compatible with `keras.layers.SimpleRNNCell` (it *is* one, with TF1's spelling and checks
added), so weights move both ways with `get_weights()` / `set_weights()`, and every loop in this package
recognises it for its fast paths.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, TypeVar, Union, cast

import keras
import numpy as np
import tensorflow as tf

from keras_unroll.types import Activation, Constraint, DTypeLike, Initializer, Regularizer

_Function = TypeVar("_Function", bound=Callable[..., Any])


def not_converted(function: _Function) -> _Function:
    """Marks a function or method that AutoGraph does not convert when a user's `tf.function` calls it: TF1's
    functions (`dynamic_rnn`, `static_rnn`, `raw_rnn`, the bidirectional ones) and the `__call__` of the layers and
    cells, as TensorFlow's own `tf.compat.v1.nn` functions and Keras' `Layer.__call__` are not converted.

    The package builds its loops with `tf.while_loop` and Python `for`s already. Converted, its code ran through
    AutoGraph's call wrappers: a first trace took 12-15 s for one `dynamic_rnn` and one `static_rnn` of a
    `BasicRNNCell`. What such a function calls (the cell, a `raw_rnn` `loop_fn`) runs unconverted, as under TF1's
    functions and inside Keras' layers.
    """
    return cast(_Function, tf.autograph.experimental.do_not_convert(function))


def check_bool(value: Any, name: str) -> bool:
    """Returns `value` as a bool (Python's or NumPy's), or raises a `TypeError` that echoes it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


def check_units(units: Any, name: str = "units") -> int:
    """Returns `units` as an int, or raises a `ValueError`/`TypeError` that echoes it."""
    if isinstance(units, bool) or not isinstance(units, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive integer (the number of units in the cell). "
            f"Received: {name}={units!r} of type {type(units).__name__}"
        )
    if units <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer (the number of units in the cell). Received: {name}={units}"
        )
    return int(units)


def _check_rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value}")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_unroll")
class BasicRNNCell(keras.layers.SimpleRNNCell):
    """The basic (Elman) RNN cell: `h_t = activation(x_t W + h_{t-1} U + b)`.

    TF1's `tf.contrib.rnn.BasicRNNCell` for Keras 3. Its weights are exactly those of
    `keras.layers.SimpleRNNCell`: `get_weights()` returns `[kernel (F, H), recurrent_kernel (H, H),
    bias (H,)]`. TF1 kept one concatenated `kernel` of shape `(F + H, H)`; `keras_unroll.load_tf1_weights`
    splits such a checkpoint into this cell. The output is the new state (`output_size == state_size ==
    units`).

    Use it with `StaticUnroll`, `DynamicUnroll`, `static_rnn`, `dynamic_rnn` or `keras.layers.RNN`.

    Args:
        units: Positive integer, the number of units `H`. `num_units` (TF1's spelling) is accepted too.
        activation: Activation function. Default: `"tanh"`.
        use_bias: Boolean, whether the cell adds the bias `b`. Default: `True`.
        kernel_initializer: Initializer for `W`. Default: `"glorot_uniform"`.
        recurrent_initializer: Initializer for `U`. Default: `"orthogonal"`.
        bias_initializer: Initializer for `b`. Default: `"zeros"`.
        kernel_regularizer: Regularizer for `W`. Default: `None`.
        recurrent_regularizer: Regularizer for `U`. Default: `None`.
        bias_regularizer: Regularizer for `b`. Default: `None`.
        kernel_constraint: Constraint for `W`. Default: `None`.
        recurrent_constraint: Constraint for `U`. Default: `None`.
        bias_constraint: Constraint for `b`. Default: `None`.
        dropout: Float in `[0, 1)`, fraction of the inputs to drop (one mask for the whole sequence).
        recurrent_dropout: Float in `[0, 1)`, fraction of the recurrent state to drop.
        seed: Random seed for dropout.
        num_units: TF1 alias of `units`; give one of the two.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequence: A 2D tensor `(batch, features)`, the input at one time step.
        states: A list holding one 2D tensor `(batch, units)`, the previous state.
        training: Python boolean; dropout is applied only when `True`.

    Returns:
        `(output, [new_state])`, where `output` is `new_state`, both `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.BasicRNNCell(num_units=5)
    >>> x = np.zeros((4, 3), "float32")                # (batch, features)
    >>> h, [h_again] = cell(x, [cell.zero_state(4)])
    >>> tuple(h.shape)                                  # (batch, units)
    (4, 5)
    """

    dtype_policy: Any  # Keras' property, which `_keras_unroll_adopt_dtype` sets (a note for mypy only)

    def __init__(
        self,
        units: Optional[int] = None,
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
        num_units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if units is None and num_units is None:
            raise TypeError(
                "BasicRNNCell needs the number of units: pass `units` (or TF1's `num_units`). "
                "Received: units=None, num_units=None"
            )
        if units is not None and num_units is not None and units != num_units:
            raise ValueError(
                "Give either `units` or its TF1 alias `num_units`, not two different values. "
                f"Received: units={units!r}, num_units={num_units!r}"
            )
        units = check_units(units if units is not None else num_units, "units" if units is not None else "num_units")
        dropout = _check_rate(dropout, "dropout")
        recurrent_dropout = _check_rate(recurrent_dropout, "recurrent_dropout")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        if not isinstance(use_bias, bool):
            raise TypeError(f"`use_bias` must be a bool. Received: use_bias={use_bias!r}")
        try:
            keras.activations.get(activation)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`activation` must be a Keras activation name (e.g. 'tanh', 'relu') or a callable. "
                f"Received: activation={activation!r}"
            ) from error
        self.__dict__["_keras_unroll_dtype_given"] = kwargs.get("dtype") is not None  # TF1's dtype rule, below
        super().__init__(
            units=units,
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
            **kwargs,
        )
        if dropout == 0.0 and recurrent_dropout == 0.0:
            # TF1's cell has no dropout and so no variable for it: Keras' seed state would be a non-trainable
            # variable TF1 code does not expect (checkpoints, `non_trainable_variables`). Kept with dropout.
            self._tracker.untrack(self.seed_generator)

    @property
    def num_units(self) -> int:
        """TF1's name for `units`."""
        return int(self.units)

    def zero_state(self, batch_size: Union[int, tf.Tensor], dtype: Optional[DTypeLike] = None) -> tf.Tensor:
        """TF1's `cell.zero_state(batch_size, dtype)`: a `(batch_size, units)` tensor of zeros."""
        return tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)

    @not_converted
    def __call__(self, inputs: Any, states: Any = None, *args: Any, **kwargs: Any) -> Any:
        """TF1's dtype rule on a direct call: an unbuilt cell whose `dtype` was not given is built in its first
        input's float dtype; a cell narrower than its inputs (float32 for float64) raises a `TypeError`."""
        if "state" in kwargs and states is None:  # TF1 wrote `cell(inputs, state=...)`
            states = kwargs.pop("state")
        dtype = getattr(inputs, "dtype", None)
        try:
            dtype = None if dtype is None else tf.as_dtype(dtype)
        except TypeError:  # pragma: no cover - a dtype TF does not know: Keras decides
            dtype = None
        if dtype is not None and dtype.is_floating:
            if not self.built:
                self._keras_unroll_adopt_dtype(dtype)
            policy = self.dtype_policy
            weights = tf.as_dtype(policy.variable_dtype)
            if policy.compute_dtype == policy.variable_dtype and dtype.size > weights.size:
                raise TypeError(
                    f"BasicRNNCell {self.name!r} computes in {weights.name} (TF1 builds a cell in the dtype of its "
                    "first input; a cell given `dtype=` keeps it), so float inputs wider than that would lose "
                    f"precision. Cast the inputs (`tf.cast(x, '{weights.name}')`) or use a new cell. "
                    f"Received: inputs.dtype={dtype.name}"
                )
        return super().__call__(inputs, states, *args, **kwargs)

    def _keras_unroll_adopt_dtype(self, dtype: Any) -> None:
        """An unbuilt cell whose `dtype` was not given takes `dtype` (a float type): TF1's rule, for the loops."""
        dtype = tf.as_dtype(dtype)
        if self.built or not dtype.is_floating or self.__dict__.get("_keras_unroll_dtype_given", True):
            return
        policy = self.dtype_policy
        if policy.compute_dtype == policy.variable_dtype and policy.compute_dtype != dtype.name:
            self.dtype_policy = keras.DTypePolicy(dtype.name)

    def get_initial_state(
        self,
        inputs: Any = None,  # a tensor, or Keras' positional batch size
        batch_size: Optional[Union[int, tf.Tensor]] = None,
        dtype: Optional[DTypeLike] = None,
    ) -> Any:
        """TF1's `get_initial_state(inputs=None, batch_size=None, dtype=None)`, or Keras' `(batch_size)`.

        Given `inputs` or `dtype`, TF1's contract: the batch size and dtype come from `inputs` (a
        `batch_size`/`dtype` that disagrees with them is a `ValueError`), and the answer is
        `zero_state(batch_size, dtype)`, one tensor. Given only `batch_size`, Keras' answer (a list holding
        one zero tensor), as `keras.layers.RNN` asks for it.

        Raises:
            ValueError: Neither a batch size nor a dtype can be known, or they disagree with `inputs`.
        """
        if inputs is not None and not hasattr(inputs, "shape"):  # Keras' positional `get_initial_state(batch)`
            inputs, batch_size = None, inputs
        if inputs is None and dtype is None:
            if batch_size is None:
                raise ValueError(
                    "batch_size and dtype cannot be None while constructing initial state: give `inputs`, or "
                    f"`batch_size` (and `dtype`). Received: batch_size={batch_size}, dtype={dtype}"
                )
            return super().get_initial_state(batch_size=batch_size)
        if inputs is not None:
            inputs = tf.convert_to_tensor(inputs)
            rows = inputs.shape[0] if inputs.shape.rank else None
            if batch_size is not None:
                wanted = tf.get_static_value(batch_size) if tf.is_tensor(batch_size) else batch_size
                if rows != wanted:
                    raise ValueError(
                        "batch size from input tensor is different from the input param `batch_size`. "
                        f"Received: inputs batch={rows}, batch_size={batch_size}"
                    )
            if dtype is not None and inputs.dtype != tf.as_dtype(dtype):
                raise ValueError(
                    "dtype from input tensor is different from the input param `dtype`. "
                    f"Received: inputs.dtype={inputs.dtype.name}, dtype={tf.as_dtype(dtype).name}"
                )
            batch_size = rows if rows is not None else tf.shape(inputs)[0]
            dtype = inputs.dtype
        if batch_size is None:
            raise ValueError(
                "batch_size and dtype cannot be None while constructing initial state: give `inputs` or "
                f"`batch_size`. Received: batch_size=None, dtype={dtype}"
            )
        return self.zero_state(batch_size, dtype)
