"""Inputs that used to give wrong numbers without an error, or valid inputs that failed deep inside TensorFlow.

Each case is run on every unroll it concerns (both layers, both functions). The worst class first: a result
that differs from the reference without an error. docs/hostile-input.md lists each case and what it gets.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import layers, pairwise, unroll_calls

import keras_unroll as ku

B, T, F, H = 3, 4, 2, 5
X = np.random.default_rng(3).standard_normal((B, T, F)).astype("float32")

UNROLLS = unroll_calls(return_sequences=True, return_state=True)  # each returns (sequence outputs, final state)
unrolls = pytest.mark.parametrize("unroll", list(UNROLLS.values()), ids=list(UNROLLS))


def _cell(units=H, **kwargs):
    return ku.BasicRNNCell(
        units,
        kernel_initializer=keras.initializers.Constant(0.3),
        recurrent_initializer=keras.initializers.Constant(-0.2),
        bias_initializer=keras.initializers.Constant(0.1),
        **kwargs,
    )


# ------------------------------------------------------------------------- 1. lengths beyond int32
@unrolls
@pytest.mark.parametrize("length", [2**32 + 1, 2**31], ids=["2**32+1", "2**31"])
def test_sequence_length_beyond_int32_is_refused_with_its_value(unroll, length):
    with pytest.raises(ValueError, match=rf"sequence_length.*{length}"):
        unroll(_cell(), X, sequence_length=np.array([length, 2, 3], "int64"))


@unrolls
def test_lengths_known_only_when_the_graph_runs_are_checked_there(unroll):
    """In a `tf.function` the lengths are checked by assertions in the graph: one trace serves every call, so
    a valid call runs, and lengths above T or beyond int32 (which a cast would wrap to small valid-looking
    numbers) raise with their value."""
    cell = _cell()
    traced = tf.function(lambda x, lengths: unroll(cell, x, sequence_length=lengths))
    traced(tf.constant(X), tf.constant([4, 2, 3], tf.int64))
    traces = traced.experimental_get_tracing_count()  # two when the first trace created the cell's weights
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_length` values must be <= T"):
        traced(tf.constant(X), tf.constant([9, 1, 2], tf.int64))
    for length in (2**32 + 1, 2**31):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"sequence_length.*{length}"):
            traced(tf.constant(X), tf.constant([length, 2, 3], tf.int64))
    assert traced.experimental_get_tracing_count() == traces  # the values were checked by the graph


# ------------------------------------------------------------------------- 2. out-of-range under XLA
@layers
def test_out_of_range_lengths_under_xla_give_nan_rows_not_clipped_numbers(layer_cls):
    """XLA drops `tf.debugging` assertions; an invalid row must not pass for a clipped one (it is NaN)."""
    x_in, l_in = keras.Input((5, 2)), keras.Input((), dtype="int32")
    y = layer_cls(_cell(), return_sequences=True)(x_in, sequence_length=l_in)
    model = keras.Model([x_in, l_in], y)
    model.compile(jit_compile=True)
    x = np.random.default_rng(0).standard_normal((4, 5, 2)).astype("float32")
    out = model.predict([x, np.array([9, 1, 2, 3], "int32")], verbose=0)
    assert np.isnan(out[0]).all(), "the row with length 9 > T = 5"
    clean = model.predict([x, np.array([5, 1, 2, 3], "int32")], verbose=0)
    np.testing.assert_allclose(out[1:], clean[1:], rtol=1e-6)


# ------------------------------------------------------------------------- 3. non-bool flags
@pytest.mark.parametrize("fn", [ku.static_rnn, ku.dynamic_rnn], ids=["static_rnn", "dynamic_rnn"])
def test_functions_refuse_non_bool_time_major(fn):
    with pytest.raises(TypeError, match=r"`time_major` must be a bool.*Received: time_major='False'"):
        fn(_cell(), X, time_major="False")


@pytest.mark.parametrize("value", [-1, "x", 1.5])
def test_dynamic_rnn_refuses_bad_parallel_iterations(value):
    with pytest.raises(
        ValueError, match=r"`parallel_iterations` must be None or a positive integer.*Received: parallel_iterations="
    ):
        ku.dynamic_rnn(keras.layers.LSTMCell(3), X, parallel_iterations=value)


# ------------------------------------------------------------------------- 4. masks that are not boolean
@layers
@pytest.mark.parametrize("value", [0.5, np.nan, -3.0])
def test_float_masks_other_than_zero_or_one_are_refused(layer_cls, value):
    mask = np.ones((B, T), "float32")
    mask[0, 1] = value
    with pytest.raises(ValueError, match=r"`mask` must be boolean, or hold only 0 and 1.*Received: mask values"):
        layer_cls(_cell())(X, mask=mask)


@layers
def test_zero_one_float_masks_equal_boolean_masks(layer_cls):
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [0, 1, 1, 1]], bool)
    cell = _cell()
    np.testing.assert_allclose(
        layer_cls(cell)(X, mask=mask.astype("float32")), layer_cls(cell)(X, mask=mask), rtol=1e-6
    )


@layers
def test_string_masks_are_a_type_error(layer_cls):
    with pytest.raises(TypeError, match=r"`mask` must be a boolean .*Received: mask.dtype=string"):
        layer_cls(_cell())(X, mask=np.full((B, T), "a"))


# ------------------------------------------------------------------------- 5. NaN in the padding
PADDINGS = {
    "sequence_length": lambda: dict(sequence_length=np.array([2, 4, 0], "int32")),
    "mask": lambda: dict(mask=np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)),
}
CELLS = {
    "BasicRNNCell": lambda: _cell(),
    "LSTMCell": lambda: keras.layers.LSTMCell(H, kernel_initializer="ones", recurrent_initializer="ones"),
}


def _gradients(make_layer, cell, x, **kwargs):
    layer = make_layer(cell)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, **kwargs)
        loss = sum(tf.reduce_sum(o) for o in tf.nest.flatten(outputs))
    return tape.gradient(loss, [x] + layer.trainable_weights)


LOOPS = {
    "StaticUnroll": lambda c: ku.StaticUnroll(c, return_sequences=True),
    "DynamicUnroll": lambda c: ku.DynamicUnroll(c, return_sequences=True),
    "DynamicUnroll(jit_compile=False)": lambda c: ku.DynamicUnroll(c, return_sequences=True, jit_compile=False),
    "swap_memory": lambda c: ku.DynamicUnroll(c, return_sequences=True, swap_memory=True),
    "recompute": lambda c: ku.DynamicUnroll(c, return_sequences=True, recompute=2),
}


# Pairwise (10 cases, not the 20 of the full product): each loop runs both cells and both paddings, and each
# cell both paddings.
@pairwise(loop=list(LOOPS), cell_name=list(CELLS), padding=list(PADDINGS))
def test_nan_in_the_padding_does_not_reach_any_gradient(loop, cell_name, padding):
    kwargs = PADDINGS[padding]()
    valid = kwargs["mask"] if "mask" in kwargs else np.arange(T)[None, :] < kwargs["sequence_length"][:, None]
    poisoned = X.copy()
    poisoned[~valid] = np.nan
    poisoned[~valid & (np.arange(T)[None, :] % 2 == 0)] = np.inf
    cell = CELLS[cell_name]()
    clean = _gradients(LOOPS[loop], cell, np.where(valid[..., None], X, 0.0).astype("float32"), **kwargs)
    dirty = _gradients(LOOPS[loop], cell, poisoned, **kwargs)
    for a, b in zip(dirty, clean):
        assert np.isfinite(np.asarray(a)).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- 6. stacks of non-default dtype
STACKS = {
    "DynamicUnroll": lambda cells, x: ku.DynamicUnroll(cells, return_sequences=True)(x),
    "StaticUnroll+mask": lambda cells, x: ku.StaticUnroll(cells, return_sequences=True)(
        x, mask=np.ones(x.shape[:2], bool)
    ),
    "dynamic_rnn": lambda cells, x: ku.dynamic_rnn(cells, x)[0],
}


@pytest.mark.parametrize("make", list(STACKS.values()), ids=list(STACKS))
def test_a_list_of_float64_cells_computes_in_float64(make):
    """The stack takes its cells' dtype (it computed in float32 and failed); numbers equal keras.layers.RNN's."""
    cells = [ku.BasicRNNCell(4, dtype="float64"), keras.layers.LSTMCell(3, dtype="float64")]
    x = X.astype("float64")
    out = make(cells, x)
    reference = keras.layers.RNN(cells, return_sequences=True)  # the same (built) cells, so the same weights
    np.testing.assert_allclose(np.asarray(out, "float64"), np.asarray(reference(x), "float64"), rtol=1e-6)
    if make is STACKS["dynamic_rnn"]:
        assert out.dtype == tf.float64


# ------------------------------------------------------------------------- 7./8. unknown batch sizes
@pytest.mark.parametrize(
    "options",
    [dict(), dict(swap_memory=True), dict(recompute=2), dict(jit_compile=False)],
    ids=["default", "swap_memory", "recompute", "no-xla"],
)
def test_empty_batch_of_unknown_size_with_lengths(options):
    layer = ku.DynamicUnroll(_cell(), return_sequences=True, **options)
    run = tf.function(
        lambda x, lengths: layer(x, sequence_length=lengths),
        input_signature=[tf.TensorSpec((None, None, F)), tf.TensorSpec((None,), tf.int32)],
    )
    x = tf.zeros((0, T, F))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = run(x, tf.zeros((0,), tf.int32))
    assert out.shape == (0, T, H)
    assert tape.gradient(out, x).shape == (0, T, F)


ONE_SIDED = {  # StaticUnroll takes no `recompute` (its error is tested in test_memory.py)
    "StaticUnroll": (ku.StaticUnroll, dict()),
    "StaticUnroll-no-xla": (ku.StaticUnroll, dict(jit_compile=False)),
    "DynamicUnroll": (ku.DynamicUnroll, dict()),
    "DynamicUnroll-recompute": (ku.DynamicUnroll, dict(recompute=2)),
    "DynamicUnroll-no-xla": (ku.DynamicUnroll, dict(jit_compile=False)),
}


@pytest.mark.parametrize("case", list(ONE_SIDED))
def test_initial_state_batch_unknown_on_one_side(case):
    layer_cls, options = ONE_SIDED[case]
    layer = layer_cls(_cell(), **options)
    empty = tf.function(
        lambda x, s: layer(x, initial_state=s), input_signature=[tf.TensorSpec((None, T, F)), tf.TensorSpec((0, H))]
    )
    assert empty(tf.zeros((0, T, F)), tf.zeros((0, H))).shape == (0, H)
    open_state = tf.function(
        lambda x, s: layer(x, initial_state=s), input_signature=[tf.TensorSpec((B, T, F)), tf.TensorSpec((None, H))]
    )
    np.testing.assert_allclose(open_state(tf.constant(X), tf.zeros((B, H))), layer(X), rtol=1e-6)


# ------------------------------------------------------------------------- 9. recompute beyond int32
def test_recompute_beyond_int32_is_refused():
    with pytest.raises(ValueError, match=r"`recompute` must be .* at most 2147483647.*Received: recompute=2147483648"):
        ku.DynamicUnroll(_cell(), recompute=2**31)


def test_recompute_longer_than_the_sequence_with_lengths():
    cell = _cell()
    expected = ku.dynamic_rnn(cell, X, sequence_length=[4, 2, 0])
    got = ku.dynamic_rnn(cell, X, sequence_length=[4, 2, 0], recompute=2**31 - 1)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# ------------------------------------------------------------------------- errors that name what was wrong
def test_sequence_length_of_another_batch_in_a_function():
    cell = _cell()
    run = tf.function(
        lambda x, lengths: ku.dynamic_rnn(cell, x, sequence_length=lengths),
        input_signature=[tf.TensorSpec((None, T, F)), tf.TensorSpec((None,), tf.int32)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`sequence_length` must hold one length per row"):
        run(tf.constant(X), tf.constant([1, 2]))


@layers
def test_training_must_be_a_bool(layer_cls):
    with pytest.raises(
        TypeError, match=r"`training` must be a bool, None or a boolean tensor. Received: training=\[\]"
    ):
        layer_cls(keras.layers.LSTMCell(3))(X, training=[])


class _WrongWidth(keras.layers.Layer):
    """A custom cell whose state comes back 3 wide while it declares 5."""

    state_size = 5

    def call(self, x, states):
        h = tf.tanh(x[:, :1] + states[0][:, :3])
        return h, [h]


@pytest.mark.parametrize(
    "fn",
    [lambda c: ku.DynamicUnroll(c)(X), lambda c: ku.StaticUnroll(c)(X, mask=np.ones((B, T), bool))],
    ids=["DynamicUnroll", "StaticUnroll+mask"],
)
def test_custom_cell_whose_state_disagrees_with_its_state_size(fn):
    with pytest.raises(ValueError, match=r"declares `state_size` 5.*returned a state of shape \((None|3), 3\)"):
        fn(_WrongWidth())


def test_training_one_layer_from_two_threads_is_a_clear_error_or_works():
    """Keras cells keep dropout masks on themselves while a loop is traced; two threads tracing the same
    layer at once either both succeed or one gets the clear error (documented in docs/hostile-input.md)."""
    layer = ku.StaticUnroll(keras.layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.5, seed=1))  # generic step
    layer(X)
    errors = []

    def train():
        try:
            for _ in range(5):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(layer(X, training=True))
                tape.gradient(loss, layer.trainable_weights)
        except RuntimeError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=train) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all("not to be trained from two threads at once" in e for e in errors), errors


ERRORS = {
    "scalar input": (lambda: ku.DynamicUnroll(5)(3.0), TypeError, r"takes a 3D tensor .*Received: sequences=3.0"),
    "None input": (
        lambda: ku.StaticUnroll(5)(None),
        TypeError,
        r"or a list of \(batch, features\) steps. Received: sequences=None",
    ),
    "dict input": (lambda: ku.DynamicUnroll(5)({"a": X}), TypeError, r"Received: sequences=a dict with keys \['a'\]"),
    "dict initial_state": (
        lambda: ku.DynamicUnroll(5)(X, initial_state={"a": np.zeros((B, 5), "float32")}),
        TypeError,
        r"a dict has no order to match them by. Received: a dict with keys \['a'\]",
    ),
    "integer layer dtype": (
        lambda: ku.DynamicUnroll(3, dtype="int32"),
        TypeError,
        r"floating-point dtype.*Received: dtype='int32'",
    ),
    "from_config(None)": (
        lambda: ku.DynamicUnroll.from_config(None),
        TypeError,
        r"takes the dict that `get_config\(\)` returned. Received: config=None",
    ),
    "configure_gpus(visible=b'0')": (
        lambda: ku.configure_gpus(visible=b"0"),
        TypeError,
        r"not bytes .*Received: visible=b'0'",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_what_was_wrong(case):
    run, error, match = ERRORS[case]
    with pytest.raises(error, match=match):
        run()
