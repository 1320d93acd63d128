"""Fused LSTM and GRU recurrences on dense tensors, with a hand-written backward pass.

The same design as the SimpleRNN kernel (`keras_unroll/kernels/simple_rnn.py`): the input projection of
every gate (`xw = x W + b`) is a product over many steps, the loop runs only the recurrent half of the
cell, and `tf.custom_gradient` over the projection and the recurrence together gives the gradient, whose
loop does only the recurrent work per step; `dU` (and GRU's recurrent bias), `dW`, `db` and `dx` are
products over many steps. With `jit=True` the forward and backward passes are XLA-compiled functions on
dense tensors and the custom gradient joining them stays outside XLA, so any first-order tape
differentiates them; a second-order gradient raises a clear `NotImplementedError`.

Under XLA the passes run a chunk of steps at a time (`_chunked_forward`, `_chunked_backward`; a chunk's
`(B, G·H)` projection takes at most `chunk_bytes`, 4 MiB): the
forward pass projects a chunk's inputs just before running its steps, and the backward pass turns a
chunk's `d_xw` into its share of the weight gradients and its `dx` before the previous chunk runs. What a
training step keeps of size T is then the states and the residuals the backward pass reads (LSTM: `h`
and `[i, f, g, o, c_{t-1}]`, 6 `(T, B, H)`; Keras' own LSTM layer keeps about 7), not the projection and
`d_xw` beside them (4 each for LSTM: docs/memory.md has the figures). Uncompiled, the whole sequence is
one chunk.

The cells, exactly as Keras 3 computes them (`keras/src/layers/rnn/lstm.py`, `gru.py`), gate order as in
the kernels' columns:

    LSTM (i, f, c, o):  z = xw_t + h_{t-1} U;  i, f, o = σ(z_i), σ(z_f), σ(z_o);  g = act(z_c)
                        c_t = f·c_{t-1} + i·g;  h_t = o·act(c_t)
    GRU, reset_after:   m = h_{t-1} U + b_rec;  z, r = σ(xw_z + m_z), σ(xw_r + m_r)
                        hh = act(xw_h + r·m_h);  h_t = z·h_{t-1} + (1 - z)·hh
    GRU, reset before:  z, r = σ(xw_z + h_{t-1} U_z), σ(xw_r + h_{t-1} U_r)
                        hh = act(xw_h + (r·h_{t-1}) U_h);  h_t = z·h_{t-1} + (1 - z)·hh

(σ is the cell's `recurrent_activation`, act its `activation`.) Recurrent dropout in Keras 3 switches the
cell to `implementation=1`, which draws one mask per gate (4 for LSTM, 3 for GRU) for `h_{t-1}` (and one per
gate for the inputs): `rec_mask` is those masks stacked, `(G, B, H)`, and gate k's recurrent product reads
`h_{t-1}·rec_mask[k]` (for the reset-before GRU candidate: `r·(h_{t-1}·rec_mask[2])`).

Masks (`valid`, `(T, B)` bool) copy the state through an invalid step, so its gradient passes through
unchanged; `stop` (a scalar <= T) ends the loop early (TF1's `max(sequence_length)`): states at `t >= stop`
are zero and the last state is the one after step `stop - 1`.

Activations with a derivative computed from the output in one op take this path: `tanh`, `sigmoid`,
`hard_sigmoid`, `relu`, `linear` (`_derivatives`). Anything else is not eligible (`kind` returns None)
and the planner runs the generic step. `hard_sigmoid`'s derivative is read from its output (`1/6` where
`0 < y < 1`), so at exactly `x = ±3` it is 0 where Keras' autodiff of `relu6` says `1/6`.

When no tape records (inference), the forward loop keeps only what the caller asked for (no gate values
for a backward pass); if a gradient is asked for later anyway (a `tf.function` traced without a tape and
differentiated from outside), the backward pass recomputes them first.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import tensorflow as tf
from tensorflow.python.eager import record  # stop_recording / should_record_backprop: no public equivalent

from keras_unroll import step as step_lib
from keras_unroll.kernels import simple_rnn

Derivative = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

#: The size of one chunk's input projection under XLA (`_chunked_forward`, `_chunked_backward`): 4 MiB.
CHUNK_BYTES = 2**22


# ----------------------------------------------------------------------------------- eligibility
def _hard_sigmoid_grad(y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    inside = tf.logical_and(y > 0, y < 1)
    return tf.where(inside, g * tf.constant(1.0 / 6.0, g.dtype), tf.zeros_like(g))


def _derivatives() -> Dict[Any, Derivative]:
    """activation -> `(y, g) -> g * activation'(x)` computed from the output `y = activation(x)`."""
    table = {fn: grad for fns, grad in simple_rnn._derivatives() for fn in fns}
    table[keras.activations.hard_sigmoid] = _hard_sigmoid_grad
    return table


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


def family(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` for a Keras `LSTMCell`/`GRUCell`, a subclass that does not override its maths
    (`_MATHS`), or a cell that declares the same maths (`FAMILY_ATTRIBUTE`), whatever its activations;
    else None."""
    declared = getattr(type(cell), FAMILY_ATTRIBUTE, None)
    if declared is not None and not any(isinstance(cell, base) for _, base in _BASES):
        name = getattr(cell, FAMILY_ATTRIBUTE)
        return name if name in ("lstm", "gru") else None
    for name, base in _BASES:
        if not isinstance(cell, base):
            continue
        if any(getattr(type(cell), method) is not getattr(base, method) for method in _MATHS[name]):
            return None
        return name
    return None


