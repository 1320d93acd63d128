"""TensorFlow's own cell tests (`tensorflow/python/kernel_tests/nn_ops/rnn_cell_test.py`) carried to `ku.tf1`.

Each carried test is a function of a `Dialect`: the cell module and the few spellings that differ between TF1
and the form `docs/tf1-semantics.md` gives. TF's constants, expected numbers, tolerances and assertions are
TF's; graph/session code is re-expressed eagerly (placeholders fed once become constants). Here each runs
with `ku.tf1` (eager), and `test_the_same_tests_pass_on_tf1_itself` runs them all on TF1 itself
(`tf.compat.v1.nn.rnn_cell` from tf-keras, graph mode, in a child process) as a control.

Where the two spellings differ (the `Dialect` methods):
- TF1's `variable_scope(initializer=...)` sets the kernels' initializer; Keras has no scopes, so the cell gets
  it as `kernel_initializer` (and `recurrent_initializer`, Keras' half of TF1's kernel).
- Dropout: TF1 drops whenever the graph runs; Keras only while training: `training=True`.
- TF1's private attributes `_bias` are Keras' `bias`.

Not carried, each with its reason (also in docs/tf1-semantics.md):
- Variable names and counts (`testBasicRNNCell`'s and `testBasicLSTMCell`'s name lists, `testLSTMCellVariables`,
  `testBasicRNNCellNotTrainable`'s `custom_getter`, `testMultiRNNCell`'s `2 * 4` weights, the `_testScope`
  tests): variable-scope names and TF1's concatenated-kernel layout; the numbers are carried.
- `testNoProjNoShardingSimpleStateSaver`, `...TupleStateSaver`, `...NestedTupleStateSaver`, `StateSaverRNNTest`:
  state savers.
- `testDeviceWrapperDynamicExecutionNodesAreAllProperlyLocated`, `TensorArrayOnCorrectDeviceTest`: Session
  device placement (RunMetadata step stats).
- `testLSTMBlockCellErrorHandling`, `testLSTMBlockCellEmptyInputRaisesError`, `testLSTMBlockCellGradErrorHandling`,
  `testLSTMBlockInvalidArgument`: raw `gen_rnn_ops` kernels, no cell involved.
- `RNNTest`, `BidirectionalRNNTest`, `MultiDimensionalLSTMTest`, `NestedLSTMTest`, `RawRNNTest`, `GRUTest`,
  `testDynamicRNNAllowsUnknownTimeDimension`: the TF1 functions with TF1-style custom cells and nested
  inputs, carried with the functions (`docs/tf1-semantics.md`, "The TF1 functions").
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
import textwrap
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import tensorflow as tf

CARRIED: List[Callable[[Any], None]] = []


def carried(test: Callable[[Any], None]) -> Callable[[Any], None]:
    """Marks a carried TF test (a function of a `Dialect`, not collected by pytest itself)."""
    test.__test__ = False
    CARRIED.append(test)
    return test


# ---------------------------------------------------------------------------------------- dialects
class KuDialect:
    """`ku.tf1`, eager, in the form the docs give."""

    name = "ku"

    def __init__(self) -> None:
        import keras

        import keras_unroll as ku

        self.keras, self.ku, self.rc = keras, ku, ku.tf1
        self.dynamic_rnn, self.static_rnn = ku.dynamic_rnn, ku.static_rnn
        self.train = {"training": True}

    def const(self, value: float) -> Any:
        return self.keras.initializers.Constant(value)

    def uniform(self, low: float, high: float, seed: int) -> Any:
        return self.keras.initializers.RandomUniform(low, high, seed=seed)

    def scope(self, name: str, initializer: Any = None, reuse: Any = None) -> Any:
        return contextlib.nullcontext()

    def kernel(self, initializer: Any, recurrent: bool = True) -> Dict[str, Any]:
        """The scope's initializer, given to the cell (both halves of TF1's kernel)."""
        return {"kernel_initializer": initializer, **({"recurrent_initializer": initializer} if recurrent else {})}

    def variable(self, name: str, value: float) -> Any:
        return tf.Variable(value, name=name)

    def bias(self, cell: Any) -> Any:
        return cell.bias

    def evaluate(self, value: Any) -> Any:
        return tf.nest.map_structure(lambda t: t if isinstance(t, (str, bytes)) else np.asarray(t), value)

    def assign(self, variable: Any, value: Any) -> None:
        variable.assign(value)

    def set_seed(self, seed: int) -> None:
        self.keras.utils.set_random_seed(seed)

    def share(self, source: Any, target: Any, input_shape: Any) -> None:
        """TF1's `reuse=True` scope: a second cell reads the first one's variables; here it gets their values."""
        target.build(input_shape)
        target.set_weights(source.get_weights())


class TF1Dialect:
    """TF1 itself: `tf.compat.v1.nn.rnn_cell` (tf-keras), graph mode, as TF's test file writes it."""

    name = "tf1"

    def __init__(self, session: Any) -> None:
        self.v1 = tf.compat.v1
        self.rc = self.v1.nn.rnn_cell
        self.dynamic_rnn, self.static_rnn = self.v1.nn.dynamic_rnn, self.v1.nn.static_rnn
        self.train: Dict[str, Any] = {}
        self.session = session
        self.initialized: set = set()

    def const(self, value: float) -> Any:
        return self.v1.constant_initializer(value)

    def uniform(self, low: float, high: float, seed: int) -> Any:
        return self.v1.random_uniform_initializer(low, high, seed=seed)

    def scope(self, name: str, initializer: Any = None, reuse: Any = None) -> Any:
        return self.v1.variable_scope(name, initializer=initializer, reuse=reuse)

    def kernel(self, initializer: Any, recurrent: bool = True) -> Dict[str, Any]:
        return {}  # the scope's initializer does it

    def variable(self, name: str, value: float) -> Any:
        return self.v1.get_variable(name, initializer=value)

    def bias(self, cell: Any) -> Any:
        return cell._bias

    def _init(self) -> None:
        fresh = [v for v in self.v1.global_variables() if v.name not in self.initialized]
        self.session.run(self.v1.variables_initializer(fresh))
        self.initialized.update(v.name for v in fresh)

    def evaluate(self, value: Any) -> Any:
        self._init()
        return self.session.run(value)

    def assign(self, variable: Any, value: Any) -> None:
        self._init()
        self.session.run(variable.assign(value))

    def set_seed(self, seed: int) -> None:
        self.v1.set_random_seed(seed)

    def share(self, source: Any, target: Any, input_shape: Any) -> None:
        pass  # the `reuse=True` scope around the second call does it


