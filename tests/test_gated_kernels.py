"""The fused recurrence in its LSTM/GRU modes (`kernels/recurrence.py`, `kernels/cells.py`) against Keras' own
layers and the generic step.

Every case runs the same weights three ways -- `keras.layers.LSTM`/`GRU`, the generic step (the one step
function, under `keras_unroll.testing.generic_only()`), and `recurrence.fused_loop` (with and without XLA) --
and compares the outputs, the final states and the gradients of a loss over all of them with respect to every
weight, the inputs and the initial state. Dropout cases build each cell with the same seed: Keras, the generic
loop and the kernel draw their masks in the same order from identical seed generators, so the masks are
identical.

The generic step runs in `ku.StaticUnroll`'s Python loop, eagerly (`_generic`: the same step and bookkeeping
as `DynamicUnroll`'s while loop, with no graph to trace, several times cheaper here); the chunked cases
(`test_xla_passes_in_several_chunks_match_generic`: masks with `go_backwards`, an early stop, dropout) compare
with `ku.DynamicUnroll`'s generic while loop.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import pairwise

import keras_unroll as ku
from keras_unroll import plan, step, testing
from keras_unroll.kernels import cells, recurrence

RTOL = 1e-5
B, T, F, H = 4, 6, 3, 5
JITS = {"graph": False, "xla": True}
KINDS = {
    "lstm": (keras.layers.LSTM, {}),
    "gru": (keras.layers.GRU, {}),
    "gru_reset_before": (keras.layers.GRU, {"reset_after": False}),
}


def _close(actual, expected, what=""):
    """rtol 1e-5 plus an absolute slack of 1e-5 of the array's largest value (sums of cancelling terms)."""
    expected = np.asarray(expected)
    atol = max(1e-6, RTOL * float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=atol, err_msg=what)


def _layer(kind, seed=3, **kwargs):
    """A built Keras layer of `kind` with weights drawn from `seed` (large enough to saturate some gates)."""
    cls, defaults = KINDS[kind]
    options = {"return_sequences": True, "return_state": True, "seed": 11, **defaults, **kwargs}
    layer = cls(H, **options)
    layer.build((None, T, F))
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.standard_normal(w.shape) * 0.7).astype("float32") for w in layer.get_weights()])
    return layer


CHUNK_BYTES = plan.Tuning().chunk_bytes


def _fused(cell, x, *, jit, training, chunk_bytes, sequences, **prepare_kwargs):
    """`fused_loop` on `x` (batch-major) with the planner's choices for a compiled call (`jit`), else the
    uncompiled kernel: returns `(outputs (T, B, H) or None, last_output, final_state)`."""
    prepared = step.prepare(cell, tf.convert_to_tensor(x), time_major=False, **prepare_kwargs)
    masks = step.DropoutMasks.draw(cell, prepared, training)
    choices = recurrence.Choices()
    if jit:
        request = plan.Request("dynamic", training=training, jit_compile=True, return_all_outputs=sequences)
        value = plan.Tuning(chunk_bytes=chunk_bytes, gated_max_macs=2**62)
        choices = plan.make_plan(cell, prepared, request, value).choices
    return recurrence.fused_loop(cell, prepared, masks, choices, sequences)


def _gated(cell, x, *, jit, training=None, chunk_bytes=CHUNK_BYTES, **prepare_kwargs):
    """The fused kernel on `x` (batch-major): returns `[outputs (B, T, H), last_output, *final_state]`."""
    outputs, last, state = _fused(
        cell, x, jit=jit, training=training, chunk_bytes=chunk_bytes, sequences=True, **prepare_kwargs
    )
    return [tf.transpose(outputs, [1, 0, 2]), last, *state]


def _drop_last(results):
    """`[outputs, last, *states]` -> `[outputs, *states]`, what Keras' layers return."""
    return [results[0], *results[2:]]


def _gated_last(cell, x, *, jit, training=None, chunk_bytes=CHUNK_BYTES, **prepare_kwargs):
    """The fused kernel with `return_all_outputs=False`: `[last_output, *final_state]`."""
    outputs, last, state = _fused(
        cell, x, jit=jit, training=training, chunk_bytes=chunk_bytes, sequences=False, **prepare_kwargs
    )
    assert outputs is None
    return [last, *state]


