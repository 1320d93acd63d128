"""`python -m benchmarks first-minute`: what a new user meets first, compilation included, each row in a fresh process.

Rows (each beside Keras' own layer of the same cell, or `jit_compile=False`, with the ratio):

- *fit*: `Input((T, F)) → RNN(H) → Dense(1)`, N samples, batch 64, for LSTM, GRU and SimpleRNN: wall time
  of the first `fit` epoch and of 5 epochs in all, and of the first `predict` (in a process of its own);
- *changing batch sizes*: one model called eagerly with batch sizes 1..K: time and peak RSS growth;
- *changing lengths*: `train_on_batch` over lengths 5..L: time and RSS growth;
- *eager lengths*: `DynamicUnroll(LSTMCell)` called eagerly over lengths 1..L: time and RSS growth.

Each child process prints one JSON line; the parent prints a table. RSS is the peak (`ru_maxrss`) after
the measured part minus the peak before it. `--repeats N` runs each pair N times interleaved and keeps
each variant's smallest figures (for loaded machines).

    python -m benchmarks first-minute                       # every row, the issue's sizes (#22)
    python -m benchmarks first-minute --cells lstm --cases fit predict --repeats 3
    python -m benchmarks first-minute --quick               # a smoke test: tiny sizes, one child process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

_CHILD = r"""
import contextlib, json, resource, sys, time
import numpy as np
import keras
import keras_unroll as ku
from keras_unroll.testing import generic_only

def rnn(units, cell_name, variant):
    if variant == "keras":
        layers = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
        return layers[cell_name](units)
    jit = {"ku": "auto", "ku-nojit": False, "ku-generic": "auto"}[variant]
    cells = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell, "simple_rnn": keras.layers.SimpleRNNCell}
    cell = cells[cell_name](units)
    return ku.DynamicUnroll(cell, jit_compile=jit)

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def build(steps, features, units, cell_name, variant):
    return keras.Sequential([keras.Input((steps, features)), rnn(units, cell_name, variant), keras.layers.Dense(1)])

def measure(case, variant, cell_name, size):
    rng = np.random.default_rng(0)
    out = {}
    if case in ("fit", "predict"):
        steps, features, units, samples = size["T"], size["F"], size["H"], size["N"]
        x = rng.standard_normal((samples, steps, features)).astype("float32")
        y = rng.standard_normal((samples, 1)).astype("float32")
        model = build(steps, features, units, cell_name, variant)
        if case == "fit":
            model.compile("adam", "mse")
            start = time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
            out["first_epoch_s"] = time.perf_counter() - start
            model.fit(x, y, batch_size=64, epochs=size["epochs"] - 1, verbose=0)
            out["epochs_s"] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            model.predict(x, batch_size=64, verbose=0)
            out["first_predict_s"] = time.perf_counter() - start
    elif case == "batches":
        steps, features, units = size["T"], size["F"], size["H"]
        model = build(steps, features, units, cell_name, variant)
        model(np.zeros((1, steps, features), "float32"))
        before = rss_mb()
        start = time.perf_counter()
        for batch in range(1, size["K"] + 1):
            model(rng.standard_normal((batch, steps, features)).astype("float32"))
        out["seconds"], out["rss_mb"] = time.perf_counter() - start, rss_mb() - before
    elif case == "lengths":
        features, units = size["F"], size["H"]
        model = build(None, features, units, cell_name, variant)
        model.compile("sgd", "mse")
        model.train_on_batch(rng.standard_normal((4, 3, features)).astype("float32"), np.zeros((4, 1), "float32"))
        before = rss_mb()
        start = time.perf_counter()
        for steps in range(5, size["L"] + 5):
            x = rng.standard_normal((4, steps, features)).astype("float32")
            model.train_on_batch(x, np.zeros((4, 1), "float32"))
        out["seconds"], out["rss_mb"] = time.perf_counter() - start, rss_mb() - before
    elif case == "eager_lengths":
        features, units = size["F"], size["H"]
        layer = rnn(units, cell_name, variant)
        layer(np.zeros((4, 2, features), "float32"))
        before = rss_mb()
        start = time.perf_counter()
        for steps in range(3, size["L"] + 3):
            layer(rng.standard_normal((4, steps, features)).astype("float32"))
        out["seconds"], out["rss_mb"] = time.perf_counter() - start, rss_mb() - before
    return out

for case, variant, cell_name, size in json.loads(sys.argv[1]):  # one job per process, but for --quick
    # "ku-generic": every call with the generic step, for comparisons
    with generic_only() if variant == "ku-generic" else contextlib.nullcontext():
        print(json.dumps(measure(case, variant, cell_name, size)), flush=True)