def _close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """TF's `assertAllClose` (its default tolerances, 1e-6)."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def _raises(kinds: Any, pattern: str = "") -> Any:
    return pytest.raises(kinds, match=pattern) if pattern else pytest.raises(kinds)


# ------------------------------------------------------------------------------------- RNNCellTest
@carried
def testBasicRNNCell(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0]])
        m = tf.constant([[0.1, 0.1]])
        cell = d.rc.BasicRNNCell(2, **d.kernel(d.const(0.5)))
        g, _ = cell(x, m)
        # (TF1's variable names `root/basic_rnn_cell/kernel:0`, `.../bias:0`: not carried, see the module docstring)
        assert not cell.non_trainable_variables
        res = d.evaluate([g])
        assert res[0].shape == (1, 2)


@carried
def testGRUCell(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0]])
        m = tf.constant([[0.1, 0.1]])
        g, _ = d.rc.GRUCell(2, **d.kernel(d.const(0.5), recurrent=False))(x, m)
        res = d.evaluate([g])
        _close(res[0], [[0.175991, 0.175991]])
    with d.scope("other", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0, 1.0]])  # input_size != num_units
        m = tf.constant([[0.1, 0.1]])
        g, _ = d.rc.GRUCell(2, **d.kernel(d.const(0.5), recurrent=False))(x, m)
        res = d.evaluate([g])
        _close(res[0], [[0.156736, 0.156736]])


@carried
def testBasicLSTMCell(d):
    for dtype in [tf.float16, tf.float32]:
        np_dtype = dtype.as_numpy_dtype
        with d.scope(f"root_{dtype.name}", initializer=d.const(0.5)):
            x = tf.constant(np.array([[1.0, 1.0]], np_dtype))
            m = tf.constant(0.1 * np.ones([1, 8], np_dtype))
            cell = d.rc.MultiRNNCell(
                [d.rc.BasicLSTMCell(2, state_is_tuple=False, **d.kernel(d.const(0.5))) for _ in range(2)],
                state_is_tuple=False,
            )
            assert "cell-0" in cell._trackable_children()
            assert "cell-1" in cell._trackable_children()
            cell.get_config()  # Should not throw an error
            g, out_m = cell(x, m)
            assert cell.dtype == dtype.name  # the layer infers the input type
            assert not cell.non_trainable_variables
            res = d.evaluate([g, out_m])
            assert len(res) == 2
            _close(res[0], np.array([[0.240, 0.240]], dtype=np_dtype), 1e-2)
            expected_mem = np.array([[0.689, 0.689, 0.448, 0.448, 0.398, 0.398, 0.240, 0.240]], dtype=np_dtype)
            _close(res[1], expected_mem, 1e-2)
        with d.scope(f"other_{dtype.name}", initializer=d.const(0.5)):
            x = tf.constant(np.array([[1.0, 1.0, 1.0]], np_dtype))  # input_size != num_units
            m = tf.constant(0.1 * np.ones([1, 4], np_dtype))
            g, out_m = d.rc.BasicLSTMCell(2, state_is_tuple=False, **d.kernel(d.const(0.5)))(x, m)
            res = d.evaluate([g, out_m])
            assert len(res) == 2


@carried
def testBasicLSTMCellDimension0Error(d):
    with d.scope("root", initializer=d.const(0.5)):
        num_units, state_size, batch_size, input_size = 2, 4, 3, 4
        x = tf.ones([batch_size, input_size])
        m = 0.1 * tf.ones([batch_size - 1, state_size])
        with pytest.raises(ValueError):
            g, out_m = d.rc.BasicLSTMCell(num_units, state_is_tuple=False)(x, m)
            d.evaluate([g, out_m])


@carried
def testBasicLSTMCellStateSizeError(d):
    with d.scope("root", initializer=d.const(0.5)):
        num_units, state_size, batch_size, input_size = 2, 6, 3, 4  # state_size must be num_units * 2
        x = tf.ones([batch_size, input_size])
        m = 0.1 * tf.ones([batch_size, state_size])
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
            g, out_m = d.rc.BasicLSTMCell(num_units, state_is_tuple=False)(x, m)
            d.evaluate([g, out_m])


@carried
def testBasicLSTMCellStateTupleType(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.zeros([1, 2])
        m0 = (tf.zeros([1, 2]),) * 2
        m1 = (tf.zeros([1, 2]),) * 2
        cell = d.rc.MultiRNNCell([d.rc.BasicLSTMCell(2) for _ in range(2)], state_is_tuple=True)
        assert isinstance(cell.state_size, tuple)
        assert isinstance(cell.state_size[0], d.rc.LSTMStateTuple)
        assert isinstance(cell.state_size[1], d.rc.LSTMStateTuple)
        _, (out_m0, out_m1) = cell(x, (m0, m1))  # regular tuples
        assert isinstance(out_m0, d.rc.LSTMStateTuple)
        assert isinstance(out_m1, d.rc.LSTMStateTuple)
    with d.scope("root", reuse=True):
        zero_state = cell.zero_state(1, tf.float32)
        assert isinstance(zero_state, tuple)
        assert isinstance(zero_state[0], d.rc.LSTMStateTuple)
        assert isinstance(zero_state[1], d.rc.LSTMStateTuple)
        _, (out_m0, out_m1) = cell(x, zero_state)
        assert isinstance(out_m0, d.rc.LSTMStateTuple)
        assert isinstance(out_m1, d.rc.LSTMStateTuple)


@carried
def testBasicLSTMCellWithStateTuple(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0]])
        m0 = tf.constant(0.1 * np.ones([1, 4], np.float32))
        m1 = tf.constant(0.1 * np.ones([1, 4], np.float32))
        cell = d.rc.MultiRNNCell(
            [d.rc.BasicLSTMCell(2, state_is_tuple=False, **d.kernel(d.const(0.5))) for _ in range(2)],
            state_is_tuple=True,
        )
        g, (out_m0, out_m1) = cell(x, (m0, m1))
        res = d.evaluate([g, out_m0, out_m1])
        assert len(res) == 3
        _close(res[0], [[0.24024698, 0.24024698]])
        _close(res[1], np.array([[0.68967271, 0.68967271, 0.44848421, 0.44848421]]))
        _close(res[2], np.array([[0.39897051, 0.39897051, 0.24024698, 0.24024698]]))


@carried
def testLSTMCell(d):
    num_units, num_proj, batch_size = 8, 6, 3  # input_size 2
    state_size = num_units + num_proj
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        m = tf.constant(0.1 * np.ones((batch_size, state_size), np.float32))
        cell = d.rc.LSTMCell(
            num_units=num_units, num_proj=num_proj, forget_bias=1.0, state_is_tuple=False, initializer=d.const(0.5)
        )
        output, state = cell(x, m)
        res = d.evaluate([output, state])
        assert len(res) == 2
        assert res[0].shape == (batch_size, num_proj)
        assert res[1].shape == (batch_size, state_size)
        for i in range(1, batch_size):  # different inputs, so different outputs and states
            assert float(np.linalg.norm(res[0][0, :] - res[0][i, :])) > 1e-6
            assert float(np.linalg.norm(res[1][0, :] - res[1][i, :])) > 1e-6


@carried
def testWrapperCheckpointing(d):
    for index, wrapper_type in enumerate(
        [d.rc.DropoutWrapper, d.rc.ResidualWrapper, lambda cell: d.rc.MultiRNNCell([cell])]
    ):
        with d.scope(f"wrapper_{index}"):
            cell = d.rc.BasicRNNCell(1)
            wrapper = wrapper_type(cell)
            wrapper(tf.ones([1, 1]), state=wrapper.zero_state(batch_size=1, dtype=tf.float32))
            checkpoint = tf.train.Checkpoint(wrapper=wrapper)
            with tempfile.TemporaryDirectory() as folder:
                d.assign(d.bias(cell), [40.0])
                save_path = checkpoint.save(os.path.join(folder, "ckpt"))
                d.assign(d.bias(cell), [0.0])
                checkpoint.restore(save_path).assert_consumed().run_restore_ops()
            np.testing.assert_array_equal([40.0], d.evaluate(d.bias(cell)))


@carried
def testResidualWrapper(d):
    x = tf.convert_to_tensor(np.array([[1.0, 1.0, 1.0]]))
    m = tf.convert_to_tensor(np.array([[0.1, 0.1, 0.1]]))
    base_cell = d.rc.GRUCell(3, kernel_initializer=d.const(0.5), bias_initializer=d.const(0.5))
    g, m_new = base_cell(x, m)
    wrapper_object = d.rc.ResidualWrapper(base_cell)
    wrapper_object.get_config()  # Should not throw an error
    assert "cell" in wrapper_object._trackable_children()
    assert wrapper_object._trackable_children()["cell"] is base_cell
    g_res, m_new_res = wrapper_object(x, m)
    res = d.evaluate([g, g_res, m_new, m_new_res])
    _close(res[1], res[0] + [1.0, 1.0, 1.0])  # residual connections
    _close(res[2], res[3])  # states are left untouched


@carried
def testResidualWrapperWithSlice(d):
    x = tf.convert_to_tensor(np.array([[1.0, 1.0, 1.0, 1.0, 1.0]]))
    m = tf.convert_to_tensor(np.array([[0.1, 0.1, 0.1]]))
    base_cell = d.rc.GRUCell(3, kernel_initializer=d.const(0.5), bias_initializer=d.const(0.5))
    g, m_new = base_cell(x, m)

    def residual_with_slice_fn(inp, out):
        inp_sliced = tf.slice(inp, [0, 0], [-1, 3])
        return inp_sliced + out

    g_res, m_new_res = d.rc.ResidualWrapper(base_cell, residual_with_slice_fn)(x, m)
    res_g, res_g_res, res_m_new, res_m_new_res = d.evaluate([g, g_res, m_new, m_new_res])
    _close(res_g_res, res_g + [1.0, 1.0, 1.0])
    _close(res_m_new, res_m_new_res)


@carried
def testDeviceWrapper(d):
    x = tf.zeros([1, 3])
    m = tf.zeros([1, 3])
    cell = d.rc.GRUCell(3)
    wrapped_cell = d.rc.DeviceWrapper(cell, "/cpu:0")
    wrapped_cell.get_config()  # Should not throw an error
    assert wrapped_cell._trackable_children()["cell"] == cell
    outputs, _ = wrapped_cell(x, m)
    assert "cpu:0" in outputs.device.lower()


@carried
def testMultiRNNCell(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0]])
        m = tf.constant([[0.1, 0.1, 0.1, 0.1]])
        multi_rnn_cell = d.rc.MultiRNNCell(
            [d.rc.GRUCell(2, **d.kernel(d.const(0.5), recurrent=False)) for _ in range(2)], state_is_tuple=False
        )
        _, ml = multi_rnn_cell(x, m)
        res = d.evaluate(ml)
        _close(res, [[0.175991, 0.175991, 0.13248, 0.13248]])
        # TF1: 2 * 4 weights (a GRU's gates and candidate kernels and biases); Keras' GRU keeps 3 per cell
        assert len(multi_rnn_cell.weights) == 2 * (4 if d.name == "tf1" else 3)
        assert all(w.dtype == tf.float32 for w in multi_rnn_cell.weights)


@carried
def testMultiRNNCellWithStateTuple(d):
    with d.scope("root", initializer=d.const(0.5)):
        x = tf.constant([[1.0, 1.0]])
        m_bad = tf.zeros([1, 4])
        m_good = (tf.constant([[0.1, 0.1]]), tf.constant([[0.1, 0.1]]))
        with pytest.raises(ValueError, match="Expected state .* a tuple"):
            d.rc.MultiRNNCell([d.rc.GRUCell(2) for _ in range(2)], state_is_tuple=True)(x, m_bad)
        _, ml = d.rc.MultiRNNCell(
            [d.rc.GRUCell(2, **d.kernel(d.const(0.5), recurrent=False)) for _ in range(2)], state_is_tuple=True
        )(x, m_good)
        res = d.evaluate(ml)
        _close(res[0], [[0.175991, 0.175991]])
        _close(res[1], [[0.13248, 0.13248]])


def _roundtrip(d, wrapper_cls, wrapper):
    config = wrapper.get_config()
    config_copy = config.copy()
    config_copy["cell"] = d.rc.LSTMCell.from_config(config_copy["cell"]["config"])
    # Keras loads code (a lambda or local function in the config) only when asked: `safe_mode=False`
    return config, wrapper_cls.from_config(config_copy, **({"safe_mode": False} if d.name == "ku" else {}))


@carried
def testDeviceWrapperSerialization(d):
    wrapper = d.rc.DeviceWrapper(d.rc.LSTMCell(10), "/cpu:0")
    config, reconstructed_wrapper = _roundtrip(d, d.rc.DeviceWrapper, wrapper)
    assert config == reconstructed_wrapper.get_config()
    assert isinstance(reconstructed_wrapper, d.rc.DeviceWrapper)


@carried
def testResidualWrapperSerialization(d):
    cell = d.rc.LSTMCell(10)
    config, reconstructed_wrapper = _roundtrip(d, d.rc.ResidualWrapper, d.rc.ResidualWrapper(cell))
    assert config == reconstructed_wrapper.get_config()
    assert isinstance(reconstructed_wrapper, d.rc.ResidualWrapper)
    _, reconstructed_wrapper = _roundtrip(
        d, d.rc.ResidualWrapper, d.rc.ResidualWrapper(cell, residual_fn=lambda i, o: i + i + o)
    )
    assert reconstructed_wrapper._residual_fn(1, 2) == 4

    def residual_fn(inputs, outputs):
        return inputs * 3 + outputs

    _, reconstructed_wrapper = _roundtrip(d, d.rc.ResidualWrapper, d.rc.ResidualWrapper(cell, residual_fn=residual_fn))
    assert reconstructed_wrapper._residual_fn(1, 2) == 5


@carried
def testDropoutWrapperSerialization(d):
    cell = d.rc.LSTMCell(10)
    config, reconstructed_wrapper = _roundtrip(d, d.rc.DropoutWrapper, d.rc.DropoutWrapper(cell))
    assert config == reconstructed_wrapper.get_config()
    assert isinstance(reconstructed_wrapper, d.rc.DropoutWrapper)
    wrapper = d.rc.DropoutWrapper(cell, dropout_state_filter_visitor=lambda s: True)
    _, reconstructed_wrapper = _roundtrip(d, d.rc.DropoutWrapper, wrapper)
    assert reconstructed_wrapper._dropout_state_filter(None)

    def dropout_state_filter_visitor(unused_state):
        return False

    wrapper = d.rc.DropoutWrapper(cell, dropout_state_filter_visitor=dropout_state_filter_visitor)
    _, reconstructed_wrapper = _roundtrip(d, d.rc.DropoutWrapper, wrapper)
    assert not reconstructed_wrapper._dropout_state_filter(None)


@carried
def testSavedModel(d):
    if d.name == "tf1":
        return  # TF runs it eagerly only (`cached_session` + tf.function): carried for ku alone
    root = tf.Module()
    root.cell = d.rc.LSTMCell(8)

    @tf.function(input_signature=[tf.TensorSpec([3, 8])])
    def call(x):
        state = root.cell.zero_state(3, dtype=x.dtype)
        y, _ = root.cell(x, state)
        return y

    root.call = call
    expected = root.call(tf.zeros((3, 8)))
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(root, os.path.join(folder, "saved_model"))
        loaded = tf.saved_model.load(os.path.join(folder, "saved_model"))
    _close(expected, loaded.call(tf.zeros((3, 8))))


# ------------------------------------------------------------------------------- DropoutWrapperTest
def _testDropoutWrapper(d, batch_size=None, time_steps=None, parallel_iterations=None, scope="root", **kwargs):
    if batch_size is None and time_steps is None:
        batch_size, time_steps = 1, 2  # 2 time steps, batch size 1, depth 3
        x = tf.constant([[[2.0, 2.0, 2.0]], [[1.0, 1.0, 1.0]]], dtype=tf.float32)
        m = d.rc.LSTMStateTuple(*[tf.constant([[0.1, 0.1, 0.1]], dtype=tf.float32)] * 2)
    else:
        x = tf.constant(np.random.randn(time_steps, batch_size, 3).astype(np.float32))
        m = d.rc.LSTMStateTuple(*[tf.constant([[0.1, 0.1, 0.1]] * batch_size, dtype=tf.float32)] * 2)
    with d.scope(scope):
        outputs, final_state = d.dynamic_rnn(
            cell=d.rc.DropoutWrapper(d.rc.LSTMCell(3, initializer=d.const(0.5)), dtype=x.dtype, **kwargs),
            time_major=True,
            parallel_iterations=parallel_iterations,
            inputs=x,
            initial_state=m,
            **d.train,
        )
    res = d.evaluate([outputs, final_state])
    assert res[0].shape == (time_steps, batch_size, 3)
    assert res[1].c.shape == (batch_size, 3)
    assert res[1].h.shape == (batch_size, 3)
    return res


TRUE_FULL_OUTPUT = np.array([[[0.751109, 0.751109, 0.751109]], [[0.895509, 0.895509, 0.895509]]], np.float32)
TRUE_FULL_FINAL_C = np.array([[1.949385, 1.949385, 1.949385]], np.float32)


@carried
def testDropoutWrapperProperties(d):
    cell = d.rc.BasicRNNCell(10)
    wrapper = d.rc.DropoutWrapper(cell)
    assert wrapper.wrapped_cell == cell  # GitHub issue 15810
    assert wrapper.state_size == 10
    assert wrapper.output_size == 10


@carried
def testDropoutWrapperZeroState(d):
    class _Cell(d.rc.BasicRNNCell):
        def zero_state(self, batch_size=None, dtype=None):
            return "wrapped_cell_zero_state"

    wrapper = d.rc.DropoutWrapper(_Cell(10))
    assert wrapper.zero_state(10, tf.float32) == "wrapped_cell_zero_state"


@carried
def testDropoutWrapperKeepAllConstantInput(d):
    keep = tf.ones([])
    res = _testDropoutWrapper(d, input_keep_prob=keep, output_keep_prob=keep, state_keep_prob=keep)
    _close(TRUE_FULL_OUTPUT, res[0])
    _close(TRUE_FULL_OUTPUT[1], res[1].h)
    _close(TRUE_FULL_FINAL_C, res[1].c)


@carried
def testDropoutWrapperKeepAll(d):
    keep = d.variable("all", 1.0)
    res = _testDropoutWrapper(d, input_keep_prob=keep, output_keep_prob=keep, state_keep_prob=keep)
    _close(TRUE_FULL_OUTPUT, res[0])
    _close(TRUE_FULL_OUTPUT[1], res[1].h)
    _close(TRUE_FULL_FINAL_C, res[1].c)


@carried
def testDropoutWrapperWithSeed(d):
    keep_some = 0.5
    d.set_seed(2)
    res_standard_1 = _testDropoutWrapper(
        d, input_keep_prob=keep_some, output_keep_prob=keep_some, state_keep_prob=keep_some, seed=10,
        parallel_iterations=1, scope="root_1",
    )  # fmt: skip
    d.set_seed(2)
    res_standard_2 = _testDropoutWrapper(
        d, input_keep_prob=keep_some, output_keep_prob=keep_some, state_keep_prob=keep_some, seed=10,
        parallel_iterations=1, scope="root_2",
    )  # fmt: skip
    _close(res_standard_1[0], res_standard_2[0])
    _close(res_standard_1[1].c, res_standard_2[1].c)
    _close(res_standard_1[1].h, res_standard_2[1].h)


@carried
def testDropoutWrapperKeepNoOutput(d):
    keep_all = d.variable("all", 1.0)
    keep_none = d.variable("none", 1e-6)
    res = _testDropoutWrapper(d, input_keep_prob=keep_all, output_keep_prob=keep_none, state_keep_prob=keep_all)
    _close(np.zeros(res[0].shape), res[0])
    _close(TRUE_FULL_OUTPUT[1], res[1].h)
    _close(TRUE_FULL_FINAL_C, res[1].c)


@carried
def testDropoutWrapperKeepNoStateExceptLSTMCellMemory(d):
    keep_all = d.variable("all", 1.0)
    keep_none = d.variable("none", 1e-6)
    # Even though the state is dropped, DropoutWrapper by default never drops an LSTMStateTuple's memory ("c").
    res = _testDropoutWrapper(d, input_keep_prob=keep_all, output_keep_prob=keep_all, state_keep_prob=keep_none)
    true_c_state = np.array([[1.713925, 1.713925, 1.713925]], dtype=np.float32)
    _close(TRUE_FULL_OUTPUT[0], res[0][0])
    assert np.linalg.norm(TRUE_FULL_OUTPUT[1] - res[0][1]) > 1e-4  # modified by the zeroed input state
    _close(np.zeros(res[1].h.shape), res[1].h)  # h has been set to zero
    _close(true_c_state, res[1].c)  # c of an LSTMStateTuple is never modified


@carried
def testDropoutWrapperKeepNoInput(d):
    keep_all = d.variable("all", 1.0)
    keep_none = d.variable("none", 1e-6)
    res = _testDropoutWrapper(d, input_keep_prob=keep_none, output_keep_prob=keep_all, state_keep_prob=keep_all)
    assert np.linalg.norm(res[0] - TRUE_FULL_OUTPUT) > 1e-4  # all outputs differ: the inputs are zeroed
    assert np.linalg.norm(res[1].h - TRUE_FULL_OUTPUT[1]) > 1e-4
    assert np.linalg.norm(res[1].c - TRUE_FULL_FINAL_C) > 1e-4


@carried
def testDropoutWrapperRecurrentOutput(d):
    keep_all = d.variable("all", 1.0)
    res = _testDropoutWrapper(
        d, input_keep_prob=keep_all, output_keep_prob=0.8, state_keep_prob=keep_all, variational_recurrent=True,
        input_size=3, batch_size=5, time_steps=7,
    )  # fmt: skip
    output_mask = np.abs(res[0]) > 1e-6
    for m in output_mask[1:]:  # the same dropout pattern at every time step
        np.testing.assert_array_equal(output_mask[0], m)


def _check_shared_masks(res):
    output_mask = np.abs(res[0]) > 1e-6
    for time_step in output_mask:
        np.testing.assert_array_equal(output_mask[0], time_step)  # the same pattern at every time step
        for batch_entry in time_step:
            np.testing.assert_array_equal(batch_entry, time_step[0])  # every batch entry gets the same mask
    state_c_mask = np.abs(res[1].c) > 1e-6
    state_h_mask = np.abs(res[1].h) > 1e-6
    for batch_entry in state_c_mask:
        np.testing.assert_array_equal(batch_entry, state_c_mask[0])
    for batch_entry in state_h_mask:
        np.testing.assert_array_equal(batch_entry, state_h_mask[0])


@carried
def testDropoutWrapperRecurrentStateInputAndOutput(d):
    res = _testDropoutWrapper(
        d, input_keep_prob=0.9, output_keep_prob=0.9, state_keep_prob=0.9, variational_recurrent=True,
        input_size=3, batch_size=5, time_steps=7,
    )  # fmt: skip
    _check_shared_masks(res)


@carried
def testDropoutWrapperRecurrentStateInputAndOutputWithSeed(d):
    d.set_seed(2347)
    np.random.seed(23487)
    res0 = _testDropoutWrapper(
        d, input_keep_prob=0.9, output_keep_prob=0.9, state_keep_prob=0.9, variational_recurrent=True,
        input_size=3, batch_size=5, time_steps=7, seed=-234987, scope="root_0",
    )  # fmt: skip
    d.set_seed(2347)
    np.random.seed(23487)
    res1 = _testDropoutWrapper(
        d, input_keep_prob=0.9, output_keep_prob=0.9, state_keep_prob=0.9, variational_recurrent=True,
        input_size=3, batch_size=5, time_steps=7, seed=-234987, scope="root_1",
    )  # fmt: skip
    _check_shared_masks(res0)
    _close(res0[0], res1[0])  # a seeded calculation is identical
    _close(res0[1].c, res1[1].c)
    _close(res0[1].h, res1[1].h)


# ----------------------------------------------------------------------------- LSTMTest (the cells)
SEED = 23489


@carried
def testDType(d):
    lstm = d.rc.LSTMCell(10)  # no dtype: float32
    lstm.build(tf.ones([10, 50]).shape)
    assert d.bias(lstm).dtype.base_dtype == tf.float32 if d.name == "tf1" else lstm.bias.dtype == "float32"
    for dtype in [tf.float16, tf.float32, tf.float64]:
        lstm = d.rc.LSTMCell(10, dtype=dtype)
        lstm.build(tf.ones([10, 50]).shape)
        bias_dtype = d.bias(lstm).dtype
        assert (bias_dtype.base_dtype if d.name == "tf1" else tf.as_dtype(bias_dtype)) == dtype


def _static_lstm(d, cell, batch_size=2, input_size=5, max_length=8, input_dtype=tf.float32, **kwargs):
    """TF's `static_rnn(cell, max_length * [placeholder])` with the placeholder fed `randn(batch, input)`."""
    np.random.seed(SEED)
    input_value = np.random.randn(batch_size, input_size).astype(input_dtype.as_numpy_dtype)
    inputs = max_length * [tf.constant(input_value)]
    outputs, state = d.static_rnn(cell, inputs, **kwargs)
    assert len(outputs) == len(inputs)
    return outputs, state


