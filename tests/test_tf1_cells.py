"""`ku.tf1`'s cells, wrappers and bidirectional functions give TF1's numbers, in TF1's state structures.

TF1 itself (tf-keras' `tf.compat.v1.nn.rnn_cell.*` with `tf.compat.v1.nn.dynamic_rnn` / `static_rnn` /
`bidirectional_dynamic_rnn` / `static_bidirectional_rnn`, graph mode) runs every case once in a child
process (`_tf1_child`, run from its own source). It saves each case's weights (set to random values), its
outputs and final states flattened in TF1's structure (with that structure described), and the gradients
of a random linear loss of all of them with respect to every weight. Here each case is rebuilt with
`ku.tf1`, TF1's weights are moved into the Keras layout by `tf1_to_keras` (the layout contract: kernels
split at `F`, LSTM gates `i, j, f, o` -> `i, f, c, o` with `forget_bias` folded into the `f` bias, the GRU's
`gates` `r, u` -> `z, r`), and outputs, states (and their structure) and gradients must match at 1e-5.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_unroll as ku

RTOL, ATOL = 1e-5, 1e-6
B, T, F, H, P = 4, 3, 2, 3, 2  # batch, time, features, units, projection (as in the child)


def _tf1_child(out_dir: str) -> None:  # pragma: no cover - runs in the TF1 child process
    """Builds every case with TF1's own cells and functions (graph mode), runs it and saves the results."""
    import json
    import os

    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell
    B, T, F, H, P = 4, 3, 2, 3, 2
    rng = np.random.default_rng(12)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = np.array([0, 1, T, 2], np.int32)  # 0 (the initial state comes back), 1, T, between
    init = {k: (0.5 * rng.standard_normal((B, n))).astype(np.float32) for k, n in [("c0", H), ("h0", H), ("p0", P), ("g0", H)]}
    saved = {"x": x, "lengths": lengths, **init}
    L = tf.constant(lengths)

    def const(name):
        return tf.constant(init[name])

    def lstm_state(c, h):
        return rc.LSTMStateTuple(const(c), const(h))

    def dyn(**kw):
        def run(cell):
            inputs = tf.constant(np.transpose(x, (1, 0, 2)) if kw.get("time_major") else x)
            return v1.nn.dynamic_rnn(cell, inputs, dtype=tf.float32, **kw)
        return run

    def stat(**kw):
        def run(cell):
            outputs, state = v1.nn.static_rnn(cell, tf.unstack(tf.constant(x), axis=1), dtype=tf.float32, **kw)
            return tf.stack(outputs, axis=1), state
        return run

    def describe(s):
        if isinstance(s, rc.LSTMStateTuple):
            return ["LSTMStateTuple", describe(s.c), describe(s.h)]
        if isinstance(s, (tuple, list)):
            return [describe(e) for e in s]
        return "T"

    one = lambda c: c[0]  # noqa: E731
    cases = {  # name -> (the leaf cells, how they are combined, how the cell is run)
        "basic_lstm": (lambda: [rc.BasicLSTMCell(H, forget_bias=0.7)], one,
                       dyn(sequence_length=L, initial_state=lstm_state("c0", "h0"))),
        "basic_lstm_static": (lambda: [rc.BasicLSTMCell(H)], one, stat()),
        "gru_time_major": (lambda: [rc.GRUCell(H)], one, dyn(sequence_length=L, time_major=True, initial_state=const("g0"))),
        "gru_static": (lambda: [rc.GRUCell(H)], one, stat(sequence_length=L)),
        "lstm_full": (lambda: [rc.LSTMCell(H, use_peepholes=True, cell_clip=0.5, num_proj=P, proj_clip=0.4, forget_bias=0.8)],
                      one, dyn(sequence_length=L, initial_state=lstm_state("c0", "p0"))),
        "lstm_plain_static": (lambda: [rc.LSTMCell(H)], one, stat(sequence_length=L, initial_state=lstm_state("c0", "h0"))),
        "lstm_proj_static": (lambda: [rc.LSTMCell(H, num_proj=P)], one, stat(sequence_length=L)),
        "multi": (lambda: [rc.BasicLSTMCell(H), rc.GRUCell(H), rc.LSTMCell(H, use_peepholes=True, num_proj=P)],
                  rc.MultiRNNCell,
                  dyn(sequence_length=L, initial_state=(lstm_state("c0", "h0"), const("g0"), lstm_state("c0", "p0")))),
        "multi_basic_rnn": (lambda: [rc.BasicRNNCell(H) for _ in range(3)], rc.MultiRNNCell, dyn()),
        "multi_lstm_static": (lambda: [rc.BasicLSTMCell(H) for _ in range(2)], rc.MultiRNNCell, stat(sequence_length=L)),
        "wrappers": (lambda: [rc.BasicLSTMCell(H), rc.GRUCell(H), rc.BasicRNNCell(H)],
                     lambda c: rc.MultiRNNCell([rc.DropoutWrapper(c[0], 1.0, 1.0, 1.0), rc.ResidualWrapper(c[1]),
                                                rc.DeviceWrapper(c[2], "/cpu:0")]),
                     dyn(sequence_length=L)),
    }
    fetch, leaves = {}, {}
    for case, (make_leaves, combine, run) in cases.items():
        with v1.variable_scope(case):
            leaves[case] = make_leaves()
            fetch[case] = run(combine(leaves[case]))
    # tf.contrib's OutputProjectionWrapper (not in tf.compat.v1): a linear map of each step's output inside
    # the loop, so TF1's dynamic_rnn zeroes the projected output past each row's length.
    with v1.variable_scope("projection"):
        cell = rc.BasicLSTMCell(H)
        out, state = v1.nn.dynamic_rnn(cell, tf.constant(x), sequence_length=L, dtype=tf.float32)
        w = v1.get_variable("output_projection_wrapper/kernel", [H, P])
        b = v1.get_variable("output_projection_wrapper/bias", [P])
        valid = tf.sequence_mask(L, T, dtype=tf.float32)[:, :, None]
        fetch["projection"] = ((tf.tensordot(out, w, 1) + b) * valid, state)
        leaves["projection"] = [cell, "projection/output_projection_wrapper"]
    with v1.variable_scope("bidirectional"):
        fw, bw = rc.BasicLSTMCell(H), rc.GRUCell(H)
        fetch["bidirectional"] = v1.nn.bidirectional_dynamic_rnn(
            fw, bw, tf.constant(x), sequence_length=L, initial_state_fw=lstm_state("c0", "h0"), dtype=tf.float32)
        leaves["bidirectional"] = [fw, bw]
    with v1.variable_scope("bidirectional_time_major"):
        fw, bw = rc.BasicRNNCell(H), rc.LSTMCell(H, use_peepholes=True)
        fetch["bidirectional_time_major"] = v1.nn.bidirectional_dynamic_rnn(
            fw, bw, tf.constant(np.transpose(x, (1, 0, 2))), sequence_length=L, initial_state_bw=lstm_state("c0", "h0"),
            dtype=tf.float32, time_major=True)
        leaves["bidirectional_time_major"] = [fw, bw]
    with v1.variable_scope("static_bidirectional"):
        fw, bw = rc.LSTMCell(H, num_proj=P), rc.GRUCell(H)
        outs, state_fw, state_bw = v1.nn.static_bidirectional_rnn(
            fw, bw, tf.unstack(tf.constant(x), axis=1), sequence_length=L, dtype=tf.float32)
        fetch["static_bidirectional"] = (tf.stack(outs, axis=1), state_fw, state_bw)
        leaves["static_bidirectional"] = [fw, bw]

    structures, grads = {}, {}
    for case, result in fetch.items():
        structures[case] = describe(result)
        flat = tf.nest.flatten(result)
        weights = [(0.1 + rng.standard_normal(t.shape.as_list())).astype(np.float32) for t in flat]
        for i, weight in enumerate(weights):
            saved[f"{case}/R{i}"] = weight
        loss = tf.add_n([tf.reduce_sum(t * weight) for t, weight in zip(flat, weights)])
        variables = v1.trainable_variables(scope=case + "/")
        grads[case] = dict(zip([v.op.name for v in variables], v1.gradients(loss, variables)))
        fetch[case] = flat
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        variables = v1.trainable_variables()  # random weights (TF1 starts the biases at 0 or 1)
        session.run([v.assign(rng.uniform(-0.6, 0.6, v.shape.as_list()).astype(np.float32)) for v in variables])
        for v, value in zip(variables, session.run(variables)):
            saved[f"var/{v.op.name}"] = value
        results, grad_values = session.run([fetch, grads])
    scopes = {}
    for case, flat in results.items():
        for i, value in enumerate(flat):
            saved[f"{case}/leaf{i}"] = value
        for name, value in grad_values[case].items():
            saved[f"grad/{name}"] = value
        scopes[case] = [
            leaf if isinstance(leaf, str) else leaf.variables[0].op.name.rsplit("/", 1)[0].replace("/gates", "")
            for leaf in leaves[case]
        ]
    saved["meta"] = np.array(json.dumps({"scopes": scopes, "structures": structures}))
    np.savez(os.path.join(out_dir, "tf1_cells.npz"), **saved)


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    """TF1's results for every case, from one child process (legacy Keras, graph mode)."""
    out_dir = tmp_path_factory.mktemp("tf1_cells")
    source = textwrap.dedent(inspect.getsource(_tf1_child)) + f"\n_tf1_child({str(out_dir)!r})\n"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"The TF1 child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    with np.load(os.path.join(out_dir, "tf1_cells.npz")) as archive:
        data = {key: archive[key] for key in archive.files}
    data["meta"] = json.loads(str(data["meta"]))
    return data


