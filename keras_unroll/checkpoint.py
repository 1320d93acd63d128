"""`load_tf1_weights`: read a TF1 checkpoint's RNN cells and dense layers into Keras, without a TF1 graph.

TF1 named every variable by its scope, and each `tf.nn.rnn_cell` class kept its own layout. This module
reads the checkpoint with `tf.train.load_checkpoint` (no graph, no session) and converts each layout into
the Keras one. A load has four phases, so that a bad checkpoint changes no weight:

    plan    every (variable, array) pair, checking each array against the cell's arguments
    build   an unbuilt target, for the checkpoint's input size
    check   every array's shape against the variable it goes to
    assign  all of them

TF1 layout (per scope)                                  Keras layout
BasicRNNCell   kernel [F+H, H], bias [H]                 kernel [F, H], recurrent_kernel [H, H], bias [H]
BasicLSTMCell  kernel [F+H, 4H] (i, j, f, o), bias       kernel [F, 4H], recurrent_kernel [H, 4H] (i, f, c, o),
               (+ forget_bias added at run time)         bias [4H] with forget_bias folded into its f slice
LSTMCell       the same (kernel [F+P, 4H] with num_proj) recurrent_kernel [P, 4H] with num_proj, and
               + w_f_diag, w_i_diag, w_o_diag [H],       w_i_diag, w_f_diag, w_o_diag [H],
               projection/kernel [H, P]                  projection_kernel [H, P] (ku.tf1.LSTMCell only)
GRUCell        gates/kernel [F+H, 2H] (r, u), gates/bias kernel [F, 3H], recurrent_kernel [H, 3H] (z, r, h),
               candidate/kernel [F+H, H], candidate/bias bias [3H] (Keras GRUCell(reset_after=False))
MultiRNNCell   cell_0/<cell>/..., cell_1/<cell>/...      StackedRNNCells / ku.tf1.MultiRNNCell
tf.layers.dense  kernel [F, U], bias [U]                 keras.layers.Dense
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from keras_unroll import step as step_lib

Plan = List[Tuple[str, np.ndarray, str]]  # (the layer's attribute, array to assign, TF1 variable for messages)
# What `load_tf1_weights` returns: one target's arrays, `{tf1_scope: arrays}`, or `{checkpoint_name: array}`.
Loaded = Union[Tuple[np.ndarray, ...], Dict[str, Tuple[np.ndarray, ...]], Dict[str, np.ndarray]]

_TF1_FORGET_BIAS = 1.0  # TF1's BasicLSTMCell/LSTMCell default
_TRANSPARENT_WRAPPERS = ("DropoutWrapper", "ResidualWrapper", "DeviceWrapper")  # no variables of their own


# -------------------------------------------------------------------------------------- the checkpoint
def _listing(variables: Dict[str, Any], prefix: str = "") -> str:
    shown = [
        f"{name} {list(shape)}"
        for name, shape in sorted(variables.items())
        if not name.startswith("_") and name.startswith(prefix)
    ]
    return ", ".join(shown[:20]) + (f", ... ({len(shown)} in all)" if len(shown) > 20 else "") or "(nothing)"


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else repr(error)


def _checkpoint_prefix(checkpoint: Any) -> str:
    """The checkpoint prefix that `checkpoint` (a prefix, a directory, `checkpoint` file or `.index`) names."""
    if checkpoint is None or not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            "`checkpoint` must be the path of a TF1 checkpoint: its prefix ('path/model.ckpt'), its directory "
            f"(with TF1's `checkpoint` file) or its '.index' file. Received: checkpoint={checkpoint!r}"
        )
    path = os.fspath(checkpoint)
    if os.path.basename(path) == "checkpoint" and os.path.isfile(path):  # TF1's index file, given by name
        path = os.path.dirname(path) or "."
    if os.path.isdir(path):
        state_file = os.path.join(path, "checkpoint")
        if not os.path.exists(state_file):
            raise FileNotFoundError(
                f"No TF1 checkpoint in the directory {path!r} (no `checkpoint` index file). Give the checkpoint's "
                f"prefix instead (e.g. 'model.ckpt'). Received: checkpoint={checkpoint!r}"
            )
        found: Optional[str] = tf.train.latest_checkpoint(path)
        if found is None:
            try:
                named = tf.train.get_checkpoint_state(path).model_checkpoint_path
            except Exception:  # an unreadable `checkpoint` file
                named = None
            raise FileNotFoundError(
                f"The `checkpoint` file in {path!r} names the checkpoint {named!r}, but its files "
                f"({named}.index, {named}.data-*) are missing: moved or deleted. Give an existing prefix. "
                f"Received: checkpoint={checkpoint!r}"
            )
        return found
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    head, dot, tail = path.rpartition(".data-")
    if dot and "-of-" in tail:
        return head
    return path


def _open(checkpoint: Any) -> Tuple[Any, Dict[str, Any], str]:
    path = _checkpoint_prefix(checkpoint)
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:  # missing, or an index that is not a checkpoint's
        raise FileNotFoundError(
            f"Could not read a TF checkpoint at {path!r}: give the prefix (e.g. 'model.ckpt', without "
            f"'.index'/'.data-*'). TensorFlow said: {_first_line(error)}"
        ) from error
    return reader, reader.get_variable_to_shape_map(), path


class _Checkpoint:
    """The open checkpoint: its variables' shapes, and their values on demand."""

    def __init__(self, checkpoint: Any):
        self.reader, self.variables, self.path = _open(checkpoint)

    def has(self, name: str) -> bool:
        return name in self.variables

    def has_scope(self, scope: str) -> bool:
        return any(name.startswith(scope + "/") for name in self.variables)

    def get(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.reader.get_tensor(name))
        except (tf.errors.OpError, IndexError) as error:  # a damaged or truncated .data file
            raise ValueError(
                f"The checkpoint {self.path!r} lists {name!r} but its data cannot be read (a damaged, truncated "
                f"or missing .data file). TensorFlow said: {_first_line(error)}"
            ) from error

    def holds(self, scope: str = "") -> str:
        """`The checkpoint holds: ...` for the variables under `scope` (all of them when none are)."""
        if scope and self.has_scope(scope):
            return f"Under {scope!r} the checkpoint holds: {_listing(self.variables, scope + '/')}"
        hint = ""
        for part in (scope, scope.rsplit("/", 1)[-1]) if scope else ():
            marker = f"/{part}/"
            found = sorted({n[: n.index(marker) + len(marker) - 1] for n in self.variables if marker in n})
            if found:
                shown = ", ".join(repr(f) for f in found[:8]) + (", ..." if len(found) > 8 else "")
                hint = f"Scopes ending in {part!r} in the checkpoint: {shown}. "
                break
        return f"{hint}The checkpoint holds: {_listing(self.variables)}"

    def kind_under(self, scope: str) -> Optional[str]:
        """Which TF1 cell's variables `scope` holds, in words, or None."""
        v = self.variables
        if f"{scope}/gates/kernel" in v:
            return "a TF1 GRUCell (gates/kernel, candidate/kernel)"
        if self.has_scope(f"{scope}/cell_0"):
            return "a TF1 MultiRNNCell (cell_0/..., cell_1/...)"
        if f"{scope}/kernel" not in v:
            return None
        shape = list(v[f"{scope}/kernel"])
        extras = [name for name in ("w_f_diag", "w_i_diag", "w_o_diag", "projection/kernel") if f"{scope}/{name}" in v]
        if extras:
            return f"a TF1 LSTMCell with {', '.join(extras)} (kernel {shape})"
        if scope.rsplit("/", 1)[-1] in ("basic_lstm_cell", "lstm_cell"):
            return f"a TF1 LSTM cell (kernel {shape}, i.e. [F + H, 4H])"
        if scope.rsplit("/", 1)[-1] == "basic_rnn_cell":
            return f"a TF1 BasicRNNCell (kernel {shape}, i.e. [F + H, H])"
        return f"a kernel {shape}"


