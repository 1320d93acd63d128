"""`load_tf1_weights`: TF1 checkpoints into Keras cells — the split, the scopes, and every error message.

The checkpoints here are written in this process with `tf.compat.v1.train.Saver` and TF1's variable
names (`<scope>/kernel [F + H, H]`, `<scope>/bias [H]`). The checkpoint TF1 itself wrote from a real graph
(`tf1_reference.py`'s child process) is read in `test_tf1_parity.py`, where that child already runs.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from references import basic_rnn

import keras_unroll as ku

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


def test_lstm_cell_given_a_basic_rnn_checkpoint(checkpoint):
    """An LSTM cell at a scope holding a BasicRNNCell: the default scope is not there, and it says what is."""
    with pytest.raises(
        ValueError, match=r"No LSTM kernel under scope 'rnn/basic_lstm_cell'.*rnn/basic_rnn_cell/kernel"
    ):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), checkpoint)
    with pytest.raises(ValueError, match=r"shape \[5, 3\], but an LSTM cell with units=3 needs \[features \+ 3, 12\]"):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), checkpoint, scope=SCOPE)


def test_keras_gru_cell_with_reset_after(checkpoint):
    with pytest.raises(ValueError, match=r"keras.layers.GRUCell\(units, reset_after=False\) or ku.tf1.GRUCell"):
        ku.load_tf1_weights(keras.layers.GRUCell(H), checkpoint, scope="rnn/gru_cell")


def test_object_based_checkpoint_names_what_it_holds(tmp_path):
    """A TF2 `tf.train.Checkpoint` stores object paths, not TF1 scopes: the message shows them."""
    kernel, _ = _tf1_kernel_and_bias()
    prefix = tf.train.Checkpoint(kernel=tf.Variable(kernel)).write(str(tmp_path / "tf2"))
    with pytest.raises(ValueError, match=r"kernel/\.ATTRIBUTES/VARIABLE_VALUE \[5, 3\]"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), prefix)


# ----------------------------------------------------------------------- LSTM, GRU: layouts by hand
FH = F + H
GATE = {name: k for k, name in enumerate("ijfo")}  # TF1's LSTM gate order


def _lstm_checkpoint(directory, scope="rnn/basic_lstm_cell", **extra):
    """A TF1 LSTM kernel whose entry (row, column) is 1000·gate + 10·row + unit, so every move is visible."""
    kernel = np.zeros((FH, 4 * H), np.float32)
    for k in GATE.values():
        for row in range(FH):
            kernel[row, k * H : (k + 1) * H] = 1000 * k + 10 * row + np.arange(H)
    bias = np.concatenate([np.full(H, 0.1 * (k + 1), np.float32) for k in range(4)])
    variables = {f"{scope}/kernel": kernel, f"{scope}/bias": bias}
    variables.update({f"{scope}/{name}": value for name, value in extra.items()})
    return _save(directory, variables), kernel, bias


def _gate(array, gate):
    k = GATE[gate]
    return array[..., k * H : (k + 1) * H]


@pytest.mark.parametrize("cell_cls", [keras.layers.LSTMCell, ku.tf1.BasicLSTMCell])
def test_lstm_layout_gate_order_and_forget_bias(tmp_path, cell_cls):
    """TF1 i, j, f, o -> Keras i, f, c, o; x rows -> kernel, h rows -> recurrent_kernel; f bias + 1.0."""
    prefix, kernel, bias = _lstm_checkpoint(tmp_path)
    cell = cell_cls(H)
    ku.load_tf1_weights(cell, prefix)
    got_kernel, got_recurrent, got_bias = cell.get_weights()
    for keras_k, tf1_gate in enumerate("ifjo"):
        block = slice(keras_k * H, (keras_k + 1) * H)
        np.testing.assert_array_equal(got_kernel[:, block], _gate(kernel, tf1_gate)[:F])
        np.testing.assert_array_equal(got_recurrent[:, block], _gate(kernel, tf1_gate)[F:])
    np.testing.assert_allclose(
        got_bias, np.concatenate([_gate(bias, "i"), _gate(bias, "f") + 1.0, _gate(bias, "j"), _gate(bias, "o")])
    )


def test_forget_bias_from_the_tf1_cell_or_the_argument(tmp_path):
    prefix, _, bias = _lstm_checkpoint(tmp_path)
    own = ku.tf1.BasicLSTMCell(H, forget_bias=0.25)
    ku.load_tf1_weights(own, prefix)
    np.testing.assert_allclose(own.get_weights()[2][H : 2 * H], _gate(bias, "f") + 0.25)
    keras_cell = keras.layers.LSTMCell(H)
    ku.load_tf1_weights(keras_cell, prefix, forget_bias=0.0)
    np.testing.assert_allclose(keras_cell.get_weights()[2][H : 2 * H], _gate(bias, "f"))


def test_lstm_cell_scope_is_found_under_either_tf1_name(tmp_path):
    """A Keras LSTMCell matches TF1's BasicLSTMCell and LSTMCell: the default scope is whichever is there."""
    prefix, kernel, _ = _lstm_checkpoint(tmp_path, scope="rnn/lstm_cell")
    cell = keras.layers.LSTMCell(H)
    ku.load_tf1_weights(cell, prefix)
    np.testing.assert_array_equal(cell.get_weights()[0][:, :H], _gate(kernel, "i")[:F])


