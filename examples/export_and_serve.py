"""Export a model with `StaticUnroll`/`DynamicUnroll` as a SavedModel and serve it without keras_unroll.

`model.export(path)` writes a TensorFlow SavedModel: the traced graph (the while loop or the unrolled
steps) plus the weights. Serving it needs only TensorFlow (`tf.saved_model.load`, TF Serving, TFLite
converters): this script reloads it in a fresh Python process where importing keras_unroll is blocked.
To keep working on the model in Keras, save it as `.keras` instead: that format stores the layer configs,
so it needs keras_unroll installed (its layers are registered as `keras_unroll>StaticUnroll` etc.).

Run:  python examples/export_and_serve.py [--quick]
"""

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="small model, 1 epoch (seconds)")
args = parser.parse_args()
keras.utils.set_random_seed(42)

# A small model: windows of 20 values -> the next value. Any length works with DynamicUnroll (None).
x = np.sin(np.linspace(0, 60, 21 * 64)).reshape(64, 21, 1).astype("float32")
x_train, y_train = x[:, :-1], x[:, -1]
model = keras.Sequential(
    [keras.Input((None, 1)), ku.DynamicUnroll(ku.BasicRNNCell(8 if args.quick else 32)), keras.layers.Dense(1)]
)
model.compile(optimizer="adam", loss="mse")
model.fit(x_train, y_train, epochs=1 if args.quick else 20, verbose=0)
expected = model.predict(x_train, verbose=0)

SERVE = """
import sys
sys.modules["keras_unroll"] = None  # make sure the SavedModel does not need keras_unroll
import numpy as np
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1])
print("signature:", served.serve.concrete_functions[0].structured_input_signature[0])
inputs = np.load(sys.argv[2])
np.save(sys.argv[3], served.serve(tf.constant(inputs)).numpy())
# Another length than the 20 steps used in training: DynamicUnroll's graph takes any T.
print("50-step input ->", tuple(served.serve(tf.zeros((2, 50, 1))).shape))
"""

with tempfile.TemporaryDirectory(prefix="export_and_serve_") as workdir:
    export_dir = os.path.join(workdir, "saved_model")
    model.export(export_dir, verbose=False)  # TF1's tf.saved_model.simple_save, in one call
    np.save(os.path.join(workdir, "inputs.npy"), x_train)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            export_dir,
            os.path.join(workdir, "inputs.npy"),
            os.path.join(workdir, "out.npy"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    print(child.stdout.strip())
    if child.returncode != 0:
        sys.exit(f"serving the SavedModel failed:\n{child.stderr[-2000:]}")
    served = np.load(os.path.join(workdir, "out.npy"))
    print("served predictions match the model's:", np.allclose(served, expected, atol=1e-5))
    assert np.allclose(served, expected, atol=1e-5)

    # The Keras format keeps the layers themselves (for more training); it needs keras_unroll installed.
    keras_path = os.path.join(workdir, "model.keras")
    model.save(keras_path)
    reloaded = keras.models.load_model(keras_path)
    print("reloaded .keras layers:", [type(layer).__name__ for layer in reloaded.layers])
    assert np.allclose(reloaded.predict(x_train, verbose=0), expected, atol=1e-6)
