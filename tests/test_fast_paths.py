"""The fast paths (`keras_unroll/kernels/`, chosen by `keras_unroll/plan.py`) against the generic step, Keras'
own layers and NumPy.

Every comparison runs the same weights twice: once as users get it (fast path, with or without XLA) and
once with `keras_unroll.testing.generic_only()` (the one step function, `make_step`), and checks outputs, final
states and the gradients of the loss with respect to every weight, the inputs and the initial state.

The references of the fused-SimpleRNN cases (`CASES`, dropout, the last output only, recurrent dropout, the
jacobian) run the generic step in `StaticUnroll`'s Python loop, eagerly (`_generic`: the same step and
bookkeeping as the while loop, no graph to trace, several times cheaper), for both layers; `DynamicUnroll`'s
generic while loop is the reference of the tape, chunk, changing-length and `dynamic_rnn` tests.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from fork_server import run_forked
from references import basic_rnn, lengths_to_valid

import keras_unroll as ku
from keras_unroll import plan, step, testing
from keras_unroll.kernels import cells, chunks, projected
from keras_unroll.layers import DynamicUnroll, StaticUnroll
from keras_unroll.plan import Tuning

LAYERS = [StaticUnroll, DynamicUnroll]
RTOL, ATOL = 1e-5, 1e-6
B, T, F, H = 4, 6, 3, 5


def _close(actual, expected, what=""):
    """rtol 1e-5 (float32), plus an absolute slack of 1e-5 of the array's largest value: a gradient entry
    that is a sum of large terms cancelling each other carries their rounding (XLA's tanh is not Eigen's)."""
    expected = np.asarray(expected)
    atol = max(ATOL, RTOL * float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=atol, err_msg=what)


def _weights(rng, features=F, units=H, gates=1, scale=0.6):
    return [
        (rng.standard_normal((features, gates * units)) * scale).astype("float32"),
        (rng.standard_normal((units, gates * units)) * scale).astype("float32"),
        (rng.standard_normal((gates * units,)) * 0.2).astype("float32"),
    ]


def _run(layer, x, weights, **call_kwargs):
    """Calls `layer` (built with `weights`); returns (flat outputs, grads wrt x, initial states, weights)."""
    x = tf.constant(x)
    states = call_kwargs.pop("initial_state", None)
    states = None if states is None else [tf.constant(s) for s in states]
    if not layer.built:
        layer.build(x.shape)
    layer.set_weights(weights)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if states is not None:
            tape.watch(states)
            call_kwargs["initial_state"] = states if len(states) > 1 else states[0]
        out = layer(x, **call_kwargs)
        flat = [o for o in tf.nest.flatten(out)]
        loss = sum(tf.reduce_sum(tf.square(o) + 0.5 * o * (i + 1)) for i, o in enumerate(flat))
    sources = [x] + ([] if states is None else states) + layer.trainable_weights
    grads = tape.gradient(loss, sources)
    return [o.numpy() for o in flat], [g.numpy() for g in grads]


def _compare(fast_result, generic_result):
    (out_a, grad_a), (out_b, grad_b) = fast_result, generic_result
    assert len(out_a) == len(out_b) and len(grad_a) == len(grad_b)
    for i, (a, b) in enumerate(zip(out_a, out_b)):
        _close(a, b, f"output {i}")
    for i, (a, b) in enumerate(zip(grad_a, grad_b)):
        assert np.abs(b).max() > 0, f"gradient {i} is zero: the case does not test it"
        _close(a, b, f"gradient {i}")


def _generic(**layer_kwargs):
    """A reference layer for `generic_only()`: `StaticUnroll`, uncompiled; eager, it traces no graph."""
    return StaticUnroll(jit_compile=False, **layer_kwargs)


def _fast_and_generic(make_layer, x, weights, **call_kwargs):
    fast_result = _run(make_layer(), x, weights, **dict(call_kwargs))
    with testing.generic_only():
        generic_result = _run(make_layer(jit=False), x, weights, **dict(call_kwargs))
    return fast_result, generic_result


# ------------------------------------------------------------------------------ SimpleRNN family
CASES = {
    # name: (layer kwargs, cell kwargs, call kwargs builder)
    "mask+go_backwards+initial_state": (
        dict(return_sequences=True, return_state=True, go_backwards=True),
        dict(),
        lambda rng: dict(
            mask=np.array([[1, 1, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1], [1] * 6, [0] * 6], bool),
            initial_state=[rng.standard_normal((B, H)).astype("float32")],
        ),
    ),
    "sequence_length+initial_state": (
        dict(return_sequences=True, return_state=True),
        dict(),
        lambda rng: dict(
            sequence_length=np.array([4, 1, 0, 3], "int32"),  # max < T: the while loop stops early
            initial_state=[rng.standard_normal((B, H)).astype("float32")],
        ),
    ),
    "zero_output_for_mask+relu+last_output": (
        dict(return_sequences=False, return_state=True, zero_output_for_mask=True),
        dict(activation="relu"),
        lambda rng: dict(mask=np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0, 1, 0, 1, 0, 1], [0] * 6], bool)),
    ),
    "sigmoid+time_major": (
        dict(return_sequences=True, time_major=True),
        dict(activation="sigmoid"),
        lambda rng: dict(),
    ),
    "linear+no_bias": (dict(return_sequences=False), dict(activation=None, use_bias=False), lambda rng: dict()),
}


XLA_CASES = ("mask+go_backwards+initial_state", "sequence_length+initial_state")  # XLA compiles cost seconds


@pytest.fixture(scope="module")
def simple_rnn_cases():
    """`get(case)`: the data of `test_fused_simple_rnn_matches_generic_path` (the `rng` fixture's draws) and the
    generic path's results, computed once for both layers, the graph and the XLA kernels."""

    @functools.cache
    def get(case):
        layer_kwargs, cell_kwargs, call_builder = CASES[case]
        rng = np.random.default_rng(0)
        call_kwargs = call_builder(rng)
        weights = _weights(rng)
        if not cell_kwargs.get("use_bias", True):
            weights = weights[:2]
        x = rng.standard_normal((T, B, F) if layer_kwargs.get("time_major") else (B, T, F)).astype("float32")
        with testing.generic_only():
            generic = _run(_generic(cell=ku.BasicRNNCell(H, **cell_kwargs), **layer_kwargs), x, weights, **call_kwargs)
        return x, weights, call_kwargs, generic

    return get


@pytest.mark.parametrize(
    "case,jit",
    [(c, False) for c in CASES] + [(c, True) for c in XLA_CASES],
    ids=lambda v: {False: "graph", True: "xla"}.get(v, v),
)
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fused_simple_rnn_matches_generic_path(layer_cls, case, jit, simple_rnn_cases):
    layer_kwargs, cell_kwargs, _ = CASES[case]
    x, weights, call_kwargs, generic = simple_rnn_cases(case)
    fast = _run(
        layer_cls(ku.BasicRNNCell(H, **cell_kwargs), jit_compile=jit, **layer_kwargs), x, weights, **dict(call_kwargs)
    )
    _compare(fast, generic)


def _dropout_layer(layer_cls, jit):
    cell = ku.BasicRNNCell(H, dropout=0.3, recurrent_dropout=0.4, seed=7)
    return layer_cls(cell, return_sequences=True, return_state=True, jit_compile=jit)


def _dropout_reference():
    cell = ku.BasicRNNCell(H, dropout=0.3, recurrent_dropout=0.4, seed=7)  # the same seed: the same masks
    return _generic(cell=cell, return_sequences=True, return_state=True)


@pytest.fixture(scope="module")
def dropout_references():
    """`get(layer_cls)`: the data of `test_fused_dropout_uses_the_generic_masks` (the `rng` fixture's draws), the
    generic path's results with dropout and the outputs without dropout, computed once for both kernels."""

    @functools.cache
    def get(layer_cls):
        rng = np.random.default_rng(0)
        weights = _weights(rng)
        x = rng.standard_normal((B, T, F)).astype("float32")
        mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0], [1] * 6, [0, 1, 1, 1, 1, 1]], bool)
        with testing.generic_only():
            generic = _run(_dropout_reference(), x, weights, mask=mask, training=True)
        plain = layer_cls(ku.BasicRNNCell(H), return_sequences=True, jit_compile=False)
        no_dropout = _run(plain, x, weights, mask=mask)
        return weights, x, mask, generic, no_dropout

    return get


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fused_dropout_uses_the_generic_masks(layer_cls, jit, dropout_references):
    """Same seed, same per-sequence masks: dropout and recurrent dropout give the generic path's numbers."""
    weights, x, mask, generic_result, no_dropout = dropout_references(layer_cls)
    fast_result = _run(_dropout_layer(layer_cls, jit), x, weights, mask=mask, training=True)
    _compare(fast_result, generic_result)
    assert not np.allclose(fast_result[0][0], no_dropout[0][0]), "dropout had no effect"


