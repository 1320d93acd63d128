"""Child process for the `tf.distribute` tests: trains the same small model under one strategy.

The tests import `PROBLEM`-building functions from here for their single-device reference and run this file
as a script for the strategies, because both strategies must be set up before TensorFlow initialises its
devices (the `mirrored` child also trains the book's stacked model under the strategy and, once, on one device:
`stacked_runs`). The tests start these children from `fork_server.start_forked`, all three at once:

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
#: The one-device reference of every (layer, jit_compile) run above: `StaticUnroll`'s plain loop. The four runs
#: agree on one device to 2e-7 (measured), far inside the tests' 1e-5: the reference is trained once.
REFERENCE = ("StaticUnroll", False)


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


# ------------------------------------------------------------------- the book's stacked model, mirrored
STACKED_BATCH, STACKED_STEPS, STACKED_TIME_STEPS = 8, 2, 6
STACKED_LEARNING_RATE = 0.1
OTHER_BATCH, OTHER_TIME_STEPS = 5, 11
#: (model jit_compile, layer jit_compile): each layer value once. No `model.compile(jit_compile=True)`: under
#: `MirroredStrategy` on logical CPUs XLA cannot reach the replica's variables on the other device ("Trying to
#: access resource .../replica_1 located in device CPU:1 from device CPU:0", TensorFlow's XLA known issue
#: "tf.Variable on a different device"); a plain `Flatten -> Dense` model fails the same way (TF 2.21).
STACKED_RUNS = ((False, True), ("auto", "auto"), ("auto", False))
#: The one-device reference of every `STACKED_RUNS` entry: the plain loops, no XLA. Every entry's one-device run
#: agrees with it to 3e-7 (measured; `("auto", "auto")`'s is bit for bit `(False, True)`'s on CPU), far inside
#: the tests' 1e-5: one run serves as the reference of all three.
STACKED_REFERENCE = (False, False)


def stacked_run_key(model_jit: Any, layer_jit: Any) -> str:
    return f"stacked-model_jit={model_jit}-layer_jit={layer_jit}"


def stacked_data() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "x": rng.normal(size=(STACKED_BATCH * STACKED_STEPS, STACKED_TIME_STEPS, FEATURES)).astype("float32"),
        "y": rng.normal(size=(STACKED_BATCH * STACKED_STEPS, 1)).astype("float32"),
        "x_other_batch": rng.normal(size=(OTHER_BATCH, STACKED_TIME_STEPS, FEATURES)).astype("float32"),
        "x_other_t": rng.normal(size=(OTHER_BATCH, OTHER_TIME_STEPS, FEATURES)).astype("float32"),
    }


def _stacked_model(model_jit: Any, layer_jit: Any):
    """The book's deep RNN (two stacked `DynamicUnroll`, unknown T) from fixed weights, with plain SGD."""
    import keras

    import keras_unroll as ku

    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            ku.DynamicUnroll(ku.BasicRNNCell(5), return_sequences=True, jit_compile=layer_jit),
            ku.DynamicUnroll(ku.BasicRNNCell(4), jit_compile=layer_jit),
            keras.layers.Dense(1),
        ]
    )
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(STACKED_LEARNING_RATE), loss="mse", jit_compile=model_jit)
    return model


def train_stacked(model_jit: Any, layer_jit: Any, save_path: str = "") -> Dict[str, np.ndarray]:
    """`fit`, `evaluate`, `predict` at another batch and another T (and, with `save_path`, a `.keras` round
    trip) of the stacked model, under the current strategy scope if any."""
    import keras
    import tensorflow as tf

    data = stacked_data()
    model = _stacked_model(model_jit, layer_jit)
    dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"])).batch(STACKED_BATCH)
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    result = {
        "loss": np.asarray(history.history["loss"]),
        "eval_loss": np.asarray(model.evaluate(dataset, verbose=0)),
        "pred_other_batch": model.predict(data["x_other_batch"], verbose=0),
        "pred_other_t": model.predict(data["x_other_t"], verbose=0),
    }
    for i, weight in enumerate(model.get_weights()):
        result[f"weight/{i}"] = weight
    if save_path:  # saved from the strategy's model, loaded (outside the scope) after `import keras_unroll`
        model.save(save_path)
        loaded = keras.saving.load_model(save_path)
        result["loaded_pred_other_t"] = keras.ops.convert_to_numpy(loaded(data["x_other_t"], training=False))
    return result


def stacked_runs(strategy, out_dir: str) -> Dict[str, Any]:
    """Every `STACKED_RUNS` entry under the strategy (`{key}/mirrored/{name}`) and `STACKED_REFERENCE` on one device
    (`stacked-single/{name}`). An error is stored as `.../error` (the runs' tests fail with it) instead of ending
    the process."""
    import traceback

    arrays: Dict[str, Any] = {}
    runs = [(stacked_run_key(*jit) + "/mirrored", jit) for jit in STACKED_RUNS]
    for prefix, (model_jit, layer_jit) in [*runs, ("stacked-single", STACKED_REFERENCE)]:
        try:
            if prefix == "stacked-single":
                result = train_stacked(model_jit, layer_jit)
            else:
                with strategy.scope():
                    path = os.path.join(out_dir, prefix.replace("/", "-") + ".keras")
                    result = train_stacked(model_jit, layer_jit, path)
            for name, value in result.items():
                arrays[f"{prefix}/{name}"] = value
        except Exception:
            arrays[f"{prefix}/error"] = np.asarray(traceback.format_exc())
    return arrays


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
    if args.strategy == "mirrored":  # one process with two logical CPUs serves both mirrored tests
        arrays.update(stacked_runs(strategy, os.path.dirname(os.path.abspath(args.out))))
    np.savez(args.out, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
