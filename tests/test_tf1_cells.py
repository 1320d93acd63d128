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

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import close
from tf1_reference import run_fn_in_tf1

import keras_unroll as ku
from keras_unroll import step as step_lib

B, T, F, H, P = 4, 3, 2, 3, 2  # batch, time, features, units, projection (as in the child)


def _tf1_child(out_dir: str) -> None:  # pragma: no cover - runs in the TF1 child process
    """Builds every case with TF1's own cells and functions (graph mode), runs it and saves the results."""
    import json
    import os

    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.disable_control_flow_v2()  # TF 1.x's while_loop and cond: half the graph-building time
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell
    B, T, F, H, P = 4, 3, 2, 3, 2
    rng = np.random.default_rng(12)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = np.array([0, 1, T, 2], np.int32)  # 0 (the initial state comes back), 1, T, between
    sizes = [("c0", H), ("h0", H), ("p0", P), ("g0", H)]
    init = {k: (0.5 * rng.standard_normal((B, n))).astype(np.float32) for k, n in sizes}
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
        "basic_lstm": (
            lambda: [rc.BasicLSTMCell(H, forget_bias=0.7)],
            one,
            dyn(sequence_length=L, initial_state=lstm_state("c0", "h0")),
        ),
        "basic_lstm_static": (lambda: [rc.BasicLSTMCell(H)], one, stat()),
        "gru_time_major": (
            lambda: [rc.GRUCell(H)],
            one,
            dyn(sequence_length=L, time_major=True, initial_state=const("g0")),
        ),
        "gru_static": (lambda: [rc.GRUCell(H)], one, stat(sequence_length=L)),
        "lstm_full": (
            lambda: [rc.LSTMCell(H, use_peepholes=True, cell_clip=0.5, num_proj=P, proj_clip=0.4, forget_bias=0.8)],
            one,
            dyn(sequence_length=L, initial_state=lstm_state("c0", "p0")),
        ),
        "lstm_plain_static": (
            lambda: [rc.LSTMCell(H)],
            one,
            stat(sequence_length=L, initial_state=lstm_state("c0", "h0")),
        ),
        "lstm_proj_static": (lambda: [rc.LSTMCell(H, num_proj=P)], one, stat(sequence_length=L)),
        "lstm_plain_dynamic": (
            lambda: [rc.LSTMCell(H, forget_bias=0.6)],
            one,
            dyn(sequence_length=L, initial_state=lstm_state("c0", "h0")),
        ),
        "multi": (
            lambda: [rc.BasicLSTMCell(H), rc.GRUCell(H), rc.LSTMCell(H, use_peepholes=True, num_proj=P)],
            rc.MultiRNNCell,
            dyn(sequence_length=L, initial_state=(lstm_state("c0", "h0"), const("g0"), lstm_state("c0", "p0"))),
        ),
        "multi_basic_rnn": (lambda: [rc.BasicRNNCell(H) for _ in range(3)], rc.MultiRNNCell, dyn()),
        "multi_lstm_static": (
            lambda: [rc.BasicLSTMCell(H) for _ in range(2)],
            rc.MultiRNNCell,
            stat(sequence_length=L),
        ),
        "wrappers": (
            lambda: [rc.BasicLSTMCell(H), rc.GRUCell(H), rc.BasicRNNCell(H)],
            lambda c: rc.MultiRNNCell(
                [rc.DropoutWrapper(c[0], 1.0, 1.0, 1.0), rc.ResidualWrapper(c[1]), rc.DeviceWrapper(c[2], "/cpu:0")]
            ),
            dyn(sequence_length=L),
        ),
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
            fw, bw, tf.constant(x), sequence_length=L, initial_state_fw=lstm_state("c0", "h0"), dtype=tf.float32
        )
        leaves["bidirectional"] = [fw, bw]
    with v1.variable_scope("bidirectional_time_major"):
        fw, bw = rc.BasicRNNCell(H), rc.LSTMCell(H, use_peepholes=True)
        fetch["bidirectional_time_major"] = v1.nn.bidirectional_dynamic_rnn(
            fw,
            bw,
            tf.constant(np.transpose(x, (1, 0, 2))),
            sequence_length=L,
            initial_state_bw=lstm_state("c0", "h0"),
            dtype=tf.float32,
            time_major=True,
        )
        leaves["bidirectional_time_major"] = [fw, bw]
    with v1.variable_scope("static_bidirectional"):
        fw, bw = rc.LSTMCell(H, num_proj=P), rc.GRUCell(H)
        outs, state_fw, state_bw = v1.nn.static_bidirectional_rnn(
            fw, bw, tf.unstack(tf.constant(x), axis=1), sequence_length=L, dtype=tf.float32
        )
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
    config = v1.ConfigProto()  # Grappler off: the graph runs as built (its rewrites cost more than they save here)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with v1.Session(config=config) as session:
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
def reference(tmp_path_factory):
    """TF1's results for every case, from one child process (legacy Keras, graph mode)."""
    out_dir = tmp_path_factory.mktemp("tf1_cells")
    return run_fn_in_tf1(_tf1_child, out_dir, "tf1_cells.npz")


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
    seq = {"sequence_length": lengths}
    tf1 = ku.tf1
    if name == "basic_lstm":
        cell = tf1.BasicLSTMCell(H, forget_bias=0.7)
        return lambda: ku.dynamic_rnn(cell, x, initial_state=_lstm_tuple(data, "c0", "h0"), **seq), [cell]
    if name == "basic_lstm_static":
        cell = tf1.BasicLSTMCell(H)
        return lambda: _static_list(cell, data), [cell]
    if name == "gru_time_major":
        cell = tf1.GRUCell(H)
        x_tm = np.transpose(x, (1, 0, 2))
        return lambda: ku.dynamic_rnn(cell, x_tm, time_major=True, initial_state=data["g0"], **seq), [cell]
    if name == "gru_static":
        cell = tf1.GRUCell(H)
        return lambda: _static_list(cell, data, sequence_length=lengths), [cell]
    if name == "lstm_full":
        cell = tf1.LSTMCell(H, use_peepholes=True, cell_clip=0.5, num_proj=P, proj_clip=0.4, forget_bias=0.8)
        return lambda: ku.dynamic_rnn(cell, x, initial_state=_lstm_tuple(data, "c0", "p0"), **seq), [cell]
    if name == "lstm_plain_static":
        cell = tf1.LSTMCell(H)
        return lambda: _static_list(cell, data, initial_state=_lstm_tuple(data, "c0", "h0"), **seq), [cell]
    if name == "lstm_proj_static":
        cell = tf1.LSTMCell(H, num_proj=P)
        return lambda: _static_list(cell, data, sequence_length=lengths), [cell]
    if name == "lstm_plain_dynamic":  # no peepholes, clip or projection: the fused LSTM kernel runs it
        cell = tf1.LSTMCell(H, forget_bias=0.6)
        return lambda: ku.dynamic_rnn(cell, x, initial_state=_lstm_tuple(data, "c0", "h0"), **seq), [cell]
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
            [
                tf1.DropoutWrapper(cells[0], 1.0, 1.0, 1.0),
                tf1.ResidualWrapper(cells[1]),
                tf1.DeviceWrapper(cells[2], "/CPU:0"),
            ]
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
    "lstm_proj_static", "lstm_plain_dynamic", "multi", "multi_basic_rnn", "multi_lstm_static", "wrappers", "projection",
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
def test_outputs_states_and_gradients_match_tf1(name, reference):
    run, leaves, scopes = _moved(name, reference)
    variables, expected = [], []
    grads = {key[5:]: value for key, value in reference.items() if key.startswith("grad/")}
    for leaf, scope in zip(leaves, scopes):
        for variable, value in tf1_to_keras(leaf, grads, scope, fold_forget_bias=False):
            variables.append(variable)
            expected.append(value)
    with tf.GradientTape() as tape:
        result = run()
        flat = tf.nest.flatten(result)
        loss = tf.add_n([tf.reduce_sum(t * reference[f"{name}/R{i}"]) for i, t in enumerate(flat)])
    assert describe(result) == reference["meta"]["structures"][name]  # TF1's structure, e.g. LSTMStateTuple(c, h)
    for i, tensor in enumerate(flat):
        close(tensor, reference[f"{name}/leaf{i}"], f"{name} leaf {i}")
    for variable, got, want in zip(variables, tape.gradient(loss, variables), expected):
        close(got, want, f"{name} d/d{variable.path}")


