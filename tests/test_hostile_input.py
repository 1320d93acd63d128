"""Hostile input: every case ends in a clear Python exception or a documented result.

One table (`CASES`), one test. A row is `(id, run, expected)`: `expected` is `(ExceptionType, regex)`
for an error, or a function that checks the result `run()` returned. `docs/hostile-input.md` lists the
same cases for readers. Never a crash, a hang or a silently wrong shape.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, NamedTuple, Tuple, Union

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import unroll_calls

import keras_unroll as ku

B, T, F, H = 3, 4, 2, 5
_RNG = np.random.default_rng(7)
X = _RNG.standard_normal((B, T, F)).astype("float32")


class Case(NamedTuple):
    id: str
    run: Callable[[], Any]
    expected: Union[Tuple[type, str], Callable[[Any], None]]


def _fixed_cell(units: int = H) -> ku.BasicRNNCell:
    """A cell with constant weights, so two unrolls of it can be compared."""
    return ku.BasicRNNCell(
        units,
        kernel_initializer=keras.initializers.Constant(0.3),
        recurrent_initializer=keras.initializers.Constant(-0.2),
        bias_initializer=keras.initializers.Constant(0.1),
    )


# Each unroll: (name, fn(cell, x, **call_kwargs) -> (sequence outputs (B, T, H), final state (B, H))).
UNROLLS = list(unroll_calls(return_sequences=True, return_state=True).items())


# ------------------------------------------------------------------------------------ result checks
def _clean(unroll):
    return [np.asarray(t) for t in unroll(_fixed_cell(), X)]


def _shapes(*expected):
    def check(result):
        got = [tuple(t.shape) for t in tf.nest.flatten(result)]
        assert got == list(expected), got

    return check


def _same_as_float32(unroll, atol=1e-6, dtype=tf.float32):
    """Keras' layers cast other float inputs to the cell's compute dtype, float32; TF1's functions build an
    unbuilt cell in its inputs' dtype (`dtype`), as TF1 did (issue 21)."""

    def check(result):
        outputs, state = result
        assert outputs.dtype == dtype and state.dtype == dtype
        clean_outputs, clean_state = _clean(unroll)
        np.testing.assert_allclose(outputs, clean_outputs, rtol=1e-5, atol=atol)
        np.testing.assert_allclose(state, clean_state, rtol=1e-5, atol=atol)

    return check


def _row_poisoned(unroll, *, from_step: int, nan: bool):
    """Row 0 is poisoned from `from_step` on; the other rows match the clean run exactly."""

    def check(result):
        outputs, state = (np.asarray(t) for t in result)
        assert outputs.shape == (B, T, H) and state.shape == (B, H)
        clean_outputs, clean_state = _clean(unroll)
        np.testing.assert_allclose(outputs[1:], clean_outputs[1:], rtol=1e-6)
        np.testing.assert_allclose(state[1:], clean_state[1:], rtol=1e-6)
        np.testing.assert_allclose(outputs[0, :from_step], clean_outputs[0, :from_step], rtol=1e-6)
        if nan:
            assert np.isnan(outputs[0, from_step:]).all() and np.isnan(state[0]).all()
        else:  # Inf: tanh saturates to +-1 where the sum is +-inf, NaN where inf - inf met
            poisoned = outputs[0, from_step:]
            assert np.all(np.isnan(poisoned) | (np.abs(poisoned) <= 1.0))

    return check


def _padding_does_not_leak(unroll):
    """NaN in the steps past `sequence_length` never reaches the outputs or the state (TF1 semantics)."""

    def check(result):
        outputs, state = (np.asarray(t) for t in result)
        assert np.isfinite(outputs).all() and np.isfinite(state).all()
        clean_outputs, clean_state = (np.asarray(t) for t in unroll(_fixed_cell(), X, sequence_length=[2, 4, 1]))
        np.testing.assert_allclose(outputs, clean_outputs, rtol=1e-6)
        np.testing.assert_allclose(state, clean_state, rtol=1e-6)

    return check


def _long_run_finite(result):
    outputs, state = result
    assert tuple(outputs.shape) == (1, 20000, 2) and tuple(state.shape) == (1, 2)
    assert np.isfinite(np.asarray(outputs)).all()


def _with(x, index, value):
    x = x.copy()
    x[index] = value
    return x


