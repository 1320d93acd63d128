"""Fast paths: the same unroll with the input projection hoisted out of the loop and a fused backward pass.

What `make_step` does per time step for a `SimpleRNNCell` (and so for `BasicRNNCell`) is

    h_t = activation(x_t W + b + h_{t-1} U)

The fast path computes `xw = x W + b` for all steps at once (one `[T·B, F] × [F, H]` product) and runs only
`h_t = activation(xw_t + h_{t-1} U)` in the loop. Its gradient is written by hand (`tf.custom_gradient`
over the whole recurrence), because plain autodiff of a loop that reads a hoisted, differentiable tensor
costs O(T²) in a `tf.while_loop` (measured: 1.8× slower than Keras at T=1000). The backward loop only does
`dh_{t-1} = dz_t Uᵀ` per step; `dU = Σ h_{t-1}ᵀ dz_t` is one big matrix product after the loop, and `dW`,
`db`, `dx` come from autodiff of the hoisted product.

- Masks and `sequence_length` keep their semantics: an invalid step copies the state through (so its
  gradient passes through unchanged), and the emitted/last outputs are derived after the loop from the
  state sequence (after a row's first valid step, the state *is* its last valid output).
- Dropout uses the cell's own per-sequence masks (`_core.dropout_masks`), exactly as the generic step.
- Activations: `tanh` (default), `sigmoid`, `relu` and `linear` take the fast path; their derivative is
  computed from the output (`1-h²`, `h(1-h)`, `h>0`, `1`). Any other activation takes the generic path.
- In the static (Python-unrolled) loop the projection is hoisted but the gradient is plain autodiff
  (`STATIC_CUSTOM_GRADIENT`, measured faster there: no O(T²) trap without a while loop), and small steps
  are projected a few steps at a time so the products overlap the recurrence (`STATIC_PROJECTION_CHUNK`).
- `LSTMCell`/`GRUCell` (implementation 2, no recurrent dropout): the input projection is hoisted in the
  static (Python) loop only, where autodiff has no O(T²) trap; their while loop stays generic.
- Every other cell, and any subclass that overrides `call`, takes the generic path.

`jit_compile` (XLA) runs a loop in its own `tf.function(jit_compile=True)` (`run_compiled`), so it is
compiled even inside `model.fit` on CPU, where Keras' `jit_compile="auto"` resolves to `False`. For the
fused while loop only its forward and backward passes are compiled (`_compiled_passes`, dense tensors in
and out) and the `tf.custom_gradient` joining them stays outside XLA, so persistent and nested tapes,
`jacobian` and `model.fit` all differentiate it; a second-order gradient raises a clear error.

Tests force the generic path with `generic_only()` to compare both on the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import keras
import tensorflow as tf
from tensorflow.python.eager import record  # stop_recording: no public equivalent outside a tape object

from keras_unroll.loops import _core

#: When `True`, every loop takes the generic path (`_core.make_step`). Set it with `generic_only()`.
GENERIC_ONLY = False


@contextlib.contextmanager
def generic_only() -> Iterator[None]:
    """Within this block every loop (traced in it) uses the generic step: for tests and comparisons."""
    global GENERIC_ONLY
    previous, GENERIC_ONLY = GENERIC_ONLY, True
    try:
        yield
    finally:
        GENERIC_ONLY = previous


# ----------------------------------------------------------------------------------- eligibility
def _derivatives() -> Dict[Any, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """activation -> `(h, g) -> g * activation'(z)`, from the output `h = activation(z)`, in one op each
    (measured: the backward loop is op-bound; `1 - h*h` and a product are three ops, `TanhGrad` one)."""
    return {
        keras.activations.tanh: lambda h, g: tf.raw_ops.TanhGrad(y=h, dy=g),
        keras.activations.sigmoid: lambda h, g: tf.raw_ops.SigmoidGrad(y=h, dy=g),
        keras.activations.relu: lambda h, g: tf.raw_ops.ReluGrad(gradients=g, features=h),
        keras.activations.linear: lambda h, g: g,
    }


def _python_training(training: Any) -> Optional[bool]:
    """`training` as a Python bool (or None); raises `TypeError` for a symbolic tensor."""
    if training is None or isinstance(training, bool):
        return training
    if isinstance(training, tf.Tensor) and tf.executing_eagerly():
        return bool(training.numpy())
    if isinstance(training, tf.Tensor):
        raise TypeError("symbolic training flag")
    return bool(training)


def simple_rnn_derivative(cell: Any, training: Any) -> Optional[Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """`(h, g) -> g * activation'` (from the output `h`) if `cell` can take the fused path, else None."""
    if GENERIC_ONLY or not isinstance(cell, keras.layers.SimpleRNNCell):
        return None
    if type(cell).call is not keras.layers.SimpleRNNCell.call:
        return None  # a subclass with its own maths
    try:
        _python_training(training)
    except TypeError:
        return None
    return _derivatives().get(cell.activation)


def gated_kind(cell: Any, training: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if the input projection of `cell` can be hoisted, else None."""
    if GENERIC_ONLY:
        return None
    for kind, base in (("lstm", keras.layers.LSTMCell), ("gru", keras.layers.GRUCell)):
        if isinstance(cell, base) and type(cell).call is base.call:
            if getattr(cell, "implementation", 2) != 2 or cell.recurrent_dropout > 0:
                return None
            try:
                _python_training(training)
            except TypeError:
                return None
            return kind
    return None


