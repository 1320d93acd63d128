"""The documentation is true: README code runs as pasted, docstring examples pass, links point somewhere.

- Every ```python block of README.md runs on its own in a fresh Python process (what a reader who pastes
  it gets), with nothing defined beforehand.
- The `>>>` examples of every keras_unroll module's docstrings run as doctests.
- Every relative link in README.md and docs/*.md names a file that exists, and a `#section` a heading there.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import keras_unroll

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

_FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(path: pathlib.Path):
    return _FENCE.findall(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ README blocks
def test_the_readme_has_python_blocks_and_stays_short():
    assert len(python_blocks(README)) >= 2  # the quick start and "use it in your own model"
    assert len(README.read_bytes()) <= 12_000, "keep the README short: move detail to docs/"


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """Starts every README block at once, each in its own process (forked from the fork server: TensorFlow
    imported, `keras_unroll` not) and folder; returns their results."""
    from fork_server import start_forked
    from helpers import AS_USERS_RUN

    started = []
    for index, code in enumerate(python_blocks(README)):
        folder = tmp_path_factory.mktemp(f"readme_block_{index}")
        child = start_forked(["-c", code], cwd=folder, unset=AS_USERS_RUN, timeout=600)  # as a user runs them
        started.append((code, child))
    results = []
    for code, child in started:
        done = child.wait()
        results.append((code, done.returncode, done.stdout, done.stderr))
    return results


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_block_runs_as_pasted(readme_runs, index):
    code, returncode, stdout, stderr = readme_runs[index]
    assert returncode == 0, f"README block {index} failed:\n{code}\n--- stderr ---\n{stderr[-3000:]}"
    # The comments that announce a printed shape say what the block really prints.
    expected = [m.group(1) for m in re.finditer(r"^print\(.*?\)\s+# (\(.*\))$", code, re.MULTILINE)]
    printed = stdout.splitlines()
    assert printed == expected, (printed, expected)


# ---------------------------------------------------------------------------------------- doctests
def _modules_with_examples():
    names = [keras_unroll.__name__] + [
        info.name for info in pkgutil.walk_packages(keras_unroll.__path__, prefix="keras_unroll.")
    ]
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in sorted(names):
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        if any(test.examples for test in finder.find(module, name)):
            found.append(name)
    return found


MODULES_WITH_EXAMPLES = _modules_with_examples()


def test_the_public_modules_have_examples():
    assert {"keras_unroll.cell", "keras_unroll.layers", "keras_unroll.inspect"} <= set(MODULES_WITH_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in finder.find(module, name, globs={}):
        result = runner.run(test, out=failures.append)
        del result
    assert runner.failures == 0, "".join(failures)
    assert runner.tries > 0


# ------------------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group(0) == "_" else "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: pathlib.Path):
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"^#{1,6} ", line)}


def test_slug_follows_github():
    assert _slug("Masks and `sequence_length`: the one place where they differ") == (
        "masks-and-sequence_length-the-one-place-where-they-differ"
    )
    assert _slug("Static or dynamic?") == "static-or-dynamic"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files_and_headings(page):
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)  # code is not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert broken == [], broken


def test_the_readme_and_demo_help_give_the_same_run_times():
    import argparse

    from keras_unroll_cli import add_demo_command

    epilog = add_demo_command(argparse.ArgumentParser().add_subparsers()).epilog
    pattern = re.compile(
        r"about ([\d.]+ minutes?) on 2 CPU cores.*?--quick[^a-z]*(under a minute|about [\d.]+ s)", re.DOTALL
    )
    readme, helped = pattern.search(README.read_text(encoding="utf-8")), pattern.search(epilog)
    assert readme and helped, (readme, epilog)
    assert readme.groups() == helped.groups()