# ------------------------------------------------------------------- the three silent-wrong ports
@pytest.mark.subprocess
def test_concat_of_a_stacks_states_is_batch_by_total_units(reference):
    """The book's `tf.concat(axis=1, values=states)` over a list of cells: `(B, 3H)`, TF1's numbers."""
    run, _, _ = _moved("multi_basic_rnn", reference)
    _, states = run()
    assert isinstance(states, tuple) and len(states) == 3
    concat = tf.concat(axis=1, values=states)
    assert tuple(concat.shape) == (B, 3 * H)
    expected = np.concatenate([reference[f"multi_basic_rnn/leaf{i}"] for i in (1, 2, 3)], axis=1)
    close(concat, expected)


@pytest.mark.subprocess
def test_top_layers_h_is_states_last_entry_index_1(reference):
    """TF1's `states[-1][1]` is the top LSTM layer's `h` (Keras' own `LSTMCell`s, stacked): the last valid output."""
    run, _, _ = _moved("multi_lstm_static", reference)
    outputs, states = run()
    top_h = states[-1][1]
    close(top_h, reference["multi_lstm_static/leaf4"])  # (out, c1, h1, c2, h2)
    lengths = reference["lengths"]
    for row, length in enumerate(lengths):
        if length:
            close(top_h[row], outputs[row, length - 1])


