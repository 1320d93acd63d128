"""Bad input gets a `ValueError`/`TypeError` that names the argument, the expectation and what came.

Every case runs through both layers and both functions (where the argument exists for them).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import UNROLLS, layers, unroll_calls, unrolls

import keras_unroll as ku

B, T, F, H = 2, 5, 3, 4
CALLS = unroll_calls()


def _x(*shape):
    return np.zeros(shape or (B, T, F), "float32")


# ----------------------------------------------------------------------------------------- rank
@unrolls
@pytest.mark.parametrize("shape", [(B, F), (B, T, F, 1)], ids=["2d", "4d"])
def test_wrong_rank(unroll, shape):
    received = str(shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(
        ValueError, match=rf"expects a 3D input \(batch, time, features\).*Received: inputs.shape={received}"
    ):
        unroll(H, _x(*shape))


@layers
def test_wrong_rank_in_a_functional_model(layer_cls):
    with pytest.raises(ValueError, match=r"expects a 3D input.*Received: inputs.shape=\(None, 3\)"):
        layer_cls(H)(keras.Input((F,)))


# ------------------------------------------------------------------------------- feature size
@layers
def test_feature_size_changed_after_build(layer_cls):
    layer = layer_cls(H)
    layer(_x())
    with pytest.raises(
        ValueError, match=r"built for inputs with 3 features, but this input has 6.*Received: inputs with last axis 6"
    ):
        layer(_x(B, T, 6))


@pytest.mark.parametrize("function", [ku.static_rnn, ku.dynamic_rnn], ids=lambda f: f.__name__)
def test_feature_size_changed_for_a_reused_cell(function):
    cell = ku.BasicRNNCell(H)
    function(cell, _x())
    with pytest.raises(ValueError, match=r"built for inputs with 3 features, but this input has 6.*Received"):
        function(cell, _x(B, T, 6))


# --------------------------------------------------------------------------- unknown / zero T
UNKNOWN_T = (
    r"needs a known number of time steps.*Fix: give the model an `Input\(\)` with a fixed shape.*`DynamicUnroll`"
    r".*Received: inputs.shape=\(None, None, 3\)"
)


def test_static_unroll_unknown_time_in_a_functional_model():
    with pytest.raises(ValueError, match=UNKNOWN_T):
        ku.StaticUnroll(H)(keras.Input((None, F)))


def test_static_unroll_unknown_time_in_a_sequential_model():
    with pytest.raises(ValueError, match=UNKNOWN_T):
        keras.Sequential([keras.Input((None, F)), ku.StaticUnroll(H)])


@pytest.mark.parametrize(
    "call", [lambda x: ku.StaticUnroll(H)(x), lambda x: ku.static_rnn(H, x)[0]], ids=["StaticUnroll", "static_rnn"]
)
def test_static_unknown_time_in_a_direct_graph_call(call):
    traced = tf.function(call, input_signature=[tf.TensorSpec((None, None, F), tf.float32)])
    with pytest.raises(ValueError, match=UNKNOWN_T):
        traced.get_concrete_function()


def test_dynamic_unroll_accepts_unknown_time():
    model = keras.Sequential([keras.Input((None, F)), ku.DynamicUnroll(H)])
    assert model(_x(B, 7, F)).shape == (B, H)


@pytest.mark.parametrize("unroll", [CALLS[name] for name in ("StaticUnroll", "DynamicUnroll", "static_rnn")])
def test_zero_time_steps(unroll):
    with pytest.raises(ValueError, match=r"no time steps; an RNN needs T >= 1. Received: inputs.shape=\(2, 0, 3\)"):
        unroll(H, _x(B, 0, F))


@pytest.mark.parametrize("time_major", [False, True])
def test_dynamic_rnn_over_no_steps_returns_the_initial_state(time_major):
    """TF1's `dynamic_rnn` over T = 0: outputs with an empty time axis and the initial state, no error."""
    h0 = np.arange(B * H, dtype="float32").reshape(B, H)
    x = _x(0, B, F) if time_major else _x(B, 0, F)
    outputs, state = ku.dynamic_rnn(ku.BasicRNNCell(H), x, initial_state=h0, time_major=time_major)
    assert outputs.shape == ((0, B, H) if time_major else (B, 0, H))
    np.testing.assert_array_equal(state, h0)


