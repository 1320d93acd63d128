"""Dropout with a seed trains as Keras' own layers do, across `fit`, `predict`, `evaluate` and validation.

Keras' `RNN.call` draws every cell's dropout masks from the cell's seed generator on every call, inference
included (it uses them only while training), so each `predict`/`evaluate` batch and each validation batch
moves the seed on. Ours must move it the same way, or the next training masks differ from Keras' and a
model with `dropout=` trains to other weights. Reference: `keras.layers.SimpleRNN` / `keras.layers.LSTM`
with the same arguments and weights, fitted side by side.
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


def _twins(family, layer_cls, **kwargs):
    ours_fn, theirs_fn = FAMILIES[family]
    ours, theirs = _model(ours_fn(layer_cls, **kwargs)), _model(theirs_fn(**kwargs))
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def _assert_same_weights(ours, theirs, what):
    for i, (a, b) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"weight {i} {what}")


@LAYERS
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_with_predict_and_validation_between_epochs_matches_keras(family, layer_cls, rng):
    ours, theirs = _twins(family, layer_cls, **RATES)
    initial = ours.get_weights()
    x, y = _data(rng)
    x_val, y_val = _data(rng, B)
    after_first_epoch = None
    for epoch in range(2):
        losses = []
        for model in (ours, theirs):
            history = model.fit(x, y, batch_size=B, shuffle=False, verbose=0, validation_data=(x_val, y_val))
            model.predict(x, batch_size=B, verbose=0)
            losses.append((history.history["loss"][0], history.history["val_loss"][0]))
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5, err_msg=f"losses of epoch {epoch}")
        _assert_same_weights(ours, theirs, f"after epoch {epoch}")
        after_first_epoch = after_first_epoch or ours.get_weights()
    # Dropout acted: the same model without it, from the same weights, trains to other weights.
    plain = _model(FAMILIES[family][0](layer_cls))
    plain.set_weights(initial)
    plain.fit(x, y, batch_size=B, shuffle=False, verbose=0)
    assert not np.allclose(plain.get_weights()[0], after_first_epoch[0], atol=1e-4)


@LAYERS
def test_evaluate_and_direct_inference_calls_move_the_seed_as_keras_does(layer_cls, rng):
    """Each inference call draws (and drops) the masks, so a training call after any number of them sees
    the masks Keras' layer sees; calls with `training=None` count as inference, as in Keras."""
    ours, theirs = _twins("simple_rnn", layer_cls, dropout=0.5, seed=3)
    x, y = _data(rng)
    for model in (ours, theirs):
        model.evaluate(x, y, batch_size=B, verbose=0)
        model.layers[0](x)  # training=None: Keras' RNN draws the masks here too
        model.layers[0](x, training=False)
    np.testing.assert_allclose(
        ours.layers[0](x, training=True), theirs.layers[0](x, training=True), rtol=1e-5, atol=1e-6
    )
    # Inference itself applies no dropout, on both.
    np.testing.assert_allclose(
        ours.layers[0](x, training=False), theirs.layers[0](x, training=False), rtol=1e-5, atol=1e-6
    )
