"""See the graph: op counts, trace time, step time and memory of static vs dynamic unrolling.

The TF1 notebook drew its graph with a `show_graph` helper and made two claims: a statically unrolled
graph bloats as the number of steps grows, and its backward pass keeps every step's tensors in memory.
This module puts numbers on those claims, the TF2 way:

- `graph_stats(layer_or_model, input_shape, training=False)`: ops in the traced graph, the most frequent
  op types, trace time, first-call time and peak memory of one call, as a `GraphStats`.
- `compare_unrolling(cell, steps=...)`: those figures for `StaticUnroll` and `DynamicUnroll` at each T,
  as an `UnrollComparison` (a printable table, `to_markdown()`, `plot(path)`).
- `export_graph(layer_or_model, logdir, input_shape)`: writes the traced graph for TensorBoard
  (`tensorboard --logdir <logdir>`, tab "Graphs"): what `show_graph` showed.
- `show_graph(layer_or_model, input_shape)`: the op-count table and the TensorBoard hint, as HTML in
  Jupyter and as text elsewhere.

How ops are counted: every node of the traced `tf.function`'s graph, plus every node of every function in
its library, each library function counted once however often it is called. A `tf.while_loop` keeps its
`cond` and `body` as library functions, so `DynamicUnroll`'s count holds the step once, whatever T is; a
static unroll writes the step T times into the main graph, so its count grows linearly with T.

An op is not a unit of work. Where `DynamicUnroll` runs a fused kernel (`BasicRNNCell`/`SimpleRNNCell`,
LSTM/GRU cells), its graph holds the kernel's forward and backward passes as XLA-compiled functions
(`compiled_ops` counts the ops in them and in the functions they call): hundreds of ops, more than a short
static unroll, that XLA turns into one compiled call per pass, and that do not change with T.
`compare_unrolling` therefore also measures TF1's plain while loop (`DynamicUnroll` with the generic step,
under `keras_unroll.testing.generic_only()`: what `tf.compat.v1.nn.dynamic_rnn` built).

Peak memory: TensorFlow reports it per device with `tf.config.experimental.get_memory_info`. TensorFlow's
default CPU allocator does not count allocations (it reports only some large ones), so on CPU the peak is
read only when the environment variable `TF_CPU_ALLOCATOR_USE_BFC=true` was set before TensorFlow ran its
first op (`keras-unroll demo` does it for you); otherwise `peak_bytes` is `None` and the tables say why.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import html
import numbers
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import plan
from keras_unroll._format import format_bytes, format_seconds, plural, table
from keras_unroll.cell import BasicRNNCell, check_bool
from keras_unroll.layers import DynamicUnroll, StaticUnroll
from keras_unroll.testing import generic_only, use_tuning
from keras_unroll.types import Cell, Shape

__all__ = [
    "GraphStats",
    "GraphView",
    "UnrollComparison",
    "UnrollRow",
    "compare_unrolling",
    "export_graph",
    "graph_stats",
    "show_graph",
]

_TOP_OP_TYPES = 8


# ------------------------------------------------------------------------------------------ checks
def _check_layer(layer_or_model: Any, name: str = "layer_or_model") -> keras.layers.Layer:
    if not isinstance(layer_or_model, keras.layers.Layer):
        raise TypeError(
            f"`{name}` must be a Keras layer or model (e.g. `StaticUnroll(...)` or a `keras.Sequential`). "
            f"Received: {name}={layer_or_model!r} of type {type(layer_or_model).__name__}"
        )
    return layer_or_model


def _check_input_shape(input_shape: Any) -> Tuple[Optional[int], ...]:
    message = (
        "`input_shape` must be the full input shape including the batch axis, a tuple of positive ints "
        "(or None for an unknown axis), e.g. (32, 20, 1). Received: input_shape={!r}"
    )
    if isinstance(input_shape, tf.TensorShape):
        input_shape = input_shape.as_list()
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise TypeError(message.format(input_shape))
    shape: List[Optional[int]] = []
    for dim in input_shape:
        if dim is None:
            shape.append(None)
        elif isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise ValueError(message.format(input_shape))
        else:
            shape.append(int(dim))
    return tuple(shape)


# ----------------------------------------------------------------------------------- the traced fn
def _ensure_built(layer: keras.layers.Layer, shape: Tuple[Optional[int], ...]) -> None:
    """Builds the layer outside any `tf.function`, so its weights are created eagerly."""
    if not layer.built:
        layer.build(shape)


def _traced_function(layer: keras.layers.Layer, training: bool) -> tf.types.experimental.PolymorphicFunction:
    """A fresh `tf.function`: the forward call, or forward + backward (gradients wrt trainable weights)."""
    if not training:

        def forward(x: tf.Tensor) -> Any:
            return layer(x, training=False)

        return tf.function(forward, autograph=False)

    def train_step(x: tf.Tensor) -> Any:
        with tf.GradientTape() as tape:
            outputs = layer(x, training=True)
            loss = tf.add_n([tf.reduce_sum(tf.square(y)) for y in tf.nest.flatten(outputs)])
        weights = layer.trainable_weights
        if not weights:
            return loss
        return [loss, *tape.gradient(loss, weights)]

    return tf.function(train_step, autograph=False)


def _count_ops(graph: tf.Graph) -> collections.Counter[str]:
    """Op types in the graph and in every function of its library (each function once)."""
    graph_def = graph.as_graph_def()
    counts = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def _called_functions(function_def: Any) -> Iterator[str]:
    """Names of the library functions a function's nodes call (a `While`'s body and cond, a call's `f`)."""
    for node in function_def.node_def:
        for value in node.attr.values():
            if value.func.name:
                yield value.func.name
            for item in value.list.func:
                yield item.name


