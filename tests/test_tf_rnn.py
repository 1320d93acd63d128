"""TensorFlow's own tests of TF1's RNN functions, carried over to `ku.*` (issue 21).

From `tensorflow/python/kernel_tests/nn_ops/rnn_test.py` (all its tests) and the function-level tests of
`rnn_cell_test.py` (`RNNTest`, `GRUTest`, `LSTMTest.testDynamicRNNAllowsUnknownTimeDimension`,
`MultiDimensionalLSTMTest`, `NestedLSTMTest`, `RawRNNTest`), with TF's numbers, tolerances (`assertAllClose`:
rtol = atol = 1e-6) and assertions. TF's graph-and-session code is written as TF2 eager code (a placeholder fed
one value becomes that value; a graph-only shape check runs in a `tf.function`). The TF1-style cells are
written as TF1 users' custom cells are described in our docs: plain classes with `state_size`, `output_size`
and `__call__(inputs, state)` (TF's subclass `rnn_cell.RNNCell`, which gives `zero_state`). The `ku.tf1`
module is used as TF1 code used `rnn_cell`: `from keras_unroll import tf1 as rnn`.

Excused (not carried), each for a reason a TF1 user accepts: the `testScope` family (TF1 variable-scope
names; Keras names weights after the cell), `static_state_saving_rnn` (state savers; the `outputs_sav`
halves of `MultiDimensionalLSTMTest` / `NestedLSTMTest`).
"""

from __future__ import annotations

import gc
import os
import pathlib
import types

import numpy as np
import pytest
import tensorflow as tf
from helpers import pairwise

# The control run: `test_the_carried_tests_pass_on_tf1` runs this file again in a child process against TF1
# itself (`tf.compat.v1.nn` with tf-keras' `rnn_cell`), where the test cells subclass TF1's `RNNCell`.
ON_TF1 = os.environ.get("KERAS_UNROLL_CARRIED_ON") == "tf1"
if ON_TF1:
    v1 = tf.compat.v1
    v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond in the graphs below (half their building time)
    ku = types.SimpleNamespace(
        dynamic_rnn=v1.nn.dynamic_rnn, static_rnn=v1.nn.static_rnn, raw_rnn=v1.nn.raw_rnn,
        static_bidirectional_rnn=v1.nn.static_bidirectional_rnn,
        bidirectional_dynamic_rnn=v1.nn.bidirectional_dynamic_rnn,
    )  # fmt: skip
    rnn = v1.nn.rnn_cell
    CellBase = v1.nn.rnn_cell.RNNCell
    TRAINING = {}
else:
    import keras_unroll as ku
    from keras_unroll import tf1 as rnn

    CellBase = object  # the form our docs give: no base class
    TRAINING = {"training": True}  # ku.tf1.DropoutWrapper drops only while training, as Keras' dropout


def assert_all_close(a, b, rtol=1e-6, atol=1e-6):  # TF's assertAllClose defaults
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def assert_all_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(autouse=True)
def seed():
    np.random.seed(23489)  # TF's setUp


# ------------------------------------------------------------------------------ TF1-style test cells
class Plus1RNNCell(CellBase):
    """RNN cell generating (output, new_state) = (input + 1, state + 1)."""

    output_size = 5
    state_size = 5

    def __call__(self, input_, state, scope=None):
        return (input_ + 1, state + 1)


class ScalarStateRNNCell(CellBase):
    output_size = 1
    state_size = tf.TensorShape([])

    def zero_state(self, batch_size, dtype):
        return tf.zeros([], dtype=tf.int32)

    def __call__(self, input_, state, scope=None):
        return (input_, state + 1)


class UnbalancedOutputRNNCell(CellBase):
    output_size = (tf.TensorShape(1), tf.TensorShape((2)))
    state_size = tf.TensorShape([])

    def zero_state(self, batch_size, dtype):
        return tf.zeros([], dtype=tf.int32)

    def __call__(self, input_, state, scope=None):
        concatenated = tf.concat((input_, input_), axis=-1)
        return (input_, concatenated), state + 1


class TensorArrayStateRNNCell(CellBase):
    output_size = 1
    state_size = (tf.TensorShape([]), ())

    def zero_state(self, batch_size, dtype):
        return (tf.zeros([], dtype=tf.int32), tf.TensorArray(dtype=dtype, size=0, dynamic_size=True))

    def __call__(self, input_, state, scope=None):
        new_array = state[1].write(state[0], input_)
        return (input_, (state[0] + 1, new_array))