def test_both_lstm_scopes_are_ambiguous(tmp_path):
    variables = {}
    for scope in ("rnn/basic_lstm_cell", "rnn/lstm_cell"):
        variables[f"{scope}/kernel"] = np.zeros((FH, 4 * H), np.float32)
        variables[f"{scope}/bias"] = np.zeros(4 * H, np.float32)
    prefix = _save(tmp_path, variables)
    with pytest.raises(ValueError, match=r"both 'rnn/basic_lstm_cell' and 'rnn/lstm_cell'.*pass `scope=`"):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), prefix)


def test_gru_scope_spelled_with_its_kernel(tmp_path):
    scope = "rnn/gru_cell"
    prefix = _save(
        tmp_path,
        {
            f"{scope}/gates/kernel": np.ones((FH, 2 * H), np.float32),
            f"{scope}/gates/bias": np.ones(2 * H, np.float32),
            f"{scope}/candidate/kernel": np.ones((FH, H), np.float32),
            f"{scope}/candidate/bias": np.ones(H, np.float32),
        },
    )
    ku.load_tf1_weights(ku.tf1.GRUCell(H), prefix, scope="rnn/gru_cell/gates/kernel")


def test_gru_layout(tmp_path):
    """TF1 gates (r, u) + candidate -> Keras z (= u), r, h; the biases likewise."""
    rng = np.random.default_rng(0)
    gates, candidate = rng.standard_normal((FH, 2 * H)), rng.standard_normal((FH, H))
    gate_bias, candidate_bias = rng.standard_normal(2 * H), rng.standard_normal(H)
    scope = "rnn/gru_cell"
    prefix = _save(
        tmp_path,
        {
            f"{scope}/gates/kernel": gates.astype(np.float32),
            f"{scope}/gates/bias": gate_bias.astype(np.float32),
            f"{scope}/candidate/kernel": candidate.astype(np.float32),
            f"{scope}/candidate/bias": candidate_bias.astype(np.float32),
        },
    )
    for cell in (keras.layers.GRUCell(H, reset_after=False), ku.tf1.GRUCell(H)):
        ku.load_tf1_weights(cell, prefix)
        kernel, recurrent, bias = cell.get_weights()
        r, u = slice(0, H), slice(H, 2 * H)
        np.testing.assert_allclose(kernel, np.concatenate([gates[:F, u], gates[:F, r], candidate[:F]], 1), rtol=1e-6)
        np.testing.assert_allclose(recurrent, np.concatenate([gates[F:, u], gates[F:, r], candidate[F:]], 1), rtol=1e-6)
        np.testing.assert_allclose(bias, np.concatenate([gate_bias[u], gate_bias[r], candidate_bias]), rtol=1e-6)


