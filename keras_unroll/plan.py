"""The planner: the one place that decides which loop and kernel run a call, and whether XLA compiles them.

Every call of a layer or a functional form comes here with a checked, time-major sequence
(`step.Prepared`) and a `Request` (the loop family and its options):

    plan = make_plan(cell, prepared, request)       # decisions only, from static shapes and the cell
    outputs, last, state = run(cell, prepared, request)   # make_plan + execute

`make_plan` holds every path of the package (request → loop, kernel; XLA):

- a batch of 0 rows → no loop, the exact empty result; no XLA.
- dynamic, traced as a serving graph (`serving_trace`) → a `tf.while_loop` without gradient machinery
  (`"serving"`) over the generic step, or for an eligible LSTM/GRU the form converters fuse
  (`loops/fused_export.py`); no XLA.
- static → a Python `for` over the fused SimpleRNN step, the hoisted LSTM/GRU step or the generic step; XLA
  only with `jit_compile=True`, over the whole loop.
- dynamic with `swap_memory` or `recompute` → the checkpointed loop over segments of the fused recurrence
  (SimpleRNN, LSTM, GRU) or of the generic step; no XLA.
- dynamic LSTM/GRU on a GPU (`takes_cudnn`) → cuDNN's `CudnnRNNV3` as Keras' layers call it (a mask that is
  not right-padded: the generic step); never under XLA (`jit_compile=True` or XLA around: not taken).
- dynamic → a `tf.while_loop` over the fused recurrence (SimpleRNN; LSTM/GRU below `gated_max_macs`) or the
  generic step; the fused passes compile with `True`, and with `"auto"` where it pays back (`compile_tier`);
  the generic step never compiles alone.

Under `jit_compile="auto"` compiling a fused while loop must pay back (`compile_tier`): in a graph when T is
known and at least `Tuning.compile_min_steps`, eagerly when besides the same shape was seen before; else
the uncompiled tier runs (`uncompiled_tier`: SimpleRNN's fused kernel without XLA, LSTM/GRU the generic
step), so a first epoch, a first `predict` and shapes that keep changing compile nothing.

When `Tuning.timed_trial` is on (off by default), a while loop whose cell has a fused kernel then goes through
`choose`: once per cell and shape class it times that kernel against the generic step on random data of the
call's shapes (in a thread of its own, before the call is traced) and keeps the faster, so the default holds on
CPUs other than the two the bounds were measured on. The trial skips cells with dropout (its masks would move
their seed generators), distribution strategies and sequences above `Tuning.trial_max_elements`.

The size-dependent choices of the fused kernel (where `dU` is computed, whether its backward loop is
compiled, how many steps a static product projects) come from one frozen `Tuning` value, whose bounds were
measured (docs/performance.md). `tuning()` returns the one in force: the default, or what
`keras_unroll.testing.use_tuning` / `generic_only` set for a block of code. Each plan is part of the key of
the functions it caches, so a switch is never ignored by a function traced before it.

Caches: a loop that must run as a graph when called eagerly (the while, checkpointed and cuDNN loops) or
that is compiled as a whole (`StaticUnroll(jit_compile=True)`) runs in a `tf.function` kept on the cell (freed
with it), at most `_MAX_FUNCTIONS` per cell, keyed on the plan and everything that changes the trace (options,
dtype, features, which optional tensors are present) but never on T: the while loop's function has an
input signature with open time and batch axes, so one trace serves every length and batch size.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import numbers
import os
import statistics
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import tensorflow as tf

from keras_unroll import _private
from keras_unroll import step as step_lib
from keras_unroll.kernels import cells, cudnn, projected, recurrence
from keras_unroll.loops import fused_export
from keras_unroll.loops.checkpointed import Recompute, Segments, checkpointed_loop
from keras_unroll.loops.dynamic import while_loop
from keras_unroll.loops.static import static_loop


# ------------------------------------------------------------------------------------- tuning
@dataclasses.dataclass(frozen=True)
class Tuning:
    """The bounds behind the planner's size-dependent choices, and the device it plans for, as one frozen value.

    Sizes are `B·H·H`, the multiply-adds of one step's `h U` (an unknown batch counts as 32). The defaults
    were measured on 2-core CPUs (docs/performance.md has the tables behind each bound).

    Attributes:
        fast_paths: `False` runs every cell with the generic step (`step.make_step`), for comparisons.
        static_chunk: `StaticUnroll` projects a small step's inputs this many steps per matrix product, so the
            products overlap the recurrence on the other core (`0`: one product).
        static_chunk_max_macs: From this size on, one product for the whole sequence.
        du_in_loop_min_macs: The uncompiled backward loop accumulates `dU` inside the loop from this size on
            (else one product after the loop).
        du_in_loop_xla_macs: The XLA-compiled backward loop accumulates `dU` inside for sizes in `[lo, hi)`.
        uncompiled_backward_min_macs: Under XLA, steps from this size on (and with at most
            `uncompiled_backward_max_units` units) run the backward loop uncompiled (TensorFlow's matmul
            kernels were faster there).
        uncompiled_backward_max_units: See above.
        gated_max_macs: The fused LSTM/GRU kernel runs (XLA-compiled, in the while loop) for steps below this
            size; from it on the products dominate and Keras' own loop measured as fast or faster.
        timed_trial: Under `jit_compile="auto"`, a `DynamicUnroll` whose cell has a fused kernel times that
            kernel against the generic step once per cell and shape, on this machine, and keeps the faster
            (`choose`). The bounds above were measured on two CPUs; the trial makes the default hold on
            others. Off by default: the bounds alone decide, so the same program gets the same plan, graph and
            numbers on every run; on with `Tuning(timed_trial=True)` or `KERAS_UNROLL_TIMED_TRIAL=1` in the
            environment (read when the default `Tuning` is made).
        compile_min_steps: The compile tier of `jit_compile="auto"`: a `DynamicUnroll` while loop runs its fused
            kernel XLA-compiled only where the compilation pays back (docs/performance.md, "The first minute"):
            in a graph (`fit`, `predict`, a `tf.function`) when T is known and at least this many steps (an
            open time axis: lengths that change, each a compilation: never); called eagerly, when besides the
            same shape `(B, T)` was seen before (a shape seen once never compiles). Below it, SimpleRNN runs
            its fused kernel uncompiled and LSTM/GRU the generic step, as with `jit_compile=False`: nothing
            to compile. `0` compiles from the first call (the package's behaviour before #22);
            `KERAS_UNROLL_COMPILE_MIN_STEPS` in the environment sets the default (read when the default
            `Tuning` is made).
        trial_max_elements: No trial when a sequence holds more than this many state values (`T·B·H`):
            the generic candidate keeps every step's activations, and a trial must not run out of memory
            where the chosen kernel would not.
        chunk_bytes: Under XLA the fused passes project the inputs and back-propagate into them a chunk of steps
            at a time, as many steps as keep a chunk's `(B, G·H)` rows within this many bytes (4 MiB), so that
            the states (and residuals) are the only `(T, B, ·)` tensors a training step keeps (docs/memory.md).
        min_chunks: Fewer chunks than this and the passes run the whole sequence as one: each pass holds a
            few chunk-sized temporaries, which at two chunks outweighed what chunking saves (LSTM 64·127·16·64:
            35 MB, against 18 MB at 64·100 in one chunk).
        fma_features: Under XLA, a chunk's input projection with at most this many features is a fused sum
            `b + Σ_f x[..., f] W[f]` (XLA's CPU product of a `[C·B, 8] × [8, H]` shape measured slower:
            SimpleRNN forward at 32·1000·8·32, 4.98 ms against 6.04 ms); `0` always takes the product.
        loop_parallel_iterations: `parallel_iterations` of the fused kernels' backward step loop (TensorFlow's
            default, 10).
        du_parallel_iterations: The same with `dU` accumulated in the loop: the products `h_{t-1}ᵀ dz_t` do
            not wait for the gradient chain, and with 10 the loop ran 10 of them ahead and held them (2.8 MB of
            a 12 MB peak, recompute="sqrt" at 32·2000·8·256; 9.6 MB with 2, the same step time).
        chunk_parallel_iterations: `parallel_iterations` of the backward loop over chunks: uncompiled, 10 ran
            the next chunks' work ahead and held ~15 chunks of temporaries (60 MB at 32·2000·8·256, against 15
            MB with 1; same step time).
        segment_parallel_iterations: `(forward, backward)` `parallel_iterations` of the checkpointed loop's
            segment loops: forward one segment ahead at most (with 10 the loop projected 10 segments ahead
            and held them: 14 of 19 MB at 32·2000·8·256, 12 with 2); backward one at a time (a segment's
            recomputation does not wait for the gradient carried in).
        trial_rounds: Timed rounds per candidate of the timed trial (after a warm-up call each).
        trial_budget_s: Fewer rounds when one call takes longer than a third of this many seconds.
        gpu: Whether the machine has a GPU: None asks TensorFlow (`tf.config.list_logical_devices("GPU")`);
            `True`/`False` describe a machine for tests (a `tf.device` scope naming another device type still
            wins, see `on_gpu`).
    """

    fast_paths: bool = True
    static_chunk: int = 4
    static_chunk_max_macs: int = 2**22
    du_in_loop_min_macs: int = 2**21
    du_in_loop_xla_macs: Tuple[int, int] = (2**17, 2**20)
    uncompiled_backward_min_macs: int = 2**21
    uncompiled_backward_max_units: int = 256
    gated_max_macs: int = 2**22
    timed_trial: bool = dataclasses.field(
        default_factory=lambda: os.environ.get("KERAS_UNROLL_TIMED_TRIAL", "0") == "1"
    )
    trial_max_elements: int = 2**24
    gpu: Optional[bool] = None
    compile_min_steps: int = dataclasses.field(
        default_factory=lambda: int(os.environ.get("KERAS_UNROLL_COMPILE_MIN_STEPS", "64"))
    )
    chunk_bytes: int = 2**22
    min_chunks: int = 4
    fma_features: int = 16
    loop_parallel_iterations: int = 10
    du_parallel_iterations: int = 2
    chunk_parallel_iterations: int = 1
    segment_parallel_iterations: Tuple[int, int] = (2, 1)
    trial_rounds: int = 3
    trial_budget_s: float = 1.0


_DEFAULT_TUNING = Tuning()
_TUNING: contextvars.ContextVar = contextvars.ContextVar("keras_unroll_tuning", default=None)
#: The `use_tuning` blocks open in each thread (innermost last), for the replica threads of a strategy.
_OPEN_BLOCKS: Dict[int, List[Tuning]] = {}
_OPEN_BLOCKS_LOCK = threading.Lock()


def tuning() -> Tuning:
    """The `Tuning` in force: the default, or the one a `use_tuning` block set (per thread and task).

    A replica thread of a distribution strategy (`MirroredStrategy` runs each replica's eager step in a
    thread of its own, which does not inherit context variables) takes the block open in the thread that
    runs the strategy; with several different blocks open in other threads it cannot tell which, and raises.
    """
    value = _TUNING.get()
    if value is not None:
        return value
    if not _OPEN_BLOCKS or not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return _DEFAULT_TUNING
    with _OPEN_BLOCKS_LOCK:
        open_values = {id(blocks[-1]): blocks[-1] for blocks in _OPEN_BLOCKS.values() if blocks}
    if len(open_values) > 1:
        raise RuntimeError(
            "A replica thread of a distribution strategy cannot tell which `use_tuning`/`generic_only` block "
            "applies: several are open in other threads. Open the block inside the function the strategy runs, "
            f"or run one strategy at a time. Received: {len(open_values)} different blocks open"
        )
    return next(iter(open_values.values()), _DEFAULT_TUNING)


@contextlib.contextmanager
def use_tuning(value: Tuning) -> Iterator[Tuning]:
    """Plans the calls traced in this block with `value` (see `keras_unroll.testing`)."""
    if not isinstance(value, Tuning):
        raise TypeError(f"`use_tuning` takes a `keras_unroll.plan.Tuning`. Received: value={value!r}")
    token = _TUNING.set(value)
    thread = threading.get_ident()
    with _OPEN_BLOCKS_LOCK:
        _OPEN_BLOCKS.setdefault(thread, []).append(value)
    try:
        yield value
    finally:
        _TUNING.reset(token)
        with _OPEN_BLOCKS_LOCK:
            _OPEN_BLOCKS[thread].pop()
            if not _OPEN_BLOCKS[thread]:
                del _OPEN_BLOCKS[thread]


#: Guards the per-cell caches below: a `MirroredStrategy` traces its replicas in threads of their own.
_CELL_CACHES_LOCK = threading.RLock()


def _cached(cell: Any, attribute: str, key: Any, make: Any, bound: int) -> Any:
    """The entry `key` of `cell`'s cache `attribute` (in its `__dict__`: not tracked by Keras), made by `make()`
    when missing; past `bound` entries the least recently used is dropped."""
    with _CELL_CACHES_LOCK:
        cache = cell.__dict__.setdefault(attribute, collections.OrderedDict())
        found = cache.get(key)
        if found is None:
            found = cache[key] = make()
        cache.move_to_end(key)
        while len(cache) > bound:
            cache.popitem(last=False)
        return found


# -------------------------------------------------------------------------------------- plans
@dataclasses.dataclass(frozen=True)
class Request:
    """What a layer or function asks for: the loop family and its options (already checked)."""

    loop: str  # "static" or "dynamic"
    training: Any = None
    return_all_outputs: bool = True
    jit_compile: Any = False  # True, False or "auto"
    swap_memory: bool = False
    recompute: Recompute = None
    parallel_iterations: Optional[int] = None
    # Traced as a serving graph (`serving_trace`: `model.export`, the TFLite and ONNX converters): the
    # deployment plan, with no gradient machinery, XLA-compiled functions or length arithmetic in the graph.
    serving: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """What runs a call.

    Attributes:
        loop: `"empty"`, `"static"`, `"while"`, `"checkpointed"`, `"cudnn"` (cuDNN's op loops itself) or `"serving"`
            (an inference graph to deploy: a plain while loop over the generic step, `serving_trace`).
        kernel: `"generic"` (the cell's own step), `"simple_rnn"` (the fused SimpleRNN kernel), `"gated"`
            (the fused LSTM/GRU kernel), `"projected"` (the hoisted LSTM/GRU step of the static loop) or
            `"cudnn"` (cuDNN's LSTM/GRU kernel, as Keras' layers call it on a GPU) or `"fused_export"` (a serving
            LSTM/GRU in the form TFLite's and ONNX's converters fuse, `loops/fused_export.py`).
        compile: `"none"`, `"kernel"` (a fused kernel compiles its own passes), `"loop"` (the whole loop
            runs in its own `tf.function(jit_compile=True)`).
        choices: The fused kernel's choices (for the LSTM/GRU kernel only `jit` and `bucket_steps`; for the
            hoisted static LSTM/GRU step only `static_chunk`), else None.
        training: `training` as a Python bool or None; `"symbolic"` for a symbolic flag (generic step only).
        tuning: The `Tuning` the plan was made with.
    """

    loop: str
    kernel: str
    compile: str
    choices: Optional[recurrence.Choices]
    training: Any
    tuning: Tuning


def python_training(training: Any) -> Any:
    """`training` as a Python bool or None; `"symbolic"` for a tensor whose value is not known yet."""
    if training is None or isinstance(training, bool):
        return training
    if isinstance(training, (tf.Tensor, tf.Variable)):
        if training.dtype != tf.bool or training.shape.rank not in (0, None):
            raise TypeError(f"`training` must be a bool, None or a boolean tensor. Received: training={training!r}")
        if tf.executing_eagerly():
            return bool(training.numpy())
        static = tf.get_static_value(training)
        return "symbolic" if static is None else bool(static)
    if isinstance(training, numbers.Integral) and training in (0, 1):
        return bool(training)
    raise TypeError(f"`training` must be a bool, None or a boolean tensor. Received: training={training!r}")


def serving_trace(training: Any) -> bool:
    """Whether a call is traced as a serving graph: in a graph (a `tf.function`), with `training` not given
    (None) and no tape or forward accumulator that could record it. `model.export`, `tf.saved_model.save` of
    a function calling the model, and the TFLite and ONNX converters trace models so; such a graph is deployed
    as it is, so it gets the serving plan (`make_plan`). `model.predict`/`evaluate` pass `training=False` and
    keep the fused, XLA-compiled kernels (about 3x faster per call at 32x200x16x64, measured beside it)."""
    return training is None and tf.inside_function() and not _private.could_possibly_record()


def simple_rnn_choices(batch: Optional[int], units: int, jit: bool, value: Tuning) -> recurrence.Choices:
    """Where the fused SimpleRNN while loop computes `dU` and whether its backward loop is compiled, for a batch
    of `batch` rows (None: unknown) and `units` units, with `value`'s chunk sizes and loop parallelism."""
    macs = cells.step_macs(batch, units)
    if not jit:
        return _with_numbers(recurrence.Choices(du_in_loop=macs >= value.du_in_loop_min_macs), value)
    if macs >= value.uncompiled_backward_min_macs and units <= value.uncompiled_backward_max_units:
        # Chunked and uncompiled, `dU` is one product per chunk: summing it inside the nested loops measured
        # slower (0.78× the time without), and with static shapes Grappler turned those sums into
        # `TemporaryVariable` ops that fail in nested while loops ("Resource ... already exists").
        return _with_numbers(recurrence.Choices(jit=True, compile_backward=False), value)
    low, high = value.du_in_loop_xla_macs
    return _with_numbers(recurrence.Choices(jit=True, du_in_loop=low <= macs < high), value)


def _with_numbers(choices: recurrence.Choices, value: Tuning) -> recurrence.Choices:
    """`choices` with `value`'s chunk sizes and `parallel_iterations` for the fused passes."""
    ahead = value.du_parallel_iterations if choices.du_in_loop else value.loop_parallel_iterations
    return dataclasses.replace(
        choices,
        chunk_bytes=value.chunk_bytes,
        min_chunks=value.min_chunks,
        backward_ahead=ahead,
        chunk_ahead=value.chunk_parallel_iterations,
    )


def _in_context(plan: Plan, cell: Any) -> Plan:
    """A fused while loop's choices that follow from where the call is traced: whether a tape or forward
    accumulator may record it (no: the inference loop, unless input dropout needs the training path),
    whether XLA compiles it (the fused projection of few features; SimpleRNN's forward reads through a
    TensorArray there)."""
    if plan.choices is None or plan.loop not in ("while", "checkpointed"):
        return plan
    choices = plan.choices
    # A segment of the checkpointed loop is traced again under the backward pass's tape: it keeps its states.
    recording = plan.loop == "checkpointed" or bool(_private.could_possibly_record())
    compiled = choices.jit or step_lib.in_xla_context()
    input_dropout = plan.training is True and getattr(cell, "dropout", 0) > 0
    choices = dataclasses.replace(
        choices,
        recording=recording,
        inference=choices.jit and not recording and not input_dropout,
        fma_features=plan.tuning.fma_features if compiled else 0,
        in_place=plan.kernel != "simple_rnn" or not compiled,
    )
    return dataclasses.replace(plan, choices=choices)


def _scope_device_type() -> str:
    """The device type the innermost `tf.device` scope names (`"CPU"`, `"GPU"`, ...), `""` for none.

    A graph keeps its scopes on a stack; a `tf.function` traced in an eager scope sees the eager one.
    """
    for name in _private.device_scope_names():  # innermost first
        try:
            device_type = tf.DeviceSpec.from_string(name).device_type
        except (TypeError, ValueError):  # a device function rather than a name
            continue
        if device_type:
            return device_type.upper()
    return ""


def on_gpu(value: Tuning) -> bool:
    """Whether ops created now run on a GPU: the machine has one (`value.gpu`, or TensorFlow's list when it
    is None) and the current `tf.device` scope names no other device type."""
    if _scope_device_type() not in ("", "GPU"):
        return False
    return value.gpu if value.gpu is not None else bool(tf.config.list_logical_devices("GPU"))


def takes_cudnn(cell: Any, request: Request, value: Optional[Tuning] = None) -> bool:
    """Whether a call of `cell` with `request` runs cuDNN's LSTM/GRU kernel: the package's one device decision.

    As Keras' `LSTM`/`GRU` decide it: the dynamic loop (Keras' `unroll=False`), a cell that meets Keras'
    conditions (`cudnn.eligible`) and a GPU (`on_gpu`). Besides: fast paths on (`generic_only()` turns them
    off); not `jit_compile=True` (it asks for the XLA-compiled kernel; cuDNN's op cannot be compiled) and no
    XLA-compiled graph around the call (`model.compile(jit_compile=True)`); no `swap_memory`/`recompute`
    (they bound the memory of the backward pass; cuDNN keeps its own buffers for it). The layers read it too:
    their `supports_jit` is False when it holds, as Keras' layers', so `jit_compile="auto"` in
    `model.compile` keeps the step uncompiled for cuDNN.
    """
    value = value or tuning()
    return (
        request.loop == "dynamic"
        and value.fast_paths
        and request.jit_compile is not True
        and not request.swap_memory
        and request.recompute is None
        and cudnn.eligible(cell) is not None
        and not step_lib.in_xla_context()
        and on_gpu(value)
    )


def make_plan(cell: Any, prepared: step_lib.Prepared, request: Request, value: Optional[Tuning] = None) -> Plan:
    """Decides the loop, kernel and compilation of one call, from the cell, the options and static shapes."""
    value = value or tuning()
    if (request.swap_memory or request.recompute is not None) and step_lib.in_xla_context():
        raise ValueError(
            "`swap_memory` and `recompute` cannot run inside an XLA-compiled function (such as "
            "`model.compile(jit_compile=True)`): their segments have run-time lengths and XLA ignores host "
            "placement. Compile without XLA (`jit_compile=False`) or drop these arguments. "
            f"Received: swap_memory={request.swap_memory!r}, recompute={request.recompute!r}"
        )
    plan = _in_context(_make_plan(cell, prepared, request, value), cell)
    if prepared.features == 0 and plan.kernel in ("generic", "cudnn") and plan.loop != "empty":
        _check_no_features(cell, prepared, request)
    return plan


def _make_plan(cell: Any, prepared: step_lib.Prepared, request: Request, value: Tuning) -> Plan:
    training = python_training(request.training)
    if prepared.inputs.shape[1] == 0 or (prepared.num_steps == 0 and request.loop == "dynamic"):
        # An empty batch or no steps: nothing to run (LSTMCell cannot trace an empty batch); TF1 gives empty
        # outputs and the initial state.
        return Plan("empty", "generic", "none", None, training, value)
    fast = value.fast_paths and training != "symbolic"
    mode = cells.mode_of(cell) if fast else None
    fused = mode is not None and mode.family == "simple_rnn"
    units = step_lib.output_size(cell)
    if request.serving and request.loop == "dynamic":
        # An inference graph that is deployed as it is (SavedModel, TFLite with builtin ops, ONNX): the generic
        # step in a plain while loop with a static T where there is one; no custom gradient, no XLA-compiled
        # function, no cuDNN op, no bucketing arithmetic. swap_memory/recompute shape only a backward pass.
        # An LSTM/GRU the fused sequence ops compute: the loop in the form converters fuse (`fused_export`).
        if fast and fused_export.kind(cell, prepared) is not None:
            return Plan("serving", "fused_export", "none", None, training, value)
        return Plan("serving", "generic", "none", None, training, value)
    if request.loop == "static":
        return _static_plan(cell, prepared, request, value, fused)
    if training != "symbolic" and prepared.num_steps != 0 and takes_cudnn(cell, request, value):
        return Plan("cudnn", "cudnn", "none", None, training, value)
    # A while loop whose T is not fixed when it is traced (an open time axis, or eager calls) sees many
    # lengths: the fused kernel pads them to buckets so that XLA compiles a few shapes, not one per length.
    varying_steps = prepared.inputs.shape[0] is None or tf.executing_eagerly()
    if request.swap_memory or request.recompute is not None:
        # Each segment runs the fused recurrence, its passes XLA-compiled unless `jit_compile=False` (an open
        # time axis: one compilation serves every segment length). The loop over segments and its checkpoints
        # stay outside XLA (on the host with `swap_memory`). Measured at 32·1000·8·32 against the generic step
        # in segments: LSTM 2.3×, GRU 2.7×, SimpleRNN 5.4× faster. Uncompiled, only SimpleRNN's fused
        # segments beat the generic step (2×; LSTM's ran at 0.8×, GRU's at 1.2×).
        segment_jit = request.jit_compile is not False
        if fused:
            choices = simple_rnn_choices(prepared.inputs.shape[1], units, segment_jit, value)
            if not choices.compile_backward:
                # Steps large enough for the uncompiled backward loop: the whole segment uncompiled. Measured at
                # 32·2000·8·256 (`recompute="sqrt"`): as fast (832 against 880 ms a train step) and 8.8 against
                # 11.6 MB of activations; at 32·1000·8·32 compiled segments are 2.5× faster.
                choices = simple_rnn_choices(prepared.inputs.shape[1], units, False, value)
            return Plan("checkpointed", "simple_rnn", "none", choices, training, value)
        if mode is not None and segment_jit:
            choices = _with_numbers(recurrence.Choices(jit=segment_jit), value)
            return Plan("checkpointed", "gated", "none", choices, training, value)
        return Plan("checkpointed", "generic", "none", None, training, value)
    jit = request.jit_compile is True or request.jit_compile == "auto"
    compiled = None
    if fused:
        choices = simple_rnn_choices(prepared.inputs.shape[1], units, jit, value)
        if jit:
            choices = dataclasses.replace(choices, bucket_steps=varying_steps)
        compiled = Plan("while", "simple_rnn", "kernel" if jit else "none", choices, training, value)
        if not jit:
            return compiled
    elif mode is not None and jit:
        if cells.step_macs(prepared.inputs.shape[1], units) < value.gated_max_macs:
            choices = _with_numbers(recurrence.Choices(jit=True, bucket_steps=varying_steps), value)
            compiled = Plan("while", "gated", "kernel", choices, training, value)
    if compiled is None:
        return Plan("while", "generic", "none", None, training, value)
    if request.jit_compile is True:
        return compiled
    if compile_tier(cell, prepared, value) == "compiled":
        return compiled
    return uncompiled_tier(compiled, prepared.inputs.shape[1], units)


def _static_plan(cell: Any, prepared: step_lib.Prepared, request: Request, value: Tuning, fused: bool) -> Plan:
    """The Python `for`: the hoisted projection of a fused family (`projected`), else the generic step."""
    training = python_training(request.training)
    compile_mode = "loop" if request.jit_compile is True and training != "symbolic" and not request.serving else "none"
    macs = cells.step_macs(prepared.inputs.shape[1], step_lib.output_size(cell))
    chunk = value.static_chunk if macs < value.static_chunk_max_macs else 0
    choices = recurrence.Choices(unrolled=True, static_chunk=chunk)
    fast = value.fast_paths and training != "symbolic"
    if fused:
        return Plan("static", "simple_rnn", compile_mode, choices, training, value)
    if fast and projected.kind(cell) is not None:
        return Plan("static", "projected", compile_mode, choices, training, value)
    return Plan("static", "generic", compile_mode, None, training, value)


def uncompiled_tier(plan: Plan, batch: Optional[int], units: int) -> Plan:
    """What runs `plan`'s call without compiling: the fused SimpleRNN kernel uncompiled (as with
    `jit_compile=False`), else the generic step."""
    if plan.kernel == "simple_rnn":
        return dataclasses.replace(plan, compile="none", choices=simple_rnn_choices(batch, units, False, plan.tuning))
    return dataclasses.replace(plan, kernel="generic", compile="none", choices=None)


#: Shapes seen by eager calls, per cell (least recently used dropped first): the compile tier's evidence.
_MAX_SEEN = 64
_SEEN_ATTRIBUTE = "_keras_unroll_seen_shapes"


def _shape_key(prepared: step_lib.Prepared) -> Tuple:
    return (prepared.num_steps, prepared.inputs.shape[1], prepared.features, prepared.inputs.dtype.name)


def compile_tier(cell: Any, prepared: step_lib.Prepared, value: Tuning) -> str:
    """`"compiled"` or `"uncompiled"`: the tier of a fused while loop under `jit_compile="auto"`.

    Compiling the fused kernel's passes takes about a second or two on 2 cores; below
    `Tuning.compile_min_steps` steps the uncompiled tier does not lose that back within a first epoch
    (docs/performance.md, "The first minute"). An open time axis in a graph means lengths that change
    from call to call (each would compile a bucket of its own): uncompiled. Eager calls compile a shape
    only from its second call (`_note_shape`): a shape seen once never pays for a compilation."""
    steps, least = prepared.num_steps, value.compile_min_steps
    if least <= 0:
        return "compiled"
    if tf.executing_eagerly():
        seen = cell.__dict__.get(_SEEN_ATTRIBUTE, {})
        return "compiled" if steps is not None and steps >= least and _shape_key(prepared) in seen else "uncompiled"
    return "compiled" if steps is not None and steps >= least else "uncompiled"


def _note_shape(cell: Any, prepared: step_lib.Prepared) -> None:
    """Records an eager call's shape for `compile_tier` (bounded: `_MAX_SEEN` shapes per cell)."""
    _cached(cell, _SEEN_ATTRIBUTE, _shape_key(prepared), lambda: True, _MAX_SEEN)


def _check_no_features(cell: Any, prepared: step_lib.Prepared, request: Request) -> None:
    """Inputs with no features reach the cell's own step: eagerly it runs, but in a graph TensorFlow fuses the
    cell's `x W + b` into a oneDNN product that aborts the process on an empty inner axis. Raise instead.
    (The fused kernels add no product for them: `chunks.project`.)"""
    if tf.executing_eagerly():  # `run` then calls the step eagerly
        return
    raise ValueError(
        f"The inputs have 0 features, and `{type(cell).__name__}` runs its own step in a graph here, where "
        "TensorFlow's fused `x W + b` cannot take an empty inner axis (it aborts the process). Give the inputs at "
        "least one feature (a zero column gives the same result), or call the layer eagerly. "
        f"Received: inputs with shape {_batch_major(prepared)}"
    )


def _batch_major(prepared: step_lib.Prepared) -> Tuple[Any, ...]:
    shape = prepared.inputs.shape.as_list()
    return (shape[1], shape[0], *shape[2:])


def compiles_alone(cell: Any) -> bool:
    """Whether a `tf.while_loop` over `cell` can be XLA-compiled as a function of its own.

    Only the fused kernels (SimpleRNN, LSTM, GRU) can: TensorFlow cannot differentiate a compiled
    `tf.while_loop` from outside XLA (its gradient accumulators are TensorLists, which may not cross the XLA
    boundary), and the fused kernels' gradients are loops of their own. Other cells are compiled with the
    whole train step (`model.compile(jit_compile=True)`).
    """
    return cells.mode_of(cell) is not None


# ----------------------------------------------------------------------------------- timed trial
#: Trial results kept per cell (least recently used dropped first).
_MAX_TRIALS = 16
_TRIAL_ATTRIBUTE = "_keras_unroll_trials"


def _trial_candidates(
    cell: Any, prepared: step_lib.Prepared, request: Request, plan: Plan
) -> Optional[Tuple[Plan, Plan]]:
    """`(fused plan, generic plan)` when `choose` should time them for this call, else None."""
    value = plan.tuning
    if not value.timed_trial or request.jit_compile != "auto" or plan.loop != "while":
        return None
    steps, batch = prepared.num_steps, prepared.inputs.shape[1]
    if steps is None or plan.training == "symbolic" or tf.distribute.has_strategy():
        return None
    if not batch or not prepared.features:  # an unknown batch may be empty at run time; F = 0: nothing to time
        return None
    if any(c.dropout > 0 or c.recurrent_dropout > 0 for c, _ in step_lib._dropout_cells(cell, prepared.features)):
        return None  # drawing a trial's masks would move the cells' seed generators
    if steps * (batch or 32) * step_lib.output_size(cell) > value.trial_max_elements:
        return None
    fused = plan
    if plan.kernel == "generic" or plan.compile != "kernel":  # the other candidate: the compiled fused kernel
        fused = make_plan(
            cell, prepared, request, dataclasses.replace(value, gated_max_macs=2**62, compile_min_steps=0)
        )
    if fused.kernel not in ("simple_rnn", "gated"):
        return None
    return fused, make_plan(cell, prepared, request, dataclasses.replace(value, fast_paths=False))


def _steps_bucket(steps: int) -> int:
    """`chunks.bucket_steps` in Python: lengths within 25 % share a trial."""
    grain = max(2 ** (max(steps, 1).bit_length() - 3), 4)
    return -(-steps // grain) * grain


def _trial_key(candidates: Tuple[Plan, Plan], prepared: step_lib.Prepared, request: Request, recording: bool) -> Tuple:
    steps = prepared.num_steps
    return (
        candidates,
        dataclasses.replace(request, training=None),
        None if steps is None else _steps_bucket(steps),
        prepared.inputs.shape[1],
        prepared.features,
        prepared.inputs.dtype.name,
        repr(tf.nest.map_structure(lambda t: tuple(t.shape.as_list()[1:]), prepared.initial_state)),
        prepared.valid is not None,
        prepared.max_length is not None,
        recording,
    )


def _time_candidates(
    cell: Any, prepared: step_lib.Prepared, request: Request, candidates: Tuple[Plan, Plan], recording: bool
) -> List[List[float]]:
    """Seconds per call of each candidate on random data of this call's shapes (run eagerly: `_in_own_thread`)."""
    steps, batch = prepared.num_steps, prepared.inputs.shape[1] or 32
    dtype = prepared.inputs.dtype
    inputs = tf.random.stateless_normal([steps, batch, prepared.features], seed=[1, 2], dtype=dtype)
    state = tf.nest.map_structure(lambda t: tf.zeros([batch, *t.shape.as_list()[1:]], dtype), prepared.initial_state)
    valid = None if prepared.valid is None else tf.ones([steps, batch], tf.bool)
    max_length = None if prepared.max_length is None else tf.constant(steps, prepared.max_length.dtype)
    trial = prepared.settings_only().around(inputs, valid, state, max_length)
    weights = [w for w in getattr(cell, "trainable_weights", [])]

    def runner(plan: Plan):
        @tf.function(autograph=False)
        def call():
            if not recording:
                return execute(plan, cell, trial, request, step_lib.DropoutMasks())[1]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                last = execute(plan, cell, trial, request, step_lib.DropoutMasks())[1]
                loss = tf.reduce_sum(last)
            return tape.gradient(loss, [inputs] + weights)

        return lambda: tf.nest.map_structure(lambda t: None if t is None else t.numpy(), call())

    fns = [runner(plan) for plan in candidates]
    warm = []
    for fn in fns:  # traces, compiles (the fused kernel's compiled passes are then cached for the real call)
        fn()
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    value = candidates[0].tuning
    rounds = max(1, min(value.trial_rounds, int(value.trial_budget_s / max(3 * max(warm), 1e-9))))
    samples: List[List[float]] = [[w] for w in warm]
    for index in range(rounds):
        for which in range(len(fns)) if index % 2 else reversed(range(len(fns))):
            start = time.perf_counter()
            fns[which]()
            samples[which].append(time.perf_counter() - start)
    return samples


def _in_own_thread(fn: Any) -> Any:
    """`fn()` in a new thread: eager, outside the caller's trace, and out of sight of the caller's tapes
    (tapes and graphs are per thread; `tf.init_scope` would pause the trial's own tape too)."""
    result: Dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as error:  # re-raised in the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name="keras_unroll-timed-trial", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def choose(cell: Any, prepared: step_lib.Prepared, request: Request, plan: Plan) -> Plan:
    """`plan`, or the faster of the fused kernel and the generic step when `Tuning.timed_trial` applies.

    The trial runs once per cell and shape class (T in its bucket, batch, features, dtype, masks, whether a
    tape records), eagerly, on random data, before the call is traced; later calls read the result from
    `trials(cell)`. Both candidates are exact (tests/test_fast_paths.py): the trial changes speed only.
    """
    candidates = _trial_candidates(cell, prepared, request, plan)
    if candidates is None:
        return plan
    recording = bool(_private.could_possibly_record())  # a tape is active: time forward and backward passes
    key = _trial_key(candidates, prepared, request, recording)

    def trial() -> Dict[str, Any]:
        started = time.perf_counter()
        samples = _in_own_thread(lambda: _time_candidates(cell, prepared, request, candidates, recording))
        medians = [statistics.median(s) for s in samples]
        return {
            "chosen": candidates[0] if medians[0] <= medians[1] else candidates[1],
            "fused": candidates[0],
            "generic": candidates[1],
            "seconds": tuple(medians),
            "shape": (prepared.num_steps, prepared.inputs.shape[1], prepared.features),
            "training": recording,
            "trial_seconds": time.perf_counter() - started,
        }

    found = _cached(cell, _TRIAL_ATTRIBUTE, key, trial, _MAX_TRIALS)
    return found["chosen"]


def trials(cell: Any) -> List[Dict[str, Any]]:
    """The timed trials run for `cell`: per shape `(T, B, F)`, the median seconds of the fused and the generic
    candidate, which was chosen (`"fused"`/`"generic"`), whether a tape recorded (train step or forward), and
    how long the trial took (`trial_seconds`, spent inside the first trace of that shape)."""
    rows = []
    for found in cell.__dict__.get(_TRIAL_ATTRIBUTE, {}).values():
        rows.append(
            {
                "shape": found["shape"],
                "training": found["training"],
                "seconds": {"fused": found["seconds"][0], "generic": found["seconds"][1]},
                "chosen": "fused" if found["chosen"] == found["fused"] else "generic",
                "kernel": found["fused"].kernel,
                "trial_seconds": found["trial_seconds"],
            }
        )
    return rows


# ------------------------------------------------------------------------------------ execution
def _choices(plan: Plan) -> recurrence.Choices:
    """The choices a fused kernel's plan carries (`make_plan` gives every fused plan its choices)."""
    if plan.choices is None:
        raise ValueError(f"A plan for a fused kernel needs its choices. Received: plan={plan!r}")
    return plan.choices


def execute(
    plan: Plan, cell: Any, prepared: step_lib.Prepared, request: Request, masks: step_lib.DropoutMasks
) -> Tuple[Any, tf.Tensor, Any]:
    """Runs `plan` on tensors (in whatever graph or eager context the caller is in)."""
    units = step_lib.output_size(cell)
    return_all = request.return_all_outputs
    if plan.loop in ("while", "checkpointed", "cudnn"):
        prepared = prepared.with_open_time()  # the graph of a while loop does not depend on T
    if plan.loop == "empty":
        return _empty_result(units, prepared, request)
    if plan.kernel in ("simple_rnn", "gated") and plan.loop == "while":
        return recurrence.fused_loop(cell, prepared, masks, _choices(plan), return_all)
    if plan.kernel == "cudnn":
        return _cudnn_or_generic(plan, cell, prepared, request, masks)
    if plan.kernel == "fused_export":
        name = fused_export.kind(cell, prepared)
        if name is None:
            raise ValueError(f"`cell` cannot take the fused-export loop (`fused_export.kind`). Received: cell={cell!r}")
        return fused_export.fused_export_loop(cell, name, prepared, return_all_outputs=return_all)
    if plan.loop == "static" and plan.kernel in ("simple_rnn", "projected"):
        hoisted, steps = projected.project_cell(cell, prepared, masks, _choices(plan).static_chunk)
        step = step_lib.make_step(hoisted, None, prepared.zero_output)
        return static_loop(step, prepared, units, return_all_outputs=return_all, step_inputs=steps)
    # A symbolic training flag goes to the cell as it is: the cell then draws (and keeps) its own masks.
    symbolic = plan.training == "symbolic"
    step = step_lib.make_step(cell, request.training if symbolic else plan.training, prepared.zero_output)
    with masks.applied() if not symbolic else step_lib.masks_cleared(cell, prepared.features):
        if plan.loop == "static":
            return static_loop(step, prepared, units, return_all_outputs=return_all)
        if plan.loop in ("while", "serving"):
            ahead = request.parallel_iterations or plan.tuning.loop_parallel_iterations
            return while_loop(step, prepared, units, return_all, ahead, serving=plan.loop == "serving")
    segment_kernel = None
    if plan.kernel in ("simple_rnn", "gated"):

        def segment_kernel(segment: step_lib.Prepared, collect: bool):
            return recurrence.fused_loop(cell, segment, masks, _choices(plan), collect)

    ahead = request.parallel_iterations or plan.tuning.loop_parallel_iterations
    options = Segments(
        request.swap_memory, request.recompute, ahead, segment_kernel, plan.tuning.segment_parallel_iterations
    )
    return checkpointed_loop(step, prepared, units, masks, options, return_all)


def _empty_result(units: int, prepared: step_lib.Prepared, request: Request) -> Tuple[Any, tf.Tensor, Any]:
    """The exact result of an empty batch, or of no steps (TF1: empty outputs, the initial state)."""
    return_all = request.return_all_outputs
    if prepared.inputs.shape[1] != 0:  # no steps
        dtype = prepared.inputs.dtype
        outputs = tf.zeros(tf.stack([0, prepared.batch_size, units]), dtype) if return_all else None
        return outputs, tf.zeros(tf.stack([prepared.batch_size, units]), dtype), prepared.initial_state
    outputs, last, state = step_lib.empty_batch_result(units, prepared, return_all)
    if request.loop == "static" and outputs is not None:
        outputs = tf.unstack(outputs, num=prepared.num_steps)
    return outputs, last, state


def _cudnn_or_generic(
    plan: Plan, cell: Any, prepared: step_lib.Prepared, request: Request, masks: step_lib.DropoutMasks
) -> Tuple[Any, tf.Tensor, Any]:
    """cuDNN's kernel; with a Keras mask, under `tf.cond`: where the mask is not right-padded (which cuDNN
    cannot run, and Keras' layers refuse on a GPU), the generic while loop."""
    return_all = request.return_all_outputs
    run_cudnn = lambda: cudnn.cudnn_loop(cell, prepared, masks, return_all_outputs=return_all)  # noqa: E731
    padded = cudnn.right_padded(prepared)
    if padded is None:
        return run_cudnn()
    generic = dataclasses.replace(plan, loop="while", kernel="generic")

    def branch(fn):  # tf.cond returns no None: leave the outputs out without `return_all_outputs`
        def run():
            outputs, last, state = fn()
            return ((outputs,) if return_all else ()) + (last, state)

        return run

    result = tf.cond(padded, branch(run_cudnn), branch(lambda: execute(generic, cell, prepared, request, masks)))
    return tuple(result) if return_all else (None, *result)


#: Traced functions kept per cell (least recently used dropped first).
_MAX_FUNCTIONS = 8
_CACHE_ATTRIBUTE = "_keras_unroll_functions"


def _traced(
    plan: Plan,
    cell: Any,
    settings: step_lib.Prepared,
    request: Request,
    masks: step_lib.DropoutMasks,
    inputs: tf.Tensor,
    initial_state: Any,
    extra: Dict[str, Any],
) -> Tuple[Any, tf.Tensor, Any]:
    """The body of a cached function: `settings` around the function's tensors, then `execute`."""
    rebuilt = settings.around(inputs, extra.get("valid"), initial_state, extra.get("max_length"))
    return execute(plan, cell, rebuilt, request, masks.with_tensors(extra.get("masks", {})))


def _spec(tensor: Any, time_axis: bool) -> Any:
    """A `TensorSpec` for `tensor` with the batch (and, for sequences, the time) axis left open."""
    shape = tensor.shape.as_list()
    if time_axis and shape:
        shape[0] = None
        if len(shape) > 1:
            shape[1] = None
    elif shape:
        shape[0] = None
    return tf.TensorSpec(shape, tensor.dtype)


def _graph_function(plan: Plan, cell: Any, prepared: step_lib.Prepared, request: Request, masks: step_lib.DropoutMasks):
    """The cached `tf.function` that runs `plan` (see the module docstring for what keys it)."""
    given: Dict[str, Any] = {"valid": prepared.valid, "max_length": prepared.max_length}
    given["masks"] = masks.tensors() or None
    extras: Dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    settings = prepared.settings_only()
    state_structure = tf.nest.map_structure(lambda t: tuple(t.shape.as_list()[1:]), prepared.initial_state)
    key: Tuple[Any, ...] = (
        plan,
        dataclasses.replace(request, training=None),
        settings.zero_output,
        settings.features,
        prepared.inputs.dtype.name,
        repr(state_structure),
        tuple(sorted(extras)),
        tuple(sorted(extras.get("masks", {}))),
    )
    signature = None
    if plan.compile == "loop":  # the whole static loop: its graph holds T copies of the step anyway
        key += (prepared.num_steps, prepared.inputs.shape[1])
    else:
        signature = [
            _spec(prepared.inputs, True),
            tf.nest.map_structure(lambda t: _spec(t, False), prepared.initial_state),
            {
                name: (
                    _spec(value, True)
                    if name == "valid"
                    else tf.TensorSpec([], value.dtype)
                    if name == "max_length"
                    else {k: tf.nest.map_structure(lambda t: _spec(t, False), v) for k, v in value.items()}
                )
                for name, value in extras.items()
            },
        ]
    # A partial, not a closure: TensorFlow counts retracing per code object, and each cell's function
    # traces once on its own.
    body = functools.partial(_traced, plan, cell, settings, request, masks.with_tensors({}))
    jit = plan.compile == "loop"
    make = lambda: tf.function(body, input_signature=signature, jit_compile=jit, autograph=False)  # noqa: E731
    fn = _cached(cell, _CACHE_ATTRIBUTE, key, make, _MAX_FUNCTIONS)
    return fn, extras


def _restore_shapes(
    cell: Any, prepared: step_lib.Prepared, result: Tuple[Any, tf.Tensor, Any]
) -> Tuple[Any, tf.Tensor, Any]:
    """Gives the results the static shapes the caller knows (a function traced for any shape returns fewer)."""
    outputs, last, state = result
    batch, units = prepared.inputs.shape[1], step_lib.output_size(cell)
    if isinstance(outputs, tf.Tensor):
        outputs.set_shape([prepared.num_steps, batch, units])
    elif outputs is not None:
        for output in outputs:
            output.set_shape([batch, units])
    last.set_shape([batch, units])
    flat = tf.nest.flatten(state)
    for tensor, size in zip(flat, step_lib.state_sizes_flat(cell)):
        tensor.set_shape([batch, size])
    return outputs, last, state


def run(cell: Any, prepared: step_lib.Prepared, request: Request) -> Tuple[Any, tf.Tensor, Any]:
    """Plans and runs one call. Returns `(outputs, last_output, final_state)`: outputs `(T, B, H)` for the
    while loops, a list of T `(B, H)` tensors for the static loop, None without `return_all_outputs`."""
    plan = choose(cell, prepared, request, make_plan(cell, prepared, request))
    _note_plan(cell, prepared, plan)
    masks = step_lib.DropoutMasks.draw(cell, prepared, plan.training)
    needs_graph = plan.compile == "loop" or (
        not tf.inside_function() and plan.loop in ("while", "checkpointed", "cudnn") and plan.compile != "kernel"
    )
    if prepared.features == 0 and plan.kernel == "generic":
        needs_graph = False  # eagerly, step by step: in a graph the cell's fused `x W + b` aborts on F = 0
    if not needs_graph or plan.training == "symbolic":
        result = execute(plan, cell, prepared, request, masks)
    else:
        fn, extras = _graph_function(plan, cell, prepared, request, masks)
        result = fn(prepared.inputs, prepared.initial_state, extras)
    return _nan_rows(prepared.invalid_rows, _restore_shapes(cell, prepared, result))


#: Plans of the latest calls kept per cell, for `keras_unroll.testing.plans`.
_MAX_PLANS = 16
_PLANS_ATTRIBUTE = "_keras_unroll_plans"


def _note_plan(cell: Any, prepared: step_lib.Prepared, plan: Plan) -> None:
    """Keeps what ran (or was traced) for `plans`, and an eager call's shape for `compile_tier`."""
    eager = not tf.inside_function()
    if eager and plan.loop == "while":
        _note_shape(cell, prepared)
    with _CELL_CACHES_LOCK:
        kept = cell.__dict__.setdefault(_PLANS_ATTRIBUTE, collections.deque(maxlen=_MAX_PLANS))  # not tracked by Keras
    kept.append({
        "loop": plan.loop,
        "kernel": plan.kernel,
        "compile": plan.compile,
        "shape": (prepared.inputs.shape[1], prepared.num_steps, prepared.features),
        "eager": eager,
    })  # fmt: skip


def plans(cell: Any) -> List[Dict[str, Any]]:
    """The plans of `cell`'s latest calls and traces (at most `_MAX_PLANS`), oldest first."""
    return list(cell.__dict__.get(_PLANS_ATTRIBUTE, ()))


def cache_sizes(cell: Any) -> Dict[str, Any]:
    """How many entries each bounded cache holds: per cell (`functions`, `trials`, `seen_shapes`, `plans`)
    and process-wide (the fused kernels' compiled functions, shared by every layer: `simple_rnn_passes`,
    `simple_rnn_inference`, `gated_passes`, `gated_inference`), with their bounds under `"bounds"`."""
    state = cell.__dict__
    return {
        "functions": len(state.get(_CACHE_ATTRIBUTE, ())),
        "trials": len(state.get(_TRIAL_ATTRIBUTE, ())),
        "seen_shapes": len(state.get(_SEEN_ATTRIBUTE, ())),
        "plans": len(state.get(_PLANS_ATTRIBUTE, ())),
        **recurrence.cache_sizes(),
        "bounds": {
            "functions": _MAX_FUNCTIONS,
            "trials": _MAX_TRIALS,
            "seen_shapes": _MAX_SEEN,
            "plans": _MAX_PLANS,
            **recurrence.cache_bounds(),
        },  # fmt: skip
    }


def _nan_rows(invalid: Optional[tf.Tensor], result: Tuple[Any, tf.Tensor, Any]) -> Tuple[Any, tf.Tensor, Any]:
    """NaN in the rows whose `sequence_length` was out of range where no assertion could raise (XLA)."""
    if invalid is None:
        return result

    def poison(tensor: tf.Tensor) -> tf.Tensor:
        row = tf.reshape(invalid, tf.concat([[-1], tf.ones([tensor.shape.rank - 1], tf.int32)], axis=0))
        if tensor.shape.rank == 3:  # (T, B, H): the batch is the second axis
            row = tf.reshape(invalid, [1, -1, 1])
        return tf.where(row, tf.constant(float("nan"), tensor.dtype), tensor)

    return tf.nest.map_structure(lambda t: None if t is None else poison(t), result)
