"""Real models, as a user writes them, end to end; and the regression tests of issue 11's four bugs.

The table: the book's deep RNN (two stacked `DynamicUnroll` with an unknown time axis, and a `StaticUnroll`
twin with a fixed one), its sequence-to-sequence time series, an `Embedding(mask_zero=True)` text
classifier, an LSTM encoder whose states start a decoder, and `Bidirectional` (the book's two stacked layers
under `MirroredStrategy` are in `test_distribute.py`, whose child process has the logical devices). Each model
is trained with `fit` (`jit_compile` False / True / "auto" on `model.compile`, and on the layers: model (1)
the five pairs with "auto" on a side, the others a rotation that gives each value once per model, all nine
pairs between them), then `evaluate`, `predict` with another batch size and another T; the runs with the model's
`jit_compile="auto"` (every layer `jit_compile` of model (1), one per other model) also make a `.keras` round
trip and a `model.export()` served in a fresh process where keras_unroll cannot be imported (one process serves
every exported model; selecting one export test runs all the saved runs first).

Outside references: every trained model's predictions and evaluated loss are compared with the same
architecture built from Keras' own `keras.layers.RNN` around the same cells, carrying the trained weights
(atol 1e-5: XLA and TensorFlow round float32 differently; a wrong mask, state or step is off by ~1e-2 or
more). The `.keras` round trip must reproduce the predictions to 1e-6, the served SavedModel to 1e-5.

Only the public API is used (`keras_unroll`, `keras_unroll.inspect`, `keras_unroll.testing`), so these tests
hold through a rewrite of `keras_unroll/loops/`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import traceback
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import pytest
import real_model_worker as worker
import tensorflow as tf

import keras_unroll as ku

WORKER = pathlib.Path(worker.__file__).resolve()
TIMEOUT_S = 300
JITS = (False, True, "auto")
REFERENCE_ATOL = 1e-5  # keras_unroll vs keras.layers.RNN on the same weights (float32 rounding, XLA)
ROUND_TRIP_ATOL = 1e-6  # the same model before and after `.keras`
SERVED_ATOL = 1e-5  # the same graph, run in another process by the SavedModel runtime
TRAIN_ROWS, BATCH, OTHER_BATCH = 16, 8, 5


# ------------------------------------------------------------------------------------------ models
Unroll = Callable[..., keras.layers.Layer]


def _unroll_factory(kind: str, layer_jit: Any) -> Unroll:
    """`unroll(cell, **kwargs)`: a keras_unroll layer (`"dynamic"`/`"static"`), or Keras' own `"keras"` RNN."""

    def unroll(cell: Any, **kwargs: Any) -> keras.layers.Layer:
        if kind == "keras":
            return keras.layers.RNN(ku.BasicRNNCell(cell) if isinstance(cell, int) else cell, **kwargs)
        layer_cls = ku.StaticUnroll if kind == "static" else ku.DynamicUnroll
        return layer_cls(cell, jit_compile=layer_jit, **kwargs)

    return unroll


def deep_rnn(unroll: Unroll, steps: Optional[int] = None) -> keras.Model:
    """The book's deep RNN (issue 11, bug 1): `DynamicUnroll(4)` is a `BasicRNNCell(4)`."""
    return keras.Sequential(
        [
            keras.Input((steps, 3)),
            unroll(ku.BasicRNNCell(5), return_sequences=True),
            unroll(4),
            keras.layers.Dense(1),
        ]
    )


def seq2seq_series(unroll: Unroll) -> keras.Model:
    """The book's sequence-to-sequence forecaster: a prediction of the next 3 values at every step.

    The book wraps the head in `TimeDistributed(Dense(3))`; Keras 3's `Dense` maps the last axis of a 3D
    input the same way. (`TimeDistributed` itself is not used: in Keras 3.15 its traced call with an unknown
    time axis returns the wrong number of steps in `predict` at a second T, with `keras.layers.SimpleRNN`
    too: (5, 5, 3) for a (5, 11, 1) input after a (5, 6, 1) one. A Keras bug, not ours.)

    The book's series is univariate; here it has 3 features and the deep RNN's 5 and 4 units, so that the two
    models share their compiled passes (each new (batch, features, units) compiles its own).
    """
    return keras.Sequential(
        [
            keras.Input((None, 3)),
            unroll(ku.BasicRNNCell(5), return_sequences=True),
            unroll(ku.BasicRNNCell(4), return_sequences=True),
            keras.layers.Dense(3),
        ]
    )


