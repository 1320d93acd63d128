"""Train a `DynamicUnroll` model, export it, convert it to TFLite with builtin ops only, run it, compare.

The phone/microcontroller route: `model.export(dir)` writes a SavedModel whose serving graph is a deployment
graph (a plain while loop, no gradient machinery, no XLA-compiled function: docs/deploy.md), so TFLite's
converter needs no Select TF ops (Flex). The script converts it twice, float and with dynamic-range
quantized weights (`tf.lite.Optimize.DEFAULT`), runs both with `tf.lite.Interpreter` at batch 1 and 4, and
checks them against `model.predict` (1e-5 float, 5e-2 quantized). The cell is TF1's `LSTMCell` with
peepholes, a projection and clipping (the generic step), the memory option `recompute="sqrt"` is on (it
shapes only training), and the input is masked (`Embedding(mask_zero=True)`).

Run:  python examples/deploy_tflite.py [--quick]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="small model and data, 1 epoch (seconds)")
args = parser.parse_args()
keras.utils.set_random_seed(42)

# Token sequences (0 = padding) -> whether token 7 occurs: a tiny classification task.
steps, units = (12, 8) if args.quick else (40, 32)
rng = np.random.default_rng(0)
x = rng.integers(1, 10, size=(64 if args.quick else 256, steps)).astype("int32")
for row, length in enumerate(rng.integers(steps // 2, steps + 1, size=len(x))):
    x[row, length:] = 0  # right padding
y = (x == 7).any(axis=1).astype("float32")[:, None]

model = keras.Sequential(
    [
        keras.Input((steps,), dtype="int32"),
        keras.layers.Embedding(10, 8, mask_zero=True),
        ku.DynamicUnroll(
            ku.tf1.LSTMCell(units, use_peepholes=True, num_proj=units // 2, cell_clip=3.0), recompute="sqrt"
        ),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=1 if args.quick else 10, batch_size=32, verbose=0)
print(f"trained: accuracy {model.evaluate(x, y, verbose=0)[1]:.2f}")


def convert(export_dir: str, quantize: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # builtin ops only: no Flex
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range quantized weights
    return converter.convert()


def run_tflite(content: bytes, inputs: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_content=content)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, inputs.shape)  # the exported batch axis is open
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


with tempfile.TemporaryDirectory(prefix="deploy_tflite_") as workdir:
    export_dir = os.path.join(workdir, "saved_model")
    model.export(export_dir, verbose=False)
    for quantize, tolerance in ((False, 1e-5), (True, 5e-2)):
        content = convert(export_dir, quantize)
        name = "quantized" if quantize else "float"
        for batch in (1, 4):
            expected = model.predict(x[:batch], verbose=0)
            got = run_tflite(content, x[:batch])
            diff = float(np.max(np.abs(got - expected)))
            print(
                f"TFLite {name:9s} ({len(content) / 1024:.0f} KiB) batch {batch}: max |tflite - predict| = {diff:.1e}"
            )
            assert diff <= tolerance, f"TFLite {name} differs from model.predict by {diff} (tolerance {tolerance})"
print("TFLite (builtin ops only) matches model.predict")