@carried
def testNoProjNoSharding(d):
    with d.scope("nps"):
        cell = d.rc.LSTMCell(3, initializer=d.uniform(-0.01, 0.01, SEED), state_is_tuple=False)
        outputs, _ = _static_lstm(d, cell, dtype=tf.float32)
        for out in outputs:
            assert out.shape.as_list() == [2, 3]
        d.evaluate(outputs)


@carried
def testCellClipping(d):
    with d.scope("clip"):
        cell = d.rc.LSTMCell(
            3, use_peepholes=True, cell_clip=0.0, initializer=d.uniform(-0.01, 0.01, SEED), state_is_tuple=False
        )
        outputs, _ = _static_lstm(d, cell, dtype=tf.float32)
        for out in outputs:
            assert out.shape.as_list() == [2, 3]
        for value in d.evaluate(outputs):  # c clipped to 0: tanh(c) = 0, so m == 0
            np.testing.assert_array_equal(value, np.zeros((2, 3)))


@carried
def testProjNoSharding(d):
    with d.scope("proj"):
        cell = d.rc.LSTMCell(
            3, use_peepholes=True, num_proj=4, initializer=d.uniform(-0.01, 0.01, SEED), state_is_tuple=False
        )
        outputs, _ = _static_lstm(d, cell, dtype=tf.float32)
        d.evaluate(outputs)


