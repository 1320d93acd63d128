"""TF1 checkpoints of every `tf.nn.rnn_cell` cell, loaded by `load_tf1_weights`, give TF1's numbers.

A child process (tf-keras, graph mode; run as `TF_USE_LEGACY_KERAS=1 python tests/test_tf1_checkpoints.py
OUT_DIR`) builds one TF1 graph holding every case in its own variable scope: TF1's own cells
(`tf.compat.v1.nn.rnn_cell.*`), `dynamic_rnn` with `sequence_length` 0, 1 and T, `initial_state` as TF1
tuples, `time_major` once, a `tf.compat.v1.layers.dense` head; it takes the gradient of a scalar loss
with respect to every variable and saves the graph with `tf.compat.v1.train.Saver`. Here, in Keras 3,
the cells are filled from that checkpoint by `load_tf1_weights` only, rerun, and compared with TF1's
outputs, final states (in TF1's structure) and gradients (TF1's gradient layout mapped by hand, below).

`tf.compat.v1` no longer has contrib's `OutputProjectionWrapper`: the child restates it (an `RNNCell`
whose `call` runs the cell, then `concat`-free `output @ kernel + bias` with TF1's `get_variable`), so
TF1's own scoping names its variables (`.../output_projection_wrapper/<cell>/...`, `.../kernel`).
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, Dict

import numpy as np

B, T, F = 4, 3, 2
LENGTHS = np.array([0, 1, T, 2], np.int32)  # 0: the initial state comes back; 1; T; one in between

# name -> the TF1 cell (as text, evaluated in the child with `rc = tf.compat.v1.nn.rnn_cell`), the
# dynamic_rnn options, and whether a dense head follows.
CASES: Dict[str, Dict[str, Any]] = {
    "basic_lstm": dict(cell="rc.BasicLSTMCell(4)", lengths=True, initial_state=True, time_major=False),
    "basic_lstm_fb": dict(
        cell="rc.BasicLSTMCell(3, forget_bias=0.5)", lengths=False, initial_state=False, time_major=True
    ),
    "lstm": dict(cell="rc.LSTMCell(4)", lengths=True, initial_state=False, time_major=False),
    "lstm_full": dict(
        cell="rc.LSTMCell(4, use_peepholes=True, cell_clip=0.6, num_proj=3, proj_clip=0.35, forget_bias=0.7)",
        lengths=True,
        initial_state=True,
        time_major=False,
    ),
    "gru": dict(cell="rc.GRUCell(4)", lengths=True, initial_state=True, time_major=False),
    "multi": dict(
        cell="rc.MultiRNNCell([rc.BasicLSTMCell(4), rc.GRUCell(3), rc.BasicRNNCell(2)])",
        lengths=True,
        initial_state=True,
        time_major=False,
        dense=2,
    ),
    "wrapped": dict(
        cell="rc.MultiRNNCell([rc.DropoutWrapper(rc.BasicLSTMCell(3)), rc.ResidualWrapper(rc.GRUCell(3)),"
        " rc.DeviceWrapper(rc.BasicRNNCell(3), '/cpu:0'), OutputProjectionWrapper(rc.LSTMCell(4), 2)])",
        lengths=True,
        initial_state=False,
        time_major=False,
    ),
}


def main(out_dir: str) -> None:  # pragma: no cover - runs in the child process
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("needs TF_USE_LEGACY_KERAS=1 (TF1's rnn_cell lives in tf-keras)")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond: half the graph-building time
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell

    class OutputProjectionWrapper(rc.RNNCell):
        """contrib's wrapper (TF 1.15 `core_rnn_cell.py`), restated: the cell, then a linear map."""

        def __init__(self, cell, output_size):
            super().__init__()
            self._cell, self._output_size = cell, output_size

        @property
        def state_size(self):
            return self._cell.state_size

        @property
        def output_size(self):
            return self._output_size

        def call(self, inputs, state):
            output, new_state = self._cell(inputs, state)
            size = output.shape[-1]
            kernel = v1.get_variable("kernel", [size, self._output_size])
            bias = v1.get_variable("bias", [self._output_size], initializer=v1.zeros_initializer())
            return tf.matmul(output, kernel) + bias, new_state

    rng = np.random.default_rng(12)
    saved: Dict[str, Any] = {"x": rng.standard_normal((B, T, F)).astype(np.float32), "lengths": LENGTHS}
    fetches, losses = {}, []

    def random(name, shape, scale=1.0):
        value = (scale * rng.standard_normal(shape)).astype(np.float32)
        saved[name] = value
        return tf.constant(value)

    for index, (name, case) in enumerate(CASES.items()):
        with v1.variable_scope(name, initializer=v1.random_uniform_initializer(-0.7, 0.7, seed=index)):
            cell = eval(case["cell"], {"rc": rc, "OutputProjectionWrapper": OutputProjectionWrapper})
            kwargs: Dict[str, Any] = {"dtype": tf.float32, "time_major": case["time_major"]}
            if case["lengths"]:
                kwargs["sequence_length"] = tf.constant(LENGTHS)
            if case["initial_state"]:
                sizes = tf.nest.flatten(cell.state_size)
                flat = [random(f"{name}/initial_state/{i}", (B, size), 0.5) for i, size in enumerate(sizes)]
                kwargs["initial_state"] = tf.nest.pack_sequence_as(cell.state_size, flat)
            x = saved["x"].transpose(1, 0, 2) if case["time_major"] else saved["x"]
            outputs, state = v1.nn.dynamic_rnn(cell, tf.constant(x), **kwargs)
            fetches[f"{name}/outputs"] = outputs
            for i, tensor in enumerate(tf.nest.flatten(state)):
                fetches[f"{name}/state/{i}"] = tensor
            loss = tf.reduce_sum(outputs * random(f"{name}/r_outputs", outputs.shape))
            for i, tensor in enumerate(tf.nest.flatten(state)):
                loss += tf.reduce_sum(tensor * random(f"{name}/r_state/{i}", tensor.shape))
            if case.get("dense"):
                head = v1.layers.dense(outputs, case["dense"])
                fetches[f"{name}/head"] = head
                loss += tf.reduce_sum(head * random(f"{name}/r_head", head.shape))
            losses.append(loss)
    with v1.variable_scope("bidi", initializer=v1.random_uniform_initializer(-0.7, 0.7, seed=99)):
        (out_fw, out_bw), _ = v1.nn.bidirectional_dynamic_rnn(
            rc.BasicLSTMCell(3), rc.GRUCell(2), tf.constant(saved["x"]), dtype=tf.float32
        )
        fetches["bidi/outputs_fw"], fetches["bidi/outputs_bw"] = out_fw, out_bw
        losses.append(tf.reduce_sum(out_fw) + tf.reduce_sum(out_bw))
    with v1.variable_scope("bidi_len", initializer=v1.random_uniform_initializer(-0.7, 0.7, seed=98)):
        (out_fw, out_bw), (state_fw, state_bw) = v1.nn.bidirectional_dynamic_rnn(
            rc.BasicLSTMCell(3),
            rc.GRUCell(2),
            tf.constant(saved["x"]),
            sequence_length=tf.constant(LENGTHS),
            dtype=tf.float32,
        )
        fetches["bidi_len/outputs_fw"], fetches["bidi_len/outputs_bw"] = out_fw, out_bw
        fetches["bidi_len/state_fw_c"], fetches["bidi_len/state_fw_h"] = state_fw
        fetches["bidi_len/state_bw"] = state_bw
        losses.append(tf.reduce_sum(out_fw) + tf.reduce_sum(out_bw))
    variables = v1.trainable_variables()
    gradients = tf.gradients(tf.add_n(losses), variables)
    for variable, gradient in zip(variables, gradients):
        fetches[f"grad/{variable.op.name}"] = gradient
    # TF1 starts biases at zero (GRU gates at one): give every bias a random value, to test its layout.
    assigns = [v.assign(rng.uniform(-0.5, 0.5, v.shape).astype(np.float32)) for v in variables if "bias" in v.op.name]
    config = v1.ConfigProto()  # Grappler off: the graph runs as built (its rewrites cost more than they save here)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with v1.Session(config=config) as session:
        session.run(v1.global_variables_initializer())
        session.run(assigns)
        saved.update(session.run(fetches))
        saved["variables"] = np.array([v.op.name for v in variables])
        v1.train.Saver().save(session, os.path.join(out_dir, "model.ckpt"))
    np.savez(os.path.join(out_dir, "reference.npz"), **saved)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
    raise SystemExit(0)

