"""`ku.tf1` cells called as TF1 code calls them: TF1's state structures, dtypes and checkpoints (issue #21).

TF1 itself (tf-keras' `tf.compat.v1.nn.rnn_cell.*`, graph mode) runs each direct cell call once in a child
process with random weights (non-zero biases), states with `c != h`, and float64 where the case says so;
here the same cells are rebuilt with `ku.tf1`, TF1's weights are moved into Keras' layout
(`test_tf1_cells.tf1_to_keras`), and the results and their structures must be TF1's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_tf1_cells import describe, tf1_to_keras
from tf1_reference import run_fn_in_tf1

import keras_unroll as ku

B, F = 2, 3


def _tf1_child(out_dir: str) -> None:  # pragma: no cover - runs in the TF1 child process
    """Direct calls of TF1's cells (graph mode), their state sizes and zero states; saves everything."""
    import json
    import os

    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell
    B, F = 2, 3
    rng = np.random.default_rng(21)
    data = {
        "x": rng.standard_normal((B, F)),
        "c0": 0.5 * rng.standard_normal((B, 4)),
        "h0": 0.5 * rng.standard_normal((B, 4)),
        "c1": 0.5 * rng.standard_normal((B, 4)),
        "h1": 0.5 * rng.standard_normal((B, 4)),
        "p0": 0.5 * rng.standard_normal((B, 3)),
        "g0": 0.5 * rng.standard_normal((B, 3)),
        "g5": 0.5 * rng.standard_normal((B, 5)),
        "xs": rng.standard_normal((8, 5, F)),
    }
    data = {k: v.astype(np.float32) for k, v in data.items()}
    data["x64"], data["g64"] = data["x"].astype(np.float64), data["g5"].astype(np.float64)

    def c(name):
        return tf.constant(data[name])

    def lstm(cn, hn):
        return rc.LSTMStateTuple(c(cn), c(hn))

    def describe(s):
        if isinstance(s, rc.LSTMStateTuple):
            return ["LSTMStateTuple", describe(s.c), describe(s.h)]
        if isinstance(s, (tuple, list)):
            return [describe(e) for e in s]
        return "T"

    cases = {  # name -> (make the leaf cells, combine them, the state given, the input)
        "lstm": (lambda: [rc.BasicLSTMCell(4, forget_bias=0.7)], lambda cells: cells[0], lambda: lstm("c0", "h0"), "x"),
        "lstm_full": (
            lambda: [rc.LSTMCell(4, use_peepholes=True, num_proj=3, cell_clip=0.9)],
            lambda cells: cells[0],
            lambda: lstm("c0", "p0"),
            "x",
        ),
        "lstm_concat": (
            lambda: [rc.BasicLSTMCell(4, state_is_tuple=False)],
            lambda cells: cells[0],
            lambda: tf.concat([c("c0"), c("h0")], 1),
            "x",
        ),
        "multi": (
            lambda: [rc.BasicLSTMCell(4), rc.GRUCell(3)],
            rc.MultiRNNCell,
            lambda: (lstm("c0", "h0"), c("g0")),
            "x",
        ),
        "multi_plain_tuples": (
            lambda: [rc.BasicLSTMCell(4), rc.BasicLSTMCell(4)],
            rc.MultiRNNCell,
            lambda: ((c("c0"), c("h0")), (c("c1"), c("h1"))),
            "x",
        ),
        "multi_concat": (
            lambda: [rc.BasicLSTMCell(4, state_is_tuple=False), rc.GRUCell(3)],
            lambda cells: rc.MultiRNNCell(cells, state_is_tuple=False),
            lambda: tf.concat([c("c0"), c("h0"), c("g0")], 1),
            "x",
        ),
        "wrapped": (
            lambda: [rc.LSTMCell(4, num_proj=3)],
            lambda cells: rc.DropoutWrapper(rc.ResidualWrapper(cells[0]), 1.0, 1.0, 1.0),
            lambda: lstm("c0", "p0"),
            "p0",
        ),
        "gru64": (lambda: [rc.GRUCell(5)], lambda cells: cells[0], lambda: c("g64"), "x64"),
    }
    fetch, leaves, meta = {}, {}, {"structures": {}, "dtypes": {}}
    for case, (make, combine, state, inputs) in cases.items():
        with v1.variable_scope(case):
            leaves[case] = make()
            fetch[case] = combine(leaves[case])(c(inputs), state())
            meta["structures"][case] = describe(fetch[case])
            meta["dtypes"][case] = fetch[case][0].dtype.name
    stack = rc.MultiRNNCell([rc.BasicLSTMCell(4), rc.LSTMCell(5, num_proj=3), rc.GRUCell(2)])
    meta["state_size"] = repr(stack.state_size)
    meta["zero_state"] = describe(stack.zero_state(B, tf.float32))
    flat_stack = rc.MultiRNNCell([rc.BasicLSTMCell(4, state_is_tuple=False), rc.GRUCell(2)], state_is_tuple=False)
    meta["concat_state_size"] = flat_stack.state_size
    meta["dropout_zero_state"] = describe(rc.DropoutWrapper(rc.BasicLSTMCell(4)).zero_state(B, tf.float32))
    with v1.variable_scope("variational"):
        cell = rc.DropoutWrapper(
            rc.BasicLSTMCell(4),
            input_keep_prob=0.5,
            output_keep_prob=0.5,
            variational_recurrent=True,
            input_size=F,
            dtype=tf.float32,
            seed=1,
        )
        fetch["variational"] = v1.nn.dynamic_rnn(cell, c("xs"), dtype=tf.float32)
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        variables = v1.trainable_variables()  # random weights, biases too
        session.run(
            [v.assign(rng.uniform(-0.6, 0.6, v.shape.as_list()).astype(v.dtype.as_numpy_dtype)) for v in variables]
        )
        saved = dict(data)
        for v, value in zip(variables, session.run(variables)):
            saved[f"var/{v.op.name}"] = value
        results = session.run(fetch)
    for case, result in results.items():
        for i, value in enumerate(tf.nest.flatten(result)):
            saved[f"{case}/leaf{i}"] = value
    meta["scopes"] = {
        case: [leaf.variables[0].op.name.rsplit("/", 1)[0].replace("/gates", "") for leaf in cells]
        for case, cells in leaves.items()
    }
    outputs = results["variational"][0]  # (8, 5, 4): TF1's variational output mask is shared by the batch
    meta["variational_rows_share_mask"] = bool(np.all((outputs != 0) == (outputs[:1] != 0)))
    meta["variational_steps_share_mask"] = bool(np.all((outputs != 0) == (outputs[:, :1] != 0)))
    saved["meta"] = np.array(json.dumps(meta))
    np.savez(os.path.join(out_dir, "tf1_semantics.npz"), **saved)


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    """TF1's results, from one child process (legacy Keras, graph mode)."""
    out_dir = tmp_path_factory.mktemp("tf1_semantics")
    return run_fn_in_tf1(_tf1_child, out_dir, "tf1_semantics.npz")