def kind(cell: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if `cell` can run as a fused gated kernel (`gated_loop`), else None.

    Eligible: a Keras `LSTMCell`/`GRUCell` (either `implementation`, any dropout, both GRU `reset_after`
    variants), or a subclass that does not override its maths, whose `activation` and
    `recurrent_activation` are in `_derivatives()`. Whether it runs is the planner's decision.
    """
    name = family(cell)
    table = _derivatives()
    if name is None or cell.activation not in table or cell.recurrent_activation not in table:
        return None
    return name


# ------------------------------------------------------------------------------------ the spec
@dataclasses.dataclass(frozen=True)
class _Spec:
    """What fixes the maths of a recurrence (hashable: it keys the compiled passes)."""

    kind: str  # "lstm", "gru" (reset_after=True) or "gru_rb" (reset_after=False)
    activation: Any
    recurrent_activation: Any

    @property
    def gates(self) -> int:
        return 4 if self.kind == "lstm" else 3

    def act_grad(self, y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        return _derivatives()[self.activation](y, g)

    def ract_grad(self, y: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        return _derivatives()[self.recurrent_activation](y, g)


def _spec(kind: str, activation: Any, recurrent_activation: Any) -> _Spec:
    table = _derivatives()
    for name, fn in (("activation", activation), ("recurrent_activation", recurrent_activation)):
        if fn not in table:
            raise ValueError(
                f"The fused {kind.upper()} kernel supports the activations tanh, sigmoid, hard_sigmoid, relu and "
                f"linear; run other activations through the generic step. Received: {name}={fn!r}"
            )
    return _Spec(kind, activation, recurrent_activation)


# --------------------------------------------------------------------------- recurrent products
def _gate_kernels(kernel: tf.Tensor, gates: int) -> List[tf.Tensor]:
    return tf.split(kernel, gates, axis=1)


def _rec_product(h: tf.Tensor, kernel: tf.Tensor, parts: List[tf.Tensor], mask: Optional[tf.Tensor]) -> tf.Tensor:
    """`h U` for all gates in `kernel`; with per-gate masks `(G, B, H)`: `concat_k (h·mask[k]) U_k`."""
    if mask is None:
        return tf.matmul(h, kernel)
    return tf.concat([tf.matmul(h * mask[k], part) for k, part in enumerate(parts)], axis=1)


def _rec_product_t(d: tf.Tensor, kernel: tf.Tensor, parts: List[tf.Tensor], mask: Optional[tf.Tensor]) -> tf.Tensor:
    """The gradient of `_rec_product` with respect to `h`: `d Uᵀ`, or `Σ_k (d_k U_kᵀ)·mask[k]`."""
    if mask is None:
        return tf.matmul(d, kernel, transpose_b=True)
    ds = tf.split(d, len(parts), axis=1)
    total = None
    for k, (d_k, part) in enumerate(zip(ds, parts)):
        term = tf.matmul(d_k, part, transpose_b=True) * mask[k]
        total = term if total is None else total + term
    return total


def _kernel_grad(h_prev: tf.Tensor, d: tf.Tensor, mask: Optional[tf.Tensor], gates: int) -> tf.Tensor:
    """`Σ_t (h_{t-1}·m_k)ᵀ d_t[k]` for (T, B, H) `h_prev` and (T, B, gates·H) `d`: one big product per mask."""
    units = h_prev.shape[-1]
    flat_h = tf.reshape(h_prev, [-1, units])
    flat_d = tf.reshape(d, [-1, gates * units])
    if mask is None:
        return tf.matmul(flat_h, flat_d, transpose_a=True)
    ds = tf.split(flat_d, gates, axis=1)
    parts = []
    for k in range(gates):
        hm = tf.reshape(h_prev * mask[k], [-1, units])
        parts.append(tf.matmul(hm, ds[k], transpose_a=True))
    return tf.concat(parts, axis=1)


# ------------------------------------------------------------------------------------ one step
def _forward_step(spec: _Spec, x_t, h, c, kernel, parts, rbias, mask):
    """One step of the cell: returns `(h_t, c_t or None, residuals for the backward pass)`."""
    act, ract = spec.activation, spec.recurrent_activation
    units = h.shape[-1]
    if spec.kind == "lstm":
        z = x_t + _rec_product(h, kernel, parts, mask)
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
        i, f, g, o = ract(z_i), ract(z_f), act(z_c), ract(z_o)
        c_new = f * c + i * g
        h_new = o * act(c_new)
        return h_new, c_new, tf.concat([i, f, g, o, c], axis=1)  # c: the carry entering the step
    x_z, x_r, x_h = tf.split(x_t, 3, axis=1)
    if spec.kind == "gru":
        inner = _rec_product(h, kernel, parts, mask)
        if rbias is not None:
            inner = inner + rbias
        m_z, m_r, m_h = tf.split(inner, 3, axis=1)
        z = ract(x_z + m_z)
        r = ract(x_r + m_r)
        hh = act(x_h + r * m_h)
        residuals = tf.concat([z, r, hh, m_h], axis=1)
    else:  # reset before the candidate's product
        zr_kernel = kernel[:, : 2 * units]
        inner = _rec_product(h, zr_kernel, parts[:2], None if mask is None else mask[:2])
        m_z, m_r = tf.split(inner, 2, axis=1)
        z = ract(x_z + m_z)
        r = ract(x_r + m_r)
        h_c = h if mask is None else h * mask[2]
        hh = act(x_h + tf.matmul(r * h_c, parts[2]))
        residuals = tf.concat([z, r, hh], axis=1)
    h_new = z * h + (1 - z) * hh
    return h_new, None, residuals


def _backward_step(spec: _Spec, res, h_prev, c_prev, g_h, g_c, kernel, parts, mask):
    """The gradient of one step. `g_h`, `g_c`: dL/dh_t, dL/dc_t (all paths).

    Returns `(d_xw_t, dL/dh_{t-1} through the cell, dL/dc_{t-1})`.
    """
    units = g_h.shape[-1]
    if spec.kind == "lstm":
        i, f, g, o, c_prev = tf.split(res, 5, axis=1)
        tc = spec.activation(f * c_prev + i * g)
        d_c = g_c + spec.act_grad(tc, g_h * o)
        d_z = tf.concat(
            [
                spec.ract_grad(i, d_c * g),
                spec.ract_grad(f, d_c * c_prev),
                spec.act_grad(g, d_c * i),
                spec.ract_grad(o, g_h * tc),
            ],
            axis=1,
        )
        return d_z, _rec_product_t(d_z, kernel, parts, mask), d_c * f
    if spec.kind == "gru":
        z, r, hh, m_h = tf.split(res, 4, axis=1)
    else:
        z, r, hh = tf.split(res, 3, axis=1)
    d_zg = spec.ract_grad(z, g_h * (h_prev - hh))
    d_ah = spec.act_grad(hh, g_h * (1 - z))
    if spec.kind == "gru":
        d_r = spec.ract_grad(r, d_ah * m_h)
        d_inner = tf.concat([d_zg, d_r, d_ah * r], axis=1)
        d_prev = g_h * z + _rec_product_t(d_inner, kernel, parts, mask)
        return tf.concat([d_zg, d_r, d_ah], axis=1), d_prev, None
    d_rh = tf.matmul(d_ah, parts[2], transpose_b=True)  # dL/d(r·h_c)
    h_c = h_prev if mask is None else h_prev * mask[2]
    d_r = spec.ract_grad(r, d_rh * h_c)
    d_zr = tf.concat([d_zg, d_r], axis=1)
    d_prev = g_h * z + _rec_product_t(d_zr, kernel[:, : 2 * units], parts[:2], None if mask is None else mask[:2])
    d_hc = d_rh * r
    d_prev = d_prev + (d_hc if mask is None else d_hc * mask[2])
    return tf.concat([d_zr, d_ah], axis=1), d_prev, None


# ------------------------------------------------------------------------------------ the loops
def _zeros(like: tf.Tensor, width: int) -> tf.Tensor:
    """Zeros `(B, width)` for a `(B, H)` tensor `like` whose batch may be unknown."""
    return tf.zeros(tf.stack([tf.shape(like)[0], width]), like.dtype)


def _residual_width(spec: _Spec, units: int) -> int:
    return {"lstm": 5, "gru": 4, "gru_rb": 3}[spec.kind] * units


def _run(
    body_for: Callable[[int], Callable[..., Any]], reads: simple_rnn.Prefetch, t0, carry, tas, more, steps, delta: int
):
    """Runs `body_for(1)` in a while loop, one step per iteration (two per iteration measured no better
    overall: docs/performance.md).

    `body_for(1)(t, *carry, *current, *tas)` gets the prefetched values of step `t` and returns
    `(t + delta, *carry, *following, *tas)`. `more(t, 1)` says whether a step runs from t. Returns
    `(t, carry, tas)` after the last step.
    """
    n = len(carry)
    current = list(reads.at(t0))
    out = tf.while_loop(lambda t, *_: more(t, 1), body_for(1), (t0, *carry, *current, *tas), maximum_iterations=steps)
    t, carry, rest = out[0], out[1 : 1 + n], out[1 + n :]
    return t, list(carry), list(rest[reads.count :])


def _sequence_arrays(dtype: tf.DType, spec: _Spec, steps: Any, h0: tf.Tensor, keep: int) -> List[tf.TensorArray]:
    """The TensorArrays a forward pass writes: none (`keep` 0), the states (1), also the residuals (2)."""
    units = h0.shape[-1]
    shapes = [h0.shape, tf.TensorShape([h0.shape[0], _residual_width(spec, units)])][:keep]
    return [tf.TensorArray(dtype, size=steps, element_shape=shape) for shape in shapes]


def _forward_steps(
    spec: _Spec, xw, h0, c0, kernel, rbias, mask, valid, stop, tas, offset=0, in_kernel=None, in_bias=None
):
    """Runs the steps `t < stop` (all without `stop`) of `xw` from `(h0, c0)`, writing each step's state
    (and residuals) at `offset + t` of `tas` (`_sequence_arrays`). Returns `(t, h_last, c_last, tas)`.

    With `in_kernel` (inference: `_inference`), `xw` is the input sequence `(T, B, F)` itself and each step
    projects its own `x_t W + b`, read in the step (prefetching that small slice measured slower)."""
    lstm = spec.kind == "lstm"
    steps = tf.shape(xw)[0]
    parts = _gate_kernels(kernel, spec.gates)
    project = in_kernel is not None
    reads = simple_rnn.Prefetch([None if project else xw, valid], steps)
    keep = len(tas)
    count = reads.count

    def one_step(t, h, c, values, tas):
        x_t, v_t = reads.unpack(values)
        if project:
            x_t = tf.matmul(tf.gather(xw, t), in_kernel)
            x_t = x_t if in_bias is None else x_t + in_bias
        h_new, c_new, res = _forward_step(spec, x_t, h, c, kernel, parts, rbias, mask)
        if v_t is not None:
            v_t = v_t[:, None]
            h_new = tf.where(v_t, h_new, h)
            if lstm:
                c_new = tf.where(v_t, c_new, c)
        if keep >= 1:
            tas[0] = tas[0].write(offset + t, h_new)
        if keep >= 2:
            tas[1] = tas[1].write(offset + t, res)
        return h_new, (c_new if lstm else c), tas

    def body_for(k_steps):
        def body(t, h, c, *rest):
            current, tas = rest[: k_steps * count], list(rest[k_steps * count :])
            following = [value for k in range(k_steps) for value in reads.at(t + k_steps + k)]
            for k in range(k_steps):
                h, c, tas = one_step(t + k, h, c, current[k * count : (k + 1) * count], tas)
            return (t + k_steps, h, c, *following, *tas)

        return body

    c_init = c0 if lstm else tf.zeros([], xw.dtype)
    limit = steps if stop is None else stop
    t, (h_last, c_last), tas = _run(
        body_for, reads, tf.constant(0), [h0, c_init], tas, lambda t, k: t + k <= limit, steps, 1
    )
    return t, h_last, (c_last if lstm else None), tas


def _stacked(tas, start, steps, h0, like):
    """The `(T, B, ·)` tensors of `tas`, zero at the steps from `start` on (the ones not run)."""
    outs = []
    for ta in tas:
        if start is not None:
            ta = simple_rnn.zero_fill(ta, start, steps, _zeros(h0, ta.element_shape[-1]))
        value = ta.stack()
        value.set_shape(like.shape[:1].concatenate(ta.element_shape))
        outs.append(value)
    return outs + [None] * (2 - len(outs))


def _backward_loop(spec: _Spec, hs, residuals, c_prev, h0, kernel, mask, valid, stop, d_hs, d_h, d_c):
    """The backward while loop over the steps of one chunk (`_chunked_backward`), on dense tensors: `h0` is
    the state entering it, `d_h`, `d_c` the gradients leaving it. Returns
    `(d_xw, d_h0, d_c0 or None, d_kernel, d_rbias or None)`."""
    lstm = spec.kind == "lstm"
    units = h0.shape[-1]
    width = spec.gates * units
    steps = tf.shape(hs)[0]
    parts = _gate_kernels(kernel, spec.gates)
    h_prev_all = tf.concat([h0[None], hs[:-1]], axis=0)
    first = (steps if stop is None else stop) - 1
    # LSTM's step does not read h_{t-1} (only dU after the loop does).
    reads = simple_rnn.Prefetch([residuals, None if lstm else h_prev_all, c_prev, d_hs, valid], steps)
    count = reads.count
    d_ta = tf.TensorArray(hs.dtype, size=steps, element_shape=tf.TensorShape([h0.shape[0], width]))
    if stop is not None:
        d_ta = simple_rnn.zero_fill(d_ta, first + 1, steps, _zeros(h0, width))

    def one_step(t, g_h, g_c, values, d_ta):
        res, h_prev, cp, d_t, v_t = reads.unpack(values)
        if d_t is not None:
            g_h = g_h + d_t
        d_x, d_prev, d_cprev = _backward_step(spec, res, h_prev, cp, g_h, g_c, kernel, parts, mask)
        if v_t is not None:
            v_t = v_t[:, None]
            d_x = tf.where(v_t, d_x, tf.zeros_like(d_x))
            d_prev = tf.where(v_t, d_prev, g_h)
            if lstm:
                d_cprev = tf.where(v_t, d_cprev, g_c)
        return d_prev, (d_cprev if lstm else g_c), d_ta.write(t, d_x)

    def body_for(k_steps):
        def body(t, g_h, g_c, *rest):
            current, d_ta = rest[: k_steps * count], rest[k_steps * count]
            following = [value for k in range(k_steps) for value in reads.at(t - k_steps - k)]
            for k in range(k_steps):
                g_h, g_c, d_ta = one_step(t - k, g_h, g_c, current[k * count : (k + 1) * count], d_ta)
            return (t - k_steps, g_h, g_c, *following, d_ta)

        return body

    g_c0 = d_c if lstm else tf.zeros([], hs.dtype)
    _, (d_h0, d_c0), (d_ta,) = _run(body_for, reads, first, [d_h, g_c0], [d_ta], lambda t, k: t - k >= -1, steps, -1)
    d_xw = d_ta.stack()
    d_xw.set_shape(hs.shape[:2].concatenate([width]))
    d_rbias = None
    if spec.kind == "lstm":
        d_kernel = _kernel_grad(h_prev_all, d_xw, mask, 4)
    elif spec.kind == "gru":
        r_all = residuals[..., units : 2 * units]
        d_inner = tf.concat([d_xw[..., : 2 * units], d_xw[..., 2 * units :] * r_all], axis=-1)
        d_kernel = _kernel_grad(h_prev_all, d_inner, mask, 3)
        d_rbias = tf.reduce_sum(tf.reshape(d_inner, [-1, width]), axis=0)
    else:
        r_all = residuals[..., units : 2 * units]
        d_zr = _kernel_grad(h_prev_all, d_xw[..., : 2 * units], None if mask is None else mask[:2], 2)
        h_c = h_prev_all if mask is None else h_prev_all * mask[2]
        d_h_kernel = _kernel_grad(r_all * h_c, d_xw[..., 2 * units :], None, 1)
        d_kernel = tf.concat([d_zr, d_h_kernel], axis=1)
    return d_xw, d_h0, (d_c0 if lstm else None), d_kernel, d_rbias


# ------------------------------------------------------------------------------- chunked passes
def _projection_grads(x, kernel, in_masks, d_xw):
    """The gradients of `_masked_projection(x, kernel, b, in_masks)` for `(C, B, F)` inputs and their
    `d_xw`, `(C, B, G·H)`: `(dx, d_kernel, d_bias)`."""
    width = kernel.shape[-1]
    flat_x = tf.reshape(x, [-1, tf.shape(x)[-1]])
    flat_d = tf.reshape(d_xw, [-1, width])
    d_bias = tf.reduce_sum(flat_d, axis=0)
    if in_masks is None:
        d_x = tf.matmul(flat_d, kernel, transpose_b=True)
        return tf.reshape(d_x, tf.shape(x)), tf.matmul(flat_x, flat_d, transpose_a=True), d_bias
    gates = in_masks.shape[0]
    d_parts, kernels = tf.split(d_xw, gates, axis=-1), tf.split(kernel, gates, axis=1)
    d_x, d_kernels = None, []
    for k in range(gates):
        masked = tf.reshape(x * in_masks[k], [-1, tf.shape(x)[-1]])
        d_k = tf.reshape(d_parts[k], [-1, kernels[k].shape[-1]])
        d_kernels.append(tf.matmul(masked, d_k, transpose_a=True))
        term = tf.reshape(tf.matmul(d_k, kernels[k], transpose_b=True), tf.shape(x)) * in_masks[k]
        d_x = term if d_x is None else d_x + term
    return d_x, tf.concat(d_kernels, axis=1), d_bias


def _chunked_forward(
    spec: _Spec, x, kernel, bias, in_masks, h0, c0, recurrent, rbias, mask, valid, stop, keep, chunk_bytes
):
    """The forward pass over `(T, B, F)` inputs, a chunk at a time: each chunk's inputs are projected
    (`_masked_projection`) just before its steps run, so no `(T, B, G·H)` projection lives beside the
    states and residuals. T is a multiple of the chunk (`simple_rnn.padded_length`); steps `t >= stop` do
    not run and are zero.

    `keep`: 0 the last state only, 1 also the states `hs`, 2 also the residuals for the backward pass.
    Returns `(hs or None, residuals or None, None, h_last, c_last or None)`. LSTM's residuals hold the
    carry entering each step beside the gates (`[i, f, g, o, c_{t-1}]`: one write and one read per step
    instead of two). The third slot is kept for a separate carry sequence (unused).
    """
    lstm = spec.kind == "lstm"
    steps = tf.shape(x)[0]
    chunk, full, rest = simple_rnn.chunk_schedule(
        steps, stop, simple_rnn.steps_per_chunk(x, kernel.shape[-1], chunk_bytes)
    )
    masks = None if in_masks is None else tf.unstack(in_masks, num=in_masks.shape[0])
    tas = _sequence_arrays(x.dtype, spec, steps, h0, keep)

    def run_chunk(start, h, c, tas, length=None, partial=False):
        xw = _masked_projection(simple_rnn.chunk_of(x, start, chunk), kernel, bias, masks)
        valid_c = None if valid is None else simple_rnn.chunk_of(valid, start, chunk)
        if partial:
            valid_c = simple_rnn.partial_chunk_valid(valid_c, rest, chunk, x)
        _, h, c_new, tas = _forward_steps(
            spec, xw, h, c if lstm else None, recurrent, rbias, mask, valid_c, length, tas, start
        )
        return (h, c_new if lstm else c, *tas)

    def body(j, h, c, *tas):
        return (j + 1, *run_chunk(j * chunk, h, c, list(tas)))

    initial = (tf.constant(0), h0, c0 if lstm else tf.zeros([], x.dtype), *tas)
    _, h, c, *tas = tf.while_loop(lambda j, *_: j < full, body, initial)
    h_last, c_last, *tas = tf.cond(
        rest > 0, lambda: run_chunk(full * chunk, h, c, tas, partial=True), lambda: (h, c, *tas)
    )
    hs, residuals = _stacked(tas, tf.maximum(stop, 0), steps, h0, x)
    return hs, residuals, None, h_last, (c_last if lstm else None)


def _chunked_backward(
    spec: _Spec, hs, residuals, x, kernel, in_masks, h0, recurrent, mask, valid, stop, d_hs, d_h, d_c, chunk_bytes
):
    """The backward pass a chunk at a time, last chunk first: each chunk's backward loop (`_backward_loop`)
    gives its `d_xw`, `(C, B, G·H)`, which becomes the chunk's share of `dU` (and GRU's recurrent bias),
    `dW`, `db` and its `dx` before the previous chunk runs. Returns
    `(dx, d_kernel, d_bias, d_h0, d_c0 or None, d_recurrent, d_rbias or None)`."""
    lstm = spec.kind == "lstm"
    steps = tf.shape(hs)[0]
    chunk, full, rest = simple_rnn.chunk_schedule(
        steps, stop, simple_rnn.steps_per_chunk(x, kernel.shape[-1], chunk_bytes)
    )
    chunks = steps // chunk
    dx_ta = simple_rnn._chunk_array(x.dtype, chunks, x.shape[1:])
    running = full + tf.cast(rest > 0, full.dtype)  # chunks with a step to run
    zero_chunk = tf.zeros(tf.concat([[chunk], tf.shape(x)[1:]], axis=0), x.dtype)
    dx_ta = simple_rnn.zero_fill(dx_ta, running, chunks, zero_chunk)
    with_rbias = spec.kind == "gru"

    def run_chunk(j, g_h, g_c, dx_ta, d_kernel, d_bias, d_recurrent, d_rbias, partial=False):
        start = j * chunk
        of = lambda t: None if t is None else simple_rnn.chunk_of(t, start, chunk)  # noqa: E731
        h_start = tf.where(start > 0, tf.gather(hs, tf.maximum(start - 1, 0)), h0)  # the state entering the chunk
        valid_c, d_hs_c = of(valid), of(d_hs)
        if partial:
            valid_c = simple_rnn.partial_chunk_valid(valid_c, rest, chunk, x)
            if d_hs_c is not None:  # the outputs of the steps not run are zeros: no gradient flows from them
                d_hs_c = tf.where((tf.range(chunk) < rest)[:, None, None], d_hs_c, tf.zeros_like(d_hs_c))
        d_xw, g_h, g_c_new, d_rec, d_rb = _backward_loop(
            spec, of(hs), of(residuals), None, h_start, recurrent, mask, valid_c, None, d_hs_c, g_h,
            g_c if lstm else None,
        )  # fmt: skip
        d_x, d_w, d_b = _projection_grads(of(x), kernel, in_masks, d_xw)
        if with_rbias:
            d_rbias += d_rb
        return (g_h, g_c_new if lstm else g_c, dx_ta.write(j, d_x), d_kernel + d_w, d_bias + d_b,
                d_recurrent + d_rec, d_rbias)  # fmt: skip

    def body(j, *carry):
        return (j - 1, *run_chunk(j, *carry))

    zeros = tf.zeros([], x.dtype)
    initial = (
        d_h, d_c if lstm else zeros, dx_ta, tf.zeros_like(kernel), tf.zeros(kernel.shape[-1:], kernel.dtype),
        tf.zeros_like(recurrent), tf.zeros_like(recurrent[0]) if with_rbias else zeros,
    )  # fmt: skip
    carry = tf.cond(rest > 0, lambda: run_chunk(full, *initial, partial=True), lambda: initial)
    _, d_h0, d_c0, dx_ta, d_kernel, d_bias, d_recurrent, d_rbias = tf.while_loop(
        lambda j, *_: j >= 0, body, (full - 1, *carry)
    )
    d_x = simple_rnn._stack_chunks(dx_ta, x, x.shape[1:])
    return d_x, d_kernel, d_bias, d_h0, (d_c0 if lstm else None), d_recurrent, (d_rbias if with_rbias else None)


# ------------------------------------------------------------------------ compiled passes, guard
@functools.lru_cache(maxsize=32)
def _compiled_passes(spec: _Spec, chunk_bytes: int) -> Tuple[Dict[int, Any], Any]:
    """The XLA-compiled forward passes (one per `keep`) and backward pass for `spec`, shared by every layer
    with it (a bounded cache). No `reduce_retracing`: a retrace with relaxed shapes would lose the static
    unit count the loops need (and XLA compiles each shape anyway)."""
    compiled_forward = {
        keep: tf.function(
            lambda *args, keep=keep: _chunked_forward(spec, *args, keep=keep, chunk_bytes=chunk_bytes),
            jit_compile=True,
            autograph=False,
        )  # fmt: skip
        for keep in (0, 1, 2)
    }
    compiled_backward = tf.function(
        lambda *args: _chunked_backward(spec, *args, chunk_bytes=chunk_bytes), jit_compile=True, autograph=False
    )
    return compiled_forward, compiled_backward


def _passes(spec: _Spec, jit: bool, chunk_bytes: int) -> Tuple[Callable[..., Any], Callable[..., Any]]:
    """(forward, backward) for `spec`: XLA-compiled `tf.function`s on dense tensors running a chunk of steps
    at a time (`chunk_bytes`), or (uncompiled) plain functions with the whole sequence as one chunk."""
    if not jit:
        forward = lambda *args, keep: _chunked_forward(spec, *args, keep=keep, chunk_bytes=0)  # noqa: E731
        backward = lambda *args: _chunked_backward(spec, *args, chunk_bytes=0)  # noqa: E731
        return forward, backward
    compiled_forward, compiled_backward = _compiled_passes(spec, chunk_bytes)

    def run_forward(*args, keep):
        with record.stop_recording():  # the custom gradient is what tapes see
            return compiled_forward[keep](*args)

    def run_backward(*args):
        with record.stop_recording():
            return compiled_backward(*args)

    return run_forward, run_backward


def _inference_loop(spec: _Spec, x, h0, c0, recurrent, rbias, mask, valid, stop, keep: int, in_kernel, in_bias):
    """The forward loop of `_inference`: each step projects its own `x_t W + b` (`_forward_steps` with
    `in_kernel`); `keep` 0 writes no state sequence, 1 the states. Returns `_chunked_forward`'s tuple."""
    steps = tf.shape(x)[0]
    tas = _sequence_arrays(x.dtype, spec, steps, h0, keep)
    t, h_last, c_last, tas = _forward_steps(
        spec, x, h0, c0, recurrent, rbias, mask, valid, stop, tas, 0, in_kernel, in_bias
    )
    hs, _ = _stacked(tas, None if stop is None else t, steps, h0, x)
    return hs, None, None, h_last, c_last


