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
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

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
def test_export_serves_without_keras_unroll(exported, tmp_path, subprocess_env):
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
    child = subprocess.run(
        [sys.executable, "-c", script, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=300,
    )
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


def test_the_matrix_script_prints_its_table(capsys, tmp_path):
    """`python -m benchmarks deploy` (here one case, in this process, one target) prints the Markdown rows
    docs/deploy.md shows and writes its JSON."""
    out = tmp_path / "deploy.json"
    argv = ["--quick", "--cases", "DynamicUnroll/BasicRNNCell,recompute", "--targets", "savedmodel", "--in-process"]
    assert deploy.main(argv + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| case | savedmodel |" in printed
    assert "| DynamicUnroll/BasicRNNCell,recompute=sqrt | ok (" in printed
    (row,) = json.loads(out.read_text())["rows"]
    assert row["results"]["savedmodel"]["ok"] and row["results"]["savedmodel"]["max_diff"] <= 1e-5