KERAS_OPTIONS = dict(return_sequences=True, return_state=True, go_backwards=True)


@pytest.fixture(scope="module")
def keras_simple_rnn():
    """The data of `test_fused_matches_keras_simple_rnn` (the `rng` fixture's draws) and
    `keras.layers.SimpleRNN`'s results on them, computed once for both layers and both kernels."""
    rng = np.random.default_rng(0)
    weights = _weights(rng)
    x = rng.standard_normal((B, T, F)).astype("float32")
    h0 = rng.standard_normal((B, H)).astype("float32")
    mask = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1] * 6, [0, 1, 1, 1, 1, 0]], bool)
    keras_rnn = _run(keras.layers.SimpleRNN(H, **KERAS_OPTIONS), x, weights, mask=mask, initial_state=[h0])
    return weights, x, h0, mask, keras_rnn


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fused_matches_keras_simple_rnn(layer_cls, jit, keras_simple_rnn):
    """Outputs, states and every gradient equal `keras.layers.SimpleRNN`'s (mask, go_backwards, initial state)."""
    weights, x, h0, mask, keras_rnn = keras_simple_rnn
    layer = layer_cls(keras.layers.SimpleRNNCell(H), jit_compile=jit, **KERAS_OPTIONS)
    ours = _run(layer, x, weights, mask=mask, initial_state=[h0])
    _compare(ours, keras_rnn)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_fused_matches_numpy_reference(layer_cls, rng):
    """The fused loop (default settings) against the float64 NumPy loop, with sequence_length."""
    kernel, recurrent, bias = weights = _weights(rng)
    x = rng.standard_normal((B, T, F)).astype("float32")
    lengths = np.array([6, 2, 0, 5])
    layer = layer_cls(ku.BasicRNNCell(H), return_sequences=True, return_state=True)
    layer.build(x.shape)
    layer.set_weights(weights)
    outputs, state = layer(x, sequence_length=lengths)
    expected, _, expected_state = basic_rnn(
        x, kernel, recurrent, bias, valid=lengths_to_valid(lengths, T), zero_output=True
    )
    _close(outputs, expected)
    _close(state, expected_state)


def _projection_matmuls(layer, x):
    """MatMul ops in the forward graph of `layer` on `x`, minus the T recurrent ones (`h U` per step)."""
    graph = tf.function(lambda inputs: layer(inputs)).get_concrete_function(tf.constant(x)).graph
    return sum(op.type == "MatMul" for op in graph.get_operations()) - x.shape[1]