@pytest.mark.subprocess
def test_lstm_state_tuple_initial_state_is_read_as_c_then_h(reference):
    """`initial_state=LSTMStateTuple(c0, h0)` gives TF1's numbers; the layer takes Keras' `[h0, c0]` for the same."""
    run, (cell,), _ = _moved("basic_lstm", reference)
    outputs, state = run()
    close(outputs, reference["basic_lstm/leaf0"])
    layer = ku.DynamicUnroll(cell, return_sequences=True, return_state=True)
    out, h, c = layer(
        reference["x"], initial_state=[reference["h0"], reference["c0"]], sequence_length=reference["lengths"]
    )
    close(out, reference["basic_lstm/leaf0"])
    close(c, reference["basic_lstm/leaf1"])  # TF1's flat order: c, h
    close(h, reference["basic_lstm/leaf2"])
    # Keras' own LSTMCell reads a plain list as Keras' [h, c], and an LSTMStateTuple as (c, h).
    keras_cell = keras.layers.LSTMCell(H)
    keras_cell.build((None, F))
    keras_cell.set_weights(cell.get_weights())
    as_list = ku.dynamic_rnn(keras_cell, reference["x"], initial_state=[reference["h0"], reference["c0"]])[1]
    as_tuple = ku.dynamic_rnn(
        keras_cell, reference["x"], initial_state=ku.tf1.LSTMStateTuple(reference["c0"], reference["h0"])
    )[1]
    close(as_list.c, as_tuple.c)


@pytest.mark.subprocess
@pytest.mark.parametrize("layer_cls", [ku.StaticUnroll, ku.DynamicUnroll, keras.layers.RNN])
def test_layers_keep_keras_flat_states_with_tf1_numbers(layer_cls, reference):
    """A stack in a layer: `[output, h1, c1, h2, h3, c3]` (Keras' order and nesting), TF1's values."""
    _, cells, _ = _moved("multi", reference)
    layer = layer_cls(ku.tf1.MultiRNNCell(cells), return_sequences=True, return_state=True)
    c0, h0, p0, g0 = (reference[k] for k in ("c0", "h0", "p0", "g0"))
    kwargs = {} if layer_cls is keras.layers.RNN else {"sequence_length": reference["lengths"]}
    mask = None if kwargs else np.arange(T)[None, :] < reference["lengths"][:, None]
    out, *states = layer(reference["x"], initial_state=[[h0, c0], g0, [p0, c0]], mask=mask, **kwargs)
    flat = tf.nest.flatten(states)
    want = [reference[f"multi/leaf{i}"] for i in range(6)]  # (outputs, c1, h1, g, c3, h3)
    for got, expected in zip(flat, [want[2], want[1], want[3], want[5], want[4]]):
        close(got, expected)
    if kwargs:  # Keras' RNN carries the last output through masked steps; `sequence_length` emits zeros
        close(out, want[0])


