"""cuDNN on a GPU (`keras_unroll/kernels/cudnn.py`), tested without one.

No GPU here: `Tuning(gpu=True)` describes one to the planner. Three things are checked: which calls the
planner gives cuDNN's kernel (Keras' conditions, and each one that fails); that the graphs traced for them
hold the `CudnnRNNV3` op Keras' layers use and no while loop (TensorFlow registers the op on CPU builds, only
its kernel is missing, so graphs trace); and the bookkeeping around the op (masks, `go_backwards`, rows with
no valid step, dropout, initial states) in numbers, with a CPU stand-in for `_private.cudnn_rnn` (the door
to Keras' `_cudnn_lstm` / `_cudnn_gru`) that keeps their contract. What cuDNN itself computes, and how fast,
is measured on a GPU only (docs/performance.md, "On a GPU: cuDNN").
"""

from __future__ import annotations

import dataclasses
import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unroll as ku
from keras_unroll import _private, plan, step, testing
from keras_unroll.kernels import cudnn

B, T, F, H = 3, 5, 2, 4
GPU = plan.Tuning(gpu=True)
CELLS = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}
BACKEND = importlib.import_module("keras.src.backend.tensorflow.rnn")


def _kernel(cell, value=GPU, loop="dynamic", batch=2, **request):
    x = tf.zeros((batch, 4, 3))
    return plan.make_plan(cell, step.prepare(cell, x, time_major=False), plan.Request(loop, **request), value).kernel


# ------------------------------------------------------------------------------------ the choice
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras_conditions_on_a_gpu_take_cudnn(kind):
    make = CELLS[kind]
    assert _kernel(make(3), jit_compile="auto") == "cudnn"
    assert _kernel(make(3), jit_compile=False) == "cudnn"
    assert _kernel(make(3, dropout=0.3)) == "cudnn"  # input dropout: applied before the call, as Keras does
    assert _kernel(make(3, implementation=1)) == "cudnn"  # the same maths without dropout
    assert _kernel(make(3), batch=64) == "cudnn"  # any size: Keras takes cuDNN whatever the size
    with tf.device("/gpu:0"):
        assert _kernel(make(3)) == "cudnn"


def test_tf1_cells_with_keras_maths_take_cudnn_and_the_others_do_not():
    """TF1's `BasicLSTMCell`, `GRUCell` (`reset_after=False`, which cuDNN does not run) and `LSTMCell`
    without peepholes or projection are Keras' maths: the same cuDNN conditions decide."""
    assert _kernel(ku.tf1.BasicLSTMCell(3)) == "cudnn"
    assert _kernel(ku.tf1.LSTMCell(3, forget_bias=0.5)) == "cudnn"
    assert _kernel(ku.tf1.GRUCell(3)) != "cudnn"
    assert _kernel(ku.tf1.LSTMCell(3, use_peepholes=True)) == "generic"
    assert _kernel(ku.tf1.LSTMCell(3, num_proj=2)) == "generic"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_each_failing_condition_keeps_the_other_kernels(kind):
    make = CELLS[kind]

    class OwnMaths(make):
        def call(self, inputs, states, training=False):
            return super().call(inputs * 2.0, states, training=training)

    not_cudnn = [
        make(3, recurrent_dropout=0.2),
        make(3, activation="relu"),
        make(3, recurrent_activation="hard_sigmoid"),
        make(3, use_bias=False),
        make(3, implementation=1, dropout=0.2),  # one input mask per gate: one cuDNN call cannot apply them
        OwnMaths(3),
    ]
    if kind == "gru":
        not_cudnn.append(make(3, reset_after=False))
    for cell in not_cudnn:
        assert cudnn.eligible(cell) is None, cell
        assert _kernel(cell, jit_compile="auto") != "cudnn", cell
    cell = make(3)
    assert cudnn.eligible(cell) == kind
    assert _kernel(cell, jit_compile=True) == "gated"  # asked for XLA: cuDNN's op has no XLA kernel
    assert _kernel(cell, swap_memory=True) == _kernel(cell, recompute="sqrt") == "generic"  # checkpointed
    assert _kernel(cell, loop="static") == "projected"  # Keras' unroll=True takes no cuDNN either
    assert _kernel(cell, value=plan.Tuning(gpu=False), jit_compile="auto") == "gated"
    has_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert (_kernel(cell, value=plan.Tuning(), jit_compile="auto") == "cudnn") == has_gpu  # None: ask TensorFlow
    with testing.use_tuning(GPU), testing.generic_only():
        assert _kernel(cell, value=None) == "generic"
    with tf.device("/cpu:0"):
        assert _kernel(cell, jit_compile="auto") == "gated"
    with tf.device("/gpu:0"):
        assert _kernel(cell, value=plan.Tuning(gpu=False), jit_compile="auto") == "gated"

    seen = {}

    def trace(name, **function_options):
        @tf.function(autograph=False, **function_options)  # the planner's own code, as the layers run it
        def planned(x):
            prepared = step.prepare(cell, x, time_major=False)
            seen[name] = plan.make_plan(cell, prepared, plan.Request("dynamic", jit_compile="auto"), GPU).kernel
            return x

        planned.get_concrete_function(tf.TensorSpec((2, 4, 3)))

    trace("graph")
    with tf.device("/cpu:0"):
        trace("graph in a CPU scope")
    trace("inside XLA", jit_compile=True)  # model.compile(jit_compile=True) traces the step like this
    assert seen == {"graph": "cudnn", "graph in a CPU scope": "gated", "inside XLA": "gated"}
    assert cudnn.eligible(keras.layers.SimpleRNNCell(3)) is None
    assert cudnn.eligible(keras.layers.StackedRNNCells([make(3), make(3)])) is None


