"""Variable-length sequences: the book's padded batch with `sequence_length = [2, 1, 2, 2]`.

In TF1 you fed `dynamic_rnn(cell, X, sequence_length=seq_length)` and got, past each row's length,
zero outputs and the state copied through: the final state is the state at the row's last valid step.
keras_unroll keeps exactly that (`sequence_length`, both functions and both layers), and also accepts a
Keras mask (from `Embedding(mask_zero=True)` or `Masking`), which emits the last valid output instead of zeros.

Run:  python examples/sequence_lengths.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="accepted for CI; this script is already quick")
parser.parse_args()
np.set_printoptions(precision=4, suppress=True)
keras.utils.set_random_seed(42)

# The book's mini-batch: 4 instances, 2 steps, 3 inputs. Instance 1 has one step; its second is padding.
X_batch = np.array(
    [
        [[0, 1, 2], [9, 8, 7]],  # instance 0
        [[3, 4, 5], [0, 0, 0]],  # instance 1 (padded with a zero vector)
        [[6, 7, 8], [6, 5, 4]],  # instance 2
        [[9, 0, 1], [3, 2, 1]],  # instance 3
    ],
    dtype="float32",
)
seq_length = np.array([2, 1, 2, 2])

# TF1: outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32, sequence_length=seq_length)
cell = ku.BasicRNNCell(num_units=5)
outputs, states = ku.dynamic_rnn(cell, X_batch, sequence_length=seq_length)
print("outputs (batch, steps, units):\n", outputs.numpy())
print("states (batch, units):\n", states.numpy())

# Instance 1: the output at t=1 (past its length) is zero, and its final state is its output at t=0.
print("outputs[1, 1] is zero:", np.allclose(outputs[1, 1], 0.0))
print("states[1] == outputs[1, 0] (state copied through):", np.allclose(states[1], outputs[1, 0]))
assert np.allclose(outputs[1, 1], 0.0) and np.allclose(states[1], outputs[1, 0])

# The same with static_rnn and with both layers (same cell, same weights, same numbers).
static_outputs, static_states = ku.static_rnn(cell, X_batch, sequence_length=seq_length)
assert np.allclose(static_outputs, outputs, atol=1e-5) and np.allclose(static_states, states, atol=1e-5)
for layer_class in (ku.StaticUnroll, ku.DynamicUnroll):
    layer = layer_class(cell, return_sequences=True, return_state=True)
    layer_outputs, layer_state = layer(X_batch, sequence_length=seq_length)
    assert np.allclose(layer_outputs, outputs, atol=1e-5) and np.allclose(layer_state, states, atol=1e-5)
    print(f"{layer_class.__name__}(...)(X, sequence_length=seq_length) gives the same outputs and states")

# Keras' way: a mask. Masked steps copy the state too, but the output repeats the last valid output
# (Keras' convention) unless `zero_output_for_mask=True`, which gives TF1's zeros.
mask = np.arange(X_batch.shape[1])[None, :] < seq_length[:, None]  # (batch, steps) booleans
keras_style = ku.DynamicUnroll(cell, return_sequences=True)(X_batch, mask=mask)
tf1_style = ku.DynamicUnroll(cell, return_sequences=True, zero_output_for_mask=True)(X_batch, mask=mask)
print("with a mask, outputs[1, 1] repeats outputs[1, 0]:", np.allclose(keras_style[1, 1], outputs[1, 0]))
print("with a mask and zero_output_for_mask=True, outputs[1, 1] is zero:", np.allclose(tf1_style[1, 1], 0.0))
assert np.allclose(keras_style[1, 1], outputs[1, 0]) and np.allclose(tf1_style, outputs, atol=1e-5)

# return_sequences=False returns each row's last *valid* output: the final state, for a BasicRNNCell.
last = ku.DynamicUnroll(cell)(X_batch, sequence_length=seq_length)
print("last valid outputs == final states:", np.allclose(last, states, atol=1e-5))