def _grads(run, cell, x, init):
    """Runs `run()` under a tape; returns (results, grads of a loss over all results w.r.t. x, init, weights)."""
    with tf.GradientTape() as tape:
        tape.watch([x] + init)
        results = run()
        loss = sum(tf.reduce_sum(tf.square(r) + 0.3 * (k + 1) * r) for k, r in enumerate(results))
    sources = [x] + init + cell.trainable_weights
    return results, tape.gradient(loss, sources, unconnected_gradients="zero")


def _compare(mine, ref, label):
    (out_m, grad_m), (out_r, grad_r) = mine, ref
    assert len(out_m) == len(out_r), label
    for k, (a, b) in enumerate(zip(out_m, out_r)):
        _close(a, b, f"{label}: result {k}")
    for k, (a, b) in enumerate(zip(grad_m, grad_r)):
        _close(a, b, f"{label}: gradient {k}")


def _generic(cell, **options):
    """The generic reference: `StaticUnroll`, uncompiled (call it under `generic_only()`). Eager, it runs the
    generic step step by step without tracing a graph."""
    return ku.StaticUnroll(cell, jit_compile=False, **options)


def _data(kind, rng):
    x = tf.constant(rng.standard_normal((B, T, F)).astype("float32"))
    states = 2 if kind == "lstm" else 1
    init = [tf.constant(rng.standard_normal((B, H)).astype("float32") * 0.5) for _ in range(states)]
    return x, init


