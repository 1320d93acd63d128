"""Runs several scripts of examples/ in one Python process, each as `__main__` with `--quick` in a working
directory of its own, so that the examples' smoke test imports TensorFlow once instead of once per script.

    python tests/example_runner.py RESULTS.json WORKDIR examples/a.py examples/b.py ...

Writes `{script name: {"error": traceback or "", "stdout": ..., "stderr": ...}}` (what the script printed
through Python). tests/test_examples.py runs it in a child of the keras fork server (`fork_server.run_forked`),
which has imported TensorFlow and Keras once for the suite. Importing them does not initialise TensorFlow's
devices, so the first script may still set them up (`configure_gpus`); a script whose device set-up would change
the others' (logical CPUs) is run on its own by tests/test_examples.py instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback
from typing import Dict, List


def run(scripts: List[str], workdir: str) -> Dict[str, Dict[str, str]]:
    import keras

    results = {}
    for script in scripts:
        name = os.path.basename(script)
        cwd = os.path.join(workdir, os.path.splitext(name)[0])
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)  # anything the example writes lands in its own folder
        stdout, stderr = io.StringIO(), io.StringIO()
        error = ""
        saved_argv = sys.argv
        sys.argv = [script, "--quick"]
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                error = f"SystemExit({exit_.code!r})\n{traceback.format_exc()}"
        except BaseException:  # reported per script; the next script still runs
            error = traceback.format_exc()
        finally:
            sys.argv = saved_argv
            keras.backend.clear_session()  # the next example starts from Keras' defaults
            keras.mixed_precision.set_dtype_policy("float32")
        results[name] = {"error": error, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    return results


def main(argv: List[str]) -> int:
    out, workdir, scripts = argv[0], argv[1], argv[2:]
    results = run([os.path.abspath(script) for script in scripts], os.path.abspath(workdir))
    with open(out, "w") as file:
        json.dump(results, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