@carried
def testStateTupleWithProjAndSequenceLength(d):
    num_units, input_size, _batch_size, num_proj, max_length = 3, 5, 2, 4, 8
    sequence_length = [4, 6]
    initializer = d.uniform(-0.01, 0.01, SEED)
    cell_notuple = d.rc.LSTMCell(
        num_units, use_peepholes=True, num_proj=num_proj, initializer=initializer, state_is_tuple=False
    )
    cell_tuple = d.rc.LSTMCell(
        num_units, use_peepholes=True, num_proj=num_proj, initializer=initializer, state_is_tuple=True
    )
    with d.scope("state_tuple_proj"):
        outputs_notuple, state_notuple = _static_lstm(
            d, cell_notuple, dtype=tf.float32, sequence_length=sequence_length
        )
    with d.scope("state_tuple_proj", reuse=True):
        d.share(cell_notuple, cell_tuple, (None, input_size))
        outputs_tuple, state_tuple = _static_lstm(d, cell_tuple, dtype=tf.float32, sequence_length=sequence_length)
    assert len(outputs_notuple) == max_length and len(outputs_tuple) == max_length
    assert isinstance(state_tuple, tuple)
    assert isinstance(state_notuple, tf.Tensor)
    np.testing.assert_array_equal(d.evaluate(outputs_notuple), d.evaluate(outputs_tuple))
    np.testing.assert_array_equal(d.evaluate(state_notuple), np.hstack(d.evaluate(state_tuple)))