# ------------------------------------------------------------------------------ the fused recurrence
def _as_tensor(variable: Any, dtype: Any) -> tf.Tensor:
    value = tf.convert_to_tensor(variable)
    return tf.cast(value, dtype) if value.dtype != dtype else value


#: How the loops read step t of a (T, ...) tensor: "ta" (a TensorArray unstacked before the loop) or
#: "slice" (`tf.gather` on the tensor itself, no copy up front). The reads are never differentiated
#: (the gradient is hand-written), so neither has the O(T²) trap. Measured (docs/performance.md): no
#: difference beyond noise at 256·50·64·256, 32·28·28·128 and 32·1000·8·32, with and without XLA.
READ_MODE = "ta"


def _reader(tensor: tf.Tensor, steps: Any, mode: Optional[str] = None) -> Callable[[tf.Tensor], tf.Tensor]:
    if (mode or READ_MODE) == "slice":
        return lambda t: tf.gather(tensor, t)
    ta = tf.TensorArray(tensor.dtype, size=steps, element_shape=tensor.shape[1:]).unstack(tensor)
    return ta.read


def _forward_step(xw_t, valid_t, h, kernel, rec_mask, activation):
    h_in = h * rec_mask if rec_mask is not None else h
    a = activation(xw_t + tf.matmul(h_in, kernel))
    return a if valid_t is None else tf.where(valid_t[:, None], a, h)


def _backward_step(h_t, valid_t, g, kernel, rec_mask, derivative):
    """g = dL/dh_t (all paths). Returns (dz_t, dL/dh_{t-1})."""
    dz = derivative(h_t, g)
    if valid_t is not None:
        dz = tf.where(valid_t[:, None], dz, tf.zeros_like(dz))
    d_prev = tf.matmul(dz, kernel, transpose_b=True)
    if rec_mask is not None:
        d_prev = d_prev * rec_mask
    if valid_t is not None:
        d_prev = d_prev + tf.where(valid_t[:, None], tf.zeros_like(g), g)
    return dz, d_prev


def _zero_fill(ta: tf.TensorArray, start: tf.Tensor, steps: tf.Tensor, zeros: tf.Tensor) -> tf.TensorArray:
    _, ta = tf.while_loop(
        lambda t, _: t < steps, lambda t, ta: (t + 1, ta.write(t, zeros)), (start, ta), maximum_iterations=steps
    )
    return ta


def _forward_loop(xw, h0, kernel, rec_mask, valid, stop, activation):
    """The while-loop forward pass on dense tensors: returns `(hs (T, B, H), h_last)`."""
    steps = tf.shape(xw)[0]
    read_xw = _reader(xw, steps)
    read_v = None if valid is None else _reader(valid, steps)
    hs_ta = tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, hs_ta):
        h = _forward_step(read_xw(t), None if read_v is None else read_v(t), h, kernel, rec_mask, activation)
        return t + 1, h, hs_ta.write(t, h)

    limit = steps if stop is None else stop
    t, h_last, hs_ta = tf.while_loop(
        lambda t, *_: t < limit, body, (tf.constant(0), h0, hs_ta), maximum_iterations=steps
    )
    if stop is not None:
        hs_ta = _zero_fill(hs_ta, t, steps, tf.zeros_like(h0))
    hs = hs_ta.stack()
    hs.set_shape(xw.shape[:1].concatenate(h0.shape))
    return hs, h_last


