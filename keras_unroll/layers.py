"""`StaticUnroll` and `DynamicUnroll`: the two loops as drop-in Keras layers.

The layers are thin Keras glue over the planner (`keras_unroll.plan`): they check and store their arguments,
build the cell, and hand each call to `plan.run` asking for their loop (`"static"` or `"dynamic"`).
Everything else is shared.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any, Dict, List, Optional

import keras
import tensorflow as tf

from keras_unroll import plan
from keras_unroll import step as step_lib
from keras_unroll.loops import checkpointed as memory


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def _called_by_bidirectional(max_frames: int = 16) -> bool:
    """Whether a `keras.layers.Bidirectional` is calling this layer (its `call` is on the Python stack).

    Keras 3 gives a wrapped layer no other sign of its wrapper; `sys._getframe` is CPython's (and PyPy's) cheap
    stack walk, used only for `time_major` layers that return sequences.
    """
    frame = sys._getframe(2)
    for _ in range(max_frames):
        if frame is None:
            return False
        if isinstance(frame.f_locals.get("self"), keras.layers.Bidirectional):
            return True
        frame = frame.f_back
    return False


def _check_jit(value: Any) -> Any:
    if not isinstance(value, bool) and value != "auto":
        raise ValueError(f"`jit_compile` must be True, False or \"auto\". Received: jit_compile={value!r}")
    return value


class _Unroll(keras.layers.Layer):
    """What `StaticUnroll` and `DynamicUnroll` share: everything but the loop."""

    _static_steps_required = False
    _memory_strategies = False  # swap_memory / recompute (loops/memory.py): DynamicUnroll only
    _list_input_allowed = False

    def __init__(
        self,
        cell: Any,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        time_major: bool = False,
        zero_output_for_mask: bool = False,
        jit_compile: Any = "auto",
        swap_memory: bool = False,
        recompute: memory.Recompute = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cell = step_lib.as_cell(cell)
        self.return_sequences = _check_bool(return_sequences, "return_sequences")
        self.return_state = _check_bool(return_state, "return_state")
        self.go_backwards = _check_bool(go_backwards, "go_backwards")
        self.time_major = _check_bool(time_major, "time_major")
        self.zero_output_for_mask = _check_bool(zero_output_for_mask, "zero_output_for_mask")
        self.supports_masking = True
        self.jit_compile = _check_jit(jit_compile)
        self.swap_memory = memory.check_swap_memory(swap_memory)
        self.recompute = memory.check_recompute(recompute)
        if self.swap_memory or self.recompute is not None:
            if not self._memory_strategies:
                raise ValueError(
                    f"{type(self).__name__} does not take `swap_memory` or `recompute`: its graph already holds "
                    "every step (Python unrolling is for short sequences). For long sequences use "
                    "`DynamicUnroll(cell, swap_memory=True)` or `DynamicUnroll(cell, recompute=\"sqrt\")`. "
                    f"Received: swap_memory={swap_memory!r}, recompute={recompute!r}"
                )
            if self.jit_compile is True:
                raise ValueError(
                    "`swap_memory`/`recompute` run their own uncompiled loops (XLA would keep every checkpoint "
                    "on the device); use `jit_compile=False` or \"auto\" with them. "
                    f"Received: jit_compile=True, swap_memory={swap_memory!r}, recompute={recompute!r}"
                )
        if self.jit_compile is True and self._loop == "dynamic" and not plan.compiles_alone(self.cell):
            warnings.warn(
                f"jit_compile=True: the while loop of {type(self.cell).__name__} cannot be XLA-compiled on its own "
                "(only the SimpleRNN family's fused loop can); it runs uncompiled. To compile it, compile the whole "
                "train step: `model.compile(..., jit_compile=True)`.",
                stacklevel=3,
            )
        self.supports_jit = True  # the loops compile under XLA (model.fit(jit_compile=True) included)
        self.stateful = False  # read by `keras.layers.Bidirectional`; these layers keep no state across calls
        self.states = None  # as `keras.layers.RNN` when not stateful (`Bidirectional.states` reads it)
        self._state_sizes = step_lib.state_sizes(self.cell)

    # ------------------------------------------------------------------------------------- shapes
    def _sequence_shape(self, sequences_shape: Any) -> tuple:
        """`(batch, time, features)` of the input, whatever form it came in."""
        if isinstance(sequences_shape, list) and sequences_shape and isinstance(sequences_shape[0], (list, tuple)):
            first = tuple(sequences_shape[0])
            if len(first) != 2:
                raise ValueError(
                    f"{type(self).__name__} takes a list of 2D (batch, features) steps. "
                    f"Received: sequences[0].shape={first}"
                )
            return (first[0], len(sequences_shape), first[1])
        shape = tuple(sequences_shape)
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects a 3D input (batch, time, features). Received: inputs.shape={shape}"
            )
        return (shape[1], shape[0], shape[2]) if self.time_major else shape

    def build(
        self, sequences_shape: Any = None, initial_state_shape: Any = None, sequence_length_shape: Any = None
    ) -> None:
        if not sequences_shape:  # Keras calls `build()` without a shape for an empty list input
            raise ValueError(
                f"{type(self).__name__} got no input steps: give a 3D tensor (batch, time, features) or a "
                "non-empty list of (batch, features) steps. Received: sequences=[] (no input shape)"
            )
        batch, steps, features = self._sequence_shape(sequences_shape)
        # Keras' symbolic path (`keras.Input`) uses `compute_output_shape`, never `call`: check T here too.
        step_lib.check_num_steps(steps, tuple(sequences_shape), self._static_steps_required, type(self).__name__)
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs the feature axis (last axis) of its input to be known. "
                f"Received: inputs.shape={tuple(sequences_shape)}"
            )
        step_lib.build_cell(self.cell, features, self.compute_dtype)
        self._features = features

    def compute_output_shape(
        self, sequences_shape: Any, initial_state_shape: Any = None, sequence_length_shape: Any = None
    ) -> Any:
        list_input = isinstance(sequences_shape, list) and sequences_shape and isinstance(sequences_shape[0], (list, tuple))
        batch, steps, _ = self._sequence_shape(sequences_shape)
        units = step_lib.output_size(self.cell)
        if not self.return_sequences:
            output_shape: Any = (batch, units)
        elif list_input:
            output_shape = [(batch, units) for _ in range(steps)]
        else:
            output_shape = (steps, batch, units) if self.time_major else (batch, steps, units)
        if not self.return_state:
            return output_shape
        states = tf.nest.map_structure(lambda size: (batch, int(size)), self._state_sizes)
        return (output_shape, *states)  # a tuple, as `keras.layers.RNN` (`Bidirectional` concatenates tuples)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0] if mask and not isinstance(inputs, (list, tuple)) else None
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None for _ in self._state_sizes]
        return output_mask

    # --------------------------------------------------------------------------------------- call
    def __call__(self, sequences: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(sequences, (tf.RaggedTensor, tf.SparseTensor)):
            # Say "ragged" before `build` sees a shape with an undefined time axis and says something else.
            step_lib.to_float_tensor(sequences, "sequences", self.compute_dtype)
        if self.time_major and self.return_sequences and _called_by_bidirectional():
            raise ValueError(
                "`keras.layers.Bidirectional` reverses the backward layer's sequence output along axis 1, which "
                "is the batch axis of a `time_major=True` layer: the result would be silently wrong (Keras 3's "
                "`Bidirectional` has no time-major mode). Use `time_major=False` and give the input as "
                f"(batch, time, features), e.g. `keras.ops.transpose(x, (1, 0, 2))`. Received: {self.name} with "
                "time_major=True, return_sequences=True inside Bidirectional"
            )
        return super().__call__(sequences, *args, **kwargs)

    _loop: str  # the loop family the layer asks the planner for: "static" or "dynamic"

    def _request(self, training: Any) -> plan.Request:
        return plan.Request(
            self._loop,
            training=training,
            return_all_outputs=self.return_sequences,
            jit_compile=self.jit_compile,
            swap_memory=self.swap_memory,
            recompute=self.recompute,
        )

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        sequence_length: Any = None,
        mask: Any = None,
        training: Optional[bool] = None,
    ) -> Any:
        list_input = isinstance(sequences, (list, tuple))
        # The loop runs in the cell's compute dtype; results are cast to the layer's (as `keras.layers.RNN`),
        # so a `mixed_float16` layer around a float32 cell returns float16.
        loop_dtype = step_lib.compute_dtype(self.cell)
        if list_input:
            if not self._list_input_allowed:
                raise TypeError(
                    f"{type(self).__name__} takes one 3D tensor (batch, time, features); a Python list of steps is "
                    "for `StaticUnroll`. Stack the list with `tf.stack(steps, axis=1)`. "
                    f"Received: a list of {len(sequences)} tensors"
                )
            if any(m is not None for m in tf.nest.flatten(mask)):
                raise ValueError(
                    f"{type(self).__name__} takes no `mask` with a list of steps (Keras masks belong to 3D "
                    "sequences); give `sequence_length=` instead, or stack the steps into a (batch, time, "
                    f"features) tensor. Received: mask={mask!r}"
                )
            inputs = step_lib.stack_inputs(sequences, loop_dtype)
            time_major = True
            mask = None
        else:
            inputs = step_lib.to_float_tensor(sequences, "sequences", loop_dtype)
            time_major = self.time_major
        prepared = step_lib.prepare(
            self.cell,
            inputs,
            time_major=time_major,
            initial_state=initial_state,
            sequence_length=sequence_length,
            mask=mask,
            go_backwards=self.go_backwards,
            zero_output_for_mask=self.zero_output_for_mask,
            require_static_steps=self._static_steps_required,
            layer_name=type(self).__name__,
        )
        outputs, last, state = plan.run(self.cell, prepared, self._request(training))
        if not self.return_sequences:
            output: Any = last
        elif list_input:
            output = list(tf.unstack(outputs)) if isinstance(outputs, tf.Tensor) else list(outputs)
        else:
            if isinstance(outputs, list):
                outputs = tf.stack(outputs, axis=0)
            output = outputs if self.time_major else tf.transpose(outputs, [1, 0, 2])
        cast = lambda t: tf.cast(t, self.compute_dtype)  # noqa: E731
        output = tf.nest.map_structure(cast, output)
        if self.return_state:
            return [output, *tf.nest.map_structure(cast, list(state))]
        return output

    # ------------------------------------------------------------------------------------- config
    def get_config(self) -> Dict[str, Any]:
        config = {
            "cell": keras.saving.serialize_keras_object(self.cell),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "time_major": self.time_major,
            "zero_output_for_mask": self.zero_output_for_mask,
            "jit_compile": self.jit_compile,
            "swap_memory": self.swap_memory,
            "recompute": self.recompute,
        }
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "_Unroll":
        config = copy.deepcopy(config)  # deserializing pops keys (StackedRNNCells' `cells`) from nested dicts
        cell = config.pop("cell", None)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell, custom_objects=custom_objects)
        return cls(cell, **config)


_SHARED_DOC = """
    An unroll runs `output, state = cell(x[t], state)` for every time step `t` and returns the outputs
    and the final state. `StaticUnroll` and `DynamicUnroll` are twins: the same constructor, the same call
    signature, the same results (to float rounding); they differ only in how they loop.

    Args:
        cell: A Keras RNN cell (`keras_unroll.BasicRNNCell`, `keras.layers.SimpleRNNCell`, `LSTMCell`,
            `GRUCell`, a custom cell with nested states), a list of cells (stacked, as
            `keras.layers.StackedRNNCells`), or a positive int (a `BasicRNNCell` of that many units).
        return_sequences: Boolean. `True`: return the output at every step; `False`: return each row's
            last *valid* output (for masked or short rows, the output of their last valid step).
            Default: `False`.
        return_state: Boolean. `True`: return `[output, *states]` (flat, as `keras.layers.RNN`).
            Default: `False`.
        go_backwards: Boolean. `True`: process the sequence in reverse and return the reversed
            sequence (as `keras.layers.RNN`). Default: `False`.
        time_major: Boolean. `True`: inputs and sequence outputs are `(time, batch, ...)`. Default: `False`.
        zero_output_for_mask: Boolean. With a Keras mask, `True` emits zeros at masked steps, `False`
            repeats the last valid output (Keras' default). `sequence_length` always emits zeros (TF1).
        jit_compile: `True`, `False` or `"auto"`. `True` compiles the loop with XLA in its own
            `tf.function(jit_compile=True)`, also inside `model.fit` on CPU (where Keras' own
            `jit_compile="auto"` means no XLA); `"auto"` picks the layer's measured default (below).
            XLA compiles once per input shape. Default: `"auto"`.
        swap_memory: Boolean (`DynamicUnroll` only; `StaticUnroll` raises `ValueError`). `True` keeps
            what the backward pass needs, one `(batch, state)` carry per step, in host memory (`/CPU:0`)
            and brings it back one step at a time; each step is re-run once in the backward pass. TF2's
            `while_v2` ignores TF1's flag; this one works. Saves: device memory for activations becomes
            flat in T (argued from the graph's op placement; not yet measured on a GPU). Costs: a host
            copy of every step's state (T·B·H·4 bytes: 164 MB at T=5000, B=32, H=256), one device↔host
            copy per step each way, and one more forward pass. Measured on CPU (B=32 F=8 H=256, one
            training step at T=5000): 169 MB of activations vs 520 MB for the default loop and 449 MB for
            `jit_compile=False`, at 1.9× the default's step time (`docs/memory.md`). No XLA with it.
            Default: `False`.
        recompute: `None`, `"sqrt"` or a positive int k (`DynamicUnroll` only). Keep only every k-th
            state for the backward pass (k = ceil(sqrt(T)) for `"sqrt"`) and recompute each segment of k
            steps from its checkpoint there: activation memory `O((T/k + k)·B·H)` instead of
            `O(T·B·H)`, for one more forward pass. Measured (CPU, B=32 F=8 H=256, one training step,
            `return_sequences=False`): at T=5000, 37 MB of activations vs 520 MB for the default loop,
            at 1.6× its step time; at T=20000, 88 MB vs 1284 MB at 1.5× (`docs/memory.md`). With
            `return_sequences=True` the `(T, B, H)` outputs and their gradient remain. Combines with
            `swap_memory=True` (checkpoints on the host). `BasicRNNCell`/`SimpleRNNCell` segments run
            the fused path. No XLA with it. Default: `None`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: A 3D tensor `(batch, time, features)`.{list_note}
        initial_state: Optional initial state: a tensor `(batch, units)` for single-state cells, or a list
            of tensors (one per state). Default: the cell's zero state.
        sequence_length: Optional int tensor `(batch,)`, values in `[0, T]`, TF1 semantics: steps at
            `t >= length` emit zeros and copy the state through.
        mask: Optional boolean tensor `(batch, time)` (`(time, batch)` with `time_major=True`), Keras
            semantics (from `Embedding(mask_zero=True)` or `Masking`, passed automatically): masked steps
            copy the state through and emit the last valid output (or zeros with `zero_output_for_mask=True`).
            Not taken with a list of steps: give `sequence_length` there.
        training: Python boolean, passed to the cell (dropout, recurrent dropout).

    Input shape:
        3D tensor `(batch, time, features)` (`(time, batch, features)` with `time_major=True`).

    Output shape:
        - `return_sequences=True`: `(batch, time, units)`; else `(batch, units)`.
        - `return_state=True`: a list `[output, *states]`, each state `(batch, state_size)`.
"""


@keras.saving.register_keras_serializable(package="keras_unroll")
class StaticUnroll(_Unroll):
    __doc__ = (
        """Unrolls an RNN cell over time in Python: one copy of the step in the graph per time step.

    TF1's `static_rnn` as a Keras layer. The graph grows linearly with T (`BasicRNNCell`: 4.25 ops a
    step forward and 9.5 with the backward pass, input products included, measured with
    `keras_unroll.inspect.graph_stats`), so tracing takes seconds at T≈1000; in exchange there is no loop
    machinery.
    It needs a known number of time steps: use `DynamicUnroll` for unknown or long T.

    Speed: `BasicRNNCell`/`SimpleRNNCell` get the input projection hoisted out of the steps (four steps per
    matrix product when a step is small, so the products overlap the recurrence on another core; one
    product for large steps) and plain autodiff; `LSTMCell`/`GRUCell` get the hoisted input projection;
    other cells run the generic step. `jit_compile="auto"` means *no* XLA here: compiling a Python-unrolled
    graph takes seconds to minutes (24 s at T=100 on a 2-core CPU, tens of seconds and ~1.5 GB at T=1000),
    and it paid off only at the compute-bound benchmark shape (train step 0.73-0.81× of uncompiled at
    256·50·64·256, 1.15-1.6× at 32·28·28·128 and 64·100·16·64; `docs/performance.md`).
"""
        + _SHARED_DOC.format(
            list_note=" `StaticUnroll` also takes a Python list of T `(batch, features)` tensors (TF1's "
            "`[X0, X1]`) and then returns a list of per-step outputs."
        )
        + """
    Example:

    >>> import numpy as np, keras
    >>> import keras_unroll as ku
    >>> model = keras.Sequential([keras.Input((20, 1)), ku.StaticUnroll(ku.BasicRNNCell(8)), keras.layers.Dense(1)])
    >>> model(np.zeros((2, 20, 1), "float32")).shape            # (batch, 1)
    TensorShape([2, 1])
"""
    )

    _static_steps_required = True
    _list_input_allowed = True
    _loop = "static"


@keras.saving.register_keras_serializable(package="keras_unroll")
class DynamicUnroll(_Unroll):
    __doc__ = (
        """Unrolls an RNN cell over time with one `tf.while_loop` inside a `tf.function`.

    TF1's `dynamic_rnn` as a Keras layer. The graph holds the step once whatever T is, and T may be unknown
    (`None`) until run time. The loop always has `maximum_iterations`, so it compiles under XLA.

    Speed: `BasicRNNCell`/`SimpleRNNCell` run a fused loop (input projection hoisted into one matrix
    product, a hand-written backward pass whose loop only does `dz_t Uᵀ`), and `jit_compile="auto"`
    compiles it with XLA: per-step overhead drops from ~10 µs to ~2.5 µs, which measured 0.2-0.3× the time
    of `keras.layers.SimpleRNN` for a training step at T=1000 (`docs/performance.md`); one compile per
    input shape (~1-2 s). For large steps (`B·H·H ≥ 2²¹` with at most 256 units) only the forward loop is
    compiled: TensorFlow's own matmul kernels ran the backward loop 24-41 % faster than XLA's there.
    Other cells run the generic step without XLA under "auto": TensorFlow cannot
    differentiate a `tf.while_loop` compiled as a function of its own (its gradient accumulators may not
    cross the XLA boundary); `jit_compile=True` then warns and runs uncompiled, and
    `model.compile(jit_compile=True)` compiles the whole step instead. The compiled fused loop takes any
    first-order tape (persistent, nested, `jacobian`, `model.fit`); second-order gradients and
    `tf.autodiff.ForwardAccumulator` raise `NotImplementedError` and need `jit_compile=False`.
"""
        + _SHARED_DOC.format(list_note="")
        + """
    Example:

    >>> import numpy as np, keras
    >>> import keras_unroll as ku
    >>> model = keras.Sequential([keras.Input((None, 1)), ku.DynamicUnroll(8), keras.layers.Dense(1)])
    >>> model(np.zeros((2, 50, 1), "float32")).shape            # any length: (batch, 1)
    TensorShape([2, 1])
"""
    )

    _list_input_allowed = False
    _memory_strategies = True
    _loop = "dynamic"
