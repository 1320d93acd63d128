"""Mixed precision: under `mixed_bfloat16` and `mixed_float16` both layers (and both functions) compute in the
low precision, keep float32 variables, train, save (.keras) and export (SavedModel).

Tolerances (see docs/numerics.md): a result computed in low precision is compared with the float64 NumPy
reference using the same (float32) weights within `atol = 4e-2` for bfloat16 (8-bit significand: one rounding
is up to 2^-9 ≈ 0.002 near 1, and every step rounds the matmuls, the bias add and the tanh; measured ≤ 0.011
over 12 steps) and `atol = 5e-3` for float16 (11-bit significand; measured ≤ 0.0011). A SavedModel export
is a separately optimised graph (other op fusions, so other intermediate roundings): its predictions must
match the Keras model's within the same tolerances (measured ≤ 0.007 / 0.0008); a `.keras` reload runs the
very same graph and must match to float32 rounding.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LAYERS, layers, pairwise
from references import basic_rnn, lengths_to_valid

import keras_unroll as ku

POLICIES = {"mixed_bfloat16": ("bfloat16", 4e-2), "mixed_float16": ("float16", 5e-3)}
B, T, F, H = 4, 12, 3, 8


@pytest.fixture(params=list(POLICIES))
def policy(request):
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy("float32")


def _inputs(rng):
    return rng.normal(size=(B, T, F)).astype("float32")


@layers
def test_layers_compute_in_low_precision_with_float32_variables(policy, layer_cls, rng):
    low, atol = POLICIES[policy]
    x = _inputs(rng)
    mask = rng.random((B, T)) > 0.4
    mask[1] = False  # an all-masked row keeps the (zero) initial state
    lengths = [T, 5, 0, 1]
    h0 = rng.normal(scale=0.5, size=(B, H)).astype("float32")  # float32, as users have it
    cases = {  # name -> (go_backwards, call arguments, valid, zero_output, initial_state) for the reference
        "plain": (False, {}, None, False, None),
        "mask + float32 initial_state": (False, {"mask": mask, "initial_state": h0}, mask, False, h0),
        "go_backwards + sequence_length": (
            True,
            {"sequence_length": lengths},
            lengths_to_valid(lengths, T),
            True,
            None,
        ),
    }
    layers = {
        go_backwards: layer_cls(ku.BasicRNNCell(H), return_sequences=True, return_state=True, go_backwards=go_backwards)
        for go_backwards in (False, True)
    }
    for name, (go_backwards, kwargs, valid, zero_output, initial_state) in cases.items():
        layer = layers[go_backwards]
        outputs, state = layer(x, **kwargs)

        assert layer.compute_dtype == low and layer.cell.compute_dtype == low
        assert outputs.dtype == low and state.dtype == low, name
        assert [v.dtype for v in layer.weights] == ["float32"] * 3
        kernel, recurrent, bias = (v.numpy() for v in layer.weights)
        ref_outputs, _, ref_state = basic_rnn(
            x,
            kernel,
            recurrent,
            bias,
            initial_state=initial_state,
            valid=valid,
            zero_output=zero_output,
            go_backwards=go_backwards,
        )
        np.testing.assert_allclose(np.asarray(outputs, np.float64), ref_outputs, atol=atol, rtol=0, err_msg=name)
        np.testing.assert_allclose(np.asarray(state, np.float64), ref_state, atol=atol, rtol=0, err_msg=name)


@layers
def test_last_valid_output_under_low_precision(policy, layer_cls, rng):
    """`return_sequences=False` carries the last valid output in the loop: it must stay in low precision."""
    low, atol = POLICIES[policy]
    x = _inputs(rng)
    layer = layer_cls(ku.BasicRNNCell(H))
    mask = np.ones((B, T), bool)
    mask[:, 7:] = False
    mask[2] = False
    last = layer(x, mask=mask)
    assert last.dtype == low
    kernel, recurrent, bias = (v.numpy() for v in layer.weights)
    _, ref_last, _ = basic_rnn(x, kernel, recurrent, bias, valid=mask)
    np.testing.assert_allclose(np.asarray(last, np.float64), ref_last, atol=atol, rtol=0)
    assert not np.asarray(last[2], np.float32).any()  # all-masked row: zeros


@pytest.mark.parametrize("function", [ku.static_rnn, ku.dynamic_rnn])
def test_functions_compute_in_low_precision(policy, function, rng):
    low, atol = POLICIES[policy]
    x = _inputs(rng)
    cell = ku.BasicRNNCell(H)
    outputs, state = function(cell, x, sequence_length=[T, 5, 0, 1])
    assert outputs.dtype == low and state.dtype == low
    assert [v.dtype for v in cell.weights] == ["float32"] * 3
    kernel, recurrent, bias = (v.numpy() for v in cell.weights)
    ref_outputs, _, ref_state = basic_rnn(
        x, kernel, recurrent, bias, valid=lengths_to_valid([T, 5, 0, 1], T), zero_output=True
    )
    np.testing.assert_allclose(np.asarray(outputs, np.float64), ref_outputs, atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(state, np.float64), ref_state, atol=atol, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy_name, layer_cls",
    [("mixed_float16", ku.DynamicUnroll), ("mixed_bfloat16", ku.StaticUnroll)],
    ids=["mixed_float16-DynamicUnroll", "mixed_bfloat16-StaticUnroll"],
)
def test_trains_saves_and_exports(policy_name, layer_cls, rng, tmp_path):
    """Each policy and each layer once (pairwise: the layers' computations under both policies are compared
    with NumPy above; what is checked here, training, the files and their dtypes, is the same code for both
    layers). float16 goes with `DynamicUnroll`, the default fast loop, for its loss scaling."""
    keras.mixed_precision.set_dtype_policy(policy_name)
    try:
        _train_save_and_export(policy_name, layer_cls, rng, tmp_path)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _train_save_and_export(policy, layer_cls, rng, tmp_path):
    low, atol = POLICIES[policy]
    x = rng.normal(size=(32, 6, F)).astype("float32")
    y = np.tanh(x.sum(axis=(1, 2)))[:, None].astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, F)),
            layer_cls(ku.BasicRNNCell(H)),
            keras.layers.Dense(1, dtype="float32"),  # keep the head in float32, as the Keras guide advises
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [w.copy() for w in model.get_weights()]

    history = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0).history["loss"]

    assert np.all(np.isfinite(history)), history
    assert history[-1] < history[0], history
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert all(np.abs(a - b).max() > 0 for a, b in zip(model.get_weights(), before))  # float32 weights updated
    assert model.layers[0](x[:2]).dtype == low
    predictions = model.predict(x, verbose=0)

    model.save(tmp_path / "model.keras")
    model.export(str(tmp_path / "saved_model"), verbose=False)
    keras.mixed_precision.set_dtype_policy("float32")  # the files must carry their own dtypes

    # compile=False: the layers keep their policy, but Keras rebuilds the optimizer from the *global* policy
    # (no LossScaleOptimizer under "float32"); to resume training, set the policy before loading.
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert type(reloaded.layers[0]) is layer_cls
    assert reloaded.layers[0].compute_dtype == low and reloaded.layers[0].cell.compute_dtype == low
    assert all(w.dtype == np.float32 for w in reloaded.get_weights())
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), predictions, atol=1e-6, rtol=0)

    exported = tf.saved_model.load(str(tmp_path / "saved_model"))
    served = exported.serve(tf.constant(x))
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), predictions, atol=atol, rtol=0)


CELLS = {
    "LSTMCell": lambda: keras.layers.LSTMCell(4),
    "GRUCell": lambda: keras.layers.GRUCell(4),
    "stacked": lambda: [ku.BasicRNNCell(3), keras.layers.LSTMCell(4)],
}


@pairwise(policy_name=list(POLICIES), layer_cls={cls.__name__: cls for cls in LAYERS}, cell_name=list(CELLS))
def test_other_cells_match_float32_and_have_gradients(policy_name, layer_cls, cell_name, rng):
    """LSTM, GRU and stacked cells (nested states) under low precision: same results as float32, in the low
    dtype, with finite float32 gradients. Plain loops here; the XLA loops are covered above. Pairwise: each cell
    under each policy and in each layer, each policy in each layer (6 cases, not 12)."""
    low, atol = POLICIES[policy_name]
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    kwargs = dict(return_sequences=True, return_state=True, jit_compile=False)
    call = dict(sequence_length=[5, 2, 0])
    keras.mixed_precision.set_dtype_policy("float32")
    reference_layer = layer_cls(CELLS[cell_name](), **kwargs)
    expected = [np.asarray(t) for t in tf.nest.flatten(reference_layer(x, **call))]
    keras.mixed_precision.set_dtype_policy(policy_name)
    try:
        layer = layer_cls(CELLS[cell_name](), **kwargs)
        layer.build(x.shape)
        layer.set_weights(reference_layer.get_weights())

        with tf.GradientTape() as tape:
            results = tf.nest.flatten(layer(x, **call))
            loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in results])
        grads = tape.gradient(loss, layer.trainable_weights)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")

    assert [t.dtype for t in results] == [low] * len(expected)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=atol, rtol=0)
    assert all(v.dtype == "float32" for v in layer.trainable_weights)
    assert all(g is not None and g.dtype == tf.float32 and np.isfinite(g.numpy()).all() for g in grads)
