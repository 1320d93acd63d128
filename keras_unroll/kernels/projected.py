"""The hoisted LSTM/GRU step: the input projection of every gate done once, outside the steps.

`LSTMCell`/`GRUCell` (implementation 2, no recurrent dropout) compute `x_t W` inside every step. Here
`x W + b` (LSTM's bias, GRU's input bias) is computed outside the steps, and the loop runs `ProjectedCell`,
the recurrent half of the cell, over the projected inputs with the generic step. Small steps are projected
a few steps per `[k·B, F] × [F, gH]` product (`chunk`), so that on a multi-core CPU the next chunk's product
runs beside the recurrence instead of before it (the same trade-off as the SimpleRNN kernel's; figures in
docs/performance.md); large steps take one product for the whole sequence. Used by the Python-unrolled loop
only (the while loop has the fused kernel of `kernels/gated.py`).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.kernels import gated
from keras_unroll.kernels.simple_rnn import _as_tensor, _project_in_chunks, project


def kind(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if the input projection of `cell` can be hoisted, else None: a cell of the fused
    kernel's families (`gated.family`) with one input product (`implementation=2`) and no recurrent dropout."""
    name = gated.family(cell)
    if name is None or getattr(cell, "implementation", 2) != 2 or cell.recurrent_dropout > 0:
        return None
    return name


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
        # LSTM's bias is in the projected inputs; GRU's recurrent bias (reset_after) stays in the step.
        self.bias = _as_tensor(cell.bias, dtype) if cell.use_bias and kind_name == "gru" else None
        self.reset_after = getattr(cell, "reset_after", False)

    def __call__(self, xk: tf.Tensor, states: Any) -> Tuple[tf.Tensor, Any]:
        if self.kind == "lstm":
            h_tm1, c_tm1 = states
            z = xk + tf.matmul(h_tm1, self.recurrent_kernel)
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
    cell: Any, kind_name: str, prepared: step_lib.Prepared, masks: step_lib.DropoutMasks, chunk: int = 0
) -> Tuple[ProjectedCell, List[tf.Tensor]]:
    """Hoists `x W + b` out of the steps, `chunk` steps per product (0: one product).

    Returns the recurrent half and its T inputs, one `(B, gH)` tensor per step.
    """
    inputs = prepared.inputs
    dtype = inputs.dtype
    dp_mask, _ = masks.of(cell)
    if dp_mask is not None:
        inputs = inputs * dp_mask
    bias = None
    if cell.use_bias:
        bias = _as_tensor(cell.bias, dtype)
        bias = bias[0] if kind_name == "gru" and cell.reset_after else bias
    kernel = _as_tensor(cell.kernel, dtype)
    if chunk and chunk < prepared.num_steps:
        steps = _project_in_chunks(inputs, kernel, bias, chunk, prepared.num_steps, prepared.features)
    else:
        steps = tf.unstack(project(inputs, kernel, bias), num=prepared.num_steps)
    return ProjectedCell(cell, kind_name, dtype), steps
