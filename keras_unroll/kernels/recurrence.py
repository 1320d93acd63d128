"""The fused recurrence: one kernel for SimpleRNN, LSTM and GRU, a mode per cell family.

What `make_step` does per time step for these cells is split in two: the input projection `xw = x W + b`
(every gate's) is a product over many steps, and the loop runs only the recurrent half of the cell
(`cells.forward_step`, the one part that depends on the family). In a `tf.while_loop` the gradient is
written by hand (`tf.custom_gradient` over the projection and the recurrence together), because plain
autodiff of a loop that reads a hoisted, differentiable tensor costs O(T²) there. The backward loop does
only the recurrent work per step (`cells.backward_step`); `dU` (and GRU's recurrent bias), `dW`, `db` and
`dx` are products over many steps (`cells.recurrent_grads`; SimpleRNN may accumulate `dU` in the loop,
`Choices.du_in_loop`).

With `Choices.jit` the forward and backward passes are XLA-compiled functions on dense tensors, with input
signatures whose time axis is open (one trace serves every length), run a chunk of steps at a time: the
forward pass projects a chunk's inputs just before running its steps, and the backward pass turns a
chunk's gradients into its share of the weight gradients and its `dx` before going on to the previous
chunk (a chunk's `(B, G·H)` rows take at most `Choices.chunk_bytes`). What a training step keeps of size T
is then the states and the residuals the backward pass reads (LSTM: `h` and `[i, f, g, o, c_{t-1}]`;
SimpleRNN: `h` alone), not the projection and its gradient beside them (docs/memory.md has the figures).
Uncompiled, the whole sequence is one chunk. The `tf.custom_gradient` joining the passes stays outside XLA,
so persistent and nested tapes, `jacobian` and `model.fit` differentiate it; a second-order gradient raises
a clear `NotImplementedError`.

When no tape records (`Choices.inference`, the planner's decision), one compiled loop projects each step's
own `x_t W + b` and keeps only what the caller asked for; a gradient asked for later anyway (a function
traced without a tape, differentiated from outside) differentiates the training path over the same
arguments.

Masks (`valid`, `(T, B)` bool) copy the state through an invalid step, so its gradient passes through
unchanged; `stop` (a scalar <= T) ends the loop early (TF1's `max(sequence_length)`): states at `t >= stop`
are zero and the last state is the one after step `stop - 1`. Dropout masks are the sequence's
(`step.DropoutMasks`), applied as Keras' cell applies them. Which path runs, and every number it runs with,
is the planner's (`keras_unroll.plan`); measurements behind them are in docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from keras_unroll import _private
from keras_unroll import step as step_lib
from keras_unroll.kernels import cells
from keras_unroll.kernels.chunks import (
    Prefetch,
    as_tensor,
    bucket_steps,
    chunk_array,
    chunk_of,
    chunk_schedule,
    first_order_only,
    padded_length,
    partial_chunk_valid,
    project,
    project_chunk,
    project_in_chunks,
    stack_chunks,
    steps_per_chunk,
    zero_fill,
)

Tensors = Dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Choices:
    """How the fused recurrence runs one call; every field is the planner's decision (`plan.make_plan`).

    Attributes:
        unrolled: Python-unrolled steps (`StaticUnroll`) instead of a `tf.while_loop`.
        jit: The while loop's passes XLA-compiled (the backward pass only with `compile_backward`).
        compile_backward: With `jit`, the backward pass XLA-compiled too (else TensorFlow's own kernels).
        du_in_loop: SimpleRNN: the backward loop accumulates `dU` per step instead of one product after it.
        static_chunk: Unrolled only: steps projected per matrix product (0: one product).
        bucket_steps: With `jit`, pad the steps to a bucket (`chunks.bucket_steps`) before the compiled passes,
            for callers whose T changes from call to call.
        chunk_bytes: With `jit`, the passes project the inputs and back-propagate into them a chunk of steps at
            a time, as many steps as keep a chunk's `(B, G·H)` rows within this many bytes (0: one chunk).
        min_chunks: Fewer chunks than this and the passes run the whole sequence as one.
        inference: No tape records: the compiled inference loop (steps project their own inputs).
        recording: A tape or forward accumulator may record: the forward pass keeps what the backward reads.
        fma_features: Under XLA, a chunk's projection with at most this many features is a fused sum
            (`chunks.project_chunk`; 0: always a product).
        in_place: The forward loop reads its steps in place (`tf.gather`) rather than through a TensorArray.
        backward_ahead: Parallel iterations of the backward step loop.
        chunk_ahead: Parallel iterations of the backward loop over chunks.
    """

    unrolled: bool = False
    jit: bool = False
    compile_backward: bool = True
    du_in_loop: bool = False
    static_chunk: int = 0
    bucket_steps: bool = False
    chunk_bytes: int = 0
    min_chunks: int = 1
    inference: bool = False
    recording: bool = True
    fma_features: int = 0
    in_place: bool = True
    backward_ahead: int = 10
    chunk_ahead: int = 10


class Shapes(NamedTuple):
    """The static shapes and dtype that fix a compiled pass's signature (never T)."""

    dtype: tf.DType
    batch: Optional[int]
    features: Optional[int]
    units: int


# ------------------------------------------------------------------------------------ the loops
class Steps(NamedTuple):
    """The steps one forward loop runs: `t < stop` (all without it) of `xw`, written at `offset + t`.

    `projection` `(W, b)`: `xw` is the input sequence itself and each step projects its own `x_t W + b`
    (the inference loop); else `xw` holds the projected inputs `(C, B, G·H)`."""

    xw: tf.Tensor
    valid: Optional[tf.Tensor]
    stop: Optional[tf.Tensor] = None
    offset: Any = 0
    projection: Optional[Tuple[tf.Tensor, Optional[tf.Tensor]]] = None


def _forward_steps(mode: cells.Mode, w: cells.Weights, steps: Steps, state: Tuple, tas: List, in_place: bool):
    """Runs `steps` from `state` `(h, c)` (`c` a scalar placeholder without a carry), writing `h_t` (and the
    residuals) to `tas`. Step t's inputs are read one iteration ahead (`Prefetch`). Returns
    `(t after the last step, h, c, tas)`."""
    count = tf.shape(steps.xw)[0]
    projecting = steps.projection is not None
    reads = Prefetch([None if projecting else steps.xw, steps.valid], count, in_place=in_place)

    def body(t, h, c, *rest):
        x_t, v_t = reads.unpack(rest[: reads.count])
        if steps.projection is not None:
            kernel, bias = steps.projection
            x_t = tf.matmul(tf.gather(steps.xw, t), kernel)
            x_t = x_t if bias is None else x_t + bias
        h_new, c_new, res = cells.forward_step(mode, x_t, h, c, w)
        if v_t is not None:
            h_new = tf.where(v_t[:, None], h_new, h)
            c_new = tf.where(v_t[:, None], c_new, c) if mode.has_carry else c_new
        written = [ta.write(steps.offset + t, v) for ta, v in zip(rest[reads.count :], [h_new, res])]
        return (t + 1, h_new, c_new, *reads.at(t + 1), *written)

    limit = count if steps.stop is None else steps.stop
    t, h, c, *rest = tf.while_loop(
        lambda t, *_: t < limit, body, (tf.constant(0), *state, *reads.at(0), *tas), maximum_iterations=count
    )
    return t, h, c, list(rest[reads.count :])


class Chunk(NamedTuple):
    """What the backward loop over one chunk reads: its states, residuals, the state entering it, `valid`,
    the gradients of its outputs and its `stop` (None: every step ran)."""

    hs: tf.Tensor
    residuals: Optional[tf.Tensor]
    h_start: tf.Tensor
    valid: Optional[tf.Tensor]
    d_hs: Optional[tf.Tensor]
    stop: Optional[tf.Tensor] = None


def _backward_loop(mode: cells.Mode, choices: Choices, w: cells.Weights, chunk: Chunk, g: Tuple):
    """The backward while loop over one chunk, from `g` `(dL/dh, dL/dc)` leaving it. Returns
    `(d_xw (C, B, G·H), dL/dh entering, dL/dc entering, dU, d_rbias or None)`."""
    steps, units = tf.shape(chunk.hs)[0], chunk.h_start.shape[-1]
    width = mode.gates * units
    du_in_loop = choices.du_in_loop and mode.family == "simple_rnn"
    h_prev_all = None
    if mode.reads_h_prev or not du_in_loop:
        h_prev_all = tf.concat([chunk.h_start[None], chunk.hs[:-1]], axis=0)
    simple = mode.family == "simple_rnn"
    values = [chunk.residuals, chunk.hs if simple else None, h_prev_all if mode.reads_h_prev else None]
    reads = Prefetch(values + [chunk.d_hs, chunk.valid], steps)
    d_ta = tf.TensorArray(chunk.hs.dtype, size=steps, element_shape=tf.TensorShape([chunk.h_start.shape[0], width]))
    first = (steps if chunk.stop is None else chunk.stop) - 1
    if chunk.stop is not None:
        d_ta = zero_fill(d_ta, first + 1, steps, tf.zeros(tf.stack([tf.shape(chunk.h_start)[0], width]), d_ta.dtype))
    mask = None if w.mask is None else w.mask[0]

    def body(t, g_h, g_c, *rest):
        res, h_t, h_prev, d_t, v_t = reads.unpack(rest[: reads.count])
        d_ta, d_u = rest[reads.count], rest[reads.count + 1 :]
        g_h = g_h if d_t is None else g_h + d_t
        d_x, d_prev, d_cprev = cells.backward_step(mode, cells.StepValues(res, h_t, h_prev), g_h, g_c, w)
        if v_t is not None:
            d_x = tf.where(v_t[:, None], d_x, tf.zeros_like(d_x))
            d_prev = tf.where(v_t[:, None], d_prev, g_h)
            d_cprev = tf.where(v_t[:, None], d_cprev, g_c) if mode.has_carry else d_cprev
        if du_in_loop:  # h_{t-1}; at t = 0 this reads h_0, corrected after the loop (one product there)
            h_before = tf.gather(chunk.hs, tf.maximum(t - 1, 0))
            h_before = h_before if mask is None else h_before * mask
            d_u = (d_u[0] + tf.matmul(h_before, d_x, transpose_a=True),)
        return (t - 1, d_prev, d_cprev, *reads.at(t - 1), d_ta.write(t, d_x), *d_u)

    initial = (first, *g, *reads.at(first), d_ta) + ((tf.zeros_like(w.recurrent),) if du_in_loop else ())
    _, g_h, g_c, *rest = tf.while_loop(
        lambda t, *_: t >= 0, body, initial, maximum_iterations=steps, parallel_iterations=choices.backward_ahead
    )
    d_xw = rest[reads.count].stack()
    d_xw.set_shape(chunk.hs.shape[:2].concatenate([width]))
    if du_in_loop:
        entering = [chunk.h_start, chunk.hs[0]] if mask is None else [chunk.h_start * mask, chunk.hs[0] * mask]
        d_u = rest[reads.count + 1] + tf.matmul(entering[0] - entering[1], d_xw[0], transpose_a=True)
        return d_xw, g_h, g_c, d_u, None
    d_u, d_rbias = cells.recurrent_grads(mode, h_prev_all, d_xw, chunk.residuals, w.mask)
    return d_xw, g_h, g_c, d_u, d_rbias


# --------------------------------------------------------------------------------- the passes
def _projection(x: tf.Tensor, t: Tensors, fma_features: int) -> tf.Tensor:
    """`x W + b` for one chunk, or with `implementation=1`'s per-gate input masks `concat_k (x·m_k) W_k + b_k`."""
    if "in_masks" not in t:
        return project_chunk(x, t["kernel"], t["bias"], fma_features)
    gates = t["in_masks"].shape[0]
    parts = zip(tf.unstack(t["in_masks"]), tf.split(t["kernel"], gates, axis=1), tf.split(t["bias"], gates))
    return tf.concat([project_chunk(x * m, k, b, fma_features) for m, k, b in parts], axis=-1)


def _projection_grads(x: tf.Tensor, t: Tensors, d_xw: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The gradients of `_projection` for `(C, B, F)` inputs and their `d_xw`: `(dx, d_kernel, d_bias)`."""
    kernel = t["kernel"]
    flat_x = tf.reshape(x, [-1, tf.shape(x)[-1]])
    flat_d = tf.reshape(d_xw, [-1, kernel.shape[-1]])
    d_bias = tf.reduce_sum(flat_d, axis=0)
    if "in_masks" not in t:
        d_x = tf.matmul(flat_d, kernel, transpose_b=True)
        return tf.reshape(d_x, tf.shape(x)), tf.matmul(flat_x, flat_d, transpose_a=True), d_bias
    gates = t["in_masks"].shape[0]
    d_x, d_kernels = None, []
    for m, d_k, k in zip(tf.unstack(t["in_masks"]), tf.split(flat_d, gates, axis=1), tf.split(kernel, gates, axis=1)):
        d_kernels.append(tf.matmul(tf.reshape(x * m, [-1, tf.shape(x)[-1]]), d_k, transpose_a=True))
        term = tf.reshape(tf.matmul(d_k, k, transpose_b=True), tf.shape(x)) * m
        d_x = term if d_x is None else d_x + term
    return d_x, tf.concat(d_kernels, axis=1), d_bias


def _weights(mode: cells.Mode, t: Tensors) -> cells.Weights:
    return cells.weights(mode, t["recurrent"], t.get("rbias"), t.get("rec_mask"))


def _carry(mode: cells.Mode, t: Tensors, name: str) -> tf.Tensor:
    """The carry's tensor, or a scalar placeholder for families without one."""
    return t[name] if mode.has_carry else tf.zeros([], t["x"].dtype)


def _arrays(mode: cells.Mode, t: Tensors, steps: Any, keep: int) -> List[tf.TensorArray]:
    """The TensorArrays a forward pass writes: none (`keep` 0), the states (1), also the residuals (2)."""
    h0 = t["h0"]
    shapes = [h0.shape, tf.TensorShape([h0.shape[0], mode.residual_width(h0.shape[-1])])]
    return [tf.TensorArray(t["x"].dtype, size=steps, element_shape=shape) for shape in shapes[:keep]]


def _stacked(tas: List[tf.TensorArray], start: Any, steps: Any, t: Tensors) -> Tensors:
    """`hs` and `residuals` from their TensorArrays, zero at the steps from `start` on (None: all ran)."""
    stacked = {}
    for name, ta in zip(("hs", "residuals"), tas):
        if start is not None:
            zeros = tf.zeros(tf.stack([tf.shape(t["h0"])[0], ta.element_shape[-1]]), ta.dtype)
            ta = zero_fill(ta, start, steps, zeros)
        value = ta.stack()
        value.set_shape(t["x"].shape[:1].concatenate(ta.element_shape))
        stacked[name] = value
    return stacked


def _forward_chunks(mode: cells.Mode, choices: Choices, w: cells.Weights, t: Tensors, tas: List) -> Tuple:
    """The forward steps a chunk at a time (`choices.chunk_bytes`), each chunk's inputs projected just before
    its steps run, the partial chunk after `stop` masked. Returns `(h, c, tas)`."""
    x = t["x"]
    chunk_steps = steps_per_chunk(x, t["kernel"].shape[-1], choices.chunk_bytes)
    chunk, full, rest = chunk_schedule(tf.shape(x)[0], t["stop"], chunk_steps, choices.min_chunks)

    def run_chunk(start, h, c, tas, partial=False):
        valid_c = None if "valid" not in t else chunk_of(t["valid"], start, chunk)
        valid_c = partial_chunk_valid(valid_c, rest, chunk, x) if partial else valid_c
        xw = _projection(chunk_of(x, start, chunk), t, choices.fma_features)
        _, h, c, tas = _forward_steps(mode, w, Steps(xw, valid_c, None, start), (h, c), tas, choices.in_place)
        return (h, c, *tas)

    initial = (tf.constant(0), t["h0"], _carry(mode, t, "c0"), *tas)
    _, h, c, *tas = tf.while_loop(
        lambda j, *_: j < full, lambda j, h, c, *a: (j + 1, *run_chunk(j * chunk, h, c, list(a))), initial
    )
    partial = lambda: run_chunk(full * chunk, h, c, list(tas), partial=True)  # noqa: E731
    h, c, *tas = tf.cond(rest > 0, partial, lambda: (h, c, *tas))
    return h, c, tas


def forward_pass(mode: cells.Mode, choices: Choices, keep: int, t: Tensors) -> Tensors:
    """The forward pass over `t["x"]` `(T, B, F)`, a chunk at a time (`choices.chunk_bytes`; 0: one chunk:
    no slices, and without `stop` every step runs). T is a multiple of the chunk; steps `t >= stop` do not
    run and are zero. Returns `h`, `c` (with a carry) and, by `keep`, `hs`, `residuals`."""
    x, stop = t["x"], t.get("stop")
    steps = tf.shape(x)[0]
    w = _weights(mode, t)
    tas = _arrays(mode, t, steps, keep)
    if choices.chunk_bytes:
        h, c, tas = _forward_chunks(mode, choices, w, t, tas)
    else:
        xw = _projection(x, t, choices.fma_features)
        state = (t["h0"], _carry(mode, t, "c0"))
        _, h, c, tas = _forward_steps(mode, w, Steps(xw, t.get("valid"), stop, 0), state, tas, choices.in_place)
    out = {"h": h, **_stacked(tas, None if stop is None else tf.maximum(stop, 0), steps, t)}
    return {**out, "c": c} if mode.has_carry else out


def _backward_chunk(mode: cells.Mode, choices: Choices, t: Tensors, schedule: Tuple, j: Any, carry: Tuple):
    """Chunk `j`'s backward loop and its share of the gradients: the next `carry`
    `(g_h, g_c, dx_c, d_kernel, d_bias, d_recurrent, d_rbias)`. `schedule`: `(chunk, rest, partial, stop)`, with
    `chunk` None for the whole sequence."""
    chunk, rest, partial, stop = schedule
    g_h, g_c, d_kernel, d_bias, d_recurrent, d_rbias = carry
    start = None if chunk is None else j * chunk  # None: the whole sequence

    def of(name: str) -> Optional[tf.Tensor]:
        return None if name not in t else (t[name] if start is None else chunk_of(t[name], start, chunk))

    h_start = t["h0"]  # the state entering
    if start is not None:
        h_start = tf.where(start > 0, tf.gather(t["hs"], tf.maximum(start - 1, 0)), h_start)
    valid_c, d_hs_c = of("valid"), of("d_hs")
    if partial:
        valid_c = partial_chunk_valid(valid_c, rest, chunk, t["x"])
        if d_hs_c is not None:  # the outputs of the steps not run are zeros: no gradient flows from them
            d_hs_c = tf.where((tf.range(chunk) < rest)[:, None, None], d_hs_c, tf.zeros_like(d_hs_c))
    found = Chunk(of("hs"), of("residuals"), h_start, valid_c, d_hs_c, stop)
    d_xw, g_h, g_c, d_rec, d_rb = _backward_loop(mode, choices, _weights(mode, t), found, (g_h, g_c))
    d_x, d_w, d_b = _projection_grads(of("x"), t, d_xw)
    d_rbias = d_rbias + d_rb if d_rb is not None else d_rbias
    return d_x, (g_h, g_c, d_kernel + d_w, d_bias + d_b, d_recurrent + d_rec, d_rbias)


def backward_pass(mode: cells.Mode, choices: Choices, t: Tensors) -> Tensors:
    """The backward pass a chunk at a time, last chunk first (`choices.chunk_bytes`; 0: one chunk). Returns
    the gradients of `x`, `kernel`, `bias`, `h0`, `recurrent` (and `c0`, `rbias` where the mode has them)."""
    x, stop = t["x"], t.get("stop")
    steps = tf.shape(t["hs"])[0]
    zero = tf.zeros([], x.dtype)
    carry: Tuple[Any, ...] = (t["d_h"], _carry(mode, t, "d_c"), tf.zeros_like(t["kernel"]), tf.zeros_like(t["bias"]))
    carry += (tf.zeros_like(t["recurrent"]), tf.zeros_like(t["bias"]) if mode.has_rbias else zero)
    if not choices.chunk_bytes:  # one chunk: no slices, and without `stop` no skipped steps
        dx, carry = _backward_chunk(mode, choices, t, (None, None, False, stop), 0, carry)
        dx.set_shape(x.shape)
    else:
        chunk_steps = steps_per_chunk(x, t["kernel"].shape[-1], choices.chunk_bytes)
        chunk, full, rest = chunk_schedule(steps, stop, chunk_steps, choices.min_chunks)
        chunks = steps // chunk
        dx_ta = chunk_array(x.dtype, chunks, x.shape[1:])
        running = full + tf.cast(rest > 0, full.dtype)  # chunks with a step to run
        dx_ta = zero_fill(dx_ta, running, chunks, tf.zeros(tf.concat([[chunk], tf.shape(x)[1:]], axis=0), x.dtype))

        def run(j, dx_ta, *carry, partial=False):
            dx_c, carry = _backward_chunk(mode, choices, t, (chunk, rest, partial, None), j, carry)
            return (dx_ta.write(j, dx_c), *carry)

        dx_ta, *carry = tf.cond(rest > 0, lambda: run(full, dx_ta, *carry, partial=True), lambda: (dx_ta, *carry))
        _, dx_ta, *carry = tf.while_loop(
            lambda j, *_: j >= 0, lambda j, *a: (j - 1, *run(j, *a)), (full - 1, dx_ta, *carry),
            parallel_iterations=choices.chunk_ahead,
        )  # fmt: skip
        dx = stack_chunks(dx_ta, x, x.shape[1:])
    d_h0, d_c0, d_kernel, d_bias, d_recurrent, d_rbias = carry
    grads = {"x": dx, "kernel": d_kernel, "bias": d_bias, "h0": d_h0, "recurrent": d_recurrent}
    grads.update({"c0": d_c0} if mode.has_carry else {})
    return {**grads, "rbias": d_rbias} if mode.has_rbias else grads


def inference_pass(mode: cells.Mode, choices: Choices, keep: int, t: Tensors) -> Tensors:
    """The inference loop: each step projects its own `x_t W + b` (no `(T, B, G·H)` projection is written and
    read back), and with `keep=0` no state sequence is written. Returns `h` (`c`) and, with `keep`, `hs`."""
    steps = tf.shape(t["x"])[0]
    stop = t.get("stop")
    projection = (t["kernel"], t.get("bias"))
    found = Steps(t["x"], t.get("valid"), stop, 0, projection)
    state = (t["h0"], _carry(mode, t, "c0"))
    end, h, c, tas = _forward_steps(
        mode, _weights(mode, t), found, state, _arrays(mode, t, steps, keep), choices.in_place
    )
    out = {"h": h, **_stacked(tas, None if stop is None else end, steps, t)}
    return {**out, "c": c} if mode.has_carry else out


# ------------------------------------------------------------------------------ compiled passes
def _spec(name: str, mode: cells.Mode, shapes: Shapes) -> tf.TensorSpec:
    """The `TensorSpec` of one named input of the passes: every axis fixed but T (`None`)."""
    if name == "stop":
        return tf.TensorSpec([], tf.int32)
    batch, units, width = shapes.batch, shapes.units, mode.gates * shapes.units
    if name == "valid":
        return tf.TensorSpec([None, batch], tf.bool)
    shape = {
        "x": [None, batch, shapes.features],
        "kernel": [shapes.features, width],
        "bias": [width],
        "rbias": [width],
        "in_masks": [mode.gates, batch, shapes.features],
        "recurrent": [units, width],
        "rec_mask": [mode.gates, batch, units],
        "residuals": [None, batch, mode.residual_width(units)],
    }.get(name, [None, batch, units] if name in ("hs", "d_hs") else [batch, units])
    return tf.TensorSpec(shape, shapes.dtype)


class _Compiled:
    """A bounded, thread-safe cache of compiled passes, shared by every layer with the same setting: `get`
    builds a `tf.function` on first use and drops the least recently used past `bound`."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.entries: "OrderedDict[Tuple, Any]" = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Tuple, build: Callable[[], Any]) -> Any:
        with self.lock:
            found = self.entries.get(key)
            if found is None:
                found = self.entries[key] = build()
            self.entries.move_to_end(key)
            while len(self.entries) > self.bound:
                self.entries.popitem(last=False)
            return found

    def count(self, families: Tuple[str, ...]) -> int:
        with self.lock:
            return sum(key[1].family in families for key in self.entries)


_PASSES = _Compiled(96)
_INFERENCE = _Compiled(96)
_SIMPLE, _GATED = ("simple_rnn",), ("lstm", "gru", "gru_rb")


def _compiled(which: str, mode: cells.Mode, choices: Choices, shapes: Shapes, names: Tuple[str, ...], keep: int):
    """The `tf.function` of one pass (`"forward"`, `"backward"`, `"inference"`) for one setting, whose input
    signature leaves only T open: one trace serves every length."""
    setting = dataclasses.replace(choices, bucket_steps=False, inference=False, recording=False)
    signature = [{name: _spec(name, mode, shapes) for name in names}]
    fn = {"forward": forward_pass, "inference": inference_pass}.get(which)
    if fn is None:
        body = lambda t: backward_pass(mode, setting, t)  # noqa: E731
    else:
        body = lambda t: fn(mode, setting, keep, t)  # noqa: E731
    compile_it = which != "backward" or choices.compile_backward

    def build():
        return tf.function(body, input_signature=signature, jit_compile=compile_it, autograph=False)

    cache = _INFERENCE if which == "inference" else _PASSES
    return cache.get((which, mode, setting, shapes, names, keep), build)


def run_pass(which: str, mode: cells.Mode, choices: Choices, keep: int, t: Tensors) -> Tensors:
    """One pass on `t`: XLA-compiled with `choices.jit` (calls not recorded: a tape watching one would ask it
    for its TensorLists; the custom gradient around is what the tapes see), else a plain function."""
    if not choices.jit:
        return backward_pass(mode, choices, t) if which == "backward" else forward_pass(mode, choices, keep, t)
    shapes = Shapes(t["x"].dtype, t["x"].shape[1], int(t["kernel"].shape[0]), int(t["recurrent"].shape[0]))
    names = tuple(sorted(t))
    with _private.stop_recording():
        return _compiled(which, mode, choices, shapes, names, keep)(t)


def cache_sizes() -> Dict[str, int]:
    """How many settings each process-wide cache of compiled passes holds, per family (`cache_bounds`)."""
    return {
        "simple_rnn_passes": _PASSES.count(_SIMPLE),
        "simple_rnn_inference": _INFERENCE.count(_SIMPLE),
        "gated_passes": _PASSES.count(_GATED),
        "gated_inference": _INFERENCE.count(_GATED),
    }


def cache_bounds() -> Dict[str, int]:
    return {name: (_INFERENCE if name.endswith("inference") else _PASSES).bound for name in cache_sizes()}


# ------------------------------------------------------------------------ the custom gradients
_DIFFERENTIABLE = ("x", "kernel", "bias", "h0", "c0", "recurrent", "rbias")


def _outputs(mode: cells.Mode, out: Tensors, hs: Optional[tf.Tensor]) -> List[tf.Tensor]:
    return ([] if hs is None else [hs]) + [out["h"]] + ([out["c"]] if mode.has_carry else [])


def _gradient_inputs(
    mode: cells.Mode, t: Tensors, found: Tensors, upstream: Sequence[Any], need_states: bool
) -> Tensors:
    """What the backward pass reads: `t` with the forward pass's `found` sequences and the gradients
    `upstream` of the outputs (zeros for those not used)."""
    upstream = list(upstream)
    d_hs = upstream.pop(0) if need_states else None
    back = {**t, "hs": found["hs"]}
    back.update({"residuals": found["residuals"]} if "residuals" in found else {})
    back["d_h"] = tf.zeros_like(t["h0"]) if upstream[0] is None else tf.convert_to_tensor(upstream[0])
    if mode.has_carry:
        back["d_c"] = tf.zeros_like(t["c0"]) if upstream[1] is None else tf.convert_to_tensor(upstream[1])
    if need_states:
        d_hs = tf.zeros_like(found["hs"]) if d_hs is None else tf.convert_to_tensor(d_hs)
        back["d_hs"] = tf.pad(d_hs, [[0, tf.shape(found["hs"])[0] - tf.shape(d_hs)[0]], [0, 0], [0, 0]])
    return back


def _training(mode: cells.Mode, choices: Choices, given: Tensors, need_states: bool) -> List[tf.Tensor]:
    """The projection and the recurrence under one `tf.custom_gradient`. Returns `[hs, h, c]` (`hs` with
    `need_states`, `c` with a carry). With `choices.jit` the sequence is padded to whole chunks (and to its
    bucket with `choices.bucket_steps`); padded steps lie past `stop`: never run, zero in every result."""
    x = given["x"]
    steps = tf.shape(x)[0]
    choices = choices if choices.jit else dataclasses.replace(choices, chunk_bytes=0)
    pad = None  # uncompiled: one chunk, never padded
    if choices.jit:
        chunk_steps = steps_per_chunk(x, given["kernel"].shape[-1], choices.chunk_bytes)
        pad = padded_length(steps, chunk_steps, choices.min_chunks, choices.bucket_steps) - steps
    fixed: Tensors = {name: given[name] for name in ("in_masks", "rec_mask") if name in given}

    def padded(value: tf.Tensor) -> tf.Tensor:
        return value if pad is None else tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1))

    def trimmed(value: tf.Tensor) -> tf.Tensor:
        return value if pad is None else value[:steps]

    fixed.update({"valid": padded(given["valid"])} if "valid" in given else {})
    if "stop" in given or choices.jit:  # the compiled passes' signature has it: padded steps lie past it
        fixed["stop"] = given.get("stop", steps)
    names = [name for name in _DIFFERENTIABLE if name in given]
    keep = 2 if choices.recording else (1 if need_states else 0)
    keep = min(keep, 1) if not mode.residual_width(1) else keep

    @tf.custom_gradient
    def run(*args):
        t = {**fixed, **dict(zip(names, args))}
        t.setdefault("bias", tf.zeros(t["kernel"].shape[-1:], t["kernel"].dtype))
        t["x"] = padded(t["x"])
        out = run_pass("forward", mode, choices, keep, t)

        def grad(*upstream: Any) -> List[Any]:
            complete = keep == 2 or (keep == 1 and not mode.residual_width(1))
            found = out if complete else run_pass("forward", mode, choices, 2 if mode.residual_width(1) else 1, t)
            back = _gradient_inputs(mode, t, found, upstream, need_states)
            grads = run_pass("backward", mode, choices, 0, back)
            result = [grads[name] for name in names]
            if choices.jit:
                # Connected to the upstream gradients too: forward-mode autodiff differentiates this function
                # with respect to them, and must meet the guard's error rather than a missing JVP.
                connected = [t[name] for name in ("x", "kernel", "h0", "recurrent")] + [found["hs"]]
                connected += [back[name] for name in ("d_h", "d_c", "d_hs") if name in back]
                result = first_order_only(result, connected, mode.name)
            return [trimmed(result[0])] + result[1:]

        return _outputs(mode, out, trimmed(out["hs"]) if need_states else None), grad

    return list(run(*[given[name] for name in names]))


def _inference(mode: cells.Mode, choices: Choices, given: Tensors, need_states: bool) -> List[tf.Tensor]:
    """The forward pass when no tape records: one compiled loop whose steps project their own inputs.
    Returns `_training`'s list; a gradient asked for later anyway differentiates `_training`."""
    steps = tf.shape(given["x"])[0]
    names = [name for name in _DIFFERENTIABLE if name in given]
    fixed: Tensors = {name: given[name] for name in ("rec_mask", "valid", "stop") if name in given}
    if choices.bucket_steps:  # padded steps lie past `stop`: never run
        pad = bucket_steps(steps) - steps
        fixed.update({"valid": tf.pad(given["valid"], [[0, pad], [0, 0]])} if "valid" in given else {})
        fixed["stop"] = given.get("stop", steps)

    @tf.custom_gradient
    def run(*args):
        t = {**fixed, **dict(zip(names, args))}
        t.setdefault("bias", tf.zeros(t["kernel"].shape[-1:], t["kernel"].dtype))
        if choices.bucket_steps:
            t["x"] = tf.pad(t["x"], [[0, pad], [0, 0], [0, 0]])
        out = run_pass("inference", mode, choices, 1 if need_states else 0, t)
        results = _outputs(mode, out, out["hs"][:steps] if need_states else None)

        def grad(*upstream: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(list(args))
                training = dataclasses.replace(choices, inference=False, recording=True)
                again = _training(mode, training, {**given, **dict(zip(names, args))}, need_states)
            filled = [tf.zeros_like(r) if u is None else u for u, r in zip(upstream, again)]
            return tape.gradient(again, list(args), output_gradients=filled)

        return results, grad

    return list(run(*[given[name] for name in names]))


# ------------------------------------------------------------------------------------ the adapter
def cell_tensors(cell: Any, mode: cells.Mode, prepared: step_lib.Prepared, masks: step_lib.DropoutMasks) -> Tensors:
    """The tensors of one call: the inputs (with a single input dropout mask applied), the cell's weights in
    the inputs' dtype, the initial state, the per-gate dropout masks, `valid` and the early `stop`."""
    x = prepared.inputs
    dtype = x.dtype
    dp_mask, rec_mask = masks.of(cell)
    if mode.family != "simple_rnn":  # Keras' LSTM and GRU cells apply dropout for 0 < rate < 1 only
        dp_mask = dp_mask if 0.0 < cell.dropout < 1.0 else None
        rec_mask = rec_mask if 0.0 < cell.recurrent_dropout < 1.0 else None
    t = {"kernel": as_tensor(cell.kernel, dtype), "recurrent": as_tensor(cell.recurrent_kernel, dtype)}
    if isinstance(dp_mask, (list, tuple)):
        t["in_masks"] = tf.stack(list(dp_mask))  # implementation=1: one mask per gate, in the projection
    elif dp_mask is not None:
        x = x * dp_mask
    if rec_mask is not None:
        t["rec_mask"] = tf.stack(list(rec_mask) if isinstance(rec_mask, (list, tuple)) else [rec_mask] * mode.gates)
    bias = getattr(cell, "bias", None) if mode.family == "simple_rnn" or cell.use_bias else None
    if bias is not None:
        bias = as_tensor(bias, dtype)
        t.update({"bias": bias[0], "rbias": bias[1]} if mode.family == "gru" else {"bias": bias})
    t.update({"x": x, "h0": prepared.initial_state[0]})
    t.update({"c0": prepared.initial_state[1]} if mode.has_carry else {})
    t.update({"valid": prepared.valid} if prepared.valid is not None else {})
    if prepared.max_length is not None:
        t["stop"] = tf.minimum(tf.shape(x)[0], tf.cast(prepared.max_length, tf.int32))
    return t


def fused_loop(
    cell: Any,
    prepared: step_lib.Prepared,
    masks: step_lib.DropoutMasks,
    choices: Choices,
    return_all_outputs: bool = True,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """The fused while-loop unroll of `cell` (any family `cells.mode_of` knows): returns
    `(outputs (T, B, H) or None, last_output, final_state)`, `final_state` in Keras' order (`[h, c]` for
    LSTM, `[h]` otherwise).

    `prepared` is time-major (already reversed for `go_backwards`); masks, `zero_output` and the early stop
    at `max_length` follow `step.make_step`'s semantics. The inference loop runs when `choices.inference`
    (the planner's decision: no tape records and no input dropout).
    """
    mode = cells.mode_of(cell)
    if mode is None:
        raise ValueError(f"`cell` cannot take the fused recurrence (see `cells.mode_of`). Received: cell={cell!r}")
    given = cell_tensors(cell, mode, prepared, masks)
    run = _inference if choices.inference else _training
    results = run(mode, choices, given, return_all_outputs)
    hs = results.pop(0) if return_all_outputs else None
    outputs, last = step_lib.outputs_from_states(prepared, hs, results[0], return_all_outputs)
    return outputs, last, results


def project_steps(t: Tensors, prepared: step_lib.Prepared, chunk: int) -> List[tf.Tensor]:
    """`x W + b` of every step of `cell_tensors`' `t`, `chunk` steps per product (0: one product), for the
    unrolled loop: one `(B, G·H)` tensor per step."""
    x, kernel, bias = t["x"], t["kernel"], t.get("bias")
    if chunk and prepared.num_steps is not None and chunk < prepared.num_steps:
        return project_in_chunks(x, kernel, bias, chunk, prepared.num_steps, prepared.features)
    return tf.unstack(project(x, kernel, bias), num=prepared.num_steps)
