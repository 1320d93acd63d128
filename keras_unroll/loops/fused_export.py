"""The serving loop of an LSTM or GRU in the form converters fuse: TFLite's `UNIDIRECTIONAL_SEQUENCE_LSTM`,
ONNX's `LSTM` and `GRU` ops (issue #23).

A serving graph (`plan.serving_trace`: `model.export`, the converters) of a `DynamicUnroll` over an LSTM or GRU
whose maths the fused ops compute (`kind`) runs here instead of the generic step's while loop. Both converters
recognise a sequence op by its shape in the graph, so this module writes the loop in that shape; the numbers
are the cell's own (Keras' `LSTMCell`/`GRUCell` maths, `kernels/cells.py`):

- TFLite (`prepare_composite_functions_tf`) replaces a function whose `api_implements` attribute starts
  with `"lstm_"` by its fused sequence op, reading the function's contract: arguments `(inputs, init_h,
  init_c, kernel, recurrent_kernel, bias)` with Keras' gate order `i, f, c, o` and one `(4H,)` bias, the
  function attributes `time_major` and `go_backwards`, and five results of which only the first two may be
  used: `last_output`, `outputs`, `(h, c, runtime)`. It fuses only when the states' shapes (the batch) are
  static, i.e. a SavedModel exported with a fixed batch; otherwise, or when the final states are used
  (`return_state`, `stateful`), it keeps the function's body, which converts with builtin ops as it is.
- tf2onnx (`rewriter/lstm_tf2_rewriter.py`, `gru_tf2_rewriter.py`) matches the body of a while loop: the step
  read from a TensorList (`TensorArray.unstack`/`read`), `x W + h U` then `bias_add`, the split gates with
  sigmoid and tanh, and the output written to a TensorList stacked after the loop; the GRU pattern is
  Keras' `reset_after=True` cell (ONNX's `linear_before_reset=1`), with the input and recurrent biases apart.

Everything here is inference only: no mask, `sequence_length`, dropout or gradient (`kind` says which calls
qualify; the planner runs the others in the generic serving loop).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, List, Optional, Tuple

import keras
import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.kernels import cells


def kind(cell: Any, prepared: step_lib.Prepared) -> Optional[str]:
    """`"lstm"` or `"gru"` when a serving call of `cell` on `prepared` takes the fused-export loop, else None.

    Taken: a Keras `LSTMCell` (or `ku.tf1.BasicLSTMCell`, `ku.tf1.LSTMCell` without peepholes, projection or
    clipping: `cells.gated_family`), or a `GRUCell` with `reset_after=True`, with tanh and sigmoid as activations
    (the fused ops' own), float32, and no step to skip (no mask, no `sequence_length`).
    """
    name = cells.gated_family(cell)
    if name is None or prepared.valid is not None or prepared.max_length is not None:
        return None
    if prepared.invalid_rows is not None or prepared.features == 0 or prepared.inputs.dtype != tf.float32:
        return None
    if cell.activation is not keras.activations.tanh or cell.recurrent_activation is not keras.activations.sigmoid:
        return None
    if name == "gru" and not cell.reset_after:
        return None
    return name


def _weights(cell: Any, name: str, dtype: Any) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(kernel, recurrent_kernel, bias)` as tensors; a cell without bias gets zeros (`(4H,)` or `(2, 3H)`)."""
    kernel = tf.cast(tf.convert_to_tensor(cell.kernel), dtype)
    recurrent_kernel = tf.cast(tf.convert_to_tensor(cell.recurrent_kernel), dtype)
    if cell.use_bias:
        bias = tf.cast(tf.convert_to_tensor(cell.bias), dtype)
    else:
        bias = tf.zeros([4 * cell.units] if name == "lstm" else [2, 3 * cell.units], dtype)
    return kernel, recurrent_kernel, bias


def _sequence_lists(inputs: tf.Tensor, init_h: tf.Tensor, keep_all: bool) -> Tuple[tf.TensorArray, tf.TensorArray]:
    """The steps as a TensorList to read, and a TensorList of zeros to write the outputs into: `(T, B, H)`
    when they are kept (`keep_all`), else one `(B, H)` item that every step overwrites. tf2onnx's patterns
    need the write; TFLite's loop copies the whole list at each write, so without `return_sequences` one item
    keeps its converted loop as fast as the generic one (docs/deploy.md). The list is made from a tensor, not
    reserved: TFLite lowers a reserved list only with a static element shape."""
    steps = tf.shape(inputs)[0]
    reads = tf.TensorArray(inputs.dtype, size=steps, element_shape=inputs.shape[1:]).unstack(inputs)
    items = steps if keep_all else 1
    zeros = tf.zeros(tf.concat([[items], tf.shape(init_h)], 0), inputs.dtype)
    writes = tf.TensorArray(inputs.dtype, size=items, element_shape=init_h.shape).unstack(zeros)
    return reads, writes


def _lstm_sequence(inputs, init_h, init_c, kernel, recurrent_kernel, bias, keep_all=True):
    """The LSTM over time-major `inputs`, in the converters' contract (module docstring). Returns
    `(last_output, outputs, h, c, runtime)`; `outputs` is `(T, B, H)` with `keep_all`, else a placeholder
    (TFLite's fused form returns the sequence there); `runtime` is a placeholder result the contract has."""
    reads, writes = _sequence_lists(inputs, init_h, keep_all)

    def body(t, writes, h, c):
        z = tf.matmul(reads.read(t), kernel) + tf.matmul(h, recurrent_kernel)
        z = tf.nn.bias_add(z, bias)
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
        i, f, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.sigmoid(z_o)
        c = f * c + i * tf.tanh(z_c)
        h = o * tf.tanh(c)
        return t + 1, writes.write(t if keep_all else 0, h), h, c

    steps = tf.shape(inputs)[0]
    _, writes, h, c = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), writes, init_h, init_c))
    outputs = writes.stack()
    if keep_all:
        outputs.set_shape(inputs.shape[:2].concatenate(init_h.shape[1:]))
    # The last output is the final h: the same as outputs[-1] for T > 0 (what TFLite's fused form returns).
    return h, outputs, h, c, tf.constant(0.0, inputs.dtype)


