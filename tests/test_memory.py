"""Memory strategies (`loops/checkpointed.py`): `swap_memory=True` and `recompute=` change where and how long the
backward pass keeps its states, never the numbers.

- Gradients (inputs, initial state, every weight) equal the plain loop's, rtol 1e-5, for `BasicRNNCell`
  (fused segments), `LSTMCell` and `GRUCell`, with masks, `sequence_length`, dropout and `initial_state`.
- With `swap_memory=True` the checkpoint ops are placed on `/CPU:0` (read from the graph).
- Through TensorFlow's BFC allocator (fresh process), recomputation shrinks a training step's activation
  bytes as designed.
"""

from __future__ import annotations

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from fork_server import run_forked
from helpers import close, layers, make_cell, pairwise_cases

import keras_unroll as ku
from keras_unroll import testing
from keras_unroll.loops import checkpointed as memory

B, T, F, H = 3, 7, 2, 4
# k=1 on the host; k=ceil(sqrt(7))=3 (segments 3+3+1); k=2 on the host (segments 2+2+2+1).
SETTINGS = [dict(swap_memory=True), dict(recompute="sqrt"), dict(recompute=2, swap_memory=True)]
MASK = np.array([[1, 1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 0]], bool)
LENGTHS = np.array([7, 0, 4], np.int32)


def _cell(kind, dropout):
    rates = dict(dropout=0.3, recurrent_dropout=0.2) if dropout else {}
    return make_cell(kind, H, **rates)


def _loss_and_grads(layer, x, h0, kwargs, training):
    """A loss that reads every output (sequence, each state); its gradients w.r.t. x, h0 and the weights."""
    seed_state = layer.cell.seed_generator.state
    seed_state.assign(tf.constant([7, 0], seed_state.dtype))  # same dropout masks in every run
    x = tf.constant(x)
    h0 = [tf.constant(s) for s in h0]
    with tf.GradientTape() as tape:
        tape.watch([x, *h0])
        outputs, *states = layer(x, initial_state=h0 or None, training=training, **kwargs)
        loss = tf.reduce_sum(tf.sin(outputs)) + sum(tf.reduce_sum(s * s) for s in states)
    grads = tape.gradient(loss, [x, *h0, *layer.cell.trainable_variables])
    return [outputs, *states], grads


CELL_KINDS = ["BasicRNNCell", "LSTMCell", "GRUCell"]
VALIDITIES = ["mask+dropout+initial_state", "mask+sequence_length"]


JITS = ("auto", False)
# A pairwise design over (cell, validity, setting, jit): every pair of values of any two axes runs once at least
# (every cell and every validity meets every setting and both jits, every setting runs compiled and uncompiled),
# 9 checkpointed layers (the full product: 36; each setting in each (cell, validity): 18). Grouped by (cell,
# validity): each test below compares its layers with one plain loop.
_DESIGN = pairwise_cases(
    {
        "cell": CELL_KINDS,
        "validity": VALIDITIES,
        "setting": {str(i): setting for i, setting in enumerate(SETTINGS)},
        "jit": list(JITS),
    }
)


def _settings_and_jits(cell_kind: str, validity: str):
    """The checkpointed layers (setting, jit_compile) the (cell, validity) test runs: its rows of `_DESIGN`."""
    return [(setting, jit) for _, (cell, valid, setting, jit) in _DESIGN if (cell, valid) == (cell_kind, validity)]


def test_every_pair_of_cell_validity_setting_and_jit_runs():
    runs = [(cell, validity, str(setting), jit) for cell in CELL_KINDS for validity in VALIDITIES
            for setting, jit in _settings_and_jits(cell, validity)]  # fmt: skip
    values = [CELL_KINDS, VALIDITIES, [str(s) for s in SETTINGS], list(JITS)]
    for a, b in itertools.combinations(range(4), 2):
        assert {(run[a], run[b]) for run in runs} == set(itertools.product(values[a], values[b])), (a, b)
    assert len(runs) == len(_DESIGN) < len(CELL_KINDS) * len(VALIDITIES) * len(SETTINGS)


