"""Child process for `test_real_models.py`: serves exported models, or trains under `MirroredStrategy`.

Two jobs, each of which needs a fresh Python process:

    python tests/real_model_worker.py serve --manifest served.json --out outputs.npz
    python tests/real_model_worker.py mirrored --out mirrored.npz

`serve` proves that a `model.export()` SavedModel runs where keras_unroll is *not* importable (a
deployment server with TensorFlow only): it blocks `import keras_unroll` before anything else, loads each
SavedModel with `tf.saved_model.load`, calls its `serve` endpoint on the inputs stored in the manifest's
`.npz` and writes the outputs. `mirrored` needs two logical CPU devices, which must be configured before
TensorFlow initialises its devices (the pattern of `distributed_worker.py`, whose strategy set-up it reuses):
it trains the book's stacked model under the strategy and on one device, from the same fixed weights.

Errors are written into the output file (one entry per model or run) instead of ending the process, so one
broken model fails its own test and not the others'.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import sys
import traceback
from typing import Any, Dict, List

import numpy as np

# --------------------------------------------------------------------------------------------- serve


class _BlockKerasUnroll(importlib.abc.MetaPathFinder):
    """Makes `import keras_unroll` fail, as on a machine where it was never installed."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "keras_unroll" or fullname.startswith("keras_unroll."):
            raise ImportError(f"keras_unroll is blocked in this serving process (tried to import {fullname})")
        return None


def serve(manifest_path: str, out_path: str) -> int:
    sys.meta_path.insert(0, _BlockKerasUnroll())
    try:
        import keras_unroll  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - the blocker itself is broken
        raise SystemExit("keras_unroll is importable in the serving process; the test would prove nothing")

    import tensorflow as tf

    with open(manifest_path) as f:
        manifest = json.load(f)
    with np.load(manifest["inputs"]) as data:
        inputs = {key: data[key] for key in data.files}
    arrays: Dict[str, Any] = {}
    for entry in manifest["models"]:
        key = entry["key"]
        try:
            loaded = tf.saved_model.load(entry["path"])
            for i in range(entry["num_calls"]):
                args = [tf.constant(inputs[f"{key}/{i}/{j}"]) for j in range(entry["num_inputs"])]
                # A model with several inputs serves them as one list argument (Keras' input structure).
                result = loaded.serve(args) if entry["num_inputs"] > 1 else loaded.serve(args[0])
                arrays[f"{key}/{i}"] = np.asarray(result)
        except Exception:
            arrays[f"{key}/error"] = np.asarray(traceback.format_exc())
    arrays["imported_keras_unroll"] = np.asarray(any(m.startswith("keras_unroll") for m in sys.modules))
    np.savez(out_path, **arrays)
    return 0


# ------------------------------------------------------------------------------------------ mirrored
GLOBAL_BATCH, STEPS, TIME_STEPS, FEATURES = 8, 2, 6, 3
LEARNING_RATE = 0.1
OTHER_BATCH, OTHER_TIME_STEPS = 5, 11
#: (model jit_compile, layer jit_compile): each layer value once. No `model.compile(jit_compile=True)`: under
#: `MirroredStrategy` on logical CPUs XLA cannot reach the replica's variables on the other device ("Trying to
#: access resource .../replica_1 located in device CPU:1 from device CPU:0", TensorFlow's XLA known issue
#: "tf.Variable on a different device"); a plain `Flatten -> Dense` model fails the same way (TF 2.21).
MIRRORED_RUNS = ((False, True), ("auto", "auto"), ("auto", False))


def mirrored_run_key(model_jit: Any, layer_jit: Any) -> str:
    return f"mirrored-model_jit={model_jit}-layer_jit={layer_jit}"


def mirrored_data() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "x": rng.normal(size=(GLOBAL_BATCH * STEPS, TIME_STEPS, FEATURES)).astype("float32"),
        "y": rng.normal(size=(GLOBAL_BATCH * STEPS, 1)).astype("float32"),
        "x_other_batch": rng.normal(size=(OTHER_BATCH, TIME_STEPS, FEATURES)).astype("float32"),
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
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse", jit_compile=model_jit)
    return model


def _train_and_predict(model_jit: Any, layer_jit: Any, save_path: str = "") -> Dict[str, np.ndarray]:
    import keras
    import tensorflow as tf

    data = mirrored_data()
    model = _stacked_model(model_jit, layer_jit)
    dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"])).batch(GLOBAL_BATCH)
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


def mirrored(out_path: str) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import distributed_worker  # the project's set-up of two logical CPUs and the MirroredStrategy

    strategy = distributed_worker._strategy("mirrored")  # before anything else touches the devices
    arrays: Dict[str, Any] = {"num_replicas": np.asarray(strategy.num_replicas_in_sync)}
    for model_jit, layer_jit in MIRRORED_RUNS:
        key = mirrored_run_key(model_jit, layer_jit)
        for where in ("mirrored", "single"):
            try:
                if where == "mirrored":
                    with strategy.scope():
                        save_path = os.path.join(os.path.dirname(os.path.abspath(out_path)), f"{key}.keras")
                        result = _train_and_predict(model_jit, layer_jit, save_path)
                else:
                    result = _train_and_predict(model_jit, layer_jit)
                for name, value in result.items():
                    arrays[f"{key}/{where}/{name}"] = value
            except Exception:
                arrays[f"{key}/{where}/error"] = np.asarray(traceback.format_exc())
    np.savez(out_path, **arrays)
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=["serve", "mirrored"])
    parser.add_argument("--manifest", help="`serve`: the JSON list of SavedModels and the inputs' .npz")
    parser.add_argument("--out", required=True, help="where to write the results (.npz)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.job == "serve":
        if not args.manifest:
            parser.error("`serve` needs --manifest")
        return serve(args.manifest, args.out)
    return mirrored(args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
