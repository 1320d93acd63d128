"""TF1 parity: `keras_unroll` gives what TF1's own `static_rnn`/`dynamic_rnn` gave, with TF1's weights.

`tf1_reference.py` runs TF1 (tf-keras, graph mode) once per session in a child process and saves every
case's outputs, final state, the cell's concatenated `kernel [F + H, H]`/`bias` and a TF1 checkpoint. Here,
in Keras 3, each case is rerun by both functions and both layers, with the weights either moved by hand
(`W = kernel[:F]`, `U = kernel[F:]`) or read by `load_tf1_weights` from the checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import UNROLLS, close
from references import basic_rnn, lengths_to_valid
from tf1_reference import CASES, FEATURES, STEPS, UNITS, tf1_reference

import keras_unroll as ku

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """TF1's results and checkpoint, from one child process."""
    return tf1_reference(tmp_path_factory)


def _cell_from(case, weights: str) -> ku.BasicRNNCell:
    cell = ku.BasicRNNCell(num_units=UNITS)
    if weights == "moved":
        cell.build((None, FEATURES))
        kernel = case["kernel"]
        cell.set_weights([kernel[:FEATURES], kernel[FEATURES:], case["bias"]])
    return cell


def _run(unroll: str, cell, x: np.ndarray, case, jit_compile=False):
    """Runs one unroll the way a TF1 user would; returns `(outputs in the case's layout, final state)`.

    The layers run as plain graphs unless `jit_compile` says otherwise: an XLA compile costs ~1 s per new
    layer, so the XLA default is checked on fewer cases (`test_xla_default_matches_tf1`).
    """
    kwargs = {}
    if case["lengths"] is not None:
        kwargs["sequence_length"] = case["lengths"]
    if case["initial_state"] is not None:
        kwargs["initial_state"] = case["initial_state"]
    time_major = case["time_major"]
    inputs = np.transpose(x, (1, 0, 2)) if time_major else x
    if unroll == "static_rnn":
        if not time_major:
            # TF1's form: a Python list of (batch, features) steps in, a list of (batch, units) out.
            outputs, state = ku.static_rnn(cell, [x[:, t] for t in range(STEPS)], dtype="float32", **kwargs)
            assert isinstance(outputs, list) and len(outputs) == STEPS
            return np.stack([np.asarray(y) for y in outputs], axis=1), state
        return ku.static_rnn(cell, inputs, time_major=True, **kwargs)
    if unroll == "dynamic_rnn":
        return ku.dynamic_rnn(cell, inputs, time_major=time_major, dtype="float32", **kwargs)
    layer_cls = ku.StaticUnroll if unroll == "StaticUnroll" else ku.DynamicUnroll
    layer = layer_cls(cell, return_sequences=True, return_state=True, time_major=time_major, jit_compile=jit_compile)
    outputs, state = layer(inputs, **kwargs)
    return outputs, state


def test_reference_is_what_tf1_named_and_computed(reference):
    """The child ran: TF1 named each cell `<scope>/rnn/basic_rnn_cell`, and its numbers are a plain RNN."""
    names = set(reference.data["variables"].tolist())
    for name in CASES:
        case = reference.case(name)
        assert case["scope"] == f"{name}/rnn/basic_rnn_cell"
        assert {f"{case['scope']}/kernel", f"{case['scope']}/bias"} <= names
        assert case["kernel"].shape == (FEATURES + UNITS, UNITS)
        x = reference.data["x"]
        valid = None if case["lengths"] is None else lengths_to_valid(case["lengths"], STEPS)
        outputs, _, state = basic_rnn(
            x,
            case["kernel"][:FEATURES],
            case["kernel"][FEATURES:],
            case["bias"],
            initial_state=case["initial_state"],
            valid=valid,
            zero_output=True,
        )
        if case["time_major"]:
            outputs = np.transpose(outputs, (1, 0, 2))
        close(case["outputs"], outputs)
        close(case["state"], state)


@pytest.mark.parametrize("weights", ["moved", "checkpoint"])
@pytest.mark.parametrize("unroll", UNROLLS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_tf1(reference, name, unroll, weights):
    case = reference.case(name)
    cell = _cell_from(case, weights)
    if weights == "checkpoint":
        kernel, recurrent_kernel, bias = ku.load_tf1_weights(cell, reference.checkpoint, scope=case["scope"])
        np.testing.assert_array_equal(kernel, case["kernel"][:FEATURES])
        np.testing.assert_array_equal(recurrent_kernel, case["kernel"][FEATURES:])
        np.testing.assert_array_equal(bias, case["bias"])
    outputs, state = _run(unroll, cell, reference.data["x"], case)
    close(np.asarray(outputs), case["outputs"])
    close(np.asarray(state), case["state"])


@pytest.mark.parametrize("unroll, name", [("StaticUnroll", "static_len"), ("DynamicUnroll", "dynamic_time_major")])
def test_xla_default_matches_tf1(reference, unroll, name):
    """The layers' default `jit_compile="auto"` (XLA at this T) gives TF1's numbers too."""
    case = reference.case(name)
    outputs, state = _run(unroll, _cell_from(case, "moved"), reference.data["x"], case, jit_compile="auto")
    close(np.asarray(outputs), case["outputs"])
    close(np.asarray(state), case["state"])


@pytest.mark.parametrize("unroll", UNROLLS)
def test_length_zero_row_returns_initial_state_and_zeros(reference, unroll):
    """TF1: a row of length 0 emits zeros at every step and returns its initial state unchanged."""
    case = reference.case("dynamic_short")
    assert case["lengths"][0] == 0
    outputs, state = _run(unroll, _cell_from(case, "moved"), reference.data["x"], case)
    np.testing.assert_array_equal(np.asarray(outputs)[0], np.zeros((STEPS, UNITS), np.float32))
    close(np.asarray(state)[0], case["initial_state"][0])
    # All rows end before T: the last step (skipped by dynamic_rnn's early stop) is zero everywhere.
    assert case["lengths"].max() < STEPS
    np.testing.assert_array_equal(np.asarray(outputs)[:, -1], np.zeros((len(case["lengths"]), UNITS), np.float32))


def test_load_tf1_weights_from_the_checkpoint_directory(reference):
    """A directory with TF1's `checkpoint` index file works as well as the prefix."""
    case = reference.case("dynamic")
    cell = ku.BasicRNNCell(UNITS)
    ku.load_tf1_weights(cell, reference.directory, scope=case["scope"])
    np.testing.assert_array_equal(cell.get_weights()[0], case["kernel"][:FEATURES])
    np.testing.assert_array_equal(cell.get_weights()[1], case["kernel"][FEATURES:])
    np.testing.assert_array_equal(cell.get_weights()[2], case["bias"])


def test_the_default_scope_fails_on_tf1s_checkpoint_and_names_every_scope(reference):
    """TF1's graph had no plain "rnn/" scope: `load_tf1_weights` without `scope` fails and lists every scope
    the checkpoint holds (each case's cell loads from its own scope: `test_matches_tf1[...-checkpoint]`)."""
    with pytest.raises(ValueError, match="static_list/rnn/basic_rnn_cell/kernel") as error:
        ku.load_tf1_weights(ku.BasicRNNCell(UNITS), reference.checkpoint)
    for name in CASES:
        assert f"{name}/rnn/basic_rnn_cell/kernel" in str(error.value)