# ------------------------------------------------------------------------- the layout contract
def _lstm_gates(array: np.ndarray, units: int) -> np.ndarray:
    """TF1's LSTM gate columns `i, j, f, o` -> Keras' `i, f, c(=j), o` (last axis)."""
    i, j, f, o = np.split(array, 4, axis=-1)
    del units
    return np.concatenate([i, f, j, o], axis=-1)


def tf1_to_keras(cell, values, scope: str, fold_forget_bias: bool = True):
    """`[(keras_variable, array)]` for one leaf cell from TF1's `values[f"{scope}/{name}"]`.

    With `fold_forget_bias=False` the same map moves gradients (the forget bias is a constant shift)."""
    get = lambda name: values[f"{scope}/{name}"]  # noqa: E731
    if isinstance(cell, ku.tf1.OutputProjectionWrapper):
        return [(cell.projection_kernel, get("kernel")), (cell.projection_bias, get("bias"))]
    features = int(cell.kernel.shape[0])
    if isinstance(cell, (keras.layers.LSTMCell, ku.tf1.LSTMCell)):
        kernel, bias = _lstm_gates(get("kernel"), cell.units), _lstm_gates(get("bias"), cell.units)
        if fold_forget_bias:
            bias = bias.copy()
            bias[cell.units : 2 * cell.units] += getattr(cell, "forget_bias", 1.0)
        moved = [(cell.kernel, kernel[:features]), (cell.recurrent_kernel, kernel[features:]), (cell.bias, bias)]
        if getattr(cell, "use_peepholes", False):
            moved += [(getattr(cell, f"w_{g}_diag"), get(f"w_{g}_diag")) for g in "fio"]
        if getattr(cell, "num_proj", None):
            moved.append((cell.projection_kernel, get("projection/kernel")))
        return moved
    if isinstance(cell, keras.layers.GRUCell):
        gates, candidate = get("gates/kernel"), get("candidate/kernel")
        r, u = np.split(gates, 2, axis=1)
        kernel = np.concatenate([u, r, candidate], axis=1)  # Keras' z (TF1's u), r, h
        rb, ub = np.split(get("gates/bias"), 2)
        bias = np.concatenate([ub, rb, get("candidate/bias")])
        return [(cell.kernel, kernel[:features]), (cell.recurrent_kernel, kernel[features:]), (cell.bias, bias)]
    kernel = get("kernel")  # BasicRNNCell
    return [(cell.kernel, kernel[:features]), (cell.recurrent_kernel, kernel[features:]), (cell.bias, get("bias"))]