def test_state_conversions_both_ways():
    tf1 = ku.tf1
    h, c, g = (np.full((2, 3), v, np.float32) for v in (1.0, 2.0, 3.0))
    stack = tf1.MultiRNNCell([tf1.BasicLSTMCell(3), tf1.GRUCell(3)])
    state = tf1.to_tf1_state(stack, [[h, c], [g]])
    assert isinstance(state, tuple) and isinstance(state[0], tf1.LSTMStateTuple)
    assert (state[0].c[0, 0], state[0].h[0, 0], state[1][0, 0]) == (2.0, 1.0, 3.0)
    back = tf1.from_tf1_state(stack, state)
    assert [float(back[0][0][0, 0]), float(back[0][1][0, 0]), float(back[1][0, 0])] == [1.0, 2.0, 3.0]
    other = collections.namedtuple("LSTMStateTuple", ("c", "h"))  # e.g. tf-keras' own class
    assert float(tf1.from_tf1_state(keras.layers.LSTMCell(3), other(c, h))[0][0, 0]) == 1.0  # -> [h, c]
    assert float(tf1.from_tf1_state(keras.layers.LSTMCell(3), (h, c))[0][0, 0]) == 1.0  # Keras' order kept
    assert float(tf1.from_tf1_state(tf1.BasicLSTMCell(3), (c, h))[0][0, 0]) == 1.0  # TF1's (c, h) for tf1 cells
    flat = tf1.to_tf1_state(tf1.BasicLSTMCell(3, state_is_tuple=False), [h, c])  # TF1's deprecated concat
    assert tuple(flat.shape) == (2, 6) and float(flat[0, 0]) == 2.0
    split = tf1.from_tf1_state(tf1.BasicLSTMCell(3, state_is_tuple=False), flat)
    assert [float(split[0][0, 0]), float(split[1][0, 0])] == [1.0, 2.0]
    mixed = step_lib.lstm_state_tuples_to_keras([tf1.LSTMStateTuple(c, h), [g]])  # only the tuples are converted
    assert [float(mixed[0][0][0, 0]), float(mixed[0][1][0, 0]), float(mixed[1][0][0, 0])] == [1.0, 2.0, 3.0]
    zero = stack.zero_state(2, "float32")
    assert isinstance(zero[0], tf1.LSTMStateTuple) and tuple(zero[1].shape) == (2, 3)


def test_functions_on_keras_inputs_take_and_return_tf1_structures(rng):
    """`keras.Input` tensors (a functional model) get the same TF1 structures as arrays do."""
    x, c0, h0 = keras.Input((T, F)), keras.Input((H,)), keras.Input((H,))
    cells = [ku.tf1.BasicLSTMCell(H), ku.tf1.GRUCell(H)]
    outputs, states = ku.dynamic_rnn(cells, x, initial_state=(ku.tf1.LSTMStateTuple(c0, h0), h0))
    assert isinstance(states, tuple) and isinstance(states[0], ku.tf1.LSTMStateTuple)
    model = keras.Model([x, c0, h0], [outputs, states[0].c, states[0].h, states[1]])
    xv, cv, hv = (rng.standard_normal(shape).astype("float32") for shape in ((B, T, F), (B, H), (B, H)))
    expected_outputs, expected = ku.dynamic_rnn(cells, xv, initial_state=(ku.tf1.LSTMStateTuple(cv, hv), hv))
    for got, want in zip(model([xv, cv, hv]), [expected_outputs, expected[0].c, expected[0].h, expected[1]]):
        close(got, want)
    _, state = ku.static_rnn(ku.tf1.LSTMCell(H, num_proj=P), [keras.Input((F,)) for _ in range(T)])
    assert isinstance(state, ku.tf1.LSTMStateTuple) and tuple(state.h.shape) == (None, P)


# ------------------------------------------------------------------------------ DropoutWrapper
def _passthrough(features: int) -> ku.tf1.ResidualWrapper:
    """A cell whose output is its input (a residual around a cell with zero weights): shows the input mask."""
    zero = ku.tf1.BasicRNNCell(features, kernel_initializer="zeros", recurrent_initializer="zeros")
    return ku.tf1.ResidualWrapper(zero)


DROPOUT_RUNS = {
    "dynamic_rnn": lambda cell, x, training: ku.dynamic_rnn(cell, x, training=training)[0],
    "static_rnn": lambda cell, x, training: ku.static_rnn(cell, x, training=training)[0],
    "DynamicUnroll": lambda cell, x, training: ku.DynamicUnroll(cell, return_sequences=True)(x, training=training),
    "keras.RNN": lambda cell, x, training: keras.layers.RNN(cell, return_sequences=True)(x, training=training),
}