# ----------------------------------------------------------------------------------- the tests
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import close, load_npz  # noqa: E402
from tf1_reference import run_tf1  # noqa: E402

import keras_unroll as ku  # noqa: E402

pytestmark = pytest.mark.subprocess
HAS_TF1 = hasattr(ku, "tf1")
needs_tf1 = pytest.mark.skipif(not HAS_TF1, reason="keras_unroll.tf1 is not in this build")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tf1_checkpoints")
    run_tf1([str(pathlib.Path(__file__).resolve()), str(out_dir)], timeout=300)
    data = load_npz(out_dir / "reference.npz")
    data["checkpoint"] = str(out_dir / "model.ckpt")
    return data


# TF1's gradient layout -> Keras', written out by hand (independent of keras_unroll.checkpoint).
def _lstm(a, h):
    return np.concatenate([a[..., :h], a[..., 2 * h : 3 * h], a[..., h : 2 * h], a[..., 3 * h :]], -1)


def _expected_grads(data, scope, kind, f, h, p=None):
    """{Keras attribute: gradient} for the cell at `scope` (TF1's names), converted to Keras' layout."""
    g = {name[len("grad/" + scope) + 1 :]: value for name, value in data.items() if name.startswith(f"grad/{scope}/")}
    if kind in ("dense", "projection"):  # only the scope's own variables, not a nested cell's
        g = {name: value for name, value in g.items() if "/" not in name}
    if kind == "rnn":
        return {"kernel": g["kernel"][:f], "recurrent_kernel": g["kernel"][f:], "bias": g["bias"]}
    if kind == "lstm":
        out = {
            "kernel": _lstm(g["kernel"][:f], h),
            "recurrent_kernel": _lstm(g["kernel"][f:], h),
            "bias": _lstm(g["bias"], h),
        }
        for name in ("w_i_diag", "w_f_diag", "w_o_diag"):
            if name in g:
                out[name] = g[name]
        if "projection/kernel" in g:
            out["projection_kernel"] = g["projection/kernel"]
        return out
    if kind == "gru":

        def zrh(gates, cand):
            return np.concatenate([gates[..., h:], gates[..., :h], cand], -1)

        return {
            "kernel": zrh(g["gates/kernel"][:f], g["candidate/kernel"][:f]),
            "recurrent_kernel": zrh(g["gates/kernel"][f:], g["candidate/kernel"][f:]),
            "bias": zrh(g["gates/bias"], g["candidate/bias"]),
        }
    if kind == "dense":
        return {"kernel": g["kernel"], "bias": g["bias"]}
    if kind == "projection":  # ku.tf1.OutputProjectionWrapper's own weights
        return {"projection_kernel": g["kernel"], "projection_bias": g["bias"]}
    raise AssertionError(kind)