def _backward_loop(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last, derivative, du_in_loop=False, read_mode=None):
    """The while-loop backward pass on dense tensors: returns `(d_xw (T, B, H), d_h0, d_kernel)`.

    `d_hs` is None when only the last output/state is used (`return_sequences=False`). `du_in_loop`
    accumulates `dU` step by step inside the loop (off the `dh` chain, so the executor can run it on the
    other core), else it is one product after the loop (`_kernel_gradient`).
    """
    g = tf.zeros_like(h0) if d_last is None else d_last
    steps = tf.shape(hs)[0]
    read_h = _reader(hs, steps, read_mode)
    read_d = None if d_hs is None else _reader(d_hs, steps, read_mode)
    read_v = None if valid is None else _reader(valid, steps, read_mode)
    dz_ta = tf.TensorArray(hs.dtype, size=steps, element_shape=h0.shape)
    first = (steps if stop is None else stop) - 1
    if stop is not None:
        dz_ta = _zero_fill(dz_ta, first + 1, steps, tf.zeros_like(h0))
    h0_in = h0 * rec_mask if rec_mask is not None else h0

    def back_body(t, g, dz_ta, *d_kernel):
        v_t = None if read_v is None else read_v(t)
        g = g if read_d is None else g + read_d(t)
        dz, g = _backward_step(read_h(t), v_t, g, kernel, rec_mask, derivative)
        if du_in_loop:
            # h_{t-1}; at t = 0 this reads h_0 instead of the initial state, corrected after the loop
            # (one product there instead of a select per step: 3.3 of 46 ms at 256·50·64·256).
            h_prev = read_h(tf.maximum(t - 1, 0))
            h_prev = h_prev * rec_mask if rec_mask is not None else h_prev
            d_kernel = (d_kernel[0] + tf.matmul(h_prev, dz, transpose_a=True),)
        return (t - 1, g, dz_ta.write(t, dz), *d_kernel)

    initial = (first, g, dz_ta) + ((tf.zeros_like(kernel),) if du_in_loop else ())
    _, g, dz_ta, *d_kernel = tf.while_loop(lambda t, *_: t >= 0, back_body, initial, maximum_iterations=steps)
    dz_all = dz_ta.stack()
    dz_all.set_shape(hs.shape)
    if du_in_loop:
        h_first = hs[0] * rec_mask if rec_mask is not None else hs[0]
        d_kernel = d_kernel[0] + tf.matmul(h0_in - h_first, dz_all[0], transpose_a=True)
    else:
        d_kernel = _kernel_gradient(hs, h0, dz_all, rec_mask)
    return dz_all, g, d_kernel


def _kernel_gradient(hs, h0, dz_all, rec_mask):
    """`dU = Σ_t (h_{t-1}·m)ᵀ dz_t` as one `[H, T·B] × [T·B, H]` product."""
    units = tf.shape(h0)[-1]
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
    if rec_mask is not None:
        h_prev = h_prev * rec_mask
    return tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(dz_all, [-1, units]), transpose_a=True)


#: Where the while loop's backward pass computes `dU`: inside the loop (per step, off the `dh` chain) or
#: as one product after it. Separately for the uncompiled loop (`None`: by size, see `_du_in_loop_graph`)
#: and the XLA-compiled passes (`None`: by the size `B·H·H` of one step's `h U`, see `_step_macs`).
#: Measured (train step, interleaved A/B, docs/performance.md):
#: - uncompiled: inside wins when a step's product is large (256·50·64·256: 55.4 -> 49.4 ms, fit epoch
#:   476 -> 382 ms) and loses when it is small (32·1000·8·32: 32.6 -> 39.2; 64·100·16·64: 7.2 -> 8.7;
#:   32·28·28·128: 3.5 -> 3.8);
#: - XLA: inside wins at mid sizes (32·28·28·128: 2.41 -> 2.03 ms; 64·100·16·64: 4.81 -> 4.11) and loses
#:   at both ends (32·1000·8·32: 10.45 -> 11.16; 256·50·64·256: 43.6 -> 46.0).
#: - the backward pass alone (ms; compiled after / compiled inside / uncompiled after / uncompiled inside),
#:   T=100: B·H 32·256 (2**21) 8.7 / 13.2 / 8.3 / 7.0; 128·128 (2**21) 8.5 / 11.8 / 9.7 / 7.2; 64·128
#:   (2**20) 4.5 / 4.9 / 5.3 / 4.9; 16·256 (2**20) 4.8 / 7.4 / 5.6 / 5.5; T=28 32·128 (2**19) 1.22 / 1.18 /
#:   1.53 / 1.64. So: compiled inside below 2**20, compiled after at 2**20, uncompiled inside from 2**21
#:   (`UNCOMPILED_BACKWARD_MIN_MACS`). Train step with XLA, before -> after these bounds: 32·1000·8·256
#:   1.21x -> 0.77x of `SimpleRNN(unroll=False)`, 128·100·16·128 1.27x -> 0.89x; uncompiled 1.10x -> 0.92x,
#:   1.23x -> 1.04x.
DU_IN_LOOP_GRAPH: Optional[bool] = None
DU_IN_LOOP_XLA: Optional[bool] = None
#: `B·H·H` from which the uncompiled loop accumulates `dU` inside; the XLA loop does for `B·H·H` in
#: `[DU_IN_LOOP_XLA_MACS[0], DU_IN_LOOP_XLA_MACS[1])`.
DU_IN_LOOP_MIN_MACS = 2**21
DU_IN_LOOP_XLA_MACS = (2**17, 2**20)


