"""The one door to TensorFlow's and Keras' internals: every private access of the package, in one module.

keras_unroll needs a few things neither library exports: Keras' per-sequence dropout-mask protocol of RNN
cells, the layer calling a layer, attribute tracking, a lambda's code for a config, its cuDNN backend
functions; TensorFlow's "is this graph XLA-compiled", "could a tape record this", "stop recording" and the
current device scopes. Each lives here, next to the public alternative where one exists (`tf.raw_ops` for
the TensorList ops). Where none exists, a missing private thing is an `ImportError`/`RuntimeError` that
names the versions this was written for (`SUPPORTED`), never a quiet default: a guessed `False` from "is
this XLA?" would switch off the NaN rows for out-of-range lengths under XLA without a word.

This module is the bottom of the package: it imports nothing from `keras_unroll`, and no other module of
the package imports `tensorflow.python` or `keras.src` (`tests/test_architecture.py` checks both).
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

#: The oldest releases the package runs on (`pyproject.toml`'s bounds; `make test-oldest` tests them).
OLDEST = {"TensorFlow": (2, 16), "Keras": (3, 8)}
#: The releases the private accesses below were written for and tested with.
SUPPORTED = "TensorFlow 2.16-2.21 with Keras 3.8-3.15"


# ------------------------------------------------------------------------------------------ versions
def _release(version: str) -> Tuple[int, int]:
    """`(major, minor)` of a version string such as "2.16.2", "3.8.0" or "2.21.0rc1"."""
    numbers = re.findall(r"\d+", version)[:2]
    return (int(numbers[0]), int(numbers[1])) if len(numbers) == 2 else (0, 0)


def version_problem(installed: dict) -> Optional[str]:
    """What is wrong with the installed `{"TensorFlow": "2.15.1", "Keras": "3.6.0"}`, or None.

    Keras before 3.8 is refused rather than half-supported: before 3.8 its `GRUCell` multiplied the carried
    state by the recurrent dropout mask, while the fused kernels compute 3.8's maths, so a GRU with
    `recurrent_dropout` would give silently different numbers on the two paths; Keras 3.0-3.4 also lack the
    mask protocol (`_create_dropout_mask`) and `keras.tree`, and `Model.export(verbose=)` is 3.6+.
    """
    old = [
        f"{name} {installed[name]} (needs >= {'.'.join(map(str, oldest))})"
        for name, oldest in OLDEST.items()
        if _release(installed[name]) < oldest
    ]
    if not old:
        return None
    return (
        f"keras_unroll needs TensorFlow >= 2.16 and Keras >= 3.8; installed: {', '.join(old)}. Upgrade with "
        '`pip install -U "tensorflow>=2.16" "keras>=3.8"`. (Before Keras 3.8 a GRUCell applied its recurrent '
        "dropout mask to the carried state, and the fused GRU kernel computes Keras 3.8's maths: the results "
        f"would differ without an error. Tested: {SUPPORTED}.)"
    )


def check_versions() -> None:
    """Refuses a TensorFlow or Keras older than `OLDEST` with an `ImportError` naming both versions."""
    problem = version_problem({"TensorFlow": tf.__version__, "Keras": keras.__version__})
    if problem is not None:
        raise ImportError(problem)


check_versions()  # at import, before anything reads Keras' or TensorFlow's internals


def _moved(what: str, where: str) -> str:
    return (
        f"keras_unroll reads {what} from {where}, a private part of TensorFlow/Keras that this installation "
        f"does not have (TensorFlow {tf.__version__}, Keras {keras.__version__}). It was written for "
        f"{SUPPORTED}: install one of those, or report the versions at the keras-unroll issue tracker."
    )


@functools.lru_cache(maxsize=None)
def _import(module: str, name: str) -> Any:
    """`module.name`, or an `ImportError` naming the versions this was written for."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ImportError(_moved(f"`{name}`", f"`{module}`")) from error


# ------------------------------------------------------------------------ Keras: dropout masks of cells
#: Keras' mixin of RNN cells with per-sequence dropout masks. `keras.layers.RNN` draws masks for its
#: instances; `ku.tf1`'s wrappers subclass it to take part. Keras exports no name for it.
DropoutRNNCell: Any = _import("keras.src.layers.rnn.dropout_rnn_cell", "DropoutRNNCell")