class DummyMultiDimensionalLSTM(CellBase):
    """(output, new_state) = (input + 1, state + 1) on inputs with several feature axes."""

    def __init__(self, dims):
        self._dims = dims
        self._output_size = tf.TensorShape(dims)
        self._state_size = (tf.TensorShape(dims), tf.TensorShape(dims))

    @property
    def output_size(self):
        return self._output_size

    @property
    def state_size(self):
        return self._state_size

    def __call__(self, input_, state, scope=None):
        h, c = state
        return (input_ + 1, (h + 1, c + 1))


class NestedRNNCell(CellBase):
    """Input, output and state are each a tuple of two tensors."""

    output_size = (5, 5)
    state_size = (6, 6)

    def __call__(self, input_, state, scope=None):
        h, c = state
        x, y = input_
        return ((x + 1, y + 1), (h + 1, c + 1))


# ====================================================================== rnn_test.py: RNNTest
def test_invalid_sequence_length_shape():
    cell = Plus1RNNCell()
    inputs = [tf.constant(np.ones((3, 4)))]
    with pytest.raises(ValueError, match="must be a vector"):
        ku.dynamic_rnn(cell, tf.stack(inputs), dtype=tf.float32, sequence_length=[[4]])


@pytest.mark.parametrize("cell_cls", [rnn.BasicRNNCell, rnn.GRUCell, rnn.BasicLSTMCell, rnn.LSTMCell])
def test_invalid_dtype(cell_cls):
    inputs = np.zeros((3, 4, 5), dtype=np.int32)
    with pytest.raises(ValueError, match="RNN cell only supports floating"):
        cell = cell_cls(2, dtype=tf.int32)
        ku.dynamic_rnn(cell, inputs, dtype=tf.int32)


def test_batch_size_from_input():
    cell = Plus1RNNCell()
    inputs = np.zeros((3, 4, 5), dtype=np.float32)
    initial_state = np.zeros((3, 5), dtype=np.float32)
    # - Without initial_state
    outputs, state = ku.dynamic_rnn(cell, inputs, dtype=tf.float32)
    assert outputs.shape[0] == 3 and state.shape[0] == 3
    # - With initial_state
    outputs, state = ku.dynamic_rnn(cell, inputs, initial_state=initial_state)
    assert outputs.shape[0] == 3 and state.shape[0] == 3

    # Without static batch size (TF's graph-mode half): traced with an open batch axis.
    def shapes(initial):
        def run(x, *state):
            outputs, state = ku.dynamic_rnn(cell, x, dtype=tf.float32, initial_state=state[0] if state else None)
            assert outputs.shape[0] is None and state.shape[0] is None
            return outputs

        specs = [tf.TensorSpec((None, 4, 5), tf.float32)] + ([tf.TensorSpec((None, 5), tf.float32)] if initial else [])
        tf.function(run).get_concrete_function(*specs)

    shapes(initial=False)
    shapes(initial=True)


def test_scalar_state_is_accepted():
    inputs = np.array([[[1], [2], [3], [4]]], dtype=np.float32)
    outputs, state = ku.dynamic_rnn(ScalarStateRNNCell(), inputs, dtype=tf.float32, sequence_length=[4])
    assert_all_equal([[[1], [2], [3], [4]]], outputs)
    assert_all_equal(4, state)


def test_unbalanced_output_is_accepted():
    inputs = np.array([[[1], [2], [3], [4]]], dtype=np.float32)
    outputs, state = ku.dynamic_rnn(UnbalancedOutputRNNCell(), inputs, dtype=tf.float32, sequence_length=[4])
    assert isinstance(outputs, tuple)
    assert_all_equal([[[1], [2], [3], [4]]], outputs[0])
    assert_all_equal([[[1, 1], [2, 2], [3, 3], [4, 4]]], outputs[1])
    assert_all_equal(4, state)


def test_eager_memory():
    """TF's `assert_no_new_pyobjects_executing_eagerly`: repeated calls leave no new Python objects."""

    def run():
        inputs = np.array([[[1], [2], [3], [4]]], dtype=np.float32)
        ku.dynamic_rnn(TensorArrayStateRNNCell(), inputs, dtype=tf.float32, sequence_length=[4])

    for _ in range(2):  # warm up caches, as TF's decorator does
        run()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(3):
        run()
    gc.collect()
    assert len(gc.get_objects()) <= before


def test_tensor_array_state_is_accepted():
    inputs = np.array([[[1], [2], [3], [4]]], dtype=np.float32)
    outputs, state = ku.dynamic_rnn(TensorArrayStateRNNCell(), inputs, dtype=tf.float32, sequence_length=[4])
    state = (state[0], state[1].stack())
    assert_all_equal([[[1], [2], [3], [4]]], outputs)
    assert_all_equal(4, state[0])
    assert_all_equal([[[1]], [[2]], [[3]], [[4]]], state[1])


