"""Child process for `test_real_models.py`: serves exported models where keras_unroll cannot be imported.

    python tests/real_model_worker.py serve --manifest served.json --out outputs.npz

`serve` proves that a `model.export()` SavedModel runs where keras_unroll is *not* importable (a
deployment server with TensorFlow only): it blocks `import keras_unroll` before anything else, loads each
SavedModel with `tf.saved_model.load`, calls its `serve` endpoint on the inputs stored in the manifest's
`.npz` and writes the outputs. (The book's stacked model under `MirroredStrategy` is trained by the
`distributed_worker.py` child of `test_distribute.py`, which already sets up two logical CPUs.)

Errors are written into the output file (one entry per model) instead of ending the process, so one broken
model fails its own test and not the others'.
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


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=["serve"])
    parser.add_argument("--manifest", required=True, help="the JSON list of SavedModels and the inputs' .npz")
    parser.add_argument("--out", required=True, help="where to write the results (.npz)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return serve(args.manifest, args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
