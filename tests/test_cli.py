"""`keras-unroll`: help, version and bad options answer at once, without TensorFlow, in one line.

Each case runs the command line in a fresh Python process that reports, after `main` returns, whether
TensorFlow (or Keras, or keras_unroll) was imported: the parser must not need them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

PROBE = textwrap.dedent(
    """
    import json, sys
    from keras_unroll_cli import main
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exit:  # argparse's --help, --version and errors
        code = exit.code
    heavy = sorted(name for name in ("tensorflow", "keras", "keras_unroll") if name in sys.modules)
    sys.stdout.flush()
    sys.stderr.write("PROBE " + json.dumps({"code": code, "imported": heavy}) + "\\n")
    """
)


def _run(argv, env, timeout=60):
    """Runs `main(argv)` in a fresh process; returns (code, imported modules, stdout, stderr lines, seconds)."""
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, env=env, timeout=timeout
    )
    seconds = time.perf_counter() - started
    lines = child.stderr.splitlines()
    probe = json.loads(lines[-1].removeprefix("PROBE "))
    return probe["code"], probe["imported"], child.stdout, lines[:-1], seconds


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], "usage: keras-unroll"),
        (["demo", "--help"], "usage: keras-unroll demo"),
        (["devices", "--help"], "usage: keras-unroll devices"),
        (["--version"], "keras-unroll "),
    ],
    ids=["help", "demo-help", "devices-help", "version"],
)
def test_help_and_version_answer_without_tensorflow(argv, expected, subprocess_env):
    code, imported, stdout, stderr, seconds = _run(argv, subprocess_env)
    assert code == 0
    assert imported == []  # the reason it is fast: no TensorFlow, no Keras, not even keras_unroll
    assert stdout.startswith(expected) and stderr == []
    assert seconds < 5  # a sanity bound only; TensorFlow's import alone takes longer on these machines


def test_version_is_the_installed_one(capsys):
    import importlib.metadata

    from keras_unroll_cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"keras-unroll {importlib.metadata.version('keras-unroll')}\n"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--steps", "abc"], "keras-unroll demo: error: argument --steps: expected comma-separated positive"),
        (["demo", "--epochs", "0"], "keras-unroll demo: error: argument --epochs: expected a positive integer"),
        (["demo", "--bogus"], "keras-unroll: error: unrecognized arguments: --bogus"),
        (
            ["devices", "--memory-fraction", "abc"],
            "keras-unroll devices: error: argument --memory-fraction: expected a number in (0, 1]",
        ),
        (
            ["devices", "--memory-fraction", "2"],
            "keras-unroll devices: error: argument --memory-fraction: expected a number in (0, 1]",
        ),
        (
            ["devices", "--memory-limit-mb", "-1"],
            "keras-unroll devices: error: argument --memory-limit-mb: expected a positive integer",
        ),
        (["devices", "--visible", "0,x"], "keras-unroll devices: error: argument --visible: expected GPU indices"),
        (
            ["devices", "--memory-fraction", "0.5", "--memory-limit-mb", "10"],
            "keras-unroll devices: error: argument --memory-limit-mb: not allowed with argument --memory-fraction",
        ),
        (["bogus"], "keras-unroll: error: argument COMMAND: invalid choice: 'bogus'"),
    ],
    ids=["steps", "epochs", "unknown", "fraction-text", "fraction-range", "limit", "visible", "both-caps", "command"],
)
def test_a_bad_option_is_one_stderr_line_exit_2_without_tensorflow(argv, message, subprocess_env):
    code, imported, stdout, stderr, _ = _run(argv, subprocess_env)
    assert code == 2
    assert imported == []
    assert stdout == ""
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith(message), stderr[0]
    assert stderr[0].endswith("(see --help)")
    assert "memory_fraction" not in stderr[0] and "memory_limit_mb" not in stderr[0]  # the flag, not Python's name


def test_no_command_prints_the_help_and_exits_2(capsys):
    from keras_unroll_cli import main

    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: keras-unroll")


@pytest.mark.subprocess
@pytest.mark.slow
def test_devices_is_quiet_and_explains_memory_na(subprocess_env):
    """`keras-unroll devices` in a fresh process, without the TF_CPP_MIN_LOG_LEVEL the tests set elsewhere."""
    env = {k: v for k, v in subprocess_env.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPU_ALLOCATOR_USE_BFC")}
    child = subprocess.run(
        [sys.executable, "-m", "keras_unroll_cli", "devices"], capture_output=True, text=True, env=env, timeout=300
    )
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""  # TensorFlow's C++ start-up log is hidden without --verbose
    lines = child.stdout.splitlines()
    assert lines[:2] == ["Physical devices:", "  /physical_device:CPU:0 (CPU)"]
    assert "  /device:CPU:0 (CPU), memory: n/a" in lines
    assert any("n/a: TensorFlow counts memory here only with TF_CPU_ALLOCATOR_USE_BFC=true" in line for line in lines)
    assert "configure_gpus" not in child.stdout  # CLI terms: the flags, not the Python function
    assert lines[-1].startswith("GPU settings: TensorFlow's defaults") or "TensorFlow sees no GPU" in lines[-1]


def test_python_m_keras_unroll_uses_the_same_parser():
    from keras_unroll import cli
    from keras_unroll_cli import build_parser, main

    assert cli.main is main and cli.build_parser is build_parser


def test_demo_and_devices_parsers_register_on_any_parser():
    """`add_demo_command` and `add_devices_command` register the light parsers on a program's own subparsers; the
    demo's defaults in the help text are the demo's own (the CLI cannot import the demo without TensorFlow)."""
    import argparse

    from keras_unroll import demo
    from keras_unroll_cli import DEMO_DEFAULT_STEPS, DEMO_QUICK_STEPS, add_demo_command, add_devices_command

    parser = argparse.ArgumentParser(prog="keras-unroll")
    subparsers = parser.add_subparsers(dest="command")
    add_demo_command(subparsers)
    add_devices_command(subparsers)
    args = parser.parse_args(["devices", "--visible", "0,1", "--memory-fraction", "0.5", "--memory-growth"])
    assert (args.visible, args.memory_fraction, args.memory_limit_mb, args.memory_growth) == ("0,1", 0.5, None, True)
    assert args.verbose is False
    args = parser.parse_args(["demo", "--quick", "--verbose"])
    assert args.quick and args.verbose
    assert (DEMO_DEFAULT_STEPS, DEMO_QUICK_STEPS) == (demo.DEFAULT_STEPS, demo.QUICK_STEPS)
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"  # set by conftest; the CLI never lowers it


@pytest.mark.subprocess
def test_the_installed_script_answers_at_once(subprocess_env):
    """The real `keras-unroll` script beside this Python (CI's fresh .venv has it) answers in well under 5 s."""
    import pathlib

    script = pathlib.Path(sys.executable).with_name("keras-unroll")
    if not script.exists() or "keras_unroll_cli" not in script.read_text(encoding="utf-8", errors="replace"):
        pytest.skip(f"no keras-unroll script for the launcher beside {sys.executable} (reinstall: pip install -e .)")
    for argv, code, stream in ((["--version"], 0, "stdout"), (["demo", "--steps", "abc"], 2, "stderr")):
        started = time.perf_counter()
        child = subprocess.run([str(script), *argv], capture_output=True, text=True, env=subprocess_env, timeout=60)
        assert time.perf_counter() - started < 5
        assert child.returncode == code
        assert len(getattr(child, stream).splitlines()) == 1
