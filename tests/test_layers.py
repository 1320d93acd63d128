"""Keras integration of `StaticUnroll` and `DynamicUnroll`: the layer contract, training, saving, export,
masks, functional models and `Bidirectional`."""

from __future__ import annotations

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from fork_server import run_forked
from helpers import layers
from layer_contract import run_layer_test

import keras_unroll as ku

B, T, F, H = 2, 5, 3, 4

# (id, constructor arguments, input shape, expected output shape(s), trainable weight count)
CONTRACT_CASES = [
    ("int_cell", dict(cell=H), (B, T, F), (B, H), 3),
    ("sequences", dict(cell=ku.BasicRNNCell(H), return_sequences=True), (B, T, F), (B, T, H), 3),
    ("lstm_state", dict(cell=keras.layers.LSTMCell(H), return_state=True), (B, T, F), [(B, H), (B, H), (B, H)], 3),
    (
        "gru_backwards",
        dict(cell=keras.layers.GRUCell(H), go_backwards=True, return_sequences=True),
        (B, T, F),
        (B, T, H),
        3,
    ),
    (
        "time_major_seq",
        dict(cell=keras.layers.SimpleRNNCell(H), time_major=True, return_sequences=True),
        (T, B, F),
        (T, B, H),
        3,
    ),
    ("time_major_last", dict(cell=H, time_major=True, return_state=True), (T, B, F), [(B, H), (B, H)], 3),
    (
        "stacked_all",
        dict(cell=[ku.BasicRNNCell(H), keras.layers.LSTMCell(3)], return_sequences=True, return_state=True),
        (B, T, F),
        [(B, T, 3), (B, H), [(B, 3), (B, 3)]],
        6,
    ),
]


@layers
@pytest.mark.parametrize(
    "kwargs, input_shape, expected_shape, n_trainable",
    [c[1:] for c in CONTRACT_CASES],
    ids=[c[0] for c in CONTRACT_CASES],
)
def test_layer_contract(layer_cls, kwargs, input_shape, expected_shape, n_trainable):
    run_layer_test(
        layer_cls,
        kwargs,
        input_shape,
        expected_output_shape=expected_shape,
        expected_num_trainable_weights=n_trainable,
        expected_num_non_trainable_weights=0,
    )