# --------------------------------------------------------------------------------------- the table
def _constructor_cases() -> List[Case]:
    unknown_class = {"module": "somewhere", "class_name": "NoSuchCell", "config": {}, "registered_name": "NoSuchCell"}
    bad_activation = keras.saving.serialize_keras_object(ku.BasicRNNCell(H))
    bad_activation["config"]["activation"] = "no_such_activation"
    cases = []
    for name, layer_cls in [("StaticUnroll", ku.StaticUnroll), ("DynamicUnroll", ku.DynamicUnroll)]:
        fc = layer_cls.from_config
        cases += [
            Case(
                f"{name}.from_config/flag_str",
                lambda fc=fc: fc({"cell": H, "return_sequences": "yes"}),
                (TypeError, r"`return_sequences` must be a bool. Received: return_sequences='yes'"),
            ),
            Case(
                f"{name}.from_config/cell_str",
                lambda fc=fc: fc({"cell": "lstm"}),
                (TypeError, r"`cell` must be a Keras RNN cell.*Received: cell='lstm'"),
            ),
            Case(
                f"{name}.from_config/cell_negative",
                lambda fc=fc: fc({"cell": -4}),
                (ValueError, r"`cell` must be a positive integer.*Received: cell=-4"),
            ),
            Case(
                f"{name}.from_config/cell_missing",
                lambda fc=fc: fc({}),
                (TypeError, r"`cell` must be a Keras RNN cell.*Received: cell=None"),
            ),
            Case(
                f"{name}.from_config/cell_unknown_class",
                lambda fc=fc: fc({"cell": unknown_class}),
                (TypeError, r"Could not locate class 'NoSuchCell'"),
            ),
            Case(
                f"{name}.from_config/cell_unknown_activation",
                lambda fc=fc: fc({"cell": bad_activation}),
                (TypeError, r"`activation` must be a Keras activation name.*Received: activation='no_such_activation'"),
            ),
            Case(
                f"{name}.from_config/unknown_key",
                lambda fc=fc: fc({"cell": H, "units_typo": 3}),
                (ValueError, r"Unrecognized keyword arguments.*units_typo"),
            ),
        ]
    cases += [
        Case(
            "BasicRNNCell.from_config/units_negative",
            lambda: ku.BasicRNNCell.from_config({"units": -1}),
            (TypeError, r"`units` must be a positive integer.*Received: units=-1"),
        ),
        Case(
            "BasicRNNCell.from_config/units_str",
            lambda: ku.BasicRNNCell.from_config({"units": "4"}),
            (TypeError, r"`units` must be a positive integer.*Received: units='4' of type str"),
        ),
        Case(
            "BasicRNNCell/units_float", lambda: ku.BasicRNNCell(4.0), (TypeError, r"Received: units=4.0 of type float")
        ),
        Case(
            "BasicRNNCell/unknown_activation",
            lambda: ku.BasicRNNCell(H, activation="no_such_activation"),
            (ValueError, r"`activation` must be a Keras activation name.*Received: activation='no_such_activation'"),
        ),
        Case(
            "BasicRNNCell/dropout_above_1",
            lambda: ku.BasicRNNCell(H, dropout=1.5),
            (ValueError, r"`dropout` must be a float in \[0, 1\). Received: dropout=1.5"),
        ),
    ]
    return cases