def test_cell_get_initial_state():
    cell = rnn.BasicRNNCell(5)
    with pytest.raises(ValueError, match="batch_size and dtype cannot be None"):
        cell.get_initial_state(None, None, None)

    def graph_part(inputs):
        with pytest.raises(ValueError, match="batch size from input tensor is different from"):
            cell.get_initial_state(inputs=inputs, batch_size=50, dtype=None)
        with pytest.raises(ValueError, match="batch size from input tensor is different from"):
            cell.get_initial_state(inputs=inputs, batch_size=tf.constant(50), dtype=None)
        with pytest.raises(ValueError, match="dtype from input tensor is different from"):
            cell.get_initial_state(inputs=inputs, batch_size=None, dtype=tf.int16)
        initial_state = cell.get_initial_state(inputs=inputs, batch_size=None, dtype=None)
        assert initial_state.shape.as_list() == [None, 5] and initial_state.dtype == inputs.dtype
        batch, dtype = tf.shape(inputs)[0], inputs.dtype
        initial_state = cell.get_initial_state(None, batch, dtype)
        assert initial_state.shape.as_list() == [None, 5] and initial_state.dtype == inputs.dtype
        return inputs

    tf.function(graph_part).get_concrete_function(tf.TensorSpec((None, 4, 1), tf.float32))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell_class", [rnn.BasicRNNCell, rnn.BasicLSTMCell, rnn.GRUCell, rnn.LSTMCell])
def test_cells_build(cell_class, dtype):
    batch_size, in_size, out_size = 5, 7, 3
    cell = cell_class(out_size, dtype=dtype)
    in_shape = tf.TensorShape((batch_size, in_size))
    cell.build(in_shape)
    state_output = cell.get_initial_state(inputs=None, batch_size=batch_size, dtype=dtype)
    cell_output, _ = cell(tf.zeros(in_shape, dtype), state_output)
    assert cell_output.shape.as_list() == [batch_size, out_size]


def test_basic_lstm_cell_interchange_with_lstm_cell(tmp_path):
    """TF1's `Saver` becomes `tf.train.Checkpoint`; the restored bias is the saved one."""
    basic_cell = rnn.BasicLSTMCell(1)
    basic_cell(tf.ones([1, 1]), basic_cell.get_initial_state(inputs=None, batch_size=1, dtype=tf.float32))
    basic_cell.bias.assign([10.0] * 4)
    save_path = tf.train.Checkpoint(cell=basic_cell).write(str(tmp_path / "ckpt"))

    lstm_cell = rnn.LSTMCell(1, name="basic_lstm_cell")
    lstm_cell(tf.ones([1, 1]), lstm_cell.get_initial_state(inputs=None, batch_size=1, dtype=tf.float32))
    tf.train.Checkpoint(cell=lstm_cell).read(save_path)
    assert_all_equal([10.0] * 4, lstm_cell.bias)


# ===================================================================== rnn_cell_test.py: RNNTest
def test_static_invalid_sequence_length_shape():
    cell = Plus1RNNCell()
    inputs = [tf.zeros((3, 4))]
    with pytest.raises(ValueError, match="must be a vector"):
        ku.static_rnn(cell, inputs, dtype=tf.float32, sequence_length=4)


def test_rnn():
    cell = Plus1RNNCell()
    batch_size, input_size, max_length = 2, 5, 8
    input_value = np.random.randn(batch_size, input_size)
    inputs = max_length * [tf.constant(input_value, tf.float32)]
    outputs, state = ku.static_rnn(cell, inputs, dtype=tf.float32)
    assert len(outputs) == len(inputs)
    for out, inp in zip(outputs, inputs):
        assert out.shape == inp.shape and out.dtype == inp.dtype
    for v in outputs:
        assert_all_close(v, input_value + 1.0)
    assert_all_close(state, max_length * np.ones((batch_size, input_size), dtype=np.float32))


def test_dropout():
    cell = Plus1RNNCell()
    full_dropout_cell = rnn.DropoutWrapper(cell, input_keep_prob=1e-6, seed=0)
    batch_size, input_size, max_length = 2, 5, 8
    input_value = np.random.randn(batch_size, input_size)
    inputs = max_length * [tf.constant(input_value, tf.float32)]
    outputs, state = ku.static_rnn(cell, inputs, dtype=tf.float32)
    dropped_outputs, _ = ku.static_rnn(full_dropout_cell, inputs, dtype=tf.float32, **TRAINING)
    assert len(outputs) == len(inputs)
    for out, inp in zip(outputs, inputs):
        assert out.shape.as_list() == inp.shape.as_list() and out.dtype == inp.dtype
    for v in outputs:
        assert_all_close(v, input_value + 1.0)
    for d_v in dropped_outputs[:-1]:  # Add 1.0 to dropped_out (all zeros)
        assert_all_close(d_v, np.ones_like(input_value))