@functools.lru_cache(maxsize=None)
def _check_mask_protocol() -> None:
    """Checks once that Keras' cells still keep their masks where `set_dropout_masks` puts them."""

    class Probe(DropoutRNNCell):
        dropout = recurrent_dropout = 0.5

    probe, mask, recurrent = Probe(), object(), object()
    probe._dropout_mask, probe._recurrent_dropout_mask = mask, recurrent
    kept = probe.get_dropout_mask(None) is mask and probe.get_recurrent_dropout_mask(None) is recurrent
    if not kept or not callable(getattr(probe, "_create_dropout_mask", None)):
        raise RuntimeError(
            _moved("the dropout masks of RNN cells (`_create_dropout_mask`, `_dropout_mask`)", "DropoutRNNCell")
        )


def create_dropout_mask(cell: Any, like: Any, rate: float) -> Any:
    """A new dropout mask shaped as `like`, drawn by the cell's own maker (its seed generator and mask
    count), without keeping it on the cell (`get_dropout_mask` would)."""
    _check_mask_protocol()
    return cell._create_dropout_mask(like, rate)


def set_dropout_masks(cell: Any, mask: Any, recurrent_mask: Any) -> None:
    """Gives a cell the masks its next steps use (what `get_dropout_mask` would have drawn and kept)."""
    _check_mask_protocol()
    cell._dropout_mask, cell._recurrent_dropout_mask = mask, recurrent_mask


# ------------------------------------------------------------------------------- Keras: layers' calls
def no_automatic_dependency_tracking(method: Callable) -> Callable:
    """Keras' decorator: attributes set inside `method` are not tracked as the layer's weights (as
    `keras.layers.RNN` keeps its `states` out of `get_weights()`)."""
    return _import("keras.src.utils.tracking", "no_automatic_dependency_tracking")(method)


def calling_layer() -> Any:
    """The Keras layer whose `call` is running now (the innermost), or None outside any layer's call.

    Keras records each layer call in its name-scope stack (the scope of `layer.name`, with the layer as its
    `caller`); call this from a layer's `__call__` before Keras opens that layer's own scope.
    """
    get = _import("keras.src.backend.common.global_state", "get_global_attribute")
    for scope in reversed(get("name_scope_stack") or []):
        if not hasattr(scope, "caller"):
            raise RuntimeError(_moved("the layer calling a layer", "Keras' name-scope stack"))
        if scope.caller is not None:
            return scope.caller
    return None


def lambda_code(function: Callable) -> Any:
    """A function's code as Keras' configs hold a lambda's (`{"class_name": "__lambda__", ...}`)."""
    return _import("keras.src.utils.python_utils", "func_dump")(function)


# ------------------------------------------------------------------------------------- Keras: cuDNN
_CUDNN = {
    "lstm": ("_cudnn_lstm", "_do_lstm_arguments_support_cudnn"),
    "gru": ("_cudnn_gru", "_do_gru_arguments_support_cudnn"),
}
_KERAS_RNN_BACKEND = "keras.src.backend.tensorflow.rnn"  # a module: `keras.src.backend.tensorflow.rnn` is a function


def cudnn_supports(kind: str, *, activation: Any, recurrent_activation: Any, use_bias: bool, **options: Any) -> bool:
    """Keras' own test of whether its `LSTM`/`GRU` layer (`kind`) would run cuDNN with these arguments
    (`reset_after=` for a GRU)."""
    test = _import(_KERAS_RNN_BACKEND, _CUDNN[kind][1])
    return bool(
        test(
            activation=activation,
            recurrent_activation=recurrent_activation,
            unroll=False,
            use_bias=use_bias,
            **options,
        )
    )


def cudnn_rnn(
    kind: str,
    inputs: tf.Tensor,
    initial_state: Sequence[tf.Tensor],
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor,
    *,
    mask: Any,
    time_major: bool,
    go_backwards: bool,
    return_sequences: bool,
) -> Tuple[tf.Tensor, tf.Tensor, List[tf.Tensor]]:
    """cuDNN's LSTM/GRU as Keras' layers call it (`_cudnn_lstm`/`_cudnn_gru`, every argument by keyword):
    `(last_output, outputs, final_states)`. `initial_state` is `[h, c]` (LSTM) or `[h]` (GRU)."""
    function = _import(_KERAS_RNN_BACKEND, _CUDNN[kind][0])
    states = (
        {"initial_state_h": initial_state[0], "initial_state_c": initial_state[1]}
        if kind == "lstm"
        else {"initial_state": initial_state[0]}
    )
    return function(
        inputs=inputs,
        **states,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        mask=mask,
        time_major=time_major,
        go_backwards=go_backwards,
        return_sequences=return_sequences,
    )


