"""Peak memory and time of one training step versus sequence length T, for every way to unroll.

Each (case, T) runs in a fresh Python process with `TF_CPU_ALLOCATOR_USE_BFC=true`, so that
`tf.config.experimental.get_memory_info("CPU:0")` counts every allocation TensorFlow makes (with the default
CPU allocator it misses small ones). The child first reserves one large allocator region (`--reserve-mb`,
an uninitialised tensor, freed at once: no page is touched): a BFC allocator that grows on demand adds
regions of 2^k MB and hands out a tensor of, say, 156 MB as a whole 256 MB chunk when it sits in a fresh
region, so one large tensor counted up to 1.6x its size and many small ones (Keras' per-step tensors) their
size; with the region in place every tensor counts its own bytes, as on a GPU, whose BFC allocator reserves
its memory up front. Then: build `Input((T, F)) -> layer(H) -> Dense(1)`, run one training step (trace +
run), reset the allocator's peak, run one more step and read the peak. Reported:

- `peak_mb`: the allocator's peak during that step;
- `activation_mb`: peak minus what was in use before the step (weights, optimizer slots, the batch), i.e.
  what the step itself allocates: activations kept for the backward pass, gradients, temporaries;
- `step_ms`: median wall time of a few more steps (this machine is shared: ratios, not absolutes).

Usage:
    python -m benchmarks memory                  # full run (T = 100 ... 20000), writes the JSON and the plot
    python -m benchmarks memory --cells lstm     # only the LSTM rows (--cells simple: the SimpleRNN ones)
    python -m benchmarks memory --quick          # tiny shapes, a smoke test (about a minute)

Two cell families, each compared with its Keras layer at the same T: SimpleRNN (`keras.layers.SimpleRNN`
against `DynamicUnroll(BasicRNNCell)` and the other ways to unroll it) and LSTM (`keras.layers.LSTM` against
`DynamicUnroll(LSTMCell)`, whose default runs the fused recurrence in its LSTM mode,
`keras_unroll/kernels/recurrence.py`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "docs" / "images" / "memory_vs_T.png"
DEFAULT_JSON = ROOT / "docs" / "images" / "memory_vs_T.json"

#: case name -> the longest T it is run for (None: every T). Python-unrolled graphs grow with T: at T=1000
#: tracing alone takes tens of seconds and ~1 GB, beyond that they are not a practical option.
CASES: Dict[str, Optional[int]] = {
    "SimpleRNN": 5000,  # slow baselines stop at 5000 so that the full run stays within ~15 minutes
    "SimpleRNN(unroll=True)": 1000,
    "StaticUnroll": 1000,
    "DynamicUnroll": None,
    "DynamicUnroll(jit_compile=False)": 5000,
    "DynamicUnroll(swap_memory=True)": None,
    "DynamicUnroll(recompute='sqrt')": None,
    "LSTM": 5000,
    "DynamicUnroll(LSTMCell)": 5000,
    "DynamicUnroll(LSTMCell, jit_compile=False)": 5000,
    "DynamicUnroll(LSTMCell, swap_memory=True)": 5000,
    "DynamicUnroll(LSTMCell, recompute='sqrt')": None,
}
#: cell family -> (Keras' layer, keras_unroll's default) of that family: the two cases every row is compared to.
BASELINES: Dict[str, Tuple[str, str]] = {
    "simple": ("SimpleRNN", "DynamicUnroll"),
    "lstm": ("LSTM", "DynamicUnroll(LSTMCell)"),
}
FULL_STEPS = (100, 1000, 2000, 5000, 20000)
#: MB of allocator region a child reserves before measuring (module docstring): more than any step here needs.
RESERVE_MB = 6144
QUICK_STEPS = (20, 80)


def cell_of(case: str) -> str:
    """The cell family of a case: `"lstm"` for the LSTM rows, else `"simple"` (SimpleRNN / BasicRNNCell)."""
    return "lstm" if "LSTM" in case else "simple"


# --------------------------------------------------------------------------------- child process
def _make_layer(case: str, units: int) -> Any:
    import keras

    import keras_unroll as ku

    if case == "SimpleRNN":
        return keras.layers.SimpleRNN(units)
    if case == "SimpleRNN(unroll=True)":
        return keras.layers.SimpleRNN(units, unroll=True)
    if case == "LSTM":
        return keras.layers.LSTM(units)
    if case == "StaticUnroll":
        return ku.StaticUnroll(ku.BasicRNNCell(units))
    if case not in CASES or not case.startswith("DynamicUnroll"):
        raise ValueError(f"Unknown benchmark case. Expected one of {sorted(CASES)}. Received: case={case!r}")
    # "DynamicUnroll", "DynamicUnroll(LSTMCell)", "DynamicUnroll(LSTMCell, swap_memory=True)", ...
    options = case[len("DynamicUnroll(") : -1].split(", ") if case != "DynamicUnroll" else []
    cell = ku.BasicRNNCell(units)
    if options and options[0] == "LSTMCell":
        cell = keras.layers.LSTMCell(units)
        options = options[1:]
    kwargs: Dict[str, Any] = {}
    for option in options:
        name, value = option.split("=")
        if name == "recompute":
            value = value.strip("'\"")
            kwargs[name] = value if value == "sqrt" else int(value)
        else:
            kwargs[name] = value == "True"
    return ku.DynamicUnroll(cell, **kwargs)


def measure(
    case: str, steps: int, batch: int, features: int, units: int, repeats: int = 3, reserve_mb: int = 0
) -> Dict[str, Any]:
    """One (case, T) measurement in this process. Needs `TF_CPU_ALLOCATOR_USE_BFC=true` set before TF starts;
    `reserve_mb`: the allocator region reserved first (see the module docstring; 0: none)."""
    import keras
    import numpy as np
    import tensorflow as tf

    if reserve_mb:
        region = tf.raw_ops.Empty(shape=[reserve_mb * 2**20 // 4], dtype=tf.float32)
        del region

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
        "reserve_mb": reserve_mb,
    }


def run_case(
    case: str,
    steps: int,
    batch: int,
    features: int,
    units: int,
    repeats: int,
    timeout: float,
    reserve_mb: int = RESERVE_MB,
) -> Dict[str, Any]:
    """Runs `measure` in a fresh process with the BFC allocator; returns its result (or the error)."""
    return run_cases(case, [steps], batch, features, units, repeats, timeout, reserve_mb)[0]


def run_cases(
    case: str,
    steps: Sequence[int],
    batch: int,
    features: int,
    units: int,
    repeats: int,
    timeout: float,
    reserve_mb: int = RESERVE_MB,
) -> List[Dict[str, Any]]:
    """`measure` for each T of `steps` in one fresh process (a full run passes one T per process, so that no
    earlier model shares the allocator; `--quick`, a smoke test, all of a case's T at once)."""
    env = dict(os.environ)
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    lengths = ",".join(str(t) for t in steps)
    numbers = [str(n) for n in (batch, features, units, repeats, reserve_mb)]
    args = [sys.executable, "-m", "benchmarks.memory", "--child", case, lengths, *numbers]
    try:
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout * len(steps))
    except subprocess.TimeoutExpired:
        return [{"case": case, "T": t, "error": f"timed out after {timeout:.0f} s"} for t in steps]
    found = {r["T"]: r for r in (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))}
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    error = {"error": f"exit {done.returncode}: {tail[0][:200]}"}
    return [found.get(t) or {"case": case, "T": t, **error} for t in steps]