def _keras_state_to_tf1(kinds, state):
    """Keras' state structure ([h, c] per LSTM, a list per stack) as TF1's flat order (c, h per LSTM)."""
    if len(kinds) == 1:
        state = [state]
    flat = []
    for kind, entry in zip(kinds, state):
        entry = list(entry) if isinstance(entry, (list, tuple)) else [entry]
        flat += [entry[1], entry[0]] if kind == "lstm" else entry
    return flat


def _tf1_state_to_keras(kinds, flat):
    state, i = [], 0
    for kind in kinds:
        if kind == "lstm":
            state.append([flat[i + 1], flat[i]])
            i += 2
        else:
            state.append(flat[i] if len(kinds) == 1 else [flat[i]])
            i += 1
    return state[0] if len(kinds) == 1 else state


def _tf1_structure(kinds, flat):
    """TF1's own structure: `LSTMStateTuple(c, h)` per LSTM, a tuple with one entry per layer for a stack."""
    state, i = [], 0
    for kind in kinds:
        if kind == "lstm":
            state.append(ku.tf1.LSTMStateTuple(flat[i], flat[i + 1]))
            i += 2
        else:
            state.append(flat[i])
            i += 1
    return state[0] if len(kinds) == 1 else tuple(state)


def _run_and_compare(data, name, cell, kinds, leaves, head=None, unroll="dynamic_rnn"):
    """Runs `cell` as the case did; compares outputs, final states and every weight's gradient with TF1.

    `ku.dynamic_rnn` takes and returns TF1's state structures; the layers take and return Keras' lists.
    `leaves`: [(keras layer, TF1 scope, kind, F, H)] for the gradient check.
    """
    case = CASES[name]
    x = data["x"].transpose(1, 0, 2) if case["time_major"] else data["x"]
    kwargs = {}
    if case["lengths"]:
        kwargs["sequence_length"] = data["lengths"]
    count = len([k for k in data if k.startswith(f"{name}/state/")])
    flat0 = [data[f"{name}/initial_state/{i}"] for i in range(count)] if case["initial_state"] else None
    with tf.GradientTape() as tape:
        if unroll == "dynamic_rnn":
            if flat0 is not None:
                kwargs["initial_state"] = _tf1_structure(kinds, flat0)
            outputs, state = ku.dynamic_rnn(cell, x, time_major=case["time_major"], **kwargs)
            expected = _tf1_structure(kinds, list(range(count)))
            tf.nest.assert_same_structure(state, expected)  # LSTMStateTuple(c, h), a tuple per stack
            if isinstance(expected, tuple):
                assert type(state) is type(expected)
            flat = tf.nest.flatten(state)
        else:
            if flat0 is not None:
                kwargs["initial_state"] = _tf1_state_to_keras(kinds, flat0)
            layer = getattr(ku, unroll)(
                cell, return_sequences=True, return_state=True, time_major=case["time_major"], jit_compile=False
            )
            outputs, *state = layer(x, **kwargs)
            state = state[0] if len(state) == 1 else state  # Keras' [output, *states], one entry per cell
            flat = _keras_state_to_tf1(kinds, state)
        loss = tf.reduce_sum(outputs * data[f"{name}/r_outputs"])
        for i, tensor in enumerate(flat):
            loss += tf.reduce_sum(tensor * data[f"{name}/r_state/{i}"])
        if head is not None:
            projected = head(outputs)
            loss += tf.reduce_sum(projected * data[f"{name}/r_head"])
    close(np.asarray(outputs), data[f"{name}/outputs"])
    assert len(flat) == count
    for i, tensor in enumerate(flat):
        close(np.asarray(tensor), data[f"{name}/state/{i}"])
    if head is not None:
        close(np.asarray(projected), data[f"{name}/head"])
    variables, expected = [], []
    for layer, scope, kind, f, h in leaves:
        for attribute, value in _expected_grads(data, scope, kind, f, h).items():
            variables.append(getattr(layer, attribute))
            expected.append((f"{scope}:{attribute}", value))
    every = cell.trainable_weights + (head.trainable_weights if head is not None else [])
    assert {id(v) for v in variables} == {id(w) for w in every}, "every weight's gradient is checked"
    grads = tape.gradient(loss, variables)
    for grad, (label, value) in zip(grads, expected):
        close(np.asarray(grad), value, label, atol=1e-5)


