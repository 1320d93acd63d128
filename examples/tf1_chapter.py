"""The RNN cells of the seed chapter (Hands-On ML, 1st ed., chapter 14) ported from TF1, one by one.

Each section shows the TF1 line in a comment, its `keras_unroll` port below it, prints what it computed
and checks it (shapes, TF1's state structures, and TF1's equations recomputed in NumPy):

1. a deep RNN (`MultiRNNCell` of three `BasicRNNCell`s) and the book's `tf.concat(axis=1, values=states)`;
2. dropout (`DropoutWrapper`): active while training only;
3. LSTM (`BasicLSTMCell` stacked, `states[-1][1]` is the top layer's `h`);
4. LSTM with peepholes (`LSTMCell(use_peepholes=True)`) against its equations;
5. GRU (`GRUCell`) against TF1's equations;
6. the time-series model with `OutputProjectionWrapper`, trained a little;
7. an encoder–decoder: the encoder's final `LSTMStateTuple`s start the decoder.

Run: python examples/tf1_chapter.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="fewer training iterations (CI's smoke test)")
args = parser.parse_args()
keras.utils.set_random_seed(42)
rng = np.random.default_rng(42)
sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731


def check_close(name, got, want, tol=1e-5):
    error = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    print(f"   {name}: max |difference| = {error:.2e}")
    assert error < tol, f"{name} differs by {error}"


# 1. A deep RNN --------------------------------------------------------------------------------------
print("1. Deep RNN: MultiRNNCell of 3 BasicRNNCells")
n_steps, n_inputs, n_neurons, n_layers = 5, 2, 100, 3
X_batch = rng.random((2, n_steps, n_inputs)).astype("float32")
# TF1: layers = [tf.contrib.rnn.BasicRNNCell(num_units=n_neurons) for layer in range(n_layers)]
#      multi_layer_cell = tf.contrib.rnn.MultiRNNCell(layers)
#      outputs, states = tf.nn.dynamic_rnn(multi_layer_cell, X, dtype=tf.float32)
layers = [ku.tf1.BasicRNNCell(num_units=n_neurons) for layer in range(n_layers)]
multi_layer_cell = ku.tf1.MultiRNNCell(layers)
outputs, states = ku.dynamic_rnn(multi_layer_cell, X_batch, dtype=tf.float32)
concat = tf.concat(axis=1, values=states)  # the book's line: one row per instance, every layer's state
print("   outputs", tuple(outputs.shape), "| states: a tuple of", len(states), "| concat", tuple(concat.shape))
assert tuple(outputs.shape) == (2, n_steps, n_neurons) and tuple(concat.shape) == (2, n_layers * n_neurons)
check_close("top layer's state = last output", states[-1], outputs[:, -1])

# 2. Dropout --------------------------------------------------------------------------------------------
print("2. DropoutWrapper: a new mask every step, only while training")
# TF1: keep_prob = tf.placeholder_with_default(1.0, shape=()); training feeds keep_prob=0.5
#      cells_drop = [tf.contrib.rnn.DropoutWrapper(cell, input_keep_prob=keep_prob) for cell in cells]
cells = [ku.tf1.BasicRNNCell(num_units=n_neurons) for layer in range(n_layers)]
cells_drop = [ku.tf1.DropoutWrapper(cell, input_keep_prob=0.5) for cell in cells]
dropout_cell = ku.tf1.MultiRNNCell(cells_drop)
inference, _ = ku.dynamic_rnn(dropout_cell, X_batch)  # Keras: no keep_prob placeholder, a training flag
training, _ = ku.dynamic_rnn(dropout_cell, X_batch, training=True)
plain, _ = ku.dynamic_rnn(ku.tf1.MultiRNNCell(cells), X_batch)
check_close("inference = the cells without dropout", inference, plain)
difference = float(np.max(np.abs(np.asarray(training) - np.asarray(plain))))
print(f"   training differs from inference by up to {difference:.3f}")
assert difference > 1e-3

# 3. LSTM ----------------------------------------------------------------------------------------------
print("3. BasicLSTMCell, stacked: states[-1][1] is the top layer's h")
n_steps, n_inputs, n_neurons, n_outputs = 28, 28, 150, 10
X_mnist = rng.random((4, n_steps, n_inputs)).astype("float32")  # stands in for MNIST rows
# TF1: lstm_cells = [tf.contrib.rnn.BasicLSTMCell(num_units=n_neurons) for layer in range(n_layers)]
#      multi_cell = tf.contrib.rnn.MultiRNNCell(lstm_cells)
#      outputs, states = tf.nn.dynamic_rnn(multi_cell, X, dtype=tf.float32)
#      top_layer_h_state = states[-1][1]
#      logits = tf.layers.dense(top_layer_h_state, n_outputs, name="softmax")
lstm_cells = [ku.tf1.BasicLSTMCell(num_units=n_neurons) for layer in range(n_layers)]
multi_cell = ku.tf1.MultiRNNCell(lstm_cells)
outputs, states = ku.dynamic_rnn(multi_cell, X_mnist, dtype=tf.float32)
top_layer_h_state = states[-1][1]
logits = keras.layers.Dense(n_outputs, name="softmax")(top_layer_h_state)
print("   states:", [type(s).__name__ for s in states], "| logits", tuple(logits.shape))
assert all(isinstance(s, ku.tf1.LSTMStateTuple) for s in states) and tuple(logits.shape) == (4, n_outputs)
check_close("states[-1][1] (h) = last output", top_layer_h_state, outputs[:, -1])

# 4. Peepholes ----------------------------------------------------------------------------------------
print("4. LSTMCell(use_peepholes=True) against TF1's equations")
# TF1: lstm_cell = tf.contrib.rnn.LSTMCell(num_units=n_neurons, use_peepholes=True)
peephole = ku.tf1.LSTMCell(num_units=8, use_peepholes=True)
x_step = rng.standard_normal((3, 1, 5)).astype("float32")
c0, h0 = rng.standard_normal((2, 3, 8)).astype("float32")
out, state = ku.dynamic_rnn(peephole, x_step, initial_state=ku.tf1.LSTMStateTuple(c0, h0))  # TF1's (c, h)
print("   weights:", [(w.name, tuple(w.shape)) for w in peephole.weights])
W, U, b = (np.asarray(w) for w in (peephole.kernel, peephole.recurrent_kernel, peephole.bias))
w_f, w_i, w_o = (np.asarray(w) for w in (peephole.w_f_diag, peephole.w_i_diag, peephole.w_o_diag))
i, f, j, o = np.split(x_step[:, 0] @ W + h0 @ U + b, 4, axis=1)  # Keras' gate order i, f, c (TF1's j), o
c = sigmoid(f + w_f * c0) * c0 + sigmoid(i + w_i * c0) * np.tanh(j)  # forget_bias is in b's f slice
h = sigmoid(o + w_o * c) * np.tanh(c)
check_close("c", state.c, c)
check_close("h", state.h, h)

# 5. GRU ----------------------------------------------------------------------------------------------
print("5. GRUCell against TF1's equations")
# TF1: gru_cell = tf.contrib.rnn.GRUCell(num_units=n_neurons)
gru_cell = ku.tf1.GRUCell(num_units=6)
h0 = rng.standard_normal((3, 6)).astype("float32")
_, h1 = ku.dynamic_rnn(gru_cell, x_step, initial_state=h0)
W, U, b = (np.asarray(w) for w in (gru_cell.kernel, gru_cell.recurrent_kernel, gru_cell.bias))
x0 = x_step[:, 0]
z = sigmoid(x0 @ W[:, :6] + h0 @ U[:, :6] + b[:6])  # TF1's "u"
r = sigmoid(x0 @ W[:, 6:12] + h0 @ U[:, 6:12] + b[6:12])
candidate = np.tanh(x0 @ W[:, 12:] + (r * h0) @ U[:, 12:] + b[12:])  # TF1 resets before the product
check_close("h", h1, z * h0 + (1 - z) * candidate)

# 6. Output projection: the time series --------------------------------------------------------------
print("6. OutputProjectionWrapper: predicting a time series")
n_steps, n_neurons = 20, 100
t_min, t_max, resolution = 0, 30, 0.1


def time_series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def next_batch(batch_size):
    t0 = rng.random((batch_size, 1)) * (t_max - t_min - n_steps * resolution)
    ts = t0 + np.arange(0.0, n_steps + 1) * resolution
    ys = time_series(ts).astype("float32")
    return ys[:, :-1].reshape(-1, n_steps, 1), ys[:, 1:].reshape(-1, n_steps, 1)


# TF1: cell = tf.contrib.rnn.OutputProjectionWrapper(
#          tf.contrib.rnn.BasicRNNCell(num_units=n_neurons, activation=tf.nn.relu), output_size=n_outputs)
#      outputs, states = tf.nn.dynamic_rnn(cell, X, dtype=tf.float32)
cell = ku.tf1.OutputProjectionWrapper(ku.tf1.BasicRNNCell(num_units=n_neurons, activation=tf.nn.relu), output_size=1)
optimizer = keras.optimizers.Adam(learning_rate=0.001)
X_val, y_val = next_batch(50)


def mse(X, y):
    outputs, _ = ku.dynamic_rnn(cell, X)
    return tf.reduce_mean(tf.square(outputs - y))


before = float(mse(X_val, y_val))
for _ in range(20 if args.quick else 600):
    X_train, y_train = next_batch(50)
    with tf.GradientTape() as tape:
        loss = mse(X_train, y_train)
    variables = cell.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
after = float(mse(X_val, y_val))
print(f"   validation MSE {before:.2f} -> {after:.2f}")
assert after < before

# 7. Encoder-decoder ---------------------------------------------------------------------------------
print("7. Encoder-decoder: the encoder's LSTMStateTuples start the decoder")
vocab, embed, units, batch = 50, 8, 16, 3
X_ids = rng.integers(0, vocab, (batch, 7))
X_lengths = np.array([7, 4, 2])
Y_ids = rng.integers(0, vocab, (batch, 5))
embeddings = keras.layers.Embedding(vocab, embed)
# TF1: encoder_cell = MultiRNNCell([BasicLSTMCell(units) for _ in range(2)])
#      _, encoder_state = tf.nn.dynamic_rnn(encoder_cell, X_embedded, sequence_length=X_lengths, dtype=tf.float32)
#      decoder_outputs, _ = tf.nn.dynamic_rnn(decoder_cell, Y_embedded, initial_state=encoder_state)
encoder_cell = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(units) for _ in range(2)])
decoder_cell = ku.tf1.MultiRNNCell([ku.tf1.BasicLSTMCell(units) for _ in range(2)])
encoder_outputs, encoder_state = ku.dynamic_rnn(encoder_cell, embeddings(X_ids), sequence_length=X_lengths)
decoder_outputs, _ = ku.dynamic_rnn(decoder_cell, embeddings(Y_ids), initial_state=encoder_state)
from_zero, _ = ku.dynamic_rnn(decoder_cell, embeddings(Y_ids))
print("   encoder state:", [type(s).__name__ for s in encoder_state], "| decoder outputs", tuple(decoder_outputs.shape))
assert all(isinstance(s, ku.tf1.LSTMStateTuple) for s in encoder_state)
check_close(
    "encoder h = output at each row's last step",
    encoder_state[-1].h,
    [encoder_outputs[row, length - 1] for row, length in enumerate(X_lengths)],
)
assert float(np.max(np.abs(np.asarray(decoder_outputs) - np.asarray(from_zero)))) > 1e-4  # the state was used
# TF1's bidirectional encoder: (out_fw, out_bw), (state_fw, state_bw) = tf.nn.bidirectional_dynamic_rnn(...)
(out_fw, out_bw), (state_fw, state_bw) = ku.bidirectional_dynamic_rnn(
    ku.tf1.GRUCell(units), ku.tf1.GRUCell(units), embeddings(X_ids), sequence_length=X_lengths
)
check_close("backward state = backward output at step 0", state_bw, out_bw[:, 0])
print("All chapter ports check out.")