def test_dynamic_calculation():
    cell = Plus1RNNCell()
    batch_size, input_size, max_length = 2, 5, 8
    input_value = np.random.randn(batch_size, input_size)
    inputs = max_length * [tf.constant(input_value, tf.float32)]
    sequence_length = tf.constant([2, 3], tf.int64)
    dynamic_values, dynamic_state_value = ku.static_rnn(cell, inputs, sequence_length=sequence_length, dtype=tf.float32)
    assert len(dynamic_values) == len(inputs)
    # outputs are fully calculated for t = 0, 1
    for v in dynamic_values[:2]:
        assert_all_close(v, input_value + 1.0)
    # outputs at t = 2 are zero for entry 0, calculated for entry 1
    assert_all_close(dynamic_values[2], np.vstack((np.zeros((input_size)), 1.0 + input_value[1, :])))
    # outputs at t = 3+ are zero
    for v in dynamic_values[3:]:
        assert_all_equal(v, np.zeros_like(input_value))
    # the final states: entry 0 from t=1, entry 1 from t=2
    assert_all_equal(
        dynamic_state_value, np.vstack((1.0 * (1 + 1) * np.ones((input_size)), 1.0 * (2 + 1) * np.ones((input_size))))
    )


# ====================================================================== rnn_cell_test.py: GRUTest
def test_gru_dynamic():
    time_steps, num_units, input_size, batch_size = 8, 3, 5, 2
    input_values = np.random.randn(time_steps, batch_size, input_size)
    sequence_length = np.random.randint(0, time_steps, size=batch_size)
    cell = rnn.GRUCell(num_units=num_units)
    ku.dynamic_rnn(
        cell,
        inputs=tf.constant(input_values, tf.float32),
        sequence_length=sequence_length,
        time_major=True,
        dtype=tf.float32,
    )


# ====================================================================== rnn_cell_test.py: LSTMTest
def test_dynamic_rnn_allows_unknown_time_dimension():
    """TF's placeholder `[1, None, 20]` is a `tf.function` input of that open shape (the cell is built in it)."""
    cell = rnn.GRUCell(30)

    def run(inputs):
        outputs, _ = ku.dynamic_rnn(cell, inputs, dtype=tf.float32)  # smoke test: no error
        return outputs

    tf.function(run).get_concrete_function(tf.TensorSpec([1, None, 20], tf.float32))


# ============================================================ rnn_cell_test.py: BidirectionalRNNTest
def _lstm(num_units, input_size, state_is_tuple, tf1_line):
    """TF's `LSTMCell(num_units, input_size, initializer=..., ...)`: the TF1 line as written (the old
    positional `input_size`), or the form our docs give (without it; TF1 ignored it)."""
    initializer = tf.random_uniform_initializer(-0.01, 0.01, seed=23489)
    if tf1_line:
        return rnn.LSTMCell(num_units, input_size, initializer=initializer, state_is_tuple=state_is_tuple)
    return rnn.LSTMCell(num_units, initializer=initializer, state_is_tuple=state_is_tuple)


def _static_bidirectional(use_shape, use_sequence_length, tf1_line):
    num_units, input_size, batch_size, max_length = 3, 5, 2, 8
    input_value = np.random.randn(batch_size, input_size)
    sequence_length = tf.constant([2, 3], tf.int64) if use_sequence_length else None
    cell_fw = _lstm(num_units, input_size, False, tf1_line)
    cell_bw = _lstm(num_units, input_size, False, tf1_line)

    def run(x, sequence_length=None):
        inputs = max_length * [x]
        outputs, state_fw, state_bw = ku.static_bidirectional_rnn(
            cell_fw, cell_bw, inputs, dtype=tf.float32, sequence_length=sequence_length
        )
        assert len(outputs) == len(inputs)
        for out in outputs:
            assert out.shape.as_list() == [batch_size if use_shape else None, 2 * num_units]
        return tf.stack(outputs), state_fw, state_bw

    return _run_like_placeholders(run, input_value, sequence_length, use_shape)