@functools.lru_cache(maxsize=32)
def _compiled_inference(spec: _Spec) -> Dict[int, Any]:
    """The XLA-compiled inference loops (`_inference_loop`, `keep` 0 or 1), shared by every layer with `spec`."""
    return {
        keep: tf.function(
            lambda *args, keep=keep: _inference_loop(spec, *args[:8], keep, *args[8:]),
            jit_compile=True,
            autograph=False,
        )
        for keep in (0, 1)
    }


def cache_sizes() -> dict:
    """How many settings each process-wide cache of compiled functions holds (`cache_bounds`: their bounds)."""
    return {
        "gated_passes": _compiled_passes.cache_info().currsize,
        "gated_inference": _compiled_inference.cache_info().currsize,
    }


def cache_bounds() -> dict:
    return {
        "gated_passes": _compiled_passes.cache_info().maxsize,
        "gated_inference": _compiled_inference.cache_info().maxsize,
    }


# ------------------------------------------------------------------------------- the recurrences
def _recurrence(
    spec: _Spec,
    x,
    kernel,
    bias,
    in_masks,
    h0,
    c0,
    recurrent,
    rbias,
    *,
    valid,
    stop,
    rec_mask,
    jit,
    need_states,
    bucket_steps=False,
    chunk_bytes=CHUNK_BYTES,
):
    """Runs the input projection and the fused recurrence under one `tf.custom_gradient`. Returns
    `(hs or None, h_last, c_last)`.

    With `jit` the passes are XLA-compiled and run a chunk of steps at a time (as many as keep a chunk's
    projection within `chunk_bytes`); the steps are padded to
    whole chunks (and to a bucket, `simple_rnn.bucket_steps`, with `bucket_steps`), past the loop's stop,
    so XLA compiles a few shapes for lengths that change from call to call."""
    lstm = spec.kind == "lstm"
    chunk_bytes = chunk_bytes if jit else 0
    forward, backward = _passes(spec, jit, chunk_bytes)
    args = [x, kernel, h0, recurrent] + ([c0] if lstm else []) + ([bias] if bias is not None else [])
    args += [rbias] if rbias is not None else []
    recording = record.should_record_backprop(args)
    name = "LSTM" if lstm else "GRU"
    steps = tf.shape(x)[0]
    chunk_steps = simple_rnn.steps_per_chunk(x, int(kernel.shape[-1]), chunk_bytes)
    pad = simple_rnn.padded_length(steps, chunk_steps, jit and bucket_steps) - steps
    valid_in = None if valid is None else tf.pad(valid, [[0, pad], [0, 0]], constant_values=False)
    stop_in = steps if stop is None else stop

    @tf.custom_gradient
    def run(*args):
        x, kernel, h0, recurrent = args[:4]
        rest = list(args[4:])
        c0 = rest.pop(0) if lstm else None
        b = rest.pop(0) if bias is not None else tf.zeros(kernel.shape[-1:], kernel.dtype)
        rb = rest.pop(0) if rbias is not None else None
        x_in = tf.pad(x, [[0, pad], [0, 0], [0, 0]])
        fixed = (recurrent, rb, rec_mask, valid_in, stop_in)
        keep = 2 if recording else (1 if need_states else 0)
        hs, residuals, _, h_last, c_last = forward(x_in, kernel, b, in_masks, h0, c0, *fixed, keep=keep)

        def grad(*upstream):
            upstream = list(upstream)
            d_hs = upstream.pop(0) if need_states else None
            d_h = upstream.pop(0)
            d_c = upstream.pop(0) if lstm else None
            d_h = tf.zeros_like(h0) if d_h is None else d_h
            if lstm and d_c is None:
                d_c = tf.zeros_like(c0)
            states, res = hs, residuals
            if res is None:  # traced without a tape: recompute what the backward pass reads
                states, res, _, _, _ = forward(x_in, kernel, b, in_masks, h0, c0, *fixed, keep=2)
            if d_hs is not None:
                d_hs = tf.pad(d_hs, [[0, pad], [0, 0], [0, 0]])
            d_x, d_kernel, d_b, d_h0, d_c0, d_recurrent, d_rb = backward(
                states, res, x_in, kernel, in_masks, h0, recurrent, rec_mask, valid_in, stop_in, d_hs, d_h, d_c
            )
            grads = [d_x, d_kernel, d_h0, d_recurrent] + ([d_c0] if lstm else [])
            grads += ([d_b] if bias is not None else []) + ([d_rb] if rbias is not None else [])
            if jit:
                connected = [t for t in (states, res, x_in, h0, kernel, recurrent, d_hs, d_h, d_c) if t is not None]
                grads = simple_rnn.first_order_only(grads, connected, name)
            grads[0] = grads[0][:steps]
            return grads

        outs = ([hs[:steps]] if need_states else []) + [h_last] + ([c_last] if lstm else [])
        return outs, grad

    outs = list(run(*args))
    hs = outs.pop(0) if need_states else None
    h_last = outs.pop(0)
    c_last = outs.pop(0) if lstm else None
    return hs, h_last, c_last