# ------------------------------------------------------------------------------------- the cells' kinds
def _tf1_class(name: str) -> Optional[type]:
    """`keras_unroll.tf1.<name>` when that module exists (imported late: it imports this package)."""
    try:
        from keras_unroll import tf1
    except ImportError:  # pragma: no cover - a build without the tf1 module
        return None
    return getattr(tf1, name, None)


def _is(target: Any, name: str) -> bool:
    cls = _tf1_class(name)
    return cls is not None and isinstance(target, cls)


def _is_recurrent_layer(target: Any) -> bool:
    from keras_unroll.layers import DynamicUnroll, StaticUnroll

    return isinstance(target, (keras.layers.RNN, StaticUnroll, DynamicUnroll))


def _wrapped(wrapper: Any) -> Any:
    inner = getattr(wrapper, "cell", None)
    return inner if inner is not None else wrapper._cell


def _stack_cells(target: Any) -> Optional[Sequence[Any]]:
    if isinstance(target, keras.layers.StackedRNNCells) or _is(target, "MultiRNNCell"):
        return list(target.cells)
    return None


def _names(target: Any) -> Tuple[str, ...]:
    """TF1's scope names for the cell (several when a Keras cell matches more than one TF1 cell)."""
    if _stack_cells(target) is not None:
        return ("multi_rnn_cell",)
    if any(_is(target, name) for name in _TRANSPARENT_WRAPPERS):
        return _names(_wrapped(target))
    if _is(target, "OutputProjectionWrapper"):
        return ("output_projection_wrapper",)
    if _is(target, "LSTMCell"):
        return ("lstm_cell",)
    if _is(target, "BasicLSTMCell"):
        return ("basic_lstm_cell",)
    if isinstance(target, keras.layers.LSTMCell):
        return ("basic_lstm_cell", "lstm_cell")
    if isinstance(target, keras.layers.GRUCell) or _is(target, "GRUCell"):
        return ("gru_cell",)
    if isinstance(target, keras.layers.SimpleRNNCell) or _is(target, "BasicRNNCell"):
        return ("basic_rnn_cell",)
    if isinstance(target, keras.layers.Dense):
        return ("dense",)
    if isinstance(target, keras.layers.Bidirectional):
        return ("bidirectional_rnn",)
    return ()


def _resolve(ckpt: _Checkpoint, base: str, names: Sequence[str]) -> str:
    """`base/name` for the one TF1 name the checkpoint holds (the first name when it holds none)."""
    join = (lambda name: f"{base}/{name}") if base else (lambda name: name)
    present = [join(name) for name in names if ckpt.has_scope(join(name))]
    if len(present) > 1:
        raise ValueError(
            f"The checkpoint holds both {present[0]!r} and {present[1]!r}, which this cell can load from: pass "
            f"`scope=` to choose one. {ckpt.holds(base)}"
        )
    return present[0] if present else join(names[0])


def _default_scope(ckpt: _Checkpoint, target: Any) -> str:
    names = _names(target)  # never empty here: `_load_one` refused unsupported targets
    if isinstance(target, (keras.layers.Dense, keras.layers.Bidirectional)):
        return _resolve(ckpt, "", names)
    return _resolve(ckpt, "rnn", names)


