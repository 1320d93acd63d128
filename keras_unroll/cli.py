"""The `keras-unroll` command line (also `python -m keras_unroll`).

Each subcommand lives beside the code it drives; this module only wires them together:

- `keras-unroll demo`: the main job (see `keras_unroll.demo`).
- `keras-unroll devices`: devices, the GPU configuration report and memory info (see `keras_unroll.gpu`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from keras_unroll import demo, gpu

    parser = argparse.ArgumentParser(
        prog="keras-unroll",
        description="Static vs dynamic RNN unrolling for TensorFlow 2 / Keras 3.",
    )
    # One line on stderr for a bad option, not usage + error (exit code 2 as argparse's own).
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")  # type: ignore[method-assign]
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_command(subparsers)
    gpu.add_command(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
