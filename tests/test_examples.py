"""Every script in examples/ runs to the end in its quick mode (CI's smoke test, so the examples never rot)."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_examples_are_found():
    names = {path.name for path in EXAMPLES}
    assert {
        "seed_notebook.py", "sequence_lengths.py", "time_series.py", "text_classification.py",
        "tf1_checkpoint.py", "export_and_serve.py", "tf1_chapter.py",
    } <= names  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_in_quick_mode(script, subprocess_env, tmp_path):
    child = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        env=subprocess_env,
        cwd=tmp_path,  # anything an example writes lands in a temporary folder
        timeout=600,
    )
    assert child.returncode == 0, f"{script.name} failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    assert "Traceback" not in child.stderr
