"""Hands-On ML chapter 14's time series, sequence to sequence, with `DynamicUnroll` in a Keras model.

The book predicted, at every one of 20 steps, the next value of `t·sin(t)/3 + 2·sin(5t)` with
`dynamic_rnn` over an `OutputProjectionWrapper(BasicRNNCell(100))`. In Keras 3 the wrapper is a `Dense`
layer applied at every step (`return_sequences=True`, then `Dense(1)` acts on the last axis), and the
placeholder/session training loop is `model.fit`. (`keras-unroll demo` trains the sequence-to-one version.)

Run:  python examples/time_series.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="small data, 1 epoch (seconds)")
args = parser.parse_args()
keras.utils.set_random_seed(42)

n_steps, n_inputs, n_neurons, n_outputs = 20, 1, (16 if args.quick else 100), 1
resolution, t_min, t_max = 0.1, 0.0, 30.0


def time_series(t):
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def windows(count, rng):
    """`count` random windows: inputs are steps 0..19, targets the same window shifted one step ahead."""
    starts = rng.uniform(t_min, t_max - (n_steps + 1) * resolution, size=(count, 1))
    values = time_series(starts + np.arange(n_steps + 1) * resolution)[..., None].astype("float32")
    return values[:, :-1], values[:, 1:]


rng = np.random.default_rng(0)
X_train, y_train = windows(256 if args.quick else 5000, rng)

# TF1: cell = OutputProjectionWrapper(BasicRNNCell(n_neurons), output_size=n_outputs)
#      outputs, states = tf.nn.dynamic_rnn(cell, X, dtype=tf.float32)
model = keras.Sequential(
    [
        keras.Input((n_steps, n_inputs)),
        ku.DynamicUnroll(ku.BasicRNNCell(num_units=n_neurons), return_sequences=True),  # (batch, 20, 100)
        keras.layers.Dense(n_outputs),  # the output projection, at every step: (batch, 20, 1)
    ]
)
# TF1: loss = tf.reduce_mean(tf.square(outputs - y)); AdamOptimizer(0.001).minimize(loss); sess.run(...)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
model.fit(X_train, y_train, batch_size=50, epochs=1 if args.quick else 5, verbose=2)

# The book's test instance: 20 steps starting at t=12.2; predict the next value at each step.
t_instance = np.linspace(12.2, 12.2 + resolution * (n_steps + 1), n_steps + 1)
X_new = time_series(t_instance[:-1]).reshape(1, n_steps, 1).astype("float32")
y_pred = model.predict(X_new, verbose=0)
print("target     :", np.round(time_series(t_instance[1:]), 3))
print("prediction :", np.round(y_pred[0, :, 0], 3))

# Static and dynamic unrolling are twins: the same weights give the same predictions.
static_model = keras.Sequential(
    [
        keras.Input((n_steps, n_inputs)),
        ku.StaticUnroll(ku.BasicRNNCell(num_units=n_neurons), return_sequences=True),
        keras.layers.Dense(n_outputs),
    ]
)
static_model.set_weights(model.get_weights())
print(
    "StaticUnroll with the same weights agrees:", np.allclose(static_model.predict(X_new, verbose=0), y_pred, atol=1e-4)
)
