"""Every script in examples/ runs to the end in its quick mode (CI's smoke test, so the examples never rot).

Scripts that set devices up before TensorFlow initialises (`configure_gpus`, logical CPUs) run each in a fresh
Python; the others run one after the other in one more (`example_runner.py`: each as `__main__`, in a folder
of its own), which imports TensorFlow once for all of them.
"""

import json
import pathlib
import subprocess
import sys

import pytest
from helpers import child_env

TESTS = pathlib.Path(__file__).resolve().parent
EXAMPLES = sorted((TESTS.parent / "examples").glob("*.py"))
#: Each needs a process of its own: it configures devices before TensorFlow initialises them.
OWN_PROCESS = {"seed_notebook.py", "distributed.py"}


def test_examples_are_found():
    names = {path.name for path in EXAMPLES}
    assert {
        "seed_notebook.py", "sequence_lengths.py", "time_series.py", "text_classification.py",
        "tf1_checkpoint.py", "export_and_serve.py", "stateful_char_rnn.py", "tf1_chapter.py",
    } <= names  # fmt: skip
    assert OWN_PROCESS <= names


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """The examples that can share a process, run by one child: `{script name: result}`."""
    scripts = [str(path) for path in EXAMPLES if path.name not in OWN_PROCESS]
    tmp = tmp_path_factory.mktemp("examples")
    child = subprocess.run(
        [sys.executable, str(TESTS / "example_runner.py"), str(tmp / "results.json"), str(tmp), *scripts],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp,
        timeout=1200,
    )
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
    child = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        env=request.getfixturevalue("subprocess_env"),
        cwd=tmp_path,  # anything an example writes lands in a temporary folder
        timeout=600,
    )
    assert child.returncode == 0, f"{script.name} failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    assert "Traceback" not in child.stderr