def describe(state):
    if isinstance(state, ku.tf1.LSTMStateTuple):
        return ["LSTMStateTuple", describe(state.c), describe(state.h)]
    if isinstance(state, (tuple, list)):
        return [describe(e) for e in state]
    return "T"


# --------------------------------------------------------------------------------- the cases
def _lstm_tuple(data, c, h):
    return ku.tf1.LSTMStateTuple(tf.constant(data[c]), tf.constant(data[h]))


def _static_list(cell, data, **kw):
    outputs, state = ku.static_rnn(cell, [data["x"][:, t] for t in range(T)], **kw)
    assert isinstance(outputs, list) and len(outputs) == T
    return tf.stack(outputs, axis=1), state


def _case(name, data):
    """`(run, leaves)`: `run()` gives the result in TF1's structure; `leaves` in the child's scope order."""
    x, lengths = data["x"], data["lengths"]
    tf1 = ku.tf1
    if name == "basic_lstm":
        cell = tf1.BasicLSTMCell(H, forget_bias=0.7)
        return lambda: ku.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=_lstm_tuple(data, "c0", "h0")), [cell]
    if name == "basic_lstm_static":
        cell = tf1.BasicLSTMCell(H)
        return lambda: _static_list(cell, data), [cell]
    if name == "gru_time_major":
        cell = tf1.GRUCell(H)
        x_tm = np.transpose(x, (1, 0, 2))
        return lambda: ku.dynamic_rnn(cell, x_tm, sequence_length=lengths, time_major=True, initial_state=data["g0"]), [cell]
    if name == "gru_static":
        cell = tf1.GRUCell(H)
        return lambda: _static_list(cell, data, sequence_length=lengths), [cell]
    if name == "lstm_full":
        cell = tf1.LSTMCell(H, use_peepholes=True, cell_clip=0.5, num_proj=P, proj_clip=0.4, forget_bias=0.8)
        return lambda: ku.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=_lstm_tuple(data, "c0", "p0")), [cell]
    if name == "lstm_plain_static":
        cell = tf1.LSTMCell(H)
        return lambda: _static_list(cell, data, sequence_length=lengths, initial_state=_lstm_tuple(data, "c0", "h0")), [cell]
    if name == "lstm_proj_static":
        cell = tf1.LSTMCell(H, num_proj=P)
        return lambda: _static_list(cell, data, sequence_length=lengths), [cell]
    if name == "multi":
        cells = [tf1.BasicLSTMCell(H), tf1.GRUCell(H), tf1.LSTMCell(H, use_peepholes=True, num_proj=P)]
        state = (_lstm_tuple(data, "c0", "h0"), tf.constant(data["g0"]), _lstm_tuple(data, "c0", "p0"))
        return lambda: ku.dynamic_rnn(tf1.MultiRNNCell(cells), x, sequence_length=lengths, initial_state=state), cells
    if name == "multi_basic_rnn":  # the book's line: a Python list of cells, as `ku.dynamic_rnn` takes it
        cells = [tf1.BasicRNNCell(H) for _ in range(3)]
        return lambda: ku.dynamic_rnn(cells, x), cells
    if name == "multi_lstm_static":  # Keras' own LSTMCell: the same maths, TF1's structure in the functions
        cells = [keras.layers.LSTMCell(H), keras.layers.LSTMCell(H)]
        stack = tf1.MultiRNNCell(cells)
        return lambda: _static_list(stack, data, sequence_length=lengths), cells
    if name == "wrappers":
        cells = [tf1.BasicLSTMCell(H), tf1.GRUCell(H), tf1.BasicRNNCell(H)]
        stack = tf1.MultiRNNCell(
            [tf1.DropoutWrapper(cells[0], 1.0, 1.0, 1.0), tf1.ResidualWrapper(cells[1]), tf1.DeviceWrapper(cells[2], "/CPU:0")]
        )
        # keep_prob 1 is the identity even while training
        return lambda: ku.dynamic_rnn(stack, x, sequence_length=lengths, training=True), cells
    if name == "projection":
        inner = tf1.BasicLSTMCell(H)
        cell = tf1.OutputProjectionWrapper(inner, P)
        return lambda: ku.dynamic_rnn(cell, x, sequence_length=lengths), [inner, cell]
    if name == "bidirectional":
        fw, bw = tf1.BasicLSTMCell(H), tf1.GRUCell(H)
        return lambda: ku.bidirectional_dynamic_rnn(
            fw, bw, x, sequence_length=lengths, initial_state_fw=_lstm_tuple(data, "c0", "h0")
        ), [fw, bw]
    if name == "bidirectional_time_major":
        fw, bw = tf1.BasicRNNCell(H), tf1.LSTMCell(H, use_peepholes=True)
        x_tm = np.transpose(x, (1, 0, 2))
        return lambda: ku.bidirectional_dynamic_rnn(
            fw, bw, x_tm, sequence_length=lengths, initial_state_bw=_lstm_tuple(data, "c0", "h0"), time_major=True
        ), [fw, bw]
    if name == "static_bidirectional":
        fw, bw = tf1.LSTMCell(H, num_proj=P), tf1.GRUCell(H)

        def run():
            outputs, state_fw, state_bw = ku.static_bidirectional_rnn(
                fw, bw, [x[:, t] for t in range(T)], sequence_length=lengths
            )
            return tf.stack(outputs, axis=1), state_fw, state_bw

        return run, [fw, bw]
    raise KeyError(name)