def test_dense_and_an_unbuilt_dense_is_built(tmp_path):
    kernel, bias = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([1.0, -1.0], np.float32)
    prefix = _save(tmp_path, {"dense/kernel": kernel, "dense/bias": bias})
    dense = keras.layers.Dense(2)
    assert [a.tolist() for a in ku.load_tf1_weights(dense, prefix)] == [kernel.tolist(), bias.tolist()]
    np.testing.assert_allclose(dense(np.ones((1, 3), np.float32)), [[1.0 + 6, -1.0 + 9]])


# ---------------------------------------------------------------------------- LSTM, GRU: errors
def test_a_recurrent_layer_instead_of_its_cell(checkpoint):
    for layer in (
        keras.layers.RNN(ku.BasicRNNCell(H)),
        ku.DynamicUnroll(ku.BasicRNNCell(H)),
        keras.layers.SimpleRNN(H),
    ):
        with pytest.raises(TypeError, match=r"is a recurrent layer: pass its cell.*layer\.cell"):
            ku.load_tf1_weights(layer, checkpoint)


def test_gru_variables_for_an_lstm_cell(tmp_path):
    scope = "rnn/gru_cell"
    prefix = _save(
        tmp_path,
        {
            f"{scope}/gates/kernel": np.zeros((FH, 2 * H), np.float32),
            f"{scope}/candidate/kernel": np.zeros((FH, H), np.float32),
        },
    )
    with pytest.raises(ValueError, match=r"holds the variables of a TF1 GRUCell.*GRUCell\(reset_after=False\)"):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), prefix, scope=scope)
    with pytest.raises(ValueError, match=r"TF1 GRUCell"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), prefix, scope=scope)


def test_lstm_variables_for_a_gru_cell(tmp_path):
    prefix, _, _ = _lstm_checkpoint(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"No GRUCell kernel under scope 'rnn/basic_lstm_cell'.*TF1 LSTM cell.*"
        r"Under 'rnn/basic_lstm_cell' the checkpoint holds: ",
    ):
        ku.load_tf1_weights(ku.tf1.GRUCell(H), prefix, scope="rnn/basic_lstm_cell")
    with pytest.raises(ValueError, match=r"TF1 LSTM cell .*not of a BasicRNNCell"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), prefix, scope="rnn/basic_lstm_cell")


def test_lstm_units_do_not_fit(tmp_path):
    prefix, _, _ = _lstm_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"shape \[5, 12\], but an LSTM cell with units=4 needs \[features \+ 4, 16\]"):
        ku.load_tf1_weights(keras.layers.LSTMCell(4), prefix)