@carried
def testProjSharding(d):
    with d.scope("shard"):
        cell = d.rc.LSTMCell(
            3, use_peepholes=True, num_proj=4, num_unit_shards=2, num_proj_shards=3,
            initializer=d.uniform(-0.01, 0.01, SEED), state_is_tuple=False,
        )  # fmt: skip
        outputs, _ = _static_lstm(d, cell, dtype=tf.float32)
        d.evaluate(outputs)


@carried
def testShardNoShardEquivalentOutput(d):
    initializer = d.const(0.001)
    cell_noshard = d.rc.LSTMCell(
        3, num_proj=4, use_peepholes=True, initializer=initializer, num_unit_shards=2, num_proj_shards=3,
        state_is_tuple=False,
    )  # fmt: skip
    cell_shard = d.rc.LSTMCell(3, use_peepholes=True, initializer=initializer, num_proj=4, state_is_tuple=False)
    with d.scope("noshard_scope"):
        outputs_noshard, state_noshard = _static_lstm(d, cell_noshard, dtype=tf.float32)
    with d.scope("shard_scope"):
        outputs_shard, state_shard = _static_lstm(d, cell_shard, dtype=tf.float32)
    values_noshard, values_shard = d.evaluate(outputs_noshard), d.evaluate(outputs_shard)
    assert len(values_noshard) == len(values_shard)
    for v_noshard, v_shard in zip(values_noshard, values_shard):
        _close(v_noshard, v_shard, atol=1e-3)
    _close(d.evaluate(state_noshard), d.evaluate(state_shard), atol=1e-3)


