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
    ("keras_unroll.types", "keras_unroll.cell", "keras_unroll.step"),
    ("keras_unroll.kernels",),
    ("keras_unroll.loops",),
    ("keras_unroll.plan",),
    ("keras_unroll.tf1_states",),
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


def _module_level_switches(source: str) -> list:
    """Where `source` steers behaviour through module state: a `global` statement, a module-level upper-case
    name bound twice, or an upper-case attribute of another object assigned (`plan.MAX = 3`, a patch)."""
    tree = ast.parse(source)
    found = [f"line {n.lineno}: global {', '.join(n.names)}" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    bound = {}
    for node in tree.body:  # module level only: a function's locals are its own
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id.lstrip("_").isupper():
                    if name.id in bound or isinstance(node, ast.AugAssign):
                        found.append(
                            f"line {node.lineno}: {name.id} rebound (first bound on line {bound.get(name.id)})"
                        )
                    bound.setdefault(name.id, node.lineno)
    for node in ast.walk(tree):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AugAssign, ast.AnnAssign))
            else []
        )
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr.lstrip("_").isupper():
                found.append(f"line {node.lineno}: attribute {target.attr} assigned")
    return found


def test_the_switch_check_catches_each_kind_of_switch():
    """The check below is only worth its green if it fails on a switch: each kind is caught, constants pass."""
    clean = "import os\nLIMIT = 8\n_NAMES = ('a',)\ndef f(x):\n    LIMIT = 3\n    return x + LIMIT\n"
    assert _module_level_switches(clean) == []
    assert _module_level_switches("FAST = True\ndef off():\n    global FAST\n    FAST = False\n") == [
        "line 3: global FAST"
    ]
    assert _module_level_switches("LIMIT = 8\nif True:\n    pass\nLIMIT = 4\n") == [
        "line 4: LIMIT rebound (first bound on line 1)"
    ]
    assert _module_level_switches("_CACHE = 8\n_CACHE += 1\n") == ["line 2: _CACHE rebound (first bound on line 1)"]
    assert _module_level_switches("import plan\nplan._MAX_FUNCTIONS = 2\n") == [
        "line 2: attribute _MAX_FUNCTIONS assigned"
    ]


def test_no_module_level_switches():
    """Module-level names are constants: no `global` statement, no upper-case name rebound anywhere."""
    found = {module: _module_level_switches(path.read_text()) for path, module in _modules()}
    assert not any(found.values()), {module: lines for module, lines in found.items() if lines}


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
    """Each setting traces its own function; a cell keeps a bounded number of them: past its bound the count
    stays flat, the least recently used is dropped (re-used settings keep theirs) and results stay right."""
    cell = ku.BasicRNNCell(3)
    x = rng.standard_normal((2, 4, 2)).astype("float32")
    cache = lambda: cell.__dict__["_keras_unroll_functions"]  # noqa: E731
    sizes, first = [], None
    for recompute in range(1, 13):  # twelve settings
        out, _ = ku.dynamic_rnn(cell, x, recompute=recompute)
        first = out if first is None else first
        np.testing.assert_allclose(out, first, rtol=1e-5, atol=1e-6)  # a memory setting never changes numbers
        sizes.append(len(cache()))
    bound = sizes[-1]
    assert 1 < bound < 12 and sizes == list(range(1, bound + 1)) + [bound] * (12 - bound), sizes
    keys = list(cache())
    ku.dynamic_rnn(cell, x, recompute=12)  # the most recent setting: found, nothing traced or dropped
    assert list(cache()) == keys
    ku.dynamic_rnn(cell, x, recompute=1)  # dropped long ago: traced again, the oldest one goes
    assert len(cache()) == bound and list(cache())[:-1] == keys[1:]
