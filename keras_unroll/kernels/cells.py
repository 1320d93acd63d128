"""The cell families of the fused recurrence: one step's maths and its derivative, one mode per family.

cuDNN's model: one RNN, a mode per cell. The recurrence (`kernels/recurrence.py`) is the same for every
family; what differs is this module's `forward_step`, `backward_step` and `recurrent_grads`. The modes, as
Keras 3 computes them (`keras/src/layers/rnn/simple_rnn.py`, `lstm.py`, `gru.py`), gate order as in the
kernels' columns, `xw = x W + b` projected outside the step:

    simple_rnn:           h_t = act(xw_t + h_{t-1} U)
    lstm (i, f, c, o):    z = xw_t + h_{t-1} U;  i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = act(z_c)
                          c_t = f·c_{t-1} + i·g;  h_t = o·act(c_t)
    gru (reset_after):    m = h_{t-1} U + b_rec;  z, r = σ(xw_z + m_z), σ(xw_r + m_r)
                          hh = act(xw_h + r·m_h);  h_t = z·h_{t-1} + (1 - z)·hh
    gru_rb (reset before): z, r = σ(xw_z + h_{t-1} U_z), σ(xw_r + h_{t-1} U_r)
                          hh = act(xw_h + (r·h_{t-1}) U_h);  h_t = z·h_{t-1} + (1 - z)·hh

(σ is the cell's `recurrent_activation`, act its `activation`.) Recurrent dropout draws one mask per gate
(Keras' `implementation=1`; SimpleRNN has one gate): `rec_mask` is those masks stacked, `(G, B, H)`, and
gate k's recurrent product reads `h_{t-1}·rec_mask[k]` (for the reset-before GRU candidate:
`r·(h_{t-1}·rec_mask[2])`).

Activations whose derivative is computed from the output in one op are supported: `tanh`, `sigmoid`,
`hard_sigmoid` (gated cells), `relu`, `linear` (`derivative`). `hard_sigmoid`'s derivative is read from its
output (`1/6` where `0 < y < 1`), so at exactly `x = ±3` it is 0 where Keras' autodiff of `relu6` says `1/6`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, cast

import keras
import tensorflow as tf

Derivative = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

FAMILIES = ("simple_rnn", "lstm", "gru", "gru_rb")


# ----------------------------------------------------------------------------------- derivatives
def _hard_sigmoid_grad(y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    inside = tf.logical_and(y > 0, y < 1)
    return tf.where(inside, g * tf.constant(1.0 / 6.0, g.dtype), tf.zeros_like(g))


def _derivatives(gated: bool) -> List[Tuple[Tuple[Any, ...], Derivative]]:
    """activations -> `(y, g) -> g * activation'(x)` from the output `y = activation(x)`, in one op each
    (measured: the backward loop is op-bound; `1 - h*h` and a product are three ops, `TanhGrad` one)."""
    table = [
        ((keras.activations.tanh, keras.ops.tanh, tf.tanh), lambda h, g: tf.raw_ops.TanhGrad(y=h, dy=g)),
        (
            (keras.activations.sigmoid, keras.ops.sigmoid, tf.sigmoid, tf.nn.sigmoid),
            lambda h, g: tf.raw_ops.SigmoidGrad(y=h, dy=g),
        ),
        (
            (keras.activations.relu, keras.ops.relu, tf.nn.relu),
            lambda h, g: tf.raw_ops.ReluGrad(gradients=g, features=h),
        ),
        ((keras.activations.linear, None), lambda h, g: g),
    ]
    if gated:
        table.append(((keras.activations.hard_sigmoid,), _hard_sigmoid_grad))
    return table


def _known(found: Optional[Derivative]) -> Derivative:
    """A derivative `make_mode` checked exists (a `Mode` is made only for activations `derivative` knows)."""
    if found is None:
        raise ValueError("The fused recurrence has no derivative for this activation (see `make_mode`).")
    return found


def derivative(activation: Any, gated: bool = False) -> Optional[Derivative]:
    """The derivative (from the output) of `activation` if the fused recurrence knows it, else None."""
    for activations, found in _derivatives(gated):
        if any(activation is known for known in activations):
            return found
    return None


# ------------------------------------------------------------------------------------ the modes
@dataclasses.dataclass(frozen=True)
class Mode:
    """What fixes the maths of a recurrence (hashable: it keys the compiled passes).

    Attributes:
        family: `"simple_rnn"`, `"lstm"`, `"gru"` (`reset_after=True`) or `"gru_rb"` (`reset_after=False`).
        activation: The cell's activation.
        recurrent_activation: The gates' activation (None for SimpleRNN).
    """

    family: str
    activation: Any
    recurrent_activation: Any = None

    @property
    def gates(self) -> int:
        return {"simple_rnn": 1, "lstm": 4}.get(self.family, 3)

    @property
    def name(self) -> str:
        return {"simple_rnn": "SimpleRNN", "lstm": "LSTM"}.get(self.family, "GRU")

    @property
    def has_carry(self) -> bool:
        return self.family == "lstm"

    @property
    def has_rbias(self) -> bool:
        """A recurrent bias inside the step (GRU, `reset_after=True`)."""
        return self.family == "gru"

    def residual_width(self, units: int) -> int:
        """Per step, what the backward pass reads besides the states (SimpleRNN: nothing, `h_t` suffices)."""
        return {"simple_rnn": 0, "lstm": 5, "gru": 4, "gru_rb": 3}[self.family] * units

    @property
    def reads_h_prev(self) -> bool:
        """Whether the backward step reads `h_{t-1}` (the GRUs), besides the states/residuals."""
        return self.family in ("gru", "gru_rb")

    def act_grad(self, y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        return _known(derivative(self.activation, gated=self.family != "simple_rnn"))(y, g)

    def ract_grad(self, y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        return _known(derivative(self.recurrent_activation, gated=True))(y, g)


def make_mode(family: str, activation: Any, recurrent_activation: Any = None) -> Mode:
    """A checked `Mode`: a ValueError names an activation the fused recurrence cannot differentiate."""
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}. Received: family={family!r}")
    gated = family != "simple_rnn"
    named = (("activation", activation),) + ((("recurrent_activation", recurrent_activation),) if gated else ())
    for name, fn in named:
        if derivative(fn, gated) is None:
            raise ValueError(
                f"The fused {Mode(family, activation).name} kernel supports the activations tanh, sigmoid, "
                f"{'hard_sigmoid, ' if gated else ''}relu and linear; run other activations through the generic "
                f"step. Received: {name}={fn!r}"
            )
    return Mode(family, activation, recurrent_activation if gated else None)


class Weights(NamedTuple):
    """The recurrent half of a step: `U (H, G·H)`, its per-gate parts, GRU's recurrent bias, the masks."""

    recurrent: tf.Tensor
    parts: List[tf.Tensor]
    rbias: Optional[tf.Tensor] = None
    mask: Optional[List[tf.Tensor]] = None  # G recurrent dropout masks (B, H)


