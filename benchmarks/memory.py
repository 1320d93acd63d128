"""Peak memory and time of one training step versus sequence length T, for every way to unroll.

Each (case, T) runs in a fresh Python process with `TF_CPU_ALLOCATOR_USE_BFC=true`, so that
`tf.config.experimental.get_memory_info("CPU:0")` counts every allocation TensorFlow makes (with the default
CPU allocator it misses small ones). In the child: build `Input((T, F)) -> layer(H) -> Dense(1)`, run one
training step (trace + run), reset the allocator's peak, run one more step and read the peak. Reported:

- `peak_mb`: the allocator's peak during that step;
- `activation_mb`: peak minus what was in use before the step (weights, optimizer slots, the batch), i.e.
  what the step itself allocates: activations kept for the backward pass, gradients, temporaries;
- `step_ms`: median wall time of a few more steps (this machine is shared: ratios, not absolutes).

Usage:
    python -m benchmarks.memory              # full run (T = 100 ... 20000), writes the JSON and the plot
    python -m benchmarks.memory --quick      # tiny shapes, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "docs" / "images" / "memory_vs_T.png"
DEFAULT_JSON = ROOT / "docs" / "images" / "memory_vs_T.json"

#: case name -> the longest T it is run for (None: every T). Python-unrolled graphs grow with T: at T=1000
#: tracing alone takes tens of seconds and ~1 GB, beyond that they are not a practical option.
CASES: Dict[str, Optional[int]] = {
    "SimpleRNN": 5000,  # slow baselines stop at 5000 so that the full run stays near 10 minutes
    "SimpleRNN(unroll=True)": 1000,
    "StaticUnroll": 1000,
    "DynamicUnroll": None,
    "DynamicUnroll(jit_compile=False)": 5000,
    "DynamicUnroll(swap_memory=True)": None,
    "DynamicUnroll(recompute='sqrt')": None,
}
FULL_STEPS = (100, 1000, 5000, 20000)
QUICK_STEPS = (20, 80)


# --------------------------------------------------------------------------------- child process
def _make_layer(case: str, units: int) -> Any:
    import keras

    import keras_unroll as ku

    if case == "SimpleRNN":
        return keras.layers.SimpleRNN(units)
    if case == "SimpleRNN(unroll=True)":
        return keras.layers.SimpleRNN(units, unroll=True)
    if case == "StaticUnroll":
        return ku.StaticUnroll(ku.BasicRNNCell(units))
    if case == "DynamicUnroll":
        return ku.DynamicUnroll(ku.BasicRNNCell(units))
    if case == "DynamicUnroll(jit_compile=False)":
        return ku.DynamicUnroll(ku.BasicRNNCell(units), jit_compile=False)
    if case == "DynamicUnroll(swap_memory=True)":
        return ku.DynamicUnroll(ku.BasicRNNCell(units), swap_memory=True)
    if case.startswith("DynamicUnroll(recompute="):
        value = case[len("DynamicUnroll(recompute=") : -1].strip("'\"")
        return ku.DynamicUnroll(ku.BasicRNNCell(units), recompute=value if value == "sqrt" else int(value))
    raise ValueError(f"Unknown benchmark case. Expected one of {sorted(CASES)}. Received: case={case!r}")


def measure(case: str, steps: int, batch: int, features: int, units: int, repeats: int = 3) -> Dict[str, Any]:
    """One (case, T) measurement in this process. Needs `TF_CPU_ALLOCATOR_USE_BFC=true` set before TF starts."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, steps, features)).astype("float32"))
    y = tf.constant(rng.normal(size=(batch, 1)).astype("float32"))
    model = keras.Sequential([keras.Input((steps, features)), _make_layer(case, units), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    started = time.perf_counter()
    train_step(x, y).numpy()  # trace + first run
    first_s = time.perf_counter() - started
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    train_step(x, y).numpy()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        train_step(x, y).numpy()
        times.append(time.perf_counter() - started)
    return {
        "case": case,
        "T": steps,
        "B": batch,
        "F": features,
        "H": units,
        "peak_mb": peak / 2**20,
        "activation_mb": (peak - before) / 2**20,
        "step_ms": 1000 * statistics.median(times),
        "first_call_s": first_s,
    }


def run_case(case: str, steps: int, batch: int, features: int, units: int, repeats: int, timeout: float) -> Dict[str, Any]:
    """Runs `measure` in a fresh process with the BFC allocator; returns its result (or the error)."""
    env = dict(os.environ)
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, "-m", "benchmarks.memory", "--child", case, str(steps), str(batch), str(features), str(units), str(repeats)]
    try:
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "T": steps, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"case": case, "T": steps, "error": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------- report
def markdown_table(results: Sequence[Dict[str, Any]]) -> str:
    """Rows: cases; for each T: peak MB / activation MB / ms per step, and the ratio to DynamicUnroll."""
    by_key = {(r["case"], r["T"]): r for r in results}
    steps = sorted({r["T"] for r in results})
    cases = list(dict.fromkeys(r["case"] for r in results))
    lines = [
        "| case | T | peak MB | activation MB | activation vs DynamicUnroll | step ms | time vs DynamicUnroll |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for t in steps:
            r = by_key.get((case, t))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {case} | {t} | – | – | – | – | {r['error']} |")
                continue
            base = by_key.get(("DynamicUnroll", t), {})
            mem_ratio = r["activation_mb"] / base["activation_mb"] if base.get("activation_mb") else math.nan
            time_ratio = r["step_ms"] / base["step_ms"] if base.get("step_ms") else math.nan
            lines.append(
                f"| {case} | {t} | {r['peak_mb']:.4g} | {r['activation_mb']:.4g} | {mem_ratio:.3f}× | "
                f"{r['step_ms']:.4g} | {time_ratio:.2f}× |"
            )
    return "\n".join(lines)


def plot(results: Sequence[Dict[str, Any]], path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for case in dict.fromkeys(r["case"] for r in results):
        rows = sorted((r for r in results if r["case"] == case and "error" not in r), key=lambda r: r["T"])
        if not rows:
            continue
        ts = [r["T"] for r in rows]
        ax_mem.plot(ts, [max(r["activation_mb"], 1e-3) for r in rows], marker="o", label=case)
        ax_time.plot(ts, [r["step_ms"] for r in rows], marker="o", label=case)
    for ax, label in ((ax_mem, "activation memory of one training step (MB)"), (ax_time, "time of one training step (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_mem.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (B=4, F=3, H=16, T=20, 80): seconds")
    parser.add_argument("--steps", type=int, nargs="+", help="sequence lengths T (default 100 1000 5000 20000)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), help="cases to run (default: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per case (median reported)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it is dropped")
    parser.add_argument("--json", type=pathlib.Path, help=f"write results here (full run default: {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--plot", type=pathlib.Path, help=f"write the PNG here (full run default: {DEFAULT_PLOT.relative_to(ROOT)})")
    parser.add_argument("--child", nargs=6, metavar=("CASE", "T", "B", "F", "H", "REPEATS"), help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        case, *numbers = args.child
        print(json.dumps(measure(case, *map(int, numbers))), flush=True)
        return 0
    if args.quick:
        batch, features, units, repeats = 4, 3, 16, 1
        steps = tuple(args.steps or QUICK_STEPS)
    else:
        batch, features, units, repeats = args.batch, args.features, args.units, args.repeats
        steps = tuple(args.steps or FULL_STEPS)
        args.json = args.json or DEFAULT_JSON
        args.plot = args.plot or DEFAULT_PLOT
    cases = args.cases or list(CASES)
    results: List[Dict[str, Any]] = []
    started = time.perf_counter()
    for case in cases:
        for t in steps:
            cap = CASES[case]
            if cap is not None and t > cap and not args.quick:
                continue
            result = run_case(case, t, batch, features, units, repeats, args.timeout)
            results.append(result)
            summary = result.get("error") or f"activation {result['activation_mb']:.1f} MB, {result['step_ms']:.1f} ms"
            print(f"{case:34s} T={t:<6d} {summary}", file=sys.stderr, flush=True)
    title = f"one training step, B={batch} F={features} H={units} (CPU, BFC allocator)"
    print(f"\n### Memory of {title}\n")
    print(markdown_table(results))
    skipped = [f"{case} (T > {cap})" for case, cap in CASES.items() if case in cases and cap is not None and not args.quick]
    if skipped and any(t > min(c for c in CASES.values() if c) for t in steps):
        print(f"\nNot run (Python-unrolled graphs grow with T; slow baselines): {', '.join(skipped)}.")
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"title": title, "results": results}, indent=1) + "\n")
    if args.plot:
        plot(results, args.plot, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