# ------------------------------------------------------------------------ TensorFlow: graphs and tapes
def in_xla_context() -> bool:
    """Whether the graph being built is compiled by XLA (`tf.function(jit_compile=True)`,
    `model.compile(jit_compile=True)`), where `tf.debugging` assertions are dropped."""
    default_graph = _import("tensorflow.python.framework.ops", "get_default_graph")
    in_xla = _import("tensorflow.python.ops.control_flow_util", "GraphOrParentsInXlaContext")
    return bool(in_xla(default_graph()))


def could_possibly_record() -> bool:
    """Whether a `tf.GradientTape` or `tf.autodiff.ForwardAccumulator` is active (could record ops now)."""
    return bool(_import("tensorflow.python.eager.record", "could_possibly_record")())


def should_record_backprop(tensors: Sequence[Any]) -> bool:
    """Whether an active tape watches any of `tensors`."""
    return bool(_import("tensorflow.python.eager.record", "should_record_backprop")(tensors))


def stop_recording() -> ContextManager[None]:
    """A block no tape records (every tape, not one tape object's `stop_recording`)."""
    return _import("tensorflow.python.eager.record", "stop_recording")()


def device_scope_names() -> List[str]:
    """The device names of the current `tf.device` scopes, innermost first, then the eager context's ("" when
    none). A graph keeps its scopes on a stack; a `tf.function` traced in an eager scope sees the eager one."""
    names = []
    if not tf.executing_eagerly():
        graph = _import("tensorflow.python.framework.ops", "get_default_graph")()
        stack = getattr(graph, "_device_function_stack", None)
        if stack is None or not hasattr(stack, "peek_objs"):
            raise RuntimeError(_moved("the device scopes of a graph", "`Graph._device_function_stack`"))
        names = [scope.display_name for scope in stack.peek_objs()]
    context = _import("tensorflow.python.eager.context", "context")
    names.append(context().device_name or "")
    return names


# --------------------------------------------------------- TensorFlow: TensorList ops (public, raw ops)
def _element_shape(shape: Any) -> Any:
    """An element shape as the TensorList ops take it: -1 for an unknown rank, -1 for each unknown axis."""
    if isinstance(shape, tf.Tensor):
        return shape
    shape = tf.TensorShape(shape)
    if shape.rank is None:
        return tf.constant(-1, tf.int32)
    return tf.constant([-1 if size is None else size for size in shape.as_list()], tf.int32)


def tensor_list_from_tensor(tensor: Any, element_shape: Any) -> tf.Tensor:
    """A TensorList holding `tensor`'s rows (a handle that reads and writes without copying)."""
    return tf.raw_ops.TensorListFromTensor(tensor=tensor, element_shape=_element_shape(element_shape))


def tensor_list_get_item(handle: tf.Tensor, index: Any, element_dtype: Any, element_shape: Any = None) -> tf.Tensor:
    return tf.raw_ops.TensorListGetItem(
        input_handle=handle, index=index, element_shape=_element_shape(element_shape), element_dtype=element_dtype
    )


def tensor_list_set_item(handle: tf.Tensor, index: Any, item: Any) -> tf.Tensor:
    return tf.raw_ops.TensorListSetItem(input_handle=handle, index=index, item=item)


def tensor_list_pop_back(handle: tf.Tensor, element_dtype: Any) -> Tuple[tf.Tensor, tf.Tensor]:
    """`(the list without its last element, that element)`: what a `TensorArray` cannot do."""
    return tf.raw_ops.TensorListPopBack(
        input_handle=handle, element_shape=tf.constant(-1, tf.int32), element_dtype=element_dtype
    )


__all__ = [
    "DropoutRNNCell",
    "OLDEST",
    "SUPPORTED",
    "calling_layer",
    "check_versions",
    "could_possibly_record",
    "create_dropout_mask",
    "cudnn_rnn",
    "cudnn_supports",
    "device_scope_names",
    "in_xla_context",
    "lambda_code",
    "no_automatic_dependency_tracking",
    "set_dropout_masks",
    "should_record_backprop",
    "stop_recording",
    "tensor_list_from_tensor",
    "tensor_list_get_item",
    "tensor_list_pop_back",
    "tensor_list_set_item",
    "version_problem",
]
