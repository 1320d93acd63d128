"""TF1's functions as TF1 code calls them (issue 21): dtypes, structures, TF1-style cells, `raw_rnn`, `ku.tf1`.

The silently different results (a float64 input computed in float32; `T = 0` giving a list instead of
`LSTMStateTuple`) are compared with TF1 itself: `tf1_functions_reference.py` runs TF1 in a child process
and saves its numbers and a checkpoint, which `load_tf1_weights` reads into the `ku.tf1` cells.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from tf1_functions_reference import BATCH, CLASSES, FEATURES, GRU_UNITS, LENGTHS, LSTM_UNITS, STEPS, functions_reference
from tf1_reference import run_tf1

import keras_unroll as ku

X = np.random.default_rng(0).random((2, 4, 3)).astype("float32")


@pytest.fixture(scope="module")
def tf1(tmp_path_factory):
    return functions_reference(tmp_path_factory)


def _dtypes(structure) -> set:
    return {t.dtype for t in tf.nest.flatten(structure)}


# ------------------------------------------------------------------ item 3: the inputs' dtype, as TF1
@pytest.mark.parametrize("function", ["dynamic_rnn", "static_rnn"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: ku.tf1.GRUCell(5),
        lambda: ku.tf1.BasicLSTMCell(5),
        lambda: ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicLSTMCell(4)]),
        lambda: ku.tf1.DropoutWrapper(ku.tf1.LSTMCell(3, use_peepholes=True)),
        lambda: ku.BasicRNNCell(2),
    ],
    ids=["gru", "basic_lstm", "multi", "wrapper", "basic_rnn"],
)
def test_float64_inputs_give_float64_outputs_and_states(function, make):
    """TF1 builds an unbuilt cell in its inputs' dtype: float64 in, float64 weights, outputs and states."""
    x = X.astype("float64")
    cell = make()
    if function == "dynamic_rnn":
        outputs, state = ku.dynamic_rnn(cell, x)
    else:
        outputs, state = ku.static_rnn(cell, [x[:, t] for t in range(STEPS)])
    assert _dtypes(outputs) == _dtypes(state) == {tf.float64}
    assert {w.dtype for w in cell.weights} == {"float64"}


def test_dtype_argument_decides_for_numpy_inputs():
    """A NumPy array is what TF1 fed to a placeholder of `dtype`: `dtype=tf.float32` computes in float32."""
    outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), X.astype("float64"), dtype=tf.float32)
    assert _dtypes(outputs) == _dtypes(state) == {tf.float32}
    outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), X, dtype=tf.float64)
    assert _dtypes(outputs) == _dtypes(state) == {tf.float64}


def test_dtype_argument_disagreeing_with_a_tensor_is_an_error():
    with pytest.raises(ValueError, match="must match the inputs' dtype.*Received: dtype=float32, inputs.dtype=float64"):
        ku.dynamic_rnn(ku.tf1.GRUCell(5), tf.constant(X, tf.float64), dtype=tf.float32)


def test_a_built_float32_cell_given_float64_says_so():
    cell = ku.tf1.GRUCell(5)
    ku.dynamic_rnn(cell, X)
    with pytest.raises(ValueError, match="built in float32.*inputs are float64.*Received: inputs dtype float64"):
        ku.dynamic_rnn(cell, X.astype("float64"))
    with pytest.raises(ValueError, match="built in float32"):
        ku.static_rnn(cell, [X[:, 0].astype("float64")])
    outputs, _ = ku.dynamic_rnn(cell, X.astype("float16"))  # narrower inputs are cast up: nothing is lost
    assert outputs.dtype == tf.float32


def test_a_cell_with_its_own_dtype_keeps_it():
    """A cell given `dtype=` (or a mixed policy) computes in it, as before."""
    cell = ku.tf1.GRUCell(5, dtype="float64")
    outputs, _ = ku.dynamic_rnn(cell, X)
    assert outputs.dtype == tf.float64