def _clean_scope(scope: object) -> str:
    if not isinstance(scope, str):
        raise TypeError(f"`scope` must be a TF1 variable scope name (a string). Received: scope={scope!r}")
    scope = scope.strip("/")
    for suffix in ("/gates/kernel", "/kernel"):
        if scope.endswith(suffix):
            return scope[: -len(suffix)]
    return scope


# ------------------------------------------------------------------------------------------ the plans
def _units(cell: Any) -> int:
    units = getattr(cell, "units", None)
    return int(units if units is not None else cell.num_units)


def _require(ckpt: _Checkpoint, name: str, what: str, scope: str) -> np.ndarray:
    if not ckpt.has(name):
        kind = ckpt.kind_under(scope)
        held = f" The scope holds the variables of {kind}." if kind else ""
        raise ValueError(
            f"No {what} under scope {scope!r} in the checkpoint {ckpt.path!r}: expected a variable "
            f"{name!r}.{held} {ckpt.holds(scope)}. Received: scope={scope!r}"
        )
    return ckpt.get(name)


def _split_concat_kernel(
    ckpt: _Checkpoint, name: str, kernel: np.ndarray, rows_h: int, columns: int, what: str
) -> Tuple[np.ndarray, np.ndarray]:
    """TF1's `concat([x, h]) @ kernel` kernel `[F + rows_h, columns]` as Keras' `(kernel, recurrent_kernel)`."""
    if kernel.ndim != 2 or kernel.shape[1] != columns or kernel.shape[0] <= rows_h:
        raise ValueError(
            f"The checkpoint's {name!r} has shape {list(kernel.shape)}, but {what} needs "
            f"[features + {rows_h}, {columns}]. {ckpt.holds(name.rsplit('/', 1)[0])}"
        )
    features = kernel.shape[0] - rows_h
    return kernel[:features], kernel[features:]


def _bias_plan(ckpt: _Checkpoint, cell: Any, bias: Optional[np.ndarray], name: str, size: int) -> Plan:
    """The bias's (variable, value), or a check that a cell without bias loses nothing."""
    if getattr(cell, "use_bias", True):
        if bias is None or bias.shape != (size,):
            raise ValueError(
                f"The checkpoint has no bias {name!r} of shape [{size}] for this cell "
                f"(found {None if bias is None else list(bias.shape)}). {ckpt.holds(name.rsplit('/', 1)[0])}"
            )
        return [("bias", bias, name)]
    if bias is not None and np.any(bias != 0):
        raise ValueError(
            f"The checkpoint's bias {name!r} (with any forget_bias folded in) is not zero, but the cell has "
            "use_bias=False; dropping it would change every output. Use a cell with use_bias=True. "
            "Received: a cell with use_bias=False"
        )
    return []


def _lstm_columns(array: np.ndarray, units: int) -> np.ndarray:
    """TF1's gate order i, j, f, o along the last axis, as Keras' i, f, c (= j), o."""
    i, j, f, o = (array[..., k * units : (k + 1) * units] for k in range(4))
    return np.concatenate([i, f, j, o], axis=-1)


def _plan_simple(ckpt: _Checkpoint, cell: Any, scope: str) -> Tuple[Plan, int]:
    units = _units(cell)
    name = f"{scope}/kernel"
    kernel = _require(ckpt, name, "BasicRNNCell kernel", scope)
    if ckpt.has(f"{scope}/gates/kernel") or (kernel.ndim == 2 and kernel.shape[1] == 4 * units):
        raise ValueError(
            f"Under {scope!r} the checkpoint holds the variables of {ckpt.kind_under(scope)}, not of a "
            f"BasicRNNCell with units={units}. {ckpt.holds(scope)}"
        )
    w, u = _split_concat_kernel(ckpt, name, kernel, units, units, f"a BasicRNNCell with units={units}")
    bias = ckpt.get(f"{scope}/bias") if ckpt.has(f"{scope}/bias") else None
    plan = [("kernel", w, name), ("recurrent_kernel", u, name)]
    return plan + _bias_plan(ckpt, cell, bias, f"{scope}/bias", units), w.shape[0]