@pytest.fixture(scope="module")
def mask_references():
    """`get(kind, go_backwards)`: the data of `test_mask_go_backwards_initial_state_match_keras_and_generic`
    (the `rng` fixture's draws) with Keras' and the generic path's results, computed once for both kernels."""

    def compute(kind, go_backwards):
        rng = np.random.default_rng(0)
        x, init = _data(kind, rng)
        mask = rng.random((B, T)) > 0.35
        mask[1] = False  # a fully masked row keeps its initial state, emits zeros
        mask[2] = True
        keras_layer = _layer(kind, go_backwards=go_backwards)
        ref = _grads(lambda: keras_layer(x, mask=mask, initial_state=init), keras_layer.cell, x, init)
        generic_layer = _layer(kind)
        unroll = _generic(generic_layer.cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
        with testing.generic_only():
            generic = _grads(lambda: unroll(x, mask=mask, initial_state=init), generic_layer.cell, x, init)
        return x, init, mask, ref, generic

    return functools.cache(compute)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_mask_go_backwards_initial_state_match_keras_and_generic(kind, jit, mask_references):
    for go_backwards in (True,) if jit else (False, True):  # (XLA: one direction, to keep the file fast)
        x, init, mask, ref, generic = mask_references(kind, go_backwards)
        cell = _layer(kind).cell
        # Keras returns (outputs, *states); ours (outputs, last_output, *states): drop `last` for Keras.
        mine = _grads(
            lambda: _drop_last(_gated(cell, x, jit=jit, mask=mask, initial_state=init, go_backwards=go_backwards)),
            cell, x, init,
        )  # fmt: skip
        _compare(mine, ref, f"{kind} vs Keras, go_backwards={go_backwards}")
        _compare(mine, generic, f"{kind} vs generic, go_backwards={go_backwards}")


@pytest.fixture(scope="module")
def length_references():
    """`get(kind, lengths)`: the data of `test_sequence_length_and_early_stop_match_generic` (the `rng` fixture's
    draws) with the generic path's results, computed once for both kernels."""

    def compute(kind, lengths):
        x, init = _data(kind, np.random.default_rng(0))
        lengths = tf.constant(lengths)
        generic_layer = _layer(kind)
        unroll = _generic(generic_layer.cell, return_sequences=True, return_state=True)
        with testing.generic_only():
            generic = _grads(
                lambda: list(unroll(x, sequence_length=lengths, initial_state=init)), generic_layer.cell, x, init
            )
        return x, init, lengths, generic

    return functools.cache(compute)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_sequence_length_and_early_stop_match_generic(kind, jit, length_references):
    # max 6 = T (no early stop), then max 4 < T: the loop stops at step 4 and later outputs are zeros.
    for lengths in ((0, 1, T, 3), (0, 1, T - 2, 2)):
        x, init, lengths, generic = length_references(kind, lengths)
        cell = _layer(kind).cell
        full = _gated(cell, x, jit=jit, sequence_length=lengths, initial_state=init)
        np.testing.assert_array_equal(full[0].numpy()[1, 1:], 0.0)  # zeros after a row's end (TF1)
        np.testing.assert_array_equal(full[1].numpy()[0], 0.0)  # no valid step: last output 0
        mine = _grads(
            lambda: _drop_last(_gated(cell, x, jit=jit, sequence_length=lengths, initial_state=init)), cell, x, init
        )
        _compare(mine, generic, f"{kind}, lengths={lengths.numpy().tolist()}")
        if int(tf.reduce_max(lengths)) == T:
            continue
        last = _grads(lambda: _gated_last(cell, x, jit=jit, sequence_length=lengths, initial_state=init), cell, x, init)
        _compare(last, _grads(lambda: _gated(cell, x, jit=jit, sequence_length=lengths, initial_state=init)[1:],
                              cell, x, init), f"{kind}: return_sequences=False")  # fmt: skip


# Pairwise (6 cases, not the 12 of the full product): each kind runs both kernels and both rate settings, and
# each rate setting runs on both kernels.
@pairwise(kind=list(KINDS), rates={"dropout": (0.3, 0.0), "dropout+recurrent": (0.25, 0.35)}, jit=JITS)
def test_dropout_masks_match_keras_for_the_same_seed(kind, rates, jit, rng):
    x, init = _data(kind, rng)
    dropout, recurrent = rates
    options = dict(dropout=dropout, recurrent_dropout=recurrent)
    keras_layer = _layer(kind, return_sequences=False, **options)
    ref = _grads(lambda: keras_layer(x, initial_state=init, training=True), keras_layer.cell, x, init)
    generic_layer = _layer(kind, **options)
    unroll = _generic(generic_layer.cell, return_state=True)
    with testing.generic_only():
        generic = _grads(lambda: unroll(x, initial_state=init, training=True), generic_layer.cell, x, init)
    cell = _layer(kind, **options).cell
    mine = _grads(lambda: _gated_last(cell, x, jit=jit, training=True, initial_state=init), cell, x, init)
    # Keras' last output *is* the final h: compare (last, *states) one to one.
    _compare(mine, ref, f"{kind} vs Keras, rates={rates}")
    _compare(mine, generic, f"{kind} vs generic, rates={rates}")
    # The masks did something: without training (Keras' numbers, whatever the path) the result differs.
    inference = keras_layer(x, initial_state=init, training=False)
    assert not np.allclose(inference[0], mine[0][0], atol=1e-3)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_xla_passes_in_several_chunks_match_generic(kind):
    """A chunk budget of 3 steps (`chunk_bytes`): 13 steps run as 4 full chunks and a partial one, 12 steps
    as 4 full chunks, the inputs projected and back-propagated chunk by chunk. Masks with `go_backwards`;
    an early stop inside a chunk (`sequence_length`) with per-gate dropout masks; only the last output."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal((B, 13, F)).astype("float32"))
    init = [tf.constant(rng.standard_normal((B, H)).astype("float32") * 0.5) for _ in range(2 if kind == "lstm" else 1)]
    three_steps = 3 * B * (4 if kind == "lstm" else 3) * H * 4  # bytes of 3 steps' (B, G·H) float32 projection
    cases = [
        ("mask, go_backwards", 13, dict(mask=rng.random((B, 13)) > 0.3), True, {}),
        ("stop 9, dropout", 12, dict(sequence_length=tf.constant([9, 0, 5, 6])), False,
         dict(dropout=0.3, recurrent_dropout=0.25)),
    ]  # fmt: skip
    for label, steps, call, backwards, options in cases:
        xs, training = x[:, :steps], bool(options)
        generic_layer = _layer(kind, **options)
        unroll = ku.DynamicUnroll(
            generic_layer.cell, return_sequences=True, return_state=True, go_backwards=backwards, jit_compile=False
        )
        with testing.generic_only():
            generic = _grads(
                lambda: list(unroll(xs, initial_state=init, training=training, **call)), generic_layer.cell, xs, init
            )
        cell = _layer(kind, **options).cell  # the same seed: the same dropout masks
        run = lambda: _gated(  # noqa: E731
            cell,
            xs,
            jit=True,
            training=training,
            chunk_bytes=three_steps,
            initial_state=init,
            go_backwards=backwards,
            **call,
        )
        _compare(_grads(lambda: _drop_last(run()), cell, xs, init), generic, f"{kind}, {label}")
    cell, xs = _layer(kind).cell, x[:, :12]
    last = _grads(lambda: _gated_last(cell, xs, jit=True, chunk_bytes=three_steps, initial_state=init), cell, xs, init)
    expected = _grads(lambda: _gated(cell, xs, jit=False, initial_state=init)[1:], cell, xs, init)
    _compare(last, expected, f"{kind}: return_sequences=False, chunks against one uncompiled pass")


@pytest.mark.parametrize(
    "kind, activations",
    [
        ("lstm", {"activation": "relu", "recurrent_activation": "hard_sigmoid"}),
        ("gru", {"activation": "linear", "recurrent_activation": "hard_sigmoid"}),
        ("gru_reset_before", {"activation": "sigmoid", "recurrent_activation": "sigmoid"}),
    ],
)
def test_other_supported_activations_match_keras(kind, activations, rng):
    x, init = _data(kind, rng)
    keras_layer = _layer(kind, **activations)
    ref = _grads(lambda: keras_layer(x, initial_state=init), keras_layer.cell, x, init)
    cell = _layer(kind, **activations).cell
    assert cells.gated_family(cell) == kind.split("_")[0] and cells.mode_of(cell) is not None
    mine = _grads(lambda: _drop_last(_gated(cell, x, jit=False, initial_state=init)), cell, x, init)
    _compare(mine, ref, f"{kind} {activations}")


@pytest.fixture(scope="module")
def uncompiled_references():
    """`get(kind)`: `_data(kind)` (the `rng` fixture's draws) and the uncompiled kernel's results and gradients
    on them with `_layer(kind)`'s weights, computed once for the tests that compare a compiled call with them."""

    @functools.cache
    def get(kind):
        x, init = _data(kind, np.random.default_rng(0))
        cell = _layer(kind).cell
        return x, init, _grads(lambda: _gated(cell, x, jit=False, initial_state=init), cell, x, init)

    return get


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_jit_inside_tf_function_and_a_persistent_tape(kind, uncompiled_references):
    x, init, expected = uncompiled_references(kind)
    cell = _layer(kind).cell

    @tf.function(autograph=False)  # the kernel's own code, as the layers run it (not converted)
    def persistent():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x] + init)
            results = _gated(cell, x, jit=True, initial_state=init)
            loss = sum(tf.reduce_sum(tf.square(r) + 0.3 * (k + 1) * r) for k, r in enumerate(results))
            other = tf.reduce_sum(results[0])
        sources = [x] + init + cell.trainable_weights
        first = tape.gradient(loss, sources)
        second = tape.gradient(other, sources)  # a persistent tape answers twice
        return results, first, second

    results, first, second = persistent()
    _compare((results, first), expected, f"{kind}: XLA inside tf.function, persistent tape")
    assert all(g is not None for g in second)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_second_order_gradient_under_jit_raises_a_clear_error(kind, rng):
    x, init = _data(kind, rng)
    cell = _layer(kind).cell
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            # With the initial state: the compiled passes of the LSTM tests before (the same inputs) serve this call.
            loss = tf.reduce_sum(tf.square(_gated(cell, x, jit=True, initial_state=init)[1]))
        gx = inner.gradient(loss, x)
    with pytest.raises(NotImplementedError, match="first-order gradient only.*jit_compile=False"):
        outer.gradient(gx, x)