def _case(name, d):
    """`(cell, leaves, inputs, state)`: the case built with `ku.tf1`, the state in TF1's structure."""
    t1 = ku.tf1

    def lstm(cn, hn):
        return t1.LSTMStateTuple(tf.constant(d[cn]), tf.constant(d[hn]))

    if name == "lstm":
        leaves = [t1.BasicLSTMCell(4, forget_bias=0.7)]
        return leaves[0], leaves, d["x"], lstm("c0", "h0")
    if name == "lstm_full":
        leaves = [t1.LSTMCell(4, use_peepholes=True, num_proj=3, cell_clip=0.9)]
        return leaves[0], leaves, d["x"], lstm("c0", "p0")
    if name == "lstm_concat":
        leaves = [t1.BasicLSTMCell(4, state_is_tuple=False)]
        return leaves[0], leaves, d["x"], tf.concat([d["c0"], d["h0"]], 1)
    if name == "multi":
        leaves = [t1.BasicLSTMCell(4), t1.GRUCell(3)]
        return t1.MultiRNNCell(leaves), leaves, d["x"], (lstm("c0", "h0"), tf.constant(d["g0"]))
    if name == "multi_plain_tuples":  # inside a stack, a plain pair is TF1's (c, h)
        leaves = [t1.BasicLSTMCell(4), t1.BasicLSTMCell(4)]
        state = ((tf.constant(d["c0"]), tf.constant(d["h0"])), (tf.constant(d["c1"]), tf.constant(d["h1"])))
        return t1.MultiRNNCell(leaves), leaves, d["x"], state
    if name == "multi_concat":
        leaves = [t1.BasicLSTMCell(4, state_is_tuple=False), t1.GRUCell(3)]
        state = tf.concat([d["c0"], d["h0"], d["g0"]], 1)
        return t1.MultiRNNCell(leaves, state_is_tuple=False), leaves, d["x"], state
    if name == "wrapped":
        leaves = [t1.LSTMCell(4, num_proj=3)]
        cell = t1.DropoutWrapper(t1.ResidualWrapper(leaves[0]), 1.0, 1.0, 1.0)
        return cell, leaves, d["p0"], lstm("c0", "p0")
    if name == "gru64":
        leaves = [t1.GRUCell(5)]
        return leaves[0], leaves, d["x64"], tf.constant(d["g64"])
    raise KeyError(name)