def _plan_lstm(ckpt: _Checkpoint, cell: Any, scope: str, forget_bias: Optional[float]) -> Tuple[Plan, int]:
    units = _units(cell)
    full = _is(cell, "LSTMCell")  # ku.tf1.LSTMCell: peepholes and a projection
    cell_name = type(cell).__name__
    name = f"{scope}/kernel"
    if ckpt.has(f"{scope}/gates/kernel"):
        raise ValueError(
            f"Under {scope!r} the checkpoint holds the variables of {ckpt.kind_under(scope)}, not of an LSTM: "
            f"load it into keras.layers.GRUCell(reset_after=False) or ku.tf1.GRUCell. {ckpt.holds(scope)}"
        )
    kernel = _require(ckpt, name, "LSTM kernel", scope)
    peepholes = [ckpt.has(f"{scope}/{w}") for w in ("w_i_diag", "w_f_diag", "w_o_diag")]
    projection = f"{scope}/projection/kernel"
    use_peepholes = bool(getattr(cell, "use_peepholes", False))
    if any(peepholes) != use_peepholes or (full and use_peepholes and not all(peepholes)):
        has = "has" if any(peepholes) else "has no"
        raise ValueError(
            f"The checkpoint's LSTM under {scope!r} {has} peephole weights (w_f_diag, w_i_diag, w_o_diag), but "
            f"the {cell_name} has use_peepholes={use_peepholes}. "
            + ("Load it into ku.tf1.LSTMCell(use_peepholes=True). " if any(peepholes) else "")
            + f"{ckpt.holds(scope)}. Received: a {cell_name} with use_peepholes={use_peepholes}"
        )
    num_proj = getattr(cell, "num_proj", None) if full else None
    if ckpt.has(projection) != (num_proj is not None):
        found = list(ckpt.variables[projection]) if ckpt.has(projection) else None
        advice = f" Load it into ku.tf1.LSTMCell(num_proj={found[1]})." if found and not full else ""
        raise ValueError(
            f"The checkpoint's LSTM under {scope!r} has "
            + (f"a projection {projection!r} {found}" if found else "no projection (projection/kernel)")
            + f", but the {cell_name} has num_proj={num_proj}.{advice} {ckpt.holds(scope)}. "
            f"Received: a {cell_name} with num_proj={num_proj}"
        )
    rows_h = units if num_proj is None else int(num_proj)
    what = f"an LSTM cell with units={units}" + (f" and num_proj={num_proj}" if num_proj is not None else "")
    w, u = _split_concat_kernel(ckpt, name, kernel, rows_h, 4 * units, what)
    plan: Plan = [("kernel", _lstm_columns(w, units), name), ("recurrent_kernel", _lstm_columns(u, units), name)]
    if forget_bias is None:
        cell_forget_bias = getattr(cell, "forget_bias", None)
        forget_bias = _TF1_FORGET_BIAS if cell_forget_bias is None else float(cell_forget_bias)
    bias = ckpt.get(f"{scope}/bias") if ckpt.has(f"{scope}/bias") else None
    if bias is not None and bias.shape == (4 * units,):
        bias = _lstm_columns(bias, units)
        bias[units : 2 * units] += np.asarray(forget_bias, bias.dtype)  # TF1 added it at every step
    plan += _bias_plan(ckpt, cell, bias, f"{scope}/bias", 4 * units)
    if use_peepholes:
        for w_name in ("w_i_diag", "w_f_diag", "w_o_diag"):
            value = ckpt.get(f"{scope}/{w_name}")
            if value.shape != (units,):
                raise ValueError(
                    f"The checkpoint's {scope}/{w_name!s} has shape {list(value.shape)}, but the {cell_name} has "
                    f"units={units} and needs [{units}]. {ckpt.holds(scope)}"
                )
            plan.append((w_name, value, f"{scope}/{w_name}"))
    if num_proj is not None:
        value = ckpt.get(projection)
        if value.shape != (units, num_proj):
            raise ValueError(
                f"The checkpoint's {projection!r} has shape {list(value.shape)}, but the {cell_name} with "
                f"units={units} and num_proj={num_proj} needs [{units}, {num_proj}]. {ckpt.holds(scope)}. "
                f"Received: num_proj={num_proj}"
            )
        plan.append(("projection_kernel", value, projection))
    return plan, w.shape[0]


def _plan_gru(ckpt: _Checkpoint, cell: Any, scope: str) -> Tuple[Plan, int]:
    units = _units(cell)
    if getattr(cell, "reset_after", False):
        raise ValueError(
            "TF1's GRUCell applies the reset gate before the candidate's matrix product, which a Keras GRUCell "
            "with reset_after=True (its default) cannot reproduce. Use keras.layers.GRUCell(units, "
            "reset_after=False) or ku.tf1.GRUCell(num_units). Received: a GRUCell with reset_after=True"
        )
    gates, candidate = f"{scope}/gates/kernel", f"{scope}/candidate/kernel"
    gate_kernel = _require(ckpt, gates, "GRUCell kernel", scope)
    candidate_kernel = _require(ckpt, candidate, "GRUCell candidate kernel", scope)
    gw, gu = _split_concat_kernel(ckpt, gates, gate_kernel, units, 2 * units, f"a GRUCell with units={units}")
    cw, cu = _split_concat_kernel(ckpt, candidate, candidate_kernel, units, units, f"a GRUCell with units={units}")
    if cw.shape[0] != gw.shape[0]:
        raise ValueError(
            f"The checkpoint's {gates!r} {list(gate_kernel.shape)} and {candidate!r} {list(candidate_kernel.shape)}"
            f" disagree on the input size. {ckpt.holds(scope)}"
        )

    def z_r_h(gate: np.ndarray, cand: np.ndarray) -> np.ndarray:  # TF1's (r, u) gates: Keras' z is TF1's u
        return np.concatenate([gate[..., units:], gate[..., :units], cand], axis=-1)

    plan: Plan = [("kernel", z_r_h(gw, cw), gates), ("recurrent_kernel", z_r_h(gu, cu), gates)]
    names = (f"{scope}/gates/bias", f"{scope}/candidate/bias")
    found = [ckpt.get(n) if ckpt.has(n) else None for n in names]
    bias = None
    if found[0] is not None and found[1] is not None and found[0].shape == (2 * units,) and found[1].shape == (units,):
        bias = z_r_h(found[0], found[1])
    elif getattr(cell, "use_bias", True):
        raise ValueError(
            f"The checkpoint has no GRU biases {names[0]!r} [{2 * units}] and {names[1]!r} [{units}] for this "
            f"cell (found {[None if b is None else list(b.shape) for b in found]}). {ckpt.holds(scope)}"
        )
    return plan + _bias_plan(ckpt, cell, bias, f"{scope}/gates/bias", 3 * units), gw.shape[0]


def _plan_dense(ckpt: _Checkpoint, layer: Any, scope: str, units: int) -> Tuple[Plan, int]:
    name = f"{scope}/kernel"
    kernel = _require(ckpt, name, "dense kernel", scope)
    if kernel.ndim != 2 or kernel.shape[1] != units:
        raise ValueError(
            f"The checkpoint's {name!r} has shape {list(kernel.shape)}, but a Dense layer with units={units} "
            f"needs [features, {units}]. {ckpt.holds(scope)}"
        )
    bias = ckpt.get(f"{scope}/bias") if ckpt.has(f"{scope}/bias") else None
    return [("kernel", kernel, name)] + _bias_plan(ckpt, layer, bias, f"{scope}/bias", units), kernel.shape[0]