def test_gradient_of_a_function_traced_without_a_tape(uncompiled_references):
    """No tape while tracing: the lean forward keeps no gate values; the gradient recomputes them."""
    x, init, expected = uncompiled_references("lstm")
    cell = _layer("lstm").cell
    traced = tf.function(lambda x, h, c: _gated(cell, x, jit=True, initial_state=[h, c]), autograph=False)
    actual = _grads(lambda: traced(x, *init), cell, x, init)
    _compare(actual, expected, "traced without a tape")


@pytest.mark.parametrize(
    "policy, low, atol", [("mixed_float16", "float16", 5e-3), ("mixed_bfloat16", "bfloat16", 4e-2)]
)
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_mixed_precision_computes_in_low_precision(policy, low, atol, jit, uncompiled_references):
    x, init, (reference, _) = uncompiled_references("lstm")  # float32 numbers
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        layer = _layer("lstm")
        cell = layer.cell
        assert cell.kernel.dtype == "float32"
        x_low = tf.cast(x, low)
        with tf.GradientTape() as tape:
            results = _gated(cell, x_low, jit=jit, initial_state=[tf.cast(s, low) for s in init])
            loss = tf.reduce_sum(tf.cast(results[0], "float32"))
        grads = tape.gradient(loss, cell.trainable_weights)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert all(r.dtype == low for r in results)
    assert all(g is not None and g.dtype == "float32" for g in grads)
    for a, b in zip(results, reference):
        np.testing.assert_allclose(tf.cast(a, "float32"), b, atol=atol * 4)