def _count_compiled_ops(graph: tf.Graph) -> int:
    """Ops in the library functions XLA compiles (`jit_compile=True`) and in every function they call."""
    functions = {function.signature.name: function for function in graph.as_graph_def().library.function}
    pending = [name for name, f in functions.items() if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    compiled = set()
    while pending:
        name = pending.pop()
        if name in compiled or name not in functions:
            continue
        compiled.add(name)
        pending.extend(_called_functions(functions[name]))
    return sum(len(functions[name].node_def) for name in compiled)


def _memory_device() -> str:
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def _cpu_allocator_counts() -> bool:
    """Whether TensorFlow's CPU allocator counts every allocation: the BFC allocator, chosen by
    `TF_CPU_ALLOCATOR_USE_BFC=true` (or 1) in the environment before TensorFlow's first op. The default
    allocator reports only some large allocations, a peak that would leave out most of a step's tensors."""
    return os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").strip().lower() in ("true", "1")


def _reset_peak(device: str) -> bool:
    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, RuntimeError, tf.errors.OpError):
        return False
    return True


def _memory_info(device: str) -> Optional[Dict[str, int]]:
    """The device's `{"current": ..., "peak": ...}` bytes, or None where they would not count every tensor."""
    if device.startswith("CPU") and not _cpu_allocator_counts():
        return None  # the default CPU allocator's figure would count only some large tensors
    try:
        info = tf.config.experimental.get_memory_info(device)
        return {"current": int(info["current"]), "peak": int(info["peak"])}
    except (ValueError, RuntimeError, KeyError, tf.errors.OpError):
        return None


def _example_input(shape: Tuple[Optional[int], ...], dtype: Any) -> tf.Tensor:
    concrete = [1 if dim is None else dim for dim in shape]
    values = np.random.default_rng(0).standard_normal(concrete).astype(np.dtype(dtype))
    return tf.constant(values)


def _materialize(results: Any) -> None:
    for value in tf.nest.flatten(results):
        if hasattr(value, "numpy"):
            value.numpy()


@dataclasses.dataclass(frozen=True)
class GraphStats:
    """What one traced call of a layer or model costs; returned by `graph_stats`.

    Attributes:
        num_ops: Number of ops in the traced graph, including the ops inside nested functions (a while
            loop's body and condition), each function counted once.
        op_types: The most frequent op types, `((type, count), ...)`, most frequent first.
        trace_seconds: Time to trace the `tf.function` (Python runs the layer's `call` once).
        first_call_seconds: Time of the first call: graph optimization (Grappler), XLA compilation where the
            layer compiles its loop (`jit_compile`), plus one run.
        peak_bytes: The memory a call allocates at its peak on the device (`GPU:0`, else `CPU:0`): the
            device's peak during a call after the first (the first compiles) minus what was in use before
            it (weights, the input, anything else alive), so the tensors the call keeps and its
            temporaries. `None` where the runtime does not count every allocation (on CPU, unless
            `TF_CPU_ALLOCATOR_USE_BFC=true` was set before TensorFlow started).
        compiled_ops: How many of `num_ops` are in XLA-compiled functions (a fused kernel's passes, and the
            functions they call): XLA runs each such function as one compiled call. 0 for a plain graph.
    """

    num_ops: int
    op_types: Tuple[Tuple[str, int], ...]
    trace_seconds: float
    first_call_seconds: float
    peak_bytes: Optional[int]
    compiled_ops: int = 0