def test_peepholes_and_projection_that_do_not_match(tmp_path):
    extra = {"w_f_diag": np.ones(H, np.float32), "w_i_diag": np.ones(H, np.float32), "w_o_diag": np.ones(H, np.float32)}
    prefix, _, _ = _lstm_checkpoint(tmp_path / "peep", scope="rnn/lstm_cell", **extra)
    advice = r"has peephole weights .*use_peepholes=False\. Load it into ku.tf1.LSTMCell\(use_peepholes=True\)"
    with pytest.raises(ValueError, match=advice):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), prefix)
    with pytest.raises(ValueError, match=r"has peephole weights .*LSTMCell has use_peepholes=False"):
        ku.load_tf1_weights(ku.tf1.LSTMCell(H), prefix)
    plain, _, _ = _lstm_checkpoint(tmp_path / "plain", scope="rnn/lstm_cell")
    with pytest.raises(ValueError, match=r"has no peephole weights.*use_peepholes=True"):
        ku.load_tf1_weights(ku.tf1.LSTMCell(H, use_peepholes=True), plain)
    # A projection to P=2: the kernel's h rows are P, not H.
    P = 2
    kernel = np.zeros((F + P, 4 * H), np.float32)
    scope = "rnn/lstm_cell"
    projected = _save(
        tmp_path / "proj",
        {
            f"{scope}/kernel": kernel,
            f"{scope}/bias": np.zeros(4 * H, np.float32),
            f"{scope}/projection/kernel": np.zeros((H, P), np.float32),
        },
    )
    with pytest.raises(
        ValueError,
        match=r"has a projection 'rnn/lstm_cell/projection/kernel' \[3, 2\], but the LSTMCell "
        r"has num_proj=None\. Load it into ku.tf1.LSTMCell\(num_proj=2\)",
    ):
        ku.load_tf1_weights(keras.layers.LSTMCell(H), projected)
    with pytest.raises(ValueError, match=r"has a projection .*num_proj=None"):
        ku.load_tf1_weights(ku.tf1.LSTMCell(H), projected)
    with pytest.raises(
        ValueError,
        match=r"'rnn/lstm_cell/projection/kernel' has shape \[3, 2\], but the LSTMCell with "
        r"units=3 and num_proj=1 needs \[3, 1\].*Received: num_proj=1",
    ):
        ku.load_tf1_weights(ku.tf1.LSTMCell(H, num_proj=1), projected)
    with pytest.raises(ValueError, match=r"has no projection .*num_proj=2"):
        ku.load_tf1_weights(ku.tf1.LSTMCell(H, num_proj=2), plain)
    cell = ku.tf1.LSTMCell(H, num_proj=P)
    ku.load_tf1_weights(cell, projected)
    assert tuple(cell.projection_kernel.shape) == (H, P) and tuple(cell.recurrent_kernel.shape) == (P, 4 * H)


def test_lstm_without_bias_cannot_drop_the_forget_bias(tmp_path):
    scope = "rnn/basic_lstm_cell"
    prefix = _save(
        tmp_path, {f"{scope}/kernel": np.zeros((FH, 4 * H), np.float32), f"{scope}/bias": np.zeros(4 * H, np.float32)}
    )
    with pytest.raises(ValueError, match=r"with any forget_bias folded in\) is not zero.*use_bias=False"):
        ku.load_tf1_weights(keras.layers.LSTMCell(H, use_bias=False), prefix)
    cell = keras.layers.LSTMCell(H, use_bias=False)
    ku.load_tf1_weights(cell, prefix, forget_bias=0.0)  # TF1 graph built with forget_bias=0: nothing dropped
    assert len(cell.get_weights()) == 2


def _stack_checkpoint(directory, layers=2):
    variables = {}
    for i in range(layers):
        scope = f"rnn/multi_rnn_cell/cell_{i}/basic_rnn_cell"
        variables[f"{scope}/kernel"] = np.full(((F if i == 0 else H) + H, H), i + 1.0, np.float32)
        variables[f"{scope}/bias"] = np.full(H, -(i + 1.0), np.float32)
    return _save(directory, variables)


def test_stack_depth_must_match(tmp_path):
    prefix = _stack_checkpoint(tmp_path)
    ok = keras.layers.StackedRNNCells([ku.BasicRNNCell(H), ku.BasicRNNCell(H)])
    assert len(ku.load_tf1_weights(ok, prefix)) == 6
    np.testing.assert_array_equal(ok.cells[1].get_weights()[2], np.full(H, -2.0))
    with pytest.raises(ValueError, match=r"MultiRNNCell under 'rnn/multi_rnn_cell' has 2 layers.*stack has 3 cells"):
        ku.load_tf1_weights(ku.tf1.MultiRNNCell([ku.BasicRNNCell(H) for _ in range(3)]), prefix)
    with pytest.raises(ValueError, match=r"has 2 layers \(cell_0 ... cell_1\), but the stack has 1 cells"):
        ku.load_tf1_weights(keras.layers.StackedRNNCells([ku.BasicRNNCell(H)]), prefix)