# ------------------------------------------------------------------------------------- eligibility
def test_eligibility():
    assert cells.mode_of(keras.layers.LSTMCell(3)).family == "lstm"
    assert cells.mode_of(keras.layers.GRUCell(3, reset_after=False, recurrent_dropout=0.2)).family == "gru_rb"
    assert cells.mode_of(keras.layers.LSTMCell(3, activation="silu")) is None
    assert cells.mode_of(keras.layers.GRUCell(3, recurrent_activation="softsign")) is None
    assert cells.mode_of(keras.layers.SimpleRNNCell(3)).family == "simple_rnn"

    class OwnMaths(keras.layers.LSTMCell):
        def _compute_carry_and_output_fused(self, z, c_tm1):
            return super()._compute_carry_and_output_fused(z, c_tm1 * 0.5)

    assert cells.mode_of(OwnMaths(3)) is None

    def planned(cell, batch=2, **request):
        x = tf.zeros((batch, 4, 3))
        return plan.make_plan(cell, step.prepare(cell, x, time_major=False), plan.Request("dynamic", **request)).kernel

    assert planned(keras.layers.LSTMCell(3), jit_compile="auto") == "gated"
    assert planned(keras.layers.LSTMCell(3), jit_compile=False) == "generic"  # uncompiled it measured Keras' speed
    assert (
        planned(keras.layers.LSTMCell(256), batch=64, jit_compile=True) == "generic"
    )  # B·H·H = 2**22: Keras is as fast
    with testing.generic_only():
        assert planned(keras.layers.LSTMCell(3), jit_compile="auto") == "generic"