def test_layers_do_not_claim_xla_where_they_take_cudnn():
    """As Keras' LSTM/GRU: `supports_jit` is False where cuDNN runs, so `model.compile(jit_compile="auto")`
    does not compile the step around it (it would take the XLA kernel instead of cuDNN)."""
    with testing.use_tuning(GPU):
        assert not ku.DynamicUnroll(keras.layers.LSTMCell(3)).supports_jit
        assert ku.DynamicUnroll(keras.layers.LSTMCell(3), jit_compile=True).supports_jit
        assert ku.DynamicUnroll(keras.layers.GRUCell(3, reset_after=False)).supports_jit
        assert ku.StaticUnroll(keras.layers.GRUCell(3)).supports_jit
    assert ku.DynamicUnroll(keras.layers.LSTMCell(3)).supports_jit == (not tf.config.list_logical_devices("GPU"))


# --------------------------------------------------------------------------------- graph structure
def _op_types(concrete):
    graph = concrete.graph.as_graph_def()
    types = [node.op for node in graph.node]
    for function in graph.library.function:
        types += [node.op for node in function.node_def]
    return types


VARIANTS = {
    "plain": ({}, {}),
    "sequence_length, go_backwards": ({"go_backwards": True}, {"sequence_length": True}),
    "initial_state, return_state": ({"return_state": True, "return_sequences": False}, {"initial_state": True}),
    "mask, go_backwards": ({"go_backwards": True, "zero_output_for_mask": True}, {"mask": True}),
}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_traced_training_step_holds_cudnn_and_no_while_loop(kind, variant):
    options, call = VARIANTS[variant]
    with testing.use_tuning(GPU):
        layer = ku.DynamicUnroll(CELLS[kind](H), **{"return_sequences": True, **options})

        @tf.function
        def train_step(x, mask, lengths, h0):
            kwargs = {}
            if call.get("mask"):
                kwargs["mask"] = mask
            if call.get("sequence_length"):
                kwargs["sequence_length"] = lengths
            if call.get("initial_state"):
                kwargs["initial_state"] = [h0, h0] if kind == "lstm" else [h0]
            with tf.GradientTape() as tape:
                tape.watch([x, h0])
                out = layer(x, training=True, **kwargs)
                loss = sum(tf.reduce_sum(t) for t in tf.nest.flatten(out))
            return tape.gradient(loss, [x, h0, *layer.trainable_weights])

        concrete = train_step.get_concrete_function(
            tf.TensorSpec((None, None, F)), tf.TensorSpec((None, None), tf.bool), tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, H)),
        )  # fmt: skip
    types = _op_types(concrete)
    assert "CudnnRNNV3" in types and "CudnnRNNBackpropV3" in types
    loops = [t for t in types if t in ("While", "StatelessWhile")]
    if "mask" in call:  # a mask that is not right-padded runs the generic while loop, in the other branch
        assert loops and {"If", "StatelessIf"} & set(types)
    else:
        assert not loops


def test_a_masked_model_traces_with_cudnn():
    """A model as users write it: `Embedding(mask_zero=True)` gives the mask; `Bidirectional` runs two."""
    with testing.use_tuning(GPU):
        inputs = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(10, F, mask_zero=True)(inputs)
        x = keras.layers.Bidirectional(ku.DynamicUnroll(keras.layers.LSTMCell(H), return_sequences=True))(x)
        x = ku.DynamicUnroll(keras.layers.GRUCell(H))(x)
        model = keras.Model(inputs, keras.layers.Dense(1)(x))
        # training=False (as model.predict): a call without `training` traces the portable serving graph
        concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec((None, None), tf.int32)
        )
    assert _op_types(concrete).count("CudnnRNNV3") == 3