# ----------------------------------------------------------------------------------------- training
@layers
def test_sequential_fit_learns_a_running_mean(layer_cls, rng):
    x = rng.uniform(-1, 1, (64, 6, 2)).astype("float32")
    y = 2 * x[:, :, :1].mean(axis=1)
    model = keras.Sequential([keras.Input((6, 2)), layer_cls(ku.BasicRNNCell(8)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")  # learns as Adam did; Adam traces ~1 s longer
    losses = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------------------------- .keras files
SAVE_CELLS = {
    "basic": lambda: ku.BasicRNNCell(H),
    "lstm": lambda: keras.layers.LSTMCell(H),
    "stacked": lambda: [ku.BasicRNNCell(H), keras.layers.LSTMCell(H)],
}


@layers
@pytest.mark.parametrize("cell_name", SAVE_CELLS)
def test_keras_file_round_trip_gives_identical_predictions(layer_cls, cell_name, rng, tmp_path):
    model = keras.Sequential(
        [keras.Input((T, F)), layer_cls(SAVE_CELLS[cell_name](), return_sequences=True), keras.layers.Dense(2)]
    )
    x = rng.standard_normal((B, T, F)).astype("float32")  # the contract's shapes: its compiled passes serve here
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is layer_cls
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    as_json = lambda config: json.loads(json.dumps(config))  # noqa: E731  (tuples and lists compare equal)
    assert as_json(loaded.layers[0].get_config()) == as_json(model.layers[0].get_config())


# ------------------------------------------------------------------------------ SavedModel export
_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cases = json.loads(sys.argv[1])
    for case in cases:
        served = tf.saved_model.load(case["path"])
        data = np.load(case["npz"])
        for key in sorted(k for k in data.files if k.startswith("x_")):
            got = served.serve(tf.constant(data[key])).numpy()
            np.testing.assert_allclose(got, data["y_" + key[2:]], rtol=1e-5, atol=1e-6)
            print(case["name"], key, got.shape)
    assert "keras_unroll" not in sys.modules, "the SavedModel pulled in keras_unroll"
    print("CHILD OK")
    """
)


@pytest.mark.subprocess
def test_export_serves_in_a_fresh_process_without_keras_unroll(rng, tmp_path):
    cases = []
    for layer_cls, time_steps in [(ku.StaticUnroll, T), (ku.DynamicUnroll, None)]:
        name = layer_cls.__name__
        model = keras.Sequential([keras.Input((time_steps, F)), layer_cls(ku.BasicRNNCell(H)), keras.layers.Dense(2)])
        path = tmp_path / name
        model.export(str(path), verbose=False)
        arrays = {}
        # Different batch sizes; for the dynamic layer with an unknown T, different lengths as well.
        for batch in (1, 6):
            for steps in (T,) if time_steps else (2, 9):
                x = rng.standard_normal((batch, steps, F)).astype("float32")
                arrays[f"x_b{batch}_t{steps}"] = x
                arrays[f"y_b{batch}_t{steps}"] = np.asarray(model(x))
        np.savez(tmp_path / f"{name}.npz", **arrays)
        cases.append({"name": name, "path": str(path), "npz": str(tmp_path / f"{name}.npz")})
    result = run_forked(["-c", _CHILD, json.dumps(cases)], timeout=300)  # a fresh process without keras_unroll
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CHILD OK" in result.stdout
    # 2 batch sizes for the static model, 2 x 2 (batch, length) pairs for the dynamic one.
    assert result.stdout.count(" x_b") == 2 + 4, result.stdout


# ------------------------------------------------------------------------------------------- masks
@layers
def test_embedding_mask_propagates_and_is_used(layer_cls):
    ids = np.array([[3, 5, 2, 0, 0], [1, 2, 3, 4, 5]])
    embedding = keras.layers.Embedding(10, F, mask_zero=True)
    layer = layer_cls(H, return_sequences=True)
    dense = keras.layers.Dense(1)
    outputs = layer(embedding(ids))
    expected_mask = ids != 0
    np.testing.assert_array_equal(np.asarray(outputs._keras_mask), expected_mask)
    np.testing.assert_array_equal(np.asarray(dense(outputs)._keras_mask), expected_mask)
    # The mask is used: a padded row ends exactly where its unpadded copy does.
    last = layer_cls(layer.cell)
    padded = last(embedding(ids[:1]))
    unpadded = last(embedding(ids[:1, :3]))
    np.testing.assert_allclose(padded, unpadded, rtol=1e-6)

    # In a functional model with a loss, the masked model trains.
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, F, mask_zero=True)(inputs)
    x = layer_cls(H, return_sequences=True)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("sgd", "mse")
    loss = model.train_on_batch(ids, np.ones((2, 5, 1), "float32"))
    assert np.isfinite(loss)


@layers
def test_compute_mask(layer_cls):
    mask = tf.constant([[True, False, True]])
    x = tf.zeros((1, 3, F))
    assert layer_cls(H).compute_mask(x, mask) is None
    np.testing.assert_array_equal(layer_cls(H, return_sequences=True).compute_mask(x, mask), mask)
    state_masks = layer_cls(keras.layers.LSTMCell(H), return_sequences=True, return_state=True).compute_mask(x, mask)
    assert len(state_masks) == 3 and state_masks[1] is None and state_masks[2] is None
    np.testing.assert_array_equal(state_masks[0], mask)


# ---------------------------------------------------------------------------- functional models
@layers
def test_initial_state_as_functional_input(layer_cls, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    h0, c0 = rng.standard_normal((2, B, H)).astype("float32")
    inputs, h_in, c_in = keras.Input((T, F)), keras.Input((H,)), keras.Input((H,))
    layer = layer_cls(keras.layers.LSTMCell(H), return_sequences=True)
    model = keras.Model([inputs, h_in, c_in], layer(inputs, initial_state=[h_in, c_in]))
    got = model([x, h0, c0])
    np.testing.assert_allclose(got, layer(x, initial_state=[h0, c0]), rtol=1e-5, atol=1e-6)
    zeros = np.zeros_like(h0)
    np.testing.assert_allclose(model([x, zeros, zeros]), layer(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, layer(x), atol=1e-3)  # the initial state matters


@layers
def test_return_state_in_functional_model(layer_cls, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    inputs = keras.Input((T, F))
    output, h, c = layer_cls(keras.layers.LSTMCell(H), return_state=True)(inputs)
    model = keras.Model(inputs, [output, h, c, keras.layers.Dense(1)(h)])
    out, h, c, dense = model(x)
    assert out.shape == h.shape == c.shape == (B, H) and dense.shape == (B, 1)
    np.testing.assert_array_equal(out, h)  # an LSTM's output is its h state
    assert not np.allclose(h, c)


def test_static_unroll_takes_a_list_of_functional_inputs(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    steps = [keras.Input((F,)) for _ in range(T)]
    layer = ku.StaticUnroll(ku.BasicRNNCell(H), return_sequences=True)
    outputs = layer(steps)
    assert isinstance(outputs, list) and len(outputs) == T
    assert all(tuple(o.shape) == (None, H) for o in outputs)
    model = keras.Model(steps, outputs)
    got = model([x[:, t] for t in range(T)])
    np.testing.assert_allclose(np.stack(got, axis=1), layer(x), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------------------- Bidirectional
@layers
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_matches_keras_simple_rnn(layer_cls, return_sequences, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    ours = keras.layers.Bidirectional(layer_cls(ku.BasicRNNCell(H), return_sequences=return_sequences))
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(H, return_sequences=return_sequences))
    got = ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    assert ours.backward_layer.go_backwards and not ours.forward_layer.go_backwards
    assert got.shape == ((B, T, 2 * H) if return_sequences else (B, 2 * H))
    np.testing.assert_allclose(got, theirs(x), rtol=1e-5, atol=1e-5)
    clone = keras.layers.Bidirectional.from_config(ours.get_config())
    assert type(clone.backward_layer) is layer_cls and clone.backward_layer.go_backwards


@layers
def test_bidirectional_time_major(layer_cls, rng):
    """Keras 3's `Bidirectional` flips the backward sequence on axis 1 (the batch axis of time-major
    outputs): with `return_sequences=True` that is refused, with the last output only it is right."""
    x = rng.standard_normal((B, T, F)).astype("float32")
    sequences = keras.layers.Bidirectional(layer_cls(ku.BasicRNNCell(H), return_sequences=True, time_major=True))
    with pytest.raises(
        ValueError, match=r"batch axis of a `time_major=True` layer.*time_major=True, return_sequences=True"
    ):
        sequences(np.transpose(x, (1, 0, 2)))
    last = keras.layers.Bidirectional(layer_cls(ku.BasicRNNCell(H), time_major=True))
    batch_major = keras.layers.Bidirectional(layer_cls(ku.BasicRNNCell(H)))
    got = last(np.transpose(x, (1, 0, 2)))
    batch_major(x)
    batch_major.set_weights(last.get_weights())
    np.testing.assert_allclose(got, batch_major(x), rtol=1e-6, atol=1e-6)
    plain = layer_cls(ku.BasicRNNCell(H), return_sequences=True, time_major=True)  # not wrapped: no error
    assert tuple(plain(np.transpose(x, (1, 0, 2))).shape) == (T, B, H)


@layers
def test_bidirectional_with_mask_matches_keras(layer_cls):
    ids = np.array([[3, 5, 2, 0, 0], [1, 2, 3, 4, 5]])
    embedding = keras.layers.Embedding(10, F, mask_zero=True)
    ours = keras.layers.Bidirectional(layer_cls(ku.BasicRNNCell(H), return_sequences=True))
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(H, return_sequences=True))
    got = ours(embedding(ids))
    theirs(embedding(ids))
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(got, theirs(embedding(ids)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[0, 3:], 0.0)  # Bidirectional zeroes masked steps of sequences


@layers
def test_bidirectional_return_state_matches_keras_lstm(layer_cls, rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    ours = keras.layers.Bidirectional(layer_cls(keras.layers.LSTMCell(H), return_state=True))
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(H, return_state=True))
    got = ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    expected = theirs(x)
    assert len(got) == len(expected) == 5  # output, forward h and c, backward h and c
    for ours_tensor, keras_tensor in zip(got, expected):
        np.testing.assert_allclose(ours_tensor, keras_tensor, rtol=1e-5, atol=1e-5)
    symbolic = ours(keras.Input((T, F)))
    assert [tuple(t.shape) for t in symbolic] == [(None, 2 * H)] + [(None, H)] * 4
