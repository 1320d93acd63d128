"""The loop strategies: `static_rnn` (a Python `for`) and `dynamic_rnn` (`tf.while_loop`)."""

from keras_unroll.loops.dynamic import dynamic_rnn
from keras_unroll.loops.static import static_rnn

__all__ = ["dynamic_rnn", "static_rnn"]