# ------------------------------------------------------------------- the bookkeeping, in numbers
def _stand_in(kind):
    """Keras' `_cudnn_lstm`/`_cudnn_gru` contract on a CPU: a batch-major mask, right-padded, every row with a
    valid step (cuDNN fails otherwise: asserted); each row runs its first `length` steps, reversed within its
    length with `go_backwards`; zero outputs past a row's length; the states after its last step."""
    calls = []

    def run(name, inputs, states, kernel, recurrent_kernel, bias, *, mask, time_major, go_backwards, return_sequences):
        assert name == kind
        calls.append(mask is not None)
        x = inputs if time_major else tf.transpose(inputs, [1, 0, 2])
        steps, batch = tf.shape(x)[0], tf.shape(x)[1]
        lengths = tf.fill([batch], steps) if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        if mask is not None:
            assert not time_major  # Keras' checks read the mask batch-major
            right = tf.reduce_all(tf.equal(mask, tf.sequence_mask(lengths, steps)))
            tf.debugging.assert_equal(right & tf.reduce_all(lengths > 0), True, message="not what cuDNN runs")
        if go_backwards:
            x = tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)
        units = recurrent_kernel.shape[0]

        def cell_step(x_t, state):
            if kind == "lstm":
                h, c = state
                i, f, g, o = tf.split(x_t @ kernel + h @ recurrent_kernel + bias, 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                h = tf.sigmoid(o) * tf.tanh(c)
                return h, [h, c]
            (h,) = state
            xz, xr, xh = tf.split(x_t @ kernel + bias[0], 3, axis=1)
            hz, hr, hh = tf.split(h @ recurrent_kernel + bias[1], 3, axis=1)
            z, r = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
            h = z * h + (1 - z) * tf.tanh(xh + r * hh)
            return h, [h]

        _, outputs, final = BACKEND.rnn(
            cell_step, x, list(states), mask=tf.transpose(tf.sequence_mask(lengths, steps)), time_major=True,
            zero_output_for_mask=True,
        )  # fmt: skip
        if go_backwards:
            outputs = tf.reverse(tf.reverse_sequence(outputs, lengths, seq_axis=0, batch_axis=1), [0])
        outputs.set_shape([None, None, units])
        return final[0], (outputs if time_major else tf.transpose(outputs, [1, 0, 2])), list(final)

    return run, calls


CASES = {
    "initial_state": ({}, {"initial_state": True}),
    "mask, an empty row": ({}, {"mask": [5, 0, 3]}),
    "mask, go_backwards, zero outputs": ({"go_backwards": True, "zero_output_for_mask": True}, {"mask": [2, 5, 0]}),
    "mask not right-padded": ({"go_backwards": True}, {"mask": "holes"}),
    "sequence_length, go_backwards": ({"go_backwards": True}, {"sequence_length": [0, 5, 2]}),
    "dropout, training": ({}, {"sequence_length": [4, 1, 5], "dropout": True}),
}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("case", list(CASES))
def test_bookkeeping_around_cudnn_matches_the_generic_step(kind, case, monkeypatch):
    options, call = CASES[case]
    stand_in, calls = _stand_in(kind)
    monkeypatch.setattr(_private, "cudnn_rnn", stand_in)  # the one door to Keras' cuDNN functions
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal((B, T, F)).astype("float32"))
    h0 = tf.constant(rng.standard_normal((B, H)).astype("float32"))
    kwargs, training = {}, None
    if isinstance(call.get("mask"), list):
        kwargs["mask"] = tf.sequence_mask(call["mask"], T)
    elif call.get("mask") == "holes":
        kwargs["mask"] = tf.constant([[True, False, True, True, False]] * B)
    if "sequence_length" in call:
        kwargs["sequence_length"] = tf.constant(call["sequence_length"])
    if call.get("initial_state"):
        kwargs["initial_state"] = [h0, h0 * 0.5] if kind == "lstm" else [h0]
    cell_options = {}
    if call.get("dropout"):
        cell_options, training = {"dropout": 0.4, "seed": 5}, True
    weights = None
    results = []
    # cuDNN's path (`DynamicUnroll`), then the generic step in `StaticUnroll`'s Python loop: eager, it traces no
    # graph (a `DynamicUnroll` reference traced a while loop and its gradient per case: most of this test's time).
    for layer_cls, value in ((ku.DynamicUnroll, GPU), (ku.StaticUnroll, dataclasses.replace(GPU, fast_paths=False))):
        cell = CELLS[kind](H, **cell_options)
        cell.build((None, F))
        weights = weights or [rng.standard_normal(w.shape).astype("float32") * 0.6 for w in cell.get_weights()]
        cell.set_weights(weights)
        with testing.use_tuning(value):
            layer = layer_cls(cell, return_sequences=True, return_state=True, **options)
            with tf.GradientTape() as tape:
                tape.watch([x, h0])
                out = layer(x, training=training, **kwargs)
                loss = sum(tf.reduce_sum(t * (i + 1.0)) for i, t in enumerate(out))
            grads = tape.gradient(loss, [x, h0, *cell.trainable_weights], unconnected_gradients="zero")
        results.append([t.numpy() for t in [*out, *grads]])
    assert calls and calls[0] == ("mask" in kwargs or "sequence_length" in kwargs)  # cuDNN's path was traced
    for actual, expected in zip(*results):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_cudnn_loop_names_the_cell_it_cannot_run():
    cell = keras.layers.SimpleRNNCell(3)
    prepared = step.prepare(cell, tf.zeros((2, 4, 3)), time_major=False)
    with pytest.raises(ValueError, match=r"cannot take cuDNN's LSTM/GRU kernel.*Received: cell="):
        cudnn.cudnn_loop(cell, prepared, step.DropoutMasks())
