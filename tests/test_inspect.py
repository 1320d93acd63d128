"""keras_unroll.inspect: op counts that prove the notebook's claims, the comparison table, the TensorBoard graph."""

import dataclasses
import os
import shutil
import sys

import keras
import pytest
import tensorflow as tf

import keras_unroll as ku
from keras_unroll import inspect as ki
from keras_unroll.testing import tuning

LAYERS = [ku.StaticUnroll, ku.DynamicUnroll]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ops(layer_class, steps, training):
    return ki.graph_stats(layer_class(ku.BasicRNNCell(4)), (2, steps, 3), training=training).num_ops


# ------------------------------------------------------------------------------------ graph_stats
@pytest.mark.parametrize("training", [False, True], ids=["forward", "training"])
def test_static_op_count_grows_linearly_with_steps(training):
    chunk = tuning().static_chunk  # the setting in force
    counts = [_ops(ku.StaticUnroll, steps, training) for steps in (2 * chunk, 4 * chunk, 8 * chunk)]
    assert counts[0] < counts[1] < counts[2]
    # One copy of the step per time step and one input product per `chunk` steps: affine in T.
    assert counts[2] - counts[1] == 2 * (counts[1] - counts[0])


@pytest.mark.parametrize("jit_compile", [False, True], ids=["while_loop", "xla"])
@pytest.mark.parametrize("training", [False, True], ids=["forward", "training"])
def test_dynamic_op_count_does_not_depend_on_steps(training, jit_compile):
    """One while loop whatever T is (issue 11, bug 4: the plans once depended on T), compiled or not: the same
    ops at T = 3 and 300, about one step's worth plus the loop's machinery (a static unroll: ~17 000 at
    T = 1 000)."""
    counts = [
        ki.graph_stats(ku.DynamicUnroll(ku.BasicRNNCell(4), jit_compile=jit_compile), (2, steps, 3), training).num_ops
        for steps in (3, 300)
    ]
    assert len(set(counts)) == 1, f"ops at T = 3 and 300: {counts}"
    assert counts[0] < 2_000


def test_graph_stats_fields():
    layer = ku.StaticUnroll(ku.BasicRNNCell(4))
    stats = ki.graph_stats(layer, (2, 5, 3))
    assert isinstance(stats.num_ops, int) and stats.num_ops > 0
    counts = [count for _, count in stats.op_types]
    assert counts == sorted(counts, reverse=True) and sum(counts) <= stats.num_ops
    assert 0 < len(stats.op_types) <= 8 and all(isinstance(name, str) for name, _ in stats.op_types)
    assert stats.trace_seconds > 0 and stats.first_call_seconds > 0
    assert stats.peak_bytes is None or stats.peak_bytes > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.num_ops = 0
    assert layer.built  # built for the shape, outside the tf.function


class _SineCell(keras.layers.Layer):
    """A custom cell (the generic step) whose step chains `sines` sines: ops that live in the loop's body only."""

    def __init__(self, sines: int, **kwargs):
        super().__init__(**kwargs)
        self.sines = sines
        self.state_size = self.output_size = 3

    def call(self, inputs, states):
        h = inputs + states[0]
        for _ in range(self.sines):
            h = tf.sin(h)
        return h, [h]


def test_graph_stats_counts_ops_inside_while_loop_functions():
    """The dynamic graph's cell lives in the while loop's body function: its ops are counted. (A count of the
    outer graph alone finds no `Sin` and the same total whatever the cell does.)"""
    plain, sines = (ki.graph_stats(ku.DynamicUnroll(_SineCell(n), jit_compile=False), (2, 5, 3)) for n in (0, 20))
    assert "Sin" not in dict(plain.op_types)
    assert dict(sines.op_types).get("Sin", 0) >= 20, sines.op_types
    assert sines.num_ops - plain.num_ops >= 20, (plain.num_ops, sines.num_ops)


