"""The benchmark suite runs (a tiny smoke run, as CI does) and reports what it promises. No timing assertions."""

from __future__ import annotations

import json
import sys

import pytest
from fork_server import python_children_forked

from benchmarks import __main__ as entry
from benchmarks import speed


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--quick", "--variants", "StaticUnroll", "TF1 dynamic_rnn", "NumPy loop", "--json", str(out)]
    assert speed.main(argv) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr()
    assert "| B·T·F·H | cell | variant | forward | train step | fit epoch |" in printed.out
    assert "round 2/2" in printed.err  # progress goes to stderr
    assert printed.out.startswith("CPU: ") and report["environment"]["cpu"] in printed.out  # tables name their CPU
    by_variant = {r["variant"]: r for r in report["results"]}
    assert set(by_variant) == {speed.REFERENCE, "StaticUnroll", "TF1 dynamic_rnn", "NumPy loop"}
    assert by_variant[speed.REFERENCE]["label"] == "SimpleRNN(unroll=False)"
    reference = by_variant[speed.REFERENCE]
    for measure in ("forward", "train", "fit"):
        assert reference[f"{measure}_ms"] > 0 and reference[f"{measure}_ratio"] == pytest.approx(1.0)
        assert len(reference[f"{measure}_samples_ms"]) == report["repeats"] == 2
    assert by_variant["StaticUnroll"]["train_ratio"] > 0
    assert "fit_ms" not in by_variant["TF1 dynamic_rnn"] and "train_ms" in by_variant["TF1 dynamic_rnn"]
    assert {"forward_ms"} == {k for k in by_variant["NumPy loop"] if k.endswith("_ms") and "samples" not in k}
    assert report["table"] in printed.out and report["environment"]["tensorflow"]


