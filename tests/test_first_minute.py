"""The first minute (#22): shape edges that must not abort the process, bounded caches under changing shapes,
and the same answer for the same program.

Shape edges run in a child process, so that an abort (oneDNN's `SIGABRT`) fails the test and not the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

_EDGES_CHILD = r"""
import json, sys
import numpy as np, tensorflow as tf, keras
import keras_unroll as ku

out = []
def keras_layer(cell):
    if isinstance(cell, keras.layers.LSTMCell):
        return keras.layers.LSTM(3, return_sequences=True, return_state=True)
    if isinstance(cell, keras.layers.GRUCell):
        return keras.layers.GRU(3, return_sequences=True, return_state=True)
    return keras.layers.SimpleRNN(3, return_sequences=True, return_state=True)

def cells():
    init = dict(bias_initializer="random_normal", recurrent_initializer="orthogonal")
    return [ku.BasicRNNCell(3, bias_initializer="random_normal"), keras.layers.LSTMCell(3, **init),
            keras.layers.GRUCell(3, **init)]

for case, layer_type, jit in [(c, l, j) for c in ("no_features", "empty_batch") for l in (ku.StaticUnroll, ku.DynamicUnroll) for j in ("auto", False)]:
        for cell in cells():
            name = f"{layer_type.__name__}/{type(cell).__name__}/jit={jit}"
            layer = layer_type(cell, return_sequences=True, return_state=True, jit_compile=jit)
            if case == "no_features":
                x = np.zeros((2, 4, 0), "float32")
                eager = layer(x)
                reference = keras_layer(cell)
                reference(x)
                reference.set_weights(layer.get_weights())
                expected = reference(x)
                @tf.function
                def train(x):
                    with tf.GradientTape() as tape:
                        result = layer(x, training=True)
                        loss = tf.reduce_sum(result[0])
                    return result, tape.gradient(loss, layer.trainable_variables)
                try:
                    traced, grads = train(tf.constant(x))
                    traced_error = None
                except ValueError as error:  # a clear error is allowed where the cell's own step runs in a graph
                    traced, grads, traced_error = eager, [], str(error)
                out.append({
                    "case": case,
                    "name": name,
                    "shapes": [list(t.shape) for t in tf.nest.flatten(eager)],
                    "expected_shapes": [list(t.shape) for t in tf.nest.flatten(expected)],
                    "eager_error": max(float(np.max(np.abs(a - b))) for a, b in zip(tf.nest.flatten(eager), tf.nest.flatten(expected))),
                    "traced_error": max(float(np.max(np.abs(a - b))) for a, b in zip(tf.nest.flatten(traced), tf.nest.flatten(expected))),
                    "grad_shapes": [None if g is None else list(g.shape) for g in grads],
                    "weight_shapes": [list(w.shape) for w in layer.trainable_variables],
                    "raised": traced_error,
                })
            else:  # an empty batch of unknown size, with an initial state of (0, H)
                n = 2 if isinstance(cell, keras.layers.LSTMCell) else 1
                @tf.function(input_signature=[tf.TensorSpec([None, 4, 2])] + [tf.TensorSpec([None, 3])] * n)
                def call(x, *state):
                    return layer(x, initial_state=list(state))
                result = call(tf.zeros((0, 4, 2)), *[tf.zeros((0, 3))] * n)
                out.append({"case": case, "name": name, "shapes": [list(t.shape) for t in tf.nest.flatten(result)], "n": n})
print("RESULT" + json.dumps(out))
"""


_ROWS = {}


def _run_child(case, env, timed_trial):
    """The child's rows for `case` (one child per setting of the timed trial, for both cases)."""
    if timed_trial not in _ROWS:
        _ROWS[timed_trial] = _run_both(env, timed_trial)
    return [row for row in _ROWS[timed_trial] if row["case"] == case]


def _run_both(env, timed_trial):
    env = dict(env, KERAS_UNROLL_TIMED_TRIAL="1" if timed_trial else "0")
    done = subprocess.run(
        [sys.executable, "-c", _EDGES_CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"the child process failed (rc {done.returncode}):\n{done.stderr[-4000:]}"
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("timed_trial", [False, True], ids=["default", "timed_trial"])
def test_no_features_gives_keras_result_and_never_aborts(subprocess_env, timed_trial):
    rows = _run_child("no_features", subprocess_env, timed_trial)
    assert len(rows) == 2 * 2 * 3
    for row in rows:
        assert row["shapes"] == row["expected_shapes"], row
        assert row["eager_error"] < 1e-5 and row["traced_error"] < 1e-5, row
        if row["raised"] is None:  # gradients exist for every weight, with the weight's shape ((0, k) kernels)
            assert row["grad_shapes"] == row["weight_shapes"], row
        else:
            assert "0 features" in row["raised"] and "Received: inputs with shape (2, 4, 0)" in row["raised"], row
    # The fused and hoisted kernels (every cell's default) take no product: they never need the error.
    assert not [r for r in rows if r["raised"] and "jit=auto" in r["name"]]


@pytest.mark.parametrize("timed_trial", [False, True], ids=["default", "timed_trial"])
def test_empty_batch_of_unknown_size_with_initial_state(subprocess_env, timed_trial):
    rows = _run_child("empty_batch", subprocess_env, timed_trial)
    assert len(rows) == 2 * 2 * 3
    for row in rows:
        # sequences (0, 4, 3), then the state(s) (0, 3)
        assert row["shapes"] == [[0, 4, 3]] + [[0, 3]] * row["n"], row