def text_classifier(unroll: Unroll) -> keras.Model:
    """Padded word ids -> `Embedding(mask_zero=True)` -> RNN (the mask skips the padding) -> probability."""
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(20, 4, mask_zero=True),
            unroll(ku.BasicRNNCell(6)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def encoder_decoder(unroll: Unroll) -> keras.Model:
    """An LSTM encoder whose final `[h, c]` is the decoder's `initial_state` (functional, two inputs)."""
    encoder_inputs = keras.Input((None, 3))
    decoder_inputs = keras.Input((None, 2))
    _, h, c = unroll(keras.layers.LSTMCell(8), return_state=True)(encoder_inputs)
    decoded = unroll(keras.layers.LSTMCell(8), return_sequences=True)(decoder_inputs, initial_state=[h, c])
    return keras.Model([encoder_inputs, decoder_inputs], keras.layers.Dense(1)(decoded))


def bidirectional(unroll: Unroll) -> keras.Model:
    """5 features into 4 units: the sizes of the deep RNN's second layer, whose compiled passes it shares."""
    return keras.Sequential(
        [keras.Input((None, 5)), keras.layers.Bidirectional(unroll(ku.BasicRNNCell(4))), keras.layers.Dense(1)]
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """A model of the table: its builder, which keras_unroll layer it uses, and its data."""

    build: Callable[[Unroll], keras.Model]
    layer: str  # "dynamic" or "static"
    loss: str
    make_data: Callable[[np.random.Generator], Tuple[Any, np.ndarray, List[Any]]]  # x, y, [predict inputs]


def _seq(rng: np.random.Generator, rows: int, steps: int, features: int) -> np.ndarray:
    return rng.normal(size=(rows, steps, features)).astype("float32")


def _deep_data(rng):
    x, y = _seq(rng, TRAIN_ROWS, 6, 3), rng.normal(size=(TRAIN_ROWS, 1)).astype("float32")
    return x, y, [_seq(rng, OTHER_BATCH, 6, 3), _seq(rng, OTHER_BATCH, 11, 3)]


def _bidirectional_data(rng):
    x, y = _seq(rng, TRAIN_ROWS, 6, 5), rng.normal(size=(TRAIN_ROWS, 1)).astype("float32")
    return x, y, [_seq(rng, OTHER_BATCH, 6, 5), _seq(rng, OTHER_BATCH, 11, 5)]


def _static_deep_data(rng):
    x, y, predict_inputs = _deep_data(rng)
    return x, y, predict_inputs[:1]  # a fixed T: another batch size only


def _series_data(rng):
    x, y = _seq(rng, TRAIN_ROWS, 6, 3), rng.normal(size=(TRAIN_ROWS, 6, 3)).astype("float32")
    return x, y, [_seq(rng, OTHER_BATCH, 6, 3), _seq(rng, OTHER_BATCH, 11, 3)]


def _padded_ids(rng: np.random.Generator, rows: int, steps: int) -> np.ndarray:
    """Word ids 1..19 followed by 0-padding; every row keeps at least one word."""
    ids = rng.integers(1, 20, size=(rows, steps)).astype("int32")
    lengths = rng.integers(1, steps + 1, size=rows)
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return ids


def _text_data(rng):
    x, y = _padded_ids(rng, TRAIN_ROWS, 7), rng.integers(0, 2, size=(TRAIN_ROWS, 1)).astype("float32")
    return x, y, [_padded_ids(rng, OTHER_BATCH, 7), _padded_ids(rng, OTHER_BATCH, 10)]


def _encdec_data(rng):
    x = [_seq(rng, TRAIN_ROWS, 6, 3), _seq(rng, TRAIN_ROWS, 4, 2)]
    y = rng.normal(size=(TRAIN_ROWS, 4, 1)).astype("float32")
    other_batch = [_seq(rng, OTHER_BATCH, 6, 3), _seq(rng, OTHER_BATCH, 4, 2)]
    other_t = [_seq(rng, OTHER_BATCH, 9, 3), _seq(rng, OTHER_BATCH, 3, 2)]
    return x, y, [other_batch, other_t]


CASES: Dict[str, Case] = {
    "deep_rnn": Case(deep_rnn, "dynamic", "mse", _deep_data),
    "deep_rnn_static": Case(lambda unroll: deep_rnn(unroll, steps=6), "static", "mse", _static_deep_data),
    "seq2seq_series": Case(seq2seq_series, "dynamic", "mse", _series_data),
    "text_classifier": Case(text_classifier, "dynamic", "binary_crossentropy", _text_data),
    "encoder_decoder": Case(encoder_decoder, "dynamic", "mse", _encdec_data),
    "bidirectional": Case(bidirectional, "dynamic", "mse", _bidirectional_data),
}


def _runs() -> List[Tuple[str, Any, Any]]:
    """(model, model jit_compile, layer jit_compile): for the book's deep RNN the five pairs with "auto" on a
    side (its code as written under every model `jit_compile`, and every layer `jit_compile` saved), else a
    rotation (shifted per model) that gives every value once on each side. The rotations hold all nine pairs
    (`test_the_runs_cover_every_pair_of_jit_compile_values`)."""
    runs = [
        ("deep_rnn", model_jit, layer_jit)
        for model_jit in JITS
        for layer_jit in JITS
        if "auto" in (model_jit, layer_jit)
    ]
    for shift, name in enumerate(n for n in CASES if n != "deep_rnn"):
        runs += [(name, model_jit, JITS[(i + shift + 1) % 3]) for i, model_jit in enumerate(JITS)]
    return runs


RUNS = _runs()
#: The runs that are also saved (`.keras`) and exported: the saved files do not depend on the model's
#: `jit_compile`, so the `"auto"` runs cover every layer `jit_compile` of the deep RNN and one per other model.
SAVED_RUNS = [run for run in RUNS if run[1] == "auto"]


def test_the_runs_cover_every_pair_of_jit_compile_values():
    """Every (model, layer) `jit_compile` pair runs on a model besides the deep RNN, and the deep RNN runs the
    book's code (layers' "auto") under every model `jit_compile`."""
    pairs = {(model_jit, layer_jit) for name, model_jit, layer_jit in RUNS if name != "deep_rnn"}
    assert pairs == {(model_jit, layer_jit) for model_jit in JITS for layer_jit in JITS}
    assert {(m, "auto") for m in JITS} <= {(m, layer) for name, m, layer in RUNS if name == "deep_rnn"}


def run_id(run: Tuple[str, Any, Any]) -> str:
    name, model_jit, layer_jit = run
    return f"{name}-model_jit={model_jit}-layer_jit={layer_jit}"


# --------------------------------------------------------------------------------------- the runner
def _as_list(x: Any) -> List[Any]:
    return list(x) if isinstance(x, list) else [x]


def _numpy(x: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


class Runner:
    """Runs each (model, jit, jit) once, lazily, and keeps what every test of it asserts (or the error).

    One run: fit one epoch of two batches, evaluate, predict (another batch, another T), the Keras
    reference on the trained weights, and for `SAVED_RUNS` save + load `.keras` and `model.export()`.
    The first error ends the run; its stage and traceback are kept, so only that run's tests fail.
    """

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.results: Dict[str, Dict[str, Any]] = {}

    def get(self, run: Tuple[str, Any, Any]) -> Dict[str, Any]:
        key = run_id(run)
        if key not in self.results:
            result: Dict[str, Any] = {"stage": "build"}
            try:
                self._run(run, key, result)
            except Exception:
                result["error"] = traceback.format_exc()
            self.results[key] = result
        return self.results[key]

    def _run(self, run: Tuple[str, Any, Any], key: str, result: Dict[str, Any]) -> None:
        name, model_jit, layer_jit = run
        case = CASES[name]
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        x, y, predict_inputs = case.make_data(rng)
        result["predict_inputs"] = predict_inputs
        keras.utils.set_random_seed(0)
        model = case.build(_unroll_factory(case.layer, layer_jit))
        # SGD: what is checked is the layers' gradients and the trained model, not the optimizer (Adam's update
        # made each `fit` trace about a second longer: a third of the table's time).
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=case.loss, jit_compile=model_jit)
        result["stage"] = "fit"
        history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        result["fit_loss"] = history.history["loss"]
        result["stage"] = "evaluate"
        result["eval_loss"] = model.evaluate(x, y, batch_size=BATCH, verbose=0)
        result["stage"] = "predict"
        result["predictions"] = [model.predict(p, verbose=0) for p in predict_inputs]
        result["saved"] = run in SAVED_RUNS
        result["stage"] = "Keras reference"
        reference = case.build(_unroll_factory("keras", None))
        reference.set_weights(model.get_weights())
        result["reference_predictions"] = [_numpy(reference(p, training=False)) for p in predict_inputs]
        result["reference_loss"] = float(np.mean(_numpy(keras.losses.get(case.loss)(y, reference(x)))))
        if not result["saved"]:
            result["stage"] = "done"
            return
        result["stage"] = ".keras round trip"
        path = self.tmp / f"{key}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        result["loaded_predictions"] = [_numpy(loaded(p, training=False)) for p in predict_inputs]
        result["stage"] = "export"
        export_dir = self.tmp / f"{key}-savedmodel"
        model.export(str(export_dir), verbose=False)
        result["export_dir"] = str(export_dir)
        result["stage"] = "done"


def _check(result: Dict[str, Any], needs: str) -> None:
    """Fails with the run's own error when it did not get as far as `needs`."""
    if "error" in result and needs not in result:
        pytest.fail(f"the run failed in {result['stage']}:\n{result['error']}", pytrace=False)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(tmp_path_factory.mktemp("real_models"))


def _run_worker(args: List[str]) -> None:
    """`real_model_worker.py *args` in a fresh process (`fork_server`). The repository is on that process's path
    (the server's `PYTHONPATH`): the worker itself makes `import keras_unroll` fail before it loads a model, and
    checks that it does."""
    from fork_server import run_forked

    proc = run_forked([str(WORKER), *args], timeout=TIMEOUT_S)
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, f"{WORKER.name} {args[0]} failed (exit {proc.returncode}):\n{output}"


@pytest.fixture(scope="module")
def served(runner: Runner, tmp_path_factory) -> Dict[str, np.ndarray]:
    """Every exported model of the table, served by one process in which keras_unroll cannot be imported."""
    tmp = tmp_path_factory.mktemp("served")
    models, inputs = [], {}
    for run in SAVED_RUNS:
        result = runner.get(run)
        if "export_dir" not in result:
            continue
        key = run_id(run)
        calls = [_as_list(p) for p in result["predict_inputs"]]
        for i, call_inputs in enumerate(calls):
            for j, array in enumerate(call_inputs):
                inputs[f"{key}/{i}/{j}"] = array
        models.append({"key": key, "path": result["export_dir"], "num_calls": len(calls), "num_inputs": len(calls[0])})
    np.savez(tmp / "inputs.npz", **inputs)
    manifest = tmp / "manifest.json"
    manifest.write_text(json.dumps({"inputs": str(tmp / "inputs.npz"), "models": models}))
    _run_worker(["serve", "--manifest", str(manifest), "--out", str(tmp / "outputs.npz")])
    with np.load(tmp / "outputs.npz") as data:
        return {key: data[key] for key in data.files}


# ------------------------------------------------------------------------------------------- tests
pytestmark = pytest.mark.filterwarnings("ignore:jit_compile=True. the while loop")


@pytest.mark.parametrize("run", RUNS, ids=run_id)
def test_fit_evaluate_predict_match_keras(runner, run):
    result = runner.get(run)
    _check(result, "reference_predictions")
    assert np.all(np.isfinite(result["fit_loss"])) and np.isfinite(result["eval_loss"])
    # `evaluate` on the trained weights gives the loss Keras' own RNN computes with them.
    np.testing.assert_allclose(result["eval_loss"], result["reference_loss"], atol=REFERENCE_ATOL, rtol=1e-5)
    for got, want, inputs in zip(result["predictions"], result["reference_predictions"], result["predict_inputs"]):
        assert got.shape == want.shape and got.shape[0] == _as_list(inputs)[0].shape[0] == OTHER_BATCH
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, atol=REFERENCE_ATOL, rtol=0)


@pytest.mark.parametrize("run", SAVED_RUNS, ids=run_id)
def test_keras_file_round_trip(runner, run):
    result = runner.get(run)
    _check(result, "loaded_predictions")
    for got, want in zip(result["loaded_predictions"], result["predictions"]):
        np.testing.assert_allclose(got, want, atol=ROUND_TRIP_ATOL, rtol=0)


@pytest.mark.subprocess
@pytest.mark.parametrize("run", SAVED_RUNS, ids=run_id)
def test_export_served_without_keras_unroll(runner, served, run):
    result = runner.get(run)
    _check(result, "export_dir")
    key = run_id(run)
    assert not bool(served["imported_keras_unroll"])
    if f"{key}/error" in served:
        pytest.fail(f"serving {key} failed:\n{served[f'{key}/error']}", pytrace=False)
    for i, want in enumerate(result["predictions"]):
        np.testing.assert_allclose(served[f"{key}/{i}"], want, atol=SERVED_ATOL, rtol=0)


# ------------------------------------------------------------------------- bug 1: stacked, unknown T
def test_regression_stacked_dynamic_unroll_keeps_its_units_through_traces():
    """Issue 11, bug 1 (smaller trace): after an eager call and a traced training step of the book's deep RNN,
    its first layer traced for an unknown batch and T still says it returns 5 units, so the next layer builds."""
    model = deep_rnn(_unroll_factory("dynamic", "auto"))
    x = tf.constant(_seq(np.random.default_rng(0), BATCH, 6, 3))  # the table's shapes: its compiled passes are reused
    model(x)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    train_step(x)
    spec = tf.TensorSpec((None, None, 3))
    first = tf.function(lambda x: model.layers[0](x, training=True), input_signature=[spec])
    assert first.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 5]
    whole = tf.function(lambda x: model(x, training=True), input_signature=[spec])
    assert whole.get_concrete_function().structured_outputs.shape.as_list() == [None, 1]


