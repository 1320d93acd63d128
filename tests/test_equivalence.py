"""Equivalence: every unroll computes the same thing as a plain NumPy loop, a hand loop over the cell, and
Keras' own `SimpleRNN`/`RNN(cell)`/`LSTM`/`GRU` with the same weights.

Parametrized over both layers (`StaticUnroll`, `DynamicUnroll`) and both functions (`static_rnn`,
`dynamic_rnn`) wherever the behaviour is shared. Validity of a step comes from a Keras `mask` (Keras
semantics: the state is copied, the last valid output repeated or zeroed) and/or TF1's `sequence_length`
(zeros after the length). float32 against float64 NumPy: rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FUNCTIONS, LAYERS, UNROLLS, close, close_nested, layers
from references import basic_rnn, lengths_to_valid

import keras_unroll as ku

B, T, F, H = 4, 4, 2, 5

# A hole, a fully masked row, a trailing mask and a leading one.
MASK = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]], bool)
LENGTHS = np.array([0, 1, T, 2], np.int32)  # every special length: 0, 1, T, and one in between
SHORT_LENGTHS = np.array([0, 1, 1, 2], np.int32)  # every row ends before T


@pytest.fixture
def x(rng):
    return rng.standard_normal((B, T, F)).astype(np.float32)


@pytest.fixture
def h0(rng):
    return (0.5 * rng.standard_normal((B, H))).astype(np.float32)


@pytest.fixture
def weights(rng):
    """`[W (F, H), U (H, H), b (H,)]`, scaled so tanh stays away from saturation."""
    return [
        (0.6 * rng.standard_normal((F, H))).astype(np.float32),
        (0.4 * rng.standard_normal((H, H))).astype(np.float32),
        (0.3 * rng.standard_normal(H)).astype(np.float32),
    ]


def make(layer_cls, cell, **options):
    """A layer running its loop as a plain graph (`jit_compile=False`): XLA compiles cost ~1 s per new
    layer, so the XLA path (the default) is checked separately below, on fewer cases."""
    options.setdefault("jit_compile", False)
    return layer_cls(cell, **options)


def basic_cell(weights, cls=ku.BasicRNNCell, **kwargs):
    cell = cls(weights[1].shape[0], **kwargs)
    cell.build((None, weights[0].shape[0]))
    cell.set_weights(weights)
    return cell


def keras_simple_rnn(weights, **kwargs):
    layer = keras.layers.SimpleRNN(weights[1].shape[0], **kwargs)
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    return layer


def run_unroll(unroll, cell, inputs, *, time_major=False, **call_kwargs):
    """`(outputs (B, T, H) or time-major, final state)` from one of the four unrolls, full sequences."""
    if unroll in ("static_rnn", "dynamic_rnn"):
        fn = ku.static_rnn if unroll == "static_rnn" else ku.dynamic_rnn
        outputs, state = fn(cell, inputs, time_major=time_major, **call_kwargs)
        return outputs, ku.tf1.from_tf1_state(cell, state)  # TF1's structure -> the layers' Keras structure
    layer_cls = ku.StaticUnroll if unroll == "StaticUnroll" else ku.DynamicUnroll
    outputs, *states = make(layer_cls, cell, return_sequences=True, return_state=True, time_major=time_major)(
        inputs, **call_kwargs
    )
    return outputs, (states[0] if len(states) == 1 else states)


# ----------------------------------------------------------------------------------- NumPy reference
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("validity", ["all", "mask", "sequence_length", "mask+sequence_length"])
@layers
def test_layers_match_numpy(layer_cls, validity, go_backwards, x, h0, weights):
    """With an initial state (the zero state, the default, is covered by the Keras comparisons below)."""
    cell = basic_cell(weights)
    kwargs, valid, zero_output = {"initial_state": h0}, None, False
    if "mask" in validity:
        kwargs["mask"], valid = MASK, MASK
    if "sequence_length" in validity:
        kwargs["sequence_length"] = LENGTHS
        by_length = lengths_to_valid(LENGTHS, T)
        valid, zero_output = (by_length if valid is None else valid & by_length), True
    expected_seq, expected_last, expected_state = basic_rnn(
        x, *weights, initial_state=h0, valid=valid, zero_output=zero_output, go_backwards=go_backwards
    )
    sequences = make(layer_cls, cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
    outputs, state = sequences(x, **kwargs)
    close(outputs, expected_seq)
    close(state, expected_state)
    # return_sequences=False: each row's last *valid* output (zeros for a row with nothing valid).
    last_only = make(layer_cls, cell, return_state=True, go_backwards=go_backwards)
    last, state = last_only(x, **kwargs)
    close(last, expected_last)
    close(state, expected_state)
    if valid is not None:
        # A row with no valid step returns its initial state untouched, and a zero "last output".
        empty = ~valid.any(axis=1)
        assert empty.any()
        close(np.asarray(state)[empty], h0[empty])
        assert not np.asarray(last)[empty].any()


@pytest.mark.parametrize(
    "time_major, initial_state",
    [(False, False), (True, True)],
    ids=["batch_major-zero_state", "time_major-initial_state"],
)
@pytest.mark.parametrize("lengths", [None, LENGTHS, SHORT_LENGTHS], ids=["no_lengths", "lengths", "short"])
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_functions_match_numpy(fn, lengths, time_major, initial_state, x, h0, weights):
    """TF1 semantics: outputs are zero at t >= length; the final state is the state at the last valid step."""
    cell = basic_cell(weights)
    valid = None if lengths is None else lengths_to_valid(lengths, T)
    expected_seq, _, expected_state = basic_rnn(
        x, *weights, initial_state=h0 if initial_state else None, valid=valid, zero_output=True
    )
    inputs = np.transpose(x, (1, 0, 2)) if time_major else x
    outputs, state = fn(
        cell, inputs, sequence_length=lengths, initial_state=h0 if initial_state else None, time_major=time_major
    )
    outputs = np.asarray(outputs)
    if time_major:
        assert outputs.shape == (T, B, H)
        outputs = np.transpose(outputs, (1, 0, 2))
    close(outputs, expected_seq)
    close(state, expected_state)
    if lengths is not None:
        for row, length in enumerate(lengths):
            assert not outputs[row, length:].any()  # exactly zero after the length (and the early stop)
            if length:
                close(state[row], outputs[row, length - 1])  # BasicRNNCell: state == last valid output
            else:
                close(state[row], h0[row] if initial_state else np.zeros(H))


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@layers
def test_zero_output_for_mask(layer_cls, zero_output_for_mask, go_backwards, x, weights):
    """Masked steps emit zeros or repeat the last valid output, exactly as Keras' RNN does."""
    kwargs = dict(
        return_sequences=True, return_state=True, go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask
    )
    expected = keras_simple_rnn(weights, **kwargs)(x, mask=MASK)
    actual = make(layer_cls, basic_cell(weights), **kwargs)(x, mask=MASK)
    close_nested(actual, expected)
    numpy_seq, _, _ = basic_rnn(x, *weights, valid=MASK, zero_output=zero_output_for_mask, go_backwards=go_backwards)
    close(actual[0], numpy_seq)
    masked = ~(MASK[:, ::-1] if go_backwards else MASK)
    assert (np.abs(np.asarray(actual[0])[masked]).sum(axis=-1) == 0).all() == zero_output_for_mask


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@layers
def test_layers_time_major(layer_cls, time_major, x, weights):
    """With `time_major`, inputs, the mask and the output sequence are (time, batch, ...)."""
    expected_seq, _, expected_state = basic_rnn(x, *weights, valid=MASK)
    layer = make(layer_cls, basic_cell(weights), return_sequences=True, return_state=True, time_major=time_major)
    if time_major:
        outputs, state = layer(np.transpose(x, (1, 0, 2)), mask=MASK.T)
        expected_seq = np.transpose(expected_seq, (1, 0, 2))
    else:
        outputs, state = layer(x, mask=MASK)
    close(outputs, expected_seq)
    close(state, expected_state)