CALLS = ["lstm", "lstm_full", "lstm_concat", "multi", "multi_plain_tuples", "multi_concat", "wrapped", "gru64"]


@pytest.mark.subprocess
@pytest.mark.parametrize("name", CALLS)
def test_a_direct_call_with_tf1s_state_gives_tf1s_numbers_and_structure(name, tf1):
    """Items 1, 3, 11: `cell(x, state)` reads TF1's state as TF1 does (c != h, non-zero biases) and
    answers in TF1's structure; an unbuilt cell given float64 builds and computes in float64."""
    cell, leaves, inputs, state = _case(name, tf1)
    cell(inputs, state)  # builds the cells (their weights are then replaced by TF1's)
    values = {key[4:]: value for key, value in tf1.items() if key.startswith("var/")}
    for leaf, scope in zip(leaves, tf1["meta"]["scopes"][name]):
        for variable, value in tf1_to_keras(leaf, values, scope):
            assert variable.dtype == value.dtype, (variable.path, variable.dtype, value.dtype)
            variable.assign(value)
    result = cell(inputs, state)
    assert describe(result) == tf1["meta"]["structures"][name]
    assert result[0].dtype.name == tf1["meta"]["dtypes"][name]
    for i, tensor in enumerate(tf.nest.flatten(result)):
        np.testing.assert_allclose(tensor, tf1[f"{name}/leaf{i}"], rtol=1e-5, atol=1e-6, err_msg=f"leaf {i}")


def test_a_direct_call_equals_one_step_of_the_functions(rng):
    """Item 1 as the issue found it: a direct call with `LSTMStateTuple(c0, h0)` is one step of dynamic_rnn."""
    x = rng.random((2, 4, 3)).astype("float32")
    c0, h0 = rng.standard_normal((2, 4)).astype("float32"), rng.standard_normal((2, 4)).astype("float32")
    cell = ku.tf1.BasicLSTMCell(4)
    output, state = cell(x[:, 0], ku.tf1.LSTMStateTuple(c0, h0))
    outputs, final = ku.dynamic_rnn(cell, x[:, :1], initial_state=ku.tf1.LSTMStateTuple(c0, h0))
    assert isinstance(state, ku.tf1.LSTMStateTuple)
    np.testing.assert_allclose(output, outputs[:, 0], rtol=1e-6)
    np.testing.assert_allclose(state.c, final.c, rtol=1e-6)
    np.testing.assert_allclose(state.h, final.h, rtol=1e-6)
    # Keras' convention (a list [h, c], what the layers pass) is unchanged
    keras_output, (h, c) = cell(x[:, 0], [h0, c0])
    np.testing.assert_allclose(keras_output, output, rtol=1e-6)
    np.testing.assert_allclose(c, state.c, rtol=1e-6)


