"""The fused SimpleRNN kernel: the input projection hoisted out of the loop and a hand-written backward pass.

What `make_step` does per time step for a `SimpleRNNCell` (and so for `BasicRNNCell`) is

    h_t = activation(x_t W + b + h_{t-1} U)

This kernel computes `xw = x W + b` outside the recurrence, many steps per product, and runs only
`h_t = activation(xw_t + h_{t-1} U)` in the loop. In a `tf.while_loop` its gradient is written by hand
(`tf.custom_gradient` over the projection and the recurrence together), because plain autodiff of a loop
that reads a hoisted, differentiable tensor costs O(T²) there. The backward loop only does
`dh_{t-1} = dz_t Uᵀ` per step; `dU` is accumulated inside that loop or computed as one product after it
(`Choices.du_in_loop`), and `dW = Σ xᵀ dz`, `db`, `dx = dz Wᵀ` are products over many steps.

Under XLA the passes run in chunks of steps (`_chunked_forward`, `_chunked_backward`; a chunk's `(B, H)` rows
take at most `Choices.chunk_bytes`, 4 MiB):
the forward pass projects a chunk's inputs just before running its steps, and the backward pass turns a
chunk's `dz` into its share of `dU`, `dW`, `db` and `dx` before going on to the previous chunk. A training
step then keeps the state sequence `(T, B, H)` and nothing else of that size (before, the projection and
`dz` were two more; docs/memory.md has the figures). Uncompiled, the whole sequence is one chunk.
In the Python-unrolled (static) form there is no O(T²) trap, and plain autodiff measured faster, so only
the projection is hoisted (in chunks of a few steps when a step is small, so the products overlap the
recurrence).

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

import contextlib
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
        chunk_bytes: With `jit`, the passes project the inputs and back-propagate into them a chunk of steps
            at a time (`_chunked_forward`, `_chunked_backward`), as many steps as keep a chunk's `(B, H)`
            rows within this many bytes, so that the state sequence is the only `(T, B, H)` tensor a
            training step keeps (docs/memory.md).
    """

    unrolled: bool = False
    jit: bool = False
    compile_backward: bool = True
    du_in_loop: bool = False
    static_chunk: int = 0
    bucket_steps: bool = False
    chunk_bytes: int = 2**22


def bucket_steps(steps: tf.Tensor) -> tf.Tensor:
    """The bucket of a length: a multiple of a quarter of its power of two (at least 4), so at most 25 %
    of a bucket is padding: 1-4 -> 4, 5-8 -> 8, 9-12 -> 12, ..., 65-80 -> 80, 1000 -> 1024."""
    octave = tf.floor(
        tf.math.log(tf.cast(tf.maximum(steps, 1), tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64))
    )
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
        (
            (keras.activations.relu, keras.ops.relu, tf.nn.relu),
            lambda h, g: tf.raw_ops.ReluGrad(gradients=g, features=h),
        ),
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


def _forward_steps(xw, h0, kernel, rec_mask, valid, stop, activation, hs_ta, offset=0, in_kernel=None, in_bias=None):
    """Runs the steps `t < stop` (all without `stop`) of `xw`, writing `h_t` at `offset + t` of `hs_ta`.
    Returns `(t after the last step, h_last, hs_ta)`; `hs_ta=None` writes nothing. Step t's inputs are
    read one iteration ahead (`Prefetch`), in place when uncompiled (a TensorArray there is a copy).

    With `in_kernel` (inference: `_inference`), `xw` is the input sequence `(T, B, F)` itself and each step
    projects its own small `x_t W + b`, read in the step: no `(T, B, H)` projection is written and read back."""
    steps = tf.shape(xw)[0]
    project_steps = in_kernel is not None
    reads = Prefetch([None if project_steps else xw, valid], steps, in_place=not step_lib.in_xla_context())
    tas = [] if hs_ta is None else [hs_ta]
    n = len(tas)

    def body(t, h, *rest):
        xw_t, v_t = reads.unpack(rest[n:])
        if project_steps:
            xw_t = tf.matmul(tf.gather(xw, t), in_kernel)
            xw_t = xw_t if in_bias is None else xw_t + in_bias
        h = _forward_step(xw_t, v_t, h, kernel, rec_mask, activation)
        return (t + 1, h, *[ta.write(offset + t, h) for ta in rest[:n]], *reads.at(t + 1))

    limit = steps if stop is None else stop
    t, h_last, *rest = tf.while_loop(
        lambda t, *_: t < limit, body, (tf.constant(0), h0, *tas, *reads.at(0)), maximum_iterations=steps
    )
    return t, h_last, (rest[0] if tas else None)