def _run_like_placeholders(run, input_value, sequence_length, use_shape):
    """TF feeds placeholders: inputs of shape (None, input_size) unless `use_shape`, lengths of unknown shape."""
    x = tf.constant(input_value, tf.float32)
    args = (x,) if sequence_length is None else (x, sequence_length)
    if use_shape:
        return run(*args)
    if ON_TF1:  # TF1's own graph, placeholders and session (its variable scopes stay in that graph)
        with tf.Graph().as_default():
            feeds = [v1.placeholder(tf.float32, (None, x.shape[1]))] + (
                [] if sequence_length is None else [v1.placeholder(tf.int64)]
            )
            fetches = run(*feeds)
            with v1.Session() as session:
                session.run(v1.global_variables_initializer())
                return session.run(fetches, dict(zip(feeds, [np.asarray(a) for a in args])))
    signature = [tf.TensorSpec((None, x.shape[1]), tf.float32)] + (
        [] if sequence_length is None else [tf.TensorSpec(None, tf.int64)]
    )
    return tf.function(run, input_signature=signature)(*args)


@pytest.mark.parametrize("tf1_line", [True, False], ids=["tf1_line", "docs_form"])
@pytest.mark.parametrize("use_shape", [False, True])
def test_bidirectional_rnn(use_shape, tf1_line):
    out, s_fw, s_bw = _static_bidirectional(use_shape, True, tf1_line)
    # First sequence in batch is length=2: t=0 forward == t=1 backward, t=1 forward == t=0 backward
    for depth in range(3):
        assert_all_close(out[0][0][depth], out[1][0][depth + 3])
        assert_all_close(out[1][0][depth], out[0][0][depth + 3])
    # Second sequence in batch is length=3
    for depth in range(3):
        assert_all_close(out[0][1][depth], out[2][1][depth + 3])
        assert_all_close(out[1][1][depth], out[1][1][depth + 3])
        assert_all_close(out[2][1][depth], out[0][1][depth + 3])
    # the forward and backward final state should be exactly the same
    assert_all_close(s_fw, s_bw)


@pytest.mark.parametrize("tf1_line", [True, False], ids=["tf1_line", "docs_form"])
@pytest.mark.parametrize("use_shape", [False, True])
def test_bidirectional_rnn_without_sequence_length(use_shape, tf1_line):
    out, s_fw, s_bw = _static_bidirectional(use_shape, False, tf1_line)
    for i in range(8):  # Both sequences in batch are length=8
        assert_all_close(out[i][0][0:3], out[8 - 1 - i][0][3:6])
        assert_all_close(out[i][1][0:3], out[8 - 1 - i][1][3:6])
    assert_all_close(s_fw, s_bw)


# TF's test runs all 16 combinations of the four switches; 6 cases run every pair of their values (pairwise).
@pairwise(
    use_shape=[True, False],
    use_state_tuple=[True, False],
    use_time_major=[True, False],
    use_sequence_length=[True, False],
)
def test_bidirectional_dynamic_rnn(use_shape, use_state_tuple, use_time_major, use_sequence_length):
    num_units, input_size, batch_size, max_length = 3, 5, 2, 8
    input_value = np.random.randn(batch_size, input_size)
    sequence_length = tf.constant([2, 3], tf.int64) if use_sequence_length else None
    cell_fw = _lstm(num_units, input_size, use_state_tuple, tf1_line=False)
    cell_bw = _lstm(num_units, input_size, use_state_tuple, tf1_line=False)

    def run(x, sequence_length=None):
        inputs_c = tf.stack(max_length * [x])
        if not use_time_major:
            inputs_c = tf.transpose(inputs_c, [1, 0, 2])
        outputs, states = ku.bidirectional_dynamic_rnn(
            cell_fw, cell_bw, inputs_c, sequence_length, dtype=tf.float32, time_major=use_time_major
        )
        outputs = tf.concat(outputs, 2)
        outputs_shape = [None, max_length, 2 * num_units]
        if use_shape:
            outputs_shape[0] = batch_size
        if use_time_major:
            outputs_shape[0], outputs_shape[1] = outputs_shape[1], outputs_shape[0]
        assert outputs.shape.as_list() == outputs_shape
        return outputs, states

    out, (state_fw, state_bw) = _run_like_placeholders(run, input_value, sequence_length, use_shape)
    if use_state_tuple:
        s_fw, s_bw = (state_fw[0], state_fw[1]), (state_bw[0], state_bw[1])
    else:
        s_fw, s_bw = state_fw, state_bw
    out = np.asarray(out)
    if not use_time_major:
        out = np.swapaxes(out, 0, 1)
    if use_sequence_length:
        for depth in range(3):
            assert out[0][0][depth] == out[1][0][depth + 3]  # First sequence in batch is length=2
            assert out[1][0][depth] == out[0][0][depth + 3]
            assert out[0][1][depth] == out[2][1][depth + 3]  # Second sequence in batch is length=3
            assert out[1][1][depth] == out[1][1][depth + 3]
            assert out[2][1][depth] == out[0][1][depth + 3]
        assert_all_close(s_fw, s_bw)
    else:
        for t in range(max_length):
            assert_all_equal(out[t, :, 0:3], out[max_length - t - 1, :, 3:6])
        assert_all_close(s_fw, s_bw)


