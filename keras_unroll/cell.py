"""`BasicRNNCell`: TF1's `BasicRNNCell` as a Keras 3 RNN cell.

The cell is weight-compatible with `keras.layers.SimpleRNNCell` (it *is* one, with TF1's spelling and checks
added), so weights move both ways with `get_weights()` / `set_weights()`, and every loop in this package
recognises it for its fast paths.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import keras
import tensorflow as tf


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

    def __init__(
        self,
        units: Optional[int] = None,
        activation: Any = "tanh",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
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

    @property
    def num_units(self) -> int:
        """TF1's name for `units`."""
        return self.units

    def zero_state(self, batch_size: int, dtype: Any = None) -> tf.Tensor:
        """TF1's `cell.zero_state(batch_size, dtype)`: a `(batch_size, units)` tensor of zeros."""
        return tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)
