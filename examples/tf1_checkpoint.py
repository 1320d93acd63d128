"""Load TF1 `BasicRNNCell` and `BasicLSTMCell` checkpoints into Keras 3 with `ku.load_tf1_weights`.

TF1's `BasicRNNCell` kept one concatenated kernel `[n_inputs + n_neurons, n_neurons]` under
`rnn/basic_rnn_cell/kernel` (it computed `tanh(concat([x_t, h]) @ kernel + bias)`) and a bias under
`rnn/basic_rnn_cell/bias`. This script first writes such a checkpoint the way a TF1 program did
(variables in a `tf.Graph`, saved by `tf.compat.v1.train.Saver` from a session: no tf-keras needed), then
loads it into a `ku.BasicRNNCell` and checks the outputs against TF1's formula computed with NumPy.
Then the same for a `BasicLSTMCell` (`rnn/basic_lstm_cell/kernel [n_inputs + n_neurons, 4 n_neurons]`,
gates in TF1's order i, j, f, o, and TF1's `forget_bias=1.0` added at run time), loaded into
`ku.tf1.BasicLSTMCell`: the loader reorders the gates to Keras' i, f, c, o and folds `forget_bias` into the bias.

Use your own checkpoint instead:  python examples/tf1_checkpoint.py --checkpoint path/to/model.ckpt
Run:                              python examples/tf1_checkpoint.py [--quick]
"""

import argparse
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="accepted for CI; this script is already quick")
parser.add_argument("--checkpoint", help="an existing TF1 checkpoint prefix (default: write a demo one)")
parser.add_argument("--scope", default="rnn/basic_rnn_cell", help="the cell's variable scope in the checkpoint")
args = parser.parse_args()
n_inputs, n_neurons = 3, 5


def write_tf1_checkpoint(prefix, scope="rnn/basic_rnn_cell", gates=1):
    """What a TF1 program's `saver.save(sess, prefix)` left behind after `static_rnn`/`dynamic_rnn`."""
    rng = np.random.default_rng(7)
    kernel = rng.normal(scale=0.5, size=(n_inputs + n_neurons, gates * n_neurons)).astype("float32")
    bias = rng.normal(scale=0.1, size=(gates * n_neurons,)).astype("float32")
    graph = tf.Graph()
    with graph.as_default():
        with tf.compat.v1.variable_scope(scope):
            tf.compat.v1.get_variable("kernel", initializer=kernel)
            tf.compat.v1.get_variable("bias", initializer=bias)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, prefix)


workdir = tempfile.mkdtemp(prefix="tf1_checkpoint_")
atexit.register(shutil.rmtree, workdir, True)  # remove the demo checkpoint at exit
checkpoint = args.checkpoint or write_tf1_checkpoint(os.path.join(workdir, "model.ckpt"))
print("checkpoint variables:", tf.train.list_variables(checkpoint))

# TF1: basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons); saver.restore(sess, checkpoint)
cell = ku.BasicRNNCell(num_units=n_neurons)
kernel, recurrent_kernel, bias = ku.load_tf1_weights(cell, checkpoint, scope=args.scope)
print("split into kernel", kernel.shape, "+ recurrent_kernel", recurrent_kernel.shape, "+ bias", bias.shape)

# Run it as the notebook did, on the book's batch (4 instances, 2 steps).
X_batch = np.array(
    [[[0, 1, 2], [9, 8, 7]], [[3, 4, 5], [0, 0, 0]], [[6, 7, 8], [6, 5, 4]], [[9, 0, 1], [3, 2, 1]]], "float32"
)
if kernel.shape[0] != n_inputs:  # your own checkpoint, for another number of inputs: random inputs
    X_batch = np.random.default_rng(0).normal(size=(4, 2, kernel.shape[0])).astype("float32")
outputs, states = ku.dynamic_rnn(cell, X_batch)

if args.checkpoint is None:
    # TF1's BasicRNNCell, by hand: h = tanh(concat([x_t, h]) @ kernel + bias) with the checkpoint's arrays.
    reader = tf.train.load_checkpoint(checkpoint)
    tf1_kernel, tf1_bias = reader.get_tensor(f"{args.scope}/kernel"), reader.get_tensor(f"{args.scope}/bias")
    h = np.zeros((len(X_batch), n_neurons), "float32")
    expected = []
    for t in range(X_batch.shape[1]):
        h = np.tanh(np.concatenate([X_batch[:, t], h], axis=1) @ tf1_kernel + tf1_bias)
        expected.append(h)
    expected = np.stack(expected, axis=1)
    print("max |keras_unroll - TF1 formula|:", float(np.abs(outputs.numpy() - expected).max()))
    assert np.allclose(outputs, expected, atol=1e-5) and np.allclose(states, expected[:, -1], atol=1e-5)
print("final states:\n", np.round(states.numpy(), 4))

if args.checkpoint is None:
    # TF1: cell = tf.nn.rnn_cell.BasicLSTMCell(num_units=n_neurons); the same graph, saved the same way.
    lstm_checkpoint = write_tf1_checkpoint(os.path.join(workdir, "lstm.ckpt"), "rnn/basic_lstm_cell", gates=4)
    lstm = ku.tf1.BasicLSTMCell(num_units=n_neurons)  # or keras.layers.LSTMCell(n_neurons)
    ku.load_tf1_weights(lstm, lstm_checkpoint)  # default scope: "rnn/basic_lstm_cell"
    outputs, state = ku.dynamic_rnn(lstm, X_batch)  # state: TF1's LSTMStateTuple(c, h)

    # TF1's BasicLSTMCell, by hand: i, j, f, o = split(concat([x_t, h]) @ kernel + bias), forget_bias = 1.
    reader = tf.train.load_checkpoint(lstm_checkpoint)
    tf1_kernel = reader.get_tensor("rnn/basic_lstm_cell/kernel")  # [n_inputs + n_neurons, 4 * n_neurons]
    tf1_bias = reader.get_tensor("rnn/basic_lstm_cell/bias")
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c = h = np.zeros((len(X_batch), n_neurons), "float32")
    expected = []
    for t in range(X_batch.shape[1]):
        i, j, f, o = np.split(np.concatenate([X_batch[:, t], h], axis=1) @ tf1_kernel + tf1_bias, 4, axis=1)
        c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
        h = sigmoid(o) * np.tanh(c)
        expected.append(h)
    expected = np.stack(expected, axis=1)
    print("LSTM: max |keras_unroll - TF1 formula|:", float(np.abs(outputs.numpy() - expected).max()))
    assert np.allclose(outputs, expected, atol=1e-5)
    assert np.allclose(state.c, c, atol=1e-5) and np.allclose(state.h, h, atol=1e-5)
