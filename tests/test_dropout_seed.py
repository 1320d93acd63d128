"""Dropout with a seed trains as Keras' own layers do, across `fit`, `predict`, `evaluate` and validation.

Keras' `RNN.call` draws every cell's dropout masks from the cell's seed generator on every call, inference
included (it uses them only while training), so each `predict`/`evaluate` batch and each validation batch
moves the seed on. Ours must move it the same way, or the next training masks differ from Keras' and a
model with `dropout=` trains to other weights. Reference: `keras.layers.SimpleRNN` / `keras.layers.LSTM`
with the same arguments and weights, run once per family in a module fixture (its seed generator starts from
`seed` whatever ran before) and compared with each of our layers.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_unroll as ku

B, T, F, H = 4, 3, 2, 3
RATES = dict(dropout=0.3, recurrent_dropout=0.2, seed=7)
LAYERS = pytest.mark.parametrize("layer_cls", [ku.StaticUnroll, ku.DynamicUnroll], ids=lambda c: c.__name__)
FAMILIES = {
    "simple_rnn": (lambda layer_cls, **kw: layer_cls(H, **kw), lambda **kw: keras.layers.SimpleRNN(H, **kw)),
    "lstm": (
        lambda layer_cls, **kw: layer_cls(keras.layers.LSTMCell(H, **kw)),
        lambda **kw: keras.layers.LSTM(H, **kw),
    ),
}


def _model(layer):
    model = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def _data(rng, count=2 * B):
    return rng.standard_normal((count, T, F)).astype("float32"), rng.standard_normal((count, 1)).astype("float32")


def _assert_same_weights(ours, theirs, what):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"weight {i} {what}")


def _fit_epoch(model, data):
    """One epoch of `fit` with validation, then `predict` (which moves the seed on): `(loss, val_loss)`."""
    x, y, x_val, y_val = data
    history = model.fit(x, y, batch_size=B, shuffle=False, verbose=0, validation_data=(x_val, y_val))
    model.predict(x, batch_size=B, verbose=0)
    return history.history["loss"][0], history.history["val_loss"][0]


@pytest.fixture(scope="module")
def keras_fit():
    """`keras_fit(family)`: Keras' own layer with `RATES`, fitted once per family and compared with both of our
    layers: its initial weights, the data, each epoch's losses and weights, and the weights the same model
    without dropout reaches after one epoch from the same start."""
    found = {}

    def get(family):
        if family not in found:
            rng = np.random.default_rng(0)
            data = (*_data(rng), *_data(rng, B))
            theirs = _model(FAMILIES[family][1](**RATES))
            initial = theirs.get_weights()
            epochs = [(_fit_epoch(theirs, data), theirs.get_weights()) for _ in range(2)]
            plain = _model(FAMILIES[family][1]())
            plain.set_weights(initial)
            plain.fit(data[0], data[1], batch_size=B, shuffle=False, verbose=0)
            found[family] = {"initial": initial, "data": data, "epochs": epochs, "plain": plain.get_weights()}
        return found[family]

    return get


@LAYERS
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_with_predict_and_validation_between_epochs_matches_keras(family, layer_cls, keras_fit):
    theirs = keras_fit(family)
    ours = _model(FAMILIES[family][0](layer_cls, **RATES))
    ours.set_weights(theirs["initial"])
    after_first_epoch = None
    for epoch, (losses, weights) in enumerate(theirs["epochs"]):
        np.testing.assert_allclose(
            _fit_epoch(ours, theirs["data"]), losses, rtol=1e-5, err_msg=f"losses of epoch {epoch}"
        )
        _assert_same_weights(ours.get_weights(), weights, f"after epoch {epoch}")
        after_first_epoch = after_first_epoch or ours.get_weights()
    # Dropout acted: the same model without it, from the same weights, trains to other weights.
    assert not np.allclose(theirs["plain"][0], after_first_epoch[0], atol=1e-4)


INFERENCE_RATES = dict(dropout=0.5, seed=3)


def _inference_calls(model, x, y):
    """`evaluate`, then direct calls with `training=None` and `False`, then the training and inference outputs."""
    model.evaluate(x, y, batch_size=B, verbose=0)
    model.layers[0](x)  # training=None: Keras' RNN draws the masks here too
    model.layers[0](x, training=False)
    return np.asarray(model.layers[0](x, training=True)), np.asarray(model.layers[0](x, training=False))


@pytest.fixture(scope="module")
def keras_inference():
    """Keras' `SimpleRNN` with `INFERENCE_RATES` through `_inference_calls`, once for both of our layers: its
    initial weights, the data and the two outputs."""
    x, y = _data(np.random.default_rng(0))
    theirs = _model(FAMILIES["simple_rnn"][1](**INFERENCE_RATES))
    initial = theirs.get_weights()
    return {"initial": initial, "data": (x, y), "outputs": _inference_calls(theirs, x, y)}


@LAYERS
def test_evaluate_and_direct_inference_calls_move_the_seed_as_keras_does(layer_cls, keras_inference):
    """Each inference call draws (and drops) the masks, so a training call after any number of them sees
    the masks Keras' layer sees; calls with `training=None` count as inference, as in Keras."""
    ours = _model(FAMILIES["simple_rnn"][0](layer_cls, **INFERENCE_RATES))
    ours.set_weights(keras_inference["initial"])
    training, inference = _inference_calls(ours, *keras_inference["data"])
    np.testing.assert_allclose(training, keras_inference["outputs"][0], rtol=1e-5, atol=1e-6)
    # Inference itself applies no dropout, on both.
    np.testing.assert_allclose(inference, keras_inference["outputs"][1], rtol=1e-5, atol=1e-6)
