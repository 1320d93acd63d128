"""The design stays visible: imports flow one way, nothing module-level steers tracing, caches are bounded.

Layers, bottom to top (docs/architecture.md): the cell and the step (`cell`, `step`) → kernels → loops →
the planner (`plan`) → the functional API and the layers → everything built on them (inspection, the TF1
vocabulary, checkpoints, the CLI). A module may import only modules of its own layer or below.
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np

import keras_unroll as ku
from keras_unroll import testing

PACKAGE = pathlib.Path(ku.__file__).parent

LAYERS = [
    ("keras_unroll.cell", "keras_unroll.step"),
    ("keras_unroll.kernels",),
    ("keras_unroll.loops",),
    ("keras_unroll.plan",),
    ("keras_unroll.functional", "keras_unroll.layers", "keras_unroll.raw"),
]


def _level(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return len(LAYERS)  # built on the layers: inspect, tf1, checkpoint, testing, cli, ...


def _imports(path: pathlib.Path, module: str):
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if base.startswith("keras_unroll"):
                yield node.lineno, base
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_unroll"):
                    yield node.lineno, alias.name


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_flow_one_way():
    known = {name for _, name in _modules()}
    wrong = []
    for path, module in _modules():
        if module == "keras_unroll":
            continue  # the package's public surface re-exports every layer
        for line, target in _imports(path, module):
            if target not in known or target == "keras_unroll":
                continue
            if _level(target) > _level(module):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_no_module_level_switches():
    """Module-level names are constants: no `global` statement, no upper-case name rebound anywhere."""
    for path, module in _modules():
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{module} uses `global`"


def test_generic_only_after_a_first_call_runs_the_generic_path(rng):
    """The switch is honoured by a call after a first one outside it: the planner keys its cached functions
    on the plan, so the second call runs a function traced for the generic step (before the rebuild it
    reused the fused one)."""
    x = rng.standard_normal((3, 5, 2)).astype("float32")
    cell = ku.BasicRNNCell(4)
    fast, _ = ku.dynamic_rnn(cell, x, recompute=2)  # an eager call of a loop that runs as a cached graph
    with testing.generic_only():
        generic, _ = ku.dynamic_rnn(cell, x, recompute=2)
    np.testing.assert_allclose(generic, fast, rtol=1e-5, atol=1e-6)
    kernels = [key[0].kernel for key in cell.__dict__["_keras_unroll_functions"]]
    assert kernels == ["simple_rnn", "generic"]


def test_fifty_lengths_share_one_function_per_cell(rng):
    """Eager DynamicUnroll calls over 50 lengths trace one function (open time axis), not 50."""
    import keras

    for cell in (ku.BasicRNNCell(3), keras.layers.LSTMCell(3)):
        layer = ku.DynamicUnroll(cell, jit_compile=False)
        for steps in range(1, 51):
            layer(rng.standard_normal((2, steps, 2)).astype("float32"))
        functions = cell.__dict__["_keras_unroll_functions"]
        assert len(functions) == 1
        assert [f.experimental_get_tracing_count() for f in functions.values()] == [1]


def test_the_function_cache_is_bounded(rng):
    """Each setting traces its own function; a cell keeps at most eight (least recently used dropped)."""
    cell = ku.BasicRNNCell(3)
    x = rng.standard_normal((2, 4, 2)).astype("float32")
    for recompute in range(1, 13):  # twelve settings
        ku.dynamic_rnn(cell, x, recompute=recompute)
    assert len(cell.__dict__["_keras_unroll_functions"]) == 8
