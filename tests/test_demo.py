"""`keras-unroll demo`: the quick run produces its table and files; bad options and files give one line, exit 2."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_unroll import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _parser():
    from keras_unroll_cli import add_demo_command

    parser = argparse.ArgumentParser(prog="keras-unroll")
    add_demo_command(parser.add_subparsers(dest="command"))
    return parser


# ------------------------------------------------------------------------------------ the quick run
# What a child process of `python -m keras_unroll demo` runs when matplotlib is not installed (the `plot` extra).
_WITHOUT_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; from keras_unroll.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _run_demo(argv, out, plots=True):
    """`python -m keras_unroll demo *argv` in a fresh process forked from the fork server (TensorFlow imported,
    `keras_unroll` not), which starts the demo's own reload child as a user's Python does."""
    from fork_server import run_forked

    prefix = ["-m", "keras_unroll"] if plots else ["-c", _WITHOUT_MATPLOTLIB]
    child = run_forked([*prefix, "demo", *argv, "--out", str(out)], timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout, json.loads((out / "results.json").read_text())


def _summary_table(stdout):
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["StaticUnroll", "DynamicUnroll"])
    return {line[:26].strip(): line[26:].split() for line in lines[header + 2 : header + 10]}


def _comparison_op_columns(stdout):
    """layer, loop, T, forward ops, training ops, compiled: the printed comparison table's op counts."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["layer", "loop", "T"])
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith(("StaticUnroll", "DynamicUnroll")):
            break
        layer, rest = line.split(maxsplit=1)
        loop, numbers = rest[: len("fused (XLA)")].strip(), rest[len("fused (XLA)") :].split()
        rows.append((layer, loop, *numbers[:4]))
    return rows


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """`demo --quick` run twice in fresh processes, the second as on an install without matplotlib (no `plot`
    extra) and at T = 2 only (`--steps 2`: the first run shows that the op counts of the plain and fused loops
    do not change with T): `[(stdout, results.json, out folder)]`. Each run costs seconds of fixed work (the
    traces, the export and its reload in another process), so the tests below share these two."""
    runs = []
    for plots, argv in ((True, ["--quick"]), (False, ["--quick", "--steps", "2"])):
        out = tmp_path_factory.mktemp("demo") / "demo out"
        runs.append((*_run_demo(argv, out, plots=plots), out))
    return runs