def _built(layer, shape=(2, 5, 3)):
    layer.build(shape)
    return layer


def test_graph_stats_on_a_model_with_unknown_batch():
    model = keras.Sequential([keras.Input((7, 2)), ku.DynamicUnroll(ku.BasicRNNCell(3)), keras.layers.Dense(1)])
    stats = ki.graph_stats(model, (None, 7, 2), training=True)
    assert stats.num_ops > 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(layer_or_model="not a layer", input_shape=(2, 3, 4)), TypeError, "layer_or_model='not a layer'"),
        (dict(input_shape=(2, 0, 4)), ValueError, r"Received: input_shape=\(2, 0, 4\)"),
        (dict(input_shape=7), TypeError, "Received: input_shape=7"),
        (dict(input_shape=(2, 3.5, 4)), ValueError, "positive ints"),
        (dict(input_shape=(2, 3, 4), training="yes"), TypeError, "training='yes'"),
    ],
)
def test_graph_stats_rejects_bad_arguments(kwargs, error, match):
    kwargs.setdefault("layer_or_model", ku.DynamicUnroll(4))
    with pytest.raises(error, match=match):
        ki.graph_stats(**kwargs)


# ------------------------------------------------------------------------------- compare_unrolling
@pytest.fixture(scope="module")
def comparison():
    keras.utils.set_random_seed(0)
    cell = ku.BasicRNNCell(4)
    result = ki.compare_unrolling(cell, steps=(8, 2, 4), batch=2, features=3, repeats=1)
    assert not cell.built, "each layer must get its own copy of the cell"
    return result


VARIANTS = [("StaticUnroll", "unrolled"), ("DynamicUnroll", "while loop"), ("DynamicUnroll", "fused (XLA)")]


def test_compare_unrolling_rows(comparison):
    assert [(row.layer, row.loop, row.steps) for row in comparison] == [
        (layer, loop, steps) for steps in (2, 4, 8) for layer, loop in VARIANTS
    ]
    assert (len(comparison), comparison.batch, comparison.features, comparison.units) == (9, 2, 3, 4)
    static, plain, fused = ([row for row in comparison if row.loop == loop] for _, loop in VARIANTS)
    assert static[0].forward_ops < static[1].forward_ops < static[2].forward_ops
    assert static[0].training_ops < static[1].training_ops < static[2].training_ops
    for dynamic in (plain, fused):  # both while loops: one graph whatever T is
        assert len({row.forward_ops for row in dynamic}) == 1 and len({row.training_ops for row in dynamic}) == 1
    # Only the fused kernel's passes are XLA-compiled; its count is what makes its graph the larger one.
    assert all(row.compiled_ops == 0 for row in static + plain)
    assert len({row.compiled_ops for row in fused}) == 1 and fused[0].compiled_ops > 0
    for row in comparison:
        assert row.training_ops > row.forward_ops and row.compiled_ops < row.training_ops
        assert row.trace_seconds > 0 and row.first_call_seconds > 0 and row.step_seconds > 0
    # The test run does not turn on the BFC allocator: no row reports the default allocator's partial peak.
    assert all(row.peak_bytes is None for row in comparison)


def test_compare_unrolling_without_the_tf1_loop():
    result = ki.compare_unrolling(ku.BasicRNNCell(3), steps=(2,), batch=2, features=1, repeats=1, tf1_loop=False)
    assert [(row.layer, row.loop) for row in result] == [VARIANTS[0], VARIANTS[2]]
    with pytest.raises(TypeError, match="Received: tf1_loop=1"):
        ki.compare_unrolling(3, steps=(2,), tf1_loop=1)


def test_compiled_ops_are_counted_in_the_generic_step_as_zero():
    fused = ki.graph_stats(ku.DynamicUnroll(ku.BasicRNNCell(4)), (2, 5, 3), training=True)
    with ku.testing.generic_only():
        plain = ki.graph_stats(ku.DynamicUnroll(ku.BasicRNNCell(4)), (2, 5, 3), training=True)
    assert 0 < fused.compiled_ops < fused.num_ops and plain.compiled_ops == 0