def test_the_child_wrote_tf1s_names(reference):
    names = set(reference["variables"].tolist())
    assert {
        "basic_lstm/rnn/basic_lstm_cell/kernel",
        "lstm/rnn/lstm_cell/kernel",
        "lstm_full/rnn/lstm_cell/w_f_diag",
        "lstm_full/rnn/lstm_cell/projection/kernel",
        "gru/rnn/gru_cell/gates/kernel",
        "gru/rnn/gru_cell/candidate/bias",
        "multi/rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "multi/rnn/multi_rnn_cell/cell_2/basic_rnn_cell/bias",
        "multi/dense/kernel",
        # Dropout/Residual/DeviceWrapper add no scope; contrib's OutputProjectionWrapper nests its cell.
        "wrapped/rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "wrapped/rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "wrapped/rnn/multi_rnn_cell/cell_3/output_projection_wrapper/lstm_cell/kernel",
        "wrapped/rnn/multi_rnn_cell/cell_3/output_projection_wrapper/kernel",
        "bidi/bidirectional_rnn/fw/basic_lstm_cell/kernel",
        "bidi/bidirectional_rnn/bw/gru_cell/gates/kernel",
    } <= names


# ------------------------------------------------------------------------------- Keras' own cells
@pytest.mark.parametrize("unroll", ["dynamic_rnn", "StaticUnroll"])
def test_basic_lstm_into_keras_lstm_cell(reference, unroll):
    cell = keras.layers.LSTMCell(4)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope="basic_lstm/rnn/basic_lstm_cell")
    _run_and_compare(
        reference, "basic_lstm", cell, ["lstm"], [(cell, "basic_lstm/rnn/basic_lstm_cell", "lstm", F, 4)], unroll=unroll
    )