def _call_cases() -> List[Case]:
    ragged = tf.RaggedTensor.from_row_lengths(np.ones((7, F), "float32"), [3, 4])
    cases = []
    for name, unroll in UNROLLS:
        arg = "sequences" if name[0].isupper() else "inputs"
        cell = _fixed_cell
        if not name[0].isupper():  # the layers cast integer sequences, as Keras does (test_keras_dropin.py)
            cases.append(
                Case(
                    f"{name}/int32",
                    lambda u=unroll: u(cell(), X.astype("int32")),
                    (TypeError, rf"`{arg}` must be a floating-point tensor.*Received: {arg}.dtype=int32"),
                )
            )
        cases += [
            Case(
                f"{name}/bool",
                lambda u=unroll: u(cell(), X > 0),
                (TypeError, rf"floating-point tensor.*Received: {arg}.dtype=bool"),
            ),
            Case(
                f"{name}/string",
                lambda u=unroll: u(cell(), tf.fill((B, T, F), "x")),
                (TypeError, rf"floating-point tensor.*Received: {arg}.dtype=string"),
            ),
            Case(
                f"{name}/complex64",
                lambda u=unroll: u(cell(), X.astype("complex64")),
                (TypeError, rf"floating-point tensor.*Received: {arg}.dtype=complex64"),
            ),
            Case(
                f"{name}/ragged",
                lambda u=unroll: u(cell(), ragged),
                (
                    TypeError,
                    rf"`{arg}` must be a dense tensor; pad ragged/sparse.*Received: {arg} of type RaggedTensor",
                ),
            ),
            Case(
                f"{name}/sparse",
                lambda u=unroll: u(cell(), tf.sparse.from_dense(X)),
                (TypeError, rf"`{arg}` must be a dense tensor.*Received: {arg} of type SparseTensor"),
            ),
            Case(
                f"{name}/float64",
                lambda u=unroll: u(cell(), X.astype("float64")),
                _same_as_float32(unroll, dtype=tf.float64 if name.endswith("_rnn") else tf.float32),
            ),
            Case(
                f"{name}/float16",
                lambda u=unroll: u(cell(), X.astype("float16")),
                _same_as_float32(unroll, atol=2e-3, dtype=tf.float16 if name.endswith("_rnn") else tf.float32),
            ),
            Case(
                f"{name}/nan",
                lambda u=unroll: u(cell(), _with(X, (0, 2, 1), np.nan)),
                _row_poisoned(unroll, from_step=2, nan=True),
            ),
            Case(
                f"{name}/inf",
                lambda u=unroll: u(cell(), _with(X, (0, 1, 0), np.inf)),
                _row_poisoned(unroll, from_step=1, nan=False),
            ),
            Case(
                f"{name}/nan_initial_state",
                lambda u=unroll: u(cell(), X, initial_state=_with(np.zeros((B, H), "float32"), (0, 0), np.nan)),
                _row_poisoned(unroll, from_step=0, nan=True),
            ),
            Case(
                f"{name}/nan_in_padding",
                lambda u=unroll: u(
                    cell(), _with(_with(X, (0, 3, 0), np.nan), (2, 1), np.nan), sequence_length=[2, 4, 1]
                ),
                _padding_does_not_leak(unroll),
            ),
            Case(
                f"{name}/empty_batch",
                lambda u=unroll: u(cell(), np.zeros((0, T, F), "float32")),
                _shapes((0, T, H), (0, H)),
            ),
            Case(
                f"{name}/empty_batch_lstm",
                lambda u=unroll: u(keras.layers.LSTMCell(H), np.zeros((0, T, F), "float32")),
                _shapes((0, T, H), (0, H), (0, H)),
            ),
            Case(
                f"{name}/empty_batch_lengths",
                lambda u=unroll: u(cell(), np.zeros((0, T, F), "float32"), sequence_length=np.zeros((0,), "int32")),
                _shapes((0, T, H), (0, H)),
            ),
            Case(
                f"{name}/sequence_length_strings",
                lambda u=unroll: u(cell(), X, sequence_length=["a", "b", "c"]),
                (TypeError, r"`sequence_length` must hold integers. Received: sequence_length.dtype=string"),
            ),
            Case(
                f"{name}/initial_state_string",
                lambda u=unroll: u(cell(), X, initial_state="zeros"),
                (
                    TypeError,
                    r"`initial_state\[0\]` must be a floating-point tensor.*Received: initial_state\[0\].dtype=string",
                ),
            ),
        ]
    for name, unroll in UNROLLS[:2]:
        cases += [
            Case(
                f"{name}/mask_wrong_shape",
                lambda u=unroll: u(_fixed_cell(), X, mask=np.ones((B, T + 1), bool)),
                (ValueError, r"`mask` must match the input's \(batch, time\) axes. Received: mask.shape=\(3, 5\)"),
            ),
            Case(
                f"{name}/mask_1d",
                lambda u=unroll: u(_fixed_cell(), X, mask=np.ones((B,), bool)),
                (ValueError, r"`mask` must be a 2D \(batch, time\) boolean tensor. Received: mask.shape=\(3,\)"),
            ),
            Case(
                f"{name}/empty_batch_masked",
                lambda u=unroll: u(_fixed_cell(), np.zeros((0, T, F), "float32"), mask=np.zeros((0, T), bool)),
                _shapes((0, T, H), (0, H)),
            ),
        ]
    for layer_cls in (ku.StaticUnroll, ku.DynamicUnroll):
        wrapped = lambda c=layer_cls: keras.layers.Bidirectional(c(H, return_sequences=True, time_major=True))  # noqa: E731
        cases.append(
            Case(
                f"{layer_cls.__name__}/bidirectional_time_major",
                lambda w=wrapped: w()(np.transpose(X, (1, 0, 2))),
                (ValueError, r"reverses the backward layer's sequence output along axis 1, which is the batch axis"),
            ),
        )
    long_x = np.full((1, 20000, 1), 0.5, "float32")
    cases += [
        Case("DynamicUnroll/T=20000", lambda: UNROLLS[1][1](2, long_x), _long_run_finite),
        Case("dynamic_rnn/T=20000", lambda: ku.dynamic_rnn(2, long_x), _long_run_finite),
    ]
    return cases


