"""The first minute (#22): shape edges that must not abort the process, bounded caches under changing shapes,
and the same answer for the same program.

Shape edges run in a child process, so that an abort (oneDNN's `SIGABRT`) fails the test and not the suite; the
same child (one TensorFlow start-up) then runs the determinism fits, under op determinism.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from fork_server import python_children_forked, run_forked

_CHILD = r"""
import contextlib, itertools, json, sys
import numpy as np, tensorflow as tf, keras
import keras_unroll as ku
from keras_unroll.testing import Tuning, use_tuning

out = {"edges": {}, "determinism": []}
def keras_layer(cell):
    if isinstance(cell, keras.layers.LSTMCell):
        return keras.layers.LSTM(3, return_sequences=True, return_state=True)
    if isinstance(cell, keras.layers.GRUCell):
        return keras.layers.GRU(3, return_sequences=True, return_state=True)
    return keras.layers.SimpleRNN(3, return_sequences=True, return_state=True)

def largest_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)))

def cells():
    init = dict(bias_initializer="random_normal", recurrent_initializer="orthogonal")
    return [ku.BasicRNNCell(3, bias_initializer="random_normal"), keras.layers.LSTMCell(3, **init),
            keras.layers.GRUCell(3, **init)]

def edges(timed_trial):
    rows = []
    layer_types, jits = (ku.StaticUnroll, ku.DynamicUnroll), ("auto", False)
    if timed_trial:  # the trial runs only for DynamicUnroll's while loop under "auto"
        layer_types, jits = (ku.DynamicUnroll,), ("auto",)
    for case, layer_type, jit in itertools.product(("no_features", "empty_batch"), layer_types, jits):
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
                rows.append({
                    "case": case,
                    "name": name,
                    "shapes": [list(t.shape) for t in tf.nest.flatten(eager)],
                    "expected_shapes": [list(t.shape) for t in tf.nest.flatten(expected)],
                    "eager_error": largest_difference(eager, expected),
                    "traced_error": largest_difference(traced, expected),
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
                shapes = [list(t.shape) for t in tf.nest.flatten(result)]
                rows.append({"case": case, "name": name, "shapes": shapes, "n": n})
    return rows

# The trial on first (it then compiles its kernels itself), then the default planner (the trial off).
with use_tuning(Tuning(timed_trial=True)):
    out["edges"]["timed_trial"] = edges(True)
out["edges"]["default"] = edges(False)

# The same program, the same answer: last, as op determinism stays on for the rest of the process.
tf.config.experimental.enable_op_determinism()

def fit(cell, least):
    keras.utils.set_random_seed(7)
    make = {"lstm": keras.layers.LSTMCell, "simple_rnn": keras.layers.SimpleRNNCell}[cell]
    with use_tuning(Tuning(compile_min_steps=least)):
        model = keras.Sequential([keras.Input((6, 3)), ku.DynamicUnroll(make(5)), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        rng = np.random.default_rng(0)
        model.fit(rng.standard_normal((64, 6, 3)).astype("float32"), rng.standard_normal((64, 1)).astype("float32"),
                  batch_size=16, epochs=2, verbose=0)
    return model.get_weights()

for cell in ("lstm", "simple_rnn"):
    for least in (0, 64):  # the compiled fused kernel, and the uncompiled tier
        a, b = fit(cell, least), fit(cell, least)
        same = all(np.array_equal(x, y) for x, y in zip(a, b))
        out["determinism"].append(f"{cell} {least} {'same' if same else 'DIFFERENT'}")
print("RESULT" + json.dumps(out))
"""

#: layers x jit_compile x cells; with the timed trial on, only where it can run (DynamicUnroll, "auto")
_ROWS_PER_CASE = {"default": 2 * 2 * 3, "timed_trial": 1 * 1 * 3}


@pytest.fixture(scope="module")
def child_results():
    """One child process for the shape edges (the timed trial off and on) and the determinism runs."""
    done = run_forked(["-c", _CHILD], env={"KERAS_UNROLL_TIMED_TRIAL": "0"}, timeout=900)
    assert done.returncode == 0, f"the child process failed (rc {done.returncode}):\n{done.stderr[-4000:]}"
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def _edge_rows(child_results, case, timed_trial):
    return [row for row in child_results["edges"][timed_trial] if row["case"] == case]


@pytest.mark.parametrize("timed_trial", ["default", "timed_trial"])
def test_no_features_gives_keras_result_and_never_aborts(child_results, timed_trial):
    rows = _edge_rows(child_results, "no_features", timed_trial)
    assert len(rows) == _ROWS_PER_CASE[timed_trial]
    for row in rows:
        assert row["shapes"] == row["expected_shapes"], row
        assert row["eager_error"] < 1e-5 and row["traced_error"] < 1e-5, row
        if row["raised"] is None:  # gradients exist for every weight, with the weight's shape ((0, k) kernels)
            assert row["grad_shapes"] == row["weight_shapes"], row
        else:
            assert "0 features" in row["raised"] and "Received: inputs with shape (2, 4, 0)" in row["raised"], row
    # The fused and hoisted kernels (every cell's default) take no product: they never need the error.
    assert not [r for r in rows if r["raised"] and "jit=auto" in r["name"]]


@pytest.mark.parametrize("timed_trial", ["default", "timed_trial"])
def test_empty_batch_of_unknown_size_with_initial_state(child_results, timed_trial):
    rows = _edge_rows(child_results, "empty_batch", timed_trial)
    assert len(rows) == _ROWS_PER_CASE[timed_trial]
    for row in rows:
        # sequences (0, 4, 3), then the state(s) (0, 3)
        assert row["shapes"] == [[0, 4, 3]] + [[0, 3]] * row["n"], row


# ------------------------------------------------------------------------ bounded under changing shapes
import keras  # noqa: E402

import keras_unroll as ku  # noqa: E402
from keras_unroll.testing import Tuning, cache_sizes, generic_only, plans, use_tuning  # noqa: E402

DEFAULT = Tuning(compile_min_steps=64)  # the package's default (the suite's conftest compiles from the first call)
KERNEL_CACHES = ("simple_rnn_passes", "simple_rnn_inference", "gated_passes", "gated_inference")


def _kernel_caches(layer):
    sizes = cache_sizes(layer)
    return {name: sizes[name] for name in KERNEL_CACHES}


def _within_bounds(layer):
    sizes = cache_sizes(layer)
    return all(sizes[name] <= bound for name, bound in sizes["bounds"].items())


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm"])
def test_eager_batch_sizes_and_lengths_compile_nothing_and_stay_bounded(cell, rng):
    layer = ku.DynamicUnroll(4 if cell == "simple_rnn" else keras.layers.LSTMCell(4))
    with use_tuning(DEFAULT):
        layer(np.zeros((1, 3, 2), "float32"))
        before = _kernel_caches(layer)
        for batch in range(1, 25):  # batch sizes that keep changing
            layer(rng.standard_normal((batch, 3, 2)).astype("float32"))
        for steps in range(4, 130, 3):  # lengths that keep changing, past compile_min_steps too
            layer(rng.standard_normal((2, steps, 2)).astype("float32"))
    assert _kernel_caches(layer) == before  # no compiled kernel for any shape seen once
    taken = plans(layer)
    assert len(taken) == cache_sizes(layer)["bounds"]["plans"] and {p["compile"] for p in taken} == {"none"}
    assert {p["kernel"] for p in taken} == ({"simple_rnn"} if cell == "simple_rnn" else {"generic"})
    sizes = cache_sizes(layer)
    assert sizes["functions"] == 1  # one trace with open batch and time axes serves every shape
    assert sizes["seen_shapes"] == sizes["bounds"]["seen_shapes"] and _within_bounds(layer)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
def test_a_shape_that_proves_hot_compiles_and_agrees(cell, rng):
    make = {"simple_rnn": keras.layers.SimpleRNNCell, "lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}[cell]
    layer = ku.DynamicUnroll(make(4), return_sequences=True)
    x = rng.standard_normal((2, 70, 3)).astype("float32")
    with use_tuning(DEFAULT):
        first, second = layer(x), layer(x)
        short = rng.standard_normal((2, 5, 3)).astype("float32")
        layer(short), layer(short)
    assert [(p["compile"], p["shape"]) for p in plans(layer)] == [
        ("none", (2, 70, 3)),
        ("kernel", (2, 70, 3)),
        ("none", (2, 5, 3)),
        ("none", (2, 5, 3)),
    ]
    with generic_only():
        expected = layer(x)
    reference = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    keras_layer = reference(4, return_sequences=True)
    keras_layer(x)
    keras_layer.set_weights(layer.get_weights())
    for result in (first, second):
        np.testing.assert_allclose(result, expected, atol=1e-5)
        np.testing.assert_allclose(result, keras_layer(x), atol=1e-5)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm"])
def test_graphs_compile_by_length_and_train_on_changing_lengths_stays_bounded(cell, rng):
    make = keras.layers.SimpleRNNCell if cell == "simple_rnn" else keras.layers.LSTMCell
    with use_tuning(DEFAULT):
        short = keras.Sequential([keras.Input((8, 2)), ku.DynamicUnroll(make(4)), keras.layers.Dense(1)])
        long = keras.Sequential([keras.Input((64, 2)), ku.DynamicUnroll(make(4)), keras.layers.Dense(1)])
        open_time = keras.Sequential([keras.Input((None, 2)), ku.DynamicUnroll(make(4)), keras.layers.Dense(1)])
        for model, steps in ((short, 8), (long, 64)):
            model.compile("sgd", "mse")
            model.train_on_batch(rng.standard_normal((4, steps, 2)).astype("float32"), np.zeros((4, 1), "float32"))
        assert {p["compile"] for p in plans(short.layers[0])} == {"none"}
        assert {p["compile"] for p in plans(long.layers[0])} == {"kernel"}
        open_time.compile("sgd", "mse")
        before = _kernel_caches(open_time.layers[0])
        for steps in range(5, 30):
            open_time.train_on_batch(rng.standard_normal((4, steps, 2)).astype("float32"), np.zeros((4, 1), "float32"))
    assert {p["compile"] for p in plans(open_time.layers[0])} == {"none"}
    assert _kernel_caches(open_time.layers[0]) == before and _within_bounds(open_time.layers[0])


# ------------------------------------------------------------------------ the same program, the same answer
def test_fit_twice_under_op_determinism_gives_identical_weights(child_results):
    assert child_results["determinism"] == ["lstm 0 same", "lstm 64 same", "simple_rnn 0 same", "simple_rnn 64 same"]


def _paths():
    """Every path the planner can take for a CPU call: (name, layer factory, tuning)."""
    compiled, uncompiled = Tuning(compile_min_steps=0), Tuning(compile_min_steps=64)
    generic = Tuning(fast_paths=False)
    return [
        ("generic while", lambda: ku.DynamicUnroll(keras.layers.LSTMCell(4)), generic),
        ("generic static", lambda: ku.StaticUnroll(keras.layers.LSTMCell(4)), generic),
        ("fused simple_rnn compiled", lambda: ku.DynamicUnroll(4), compiled),
        ("fused simple_rnn uncompiled", lambda: ku.DynamicUnroll(4), uncompiled),
        ("fused lstm compiled", lambda: ku.DynamicUnroll(keras.layers.LSTMCell(4)), compiled),
        ("fused gru compiled", lambda: ku.DynamicUnroll(keras.layers.GRUCell(4)), compiled),
        ("static simple_rnn", lambda: ku.StaticUnroll(4), compiled),
        ("static hoisted gru", lambda: ku.StaticUnroll(keras.layers.GRUCell(4)), compiled),
        ("static compiled loop", lambda: ku.StaticUnroll(keras.layers.LSTMCell(4), jit_compile=True), compiled),
        ("checkpointed simple_rnn", lambda: ku.DynamicUnroll(4, swap_memory=True), compiled),
        ("checkpointed lstm", lambda: ku.DynamicUnroll(keras.layers.LSTMCell(4), recompute=2), compiled),
    ]


_KERNELS = {
    "generic while": "generic", "generic static": "generic", "fused simple_rnn compiled": "simple_rnn",
    "fused simple_rnn uncompiled": "simple_rnn", "fused lstm compiled": "gated", "fused gru compiled": "gated",
    "static simple_rnn": "simple_rnn", "static hoisted gru": "projected", "static compiled loop": "projected",
    "checkpointed simple_rnn": "simple_rnn", "checkpointed lstm": "gated",
}  # fmt: skip


@pytest.mark.parametrize("name, factory, value", _paths(), ids=[p[0] for p in _paths()])
def test_one_bad_row_leaves_every_other_row_bit_identical(name, factory, value, rng):
    layer = factory()
    x = rng.standard_normal((4, 5, 3)).astype("float32")
    kept = [0, 2, 3]
    with use_tuning(value):
        clean = [np.asarray(layer(x, training=t)) for t in (False, True)]
        for bad in (np.inf, -np.inf, 1e30):
            changed = x.copy()
            changed[1] = bad
            dirty = [np.asarray(layer(changed, training=t)) for t in (False, True)]
            for a, b in zip(clean, dirty):
                assert np.array_equal(a[kept], b[kept]), (name, bad)
    assert [p["kernel"] for p in plans(layer)][-1] == _KERNELS[name]  # the path named was the path taken


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm"])
def test_one_bad_row_in_a_serving_trace_leaves_every_other_row_bit_identical(cell, rng):
    # The serving plans (a `tf.function` with `training` not given and no tape, as `model.export` and the
    # converters trace): the plain while loop (SimpleRNN) and the fused-export loop (LSTM).
    layer = ku.DynamicUnroll(4 if cell == "simple_rnn" else keras.layers.LSTMCell(4))
    serve = tf.function(lambda x: layer(x))
    x = rng.standard_normal((4, 5, 3)).astype("float32")
    clean = np.asarray(serve(x))
    for bad in (np.inf, -np.inf, 1e30):
        changed = x.copy()
        changed[1] = bad
        assert np.array_equal(clean[[0, 2, 3]], np.asarray(serve(changed))[[0, 2, 3]]), bad
    assert plans(layer)[-1]["loop"] == "serving"
    assert plans(layer)[-1]["kernel"] == ("generic" if cell == "simple_rnn" else "fused_export")


# ------------------------------------------------------------------------------------- the benchmark
def test_first_minute_benchmark_quick_run(tmp_path, capsys):
    from benchmarks import first_minute

    out = tmp_path / "first_minute.json"
    with python_children_forked() as forked:  # its child, without a TensorFlow import of its own
        assert (
            first_minute.main(["--quick", "--cells", "simple_rnn", "--cases", "fit", "batches", "--json", str(out)])
            == 0
        )
    assert len(forked) == 1  # `--quick`: every run in one child
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    whats = [row["what"] for row in report["results"]]
    assert whats == ["first epoch", "2 epochs", "batch sizes 1..6, eager, time", "batch sizes 1..6, eager, RSS growth"]
    assert all(row["ours"] >= 0 and row["baseline"] >= 0 for row in report["results"])
    assert "| first epoch | simple_rnn |" in printed and "Keras: " in printed and "jit_compile=False: " in printed


def test_the_environment_sets_the_default_compile_tier(monkeypatch, rng):
    """The variable sets the tier of a default `Tuning`; without it, the package's own tier keeps a short
    sequence uncompiled and compiles a long one that proves hot (whatever number that tier is)."""
    monkeypatch.setenv("KERAS_UNROLL_COMPILE_MIN_STEPS", "17")
    assert Tuning().compile_min_steps == 17
    monkeypatch.delenv("KERAS_UNROLL_COMPILE_MIN_STEPS")
    default = Tuning()
    assert default.compile_min_steps != 17
    layer = ku.DynamicUnroll(4)
    with use_tuning(default):
        for steps in (3, 3, 500, 500):
            layer(rng.standard_normal((2, steps, 2)).astype("float32"))
    assert [p["compile"] for p in plans(layer)] == ["none", "none", "none", "kernel"], plans(layer)