@pytest.mark.parametrize("validity", VALIDITIES)
@pytest.mark.parametrize("cell_kind", CELL_KINDS)
def test_gradients_equal_the_plain_loop(cell_kind, validity, rng):
    dropout = "dropout" in validity
    cell = _cell(cell_kind, dropout)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    kwargs = {}
    if "mask" in validity:
        kwargs["mask"] = tf.constant(MASK)
    if "sequence_length" in validity:
        kwargs["sequence_length"] = tf.constant(LENGTHS)
    h0 = []
    if "initial_state" in validity:
        n_states = 2 if cell_kind == "LSTMCell" else 1
        h0 = [(0.5 * rng.standard_normal((B, H))).astype(np.float32) for _ in range(n_states)]
    common = dict(return_sequences=True, return_state=True)
    plain = ku.DynamicUnroll(cell, **common, jit_compile=False)
    expected_values, expected_grads = _loss_and_grads(plain, x, h0, kwargs, training=dropout)
    assert all(g is not None for g in expected_grads)
    # Segments on the fused recurrence's compiled passes (the default), and uncompiled (jit_compile=False:
    # SimpleRNN's fused kernel, the generic step for LSTM/GRU).
    simple = cell_kind == "BasicRNNCell"
    kernels = {"auto": "simple_rnn" if simple else "gated", False: "simple_rnn" if simple else "generic"}
    for setting, jit in _settings_and_jits(cell_kind, validity):
        layer = ku.DynamicUnroll(cell, **common, **setting, jit_compile=jit)  # the same cell: the same weights
        values, grads = _loss_and_grads(layer, x, h0, kwargs, training=dropout)
        taken = testing.plans(layer)[-1]
        assert (taken["loop"], taken["kernel"]) == ("checkpointed", kernels[jit])
        for actual, expected in zip(values + grads, expected_values + expected_grads):
            close(actual, expected)


@pytest.mark.parametrize(
    "setting", [dict(swap_memory=True), dict(recompute=50)], ids=["swap_memory", "recompute=50(>T)"]
)
def test_dynamic_rnn_gradients_with_lengths_and_initial_state(setting, rng):
    """The functional form, time-major, rows ending early (the loop stops at max(sequence_length) = 5)."""
    cell = ku.BasicRNNCell(H)
    x = tf.constant(rng.standard_normal((T, B, F)).astype(np.float32))
    h0 = tf.constant(rng.standard_normal((B, H)).astype(np.float32))
    lengths = tf.constant([5, 0, 3])

    def run(**options):
        with tf.GradientTape() as tape:
            tape.watch([x, h0])
            outputs, state = ku.dynamic_rnn(
                cell, x, sequence_length=lengths, initial_state=h0, time_major=True, **options
            )
            loss = tf.reduce_sum(tf.cos(outputs)) + tf.reduce_sum(state * state)
        return [outputs, state, *tape.gradient(loss, [x, h0, *cell.trainable_variables])]

    expected = run()
    actual = run(**setting)
    assert float(tf.reduce_sum(tf.abs(actual[0][5:]))) == 0.0  # zeros after the longest row, as TF1
    for a, e in zip(actual, expected):
        close(a, e)


def test_unknown_length_uses_a_computed_segment_length(rng):
    """T unknown while tracing: k = ceil(sqrt(T)) is computed in the graph (here k=4 for T=10)."""
    cell = keras.layers.GRUCell(H)
    plain = ku.DynamicUnroll(cell, return_sequences=True, jit_compile=False)
    recompute = ku.DynamicUnroll(cell, return_sequences=True, recompute="sqrt")
    x = tf.constant(rng.standard_normal((B, 10, F)).astype(np.float32))

    def grads_of(layer):
        @tf.function(input_signature=[tf.TensorSpec((None, None, F))])
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.sin(layer(x)))
            return tape.gradient(loss, [x, *cell.trainable_variables])

        return run(x)

    for a, e in zip(grads_of(recompute), grads_of(plain)):
        close(a, e)


