"""The `keras-unroll` command line, as `python -m keras_unroll` and `keras_unroll.cli.main`.

The command line itself lives in the top-level module `keras_unroll_cli`, which the `keras-unroll` script
runs: importing this module imports `keras_unroll` (TensorFlow and Keras) first, which the script avoids so
that `--help`, `--version` and argument errors answer at once.
"""

from __future__ import annotations

import sys

from keras_unroll_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