@pytest.mark.parametrize("variational", [False, True], ids=["per_step", "variational"])
@pytest.mark.parametrize("run", list(DROPOUT_RUNS))
def test_dropout_masks_per_step_or_per_sequence_scaled_and_only_in_training(run, variational):
    x = np.ones((32, 5, 32), np.float32)
    cell = ku.tf1.DropoutWrapper(_passthrough(32), input_keep_prob=0.5, variational_recurrent=variational, seed=3)
    out = np.asarray(DROPOUT_RUNS[run](cell, x, True))
    assert set(np.unique(out)) <= {0.0, 2.0}  # dropped, or kept and scaled by 1 / keep_prob
    assert (0.8 < out.mean() < 1.2) if not variational else (0.5 < out.mean() < 1.5)  # the expectation is kept
    same_every_step = np.all(out == out[:, :1])
    assert same_every_step == variational  # one mask per sequence, or a new one every step
    # TF1's variational masks have noise shape (1, size): one mask shared by every row of the batch
    assert np.all(out == out[:1]) == variational
    np.testing.assert_array_equal(DROPOUT_RUNS[run](cell, x, False), x)  # inference: the identity


@pytest.mark.parametrize("run", list(DROPOUT_RUNS))
def test_per_sequence_masks_reach_cells_inside_wrappers(run):
    """A variational DropoutWrapper, or a Keras cell's own `dropout`, inside another wrapper: one mask per
    sequence, a new one for the next sequence (no mask is left behind on a cell)."""
    x = np.ones((32, 5, 6), np.float32)
    variational = ku.tf1.DropoutWrapper(_passthrough(6), input_keep_prob=0.5, variational_recurrent=True, seed=4)
    keras_dropout = keras.layers.SimpleRNNCell(
        6, activation="linear", kernel_initializer="identity", recurrent_initializer="zeros", dropout=0.5, seed=5
    )
    for cell, values in [
        (ku.tf1.DeviceWrapper(variational, "/CPU:0"), {0.0, 2.0}),  # the dropped input
        (ku.tf1.ResidualWrapper(keras_dropout), {1.0, 3.0}),  # the input + the dropped input
    ]:
        first = np.asarray(DROPOUT_RUNS[run](cell, x, True))
        assert set(np.unique(first)) <= values and np.all(first == first[:, :1])
        second = np.asarray(DROPOUT_RUNS[run](cell, x, True))
        assert np.all(second == second[:, :1]) and not np.array_equal(first, second)


def test_state_dropout_drops_an_lstms_h_but_not_its_c():
    x = np.random.default_rng(0).standard_normal((64, 1, 3)).astype(np.float32)
    cell = ku.tf1.BasicLSTMCell(8)
    plain_out, plain = ku.dynamic_rnn(cell, x)
    wrapped = ku.tf1.DropoutWrapper(cell, state_keep_prob=0.5, output_keep_prob=0.25, seed=1)
    out, state = ku.dynamic_rnn(wrapped, x, training=True)
    np.testing.assert_allclose(state.c, plain.c, rtol=1e-6)  # TF1's default filter: c is never dropped
    h, ph = np.asarray(state.h), np.asarray(plain.h)
    kept = h != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(h[kept], 2.0 * ph[kept], rtol=1e-5)
    o, po = np.asarray(out[:, 0]), np.asarray(plain_out[:, 0])
    assert 0.1 < (o != 0).mean() < 0.4
    np.testing.assert_allclose(o[o != 0], 4.0 * po[o != 0], rtol=1e-5)


def test_keep_prob_one_is_the_identity_while_training():
    x = np.random.default_rng(1).standard_normal((4, 5, 3)).astype(np.float32)
    cell = ku.tf1.GRUCell(4)
    expected = ku.dynamic_rnn(cell, x)[0]
    np.testing.assert_array_equal(ku.dynamic_rnn(ku.tf1.DropoutWrapper(cell), x, training=True)[0], expected)