def _graph_nodes(fn, *args):
    graph_def = fn.get_concrete_function(*args).graph.as_graph_def()
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


@pytest.mark.parametrize("swap_memory", [True, False])
def test_checkpoints_live_on_the_host_with_swap_memory(swap_memory):
    """The saved states are written and read by ops placed on /CPU:0, the lists holding them reserved
    there too; without `swap_memory` they carry no device (they stay with the computation)."""
    layer = ku.DynamicUnroll(ku.BasicRNNCell(H), swap_memory=swap_memory, recompute=2)
    x = tf.zeros((B, T, F))
    layer(x)

    @tf.function
    def train_grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_variables)

    nodes = _graph_nodes(train_grads, x)
    saves = [n for n in nodes if n.name.split("/")[-1].startswith(memory.SAVE_OP_NAME)]
    loads = [n for n in nodes if n.name.split("/")[-1].startswith(memory.LOAD_OP_NAME)]
    assert saves and loads  # forward saves, backward loads: both are in the training graph
    saved_lists = [n for n in nodes if n.op == "TensorListSetItem" and any(s.name in i for i in n.input for s in saves)]
    assert saved_lists
    expected = "/device:CPU:0" if swap_memory else ""
    assert {n.device for n in saves + loads + saved_lists} == {expected}


_MEMORY_CHILD = """
import json
from benchmarks.memory import RESERVE_MB, measure
for case in ["DynamicUnroll(jit_compile=False)", "DynamicUnroll(recompute='sqrt')", "DynamicUnroll(swap_memory=True)"]:
    print(json.dumps(measure(case, 400, 8, 4, 64, repeats=1, reserve_mb=RESERVE_MB)), flush=True)
"""