@carried
def testDoubleInput(d):
    with d.scope("double"):
        cell = d.rc.LSTMCell(
            3, use_peepholes=True, num_proj=4, num_unit_shards=2, num_proj_shards=3,
            initializer=d.uniform(-1, 1, SEED), state_is_tuple=False,
        )  # fmt: skip
        outputs, _ = _static_lstm(d, cell, input_dtype=tf.float64, initial_state=cell.zero_state(2, tf.float64))
        values = d.evaluate(outputs)
        assert values[0].dtype == np.float64


@carried
def testDoubleInputWithDropoutAndDynamicCalculation(d):
    """Smoke test for an LSTM with doubles, dropout and dynamic calculation."""
    batch_size, input_size, max_length = 2, 5, 8
    with d.scope("double_dropout"):
        sequence_length = tf.constant([2, 3], tf.int64)
        cell = d.rc.LSTMCell(
            3, use_peepholes=True, num_proj=4, num_unit_shards=2, num_proj_shards=3,
            initializer=d.uniform(-0.01, 0.01, SEED), state_is_tuple=False,
        )  # fmt: skip
        dropout_cell = d.rc.DropoutWrapper(cell, 0.5, seed=0)
        np.random.seed(SEED)
        input_value = np.asarray(np.random.randn(batch_size, input_size), dtype=np.float64)
        inputs = max_length * [tf.constant(input_value)]
        outputs, state = d.static_rnn(
            dropout_cell, inputs, sequence_length=sequence_length,
            initial_state=cell.zero_state(batch_size, tf.float64), **d.train,
        )  # fmt: skip
        assert len(outputs) == len(inputs)
        values, state_value = d.evaluate([outputs, [state]])
        assert values[0].dtype == input_value.dtype
        assert state_value[0].dtype == input_value.dtype