def weights(mode: Mode, recurrent: tf.Tensor, rbias: Optional[tf.Tensor], mask: Optional[tf.Tensor]) -> Weights:
    """`Weights` from `U` and the `(G, B, H)` masks, split per gate once, outside the loop."""
    parts = [recurrent] if mode.gates == 1 else tf.split(recurrent, mode.gates, axis=1)
    return Weights(recurrent, parts, rbias, None if mask is None else tf.unstack(mask, num=mode.gates))


# --------------------------------------------------------------------------- recurrent products
def _rec_product(h: tf.Tensor, kernel: tf.Tensor, parts: List[tf.Tensor], mask: Optional[tf.Tensor]) -> tf.Tensor:
    """`h U` for all gates in `kernel`; with per-gate masks `(G, B, H)`: `concat_k (h·mask[k]) U_k`."""
    if mask is None:
        return tf.matmul(h, kernel)
    if len(parts) == 1:
        return tf.matmul(h * mask[0], kernel)
    return tf.concat([tf.matmul(h * mask[k], part) for k, part in enumerate(parts)], axis=1)


def _rec_product_t(d: tf.Tensor, kernel: tf.Tensor, parts: List[tf.Tensor], mask: Optional[tf.Tensor]) -> tf.Tensor:
    """The gradient of `_rec_product` with respect to `h`: `d Uᵀ`, or `Σ_k (d_k U_kᵀ)·mask[k]`."""
    if mask is None:
        return tf.matmul(d, kernel, transpose_b=True)
    if len(parts) == 1:
        return tf.matmul(d, kernel, transpose_b=True) * mask[0]
    total = None
    for k, (d_k, part) in enumerate(zip(tf.split(d, len(parts), axis=1), parts)):
        term = tf.matmul(d_k, part, transpose_b=True) * mask[k]
        total = term if total is None else total + term
    return total


def kernel_grad(h_prev: tf.Tensor, d: tf.Tensor, mask: Optional[tf.Tensor], gates: int) -> tf.Tensor:
    """`Σ_t (h_{t-1}·m_k)ᵀ d_t[k]` for (T, B, H) `h_prev` and (T, B, gates·H) `d`: one big product per mask."""
    units = h_prev.shape[-1]
    flat_d = tf.reshape(d, [-1, gates * units])
    if mask is None:
        return tf.matmul(tf.reshape(h_prev, [-1, units]), flat_d, transpose_a=True)
    ds = tf.split(flat_d, gates, axis=1)
    parts = [tf.matmul(tf.reshape(h_prev * mask[k], [-1, units]), ds[k], transpose_a=True) for k in range(gates)]
    return parts[0] if gates == 1 else tf.concat(parts, axis=1)