def test_a_cell_shared_by_several_layers(tmp_path):
    """TF1's `MultiRNNCell([cell] * 3)` saved one set of weights, under cell_0 (F = H here)."""
    kernel = np.arange(2 * H * H, dtype=np.float32).reshape(2 * H, H)
    scope = "rnn/multi_rnn_cell/cell_0/basic_rnn_cell"
    prefix = _save(tmp_path / "shared", {f"{scope}/kernel": kernel, f"{scope}/bias": np.ones(H, np.float32)})
    cell = ku.BasicRNNCell(H)
    with pytest.warns(UserWarning, match="share their weights"):  # ku.tf1 warns, as TF1 did
        stack = ku.tf1.MultiRNNCell([cell] * 3)
    ku.load_tf1_weights(stack, prefix)
    np.testing.assert_array_equal(cell.get_weights()[1], kernel[H:])
    separate = _stack_checkpoint(tmp_path / "separate")
    with pytest.raises(ValueError, match=r"own weights for layer 1 .*reuses cells\[0\] there"):
        ku.load_tf1_weights(keras.layers.StackedRNNCells([ku.BasicRNNCell(H)] * 2), separate)


def test_a_failed_stack_load_changes_nothing(tmp_path):
    """The second layer does not fit: the first one keeps its weights too."""
    prefix = _stack_checkpoint(tmp_path)
    stack = ku.tf1.MultiRNNCell([ku.BasicRNNCell(H), ku.BasicRNNCell(H + 1)])
    stack.build((None, F))
    before = [w.copy() for w in stack.get_weights()]
    with pytest.raises(ValueError, match=r"units=4 needs \[features \+ 4, 4\]"):
        ku.load_tf1_weights(stack, prefix)
    for got, expected in zip(stack.get_weights(), before):
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------- arguments
def test_checkpoint_none_or_not_a_path(checkpoint):
    for bad in (None, 3):
        expected = rf"`checkpoint` must be the path of a TF1 checkpoint.*Received: checkpoint={bad}"
        with pytest.raises(TypeError, match=expected):
            ku.load_tf1_weights(ku.BasicRNNCell(H), bad)


@pytest.mark.parametrize("suffix", [".index", ".data-00000-of-00001"])
def test_a_checkpoint_file_instead_of_the_prefix(checkpoint, suffix):
    assert os.path.exists(checkpoint + suffix)
    cell = ku.BasicRNNCell(H)
    ku.load_tf1_weights(cell, checkpoint + suffix)
    np.testing.assert_array_equal(cell.get_weights()[0], _tf1_kernel_and_bias()[0][:F])


def test_the_checkpoint_state_file_itself(checkpoint):
    cell = ku.BasicRNNCell(H)
    ku.load_tf1_weights(cell, os.path.join(os.path.dirname(checkpoint), "checkpoint"))
    np.testing.assert_array_equal(cell.get_weights()[2], _tf1_kernel_and_bias()[1])


def test_checkpoint_file_naming_a_missing_checkpoint(checkpoint):
    for path in [checkpoint + ".index"] + [p for p in tf.io.gfile.glob(checkpoint + ".data-*")]:
        os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"names the checkpoint .*model\.ckpt.*but its files .*are missing"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), os.path.dirname(checkpoint))


def test_scope_and_scopes_arguments(checkpoint):
    with pytest.raises(ValueError, match=r"either `scope` \(one cell\) or `scopes`"):
        ku.load_tf1_weights(None, checkpoint, scope=SCOPE, scopes={SCOPE: ku.BasicRNNCell(H)})
    with pytest.raises(TypeError, match=r"`scopes` must be a non-empty dict.*Received: scopes=\[\]"):
        ku.load_tf1_weights(None, checkpoint, scopes=[])
    with pytest.raises(TypeError, match=r"`scope` must be a TF1 variable scope name.*Received: scope=3"):
        ku.load_tf1_weights(ku.BasicRNNCell(H), checkpoint, scope=3)
    model = keras.Sequential([keras.Input((2, F)), ku.DynamicUnroll(ku.BasicRNNCell(H))])
    with pytest.raises(ValueError, match=r"pass `scopes=\{tf1_scope: layer\}` instead of `scope`"):
        ku.load_tf1_weights(model, checkpoint, scope=SCOPE)


