"""`StaticUnroll`/`DynamicUnroll` as drop-ins for `keras.layers.SimpleRNN` and `keras.layers.RNN(cell)`.

Keras is the reference: each test builds the Keras layer with the same arguments and weights and compares
outputs, states and gradients (SimpleRNN's cell arguments, masks, `go_backwards`, `return_state`,
`stateful` runs over several batches with resets), then the errors for what Keras users get wrong.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import close as _close
from helpers import layers

import keras_unroll as ku

B, T, F, H = 2, 4, 3, 4


def _x(rng, batch=B, steps=T):
    return rng.standard_normal((batch, steps, F)).astype("float32")


def _outputs_and_grads(layer, x, *call_args, **call_kwargs):
    """Flat outputs of `layer(x, ...)` and the gradients of a loss wrt the input and every trainable weight."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        flat = tf.nest.flatten(layer(x, *call_args, **call_kwargs))
        loss = sum(tf.reduce_sum(tf.sin(o) * (i + 1)) for i, o in enumerate(flat))
    return [o.numpy() for o in flat], [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)]


def _twins(ours, theirs, x):
    """Builds both layers on `x`, gives Keras' layer our weights; checks the weight lists agree in shape."""
    ours(x)
    theirs(x)
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
    theirs.set_weights(ours.get_weights())


# ------------------------------------------------------------------------- SimpleRNN's arguments
SIMPLE_RNN_ARGS = {
    "relu_sequences": dict(activation="relu", return_sequences=True),
    "no_bias_state": dict(use_bias=False, return_state=True),
    "linear_backwards": dict(activation=None, go_backwards=True, return_sequences=True),
    "initializers": dict(
        kernel_initializer=keras.initializers.RandomNormal(seed=3),
        recurrent_initializer=keras.initializers.Orthogonal(seed=4),
        bias_initializer=keras.initializers.RandomUniform(seed=5),
    ),
}


@layers
def test_constructor_takes_every_simple_rnn_and_rnn_argument_with_keras_defaults(layer_cls):
    ours = inspect.signature(layer_cls.__init__).parameters
    for reference in (keras.layers.SimpleRNN, keras.layers.RNN):
        for name, parameter in inspect.signature(reference.__init__).parameters.items():
            if name in ("self", "units", "cell", "activity_regularizer", "kwargs"):
                continue  # `cell` takes the units; activity_regularizer is a base-layer keyword
            assert name in ours, name
            expected = None if name == "unroll" else parameter.default  # unroll: "this layer's loop"
            assert ours[name].default == expected, name
    rnn_order = list(inspect.signature(keras.layers.RNN.__init__).parameters)[1:-1]
    assert list(ours)[1 : len(rnn_order) + 1] == rnn_order  # Keras' positional order