def _trace(
    layer: keras.layers.Layer, shape: Tuple[Optional[int], ...], training: bool, repeats: int = 0, run: bool = True
) -> Tuple[GraphStats, List[float], Any]:
    """Traces, counts, runs once (the first call: graph optimization, XLA compilation), once more after
    resetting the device's peak (the memory of a step), then `repeats` more times (step times).

    With `run=False` only the op counts and the trace time are measured (no graph optimization, no XLA
    compilation): `first_call_seconds` is then 0.0 and `peak_bytes` None.
    """
    _ensure_built(layer, shape)
    dtype = getattr(layer, "compute_dtype", None) or "float32"
    function = _traced_function(layer, training)
    trials_before = _trial_seconds(layer)
    start = time.perf_counter()
    concrete = function.get_concrete_function(tf.TensorSpec(shape, dtype))
    # The planner's timed trial (`plan.Tuning.timed_trial`) runs inside a first trace; it is not the trace.
    trace_seconds = time.perf_counter() - start - (_trial_seconds(layer) - trials_before)
    counts = _count_ops(concrete.graph)
    compiled_ops = _count_compiled_ops(concrete.graph)
    if not run:
        stats = GraphStats(
            sum(counts.values()), tuple(counts.most_common(_TOP_OP_TYPES)), trace_seconds, 0.0, None, compiled_ops
        )
        return stats, [], concrete
    x = _example_input(shape, dtype)
    device = _memory_device()
    start = time.perf_counter()
    _materialize(concrete(x))
    first_call_seconds = time.perf_counter() - start
    # A later call: what each call needs, without compilation; above what was in use before it.
    before = _memory_info(device) if _reset_peak(device) else None
    _materialize(concrete(x))
    after = _memory_info(device) if before is not None else None
    peak = after["peak"] - before["current"] if after is not None and before is not None and after["peak"] > 0 else None
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _materialize(concrete(x))
        step_times.append(time.perf_counter() - start)
    stats = GraphStats(
        num_ops=sum(counts.values()),
        op_types=tuple(counts.most_common(_TOP_OP_TYPES)),
        trace_seconds=trace_seconds,
        first_call_seconds=first_call_seconds,
        peak_bytes=peak,
        compiled_ops=compiled_ops,
    )
    return stats, step_times, concrete


def _trial_seconds(layer: keras.layers.Layer) -> float:
    """Seconds the planner's timed trials of `layer`'s cell (or its sublayers' cells) have taken so far."""
    cells = [sub.cell for sub in getattr(layer, "_flatten_layers", lambda: [layer])() if hasattr(sub, "cell")]
    return float(sum(row["trial_seconds"] for cell in cells for row in plan.trials(cell)))


def graph_stats(layer_or_model: keras.layers.Layer, input_shape: Shape, training: bool = False) -> GraphStats:
    """Traces a layer or model once and reports the size of its graph, its trace time and its memory.

    The layer is called inside a fresh `tf.function`, traced for `tf.TensorSpec(input_shape)`: the forward
    call, or with `training=True` the forward call in a `tf.GradientTape` plus the gradients of
    `sum(outputs ** 2)` with respect to the trainable weights (what a training step computes, without the
    optimizer). The traced function is then run on random inputs: once to time its first call, once more
    to read the device's peak memory.

    Ops are counted in the main graph and in every function of its library (a while loop's `cond` and
    `body`, the gradient's loop), each function once: `StaticUnroll`'s count grows with T, and
    `DynamicUnroll`'s does not.

    Args:
        layer_or_model: A Keras layer or model. An unbuilt layer is built for `input_shape`.
        input_shape: The full input shape including the batch axis, e.g. `(32, 20, 1)`. `None` axes
            are traced as unknown and run with size 1.
        training: Boolean. `False`: the forward call (inference). `True`: forward + backward.
            Default: `False`.

    Returns:
        A `GraphStats` (`num_ops`, `op_types`, `trace_seconds`, `first_call_seconds`, `peak_bytes`,
        `compiled_ops`).

    Raises:
        TypeError: `layer_or_model` is not a Keras layer, or `input_shape` is not a tuple.
        ValueError: `input_shape` holds a non-positive or non-integer axis.

    Example:

    >>> import keras_unroll as ku
    >>> from keras_unroll.inspect import graph_stats
    >>> small = graph_stats(ku.StaticUnroll(ku.BasicRNNCell(4)), (2, 10, 3)).num_ops
    >>> large = graph_stats(ku.StaticUnroll(ku.BasicRNNCell(4)), (2, 20, 3)).num_ops
    >>> large > small                                     # one copy of the step per time step
    True
    >>> graph_stats(ku.DynamicUnroll(4), (2, 10, 3)).num_ops == graph_stats(ku.DynamicUnroll(4), (2, 20, 3)).num_ops
    True
    """
    layer = _check_layer(layer_or_model)
    shape = _check_input_shape(input_shape)
    stats, _, _ = _trace(layer, shape, check_bool(training, "training"))
    return stats