def test_forget_bias_argument_and_time_major(reference):
    """TF1 added forget_bias=0.5 at run time: the Keras cell needs it folded in, or its numbers differ."""
    scope = "basic_lstm_fb/rnn/basic_lstm_cell"
    cell = keras.layers.LSTMCell(3)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope=scope, forget_bias=0.5)
    _run_and_compare(reference, "basic_lstm_fb", cell, ["lstm"], [(cell, scope, "lstm", F, 3)])
    wrong = keras.layers.LSTMCell(3)
    ku.load_tf1_weights(wrong, reference["checkpoint"], scope=scope)  # TF1's default 1.0: not this graph's
    outputs, _ = ku.dynamic_rnn(wrong, reference["x"].transpose(1, 0, 2), time_major=True)
    assert not np.allclose(np.asarray(outputs), reference["basic_lstm_fb/outputs"], atol=1e-3)


def test_plain_lstm_cell_into_keras_lstm_cell(reference):
    cell = keras.layers.LSTMCell(4)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope="lstm/rnn/lstm_cell")
    _run_and_compare(reference, "lstm", cell, ["lstm"], [(cell, "lstm/rnn/lstm_cell", "lstm", F, 4)])


def test_gru_into_keras_gru_cell_reset_before(reference):
    cell = keras.layers.GRUCell(4, reset_after=False)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope="gru/rnn/gru_cell")
    _run_and_compare(reference, "gru", cell, ["gru"], [(cell, "gru/rnn/gru_cell", "gru", F, 4)])


def _keras_multi():
    cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3, reset_after=False), keras.layers.SimpleRNNCell(2)]
    return keras.layers.StackedRNNCells(cells), cells


def _multi_leaves(cells, base="multi/rnn/multi_rnn_cell"):
    return [
        (cells[0], f"{base}/cell_0/basic_lstm_cell", "lstm", F, 4),
        (cells[1], f"{base}/cell_1/gru_cell", "gru", 4, 3),
        (cells[2], f"{base}/cell_2/basic_rnn_cell", "rnn", 3, 2),
    ]


@pytest.mark.parametrize("unroll", ["DynamicUnroll"])  # ku.tf1's stack runs dynamic_rnn below
def test_multi_rnn_cell_and_dense_head_into_a_stack(reference, unroll):
    stack, cells = _keras_multi()
    head = keras.layers.Dense(2)
    loaded = ku.load_tf1_weights(
        None, reference["checkpoint"], scopes={"multi/rnn/multi_rnn_cell": stack, "multi/dense": head}
    )
    assert set(loaded) == {"multi/rnn/multi_rnn_cell", "multi/dense"}
    assert len(loaded["multi/rnn/multi_rnn_cell"]) == 9 and len(loaded["multi/dense"]) == 2
    leaves = _multi_leaves(cells) + [(head, "multi/dense", "dense", 2, 2)]
    _run_and_compare(reference, "multi", stack, ["lstm", "gru", "rnn"], leaves, head=head, unroll=unroll)


def _model_head_outputs(reference, model):
    """The model's layers run as the TF1 case did (its lengths and initial state)."""
    flat0 = [reference[f"multi/initial_state/{i}"] for i in range(4)]
    sequences = model.layers[0](
        reference["x"],
        sequence_length=reference["lengths"],
        initial_state=[[flat0[1], flat0[0]], [flat0[2]], [flat0[3]]],
    )
    return np.asarray(model.layers[1](sequences))


def _model():
    stack, _ = _keras_multi()
    layers = [keras.Input((T, F)), ku.DynamicUnroll(stack, return_sequences=True, jit_compile=False)]
    return keras.Sequential(layers + [keras.layers.Dense(2)])


def test_whole_model_from_scopes(reference):
    """A Sequential model filled in one call: its layers give TF1's head outputs."""
    model = _model()
    ku.load_tf1_weights(
        model,
        reference["checkpoint"],
        scopes={"multi/rnn/multi_rnn_cell": model.layers[0], "multi/dense": model.layers[1]},
    )
    close(_model_head_outputs(reference, model), reference["multi/head"])