CASES = [
    "basic_lstm", "basic_lstm_static", "gru_time_major", "gru_static", "lstm_full", "lstm_plain_static",
    "lstm_proj_static", "multi", "multi_basic_rnn", "multi_lstm_static", "wrappers", "projection",
    "bidirectional", "bidirectional_time_major", "static_bidirectional",
]  # fmt: skip


def _moved(name, data):
    """The case's cells built and filled with TF1's weights; returns `(run, leaves, scopes)`."""
    run, leaves = _case(name, data)
    run()  # builds every cell (the weights are then replaced)
    scopes = data["meta"]["scopes"][name]
    assert len(scopes) == len(leaves)
    values = {key[4:]: value for key, value in data.items() if key.startswith("var/")}
    for leaf, scope in zip(leaves, scopes):
        for variable, value in tf1_to_keras(leaf, values, scope):
            assert tuple(variable.shape) == value.shape, (variable.name, scope)
            variable.assign(value)
    return run, leaves, scopes


@pytest.mark.subprocess
@pytest.mark.parametrize("name", CASES)
def test_outputs_states_and_gradients_match_tf1(name, tf1):
    run, leaves, scopes = _moved(name, tf1)
    variables, expected = [], []
    grads = {key[5:]: value for key, value in tf1.items() if key.startswith("grad/")}
    for leaf, scope in zip(leaves, scopes):
        for variable, value in tf1_to_keras(leaf, grads, scope, fold_forget_bias=False):
            variables.append(variable)
            expected.append(value)
    with tf.GradientTape() as tape:
        result = run()
        flat = tf.nest.flatten(result)
        loss = tf.add_n([tf.reduce_sum(t * tf1[f"{name}/R{i}"]) for i, t in enumerate(flat)])
    assert describe(result) == tf1["meta"]["structures"][name]  # TF1's structure, e.g. LSTMStateTuple(c, h)
    for i, tensor in enumerate(flat):
        np.testing.assert_allclose(tensor, tf1[f"{name}/leaf{i}"], rtol=RTOL, atol=ATOL, err_msg=f"{name} leaf {i}")
    for variable, got, want in zip(variables, tape.gradient(loss, variables), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} d/d{variable.path}")