# --------------------------------------------------------------------------------- compare_unrolling
def _cell_factory(cell: Any) -> Callable[[], Any]:
    """A function returning a fresh cell each call, from a cell, a factory, a config dict or an int."""
    if isinstance(cell, bool):
        raise TypeError(_CELL_MESSAGE.format(cell=cell))
    if isinstance(cell, numbers.Integral):
        if cell <= 0:
            raise ValueError(_CELL_MESSAGE.format(cell=cell))
        units = int(cell)
        return lambda: BasicRNNCell(units)
    if isinstance(cell, keras.layers.Layer):
        if getattr(cell, "state_size", None) is None:
            raise TypeError(_CELL_MESSAGE.format(cell=cell))
        config, cls = cell.get_config(), type(cell)
        return lambda: cls.from_config(dict(config))
    if isinstance(cell, dict):
        if "class_name" in cell:
            return lambda: keras.saving.deserialize_keras_object(dict(cell))
        return lambda: BasicRNNCell.from_config(dict(cell))
    if callable(cell):
        factory: Callable[[], Any] = cell
        return factory
    raise TypeError(_CELL_MESSAGE.format(cell=cell))


_CELL_MESSAGE = (
    "`cell` must be a Keras RNN cell (cloned for each layer with `from_config(get_config())`), a function "
    "returning a fresh cell, a cell config dict, or a positive int (a BasicRNNCell of that many units). "
    "Received: cell={cell!r}"
)


def _check_steps(steps: Any) -> Tuple[int, ...]:
    message = "`steps` must be a non-empty sequence of positive ints (the sequence lengths T). Received: steps={!r}"
    if isinstance(steps, (str, bytes)) or not isinstance(steps, (tuple, list, range)) or not steps:
        raise TypeError(message.format(steps))
    for value in steps:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(message.format(steps))
    return tuple(int(value) for value in steps)


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class UnrollRow:
    """One layer at one sequence length T; a row of `UnrollComparison`.

    Attributes:
        layer: `"StaticUnroll"` or `"DynamicUnroll"`.
        steps: The sequence length T.
        forward_ops: Ops in the traced forward call.
        training_ops: Ops in the traced forward + backward step.
        trace_seconds: Time to trace the training step.
        first_call_seconds: Time of the training step's first call (graph optimization, XLA compilation,
            one run).
        step_seconds: Median time of a training step (forward + backward, no optimizer) after the first.
        peak_bytes: What a training step after the first allocates at its peak (`GraphStats.peak_bytes`:
            activations kept for the backward pass, gradients, temporaries), or `None` where the runtime
            does not count every allocation (the table's notes say why).
        loop: What the graph holds (`LOOPS` explains each): `"unrolled"` (StaticUnroll: the step once per
            time step), `"while loop"` (TF1's `dynamic_rnn`: the step once, run T times; `DynamicUnroll`
            with the generic step) or `"fused (XLA)"` (`DynamicUnroll`'s fused kernel, XLA-compiled).
        compiled_ops: How many of `training_ops` are in XLA-compiled functions (`GraphStats.compiled_ops`).
    """

    layer: str
    steps: int
    forward_ops: int
    training_ops: int
    trace_seconds: float
    first_call_seconds: float
    step_seconds: float
    peak_bytes: Optional[int]
    loop: str = "unrolled"
    compiled_ops: int = 0


#: What a graph op is in each kind of loop; printed under every comparison table.
LOOPS = {
    "unrolled": "the step's ops written once per time step, so the graph grows with T (StaticUnroll)",
    "while loop": (
        "TF1's dynamic_rnn: the step's ops once, in a tf.while_loop run T times (DynamicUnroll with the generic "
        "step, keras_unroll.testing.generic_only())"
    ),
    "fused (XLA)": (
        "DynamicUnroll's default for this cell: a while loop over a fused kernel whose forward and backward "
        "passes are XLA-compiled functions (column 'compiled'); XLA runs each as one call, so this graph has "
        "more ops than the plain while loop, not more work, and its count does not change with T either"
    ),
}


# Printed under a table whose peak memory reads "n/a" (the CPU allocator counts nothing by default).
PEAK_MEMORY_HINT = (
    "peak memory n/a: TensorFlow's default CPU allocator does not count allocations (it reports only some "
    "large ones). To measure it, run in a fresh process with the environment variable "
    "TF_CPU_ALLOCATOR_USE_BFC=true set before TensorFlow starts, e.g. "
    "`TF_CPU_ALLOCATOR_USE_BFC=true python your_script.py`."
)