@pytest.mark.subprocess
def test_recompute_shrinks_activation_memory():
    """BFC allocator, one training step at T=400 (B=8, F=4, H=64), return_sequences=False. The plain graph
    loop keeps several (B, H) tensors per step; swap_memory one state per step (on the host: on a CPU-only
    machine that is the same allocator); recompute="sqrt" (k=20) 20 checkpoints plus one segment.

    The three cases run one after the other in one fresh process (`benchmarks.memory.measure`): each reads the
    allocator's peak during its own step, minus what was in use before it (an earlier case's weights included)."""
    done = run_forked(["-c", _MEMORY_CHILD], env={"TF_CPU_ALLOCATOR_USE_BFC": "true"}, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 3, done.stdout[-4000:]
    plain, recompute, swap = (r["activation_mb"] for r in results)
    states = 400 * 8 * 64 * 4 / 2**20  # one (B, H) state per step, all steps: 0.78 MB
    assert plain >= 2 * states  # autodiff keeps more than the states
    assert states <= swap <= plain / 2  # the states, not the per-step intermediates
    # Less than even one state per step. Measured on 2 cores: plain 2.40-2.95 MB (the peak depends on how the
    # executor schedules the backward loop), recompute 0.31-0.62 MB (0.31 in one
    # process as in three); a bound of plain / 4 failed once in CI.
    assert recompute <= states and recompute <= plain / 3


# ----------------------------------------------------------------------------------------- arguments
@layers
def test_constructor_and_config(layer_cls):
    """Both layers take the arguments (same constructor); only DynamicUnroll runs them."""
    plain = layer_cls(ku.BasicRNNCell(2))
    assert plain.get_config()["swap_memory"] is False and plain.get_config()["recompute"] is None
    if layer_cls is ku.StaticUnroll:
        with pytest.raises(ValueError, match=r"DynamicUnroll\(cell, recompute=\"sqrt\"\).*recompute='sqrt'"):
            layer_cls(ku.BasicRNNCell(2), recompute="sqrt")
        with pytest.raises(ValueError, match="Received: swap_memory=True"):
            layer_cls(ku.BasicRNNCell(2), swap_memory=True)
        return
    layer = layer_cls(ku.BasicRNNCell(2), swap_memory=True, recompute=4)
    config = layer.get_config()
    assert (config["swap_memory"], config["recompute"]) == (True, 4)
    clone = layer_cls.from_config(config)
    assert (clone.swap_memory, clone.recompute) == (True, 4)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(recompute="cube"), ValueError, r'"sqrt" or a positive int.*Received: recompute=\'cube\''),
        (dict(recompute=0), ValueError, "Received: recompute=0"),
        (dict(recompute=2.5), TypeError, "Received: recompute=2.5 of type float"),
        (dict(recompute=True), TypeError, "Received: recompute=True of type bool"),
        (dict(swap_memory="yes"), TypeError, "must be a bool.*Received: swap_memory='yes'"),
        (dict(swap_memory=True, jit_compile=True), ValueError, "Received: jit_compile=True, swap_memory=True"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ku.DynamicUnroll(ku.BasicRNNCell(2), **kwargs)


@pytest.mark.parametrize("setting", [dict(swap_memory=True), dict(recompute=2)], ids=["swap_memory", "recompute"])
def test_xla_compiled_training_is_refused_clearly(setting):
    """Inside `model.compile(jit_compile=True)` the strategies cannot compile; the error says what to do."""
    model = keras.Sequential(
        [keras.Input((4, 2)), ku.DynamicUnroll(ku.BasicRNNCell(3), **setting), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse", jit_compile=True)
    with pytest.raises(ValueError, match=r"inside an XLA-compiled function.*jit_compile=False.*Received: swap_memory="):
        model.fit(np.zeros((2, 4, 2), np.float32), np.zeros((2, 1), np.float32), epochs=1, verbose=0)


def test_dynamic_rnn_bad_recompute():
    with pytest.raises(ValueError, match="Received: recompute=-1"):
        ku.dynamic_rnn(ku.BasicRNNCell(2), np.zeros((1, 3, 2), np.float32), recompute=-1)


def test_segment_length():
    assert [memory.segment_length(r, 5000) for r in (None, "sqrt", 7)] == [1, 71, 7]
    assert int(memory.segment_length("sqrt", tf.constant(10))) == 4


def test_simple_rnn_segments_of_large_steps_run_uncompiled_and_match(rng):
    # From the step size where the compiled SimpleRNN kernel runs its backward loop uncompiled
    # (`Tuning.uncompiled_backward_min_macs`), `recompute=` segments run the whole fused kernel uncompiled: as fast
    # at 32·2000·8·256 and about one `T·B·F` copy less (docs/memory.md). Below it, the compiled passes.
    from keras_unroll import plan, step

    cell = make_cell("BasicRNNCell", H)
    cell.build((None, F))
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    prepared = step.prepare(cell, tf.constant(x), time_major=False)
    request = plan.Request("dynamic", training=True, jit_compile="auto", recompute="sqrt")
    large = testing.Tuning(uncompiled_backward_min_macs=0)
    assert plan.make_plan(cell, prepared, request, testing.Tuning()).choices.jit
    assert not plan.make_plan(cell, prepared, request, large).choices.jit
    plain = ku.DynamicUnroll(cell, return_sequences=True, return_state=True, jit_compile=False)
    expected = _loss_and_grads(plain, x, [], {"mask": tf.constant(MASK)}, training=False)
    with testing.use_tuning(large):
        layer = ku.DynamicUnroll(cell, return_sequences=True, return_state=True, recompute="sqrt")
        values, grads = _loss_and_grads(layer, x, [], {"mask": tf.constant(MASK)}, training=False)
    for actual, wanted in zip(values + grads, expected[0] + expected[1]):
        close(actual, wanted)