def test_gated_cells_get_their_keras_peers_and_the_targets_are_checked(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--quick", "--cells", "lstm", "--variants", "DynamicUnroll default", "Keras+XLA", "NumPy loop"]
    assert speed.main(argv + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    by_variant = {r["variant"]: r for r in report["results"]}
    assert {r["cell"] for r in report["results"]} == {"lstm"}
    assert (
        by_variant[speed.REFERENCE]["label"] == "LSTM(unroll=False)" and by_variant[speed.PEER]["label"] == "LSTM+XLA"
    )
    assert by_variant["NumPy loop"]["skipped"].startswith("the NumPy loop is the SimpleRNN floor")
    assert by_variant[speed.DEFAULT]["train_ratio"] > 0 and by_variant[speed.PEER]["forward_ms"] > 0
    # The targets that apply to what ran, each with the ratio of this run: default vs Keras at every shape.
    rows = {row["target"]: row for row in report["targets"]}
    row = rows["DynamicUnroll default train step ≤ 1.0× LSTM(unroll=False), every shape"]
    ratio = by_variant[speed.DEFAULT]["train_ms"] / by_variant[speed.REFERENCE]["train_ms"]
    assert row["measured"] == [["2·3·3·4", round(ratio, 3)]] and row["holds"] == (ratio <= 1.0)
    assert "| target | measured (ratio) | holds? |" in capsys.readouterr().out


def test_targets_are_checked_against_the_peer_named():
    def entry(variant, train_ms, cell="gru", shape=(32, 1000, 8, 32)):
        return {"cell": cell, "shape": list(shape), "variant": variant, "train_ms": train_ms}

    results = [entry(speed.REFERENCE, 10.0), entry(speed.PEER, 5.0), entry(speed.DEFAULT, 3.9)]
    rows = {row["target"]: row for row in speed.check_targets(results)}
    long_shape = "32·1000·8·32"
    assert rows[f"DynamicUnroll default train step ≤ 0.4× GRU(unroll=False), {long_shape}"]["holds"] is True
    peer = rows[f"DynamicUnroll default train step ≤ 0.8× GRU+XLA, {long_shape}"]
    assert peer["measured"] == [[long_shape, 0.78]] and peer["holds"] is True
    results[-1]["train_ms"] = 4.5  # 0.45x Keras, 0.9x the XLA-compiled peer: both miss
    rows = {row["target"]: row for row in speed.check_targets(results)}
    assert not rows[f"DynamicUnroll default train step ≤ 0.8× GRU+XLA, {long_shape}"]["holds"]
    assert "**no**" in speed.targets_table(list(rows.values()))
    assert not any("LSTM" in name or "SimpleRNN" in name for name in rows)  # only the cell that ran


def test_skips_are_reported_not_fatal():
    assert speed.available("StaticUnroll", (2, 1000, 3, 4), max_unrolled_steps=100).startswith("T > 100")
    assert speed.available("SimpleRNN(unroll=True)", (2, 1000, 3, 4), max_unrolled_steps=1000) is None
    assert speed.available("Keras(unroll=True)", (2, 1000, 3, 4), max_unrolled_steps=100).startswith("T > 100")
    assert speed.available("DynamicUnroll+XLA", (2, 1000, 3, 4), max_unrolled_steps=100) is None
    table = speed.markdown_table([{"shape": [1, 2, 3, 4], "variant": "torch nn.RNN", "skipped": "torch not installed"}])
    assert "| 1·2·3·4 | SimpleRNN | torch nn.RNN | skipped: torch not installed |" in table


def test_bad_arguments_name_the_option(capsys):
    with pytest.raises(SystemExit):
        speed.main(["--shapes", "32x28x28"])
    assert "a shape is BxTxFxH with positive ints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["--repeats", "0"])
    assert "--repeats must be a positive integer. Received: --repeats 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["--variants", "Dynamic"])
    assert "a variant is one of" in capsys.readouterr().err


def test_entry_point_dispatches_to_the_suites(monkeypatch):
    seen = []
    monkeypatch.setattr(speed, "main", lambda argv: seen.append(("speed", argv)) or 0)
    assert entry.main(["--quick"]) == 0
    assert entry.main(["speed", "--repeats", "3"]) == 0
    assert seen == [("speed", ["--quick"]), ("speed", ["--repeats", "3"])]
    memory = pytest.importorskip("benchmarks.memory", reason="benchmarks/memory.py belongs to the memory suite")
    monkeypatch.setattr(memory, "main", lambda argv: seen.append(("memory", argv)) or 0)
    assert entry.main(["memory", "--quick"]) == 0
    assert seen[-1] == ("memory", ["--quick"])


def test_module_help_runs(monkeypatch, capsys):
    """`python -m benchmarks --help`: the module run as `-m` runs it (`runpy`), in this process."""
    import logging
    import runpy
    import warnings

    monkeypatch.setattr(sys, "argv", ["benchmarks", "--help"])
    tensorflow_log = logging.getLogger("tensorflow")
    filters = list(tensorflow_log.filters)
    try:
        with pytest.raises(SystemExit) as exited, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: this file imported benchmarks.__main__ already
            runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
    finally:
        for added in [f for f in tensorflow_log.filters if f not in filters]:  # the entry's filter of its warnings
            tensorflow_log.removeFilter(added)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m benchmarks") and "--quick" in out and "--json" in out


def test_shapes_suite_quick_prints_its_rows(capsys):
    from benchmarks import shapes

    with python_children_forked() as forked:  # its child, without a TensorFlow import of its own
        assert shapes.main(["--quick"]) == 0
    assert len(forked) == 1  # `--quick`: both lengths rows from one child
    out = capsys.readouterr().out
    assert "lengths 5..8, jit_compile=auto" in out and "lengths 5..8, jit_compile=False" in out
    assert float(out.split("ratio ")[-1].split()[0]) > 0  # a smoke test: the numbers come from the full run


def test_parts_suite_quick_prints_every_part(capsys):
    from benchmarks import parts

    assert parts.main(["--quick", "--cells", "gru", "--writes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ")
    for name in (
        "layer forward",
        "projection",
        "compiled forward",
        "compiled backward",
        "train",
        "Keras+XLA train",
        "writes h, c",
    ):
        assert f"{name} " in out