def test_dropout_trains_in_fit():
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            ku.DynamicUnroll(ku.tf1.DropoutWrapper(ku.tf1.BasicLSTMCell(4), 0.8, 0.8, 0.8, variational_recurrent=True)),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    history = model.fit(np.ones((8, 5, 3), "float32"), np.ones((8, 1), "float32"), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# ------------------------------------------------------------------------------ initialization
def test_initializers_follow_tf1():
    lstm = ku.tf1.BasicLSTMCell(40, forget_bias=0.5)
    lstm.build((None, 10))
    bias = np.asarray(lstm.bias)
    np.testing.assert_array_equal(bias, np.r_[np.zeros(40), np.full(40, 0.5), np.zeros(80)])  # i, f, c, o
    limit = np.sqrt(6.0 / (10 + 40 + 160))  # glorot over TF1's (F + H, 4H) kernel
    for weight in (lstm.kernel, lstm.recurrent_kernel):
        values = np.asarray(weight)
        assert np.abs(values).max() <= limit and np.abs(values).max() > 0.95 * limit
    gru = ku.tf1.GRUCell(40)
    gru.build((None, 10))
    np.testing.assert_array_equal(np.asarray(gru.bias), np.r_[np.ones(80), np.zeros(40)])  # z, r: 1.0; h: 0.0
    kernel = np.asarray(gru.kernel)
    assert np.abs(kernel[:, :80]).max() <= np.sqrt(6.0 / (50 + 80))
    assert np.abs(kernel[:, 80:]).max() > np.sqrt(6.0 / (50 + 80))  # the candidate's own, wider limit
    assert np.abs(kernel[:, 80:]).max() <= np.sqrt(6.0 / (50 + 40))
    full = ku.tf1.LSTMCell(6, use_peepholes=True, num_proj=3, forget_bias=2.0)
    full.build((None, 4))
    assert full.recurrent_kernel.shape == (3, 24) and full.projection_kernel.shape == (6, 3)
    np.testing.assert_array_equal(np.asarray(full.bias)[6:12], np.full(6, 2.0))


def test_basic_lstm_and_gru_keep_keras_call_for_the_fast_paths():
    """The loops' LSTM/GRU fast paths recognise `type(cell).call is keras.layers.LSTMCell.call`."""
    assert type(ku.tf1.BasicLSTMCell(3)).call is keras.layers.LSTMCell.call
    assert type(ku.tf1.GRUCell(3)).call is keras.layers.GRUCell.call
    assert ku.tf1.GRUCell(3).reset_after is False


def test_tf_activations_map_to_keras_ones():
    """TF1 code passes `tf.nn.relu` / `tf.tanh`: they become Keras' own (serializable, fast-path) functions."""
    assert ku.tf1.BasicLSTMCell(3, activation=tf.nn.relu).activation is keras.activations.relu
    assert ku.tf1.GRUCell(3, activation=tf.tanh).activation is keras.activations.tanh
    assert ku.tf1.LSTMCell(3, activation=tf.nn.tanh).get_config()["activation"] == "tanh"


# ------------------------------------------------------------------------------------- errors
def test_an_rnn_layer_is_not_a_cell():
    with pytest.raises(TypeError, match=r"not an RNN layer.*LSTMCell.*Received: cells\[1\]=LSTM layer"):
        ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), keras.layers.LSTM(4)])
    for wrapper in (ku.tf1.DropoutWrapper, ku.tf1.ResidualWrapper, lambda c: ku.tf1.OutputProjectionWrapper(c, 2)):
        with pytest.raises(TypeError, match=r"not an RNN layer.*Received: cell=GRU layer"):
            wrapper(keras.layers.GRU(3))
    with pytest.raises(TypeError, match=r"not an RNN layer.*Received: cell=DynamicUnroll layer"):
        ku.tf1.DeviceWrapper(ku.DynamicUnroll(3), "/CPU:0")
    with pytest.raises(TypeError, match=r"must be a Keras RNN cell.*Received: cell=3"):
        ku.tf1.DropoutWrapper(3)


def test_residual_sizes_must_match():
    with pytest.raises(ValueError, match=r"same size.*Received: input features=2, cell output_size=3"):
        ku.dynamic_rnn(ku.tf1.ResidualWrapper(ku.tf1.GRUCell(3)), np.ones((1, 2, 2), "float32"))


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
@pytest.mark.parametrize("name", ["input_keep_prob", "output_keep_prob", "state_keep_prob"])
def test_keep_probs_must_lie_in_zero_one(name, value):
    with pytest.raises(ValueError, match=rf"must be in \(0, 1\].*Received: {name}={value}"):
        ku.tf1.DropoutWrapper(ku.tf1.GRUCell(3), **{name: value})