def _inference(
    spec: _Spec,
    x,
    kernel,
    in_bias,
    h0,
    c0,
    recurrent_kernel,
    rbias,
    *,
    valid,
    stop,
    rec_mask,
    need_states,
    bucket_steps=False,
    chunk_bytes=CHUNK_BYTES,
):
    """The forward pass when no tape records: one compiled loop over the inputs themselves.

    Measured at 32·1000·8·32 (LSTM, docs/performance.md): the hoisted `x W + b`, a `(T, B, 4H)` tensor
    written and read back, took 2.4 ms of an 11 ms forward; a step's own `x_t W` inside the compiled loop
    costs less than that, and with no backward pass there is no large `dW` product for the hoisting to
    feed. Returns `(hs or None, h_last, c_last or None)`. A gradient asked for later anyway (a function
    traced without a tape, differentiated from outside) differentiates the training path (`_recurrence`,
    which projects chunk by chunk) over the same arguments.
    """
    lstm = spec.kind == "lstm"
    names = ["x", "kernel", "h0", "recurrent_kernel", "c0", "in_bias", "rbias"]
    given = dict(zip(names, [x, kernel, h0, recurrent_kernel, c0, in_bias, rbias]))
    present = [name for name in names if given[name] is not None]

    def outputs(hs, h_last, c_last):
        return ([hs] if need_states else []) + [h_last] + ([c_last] if lstm else [])

    @tf.custom_gradient
    def run(*args):
        a = dict(zip(present, args))
        a.update({name: None for name in names if name not in a})
        steps = tf.shape(a["x"])[0]
        pad = (simple_rnn.bucket_steps(steps) - steps) if bucket_steps else None
        x_in, valid_in, stop_in = a["x"], valid, stop
        if pad is not None:  # padded steps lie past `stop`: never run
            x_in = tf.pad(x_in, [[0, pad], [0, 0], [0, 0]])
            valid_in = None if valid is None else tf.pad(valid, [[0, pad], [0, 0]], constant_values=False)
            stop_in = steps if stop is None else stop
        compiled = _compiled_inference(spec)[1 if need_states else 0]
        with record.stop_recording():
            hs, _, _, h_last, c_last = compiled(
                x_in,
                a["h0"],
                a["c0"],
                a["recurrent_kernel"],
                a["rbias"],
                rec_mask,
                valid_in,
                stop_in,
                a["kernel"],
                a["in_bias"],
            )
        if hs is not None and pad is not None:
            hs = hs[:steps]

        def grad(*upstream):
            with tf.GradientTape() as tape:
                tape.watch(list(args))
                again = _recurrence(
                    spec, a["x"], a["kernel"], a["in_bias"], None, a["h0"], a["c0"], a["recurrent_kernel"], a["rbias"],
                    valid=valid, stop=stop, rec_mask=rec_mask, jit=True, need_states=need_states,
                    bucket_steps=bucket_steps, chunk_bytes=chunk_bytes,
                )  # fmt: skip
                results = outputs(*again)
            upstream = [tf.zeros_like(r) if u is None else u for u, r in zip(upstream, results)]
            return tape.gradient(results, list(args), output_gradients=upstream)

        return outputs(hs, h_last, c_last), grad

    outs = list(run(*[given[name] for name in present]))
    hs = outs.pop(0) if need_states else None
    h_last = outs.pop(0)
    return hs, h_last, (outs.pop(0) if lstm else None)