def _macs(batch: Optional[int], units: Optional[int]) -> Optional[int]:
    """`B·H·H`, one step's `h U`; an unknown batch counts as Keras' default batch size 32."""
    return None if units is None else (32 if batch is None else batch) * units * units


def _step_macs(states: tf.Tensor) -> Optional[int]:
    """`B·H·H` of a (T, B, H) tensor (`_macs`)."""
    return _macs(states.shape[1], states.shape[2])


def _du_in_loop_graph(xw: tf.Tensor) -> bool:
    if DU_IN_LOOP_GRAPH is not None:
        return DU_IN_LOOP_GRAPH
    macs = _step_macs(xw)
    return macs is not None and macs >= DU_IN_LOOP_MIN_MACS


def _du_in_loop_xla(hs: tf.Tensor) -> bool:
    if DU_IN_LOOP_XLA is not None:
        return DU_IN_LOOP_XLA
    macs = _step_macs(hs)
    return macs is not None and DU_IN_LOOP_XLA_MACS[0] <= macs < DU_IN_LOOP_XLA_MACS[1]

#: With `jit=True`, large steps (`B·H·H ≥ 2**21`) of at most 256 units run the backward loop uncompiled (TensorFlow's own
#: MatMul kernels, `dU` inside the loop) after the compiled forward loop. Measured (the backward pass alone,
#: median of 3×15 calls, ms, compiled with dU after / inside vs uncompiled with dU inside): B·H at
#: T=50: 256·256 24.4 / 24.7 vs 18.1; 256·128 8.8 / 8.9 vs 6.4; 512·128 19.8 / 18.7 vs 11.7; T=100: 64·256
#: 15.0 / 14.9 vs 11.4; 128·256 33.8 / 33.3 vs 20.6 -- but 32·512 24.4 / 24.3 vs 36.1, 128·512 40.4 / 37.7
#: vs 41.0, 64·384 13.7 / 13.8 vs 17.3; at 2**21 see `DU_IN_LOOP_MIN_MACS`'s notes (uncompiled wins), and
#: below it compiled wins (32·1000·8·32: 4.4 vs 14.8).
UNCOMPILED_BACKWARD_MIN_MACS = 2**21
UNCOMPILED_BACKWARD_MAX_UNITS = 256


def _uncompiled_backward_under_jit(xw: tf.Tensor) -> bool:
    macs = _step_macs(xw)
    return macs is not None and macs >= UNCOMPILED_BACKWARD_MIN_MACS and xw.shape[-1] <= UNCOMPILED_BACKWARD_MAX_UNITS


#: (activation, dU inside the loop, backward compiled) -> (forward, backward): the while loop's passes as
#: `tf.function`s (the forward always with `jit_compile=True`). The size-dependent choices are keys here,
#: made from the caller's static shapes: these functions retrace with relaxed (`None`) shapes once they
#: see several input shapes (`reduce_retracing`), and a choice made inside them then saw an unknown batch.
#: (Measured before: DynamicUnroll+XLA at 256·50·64·256 ran its train step at 1.11x Keras' after smaller
#: shapes had been traced in the same process, 0.84x when traced alone.)
_COMPILED_PASSES: Dict[Tuple[Any, bool, bool], Tuple[Any, Any]] = {}


def _compiled_passes(activation: Any, du_in_loop: bool, compile_backward: bool = True) -> Tuple[Any, Any]:
    """The XLA-compiled forward loop for `activation` and its backward loop (XLA-compiled or a plain
    `tf.function`, `dU` inside the loop or after it), one pair per setting per process.

    They take and return dense tensors only, and the `tf.custom_gradient` that joins them runs outside
    XLA: no TensorList ever crosses the XLA boundary, so any tape (persistent, nested, `jacobian`,
    `model.fit`) can differentiate the layer. (Compiling a function that holds the custom gradient makes
    TensorFlow differentiate *through* it under persistent tapes, which needs the loop's TensorLists.)
    """
    key = (activation, du_in_loop, compile_backward)
    passes = _COMPILED_PASSES.get(key)
    if passes is None:
        derivative = _derivatives()[activation]

        def forward(xw, h0, kernel, rec_mask, valid, stop):
            return _forward_loop(xw, h0, kernel, rec_mask, valid, stop, activation)

        def backward(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last):
            # Uncompiled, a TensorArray over `hs` is a copy of it (T·B·H: 1282 -> 1893 MB of activations at
            # T=20000, B=32, H=256); `tf.gather` reads each step in place (1284 MB, same step time within 2 %).
            read_mode = None if compile_backward else "slice"
            args = (hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last, derivative, du_in_loop, read_mode)
            return _backward_loop(*args)

        passes = _COMPILED_PASSES[key] = (
            tf.function(forward, jit_compile=True, autograph=False, reduce_retracing=True),
            tf.function(backward, jit_compile=compile_backward, autograph=False, reduce_retracing=True),
        )
    return passes