def test_whole_model_by_tf1s_default_names(reference, tmp_path):
    """A graph with one `dynamic_rnn` and a dense head, saved without outer scopes: no `scopes` needed."""
    source = tf.train.load_checkpoint(reference["checkpoint"])
    renamed = {
        name[len("multi/") :]: tf.Variable(source.get_tensor(name))
        for name in reference["variables"].tolist()
        if name.startswith("multi/")
    }
    prefix = tf.compat.v1.train.Saver(var_list=renamed).save(None, str(tmp_path / "model.ckpt"))
    model = _model()
    loaded = ku.load_tf1_weights(model, prefix)
    assert set(loaded) == {"rnn/multi_rnn_cell", "dense"}
    close(_model_head_outputs(reference, model), reference["multi/head"])
    # The reference checkpoint's scopes have a prefix: the default names are not there, and it says so.
    expected = (
        r"No MultiRNNCell under scope 'rnn/multi_rnn_cell'.*Scopes ending in 'rnn/multi_rnn_cell' in the "
        r"checkpoint: 'multi/rnn/multi_rnn_cell', 'wrapped/rnn/multi_rnn_cell'\. The checkpoint holds"
    )
    with pytest.raises(ValueError, match=expected):
        ku.load_tf1_weights(_model(), reference["checkpoint"])


def test_bidirectional_layer(reference):
    """TF1's `bidirectional_dynamic_rnn` (full-length rows) = Keras' `Bidirectional`, from `fw/`, `bw/`."""
    layer = keras.layers.Bidirectional(
        keras.layers.RNN(keras.layers.LSTMCell(3), return_sequences=True),
        backward_layer=keras.layers.RNN(
            keras.layers.GRUCell(2, reset_after=False), return_sequences=True, go_backwards=True
        ),
        merge_mode=None,
    )
    loaded = ku.load_tf1_weights(layer, reference["checkpoint"], scope="bidi/bidirectional_rnn")
    assert len(loaded) == 6
    forward, backward = layer(reference["x"])
    close(np.asarray(forward), reference["bidi/outputs_fw"])
    close(np.asarray(backward), reference["bidi/outputs_bw"])


def test_the_scope_around_the_cells_scope(reference):
    """`scope` may stop at the cell's parent: TF1's name for the cell is appended when it is there."""
    fw, bw = ku.tf1.BasicLSTMCell(3), ku.tf1.GRUCell(2)
    ku.load_tf1_weights(fw, reference["checkpoint"], scope="bidi/bidirectional_rnn/fw")
    ku.load_tf1_weights(bw, reference["checkpoint"], scope="bidi/bidirectional_rnn/bw")
    source = tf.train.load_checkpoint(reference["checkpoint"])
    tf1_kernel = source.get_tensor("bidi/bidirectional_rnn/bw/gru_cell/candidate/kernel")
    np.testing.assert_array_equal(bw.kernel.numpy()[:, 4:], tf1_kernel[:F])
    outputs, _ = ku.dynamic_rnn(fw, reference["x"])
    close(np.asarray(outputs), reference["bidi/outputs_fw"])
    stack = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(4), ku.tf1.GRUCell(3), ku.tf1.BasicRNNCell(2)])
    assert len(ku.load_tf1_weights(stack, reference["checkpoint"], scope="multi/rnn")) == 9


def test_tf1_cells_in_bidirectional_dynamic_rnn_with_lengths(reference):
    """TF1's `bidirectional_dynamic_rnn` with lengths 0, 1, T: its two cells, then `ku.bidirectional_dynamic_rnn`."""
    fw, bw = ku.tf1.BasicLSTMCell(3), ku.tf1.GRUCell(2)
    base = "bidi_len/bidirectional_rnn"
    ku.load_tf1_weights(None, reference["checkpoint"], scopes={f"{base}/fw": fw, f"{base}/bw": bw})
    (out_fw, out_bw), (state_fw, state_bw) = ku.bidirectional_dynamic_rnn(
        fw, bw, reference["x"], sequence_length=reference["lengths"]
    )
    for got, name in [
        (out_fw, "outputs_fw"),
        (out_bw, "outputs_bw"),
        (state_fw.c, "state_fw_c"),
        (state_fw.h, "state_fw_h"),
        (state_bw, "state_bw"),
    ]:
        close(np.asarray(got), reference[f"bidi_len/{name}"], name)