"""

CELLS = ("lstm", "gru", "simple_rnn")


def sizes(quick: bool) -> Dict[str, Dict[str, int]]:
    """The shapes of each case: the issue's (#22) by default, tiny ones with `--quick`."""
    if quick:
        return {
            "fit": {"T": 5, "F": 2, "H": 4, "N": 128, "epochs": 2},
            "batches": {"T": 4, "F": 2, "H": 4, "K": 6},
            "lengths": {"F": 2, "H": 4, "L": 4},
            "eager_lengths": {"F": 2, "H": 4, "L": 4},
        }
    return {
        "fit": {"T": 40, "F": 8, "H": 32, "N": 2048, "epochs": 5},
        "batches": {"T": 10, "F": 2, "H": 8, "K": 200},
        "lengths": {"F": 2, "H": 8, "L": 60},
        "eager_lengths": {"F": 8, "H": 32, "L": 100},
    }


def run_children(jobs: Sequence[Tuple[str, str, str, Dict[str, int]]], env: Optional[Dict[str, str]] = None) -> List:
    """`jobs` of `(case, variant, cell, size)`, one after another in one fresh Python process; returns their
    JSON results."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(jobs)],
        capture_output=True, text=True, env=env or dict(os.environ), timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        names = ", ".join("/".join(job[:3]) for job in jobs)
        raise RuntimeError(f"the child for {names} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(jobs) :]]


def run_child(case: str, variant: str, cell: str, size: Dict[str, int], env: Optional[Dict[str, str]] = None) -> Dict:
    """One measurement in a fresh Python process; returns its JSON result."""
    (result,) = run_children([(case, variant, cell, size)], env)
    return result


def paired(
    requests: Sequence[Tuple[str, Sequence[str], str, Dict[str, int]]], repeats: int, one_process: bool = False
) -> Iterator[List[Dict]]:
    """For each request `(case, variants, cell, size)`, in order: `repeats` fresh processes per variant,
    interleaved (A, B, A, B, ...) so that a load that comes and goes falls on both; per variant, the smallest
    value of each measure (the least disturbed run). With `one_process` (`--quick`) the same runs, in that order,
    share one process: its figures then only show that everything runs."""
    groups = [
        [(case, variant, cell, size) for _ in range(repeats) for variant in variants]
        for case, variants, cell, size in requests
    ]
    shared = iter(run_children([job for jobs in groups for job in jobs])) if one_process else None
    for (_, variants, _, _), jobs in zip(requests, groups):
        found = [next(shared) for _ in jobs] if shared else [run_child(*job) for job in jobs]
        runs: Dict[str, List[Dict]] = {variant: [] for variant in variants}
        for (_, variant, _, _), result in zip(jobs, found):
            runs[variant].append(result)
        yield [{key: min(run[key] for run in runs[variant]) for key in runs[variant][0]} for variant in variants]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "n/a"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks first-minute", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one child process: a smoke test, not numbers to compare"
    )
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--cases", nargs="+", choices=("fit", "predict", "batches", "lengths", "eager_lengths"),
                        default=["fit", "predict", "batches", "lengths", "eager_lengths"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per variant, interleaved (min kept)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    size = sizes(args.quick)
    results: List[Dict] = []
    print("| case | cell | DynamicUnroll default | baseline | ratio |\n|---|---|---|---|---|", flush=True)

    def row(case, cell, what, ours, base, base_name, unit="s"):
        fmt = (lambda v: f"{v:.2f} s") if unit == "s" else (lambda v: f"{v:.0f} MB")
        ratio = _ratio(ours, base) if unit == "s" else f"{ours - base:+.0f} MB"
        print(f"| {what} | {cell} | {fmt(ours)} | {base_name}: {fmt(base)} | {ratio} |", flush=True)
        results.append(
            {"case": case, "cell": cell, "what": what, "ours": ours, "baseline": base, "baseline_name": base_name}
        )

    requests, labels = [], []
    for cell in args.cells:
        for case in ("fit", "predict"):
            if case in args.cases:
                requests.append((case, ("ku", "keras"), cell, size["fit"]))
                labels.append(None)
    for case, cell, label in (
        ("batches", "simple_rnn", "batch sizes 1..{K}, eager"),
        ("lengths", "simple_rnn", "train_on_batch, {L} lengths"),
        ("eager_lengths", "lstm", "eager, {L} lengths"),
    ):
        if case in args.cases:
            requests.append((case, ("ku", "ku-nojit"), cell, size[case]))
            labels.append(label.format(**size[case]))
    for (case, _, cell, _), what, (ours, base) in zip(requests, labels, paired(requests, args.repeats, args.quick)):
        if case == "fit":
            row(case, cell, "first epoch", ours["first_epoch_s"], base["first_epoch_s"], "Keras")
            row(case, cell, f"{size['fit']['epochs']} epochs", ours["epochs_s"], base["epochs_s"], "Keras")
        elif case == "predict":
            row(case, cell, "first predict", ours["first_predict_s"], base["first_predict_s"], "Keras")
        else:
            row(case, cell, what + ", time", ours["seconds"], base["seconds"], "jit_compile=False")
            row(case, cell, what + ", RSS growth", ours["rss_mb"], base["rss_mb"], "jit_compile=False", unit="MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sizes": size, "results": results}, handle, indent=1)
    return 0