@pytest.mark.subprocess
def test_state_size_and_zero_state_are_tf1s(tf1):
    """Item 4: `MultiRNNCell.state_size` is a tuple of `LSTMStateTuple(c, h)`, consistent with `zero_state`;
    the layers keep running it with Keras' flat `[h, c]` states."""
    stack = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(4), ku.tf1.LSTMCell(5, num_proj=3), ku.tf1.GRUCell(2)])
    assert repr(stack.state_size) == tf1["meta"]["state_size"]
    zero = stack.zero_state(B, tf.float32)
    assert describe(zero) == tf1["meta"]["zero_state"]
    for size, state in zip(stack.state_size, zero):
        assert [int(s) for s in tf.nest.flatten(size)] == [int(t.shape[1]) for t in tf.nest.flatten(state)]
    flat_stack = ku.tf1.MultiRNNCell(
        [ku.tf1.BasicLSTMCell(4, state_is_tuple=False), ku.tf1.GRUCell(2)], state_is_tuple=False
    )
    assert flat_stack.state_size == tf1["meta"]["concat_state_size"]
    x = np.ones((B, 3, F), "float32")
    outputs, *states = ku.DynamicUnroll(stack, return_sequences=True, return_state=True)(x)
    assert [tuple(s.shape) for s in tf.nest.flatten(states)] == [(B, 4), (B, 4), (B, 3), (B, 5), (B, 2)]
    reference = keras.layers.RNN(stack, return_sequences=True)(x)
    np.testing.assert_allclose(outputs, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.subprocess
def test_dropout_wrapper_zero_state_and_variational_masks_are_tf1s(tf1):
    """Item 5: the wrapped cell's own `zero_state`; one variational mask shared by the batch (TF1's noise
    shape `(1, size)`), kept for every step."""
    assert (
        describe(ku.tf1.DropoutWrapper(ku.tf1.BasicLSTMCell(4)).zero_state(B, tf.float32))
        == tf1["meta"]["dropout_zero_state"]
    )

    class Own(ku.tf1.BasicRNNCell):
        def zero_state(self, batch_size, dtype=None):
            return "the wrapped cell's zero_state"

    assert ku.tf1.DropoutWrapper(Own(10)).zero_state(10, tf.float32) == "the wrapped cell's zero_state"
    cell = ku.tf1.DropoutWrapper(
        ku.tf1.BasicLSTMCell(16), input_keep_prob=0.5, output_keep_prob=0.5, variational_recurrent=True, seed=1
    )
    outputs = np.asarray(ku.dynamic_rnn(cell, tf1["xs"], training=True)[0])
    kept = outputs != 0
    assert tf1["meta"]["variational_rows_share_mask"] and tf1["meta"]["variational_steps_share_mask"]
    assert np.all(kept == kept[:1]) and np.all(kept == kept[:, :1])
    assert 0 < kept.mean() < 1


CHECKPOINTED = {
    "BasicLSTMCell": lambda: ku.tf1.BasicLSTMCell(4),
    "LSTMCell": lambda: ku.tf1.LSTMCell(4, use_peepholes=True, num_proj=2),
    "GRUCell": lambda: ku.tf1.GRUCell(4),
    "MultiRNNCell": lambda: ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(4)]),
    "nested stacks": lambda: ku.tf1.MultiRNNCell(
        [ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicRNNCell(3)]), ku.tf1.LSTMCell(4)]
    ),
    "DropoutWrapper(stack)": lambda: ku.tf1.DropoutWrapper(
        ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicLSTMCell(4)]), 0.9
    ),
    "ResidualWrapper": lambda: ku.tf1.ResidualWrapper(ku.tf1.GRUCell(3)),
    "DeviceWrapper": lambda: ku.tf1.DeviceWrapper(ku.tf1.BasicLSTMCell(4), "/CPU:0"),
    "OutputProjectionWrapper": lambda: ku.tf1.OutputProjectionWrapper(ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3)]), 2),
}


@pytest.mark.parametrize("name", list(CHECKPOINTED))
def test_tf_train_checkpoint_saves_and_restores_every_variable(name, tmp_path):
    """Item 2: every cell, stack and wrapper saves every variable through `tf.train.Checkpoint`."""
    cell = CHECKPOINTED[name]()
    ku.dynamic_rnn(cell, np.ones((2, 2, 3), "float32"))  # builds it
    weights = cell.weights
    assert weights
    saved = [np.asarray(w) + 1.0 for w in weights]
    for w, value in zip(weights, saved):
        w.assign(value)
    path = tf.train.Checkpoint(cell=cell).write(str(tmp_path / "ckpt"))
    stored = [name for name, _ in tf.train.list_variables(path) if name.endswith("VARIABLE_VALUE")]
    assert len([s for s in stored if "seed_generator" not in s]) == len(weights)
    for w in weights:
        w.assign(np.zeros(w.shape, w.dtype))
    tf.train.Checkpoint(cell=cell).read(path).assert_consumed()
    for w, value in zip(weights, saved):
        np.testing.assert_array_equal(w, value)