# ======================================================= rnn_cell_test.py: MultiDimensionalLSTMTest
def test_multi_dimensional_lstm_all_rnn_containers():
    feature_dims = (3, 4, 5)
    input_size = feature_dims
    batch_size, max_length = 2, 8
    sequence_length = [4, 6]
    input_value = np.random.randn(*((batch_size,) + input_size))
    inputs = max_length * [tf.constant(input_value, tf.float32)]
    inputs_using_dim = inputs
    inputs_c = tf.stack(inputs)
    cell = DummyMultiDimensionalLSTM(feature_dims)
    outputs_static, state_static = ku.static_rnn(cell, inputs, dtype=tf.float32, sequence_length=sequence_length)
    outputs_dynamic, state_dynamic = ku.dynamic_rnn(
        cell, inputs_c, dtype=tf.float32, time_major=True, sequence_length=sequence_length
    )
    outputs_bid, state_fw, state_bw = ku.static_bidirectional_rnn(
        cell, cell, inputs_using_dim, dtype=tf.float32, sequence_length=sequence_length
    )
    assert outputs_dynamic.shape.as_list() == inputs_c.shape.as_list()
    for out, inp in zip(outputs_static, inputs):
        assert out.shape.as_list() == inp.shape.as_list()
    for out, inp in zip(outputs_bid, inputs_using_dim):
        input_shape_list = inp.shape.as_list()
        input_shape_list[1] *= 2  # fwd and bwd activations are concatenated along the second dim
        assert out.shape.as_list() == input_shape_list

    assert_all_equal(np.array(outputs_static), np.array(outputs_dynamic))
    outputs_static_array = np.array(outputs_static)
    outputs_static_array_double = np.concatenate((outputs_static_array, outputs_static_array), axis=2)
    assert_all_equal(outputs_static_array_double, np.array(outputs_bid))
    assert_all_equal(np.hstack(state_static), np.hstack(state_dynamic))
    assert_all_equal(np.hstack(state_static), np.hstack(state_fw))
    assert_all_equal(np.hstack(state_static), np.hstack(state_bw))


# ================================================================ rnn_cell_test.py: NestedLSTMTest
def test_nested_io_lstm_all_rnn_containers():
    input_size, batch_size, max_length = 5, 2, 8
    sequence_length = [4, 6]
    input_value = (np.random.randn(batch_size, input_size), np.random.randn(batch_size, input_size))
    single_input = tuple(tf.constant(v, tf.float32) for v in input_value)
    inputs = max_length * [single_input]
    inputs_c = (tf.stack([input_[0] for input_ in inputs]), tf.stack([input_[1] for input_ in inputs]))
    inputs_using_dim = inputs
    cell = NestedRNNCell()
    outputs_dynamic, state_dynamic = ku.dynamic_rnn(
        cell, inputs_c, dtype=tf.float32, time_major=True, sequence_length=sequence_length
    )
    outputs_static, state_static = ku.static_rnn(cell, inputs, dtype=tf.float32, sequence_length=sequence_length)
    outputs_bid, state_fw, state_bw = ku.static_bidirectional_rnn(
        cell, cell, inputs_using_dim, dtype=tf.float32, sequence_length=sequence_length
    )

    def _assert_same_shape(input1, input2, double=False):
        for inp1, inp2 in zip(tf.nest.flatten(input1), tf.nest.flatten(input2)):
            input_shape = inp1.shape.as_list()
            if double:
                input_shape[1] *= 2
            assert input_shape == inp2.shape.as_list()

    _assert_same_shape(inputs_c, outputs_dynamic)
    _assert_same_shape(inputs, outputs_static)
    _assert_same_shape(inputs_using_dim, outputs_bid, double=True)

    outputs_static_v = np.array(tf.nest.map_structure(np.asarray, outputs_static))
    assert_all_equal(outputs_static_v, np.transpose(np.array(outputs_dynamic), (1, 0, 2, 3)))
    outputs_static_array_double = np.concatenate((outputs_static_v, outputs_static_v), axis=3)
    assert_all_equal(outputs_static_array_double, np.array(tf.nest.map_structure(np.asarray, outputs_bid)))
    assert_all_equal(np.hstack(state_static), np.hstack(state_dynamic))
    assert_all_equal(np.hstack(state_static), np.hstack(state_fw))
    assert_all_equal(np.hstack(state_static), np.hstack(state_bw))