class _Leaf:
    """One Keras layer to fill: its plan (attribute names resolved to variables after the build)."""

    def __init__(self, owner: Any, plan: Plan):
        self.owner, self.plan = owner, plan

    def pairs(self) -> List[Tuple[Any, np.ndarray, str]]:
        return [(getattr(self.owner, attribute), value, source) for attribute, value, source in self.plan]


def _plan(ckpt: _Checkpoint, target: Any, scope: str, forget_bias: Optional[float]) -> Tuple[List[_Leaf], int]:
    """Every leaf's plan for `target` under `scope`, and the input size of the first one."""
    if _is_recurrent_layer(target):
        raise TypeError(
            f"load_tf1_weights fills a cell, and {type(target).__name__} is a recurrent layer: pass its cell "
            f"(`layer.cell`), e.g. load_tf1_weights(layer.cell, checkpoint, scope={scope!r}). "
            f"Received: {target!r}"
        )
    leaves: List[_Leaf] = []
    features: Optional[int] = None
    if isinstance(target, keras.layers.Bidirectional):
        for direction, layer in (("fw", target.forward_layer), ("bw", target.backward_layer)):
            found, size = _plan(ckpt, layer.cell, _cell_scope(ckpt, layer.cell, f"{scope}/{direction}"), forget_bias)
            leaves, features = leaves + found, size if features is None else features
        assert features is not None  # two layers, each planned
        return leaves, int(features)
    cells = _stack_cells(target)
    if cells is not None:
        if not ckpt.has_scope(f"{scope}/cell_0"):
            kind = ckpt.kind_under(scope)
            held = f" The scope holds the variables of {kind}." if kind else ""
            raise ValueError(
                f"No MultiRNNCell under scope {scope!r} in the checkpoint {ckpt.path!r}: expected variables "
                f"'{scope}/cell_0/...'.{held} {ckpt.holds(scope)}. Received: scope={scope!r}"
            )
        extra = f"{scope}/cell_{len(cells)}"
        if ckpt.has_scope(extra):
            count = len(cells)
            while ckpt.has_scope(f"{scope}/cell_{count}"):
                count += 1
            raise ValueError(
                f"The checkpoint's MultiRNNCell under {scope!r} has {count} layers (cell_0 ... cell_{count - 1}), "
                f"but the stack has {len(cells)} cells. {ckpt.holds(scope)}. Received: {len(cells)} cells"
            )
        for index, cell in enumerate(cells):
            base = f"{scope}/cell_{index}"
            first = next(i for i, other in enumerate(cells) if other is cell)
            if first < index:  # one cell object in several layers: TF1 kept its weights under the first
                if ckpt.has_scope(base):
                    raise ValueError(
                        f"The checkpoint's MultiRNNCell has its own weights for layer {index} ({base!r}), but the "
                        f"stack reuses cells[{first}] there (one object, shared weights). Give each layer its own "
                        f"cell. {ckpt.holds(scope)}. Received: cells[{index}] is cells[{first}]"
                    )
                continue
            if not ckpt.has_scope(base):
                raise ValueError(
                    f"The checkpoint's MultiRNNCell under {scope!r} has {index} layers, but the stack has "
                    f"{len(cells)} cells. {ckpt.holds(scope)}. Received: {len(cells)} cells"
                )
            found, size = _plan(ckpt, cell, _cell_scope(ckpt, cell, base), forget_bias)
            leaves += found
            features = size if features is None else features
        assert features is not None  # the first cell is its own: planned
        return leaves, int(features)
    if any(_is(target, name) for name in _TRANSPARENT_WRAPPERS):
        return _plan(ckpt, _wrapped(target), scope, forget_bias)
    if _is(target, "OutputProjectionWrapper"):
        inner = _wrapped(target)
        leaves, features = _plan(ckpt, inner, _cell_scope(ckpt, inner, scope), forget_bias)
        plan, _ = _plan_dense(ckpt, target, scope, int(target.output_size))
        renamed = {"kernel": "projection_kernel", "bias": "projection_bias"}  # the wrapper's own attributes
        return leaves + [_Leaf(target, [(renamed[a], value, source) for a, value, source in plan])], features
    if _is(target, "LSTMCell") or isinstance(target, keras.layers.LSTMCell):
        plan, features = _plan_lstm(ckpt, target, scope, forget_bias)
    elif isinstance(target, keras.layers.GRUCell) or _is(target, "GRUCell"):
        plan, features = _plan_gru(ckpt, target, scope)
    elif isinstance(target, keras.layers.SimpleRNNCell) or _is(target, "BasicRNNCell"):
        plan, features = _plan_simple(ckpt, target, scope)
    elif isinstance(target, keras.layers.Dense):
        plan, features = _plan_dense(ckpt, target, scope, int(target.units))
    else:
        raise TypeError(
            "load_tf1_weights fills TF1's cells (ku.tf1.BasicRNNCell, BasicLSTMCell, LSTMCell, GRUCell, "
            "MultiRNNCell and the wrappers) and Keras' SimpleRNNCell, LSTMCell, GRUCell(reset_after=False), "
            f"StackedRNNCells, Bidirectional and Dense. Received: {target!r}"
        )
    _check_scope_name(ckpt, target, scope)  # after the content checks, whose messages say more
    return [_Leaf(target, plan)], features