def lstm_recurrence(
    inputs: tf.Tensor,
    kernel: tf.Tensor,
    bias: Optional[tf.Tensor],
    h0: tf.Tensor,
    c0: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    *,
    activation: Any,
    recurrent_activation: Any,
    input_masks: Optional[tf.Tensor] = None,
    valid: Optional[tf.Tensor] = None,
    stop: Optional[tf.Tensor] = None,
    rec_mask: Optional[tf.Tensor] = None,
    jit: bool = False,
    need_states: bool = True,
    bucket_steps: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, tf.Tensor]:
    """The LSTM layer's maths on a time-major sequence, with a hand-written gradient.

    Args:
        inputs: `(T, B, F)`, with any single input dropout mask already applied.
        kernel, bias: `W (F, 4H)` and `b (4H,)` (or None) of the input projection, gates in Keras' order
            i, f, c, o.
        h0, c0: `(B, H)` initial output and carry states.
        recurrent_kernel: `(H, 4H)` `U`.
        activation, recurrent_activation: the cell's (see `_derivatives` for which are supported).
        input_masks: `(4, B, F)` per-gate input dropout masks (Keras' `implementation=1`) or None.
        valid: `(T, B)` bool or None: invalid steps copy both states through.
        stop: scalar int tensor <= T or None: run only steps `t < stop` (states past it are zero).
        rec_mask: `(4, B, H)` per-gate recurrent dropout masks (Keras' `implementation=1`) or None.
        jit: run the forward and backward passes XLA-compiled, a chunk of steps at a time.
        need_states: `False` returns `None` for `hs` (the caller only needs the last states).
        bucket_steps: with `jit`, pad the steps to a bucket (`simple_rnn.bucket_steps`) for callers whose T
            changes from call to call.
        chunk_bytes: with `jit`, the size of one chunk's projection `(steps, B, 4H)`: as many steps as fit
            are projected (forward) and back-propagated into the inputs and weights (backward) at a time,
            so nothing of size `(T, B, 4H)` but the residuals is kept.

    Returns:
        `(hs (T, B, H) or None, h_last (B, H), c_last (B, H))`.
    """
    spec = _spec("lstm", activation, recurrent_activation)
    return _recurrence(
        spec, inputs, kernel, bias, input_masks, h0, c0, recurrent_kernel, None,
        valid=valid, stop=stop, rec_mask=rec_mask, jit=jit, need_states=need_states, bucket_steps=bucket_steps,
        chunk_bytes=chunk_bytes,
    )  # fmt: skip