@layers
def test_zero_time_steps_in_a_functional_model(layer_cls):
    with pytest.raises(ValueError, match=r"T >= 1. Received: inputs.shape=\(None, 0, 3\)"):
        layer_cls(H)(keras.Input((0, F)))


# -------------------------------------------------------------------------------- sequence_length
@unrolls
@pytest.mark.parametrize(
    "lengths, received",
    [([[1], [2]], r"\(2, 1\)"), ([1, 2, 3], r"\(3,\)")],
    ids=["2d", "wrong_batch"],
)
def test_sequence_length_of_the_wrong_shape(unroll, lengths, received):
    with pytest.raises(
        ValueError,
        match=rf"`sequence_length` must have shape \(batch,\) = \(2,\).*Received: sequence_length.shape={received}",
    ):
        unroll(H, _x(), sequence_length=np.array(lengths))


@unrolls
@pytest.mark.parametrize("lengths", [[-1, 2], [6, 2]], ids=["negative", "above_T"])
def test_sequence_length_out_of_range(unroll, lengths):
    received = str(lengths).replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(
        ValueError,
        match=rf"`sequence_length` values must lie in \[0, T\] with T=5. Received: sequence_length={received}",
    ):
        unroll(H, _x(), sequence_length=np.array(lengths))


@unrolls
def test_sequence_length_of_floats_with_fractions(unroll):
    with pytest.raises(TypeError, match=r"`sequence_length` must hold integers. Received: sequence_length.dtype=float"):
        unroll(H, _x(), sequence_length=np.array([1.5, 2.0]))


# Lengths known only when a graph runs:
# test_silent_wrong.py::test_lengths_known_only_when_the_graph_runs_are_checked_there


# ---------------------------------------------------------------------------------- initial_state
@unrolls
@pytest.mark.parametrize(
    "state, received",
    [((B, H + 1), r"\(2, 5\)"), ((B + 1, H), r"\(3, 4\)"), ((H,), r"\(4,\)")],
    ids=["units", "batch", "rank"],
)
def test_initial_state_of_the_wrong_shape(unroll, state, received):
    with pytest.raises(
        ValueError,
        match=rf"`initial_state\[0\]` must have shape \(batch, 4\) = \(2, 4\). "
        rf"Received: initial_state\[0\].shape={received}",
    ):
        unroll(H, _x(), initial_state=np.zeros(state, "float32"))


@unrolls
def test_initial_state_count(unroll):
    with pytest.raises(
        ValueError, match=r"`initial_state` must hold 2 tensor\(s\), one per state of the cell.*Received: 1 tensor\(s\)"
    ):
        unroll(keras.layers.LSTMCell(H), _x(), initial_state=[np.zeros((B, H), "float32")])
    with pytest.raises(ValueError, match=r"`initial_state` must hold 1 tensor\(s\).*Received: 2 tensor\(s\)"):
        unroll(H, _x(), initial_state=[np.zeros((B, H), "float32")] * 2)


@unrolls
def test_initial_state_of_ints(unroll):
    with pytest.raises(
        TypeError, match=r"`initial_state\[0\]` must be a floating-point tensor.*Received: initial_state\[0\].dtype=int"
    ):
        unroll(H, _x(), initial_state=np.zeros((B, H), "int32"))


# ------------------------------------------------------------------------------------- list input
STATIC_LIST = {
    "StaticUnroll": lambda steps: ku.StaticUnroll(H)(steps),
    "static_rnn": lambda steps: ku.static_rnn(H, steps),
}