# ------------------------------------------------------------------------------------ one step
def forward_step(mode: Mode, x_t: tf.Tensor, h: tf.Tensor, c: Any, w: Weights) -> Tuple[tf.Tensor, Any, Any]:
    """One step of the cell on its projected inputs `x_t`: `(h_t, c_t or c, residuals or None)`."""
    act, ract = mode.activation, mode.recurrent_activation
    if mode.family == "simple_rnn":
        return act(x_t + _rec_product(h, w.recurrent, w.parts, w.mask)), c, None
    if mode.family == "lstm":
        z_i, z_f, z_c, z_o = tf.split(x_t + _rec_product(h, w.recurrent, w.parts, w.mask), 4, axis=1)
        i, f, g, o = ract(z_i), ract(z_f), act(z_c), ract(z_o)
        c_new = f * c + i * g
        return o * act(c_new), c_new, tf.concat([i, f, g, o, c], axis=1)  # c: the carry entering the step
    x_z, x_r, x_h = tf.split(x_t, 3, axis=1)
    if mode.family == "gru":
        inner = _rec_product(h, w.recurrent, w.parts, w.mask)
        m_z, m_r, m_h = tf.split(inner if w.rbias is None else inner + w.rbias, 3, axis=1)
        z, r = ract(x_z + m_z), ract(x_r + m_r)
        hh = act(x_h + r * m_h)
        residuals = tf.concat([z, r, hh, m_h], axis=1)
    else:  # reset before the candidate's product
        units = h.shape[-1]
        zr_mask = None if w.mask is None else w.mask[:2]
        m_z, m_r = tf.split(_rec_product(h, w.recurrent[:, : 2 * units], w.parts[:2], zr_mask), 2, axis=1)
        z, r = ract(x_z + m_z), ract(x_r + m_r)
        h_c = h if w.mask is None else h * w.mask[2]
        hh = act(x_h + tf.matmul(r * h_c, w.parts[2]))
        residuals = tf.concat([z, r, hh], axis=1)
    return z * h + (1 - z) * hh, c, residuals


class StepValues(NamedTuple):
    """What the backward step of step t reads: its residuals, `h_t`, `h_{t-1}` (those the mode needs)."""

    residuals: Optional[tf.Tensor]
    h: Optional[tf.Tensor]
    h_prev: Optional[tf.Tensor]


def backward_step(mode: Mode, values: StepValues, g_h: tf.Tensor, g_c: Any, w: Weights) -> Tuple[Any, Any, Any]:
    """The gradient of one step, from `g_h`, `g_c` = dL/dh_t, dL/dc_t (all paths).

    Returns `(d_xw_t, dL/dh_{t-1} through the cell, dL/dc_{t-1} or g_c)`."""
    if mode.family == "simple_rnn":
        dz = mode.act_grad(values.h, g_h)
        return dz, _rec_product_t(dz, w.recurrent, w.parts, w.mask), g_c
    residuals = cast(tf.Tensor, values.residuals)  # the gated families keep theirs
    if mode.family == "lstm":
        i, f, g, o, c_prev = tf.split(residuals, 5, axis=1)
        tc = mode.activation(f * c_prev + i * g)
        d_c = g_c + mode.act_grad(tc, g_h * o)
        d_ifgo = [mode.ract_grad(i, d_c * g), mode.ract_grad(f, d_c * c_prev), mode.act_grad(g, d_c * i)]
        d_z = tf.concat(d_ifgo + [mode.ract_grad(o, g_h * tc)], axis=1)
        return d_z, _rec_product_t(d_z, w.recurrent, w.parts, w.mask), d_c * f
    z, r, hh = tf.split(residuals[:, : 3 * g_h.shape[-1]], 3, axis=1)
    d_zg = mode.ract_grad(z, g_h * (values.h_prev - hh))
    d_ah = mode.act_grad(hh, g_h * (1 - z))
    if mode.family == "gru":
        m_h = residuals[:, 3 * g_h.shape[-1] :]
        d_r = mode.ract_grad(r, d_ah * m_h)
        d_inner = tf.concat([d_zg, d_r, d_ah * r], axis=1)
        d_prev = g_h * z + _rec_product_t(d_inner, w.recurrent, w.parts, w.mask)
        return tf.concat([d_zg, d_r, d_ah], axis=1), d_prev, g_c
    units = g_h.shape[-1]
    d_rh = tf.matmul(d_ah, w.parts[2], transpose_b=True)  # dL/d(r·h_c)
    h_c = values.h_prev if w.mask is None else values.h_prev * w.mask[2]
    d_zr = tf.concat([d_zg, mode.ract_grad(r, d_rh * h_c)], axis=1)
    zr_mask = None if w.mask is None else w.mask[:2]
    d_prev = g_h * z + _rec_product_t(d_zr, w.recurrent[:, : 2 * units], w.parts[:2], zr_mask)
    d_hc = d_rh * r
    d_prev = d_prev + (d_hc if w.mask is None else d_hc * w.mask[2])
    return tf.concat([d_zr, d_ah], axis=1), d_prev, g_c