def test_compare_unrolling_table_markdown_and_dicts(comparison):
    text = str(comparison)
    lines = text.splitlines()
    assert "forward ops" in lines[1] and "training ops" in lines[1] and "peak memory" in lines[1]
    notes = comparison.notes()  # what an op is in each loop shown, then why memory is n/a
    assert [note.split(":")[0] for note in notes[:3]] == ["unrolled", "while loop", "fused (XLA)"]
    assert (ki.PEAK_MEMORY_HINT in notes) == any(row.peak_bytes is None for row in comparison)
    assert len(lines) == 3 + len(comparison) + len(notes) and lines[3 + len(comparison) :] == notes
    first = comparison.rows[0]
    assert lines[3].split()[:6] == [
        "StaticUnroll",
        "unrolled",
        "2",
        str(first.forward_ops),
        str(first.training_ops),
        "0",
    ]
    markdown = comparison.to_markdown().splitlines()
    assert markdown[0].startswith("| layer | loop | T |") and markdown[1].startswith("|:---|:---|---:|")
    assert len(markdown) == 3 + len(comparison) + len(notes)
    dicts = comparison.to_dicts()
    assert dicts[0]["layer"] == "StaticUnroll" and dicts[0]["steps"] == 2 and set(dicts[0]) >= {"peak_bytes"}
    assert "<table>" in comparison._repr_html_()


def test_compare_unrolling_plot_writes_png(comparison, tmp_path):
    path = comparison.plot(tmp_path / "compare.png")
    assert path == str(tmp_path / "compare.png")
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC


def test_plot_without_matplotlib_says_how_to_install(comparison, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install"):
        comparison.plot(tmp_path / "compare.png")


@pytest.mark.parametrize(
    "cell",
    [
        ku.BasicRNNCell(6),
        lambda: ku.BasicRNNCell(6),
        keras.saving.serialize_keras_object(ku.BasicRNNCell(6)),
        {"units": 6},
        6,
    ],
    ids=["cell", "factory", "serialized", "config", "int"],
)
def test_cell_forms_give_fresh_cells(cell):
    # Every form gives each layer its own new cell of 6 units: a given cell is copied, never built or shared.
    made = []
    if callable(cell) and not isinstance(cell, keras.layers.Layer):
        factory = cell
        cell = lambda: made.append(factory()) or made[-1]  # noqa: E731 -- counts the calls
    comparison = ki.compare_unrolling(cell, steps=(2,), batch=2, features=3, repeats=1, verbose=0, tf1_loop=False)
    assert comparison.units == 6 and [row.layer for row in comparison] == ["StaticUnroll", "DynamicUnroll"]
    if isinstance(cell, keras.layers.Layer):
        assert not cell.built
    if made:
        assert len(made) == 2 and made[0] is not made[1] and made[0].built and made[1].built


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(cell="lstm"), TypeError, "cell='lstm'"),
        (dict(cell=0), ValueError, "cell=0"),
        (dict(cell=keras.layers.Dense(3)), TypeError, "Received: cell=<Dense"),
        (dict(steps=()), TypeError, r"steps=\(\)"),
        (dict(steps=(2, 0)), ValueError, r"steps=\(2, 0\)"),
        (dict(steps=10), TypeError, "steps=10"),
        (dict(batch=0), ValueError, "batch=0"),
        (dict(features=2.5), ValueError, "features=2.5"),
        (dict(repeats=0), ValueError, "repeats=0"),
    ],
)
def test_compare_unrolling_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ki.compare_unrolling(**kwargs)


# ------------------------------------------------------------------------ export_graph, show_graph
def _events(path):
    return list(tf.compat.v1.train.summary_iterator(path))