# TF1 names each cell's scope after its class; a scope ending in one of them tells what it holds.
_TF1_SCOPE_NAMES = {  # scope name: (TF1 cell, what loads it)
    "basic_rnn_cell": ("BasicRNNCell", "ku.tf1.BasicRNNCell or keras.layers.SimpleRNNCell"),
    "basic_lstm_cell": ("BasicLSTMCell", "ku.tf1.BasicLSTMCell or keras.layers.LSTMCell"),
    "lstm_cell": ("LSTMCell", "ku.tf1.LSTMCell or keras.layers.LSTMCell"),
    "gru_cell": ("GRUCell", "ku.tf1.GRUCell or keras.layers.GRUCell(reset_after=False)"),
    "multi_rnn_cell": ("MultiRNNCell", "ku.tf1.MultiRNNCell or keras.layers.StackedRNNCells"),
    "output_projection_wrapper": ("OutputProjectionWrapper", "ku.tf1.OutputProjectionWrapper"),
}
_FAMILIES = ({"basic_lstm_cell", "lstm_cell"},)  # one layout under two names


def _check_scope_name(ckpt: _Checkpoint, target: Any, scope: str) -> None:
    """Refuses a scope named after another TF1 cell (e.g. an LSTM's kernel of a fitting shape for an RNN cell)."""
    last = scope.rsplit("/", 1)[-1]
    accepted = set(_names(target))
    for family in _FAMILIES:
        if accepted & family:
            accepted |= family
    if last in _TF1_SCOPE_NAMES and last not in accepted:
        tf1_cell, advice = _TF1_SCOPE_NAMES[last]
        raise ValueError(
            f"The scope {scope!r} holds a TF1 {tf1_cell}'s variables (TF1 named the scope after the cell); "
            f"its shapes happen to fit, but a {type(target).__name__} computes something else. Load it into "
            f"{advice}. {ckpt.holds(scope)}. Received: scope={scope!r}"
        )


def _cell_scope(ckpt: _Checkpoint, cell: Any, base: str) -> str:
    names = _names(cell)
    if not names:
        _plan(ckpt, cell, base, None)  # raises the TypeError naming what is supported
    return _resolve(ckpt, base, names)


# ----------------------------------------------------------------------------------------- the load
def _build(target: Any, features: int) -> None:
    built = step_lib.built_input_dim(target)
    if isinstance(target, keras.layers.Bidirectional):
        built = step_lib.built_input_dim(target.forward_layer.cell)
    if built is not None and built != features:
        raise ValueError(
            f"The {type(target).__name__} was built for {built} input features, but the checkpoint is for "
            f"F={features}. Load into an unbuilt cell (it is then built for F={features}). "
            f"Received: a cell built for {built} features"
        )
    if getattr(target, "built", False):
        return
    if isinstance(target, (keras.layers.Dense, keras.layers.Bidirectional)):
        target.build((None, None, features) if isinstance(target, keras.layers.Bidirectional) else (None, features))
    else:
        step_lib.build_cell(target, features, getattr(target, "compute_dtype", "float32"))


def _load_one(
    ckpt: _Checkpoint, target: Any, scope: Optional[str], forget_bias: Optional[float]
) -> Tuple[List[_Leaf], int]:
    if _is_recurrent_layer(target):
        raise TypeError(
            f"load_tf1_weights fills a cell, and {type(target).__name__} is a recurrent layer: pass its cell, "
            f"e.g. load_tf1_weights(layer.cell, checkpoint). Received: {target!r}"
        )
    if scope is None and not _names(target):
        _plan(ckpt, target, "", forget_bias)  # an unsupported target: raises the TypeError naming what is
    if scope is None:
        scope = _default_scope(ckpt, target)
    else:
        scope = _clean_scope(scope)
        names = _names(target)
        if scope.rsplit("/", 1)[-1] not in names and any(ckpt.has_scope(f"{scope}/{n}") for n in names):
            scope = _resolve(ckpt, scope, names)  # the scope around the cell's: "rnn", "bidirectional_rnn/fw"
    leaves, features = _plan(ckpt, target, scope, forget_bias)
    return leaves, features


def _assign(targets: Sequence[Tuple[Any, List[_Leaf], int]]) -> None:
    for target, _, features in targets:
        _build(target, features)
    pairs = [pair for _, leaves, _ in targets for leaf in leaves for pair in leaf.pairs()]
    for variable, value, source in pairs:
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"The checkpoint's {source!r} gives {variable.path if hasattr(variable, 'path') else variable.name} "
                f"the shape {list(value.shape)}, but the variable has shape {list(variable.shape)}: the cell's "
                f"sizes (units, num_proj, input features) differ from the TF1 graph's. Received: a variable of "
                f"shape {list(variable.shape)}"
            )
    for variable, value, _ in pairs:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _set(target: Any, leaves: List[_Leaf]) -> Tuple[np.ndarray, ...]:
    """What was set, in the order of `target.weights` (what `target.get_weights()` returns)."""
    values = {id(variable): value for leaf in leaves for variable, value, _ in leaf.pairs()}
    return tuple(values[id(w)] for w in target.weights if id(w) in values)


def _unwrap_time_distributed(layer: Any) -> Any:
    """`TimeDistributed(Dense)` is TF1's `tf.layers.dense` on a sequence: the same kernel and bias."""
    if isinstance(layer, keras.layers.TimeDistributed) and isinstance(layer.layer, keras.layers.Dense):
        return layer.layer
    return layer


