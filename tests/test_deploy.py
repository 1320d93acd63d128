"""Deployment: `model.export()` serves without keras_unroll, converts to TFLite with builtin ops only (float and
dynamic-range quantized) and to ONNX, and every result equals `model.predict` (issue #23).

Each model stands for one failure class the serving graph had (docs/deploy.md): `recompute`/`swap_memory`
(export itself failed: the custom gradient was saved), the generic step (`IdentityN` from the step reader's
custom gradient), `return_sequences` (TensorLists without a static element shape), Keras masks, `stateful`
(an assertion's `Identity`, `PlaceholderWithDefault`), an unknown time axis (the bucketing `Log`), and ONNX's
rejected `PlaceholderWithDefault` and XLA-compiled functions. The models are trained and exported once per
module; each target converts each of them.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from fork_server import run_forked

import keras_unroll as ku
from benchmarks import deploy

MODELS = {
    # generic step (tf1.LSTMCell with peepholes, projection, clipping) + return_sequences + mask + recompute
    "generic_sequences_mask_recompute": deploy.Case(
        "DynamicUnroll",
        "tf1.LSTMCell(peepholes,proj,clip)",
        (("return_sequences", True), ("recompute", "sqrt")),
        mask=True,
    ),
    # a list of cells (fused SimpleRNN + Keras LSTM) over an unknown time axis, with swap_memory and XLA asked for
    "list_open_time_swap": deploy.Case("DynamicUnroll", "list of cells", (("swap_memory", True),), open_time=True),
    "fused_jit_backwards": deploy.Case(
        "DynamicUnroll", "BasicRNNCell", (("jit_compile", True), ("go_backwards", True))
    ),
    "stateful": deploy.Case("DynamicUnroll", "tf1.MultiRNNCell", stateful=True),
    "static_dropout_wrapper": deploy.Case("StaticUnroll", "tf1.DropoutWrapper", (("jit_compile", True),)),
}
ONNX_MISSING = [name for name in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f"not installed: {', '.join(ONNX_MISSING)} (pip install 'keras-unroll[deploy]')"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model of MODELS trained one step, exported, with the predictions to compare with."""
    root = tmp_path_factory.mktemp("deploy")
    found = {}
    for key, case in MODELS.items():
        model, x = deploy.build_model(case)
        pairs = deploy.expected_outputs(model, x, case.stateful)
        export_dir = str(root / key)
        model.export(export_dir, verbose=False)
        found[key] = {"dir": export_dir, "pairs": pairs, "case": case}
    return found


def _assert_pairs(run, pairs, tolerance):
    for x, expected in pairs:
        got = np.asarray(run(x)).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=tolerance, rtol=2 * tolerance)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_serving_graph_is_a_deployment_graph(exported, key):
    """No gradient machinery, no XLA-compiled function, no placeholder default, no TensorList: converters
    reject each of them (the ops named in each class's error message)."""
    loaded = tf.saved_model.load(exported[key]["dir"])
    graph = loaded.serve.concrete_functions[0].graph.as_graph_def()
    functions = list(graph.library.function)
    ops = {node.op for node in graph.node} | {node.op for f in functions for node in f.node_def}
    assert not ops & {"IdentityN", "PlaceholderWithDefault", "TensorListReserve", "TensorListFromTensor", "Log"}
    compiled = [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]
    assert not compiled


