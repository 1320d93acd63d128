"""The TF1 notebook on static vs dynamic unrolling, ported cell by cell to keras_unroll (TF2 / Keras 3).

Each block below starts with the notebook cell it replaces (`In [n]`) and a `# TF1 -> TF2:` line saying
what changed. There are no placeholders or sessions any more: tensors are computed eagerly, so every
quantity the notebook built (Y0, Y1, outputs, states) is printed.

Run:  python examples/seed_notebook.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import keras_unroll as ku
from keras_unroll import inspect as ku_inspect

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="accepted for CI; this script is already quick")
args = parser.parse_args()
np.set_printoptions(precision=4, suppress=True)

# ---- In [1]: imports. `from show import show_graph` ----------------------------------------------------
# TF1 -> TF2: `show_graph` embedded TensorBoard's viewer; `keras_unroll.inspect.show_graph` prints the op
# counts of the traced graph (HTML in Jupyter) and exports it for `tensorboard --logdir ...`.

# ---- In [2]: GPU memory: CUDA_VISIBLE_DEVICES + tf.ConfigProto(gpu_options...) ---------------------------
# TF1 -> TF2: no session to pass a ConfigProto to; `configure_gpus` sets the same options through
# `tf.config` before TensorFlow starts its devices. On a machine without GPU it reports that and does nothing.
try:
    from keras_unroll.gpu import configure_gpus
except ImportError:  # an older keras_unroll without the GPU helper
    configure_gpus = None
if configure_gpus is not None:
    report = configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True)
    print("In [2]:", str(report).splitlines()[0])

# ---- In [3]: sizes ------------------------------------------------------------------------------------
n_inputs = 3
n_neurons = 5

# ---- In [4]: X0, X1 = tf.placeholder(tf.float32, [None, n_inputs]) -----------------------------------
# TF1 -> TF2: no placeholders; use arrays (the book's mini-batch of 4 instances at t=0 and t=1).
X0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], dtype="float32")
X1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], dtype="float32")

# ---- In [5]: basic_cell = tf.contrib.rnn.BasicRNNCell(num_units=n_neurons); static_rnn(cell, [X0, X1]) --
# TF1 -> TF2: `ku.BasicRNNCell` (same `num_units` spelling) and `ku.static_rnn` with the same signature:
# a list of steps in, a list of outputs and the final state out. `dtype` is accepted and not needed.
basic_cell = ku.BasicRNNCell(num_units=n_neurons)
output_seqs, states = ku.static_rnn(basic_cell, [X0, X1], dtype="float32")
Y0, Y1 = output_seqs
print("In [5]: Y0 =\n", Y0.numpy())
print("In [5]: Y1 =\n", Y1.numpy())
print("In [5]: states == Y1 (a BasicRNNCell's state is its output):", np.allclose(states, Y1))

# The same as a Keras layer: StaticUnroll takes the list [X0, X1] too and returns a list of outputs.
layer = ku.StaticUnroll(basic_cell, return_sequences=True)
assert np.allclose(layer([X0, X1])[1], Y1, atol=1e-6)

# ---- In [9]-[12]: n_steps = 2; X = placeholder [None, n_steps, n_inputs]; unstack(transpose(X)) ----------
# TF1 -> TF2: no transpose/unstack/stack dance: `ku.static_rnn` takes the [batch, time, features] tensor
# and returns outputs in the same layout. `tf.reset_default_graph()` has no equivalent and needs none.
n_steps = 2
X_batch = np.stack([X0, X1], axis=1)  # (batch=4, n_steps=2, n_inputs=3)
basic_cell = ku.BasicRNNCell(num_units=n_neurons)
outputs, states = ku.static_rnn(basic_cell, X_batch)
print("In [12]: outputs.shape =", tuple(outputs.shape), "(batch, n_steps, n_neurons)")
print("In [12]: outputs =\n", outputs.numpy())
print("In [12]: states =\n", states.numpy())

# The notebook's claim: "a statically unrolled graph bloats as the number of steps grows".
for steps in (2, 20):
    stats = ku_inspect.graph_stats(ku.StaticUnroll(ku.BasicRNNCell(n_neurons)), (4, steps, n_inputs))
    print(f"StaticUnroll graph at n_steps={steps}: {stats.num_ops} ops")

# ---- In [14]: outputs, states = tf.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32) ----------------------
# TF1 -> TF2: `ku.dynamic_rnn` with the same signature; one tf.while_loop, so the graph size does not
# depend on n_steps. `swap_memory=True` is accepted (TF2's while loop ignores it).
dynamic_outputs, dynamic_states = ku.dynamic_rnn(basic_cell, X_batch, dtype="float32")
print("In [14]: dynamic outputs =\n", dynamic_outputs.numpy())
print("In [14]: dynamic states =\n", dynamic_states.numpy())
print("In [14]: dynamic == static (same cell, same weights):", np.allclose(dynamic_outputs, outputs, atol=1e-5))
for steps in (2, 20):
    stats = ku_inspect.graph_stats(ku.DynamicUnroll(ku.BasicRNNCell(n_neurons)), (4, steps, n_inputs))
    print(f"DynamicUnroll graph at n_steps={steps}: {stats.num_ops} ops")

# ---- show_graph(tf.get_default_graph()) ----------------------------------------------------------------
# TF1 -> TF2: there is no default graph to show; show the graph of a layer instead.
# In Jupyter, leave `ku_inspect.show_graph(...)` as the cell's last line to get an HTML table.
logdir = os.path.join("logs", "seed_notebook")  # then: tensorboard --logdir logs
print(ku_inspect.show_graph(ku.DynamicUnroll(ku.BasicRNNCell(n_neurons)), (4, n_steps, n_inputs), logdir=logdir))
