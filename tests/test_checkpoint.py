"""`load_tf1_weights`: TF1 checkpoints into Keras cells — the split, the scopes, and every error message.

Most checkpoints here are written in this process with `tf.compat.v1.train.Saver` and TF1's variable
names (`<scope>/kernel [F + H, H]`, `<scope>/bias [H]`); one test reads the checkpoint TF1 itself wrote
(`tf1_reference.py`, shared with `test_tf1_parity.py`, run once per session).
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unroll as ku
from references import basic_rnn
from tf1_reference import CASES, tf1_reference

F, H = 2, 3
SCOPE = "rnn/basic_rnn_cell"


def _tf1_kernel_and_bias():
    """A kernel whose W and U halves are easy to tell apart: W rows are 0.1·k, U rows are -0.1·k."""
    kernel = np.concatenate(
        [0.1 * np.arange(1, F * H + 1).reshape(F, H), -0.1 * np.arange(1, H * H + 1).reshape(H, H)]
    ).astype(np.float32)
    bias = np.array([0.5, -0.5, 0.25], np.float32)
    return kernel, bias


def _save(directory, variables, name="model.ckpt"):
    """Writes a name-based (TF1) checkpoint holding `variables` ({name: array}); returns its prefix."""
    os.makedirs(directory, exist_ok=True)
    saver = tf.compat.v1.train.Saver(var_list={key: tf.Variable(value) for key, value in variables.items()})
    return saver.save(None, os.path.join(str(directory), name))


@pytest.fixture
def checkpoint(tmp_path):
    kernel, bias = _tf1_kernel_and_bias()
    return _save(tmp_path / "ckpt", {f"{SCOPE}/kernel": kernel, f"{SCOPE}/bias": bias})


# --------------------------------------------------------------------------------------------- loads
@pytest.mark.parametrize("cell_cls", [ku.BasicRNNCell, keras.layers.SimpleRNNCell])
def test_splits_the_kernel_and_builds_the_cell(checkpoint, cell_cls):
    kernel, bias = _tf1_kernel_and_bias()
    cell = cell_cls(H)
    returned = ku.load_tf1_weights(cell, checkpoint)
    assert cell.built and tuple(cell.kernel.shape) == (F, H)
    for got, expected in zip(cell.get_weights(), [kernel[:F], kernel[F:], bias]):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(returned, [kernel[:F], kernel[F:], bias]):
        np.testing.assert_array_equal(got, expected)


def test_one_step_by_hand(checkpoint):
    """x = [1, 0], h0 = 0: h1 = tanh(W[0] + b) = tanh([0.1, 0.2, 0.3] + [0.5, -0.5, 0.25])."""
    cell = ku.BasicRNNCell(num_units=H)
    ku.load_tf1_weights(cell, checkpoint)
    _, state = ku.dynamic_rnn(cell, np.array([[[1.0, 0.0]]], np.float32))
    np.testing.assert_allclose(np.asarray(state), np.tanh([[0.6, -0.3, 0.55]]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scope", ["rnn/basic_rnn_cell", "/rnn/basic_rnn_cell/", "rnn/basic_rnn_cell/kernel"])
def test_scope_spellings(checkpoint, scope):
    kernel, _ = _tf1_kernel_and_bias()
    cell = ku.BasicRNNCell(H)
    ku.load_tf1_weights(cell, checkpoint, scope=scope)
    np.testing.assert_array_equal(cell.get_weights()[1], kernel[F:])


def test_directory_with_a_checkpoint_file(checkpoint):
    """TF1's Saver writes a `checkpoint` index file; its directory names the latest checkpoint."""
    directory = os.path.dirname(checkpoint)
    assert os.path.exists(os.path.join(directory, "checkpoint"))
    kernel, _ = _tf1_kernel_and_bias()
    cell = ku.BasicRNNCell(H)
    ku.load_tf1_weights(cell, directory)
    np.testing.assert_array_equal(cell.get_weights()[0], kernel[:F])


@pytest.mark.parametrize("layer_cls", [ku.StaticUnroll, ku.DynamicUnroll])
def test_loading_into_a_built_layer_changes_its_outputs(checkpoint, layer_cls):
    """A layer already called keeps working: the cell's weights are replaced in place."""
    kernel, bias = _tf1_kernel_and_bias()
    x = np.random.default_rng(1).standard_normal((2, 4, F)).astype(np.float32)
    layer = layer_cls(ku.BasicRNNCell(H), return_sequences=True)
    layer(x)
    ku.load_tf1_weights(layer.cell, checkpoint)
    expected, _, _ = basic_rnn(x, kernel[:F], kernel[F:], bias)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_cell_without_bias_takes_a_zero_bias(tmp_path):
    kernel, _ = _tf1_kernel_and_bias()
    prefix = _save(tmp_path, {f"{SCOPE}/kernel": kernel, f"{SCOPE}/bias": np.zeros(H, np.float32)})
    cell = ku.BasicRNNCell(H, use_bias=False)
    ku.load_tf1_weights(cell, prefix)
    assert len(cell.get_weights()) == 2
    np.testing.assert_array_equal(cell.get_weights()[0], kernel[:F])