@pytest.mark.subprocess
def test_export_serves_without_keras_unroll(exported, tmp_path):
    """One fresh process, where importing keras_unroll fails, serves every export (two calls in a row for the
    stateful model: the SavedModel carries the state)."""
    jobs = []
    for key, found in exported.items():
        for index, (x, _) in enumerate(found["pairs"]):
            np.save(tmp_path / f"{key}-{index}.npy", x)
            jobs.append(
                {
                    "dir": found["dir"],
                    "x": str(tmp_path / f"{key}-{index}.npy"),
                    "out": str(tmp_path / f"{key}-{index}-out.npy"),
                }
            )
    script = (
        "import sys, json\n"
        "sys.modules['keras_unroll'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        "served = {}\n"
        "for job in json.loads(sys.argv[1]):\n"
        "    model = served.setdefault(job['dir'], tf.saved_model.load(job['dir']))\n"
        "    np.save(job['out'], model.serve(tf.constant(np.load(job['x']))).numpy())\n"
    )
    child = run_forked(["-c", script, json.dumps(jobs)], timeout=300)  # a fresh process, keras_unroll blocked
    assert child.returncode == 0, child.stderr[-3000:]
    for key, found in exported.items():
        for index, (_, expected) in enumerate(found["pairs"]):
            got = np.load(tmp_path / f"{key}-{index}-out.npy")
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=2e-5, err_msg=key)


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "quantized"])
@pytest.mark.parametrize("key", sorted(MODELS))
def test_tflite_with_builtin_ops_only(exported, key, quantize):
    found = exported[key]
    content = deploy.to_tflite(found["dir"], quantize=quantize)
    tolerance = deploy.QUANTIZED_TOLERANCE if quantize else deploy.FLOAT_TOLERANCE
    _assert_pairs(deploy.tflite_runner(content), found["pairs"], tolerance)


@needs_onnx
@pytest.mark.parametrize("key", sorted(MODELS))
def test_onnx(exported, key):
    found = exported[key]
    run = deploy.onnx_runner(deploy.to_onnx(found["dir"]))
    pairs = found["pairs"]
    if found["case"].stateful:
        # ONNX has no variables: each call starts from the state saved with the model (zeros). Carrying it is
        # the caller's job (test_onnx_carries_explicit_state).
        pairs = pairs[:1]
    _assert_pairs(run, pairs, deploy.FLOAT_TOLERANCE)