@pytest.mark.parametrize("steps", [1, 3, 4, 9])
@pytest.mark.parametrize("units,expected_products", [(H, "chunked"), (1024, "one")])
def test_static_projection_chunks(steps, units, expected_products, rng):
    """Small steps are projected `Tuning().static_chunk` steps at a time, large steps in one product; both
    equal the NumPy loop, whatever T's remainder."""
    chunk = Tuning().static_chunk
    assert chunk > 1 and (B * units * units >= Tuning().static_chunk_max_macs) == (expected_products == "one")
    kernel, recurrent, bias = weights = _weights(rng, units=units, scale=0.6 / np.sqrt(units / H))
    x = rng.standard_normal((B, steps, F)).astype("float32")
    layer = StaticUnroll(ku.BasicRNNCell(units), return_sequences=True)
    layer.build(x.shape)
    layer.set_weights(weights)
    products = -(-steps // chunk) if expected_products == "chunked" else 1
    assert _projection_matmuls(layer, x) == products
    expected, _, _ = basic_rnn(x, kernel, recurrent, bias)
    _close(layer(x), expected)


def _plan(cell, x, loop="dynamic", **request):
    prepared = step.prepare(cell, tf.constant(x), time_major=False, require_static_steps=loop == "static")
    return plan.make_plan(cell, prepared, plan.Request(loop, **request))


@pytest.mark.parametrize("rnn", ["static_rnn", "dynamic_rnn"])
def test_functions_take_the_fused_path(rnn, rng):
    """`static_rnn`/`dynamic_rnn` plan the fused kernel for BasicRNNCell and match the generic path."""
    fn = getattr(ku, rnn)
    weights = _weights(rng)
    x = rng.standard_normal((B, T, F)).astype("float32")
    lengths = np.array([3, 6, 0, 2])

    def run(cell):
        cell.build((None, F))
        cell.set_weights(weights)
        xv = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            outputs, state = fn(cell, xv, sequence_length=lengths)
            loss = tf.reduce_sum(tf.square(outputs)) + tf.reduce_sum(state)
        return [outputs.numpy(), state.numpy()], [g.numpy() for g in tape.gradient(loss, [xv] + cell.trainable_weights)]

    loop = "static" if rnn == "static_rnn" else "dynamic"
    assert _plan(ku.BasicRNNCell(H), x, loop).kernel == "simple_rnn"
    fast_result = run(ku.BasicRNNCell(H))
    with testing.generic_only():
        assert _plan(ku.BasicRNNCell(H), x, loop).kernel == "generic"
        generic_result = run(ku.BasicRNNCell(H))
    _compare(fast_result, generic_result)


def _simple(cell) -> bool:
    mode = cells.mode_of(cell)
    return mode is not None and mode.family == "simple_rnn"


def test_fast_path_eligibility():
    class OwnMaths(ku.BasicRNNCell):
        def call(self, sequence, states, training=False):
            return super().call(sequence * 2.0, states, training)

    assert _simple(ku.BasicRNNCell(3))
    assert _simple(keras.layers.SimpleRNNCell(3, activation="relu"))
    assert _simple(ku.BasicRNNCell(3, activation=tf.nn.relu))  # TF1's spelling: the same kernel
    assert _simple(ku.BasicRNNCell(3, activation=tf.tanh))
    assert not _simple(ku.BasicRNNCell(3, activation="elu"))  # generic path
    assert not _simple(OwnMaths(3))
    assert not _simple(keras.layers.LSTMCell(3))
    assert projected.kind(keras.layers.LSTMCell(3)) == "lstm"
    assert projected.kind(keras.layers.GRUCell(3, reset_after=False)) == "gru"
    assert projected.kind(keras.layers.LSTMCell(3, recurrent_dropout=0.1)) is None
    x = np.zeros((B, T, F), "float32")
    assert _plan(keras.layers.GRUCell(3), x, "static").kernel == "projected"
    with testing.generic_only():
        assert _plan(ku.BasicRNNCell(3), x).kernel == "generic"
        assert _plan(keras.layers.GRUCell(3), x, "static").kernel == "generic"


# ---------------------------------------------------------------------------------- LSTM / GRU
GATED = {
    "lstm": (keras.layers.LSTMCell, keras.layers.LSTM, 4, {}),
    "gru": (keras.layers.GRUCell, keras.layers.GRU, 3, {}),
    "gru_reset_before": (keras.layers.GRUCell, keras.layers.GRU, 3, {"reset_after": False}),
}


HOISTED_OPTIONS = dict(return_sequences=True, return_state=True)


@pytest.fixture(scope="module")
def hoisted_references():
    """`get(kind)`: the data of `test_hoisted_gated_cells_match_keras` (the `rng` fixture's draws) with Keras'
    layer's and the generic path's results, computed once for both projections."""

    @functools.cache
    def get(kind):
        cell_cls, layer_cls, _, extra = GATED[kind]
        rng = np.random.default_rng(0)
        probe = cell_cls(H, **extra)
        probe.build((None, F))
        weights = [(rng.standard_normal(w.shape) * 0.5).astype("float32") for w in probe.get_weights()]
        x = rng.standard_normal((B, T, F)).astype("float32")
        mask = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1] * 6, [0, 1, 1, 1, 1, 0]], bool)
        states = [rng.standard_normal((B, H)).astype("float32") for _ in range(2 if kind == "lstm" else 1)]
        call = dict(mask=mask, initial_state=states)
        theirs = _run(layer_cls(H, **extra, **HOISTED_OPTIONS), x, weights, **dict(call))
        with testing.generic_only():
            generic_layer = StaticUnroll(cell_cls(H, **extra), jit_compile=False, **HOISTED_OPTIONS)
            generic = _run(generic_layer, x, weights, **dict(call))
        return weights, x, call, theirs, generic

    return get