def _gru_sequence(inputs, init_h, kernel, recurrent_kernel, bias, keep_all=True):
    """Keras' GRU with `reset_after=True` over time-major `inputs`: `(outputs (T, B, H) or a placeholder, h)`."""
    reads, writes = _sequence_lists(inputs, init_h, keep_all)
    input_bias, recurrent_bias = tf.unstack(bias)

    def body(t, writes, h):
        x_z, x_r, x_h = tf.split(tf.nn.bias_add(tf.matmul(reads.read(t), kernel), input_bias), 3, axis=1)
        h_z, h_r, h_h = tf.split(tf.nn.bias_add(tf.matmul(h, recurrent_kernel), recurrent_bias), 3, axis=1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        h = z * h + (1.0 - z) * tf.tanh(x_h + r * h_h)
        return t + 1, writes.write(t if keep_all else 0, h), h

    steps = tf.shape(inputs)[0]
    _, writes, h = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), writes, init_h))
    outputs = writes.stack()
    if keep_all:
        outputs.set_shape(inputs.shape[:2].concatenate(init_h.shape[1:]))
    return outputs, h


def fused_export_loop(
    cell: Any, name: str, prepared: step_lib.Prepared, *, return_all_outputs: bool = True
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """Runs `cell` (`kind(cell, prepared) == name`) over `prepared` in the fused-export form.

    Returns `(outputs (T, B, H) or None, last_output, final_state)` as the other loops do (`final_state` in
    Keras' order: `[h, c]` or `[h]`). `prepared` is time-major and already reversed for `go_backwards`, so the
    function's own `go_backwards` is False and its outputs are in the order the layer expects.
    """
    inputs = prepared.inputs
    kernel, recurrent_kernel, bias = _weights(cell, name, inputs.dtype)
    if name == "lstm":
        # A new function per trace: what is traced is kept by the graph that calls it, not by this module.
        attributes = {"api_implements": f"lstm_{uuid.uuid4().hex}", "time_major": True, "go_backwards": False}
        function = tf.function(
            functools.partial(_lstm_sequence, keep_all=return_all_outputs),
            autograph=False,
            experimental_attributes=attributes,
        )
        h0, c0 = prepared.initial_state[0], prepared.initial_state[1]
        last, outputs, h, c, _ = function(inputs, h0, c0, kernel, recurrent_kernel, bias)
        state = [h, c]
    else:
        h0 = prepared.initial_state[0]
        outputs, h = _gru_sequence(inputs, h0, kernel, recurrent_kernel, bias, keep_all=return_all_outputs)
        last, state = h, [h]
    return (outputs if return_all_outputs else None), last, state
