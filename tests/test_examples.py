"""Every script in examples/ runs to the end in its quick mode (CI's smoke test, so the examples never rot).

The scripts run one after the other in one child Python (`example_runner.py`: each as `__main__`, in a folder of
its own), forked from the keras fork server (`fork_server.run_forked`: TensorFlow and Keras imported, not
`keras_unroll`, no device initialised). A script that sets devices up before TensorFlow initialises them runs
first there (`seed_notebook.py`'s `configure_gpus`: nothing has touched a device yet, as in a fresh Python);
`distributed.py` (logical CPUs for the whole process, and worker processes of its own) runs in a forked child of
its own. Both run at the package's own compile tier, as a user runs them (`AS_USERS_RUN`).
"""

import json
import pathlib

import pytest
from fork_server import run_forked
from helpers import AS_USERS_RUN

TESTS = pathlib.Path(__file__).resolve().parent
EXAMPLES = sorted((TESTS.parent / "examples").glob("*.py"))
#: Needs a process of its own: it splits the CPU into logical devices for the rest of the process.
OWN_PROCESS = {"distributed.py"}
#: Configures devices before TensorFlow initialises them: runs first in the shared child, before any other
#: script has touched a device (`configure_gpus` raises once they are initialized).
RUNS_FIRST = "seed_notebook.py"


def test_examples_are_found():
    names = {path.name for path in EXAMPLES}
    assert {
        "seed_notebook.py", "sequence_lengths.py", "time_series.py", "text_classification.py",
        "tf1_checkpoint.py", "export_and_serve.py", "stateful_char_rnn.py", "tf1_chapter.py",
    } <= names  # fmt: skip
    assert OWN_PROCESS | {RUNS_FIRST} <= names


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """The examples that can share a process, run by one child: `{script name: result}`."""
    shared = [path for path in EXAMPLES if path.name not in OWN_PROCESS]
    scripts = [str(path) for path in sorted(shared, key=lambda path: path.name != RUNS_FIRST)]
    tmp = tmp_path_factory.mktemp("examples")
    argv = [str(TESTS / "example_runner.py"), str(tmp / "results.json"), str(tmp), *scripts]
    child = run_forked(argv, unset=AS_USERS_RUN, cwd=tmp, timeout=1200)
    assert child.returncode == 0, f"example_runner.py failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    return json.loads((tmp / "results.json").read_text())


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_in_quick_mode(script, request, tmp_path):
    if script.name not in OWN_PROCESS:
        result = request.getfixturevalue("shared_run")[script.name]
        assert not result["error"], f"{script.name} failed:\n{result['stdout'][-2000:]}\n{result['error'][-3000:]}"
        assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
        return
    # Anything an example writes lands in a temporary folder.
    child = run_forked([str(script), "--quick"], unset=AS_USERS_RUN, cwd=tmp_path, timeout=600)
    assert child.returncode == 0, f"{script.name} failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    assert "Traceback" not in child.stderr