def test_other_bad_arguments():
    with pytest.raises(TypeError, match=r"scalar tensor.*Received: input_keep_prob='0.5'"):
        ku.tf1.DropoutWrapper(ku.tf1.GRUCell(3), input_keep_prob="0.5")
    with pytest.raises(ValueError, match=r"needs `num_proj`.*Received: proj_clip=1.0, num_proj=None"):
        ku.tf1.LSTMCell(3, proj_clip=1.0)
    with pytest.raises(ValueError, match=r"must be >= 0.*Received: cell_clip=-1.0"):
        ku.tf1.LSTMCell(3, cell_clip=-1.0)
    with pytest.raises(TypeError, match=r"keras.layers.LSTMCell.*DropoutWrapper.*Received: dropout=0.2"):
        ku.tf1.BasicLSTMCell(3, dropout=0.2)
    with pytest.raises(ValueError, match=r"positive integer.*Received: num_units=0"):
        ku.tf1.GRUCell(0)
    with pytest.raises(TypeError, match=r"must be a bool.*Received: state_is_tuple=1"):
        ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3)], state_is_tuple=1)
    x, c0 = np.ones((1, 2, 3), "float32"), np.zeros((1, 4), "float32")
    with pytest.raises(ValueError, match=r"list is ambiguous.*LSTMStateTuple\(c=c, h=h\).*Received: initial_state="):
        ku.dynamic_rnn(ku.tf1.BasicLSTMCell(4), x, initial_state=[c0, c0])
    with pytest.raises(ValueError, match=r"list is ambiguous"):  # inside a stack too
        ku.static_rnn(ku.tf1.MultiRNNCell([ku.tf1.GRUCell(4), ku.tf1.LSTMCell(4)]), x, initial_state=(c0, [c0, c0]))
    shared = ku.tf1.BasicRNNCell(4)
    with pytest.warns(UserWarning, match="same object"):
        stack = ku.tf1.MultiRNNCell([shared, shared])
    with pytest.raises(ValueError, match=r"same object.*own cell.*Received: cells\[1\]="):
        ku.dynamic_rnn(stack, np.ones((1, 2, 3), "float32"))


# ------------------------------------------------------------------------ saving, Keras layers
def test_a_model_of_every_cell_saves_and_loads(tmp_path):
    tf1 = ku.tf1
    inputs = keras.Input((4, 3))
    y = ku.DynamicUnroll(tf1.ResidualWrapper(tf1.GRUCell(3)), return_sequences=True)(inputs)
    y = ku.StaticUnroll(tf1.BasicLSTMCell(4, forget_bias=0.5), return_sequences=True)(y)
    full_lstm = tf1.LSTMCell(5, use_peepholes=True, num_proj=3, cell_clip=2.0, proj_clip=1.0)
    y = keras.layers.RNN(full_lstm, return_sequences=True)(y)
    y = ku.DynamicUnroll(tf1.MultiRNNCell([tf1.GRUCell(4), tf1.BasicRNNCell(4)]), return_sequences=True)(y)
    y = keras.layers.Bidirectional(
        ku.DynamicUnroll(
            tf1.DropoutWrapper(tf1.BasicLSTMCell(4), 0.9, 0.9, 0.9, variational_recurrent=True, seed=2),
            return_sequences=True,
        )
    )(y)
    y = ku.StaticUnroll(tf1.OutputProjectionWrapper(tf1.GRUCell(4), 2), return_sequences=True)(y)
    y = keras.layers.Bidirectional(keras.layers.RNN(tf1.DeviceWrapper(tf1.BasicRNNCell(3), "/CPU:0")))(y)
    model = keras.Model(inputs, y)
    x = np.random.default_rng(2).standard_normal((2, 4, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "tf1_cells.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)
    assert loaded.layers[2].cell.forget_bias == 0.5
    lstm = loaded.layers[3].cell
    assert (lstm.use_peepholes, lstm.num_proj, lstm.cell_clip, lstm.proj_clip) == (True, 3, 2.0, 1.0)
    assert loaded.layers[5].forward_layer.cell.variational_recurrent