# ---------------------------------------------------------------------------------- checkpoints
def _tf1_checkpoint(directory: str) -> str:
    """A name-based (TF1) checkpoint of a BasicRNNCell with F=2, H=5 under TF1's default scope."""
    os.makedirs(directory, exist_ok=True)
    variables = {
        "rnn/basic_rnn_cell/kernel": tf.Variable(np.ones((F + H, H), "float32")),
        "rnn/basic_rnn_cell/bias": tf.Variable(np.zeros(H, "float32")),
    }
    return tf.compat.v1.train.Saver(var_list=variables).save(None, os.path.join(directory, "model.ckpt"))


def _damage(prefix: str, suffix: str, content: bytes) -> str:
    directory = os.path.dirname(prefix)
    for name in os.listdir(directory):
        if name.startswith(os.path.basename(prefix)) and suffix in name:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(content)
    return prefix


def _checkpoint_cases(tmp: str) -> List[Case]:
    random = np.random.default_rng(0).bytes
    load = lambda path: ku.load_tf1_weights(ku.BasicRNNCell(H), path)  # noqa: E731

    def foreign():
        checkpoint = tf.train.Checkpoint(v=tf.Variable(np.ones((3, 3), "float32")), step=tf.Variable(1))
        return load(checkpoint.save(os.path.join(tmp, "foreign", "ckpt")))

    return [
        Case(
            "load_tf1_weights/missing",
            lambda: load(os.path.join(tmp, "nothing", "model.ckpt")),
            (FileNotFoundError, r"Could not read a TF checkpoint at .*nothing/model.ckpt"),
        ),
        Case(
            "load_tf1_weights/empty_directory",
            lambda: load(os.makedirs(os.path.join(tmp, "empty")) or os.path.join(tmp, "empty")),
            (FileNotFoundError, r"No TF1 checkpoint in the directory"),
        ),
        Case(
            "load_tf1_weights/random_index",
            lambda: load(_damage(_tf1_checkpoint(os.path.join(tmp, "i")), ".index", random(300))),
            (FileNotFoundError, r"Could not read a TF checkpoint.*TensorFlow said: .*sstable"),
        ),
        Case(
            "load_tf1_weights/empty_index",
            lambda: load(_damage(_tf1_checkpoint(os.path.join(tmp, "e")), ".index", b"")),
            (FileNotFoundError, r"Could not read a TF checkpoint.*TensorFlow said: .*too short"),
        ),
        Case(
            "load_tf1_weights/random_data",
            lambda: load(_damage(_tf1_checkpoint(os.path.join(tmp, "d")), ".data-", random(400))),
            (ValueError, r"lists 'rnn/basic_rnn_cell/kernel' but its data cannot be read.*Checksum"),
        ),
        Case(
            "load_tf1_weights/truncated_data",
            lambda: load(_damage(_tf1_checkpoint(os.path.join(tmp, "t")), ".data-", random(8))),
            (ValueError, r"its data cannot be read \(a damaged, truncated or missing .data file\)"),
        ),
        Case(
            "load_tf1_weights/foreign_checkpoint",
            foreign,
            (
                ValueError,
                r"No BasicRNNCell kernel under scope 'rnn/basic_rnn_cell'.*holds: "
                r".*v/.ATTRIBUTES/VARIABLE_VALUE \[3, 3\]",
            ),
        ),
        Case(
            "load_tf1_weights/lstm_cell",
            lambda: ku.load_tf1_weights(keras.layers.LSTMCell(H), _tf1_checkpoint(os.path.join(tmp, "l"))),
            (ValueError, r"No LSTM kernel under scope 'rnn/basic_lstm_cell'.*holds: rnn/basic_rnn_cell/bias"),
        ),
    ]


_CHECKPOINT_IDS = [c.id for c in _checkpoint_cases("/unused")]
CASES = _constructor_cases() + _call_cases()


def _run_case(case: Case) -> None:
    if isinstance(case.expected, tuple):
        error, pattern = case.expected
        with pytest.raises(error, match=pattern):
            case.run()
    else:
        case.expected(case.run())


# A hang must fail, not stall the run: the long-sequence rows get a (generous) watchdog.
_HANG_GUARD = pytest.mark.timeout(300, method="thread")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[_HANG_GUARD] if "T=" in c.id else []) for c in CASES])
def test_hostile_input(case):
    _run_case(case)


@pytest.mark.parametrize("case_id", _CHECKPOINT_IDS)
def test_hostile_checkpoint(case_id, tmp_path):
    (case,) = [c for c in _checkpoint_cases(str(tmp_path)) if c.id == case_id]
    _run_case(case)