def _first_order_only(grads: Tuple[tf.Tensor, ...], inputs: List[tf.Tensor]) -> Tuple[tf.Tensor, ...]:
    """`grads` unchanged, connected to `inputs` for an outer tape, whose gradient raises a clear error."""

    @tf.custom_gradient
    def guard(*tensors):
        def grad(*_):
            raise NotImplementedError(
                "The XLA-compiled fused SimpleRNN loop (DynamicUnroll, jit_compile=True or \"auto\") has a "
                "hand-written first-order gradient only; a second-order gradient (a tape differentiating "
                "another tape's gradient) or forward-mode autodiff (`tf.autodiff.ForwardAccumulator`) needs "
                "`jit_compile=False`."
            )

        return [tf.identity(t) for t in tensors[: len(grads)]], grad

    return tuple(guard(*grads, *inputs))


def _recurrence(
    xw: tf.Tensor,
    h0: tf.Tensor,
    kernel: tf.Tensor,
    *,
    activation: Callable[[tf.Tensor], tf.Tensor],
    derivative: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    rec_mask: Optional[tf.Tensor],
    valid: Optional[tf.Tensor],
    stop: Optional[tf.Tensor],
    unrolled: bool,
    num_steps: Optional[int],
    jit: bool = False,
    need_states: bool = True,
) -> Tuple[Optional[tf.Tensor], tf.Tensor]:
    """`hs[t] = where(valid_t, act(xw_t + (h_{t-1}·m) U), h_{t-1})` with a hand-written gradient.

    Returns `(hs (T, B, H), h_last)`. With an early `stop` (a scalar tensor <= T; only in the while loop),
    `hs[t >= stop]` is zero and `h_last` is the state after step `stop - 1`. `jit=True` (while loop only)
    runs both passes as XLA-compiled functions on dense tensors (`_compiled_passes`). `need_states=False`
    returns `(None, h_last)`: `hs` stays internal, so the backward pass gets no (zero) `d_hs` to read
    (a graph-mode custom gradient receives zeros for an unused output, not None).
    """
    need_states = need_states or not SKIP_UNUSED_STATES
    if unrolled:
        vs = tf.unstack(valid, num=num_steps) if valid is not None else [None] * num_steps
    if unrolled and not STATIC_CUSTOM_GRADIENT:
        # Python-unrolled: plain autodiff has no O(T^2) trap here; only the projection is hoisted.
        h, states = h0, []
        for xw_t, v_t in zip(xw, vs):  # here `xw` is a list of per-step tensors (`_static_chunk`)
            h = _forward_step(xw_t, v_t, h, kernel, rec_mask, activation)
            states.append(h)
        return (tf.stack(states) if need_states else None), h
    if jit and not unrolled:
        uncompiled = _uncompiled_backward_under_jit(xw)
        du_in_loop = _du_in_loop_graph(xw) if uncompiled else _du_in_loop_xla(xw)
        compiled_forward, compiled_backward = _compiled_passes(activation, du_in_loop, compile_backward=not uncompiled)

        def forward_pass(*args):
            # Not recorded: a tape watching the compiled call would ask it for its TensorLists; the
            # custom gradient below is what the tapes see.
            with record.stop_recording():
                return compiled_forward(*args)

        def backward_pass(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last):
            with record.stop_recording():
                grads = compiled_backward(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last)
            return _first_order_only(grads, [t for t in (hs, h0, kernel, d_hs, d_last) if t is not None])

    else:
        forward_pass = lambda *args: _forward_loop(*args, activation)  # noqa: E731
        du_in_loop = _du_in_loop_graph(xw)
        backward_pass = lambda *args: _backward_loop(*args, derivative, du_in_loop)  # noqa: E731

    @tf.custom_gradient
    def run(xw, h0, kernel):
        if unrolled:
            h, states = h0, []
            for xw_t, v_t in zip(tf.unstack(xw, num=num_steps), vs):
                h = _forward_step(xw_t, v_t, h, kernel, rec_mask, activation)
                states.append(h)
            hs, h_last = tf.stack(states), h
        else:
            hs, h_last = forward_pass(xw, h0, kernel, rec_mask, valid, stop)

        def grad(*upstream):
            d_hs, d_last = upstream if need_states else (None, upstream[0])
            if not unrolled:
                return backward_pass(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last)
            g = tf.zeros_like(h0) if d_last is None else d_last
            d_list = [None] * num_steps if d_hs is None else tf.unstack(d_hs, num=num_steps)
            dzs = [None] * num_steps
            for t in reversed(range(num_steps)):
                g = g if d_list[t] is None else g + d_list[t]
                dzs[t], g = _backward_step(states[t], vs[t], g, kernel, rec_mask, derivative)
            dz_all = tf.stack(dzs)
            return dz_all, g, _kernel_gradient(hs, h0, dz_all, rec_mask)

        return ((hs, h_last) if need_states else h_last), grad

    if need_states:
        return run(xw, h0, kernel)
    return None, run(xw, h0, kernel)