def _stacked_states(hs_ta: tf.TensorArray, start: Any, steps: Any, h0: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """The `(T, B, H)` states written to `hs_ta`, zero from step `start` on (the steps not run; None: all ran)."""
    if start is not None:
        hs_ta = zero_fill(hs_ta, start, steps, tf.zeros_like(h0))
    hs = hs_ta.stack()
    hs.set_shape(like.shape[:1].concatenate(h0.shape))
    return hs


def _inference_loop(x, in_kernel, in_bias, h0, kernel, rec_mask, valid, stop, activation, keep_states):
    """The compiled inference loop (`_inference`): each step projects its own `x_t W + b`, and with
    `keep_states=False` no state sequence is written (the writes were a third of the compiled forward at
    32·1000·8·32: docs/performance.md). Returns `(hs (T, B, H) or None, h_last)`."""
    steps = tf.shape(x)[0]
    hs_ta = tf.TensorArray(x.dtype, size=steps, element_shape=h0.shape) if keep_states else None
    t, h_last, hs_ta = _forward_steps(x, h0, kernel, rec_mask, valid, stop, activation, hs_ta, 0, in_kernel, in_bias)
    if hs_ta is None:
        return None, h_last
    return _stacked_states(hs_ta, None if stop is None else t, steps, h0, x), h_last


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
    # With `dU` in the loop, two iterations at a time: the products `h_{t-1}ᵀ dz_t` do not wait for the
    # gradient chain, and TensorFlow's default of 10 ran them ahead and held 10 of them (2.8 MB of a 12 MB
    # peak, recompute="sqrt" at 32·2000·8·256; 9.6 MB with 2, the same step time).
    iterations = 2 if du_in_loop else 10
    _, g, dz_ta, *d_kernel = tf.while_loop(
        lambda t, *_: t >= 0, back_body, initial, maximum_iterations=steps, parallel_iterations=iterations
    )
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


# --------------------------------------------------------------------- the chunked (XLA) passes
def chunk_of(tensor: tf.Tensor, start: tf.Tensor, chunk: tf.Tensor) -> tf.Tensor:
    """Steps `start, ..., start + chunk - 1` of a `(T, ...)` tensor, `T >= chunk` (a start past `T - chunk` is
    moved back to it: a chunk that is not run may be sliced, never one outside the tensor). A slice, which
    shares the tensor's buffer uncompiled. Its size is given in full: with a `-1` ("to the end") XLA
    cannot size the slice at compile time and pads the whole tensor to twice its size in every axis first
    (8× the memory of a `(T, B, H)` tensor, measured); a gather of the steps measured 3.4× slower."""
    start = tf.maximum(tf.minimum(start, tf.shape(tensor)[0] - chunk), 0)
    begin = tf.concat([[start], tf.zeros([tensor.shape.rank - 1], tf.int32)], axis=0)
    value = tf.slice(tensor, begin, tf.concat([[chunk], tf.shape(tensor)[1:]], axis=0))
    value.set_shape(tf.TensorShape([None]).concatenate(tensor.shape[1:]))
    return value


def steps_per_chunk(like: tf.Tensor, width: int, chunk_bytes: int) -> Any:
    """The most steps of one chunk: 0 (the whole sequence) without a budget, else as many as keep a chunk's
    `(B, width)` rows of `like`'s dtype (`like` is `(T, B, ...)`) within `chunk_bytes`, at least one. (A
    function of shapes only: XLA sees a constant.)"""
    if not chunk_bytes:
        return 0
    row = tf.shape(like)[1] * width * like.dtype.size
    return tf.maximum(chunk_bytes // tf.maximum(row, 1), 1)


#: Fewer chunks than this and the passes run the whole sequence as one: each pass holds a few chunk-sized
#: temporaries, which at two chunks outweighed what chunking saves (LSTM 64·127·16·64: 35 MB, against 18 MB
#: at 64·100 in one chunk).
MIN_CHUNKS = 4


def chunk_size(steps: tf.Tensor, chunk_steps: Any) -> tf.Tensor:
    """Steps per chunk for a sequence of `steps`: the whole sequence when `chunk_steps` (`steps_per_chunk`)
    is 0 or the sequence is shorter than `MIN_CHUNKS` chunks, else the fewest chunks of at most
    `chunk_steps` steps, evened out (1000 steps at most 128 a chunk: eight of 125, not seven of 128 and one
    of 104), so that padding to whole chunks (`padded_length`) adds fewer steps than there are chunks. For
    a padded length it gives the same chunk again."""
    steps = tf.maximum(steps, 1)
    if isinstance(chunk_steps, int) and chunk_steps == 0:
        return steps
    chunks = (steps + chunk_steps - 1) // chunk_steps
    return tf.where(chunks < MIN_CHUNKS, steps, (steps + chunks - 1) // chunks)


def padded_length(steps: tf.Tensor, chunk_steps: Any, bucket: bool) -> tf.Tensor:
    """The length the chunked passes run on: `steps` (or its bucket) rounded up to whole chunks."""
    length = bucket_steps(steps) if bucket else steps
    chunk = chunk_size(length, chunk_steps)
    return (length + chunk - 1) // chunk * chunk


def chunk_schedule(steps: tf.Tensor, stop: tf.Tensor, chunk_steps: Any) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(chunk, full, rest)`: the chunk size, the number of chunks whose steps all run (`stop // chunk`),
    and the steps that run in the one after them (`stop % chunk`; when none, the passes skip that chunk).

    Every chunk runs a loop of a fixed trip count, the partial one with its later steps masked
    (`partial_chunk_valid`): XLA compiled a backward loop that starts at a run-time step 1.5× slower (121
    against 78 ms, SimpleRNN 32·5000·8·64), and a partial chunk run that way took a third of an LSTM step
    at 64·127·16·64 (45 against 29 ms at 64·129·16·64, which has no partial chunk)."""
    chunk = chunk_size(steps, chunk_steps)
    return chunk, stop // chunk, stop % chunk


def partial_chunk_valid(valid_c: Optional[tf.Tensor], rest: tf.Tensor, chunk: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """The `valid` of a partial chunk: only its first `rest` steps run (and the caller's `valid_c`). The chunk
    then runs a loop of a fixed trip count in which the other steps copy the state through, instead of a
    loop that stops at a run-time step (`chunk_schedule`). `like`: `(T, B, ...)`, for the batch size."""
    running = tf.broadcast_to((tf.range(chunk) < rest)[:, None], tf.stack([chunk, tf.shape(like)[1]]))
    return running if valid_c is None else tf.logical_and(valid_c, running)


def _chunk_array(dtype: tf.DType, chunks: tf.Tensor, row_shape: tf.TensorShape) -> tf.TensorArray:
    """A TensorArray of `chunks` elements `(chunk, *row_shape)` (XLA has no TensorArray scatter, and a chunk
    written as one element is one update instead of one per step)."""
    return tf.TensorArray(dtype, size=chunks, element_shape=tf.TensorShape([None]).concatenate(row_shape))


def _stack_chunks(ta: tf.TensorArray, like: tf.Tensor, row_shape: tf.TensorShape) -> tf.Tensor:
    """A `_chunk_array` as one `(T, *row_shape)` tensor, for the T steps of `like` (a reshape: free)."""
    stacked = ta.stack()
    value = tf.reshape(stacked, tf.concat([tf.shape(like)[:1], tf.shape(stacked)[2:]], axis=0))
    value.set_shape(like.shape[:1].concatenate(row_shape))
    return value


def _chunked_forward(x, kernel, bias, h0, recurrent, rec_mask, valid, stop, activation, chunk_bytes, keep_states=True):
    """The forward pass in chunks: each chunk's inputs are projected (`x_c W + b`) just before its steps run,
    so no `(T, B, H)` projection lives beside the states. `x` is `(T, B, F)` with T a multiple of the chunk
    (`padded_length`); steps `t >= stop` are not run and their states are zero. `chunk_bytes=0`: the whole
    sequence is one chunk. Returns `(hs, h_last)`; with `keep_states=False` (no tape is recording) `hs` is
    None and no state sequence is written (the writes were a third of the compiled forward at 32·1000·8·32:
    docs/performance.md)."""
    steps = tf.shape(x)[0]
    chunk, full, rest = chunk_schedule(steps, stop, steps_per_chunk(x, recurrent.shape[-1], chunk_bytes))
    hs_ta = tf.TensorArray(x.dtype, size=steps, element_shape=h0.shape) if keep_states else None

    def run_chunk(start, h, hs_ta, length=None, partial=False):
        valid_c = None if valid is None else chunk_of(valid, start, chunk)
        if partial:
            valid_c = partial_chunk_valid(valid_c, rest, chunk, x)
        xw_c = project_chunk(chunk_of(x, start, chunk), kernel, bias)
        _, h, hs_ta = _forward_steps(xw_c, h, recurrent, rec_mask, valid_c, length, activation, hs_ta, start)
        return h, hs_ta

    def body(j, h, *tas):
        h, hs_ta = run_chunk(j * chunk, h, tas[0] if tas else None)
        return (j + 1, h) + ((hs_ta,) if tas else ())

    tas = () if hs_ta is None else (hs_ta,)
    if not chunk_bytes:
        h_last, hs_ta = run_chunk(0, h0, hs_ta, length=stop)
    else:
        _, h, *tas = tf.while_loop(lambda j, *_: j < full, body, (tf.constant(0), h0, *tas))

        def partial_chunk():
            h_c, hs_c = run_chunk(full * chunk, h, tas[0] if tas else None, partial=True)
            return (h_c,) + ((hs_c,) if tas else ())

        h_last, *tas = tf.cond(rest > 0, partial_chunk, lambda: (h, *tas))
        hs_ta = tas[0] if tas else None
    if hs_ta is None:
        return None, h_last
    return _stacked_states(hs_ta, tf.maximum(stop, 0), steps, h0, x), h_last


def _chunked_backward(
    hs, x, kernel, h0, recurrent, rec_mask, valid, stop, d_hs, d_last, derivative_fn, du_in_loop, in_place, chunk_bytes
):
    """The backward pass in chunks, last chunk first: each chunk's backward loop (`_backward_loop`) gives its
    `dz`, `(chunk, B, H)`, from which `dU`, `dW`, `db` are summed and the chunk's `dx = dz Wᵀ` is written
    before the next chunk runs. `chunk_bytes=0`: the whole sequence is one chunk. Returns
    `(dx (T, B, F), d_kernel, d_bias, d_h0, d_recurrent)`."""
    steps = tf.shape(hs)[0]
    chunk, full, rest = chunk_schedule(steps, stop, steps_per_chunk(x, recurrent.shape[-1], chunk_bytes))

    def run_chunk(j, g, d_kernel, d_bias, d_recurrent, length=None, partial=False):
        """The backward loop over chunk `j` and its share of the gradients: `(g, dx_c, dW, db, dU)`."""
        start = j * chunk
        h_start = tf.where(start > 0, tf.gather(hs, tf.maximum(start - 1, 0)), h0)  # the state entering the chunk
        valid_c = None if valid is None else chunk_of(valid, start, chunk)
        d_hs_c = None if d_hs is None else chunk_of(d_hs, start, chunk)
        if partial:
            valid_c = partial_chunk_valid(valid_c, rest, chunk, x)
            if d_hs_c is not None:  # the outputs of the steps not run are zeros: no gradient flows from them
                d_hs_c = tf.where((tf.range(chunk) < rest)[:, None, None], d_hs_c, tf.zeros_like(d_hs_c))
        dz, g, d_rec_c = _backward_loop(
            chunk_of(hs, start, chunk), h_start, recurrent, rec_mask, valid_c, length, d_hs_c, g, derivative_fn,
            du_in_loop, in_place,
        )  # fmt: skip
        x_c = chunk_of(x, start, chunk)
        dz_flat = tf.reshape(dz, [-1, tf.shape(dz)[-1]])
        d_kernel += tf.matmul(tf.reshape(x_c, [-1, tf.shape(x_c)[-1]]), dz_flat, transpose_a=True)
        d_bias += tf.reduce_sum(dz_flat, axis=0)
        dx_c = tf.reshape(tf.matmul(dz_flat, kernel, transpose_b=True), tf.shape(x_c))
        return g, dx_c, d_kernel, d_bias, d_recurrent + d_rec_c

    zeros = (tf.zeros_like(kernel), tf.zeros(kernel.shape[-1:], kernel.dtype), tf.zeros_like(recurrent))
    if not chunk_bytes:
        d_h0, dx, d_kernel, d_bias, d_recurrent = run_chunk(0, d_last, *zeros, length=stop)
        dx.set_shape(x.shape)
        return dx, d_kernel, d_bias, d_h0, d_recurrent
    chunks = steps // chunk
    dx_ta = _chunk_array(x.dtype, chunks, x.shape[1:])
    running = full + tf.cast(rest > 0, full.dtype)  # chunks with a step to run
    dx_ta = zero_fill(dx_ta, running, chunks, tf.zeros(tf.concat([[chunk], tf.shape(x)[1:]], axis=0), x.dtype))

    def partial():
        g, dx_c, *grads = run_chunk(full, d_last, *zeros, partial=True)
        return (g, dx_ta.write(full, dx_c), *grads)

    def body(j, g, dx_ta, *grads):
        g, dx_c, *grads = run_chunk(j, g, *grads)
        return (j - 1, g, dx_ta.write(j, dx_c), *grads)

    carry = tf.cond(rest > 0, partial, lambda: (d_last, dx_ta, *zeros))
    # One chunk at a time: uncompiled, TensorFlow's default of 10 parallel iterations ran the next chunks'
    # work ahead and held ~15 chunks of temporaries (60 MB at 32·2000·8·256, against 15 MB; same step time).
    _, d_h0, dx_ta, d_kernel, d_bias, d_recurrent = tf.while_loop(
        lambda j, *_: j >= 0, body, (full - 1, *carry), parallel_iterations=1
    )
    return _stack_chunks(dx_ta, x, x.shape[1:]), d_kernel, d_bias, d_h0, d_recurrent


@dataclasses.dataclass(frozen=True)
class _PassKey:
    """What changes the trace of the compiled passes: never T (their signature has `None` steps)."""

    activation: Any
    du_in_loop: bool
    compile_backward: bool
    chunk_bytes: int
    dtype: tf.DType
    batch: Optional[int]
    features: Optional[int]
    units: int
    rec_mask: bool
    valid: bool
    d_hs: bool
    keep_states: bool = True  # False: the forward pass returns only the last state (no tape records)


def _pass_functions(key: _PassKey, in_place: bool) -> Tuple[Any, Any]:
    """The forward and backward passes for one setting, as plain functions on dense tensors:
    `forward(x, W, b, h0, U, *extras) -> (hs, h_last)` (`h_last` alone without `key.keep_states`) and
    `backward(hs, x, W, h0, U, *extras, [d_hs], d_last) -> (dx, dW, db, dh0, dU)`, where `extras` are the
    recurrent mask and `valid` (when present) and `stop`."""
    derivative_fn = derivative(key.activation)

    def unpack(extra):
        extra = list(extra)
        rec_mask = extra.pop(0) if key.rec_mask else None
        valid = extra.pop(0) if key.valid else None
        return rec_mask, valid, extra.pop(0), extra

    def forward(x, w, b, h0, u, *extra):
        rec_mask, valid, stop, _ = unpack(extra)
        hs, h_last = _chunked_forward(
            x, w, b, h0, u, rec_mask, valid, stop, key.activation, key.chunk_bytes, key.keep_states
        )
        return (hs, h_last) if key.keep_states else h_last

    def backward(hs, x, w, h0, u, *extra):
        rec_mask, valid, stop, rest = unpack(extra)
        d_hs = rest.pop(0) if key.d_hs else None
        d_last = rest.pop(0)
        return _chunked_backward(
            hs, x, w, h0, u, rec_mask, valid, stop, d_hs, d_last, derivative_fn, du_in_loop, in_place, key.chunk_bytes
        )

    # Chunked and uncompiled, `dU` is one product per chunk: summing it inside the nested loops measured
    # slower (0.78× the time without), and with static shapes Grappler turned those sums into
    # `TemporaryVariable` ops that fail in nested while loops ("Resource ... already exists").
    du_in_loop = key.du_in_loop and (key.compile_backward or not key.chunk_bytes)

    return forward, backward


@functools.lru_cache(maxsize=64)
def _compiled_passes(key: _PassKey) -> Tuple[Any, Any]:
    """The XLA-compiled forward pass and its backward pass (XLA-compiled or a plain `tf.function`) for one
    setting, shared by every layer with it (a bounded cache: 64 settings).

    Their input signatures fix everything but T (`None`), so one trace serves every length and the graph
    does not depend on the first length seen. They take and return dense tensors only, and the
    `tf.custom_gradient` that joins them runs outside XLA: no TensorList ever crosses the XLA boundary, so
    any tape (persistent, nested, `jacobian`, `model.fit`) can differentiate the layer.
    """
    # Uncompiled, a TensorArray over a chunk of `hs` is a copy of it: the backward reads each step in place.
    forward, backward = _pass_functions(key, in_place=True)
    seq = tf.TensorSpec([None, key.batch, key.units], key.dtype)
    inputs = tf.TensorSpec([None, key.batch, key.features], key.dtype)
    state = tf.TensorSpec([key.batch, key.units], key.dtype)
    kernel = tf.TensorSpec([key.features, key.units], key.dtype)
    square = tf.TensorSpec([key.units, key.units], key.dtype)
    extras = (
        ([state] if key.rec_mask else [])
        + ([tf.TensorSpec([None, key.batch], tf.bool)] if key.valid else [])
        + [tf.TensorSpec([], tf.int32)]
    )
    forward_signature = [inputs, kernel, tf.TensorSpec([key.units], key.dtype), state, square, *extras]
    backward_signature = [seq, inputs, kernel, state, square, *extras] + ([seq] if key.d_hs else []) + [state]
    return (
        tf.function(forward, input_signature=forward_signature, jit_compile=True, autograph=False),
        tf.function(backward, input_signature=backward_signature, jit_compile=key.compile_backward, autograph=False),
    )


def cache_sizes() -> dict:
    """How many settings each process-wide cache of compiled functions holds (`cache_bounds`: their bounds)."""
    return {
        "simple_rnn_passes": _compiled_passes.cache_info().currsize,
        "simple_rnn_inference": _compiled_inference.cache_info().currsize,
    }


def cache_bounds() -> dict:
    return {
        "simple_rnn_passes": _compiled_passes.cache_info().maxsize,
        "simple_rnn_inference": _compiled_inference.cache_info().maxsize,
    }


def first_order_only(
    grads: Sequence[tf.Tensor], inputs: Sequence[tf.Tensor], kernel: str = "SimpleRNN"
) -> List[tf.Tensor]:
    """`grads` unchanged, connected to `inputs` for an outer tape, whose gradient raises a clear error (the
    XLA-compiled passes of the fused `kernel` have a hand-written first-order gradient only)."""

    @tf.custom_gradient
    def guard(*tensors):
        def grad(*_):
            raise NotImplementedError(
                f'The XLA-compiled fused {kernel} loop (DynamicUnroll, jit_compile=True or "auto") has a '
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
        [
            tf.TensorSpec([None, key.batch, key.features], key.dtype),
            state,
            tf.TensorSpec([key.units, key.units], key.dtype),
        ]
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
        hs, h_last = _inference_loop(
            x, in_kernel, in_bias, h0, kernel, rec_mask, valid, stop, key.activation, key.keep_states
        )
        return (hs, h_last) if key.keep_states else h_last

    return tf.function(forward, input_signature=signature, jit_compile=True, autograph=False)


def _inference(x, in_kernel, in_bias, h0, kernel, *, activation, rec_mask, valid, stop, choices, need_states):
    """The forward pass when no tape records: one compiled loop whose steps project their own inputs (the
    hoisted `(T, B, H)` product is written and read back for nothing when no `dW` product follows;
    docs/performance.md). Returns `(hs or None, h_last)`. A gradient asked for later anyway differentiates
    the training path (`_fused_recurrence`) over the same arguments."""
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
                again = _fused_recurrence(
                    x, in_kernel, in_bias, h0, kernel, activation=activation, rec_mask=rec_mask, valid=valid,
                    stop=stop, choices=choices, need_states=need_states,
                )  # fmt: skip
                results = list(again) if need_states else [again[1]]
            upstream = [tf.zeros_like(r) if u is None else u for u, r in zip(upstream, results)]
            return tape.gradient(results, list(args), output_gradients=upstream)

        return ((hs, h_last) if need_states else h_last), grad

    if need_states:
        return run(*args)
    return None, run(*args)


def _fused_recurrence(inputs, kernel, bias, h0, recurrent, *, activation, rec_mask, valid, stop, choices, need_states):
    """`hs[t] = where(valid_t, act(x_t W + b + (h_{t-1}·m) U), h_{t-1})` in a while loop, with a hand-written
    gradient over the inputs, the initial state and all weights.

    Returns `(hs (T, B, H) or None, h_last)`. With an early `stop` (a scalar tensor <= T), `hs[t >= stop]`
    is zero and `h_last` is the state after step `stop - 1`. `need_states=False` keeps `hs` internal, so
    the backward pass gets no (zero) `d_hs` to read (a graph-mode custom gradient receives zeros for an
    unused output, not None).

    With `choices.jit` the passes are XLA-compiled (`_compiled_passes`) and run a chunk of steps at a time
    (`choices.chunk_bytes`); the sequence is padded to whole chunks (and to its bucket with `choices.bucket_steps`), and
    padded steps lie past `stop`: never run, zero in every result. Uncompiled, the whole sequence is one chunk.
    """
    steps = tf.shape(inputs)[0]
    chunk_bytes = choices.chunk_bytes if choices.jit else 0
    chunk_steps = steps_per_chunk(inputs, int(recurrent.shape[-1]), chunk_bytes)
    pad = padded_length(steps, chunk_steps, choices.jit and choices.bucket_steps) - steps
    valid_in = None if valid is None else tf.pad(valid, [[0, pad], [0, 0]], constant_values=False)
    extras = [t for t in (rec_mask, valid_in) if t is not None] + [steps if stop is None else stop]
    has_bias = bias is not None
    key = _PassKey(
        activation, choices.du_in_loop, choices.compile_backward, chunk_bytes, inputs.dtype, inputs.shape[1],
        inputs.shape[2], int(recurrent.shape[-1]), rec_mask is not None, valid is not None, need_states,
    )  # fmt: skip
    # With no tape recording and only the last state asked for, the forward pass writes no state sequence;
    # if a gradient is asked for later anyway (a function traced without a tape, differentiated from
    # outside), the backward pass runs the forward pass again for it.
    keep_states = need_states or record.could_possibly_record()  # a tape or forward accumulator is active
    passes = _compiled_passes if choices.jit else functools.partial(_pass_functions, in_place=True)
    forward, backward = passes(key)  # uncompiled: in place, no TensorArray copy of `hs`
    last_only = None if keep_states else passes(dataclasses.replace(key, keep_states=False))[0]
    # Compiled calls are not recorded: a tape watching one would ask it for its TensorLists; the custom
    # gradient below is what the tapes see.
    recording = record.stop_recording if choices.jit else contextlib.nullcontext

    @tf.custom_gradient
    def run(x_arg, kernel_arg, h0_arg, recurrent_arg, *bias_arg):
        b = bias_arg[0] if has_bias else tf.zeros(kernel_arg.shape[-1:], kernel_arg.dtype)
        x_in = tf.pad(x_arg, [[0, pad], [0, 0], [0, 0]])
        with recording():
            if last_only is None:
                hs_padded, h_last = forward(x_in, kernel_arg, b, h0_arg, recurrent_arg, *extras)
            else:
                hs_padded, h_last = None, last_only(x_in, kernel_arg, b, h0_arg, recurrent_arg, *extras)
        hs = None if hs_padded is None else hs_padded[:steps]

        def grad(*upstream):
            nonlocal hs_padded
            if hs_padded is None:
                with recording():
                    hs_padded = forward(x_in, kernel_arg, b, h0_arg, recurrent_arg, *extras)[0]
            d_hs, d_last = upstream if need_states else (None, upstream[0])
            d_last = tf.zeros_like(h0) if d_last is None else tf.convert_to_tensor(d_last)
            args = [hs_padded, x_in, kernel_arg, h0_arg, recurrent_arg, *extras]
            if need_states:
                d_hs = tf.zeros_like(hs) if d_hs is None else tf.convert_to_tensor(d_hs)
                args.append(tf.pad(d_hs, [[0, pad], [0, 0], [0, 0]]))
            with recording():
                grads = backward(*args, d_last)
            if choices.jit:
                connected = [
                    t for t in (hs_padded, x_in, kernel_arg, h0_arg, recurrent_arg, d_hs, d_last) if t is not None
                ]
                grads = first_order_only(grads, connected)
            dx, d_kernel, d_bias, d_h0, d_recurrent = grads
            return [dx[:steps], d_kernel, d_h0, d_recurrent] + ([d_bias] if has_bias else [])

        return ((hs, h_last) if need_states else h_last), grad

    outs = run(inputs, kernel, h0, recurrent, *([bias] if has_bias else []))
    return tuple(outs) if need_states else (None, outs)


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
    if kernel.shape[0] == 0:
        return _no_features(inputs, kernel, bias)
    flat, out = shapes or ([-1, kernel.shape[0]], tf.concat([tf.shape(inputs)[:2], [width]], axis=0))
    xw = tf.matmul(tf.reshape(inputs, flat), kernel)
    if bias is not None:
        xw = xw + bias
    xw = tf.reshape(xw, out)
    xw.set_shape(inputs.shape[:2].concatenate([width]))
    return xw


def _no_features(inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor]) -> tf.Tensor:
    """`x W + b` for inputs with no features: `b` on every step, no product (TensorFlow's fused oneDNN product
    aborts the process on an empty inner axis). The kernel stays connected (its gradient: zeros `(0, k)`)."""
    width = kernel.shape[-1]
    zeros = tf.zeros(tf.concat([tf.shape(inputs)[:-1], [width]], axis=0), inputs.dtype) + tf.reduce_sum(kernel) * 0
    xw = zeros if bias is None else zeros + bias
    xw.set_shape(inputs.shape[:-1].concatenate([width]))
    return xw


#: Up to this many input features, `project_chunk` under XLA sums `x[..., f] W[f]` instead of a product.
FMA_FEATURES = 16


def project_chunk(inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor]) -> tf.Tensor:
    """`project` for one chunk of the chunked passes. Under XLA with few features (`FMA_FEATURES`) it is
    `b + Σ_f x[..., f] W[f]`, which XLA fuses into one loop over the output: XLA's CPU product of a
    `[C·B, 8] × [8, H]` shape measured slower than TensorFlow's, the fused sum faster (SimpleRNN forward at
    32·1000·8·32: 4.98 ms against 5.29 ms with the product hoisted out of XLA, 6.04 ms with XLA's product)."""
    features = inputs.shape[-1]
    if kernel.shape[0] == 0:
        return _no_features(inputs, kernel, bias)
    if features is None or features > FMA_FEATURES or not step_lib.in_xla_context():
        return project(inputs, kernel, bias)
    total = inputs[..., 0:1] * kernel[0] + (0 if bias is None else bias)
    for f in range(1, features):
        total = total + inputs[..., f : f + 1] * kernel[f]
    return total


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
            xw_steps = _project_in_chunks(
                inputs, kernel, bias, choices.static_chunk, prepared.num_steps, prepared.features
            )
        else:
            xw_steps = tf.unstack(project(inputs, kernel, bias), num=prepared.num_steps)
        hs, h_last = _unrolled_recurrence(
            xw_steps,
            h0,
            recurrent,
            activation=cell.activation,
            rec_mask=rec_mask,
            valid=prepared.valid,
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
        hs, h_last = _fused_recurrence(
            inputs,
            kernel,
            bias,
            h0,
            recurrent,
            activation=cell.activation,
            rec_mask=rec_mask,
            valid=prepared.valid,
            stop=stop,
            choices=choices,
            need_states=return_all_outputs,
        )
    outputs, last = step_lib.outputs_from_states(prepared, hs, h_last, return_all_outputs)
    return outputs, last, [h_last]