@carried
def testSharingWeightsWithReuse(d):
    cell = d.rc.LSTMCell(3, use_peepholes=True, num_proj=4, initializer=d.uniform(-1, 1, SEED), state_is_tuple=False)
    cell_d = d.rc.LSTMCell(
        3, use_peepholes=True, num_proj=4, initializer=d.uniform(-1, 1, SEED + 1), state_is_tuple=False
    )
    with d.scope("share_scope"):
        outputs0, _ = _static_lstm(d, cell, dtype=tf.float32)
    with d.scope("share_scope", reuse=True):
        outputs1, _ = _static_lstm(d, cell, dtype=tf.float32)
    with d.scope("diff_scope"):
        outputs2, _ = _static_lstm(d, cell_d, dtype=tf.float32)
    for o1, o2, o3 in zip(d.evaluate(outputs0), d.evaluate(outputs1), d.evaluate(outputs2)):
        np.testing.assert_array_equal(o1, o2)  # the same weights
        assert np.linalg.norm(o1 - o3) > 1e-6  # different weights


@carried
def testSharingWeightsWithDifferentNamescope(d):
    cell = d.rc.LSTMCell(3, use_peepholes=True, num_proj=4, initializer=d.uniform(-1, 1, SEED), state_is_tuple=False)
    with tf.name_scope("scope0"):
        with d.scope("share_scope"):
            outputs0, _ = _static_lstm(d, cell, dtype=tf.float32)
    with tf.name_scope("scope1"):
        with d.scope("share_scope", reuse=True):
            outputs1, _ = _static_lstm(d, cell, dtype=tf.float32)
    for out0, out1 in zip(d.evaluate(outputs0), d.evaluate(outputs1)):
        np.testing.assert_array_equal(out0, out1)


@carried
def testDynamicRNNWithTupleStates(d):
    num_units, input_size, batch_size, num_proj, max_length = 3, 5, 2, 4, 8
    sequence_length = [4, 6]
    np.random.seed(SEED)
    inputs = max_length * [tf.constant(np.random.randn(batch_size, input_size).astype(np.float32))]
    inputs_c = tf.stack(inputs)
    cell = d.rc.LSTMCell(
        num_units, use_peepholes=True, num_proj=num_proj, initializer=d.uniform(-0.01, 0.01, SEED),
        state_is_tuple=True,
    )  # fmt: skip
    with d.scope("root") as scope:
        outputs_static, state_static = d.static_rnn(cell, inputs, dtype=tf.float32, sequence_length=sequence_length)
    with d.scope("root", reuse=True):
        outputs_dynamic, state_dynamic = d.dynamic_rnn(
            cell, inputs_c, dtype=tf.float32, time_major=True, sequence_length=sequence_length
        )
    del scope
    assert isinstance(state_static, d.rc.LSTMStateTuple)
    assert isinstance(state_dynamic, d.rc.LSTMStateTuple)
    assert state_static[0] is state_static.c and state_static[1] is state_static.h
    assert state_dynamic[0] is state_dynamic.c and state_dynamic[1] is state_dynamic.h
    outputs_static, outputs_dynamic, state_static, state_dynamic = d.evaluate(
        [outputs_static, outputs_dynamic, state_static, state_dynamic]
    )
    np.testing.assert_array_equal(np.stack(outputs_static), outputs_dynamic)
    np.testing.assert_array_equal(np.hstack(state_static), np.hstack(state_dynamic))