@layers
@pytest.mark.parametrize("name", SIMPLE_RNN_ARGS)
def test_simple_rnn_arguments_match_keras(layer_cls, name, rng):
    kwargs = SIMPLE_RNN_ARGS[name]
    x = _x(rng)
    ours, theirs = layer_cls(H, **kwargs), keras.layers.SimpleRNN(H, **kwargs)
    if name == "initializers":  # the same seeded initializers give the same weights, no set_weights
        ours(x), theirs(x)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            _close(a, b)
    else:
        _twins(ours, theirs, x)
    got, got_grads = _outputs_and_grads(ours, x)
    expected, expected_grads = _outputs_and_grads(theirs, x)
    for what, a, b in [("outputs", got, expected), ("gradients", got_grads, expected_grads)]:
        assert len(a) == len(b)
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, f"{what}[{i}]")
    for attribute in ("units", "activation", "use_bias", "dropout", "recurrent_dropout"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute


@layers
def test_regularizers_constraints_and_one_training_step_match_keras(layer_cls, rng):
    """The reference is `RNN(SimpleRNNCell(...), activity_regularizer=...)`: Keras 3.15's `SimpleRNN` takes
    `activity_regularizer` but never passes it on (no loss, silently); ours applies it as `RNN` and every
    other Keras layer do (on each output, divided by the batch size)."""
    cell_kwargs = dict(
        kernel_regularizer=keras.regularizers.L2(0.1),
        recurrent_regularizer=keras.regularizers.L1(0.05),
        bias_regularizer="l2",
        kernel_constraint=keras.constraints.MaxNorm(0.5),
        recurrent_constraint=keras.constraints.NonNeg(),
        bias_constraint=keras.constraints.MinMaxNorm(0.1, 0.3),
    )
    layer_kwargs = dict(activity_regularizer=keras.regularizers.L2(0.2), return_sequences=True)
    x, y = _x(rng, batch=6), rng.standard_normal((6, T, 1)).astype("float32")
    rnns = (
        layer_cls(H, **cell_kwargs, **layer_kwargs),
        keras.layers.RNN(keras.layers.SimpleRNNCell(H, **cell_kwargs), **layer_kwargs),
    )
    models = [keras.Sequential([keras.Input((T, F)), rnn, keras.layers.Dense(1)]) for rnn in rnns]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model(x)
    assert len(models[0].losses) == len(models[1].losses) == 4  # 3 weights + the activity
    for a, b in zip(models[0].losses, models[1].losses):
        _close(a, b, "regularization losses")
    for model in models:
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.fit(x, y, batch_size=3, epochs=2, shuffle=False, verbose=0)
    for i, (a, b) in enumerate(zip(models[0].get_weights(), models[1].get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"weight {i} after training")
    assert np.all(models[0].layers[0].cell.recurrent_kernel.numpy() >= 0)  # the constraint ran
    assert float(np.max(np.linalg.norm(models[0].layers[0].cell.kernel.numpy(), axis=0))) <= 0.5 + 1e-6


@layers
def test_dropout_with_the_same_seed_matches_keras(layer_cls, rng):
    """Both draw the input mask, then the state mask, from the cell's seed generator (seeded alike) on every
    call: the same masks, hence the same outputs and gradients while training (later calls, inference ones
    included: tests/test_dropout_seed.py)."""
    kwargs = dict(dropout=0.3, recurrent_dropout=0.4, seed=7, return_sequences=True)
    x = _x(rng)
    ours, theirs = layer_cls(H, **kwargs), keras.layers.SimpleRNN(H, **kwargs)
    ours.build(x.shape), theirs.build(x.shape)  # built without a call: no mask drawn yet
    theirs.set_weights(ours.get_weights())
    got, got_grads = _outputs_and_grads(ours, x, training=True)
    expected, expected_grads = _outputs_and_grads(theirs, x, training=True)
    _close(got[0], expected[0], "training outputs")
    for i, (a, b) in enumerate(zip(got_grads, expected_grads)):
        _close(a, b, f"gradient {i}")
    inference = layer_cls(H, return_sequences=True)
    inference(x)
    inference.set_weights(ours.get_weights())
    assert not np.allclose(got[0], inference(x), atol=1e-3)  # dropout acted
    _close(ours(x, training=False), inference(x), "no dropout at inference")
    _close(ours(x, training=False), theirs(x, training=False))


# ---------------------------------------------------------------------- keras.layers.RNN(cell)
CELLS = {
    "lstm": lambda: keras.layers.LSTMCell(H),
    "gru": lambda: keras.layers.GRUCell(H),
    "stacked": lambda: [keras.layers.SimpleRNNCell(3), keras.layers.LSTMCell(H)],
}


@layers
@pytest.mark.parametrize("cell_name", CELLS)
def test_mask_backwards_state_and_gradients_match_keras_rnn(layer_cls, cell_name, rng):
    x = _x(rng)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    kwargs = dict(return_sequences=True, return_state=True, go_backwards=True)
    ours, theirs = layer_cls(CELLS[cell_name](), **kwargs), keras.layers.RNN(CELLS[cell_name](), **kwargs)
    _twins(ours, theirs, x)
    assert ours.state_size == theirs.state_size
    got, got_grads = _outputs_and_grads(ours, x, None, mask)  # Keras' positional order: initial_state, mask
    expected, expected_grads = _outputs_and_grads(theirs, x, None, mask)
    assert len(got) == len(expected) and len(got_grads) == len(expected_grads)
    for i, (a, b) in enumerate(zip(got + got_grads, expected + expected_grads)):
        _close(a, b, f"output/gradient {i}")


@layers
def test_positional_initial_state_and_mask_match_keywords(layer_cls, rng):
    x = _x(rng)
    h0 = rng.standard_normal((B, H)).astype("float32")
    mask = np.array([[True, False, True, True], [True, True, True, False]])
    layer = layer_cls(H, return_sequences=True)
    theirs = keras.layers.SimpleRNN(H, return_sequences=True)
    _twins(layer, theirs, x)
    _close(layer(x, h0, mask), layer(x, initial_state=h0, mask=mask))
    _close(layer(x, h0, mask, training=False), theirs(x, h0, mask, training=False))
    lengths = np.array([2, 4])  # TF1's sequence_length, by keyword: zeros after each row's end
    by_length = layer(x, sequence_length=lengths)
    np.testing.assert_array_equal(by_length[0, 2:], 0.0)


@layers
def test_integer_sequences_are_cast_as_keras_does(layer_cls):
    ids = np.array([[[1], [2], [0]], [[3], [0], [1]]], "int32")
    ours, theirs = layer_cls(H, return_sequences=True), keras.layers.SimpleRNN(H, return_sequences=True)
    _twins(ours, theirs, ids.astype("float32"))
    got = ours(ids)
    assert got.dtype == tf.float32
    _close(got, theirs(ids))
    _close(ours(tf.constant(ids, tf.int64)), got)
    with pytest.raises(TypeError, match=r"floating-point tensor.*Received: sequences.dtype=bool"):
        ours(ids > 0)
    with pytest.raises(TypeError, match=r"Received: sequences.dtype=string"):
        ours(tf.fill((2, 3, 1), "a"))


@layers
def test_rnn_attributes(layer_cls):
    ours, theirs = layer_cls(keras.layers.LSTMCell(H)), keras.layers.RNN(keras.layers.LSTMCell(H))
    for attribute in ("stateful", "return_sequences", "return_state", "go_backwards", "states", "state_size"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.unroll is (layer_cls is ku.StaticUnroll)
    assert isinstance(ours.cell, keras.layers.LSTMCell)
    initial = ours.get_initial_state(3)
    assert [tuple(s.shape) for s in initial] == [tuple(s.shape) for s in theirs.get_initial_state(3)] == [(3, H)] * 2
    ours.reset_state()  # not stateful: nothing to reset, as Keras
    ours.reset_states()
    with pytest.raises(AttributeError, match=r"use `layer.cell.units`.*Received: cell=<LSTMCell"):
        ours.units  # noqa: B018
    simple = layer_cls(H, use_bias=False, dropout=0.25)
    assert (simple.units, simple.use_bias, simple.dropout) == (H, False, 0.25)
    assert isinstance(simple.cell, ku.BasicRNNCell)


# ------------------------------------------------------------------------------------- stateful
def _zero_states(layer):
    """Keras' `reset_state()` without its stacked-cells bug (3.15 assigns to the per-cell lists)."""
    for variable in keras.tree.flatten(layer.states):
        variable.assign(np.zeros(variable.shape, variable.dtype))


def _batches(rng, count=3, batch=B):
    return [_x(rng, batch=batch) for _ in range(count)]


STATEFUL = {
    "simple": (lambda cls, **kw: cls(H, **kw), lambda **kw: keras.layers.SimpleRNN(H, **kw)),
    "lstm": (lambda cls, **kw: cls(keras.layers.LSTMCell(H), **kw), lambda **kw: keras.layers.LSTM(H, **kw)),
    "stacked": (
        lambda cls, **kw: cls([ku.BasicRNNCell(3), keras.layers.LSTMCell(H)], **kw),
        lambda **kw: keras.layers.RNN([keras.layers.SimpleRNNCell(3), keras.layers.LSTMCell(H)], **kw),
    ),
    "bidirectional": (
        lambda cls, **kw: keras.layers.Bidirectional(cls(H, **kw)),
        lambda **kw: keras.layers.Bidirectional(keras.layers.SimpleRNN(H, **kw)),
    ),
}


@layers
@pytest.mark.parametrize("case", STATEFUL)
def test_stateful_runs_over_batches_with_resets_match_keras(layer_cls, case, rng):
    make_ours, make_theirs = STATEFUL[case]
    kwargs = dict(stateful=True, return_sequences=True, return_state=case != "bidirectional")
    ours, theirs = make_ours(layer_cls, **kwargs), make_theirs(**kwargs)
    batches = _batches(rng, 4)
    _twins(ours, theirs, batches[0])
    ours.reset_state(), _zero_states(theirs)
    outputs = []
    for i, x in enumerate(batches):
        if i == 2:  # a reset between "epochs"
            ours.reset_states(), _zero_states(theirs)
        got, expected = ours(x), theirs(x)
        for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(expected)):
            _close(a, b, f"batch {i}")
        for a, b in zip(keras.tree.flatten(ours.states), keras.tree.flatten(theirs.states)):
            _close(a, b, f"states after batch {i}")
        outputs.append(np.asarray(tf.nest.flatten(got)[0]))
    # The carried state matters: batch 1 again from zero states differs from batch 1 after batch 0.
    ours.reset_state()
    fresh = np.asarray(tf.nest.flatten(ours(batches[1]))[0])
    assert not np.allclose(fresh, outputs[1], atol=1e-4)
    assert len(ours.get_weights()) == len(theirs.get_weights())  # the states are not weights


@layers
@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager_graph", "xla"])
def test_stateful_keeps_the_fast_paths_and_xla(layer_cls, jit_compile, rng):
    batches = _batches(rng, 3)
    ours = layer_cls(H, stateful=True, jit_compile=jit_compile, return_sequences=True)
    theirs = keras.layers.SimpleRNN(H, stateful=True, return_sequences=True)
    _twins(ours, theirs, batches[0])
    ours.reset_state(), theirs.reset_state()
    for i, x in enumerate(batches):
        _close(ours(x), theirs(x), f"batch {i}")
    values = [rng.standard_normal((B, H)).astype("float32")]
    ours.reset_state(values)  # set given states: the next batch starts from them
    _close(ours.states[0], values[0])
    _close(ours(batches[0]), theirs(batches[0], initial_state=values[0]), "after reset_state(values)")


@layers
def test_stateful_model_fit_and_keras_file_round_trip_match_keras(layer_cls, rng, tmp_path):
    x, y = _x(rng, batch=8), rng.standard_normal((8, 1)).astype("float32")
    models = [
        keras.Sequential([keras.Input((T, F), batch_size=2), rnn, keras.layers.Dense(1)])
        for rnn in (layer_cls(keras.layers.LSTMCell(H), stateful=True), keras.layers.LSTM(H, stateful=True))
    ]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model.compile(keras.optimizers.SGD(0.2), "mse")
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    for i, (a, b) in enumerate(zip(models[0].get_weights(), models[1].get_weights())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"weight {i}")
    for a, b in zip(models[0].layers[0].states, models[1].layers[0].states):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg="states after fit")
    path = tmp_path / "stateful.keras"
    models[0].save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].stateful and type(loaded.layers[0]) is layer_cls
    models[0].layers[0].reset_state()
    expected = [models[0].predict(x[:2], batch_size=2, verbose=0) for _ in range(2)]
    got = [loaded.predict(x[:2], batch_size=2, verbose=0) for _ in range(2)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # starts at zero, then carries
    assert not np.allclose(got[0], got[1], atol=1e-4)


@layers
def test_stateful_errors(layer_cls, rng):
    with pytest.raises(
        ValueError, match=r"batch size must be static.*batch_size=32.*Received: sequences.shape=\(None, 4, 3\)"
    ):
        layer_cls(H, stateful=True)(keras.Input((T, F)))
    layer = layer_cls(keras.layers.LSTMCell(H), stateful=True)
    layer(_x(rng))
    with pytest.raises(ValueError, match=r"Expected batch size: 2\. Received: batch size 3"):
        layer(_x(rng, batch=3))
    with pytest.raises(ValueError, match=r"has 2 state\(s\).*Received: 1 value\(s\)"):
        layer.reset_state([np.zeros((B, H))])
    with pytest.raises(ValueError, match=r"State 1 .* must have shape \(2, 4\).*Received: states\[1\].shape=\(3, 4\)"):
        layer.reset_state([np.zeros((B, H)), np.zeros((3, H))])
    with pytest.raises(ValueError, match=r"has no states yet.*Received: states="):
        layer_cls(H, stateful=True).reset_state([np.zeros((B, H))])
    with pytest.raises(AttributeError, match=r"`stateful=False`.*Received: states="):
        layer_cls(H).reset_state([np.zeros((B, H))])
    # training=False (as model.predict); a serving graph (no `training`) reshapes to the states' batch instead
    traced = tf.function(lambda x: layer(x, training=False), input_signature=[tf.TensorSpec((None, T, F), tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"stateful.*Expected batch size: 2"):
        traced(_x(rng, batch=3))


# -------------------------------------------------------------------------------------- unroll=
def test_unroll_names_the_other_layer():
    assert ku.DynamicUnroll(H, unroll=False).unroll is False
    assert ku.StaticUnroll(H, unroll=True).unroll is True
    with pytest.raises(ValueError, match=r"for `unroll=True` use `StaticUnroll`.*Received: unroll=True"):
        ku.DynamicUnroll(H, unroll=True)
    with pytest.raises(ValueError, match=r"for `unroll=False` use `DynamicUnroll`.*Received: unroll=False"):
        ku.StaticUnroll(H, unroll=False)
    with pytest.raises(TypeError, match=r"`unroll` must be a bool. Received: unroll='yes'"):
        ku.DynamicUnroll(H, unroll="yes")


# ---------------------------------------------------------------------------- bad constructions
@layers
def test_cell_arguments_with_a_cell_object_are_refused(layer_cls):
    with pytest.raises(ValueError, match=r"give them to the cell.*Received: cell=<LSTMCell.*activation='relu'"):
        layer_cls(keras.layers.LSTMCell(H), activation="relu")
    with pytest.raises(ValueError, match=r"\(dropout, seed\).*Received: .*dropout=0.2, seed=1"):
        layer_cls(ku.BasicRNNCell(H), dropout=0.2, seed=1)
    with pytest.raises(TypeError, match=r"`stateful` must be a bool. Received: stateful=1"):
        layer_cls(H, stateful=1)


RNN_LAYERS = {
    "SimpleRNN": (lambda: keras.layers.SimpleRNN(5), r"keras.layers.SimpleRNNCell\(5\)"),
    "LSTM": (lambda: keras.layers.LSTM(8), r"keras.layers.LSTMCell\(8\)"),
    "GRU": (lambda: keras.layers.GRU(6), r"keras.layers.GRUCell\(6\)"),
    "RNN": (lambda: keras.layers.RNN(keras.layers.GRUCell(3)), r"keras.layers.GRUCell\(3\)"),
    "Bidirectional": (
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(8)),
        r"Bidirectional\(DynamicUnroll\(cell\)\).*keras.layers.LSTMCell\(8\)",
    ),
    "DynamicUnroll": (lambda: ku.DynamicUnroll(4), r"keras_unroll.BasicRNNCell\(4\)"),
    "StaticUnroll": (lambda: ku.StaticUnroll(keras.layers.LSTMCell(2)), r"keras.layers.LSTMCell\(2\)"),
}
UNROLLS = {
    "StaticUnroll": lambda cell: ku.StaticUnroll(cell),
    "DynamicUnroll": lambda cell: ku.DynamicUnroll(cell),
    "static_rnn": lambda cell: ku.static_rnn(cell, np.zeros((B, T, F), "float32")),
    "dynamic_rnn": lambda cell: ku.dynamic_rnn(cell, np.zeros((B, T, F), "float32")),
}


@pytest.mark.parametrize("unroll", UNROLLS)
@pytest.mark.parametrize("rnn", RNN_LAYERS)
def test_an_rnn_layer_as_cell_names_the_cell_to_use(unroll, rnn):
    make, suggestion = RNN_LAYERS[rnn]
    with pytest.raises(TypeError, match=rf"not a whole recurrent layer: {rnn} .*{suggestion}.*Received: cell=<{rnn}"):
        UNROLLS[unroll](make())


# ------------------------------------------------------------------------------------ config
@layers
def test_config_round_trip_for_an_int_cell_and_bidirectional(layer_cls, rng):
    layer = layer_cls(H, activation="relu", use_bias=False, dropout=0.1, seed=3, stateful=True, return_sequences=True)
    config = layer.get_config()
    assert config["cell"] == H and config["activation"] == "relu" and config["seed"] == 3  # no cell twice
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config and clone.units == H and clone.stateful
    with_cell = layer_cls(keras.layers.GRUCell(H)).get_config()
    assert isinstance(with_cell["cell"], dict) and "activation" not in with_cell
    assert layer_cls.from_config(with_cell).get_config() == with_cell
    wrapped = keras.layers.Bidirectional(layer_cls(H, activation="relu"))  # rebuilt from the config
    assert wrapped.forward_layer.activation is keras.activations.relu
    assert wrapped.backward_layer.go_backwards and wrapped.backward_layer.units == H


# -------------------------------------------------------------------- TF1 functions on keras.Input
def test_static_rnn_on_keras_inputs_builds_a_functional_model(rng):
    cell = ku.BasicRNNCell(H)
    X0, X1 = keras.Input((F,)), keras.Input((F,))
    outputs, state = ku.static_rnn(cell, [X0, X1])
    assert isinstance(outputs, list) and len(outputs) == 2 and tuple(state.shape) == (None, H)
    model = keras.Model(inputs=[X0, X1], outputs=outputs + [state])
    x0, x1 = _x(rng, steps=2).transpose(1, 0, 2)
    expected_outputs, expected_state = ku.static_rnn(cell, [x0, x1])
    for got, expected in zip(model([x0, x1]), expected_outputs + [expected_state]):
        _close(got, expected)
    lengths = keras.Input((), dtype="int32")  # TF1's sequence_length as a model input too
    outputs, state = ku.static_rnn(cell, [X0, X1], sequence_length=lengths)
    model = keras.Model([X0, X1, lengths], outputs + [state])
    n = np.array([1, 0], "int32")
    expected_outputs, expected_state = ku.static_rnn(cell, [x0, x1], sequence_length=n)
    got = model([x0, x1, n])
    for a, b in zip(got, expected_outputs + [expected_state]):
        _close(a, b)
    np.testing.assert_array_equal(got[2][1], 0.0)  # a length-0 row keeps the (zero) initial state


def test_dynamic_rnn_on_keras_inputs_with_symbolic_lengths_and_state(rng):
    cell = keras.layers.LSTMCell(H)
    inputs, lengths, h0 = keras.Input((None, F)), keras.Input((), dtype="int32"), keras.Input((H,))
    outputs, (c, h) = ku.dynamic_rnn(cell, inputs, sequence_length=lengths, initial_state=[h0, h0])  # TF1's (c, h)
    model = keras.Model([inputs, lengths, h0], [outputs, h, c])
    x, n, s = _x(rng), np.array([2, 4], "int32"), rng.standard_normal((B, H)).astype("float32")
    expected_outputs, (expected_c, expected_h) = ku.dynamic_rnn(cell, x, sequence_length=n, initial_state=[s, s])
    for got, expected in zip(model([x, n, s]), [expected_outputs, expected_h, expected_c]):
        _close(got, expected)
    np.testing.assert_array_equal(model([x, n, s])[0][0, 2:], 0.0)  # TF1: zeros past the row's end