# ====================================================================== rnn_cell_test.py: RawRNNTest
def _raw_rnn_against_dynamic_rnn(max_time):
    batch_size, input_depth, num_units = 16, 4, 3
    rand_input = np.random.randn(max_time, batch_size, input_depth)
    rand_seq_len = np.zeros(batch_size) if max_time == 0 else np.random.randint(max_time, size=batch_size)
    rand_seq_len[0] = max_time  # To ensure same output lengths for dynamic_rnn and raw_rnn
    cell = rnn.LSTMCell(num_units, state_is_tuple=True)

    def run_raw(inputs, sequence_length):
        inputs_ta = tf.TensorArray(dtype=tf.float32, size=tf.shape(inputs)[0]).unstack(inputs)

        def loop_fn(time_, cell_output, cell_state, unused_loop_state):
            emit_output = cell_output  # == None for time == 0
            next_state = cell.zero_state(batch_size, tf.float32) if cell_output is None else cell_state
            elements_finished = time_ >= sequence_length
            finished = tf.reduce_all(elements_finished)
            # For the very final iteration, we must emit a dummy input
            next_input = tf.cond(
                finished, lambda: tf.zeros([batch_size, input_depth], dtype=tf.float32), lambda: inputs_ta.read(time_)
            )
            return (elements_finished, next_input, next_state, emit_output, None)

        outputs_ta, final_state, _ = ku.raw_rnn(cell, loop_fn)
        return outputs_ta.stack(), final_state

    def run_both(inputs, sequence_length):
        dynamic = ku.dynamic_rnn(cell, inputs, time_major=True, dtype=tf.float32, sequence_length=sequence_length)
        return dynamic, run_raw(inputs, sequence_length)

    feed = (tf.constant(rand_input, tf.float32), tf.constant(rand_seq_len, tf.int32))
    if max_time == 0:
        # TF's graph: with no step, only a graph gives the outputs their shape (0, batch, units).
        if ON_TF1:  # TF1's own graph and session (its variable scopes stay in that graph)
            with tf.Graph().as_default():
                fetches = run_both(*(tf.constant(np.asarray(f)) for f in feed))
                with v1.Session() as session:
                    session.run(v1.global_variables_initializer())
                    (outputs_dynamic_rnn, final_state_dynamic_rnn), (outputs, final_state) = session.run(fetches)
        else:
            (outputs_dynamic_rnn, final_state_dynamic_rnn), (outputs, final_state) = tf.function(run_both)(*feed)
        assert np.shape(outputs) == np.shape(outputs_dynamic_rnn) == (0, batch_size, num_units)
        assert_all_close(outputs_dynamic_rnn, outputs)
        assert_all_close(final_state_dynamic_rnn, final_state)
        return  # no gradients with 0 time steps (TF's note: raw_rnn has no shape information then)

    inputs = feed[0]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        (outputs_dynamic_rnn, final_state_dynamic_rnn), (outputs, final_state) = run_both(*feed)
    assert_all_close(outputs_dynamic_rnn, outputs)
    assert_all_close(final_state_dynamic_rnn, final_state)
    variables = cell.trainable_variables
    gradients = tape.gradient([outputs, final_state], [inputs] + variables)
    gradients_dynamic_rnn = tape.gradient([outputs_dynamic_rnn, final_state_dynamic_rnn], [inputs] + variables)
    assert len(gradients) == len(gradients_dynamic_rnn)
    assert_all_close(gradients[0], gradients_dynamic_rnn[0])
    for i in range(1, len(gradients)):
        assert_all_close(gradients_dynamic_rnn[i], gradients[i])


def test_raw_rnn_zero_length():
    _raw_rnn_against_dynamic_rnn(max_time=0)


def test_raw_rnn():
    _raw_rnn_against_dynamic_rnn(max_time=10)


def _inputs_ta(max_time, batch_size, input_depth):
    inputs = np.random.randn(max_time, batch_size, input_depth)
    return tf.TensorArray(dtype=tf.float32, size=inputs.shape[0]).unstack(tf.constant(inputs, tf.float32))


def test_loop_state():
    max_time, batch_size, input_depth, num_units = 10, 16, 4, 3
    inputs_ta = _inputs_ta(max_time, batch_size, input_depth)
    cell = rnn.LSTMCell(num_units, state_is_tuple=True)

    def loop_fn(time_, cell_output, cell_state, loop_state):
        if cell_output is None:
            loop_state = tf.constant([0])
            next_state = cell.zero_state(batch_size, tf.float32)
        else:
            loop_state = tf.stack([tf.squeeze(loop_state) + 1])
            next_state = cell_state
        emit_output = cell_output  # == None for time == 0
        elements_finished = tf.tile([time_ >= max_time], [batch_size])
        finished = tf.reduce_all(elements_finished)
        next_input = tf.cond(
            finished, lambda: tf.zeros([batch_size, input_depth], dtype=tf.float32), lambda: inputs_ta.read(time_)
        )
        return (elements_finished, next_input, next_state, emit_output, loop_state)

    r = ku.raw_rnn(cell, loop_fn)
    loop_state = r[-1]
    assert_all_equal([10], loop_state)