@pytest.mark.subprocess
def test_float64_matches_tf1(tf1):
    """TF1's float64 numbers (non-zero biases; for the LSTM c0 != h0 and lengths) with TF1's weights."""
    x = tf1["x"]
    gru = ku.tf1.GRUCell(GRU_UNITS)
    ku.dynamic_rnn(gru, x)  # built in float64 by its first inputs, as in TF1; then restored
    ku.load_tf1_weights(gru, tf1["checkpoint"], scope="gru64/rnn/gru_cell")
    outputs, state = ku.dynamic_rnn(gru, x, dtype=tf.float64)
    assert str(tf1["gru64/dtype"]) == outputs.dtype.name == state.dtype.name == str(tf1["gru64/kernel_dtype"])
    np.testing.assert_allclose(outputs, tf1["gru64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state, tf1["gru64/state"], rtol=1e-12, atol=1e-12)

    lstm = ku.tf1.BasicLSTMCell(LSTM_UNITS)
    start = ku.tf1.LSTMStateTuple(c=tf1["c0"], h=tf1["h0"])
    ku.dynamic_rnn(lstm, x, initial_state=start)
    ku.load_tf1_weights(lstm, tf1["checkpoint"], scope="lstm64/rnn/basic_lstm_cell")
    outputs, state = ku.dynamic_rnn(lstm, x, sequence_length=LENGTHS, initial_state=start)
    assert type(state).__name__ == str(tf1["lstm64/state_type"]) and outputs.dtype.name == str(tf1["lstm64/dtype"])
    np.testing.assert_allclose(outputs, tf1["lstm64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.c, tf1["lstm64/c"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.h, tf1["lstm64/h"], rtol=1e-12, atol=1e-12)

    static = ku.tf1.GRUCell(GRU_UNITS)
    steps = [x[:, t] for t in range(STEPS)]
    ku.static_rnn(static, steps)
    ku.load_tf1_weights(static, tf1["checkpoint"], scope="static64/rnn/gru_cell")
    outputs, state = ku.static_rnn(static, steps, dtype=tf.float64)
    assert outputs[0].dtype.name == str(tf1["static64/dtype"])
    np.testing.assert_allclose(np.stack(outputs, 1), tf1["static64/outputs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state, tf1["static64/state"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- item 6: T = 0 keeps TF1's structure
@pytest.mark.subprocess
def test_no_steps_return_the_initial_state_as_tf1(tf1):
    start = ku.tf1.LSTMStateTuple(c=tf1["c0"].astype("float32"), h=tf1["h0"].astype("float32"))
    outputs, state = ku.dynamic_rnn(
        ku.tf1.BasicLSTMCell(LSTM_UNITS), tf1["x"][:, :0].astype("float32"), initial_state=start
    )
    assert type(state).__name__ == str(tf1["lstm_t0/state_type"])
    assert isinstance(state, ku.tf1.LSTMStateTuple)
    assert outputs.shape == tf1["lstm_t0/outputs"].shape
    np.testing.assert_array_equal(state.c, tf1["lstm_t0/c"])
    np.testing.assert_array_equal(state.h, tf1["lstm_t0/h"])


def test_no_steps_keep_every_structure():
    """The zero state too, and a stack's tuple of per-layer states."""
    _, state = ku.dynamic_rnn(ku.tf1.BasicLSTMCell(4), X[:, :0])
    assert isinstance(state, ku.tf1.LSTMStateTuple) and state.c.shape == (2, 4)
    _, state = ku.dynamic_rnn(ku.tf1.MultiRNNCell([ku.tf1.GRUCell(3), ku.tf1.BasicLSTMCell(4)]), X[:, :0])
    assert isinstance(state, tuple) and isinstance(state[1], ku.tf1.LSTMStateTuple) and state[0].shape == (2, 3)


# ---------------------------------------------- item 15: raw `tf.Variable`s of a TF1 script, by name
@pytest.mark.subprocess
def test_load_raw_variables_by_name(tf1):
    """TF1's `weights = {'out': tf.Variable(...)}` output layer, saved as `Variable`/`Variable_1`."""
    assert str(tf1["logits/names"]) == "Variable Variable_1"
    x = tf1["x"].astype("float32")
    cell, dense = ku.tf1.BasicLSTMCell(LSTM_UNITS), keras.layers.Dense(CLASSES)
    outputs, _ = ku.dynamic_rnn(cell, x)
    dense(outputs[:, -1])  # built
    ku.load_tf1_weights(cell, tf1["checkpoint"], scope="rnn/basic_lstm_cell")
    loaded = ku.load_tf1_weights(
        None, tf1["checkpoint"], variables={"Variable": dense.kernel, "Variable_1": dense.bias}
    )
    assert sorted(loaded) == ["Variable", "Variable_1"]
    outputs, _ = ku.dynamic_rnn(cell, x)
    np.testing.assert_allclose(dense(outputs[:, -1]), tf1["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.subprocess
def test_load_raw_variables_with_a_target_and_tf_variables(tf1):
    """A cell and raw variables in one call; a plain `tf.Variable` works as a destination too."""
    cell = ku.tf1.BasicLSTMCell(LSTM_UNITS)
    kernel, bias = tf.Variable(tf.zeros((LSTM_UNITS, CLASSES))), tf.Variable(tf.zeros((CLASSES,)))
    ku.load_tf1_weights(
        cell, tf1["checkpoint"], scope="rnn/basic_lstm_cell", variables={"Variable": kernel, "Variable_1:0": bias}
    )
    assert cell.built and np.abs(kernel.numpy()).sum() > 0 and np.abs(bias.numpy()).sum() > 0


@pytest.mark.subprocess
def test_load_raw_variables_errors_change_nothing(tf1):
    dense = keras.layers.Dense(CLASSES)
    dense.build((None, LSTM_UNITS))
    before = [w.numpy().copy() for w in dense.weights]
    with pytest.raises(ValueError, match=r"no variable 'Variable_7'.*The checkpoint holds: .*Variable_1 \[3\]"):
        ku.load_tf1_weights(None, tf1["checkpoint"], variables={"Variable": dense.kernel, "Variable_7": dense.bias})
    with pytest.raises(
        ValueError, match=r"'Variable_1' has shape \[3\], but the variable it goes to has shape \[4, 3\]"
    ):
        ku.load_tf1_weights(None, tf1["checkpoint"], variables={"Variable": dense.kernel, "Variable_1": dense.kernel})
    with pytest.raises(TypeError, match="must be one variable, not a layer"):
        ku.load_tf1_weights(None, tf1["checkpoint"], variables={"Variable": dense})
    with pytest.raises(TypeError, match="`variables` must be a non-empty dict"):
        ku.load_tf1_weights(None, tf1["checkpoint"], variables={})
    for old, new in zip(before, dense.weights):
        np.testing.assert_array_equal(old, new)


# --------------------------------------------------------------------------- item 10: raw_rnn, as TF1
@pytest.mark.subprocess
def test_raw_rnn_matches_tf1(tf1):
    """TF's documented decoder loop over an LSTMCell (lengths end rows early) gives TF1's numbers."""
    x = tf1["x"].astype("float32")
    cell = ku.tf1.LSTMCell(LSTM_UNITS)
    inputs_ta = tf.TensorArray(tf.float32, size=STEPS, clear_after_read=False).unstack(np.transpose(x, (1, 0, 2)))
    lengths = tf.constant(LENGTHS)

    def loop_fn(time, cell_output, cell_state, loop_state):
        state = cell.zero_state(BATCH, tf.float32) if cell_output is None else cell_state
        finished = time >= lengths
        next_input = tf.cond(tf.reduce_all(finished), lambda: tf.zeros([BATCH, FEATURES]), lambda: inputs_ta.read(time))
        return finished, next_input, state, cell_output, None

    ku.raw_rnn(cell, loop_fn)  # builds the cell; then TF1's weights
    ku.load_tf1_weights(cell, tf1["checkpoint"], scope="raw/rnn/lstm_cell")
    emit_ta, state, loop_state = ku.raw_rnn(cell, loop_fn)
    assert loop_state is None and repr(loop_state) == str(tf1["raw/loop_state"])
    np.testing.assert_allclose(emit_ta.stack(), tf1["raw/outputs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, tf1["raw/c"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, tf1["raw/h"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ item 12 (functions): lengths of unknown rank
@pytest.mark.parametrize("function", ["dynamic_rnn", "static_rnn"])
def test_sequence_length_of_unknown_rank(function):
    """TF1 takes a `sequence_length` whose rank is unknown when traced, and checks it when it runs."""
    cell = ku.tf1.GRUCell(3)
    call = getattr(ku, function)

    @tf.function(input_signature=[tf.TensorSpec((2, 4, 3), tf.float32), tf.TensorSpec(None, tf.int32)])
    def run(x, lengths):
        return call(cell, x, sequence_length=lengths)

    outputs, state = run(X, tf.constant([4, 2]))
    expected_outputs, expected_state = call(cell, X, sequence_length=[4, 2])
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state, expected_state, rtol=1e-6, atol=1e-6)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        run(X, tf.constant([[4, 2]]))


# --------------------------------------------------------------- item 13: TF1-style cells, as written
class Accumulate:
    """A TF1-style cell (TF1 users subclassed `tf.nn.rnn_cell.RNNCell`): state += input, output = 2 * state."""

    state_size = 3
    output_size = 3

    def zero_state(self, batch_size, dtype):
        return tf.ones([batch_size, 3], dtype)  # not zeros: the functions must ask the cell

    def __call__(self, inputs, state, scope=None):
        new_state = state + inputs
        return 2.0 * new_state, new_state


def test_tf1_style_cells_in_every_function():
    x = X.astype("float64")
    expected_state = 1.0 + np.cumsum(x, axis=1)  # (B, T, 3): the state after each step
    outputs, state = ku.dynamic_rnn(Accumulate(), x, sequence_length=[4, 2], dtype=tf.float64)
    np.testing.assert_allclose(outputs[0], 2 * expected_state[0])
    np.testing.assert_allclose(outputs[1], np.concatenate([2 * expected_state[1, :2], np.zeros((2, 3))]))
    np.testing.assert_allclose(state, np.stack([expected_state[0, 3], expected_state[1, 1]]))
    assert outputs.dtype == tf.float64

    steps, static_state = ku.static_rnn(Accumulate(), [x[:, t] for t in range(4)], sequence_length=[4, 2])
    np.testing.assert_allclose(np.stack(steps, 1), outputs)
    np.testing.assert_allclose(static_state, state)

    (out_fw, out_bw), (state_fw, state_bw) = ku.bidirectional_dynamic_rnn(Accumulate(), Accumulate(), x)
    np.testing.assert_allclose(out_fw, 2 * expected_state)
    np.testing.assert_allclose(state_bw, 1.0 + x.sum(axis=1))
    outputs_bid, _, _ = ku.static_bidirectional_rnn(Accumulate(), Accumulate(), [x[:, t] for t in range(4)])
    np.testing.assert_allclose(outputs_bid[0], np.concatenate([out_fw[:, 0], out_bw[:, 0]], axis=1))


def test_a_tf1_style_cell_around_a_ku_tf1_cell_inside_tf_function():
    """A TF1 user's wrapper cell calling a `ku.tf1` cell, traced once with an open time axis."""
    inner = ku.tf1.GRUCell(3)

    class Scaled:
        state_size, output_size = 3, 3

        def __call__(self, inputs, state):
            output, new_state = inner(inputs, [state])
            return 0.5 * output, new_state[0]

    @tf.function(input_signature=[tf.TensorSpec((2, None, 3), tf.float32)])
    def run(x):
        return ku.dynamic_rnn(Scaled(), x, dtype=tf.float32)

    inner(X[:, 0], [tf.zeros((2, 3))])  # built eagerly (variables are created outside tf.function)
    outputs, state = run(X)
    reference, _ = ku.dynamic_rnn(inner, X)
    np.testing.assert_allclose(outputs, 0.5 * np.asarray(reference), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ item 14: ku.tf1 as tf.contrib.rnn
def test_tf1_module_stands_in_for_contrib_rnn():
    from keras_unroll import tf1 as rnn

    assert rnn.static_rnn is ku.static_rnn and rnn.dynamic_rnn is ku.dynamic_rnn and rnn.raw_rnn is ku.raw_rnn
    assert rnn.bidirectional_dynamic_rnn is ku.bidirectional_dynamic_rnn
    assert rnn.static_bidirectional_rnn is ku.static_bidirectional_rnn
    assert {"static_rnn", "dynamic_rnn", "raw_rnn", "bidirectional_dynamic_rnn", "static_bidirectional_rnn"} <= set(
        rnn.__all__
    )
    outputs, states = rnn.static_rnn(rnn.BasicLSTMCell(4), [X[:, t] for t in range(4)], dtype=tf.float32)
    assert len(outputs) == 4 and isinstance(states, rnn.LSTMStateTuple)


_TF1_RNNCELL_SUBCLASS = """
import numpy as np, tensorflow as tf, keras_unroll as ku

class Plus1(tf.compat.v1.nn.rnn_cell.RNNCell):   # TF1's own base class (tf-keras), __call__ and zero_state overridden
    @property
    def output_size(self): return 5
    @property
    def state_size(self): return 5
    def zero_state(self, batch_size, dtype): return tf.fill([batch_size, 5], tf.constant(10.0, dtype))
    def __call__(self, inputs, state, scope=None): return inputs + 1, state + 1

x = np.ones((2, 3, 5), "float32")
outputs, state = ku.dynamic_rnn(Plus1(), x, dtype=tf.float32, sequence_length=[3, 1])
steps, static_state = ku.static_rnn(Plus1(), [x[:, t] for t in range(3)], dtype=tf.float32)
print(np.asarray(outputs)[:, :, 0].tolist(), np.asarray(state)[:, 0].tolist(), np.asarray(static_state)[:, 0].tolist())
"""


@pytest.mark.subprocess
def test_a_subclass_of_tf1s_rnncell():
    """Where tf-keras provides TF1's `RNNCell` (TF_USE_LEGACY_KERAS=1), its subclasses run as they are."""
    done = run_tf1(["-c", _TF1_RNNCELL_SUBCLASS], timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[[2.0, 2.0, 2.0], [2.0, 0.0, 0.0]] [13.0, 11.0] [13.0, 13.0]"


@pytest.mark.parametrize("function", ["dynamic_rnn", "static_rnn"])
def test_a_concatenated_stack_state_in_and_out(function):
    """`MultiRNNCell(state_is_tuple=False)`: the functions return TF1's one concatenated tensor and take it
    back as `initial_state` (the cell's own TF1 structure, not a tuple per layer)."""

    def make(as_tuple):
        return ku.tf1.MultiRNNCell(
            [ku.tf1.BasicLSTMCell(4, state_is_tuple=as_tuple), ku.tf1.GRUCell(3)], state_is_tuple=as_tuple
        )

    tupled, concatenated = make(True), make(False)
    run = (
        (lambda cell, **kw: ku.dynamic_rnn(cell, X, **kw))
        if function == "dynamic_rnn"
        else (lambda cell, **kw: ku.static_rnn(cell, list(tf.unstack(X, axis=1)), **kw))
    )
    run(tupled)
    run(concatenated)
    concatenated.set_weights(tupled.get_weights())
    _, state = run(tupled)
    _, flat = run(concatenated)
    assert isinstance(flat, tf.Tensor) and flat.shape == (2, 4 + 4 + 3)
    np.testing.assert_allclose(flat, tf.concat([state[0].c, state[0].h, state[1]], axis=1), rtol=1e-6)
    outputs, again = run(tupled, initial_state=state)
    flat_outputs, flat_again = run(concatenated, initial_state=flat)
    np.testing.assert_allclose(flat_outputs, outputs, rtol=1e-6)
    np.testing.assert_allclose(flat_again, tf.concat([again[0].c, again[0].h, again[1]], axis=1), rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda: ku.tf1.GRUCell(5, dtype="float32"), lambda: ku.BasicRNNCell(5, dtype="float32")],
    ids=["gru", "basic_rnn"],
)
def test_a_cell_given_float32_refuses_float64_inputs(make):
    """TF1: a cell whose dtype is set computes in it; float64 inputs would lose precision silently."""
    with pytest.raises(ValueError, match="was given dtype float32.*Received: inputs dtype float64"):
        ku.dynamic_rnn(make(), X.astype("float64"))


def test_basic_rnn_cell_direct_call_adopts_float64():
    cell = ku.BasicRNNCell(2)
    output, _ = cell(tf.constant(X[:, 0], tf.float64), tf.zeros((2, 2), tf.float64))
    assert output.dtype == tf.float64 and {v.dtype for v in cell.weights} == {"float64"}
    assert not cell.non_trainable_variables  # TF1's cell has no dropout seed variable
    with pytest.raises(TypeError, match="computes in float32.*Received: inputs.dtype=float64"):
        ku.BasicRNNCell(2, dtype="float32")(tf.constant(X[:, 0], tf.float64), tf.zeros((2, 2), tf.float64))


# --------------------------------------------------------------------------- AutoGraph, as TF1's functions
class BranchingTF1Cell:
    """A TF1-style cell (a plain callable, not a Keras layer) that branches in Python on a tensor: it runs in a
    `tf.function` only where AutoGraph converts it."""

    state_size = 2
    output_size = 2

    def __call__(self, inputs, state, scope=None):
        if tf.reduce_max(inputs) > 0:
            return inputs[:, :2], inputs[:, :2]
        return state, state


def _branching_loop_fn(x):
    steps = x.shape[1]

    def loop_fn(time, cell_output, cell_state, loop_state):
        finished = tf.fill([x.shape[0]], time >= steps)
        if cell_output is None:
            return finished, x[:, 0], tf.zeros([x.shape[0], 2]), tf.zeros([x.shape[0], 2]), None
        if tf.reduce_max(cell_output) > 0:  # a Python `if` on a tensor
            cell_output = -cell_output
        return finished, x[:, tf.minimum(time, steps - 1)], cell_state, cell_output, None

    return loop_fn


@pytest.mark.parametrize("function", ["dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn", "raw_rnn"])
def test_a_tf_function_does_not_convert_the_tf1_functions_or_what_they_call(function):
    # TensorFlow's own `tf.compat.v1.nn` functions are not converted by AutoGraph inside a `tf.function`, nor is
    # what they call (a TF1-style cell, a `raw_rnn` `loop_fn`): a Python `if` on a tensor there fails, in ours as
    # in TF1's. (Converting the package's code took 12-15 s on a first trace.)
    x = tf.constant(X)
    cell, keras_cell, loop_fn = BranchingTF1Cell(), ku.BasicRNNCell(2), _branching_loop_fn(x)
    runs = {
        "dynamic_rnn": lambda: ku.dynamic_rnn(cell, x, dtype=tf.float32),
        "static_rnn": lambda: ku.static_rnn(cell, tf.unstack(x, axis=1), dtype=tf.float32),
        "bidirectional_dynamic_rnn": lambda: ku.bidirectional_dynamic_rnn(cell, cell, x, dtype=tf.float32),
        "raw_rnn": lambda: ku.raw_rnn(keras_cell, loop_fn),
    }
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        tf.function(runs[function])()


def _stack_recording(base):
    """A subclass of the cell class `base` that records, at each of its steps, the AutoGraph-generated functions on
    the Python stack (in `cell.generated`)."""

    class StackRecording(base):
        def call(self, inputs, states, training=None):
            frames = inspect.stack(context=0)
            self.generated.append([frame.function for frame in frames if "__autograph_generated" in frame.filename])
            return super().call(inputs, states, training=training)

    return StackRecording


@pytest.mark.parametrize(
    "caller", ["DynamicUnroll", "StaticUnroll", "cell(x, state)", "cell(x, [h, c])", "BasicRNNCell(x, h)"]
)
def test_a_tf_function_does_not_convert_the_layers_or_cells_it_calls(caller):
    # Keras' `Layer.__call__` is not converted by AutoGraph inside a `tf.function`; the `__call__` that the layers
    # and the cells add before it is not either: only the user's own function runs converted.
    x = tf.constant(X)
    cell = _stack_recording(ku.BasicRNNCell if caller == "BasicRNNCell(x, h)" else ku.tf1.BasicLSTMCell)(3)
    cell.generated = []
    state = ku.tf1.LSTMStateTuple(tf.zeros((len(X), 3)), tf.zeros((len(X), 3)))
    runs = {
        "DynamicUnroll": lambda: ku.DynamicUnroll(cell, jit_compile=False)(x),
        "StaticUnroll": lambda: ku.StaticUnroll(cell)(x),
        "cell(x, state)": lambda: cell(x[:, 0], state),
        "cell(x, [h, c])": lambda: cell(x[:, 0], list(state)),
        "BasicRNNCell(x, h)": lambda: cell(x[:, 0], state.h),
    }

    def user_function():
        return runs[caller]()

    tf.function(user_function)()
    # Converted functions run as `tf__<name>` (the user's function here): a converted `__call__` of a layer or a
    # cell would show as `tf____call__`.
    assert cell.generated and all("tf__user_function" in names for names in cell.generated), cell.generated
    assert not any("tf____call__" in names for names in cell.generated), cell.generated


@tf.function
def _doubled_if_positive(x):
    if tf.reduce_sum(x) > 0:  # a Python `if` on a tensor: this function needs AutoGraph
        return 2.0 * x
    return x


class _CellCallingAConvertedFunction(keras.layers.Layer):
    state_size = output_size = 3

    def call(self, inputs, states, training=None):
        h = _doubled_if_positive(inputs) + states[0]
        return h, [h]


@pytest.mark.parametrize("caller", ["DynamicUnroll", "StaticUnroll", "dynamic_rnn", "tf.function(DynamicUnroll)"])
def test_a_tf_function_that_a_cell_calls_is_still_converted(caller):
    # What is not converted is the package's own code: a `tf.function` the user's cell calls converts its own code,
    # as inside `keras.layers.RNN`.
    x = tf.constant(X)
    runs = {
        "DynamicUnroll": lambda: ku.DynamicUnroll(_CellCallingAConvertedFunction())(x),
        "StaticUnroll": lambda: ku.StaticUnroll(_CellCallingAConvertedFunction())(x),
        "dynamic_rnn": lambda: ku.dynamic_rnn(_CellCallingAConvertedFunction(), x, dtype=tf.float32)[1],
        "tf.function(DynamicUnroll)": tf.function(lambda: ku.DynamicUnroll(_CellCallingAConvertedFunction())(x)),
    }
    expected = keras.layers.RNN(_CellCallingAConvertedFunction())(x)
    np.testing.assert_allclose(runs[caller](), expected, rtol=1e-6)
