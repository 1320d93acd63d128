"""`python -m benchmarks [speed options]` runs the speed suite; `python -m benchmarks memory [...]` the memory one."""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("speed", "memory"):
        suite, argv = argv[0], argv[1:]
    else:
        suite = "speed"
    try:
        module = importlib.import_module(f"benchmarks.{suite}")
    except ModuleNotFoundError as error:
        if error.name != f"benchmarks.{suite}":
            raise
        print(f"The {suite} benchmark (benchmarks/{suite}.py) is not part of this checkout.", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