@pytest.mark.parametrize("chunk", [4, 0], ids=["chunks", "one_product"])
@pytest.mark.parametrize("kind", list(GATED))
def test_hoisted_gated_cells_match_keras(kind, chunk, hoisted_references):
    """StaticUnroll's hoisted LSTM/GRU equals keras.layers.LSTM/GRU (mask, initial state) and the generic path,
    with the inputs projected in chunks of steps (T=6: a chunk of 4 and one of 2) or in one product."""
    cell_cls, _, _, extra = GATED[kind]
    weights, x, call, theirs, generic = hoisted_references(kind)
    with testing.use_tuning(plan.Tuning(static_chunk=chunk)):
        layer = StaticUnroll(cell_cls(H, **extra), jit_compile=False, **HOISTED_OPTIONS)
        assert _plan(layer.cell, x, "static").choices.static_chunk == chunk
        ours = _run(layer, x, weights, **dict(call))
    _compare(ours, theirs)
    _compare(ours, generic)


def test_hoisted_gru_dropout_matches_generic(rng):
    def make(jit=False):
        return StaticUnroll(keras.layers.GRUCell(H, dropout=0.4, seed=3), return_sequences=True, jit_compile=jit)

    probe = keras.layers.GRUCell(H)
    probe.build((None, F))
    weights = [(rng.standard_normal(w.shape) * 0.5).astype("float32") for w in probe.get_weights()]
    x = rng.standard_normal((B, T, F)).astype("float32")
    _compare(*_fast_and_generic(make, x, weights, training=True))


# ---------------------------------------------------------------------------------- jit_compile
def test_jit_compile_auto_resolves_per_layer():
    x = np.zeros((B, T, F), "float32")
    assert _plan(ku.BasicRNNCell(3), x, jit_compile="auto").compile == "kernel"
    assert (
        _plan(keras.layers.LSTMCell(3, activation="silu"), x, jit_compile="auto").compile == "none"
    )  # cannot compile alone
    assert _plan(keras.layers.LSTMCell(3), x, jit_compile="auto").kernel == "gated"
    assert _plan(ku.BasicRNNCell(3), x, "static", jit_compile="auto").compile == "none"
    assert _plan(ku.BasicRNNCell(3), x, "static", jit_compile=True).compile == "loop"
    assert _plan(ku.BasicRNNCell(3), x, jit_compile=False).compile == "none"


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_jit_compile_config_and_errors(layer_cls):
    layer = layer_cls(ku.BasicRNNCell(3), jit_compile=False)
    assert layer.get_config()["jit_compile"] is False
    assert layer_cls.from_config(layer.get_config()).jit_compile is False
    assert layer_cls(3).get_config()["jit_compile"] == "auto"
    assert layer.supports_jit is True
    with pytest.raises(ValueError, match=r"`jit_compile` must be True, False or \"auto\". Received: jit_compile='yes'"):
        layer_cls(3, jit_compile="yes")