def gru_recurrence(
    inputs: tf.Tensor,
    kernel: tf.Tensor,
    bias: Optional[tf.Tensor],
    h0: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    recurrent_bias: Optional[tf.Tensor] = None,
    *,
    reset_after: bool = True,
    activation: Any,
    recurrent_activation: Any,
    input_masks: Optional[tf.Tensor] = None,
    valid: Optional[tf.Tensor] = None,
    stop: Optional[tf.Tensor] = None,
    rec_mask: Optional[tf.Tensor] = None,
    jit: bool = False,
    need_states: bool = True,
    bucket_steps: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tuple[Optional[tf.Tensor], tf.Tensor]:
    """The GRU layer's maths on a time-major sequence, with a hand-written gradient.

    Args:
        inputs: `(T, B, F)`, with any single input dropout mask already applied.
        kernel, bias: `W (F, 3H)` and the input bias `(3H,)` (`bias[0]` of a `reset_after=True` cell) or
            None, gates in Keras' order z, r, h.
        h0: `(B, H)` initial state.
        recurrent_kernel: `(H, 3H)` `U`.
        recurrent_bias: `(3H,)` the recurrent bias (`bias[1]` of a `reset_after=True` cell) or None; must be
            None with `reset_after=False` (that cell's single bias is `bias`).
        reset_after: Keras' `reset_after` (True: `r·(h U_h + b_h)`; False: `(r·h) U_h`).
        input_masks: `(3, B, F)` per-gate input dropout masks or None.
        rec_mask: `(3, B, H)` per-gate recurrent dropout masks or None.
        activation, recurrent_activation, valid, stop, jit, need_states, bucket_steps, chunk_bytes: as in
            `lstm_recurrence`.

    Returns:
        `(hs (T, B, H) or None, h_last (B, H))`.
    """
    if not reset_after and recurrent_bias is not None:
        raise ValueError(
            "A GRU with `reset_after=False` has no recurrent bias; its single bias is `bias`. "
            f"Received: recurrent_bias of shape {tuple(recurrent_bias.shape)}"
        )
    spec = _spec("gru" if reset_after else "gru_rb", activation, recurrent_activation)
    hs, h_last, _ = _recurrence(
        spec, inputs, kernel, bias, input_masks, h0, None, recurrent_kernel, recurrent_bias,
        valid=valid, stop=stop, rec_mask=rec_mask, jit=jit, need_states=need_states, bucket_steps=bucket_steps,
        chunk_bytes=chunk_bytes,
    )  # fmt: skip
    return hs, h_last


# ------------------------------------------------------------------------------------ the adapter
def _masked_projection(
    inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor], masks: Optional[List[tf.Tensor]]
) -> tf.Tensor:
    """`x W + b` for one chunk (`simple_rnn.project_chunk`), or with `implementation=1`'s per-gate input
    masks `concat_k (x·m_k) W_k + b_k` (a single input mask is applied to `x` before, in `gated_loop`)."""
    if masks is None:
        return simple_rnn.project_chunk(inputs, kernel, bias)
    gates = len(masks)
    kernels = tf.split(kernel, gates, axis=1)
    biases = tf.split(bias, gates, axis=0) if bias is not None else [None] * gates
    return tf.concat([simple_rnn.project_chunk(inputs * m, k, b) for m, k, b in zip(masks, kernels, biases)], axis=-1)


