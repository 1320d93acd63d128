"""`python -m benchmarks deploy`: the deployment matrix (cell × option × target), each case in its own process.

Every case builds a tiny model (`Input -> StaticUnroll/DynamicUnroll -> Dense(1)`), trains it one step, exports
it with `model.export(dir)`, and then deploys it as a user would:

- `savedmodel`: `tf.saved_model.load(dir).serve(x)` (tests/test_deploy.py also serves it in a process where
  keras_unroll cannot be imported);
- `tflite`: `tf.lite.TFLiteConverter.from_saved_model(dir)` with `TFLITE_BUILTINS` only, run by
  `tf.lite.Interpreter`;
- `tflite-q`: the same with `optimizations=[tf.lite.Optimize.DEFAULT]` (dynamic-range quantized weights);
- `onnx`: `tf2onnx.convert.from_function` on the SavedModel's serving function, run by onnxruntime.

Each result is compared with `model.predict` at batch 1 and 4 (a stateful model: two calls in a row at its
fixed batch), within 1e-5 (2e-5 relative) for float targets and 5e-2 for the quantized one. A cell reads `ok` with the
largest difference, or `FAIL` with the converter's or runtime's reason. The table is printed in Markdown
(docs/deploy.md shows it); `--json PATH` also writes the results.

An ONNX cell also names the fused recurrent op the model holds (`LSTM`, `GRU`: `keras_unroll/loops/fused_export.py`).

`--speed` prints instead the fused-export form against the plain serving loop (`generic_only()` during the
export) on the TFLite interpreter and onnxruntime: recurrent op, model size and latency at batch 1, T=100,
measured side by side in one process.

Run:  python -m benchmarks deploy [--quick] [--cases NAME ...] [--json PATH] [--in-process]
      python -m benchmarks deploy --speed [--steps T] [--units H] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

TARGETS = ("savedmodel", "tflite", "tflite-q", "onnx")
FUSED_ONNX_OPS = ("LSTM", "GRU")
FLOAT_TOLERANCE = 1e-5
QUANTIZED_TOLERANCE = 5e-2
STEPS = 6
FEATURES = 3
UNITS = 4


@dataclasses.dataclass(frozen=True)
class Case:
    """One model of the matrix: a layer over a cell with some options."""

    layer: str  # "StaticUnroll" or "DynamicUnroll"
    cell: str  # a key of CELLS
    options: Tuple[Tuple[str, Any], ...] = ()  # layer arguments
    mask: bool = False  # Embedding(mask_zero=True) in front
    bidirectional: bool = False
    stateful: bool = False
    open_time: bool = False  # Input((None, F)): the time axis unknown until run time

    @property
    def name(self) -> str:
        parts = [self.cell] + [f"{k}={v}" for k, v in self.options]
        parts += [flag for flag in ("mask", "bidirectional", "stateful", "open_time") if getattr(self, flag)]
        return f"{self.layer}/" + ",".join(parts)


def make_cell(name: str) -> Any:
    """The cells of the matrix, small."""
    import keras

    import keras_unroll as ku

    cells = {
        "BasicRNNCell": lambda: ku.BasicRNNCell(UNITS),
        "int": lambda: UNITS,
        "SimpleRNNCell(dropout)": lambda: keras.layers.SimpleRNNCell(UNITS, dropout=0.2, recurrent_dropout=0.2),
        "LSTMCell": lambda: keras.layers.LSTMCell(UNITS),
        "GRUCell": lambda: keras.layers.GRUCell(UNITS),
        "GRUCell(reset_after=False)": lambda: keras.layers.GRUCell(UNITS, reset_after=False),
        "tf1.BasicLSTMCell": lambda: ku.tf1.BasicLSTMCell(UNITS),
        "tf1.LSTMCell": lambda: ku.tf1.LSTMCell(UNITS),
        "tf1.LSTMCell(peepholes,proj,clip)": lambda: ku.tf1.LSTMCell(
            UNITS, use_peepholes=True, num_proj=3, cell_clip=1.0, proj_clip=1.0
        ),
        "tf1.GRUCell": lambda: ku.tf1.GRUCell(UNITS),
        "tf1.MultiRNNCell": lambda: ku.tf1.MultiRNNCell([ku.tf1.GRUCell(UNITS), ku.tf1.BasicLSTMCell(UNITS)]),
        "list of cells": lambda: [ku.BasicRNNCell(UNITS), keras.layers.LSTMCell(UNITS)],
        "tf1.DropoutWrapper": lambda: ku.tf1.DropoutWrapper(ku.tf1.BasicLSTMCell(UNITS), output_keep_prob=0.8),
    }
    if name not in cells:
        raise ValueError(f"Unknown cell {name!r}; known: {sorted(cells)}")
    return cells[name]()


CELLS = (
    "BasicRNNCell", "int", "SimpleRNNCell(dropout)", "LSTMCell", "GRUCell", "GRUCell(reset_after=False)",
    "tf1.BasicLSTMCell", "tf1.LSTMCell", "tf1.LSTMCell(peepholes,proj,clip)", "tf1.GRUCell", "tf1.MultiRNNCell",
    "list of cells", "tf1.DropoutWrapper",
)  # fmt: skip


def all_cases(quick: bool = False) -> List[Case]:
    """Every cell with default options, then every option over a fused and a generic cell, for both layers."""
    cases = []
    for layer in ("StaticUnroll", "DynamicUnroll"):
        for cell in ("BasicRNNCell", "tf1.LSTMCell(peepholes,proj,clip)") if quick else CELLS:
            cases.append(Case(layer, cell))
        for cell in ("BasicRNNCell",) if quick else ("BasicRNNCell", "tf1.LSTMCell(peepholes,proj,clip)"):
            cases += [
                Case(layer, cell, (("return_sequences", True),)),
                Case(layer, cell, (("go_backwards", True),)),
                Case(layer, cell, mask=True),
                Case(layer, cell, bidirectional=True),
                Case(layer, cell, stateful=True),
                Case(layer, cell, (("jit_compile", True),)),
                Case(layer, cell, (("jit_compile", False),)),
            ]
            if layer == "DynamicUnroll":
                cases += [
                    Case(layer, cell, open_time=True),
                    Case(layer, cell, (("recompute", "sqrt"),)),
                    Case(layer, cell, (("swap_memory", True),)),
                ]
    return cases


# ------------------------------------------------------------------------------------------- models
def build_model(case: Case, batch: Optional[int] = None) -> Tuple[Any, Any]:
    """`(model, x)`: the case's model trained one step, and 4 rows of inputs for it."""
    import keras
    import numpy as np

    import keras_unroll as ku

    keras.utils.set_random_seed(7)
    layer_cls = getattr(ku, case.layer)
    options = dict(case.options)
    if case.stateful:
        options["stateful"] = True
        batch = 4
    layer = layer_cls(make_cell(case.cell), **options)
    if case.bidirectional:
        layer = keras.layers.Bidirectional(layer)
    steps = None if case.open_time else STEPS
    rng = np.random.default_rng(0)
    if case.mask:
        inputs = keras.Input((steps,), batch_size=batch, dtype="int32")
        x = rng.integers(1, 10, size=(4, STEPS)).astype("int32")
        x[1, 4:] = 0  # right padding
        x[2, 2] = 0  # a masked step inside
        x[3, :] = 0  # an empty row
        hidden = keras.layers.Embedding(10, FEATURES, mask_zero=True)(inputs)
    else:
        inputs = keras.Input((steps, FEATURES), batch_size=batch)
        x = rng.normal(size=(4, STEPS, FEATURES)).astype("float32")
        hidden = inputs
    out = layer(hidden)
    if case.bidirectional or options.get("return_sequences"):
        out = keras.layers.Flatten()(out) if steps else keras.layers.GlobalAveragePooling1D()(out)
    model = keras.Model(inputs, keras.layers.Dense(1)(out))
    model.compile(optimizer="sgd", loss="mse")  # one step moves the weights off their start; Adam traces ~1 s longer
    model.fit(x, np.ones((4, 1), "float32"), batch_size=4, epochs=1, verbose=0, shuffle=False)
    reset_states(model)
    return model, x