# ------------------------------------------------------------------------------------- ku.tf1 cells
@pytest.mark.parametrize("unroll", ["dynamic_rnn", "DynamicUnroll"])
def test_tf1_basic_lstm_cell(reference, unroll):
    cell = ku.tf1.BasicLSTMCell(4)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope="basic_lstm/rnn/basic_lstm_cell")
    _run_and_compare(
        reference, "basic_lstm", cell, ["lstm"], [(cell, "basic_lstm/rnn/basic_lstm_cell", "lstm", F, 4)], unroll=unroll
    )


def test_tf1_basic_lstm_cell_uses_its_own_forget_bias(reference):
    scope = "basic_lstm_fb/rnn/basic_lstm_cell"
    cell = ku.tf1.BasicLSTMCell(3, forget_bias=0.5)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope=scope)
    _run_and_compare(reference, "basic_lstm_fb", cell, ["lstm"], [(cell, scope, "lstm", F, 3)])


@pytest.mark.parametrize("unroll", ["dynamic_rnn", "StaticUnroll"])
def test_tf1_lstm_cell_with_peepholes_clips_and_projection(reference, unroll):
    scope = "lstm_full/rnn/lstm_cell"
    cell = ku.tf1.LSTMCell(4, use_peepholes=True, cell_clip=0.6, num_proj=3, proj_clip=0.35, forget_bias=0.7)
    loaded = ku.load_tf1_weights(cell, reference["checkpoint"], scope=scope)
    assert [w.shape for w in loaded] == [(F, 16), (3, 16), (16,), (4,), (4,), (4,), (4, 3)]
    _run_and_compare(reference, "lstm_full", cell, ["lstm"], [(cell, scope, "lstm", F, 4)], unroll=unroll)


def test_tf1_gru_cell(reference):
    cell = ku.tf1.GRUCell(4)
    ku.load_tf1_weights(cell, reference["checkpoint"], scope="gru/rnn/gru_cell")
    _run_and_compare(reference, "gru", cell, ["gru"], [(cell, "gru/rnn/gru_cell", "gru", F, 4)])


def test_tf1_multi_rnn_cell_and_dense(reference):
    cells = [ku.tf1.BasicLSTMCell(4), ku.tf1.GRUCell(3), ku.tf1.BasicRNNCell(2)]
    stack, head = ku.tf1.MultiRNNCell(cells), keras.layers.Dense(2)
    ku.load_tf1_weights(None, reference["checkpoint"], scopes={"multi/rnn/multi_rnn_cell": stack, "multi/dense": head})
    leaves = _multi_leaves(cells) + [(head, "multi/dense", "dense", 2, 2)]
    _run_and_compare(reference, "multi", stack, ["lstm", "gru", "rnn"], leaves, head=head)


@pytest.mark.parametrize("unroll", ["dynamic_rnn"])
def test_tf1_wrappers_in_a_stack(reference, unroll):
    """Dropout (keep 1), Residual and Device wrappers load through their cell; OutputProjectionWrapper also
    fills its own kernel and bias from contrib's nested scope."""
    base = "wrapped/rnn/multi_rnn_cell"
    lstm, gru, rnn, inner = ku.tf1.BasicLSTMCell(3), ku.tf1.GRUCell(3), ku.tf1.BasicRNNCell(3), ku.tf1.LSTMCell(4)
    projection = ku.tf1.OutputProjectionWrapper(inner, 2)
    stack = ku.tf1.MultiRNNCell(
        [
            ku.tf1.DropoutWrapper(lstm),
            ku.tf1.ResidualWrapper(gru),
            ku.tf1.DeviceWrapper(rnn, "/cpu:0"),
            projection,
        ]
    )
    ku.load_tf1_weights(stack, reference["checkpoint"], scope=base)
    leaves = [
        (lstm, f"{base}/cell_0/basic_lstm_cell", "lstm", F, 3),
        (gru, f"{base}/cell_1/gru_cell", "gru", 3, 3),
        (rnn, f"{base}/cell_2/basic_rnn_cell", "rnn", 3, 3),
        (inner, f"{base}/cell_3/output_projection_wrapper/lstm_cell", "lstm", 3, 4),
        (projection, f"{base}/cell_3/output_projection_wrapper", "projection", 4, 2),
    ]
    _run_and_compare(reference, "wrapped", stack, ["lstm", "gru", "rnn", "lstm"], leaves, unroll=unroll)