@pytest.mark.parametrize(
    "make",
    [lambda: ku.tf1.GRUCell(3), lambda: ku.tf1.BasicLSTMCell(3), lambda: ku.tf1.LSTMCell(3)],
    ids=["GRUCell", "BasicLSTMCell", "LSTMCell"],
)
def test_cells_with_default_initializers_build_inside_a_tf_function(make):
    """Item 7: TF1 builds cells inside graphs; the default (unseeded) initializers work there too."""
    cell = make()

    @tf.function(jit_compile=True)
    def step(x):
        return cell(x, cell.zero_state(2, tf.float32))[0]

    assert tuple(step(tf.ones((2, 4))).shape) == (2, 3)
    symbolic = make()  # built while Keras traces a model: an unknown time axis, as TF1's dynamic_rnn took it
    outputs, _ = ku.dynamic_rnn(symbolic, keras.Input((None, 4)))
    assert tuple(outputs.shape) == (None, None, 3)
    keras.utils.set_random_seed(7)
    first = ku.tf1.GRUCell(3)
    first.build((None, 4))
    keras.utils.set_random_seed(7)
    second = ku.tf1.GRUCell(3)
    second.build((None, 4))
    np.testing.assert_array_equal(first.kernel, second.kernel)  # still seeded by keras.utils.set_random_seed


def test_a_built_cell_refuses_another_float_dtype():
    """Item 3: TF1 builds in the first input's dtype; afterwards another float type is an error, not a cast."""
    cell = ku.tf1.GRUCell(5)
    output, state = cell(np.ones((2, 3)), np.zeros((2, 5)))  # float64 numpy: built in float64, as TF1
    assert output.dtype == tf.float64 and cell.kernel.dtype == "float64"
    with pytest.raises(TypeError, match=r"built for float64.*Received: inputs.dtype=float32"):
        cell(np.ones((2, 3), "float32"), np.zeros((2, 5), "float32"))
    explicit = ku.tf1.BasicLSTMCell(4, dtype="float32")  # a dtype given by the user is kept
    with pytest.raises(TypeError, match=r"built for float32.*Received: inputs.dtype=float64"):
        explicit.build((None, 3))
        explicit(np.ones((2, 3)), explicit.zero_state(2, tf.float64))
    stack = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(4), ku.tf1.GRUCell(3)])
    output, states = stack(tf.ones((2, 3), tf.float16), stack.zero_state(2, tf.float16))
    assert output.dtype == tf.float16 and all(w.dtype == "float16" for w in stack.weights)


def test_a_stack_given_one_tensor_says_it_expects_a_tuple():
    """Item 9: TF1's message, not a matmul failure."""
    stack = ku.tf1.MultiRNNCell([ku.tf1.GRUCell(2) for _ in range(2)])
    with pytest.raises(ValueError, match=r"Expected state .* a tuple"):
        stack(np.zeros((1, 2), "float32"), np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"Expected state to be a tuple of length 2"):
        stack(np.zeros((1, 2), "float32"), (np.zeros((1, 2), "float32"),))


