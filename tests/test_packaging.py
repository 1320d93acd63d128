"""Packaging: one version source, a tidy public surface, serializable names, the console script."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pathlib
import re
import sys

import keras
import pytest

import keras_unroll as ku

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIST = "keras-unroll"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python < 3.11 needs tomli")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_comes_from_the_installed_metadata():
    assert ku.__version__ == importlib.metadata.version(DIST)
    assert ku.__version__ == _pyproject()["project"]["version"]


def test_pyproject_is_the_only_place_the_version_is_written():
    version = _pyproject()["project"]["version"]
    pattern = re.compile(r"""["']""" + re.escape(version) + r"""["']""")
    hits = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "keras_unroll").rglob("*.py"))
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert hits == [], f"the version {version!r} is also written in {hits}; read it with importlib.metadata"
    assert "dynamic" not in _pyproject()["project"], "the version must be static in pyproject.toml"


def test_all_is_sorted_and_importable():
    assert list(ku.__all__) == sorted(ku.__all__)
    assert len(set(ku.__all__)) == len(ku.__all__)
    for name in ku.__all__:
        assert getattr(ku, name, None) is not None, f"keras_unroll.__all__ names {name!r}, which is not there"
    namespace: dict = {}
    exec("from keras_unroll import *", namespace)
    assert set(ku.__all__) <= set(namespace)


def _public_keras_classes():
    return [
        (name, obj)
        for name, obj in ((n, getattr(ku, n)) for n in ku.__all__)
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)
    ]


def test_there_are_public_keras_classes():
    names = {name for name, _ in _public_keras_classes()}
    assert {"BasicRNNCell", "DynamicUnroll", "StaticUnroll"} <= names


@pytest.mark.parametrize("name, cls", _public_keras_classes(), ids=[n for n, _ in _public_keras_classes()])
def test_public_classes_are_registered_under_keras_unroll(name, cls):
    registered = f"keras_unroll>{name}"
    assert keras.saving.get_registered_name(cls) == registered
    assert keras.saving.get_registered_object(registered) is cls


def test_console_script_entry_point_is_installed():
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "keras-unroll"]
    assert len(scripts) == 1, scripts
    (script,) = scripts
    # The light launcher, which parses before importing TensorFlow (tests/test_cli.py). An older editable
    # install still names keras_unroll.cli:main until `pip install -e .` runs again (make test does).
    assert script.value == "keras_unroll_cli:main"
    assert script.dist is None or script.dist.metadata["Name"] == DIST
    module_name, _, attribute = script.value.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))
    assert _pyproject()["project"]["scripts"]["keras-unroll"] == script.value


def test_extras_are_named_for_what_users_do():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    assert {"plot", "tensorboard", "gpu", "test"} <= set(extras)
    assert any(req.startswith("matplotlib") for req in extras["plot"])
    assert any(req.startswith("tensorboard") for req in extras["tensorboard"])
    # The demo runs without matplotlib (tests/test_demo.py), so the core install stays TensorFlow + Keras + NumPy.
    assert sorted(req.split(">")[0].split("=")[0] for req in project["dependencies"]) == [
        "keras",
        "numpy",
        "tensorflow",
    ]


def test_every_extra_is_in_the_readmes_install_table_with_what_it_is_for():
    """A user finds each extra of pyproject.toml in the README's install lines, each with a comment saying what
    it adds (an extra documented nowhere is one nobody installs)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for extra in _pyproject()["project"]["optional-dependencies"]:
        line = re.search(rf'^pip install "\.\[{extra}\]" +# \+ (.+)$', readme, re.MULTILINE)
        assert line, f'README.md has no `pip install ".[{extra}]"  # + what it adds` line'
        assert len(line.group(1).split()) >= 3, line.group(0)


def test_the_launcher_is_packaged_and_imports_only_the_standard_library():
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "keras_unroll_cli" in include and "keras_unroll" in include
    source = (ROOT / "keras_unroll_cli" / "__init__.py").read_text(encoding="utf-8")
    top_level = re.findall(r"^(?:import|from) (\w+)", source, re.MULTILINE)
    assert set(top_level) <= {"__future__", "argparse", "math", "os", "sys", "typing"}, top_level