def test_errors_name_the_argument_and_value():
    cell = keras.layers.LSTMCell(3, activation="silu")
    x = tf.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"cannot take the fused recurrence.*Received: cell="):
        recurrence.fused_loop(cell, step.prepare(cell, x, time_major=False), step.DropoutMasks(), recurrence.Choices())
    with pytest.raises(ValueError, match=r"supports the activations.*Received: activation="):
        cells.make_mode("lstm", keras.activations.silu, keras.activations.sigmoid)
    with pytest.raises(ValueError, match=r"supports the activations.*hard_sigmoid.*Received: recurrent_activation="):
        cells.make_mode("gru", keras.activations.tanh, keras.activations.softsign)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lengths_that_change_every_call_match_the_generic_path(kind):
    """Eager DynamicUnroll calls pad T to a bucket before the XLA passes (a few compiles, not one per
    length); the padding never shows in outputs, states or gradients, with or without lengths."""
    make = (lambda: keras.layers.LSTMCell(H, seed=1)) if kind == "lstm" else (lambda: keras.layers.GRUCell(H, seed=1))
    cell = make()
    assert plan.make_plan(
        cell, step.prepare(cell, tf.zeros((B, 5, F)), time_major=False), plan.Request("dynamic", jit_compile="auto")
    ).choices.bucket_steps
    rng = np.random.default_rng(0)
    for steps, lengths in ((5, None), (13, np.array([13, 5, 0, 1]))):
        x = tf.constant(rng.standard_normal((B, steps, F)).astype("float32"))
        kwargs = {} if lengths is None else dict(sequence_length=lengths)
        results = []
        for generic in (False, True):
            with testing.generic_only() if generic else contextlib.nullcontext():
                unroll = ku.DynamicUnroll(
                    cell, return_sequences=True, return_state=True, jit_compile=not generic and "auto"
                )
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    out = unroll(x, **kwargs)
                    loss = sum(tf.reduce_sum(o * (i + 1.0)) for i, o in enumerate(out))
                results.append(
                    ([o.numpy() for o in out], [g.numpy() for g in tape.gradient(loss, [x] + cell.trainable_weights)])
                )
        (out_a, grad_a), (out_b, grad_b) = results
        for a, b in zip(out_a + grad_a, out_b + grad_b):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_inference_projects_inside_the_compiled_loop_and_matches_keras(kind, rng):
    """No tape: the compiled loop projects each step itself (`recurrence.inference_pass`). Outputs and states equal
    Keras' layer and the training path, with a mask, `sequence_length`, `go_backwards`, an initial state,
    both output forms, changing lengths (bucketed), and recurrent dropout while training."""
    x, init = _data(kind, rng)
    mask = rng.random((B, T)) > 0.35
    mask[1] = False
    for go_backwards in (False, True):
        keras_layer = _layer(kind, go_backwards=go_backwards)
        expected = keras_layer(x, mask=mask, initial_state=init)
        cell = _layer(kind).cell
        layer = ku.DynamicUnroll(cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
        traced = tf.function(lambda x, m, s: layer(x, mask=m, initial_state=s, training=False))  # not serving
        graph = traced.get_concrete_function(x, tf.constant(mask), init).graph.as_graph_def()
        outside = [n.op for n in graph.node]
        inside = [n.op for f in graph.library.function for n in f.node_def]
        assert "MatMul" not in outside and "MatMul" in inside  # no hoisted product: the steps project
        actual = traced(x, tf.constant(mask), init)
        assert len(tf.nest.flatten(actual)) == len(expected)
        for k, (a, b) in enumerate(zip(tf.nest.flatten(actual), expected)):
            _close(a, b, f"{kind}, go_backwards={go_backwards}: result {k}")
        with tf.GradientTape() as tape:  # the training path over the same weights: the same numbers
            tape.watch(x)
            recorded = layer(x, mask=mask, initial_state=init)
        for k, (a, b) in enumerate(zip(tf.nest.flatten(actual), tf.nest.flatten(recorded))):
            _close(a, b, f"{kind}: inference vs training path, result {k}")
    lengths = np.array([T, 2, 0, 4])
    cell = _layer(kind).cell
    last_only = ku.DynamicUnroll(cell, return_state=True)
    with testing.generic_only():
        expected = last_only(x, sequence_length=lengths, initial_state=init)
    actual = tf.function(lambda x: last_only(x, sequence_length=lengths, initial_state=init))(x)
    for k, (a, b) in enumerate(zip(actual, expected)):
        _close(a, b, f"{kind}, sequence_length: result {k}")
    for steps in (T, T - 1, 3):  # eager calls: lengths bucketed for XLA
        with testing.generic_only():
            expected = last_only(x[:, :steps], initial_state=init)
        for a, b in zip(last_only(x[:, :steps], initial_state=init), expected):
            _close(a, b, f"{kind}, eager T={steps}")
    dropped = _layer(kind, recurrent_dropout=0.3, seed=5).cell
    reference = _layer(kind, recurrent_dropout=0.3, seed=5).cell
    mine = ku.DynamicUnroll(dropped, return_sequences=True)(x, training=True)  # no tape: inference loop, masks
    with testing.generic_only():
        theirs = ku.DynamicUnroll(reference, return_sequences=True)(x, training=True)
    _close(mine, theirs, f"{kind}, recurrent dropout without a tape")


def test_inference_differentiated_later_matches_the_training_path(rng):
    """A function traced with no tape (the inference loop) and differentiated afterwards from outside."""
    x, init = _data("gru", rng)
    cell = _layer("gru").cell
    layer = ku.DynamicUnroll(cell, return_sequences=True, return_state=True)
    traced = tf.function(lambda x, h: layer(x, initial_state=[h], training=False))  # not a serving graph
    traced.get_concrete_function(x, init[0])  # traced here, outside any tape
    actual = _grads(lambda: list(traced(x, init[0])), cell, x, init)
    with testing.generic_only():
        expected = _grads(lambda: list(layer(x, initial_state=init)), cell, x, init)
    _compare(actual, expected, "differentiated after an inference trace")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_forward_mode_through_the_compiled_kernel_raises_a_clear_error(kind, rng):
    """A forward accumulator (no tape) must not take the inference loop, whose JVP would be missing: the
    compiled kernel raises a clear error; jit_compile=False gives the generic path's JVP."""
    x, _ = _data(kind, rng)
    cell = _layer(kind).cell

    def jvp(layer):
        with tf.autodiff.ForwardAccumulator(x, tf.ones_like(x)) as accumulator:
            outputs = layer(x)
        return accumulator.jvp(outputs)

    with pytest.raises(NotImplementedError, match="ForwardAccumulator.*jit_compile=False"):
        jvp(ku.DynamicUnroll(cell, jit_compile=True))
    uncompiled = ku.DynamicUnroll(cell, jit_compile=False)
    actual = jvp(uncompiled)
    # The generic path's JVP: the call planned the generic step, the plan `generic_only()` gives (running that
    # plan a second time under `generic_only()` traced the same function again and compared it with itself).
    taken = testing.plans(uncompiled)[-1]
    assert (taken["loop"], taken["kernel"], taken["compile"]) == ("while", "generic", "none")
    assert actual is not None and np.isfinite(actual).all() and np.abs(actual).max() > 0


# ------------------------------------------------------------------------ TF1's LSTMCell without extras
@pytest.mark.parametrize("go_backwards", [False, True])
def test_tf1_lstm_cell_without_peepholes_runs_the_fused_kernels_with_keras_numbers(go_backwards, rng):
    """`ku.tf1.LSTMCell(H)` computes `keras.layers.LSTMCell`'s maths, so `DynamicUnroll` plans the fused
    kernel and `StaticUnroll` the hoisted one (peepholes, clipping or a projection keep the generic step);
    with Keras' LSTM's weights both give Keras' outputs, states and gradients, with a mask and an initial state."""
    x, init = _data("lstm", rng)
    mask = tf.constant(rng.random((B, T)) > 0.3)
    keras_layer = _layer("lstm", go_backwards=go_backwards)
    weights = keras_layer.get_weights()

    def planned(cell, loop, **request):
        prepared = step.prepare(cell, x, time_major=False)
        return plan.make_plan(cell, prepared, plan.Request(loop, **request)).kernel

    assert planned(ku.tf1.LSTMCell(H), "dynamic", jit_compile="auto") == "gated"
    assert planned(ku.tf1.LSTMCell(H), "static") == "projected"
    for extra in (dict(use_peepholes=True), dict(cell_clip=1.0), dict(num_proj=2)):
        assert planned(ku.tf1.LSTMCell(H, **extra), "dynamic", jit_compile="auto") == "generic", extra
        assert planned(ku.tf1.LSTMCell(H, **extra), "static") == "generic", extra

    class OwnCall(ku.tf1.LSTMCell):
        def call(self, inputs, states, training=None):
            return super().call(inputs * 2.0, states, training)

    assert cells.gated_family(OwnCall(H)) is None

    expected = _grads(lambda: keras_layer(x, mask=mask, initial_state=init), keras_layer.cell, x, init)
    for layer_cls in (ku.DynamicUnroll, ku.StaticUnroll):
        cell = ku.tf1.LSTMCell(H)
        layer = layer_cls(cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
        layer.build(x.shape)
        layer.set_weights(weights)
        _compare(_grads(lambda: layer(x, mask=mask, initial_state=init), cell, x, init), expected, layer_cls.__name__)
