"""`run_layer_test`: the contract every Keras layer of this package keeps.

Our own small version of the checks Keras runs on its built-in layers (its helper is private): one call
checks config round trip, weight counts, symbolic and eager output shapes against `compute_output_shape`,
a training step through `model.fit`, and mixed precision. Tests call it once per (layer, configuration).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


def fresh_copy(value: Any) -> Any:
    """A new, unbuilt copy of a layer argument (a cell, a list of cells), so instances never share weights."""
    if isinstance(value, keras.layers.Layer):
        return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(value))
    if isinstance(value, list):
        return [fresh_copy(v) for v in value]
    return value


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def _as_shapes(shape: Any) -> list:
    """`compute_output_shape`'s answer as a flat list of tuples, one per output tensor.

    Flat, because nesting differs between the symbolic and the eager result for stacked cells (as it does
    for `keras.layers.RNN`: a sub-cell's single state is `(B, H)` symbolically, `[(B, H)]` eagerly).
    """
    if _is_shape(shape):
        return [tuple(shape)]
    return [leaf for part in shape for leaf in _as_shapes(part)]


def _fill_batch(shape: tuple, known: Sequence[int]) -> tuple:
    return tuple(k if s is None else s for s, k in zip(shape, known))


def run_layer_test(
    layer_cls: Callable[..., keras.layers.Layer],
    init_kwargs: Dict[str, Any],
    input_shape: tuple,
    *,
    expected_output_shape: Any = None,
    expected_num_trainable_weights: Optional[int] = None,
    expected_num_non_trainable_weights: int = 0,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
    seed: int = 0,
) -> keras.layers.Layer:
    """Checks one layer configuration against the Keras layer contract.

    Args:
        layer_cls: The layer class.
        init_kwargs: Constructor arguments. Layer-valued arguments (cells) are copied for each instance.
        input_shape: The full input shape, batch (or time, with `time_major`) axis included, e.g. `(2, 5, 3)`.
        expected_output_shape: If given, `compute_output_shape(input_shape)` must equal it (a tuple, or a
            list of tuples with `return_state`): a hand-written check, so the test is not circular.
        expected_num_trainable_weights: If given, the number of trainable weights after build.
        expected_num_non_trainable_weights: The number of non-trainable weights after build.
        run_training_check: Run one `model.fit` step and check that every trainable weight moved.
        run_mixed_precision_check: Build the layer under `mixed_float16`: float16 outputs, float32 variables.
        seed: Seed of the random inputs and targets.

    Returns:
        The eagerly called layer (built), for further checks.
    """
    rng = np.random.default_rng(seed)

    def make(**extra: Any) -> keras.layers.Layer:
        kwargs = {name: fresh_copy(value) for name, value in init_kwargs.items()}
        return layer_cls(**kwargs, **extra)

    # 1. Config round trip, before and after build.
    layer = make()
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    x = rng.standard_normal(input_shape).astype("float32")
    layer.build(input_shape)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    # 2. Weight counts.
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, layer.trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, layer.non_trainable_weights

    # 3. Symbolic call: the functional outputs carry `compute_output_shape`'s shapes.
    declared = _as_shapes(layer.compute_output_shape(input_shape))
    if expected_output_shape is not None:
        assert declared == _as_shapes(expected_output_shape), (declared, expected_output_shape)
    symbolic_layer = make()
    inputs = keras.Input(batch_shape=input_shape)
    symbolic = tf.nest.flatten(symbolic_layer(inputs))
    assert [tuple(t.shape) for t in symbolic] == declared

    # 4. Eager call: real outputs have those shapes (batch axes filled in), and are finite.
    eager = tf.nest.flatten(layer(x))
    assert len(eager) == len(declared)
    for tensor, shape in zip(eager, declared):
        assert tuple(tensor.shape) == _fill_batch(shape, tensor.shape), (tuple(tensor.shape), shape)
        assert np.all(np.isfinite(np.asarray(tensor)))

    # 5. One training step through `model.fit` moves every trainable weight.
    if run_training_check:
        train_layer = make()
        inputs = keras.Input(batch_shape=input_shape)
        output = tf.nest.flatten(train_layer(inputs))[0]
        model = keras.Model(inputs, output)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        before = [np.array(w) for w in train_layer.trainable_weights]
        y = rng.standard_normal(tuple(output.shape)).astype("float32")
        if y.shape[0] == x.shape[0]:
            history = model.fit(x, y, batch_size=x.shape[0], epochs=1, verbose=0, shuffle=False)
            loss = history.history["loss"][0]
        else:  # time_major without sequences: the first axes of x (time) and y (batch) differ
            loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
        for old, new in zip(before, train_layer.trainable_weights):
            assert not np.allclose(old, np.array(new)), f"{new.path} did not change in a fit step"

    # 6. Mixed precision: the layer computes and returns float16, its variables stay float32.
    if run_mixed_precision_check:
        mixed = make(dtype="mixed_float16")
        outputs = tf.nest.flatten(mixed(x))
        assert all(t.dtype == tf.float16 for t in outputs), [t.dtype for t in outputs]
        assert mixed.weights and all(w.dtype == "float32" for w in mixed.weights), [w.dtype for w in mixed.weights]
        assert all(np.all(np.isfinite(np.asarray(t, np.float32))) for t in outputs)

    return layer
