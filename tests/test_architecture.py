"""The design stays visible: imports flow one way, nothing module-level steers tracing, caches are bounded.

Layers, bottom to top (docs/architecture.md, "Imports"): the door to TensorFlow's and Keras' internals
(`_private`, with `_format`) → the cell and the step (`cell`, `step`) → kernels → loops → the planner (`plan`)
→ the functional API and the layers → TF1's vocabulary (`tf1`) → checkpoints, inspection, GPUs → the demo →
the package root → the command line (`keras_unroll_cli`, `keras_unroll.cli`, `python -m keras_unroll`).
A module may import only modules of its own layer or below; only the door imports `tensorflow.python` or
`keras.src` or reaches their private attributes.
"""

from __future__ import annotations

import ast
import pathlib

import keras
import numpy as np
import tensorflow as tf

import keras_unroll as ku
from keras_unroll import _private, testing

PACKAGE = pathlib.Path(ku.__file__).parent
SOURCES = PACKAGE.parent  # the package and the command line beside it

LAYERS = [
    ("keras_unroll._private", "keras_unroll._format"),
    ("keras_unroll.types", "keras_unroll.cell", "keras_unroll.step"),
    ("keras_unroll.kernels",),
    ("keras_unroll.loops",),
    ("keras_unroll.plan", "keras_unroll.testing"),
    ("keras_unroll.tf1_states",),
    ("keras_unroll.functional", "keras_unroll.layers", "keras_unroll.raw", "keras_unroll.bidirectional"),
    ("keras_unroll.tf1",),
    ("keras_unroll.checkpoint", "keras_unroll.inspect", "keras_unroll.gpu"),
    ("keras_unroll.demo",),
    ("keras_unroll",),  # the root re-exports every layer
    ("keras_unroll.cli", "keras_unroll.__main__", "keras_unroll_cli"),  # the command line, on top
]

PRIVATE_MODULES = ("tensorflow.python", "keras.src")
# Private attributes of TensorFlow's and Keras' objects (a class's own `self.` attributes are its own).
PRIVATE_ATTRIBUTES = {
    "_call_has_training_arg",
    "_create_dropout_mask",
    "_dropout_mask",
    "_recurrent_dropout_mask",
    "_cudnn_lstm",
    "_cudnn_gru",
    "_device_function_stack",
    "_context_handle",
    "_getframe",
}


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _level(module: str) -> int:
    """The layer of the longest prefix naming `module` (`keras_unroll.step` sits below the root `keras_unroll`)."""
    matches = [(len(p), level) for level, prefixes in enumerate(LAYERS) for p in prefixes if _in(module, [p])]
    assert matches, f"{module} is in no layer of LAYERS: add it where it belongs"
    return max(matches)[1]