_COLUMNS = (
    "layer", "loop", "T", "forward ops", "training ops", "compiled", "trace", "first call", "step", "peak memory"
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class UnrollComparison:
    """The result of `compare_unrolling`: one `UnrollRow` per layer and sequence length.

    Iterate it (or read `rows`) for the numbers; `str()` is a text table, `to_markdown()` a Markdown
    table, `to_dicts()` a list of plain dicts, and `plot(path)` saves a PNG (needs matplotlib, the
    `plot` extra: `pip install "keras-unroll[plot]"`).

    Attributes:
        rows: The rows at each T, in increasing T: `StaticUnroll`, then (unless `compare_unrolling(...,
            tf1_loop=False)`) `DynamicUnroll` with the generic step, then `DynamicUnroll` as planned.
        batch: The batch size measured.
        features: The number of input features.
        units: The cell's output size.
    """

    rows: Tuple[UnrollRow, ...]
    batch: int
    features: int
    units: int

    def __iter__(self) -> Iterator[UnrollRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> List[Dict[str, Any]]:
        """The rows as plain dicts (e.g. for `pandas.DataFrame(comparison.to_dicts())`)."""
        return [dataclasses.asdict(row) for row in self.rows]

    def _cells(self) -> List[Tuple[str, ...]]:
        return [
            (
                row.layer,
                row.loop,
                str(row.steps),
                str(row.forward_ops),
                str(row.training_ops),
                str(row.compiled_ops),
                format_seconds(row.trace_seconds),
                format_seconds(row.first_call_seconds),
                format_seconds(row.step_seconds),
                format_bytes(row.peak_bytes),
            )
            for row in self.rows
        ]

    def _title(self) -> str:
        return (
            f"Static vs dynamic unrolling (batch {self.batch}, {plural(self.features, 'feature')}, "
            f"{plural(self.units, 'unit')}; ops of the forward call and of a training step, of which "
            "'compiled' in XLA-compiled functions; trace, first call, step time and peak memory of a training step, "
            "the memory counted above what was in use before the step)"
        )

    def notes(self) -> List[str]:
        """The lines printed under the table: what a graph op is in each loop shown, and why memory is n/a."""
        shown = [loop for loop in LOOPS if any(row.loop == loop for row in self.rows)]
        lines = [f"{loop}: {LOOPS[loop]}." for loop in shown]
        if any(row.peak_bytes is None for row in self.rows):
            lines.append(PEAK_MEMORY_HINT)
        return lines

    def __str__(self) -> str:
        return "\n".join([self._title(), table(_COLUMNS, self._cells(), left=2), *self.notes()])

    def to_markdown(self) -> str:
        """The table in Markdown (GitHub flavour), numbers right-aligned, then `notes()` as a list."""
        markdown = table(_COLUMNS, self._cells(), left=2, style="markdown")
        return "\n".join([markdown, "", *(f"- {note}" for note in self.notes())])

    def _repr_html_(self) -> str:
        notes = "".join(f"<p>{html.escape(note)}</p>" for note in self.notes())
        return f"<p>{html.escape(self._title())}</p>{table(_COLUMNS, self._cells(), left=2, style='html')}{notes}"

    def plot(self, path: Union[str, os.PathLike[str]]) -> str:
        """Draws ops, trace time, step time and peak memory against T (log axes) and saves a PNG.

        Args:
            path: Where to write the PNG. Its folder must exist.

        Returns:
            The path written, as a string.

        Raises:
            ImportError: matplotlib is not installed (install the `plot` extra).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "UnrollComparison.plot needs matplotlib. Install it with `pip install matplotlib` "
                '(or `pip install "keras-unroll[plot]"`).'
            ) from error
        figure = Figure(figsize=(10, 7.5), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(2, 2)
        for layer, loop in dict.fromkeys((row.layer, row.loop) for row in self.rows):
            rows = [row for row in self.rows if (row.layer, row.loop) == (layer, loop)]
            _plot_variant(axes, rows, f"{layer}, {loop}", _PLOT_COLORS.get(loop))
        all_steps = sorted({row.steps for row in self.rows})
        for axis, (title, ylabel) in zip(axes.flat, _PLOT_PANELS):
            _style_panel(axis, title, ylabel, all_steps)
        if not axes[1, 1].has_data():
            axes[1, 1].text(
                0.5,
                0.5,
                "not measured: TensorFlow's default CPU allocator\ndoes not count allocations "
                "(set TF_CPU_ALLOCATOR_USE_BFC=true\nbefore TensorFlow starts)",
                ha="center",
                va="center",
                transform=axes[1, 1].transAxes,
            )
        figure.suptitle(
            f"StaticUnroll vs DynamicUnroll (TF1's while loop, the fused kernel): batch {self.batch}, "
            f"{plural(self.features, 'feature')}, "
            f"{plural(self.units, 'unit')}"
        )
        path = os.fspath(path)
        figure.savefig(path, dpi=80)
        return path


_PLOT_COLORS = {"unrolled": "tab:red", "while loop": "tab:green", "fused (XLA)": "tab:blue"}
# The 2 x 2 panels of `UnrollComparison.plot`, row by row: (title, y label).
_PLOT_PANELS = (
    ("ops in the traced graph (solid: training step, dashed: forward)", "ops"),
    ("trace + first call of a training step", "seconds"),
    ("training step (forward + backward)", "milliseconds"),
    ("peak memory a training step allocates", "MB"),
)


def _plot_variant(axes: Any, rows: List[UnrollRow], name: str, color: Optional[str]) -> None:
    """Draws one layer and loop's rows on the four panels: ops (training, forward, and outside XLA when some
    are compiled), trace + first call, step time, and peak memory where it was measured."""
    steps = [row.steps for row in rows]
    axes[0, 0].plot(steps, [r.training_ops for r in rows], "o-", color=color, label=name)
    axes[0, 0].plot(steps, [r.forward_ops for r in rows], "s--", color=color)
    if any(r.compiled_ops for r in rows):
        outside = [r.training_ops - r.compiled_ops for r in rows]
        axes[0, 0].plot(steps, outside, "^:", color=color, label=f"{name}: training ops outside XLA")
    axes[0, 1].plot(steps, [r.trace_seconds + r.first_call_seconds for r in rows], "o-", color=color, label=name)
    axes[1, 0].plot(steps, [r.step_seconds * 1e3 for r in rows], "o-", color=color, label=name)
    measured = [(r.steps, r.peak_bytes / 1e6) for r in rows if r.peak_bytes]
    if measured:
        axes[1, 1].plot(*zip(*measured), "o-", color=color, label=name)


def _style_panel(axis: Any, title: str, ylabel: str, all_steps: List[int]) -> None:
    """Titles and labels one panel; log axes, T ticks at the measured lengths, and a legend if it has data."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_title(title)
    axis.set_xlabel("time steps T")
    axis.set_ylabel(ylabel)
    axis.set_xscale("log")
    axis.set_xticks(all_steps, [str(step) for step in all_steps])
    axis.xaxis.set_minor_formatter(NullFormatter())
    if axis.has_data():
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.legend(fontsize="small")
    axis.grid(True, which="both", alpha=0.3)


def _compiled_tier() -> Any:
    """Plans `DynamicUnroll` in its compiled tier at every T (`Tuning.compile_min_steps=0`)."""
    return use_tuning(dataclasses.replace(plan.tuning(), compile_min_steps=0))


def compare_unrolling(
    cell: Union[Cell, Callable[[], keras.layers.Layer], Dict[str, Any]] = 32,
    steps: Sequence[int] = (2, 10, 100, 1000),
    batch: int = 32,
    features: int = 8,
    repeats: int = 5,
    progress: Optional[Callable[[str], None]] = None,
    verbose: Union[int, str] = "auto",
    tf1_loop: bool = True,
) -> UnrollComparison:
    """Measures `StaticUnroll` and `DynamicUnroll` side by side at each sequence length T.

    At each T each layer (with its own fresh copy of the cell) is traced, forward and for a training step, and
    its training step run `2 + repeats` times. Three kinds of graph (`UnrollRow.loop`): `"unrolled"`
    (`StaticUnroll`), TF1's `"while loop"`, and `DynamicUnroll` as planned in its compiled tier (`"fused (XLA)"`
    for a cell with a fused kernel), compiled at every T. A static unroll at T=1000 takes 5-15 s and hundreds of
    MB. What is measured, and how: `docs/guide.md`, "What `compare_unrolling` measures".

    Args:
        cell: The cell to unroll: a Keras RNN cell (each layer gets a copy made with
            `cell.__class__.from_config(cell.get_config())`, so its weights are not shared), a function
            returning a fresh cell, a cell config dict (`keras.saving.serialize_keras_object(cell)`, or a
            `BasicRNNCell` config), or a positive int (a `BasicRNNCell` of that many units). Default: 32.
        steps: The sequence lengths T to measure. Default: `(2, 10, 100, 1000)`.
        batch: Batch size. Default: 32.
        features: Input features per step. Default: 8.
        repeats: Training steps timed after the first call (the median is reported). Default: 5.
        progress: Optional function called with a short message before each measurement (e.g. `print`).
        verbose: `1` shows a progress bar (`keras.utils.Progbar`, one tick per layer and T), `0` none.
            Default: `"auto"`, a bar when standard output is a terminal.
        tf1_loop: Boolean, whether to measure TF1's plain while loop too (`DynamicUnroll` under
            `keras_unroll.testing.generic_only()`). Default: `True`.

    Returns:
        An `UnrollComparison`: rows of `UnrollRow` (ops forward and training, of which XLA-compiled, trace
        time, first-call time, step time, peak memory), printable as a table, with `to_markdown()` and
        `plot(path)`.

    Raises:
        TypeError, ValueError: for a bad `cell`, `steps`, `batch`, `features` or `repeats`; the message
            echoes the value received.

    Example:

    >>> import keras_unroll as ku
    >>> from keras_unroll.inspect import compare_unrolling
    >>> comparison = compare_unrolling(ku.BasicRNNCell(8), steps=(2, 20), batch=4, features=3, repeats=1)
    >>> [(row.layer, row.loop, row.steps) for row in comparison][:3]
    [('StaticUnroll', 'unrolled', 2), ('DynamicUnroll', 'while loop', 2), ('DynamicUnroll', 'fused (XLA)', 2)]
    >>> # print(comparison); comparison.plot("compare_unrolling.png")
    """
    factory = _cell_factory(cell)
    steps = _check_steps(steps)
    batch = _check_positive(batch, "batch")
    features = _check_positive(features, "features")
    verbose = _check_repeats_and_verbose(repeats, verbose)
    tf1_loop = check_bool(tf1_loop, "tf1_loop")
    variants = [(StaticUnroll, False), *([(DynamicUnroll, True)] if tf1_loop else []), (DynamicUnroll, False)]
    total = len(variants) * len(steps)
    bar = keras.utils.Progbar(total, unit_name="measurement", stateful_metrics=["T"]) if verbose else None
    rows = []
    units = 0  # `steps` is not empty: set by the first row
    for length in sorted(steps):
        for layer_class, generic in variants:
            if progress is not None:
                progress(f"{layer_class.__name__}{' (TF1 while loop)' if generic else ''} at T={length}")
            row, units = _measure_unrolling(factory, cell, layer_class, generic, (batch, length, features), repeats)
            rows.append(row)
            if bar is not None:
                bar.update(len(rows), values=[("T", length)])
    return UnrollComparison(rows=tuple(rows), batch=batch, features=features, units=units)


def _check_repeats_and_verbose(repeats: Any, verbose: Any) -> int:
    """Checks `repeats` (a positive integer) and `verbose` (0, 1 or "auto"); returns `verbose` as 0 or 1,
    "auto" being 1 when standard output is a terminal."""
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer. Received: repeats={repeats!r}")
    if verbose == "auto":
        verbose = 1 if getattr(sys.stdout, "isatty", lambda: False)() else 0
    if verbose not in (0, 1) or isinstance(verbose, bool):
        raise ValueError(f'`verbose` must be 0, 1 or "auto". Received: verbose={verbose!r}')
    return int(verbose)


def _measure_unrolling(
    factory: Callable[[], Any],
    cell: Any,
    layer_class: type,
    generic: bool,
    shape: Tuple[int, int, int],
    repeats: int,
) -> Tuple[UnrollRow, int]:
    """One row of `compare_unrolling`: `layer_class` around a fresh cell, its forward call traced and its
    training step traced and run (under `generic_only()` when `generic`, else in the compiled tier); also
    returns the layer's output size."""
    fresh = factory()
    if not isinstance(fresh, keras.layers.Layer) or getattr(fresh, "state_size", None) is None:
        raise TypeError(_CELL_MESSAGE.format(cell=cell) + f" (the factory returned {fresh!r})")
    layer = layer_class(fresh)
    with generic_only() if generic else _compiled_tier():
        forward, _, _ = _trace(layer, shape, training=False, run=False)  # only its op count is reported
        training, times, _ = _trace(layer, shape, training=True, repeats=int(repeats))
    units = layer.compute_output_shape(shape)[-1]
    if layer_class is StaticUnroll:
        loop = "unrolled"
    else:
        loop = "fused (XLA)" if training.compiled_ops else "while loop"
    row = UnrollRow(
        layer=layer_class.__name__,
        steps=shape[1],
        forward_ops=forward.num_ops,
        training_ops=training.num_ops,
        trace_seconds=training.trace_seconds,
        first_call_seconds=training.first_call_seconds,
        step_seconds=statistics.median(times),
        peak_bytes=training.peak_bytes,
        loop=loop,
        compiled_ops=training.compiled_ops,
    )
    return row, int(units)


# ------------------------------------------------------------------------------ TensorBoard graph
def export_graph(
    layer_or_model: keras.layers.Layer, logdir: Union[str, os.PathLike[str]], input_shape: Shape, training: bool = False
) -> str:
    """Writes the traced graph of a layer or model for TensorBoard: TF2's way to see what `show_graph` showed.

    The layer is called once in a fresh `tf.function` between `tf.summary.trace_on(graph=True)` and
    `tf.summary.trace_export`, which records the graph as TensorFlow ran it (tagged with the layer's name);
    the traced graph itself (with its while-loop functions) is written too, as the event's `graph_def`,
    which TensorBoard shows first. Then run `tensorboard --logdir <logdir>` and open the "Graphs" tab.

    Args:
        layer_or_model: A Keras layer or model. An unbuilt layer is built for `input_shape`.
        logdir: The folder for the event file; created if missing.
        input_shape: The full input shape including the batch axis, e.g. `(32, 20, 1)`.
        training: Boolean. `True` exports the forward + backward step instead of the forward call.
            Default: `False`.

    Returns:
        The path of the event file written.

    Raises:
        TypeError, ValueError: as `graph_stats`.

    Example:

    ```python
    path = export_graph(ku.StaticUnroll(ku.BasicRNNCell(5)), "logs/static", (4, 2, 3))
    # then: tensorboard --logdir logs
    ```
    """
    layer = _check_layer(layer_or_model)
    shape = _check_input_shape(input_shape)
    training = check_bool(training, "training")
    _ensure_built(layer, shape)
    logdir = os.fspath(logdir)
    os.makedirs(logdir, exist_ok=True)
    before = set(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    function = _traced_function(layer, training)
    writer = tf.summary.create_file_writer(logdir)
    dtype = getattr(layer, "compute_dtype", None) or "float32"
    tf.summary.trace_on(graph=True, profiler=False)
    try:
        _materialize(function(_example_input(shape, dtype)))
        with writer.as_default():
            tf.summary.trace_export(name=f"{layer.name}_{'training' if training else 'forward'}", step=0)
            tf.summary.graph(function.get_concrete_function(tf.TensorSpec(shape, dtype)).graph)
    finally:
        tf.summary.trace_off()
        writer.flush()
        writer.close()
    written = sorted(set(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))) - before, key=os.path.getmtime)
    if not written:  # pragma: no cover - TensorFlow always writes one
        raise RuntimeError(f"TensorFlow wrote no event file in {logdir!r}.")
    return written[-1]