def _model_scopes(ckpt: _Checkpoint, model: Any) -> Dict[str, Any]:
    """TF1's default names for a model: one recurrent layer at `rnn/...`, Dense layers at dense, dense_1..."""
    scopes: Dict[str, Any] = {}
    recurrent, others = [], []
    for layer in model.layers:
        if _is_recurrent_layer(layer):
            recurrent.append(layer)
        elif isinstance(_unwrap_time_distributed(layer), keras.layers.Dense):
            count = sum(isinstance(_unwrap_time_distributed(o), keras.layers.Dense) for o in scopes.values())
            scopes["dense" if count == 0 else f"dense_{count}"] = layer
        elif isinstance(layer, keras.layers.Bidirectional):
            scopes["bidirectional_rnn"] = layer
        elif layer.weights:
            others.append(layer)
    if len(recurrent) > 1 or others:
        named = [type(layer).__name__ for layer in recurrent[1:] + others]
        raise ValueError(
            "load_tf1_weights can name a model's TF1 scopes only for one recurrent layer and Dense layers "
            f"(TF1's 'rnn/...', 'dense', 'dense_1', ...); this model also has {', '.join(named)}. Pass "
            f"`scopes={{tf1_scope: layer_or_cell}}`. {ckpt.holds()}"
        )
    if recurrent:  # first, so that a checkpoint without TF1's default names says so about the cell
        scopes = {_default_scope(ckpt, recurrent[0].cell): recurrent[0], **scopes}
    return scopes


def _plan_variables(ckpt: _Checkpoint, variables: Any) -> List[Tuple[Any, np.ndarray, str]]:
    """`(variable, array, checkpoint name)` for `variables={checkpoint_name: variable}`, every one checked."""
    if not isinstance(variables, Mapping) or not variables:
        raise TypeError(
            "`variables` must be a non-empty dict {checkpoint_name: variable}, e.g. "
            f"{{'Variable': dense.kernel, 'Variable_1': dense.bias}}. Received: variables={variables!r}"
        )
    planned = []
    for name, variable in variables.items():
        if not isinstance(name, str):
            raise TypeError(f"`variables` keys must be checkpoint variable names (str). Received: key {name!r}")
        if isinstance(variable, keras.layers.Layer):
            raise TypeError(
                f"`variables[{name!r}]` must be one variable, not a layer: give one of its weights, e.g. "
                f"`layer.kernel` or `layer.bias` (build the layer first). Received: a {type(variable).__name__}"
            )
        if not (hasattr(variable, "assign") and hasattr(variable, "shape")):
            raise TypeError(
                f"`variables[{name!r}]` must be a variable (a Keras weight such as `dense.kernel`, or a "
                f"`tf.Variable`). Received: {variable!r}"
            )
        source = name[: -len(":0")] if name.endswith(":0") else name
        if not ckpt.has(source):
            raise ValueError(
                f"The checkpoint has no variable {source!r} (TF1 named unnamed `tf.Variable`s 'Variable', "
                f"'Variable_1', ... in creation order). {ckpt.holds()}. Received: variables key {name!r}"
            )
        value = ckpt.get(source)
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"The checkpoint's {source!r} has shape {list(value.shape)}, but the variable it goes to has shape "
                f"{list(variable.shape)}. Map it to a variable of its shape. Received: variables[{name!r}] of "
                f"shape {list(variable.shape)}"
            )
        planned.append((variable, value, source))
    return planned