def reset_states(model: Any) -> None:
    """Zero the states of a model's stateful layers (an export saves their current values)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


def expected_outputs(model: Any, x: Any, stateful: bool) -> List[Tuple[Any, Any]]:
    """`[(inputs, expected outputs)]`: batch 1 and 4, or two calls in a row at a stateful model's batch."""
    if stateful:
        first = model.predict(x, batch_size=len(x), verbose=0)
        second = model.predict(x, batch_size=len(x), verbose=0)
        reset_states(model)
        return [(x, first), (x, second)]
    return [(x[:1], model.predict(x[:1], verbose=0)), (x, model.predict(x, verbose=0))]


# ------------------------------------------------------------------------------------------ targets
def to_tflite(export_dir: str, quantize: bool = False) -> bytes:
    """The SavedModel as a TFLite flatbuffer with builtin ops only (the conversion a phone app uses)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def tflite_runner(content: bytes) -> Any:
    """`run(x) -> outputs` on one `tf.lite.Interpreter` (kept between calls: a stateful model's state lives there)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=content)
    (signature_key,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(signature_key)
    (input_name,) = interpreter.get_signature_list()[signature_key]["inputs"]

    def run(x):
        outputs = runner(**{input_name: x})
        (value,) = outputs.values()
        return value

    return run


def tflite_ops(content: bytes) -> List[str]:
    """The op names of a TFLite model, every subgraph's, read from `tf.lite.experimental.Analyzer`'s report.

    The analyzer is TensorFlow's public way to list a model's operators (the interpreter lists tensors, not ops;
    the flatbuffer schema module is internal). It prints its report, so the report is captured here.
    """
    import contextlib
    import io
    import re

    import tensorflow as tf

    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        returned = tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=False)
    text = report.getvalue() + (returned or "")
    return sorted(set(re.findall(r"Op#\d+ (\w+)\(", text)))


def onnx_ops(content: bytes) -> List[str]:
    """The op types of an ONNX model's main graph (`onnx`, which tf2onnx installs)."""
    import onnx

    return sorted({node.op_type for node in onnx.load_model_from_string(content).graph.node})


def to_onnx(export_dir: str, opset: int = 17) -> bytes:
    """The SavedModel's serving function as an ONNX model (tf2onnx)."""
    import tensorflow as tf
    import tf2onnx

    served = tf.saved_model.load(export_dir)
    specs = served.serve.concrete_functions[0].structured_input_signature[0]
    model_proto, _ = tf2onnx.convert.from_function(served.serve, input_signature=specs, opset=opset)
    return model_proto.SerializeToString()


def onnx_runner(content: bytes) -> Any:
    import onnxruntime

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def savedmodel_runner(export_dir: str) -> Any:
    import tensorflow as tf

    served = tf.saved_model.load(export_dir)
    return lambda x: served.serve(tf.constant(x)).numpy()


def _short(error: BaseException) -> str:
    """The line of an error that says why (converters print pages)."""
    text = f"{type(error).__name__}: {error}"
    for marker in (
        "failed to legalize",
        "requires element_shape",
        "is neither a custom op nor a flex op",
        "not supported",
        "Failed to add concrete function",
        "Unsupported",
        "error:",
    ):
        for line in text.splitlines():
            if marker in line:
                return line.strip()[:300]
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__


def compare(run: Any, pairs: List[Tuple[Any, Any]], tolerance: float) -> Tuple[bool, float]:
    import numpy as np

    worst = 0.0
    ok = True
    for x, expected in pairs:
        got = np.asarray(run(x)).reshape(np.shape(expected))
        worst = max(worst, float(np.max(np.abs(got - expected))))
        ok = ok and bool(np.allclose(got, expected, atol=tolerance, rtol=2 * tolerance))
    return ok, worst


def run_case(case: Case, targets: Sequence[str] = TARGETS, workdir: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """Builds, exports and deploys one case to `targets`. Returns `{target: {"ok", "error", "max_diff"}}`.

    The SavedModel goes to `workdir`, else to a temporary folder removed before returning."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="deploy_") as tmp:
            return run_case(case, targets, tmp)
    results: Dict[str, Dict[str, Any]] = {}
    fused: List[str] = []
    try:
        model, x = build_model(case)
        pairs = expected_outputs(model, x, case.stateful)
    except Exception as error:
        return {target: {"ok": False, "error": "model: " + _short(error)} for target in targets}
    export_dir = os.path.join(workdir, "saved_model")
    try:
        model.export(export_dir, verbose=False)
    except Exception as error:  # every target needs the export
        return {target: {"ok": False, "error": "export: " + _short(error)} for target in targets}
    for target in targets:
        try:
            if target == "savedmodel":
                run = savedmodel_runner(export_dir)
            elif target in ("tflite", "tflite-q"):
                run = tflite_runner(to_tflite(export_dir, quantize=target == "tflite-q"))
            elif target == "onnx":
                content = to_onnx(export_dir)
                fused = [op for op in onnx_ops(content) if op in FUSED_ONNX_OPS]
                run = onnx_runner(content)
            else:
                raise ValueError(f"Unknown target {target!r}; known: {TARGETS}")
            tolerance = QUANTIZED_TOLERANCE if target == "tflite-q" else FLOAT_TOLERANCE
            ok, worst = compare(run, pairs, tolerance)
            results[target] = {"ok": ok, "max_diff": worst, "error": None if ok else f"differs by {worst:.2g}"}
            if target == "onnx" and fused:
                results[target]["fused"] = fused
        except ImportError as error:
            results[target] = {"ok": False, "error": f"not installed: {error.name}"}
        except Exception as error:
            results[target] = {"ok": False, "error": _short(error)}
    return results


# ------------------------------------------------------------------------------- fused vs plain loop
SPEED_CELLS = ("LSTMCell", "tf1.BasicLSTMCell", "GRUCell", "LSTMCell,return_sequences", "GRUCell,return_sequences")
#: (target, batch of the export): TFLite fuses only at a fixed batch; at `model.export`'s open batch it converts
#: the loop.
SPEED_TARGETS = (("tflite", 1), ("tflite", None), ("onnx", None))


def _speed_model(cell: str, steps: int, features: int, units: int) -> Any:
    """`Input((steps, features)) -> DynamicUnroll(cell) -> Dense(1)` with random weights (`,return_sequences`:
    the sequence flattened into the dense layer)."""
    import keras

    import keras_unroll as ku

    keras.utils.set_random_seed(3)
    name, _, option = cell.partition(",")
    cells = {
        "LSTMCell": lambda: keras.layers.LSTMCell(units),
        "tf1.BasicLSTMCell": lambda: ku.tf1.BasicLSTMCell(units),
        "GRUCell": lambda: keras.layers.GRUCell(units),
    }
    inputs = keras.Input((steps, features))
    output = ku.DynamicUnroll(cells[name](), return_sequences=option == "return_sequences")(inputs)
    if option == "return_sequences":
        output = keras.layers.Flatten()(output)
    return keras.Model(inputs, keras.layers.Dense(1)(output))


def _median_ms(call: Any, repeats: int) -> float:
    import statistics

    call()  # warm-up: the first call allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def speed_rows(
    steps: int = 100, features: int = 16, units: int = 64, repeats: int = 30, workdir: Optional[str] = None
) -> List[Dict[str, Any]]:
    """The fused-export form against the plain serving loop (`keras_unroll.testing.generic_only()` during the
    export), side by side in this process: for each cell and target, the recurrent op in the converted model,
    its size, the median time of one call at batch 1 and the largest difference from `model.predict`.

    TFLite fuses only at a fixed batch (its converter's condition), so its SavedModels are exported with
    `input_signature=[tf.TensorSpec((1, steps, features))]`; the ONNX ones with the open batch of
    `model.export`.
    """
    import contextlib

    import numpy as np
    import tensorflow as tf

    import keras_unroll as ku

    if workdir is None:  # the SavedModels go to a temporary folder removed before returning
        with tempfile.TemporaryDirectory(prefix="deploy_speed_") as tmp:
            return speed_rows(steps, features, units, repeats, tmp)
    x = np.random.default_rng(0).normal(size=(1, steps, features)).astype("float32")
    rows = []
    for cell in SPEED_CELLS:
        model = _speed_model(cell, steps, features, units)
        expected = model.predict(x, verbose=0)
        for target, batch in SPEED_TARGETS:
            for form in ("fused", "plain"):
                export_dir = os.path.join(workdir, f"{cell}-{target}-{batch}-{form}")
                signature = [tf.TensorSpec((batch, steps, features))] if batch else None
                with contextlib.nullcontext() if form == "fused" else ku.testing.generic_only():
                    model.export(export_dir, verbose=False, input_signature=signature)
                if target == "tflite":
                    content = to_tflite(export_dir)
                    ops = tflite_ops(content)
                    run = tflite_runner(content)
                    recurrent = [op for op in ops if op in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE")]
                else:
                    content = to_onnx(export_dir)
                    ops = onnx_ops(content)
                    run = onnx_runner(content)
                    recurrent = [op for op in ops if op in FUSED_ONNX_OPS + ("Loop",)]
                got = np.asarray(run(x)).reshape(expected.shape)
                rows.append(
                    {
                        "cell": cell,
                        "target": target,
                        "batch": "fixed 1" if batch else "open",
                        "form": form,
                        "op": "+".join(recurrent) or "-",
                        "kilobytes": len(content) / 1024,
                        "ms": _median_ms(lambda: run(x), repeats),
                        "max_diff": float(np.max(np.abs(got - expected))),
                    }
                )
    return rows


def print_speed(rows: List[Dict[str, Any]], steps: int, features: int, units: int) -> None:
    print(f"Fused export against the plain serving loop: run at batch 1, T={steps}, {features} features, {units} units")
    print(
        "| model | target | exported batch | form | recurrent op | size (KB) | ms per call | plain / fused | max diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    fused_ms = {(r["cell"], r["target"], r["batch"]): r["ms"] for r in rows if r["form"] == "fused"}
    for r in rows:
        ratio = f"{r['ms'] / fused_ms[r['cell'], r['target'], r['batch']]:.1f}x" if r["form"] == "plain" else ""
        print(
            f"| {r['cell']} | {r['target']} | {r['batch']} | {r['form']} | {r['op']} | {r['kilobytes']:.0f} | "
            f"{r['ms']:.2f} | {ratio} | {r['max_diff']:.0e} |",
            flush=True,
        )


# ------------------------------------------------------------------------------------------- matrix
def _cell_text(result: Dict[str, Any]) -> str:
    if result.get("ok"):
        fused = ", ".join(result.get("fused", ()))
        return f"ok ({result['max_diff']:.0e})" + (f" {fused}" if fused else "")
    return "FAIL: " + str(result.get("error", "?")).replace("|", "/")


def _run_in_child(case: Case, targets: Sequence[str], timeout: float) -> Dict[str, Dict[str, Any]]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_UNROLL_TIMED_TRIAL="0")
    payload = json.dumps({"case": dataclasses.asdict(case), "targets": list(targets)})
    try:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.deploy", "--child", payload],
            capture_output=True, text=True, env=env, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {target: {"ok": False, "error": f"timed out after {timeout:.0f} s"} for target in targets}
    for line in reversed(child.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    reason = (child.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {target: {"ok": False, "error": f"process failed: {reason}"} for target in targets}


def _case_from_dict(data: Dict[str, Any]) -> Case:
    data = dict(data)
    data["options"] = tuple(tuple(item) for item in data["options"])
    return Case(**data)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cases (a smoke test)")
    parser.add_argument("--cases", nargs="*", help="only the cases whose name contains one of these")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--in-process", action="store_true",
        help="run the cases one after another in this process (faster on a busy machine; cases may then share "
        "Keras' and TensorFlow's global state)",
    )  # fmt: skip
    parser.add_argument(
        "--speed", action="store_true",
        help="instead of the matrix: the fused-export form against the plain serving loop (TFLite, ONNX: "
        "recurrent op, size, latency at batch 1)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=100, help="T for --speed")
    parser.add_argument("--units", type=int, default=64, help="units for --speed")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per model for --speed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.speed:
        features = 16
        rows = speed_rows(args.steps, features, args.units, args.repeats)
        print_speed(rows, args.steps, features, args.units)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"speed": rows}, handle, indent=1)
        return 0
    if args.child:
        request = json.loads(args.child)
        result = run_case(_case_from_dict(request["case"]), request["targets"])
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    cases = all_cases(args.quick)
    if args.cases:
        cases = [case for case in cases if any(part in case.name for part in args.cases)]
    rows = []
    print("| case | " + " | ".join(args.targets) + " |", flush=True)
    print("|---|" + "---|" * len(args.targets), flush=True)
    for index, case in enumerate(cases, 1):
        started = time.perf_counter()
        result = run_case(case, args.targets) if args.in_process else _run_in_child(case, args.targets, args.timeout)
        rows.append({"case": case.name, "results": result})
        print(f"| {case.name} | " + " | ".join(_cell_text(result[t]) for t in args.targets) + " |", flush=True)
        print(f"[{index}/{len(cases)}] {case.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    failed = sum(not r["results"][t]["ok"] for r in rows for t in args.targets)
    print(
        f"\n{len(rows)} cases × {len(args.targets)} targets: "
        f"{len(rows) * len(args.targets) - failed} ok, {failed} failed"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"targets": list(args.targets), "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
