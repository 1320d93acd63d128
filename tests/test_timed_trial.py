"""The planner's one-time timed trial (`plan.Tuning.timed_trial`): which runs, what it records, that it changes
speed only. conftest.py turns the trial off for the rest of the suite (reproducible plans); here it is on."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unroll as ku
from keras_unroll import testing
from keras_unroll.plan import Tuning

B, T, F, H = 4, 7, 3, 5
ON = Tuning(timed_trial=True)


def _model(cell, **options):
    return keras.Sequential([keras.Input((T, F)), ku.DynamicUnroll(cell, **options), keras.layers.Dense(1)])


def _data(rng, batch=B):
    return rng.standard_normal((batch, T, F)).astype("float32"), rng.standard_normal((batch, 1)).astype("float32")


@pytest.mark.parametrize("cell_cls", [keras.layers.LSTMCell, keras.layers.GRUCell, ku.BasicRNNCell])
def test_a_real_model_trains_and_predicts_with_the_trial_as_with_the_generic_step(cell_cls, rng):
    x, y = _data(rng)
    with testing.use_tuning(ON):
        model = _model(cell_cls(H))
        model.compile(optimizer="sgd", loss="mse")
        reference = keras.models.clone_model(model)
        reference.set_weights(model.get_weights())
        reference.compile(optimizer="sgd", loss="mse")
        history = model.fit(x, y, batch_size=B, epochs=2, verbose=0, shuffle=False).history["loss"]
        predicted = model.predict(x, batch_size=B, verbose=0)
    rows = testing.timed_trials(model.layers[0])
    assert {row["training"] for row in rows} == {True, False}  # fit (a tape records) and predict
    for row in rows:
        assert row["shape"] == (T, B, F) and row["kernel"] in ("simple_rnn", "gated")
        fused, generic = row["seconds"]["fused"], row["seconds"]["generic"]
        assert fused > 0 and generic > 0
        assert row["chosen"] == ("fused" if fused <= generic else "generic")  # the faster one
    with testing.generic_only():
        expected_history = reference.fit(x, y, batch_size=B, epochs=2, verbose=0, shuffle=False).history["loss"]
        expected = reference.predict(x, batch_size=B, verbose=0)
    np.testing.assert_allclose(history, expected_history, rtol=1e-5)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_the_trial_runs_once_per_shape_class_and_its_cache_is_bounded(rng):
    """Each trial compiles the fused kernel for its batch size: the cheapest kernel (SimpleRNN), one timed round,
    and one shape class more than the cache holds."""
    layer = ku.DynamicUnroll(ku.BasicRNNCell(H))
    with testing.use_tuning(Tuning(timed_trial=True, trial_rounds=1)):
        for batch in (1, 1, 2):
            layer(rng.standard_normal((batch, 2, F)).astype("float32"))
        assert [row["shape"] for row in testing.timed_trials(layer)] == [(2, 1, F), (2, 2, F)]
        bound = testing.cache_sizes(layer)["bounds"]["trials"]
        for batch in (*range(3, bound + 1), 1, bound + 1):  # full; batch 1 used again; one class too many
            layer(rng.standard_normal((batch, 2, F)).astype("float32"))
    shapes = [row["shape"] for row in testing.timed_trials(layer)]
    assert len(shapes) == testing.cache_sizes(layer)["trials"] == bound  # full, not beyond its bound
    # The least recently used (batch 2, not the first made, batch 1) was dropped.
    assert shapes == [(2, batch, F) for batch in (*range(3, bound + 1), 1, bound + 1)]


@pytest.mark.parametrize(
    "case",
    ["off", "jit_false", "jit_true", "static", "dropout", "too_large", "generic_only", "no_fused_kernel"],
)
def test_no_trial_where_it_does_not_apply(case, rng):
    x = tf.constant(_data(rng)[0])
    value = Tuning(
        timed_trial=case != "off", trial_max_elements=10 if case == "too_large" else Tuning().trial_max_elements
    )
    if case == "generic_only":
        value = Tuning(timed_trial=True, fast_paths=False)
    cell = keras.layers.LSTMCell(H, dropout=0.5 if case == "dropout" else 0.0)
    if case == "no_fused_kernel":
        cell = keras.layers.LSTMCell(H, activation="silu")
    options = {"jit_false": {"jit_compile": False}, "jit_true": {"jit_compile": True}}.get(case, {})
    layer = (ku.StaticUnroll if case == "static" else ku.DynamicUnroll)(cell, **options)
    with testing.use_tuning(value):
        with tf.GradientTape():
            layer(x, training=True)
    assert testing.timed_trials(layer) == []


def test_where_the_bounds_keep_the_generic_step_the_trial_still_weighs_the_fused_kernel(rng):
    """Above `gated_max_macs` the bounds alone run the generic step; the trial times the fused kernel too."""
    x = tf.constant(_data(rng)[0])
    layer = ku.DynamicUnroll(keras.layers.LSTMCell(H))
    with testing.use_tuning(Tuning(timed_trial=True, gated_max_macs=1)):
        result = layer(x)
    (row,) = testing.timed_trials(layer)
    assert row["kernel"] == "gated" and row["training"] is False
    with testing.generic_only():
        np.testing.assert_allclose(result, layer(x), rtol=1e-5, atol=1e-6)


def test_no_trial_under_a_distribution_strategy(rng):
    layer = ku.DynamicUnroll(keras.layers.LSTMCell(H))
    x = tf.constant(_data(rng)[0])
    with testing.use_tuning(ON), tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        layer(x)
    assert testing.timed_trials(layer) == []


_SWITCH_CHILD = r"""
import importlib, json, os, sys
import keras_unroll.plan as plan  # imported with the variable unset
seen = {}
for value in ("None", "0", "1"):
    if value != "None":
        os.environ["KERAS_UNROLL_TIMED_TRIAL"] = value
        plan = importlib.reload(plan)  # the module makes its default `Tuning` again, under this value
    seen[value] = [plan.Tuning().timed_trial, plan.tuning().timed_trial]
print("RESULT" + json.dumps(seen))
"""


@pytest.fixture(scope="module")
def switch_results():
    """`Tuning().timed_trial` and the default `tuning().timed_trial` for each value of the variable, in one child
    (the variable unset at its imports of keras_unroll; the plan module run again under "0", then "1")."""
    from fork_server import run_forked

    result = run_forked(["-c", _SWITCH_CHILD], unset=["KERAS_UNROLL_TIMED_TRIAL"], timeout=120)
    assert result.returncode == 0, result.stderr
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("value, expected", [(None, False), ("0", False), ("1", True)])
def test_the_environment_switch(value, expected, switch_results):
    assert switch_results[str(value)] == [expected] * 2


def test_trace_times_of_the_inspection_tools_leave_the_trial_out(rng):
    """`graph_stats` reports the trace, not the planner's trial that ran inside the first trace."""
    import time

    layer = ku.DynamicUnroll(keras.layers.LSTMCell(H))
    with testing.use_tuning(ON):
        start = time.perf_counter()
        stats = ku.inspect.graph_stats(layer, (B, T, F), training=True)
        elapsed = time.perf_counter() - start  # building, the trace (with the trial inside) and one run
    (row,) = testing.timed_trials(layer)
    assert row["training"] is True and row["trial_seconds"] > 0
    assert 0 < stats.trace_seconds <= elapsed - row["trial_seconds"]
