"""The hoisted LSTM/GRU step: the input projection of every gate done once, outside the steps.

`LSTMCell`/`GRUCell` (implementation 2, no recurrent dropout) compute `x_t W` inside every step. Here `x W`
(and GRU's input bias) is one `[T·B, F] × [F, kH]` product before the loop, and the loop runs
`ProjectedCell`, the recurrent half of the cell, over the projected inputs with the generic step. Used by the
Python-unrolled loop only: in a `tf.while_loop`, plain autodiff of reading a hoisted differentiable tensor
costs O(T²) (docs/performance.md), so the while loop keeps the cell as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import keras
import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.kernels.simple_rnn import _as_tensor, project


def kind(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if the input projection of `cell` can be hoisted, else None."""
    for name, base in (("lstm", keras.layers.LSTMCell), ("gru", keras.layers.GRUCell)):
        if isinstance(cell, base) and type(cell).call is base.call:
            if getattr(cell, "implementation", 2) != 2 or cell.recurrent_dropout > 0:
                return None
            return name
    return None


class ProjectedCell:
    """The recurrent half of an `LSTMCell`/`GRUCell`, fed with inputs already multiplied by the kernel."""

    _call_has_training_arg = False

    def __init__(self, cell: Any, kind_name: str, dtype: Any) -> None:
        self.kind = kind_name
        self.state_size = cell.state_size
        self.output_size = cell.units
        self.units = cell.units
        self.activation = cell.activation
        self.recurrent_activation = cell.recurrent_activation
        self.recurrent_kernel = _as_tensor(cell.recurrent_kernel, dtype)
        self.bias = _as_tensor(cell.bias, dtype) if cell.use_bias else None
        self.reset_after = getattr(cell, "reset_after", False)

    def __call__(self, xk: tf.Tensor, states: Any) -> Tuple[tf.Tensor, Any]:
        if self.kind == "lstm":
            h_tm1, c_tm1 = states
            z = xk + tf.matmul(h_tm1, self.recurrent_kernel)
            if self.bias is not None:
                z = z + self.bias
            z0, z1, z2, z3 = tf.split(z, 4, axis=1)
            i = self.recurrent_activation(z0)
            f = self.recurrent_activation(z1)
            c = f * c_tm1 + i * self.activation(z2)
            o = self.recurrent_activation(z3)
            h = o * self.activation(c)
            return h, [h, c]
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        units = self.units
        x_z, x_r, x_h = tf.split(xk, 3, axis=-1)
        if self.reset_after:
            inner = tf.matmul(h_tm1, self.recurrent_kernel)
            if self.bias is not None:
                inner = inner + self.bias[1]
        else:
            inner = tf.matmul(h_tm1, self.recurrent_kernel[:, : 2 * units])
        z = self.recurrent_activation(x_z + inner[:, :units])
        r = self.recurrent_activation(x_r + inner[:, units : 2 * units])
        if self.reset_after:
            recurrent_h = r * inner[:, 2 * units :]
        else:
            recurrent_h = tf.matmul(r * h_tm1, self.recurrent_kernel[:, 2 * units :])
        hh = self.activation(x_h + recurrent_h)
        h = z * h_tm1 + (1 - z) * hh
        return h, [h]


def project_gated(
    cell: Any, kind_name: str, prepared: step_lib.Prepared, masks: step_lib.DropoutMasks
) -> Tuple[ProjectedCell, step_lib.Prepared]:
    """Hoists `x W` (and GRU's input bias) out of the loop: returns the recurrent half and the new inputs."""
    inputs = prepared.inputs
    dtype = inputs.dtype
    dp_mask, _ = masks.of(cell)
    if dp_mask is not None:
        inputs = inputs * dp_mask
    bias = None
    if kind_name == "gru" and cell.use_bias:
        bias = _as_tensor(cell.bias, dtype)
        bias = bias[0] if cell.reset_after else bias
    xk = project(inputs, _as_tensor(cell.kernel, dtype), bias)
    projected = ProjectedCell(cell, kind_name, dtype)
    return projected, dataclasses.replace(prepared, inputs=xk, features=int(xk.shape[-1]))
