"""What every fused pass shares: projections, chunk schedules, step reads, and the first-order guard.

The fused recurrence (`kernels/recurrence.py`) runs under XLA a chunk of steps at a time: a chunk's inputs
are projected (`project_chunk`) just before its steps run, and the backward pass turns a chunk's gradients
into its share of the weight gradients before going on to the previous chunk. These are the pieces of that
schedule, functions of tensors and of the numbers the planner chose (`Choices`): no decision is made here.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import tensorflow as tf


def bucket_steps(steps: tf.Tensor) -> tf.Tensor:
    """The bucket of a length: a multiple of a quarter of its power of two (at least 4), so at most 25 %
    of a bucket is padding: 1-4 -> 4, 5-8 -> 8, 9-12 -> 12, ..., 65-80 -> 80, 1000 -> 1024."""
    octave = tf.floor(
        tf.math.log(tf.cast(tf.maximum(steps, 1), tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64))
    )
    grain = tf.maximum(tf.cast(tf.pow(tf.constant(2.0, tf.float64), octave - 2.0), tf.int32), 4)
    return (steps + grain - 1) // grain * grain


def as_tensor(variable: Any, dtype: Any) -> tf.Tensor:
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
        items = iter(values)
        return [next(items) if present else None for present in self.present]


def zero_fill(ta: tf.TensorArray, start: tf.Tensor, steps: tf.Tensor, zeros: tf.Tensor) -> tf.TensorArray:
    """Writes `zeros` at steps `start <= t < steps` of `ta` (the steps an early-stopped loop skipped)."""
    _, ta = tf.while_loop(
        lambda t, _: t < steps, lambda t, ta: (t + 1, ta.write(t, zeros)), (start, ta), maximum_iterations=steps
    )
    return ta


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


def chunk_size(steps: tf.Tensor, chunk_steps: Any, min_chunks: int) -> tf.Tensor:
    """Steps per chunk for a sequence of `steps`: the whole sequence when `chunk_steps` (`steps_per_chunk`)
    is 0 or the sequence is shorter than `min_chunks` chunks (`Tuning.min_chunks`), else the fewest chunks of at most
    `chunk_steps` steps, evened out (1000 steps at most 128 a chunk: eight of 125, not seven of 128 and one
    of 104), so that padding to whole chunks (`padded_length`) adds fewer steps than there are chunks. For
    a padded length it gives the same chunk again."""
    steps = tf.maximum(steps, 1)
    if isinstance(chunk_steps, int) and chunk_steps == 0:
        return steps
    chunks = (steps + chunk_steps - 1) // chunk_steps
    return tf.where(chunks < min_chunks, steps, (steps + chunks - 1) // chunks)


def padded_length(steps: tf.Tensor, chunk_steps: Any, min_chunks: int, bucket: bool) -> tf.Tensor:
    """The length the chunked passes run on: `steps` (or its bucket) rounded up to whole chunks."""
    length = bucket_steps(steps) if bucket else steps
    chunk = chunk_size(length, chunk_steps, min_chunks)
    return (length + chunk - 1) // chunk * chunk


def chunk_schedule(
    steps: tf.Tensor, stop: tf.Tensor, chunk_steps: Any, min_chunks: int
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(chunk, full, rest)`: the chunk size, the number of chunks whose steps all run (`stop // chunk`),
    and the steps that run in the one after them (`stop % chunk`; when none, the passes skip that chunk).

    Every chunk runs a loop of a fixed trip count, the partial one with its later steps masked
    (`partial_chunk_valid`): XLA compiled a backward loop that starts at a run-time step 1.5× slower (121
    against 78 ms, SimpleRNN 32·5000·8·64), and a partial chunk run that way took a third of an LSTM step
    at 64·127·16·64 (45 against 29 ms at 64·129·16·64, which has no partial chunk)."""
    chunk = chunk_size(steps, chunk_steps, min_chunks)
    return chunk, stop // chunk, stop % chunk


def partial_chunk_valid(valid_c: Optional[tf.Tensor], rest: tf.Tensor, chunk: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """The `valid` of a partial chunk: only its first `rest` steps run (and the caller's `valid_c`). The chunk
    then runs a loop of a fixed trip count in which the other steps copy the state through, instead of a
    loop that stops at a run-time step (`chunk_schedule`). `like`: `(T, B, ...)`, for the batch size."""
    running = tf.broadcast_to((tf.range(chunk) < rest)[:, None], tf.stack([chunk, tf.shape(like)[1]]))
    return running if valid_c is None else tf.logical_and(valid_c, running)


def chunk_array(dtype: tf.DType, chunks: tf.Tensor, row_shape: tf.TensorShape) -> tf.TensorArray:
    """A TensorArray of `chunks` elements `(chunk, *row_shape)` (XLA has no TensorArray scatter, and a chunk
    written as one element is one update instead of one per step)."""
    return tf.TensorArray(dtype, size=chunks, element_shape=tf.TensorShape([None]).concatenate(row_shape))


def stack_chunks(ta: tf.TensorArray, like: tf.Tensor, row_shape: tf.TensorShape) -> tf.Tensor:
    """A `_chunk_array` as one `(T, *row_shape)` tensor, for the T steps of `like` (a reshape: free)."""
    stacked = ta.stack()
    value = tf.reshape(stacked, tf.concat([tf.shape(like)[:1], tf.shape(stacked)[2:]], axis=0))
    value.set_shape(like.shape[:1].concatenate(row_shape))
    return value


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


def project_chunk(inputs: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor], fma_features: int) -> tf.Tensor:
    """`project` for one chunk of the chunked passes. With at most `fma_features` features (the planner sets
    it under XLA: `Tuning.fma_features`) it is
    `b + Σ_f x[..., f] W[f]`, which XLA fuses into one loop over the output: XLA's CPU product of a
    `[C·B, 8] × [8, H]` shape measured slower than TensorFlow's, the fused sum faster (SimpleRNN forward at
    32·1000·8·32: 4.98 ms against 5.29 ms with the product hoisted out of XLA, 6.04 ms with XLA's product)."""
    features = inputs.shape[-1]
    if kernel.shape[0] == 0:
        return _no_features(inputs, kernel, bias)
    if features is None or features > fma_features:
        return project(inputs, kernel, bias)
    total = inputs[..., 0:1] * kernel[0] + (0 if bias is None else bias)
    for f in range(1, features):
        total = total + inputs[..., f : f + 1] * kernel[f]
    return total


def project_in_chunks(inputs, kernel, bias, chunk, num_steps, features) -> List[tf.Tensor]:
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