@pytest.mark.parametrize("unroll", list(STATIC_LIST.values()), ids=list(STATIC_LIST))
@pytest.mark.parametrize(
    "second, received", [((B, F + 1), r"\(2, 4\)"), ((B + 1, F), r"\(3, 3\)")], ids=["features", "batch"]
)
def test_list_input_whose_tensors_disagree(unroll, second, received):
    steps = [_x(B, F), np.zeros(second, "float32")]
    with pytest.raises(
        ValueError,
        match=rf"All input steps must have the same \(batch, features\) shape. "
        rf"Received: inputs\[0\].shape=\(2, 3\), inputs\[1\].shape={received}",
    ):
        unroll(steps)


@pytest.mark.parametrize("unroll", list(STATIC_LIST.values()), ids=list(STATIC_LIST))
def test_list_input_of_wrong_rank_or_empty(unroll):
    with pytest.raises(
        ValueError, match=r"2D \(batch, features\).*Received: (inputs|sequences)\[0\].shape=\(2, 5, 3\)"
    ):
        unroll([_x()])
    with pytest.raises(ValueError, match=r"(no input steps|list of input steps is empty).*Received: (sequences=)?\[\]"):
        unroll([])


@pytest.mark.parametrize(
    "unroll, name",
    [
        (lambda steps: ku.DynamicUnroll(H)(steps), "DynamicUnroll"),
        (lambda steps: ku.dynamic_rnn(H, steps), "dynamic_rnn"),
    ],
    ids=["DynamicUnroll", "dynamic_rnn"],
)
def test_dynamic_rejects_a_list_of_steps(unroll, name):
    """A list of `(B, F)` steps would otherwise stack into `(T, B, F)` and be read batch-major."""
    with pytest.raises(TypeError, match=rf"{name} takes one 3D tensor.*for `static_rnn|for `StaticUnroll.*Received"):
        unroll([_x(B, F), _x(B, F)])


# ------------------------------------------------------------------------------------------ cells
@pytest.mark.parametrize(
    "make",
    [
        lambda c: ku.StaticUnroll(c),
        lambda c: ku.DynamicUnroll(c),
        lambda c: ku.static_rnn(c, _x()),
        lambda c: ku.dynamic_rnn(c, _x()),
    ],
    ids=list(UNROLLS),
)
@pytest.mark.parametrize("units", [0, -3])
def test_int_cell_not_positive(make, units):
    with pytest.raises(ValueError, match=rf"`cell` must be a positive integer.*Received: cell={units}"):
        make(units)


@unrolls
@pytest.mark.parametrize(
    "cell, error, received",
    [
        (True, TypeError, "cell=True"),
        ("lstm", TypeError, "cell='lstm'"),
        ([], ValueError, r"cell=\[\]"),
        (2.5, TypeError, "cell=2.5"),
    ],
    ids=["bool", "str", "empty_list", "float"],
)
def test_cell_of_the_wrong_kind(unroll, cell, error, received):
    with pytest.raises(error, match=rf"`cell` must .*Received: {received}"):
        unroll(cell, _x())


@layers
@pytest.mark.parametrize(
    "flag", ["return_sequences", "return_state", "go_backwards", "time_major", "zero_output_for_mask"]
)
def test_flags_must_be_bools(layer_cls, flag):
    with pytest.raises(TypeError, match=rf"`{flag}` must be a bool. Received: {flag}='yes'"):
        layer_cls(H, **{flag: "yes"})


def test_static_unroll_refuses_a_mask_with_a_list_of_steps():
    # A Keras mask belongs to a 3D sequence; with a list of steps it would be silently dropped.
    steps = [_x(B, F) for _ in range(T)]
    layer = ku.StaticUnroll(H)
    assert tuple(layer(steps, mask=None).shape) == (B, H)  # a list input with no mask still runs
    with pytest.raises(ValueError, match=r"no `mask` with a list of steps.*sequence_length.*Received: mask="):
        layer(steps, mask=np.ones((B, T), bool))