@pytest.mark.parametrize("layer_class", LAYERS)
def test_export_graph_writes_an_event_file_with_the_graph(layer_class, tmp_path):
    path = ki.export_graph(layer_class(ku.BasicRNNCell(5)), tmp_path / "logs", (4, 2, 3))
    assert os.path.dirname(path) == str(tmp_path / "logs") and os.path.basename(path).startswith("events.out")
    graphs = [event.graph_def for event in _events(path) if event.graph_def]
    assert len(graphs) == 1
    graph_def = tf.compat.v1.GraphDef.FromString(graphs[0])
    ops = {node.op for node in graph_def.node} | {
        node.op for function in graph_def.library.function for node in function.node_def
    }
    assert "MatMul" in ops and "Tanh" in ops
    if layer_class is ku.DynamicUnroll:
        assert ops & {"While", "StatelessWhile"}


def _graph_def_ops(path):
    graph_def = tf.compat.v1.GraphDef.FromString(next(e.graph_def for e in _events(path) if e.graph_def))
    return len(graph_def.node) + sum(len(function.node_def) for function in graph_def.library.function)


@pytest.mark.parametrize("layer_class", LAYERS)
def test_export_graph_training_exports_the_training_step(layer_class, tmp_path):
    layer = layer_class(ku.BasicRNNCell(5))
    forward = ki.export_graph(layer, tmp_path / "forward", (4, 2, 3))
    training = ki.export_graph(layer, tmp_path / "training", (4, 2, 3), training=True)
    # The exported graphs are the ones graph_stats counts.
    assert _graph_def_ops(forward) == ki.graph_stats(layer, (4, 2, 3)).num_ops
    assert _graph_def_ops(training) == ki.graph_stats(layer, (4, 2, 3), training=True).num_ops
    assert _graph_def_ops(training) > _graph_def_ops(forward)


def test_show_graph_text_and_html(tmp_path):
    view = ki.show_graph(ku.DynamicUnroll(ku.BasicRNNCell(5)), (4, 2, 3), logdir=tmp_path)
    assert view.logdir == str(tmp_path) and os.path.exists(view.event_file)
    assert view.training.num_ops > view.forward.num_ops
    text = str(view)
    assert f"tensorboard --logdir {tmp_path}" in text
    assert "all ops  " in text and str(view.forward.num_ops) in text.splitlines()[3]
    html = view._repr_html_()
    assert html.count("<tr>") == len(view._rows()) + 1 and "tensorboard --logdir" in html


def test_show_graph_defaults_to_a_temporary_logdir():
    view = ki.show_graph(ku.StaticUnroll(3), (1, 2, 2))
    try:
        assert os.path.isdir(view.logdir) and os.path.exists(view.event_file)
        assert os.path.basename(view.logdir).startswith("keras_unroll_graph_")
    finally:
        shutil.rmtree(view.logdir, ignore_errors=True)


def test_export_graph_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="layer_or_model=42"):
        ki.export_graph(42, tmp_path, (1, 2, 3))
    with pytest.raises(ValueError, match="input_shape"):
        ki.export_graph(ku.DynamicUnroll(3), tmp_path, (1, -2, 3))


class SinOrCos(keras.layers.Layer):
    """No weights; `sin` when called for inference, `cos` in training: which call was traced shows in its ops."""

    def call(self, x, training=None):
        return tf.cos(x) if training else tf.sin(x)


def test_graph_stats_traces_the_layers_own_call_and_nothing_else():
    # Forward: the layer's call with training=False, nothing added, nothing lost; a training step: its call
    # with training=True and the loss (no weights: no gradients).
    forward = dict(ki.graph_stats(SinOrCos(), (2, 3)).op_types)
    assert forward == {"Placeholder": 1, "Sin": 1, "Identity": 1}
    training = dict(ki.graph_stats(SinOrCos(), (2, 3), training=True).op_types)
    assert training == {"Placeholder": 1, "Cos": 1, "Square": 1, "Const": 1, "Sum": 1, "Identity": 1}
