"""The fused SimpleRNN kernel: the input projection hoisted out of the loop and a hand-written backward pass.

What `make_step` does per time step for a `SimpleRNNCell` (and so for `BasicRNNCell`) is

    h_t = activation(x_t W + b + h_{t-1} U)

This kernel computes `xw = x W + b` for all steps at once (one `[T·B, F] × [F, H]` product) and runs only
`h_t = activation(xw_t + h_{t-1} U)` in the loop. In a `tf.while_loop` its gradient is written by hand
(`tf.custom_gradient` over the whole recurrence), because plain autodiff of a loop that reads a hoisted,
differentiable tensor costs O(T²) there. The backward loop only does `dh_{t-1} = dz_t Uᵀ` per step; `dU`
is accumulated inside that loop or computed as one product after it (`Choices.du_in_loop`), and `dW`, `db`,
`dx` come from autodiff of the hoisted product. In the Python-unrolled (static) form there is no O(T²) trap,
and plain autodiff measured faster, so only the projection is hoisted (in chunks of a few steps when a step
is small, so the products overlap the recurrence).

- Masks and `sequence_length` keep their semantics: an invalid step copies the state through (so its
  gradient passes through unchanged), and the emitted/last outputs follow from the state sequence
  (`step.outputs_from_states`).
- Dropout uses the masks of `step.DropoutMasks`, exactly as the generic step does.
- Activations: `tanh` (default), `sigmoid`, `relu` and `linear`, given Keras' way (`"tanh"`) or TF1's
  (`tf.tanh`, `tf.nn.relu`, ...); their derivative is computed from the output (`1-h²`, `h(1-h)`, `h>0`, `1`).

With `jit=True` the while loop's forward and backward passes are XLA-compiled functions on dense tensors
(`_compiled_passes`), and the `tf.custom_gradient` joining them stays outside XLA, so persistent and nested
tapes, `jacobian` and `model.fit` all differentiate it; a second-order gradient raises a clear error.
Which of these the loop uses is the planner's decision (`keras_unroll.plan`); measurements behind it are in
docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from tensorflow.python.eager import record  # stop_recording: no public equivalent outside a tape object

from keras_unroll import step as step_lib

Derivative = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Choices:
    """How the kernel runs one call; chosen by the planner from the call's static shapes.

    Attributes:
        unrolled: Python-unrolled steps (`StaticUnroll`) instead of a `tf.while_loop`.
        jit: The while loop's forward pass XLA-compiled (and its backward pass if `compile_backward`).
        compile_backward: With `jit`, the backward loop XLA-compiled too (else TensorFlow's own kernels).
        du_in_loop: The backward loop accumulates `dU` per step instead of one product after the loop.
        static_chunk: Unrolled only: steps projected per matrix product.
        bucket_steps: With `jit`, pad the steps to a bucket (`bucket_steps`) before the compiled passes, for
            callers whose T changes from call to call: XLA compiles once per input shape (~1 MB and a
            fraction of a second each), and buckets bound that to about four shapes per doubling of T.
    """

    unrolled: bool = False
    jit: bool = False
    compile_backward: bool = True
    du_in_loop: bool = False
    static_chunk: int = 0
    bucket_steps: bool = False


def bucket_steps(steps: tf.Tensor) -> tf.Tensor:
    """The bucket of a length: a multiple of a quarter of its power of two (at least 4), so at most 25 %
    of a bucket is padding: 1-4 -> 4, 5-8 -> 8, 9-12 -> 12, ..., 65-80 -> 80, 1000 -> 1024."""
    octave = tf.floor(tf.math.log(tf.cast(tf.maximum(steps, 1), tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64)))
    grain = tf.maximum(tf.cast(tf.pow(tf.constant(2.0, tf.float64), octave - 2.0), tf.int32), 4)
    return (steps + grain - 1) // grain * grain


# ----------------------------------------------------------------------------------- eligibility
def _derivatives() -> List[Tuple[Tuple[Any, ...], Derivative]]:
    """activations -> `(h, g) -> g * activation'(z)`, from the output `h = activation(z)`, in one op each
    (measured: the backward loop is op-bound; `1 - h*h` and a product are three ops, `TanhGrad` one)."""
    return [
        ((keras.activations.tanh, keras.ops.tanh, tf.tanh), lambda h, g: tf.raw_ops.TanhGrad(y=h, dy=g)),
        (
            (keras.activations.sigmoid, keras.ops.sigmoid, tf.sigmoid, tf.nn.sigmoid),
            lambda h, g: tf.raw_ops.SigmoidGrad(y=h, dy=g),
        ),
        ((keras.activations.relu, keras.ops.relu, tf.nn.relu), lambda h, g: tf.raw_ops.ReluGrad(gradients=g, features=h)),
        ((keras.activations.linear, None), lambda h, g: g),
    ]


def derivative(activation: Any) -> Optional[Derivative]:
    """The derivative (from the output) of `activation` if the fused kernel knows it, else None."""
    for activations, found in _derivatives():
        if any(activation is known for known in activations):
            return found
    return None


def eligible(cell: Any) -> bool:
    """Whether `cell` is a `SimpleRNNCell` (or a subclass keeping its maths) with a known activation."""
    if not isinstance(cell, keras.layers.SimpleRNNCell) or type(cell).call is not keras.layers.SimpleRNNCell.call:
        return False
    return derivative(cell.activation) is not None


def step_macs(batch: Optional[int], units: Optional[int]) -> Optional[int]:
    """`B·H·H`, one step's `h U`; an unknown batch counts as Keras' default batch size 32."""
    return None if units is None else (32 if batch is None else batch) * units * units


# ------------------------------------------------------------------------------ the recurrence
def _as_tensor(variable: Any, dtype: Any) -> tf.Tensor:
    value = tf.convert_to_tensor(variable)
    return tf.cast(value, dtype) if value.dtype != dtype else value


def _reader(tensor: tf.Tensor, steps: Any, in_place: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
    """How a loop reads step t of a `(T, ...)` tensor: a TensorArray unstacked before the loop, or (in place)
    `tf.gather` on the tensor itself. The reads are never differentiated (the gradient is hand-written), so
    neither has the O(T²) trap; uncompiled, a TensorArray is a copy of the tensor (docs/memory.md)."""
    if in_place:
        return lambda t: tf.gather(tensor, t)
    ta = tf.TensorArray(tensor.dtype, size=steps, element_shape=tensor.shape[1:]).unstack(tensor)
    return ta.read


class Prefetch:
    """Reads step `t` of several `(T, ...)` tensors one iteration ahead, carried in the loop state.

    Measured (XLA, LSTM forward at 32·1000·8·32): reading `xw[t]` inside the step makes XLA fuse the
    dynamic slice of the whole `(T, B, 4H)` tensor into every elementwise fusion of the cell, which then
    ran at half speed (46 ms against 22 ms with the slice carried in the loop state, and against 24 ms for
    Keras' own loop, whose per-step input is small). Carrying the slice read in the previous iteration
    gives the step a plain buffer. The SimpleRNN forward loop reads the same way. Uncompiled, the carried
    reads measured the same as reading in the step (32·1000·8·32, CPU time: LSTM backward 47.1 vs 47.0 ms,
    GRU 41.1 vs 44.7).

    `in_place=True` reads with `tf.gather` on the tensor itself (a TensorArray would copy it, uncompiled);
    `False` through a TensorArray, which the SimpleRNN forward loop keeps (a `recompute=` segment's peak
    memory was lower with it).
    """

    def __init__(self, tensors: Sequence[Optional[tf.Tensor]], steps: Any, in_place: bool = True) -> None:
        self.present = [t is not None for t in tensors]
        self.readers = [_reader(t, steps, in_place=in_place) for t in tensors if t is not None]
        self.count = len(self.readers)
        self.last_index = tf.maximum(steps - 1, 0)

    def _read(self, index: Any) -> Tuple[tf.Tensor, ...]:
        index = tf.clip_by_value(index, 0, self.last_index)
        return tuple(read(index) for read in self.readers)

    def at(self, index: Any) -> Tuple[tf.Tensor, ...]:
        """The values of step `index` (clamped into `[0, T-1]`: reads past the ends are never used)."""
        return self._read(index)

    def unpack(self, values: Sequence[tf.Tensor]) -> List[Optional[tf.Tensor]]:
        values = iter(values)
        return [next(values) if present else None for present in self.present]


def _forward_step(xw_t, valid_t, h, kernel, rec_mask, activation):
    h_in = h * rec_mask if rec_mask is not None else h
    a = activation(xw_t + tf.matmul(h_in, kernel))
    return a if valid_t is None else tf.where(valid_t[:, None], a, h)


def _backward_step(h_t, valid_t, g, kernel, rec_mask, derivative_fn):
    """g = dL/dh_t (all paths). Returns (dz_t, dL/dh_{t-1})."""
    dz = derivative_fn(h_t, g)
    if valid_t is not None:
        dz = tf.where(valid_t[:, None], dz, tf.zeros_like(dz))
    d_prev = tf.matmul(dz, kernel, transpose_b=True)
    if rec_mask is not None:
        d_prev = d_prev * rec_mask
    if valid_t is not None:
        d_prev = d_prev + tf.where(valid_t[:, None], tf.zeros_like(g), g)
    return dz, d_prev


def zero_fill(ta: tf.TensorArray, start: tf.Tensor, steps: tf.Tensor, zeros: tf.Tensor) -> tf.TensorArray:
    """Writes `zeros` at steps `start <= t < steps` of `ta` (the steps an early-stopped loop skipped)."""
    _, ta = tf.while_loop(
        lambda t, _: t < steps, lambda t, ta: (t + 1, ta.write(t, zeros)), (start, ta), maximum_iterations=steps
    )
    return ta


def _forward_loop(xw, h0, kernel, rec_mask, valid, stop, activation, keep_states=True, in_kernel=None, in_bias=None):
    """The while-loop forward pass on dense tensors: returns `(hs (T, B, H) or None, h_last)`.

    `keep_states=False` (inference of the last state only) writes no state sequence: the writes were a
    third of the compiled forward at 32·1000·8·32 (docs/performance.md). With `in_kernel` (inference,
    `_inference`) `xw` is the input sequence `(T, B, F)` and each step projects its own `x_t W + b`.
    """
    steps = tf.shape(xw)[0]
    project = in_kernel is not None
    # Step t's inputs read one iteration ahead (see Prefetch); a step that projects reads its small x_t itself.
    # Through a TensorArray, not in place: a `recompute=` segment's peak grew by a third with in-place reads
    # (tests/test_memory.py::test_recompute_shrinks_activation_memory: 0.70-0.80 against 0.53-0.60 MB).
    reads = Prefetch([None if project else xw, valid], steps, in_place=False)
    tas = [tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape)] if keep_states else []

    def body(t, h, *rest):
        tas, current = list(rest[: len(rest) - reads.count]), rest[len(rest) - reads.count :]
        xw_t, v_t = reads.unpack(current)
        if project:
            xw_t = tf.matmul(tf.gather(xw, t), in_kernel)
            xw_t = xw_t if in_bias is None else xw_t + in_bias
        h = _forward_step(xw_t, v_t, h, kernel, rec_mask, activation)
        return (t + 1, h, *[ta.write(t, h) for ta in tas], *reads.at(t + 1))

    limit = steps if stop is None else stop
    t, h_last, *rest = tf.while_loop(
        lambda t, *_: t < limit, body, (tf.constant(0), h0, *tas, *reads.at(0)), maximum_iterations=steps
    )
    if not keep_states:
        return None, h_last
    hs_ta = rest[0]
    if stop is not None:
        hs_ta = zero_fill(hs_ta, t, steps, tf.zeros_like(h0))
    hs = hs_ta.stack()
    hs.set_shape(xw.shape[:1].concatenate(h0.shape))
    return hs, h_last


def _backward_loop(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last, derivative_fn, du_in_loop, in_place):
    """The while-loop backward pass on dense tensors: returns `(d_xw (T, B, H), d_h0, d_kernel)`.

    `d_hs` is None when only the last output/state is used (`return_sequences=False`). `du_in_loop`
    accumulates `dU` step by step inside the loop (off the `dh` chain, so the executor can run it on the
    other core), else it is one product after the loop (`_kernel_gradient`).
    """
    g = d_last
    steps = tf.shape(hs)[0]
    read_h = _reader(hs, steps, in_place)
    read_d = None if d_hs is None else _reader(d_hs, steps, in_place)
    read_v = None if valid is None else _reader(valid, steps, in_place)
    dz_ta = tf.TensorArray(hs.dtype, size=steps, element_shape=h0.shape)
    first = (steps if stop is None else stop) - 1
    if stop is not None:
        dz_ta = zero_fill(dz_ta, first + 1, steps, tf.zeros_like(h0))
    h0_in = h0 * rec_mask if rec_mask is not None else h0

    def back_body(t, g, dz_ta, *d_kernel):
        v_t = None if read_v is None else read_v(t)
        g = g if read_d is None else g + read_d(t)
        dz, g = _backward_step(read_h(t), v_t, g, kernel, rec_mask, derivative_fn)
        if du_in_loop:
            # h_{t-1}; at t = 0 this reads h_0 instead of the initial state, corrected after the loop
            # (one product there instead of a select per step).
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


@dataclasses.dataclass(frozen=True)
class _PassKey:
    """What changes the trace of the compiled passes: never T (their signature has `None` steps)."""

    activation: Any
    du_in_loop: bool
    compile_backward: bool
    dtype: tf.DType
    batch: Optional[int]
    units: int
    rec_mask: bool
    valid: bool
    stop: bool
    d_hs: bool
    keep_states: bool = True  # False: the forward pass returns only the last state (inference)


@functools.lru_cache(maxsize=64)
def _compiled_passes(key: _PassKey) -> Tuple[Any, Any]:
    """The XLA-compiled forward loop and its backward loop (XLA-compiled or a plain `tf.function`) for one
    setting, shared by every layer with it (a bounded cache: 64 settings).

    Their input signatures fix everything but T (`None`), so one trace serves every length and the graph
    does not depend on the first length seen. They take and return dense tensors only, and the
    `tf.custom_gradient` that joins them runs outside XLA: no TensorList ever crosses the XLA boundary, so
    any tape (persistent, nested, `jacobian`, `model.fit`) can differentiate the layer.
    """
    derivative_fn = derivative(key.activation)
    seq = tf.TensorSpec([None, key.batch, key.units], key.dtype)
    state = tf.TensorSpec([key.batch, key.units], key.dtype)
    extras = (
        ([state] if key.rec_mask else [])
        + ([tf.TensorSpec([None, key.batch], tf.bool)] if key.valid else [])
        + ([tf.TensorSpec([], tf.int32)] if key.stop else [])
    )
    square = tf.TensorSpec([key.units, key.units], key.dtype)

    def unpack(extra):
        extra = list(extra)
        rec_mask = extra.pop(0) if key.rec_mask else None
        valid = extra.pop(0) if key.valid else None
        stop = extra.pop(0) if key.stop else None
        return rec_mask, valid, stop, extra

    def forward(xw, h0, kernel, *extra):
        rec_mask, valid, stop, _ = unpack(extra)
        hs, h_last = _forward_loop(xw, h0, kernel, rec_mask, valid, stop, key.activation, key.keep_states)
        return (hs, h_last) if key.keep_states else h_last

    def backward(hs, h0, kernel, *extra):
        rec_mask, valid, stop, rest = unpack(extra)
        d_hs = rest.pop(0) if key.d_hs else None
        d_last = rest.pop(0)
        # Uncompiled, a TensorArray over `hs` is a copy of it: read each step in place instead.
        in_place = not key.compile_backward
        return _backward_loop(hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last, derivative_fn, key.du_in_loop, in_place)

    backward_signature = [seq, state, square, *extras] + ([seq] if key.d_hs else []) + [state]
    return (
        tf.function(forward, input_signature=[seq, state, square, *extras], jit_compile=True, autograph=False),
        tf.function(backward, input_signature=backward_signature, jit_compile=key.compile_backward, autograph=False),
    )


def first_order_only(grads: Sequence[tf.Tensor], inputs: Sequence[tf.Tensor], kernel: str = "SimpleRNN") -> List[tf.Tensor]:
    """`grads` unchanged, connected to `inputs` for an outer tape, whose gradient raises a clear error (the
    XLA-compiled passes of the fused `kernel` have a hand-written first-order gradient only)."""

    @tf.custom_gradient
    def guard(*tensors):
        def grad(*_):
            raise NotImplementedError(
                f"The XLA-compiled fused {kernel} loop (DynamicUnroll, jit_compile=True or \"auto\") has a "
                "hand-written first-order gradient only; a second-order gradient (a tape differentiating "
                "another tape's gradient) or forward-mode autodiff (`tf.autodiff.ForwardAccumulator`) needs "
                "`jit_compile=False`."
            )

        return [tf.identity(t) for t in tensors[: len(grads)]], grad

    return list(guard(*grads, *inputs))


@dataclasses.dataclass(frozen=True)
class _InferenceKey:
    """What changes the trace of the compiled inference loop (never T)."""

    activation: Any
    dtype: tf.DType
    batch: Optional[int]
    features: int
    units: int
    bias: bool
    rec_mask: bool
    valid: bool
    stop: bool
    keep_states: bool


@functools.lru_cache(maxsize=64)
def _compiled_inference(key: _InferenceKey) -> Any:
    """The XLA-compiled forward loop over the inputs themselves, for one setting (a bounded cache)."""
    state = tf.TensorSpec([key.batch, key.units], key.dtype)
    signature = (
        [tf.TensorSpec([None, key.batch, key.features], key.dtype), state, tf.TensorSpec([key.units, key.units], key.dtype)]
        + [tf.TensorSpec([key.features, key.units], key.dtype)]
        + ([tf.TensorSpec([key.units], key.dtype)] if key.bias else [])
        + ([state] if key.rec_mask else [])
        + ([tf.TensorSpec([None, key.batch], tf.bool)] if key.valid else [])
        + ([tf.TensorSpec([], tf.int32)] if key.stop else [])
    )

    def forward(x, h0, kernel, in_kernel, *extra):
        extra = list(extra)
        in_bias = extra.pop(0) if key.bias else None
        rec_mask = extra.pop(0) if key.rec_mask else None
        valid = extra.pop(0) if key.valid else None
        stop = extra.pop(0) if key.stop else None
        hs, h_last = _forward_loop(x, h0, kernel, rec_mask, valid, stop, key.activation, key.keep_states, in_kernel, in_bias)
        return (hs, h_last) if key.keep_states else h_last

    return tf.function(forward, input_signature=signature, jit_compile=True, autograph=False)


def _inference(x, in_kernel, in_bias, h0, kernel, *, activation, rec_mask, valid, stop, choices, need_states):
    """The forward pass when no tape records: one compiled loop whose steps project their own inputs (the
    hoisted `(T, B, H)` product is written and read back for nothing when no `dW` product follows;
    docs/performance.md). Returns `(hs or None, h_last)`. A gradient asked for later anyway differentiates
    the training path (`project` + `_while_recurrence`) over the same arguments."""
    steps = tf.shape(x)[0]
    pad = (bucket_steps(steps) - steps) if choices.bucket_steps else None
    args = [x, in_kernel, h0, kernel] + ([in_bias] if in_bias is not None else [])

    @tf.custom_gradient
    def run(*args):
        x, in_kernel, h0, kernel = args[:4]
        in_bias = args[4] if len(args) > 4 else None
        x_in, valid_in, stop_in = x, valid, stop
        if pad is not None:  # padded steps lie past `stop`: never run
            x_in = tf.pad(x, [[0, pad], [0, 0], [0, 0]])
            valid_in = None if valid is None else tf.pad(valid, [[0, pad], [0, 0]], constant_values=False)
            stop_in = steps if stop is None else stop
        key = _InferenceKey(
            activation, x.dtype, x.shape[1], int(x.shape[2]), int(h0.shape[-1]), in_bias is not None,
            rec_mask is not None, valid is not None, stop_in is not None, need_states,
        )  # fmt: skip
        extras = [t for t in (in_bias, rec_mask, valid_in, stop_in) if t is not None]
        with record.stop_recording():
            result = _compiled_inference(key)(x_in, h0, kernel, in_kernel, *extras)
        hs, h_last = result if need_states else (None, result)
        if hs is not None and pad is not None:
            hs = hs[:steps]

        def grad(*upstream):
            with tf.GradientTape() as tape:
                tape.watch(list(args))
                again = _while_recurrence(
                    project(x, in_kernel, in_bias), h0, kernel, activation=activation, rec_mask=rec_mask,
                    valid=valid, stop=stop, choices=choices, need_states=need_states,
                )  # fmt: skip
                results = list(again) if need_states else [again[1]]
            upstream = [tf.zeros_like(r) if u is None else u for u, r in zip(upstream, results)]
            return tape.gradient(results, list(args), output_gradients=upstream)

        return ((hs, h_last) if need_states else h_last), grad

    if need_states:
        return run(*args)
    return None, run(*args)


def _while_recurrence(xw, h0, kernel, *, activation, rec_mask, valid, stop, choices, need_states):
    """`hs[t] = where(valid_t, act(xw_t + (h_{t-1}·m) U), h_{t-1})` in a while loop, hand-written gradient.

    Returns `(hs (T, B, H) or None, h_last)`. With an early `stop` (a scalar tensor <= T), `hs[t >= stop]`
    is zero and `h_last` is the state after step `stop - 1`. `need_states=False` keeps `hs` internal, so
    the backward pass gets no (zero) `d_hs` to read (a graph-mode custom gradient receives zeros for an
    unused output, not None).
    """
    derivative_fn = derivative(activation)
    # With no tape recording and only the last state asked for, the forward pass writes no state sequence;
    # if a gradient is asked for later anyway (a function traced without a tape, differentiated from
    # outside), the backward pass runs the forward pass again for it.
    keep_states = need_states or record.could_possibly_record()  # a tape or forward accumulator is active
    if choices.jit:
        steps = tf.shape(xw)[0]
        pad = (bucket_steps(steps) - steps) if choices.bucket_steps else None
        xw_in, valid_in, stop_in = xw, valid, stop
        if pad is not None:  # padded steps lie past `stop`: never run, zero in every result
            xw_in = tf.pad(xw, [[0, pad], [0, 0], [0, 0]])
            valid_in = None if valid is None else tf.pad(valid, [[0, pad], [0, 0]], constant_values=False)
            stop_in = steps if stop is None else stop
        extras = [t for t in (rec_mask, valid_in, stop_in) if t is not None]
        key = _PassKey(
            activation, choices.du_in_loop, choices.compile_backward, xw.dtype, xw.shape[1], int(xw.shape[2]),
            rec_mask is not None, valid is not None, stop_in is not None, need_states,
        )
        compiled_forward, compiled_backward = _compiled_passes(key)

        def forward_pass(keep):
            # Not recorded: a tape watching the compiled call would ask it for its TensorLists; the
            # custom gradient below is what the tapes see.
            with record.stop_recording():
                if not keep:
                    return None, _compiled_passes(dataclasses.replace(key, keep_states=False))[0](xw_in, h0, kernel, *extras), None
                hs, h_last = compiled_forward(xw_in, h0, kernel, *extras)
            return (hs if pad is None else hs[:steps]), h_last, hs

        def backward_pass(hs, d_hs, d_last):
            if pad is not None and d_hs is not None:
                d_hs = tf.pad(d_hs, [[0, pad], [0, 0], [0, 0]])
            with record.stop_recording():
                grads = compiled_backward(hs, h0, kernel, *extras, *([d_hs] if need_states else []), d_last)
            d_xw, d_h0, d_kernel = first_order_only(grads, [t for t in (hs, h0, kernel, d_hs, d_last) if t is not None])
            return (d_xw if pad is None else d_xw[:steps]), d_h0, d_kernel

    else:

        def forward_pass(keep):
            hs, h_last = _forward_loop(xw, h0, kernel, rec_mask, valid, stop, activation, keep)
            return hs, h_last, hs

        def backward_pass(hs, d_hs, d_last):
            args = (hs, h0, kernel, rec_mask, valid, stop, d_hs, d_last, derivative_fn, choices.du_in_loop, False)
            return _backward_loop(*args)

    @tf.custom_gradient
    def run(xw_arg, h0_arg, kernel_arg):
        hs, h_last, saved = forward_pass(keep_states)  # `saved`: what the backward pass reads (padded)

        def grad(*upstream):
            states = saved if saved is not None else forward_pass(True)[2]
            d_hs, d_last = upstream if need_states else (None, upstream[0])
            d_last = tf.zeros_like(h0) if d_last is None else tf.convert_to_tensor(d_last)
            if need_states:
                d_hs = tf.zeros_like(hs) if d_hs is None else tf.convert_to_tensor(d_hs)
            return backward_pass(states, d_hs, d_last)

        return ((hs, h_last) if need_states else h_last), grad

    if need_states:
        return run(xw, h0, kernel)
    return None, run(xw, h0, kernel)


def _unrolled_recurrence(xw_steps, h0, kernel, *, activation, rec_mask, valid, need_states):
    """The Python-unrolled recurrence with plain autodiff (no O(T²) trap without a while loop)."""
    num_steps = len(xw_steps)
    vs = tf.unstack(valid, num=num_steps) if valid is not None else [None] * num_steps
    h, states = h0, []
    for xw_t, v_t in zip(xw_steps, vs):
        h = _forward_step(xw_t, v_t, h, kernel, rec_mask, activation)
        states.append(h)
    return (tf.stack(states) if need_states else None), h


def project(
    inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor], shapes: Optional[Tuple[Any, Any]] = None
) -> tf.Tensor:
    """`inputs W + b` for (T, B, F) `inputs` as one `[T·B, F] × [F, k]` product: (T, B, k).

    `shapes`: the `([-1, F], [T, -1, k])` shape tensors, built once by a caller that projects many chunks
    (fewer graph ops); else they are built here from the input's shape.
    """
    width = kernel.shape[-1]
    flat, out = shapes or ([-1, kernel.shape[0]], tf.concat([tf.shape(inputs)[:2], [width]], axis=0))
    xw = tf.matmul(tf.reshape(inputs, flat), kernel)
    if bias is not None:
        xw = xw + bias
    xw = tf.reshape(xw, out)
    xw.set_shape(inputs.shape[:2].concatenate([width]))
    return xw


def _project_in_chunks(inputs, kernel, bias, chunk, num_steps, features) -> List[tf.Tensor]:
    """One `(B, H)` tensor per step, projected `chunk` steps at a time (5 ops per chunk)."""
    units = kernel.shape[-1]
    sizes = [min(chunk, num_steps - start) for start in range(0, num_steps, chunk)]
    parts = tf.split(inputs, sizes, axis=0) if len(sizes) > 1 else [inputs]
    flat = tf.constant([-1, features])
    shapes = {size: tf.constant([size, -1, units]) for size in set(sizes)}  # shared: fewer graph ops
    steps = []
    for size, part in zip(sizes, parts):
        steps.extend(tf.unstack(project(part, kernel, bias, (flat, shapes[size])), num=size))
    return steps


def simple_rnn_loop(
    cell: Any,
    prepared: step_lib.Prepared,
    masks: step_lib.DropoutMasks,
    choices: Choices,
    *,
    return_all_outputs: bool = True,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """The fused SimpleRNN unroll. Returns `(outputs (T, B, H) or None, last_output, [final_state])`.

    The projection, dropout and the mask bookkeeping around the recurrence are a few large ops and are
    never compiled on their own.
    """
    inputs = prepared.inputs
    dtype = inputs.dtype
    dp_mask, rec_mask = masks.of(cell)
    if dp_mask is not None:
        inputs = inputs * dp_mask
    kernel = _as_tensor(cell.kernel, dtype)
    bias = _as_tensor(cell.bias, dtype) if cell.bias is not None else None
    recurrent = _as_tensor(cell.recurrent_kernel, dtype)
    h0 = prepared.initial_state[0]
    if choices.unrolled:
        if choices.static_chunk and choices.static_chunk < prepared.num_steps:
            xw_steps = _project_in_chunks(inputs, kernel, bias, choices.static_chunk, prepared.num_steps, prepared.features)
        else:
            xw_steps = tf.unstack(project(inputs, kernel, bias), num=prepared.num_steps)
        hs, h_last = _unrolled_recurrence(
            xw_steps, h0, recurrent, activation=cell.activation, rec_mask=rec_mask, valid=prepared.valid,
            need_states=return_all_outputs,
        )
    else:
        stop = None
        if prepared.max_length is not None:
            stop = tf.minimum(tf.shape(inputs)[0], prepared.max_length)
        # No tape and no forward accumulator at all (one watching nothing here would still need the
        # training path's custom gradient): the inference loop.
        if choices.jit and dp_mask is None and not record.could_possibly_record():
            hs, h_last = _inference(
                inputs, kernel, bias, h0, recurrent, activation=cell.activation, rec_mask=rec_mask,
                valid=prepared.valid, stop=stop, choices=choices, need_states=return_all_outputs,
            )  # fmt: skip
            outputs, last = step_lib.outputs_from_states(prepared, hs, h_last, return_all_outputs)
            return outputs, last, [h_last]
        hs, h_last = _while_recurrence(
            project(inputs, kernel, bias), h0, recurrent, activation=cell.activation, rec_mask=rec_mask,
            valid=prepared.valid, stop=stop, choices=choices, need_states=return_all_outputs,
        )
    outputs, last = step_lib.outputs_from_states(prepared, hs, h_last, return_all_outputs)
    return outputs, last, [h_last]