@pytest.mark.parametrize("model_jit", JITS)
def test_regression_book_deep_rnn_fits_and_predicts_another_length(runner, model_jit):
    """Issue 11, bug 1, the book's code as written (layers' default `jit_compile="auto"`): `fit` failed with
    `model.compile(jit_compile=False)` and `True`; with "auto", `predict` at another T failed."""
    result = runner.get(("deep_rnn", model_jit, "auto"))
    _check(result, "predictions")
    assert [p.shape for p in result["predictions"]] == [(OTHER_BATCH, 1), (OTHER_BATCH, 1)]


# ------------------------------------------------------------------ bug 2: a cell with a (F+H, H) kernel
@keras.saving.register_keras_serializable(package="keras_unroll_tests")
class TF1LayoutCell(keras.layers.Layer):
    """`h' = tanh([x, h] K + b)` with one `(F+H, H)` kernel named `kernel`, as TF1's `BasicRNNCell` stores it."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units
        self.output_size = units

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1] + self.units, self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="random_normal")

    def call(self, inputs: Any, states: Any) -> Any:
        h = keras.ops.tanh(
            keras.ops.matmul(keras.ops.concatenate([inputs, states[0]], axis=-1), self.kernel) + self.bias
        )
        return h, [h]

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@pytest.mark.parametrize("layer_cls", [ku.DynamicUnroll, ku.StaticUnroll], ids=lambda c: c.__name__)
def test_regression_cell_with_a_tf1_layout_kernel_is_accepted(layer_cls):
    """Issue 11, bug 2: a kernel named `kernel` of shape (F+H, H) is not a claim about the feature size."""
    x = _seq(np.random.default_rng(1), 2, 5, 3)
    cell = TF1LayoutCell(4)
    got = _numpy(layer_cls(cell, return_sequences=True)(x))  # first call: builds the cell, runs it
    assert tuple(cell.kernel.shape) == (7, 4)
    np.testing.assert_allclose(got, _numpy(keras.layers.RNN(cell, return_sequences=True)(x)), atol=1e-6)


def test_regression_dynamic_rnn_takes_a_tf1_layout_cell_twice():
    x = _seq(np.random.default_rng(2), 2, 5, 3)
    cell = TF1LayoutCell(4)
    first, _ = ku.dynamic_rnn(cell, x)
    second, state = ku.dynamic_rnn(cell, x)  # the second call found a built cell and misread its kernel
    want = _numpy(keras.layers.RNN(cell, return_sequences=True)(x))
    np.testing.assert_allclose(_numpy(first), want, atol=1e-6)
    np.testing.assert_allclose(_numpy(second), want, atol=1e-6)
    np.testing.assert_allclose(_numpy(state), want[:, -1], atol=1e-6)


# ------------------------------------------------------------- bug 3: the public generic-path switch
class CallCountingSimpleRNNCell(keras.layers.SimpleRNNCell):
    """A `SimpleRNNCell` that counts how often it is called.

    It overrides `__call__`, not `call`: the cell keeps Keras' maths, so it still qualifies for the fused
    SimpleRNN path, which reads the weights and never calls the cell; the generic path calls it once per
    trace of the loop's step (and once per step in a Python-unrolled loop). The count tells the paths apart
    through the public API only; each test first checks that the fused path really ran (count 0), so a
    change of eligibility fails the test instead of making it vacuous.
    """

    calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().__call__(*args, **kwargs)


def _dynamic_rnn(cell, x):
    return ku.dynamic_rnn(cell, x)[0]


def _layer(jit_compile):
    def call(cell, x):
        layer = ku.DynamicUnroll(cell, return_sequences=True, jit_compile=jit_compile)
        return layer(x)

    return call


@pytest.mark.parametrize(
    "unroll",
    [_dynamic_rnn, _layer(False), _layer("auto")],
    ids=["dynamic_rnn", "DynamicUnroll-jit=False", "DynamicUnroll-jit=auto"],
)
def test_regression_generic_only_switches_path_after_the_fused_one_ran(unroll):
    """Issue 11, bug 3: `generic_only()` runs the generic step even after the fused loop ran (and was cached)
    for the same cell and shapes, and leaving the block brings the fused loop back. Both give one answer."""
    from keras_unroll.testing import generic_only  # the public switch (issue 11)

    x = _seq(np.random.default_rng(3), 3, 6, 2)
    cell = CallCountingSimpleRNNCell(4)
    fused = _numpy(unroll(cell, x))
    assert cell.calls == 0, "the counting cell did not take the fused path: this test would prove nothing"
    with generic_only():
        generic = _numpy(unroll(cell, x))
    assert cell.calls > 0, "generic_only() ran the fused path (a function cached before the switch)"
    np.testing.assert_allclose(generic, fused, atol=1e-6)
    # Another batch size and T: a generic function still cached and used would retrace, and so call the cell.
    x_other = _seq(np.random.default_rng(4), 2, 9, 2)
    calls = cell.calls
    again = _numpy(unroll(cell, x_other))
    assert cell.calls == calls, "the generic path stayed on after leaving generic_only()"
    with generic_only():
        np.testing.assert_allclose(again, _numpy(unroll(cell, x_other)), atol=1e-6)


# ------------------------------------------------------------------------------ bug 4: plans and T
# Bug 4 (one while loop whatever T is: the traced graphs have the same ops at every T) is tested once, forward
# and training, with and without XLA, in test_inspect.py (`test_dynamic_op_count_does_not_depend_on_steps`).


class TraceCountingCell(keras.layers.Layer):
    """A minimal custom cell (generic path) that counts how often its step is traced or run in Python."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = self.state_size = self.output_size = units
        self.traces = 0

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, inputs: Any, states: Any) -> Any:
        self.traces += 1  # Python side effect: runs when the step is traced, never when a graph runs
        h = keras.ops.tanh(keras.ops.matmul(inputs, self.kernel) + states[0])
        return h, [h]


@pytest.mark.parametrize("unroll", ["DynamicUnroll", "dynamic_rnn"])
def test_regression_fifty_lengths_do_not_trace_fifty_loops(unroll):
    """Issue 11: eager calls at 50 different T do not create (and keep) 50 traced while loops.

    Eager `DynamicUnroll`/`dynamic_rnn` run the loop as a graph. A `tf.function` runs Python only when it
    traces, so the cell's Python `call` counts the traces; with one function per T (a cache keyed on T) the
    count is 50, with a cache keyed on what changes the trace it is a few (TensorFlow traces a shape once
    exactly, then once relaxed to unknown T). Public and exact, unlike counting memory.
    """
    cell = TraceCountingCell(3)
    layer = ku.DynamicUnroll(cell, jit_compile=False)
    rng = np.random.default_rng(4)
    for steps in range(1, 51):
        x = _seq(rng, 2, steps, 2)
        out = layer(x) if unroll == "DynamicUnroll" else ku.dynamic_rnn(cell, x)[0][:, -1]
        assert out.shape == (2, 3)
    assert cell.traces <= 4, f"{cell.traces} traces of the step for 50 lengths"