def gated_loop(
    cell: Any,
    prepared: step_lib.Prepared,
    masks: step_lib.DropoutMasks,
    *,
    return_all_outputs: bool = True,
    jit: bool = False,
    bucket_steps: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """The fused unroll of an `LSTMCell`/`GRUCell`: returns `(outputs (T, B, H) or None, last_output, final_state)`.

    The same contract as `simple_rnn.simple_rnn_loop`: `prepared` is time-major (already reversed for
    `go_backwards`), `final_state` is in Keras' order (`[h, c]` for LSTM, `[h]` for GRU), and masks,
    `zero_output` and early stop at `max_length` follow `step.make_step`'s semantics. Dropout masks are the
    sequence's (`step.DropoutMasks`), applied as Keras' cell applies them (`0 < rate < 1`; per gate with
    `implementation=1`).
    """
    name = kind(cell)
    if name is None:
        raise ValueError(f"`cell` cannot take the fused LSTM/GRU kernel (see `gated.kind`). Received: cell={cell!r}")
    inputs = prepared.inputs
    dtype = inputs.dtype
    steps = tf.shape(inputs)[0]
    dp_mask, rec_mask = masks.of(cell)
    dp_mask = dp_mask if 0.0 < cell.dropout < 1.0 else None
    rec_mask = rec_mask if 0.0 < cell.recurrent_dropout < 1.0 else None
    if rec_mask is not None:
        gates = 4 if name == "lstm" else 3
        rec_mask = tf.stack(list(rec_mask) if isinstance(rec_mask, (list, tuple)) else [rec_mask] * gates)
    kernel = simple_rnn._as_tensor(cell.kernel, dtype)
    recurrent_kernel = simple_rnn._as_tensor(cell.recurrent_kernel, dtype)
    bias = simple_rnn._as_tensor(cell.bias, dtype) if cell.use_bias else None
    in_bias, rec_bias = bias, None
    if name == "gru" and bias is not None and cell.reset_after:
        in_bias, rec_bias = bias[0], bias[1]
    h0 = prepared.initial_state[0]
    c0 = prepared.initial_state[1] if name == "lstm" else None
    stop = None if prepared.max_length is None else tf.minimum(steps, prepared.max_length)
    # No tape and no forward accumulator at all: the inference loop (else the training path's custom gradient).
    if jit and dp_mask is None and not record.could_possibly_record():
        spec = _spec(
            name if name == "lstm" or cell.reset_after else "gru_rb", cell.activation, cell.recurrent_activation
        )
        hs, h_last, c_last = _inference(
            spec, inputs, kernel, in_bias, h0, c0, recurrent_kernel, rec_bias, valid=prepared.valid, stop=stop,
            rec_mask=rec_mask, need_states=return_all_outputs, bucket_steps=bucket_steps, chunk_bytes=chunk_bytes,
        )  # fmt: skip
        outputs, last = step_lib.outputs_from_states(prepared, hs, h_last, return_all_outputs)
        return outputs, last, ([h_last, c_last] if name == "lstm" else [h_last])
    input_masks = None
    if isinstance(dp_mask, (list, tuple)):
        input_masks = tf.stack(list(dp_mask))  # implementation=1: one mask per gate, applied in the projection
    elif dp_mask is not None:
        inputs = inputs * dp_mask
    options = dict(
        activation=cell.activation,
        recurrent_activation=cell.recurrent_activation,
        input_masks=input_masks,
        valid=prepared.valid,
        stop=stop,
        rec_mask=rec_mask,
        jit=jit,
        need_states=return_all_outputs,
        bucket_steps=bucket_steps,
        chunk_bytes=chunk_bytes,
    )
    if name == "lstm":
        hs, h_last, c_last = lstm_recurrence(inputs, kernel, in_bias, h0, c0, recurrent_kernel, **options)
        final_state = [h_last, c_last]
    else:
        hs, h_last = gru_recurrence(
            inputs, kernel, in_bias, h0, recurrent_kernel, rec_bias, reset_after=cell.reset_after, **options
        )
        final_state = [h_last]
    outputs, last = step_lib.outputs_from_states(prepared, hs, h_last, return_all_outputs)
    return outputs, last, final_state
