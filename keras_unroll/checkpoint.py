"""`load_tf1_weights`: read a TF1 `BasicRNNCell` checkpoint into a Keras cell, without a TF1 graph."""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import step as step_lib


def _listing(variables: Dict[str, Any]) -> str:
    shown = [f"{name} {list(shape)}" for name, shape in sorted(variables.items()) if not name.startswith("_")]
    return ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "") or "(nothing)"


def load_tf1_weights(cell: Any, checkpoint: str, scope: str = "rnn/basic_rnn_cell") -> Tuple[np.ndarray, ...]:
    """Loads a TF1 `BasicRNNCell`'s weights from a checkpoint into a Keras cell.

    TF1's `BasicRNNCell` kept one concatenated kernel `[F + H, H]` (it multiplied `concat([x_t, h_{t-1}])`)
    and a bias `[H]`, under `<scope>/kernel` and `<scope>/bias`. This reads them with
    `tf.train.load_checkpoint` (no TF1 graph or session) and splits the kernel into the cell's
    `kernel` `(F, H)` and `recurrent_kernel` `(H, H)`.

    Args:
        cell: A `BasicRNNCell` or `keras.layers.SimpleRNNCell` with `units == H`. An unbuilt cell is built
            for the checkpoint's `F`; a built one must match it.
        checkpoint: A checkpoint prefix (`path/model.ckpt`) or a directory holding a `checkpoint` file.
        scope: The variable scope of the cell in the TF1 graph. Default: `"rnn/basic_rnn_cell"`, what
            `static_rnn`/`dynamic_rnn` created; a leading `/` or a trailing `/kernel` is ignored.

    Returns:
        The weights set on the cell, `(kernel, recurrent_kernel, bias)`.

    Raises:
        FileNotFoundError: no checkpoint at `checkpoint`.
        ValueError: the scope is not in the checkpoint, or its shapes do not fit the cell (the message lists
            what the checkpoint holds), the cell was built for another `F`, or a non-zero bias would be
            dropped by a cell with `use_bias=False`.
        TypeError: the cell is not a `SimpleRNNCell` (e.g. an `LSTMCell`).

    Example:

    ```python
    cell = ku.BasicRNNCell(num_units=5)
    ku.load_tf1_weights(cell, "my_model/model.ckpt", scope="rnn/basic_rnn_cell")
    outputs, state = ku.dynamic_rnn(cell, X)
    ```
    """
    units = getattr(cell, "units", None)
    if not isinstance(cell, keras.layers.SimpleRNNCell):
        raise TypeError(
            "load_tf1_weights fills a BasicRNNCell or keras.layers.SimpleRNNCell. "
            f"Received: cell={cell!r}"
        )
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        found = tf.train.latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"No TF1 checkpoint in the directory {path!r} (no `checkpoint` index file).")
        path = found
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:  # missing, or an index that is not a checkpoint's
        raise FileNotFoundError(
            f"Could not read a TF checkpoint at {path!r}: give the prefix (e.g. 'model.ckpt', without "
            f"'.index'/'.data-*'). TensorFlow said: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from error
    variables = reader.get_variable_to_shape_map()
    scope = scope.strip("/")
    if scope.endswith("/kernel"):
        scope = scope[: -len("/kernel")]
    kernel_name, bias_name = f"{scope}/kernel", f"{scope}/bias"
    if kernel_name not in variables:
        raise ValueError(
            f"No BasicRNNCell kernel under scope {scope!r} in the checkpoint {path!r}: expected a variable "
            f"{kernel_name!r}. The checkpoint holds: {_listing(variables)}. Received: scope={scope!r}"
        )
    try:
        kernel = reader.get_tensor(kernel_name)
        bias = reader.get_tensor(bias_name) if bias_name in variables else None
    except (tf.errors.OpError, IndexError) as error:  # a damaged or truncated .data file
        raise ValueError(
            f"The checkpoint {path!r} lists {kernel_name!r} but its data cannot be read (a damaged, truncated "
            f"or missing .data file). TensorFlow said: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from error
    if kernel.ndim != 2 or kernel.shape[1] != units or kernel.shape[0] <= units:
        raise ValueError(
            f"The checkpoint's {kernel_name!r} has shape {list(kernel.shape)}, but a BasicRNNCell with "
            f"units={units} needs [features + {units}, {units}]. The checkpoint holds: {_listing(variables)}"
        )
    features = kernel.shape[0] - units
    built = step_lib.built_input_dim(cell)
    if built is not None and built != features:
        raise ValueError(
            f"The cell was built for {built} input features, but the checkpoint's {kernel_name!r} "
            f"[F + H, H] = {list(kernel.shape)} is for F={features}. Load into an unbuilt cell (it is then built "
            f"for F={features}). Received: a cell built for {built} features"
        )
    step_lib.build_cell(cell, features, getattr(cell, "compute_dtype", "float32"))
    weights = [kernel[:features], kernel[features:]]
    if getattr(cell, "use_bias", True):
        if bias is None or bias.shape != (units,):
            raise ValueError(
                f"The checkpoint has no bias {bias_name!r} of shape [{units}] for this cell "
                f"(found {None if bias is None else list(bias.shape)}). The checkpoint holds: {_listing(variables)}"
            )
        weights.append(bias)
    elif bias is not None and np.any(bias != 0):
        raise ValueError(
            f"The checkpoint's bias {bias_name!r} is not zero, but the cell has use_bias=False; dropping it would "
            "change every output. Use a cell with use_bias=True. Received: a cell with use_bias=False"
        )
    cell.set_weights([w.astype(cell.variable_dtype if hasattr(cell, "variable_dtype") else w.dtype) for w in weights])
    return tuple(weights)