@carried
def testDynamicRNNWithNestedTupleStates(d):
    num_units, input_size, batch_size, num_proj, max_length = 3, 5, 2, 4, 8
    sequence_length = [4, 6]
    np.random.seed(SEED)
    inputs = max_length * [tf.constant(np.random.randn(batch_size, input_size).astype(np.float32))]
    inputs_c = tf.stack(inputs)

    def _cell(i):
        return d.rc.LSTMCell(
            num_units + i, use_peepholes=True, num_proj=num_proj + i, initializer=d.uniform(-0.01, 0.01, SEED),
            state_is_tuple=True,
        )  # fmt: skip

    cell = d.rc.MultiRNNCell([_cell(i) for i in range(4)], state_is_tuple=True)  # 4 sub-tuples of length 2
    assert len(cell.state_size) == 4
    for i in range(4):
        assert len(cell.state_size[i]) == 2
    test_zero = cell.zero_state(1, tf.float32)
    assert len(test_zero) == 4
    for i in range(4):
        assert test_zero[i][0].get_shape()[1] == cell.state_size[i][0]
        assert test_zero[i][1].get_shape()[1] == cell.state_size[i][1]
    with d.scope("root"):
        outputs_static, state_static = d.static_rnn(cell, inputs, dtype=tf.float32, sequence_length=sequence_length)
    with d.scope("root", reuse=True):
        outputs_dynamic, state_dynamic = d.dynamic_rnn(
            cell, inputs_c, dtype=tf.float32, time_major=True, sequence_length=sequence_length
        )
    outputs_static, outputs_dynamic, state_static, state_dynamic = d.evaluate(
        [outputs_static, outputs_dynamic, tf.nest.flatten(state_static), tf.nest.flatten(state_dynamic)]
    )
    np.testing.assert_array_equal(np.stack(outputs_static), outputs_dynamic)
    np.testing.assert_array_equal(np.hstack(state_static), np.hstack(state_dynamic))


def _testDynamicEquivalentToStaticRNN(d, use_sequence_length):
    time_steps, num_units, num_proj, input_size, batch_size = 8, 3, 4, 5, 2
    np.random.seed(SEED)
    input_values = np.random.randn(time_steps, batch_size, input_size).astype(np.float32)
    sequence_length = np.random.randint(0, time_steps, size=batch_size) if use_sequence_length else None
    # As TF's eager branch: one cell for both (eager ignores operation seeds)
    cell = d.rc.LSTMCell(
        num_units, use_peepholes=True, initializer=d.uniform(-0.01, 0.01, SEED), num_proj=num_proj,
        state_is_tuple=False,
    )  # fmt: skip
    concat_inputs = tf.constant(input_values)
    with d.scope("dynamic_scope"):
        outputs_static, state_static = d.static_rnn(
            cell, tf.unstack(concat_inputs), sequence_length=sequence_length, dtype=tf.float32
        )
    with d.scope("dynamic_scope", reuse=True):
        outputs_dynamic, state_dynamic = d.dynamic_rnn(
            cell, inputs=concat_inputs, sequence_length=sequence_length, time_major=True, dtype=tf.float32
        )
        split_outputs_dynamic = tf.unstack(outputs_dynamic, time_steps)
    values_static, values_dynamic, state_value_static, state_value_dynamic = d.evaluate(
        [outputs_static, split_outputs_dynamic, state_static, state_dynamic]
    )
    assert len(values_static) == len(values_dynamic)
    for value_static, value_dynamic in zip(values_static, values_dynamic):
        _close(value_static, value_dynamic)
    _close(state_value_static, state_value_dynamic)


@carried
def testDynamicEquivalentToStaticRNN(d):
    _testDynamicEquivalentToStaticRNN(d, use_sequence_length=False)


@carried
def testDynamicEquivalentToStaticRNNWithSequenceLength(d):
    _testDynamicEquivalentToStaticRNN(d, use_sequence_length=True)


@pytest.mark.parametrize("test", CARRIED, ids=[t.__name__ for t in CARRIED])
def test_carried_on_ku(test):
    test(KuDialect())


def _tf1_control(names: list) -> None:  # pragma: no cover - runs in the TF1 child process
    """Runs the carried tests on TF1 itself, each in a fresh graph and session; prints the failures."""
    import importlib.util
    import sys  # this function's source runs alone in the child: it imports what it uses
    import traceback

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond: half the graph-building time
    spec = importlib.util.spec_from_file_location("carried", sys.argv[1])
    carried = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(carried)
    failed = []
    config = tf.compat.v1.ConfigProto()  # Grappler off: each graph runs as built (its rewrites took ~30% here)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    for name in names:
        with tf.Graph().as_default(), tf.compat.v1.Session(config=config) as session:
            try:
                getattr(carried, name)(carried.TF1Dialect(session))
            except Exception:
                failed.append(name)
                print(f"FAILED {name}\n{traceback.format_exc()[-2000:]}")
    print("TF1 FAILED:", ",".join(failed))


# TF itself runs these in eager mode only (`testSavedModel`), so the graph-mode control skips them.
EAGER_ONLY = {"testSavedModel"}


@pytest.mark.subprocess
def test_the_same_tests_pass_on_tf1_itself():
    """The control run: every carried test, unchanged, passes on TF1 (tf.compat.v1 with tf-keras, graph mode)."""
    names = [t.__name__ for t in CARRIED if t.__name__ not in EAGER_ONLY]
    source = textwrap.dedent(inspect.getsource(_tf1_control)) + f"\n_tf1_control({names!r})\n"
    from tf1_reference import run_tf1

    done = run_tf1(["-c", source, os.path.abspath(__file__)], timeout=900)
    assert "TF1 FAILED: \n" in done.stdout, done.stdout[-8000:]