def test_unsupported_cell(checkpoint):
    with pytest.raises(TypeError, match=r"load_tf1_weights fills TF1's cells .*Received: <Conv1D"):
        ku.load_tf1_weights(keras.layers.Conv1D(2, 1), checkpoint)


def test_model_defaults_need_one_recurrent_layer(checkpoint):
    model = keras.Sequential(
        [
            keras.Input((2, F)),
            ku.DynamicUnroll(ku.BasicRNNCell(H), return_sequences=True),
            ku.DynamicUnroll(ku.BasicRNNCell(H)),
        ]
    )
    with pytest.raises(ValueError, match=r"only for one recurrent layer and Dense layers.*DynamicUnroll.*`scopes="):
        ku.load_tf1_weights(model, checkpoint)
    single = keras.Sequential([keras.Input((2, F)), ku.DynamicUnroll(ku.BasicRNNCell(H))])
    assert list(ku.load_tf1_weights(single, checkpoint)) == [SCOPE]
    np.testing.assert_array_equal(single.layers[0].cell.get_weights()[1], _tf1_kernel_and_bias()[0][F:])


def test_model_defaults_with_a_time_distributed_head(tmp_path):
    """TF1: dynamic_rnn, then two tf.layers.dense heads ('dense', 'dense_1'); Keras: TimeDistributed(Dense), Dense."""
    kernel, bias = _tf1_kernel_and_bias()
    prefix = _save(
        tmp_path,
        {
            f"{SCOPE}/kernel": kernel,
            f"{SCOPE}/bias": bias,
            "dense/kernel": np.full((H, 2), 0.5, np.float32),
            "dense/bias": np.zeros(2, np.float32),
            "dense_1/kernel": np.full((2, 1), 2.0, np.float32),
            "dense_1/bias": np.ones(1, np.float32),
        },
    )
    model = keras.Sequential(
        [
            keras.Input((2, F)),
            ku.DynamicUnroll(ku.BasicRNNCell(H), return_sequences=True),
            keras.layers.TimeDistributed(keras.layers.Dense(2)),
            keras.layers.Dense(1),
        ]
    )
    assert set(ku.load_tf1_weights(model, prefix)) == {SCOPE, "dense", "dense_1"}
    np.testing.assert_array_equal(model.layers[1].layer.kernel.numpy(), np.full((H, 2), 0.5))
    np.testing.assert_array_equal(model.layers[2].bias.numpy(), [1.0])


def test_a_scope_named_after_another_tf1_cell(tmp_path):
    """An LSTM kernel [F + 3, 12] has the shape of a BasicRNNCell(12)'s kernel: the scope's name refuses it."""
    scope = "rnn/basic_lstm_cell"
    prefix = _save(
        tmp_path, {f"{scope}/kernel": np.zeros((F + 13, 12), np.float32), f"{scope}/bias": np.zeros(12, np.float32)}
    )
    expected = (
        r"TF1 BasicLSTMCell's variables .*a BasicRNNCell computes something else\. Load it into ku.tf1.BasicLSTMCell"
    )
    with pytest.raises(ValueError, match=expected):
        ku.load_tf1_weights(ku.BasicRNNCell(12), prefix, scope=scope)
    with pytest.raises(ValueError, match=r"holds a TF1 BasicLSTMCell's variables .*a Dense computes"):
        ku.load_tf1_weights(keras.layers.Dense(12), prefix, scope=scope)


@pytest.mark.parametrize("dtype", ["float64", "mixed_float16"])
def test_cells_of_other_dtypes_get_the_checkpoints_numbers(tmp_path, dtype):
    """A float64 cell holds the float32 values exactly; a mixed-precision cell keeps float32 variables."""
    prefix, kernel, _ = _lstm_checkpoint(tmp_path)
    cell = keras.layers.LSTMCell(H, dtype=dtype)
    ku.load_tf1_weights(cell, prefix)
    assert keras.backend.standardize_dtype(cell.kernel.dtype) == ("float64" if dtype == "float64" else "float32")
    np.testing.assert_array_equal(cell.kernel.numpy()[:, :H], _gate(kernel, "i")[:F])