def test_tf1s_own_checkpoint(tmp_path_factory):
    """The checkpoint TF1's Saver wrote from a real graph: every case's cell loads from its scope."""
    reference = tf1_reference(tmp_path_factory)
    for name in CASES:
        case = reference.case(name)
        cell = ku.BasicRNNCell(num_units=case["kernel"].shape[1])
        ku.load_tf1_weights(cell, reference.checkpoint, scope=case["scope"])
        np.testing.assert_array_equal(cell.get_weights()[0], case["kernel"][: cell.get_weights()[0].shape[0]])
        np.testing.assert_array_equal(cell.get_weights()[2], case["bias"])
    # Its graph had no plain "rnn/" scope: the default fails and names every scope it holds.
    with pytest.raises(ValueError, match="static_list/rnn/basic_rnn_cell/kernel") as error:
        ku.load_tf1_weights(ku.BasicRNNCell(5), reference.checkpoint)
    for name in CASES:
        assert f"{name}/rnn/basic_rnn_cell/kernel" in str(error.value)


# -------------------------------------------------------------------------------------------- errors
def test_wrong_scope_lists_what_the_checkpoint_holds(checkpoint):
    with pytest.raises(ValueError, match=r"scope 'dynamic/rnn/basic_rnn_cell'") as error:
        ku.load_tf1_weights(ku.BasicRNNCell(H), checkpoint, scope="dynamic/rnn/basic_rnn_cell")
    message = str(error.value)
    assert "rnn/basic_rnn_cell/kernel [5, 3]" in message and "rnn/basic_rnn_cell/bias [3]" in message
    assert "Received: scope='dynamic/rnn/basic_rnn_cell'" in message


def test_units_do_not_match_the_checkpoint(checkpoint):
    with pytest.raises(ValueError, match=r"shape \[5, 3\].*units=4 needs \[features \+ 4, 4\]"):
        ku.load_tf1_weights(ku.BasicRNNCell(4), checkpoint)


def test_built_cell_with_other_features(checkpoint):
    cell = ku.BasicRNNCell(H)
    cell.build((None, F + 1))
    before = [w.copy() for w in cell.get_weights()]
    with pytest.raises(ValueError, match=rf"built for {F + 1} input features.*F={F}"):
        ku.load_tf1_weights(cell, checkpoint)
    for got, expected in zip(cell.get_weights(), before):  # nothing half-loaded
        np.testing.assert_array_equal(got, expected)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Could not read a TF checkpoint at .*nothing\.ckpt"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), str(tmp_path / "nothing.ckpt"))


def test_directory_without_a_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no `checkpoint` index file"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), str(tmp_path))


def test_missing_bias(tmp_path):
    kernel, _ = _tf1_kernel_and_bias()
    prefix = _save(tmp_path, {f"{SCOPE}/kernel": kernel})
    with pytest.raises(ValueError, match=rf"no bias '{SCOPE}/bias' of shape \[3\]"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), prefix)


def test_nonzero_bias_into_a_cell_without_bias(checkpoint):
    """Dropping TF1's bias silently would change every output: refuse instead."""
    with pytest.raises(ValueError, match="use_bias=False"):
        ku.load_tf1_weights(ku.BasicRNNCell(H, use_bias=False), checkpoint)


@pytest.mark.parametrize("cell", [keras.layers.LSTMCell(H), keras.layers.GRUCell(H)], ids=["LSTMCell", "GRUCell"])
def test_not_a_basic_rnn_cell(checkpoint, cell):
    with pytest.raises(TypeError, match="BasicRNNCell or keras.layers.SimpleRNNCell"):
        ku.load_tf1_weights(cell, checkpoint)


def test_object_based_checkpoint_names_what_it_holds(tmp_path):
    """A TF2 `tf.train.Checkpoint` stores object paths, not TF1 scopes: the message shows them."""
    kernel, _ = _tf1_kernel_and_bias()
    prefix = tf.train.Checkpoint(kernel=tf.Variable(kernel)).write(str(tmp_path / "tf2"))
    with pytest.raises(ValueError, match=r"kernel/\.ATTRIBUTES/VARIABLE_VALUE \[5, 3\]"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), prefix)
