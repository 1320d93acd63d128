"""Child process for the `tf.distribute` tests: trains the same small model under one strategy.

The tests import `PROBLEM`-building functions from here for their single-device reference and run this file
as a script for the strategies, because both strategies must be set up before TensorFlow initialises its
devices:

    python tests/distributed_worker.py --strategy mirrored --out weights.npz
    TF_CONFIG='{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}' \\
        python tests/distributed_worker.py --strategy multi_worker --out weights-0.npz

The maths is made identical to a single-device run: plain SGD, fixed initial weights (not drawn from an
initializer), a fixed dataset of one global batch, no shuffling. Each strategy splits the global batch across
its replicas and averages the gradients over the global batch, so each step applies the same update.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

import numpy as np

GLOBAL_BATCH = 8
STEPS = 4
TIME_STEPS, FEATURES, UNITS = 5, 3, 4
LEARNING_RATE = 0.5
LAYERS = ("StaticUnroll", "DynamicUnroll")
JIT_COMPILE = (False, True)  # the plain loops and the XLA-compiled ones (the layers' "auto" default here)


def make_data() -> tuple:
    """One global batch of inputs, per-row lengths and targets, identical in every process."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(GLOBAL_BATCH, TIME_STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(GLOBAL_BATCH, 1)).astype("float32")
    return x, y


def initial_weights() -> List[np.ndarray]:
    """The model's starting weights, drawn once from a fixed seed (no initializer randomness)."""
    rng = np.random.default_rng(11)
    shapes = [(FEATURES, UNITS), (UNITS, UNITS), (UNITS,), (UNITS, 1), (1,)]
    return [rng.normal(scale=0.5, size=shape).astype("float32") for shape in shapes]


def make_model(layer_name: str, **layer_kwargs: Any):
    """`Input -> {Static,Dynamic}Unroll(BasicRNNCell) -> Dense(1)`, compiled with SGD and MSE."""
    import keras

    import keras_unroll as ku

    layer_cls = {"StaticUnroll": ku.StaticUnroll, "DynamicUnroll": ku.DynamicUnroll}[layer_name]
    model = keras.Sequential(
        [
            keras.Input((TIME_STEPS, FEATURES)),
            layer_cls(ku.BasicRNNCell(UNITS), **layer_kwargs),
            keras.layers.Dense(1),
        ]
    )
    model.set_weights(initial_weights())
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    return model


def make_dataset():
    """The global batch, repeated: every step of every run sees the same 8 rows."""
    import tensorflow as tf

    x, y = make_data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()


def train(layer_name: str, **layer_kwargs: Any) -> Dict[str, Any]:
    """Builds and trains one model (under the current strategy scope, if any); returns weights and losses."""
    model = make_model(layer_name, **layer_kwargs)
    history = model.fit(make_dataset(), epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0)
    return {"weights": model.get_weights(), "loss": history.history["loss"]}


def keras3_multi_worker_fix(strategy):
    """The example's work-around for keras-team/keras#20585, loaded from `examples/distributed.py`.

    One copy of the shim: the test runs the very function the example shows users.
    """
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "distributed.py"
    spec = importlib.util.spec_from_file_location("keras_unroll_example_distributed", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.keras3_multi_worker_fix(strategy)


def run_key(layer_name: str, jit_compile: bool) -> str:
    return f"{layer_name}-jit_compile={jit_compile}"


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if name == "multi_worker":
        return keras3_multi_worker_fix(tf.distribute.MultiWorkerMirroredStrategy())
    raise ValueError(f"`--strategy` must be 'mirrored' or 'multi_worker'. Received: strategy={name!r}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", required=True, choices=["mirrored", "multi_worker"])
    parser.add_argument("--out", required=True, help="where to write the trained weights (.npz)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    strategy = _strategy(args.strategy)  # before anything else touches the devices
    arrays: Dict[str, np.ndarray] = {"num_replicas": np.array(strategy.num_replicas_in_sync)}
    for layer_name in LAYERS:
        for jit_compile in JIT_COMPILE:
            with strategy.scope():
                result = train(layer_name, jit_compile=jit_compile)
            key = run_key(layer_name, jit_compile)
            for i, weight in enumerate(result["weights"]):
                arrays[f"{key}/{i}"] = weight
            arrays[f"{key}/loss"] = np.asarray(result["loss"])
    np.savez(args.out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