@needs_onnx
def test_onnx_carries_explicit_state(tmp_path):
    """The documented alternative to `stateful=True` for ONNX: the state as inputs and outputs, fed back."""
    steps, features, units = 5, 3, 4
    x_in = keras.Input((steps, features))
    h_in = keras.Input((units,))
    output, h_out = ku.DynamicUnroll(ku.BasicRNNCell(units), return_state=True)(x_in, initial_state=[h_in])
    model = keras.Model([x_in, h_in], [keras.layers.Dense(1)(output), h_out])
    x = np.random.default_rng(0).normal(size=(2, steps, features)).astype("float32")
    h0 = np.zeros((2, units), "float32")
    y1, h1 = model.predict([x, h0], verbose=0)
    y2, _ = model.predict([x, h1], verbose=0)
    model.export(str(tmp_path / "sm"), verbose=False)
    import onnxruntime

    session = onnxruntime.InferenceSession(deploy.to_onnx(str(tmp_path / "sm")), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got1, state = session.run(None, dict(zip(names, [x, h0])))
    got2, _ = session.run(None, dict(zip(names, [x, state])))
    np.testing.assert_allclose(got1, y1, atol=1e-5)
    np.testing.assert_allclose(got2, y2, atol=1e-5)
    assert not np.allclose(got2, got1, atol=1e-3)  # the state changed the answer


def test_serving_graph_gives_the_numbers_and_gradients_of_the_other_plans():
    """A function traced without `training` and without a tape is a serving graph; `training=False` keeps the
    predict plan. Both give the eager numbers, and a serving graph differentiated later (a tape around a call
    of the traced function) gives the gradients of the training plan."""
    layer = ku.DynamicUnroll(ku.tf1.LSTMCell(4, use_peepholes=True), return_sequences=True, recompute="sqrt")
    x = tf.random.stateless_normal([2, 7, 3], seed=[1, 2])
    eager = layer(x)
    serving = tf.function(lambda x: layer(x))
    np.testing.assert_allclose(serving(x), eager, atol=1e-6)
    np.testing.assert_allclose(tf.function(lambda x: layer(x, training=False))(x), eager, atol=1e-6)

    def gradients(call):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(call(x) ** 2)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    for got, want in zip(gradients(serving), gradients(layer)):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_matrix_script_prints_its_table(capsys, tmp_path, monkeypatch):
    """`python -m benchmarks deploy` (here one case, in this process, one target) prints the Markdown rows
    docs/deploy.md shows and writes its JSON, and leaves no SavedModel behind in the temporary folder."""
    out = tmp_path / "deploy.json"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # the standard library's documented setting
    argv = ["--quick", "--cases", "DynamicUnroll/BasicRNNCell,recompute", "--targets", "savedmodel", "--in-process"]
    assert deploy.main(argv + ["--json", str(out)]) == 0
    assert not list(temporary.rglob("saved_model.pb"))  # (AutoGraph's own generated sources may stay)
    printed = capsys.readouterr().out
    assert "| case | savedmodel |" in printed
    assert "| DynamicUnroll/BasicRNNCell,recompute=sqrt | ok (" in printed
    (row,) = json.loads(out.read_text())["rows"]
    assert row["results"]["savedmodel"]["ok"] and row["results"]["savedmodel"]["max_diff"] <= 1e-5


# ------------------------------------------------------------------------ fused sequence ops on export
# `keras_unroll/loops/fused_export.py`: a serving LSTM becomes TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM (at a fixed
# batch, the converter's condition) and ONNX's LSTM; a GRU (reset_after=True) ONNX's GRU. The op lists are read
# from the converted models: TFLite's with `tf.lite.experimental.Analyzer` (TensorFlow's public op listing;
# the interpreter lists tensors only), ONNX's with `onnx` (node op types).
FUSED = {
    "LSTMCell": deploy.Case("DynamicUnroll", "LSTMCell", (("return_sequences", True), ("go_backwards", True))),
    "tf1.BasicLSTMCell": deploy.Case("DynamicUnroll", "tf1.BasicLSTMCell"),
    "tf1.LSTMCell": deploy.Case("DynamicUnroll", "tf1.LSTMCell"),
    "GRUCell": deploy.Case("DynamicUnroll", "GRUCell"),
}
LSTMS = ["LSTMCell", "tf1.BasicLSTMCell", "tf1.LSTMCell"]


@pytest.fixture(scope="module")
def fused_models():
    """The FUSED models, trained one step, with the predictions at batch 1 and 4."""
    found = {}
    for key, case in FUSED.items():
        model, x = deploy.build_model(case)
        found[key] = (model, deploy.expected_outputs(model, x, False))
    return found


def _fixed_batch_export(model, x, path):
    model.export(str(path), verbose=False, input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    return str(path)


@pytest.mark.parametrize("key", LSTMS)
def test_tflite_fuses_the_lstm(fused_models, key, tmp_path):
    """At a fixed batch (1 and 4), the LSTM is one UNIDIRECTIONAL_SEQUENCE_LSTM op (no WHILE) with builtin ops
    only, and gives `model.predict`'s numbers."""
    model, pairs = fused_models[key]
    for x, expected in pairs:
        content = deploy.to_tflite(_fixed_batch_export(model, x, tmp_path / f"b{len(x)}"))
        ops = deploy.tflite_ops(content)
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops and "WHILE" not in ops, ops
        _assert_pairs(deploy.tflite_runner(content), [(x, expected)], deploy.FLOAT_TOLERANCE)


@needs_onnx
@pytest.mark.parametrize("key", sorted(FUSED))
def test_onnx_fuses_lstm_and_gru(fused_models, key, tmp_path):
    """`model.export`'s open batch: ONNX's LSTM or GRU op, no Loop, `model.predict`'s numbers at batch 1 and 4.
    TFLite keeps the loop at an open batch (it fuses only at a fixed one) and converts it as it is."""
    model, pairs = fused_models[key]
    model.export(str(tmp_path / "sm"), verbose=False)
    content = deploy.to_onnx(str(tmp_path / "sm"))
    ops = deploy.onnx_ops(content)
    assert ("GRU" if key == "GRUCell" else "LSTM") in ops and "Loop" not in ops, ops
    _assert_pairs(deploy.onnx_runner(content), pairs, deploy.FLOAT_TOLERANCE)
    if key == "LSTMCell":
        tflite = deploy.to_tflite(str(tmp_path / "sm"))
        assert "WHILE" in deploy.tflite_ops(tflite)
        _assert_pairs(deploy.tflite_runner(tflite), pairs, deploy.FLOAT_TOLERANCE)


def _serving_plan(layer, x, **specs):
    """The kernel the planner gave a serving trace of `layer` (a function without `training` and a tape)."""
    tf.function(lambda x, kwargs: layer(x, **kwargs)).get_concrete_function(x, specs)
    return ku.testing.plans(layer)[-1]["kernel"]


def test_the_planner_takes_the_fused_form_only_where_the_maths_match():
    """LSTMs and `reset_after=True` GRUs with tanh/sigmoid, no mask and no `sequence_length` take it; the
    others keep the generic serving loop (which converts as before); `generic_only()` turns it off."""
    x = tf.TensorSpec((None, 5, 3), tf.float32)
    taken = [
        keras.layers.LSTMCell(4, use_bias=False),
        ku.tf1.BasicLSTMCell(4, forget_bias=0.5),
        keras.layers.GRUCell(4),
    ]
    for cell in taken:
        assert _serving_plan(ku.DynamicUnroll(cell), x) == "fused_export", cell
    kept = [
        keras.layers.GRUCell(4, reset_after=False),
        keras.layers.LSTMCell(4, recurrent_activation="hard_sigmoid"),
        ku.tf1.LSTMCell(4, use_peepholes=True, num_proj=3),
    ]
    for cell in kept:
        assert _serving_plan(ku.DynamicUnroll(cell), x) == "generic", cell
    layer = ku.DynamicUnroll(keras.layers.LSTMCell(4))
    assert _serving_plan(layer, x, mask=tf.TensorSpec((None, 5), tf.bool)) == "generic"  # a Keras mask
    with ku.testing.generic_only():
        assert _serving_plan(layer, x) == "generic"


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_the_fused_form_gives_the_eager_numbers(cell):
    """Initial states, `go_backwards`, `return_sequences` and `return_state` of the serving graph equal the
    eager call (the fused form computes the states too; TFLite then keeps its loop, as the next test shows)."""
    make = {"LSTMCell": keras.layers.LSTMCell, "GRUCell": keras.layers.GRUCell}[cell]
    layer = ku.DynamicUnroll(make(4), return_sequences=True, return_state=True, go_backwards=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    states = [rng.normal(size=(3, 4)).astype("float32") for _ in range(2 if cell == "LSTMCell" else 1)]
    eager = layer(x, initial_state=states)
    serving = tf.function(lambda x, states: layer(x, initial_state=states))
    got = serving(x, states)
    assert ku.testing.plans(layer)[-1]["kernel"] == "fused_export"
    for g, e in zip(got, eager):
        np.testing.assert_allclose(g, e, atol=1e-6)


@needs_onnx
def test_fused_form_falls_back_where_a_converter_cannot_fuse(tmp_path):
    """`return_state` uses the final states, which TFLite's fused op does not give: its converter keeps the
    loop (and the numbers). A Keras mask: the planner keeps the generic serving loop; both convert."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5, 3)).astype("float32")
    inputs = keras.Input((5, 3))
    output, h, c = ku.DynamicUnroll(keras.layers.LSTMCell(4), return_state=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()([output, h, c])))
    expected = model.predict(x, verbose=0)
    content = deploy.to_tflite(_fixed_batch_export(model, x, tmp_path / "state"))
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in deploy.tflite_ops(content)
    _assert_pairs(deploy.tflite_runner(content), [(x, expected)], deploy.FLOAT_TOLERANCE)

    model, x = deploy.build_model(deploy.Case("DynamicUnroll", "LSTMCell", mask=True))
    pairs = deploy.expected_outputs(model, x, False)
    model.export(str(tmp_path / "mask"), verbose=False)
    _assert_pairs(deploy.tflite_runner(deploy.to_tflite(str(tmp_path / "mask"))), pairs, deploy.FLOAT_TOLERANCE)
    content = deploy.to_onnx(str(tmp_path / "mask"))
    assert "LSTM" not in deploy.onnx_ops(content)
    _assert_pairs(deploy.onnx_runner(content), pairs, deploy.FLOAT_TOLERANCE)
