"""keras_unroll: TF1's static vs dynamic RNN unrolling as fast, drop-in Keras 3 layers.

Public surface:

- `BasicRNNCell`: the basic RNN cell, weight-compatible with `keras.layers.SimpleRNNCell`.
- `StaticUnroll`, `DynamicUnroll`: the two unrollings as Keras layers (twins).
- `static_rnn`, `dynamic_rnn`: the functional loops, with TF1 semantics.
- `bidirectional_dynamic_rnn`, `static_bidirectional_rnn`: TF1's bidirectional functions.
- `raw_rnn`: TF1's `tf.nn.raw_rnn`, the loop a function of yours drives (decoders).
- `load_tf1_weights`: read TF1 checkpoints (every `tf.nn.rnn_cell` cell, stacks, wrappers, dense layers) into Keras.
- `configure_gpus`: the TF2 replacement for TF1's `ConfigProto` GPU options.
- `inspect`: graph and memory inspection (`graph_stats`, `compare_unrolling`, `export_graph`, `show_graph`).
- `testing`: `generic_only()`, the switch that runs every cell with the generic step (for comparisons).
- `tf1`: TF1's `tf.nn.rnn_cell` / `tf.contrib.rnn` vocabulary (`BasicLSTMCell`, `LSTMCell`, `GRUCell`, `MultiRNNCell`,
  wrappers) and its functions (`from keras_unroll import tf1 as rnn`; `rnn.static_rnn(...)`).
"""

from importlib.metadata import PackageNotFoundError, version

from keras_unroll import (  # `_private` first: it refuses a TensorFlow < 2.16 or a Keras < 3.8 (ImportError)
    _private,  # noqa: F401  (imported for its version check)
    inspect,
    testing,
    tf1,
)
from keras_unroll.bidirectional import bidirectional_dynamic_rnn, static_bidirectional_rnn
from keras_unroll.cell import BasicRNNCell
from keras_unroll.checkpoint import load_tf1_weights
from keras_unroll.functional import dynamic_rnn, static_rnn
from keras_unroll.gpu import GpuReport, configure_gpus
from keras_unroll.layers import DynamicUnroll, StaticUnroll
from keras_unroll.raw import raw_rnn

try:
    __version__ = version("keras-unroll")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BasicRNNCell",
    "DynamicUnroll",
    "GpuReport",
    "StaticUnroll",
    "bidirectional_dynamic_rnn",
    "configure_gpus",
    "dynamic_rnn",
    "inspect",
    "load_tf1_weights",
    "raw_rnn",
    "static_bidirectional_rnn",
    "static_rnn",
    "testing",
    "tf1",
]