#: `False` returns the state sequence from the fused recurrence even when the caller drops it (the old
#: behaviour, kept for re-measuring `need_states`).
SKIP_UNUSED_STATES = True

#: The Python-unrolled loop hoists the projection but keeps plain autodiff: measured at 32·28·28·128,
#: 64·100·16·64 and 256·50·64·256, the hand-written backward pass was 10-20 % slower there (autodiff lets
#: each step's `dU` product run on the other core while the `dh` chain goes on; a Python-unrolled graph has
#: no O(T²) trap). `True` runs the hand-written gradient in the static loop too (kept for re-measuring).
STATIC_CUSTOM_GRADIENT = False


#: The Python-unrolled loop projects the inputs `STATIC_PROJECTION_CHUNK` steps at a time instead of in one
#: product, when a step is small (`B·H·H < STATIC_CHUNK_MAX_MACS`): chunk c+1's product then runs on the
#: other core while the recurrence works through chunk c, and the gradient's `dW` partial products overlap
#: the backward chain the same way, instead of sitting before and after it on the critical path.
#: Measured (interleaved A/B of the training step against `SimpleRNN(unroll=True)`, 15 rounds, two runs):
#: one product 0.94-0.98x at 32·28·28·128 and 0.85-0.95x at 64·100·16·64; chunks of 4: 0.80-0.85x and
#: 0.83-0.84x (2: 0.85-0.94x; 8: as 4). At 256·50·64·256 (compute-bound) no chunking beat one product
#: (1.02-1.07x against 1.05-1.19x), so large steps keep it. `0` always projects in one product.
STATIC_PROJECTION_CHUNK = 4
STATIC_CHUNK_MAX_MACS = 2**22


def _static_chunk(inputs: tf.Tensor, units: int) -> int:
    """How many steps of (T, B, F) `inputs` the Python-unrolled loop projects per product."""
    if not STATIC_PROJECTION_CHUNK or _macs(inputs.shape[1], units) >= STATIC_CHUNK_MAX_MACS:
        return inputs.shape[0]
    return STATIC_PROJECTION_CHUNK


def _project(
    inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor], shapes: Optional[Tuple[Any, Any]] = None
) -> tf.Tensor:
    """`inputs W + b` for (T, B, F) `inputs` as one `[T·B, F] × [F, H]` product: (T, B, H).

    `shapes`: the `([-1, F], [T, -1, H])` shape tensors, built once by a caller that projects many chunks
    (fewer graph ops); else they are built here from the input's shape.
    """
    units = kernel.shape[-1]
    flat, out = shapes or ([-1, kernel.shape[0]], tf.concat([tf.shape(inputs)[:2], [units]], axis=0))
    xw = tf.matmul(tf.reshape(inputs, flat), kernel)
    if bias is not None:
        xw = xw + bias
    xw = tf.reshape(xw, out)
    xw.set_shape(inputs.shape[:2].concatenate([units]))
    return xw