@dataclasses.dataclass(frozen=True)
class GraphView:
    """What `show_graph` returns: the op counts of a layer's graph, and where TensorBoard can show it.

    It prints as a text table and renders as an HTML table in Jupyter (`_repr_html_`).

    Attributes:
        name: The layer's or model's name.
        input_shape: The input shape traced.
        forward: `GraphStats` of the forward call.
        training: `GraphStats` of the forward + backward step.
        logdir: The folder holding the exported graph.
        event_file: The event file written there.
    """

    name: str
    input_shape: Tuple[Optional[int], ...]
    forward: GraphStats
    training: GraphStats
    logdir: str
    event_file: str

    @property
    def hint(self) -> str:
        return f"tensorboard --logdir {self.logdir}"

    def _rows(self) -> List[Tuple[str, str, str]]:
        forward, training = dict(self.forward.op_types), dict(self.training.op_types)
        types = list(forward) + [name for name in training if name not in forward]
        rows = [("all ops", str(self.forward.num_ops), str(self.training.num_ops))]
        rows += [(name, str(forward.get(name, "·")), str(training.get(name, "·"))) for name in types]
        rows.append(
            ("trace time", format_seconds(self.forward.trace_seconds), format_seconds(self.training.trace_seconds))
        )
        rows.append(("peak memory", format_bytes(self.forward.peak_bytes), format_bytes(self.training.peak_bytes)))
        return rows

    def __str__(self) -> str:
        lines = [
            f"Graph of {self.name} for input shape {self.input_shape}",
            table(("", "forward", "training"), self._rows()),
        ]
        if self.forward.peak_bytes is None or self.training.peak_bytes is None:
            lines.append(PEAK_MEMORY_HINT)
        lines.append(f"See the graph: {self.hint}  (tab 'Graphs'; TensorBoard is the `tensorboard` extra)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = table(("op type", "forward", "training"), self._rows(), style="html")
        untracked = None in (self.forward.peak_bytes, self.training.peak_bytes)
        memory_hint = f"<p>{html.escape(PEAK_MEMORY_HINT)}</p>" if untracked else ""
        return (
            f"<p>Graph of <b>{html.escape(self.name)}</b> for input shape {html.escape(str(self.input_shape))}</p>"
            f"{body}{memory_hint}"
            f'<p>See the graph: <code>{html.escape(self.hint)}</code> (tab "Graphs"), '
            "or in a notebook <code>%load_ext tensorboard</code> then "
            f"<code>%tensorboard --logdir {html.escape(self.logdir)}</code></p>"
        )


def show_graph(
    layer_or_model: keras.layers.Layer, input_shape: Shape, logdir: Optional[Union[str, os.PathLike[str]]] = None
) -> GraphView:
    """The notebook's `show_graph`, for TF2: op counts of a layer's graph, and the graph for TensorBoard.

    Traces the forward call and the training step (`graph_stats`), exports the forward graph to `logdir`
    (`export_graph`) and returns a `GraphView`: a table of the most frequent op types, shown as HTML in
    Jupyter and as text by `print`, with the command that opens the graph in TensorBoard.

    Args:
        layer_or_model: A Keras layer or model. An unbuilt layer is built for `input_shape`.
        input_shape: The full input shape including the batch axis, e.g. `(4, 2, 3)`.
        logdir: Where to write the graph. Default: a new temporary folder.

    Returns:
        A `GraphView`.

    Example:

    ```python
    ku.inspect.show_graph(ku.StaticUnroll(ku.BasicRNNCell(5)), (4, 2, 3))  # last line of a notebook cell
    print(ku.inspect.show_graph(ku.DynamicUnroll(5), (4, 2, 3)))           # elsewhere
    ```
    """
    layer = _check_layer(layer_or_model)
    shape = _check_input_shape(input_shape)
    if logdir is None:
        logdir = tempfile.mkdtemp(prefix="keras_unroll_graph_")
    forward = graph_stats(layer, shape, training=False)
    training = graph_stats(layer, shape, training=True)
    event_file = export_graph(layer, logdir, shape)
    return GraphView(
        name=layer.name,
        input_shape=shape,
        forward=forward,
        training=training,
        logdir=os.fspath(logdir),
        event_file=event_file,
    )