# ---------------------------------------------------------------------------------------- report
def _ratio(value: Optional[float], base: Optional[float]) -> str:
    return f"{value / base:.3f}×" if value is not None and base else "–"


def markdown_table(results: Sequence[Dict[str, Any]]) -> str:
    """Rows: cases; for each T: peak MB, activation MB and ms per step, each ratio to the same cell's Keras
    layer (`SimpleRNN`, `LSTM`) and to keras_unroll's default for that cell (`BASELINES`), measured at that T."""
    by_key = {(r["case"], r["T"]): r for r in results}
    steps = sorted({r["T"] for r in results})
    cases = list(dict.fromkeys(r["case"] for r in results))
    lines = [
        "| case | T | peak MB | activation MB | activation vs Keras | activation vs default | step ms "
        "| time vs Keras | time vs default |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        keras_case, default_case = BASELINES[cell_of(case)]
        for t in steps:
            r = by_key.get((case, t))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {case} | {t} | – | – | – | – | – | – | {r['error']} |")
                continue
            keras_row, default_row = by_key.get((keras_case, t), {}), by_key.get((default_case, t), {})
            lines.append(
                f"| {case} | {t} | {r['peak_mb']:.4g} | {r['activation_mb']:.4g} "
                f"| {_ratio(r['activation_mb'], keras_row.get('activation_mb'))} "
                f"| {_ratio(r['activation_mb'], default_row.get('activation_mb'))} | {r['step_ms']:.4g} "
                f"| {_ratio(r['step_ms'], keras_row.get('step_ms'))} "
                f"| {_ratio(r['step_ms'], default_row.get('step_ms'))} |"
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
        style = dict(marker="s" if cell_of(case) == "lstm" else "o", linestyle="--" if cell_of(case) == "lstm" else "-")
        ax_mem.plot(ts, [max(r["activation_mb"], 1e-3) for r in rows], label=case, **style)
        ax_time.plot(ts, [r["step_ms"] for r in rows], label=case, **style)
    for ax, label in (
        (ax_mem, "activation memory of one training step (MB)"),
        (ax_time, "time of one training step (ms)"),
    ):
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
    parser.add_argument("--steps", type=int, nargs="+", help="sequence lengths T (default 100 1000 2000 5000 20000)")
    parser.add_argument(
        "--cells",
        nargs="+",
        choices=sorted(BASELINES),
        default=sorted(BASELINES, reverse=True),
        help="cell families whose cases run (default: simple lstm)",
    )
    parser.add_argument("--cases", nargs="+", choices=list(CASES), help="cases to run (default: every case of --cells)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per case (median reported)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it is dropped")
    parser.add_argument(
        "--json", type=pathlib.Path, help=f"write results here (full run default: {DEFAULT_JSON.relative_to(ROOT)})"
    )
    parser.add_argument(
        "--plot", type=pathlib.Path, help=f"write the PNG here (full run default: {DEFAULT_PLOT.relative_to(ROOT)})"
    )
    parser.add_argument(
        "--reserve-mb",
        type=int,
        default=RESERVE_MB,
        help=f"allocator region each child reserves first, MB (default {RESERVE_MB}; 0: grow on demand, see above)",
    )
    parser.add_argument(
        "--child", nargs=7, metavar=("CASE", "T", "B", "F", "H", "REPEATS", "RESERVE"), help=argparse.SUPPRESS
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        case, lengths, *numbers = args.child
        for t in map(int, lengths.split(",")):
            print(json.dumps(measure(case, t, *map(int, numbers))), flush=True)
        return 0
    reserve_mb = args.reserve_mb
    if args.quick:
        batch, features, units, repeats, reserve_mb = 4, 3, 16, 1, min(reserve_mb, 64)
        steps = tuple(args.steps or QUICK_STEPS)
    else:
        batch, features, units, repeats = args.batch, args.features, args.units, args.repeats
        steps = tuple(args.steps or FULL_STEPS)
        args.json = args.json or DEFAULT_JSON
        args.plot = args.plot or DEFAULT_PLOT
    cases = args.cases or [case for case in CASES if cell_of(case) in args.cells]
    if args.quick:  # a smoke test: one process per case for all its T, two processes at a time
        runs = [(case, steps) for case in cases]
    else:  # one process per (case, T), one at a time: no other measurement shares the cores or the memory
        runs = [(case, (t,)) for case in cases for t in steps if CASES[case] is None or t <= CASES[case]]
    started = time.perf_counter()

    def one(run: Tuple[str, Sequence[int]]) -> List[Dict[str, Any]]:
        found = run_cases(run[0], run[1], batch, features, units, repeats, args.timeout, reserve_mb)
        for result in found:
            summary = result.get("error") or f"activation {result['activation_mb']:.1f} MB, {result['step_ms']:.1f} ms"
            print(f"{run[0]:44s} T={result['T']:<6d} {summary}", file=sys.stderr, flush=True)
        return found

    with concurrent.futures.ThreadPoolExecutor(2 if args.quick else 1) as pool:
        results: List[Dict[str, Any]] = [r for found in pool.map(one, runs) for r in found]
    region = f", {reserve_mb} MB region reserved" if reserve_mb else ", allocator grown on demand"
    title = f"one training step, B={batch} F={features} H={units} (CPU, BFC allocator{region})"
    print(f"\n### Memory of {title}\n")
    print(markdown_table(results))
    skipped = [
        f"{case} (T > {cap})" for case, cap in CASES.items() if case in cases and cap is not None and not args.quick
    ]
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