def recurrent_grads(
    mode: Mode, h_prev: tf.Tensor, d_xw: tf.Tensor, residuals: Optional[tf.Tensor], mask: Optional[tf.Tensor]
) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """`(dU, d_rbias or None)` of a sequence, as products over all its steps: `h_prev` `(T, B, H)` holds the
    states entering the steps, `d_xw` `(T, B, G·H)` the gradients of the projected inputs."""
    units = h_prev.shape[-1]
    if mode.family in ("simple_rnn", "lstm"):
        return kernel_grad(h_prev, d_xw, mask, mode.gates), None
    r_all = cast(tf.Tensor, residuals)[..., units : 2 * units]
    if mode.family == "gru":
        d_inner = tf.concat([d_xw[..., : 2 * units], d_xw[..., 2 * units :] * r_all], axis=-1)
        d_rbias = tf.reduce_sum(tf.reshape(d_inner, [-1, 3 * units]), axis=0)
        return kernel_grad(h_prev, d_inner, mask, 3), d_rbias
    d_zr = kernel_grad(h_prev, d_xw[..., : 2 * units], None if mask is None else mask[:2], 2)
    h_c = h_prev if mask is None else h_prev * mask[2]
    return tf.concat([d_zr, kernel_grad(r_all * h_c, d_xw[..., 2 * units :], None, 1)], axis=1), None


# ----------------------------------------------------------------------------------- eligibility
_BASES = (("lstm", keras.layers.LSTMCell), ("gru", keras.layers.GRUCell))
#: Methods whose override in a subclass changes the maths (then the generic step runs the subclass).
_MATHS = {
    "lstm": ("call", "_compute_carry_and_output", "_compute_carry_and_output_fused"),
    "gru": ("call",),
}

#: A cell that is no Keras `LSTMCell`/`GRUCell` but computes the same maths names its family under this
#: attribute (`"lstm"`/`"gru"`, or None when its options leave that maths), and then has the Keras cell's
#: attributes the kernels read: `units`, `kernel`, `recurrent_kernel`, `bias`, `use_bias`, `activation`,
#: `recurrent_activation`, `dropout`, `recurrent_dropout` (and `reset_after` for GRU). `ku.tf1.LSTMCell`
#: without peepholes, clipping or projection is one.
FAMILY_ATTRIBUTE = "_keras_unroll_gated_family"


def gated_family(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` for a Keras `LSTMCell`/`GRUCell`, a subclass that does not override its maths
    (`_MATHS`), or a cell that declares the same maths (`FAMILY_ATTRIBUTE`), whatever its activations;
    else None."""
    declared = getattr(type(cell), FAMILY_ATTRIBUTE, None)
    if declared is not None and not any(isinstance(cell, base) for _, base in _BASES):
        name = getattr(cell, FAMILY_ATTRIBUTE)
        return name if name in ("lstm", "gru") else None
    for name, base in _BASES:
        if isinstance(cell, base):
            overridden = any(getattr(type(cell), method) is not getattr(base, method) for method in _MATHS[name])
            return None if overridden else name
    return None


def mode_of(cell: Any) -> Optional[Mode]:
    """The `Mode` of `cell` if the fused recurrence can run it, else None: a `SimpleRNNCell` (or a subclass
    keeping its maths), a Keras `LSTMCell`/`GRUCell` (either `implementation`, any dropout, both GRU
    `reset_after` variants) or a cell declaring their maths, with activations `derivative` knows. Whether
    it runs is the planner's decision."""
    if isinstance(cell, keras.layers.SimpleRNNCell):
        if type(cell).call is not keras.layers.SimpleRNNCell.call or derivative(cell.activation) is None:
            return None
        return Mode("simple_rnn", cell.activation)
    name = gated_family(cell)
    if name is None:
        return None
    if derivative(cell.activation, True) is None or derivative(cell.recurrent_activation, True) is None:
        return None
    family = "gru_rb" if name == "gru" and not cell.reset_after else name
    return Mode(family, cell.activation, cell.recurrent_activation)


def step_macs(batch: Optional[int], units: int) -> int:
    """`B·H·H`, one step's `h U` (per gate); an unknown batch counts as Keras' default batch size 32."""
    return (32 if batch is None else batch) * units * units
