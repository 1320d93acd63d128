"""`python -m benchmarks [speed options]` runs the speed suite;
`python -m benchmarks memory|shapes|parts|first-minute|deploy [...]` the others.

`--verbose` shows TensorFlow's own log and the warnings the benchmarks cause on purpose (hidden by default).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Optional, Sequence

QUICK_NOTE = (
    "--quick is a smoke test on tiny shapes with few samples: it checks that everything runs; its times, "
    "ratios and memory figures are not meaningful. Run without --quick for numbers to compare."
)


class _ExpectedWarnings(logging.Filter):
    """Drops TensorFlow warnings that the benchmarks cause on purpose.

    - "triggered tf.function retracing": every variant and shape builds its own `tf.function` from the same
      Python code, which TensorFlow's retracing detector counts as retracing one function.
    - "dynamic_rnn (from tensorflow.python.ops.rnn) is deprecated": TF1's `dynamic_rnn` is timed as a baseline.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "triggered tf.function retracing" not in message and "dynamic_rnn (from" not in message


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("speed", "memory", "shapes", "parts", "first-minute", "deploy"):
        suite, argv = argv[0].replace("-", "_"), argv[1:]
    else:
        suite = "speed"
    quick = "--quick" in argv and not any(arg in ("-h", "--help") for arg in argv)
    if quick:
        print(QUICK_NOTE, file=sys.stderr, flush=True)
    try:
        module = importlib.import_module(f"benchmarks.{suite}")
    except ModuleNotFoundError as error:
        if error.name != f"benchmarks.{suite}":
            raise
        print(f"The {suite} benchmark (benchmarks/{suite}.py) is not part of this checkout.", file=sys.stderr)
        return 2
    code = int(module.main(argv) or 0)
    if quick:
        print(f"\n{QUICK_NOTE}", flush=True)
    return code


def _quiet(argv: Sequence[str]) -> list:
    """For `python -m benchmarks`: hides TensorFlow's start-up log and the expected warnings, unless `--verbose`."""
    argv = list(argv)
    if "--verbose" in argv:
        argv.remove("--verbose")
        return argv
    from keras_unroll_cli import _quiet_tensorflow

    _quiet_tensorflow(verbose=False)  # TensorFlow's C++ start-up log, as `keras-unroll` does
    logging.getLogger("tensorflow").addFilter(_ExpectedWarnings())
    return argv


if __name__ == "__main__":
    sys.exit(main(_quiet(sys.argv[1:])))
