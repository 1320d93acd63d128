"""TF1's functions as TF1 code calls them (issue 21): dtypes, structures, TF1-style cells, `raw_rnn`, `ku.tf1`.

The silently different results (a float64 input computed in float32; `T = 0` giving a list instead of
`LSTMStateTuple`) are compared with TF1 itself: `tf1_functions_reference.py` runs TF1 in a child process
and saves its numbers and a checkpoint, which `load_tf1_weights` reads into the `ku.tf1` cells.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras_unroll as ku
from tf1_functions_reference import BATCH, FEATURES, GRU_UNITS, LENGTHS, LSTM_UNITS, STEPS, functions_reference

X = np.random.default_rng(0).random((2, 4, 3)).astype("float32")


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    return functions_reference(tmp_path_factory)


def _dtypes(structure) -> set:
    return {t.dtype for t in tf.nest.flatten(structure)}


# ------------------------------------------------------------------ item 3: the inputs' dtype, as TF1
@pytest.mark.parametrize("function", ["dynamic_rnn", "static_rnn"])
@pytest.mark.parametrize("make", [lambda: ku.tf1.GRUCell(5), lambda: ku.tf1.BasicLSTMCell(5),
                                  lambda: ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicLSTMCell(4)]),
                                  lambda: ku.tf1.DropoutWrapper(ku.tf1.LSTMCell(3, use_peepholes=True)),
                                  lambda: ku.BasicRNNCell(2)], ids=["gru", "basic_lstm", "multi", "wrapper", "basic_rnn"])
def test_float64_inputs_give_float64_outputs_and_states(function, make):
    """TF1 builds an unbuilt cell in its inputs' dtype: float64 in, float64 weights, outputs and states."""
    x = X.astype("float64")
    cell = make()
    if function == "dynamic_rnn":
        outputs, state = ku.dynamic_rnn(cell, x)
    else:
        outputs, state = ku.static_rnn(cell, [x[:, t] for t in range(STEPS)])
    assert _dtypes(outputs) == _dtypes(state) == {tf.float64}
    assert {w.dtype for w in cell.weights} == {"float64"}


def test_dtype_argument_decides_for_numpy_inputs():
    """A NumPy array is what TF1 fed to a placeholder of `dtype`: `dtype=tf.float32` computes in float32."""
    outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), X.astype("float64"), dtype=tf.float32)
    assert _dtypes(outputs) == _dtypes(state) == {tf.float32}
    outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), X, dtype=tf.float64)
    assert _dtypes(outputs) == _dtypes(state) == {tf.float64}


def test_dtype_argument_disagreeing_with_a_tensor_is_an_error():
    with pytest.raises(ValueError, match="must match the inputs' dtype.*Received: dtype=float32, inputs.dtype=float64"):
        ku.dynamic_rnn(ku.tf1.GRUCell(5), tf.constant(X, tf.float64), dtype=tf.float32)


def test_a_built_float32_cell_given_float64_says_so():
    cell = ku.tf1.GRUCell(5)
    ku.dynamic_rnn(cell, X)
    with pytest.raises(ValueError, match="built in float32.*inputs are float64.*Received: inputs dtype float64"):
        ku.dynamic_rnn(cell, X.astype("float64"))
    with pytest.raises(ValueError, match="built in float32"):
        ku.static_rnn(cell, [X[:, 0].astype("float64")])
    outputs, _ = ku.dynamic_rnn(cell, X.astype("float16"))  # narrower inputs are cast up: nothing is lost
    assert outputs.dtype == tf.float32


def test_a_cell_with_its_own_dtype_keeps_it():
    """A cell given `dtype=` (or a mixed policy) computes in it, as before."""
    cell = ku.tf1.GRUCell(5, dtype="float64")
    outputs, _ = ku.dynamic_rnn(cell, X)
    assert outputs.dtype == tf.float64


@pytest.mark.subprocess
def test_float64_matches_tf1(tf1):
    """TF1's float64 numbers (non-zero biases; for the LSTM c0 != h0 and lengths) with TF1's weights."""
    x = tf1["x"]
    gru = ku.tf1.GRUCell(GRU_UNITS)
    ku.dynamic_rnn(gru, x)  # built in float64 by its first inputs, as in TF1; then restored
    ku.load_tf1_weights(gru, tf1["checkpoint"], scope="gru64/rnn/gru_cell")
    outputs, state = ku.dynamic_rnn(gru, x, dtype=tf.float64)
    assert str(tf1["gru64/dtype"]) == outputs.dtype.name == state.dtype.name == str(tf1["gru64/kernel_dtype"])
    np.testing.assert_allclose(outputs, tf1["gru64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state, tf1["gru64/state"], rtol=1e-12, atol=1e-12)

    lstm = ku.tf1.BasicLSTMCell(LSTM_UNITS)
    start = ku.tf1.LSTMStateTuple(c=tf1["c0"], h=tf1["h0"])
    ku.dynamic_rnn(lstm, x, initial_state=start)
    ku.load_tf1_weights(lstm, tf1["checkpoint"], scope="lstm64/rnn/basic_lstm_cell")
    outputs, state = ku.dynamic_rnn(lstm, x, sequence_length=LENGTHS, initial_state=start)
    assert type(state).__name__ == str(tf1["lstm64/state_type"]) and outputs.dtype.name == str(tf1["lstm64/dtype"])
    np.testing.assert_allclose(outputs, tf1["lstm64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.c, tf1["lstm64/c"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.h, tf1["lstm64/h"], rtol=1e-12, atol=1e-12)

    static = ku.tf1.GRUCell(GRU_UNITS)
    steps = [x[:, t] for t in range(STEPS)]
    ku.static_rnn(static, steps)
    ku.load_tf1_weights(static, tf1["checkpoint"], scope="static64/rnn/gru_cell")
    outputs, state = ku.static_rnn(static, steps, dtype=tf.float64)
    assert outputs[0].dtype.name == str(tf1["static64/dtype"])
    np.testing.assert_allclose(np.stack(outputs, 1), tf1["static64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state, tf1["static64/state"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- item 6: T = 0 keeps TF1's structure
@pytest.mark.subprocess
def test_no_steps_return_the_initial_state_as_tf1(tf1):
    start = ku.tf1.LSTMStateTuple(c=tf1["c0"].astype("float32"), h=tf1["h0"].astype("float32"))
    outputs, state = ku.dynamic_rnn(ku.tf1.BasicLSTMCell(LSTM_UNITS), tf1["x"][:, :0].astype("float32"), initial_state=start)
    assert type(state).__name__ == str(tf1["lstm_t0/state_type"])
    assert isinstance(state, ku.tf1.LSTMStateTuple)
    assert outputs.shape == tf1["lstm_t0/outputs"].shape
    np.testing.assert_array_equal(state.c, tf1["lstm_t0/c"])
    np.testing.assert_array_equal(state.h, tf1["lstm_t0/h"])


def test_no_steps_keep_every_structure():
    """The zero state too, and a stack's tuple of per-layer states."""
    _, state = ku.dynamic_rnn(ku.tf1.BasicLSTMCell(4), X[:, :0])
    assert isinstance(state, ku.tf1.LSTMStateTuple) and state.c.shape == (2, 4)
    _, state = ku.dynamic_rnn(ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicLSTMCell(4)]), X[:, :0])
    assert isinstance(state, tuple) and isinstance(state[1], ku.tf1.LSTMStateTuple) and state[0].shape == (2, 3)