def test_loop_state_with_tensor_array():
    max_time, batch_size, input_depth, num_units = 4, 16, 4, 3
    inputs_ta = _inputs_ta(max_time, batch_size, input_depth)
    cell = rnn.LSTMCell(num_units, state_is_tuple=True)

    def loop_fn(time_, cell_output, cell_state, loop_state):
        if cell_output is None:
            loop_state = tf.TensorArray(dynamic_size=True, size=0, dtype=tf.int32, clear_after_read=False)
            loop_state = loop_state.write(0, 1)
            next_state = cell.zero_state(batch_size, tf.float32)
        else:
            loop_state = loop_state.write(time_, loop_state.read(time_ - 1) + time_)
            next_state = cell_state
        emit_output = cell_output  # == None for time == 0
        elements_finished = tf.tile([time_ >= max_time], [batch_size])
        finished = tf.reduce_all(elements_finished)
        next_input = tf.cond(
            finished, lambda: tf.zeros([batch_size, input_depth], dtype=tf.float32), lambda: inputs_ta.read(time_)
        )
        return (elements_finished, next_input, next_state, emit_output, loop_state)

    r = ku.raw_rnn(cell, loop_fn)
    loop_state = r[-1].stack()
    assert_all_equal([1, 2, 2 + 2, 4 + 3, 7 + 4], loop_state)


def test_emit_different_structure_than_cell_output():
    max_time, batch_size, input_depth, num_units = 10, 16, 4, 3
    inputs = np.random.randn(max_time, batch_size, input_depth)
    cell = rnn.LSTMCell(num_units, state_is_tuple=True)

    def run(unknown_dim):  # TF feeds a placeholder: emit shapes may be unknown
        inputs_ta = tf.TensorArray(dtype=tf.float32, size=inputs.shape[0]).unstack(tf.constant(inputs, tf.float32))

        def loop_fn(time_, cell_output, cell_state, _):
            if cell_output is None:
                emit_output = (tf.zeros([2, 3], dtype=tf.int32), tf.zeros([unknown_dim], dtype=tf.int64))
                next_state = cell.zero_state(batch_size, tf.float32)
            else:
                emit_output = (
                    tf.ones([batch_size, 2, 3], dtype=tf.int32),
                    tf.ones([batch_size, unknown_dim], dtype=tf.int64),
                )
                next_state = cell_state
            elements_finished = tf.tile([time_ >= max_time], [batch_size])
            finished = tf.reduce_all(elements_finished)
            next_input = tf.cond(
                finished, lambda: tf.zeros([batch_size, input_depth], dtype=tf.float32), lambda: inputs_ta.read(time_)
            )
            return (elements_finished, next_input, next_state, emit_output, None)

        output_ta = ku.raw_rnn(cell, loop_fn)[0]
        assert len(output_ta) == 2
        assert [ta.dtype for ta in output_ta] == [tf.int32, tf.int64]
        return [ta.stack() for ta in output_ta]

    run(1)  # builds the cell's weights (eagerly), then the placeholder-like trace:
    output_vals = tf.function(run, input_signature=[tf.TensorSpec([], tf.int32)])(tf.constant(1))
    assert_all_equal(np.ones((max_time, batch_size, 2, 3), np.int32), output_vals[0])
    assert_all_equal(np.ones((max_time, batch_size, 1), np.int64), output_vals[1])


# ============================================================================ the control run on TF1
@pytest.mark.subprocess
@pytest.mark.skipif(ON_TF1, reason="this is the control run itself")
def test_the_carried_tests_pass_on_tf1():
    """The same tests, TF's numbers and assertions, against TF1's own functions and cells (tf-keras)."""
    from tf1_reference import run_tf1

    test_file = pathlib.Path(__file__).resolve()
    pytest_args = [str(test_file), "-q", "-p", "no:cacheprovider", "-x", "-k", "not test_basic_lstm_cell_interchange"]
    pytest_args += ["-p", "no:xdist", "-p", "no:hypothesispytest"]  # plugins this file does not use: 1 s of startup
    done = run_tf1(["-m", "pytest", *pytest_args], KERAS_UNROLL_CARRIED_ON="tf1")
    assert " passed" in done.stdout and "failed" not in done.stdout
