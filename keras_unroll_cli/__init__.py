"""The `keras-unroll` command line, kept apart from `keras_unroll` so that it starts at once.

Importing `keras_unroll` imports TensorFlow and Keras (seconds on a small machine): the package registers
its layers with Keras on import, which `keras.saving.load_model` relies on. This module imports only the
standard library, so `keras-unroll --help`, `--version` and a bad option answer before any of that; the
commands import TensorFlow only once their arguments are parsed:

- `keras-unroll demo`: the main job (`keras_unroll.demo.run`).
- `keras-unroll devices`: TensorFlow's devices, memory and GPU configuration (`keras_unroll_cli.devices`,
  over `keras_unroll.configure_gpus`).

The command line sits on top of the library: it imports `keras_unroll`, never the other way round.

By default the commands silence TensorFlow's C++ log (see `_quiet_tensorflow`): on a machine without GPU it
prints lines such as "failed call to cuInit" that are not errors of the command. `--verbose` leaves the
log as TensorFlow has it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence, Tuple

__all__ = ["add_demo_command", "add_devices_command", "build_parser", "main"]

PROG = "keras-unroll"
# For the help text only (this module must not import TensorFlow): the demo's own defaults are
# `keras_unroll.demo.DEFAULT_STEPS` / `QUICK_STEPS`, which a test keeps equal to these.
DEMO_DEFAULT_STEPS = (2, 20, 100, 500)
DEMO_QUICK_STEPS = (2, 20, 100)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-unroll")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Makes `parser` report a bad option as one line on stderr (exit code 2), instead of usage + error."""

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser


def _quiet_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow without its C++ log, unless `verbose`; call before anything imports it.

    `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set it) quiets the log once TensorFlow runs, but the lines it
    prints while its libraries load ("All log messages before absl::InitializeLog() ...", "oneDNN custom
    operations are on", "Could not find cuda drivers", "failed call to cuInit") ignore it in TF 2.21, so
    the process's stderr is pointed at /dev/null during the import. A Python error in the import still
    shows: it is printed after stderr is restored.
    """
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2: nothing to silence
        return
    try:
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's own log (hidden by default)",
    )


# ------------------------------------------------------------------------------------------- demo
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _steps_list(text: str) -> Tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, e.g. 2,10,100,500. Received: {text!r}"
        )
    return tuple(sorted(set(values)))


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        reason = "is a folder" if os.path.isdir(text) else "no such file"
        raise argparse.ArgumentTypeError(f"{reason}: {text!r}; expected an .npz file with arrays `x` and `y`")
    return text


def _run_demo(args: argparse.Namespace) -> int:
    _quiet_tensorflow(args.verbose)
    from keras_unroll import demo

    return demo.run(args)


def add_demo_command(subparsers: Any) -> argparse.ArgumentParser:
    """Registers `keras-unroll demo` on `subparsers`; its `func` runs `keras_unroll.demo.run`."""
    steps, quick = ",".join(map(str, DEMO_DEFAULT_STEPS)), ",".join(map(str, DEMO_QUICK_STEPS))
    parser = subparsers.add_parser(
        "demo",
        help="train the same model with StaticUnroll and with DynamicUnroll; print and plot the comparison",
        description=(
            "Trains one keras.Sequential twice, once with StaticUnroll (a Python loop traced into the graph) "
            "and once with DynamicUnroll (a tf.while_loop), on the time series of Hands-On ML chapter 14 "
            "(or --data). Prints a side-by-side table (loss, graph ops, trace time, step time, peak memory), "
            "exports one model as a SavedModel and checks it in a fresh process, then measures StaticUnroll, "
            "TF1's plain while loop and DynamicUnroll at several sequence lengths (T = "
            f"{steps}). Writes results.md, results.json, "
            "saved_model/ and, with matplotlib installed, demo_predictions.png and compare_unrolling.png "
            "to --out."
        ),
        epilog=(
            "Without --data nothing is downloaded. The default run takes about 1.5 minutes on 2 CPU cores, "
            "--quick under a minute (most of it importing TensorFlow and tracing). Exit codes: 0 done, 1 the "
            "SavedModel check failed, 2 bad options or files."
        ),
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default 10; 1 with --quick)"
    )
    parser.add_argument(
        "--steps",
        type=_steps_list,
        default=None,
        metavar="T,T,...",
        help=f"sequence lengths for the static vs dynamic comparison (default {steps}; {quick} with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="small data, small model, 1 epoch, short comparison")
    parser.add_argument(
        "--data",
        type=_existing_file,
        default=None,
        metavar="FILE.npz",
        help="train on your own arrays: an .npz with real-valued `x` (N, T, F) and `y` (N,) or (N, outputs)",
    )
    parser.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default demo-output/)")
    _add_verbose(parser)
    _one_line_errors(parser)
    parser.set_defaults(func=_run_demo)
    return parser


# ---------------------------------------------------------------------------------------- devices
def _gpu_indices(text: str) -> str:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(item.isascii() and item.isdigit() for item in items):
        raise argparse.ArgumentTypeError(
            f'expected GPU indices separated by commas, such as "0" or "0,1". Received: {text!r}'
        )
    if len(set(map(int, items))) != len(items):
        raise argparse.ArgumentTypeError(f"lists a GPU more than once. Received: {text!r}")
    return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise argparse.ArgumentTypeError(
            "expected a number in (0, 1], the share of each GPU's total memory "
            f"(for a cap in MiB use --memory-limit-mb). Received: {text!r}"
        )
    return value


def _run_devices(args: argparse.Namespace) -> int:
    _quiet_tensorflow(args.verbose)
    from keras_unroll_cli import devices  # imports TensorFlow and keras_unroll

    return devices.run(args)


def add_devices_command(subparsers: Any) -> argparse.ArgumentParser:
    """Registers `keras-unroll devices` on `subparsers`; its `func` runs `keras_unroll_cli.devices.run`."""
    parser = subparsers.add_parser(
        "devices",
        help="show TensorFlow's devices, their memory use and the GPU settings",
        description=(
            "Prints TensorFlow's physical and logical devices, the memory TensorFlow has in use on each logical "
            "device, and the GPU settings in force. The options set GPU visibility and memory first, as "
            "keras_unroll.configure_gpus does in a program (the TF2 replacement for TF1's ConfigProto GPU "
            "options)."
        ),
        epilog=(
            "Memory shows n/a where TensorFlow does not count allocations: on a CPU unless "
            "TF_CPU_ALLOCATOR_USE_BFC=true is set before the command starts. Exit codes: 0 done, 2 bad options "
            "or settings TensorFlow refused."
        ),
    )
    parser.add_argument(
        "--visible", type=_gpu_indices, metavar="INDICES", help='GPUs to keep visible, e.g. "0" or "0,1"'
    )
    cap = parser.add_mutually_exclusive_group()
    cap.add_argument(
        "--memory-fraction",
        type=_fraction,
        metavar="F",
        help="cap each visible GPU at this share of its memory, in (0, 1]",
    )
    cap.add_argument(
        "--memory-limit-mb", type=_positive_int, metavar="MIB", help="cap each visible GPU at this many MiB"
    )
    parser.add_argument("--memory-growth", action="store_true", help="allocate GPU memory on demand")
    _add_verbose(parser)
    _one_line_errors(parser)
    parser.set_defaults(func=_run_devices)
    return parser


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The `keras-unroll` parser with its subcommands; builds without importing TensorFlow."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Static vs dynamic RNN unrolling for TensorFlow 2 / Keras 3.",
        epilog="Run `keras-unroll COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_demo_command(subparsers)
    add_devices_command(subparsers)
    _one_line_errors(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `keras-unroll` with `argv` (default `sys.argv[1:]`); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)