def test_concatenated_states_with_state_is_tuple_false():
    """Item 11: `state_is_tuple=False` gives TF1's concatenated `[c, h]` (per layer, in layer order)."""
    x = np.random.default_rng(3).standard_normal((2, 3)).astype("float32")
    tuple_cell = ku.tf1.LSTMCell(4, num_proj=3)
    flat_cell = ku.tf1.LSTMCell(4, num_proj=3, state_is_tuple=False)
    c0, h0 = np.full((2, 4), 0.3, "float32"), np.full((2, 3), -0.2, "float32")
    output, state = tuple_cell(x, ku.tf1.LSTMStateTuple(c0, h0))
    flat_cell.build((None, 3))
    flat_cell.set_weights(tuple_cell.get_weights())
    flat_output, flat_state = flat_cell(x, np.concatenate([c0, h0], 1))
    np.testing.assert_allclose(flat_output, output, rtol=1e-6)
    np.testing.assert_allclose(flat_state, np.concatenate([state.c, state.h], 1), rtol=1e-6)
    assert flat_cell.zero_state(2, tf.float32).shape == (2, 7)
    with pytest.raises(ValueError, match=r"state_is_tuple=False.*\(batch, 7\).*Received: state.shape=\(2, 8\)"):
        flat_cell(x, np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match=r"batch size.*Received: inputs.shape=\(2, 3\)"):
        flat_cell(x, np.zeros((1, 7), "float32"))
    stack = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(2, state_is_tuple=False) for _ in range(2)], state_is_tuple=False)
    assert stack.state_size == 8 and stack.zero_state(1, tf.float32).shape == (1, 8)
    out, new = stack(np.ones((1, 2), "float32"), 0.1 * np.ones((1, 8), "float32"))
    assert tuple(new.shape) == (1, 8)
    np.testing.assert_allclose(new[:, 6:], out, rtol=1e-6)  # the top layer's h ends the concatenation


def test_tf1_arguments_that_were_refused():
    """Item 12: `cell_clip=0.0`, the old `LSTMCell(num_units, input_size)`, `residual_fn`, state filters,
    tensor keep probabilities, `.wrapped_cell`, `from_config` with a cell, TF1's `get_initial_state`."""
    x = np.ones((2, 3), "float32")
    clipped = ku.tf1.LSTMCell(3, use_peepholes=True, cell_clip=0.0)
    output, state = clipped(x, clipped.zero_state(2, tf.float32))
    np.testing.assert_array_equal(state.c, 0.0)  # c clipped to 0: tanh(c) = 0, so the output is 0
    np.testing.assert_array_equal(output, 0.0)
    with pytest.warns(UserWarning, match=r"old form `LSTMCell\(num_units, input_size\)` turns peepholes on"):
        old = ku.tf1.LSTMCell(3, 5, state_is_tuple=False)
    assert old.use_peepholes is True
    base = ku.tf1.GRUCell(3)
    sliced = ku.tf1.ResidualWrapper(base, residual_fn=lambda i, o: i[:, :3] + o)
    five = np.ones((1, 5), "float32")
    g, _ = base(five, np.zeros((1, 3), "float32"))
    g_res, _ = sliced(five, np.zeros((1, 3), "float32"))
    np.testing.assert_allclose(g_res, g + 1.0, rtol=1e-6)
    lstm = ku.tf1.BasicLSTMCell(3)
    keep_c = ku.tf1.DropoutWrapper(lstm, state_keep_prob=1e-6, dropout_state_filter_visitor=lambda s: False)
    plain = ku.dynamic_rnn(lstm, np.ones((2, 2, 3), "float32"))[1]
    dropped = ku.dynamic_rnn(keep_c, np.ones((2, 2, 3), "float32"), training=True)[1]
    np.testing.assert_allclose(dropped.h, plain.h, rtol=1e-6)  # the visitor keeps every state
    keep = tf.Variable(1.0)
    wrapper = ku.tf1.DropoutWrapper(lstm, input_keep_prob=keep, output_keep_prob=tf.ones([]))
    assert wrapper.wrapped_cell is lstm
    np.testing.assert_allclose(ku.dynamic_rnn(wrapper, np.ones((2, 2, 3), "float32"), training=True)[1].h, plain.h)
    config = wrapper.get_config()
    config["cell"] = lstm
    assert ku.tf1.DropoutWrapper.from_config(config).wrapped_cell is lstm
    state = lstm.get_initial_state(inputs=None, batch_size=2, dtype=tf.float32)
    assert isinstance(state, ku.tf1.LSTMStateTuple)
    assert lstm(np.ones((2, 3), "float32"), state)[0].shape == (2, 3)
    assert len(lstm.get_initial_state(batch_size=2)) == 2  # Keras' call: Keras' list [h, c]