@pytest.mark.subprocess
@pytest.mark.slow
def test_quick_demo_prints_the_table_and_writes_the_files(quick_runs):
    stdout, results, out = quick_runs[0]
    table = _summary_table(stdout)
    assert set(table) == {
        "final training loss (MSE)", "test loss (MSE)", "graph ops, forward", "graph ops, training step",
        "of which XLA-compiled", "trace + first call", "step time in fit (median)", "peak memory, training step",
    }  # fmt: skip
    static, dynamic = results["models"]
    assert (static["name"], dynamic["name"]) == ("StaticUnroll", "DynamicUnroll")
    # The printed table shows the measured numbers, and says what the fused kernel's ops are.
    assert table["graph ops, training step"] == [str(static["training_ops"]), str(dynamic["training_ops"])]
    assert table["of which XLA-compiled"] == ["0", str(dynamic["compiled_ops"])] and dynamic["compiled_ops"] > 0
    assert f"{dynamic['compiled_ops']} of its {dynamic['training_ops']} training ops are in XLA-compiled" in stdout
    # Same initial weights, same data, same maths: the twins train to the same loss.
    assert static["train_loss"] == pytest.approx(dynamic["train_loss"], rel=1e-2)
    # The demo turns on the CPU allocator's statistics, so the peak memory is measured, on every row.
    assert static["peak_bytes"] > 0 and dynamic["peak_bytes"] > 0
    rows = results["comparison"]
    assert all(row["peak_bytes"] > 0 for row in rows) and "n/a" not in stdout
    variants = [("StaticUnroll", "unrolled"), ("DynamicUnroll", "while loop"), ("DynamicUnroll", "fused (XLA)")]
    assert [(row["layer"], row["loop"], row["steps"]) for row in rows] == [
        (layer, loop, t) for t in (2, 20, 100) for layer, loop in variants
    ]
    for name in ("demo_predictions.png", "compare_unrolling.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert "predictions match" in stdout and "keras_unroll imported in the child process: False" in stdout
    # The twins reach the same test loss, so neither is called better; the DynamicUnroll model is exported.
    assert results["best"] is None and results["exported"] == "DynamicUnroll"
    assert "Both reached the same test loss (within 1%" in stdout
    assert "No PNGs" not in stdout
    assert "| layer | loop | T |" in (out / "results.md").read_text()
    # The notebook's point at these sizes: the static graph and its training memory grow with T; neither TF1's
    # while loop's graph nor the fused kernel's does.
    static, plain, fused = ([row for row in rows if row["loop"] == loop] for _, loop in variants)
    for key in ("training_ops", "peak_bytes"):
        assert static[0][key] < static[1][key] < static[2][key]
    assert len({row["training_ops"] for row in plain}) == 1 and len({row["training_ops"] for row in fused}) == 1
    assert plain[-1]["training_ops"] < static[-1]["training_ops"]
    # Not compared here: the two loops' peak memory at --quick's sizes (16 units, T <= 100). An unrolled
    # graph's peak depends on the order the executor runs its ops in, and read 234-432 KB at T = 100 from
    # run to run against the while loop's 244 KB; at the default sizes (docs/guide.md) the while loop keeps
    # a third of the static graph's memory at T = 500.


@pytest.mark.subprocess
@pytest.mark.slow
def test_two_runs_print_the_same_op_counts(quick_runs):
    (first, first_json, _), (second, second_json, _) = quick_runs
    ops = ("forward_ops", "training_ops", "compiled_ops")
    assert [[m[k] for k in ops] for m in first_json["models"]] == [[m[k] for k in ops] for m in second_json["models"]]
    for label in ("graph ops, forward", "graph ops, training step", "of which XLA-compiled"):
        assert _summary_table(first)[label] == _summary_table(second)[label]
    printed = _comparison_op_columns(first)
    assert len(printed) == 9 and printed[:3] == _comparison_op_columns(second)  # the second run: T = 2 only
    assert printed == [
        (r["layer"], r["loop"], str(r["steps"]), str(r["forward_ops"]), str(r["training_ops"]), str(r["compiled_ops"]))
        for r in first_json["comparison"]
    ]


@pytest.mark.subprocess
@pytest.mark.slow
def test_without_matplotlib_the_demo_runs_and_says_how_to_get_the_pngs(quick_runs):
    stdout, _, out = quick_runs[1]  # as on an install without the `plot` extra: `import matplotlib` fails
    hint = [line for line in stdout.splitlines() if "[plot]" in line or "PNG" in line]
    assert hint == ['No PNGs: matplotlib is not installed. To get them: pip install "keras-unroll[plot]"']
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md", "saved_model"]


# -------------------------------------------------------------------------------------- options
def test_defaults_and_options():
    args = _parser().parse_args(["demo"])
    assert (args.epochs, args.steps, args.quick, args.data, args.out) == (None, None, False, None, "demo-output")
    assert callable(args.func) and args.verbose is False
    settings = demo._settings(args)
    assert (settings.epochs, settings.steps, settings.units) == (10, (2, 20, 100, 500), 100)
    args = _parser().parse_args(["demo", "--quick", "--epochs", "3", "--steps", "50,2,10,2"])
    settings = demo._settings(args)
    assert (settings.epochs, settings.steps, settings.num_train) == (3, (2, 10, 50), 256)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "argument --epochs: expected a positive integer. Received: '0'"),
        (["--epochs", "ten"], "argument --epochs: expected a positive integer. Received: 'ten'"),
        (["--steps", "2,x"], "argument --steps: expected comma-separated positive integers"),
        (["--steps", "-5"], "argument --steps: expected comma-separated positive integers"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["demo", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _bad_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a zip archive")
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    x = np.zeros((10, 4, 2), "float32")
    return [
        (str(tmp_path / "missing.npz"), "no such file"),
        (str(text), "is not a NumPy .npz file"),
        (str(npy), "single .npy array"),
        (_write(tmp_path / "no_y.npz", x=x), "has no array 'y'"),
        (_write(tmp_path / "nothing.npz", z=x), "has no array 'x' or 'y'"),
        (_write(tmp_path / "flat_x.npz", x=np.zeros((10, 4)), y=np.zeros(10)), "`x` must be 3D"),
        (_write(tmp_path / "short_y.npz", x=x, y=np.zeros(9)), "N = len(x) = 10"),
        (_write(tmp_path / "cube_y.npz", x=x, y=np.zeros((10, 1, 1))), "Received: y.shape=(10, 1, 1)"),
        (_write(tmp_path / "tiny.npz", x=x[:3], y=np.zeros(3)), "at least 5 samples"),
        (_write(tmp_path / "text.npz", x=np.full((10, 4, 2), "a"), y=np.zeros(10)), "must be numeric"),
        (_write(tmp_path / "nan.npz", x=x + np.nan, y=np.zeros(10)), "must be finite"),
        (_write(tmp_path / "complex.npz", x=x + 1j, y=np.zeros(10)), "must be real-valued"),
        (_write(tmp_path / "complex_y.npz", x=x, y=np.zeros(10) + 1j), "Received: x.dtype=float32, y.dtype=complex128"),
    ]


def test_bad_data_files_exit_2_with_one_line(tmp_path, capsys):
    for path, message in _bad_files(tmp_path):
        args = _parser().parse_args(["demo", "--quick", "--out", str(tmp_path / "out")])
        args.data = path  # past the parser's own check that the file exists: what load_npz says
        assert demo.run(args) == 2, path
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith("keras-unroll demo: error: --data: ") and message in captured.err, captured.err
    assert not (tmp_path / "out").exists()  # nothing was written


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("")
    assert demo.run(_parser().parse_args(["demo", "--out", str(target)])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out:" in err and "not a folder" in err


@pytest.mark.subprocess
def test_cli_reports_a_missing_data_file_in_one_line(tmp_path, subprocess_env):
    child = subprocess.run(
        [sys.executable, "-m", "keras_unroll_cli", "demo", "--data", str(tmp_path / "nope.npz")],
        capture_output=True,
        text=True,
        env=subprocess_env,
        cwd=tmp_path,
        timeout=300,
    )
    assert child.returncode == 2
    assert child.stderr.splitlines() == [
        f"keras-unroll demo: error: argument --data: no such file: {str(tmp_path / 'nope.npz')!r}; expected an .npz "
        "file with arrays `x` and `y` (see --help)"
    ]
    assert not (tmp_path / "demo-output").exists()


# ------------------------------------------------------------------------------------------ data
def test_user_data_is_split_80_20(tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "mine.npz", x=rng.normal(size=(20, 6, 3)), y=rng.normal(size=20))
    data = demo.load_npz(path)
    assert data.x_train.shape == (16, 6, 3) and data.y_train.shape == (16, 1)
    assert data.x_test.shape == (4, 6, 3) and data.y_test.shape == (4, 1)
    assert data.x_train.dtype == np.float32 and data.test_t is None


def test_series_windows_follow_the_book():
    data = demo.make_series_data(num_train=8, num_test=5)
    assert data.x_train.shape == (8, 20, 1) and data.y_train.shape == (8, 1)
    # The target is the value 0.1 after the window's last one, on t·sin(t)/3 + 2·sin(5t).
    np.testing.assert_allclose(data.y_test[:, 0], demo.time_series(data.test_t), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_test[:, -1, 0], demo.time_series(data.test_t - 0.1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(demo.time_series([0.0, np.pi]), [0.0, 2 * np.sin(5 * np.pi)], atol=1e-12)
    assert data.test_t[0] == pytest.approx(12.2)


# ------------------------------------------------------------------------------ choice and plots
def _result(name, test_loss, predictions=None):
    return demo.Result(name, None, test_loss, test_loss, 1, 1, 0, 0.0, 0.0, None, predictions)


@pytest.mark.parametrize(
    "static_loss, dynamic_loss, exported, better",
    [
        (0.0046, 0.0046 + 4e-8, "DynamicUnroll", None),  # the case: a 4e-8 difference is no "better"
        (0.0100, 0.0100 * 1.009, "DynamicUnroll", None),  # within 1 %
        (0.0100, 0.0120, "StaticUnroll", "StaticUnroll"),
        (0.0300, 0.0100, "DynamicUnroll", "DynamicUnroll"),
        (0.0, 0.0, "DynamicUnroll", None),
    ],
)
def test_better_only_when_the_difference_is_real(static_loss, dynamic_loss, exported, better):
    chosen, winner, sentence = demo._pick_export(
        [_result("StaticUnroll", static_loss), _result("DynamicUnroll", dynamic_loss)]
    )
    assert chosen.name == exported
    assert (winner.name if winner else None) == better
    assert ("lower test loss" in sentence) == (better is not None)
    assert ("same test loss" in sentence) == (better is None)


def test_the_plot_has_one_panel_per_output(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    rng = np.random.default_rng(0)
    heights = {}
    for outputs in (1, 2):
        path = _write(tmp_path / f"data{outputs}.npz", x=rng.normal(size=(20, 4, 2)), y=rng.normal(size=(20, outputs)))
        data = demo.load_npz(path)
        results = [_result(name, 1.0, rng.normal(size=data.y_test.shape)) for name in ("StaticUnroll", "DynamicUnroll")]
        png = demo.plot_predictions(data, results, str(tmp_path / f"plot{outputs}.png"))
        heights[outputs] = matplotlib.image.imread(png).shape[0]
    assert heights[2] > heights[1] * 1.3  # a second panel, not the first output alone


# ------------------------------------------------------------------- what the comparison prints
def _comparison(peak_bytes, features=1, units=1):
    from keras_unroll.inspect import UnrollComparison, UnrollRow

    rows = tuple(
        UnrollRow(layer, 2, 10, 20, 0.01, 0.02, 0.001, peak_bytes, loop=loop)
        for layer, loop in (("StaticUnroll", "unrolled"), ("DynamicUnroll", "while loop"))
    )
    return UnrollComparison(rows=rows, batch=4, features=features, units=units)


def test_comparison_table_uses_singular_and_explains_na():
    from keras_unroll.inspect import PEAK_MEMORY_HINT

    text = str(_comparison(None))
    assert "1 feature, 1 unit;" in text and "1 features" not in text
    assert text.splitlines()[-1] == PEAK_MEMORY_HINT
    assert "TF_CPU_ALLOCATOR_USE_BFC=true" in PEAK_MEMORY_HINT and "fresh process" in PEAK_MEMORY_HINT
    measured = str(_comparison(2048, features=3, units=8))
    assert "3 features, 8 units;" in measured and PEAK_MEMORY_HINT not in measured


def test_compare_unrolling_progress_bar_and_its_switch(capsys):
    from keras_unroll.inspect import compare_unrolling

    compare_unrolling(4, steps=(2,), batch=2, features=1, repeats=1, verbose=1)
    assert "3/3" in capsys.readouterr().out  # Keras' Progbar: one tick per layer (and TF1 loop) and T
    compare_unrolling(4, steps=(2,), batch=2, features=1, repeats=1, verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r'`verbose` must be 0, 1 or "auto". Received: verbose=2'):
        compare_unrolling(4, steps=(2,), verbose=2)


def test_comparison_html_explains_na_too():
    from keras_unroll.inspect import PEAK_MEMORY_HINT

    assert "TF_CPU_ALLOCATOR_USE_BFC=true" in _comparison(None)._repr_html_()
    assert "TF_CPU_ALLOCATOR_USE_BFC" not in _comparison(4096)._repr_html_()
    assert PEAK_MEMORY_HINT.startswith("peak memory n/a")


def test_show_graph_explains_na_and_names_the_tensorboard_extra(tmp_path):
    import keras_unroll as ku
    from keras_unroll.inspect import PEAK_MEMORY_HINT, show_graph

    view = show_graph(ku.DynamicUnroll(3), (2, 2, 1), logdir=tmp_path)
    text = str(view)
    assert "`tensorboard` extra" in text
    # Without TF_CPU_ALLOCATOR_USE_BFC=true at start (the test run's default) TensorFlow reports no CPU peak.
    untracked = view.training.peak_bytes is None
    assert (PEAK_MEMORY_HINT in text) == untracked
    assert (PEAK_MEMORY_HINT in view._repr_html_().replace("&#x27;", "'")) == untracked