@pytest.mark.parametrize("model_jit", [False, True], ids=["fit", "fit_xla"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_model_fit_with_and_without_xla(layer_cls, model_jit, rng):
    """The layer's own XLA function trains inside `model.fit` (Keras compiling the step or not) as the generic path."""
    x = rng.standard_normal((8, T, F)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    weights = _weights(rng)
    results = []
    for jit, generic in ((True, False), (False, False), (False, True)):
        keras.utils.set_random_seed(1)
        with testing.generic_only() if generic else contextlib.nullcontext():
            layer = layer_cls(ku.BasicRNNCell(H), jit_compile=jit)
            model = keras.Sequential([keras.Input((T, F)), layer, keras.layers.Dense(1, kernel_initializer="ones")])
            layer.set_weights(weights)
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=model_jit)
            history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        results.append((history.history["loss"], layer.get_weights()))
    (loss_xla, weights_xla), *others = results
    assert loss_xla[1] < loss_xla[0]
    for loss_other, weights_other in others:  # the fused loop without XLA, then the generic step
        _close(loss_xla, loss_other, "losses")
        for a, b in zip(weights_xla, weights_other):
            _close(a, b, "trained weights")


def test_dynamic_jit_on_a_generic_cell_warns_and_runs_uncompiled(rng):
    x = rng.standard_normal((B, T, F)).astype("float32")
    with pytest.warns(UserWarning, match="cannot be XLA-compiled on its own"):  # silu: no fused kernel
        layer = DynamicUnroll(keras.layers.LSTMCell(H, activation="silu"), jit_compile=True)
    out = layer(x)
    reference = keras.layers.LSTM(H, activation="silu")
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    _close(out, reference(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)  # warned once, when the layer was made


# ------------------------------------------------------------------------ tapes around the XLA loop
def _tape_case(rng):
    weights = _weights(rng)
    x = rng.standard_normal((B, T, F)).astype("float32")
    lengths = np.array([6, 2, 0, 4], "int32")
    return weights, x, lengths


def _built(layer_cls, weights, jit="auto"):
    layer = layer_cls(ku.BasicRNNCell(H), return_sequences=True, return_state=True, jit_compile=jit)
    layer.build((B, T, F))
    layer.set_weights(weights)
    return layer


@pytest.fixture(scope="module")
def tape_layers():
    """`get(layer_cls, jit="auto")`: the layer `_built` with `_tape_case`'s weights, one per (class, jit) for the
    whole module. The tape tests share them (and run the generic path on the `jit=False` one), so that a layer's
    cached functions, and the gradient functions TensorFlow derives from them, trace once for all the tests."""
    weights = _tape_case(np.random.default_rng(0))[0]  # the `rng` fixture's first draw: the tests' own weights

    @functools.cache
    def get(layer_cls, jit="auto"):
        return _built(layer_cls, weights, jit)

    return get


def _loss(layer, x, lengths):
    outputs, state = layer(x, sequence_length=lengths)
    return tf.reduce_sum(tf.square(outputs)) + tf.reduce_sum(state * 0.5)


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("layer_cls", LAYERS)
def test_persistent_tape_matches_generic_path(layer_cls, in_function, rng, tape_layers):
    """A persistent tape differentiates the default (XLA for DynamicUnroll) layer; twice, same numbers."""
    _, x, lengths = _tape_case(rng)
    x = tf.constant(x)

    def grads(layer):
        def run():
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                loss = _loss(layer, x, lengths)
            first = tape.gradient(loss, [x] + layer.trainable_weights)
            second = tape.gradient(loss, layer.trainable_weights)  # a persistent tape answers again
            return first, second

        first, second = (tf.function(run) if in_function else run)()
        for a, b in zip(first[1:], second):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        return [g.numpy() for g in first]

    ours = grads(tape_layers(layer_cls))
    with testing.generic_only():
        generic = grads(tape_layers(layer_cls, jit=False))
    for i, (a, b) in enumerate(zip(ours, generic)):
        assert np.abs(b).max() > 0
        _close(a, b, f"gradient {i}")


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_nested_tapes_first_order_matches_generic_path(layer_cls, rng, tape_layers):
    """The inner gradient, computed while an outer tape records, equals the generic path's."""
    _, x, lengths = _tape_case(rng)

    def grads(layer):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = _loss(layer, x, lengths)
            inner_grads = inner.gradient(loss, layer.trainable_weights)
        del outer
        return [g.numpy() for g in inner_grads]

    ours = grads(tape_layers(layer_cls))
    with testing.generic_only():
        generic = grads(tape_layers(layer_cls, jit=False))
    for i, (a, b) in enumerate(zip(ours, generic)):
        _close(a, b, f"gradient {i}")


def _assert_second_order_refused(rng, tape_layers):
    """A second-order gradient through the XLA-compiled fused loop raises the clear error."""
    _, x, lengths = _tape_case(rng)
    layer = tape_layers(DynamicUnroll)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = _loss(layer, x, lengths)
        penalty = tf.add_n([tf.reduce_sum(tf.square(g)) for g in inner.gradient(loss, layer.trainable_weights)])
    with pytest.raises(NotImplementedError, match="first-order gradient only.*jit_compile=False"):
        outer.gradient(penalty, layer.trainable_weights)


def test_second_order_through_the_xla_loop_raises_a_clear_error(rng, tape_layers):
    _assert_second_order_refused(rng, tape_layers)


def _second_order(layer, x, lengths):
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = _loss(layer, x, lengths)
        penalty = tf.add_n([tf.reduce_sum(tf.square(g)) for g in inner.gradient(loss, layer.trainable_weights)])
    return [g.numpy() for g in outer.gradient(penalty, layer.trainable_weights)]


def _jvp(layer, x, lengths, tangent):
    with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
        outputs, _ = layer(x, sequence_length=lengths)
    return accumulator.jvp(outputs).numpy()


def test_the_escape_hatch_named_by_the_error_works(rng, tape_layers):
    """`jit_compile=False` (the fused loop uncompiled) gives second-order gradients and forward-mode
    JVPs equal to the generic path's; with XLA, forward mode raises the same clear error."""
    weights, x, lengths = _tape_case(rng)
    x, tangent = tf.constant(x), tf.constant(rng.standard_normal(x.shape).astype("float32"))
    # The fused loop uncompiled, under generic_only() the generic step. A function once differentiated to second
    # order fails under a ForwardAccumulator (TensorFlow's own bug, a plain `tf.function` with a TensorArray in a
    # while loop too: "`dtype` variant is not compatible with 1 of dtype int64"): the JVPs take a layer of their own.
    uncompiled, for_jvp = tape_layers(DynamicUnroll, jit=False), _built(DynamicUnroll, weights, jit=False)
    ours = _second_order(uncompiled, x, lengths)
    ours_jvp = _jvp(for_jvp, x, lengths, tangent)
    with testing.generic_only():
        generic = _second_order(uncompiled, x, lengths)
        generic_jvp = _jvp(for_jvp, x, lengths, tangent)
    for i, (a, b) in enumerate(zip(ours, generic)):
        assert np.abs(b).max() > 0
        _close(a, b, f"second-order gradient {i}")
    assert np.abs(generic_jvp).max() > 0
    _close(ours_jvp, generic_jvp, "jvp")
    with pytest.raises(NotImplementedError, match="ForwardAccumulator.*jit_compile=False"):
        _jvp(_built(DynamicUnroll, weights), x, lengths, tangent)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_jacobian_matches_generic_path(layer_cls, rng):
    """Layers of its own: `pfor` fails to vectorize the gradient of a function differentiated under nested tapes
    before (TensorFlow: "Required handle data not set" for a TensorList), which the `tape_layers` were."""
    weights, x, lengths = _tape_case(rng)
    x = tf.constant(x[:2, :3])

    def jacobian(layer, use_pfor=True):
        with tf.GradientTape(persistent=not use_pfor) as tape:
            tape.watch(x)
            outputs, _ = layer(x, sequence_length=np.array([3, 2], "int32"))
        return tape.jacobian(outputs, x, experimental_use_pfor=use_pfor).numpy()

    ours = jacobian(_built(layer_cls, weights))  # vectorized by `pfor`, as users get it
    with testing.generic_only():  # the reference: the generic step eagerly, one gradient per output
        generic = jacobian(_built(StaticUnroll, weights, jit=False), use_pfor=False)
    assert ours.shape == (2, 3, H, 2, 3, F) and np.abs(generic).max() > 0
    _close(ours, generic, "jacobian")


DU_INSIDE = {False: Tuning(du_in_loop_min_macs=0), True: Tuning(du_in_loop_xla_macs=(0, 2**62))}


def _recurrent_dropout_layer(case, jit):
    """The layer of `recurrent_dropout_references`' case `case`, the same seed: the same dropout masks."""
    return DynamicUnroll(ku.BasicRNNCell(H, recurrent_dropout=0.3, seed=5), jit_compile=jit, **CASES[case][0])


@pytest.fixture(scope="module")
def recurrent_dropout_references():
    """`get(case)`: the data (the `rng` fixture's draws) of the `case` of `CASES` with recurrent dropout while
    training and the generic path's results, computed once for the kernel-gradient placements of
    `test_kernel_gradient_inside_the_backward_loop_matches_generic_path` and
    `test_xla_forward_with_uncompiled_backward_matches_generic_path`."""

    @functools.cache
    def get(case):
        rng = np.random.default_rng(0)
        weights, x = _weights(rng), rng.standard_normal((B, T, F)).astype("float32")
        call_kwargs = CASES[case][2](rng)
        with testing.generic_only():
            cell = ku.BasicRNNCell(H, recurrent_dropout=0.3, seed=5)  # the same seed: the same masks
            generic = _run(_generic(cell=cell, **CASES[case][0]), x, weights, training=True, **dict(call_kwargs))
        return weights, x, call_kwargs, generic

    return get


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("case", ["mask+go_backwards+initial_state", "sequence_length+initial_state"])
def test_kernel_gradient_inside_the_backward_loop_matches_generic_path(case, jit, recurrent_dropout_references):
    """The other `dU` placement (accumulated per step in the backward loop; chosen by size) stays correct."""
    weights, x, call_kwargs, generic_result = recurrent_dropout_references(case)
    with testing.use_tuning(DU_INSIDE[jit]):
        assert _plan(ku.BasicRNNCell(H), x, jit_compile=jit).choices.du_in_loop
        fast_result = _run(_recurrent_dropout_layer(case, jit), x, weights, training=True, **dict(call_kwargs))
    _compare(fast_result, generic_result)


def test_kernel_gradient_placement_by_size():
    shapes = ((256, 256), (64, 128), (32, 128), (32, 32))  # (B, H)
    assert [plan.simple_rnn_choices(b, h, False, Tuning()).du_in_loop for b, h in shapes] == [True, False, False, False]
    # (256, 256) under XLA runs its backward loop uncompiled and chunked: `dU` is one product per chunk there.
    assert [plan.simple_rnn_choices(b, h, True, Tuning()).du_in_loop for b, h in shapes] == [False, False, True, False]
    assert plan.simple_rnn_choices(256, 256, False, Tuning(du_in_loop_min_macs=2**62)).du_in_loop is False


@pytest.fixture(scope="module")
def last_output_reference():
    """The data of `test_last_output_only_matches_generic_path` (the `rng` fixture's draws) and the generic
    path's results, computed once for both kernels."""
    rng = np.random.default_rng(0)
    weights, x = _weights(rng), rng.standard_normal((B, T, F)).astype("float32")
    mask = np.array([[1, 1, 0, 1, 1, 0], [1] * 6, [0] * 6, [0, 1, 1, 1, 1, 1]], bool)
    with testing.generic_only():
        generic = _run(_generic(cell=ku.BasicRNNCell(H)), x, weights, mask=mask)
    return weights, x, mask, generic


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_last_output_only_matches_generic_path(jit, last_output_reference):
    """With `return_sequences=False` the state sequence stays inside the kernel (its backward pass reads no
    state gradients); the gradients still equal the generic path's."""
    weights, x, mask, generic = last_output_reference
    _compare(_run(DynamicUnroll(ku.BasicRNNCell(H), jit_compile=jit), x, weights, mask=mask), generic)


@pytest.mark.parametrize("case", ["mask+go_backwards+initial_state", "sequence_length+initial_state"])
def test_xla_forward_with_uncompiled_backward_matches_generic_path(
    case, rng, tape_layers, recurrent_dropout_references
):
    """Large steps under `jit_compile` run the backward loop uncompiled after the compiled forward loop;
    that pairing (forced here at a small size) equals the generic path, recurrent dropout included, and
    still answers a second-order gradient with the clear error."""
    weights, x, call_kwargs, generic_result = recurrent_dropout_references(case)
    with testing.use_tuning(Tuning(uncompiled_backward_min_macs=0, du_in_loop_min_macs=0)):
        choices = _plan(ku.BasicRNNCell(H), x, jit_compile=True).choices
        # Chunked and uncompiled, `dU` is one product per chunk (summing it in the nested loops was slower).
        assert choices.jit and not choices.compile_backward and not choices.du_in_loop
        fast_result = _run(_recurrent_dropout_layer(case, jit=True), x, weights, training=True, **dict(call_kwargs))
        _assert_second_order_refused(rng, tape_layers)
    _compare(fast_result, generic_result)


def _kernel_grads(cell, x, init, run):
    """`run()` -> results; returns (results, gradients of a loss over them w.r.t. x, init and the weights)."""
    with tf.GradientTape() as tape:
        tape.watch([x, init])
        results = run()
        loss = sum(tf.reduce_sum(tf.square(r) + 0.5 * r * (i + 1)) for i, r in enumerate(results))
    grads = tape.gradient(loss, [x, init, *cell.trainable_weights])
    return [r.numpy() for r in results], [g.numpy() for g in grads]


def _chunk_layer(steps, options, sequences, backwards, weights, jit):
    cell = ku.BasicRNNCell(H, seed=3, **options)  # the same seed: the same dropout masks
    layer = DynamicUnroll(cell, return_sequences=sequences, return_state=True, jit_compile=jit, go_backwards=backwards)
    layer.build((B, steps, F))
    layer.set_weights(weights)
    return layer


@pytest.fixture(scope="module")
def chunk_cases():
    """The cases of the chunked XLA passes and the generic path's results for them, computed once for both
    backward passes: `(label, x, init, call, options, sequences, backwards, weights, generic results, plan)`."""
    rng = np.random.default_rng(0)
    x13 = tf.constant(rng.standard_normal((B, 13, F)).astype("float32"))
    init = tf.constant(rng.standard_normal((B, H)).astype("float32"))
    weights = _weights(rng)
    cases = [
        ("mask, go_backwards", 13, dict(mask=rng.random((B, 13)) > 0.3), {}, True, True),
        ("stop 9, dropout", 12, dict(sequence_length=tf.constant([9, 0, 5, 6])),
         dict(dropout=0.3, recurrent_dropout=0.25), True, False),
        ("last output, T = 12", 12, {}, {}, False, False),
    ]  # fmt: skip
    found = []
    for label, steps, call, options, sequences, backwards in cases:
        x, training = x13[:, :steps], bool(options)
        layer = _chunk_layer(steps, options, sequences, backwards, weights, jit=False)
        with testing.generic_only():
            outs = lambda: list(layer(x, initial_state=init, training=training, **call))  # noqa: E731
            generic = _kernel_grads(layer.cell, x, init, outs)
        taken = testing.plans(layer)[-1]
        found.append((label, x, init, call, options, sequences, backwards, weights, generic, taken))
    return found


@pytest.mark.parametrize("compile_backward", [True, False], ids=["xla-backward", "graph-backward"])
def test_xla_passes_in_several_chunks_match_generic_path(compile_backward, chunk_cases):
    """A chunk budget of 3 steps (`Tuning.chunk_bytes`): 13 steps run as 4 full chunks and a partial one,
    12 as 4 full chunks, inputs projected and back-propagated chunk by chunk, `dU` summed in the compiled
    backward loop. Masks with `go_backwards`; an early stop inside a chunk (`sequence_length`) with dropout and
    recurrent dropout; the last output only. (The generic path's results: `chunk_cases`, shared by both.)"""
    three_steps = 3 * B * H * 4  # bytes of 3 steps' (B, H) float32 rows
    value = Tuning(
        chunk_bytes=three_steps,
        du_in_loop_xla_macs=(0, 2**62),
        uncompiled_backward_min_macs=0 if not compile_backward else 2**62,
    )
    for label, x, init, call, options, sequences, backwards, weights, generic, generic_plan in chunk_cases:
        assert (generic_plan["kernel"], generic_plan["compile"]) == ("generic", "none"), label
        layer = _chunk_layer(x.shape[1], options, sequences, backwards, weights, jit=True)
        with testing.use_tuning(value):
            outs = lambda: list(layer(x, initial_state=init, training=bool(options), **call))  # noqa: E731
            fused = _kernel_grads(layer.cell, x, init, outs)
            taken = testing.plans(layer)[-1]
            assert (taken["kernel"], taken["compile"]) == ("simple_rnn", "kernel"), label
        _compare(fused, generic)


def test_uncompiled_backward_under_jit_by_size():
    shapes = ((256, 256), (64, 256), (512, 128), (32, 256), (32, 512), (64, 128), (32, 128), (32, 32))  # (B, H)
    chosen = [not plan.simple_rnn_choices(b, h, True, Tuning()).compile_backward for b, h in shapes]
    assert chosen == [True, True, True, True, False, False, False, False]


def test_xla_pass_choices_follow_each_call_shape(rng):
    """The size-dependent choices (dU inside the loop, backward compiled) are made per call from its own
    shape, and a layer called with several batch sizes gives each the numbers of the generic path."""
    expected = [(True, True), (False, False), (True, True)]  # B·H·H: 2**17, 2**22, 3·2**16
    layer = DynamicUnroll(ku.BasicRNNCell(256), jit_compile=True)
    for batch, (inside, compiled) in zip((2, 64, 3), expected):
        x = rng.standard_normal((batch, 2, 3)).astype("float32")
        choices = _plan(ku.BasicRNNCell(256), x, jit_compile=True).choices
        assert (choices.du_in_loop, choices.compile_backward) == (inside, compiled)
        out = layer(x)
        with testing.generic_only():
            reference = DynamicUnroll(layer.cell, jit_compile=False)(x)
        _close(out, reference)


def test_bucket_sizes_pad_at_most_a_quarter():
    steps = np.arange(1, 3000)
    buckets = chunks.bucket_steps(tf.constant(steps, tf.int32)).numpy()
    assert (buckets >= steps).all() and ((buckets - steps) <= np.maximum(3, steps // 4)).all()
    assert [int(chunks.bucket_steps(tf.constant(t))) for t in (1, 5, 9, 13, 65, 1000)] == [4, 8, 12, 16, 80, 1024]
    assert len(set(buckets[4:64])) == 11  # lengths 5..64 compile 11 shapes, not 60


@pytest.mark.parametrize("return_sequences", [True, False])
def test_lengths_that_change_every_call_match_the_generic_path(return_sequences, rng):
    """Eager calls (and graphs with an open time axis) pad T to a bucket before the XLA passes; the padding
    never shows in outputs, states or gradients, with or without `sequence_length`."""
    layer = DynamicUnroll(ku.BasicRNNCell(H), return_sequences=return_sequences, return_state=True)
    # One generic layer for every length: its cached functions leave T open (one trace with lengths, one without).
    generic_layer = DynamicUnroll(
        ku.BasicRNNCell(H), return_sequences=return_sequences, return_state=True, jit_compile=False
    )
    for steps, lengths in ((5, None), (13, np.array([13, 5, 0, 1])), (9, np.array([2, 9, 9, 4]))):
        x = rng.standard_normal((B, steps, F)).astype("float32")
        kwargs = {} if lengths is None else dict(sequence_length=lengths)
        if not layer.built:
            layer.build(x.shape)
            generic_layer.build(x.shape)
        weights = layer.get_weights()
        fast_result = _run(layer, x, weights, **kwargs)
        with testing.generic_only():
            generic_result = _run(generic_layer, x, weights, **kwargs)
        _compare(fast_result, generic_result)


def _writes_per_step(concrete) -> int:
    """TensorList writes in a traced function and the functions it calls (the state sequence's)."""
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node) + [node for fn in graph.library.function for node in fn.node_def]
    return sum(node.op == "TensorListSetItem" for node in nodes)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_inference_writes_no_state_sequence_and_a_later_gradient_recomputes_it(jit, rng):
    """`return_sequences=False` with no tape: the fused forward keeps only the last state. A function traced
    that way and differentiated afterwards (under a tape at call time) still gets the generic path's gradients."""
    weights = _weights(rng)
    x = tf.constant(rng.standard_normal((B, T, F)).astype("float32"))
    layer = DynamicUnroll(ku.BasicRNNCell(H), jit_compile=jit)
    layer.build(x.shape)
    layer.set_weights(weights)
    # training=False (as model.predict): a call without `training` traces the serving graph (docs/deploy.md)
    traced = tf.function(lambda x: layer(x, training=False))
    assert _writes_per_step(traced.get_concrete_function(x)) == 0
    sequences = tf.function(
        lambda x: DynamicUnroll(layer.cell, return_sequences=True, jit_compile=jit)(x, training=False)
    )
    assert _writes_per_step(sequences.get_concrete_function(x)) >= 1  # the same check sees a kept sequence
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(traced(x)))
    fast = tape.gradient(loss, [x] + layer.trainable_weights)
    with testing.generic_only():
        generic_layer = DynamicUnroll(ku.BasicRNNCell(H), jit_compile=False)
        generic_layer.build(x.shape)
        generic_layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(generic_layer(x)))
        generic = tape.gradient(loss, [x] + generic_layer.trainable_weights)
    for name, a, b in zip(["x", "kernel", "recurrent_kernel", "bias"], fast, generic):
        _close(a.numpy(), b.numpy(), name)


def test_simple_rnn_inference_projects_inside_the_compiled_loop_and_matches_keras(rng):
    """No tape: the compiled SimpleRNN loop projects each step itself. Keras' numbers with a mask,
    `go_backwards`, an initial state and both output forms; the generic path's with `sequence_length`."""
    weights = _weights(rng)
    x = tf.constant(rng.standard_normal((B, T, F)).astype("float32"))
    mask = tf.constant(rng.random((B, T)) > 0.3)
    h0 = tf.constant(rng.standard_normal((B, H)).astype("float32"))
    for go_backwards in (False, True):
        options = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
        ours = DynamicUnroll(ku.BasicRNNCell(H), **options)
        ours.build(x.shape)
        ours.set_weights(weights)
        keras_layer = keras.layers.SimpleRNN(H, **options)
        keras_layer.build(x.shape)
        keras_layer.set_weights(weights)
        traced = tf.function(lambda x, m, s: ours(x, mask=m, initial_state=s, training=False))  # not serving
        graph = traced.get_concrete_function(x, mask, h0).graph.as_graph_def()
        assert "MatMul" not in [n.op for n in graph.node]  # no hoisted product outside the compiled loop
        for k, (a, b) in enumerate(zip(traced(x, mask, h0), keras_layer(x, mask=mask, initial_state=h0))):
            _close(a.numpy(), b.numpy(), f"go_backwards={go_backwards}: result {k}")
    lengths = np.array([T, 2, 0, 4], "int32")
    last_only = DynamicUnroll(ku.BasicRNNCell(H), return_state=True)
    last_only.build(x.shape)
    last_only.set_weights(weights)
    actual = tf.function(lambda x: last_only(x, sequence_length=lengths))(x)
    with testing.generic_only():
        expected = last_only(x, sequence_length=lengths)
    for k, (a, b) in enumerate(zip(actual, expected)):
        _close(a.numpy(), b.numpy(), f"sequence_length: result {k}")


_MIRRORED_CHILD = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_unroll as ku
from keras_unroll import testing

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layer = ku.DynamicUnroll(keras.layers.LSTMCell(3), jit_compile=True)
    layer.build((2, 5, 2))
x = tf.constant(np.linspace(-1, 1, 20, dtype="float32").reshape(2, 5, 2))
with testing.generic_only():
    generic = strategy.run(lambda: layer(x))  # eager: one thread per replica
fused = strategy.run(lambda: layer(x))
kernels = [p["kernel"] for p in testing.plans(layer)]
same = all(np.allclose(a, b, atol=1e-6) for a, b in zip(strategy.experimental_local_results(generic),
                                                      strategy.experimental_local_results(fused)))
print("kernels", kernels, "same", same)
"""


def test_generic_only_reaches_the_replica_threads_of_a_mirrored_strategy():
    """`MirroredStrategy.run` called eagerly runs each replica in a thread of its own, which does not inherit
    context variables: the caller's `generic_only()` block still plans its calls, and the numbers agree."""
    done = run_forked(["-c", _MIRRORED_CHILD], timeout=600)  # a fresh process: its two logical CPUs
    assert done.returncode == 0, done.stderr[-4000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("kernels")][-1]
    assert line == "kernels ['generic', 'generic', 'gated', 'gated'] same True"