def simple_rnn_loop(
    cell: Any,
    prepared: _core.Prepared,
    *,
    training: Any = None,
    return_all_outputs: bool = True,
    unrolled: bool = False,
    jit: bool = False,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """The fused SimpleRNN unroll. Returns `(outputs (T, B, H) or None, last_output, [final_state])`.

    `unrolled=True` writes the loop out in Python (for `StaticUnroll`), else it is a `tf.while_loop`;
    `jit=True` runs the while loop's forward and backward passes XLA-compiled (the projection, dropout
    and the mask bookkeeping around them are a few large ops and stay outside).
    """
    derivative = simple_rnn_derivative(cell, training)
    if derivative is None:
        raise ValueError(f"`cell` cannot take the fused SimpleRNN path. Received: cell={cell!r}")
    training = _python_training(training)
    inputs = prepared.inputs
    dtype = inputs.dtype
    steps = prepared.num_steps if prepared.num_steps is not None else tf.shape(inputs)[0]
    with _core.dropout_masks(cell, prepared, training):
        dp_mask = rec_mask = None
        if training:
            dp_mask = cell.get_dropout_mask(inputs[0])
            rec_mask = cell.get_recurrent_dropout_mask(prepared.initial_state[0])
    if dp_mask is not None:
        inputs = inputs * dp_mask
    kernel = _as_tensor(cell.kernel, dtype)
    bias = _as_tensor(cell.bias, dtype) if cell.bias is not None else None
    xw: Any
    if unrolled and not STATIC_CUSTOM_GRADIENT:
        chunk = _static_chunk(inputs, cell.units)
        sizes = [min(chunk, prepared.num_steps - start) for start in range(0, prepared.num_steps, chunk)]
        parts = tf.split(inputs, sizes, axis=0) if len(sizes) > 1 else [inputs]
        flat = tf.constant([-1, prepared.features])
        shapes = {size: tf.constant([size, -1, cell.units]) for size in set(sizes)}  # shared: fewer graph ops
        xw = []  # one (B, H) tensor per step, projected `chunk` steps at a time (5 ops per chunk)
        for size, part in zip(sizes, parts):
            xw.extend(tf.unstack(_project(part, kernel, bias, (flat, shapes[size])), num=size))
    else:
        xw = _project(inputs, kernel, bias)
    stop = None
    if prepared.max_length is not None and not unrolled:
        stop = tf.minimum(steps, prepared.max_length)
    hs, h_last = _recurrence(
        xw,
        prepared.initial_state[0],
        _as_tensor(cell.recurrent_kernel, dtype),
        activation=cell.activation,
        derivative=derivative,
        rec_mask=rec_mask,
        valid=prepared.valid,
        stop=stop,
        unrolled=unrolled,
        num_steps=prepared.num_steps,
        jit=jit,
        need_states=return_all_outputs,
    )
    valid = prepared.valid
    if valid is None:
        return (hs if return_all_outputs else None), h_last, [h_last]
    seen = tf.cumsum(tf.cast(valid, tf.int32), axis=0) > 0  # (T, B): a valid step happened at or before t
    last = tf.where(tf.reduce_any(valid, axis=0)[:, None], h_last, tf.zeros_like(h_last))
    outputs = None
    if return_all_outputs:
        keep = valid if prepared.zero_output else seen
        outputs = tf.where(keep[:, :, None], hs, tf.zeros_like(hs))
    return outputs, last, [h_last]


# ------------------------------------------------------------------------ hoisted LSTM / GRU (static)
class _ProjectedCell:
    """The recurrent half of an `LSTMCell`/`GRUCell`, fed with inputs already multiplied by the kernel."""

    _call_has_training_arg = False

    def __init__(self, cell: Any, kind: str, dtype: Any) -> None:
        self.kind = kind
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


def project_gated(cell: Any, kind: str, prepared: _core.Prepared, training: Any) -> Tuple[Any, _core.Prepared]:
    """Hoists `x W` (and GRU's input bias) out of the loop: returns the recurrent half and the new inputs."""
    training = _python_training(training)
    inputs = prepared.inputs
    dtype = inputs.dtype
    with _core.dropout_masks(cell, prepared, training):
        dp_mask = cell.get_dropout_mask(inputs[0]) if training and cell.dropout > 0 else None
    if dp_mask is not None:
        inputs = inputs * dp_mask
    kernel = _as_tensor(cell.kernel, dtype)
    width = kernel.shape[-1]
    xk = tf.matmul(tf.reshape(inputs, [-1, prepared.features]), kernel)
    if kind == "gru" and cell.use_bias:
        bias = _as_tensor(cell.bias, dtype)
        xk = xk + (bias[0] if cell.reset_after else bias)
    xk = tf.reshape(xk, tf.concat([tf.shape(inputs)[:2], [width]], axis=0))
    xk.set_shape(inputs.shape[:2].concatenate([width]))
    projected = _ProjectedCell(cell, kind, dtype)
    return projected, dataclasses.replace(prepared, inputs=xk, features=width)


# ------------------------------------------------------------------------------------- dispatch
def static_fast_path(
    cell: Any, prepared: _core.Prepared, *, training: Any, return_all_outputs: bool
) -> Optional[tuple]:
    """The static loop's fast path for `cell`, or None when it takes the generic path."""
    if simple_rnn_derivative(cell, training) is not None:
        outputs, last, state = simple_rnn_loop(
            cell, prepared, training=training, return_all_outputs=return_all_outputs, unrolled=True
        )
        return (tf.unstack(outputs, num=prepared.num_steps) if outputs is not None else None), last, state
    kind = gated_kind(cell, training)
    if kind is not None:
        from keras_unroll.loops.static import static_loop

        projected, projected_prepared = project_gated(cell, kind, prepared, training)
        return static_loop(projected, projected_prepared, training=None, return_all_outputs=return_all_outputs)
    return None


def dynamic_fast_path(
    cell: Any, prepared: _core.Prepared, *, training: Any, return_all_outputs: bool, jit: bool = False
) -> Optional[tuple]:
    """The while loop's fast path for `cell`, or None when it takes the generic path."""
    if simple_rnn_derivative(cell, training) is not None:
        return simple_rnn_loop(cell, prepared, training=training, return_all_outputs=return_all_outputs, jit=jit)
    return None


def _warn_once(cell: Any, message: str) -> None:
    if not cell.__dict__.get("_keras_unroll_warned_jit"):
        cell.__dict__["_keras_unroll_warned_jit"] = True
        warnings.warn(message, stacklevel=4)


def run_compiled(loop: Callable[..., tuple], cell: Any, prepared: _core.Prepared, **options: Any) -> tuple:
    """Runs `loop(cell, prepared, **options)` XLA-compiled, in a `tf.function(jit_compile=True)` cached per cell.

    Its own compiled function makes XLA independent of the caller: eager calls, `model.fit` with the CPU
    default `jit_compile=False`, and `model.fit(jit_compile=True)` (where it is simply inlined).
    """
    if loop.__name__ == "dynamic_loop" and simple_rnn_derivative(cell, options.get("training")) is not None:
        # The fused loop compiles its two passes only, with the custom gradient between them outside XLA
        # (`_compiled_passes`): compiling the whole loop made persistent tapes fail on TensorLists.
        if prepared.inputs.shape[1] == 0 or set(options) - {"training", "return_all_outputs"}:
            return loop(cell, prepared, **options)
        return dynamic_fast_path(cell, prepared, jit=True, **options)
    if loop.__name__ == "dynamic_loop":
        # TF cannot differentiate a compiled `tf.while_loop` from outside XLA (its gradient accumulators are
        # TensorLists, which may not cross the XLA boundary); only the fused loop, whose gradient is its own
        # loop, compiles alone. Other cells are compiled by `model.compile(jit_compile=True)` as a whole.
        _warn_once(
            cell,
            f"jit_compile=True: the while loop of {type(cell).__name__} cannot be XLA-compiled on its own "
            "(only the SimpleRNN family's fused loop can); it runs uncompiled. To compile it, compile the whole "
            "train step: `model.compile(..., jit_compile=True)`.",
        )
        from keras_unroll.loops.dynamic import run_dynamic

        return run_dynamic(cell, prepared, **options)
    try:
        options["training"] = _python_training(options.get("training"))
    except TypeError:  # a symbolic training flag cannot key a cache; run uncompiled
        return loop(cell, prepared, **options)
    key = (loop.__name__, GENERIC_ONLY, prepared.zero_output, prepared.num_steps, prepared.max_length is None)
    key += tuple(sorted(options.items()))
    cache = cell.__dict__.setdefault("_keras_unroll_compiled_fns", {})
    fn = cache.get(key)
    if fn is None:
        settings = prepared.settings_only()

        def compiled(inputs, valid, initial_state, max_length, masks):
            rebuilt = _core.same_sequence_as(settings, inputs, valid, initial_state, max_length)
            for dropout_cell, (dp_mask, rec_mask) in zip(_dropout_cells(cell), masks or ()):
                # The loop's `dropout_masks` finds these and uses them instead of drawing new ones.
                dropout_cell._dropout_mask, dropout_cell._recurrent_dropout_mask = dp_mask, rec_mask
            try:
                return loop(cell, rebuilt, **options)
            finally:
                _core.reset_dropout(cell)

        fn = cache[key] = tf.function(compiled, jit_compile=True, autograph=False)
    masks = None
    if options.get("training"):
        # Drawn outside XLA, so a seed gives the same masks compiled or not (XLA's random bits differ).
        with _core.dropout_masks(cell, prepared, True):
            masks = [(c._dropout_mask, c._recurrent_dropout_mask) for c in _dropout_cells(cell)]
    return fn(prepared.inputs, prepared.valid, prepared.initial_state, prepared.max_length, masks)


def _dropout_cells(cell: Any) -> List[Any]:
    """The cells (in a stack too) that draw Keras dropout masks."""
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

    if isinstance(cell, keras.layers.StackedRNNCells):
        return [c for sub_cell in cell.cells for c in _dropout_cells(sub_cell)]
    return [cell] if isinstance(cell, DropoutRNNCell) else []