# ------------------------------------------------------------------------------ hand-checkable cases
def _linear_cell():
    """A one-unit linear cell with W=2, U=3, b=1, so every step can be checked by hand."""
    return ku.BasicRNNCell(
        1,
        activation="linear",
        kernel_initializer=keras.initializers.Constant(2.0),
        recurrent_initializer=keras.initializers.Constant(3.0),
        bias_initializer=keras.initializers.Constant(1.0),
    )


@pytest.mark.parametrize("unroll", UNROLLS)
def test_linear_cell_by_hand(unroll):
    """W=2, U=3, b=1, linear, x = 1, 2, 3: h = 2·1+1 = 3, then 2·2+3·3+1 = 14, then 2·3+3·14+1 = 49."""
    cell = _linear_cell()
    x = np.array([[[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]], np.float32)  # two identical rows
    outputs, state = run_unroll(unroll, cell, x, sequence_length=[3, 2])
    np.testing.assert_array_equal(np.asarray(outputs)[..., 0], [[3.0, 14.0, 49.0], [3.0, 14.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(state)[:, 0], [49.0, 14.0])


@layers
def test_linear_cell_backwards_by_hand(layer_cls):
    """Backwards, x is read 3, 2, 1: h = 2·3+1 = 7, then 2·2+3·7+1 = 26, then 2·1+3·26+1 = 81."""
    cell = _linear_cell()
    x = np.array([[[1.0], [2.0], [3.0]]], np.float32)
    outputs, state = make(layer_cls, cell, return_sequences=True, return_state=True, go_backwards=True)(x)
    np.testing.assert_array_equal(np.asarray(outputs)[0, :, 0], [7.0, 26.0, 81.0])  # in processed order
    np.testing.assert_array_equal(np.asarray(state)[0], [81.0])


@pytest.mark.parametrize("unroll", UNROLLS)
def test_tanh_cell_by_hand(unroll):
    """W=0.5, U=0.25, b=0.1, one unit, x = 1, 2: h1 = tanh(0.6), h2 = tanh(1.1 + 0.25·tanh(0.6))."""
    cell = ku.BasicRNNCell(
        1,
        kernel_initializer=keras.initializers.Constant(0.5),
        recurrent_initializer=keras.initializers.Constant(0.25),
        bias_initializer=keras.initializers.Constant(0.1),
    )
    outputs, state = run_unroll(unroll, cell, np.array([[[1.0], [2.0]]], np.float32))
    h1 = math.tanh(0.6)
    h2 = math.tanh(1.1 + 0.25 * h1)
    close(np.asarray(outputs)[0, :, 0], [h1, h2])
    close(np.asarray(state)[0, 0], h2)


class CounterCell(keras.layers.Layer):
    """Haiku-style core with nested states `[count (1), [running sum of x (F), twos (3)]]`.

    `output = x + 1`; `count += 1`; `sum += x`; `twos += 2`: after n valid steps count = n, sum = Σ x.
    """

    def __init__(self, features: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.state_size = [1, [features, 3]]
        self.output_size = features

    def call(self, inputs, states):
        count, (total, twos) = states
        return inputs + 1.0, [count + 1.0, [total + inputs, twos + 2.0]]


@pytest.mark.parametrize(
    "unroll, validity",
    [(unroll, "sequence_length") for unroll in UNROLLS] + [(layer, "mask") for layer in UNROLLS[:2]],  # fns: no mask
)
def test_nested_state_counter_cell(unroll, validity):
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # row 0: [0,1],[2,3],[4,5]; row 1: 6..11
    if validity == "mask":
        kwargs, valid = {"mask": np.array([[1, 0, 1], [0, 0, 0]], bool)}, [[1, 0, 1], [0, 0, 0]]
    else:
        kwargs, valid = {"sequence_length": [2, 0]}, [[1, 1, 0], [0, 0, 0]]
    outputs, state = run_unroll(unroll, CounterCell(), x, **kwargs)
    count, (total, twos) = state
    expected_total = (x * np.array(valid, np.float32)[..., None]).sum(axis=1)
    np.testing.assert_array_equal(np.asarray(count)[:, 0], np.sum(valid, axis=1))
    np.testing.assert_array_equal(np.asarray(total), expected_total)
    np.testing.assert_array_equal(np.asarray(twos), 2.0 * np.sum(valid, axis=1)[:, None] * np.ones((2, 3)))
    if validity == "sequence_length":  # zeros after the length
        expected_outputs = (x + 1.0) * np.array(valid, np.float32)[..., None]
    else:  # Keras: a masked step repeats the last valid output (zeros before the first one)
        expected_outputs = np.stack([x[0, 0] + 1, x[0, 0] + 1, x[0, 2] + 1])[None].repeat(2, axis=0)
        expected_outputs[1] = 0.0
    np.testing.assert_array_equal(np.asarray(outputs), expected_outputs)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_nested_state_given_initial_state(unroll):
    x = np.ones((2, 2, 2), np.float32)
    initial = [np.full((2, 1), 10.0, np.float32), [np.zeros((2, 2), np.float32), np.ones((2, 3), np.float32)]]
    _, (count, (total, twos)) = run_unroll(unroll, CounterCell(), x, initial_state=initial)
    np.testing.assert_array_equal(np.asarray(count), np.full((2, 1), 12.0))
    np.testing.assert_array_equal(np.asarray(total), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(np.asarray(twos), np.full((2, 3), 5.0))


# --------------------------------------------------------------------------------- Keras references
@pytest.mark.parametrize(
    "go_backwards, initial_state", [(False, False), (True, True)], ids=["forward-zero_state", "backwards-initial_state"]
)
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@layers
def test_layers_match_keras_simple_rnn(layer_cls, masked, go_backwards, initial_state, x, h0, weights):
    kwargs = {"mask": MASK if masked else None}
    if initial_state:
        kwargs["initial_state"] = [h0]
    for return_sequences in (True, False):
        options = dict(return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
        expected = keras_simple_rnn(weights, **options)(x, **kwargs)
        actual = make(layer_cls, basic_cell(weights), **options)(x, **kwargs)
        assert isinstance(actual, tuple) and len(actual) == 2
        close_nested(actual, expected)


@layers
def test_layers_match_keras_rnn_of_the_same_cell(layer_cls, x, weights):
    """`keras.layers.RNN(BasicRNNCell)` and our layers, sharing one cell object."""
    cell = basic_cell(weights)
    expected = keras.layers.RNN(cell, return_sequences=True, return_state=True)(x, mask=MASK)
    actual = make(layer_cls, cell, return_sequences=True, return_state=True)(x, mask=MASK)
    close_nested(actual, expected)


@layers
def test_sequence_length_is_a_trailing_mask_with_zero_output(layer_cls, x, weights):
    """TF1's `sequence_length` = Keras' mask `t < length` with `zero_output_for_mask=True`."""
    options = dict(return_sequences=True, return_state=True)
    expected = keras_simple_rnn(weights, zero_output_for_mask=True, **options)(x, mask=lengths_to_valid(LENGTHS, T))
    actual = make(layer_cls, basic_cell(weights), **options)(x, sequence_length=LENGTHS)
    close_nested(actual, expected)


GATED = {
    "LSTM": (keras.layers.LSTMCell, keras.layers.LSTM),
    "GRU": (keras.layers.GRUCell, keras.layers.GRU),
}


def gated_pair(kind, rng, **options):
    """A Keras `LSTM`/`GRU` layer with random weights, and a fresh cell of the same kind with those weights."""
    cell_cls, layer_cls = GATED[kind]
    reference = layer_cls(H, **options)
    reference.build((None, None, F))
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in reference.get_weights()]
    reference.set_weights(weights)
    cell = cell_cls(H)
    cell.build((None, F))
    cell.set_weights(weights)
    return reference, cell


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("kind", list(GATED))
@layers
def test_gated_cells_match_keras(layer_cls, kind, masked, go_backwards, x, rng):
    options = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    reference, cell = gated_pair(kind, rng, **options)
    mask = MASK if masked else None
    actual = make(layer_cls, cell, **options)(x, mask=mask)
    expected = reference(x, mask=mask)
    assert len(actual) == len(expected) == (3 if kind == "LSTM" else 2)
    close_nested(actual, expected)


@pytest.mark.parametrize("kind", list(GATED))
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_functions_with_gated_cells_match_keras(fn, kind, x, rng):
    """`sequence_length` = a trailing Keras mask with zero outputs; an LSTM's final state is TF1's
    `LSTMStateTuple(c, h)` in the functional API (Keras' layer returns `[h, c]`)."""
    reference, cell = gated_pair(kind, rng, return_sequences=True, return_state=True, zero_output_for_mask=True)
    outputs, state = fn(cell, x, sequence_length=LENGTHS)
    expected_outputs, *expected_state = reference(x, mask=lengths_to_valid(LENGTHS, T))
    close(outputs, expected_outputs)
    if kind == "LSTM":
        assert isinstance(state, ku.tf1.LSTMStateTuple)
        state = [state.h, state.c]
    close_nested(state, expected_state)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_matches_a_hand_loop_over_the_cell(unroll, x, rng):
    """The fast loop = calling the cell step by step in Python (an LSTM: two states)."""
    _, cell = gated_pair("LSTM", rng)
    state = [tf.zeros((B, H)), tf.zeros((B, H))]
    expected = []
    for t in range(T):
        output, state = cell(x[:, t], state)
        expected.append(output)
    outputs, final = run_unroll(unroll, cell, x)
    close(outputs, np.stack(expected, axis=1))
    close_nested(final, state)


STACK = lambda: [keras.layers.SimpleRNNCell(H), keras.layers.LSTMCell(3)]  # noqa: E731


def stacked_reference(rng, **options):
    reference = keras.layers.RNN(STACK(), **options)
    reference.build((None, None, F))
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in reference.get_weights()]
    reference.set_weights(weights)
    return reference, weights


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@layers
def test_stacked_cells_match_keras_rnn(layer_cls, masked, x, rng):
    options = dict(return_sequences=True, return_state=True)
    reference, weights = stacked_reference(rng, **options)
    layer = make(layer_cls, STACK(), **options)  # a list of cells is stacked
    layer.build((None, T, F))
    layer.set_weights(weights)
    mask = MASK if masked else None
    close_nested(layer(x, mask=mask), reference(x, mask=mask))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_functions_with_stacked_cells_match_keras_rnn(fn, x, rng):
    reference, weights = stacked_reference(rng, return_sequences=True, return_state=True, zero_output_for_mask=True)
    cells = keras.layers.StackedRNNCells(STACK())
    cells.build((None, F))
    cells.set_weights(weights)
    outputs, state = fn(cells, x, sequence_length=LENGTHS)
    expected_outputs, *expected_state = reference(x, mask=lengths_to_valid(LENGTHS, T))
    close(outputs, expected_outputs)
    assert isinstance(state, tuple) and isinstance(state[1], ku.tf1.LSTMStateTuple)  # TF1's: one entry per layer
    close_nested(ku.tf1.from_tf1_state(cells, state), expected_state)


@layers
def test_mask_from_a_masking_layer(layer_cls, x, weights):
    """In a model, `Masking` hands its mask over automatically, as to `SimpleRNN`."""
    x = x.copy()
    x[0, 2:] = 0.0
    x[2, 0] = 0.0

    def model(rnn):
        inputs = keras.Input((T, F))
        return keras.Model(inputs, rnn(keras.layers.Masking(0.0)(inputs)))

    expected = model(keras_simple_rnn(weights, return_sequences=True))(x)
    actual = model(make(layer_cls, basic_cell(weights), return_sequences=True))(x)
    close(actual, expected)


# ------------------------------------------------------------------------- forms of input and cell
@pytest.mark.parametrize("return_sequences", [True, False])
def test_static_unroll_list_in_list_out(return_sequences, x, h0, weights):
    """TF1's `[X0, X1, ...]`: a list of (batch, features) steps gives a list of (batch, units) outputs."""
    steps = [x[:, t] for t in range(T)]
    expected_seq, expected_last, expected_state = basic_rnn(x, *weights, initial_state=h0)
    layer = make(ku.StaticUnroll, basic_cell(weights), return_sequences=return_sequences, return_state=True)
    output, state = layer(steps, initial_state=h0)
    if return_sequences:
        assert isinstance(output, list) and len(output) == T
        close(np.stack(output, axis=1), expected_seq)
    else:
        close(output, expected_last)
    close(state, expected_state)


def test_static_rnn_list_in_list_out(x, weights):
    steps = [x[:, t] for t in range(T)]
    outputs, state = ku.static_rnn(basic_cell(weights), steps, sequence_length=LENGTHS, dtype=tf.float32)
    assert isinstance(outputs, list) and len(outputs) == T
    assert all(tuple(y.shape) == (B, H) for y in outputs)
    expected_seq, _, expected_state = basic_rnn(x, *weights, valid=lengths_to_valid(LENGTHS, T), zero_output=True)
    close(np.stack(outputs, axis=1), expected_seq)
    close(state, expected_state)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_cell_given_as_int(unroll, x, weights):
    """An int is a `BasicRNNCell` of that many units; its weights are set after the first call."""
    if unroll.endswith("_rnn"):
        cell = ku.step.as_cell(H)
        assert isinstance(cell, ku.BasicRNNCell) and cell.units == H
        cell.build((None, F))
        cell.set_weights(weights)
        outputs, state = run_unroll(unroll, cell, x)
        run_unroll(unroll, H, x)  # the int itself is accepted too
    else:
        layer = make(ku.StaticUnroll if unroll == "StaticUnroll" else ku.DynamicUnroll, H, return_sequences=True)
        assert isinstance(layer.cell, ku.BasicRNNCell) and layer.cell.units == H
        layer(x)
        layer.set_weights(weights)
        outputs = layer(x)
    expected_seq, _, _ = basic_rnn(x, *weights)
    close(outputs, expected_seq)


@layers
def test_list_of_one_cell_is_that_cell(layer_cls, x, weights):
    cell = basic_cell(weights)
    layer = make(layer_cls, [cell], return_sequences=True)
    assert layer.cell is cell
    close(layer(x), basic_rnn(x, *weights)[0])


# ------------------------------------------------------------------------------------------ training
def _gradients(run, variables, x, h0):
    """Gradients of a loss on outputs and final state w.r.t. `[*variables, x, *h0]` (`h0` may be a list)."""
    x, h0 = tf.constant(x), tf.nest.map_structure(tf.constant, h0)
    with tf.GradientTape() as tape:
        tape.watch([x, *tf.nest.flatten(h0)])
        outputs, state = run(x, h0)
        loss = tf.reduce_sum(tf.sin(3.0 * outputs)) + tf.reduce_sum(tf.cos(2.0 * state))
    return tape.gradient(loss, [*variables, x, *tf.nest.flatten(h0)])


@pytest.mark.parametrize("unroll", UNROLLS)
def test_gradients_match_keras(unroll, x, h0, weights):
    """d loss / d (W, U, b, x, h0) with `sequence_length` = Keras' SimpleRNN with the equivalent mask."""
    reference = keras_simple_rnn(weights, return_sequences=True, return_state=True, zero_output_for_mask=True)
    valid = lengths_to_valid(LENGTHS, T)
    expected = _gradients(
        lambda x, h0: reference(x, initial_state=[h0], mask=valid), reference.trainable_weights, x, h0
    )
    cell = basic_cell(weights)
    actual = _gradients(
        lambda x, h0: run_unroll(unroll, cell, x, initial_state=h0, sequence_length=LENGTHS),
        cell.trainable_weights,
        x,
        h0,
    )
    assert len(actual) == len(expected) == 5
    for a, e in zip(actual, expected):
        assert a is not None
        close(a, e)
    # A length-0 row: its initial state passes straight through (d cos(2h)/dh = -2 sin(2h)), nothing else.
    close(np.asarray(actual[4])[0], -2.0 * np.sin(2.0 * h0[0]))
    assert not np.asarray(actual[3])[0].any()


@layers
def test_gradients_with_a_mask_match_keras(layer_cls, x, h0, weights):
    reference = keras_simple_rnn(weights, return_sequences=True, return_state=True, go_backwards=True)
    expected = _gradients(lambda x, h0: reference(x, initial_state=[h0], mask=MASK), reference.trainable_weights, x, h0)
    layer = make(layer_cls, basic_cell(weights), return_sequences=True, return_state=True, go_backwards=True)
    actual = _gradients(lambda x, h0: layer(x, initial_state=h0, mask=MASK), layer.trainable_weights, x, h0)
    for a, e in zip(actual, expected):
        close(a, e)


@pytest.mark.parametrize("kind", list(GATED))
@layers
def test_gated_gradients_match_keras(layer_cls, kind, x, h0, rng):
    """LSTM/GRU: every weight's gradient (and the inputs' and initial states') equals Keras' LSTM/GRU."""
    options = dict(return_sequences=True, return_state=True, go_backwards=True)
    reference, cell = gated_pair(kind, rng, **options)
    layer = make(layer_cls, cell, **options)
    h0 = [h0, h0[:, ::-1]] if kind == "LSTM" else [h0]

    def runner(rnn):
        def run(x, h0):
            outputs, *state = rnn(x, initial_state=h0, mask=MASK)
            return outputs, tf.concat(state, axis=-1)

        return run

    expected = _gradients(runner(reference), reference.trainable_weights, x, h0)
    actual = _gradients(runner(layer), layer.trainable_weights, x, h0)
    assert len(actual) == len(expected) == 4 + len(h0)
    for a, e in zip(actual, expected):
        close(a, e)


DROPOUT = dict(dropout=0.5, recurrent_dropout=0.3, seed=7)


def test_dropout_same_seed_same_outputs(x, weights):
    """Same seed: both layers, both functions and Keras' SimpleRNN drop the same units while training."""
    expected = keras_simple_rnn(weights, return_sequences=True, **DROPOUT)(x, training=True)
    no_dropout = basic_rnn(x, *weights)[0]
    assert np.abs(np.asarray(expected) - no_dropout).max() > 1e-2  # dropout did something
    for layer_cls in LAYERS:
        layer = make(layer_cls, basic_cell(weights, **DROPOUT), return_sequences=True)
        close(layer(x, training=True), expected)
    for fn in FUNCTIONS:
        outputs, _ = fn(basic_cell(weights, **DROPOUT), x, training=True)
        close(outputs, expected)


@layers
def test_dropout_only_while_training(layer_cls, x, weights):
    layer = make(layer_cls, basic_cell(weights, **DROPOUT), return_sequences=True)
    no_dropout = basic_rnn(x, *weights)[0]
    first, second = layer(x, training=True), layer(x, training=True)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-2  # fresh masks for each sequence
    close(layer(x, training=False), no_dropout)
    close(layer(x), no_dropout)
    # Within one sequence the same input mask is used at every step (Keras' per-sequence dropout).
    constant = np.repeat(x[:, :1], T, axis=1)
    zero_u = [weights[0], np.zeros_like(weights[1]), weights[2]]
    frozen = make(layer_cls, basic_cell(zero_u, dropout=0.5, seed=3), return_sequences=True)(constant, training=True)
    frozen = np.asarray(frozen)
    for t in range(1, T):
        close(frozen[:, t], frozen[:, 0])


# -------------------------------------------------------------------------- XLA (the layers' default)
@pytest.mark.parametrize("case", ["mask+lengths-backwards", "short_lengths"])
@layers
def test_xla_default_matches_numpy(layer_cls, case, x, h0, weights):
    """`jit_compile="auto"` compiles both layers at this T: the same numbers, many options at once, and
    the early stop at max(sequence_length) when every row is short."""
    go_backwards = case.endswith("backwards")
    if case == "short_lengths":
        kwargs, valid = {"sequence_length": SHORT_LENGTHS}, lengths_to_valid(SHORT_LENGTHS, T)
    else:
        kwargs, valid = {"mask": MASK, "sequence_length": LENGTHS}, MASK & lengths_to_valid(LENGTHS, T)
    expected_seq, expected_last, expected_state = basic_rnn(
        x, *weights, initial_state=h0, valid=valid, zero_output=True, go_backwards=go_backwards
    )
    for return_sequences, expected in ((True, expected_seq), (False, expected_last)):
        layer = layer_cls(
            basic_cell(weights), return_sequences=return_sequences, return_state=True, go_backwards=go_backwards
        )
        assert layer.jit_compile == "auto"
        outputs, state = layer(x, initial_state=h0, **kwargs)
        close(outputs, expected)
        close(state, expected_state)


@layers
def test_xla_lstm_matches_keras(layer_cls, x, rng):
    options = dict(return_sequences=True, return_state=True)
    reference, cell = gated_pair("LSTM", rng, **options)
    close_nested(layer_cls(cell, jit_compile=True, **options)(x, mask=MASK), reference(x, mask=MASK))


@pytest.mark.parametrize("kind", ["BasicRNNCell", "LSTMCell"])
@layers
def test_xla_gradients_match_the_graph_loop(layer_cls, kind, x, h0, rng, weights):
    """d loss / d (weights, x, h0) with `jit_compile=True` = through the plain graph loop.

    (DynamicUnroll with an LSTMCell falls back to the graph loop: TF cannot differentiate a while loop
    compiled on its own from outside XLA. This test once caught that `model.fit` failed there.)
    """
    if kind == "LSTMCell":
        _, cell = gated_pair("LSTM", rng)
        h0 = [h0, h0[:, ::-1]]
    else:
        cell = basic_cell(weights)
    results = []
    for jit_compile in (False, True):
        layer = layer_cls(cell, return_sequences=True, return_state=True, jit_compile=jit_compile)

        def run(x, h0):
            outputs, *state = layer(x, initial_state=h0, mask=MASK, sequence_length=LENGTHS)
            return outputs, tf.concat(state, axis=-1)

        results.append(_gradients(run, cell.trainable_weights, x, h0))
    for plain, compiled in zip(*results):
        close(compiled, plain)


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU"])
def test_dropout_same_seed_with_the_default_jit(kind, x):
    """The layers' defaults (XLA where "auto" picks it): the same seed drops the same units as Keras.

    (Once failed: XLA draws other random numbers than a graph for the same seed, so a compiled loop that
    made its own masks differed from an uncompiled one.)
    """
    cell_cls, keras_cls = {
        "SimpleRNN": (ku.BasicRNNCell, keras.layers.SimpleRNN),
        "GRU": (keras.layers.GRUCell, keras.layers.GRU),
    }[kind]
    reference = keras_cls(H, return_sequences=True, **DROPOUT)
    reference.build((None, None, F))
    expected = reference(x, training=True)
    for layer_cls in LAYERS:
        cell = cell_cls(H, **DROPOUT)
        cell.build((None, F))
        cell.set_weights(reference.get_weights())
        close(layer_cls(cell, return_sequences=True)(x, training=True), expected)


# ----------------------------------------------------------------- XLA at TensorFlow's default settings
#: What the child leaves out of the suite's environment (tests/conftest.py): XLA's CPU backend at its default
#: optimization level and emitters, TensorFlow's default thread pools, as a user's process has them.
_SUITE_SETTINGS = ("XLA_FLAGS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
_DEFAULT_XLA_CHILD = r"""
import json, os, sys
import numpy as np, tensorflow as tf, keras
import keras_unroll as ku
from keras_unroll.testing import plans

rng = np.random.default_rng(0)
B, T, F, H = 3, 5, 2, 4
x = tf.constant(rng.standard_normal((B, T, F)).astype("float32"))
mask = tf.constant(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 0, 1]], bool))
out_weights = tf.constant(rng.standard_normal((B, T, H)).astype("float32"))
report = {"suite_settings": [name for name in json.loads(sys.argv[1]) if name in os.environ], "cases": {}}
for kind in ("SimpleRNNCell", "LSTMCell", "GRUCell"):
    for layer_name in ("StaticUnroll", "DynamicUnroll"):
        cells = [getattr(keras.layers, kind)(H) for _ in range(2)]
        ours = getattr(ku, layer_name)(cells[0], return_sequences=True, return_state=True, jit_compile=True)
        keras_rnn = keras.layers.RNN(cells[1], return_sequences=True, return_state=True)
        states = 2 if kind == "LSTMCell" else 1
        h0 = [tf.constant(0.5 * rng.standard_normal((B, H)).astype("float32")) for _ in range(states)]
        for layer in (ours, keras_rnn):
            layer(x, initial_state=h0, mask=mask)
        for mine, theirs in zip(cells[0].weights, cells[1].weights):
            mine.assign(0.5 * rng.standard_normal(mine.shape).astype("float32"))
            theirs.assign(mine)

        def forward_and_gradients(layer, cell):
            @tf.function(autograph=False)
            def run(x, h0):
                with tf.GradientTape() as tape:
                    tape.watch([x, *h0])
                    outputs, *states = layer(x, initial_state=list(h0), mask=mask, training=True)
                    loss = tf.reduce_sum(outputs * out_weights) + sum(tf.reduce_sum(s * s) for s in states)
                return [outputs, *states, *tape.gradient(loss, [x, *h0, *cell.trainable_weights])]
            return [t.numpy() for t in run(x, h0)]

        got, want = forward_and_gradients(ours, cells[0]), forward_and_gradients(keras_rnn, cells[1])
        report["cases"][f"{layer_name}-{kind}"] = {
            "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(got, want)),
            "smallest_gradient": min(float(np.abs(g).max()) for g in want[len(h0) + 1 :]),
            "plan": [plans(ours)[-1]["kernel"], plans(ours)[-1]["compile"]],
        }
print("REPORT " + json.dumps(report))
"""


@pytest.mark.subprocess
def test_xla_at_tensorflows_default_settings_matches_keras():
    """The suite runs XLA's CPU backend with fast-compiling settings (tests/conftest.py: optimization level 0,
    the older LLVM IR emitters instead of the fusion emitters); what users run is XLA's defaults. A fresh
    process at the defaults trains each fused kernel (SimpleRNN, LSTM, GRU; both layers; a mask and initial
    states), XLA-compiled, and gives Keras' own `RNN`'s outputs, states and gradients."""
    from fork_server import run_forked

    done = run_forked(["-c", _DEFAULT_XLA_CHILD, json.dumps(_SUITE_SETTINGS)], unset=_SUITE_SETTINGS, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert report["suite_settings"] == []
    assert len(report["cases"]) == 6
    for case, found in report["cases"].items():
        assert found["plan"][0] != "generic" and found["plan"][1] != "none", (case, found)  # fused, compiled
        assert found["smallest_gradient"] > 1e-3, (case, found)  # every gradient carries signal
        assert found["max_diff"] <= 1e-5, (case, found)