def load_tf1_weights(
    target: Optional[keras.layers.Layer],
    checkpoint: Union[str, os.PathLike[str]],
    scope: Optional[str] = None,
    *,
    forget_bias: Optional[float] = None,
    scopes: Optional[Mapping[str, keras.layers.Layer]] = None,
    variables: Optional[Mapping[str, Union[keras.Variable, tf.Variable]]] = None,
) -> Loaded:
    """Loads TF1 RNN cells' and dense layers' weights from a TF1 checkpoint into Keras.

    Reads the checkpoint with `tf.train.load_checkpoint` (no TF1 graph or session) and converts TF1's layout
    per cell into Keras' (split kernels, Keras' gate order, TF1's run-time `forget_bias` folded into the LSTM
    bias), so the Keras cell gives TF1's numbers. A load checks everything before it assigns anything: on an
    error no weight has changed. Which Keras cell takes which TF1 cell, the default scopes, the layouts, what a
    checkpoint does not record (activation, clipping) and more examples: `docs/tf1-semantics.md`, "Loading a
    TF1 checkpoint".

    Args:
        target: The Keras cell, `Dense` or `Bidirectional` layer to fill, or `None` to load only `variables`.
            An unbuilt one is built for the checkpoint's input size `F`; a built one must match it. A recurrent
            layer (`keras.layers.RNN`, `ku.DynamicUnroll`, `ku.StaticUnroll`) is refused: pass `layer.cell`.
            With `scopes`, the model (or any object) whose layers `scopes` names; with neither `scope` nor
            `scopes`, a model with one recurrent layer and Dense layers is filled from `rnn/<cell>` and
            `dense`, `dense_1`, ... in layer order, as TF1 named them in one graph.
        checkpoint: The checkpoint: its prefix (`path/model.ckpt`), its `.index` file, or a directory
            holding TF1's `checkpoint` file (its latest checkpoint is read).
        scope: The TF1 variable scope of `target`, e.g. `"rnn/multi_rnn_cell"` or `"encoder/rnn/lstm_cell"`;
            a leading `/` or a trailing `/kernel` is ignored. The scope around it works too when it holds
            one of the cell's TF1 names: `"encoder/rnn"`, or `"bidirectional_rnn/fw"` for one cell of a
            `bidirectional_dynamic_rnn`. Default: TF1's name for the cell under `rnn/` (e.g.
            `rnn/basic_lstm_cell`), as `dynamic_rnn`/`static_rnn` created it.
        forget_bias: The forget bias TF1 added at run time, for a `keras.layers.LSTMCell` (a `ku.tf1` LSTM
            cell uses its own). Default: 1.0, TF1's default.
        scopes: A whole-model load: `{tf1_scope: layer_or_cell}`. A recurrent layer's cell is filled, and
            a `TimeDistributed(Dense)`'s `Dense`.
        variables: Named checkpoint variables copied as they are: `{checkpoint_name: variable}`, where
            the variable is a built layer's weight (`dense.kernel`) or a `tf.Variable`. For TF1 scripts that
            kept their output layer as raw variables (`weights = {'out': tf.Variable(...)}`, saved as
            `Variable`, `Variable_1`, ... in creation order). With `target=None` only these are loaded.

    Returns:
        The arrays set, as a tuple in the order of `target.weights` (so `target.get_weights()` now returns
        them); for a SimpleRNNCell `(kernel, recurrent_kernel, bias)`. A whole-model load returns
        `{tf1_scope: that tuple}`. With `target=None` and `variables`: `{checkpoint_name: array}`.

    Raises:
        TypeError: `checkpoint` is not a path, or `target` is a recurrent layer or an unsupported cell.
        FileNotFoundError: no checkpoint at `checkpoint` (also a `checkpoint` file naming a missing one).
        ValueError: a `variables` name is not in the checkpoint or its shape differs from its variable's;
            the scope is not in the checkpoint or holds another cell (the message says what it
            holds), shapes do not fit the cell (units, input size, `num_proj`, peepholes, stack depth), a
            Keras `GRUCell(reset_after=True)`, or a non-zero bias for a cell with `use_bias=False`.

    Example:

    ```python
    # TF1: cell = tf.nn.rnn_cell.BasicLSTMCell(5); outputs, states = tf.nn.dynamic_rnn(cell, X); saver.save(...)
    cell = ku.tf1.BasicLSTMCell(5)            # or keras.layers.LSTMCell(5)
    ku.load_tf1_weights(cell, "my_model/model.ckpt")   # scope "rnn/basic_lstm_cell"
    outputs, states = ku.dynamic_rnn(cell, X)  # X: (batch, time, F)
    ```
    """
    ckpt = _Checkpoint(checkpoint)
    if variables is not None:
        return _load_with_variables(ckpt, target, checkpoint, scope, forget_bias, scopes, variables)
    scopes = _scopes_to_load(ckpt, target, scope, scopes)
    if scopes is None:
        leaves, features = _load_one(ckpt, target, scope, forget_bias)
        _assign([(target, leaves, features)])
        return _set(target, leaves)
    return _load_scopes(ckpt, scopes, forget_bias)


def _load_with_variables(
    ckpt: _Checkpoint,
    target: Optional[keras.layers.Layer],
    checkpoint: Union[str, os.PathLike[str]],
    scope: Optional[str],
    forget_bias: Optional[float],
    scopes: Optional[Mapping[str, keras.layers.Layer]],
    variables: Mapping[str, Union[keras.Variable, tf.Variable]],
) -> Loaded:
    """`load_tf1_weights` with `variables`: every named variable checked, then the cells loaded (unless only
    `variables` are given), then the named variables assigned."""
    planned = _plan_variables(ckpt, variables)  # checked before anything is assigned
    only_variables = target is None and scope is None and scopes is None
    result = None if only_variables else load_tf1_weights(
        target, checkpoint, scope, forget_bias=forget_bias, scopes=scopes
    )  # fmt: skip
    for variable, value, _ in planned:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return {source: value for _, value, source in planned} if result is None else result


def _scopes_to_load(
    ckpt: _Checkpoint,
    target: Optional[keras.layers.Layer],
    scope: Optional[str],
    scopes: Optional[Mapping[str, keras.layers.Layer]],
) -> Optional[Mapping[str, keras.layers.Layer]]:
    """The `{tf1_scope: layer}` a load fills: `scopes` as given, TF1's default names for a model's layers, or
    `None` to load `target` alone (from `scope`). Refuses `scope` with `scopes` or with a model."""
    if scopes is not None and scope is not None:
        raise ValueError(
            f"Give either `scope` (one cell) or `scopes` (a whole model), not both. Received: scope={scope!r}"
        )
    if scopes is None and isinstance(target, keras.Model):
        if scope is not None:
            raise ValueError(
                f"A model holds several layers: pass `scopes={{tf1_scope: layer}}` instead of `scope`. "
                f"Received: scope={scope!r} with a {type(target).__name__}"
            )
        scopes = _model_scopes(ckpt, target)
    return scopes


def _load_scopes(
    ckpt: _Checkpoint, scopes: Mapping[str, keras.layers.Layer], forget_bias: Optional[float]
) -> Dict[str, Tuple[np.ndarray, ...]]:
    """A whole-model load: every scope's cell (a recurrent layer's cell, a `TimeDistributed`'s layer) planned
    and checked, then all assigned; returns `{tf1_scope: the arrays set}`."""
    if not isinstance(scopes, Mapping) or not scopes:
        raise TypeError(f"`scopes` must be a non-empty dict {{tf1_scope: layer_or_cell}}. Received: scopes={scopes!r}")
    loads = []
    for name, layer in scopes.items():
        cell = layer.cell if _is_recurrent_layer(layer) else _unwrap_time_distributed(layer)
        leaves, features = _load_one(ckpt, cell, name, forget_bias)
        loads.append((name, cell, leaves, features))
    _assign([(cell, leaves, features) for _, cell, leaves, features in loads])
    return {_clean_scope(name): _set(cell, leaves) for name, cell, leaves, _ in loads}