def _modules():
    for root in (PACKAGE, SOURCES / "keras_unroll_cli"):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(SOURCES).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, module: str, known):
    """`(line, module)` for every import of a package module: `from keras_unroll import X` imports the
    module `keras_unroll.X` when there is one, else the root `keras_unroll` (a re-exported name)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] in ("keras_unroll", "keras_unroll_cli"):
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("keras_unroll", "keras_unroll_cli"):
                    yield node.lineno, alias.name


def _private_accesses(source: str):
    """Where `source` reaches TensorFlow's or Keras' internals: an import or a module name (for
    `importlib`) under `tensorflow.python`/`keras.src`, or one of their private attributes not on `self`."""
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        for name in names:
            if _in(name, PRIVATE_MODULES):
                yield f"line {node.lineno}: {name}"
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                yield f"line {node.lineno}: .{node.attr}"


def test_every_module_has_a_layer():
    modules = [module for _, module in _modules()]
    assert "keras_unroll" in modules and "keras_unroll_cli" in modules and "keras_unroll._private" in modules
    assert all(_level(module) >= 0 for module in modules)


def test_imports_flow_one_way():
    known = {name for _, name in _modules()}
    wrong = []
    for path, module in _modules():
        for line, target in _imports(path, module, known):
            if target in known and _level(target) > _level(module):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_the_import_check_catches_an_upward_import(tmp_path):
    """The check is only worth its green if it fails: the library importing the CLI or the root is caught."""
    known = {"keras_unroll", "keras_unroll.gpu", "keras_unroll_cli", "keras_unroll.step"}
    path = tmp_path / "gpu.py"
    path.write_text("from keras_unroll_cli import main\nfrom keras_unroll import dynamic_rnn, step\n")
    found = [
        (line, target, _level(target) > _level("keras_unroll.gpu"))
        for line, target in _imports(path, "keras_unroll.gpu", known)
    ]
    assert found == [(1, "keras_unroll_cli", True), (2, "keras_unroll", True), (2, "keras_unroll.step", False)]


def test_only_the_door_reaches_tensorflow_and_keras_internals():
    found = {}
    for path, module in _modules():
        if module == "keras_unroll._private":
            continue
        lines = list(_private_accesses(path.read_text()))
        if lines:
            found[module] = lines
    assert not found, found


def test_the_door_check_catches_each_kind_of_access():
    source = (
        "import tensorflow.python.eager.record\n"
        "from keras.src.utils import tracking\n"
        "m = importlib.import_module('keras.src.backend.tensorflow.rnn')\n"
        "cell._dropout_mask = None\n"
        "self._dropout_mask = None\n"
        "sys._getframe(1)\n"
    )
    assert sorted(_private_accesses(source)) == [
        "line 1: tensorflow.python.eager.record",
        "line 2: keras.src.utils",
        "line 3: keras.src.backend.tensorflow.rnn",
        "line 4: ._dropout_mask",
        "line 6: ._getframe",
    ]


def test_the_door_tells_xla_graphs_apart():
    seen = []

    def probe(x):
        seen.append(_private.in_xla_context())
        return x

    probe(1.0)
    tf.function(probe)(tf.constant(1.0))
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen == [False, False, True]


def test_the_door_list_ops_read_and_differentiate_as_a_tensor_array(rng):
    """The public TensorList raw ops (what the loops read step by step): values and gradients of a while loop."""
    x = tf.constant(rng.standard_normal((5, 2, 3)).astype("float32"))

    def total(read):
        def body(t, acc):
            return t + 1, acc + tf.cast(t + 1, tf.float32) * read(t) ** 2

        return tf.while_loop(lambda t, acc: t < 5, body, (0, tf.zeros((2, 3))))[1]

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        handle = _private.tensor_list_from_tensor(x, x.shape[1:])
        ours = total(lambda t: _private.tensor_list_get_item(handle, t, tf.float32, x.shape[1:]))
        theirs = total(lambda t: tf.TensorArray(tf.float32, 5).unstack(x).read(t))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(theirs, x), rtol=1e-6)
    written = _private.tensor_list_set_item(handle, 4, tf.ones((2, 3)))
    rest, last = _private.tensor_list_pop_back(written, tf.float32)
    np.testing.assert_array_equal(last, np.ones((2, 3)))
    np.testing.assert_array_equal(_private.tensor_list_get_item(rest, 0, tf.float32), x[0])


def test_versions_older_than_the_tested_pair_are_refused_by_name():
    assert _private.version_problem({"TensorFlow": "2.16.2", "Keras": "3.8.0"}) is None
    assert _private.version_problem({"TensorFlow": "2.21.0rc1", "Keras": "3.15.1"}) is None
    problem = _private.version_problem({"TensorFlow": "2.16.0", "Keras": "3.6.0"})
    assert "Keras 3.6.0 (needs >= 3.8)" in problem and "TensorFlow 2.16.0" not in problem
    assert "recurrent dropout" in problem  # why 3.8: a GRU would silently give other numbers
    problem = _private.version_problem({"TensorFlow": "2.15.1", "Keras": "3.0.5"})
    assert "TensorFlow 2.15.1 (needs >= 2.16), Keras 3.0.5 (needs >= 3.8)" in problem


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


# `generic_only()` after a first call (issue 11, bug 3) is tested through the public API in test_real_models.py
# (`test_regression_generic_only_switches_path_after_the_fused_one_ran`), and so is a custom cell's one trace for
# many lengths (`test_regression_fifty_lengths_do_not_trace_fifty_loops`).


def test_fifty_lengths_share_one_function_per_cell(rng):
    """Eager `DynamicUnroll(jit_compile=False)` calls over 50 lengths keep one function (open time axis) for
    the fused kernels' cells too (test_first_minute.py checks the same under `jit_compile="auto"`)."""
    for cell in (ku.BasicRNNCell(3), keras.layers.LSTMCell(3)):
        layer = ku.DynamicUnroll(cell, jit_compile=False)
        for steps in range(1, 51):
            layer(rng.standard_normal((2, steps, 2)).astype("float32"))
        assert testing.cache_sizes(layer)["functions"] == 1


class _TraceCountingCell(keras.layers.Layer):
    """A custom cell (the generic step) whose Python `call` runs only while TensorFlow traces it."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = self.output_size = units
        self.traces = 0

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, inputs, states):
        self.traces += 1
        h = keras.ops.tanh(keras.ops.matmul(inputs, self.kernel) + states[0])
        return h, [h]


def test_the_function_cache_is_bounded(rng):
    """Each setting traces its own function; a cell keeps a bounded number of them: past its bound the count
    stays flat, the least recently used is dropped (re-used settings keep theirs) and results stay right."""
    cell = _TraceCountingCell(3)
    x = rng.standard_normal((2, 4, 2)).astype("float32")
    functions = lambda: testing.cache_sizes(cell)["functions"]  # noqa: E731
    bound = testing.cache_sizes(cell)["bounds"]["functions"]
    settings = range(1, bound + 4)  # one `recompute` per setting: more settings than the cache holds
    sizes, first = [], None
    for recompute in settings:
        out, _ = ku.dynamic_rnn(cell, x, recompute=recompute)
        first = out if first is None else first
        np.testing.assert_allclose(out, first, rtol=1e-5, atol=1e-6)  # a memory setting never changes numbers
        sizes.append(functions())
    assert sizes == [min(n, bound) for n in range(1, len(settings) + 1)], sizes

    def traced(recompute):
        before = cell.traces
        ku.dynamic_rnn(cell, x, recompute=recompute)
        assert functions() == bound
        return cell.traces > before

    kept = list(settings)[-bound:]  # the most recent settings, oldest first
    assert not traced(kept[-1])  # the most recent: found, nothing traced
    assert not traced(kept[0])  # the oldest kept: found, and now the most recently used
    assert traced(1)  # dropped long ago: traced again, and the least recently used (kept[1]) goes
    assert not traced(kept[0])
    assert traced(kept[1])
