"""TF1's `tf.nn.rnn_cell` vocabulary as Keras 3 RNN cells: a `tf.nn.rnn_cell.X` line becomes `ku.tf1.X`.

Every cell here is a Keras RNN cell (`state_size`, `output_size`, `call(inputs, states, training)`), so it
runs in `ku.DynamicUnroll`, `ku.StaticUnroll`, `ku.dynamic_rnn`, `ku.static_rnn`, `keras.layers.RNN` and
`keras.layers.Bidirectional`, and saves to `.keras` files. The arithmetic is TF1's; the weights are stored
in Keras' layout (see each cell), which is what `ku.load_tf1_weights` converts a TF1 checkpoint into.

Two conventions differ between TF1 and Keras, and this module keeps both, each where it belongs:

- Inside the cells and in the layers (`[output, *states]` with `return_state=True`) states are Keras'
  flat lists: an LSTM state is `[h, c]`, a stack's state is one entry per layer in Keras' nesting.
- In the functional API (`ku.dynamic_rnn`, `ku.static_rnn`, the bidirectional functions) states are TF1's
  structures: `LSTMStateTuple(c, h)` for an LSTM, a tuple with one entry per layer for a stack. The two
  functions `to_tf1_state` / `from_tf1_state` convert between them.

TF1's `forget_bias` is added at run time; here it initializes the forget-gate slice of the bias instead:
the same numbers and the same gradients, and a loaded TF1 checkpoint has it folded into that slice.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell  # Keras' per-sequence mask hooks

from keras_unroll.cell import BasicRNNCell, check_units
from keras_unroll.functional import (  # the state structures live with the functional API that returns them
    LSTMStateTuple,
    from_tf1_state,
    lstm_like,
    to_tf1_state,
)

__all__ = [
    "BasicLSTMCell",
    "BasicRNNCell",
    "DeviceWrapper",
    "DropoutWrapper",
    "GRUCell",
    "LSTMCell",
    "LSTMStateTuple",
    "MultiRNNCell",
    "OutputProjectionWrapper",
    "ResidualWrapper",
    "from_tf1_state",
    "to_tf1_state",
]

_PACKAGE = "keras_unroll"

# ------------------------------------------------------------------------------------ initializers
@keras.saving.register_keras_serializable(package=_PACKAGE)
class TF1GlorotUniform(keras.initializers.Initializer):
    """TF1's default initializer for a gated cell's kernel, for the Keras split of that kernel.

    TF1 kept one kernel of shape `(fan_in, sum(blocks))` over the concatenated `[inputs, state]` and drew
    it from glorot-uniform: every entry uniform in `±sqrt(6 / (fan_in + block))` for its block of columns
    (one block for an LSTM's `4H`; the GRU's `gates` `2H` and `candidate` `H` were separate variables).
    Keras splits that kernel into `kernel (F, ·)` and `recurrent_kernel (H, ·)`; drawing each part with
    TF1's limits gives exactly TF1's distribution (Keras' own glorot would use each part's shape instead).

    Args:
        fan_in: The rows of TF1's concatenated kernel, `F + H` (`F + P` with a projection).
        blocks: Column counts of TF1's separate variables, e.g. `[4 * H]` (LSTM) or `[2 * H, H]` (GRU).
        seed: Optional random seed.
    """

    def __init__(self, fan_in: int, blocks: Sequence[int], seed: Optional[int] = None) -> None:
        self.fan_in = int(fan_in)
        self.blocks = [int(b) for b in blocks]
        self.seed = seed

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        shape = tuple(shape)
        if shape[-1] != sum(self.blocks):
            raise ValueError(
                f"TF1GlorotUniform was set up for {sum(self.blocks)} columns ({self.blocks}). Received: shape={shape}"
            )
        parts = []
        for index, block in enumerate(self.blocks):
            limit = float(np.sqrt(6.0 / (self.fan_in + block)))
            seed = None if self.seed is None else self.seed + index
            parts.append(keras.random.uniform(shape[:-1] + (block,), -limit, limit, dtype=dtype, seed=seed))
        return keras.ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def get_config(self) -> Dict[str, Any]:
        return {"fan_in": self.fan_in, "blocks": list(self.blocks), "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GateBias(keras.initializers.Initializer):
    """A gated cell's bias: one constant per gate block, e.g. `[0, forget_bias, 0, 0]` for an LSTM.

    Args:
        values: One float per gate block, in Keras' gate order (the bias is split into `len(values)` equal
            blocks).
    """

    def __init__(self, values: Sequence[float]) -> None:
        self.values = [float(v) for v in values]

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        shape = tuple(shape)
        blocks = len(self.values)
        if len(shape) != 1 or shape[0] % blocks:
            raise ValueError(f"GateBias needs a 1D shape divisible by {blocks}. Received: shape={shape}")
        size = shape[0] // blocks
        values = np.repeat(np.asarray(self.values, np.float64), size)
        return keras.ops.convert_to_tensor(values, dtype=dtype or keras.backend.floatx())

    def get_config(self) -> Dict[str, Any]:
        return {"values": list(self.values)}


# ------------------------------------------------------------------------------------ argument checks
_TF_ACTIVATIONS = {  # TF1 code passes TF functions; keep Keras' own (serializable, fast-path) callables
    "tanh": ("tanh", "nn.tanh", "math.tanh"),
    "sigmoid": ("sigmoid", "nn.sigmoid", "math.sigmoid"),
    "relu": ("nn.relu",),
    "relu6": ("nn.relu6",),
    "elu": ("nn.elu",),
    "selu": ("nn.selu",),
    "softsign": ("nn.softsign", "math.softsign"),
    "softplus": ("nn.softplus", "math.softplus"),
}


def _resolve_attr(path: str) -> Any:
    obj: Any = tf
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _activation(activation: Any, name: str = "activation") -> Any:
    """TF1's `activation=None` means tanh; TF functions (`tf.tanh`, `tf.nn.relu`) map to Keras' names."""
    if activation is None:
        return "tanh"
    if callable(activation):
        for keras_name, paths in _TF_ACTIVATIONS.items():
            if any(_resolve_attr(path) is activation for path in paths):
                return keras_name
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` must be a Keras activation name (e.g. 'tanh', 'relu'), a TF function such as `tf.tanh`, "
            f"or a callable. Received: {name}={activation!r}"
        ) from error
    return activation


_BASE_LAYER_KWARGS = ("name", "dtype", "trainable", "autocast")


def _check_kwargs(kwargs: Dict[str, Any], owner: str, keras_cell: str) -> None:
    """TF1's cells take TF1's arguments plus the base layer's; Keras' extras would be lost on saving."""
    extra = sorted(set(kwargs) - set(_BASE_LAYER_KWARGS))
    if extra:
        shown = ", ".join(f"{key}={kwargs[key]!r}" for key in extra)
        raise TypeError(
            f"{owner} takes TF1's arguments and the base layer's ({', '.join(_BASE_LAYER_KWARGS)}). For Keras' "
            f"options use `{keras_cell}`; for dropout wrap the cell in `ku.tf1.DropoutWrapper`. Received: {shown}"
        )


def _serialize_initializer(initializer: Any) -> Any:
    """`None` (TF1's default, resolved when the cell is built) stays `None`."""
    return None if initializer is None else keras.initializers.serialize(keras.initializers.get(initializer))


def _units(units: Any, num_units: Any, owner: str) -> int:
    if units is None and num_units is None:
        raise TypeError(f"{owner} needs the number of units: pass `num_units`. Received: num_units=None")
    if units is not None and num_units is not None and units != num_units:
        raise ValueError(
            f"Give either `num_units` or its Keras alias `units`, not two different values. "
            f"Received: num_units={num_units!r}, units={units!r}"
        )
    return check_units(num_units if num_units is not None else units, "num_units" if num_units is not None else "units")


def _float(value: Any, name: str, allow_none: bool = False, positive: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float{' or None' if allow_none else ''}. Received: {name}={value!r}")
    if positive and not float(value) > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


def _is_rnn_layer(obj: Any) -> bool:
    if isinstance(obj, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    from keras_unroll.layers import DynamicUnroll, StaticUnroll  # lazy: layers imports the loops

    return isinstance(obj, (StaticUnroll, DynamicUnroll))


def check_cell(cell: Any, name: str = "cell") -> Any:
    """Checks that `cell` is an RNN *cell* (not an RNN layer); returns it."""
    if _is_rnn_layer(cell):
        inner = getattr(cell, "cell", None) or getattr(cell, "forward_layer", None)
        raise TypeError(
            f"`{name}` must be an RNN cell (one time step, e.g. `ku.tf1.BasicLSTMCell(8)` or "
            "`keras.layers.LSTMCell(8)`), not an RNN layer that runs a whole sequence. Pass the layer's cell "
            f"(`layer.cell`{'' if inner is None else ', here ' + type(inner).__name__}) or the matching cell class. "
            f"Received: {name}={type(cell).__name__} layer {getattr(cell, 'name', '')!r}"
        )
    if not callable(cell) or getattr(cell, "state_size", None) is None:
        raise TypeError(
            f"`{name}` must be a Keras RNN cell (a layer with `state_size` and `call(inputs, states)`). "
            f"Received: {name}={cell!r}"
        )
    return cell


def _as_cell(cell: Any) -> Any:
    """A Python list of cells is a stack, as the functional API reads it."""
    if isinstance(cell, (list, tuple)):
        cells = [check_cell(c, f"cell[{i}]") for i, c in enumerate(cell)]
        return cells[0] if len(cells) == 1 else keras.layers.StackedRNNCells(cells)
    return cell


def _output_size(cell: Any) -> int:
    size = getattr(cell, "output_size", None)
    if size is None:
        size = tf.nest.flatten(cell.state_size)[0]
    return int(size)


# ------------------------------------------------------------------------------------------ LSTM cells
@keras.saving.register_keras_serializable(package=_PACKAGE)
class BasicLSTMCell(keras.layers.LSTMCell):
    """TF1's `BasicLSTMCell`: an LSTM without peepholes or projection (`keras.layers.LSTMCell`'s maths).

    With gates `i, f, o = sigmoid(·)` and candidate `g = activation(·)`, each `x_t W_· + h_{t-1} U_· + b_·`:

        c_t = sigmoid(f + forget_bias) * c_{t-1} + sigmoid(i) * activation(g)
        h_t = sigmoid(o) * activation(c_t)

    This is exactly `keras.layers.LSTMCell` (a subclass that keeps its `call`, so every loop's LSTM fast
    path applies). Weights are Keras': `kernel (F, 4H)`, `recurrent_kernel (H, 4H)`, `bias (4H,)`, gates in
    Keras' order `i, f, c, o` (TF1: one `kernel (F + H, 4H)` in order `i, j, f, o`). `forget_bias` is the
    initial value of the bias' `f` slice rather than a constant added at run time: the same numbers and
    gradients. Default initializers draw TF1's distribution (glorot-uniform over the `(F + H, 4H)` kernel,
    zero bias). The state is `[h, c]` inside (Keras' order, as `keras.layers.RNN` returns it); the
    functional API returns it as `LSTMStateTuple(c, h)`.

    Args:
        num_units: Positive integer, the number of units `H`. `units` (Keras' name) is accepted too.
        forget_bias: Float added to the forget gate (here: its bias' initial value). Default: `1.0`.
        state_is_tuple: `True` (default): the functional API returns `LSTMStateTuple(c, h)`. `False`:
            TF1's deprecated concatenated state `(batch, 2H)` = `[c, h]`.
        activation: The activation of the candidate and of the output. Default (`None`): tanh. TF
            functions (`tf.tanh`, `tf.nn.relu`) are accepted.
        kernel_initializer: Initializer for `kernel`. Default (`None`): TF1's glorot-uniform.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default (`None`): TF1's glorot-uniform.
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: `[h, c]`, each `(batch, units)`.
        training: Unused (no dropout; wrap the cell in `DropoutWrapper`).

    Returns:
        `(h, [h, c])`.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> x = np.ones((4, 6, 3), "float32")                       # (batch, time, features)
    >>> outputs, state = ku.dynamic_rnn(ku.tf1.BasicLSTMCell(5), x)
    >>> tuple(outputs.shape), tuple(state.c.shape), tuple(state.h.shape)
    ((4, 6, 5), (4, 5), (4, 5))
    """

    _keras_unroll_tf1_lstm = True  # the functional API reads a plain pair as TF1's (c, h) for this cell

    def __init__(
        self,
        num_units: Optional[int] = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Any = None,
        kernel_initializer: Any = None,
        recurrent_initializer: Any = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, type(self).__name__)
        _check_kwargs(kwargs, type(self).__name__, "keras.layers.LSTMCell")
        self.forget_bias = _float(forget_bias, "forget_bias")
        self.state_is_tuple = _bool(state_is_tuple, "state_is_tuple")
        self._tf1_initializers = (kernel_initializer, recurrent_initializer)
        super().__init__(
            units=units,
            activation=_activation(activation),
            recurrent_activation="sigmoid",
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=GateBias([0.0, self.forget_bias, 0.0, 0.0]),
            unit_forget_bias=False,
            **kwargs,
        )

    @property
    def num_units(self) -> int:
        """TF1's name for `units`."""
        return self.units

    def build(self, input_shape: Any) -> None:
        fan_in = int(input_shape[-1]) + self.units
        kernel, recurrent = self._tf1_initializers
        self.kernel_initializer = keras.initializers.get(kernel) or TF1GlorotUniform(fan_in, [4 * self.units])
        self.recurrent_initializer = keras.initializers.get(recurrent) or TF1GlorotUniform(fan_in, [4 * self.units])
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> LSTMStateTuple:
        """TF1's `cell.zero_state(batch_size, dtype)`: `LSTMStateTuple(c, h)` of zeros."""
        zeros = tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)
        return LSTMStateTuple(zeros, zeros) if self.state_is_tuple else tf.concat([zeros, zeros], 1)

    def get_config(self) -> Dict[str, Any]:
        kernel, recurrent = self._tf1_initializers
        return {
            **keras.layers.Layer.get_config(self),
            "num_units": self.units,
            "forget_bias": self.forget_bias,
            "state_is_tuple": self.state_is_tuple,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": _serialize_initializer(kernel),
            "recurrent_initializer": _serialize_initializer(recurrent),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LSTMCell(keras.layers.Layer):
    """TF1's full `LSTMCell`: optional peepholes, cell clipping and an output projection.

    With `x_t W + h_{t-1} U + b` split into `i, f, g, o` (Keras' gate order) and `H` units:

        c_t = sigmoid(f + w_f ⊙ c_{t-1}) * c_{t-1} + sigmoid(i + w_i ⊙ c_{t-1}) * activation(g)
        c_t = clip(c_t, ±cell_clip)                                 # with cell_clip
        m_t = sigmoid(o + w_o ⊙ c_t) * activation(c_t)
        h_t = clip(m_t P, ±proj_clip)                               # with num_proj (else h_t = m_t)

    (the `w_·` terms only with `use_peepholes`). `forget_bias` initializes the bias' `f` slice (TF1 adds
    it at run time: the same numbers and gradients). Without peepholes, clipping and projection it is
    `BasicLSTMCell`'s maths, and the layers run it on the same fused LSTM kernels.

    Weights (Keras' layout; `ku.load_tf1_weights` converts TF1's): `kernel (F, 4H)`, `recurrent_kernel
    (P, 4H)` with `P = num_proj or H`, `bias (4H,)`, gates `i, f, c, o`; with peepholes `w_f_diag`,
    `w_i_diag`, `w_o_diag (H,)` (TF1's names and creation order); with a projection `projection_kernel
    (H, P)` (TF1's `projection/kernel`). Default initializers draw TF1's distribution (glorot-uniform over
    TF1's `(F + P, 4H)` kernel; TF1's glorot for the diagonals and the projection; zero bias but for
    `forget_bias`). The state is `[h, c]` inside (`h` has `P` units, `c` has `H`); the functional API
    returns `LSTMStateTuple(c, h)`.

    Args:
        num_units: Positive integer, the number of units `H`. `units` is accepted too.
        use_peepholes: Boolean, add the diagonal peephole connections. Default: `False`.
        cell_clip: Optional positive float: `c_t` is clipped to `[-cell_clip, cell_clip]`.
        initializer: Initializer for `kernel`, `recurrent_kernel`, the diagonals and the projection
            (TF1's single `initializer`). Default (`None`): TF1's glorot-uniform.
        num_proj: Optional positive int `P`: the output (and `h`) is projected to `P` units.
        proj_clip: Optional positive float: the projected output is clipped to `[-proj_clip, proj_clip]`
            (needs `num_proj`).
        forget_bias: Float added to the forget gate (here: its bias' initial value). Default: `1.0`.
        state_is_tuple: `True` (default): `LSTMStateTuple(c, h)`; `False`: TF1's concatenated `[c, h]`.
        activation: Activation of the candidate and the output. Default (`None`): tanh.
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: `[h, c]`: `h` is `(batch, P)`, `c` is `(batch, H)`.
        training: Unused.

    Returns:
        `(h, [h, c])`.

    Raises:
        ValueError: `proj_clip` without `num_proj`, or a clip that is not positive.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.LSTMCell(6, use_peepholes=True, num_proj=4, cell_clip=3.0)
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 5, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.c.shape), tuple(state.h.shape)
    ((2, 5, 4), (2, 6), (2, 4))
    """

    _keras_unroll_tf1_lstm = True  # an LSTM state (Keras' [h, c] inside, TF1's (c, h) in the functional API)
    # What the fused and hoisted LSTM kernels read of a Keras `LSTMCell` (`kernels.gated.FAMILY_ATTRIBUTE`):
    # TF1's cell has no dropout of its own (that is `DropoutWrapper`), a bias and sigmoid gates.
    dropout = 0.0
    recurrent_dropout = 0.0
    use_bias = True
    implementation = 2
    recurrent_activation = staticmethod(keras.activations.sigmoid)

    @property
    def _keras_unroll_gated_family(self) -> Optional[str]:
        """`"lstm"` when this cell computes `keras.layers.LSTMCell`'s maths (no peepholes, clipping or
        projection, and `call` not overridden), so `DynamicUnroll`/`StaticUnroll` run it on their fused LSTM
        kernels; else None (the generic step)."""
        plain = not self.use_peepholes and self.cell_clip is None and self.num_proj is None
        return "lstm" if plain and type(self).call is LSTMCell.call else None

    def __init__(
        self,
        num_units: Optional[int] = None,
        use_peepholes: bool = False,
        cell_clip: Optional[float] = None,
        initializer: Any = None,
        num_proj: Optional[int] = None,
        proj_clip: Optional[float] = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Any = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, "LSTMCell")
        _check_kwargs(kwargs, "LSTMCell", "keras.layers.LSTMCell")
        super().__init__(**kwargs)
        self.units = units
        self.use_peepholes = _bool(use_peepholes, "use_peepholes")
        self.cell_clip = _float(cell_clip, "cell_clip", allow_none=True, positive=True)
        self.num_proj = None if num_proj is None else check_units(num_proj, "num_proj")
        self.proj_clip = _float(proj_clip, "proj_clip", allow_none=True, positive=True)
        if self.proj_clip is not None and self.num_proj is None:
            raise ValueError(
                "`proj_clip` clips the projected output, so it needs `num_proj`. "
                f"Received: proj_clip={proj_clip!r}, num_proj=None"
            )
        self.forget_bias = _float(forget_bias, "forget_bias")
        self.state_is_tuple = _bool(state_is_tuple, "state_is_tuple")
        self.activation = keras.activations.get(_activation(activation))
        self.initializer = initializer
        self.output_size = self.num_proj or self.units
        self.state_size = [self.output_size, self.units]  # Keras' order: [h, c]

    @property
    def num_units(self) -> int:
        return self.units

    def build(self, input_shape: Any) -> None:
        features = int(input_shape[-1])
        units, proj = self.units, self.output_size
        custom = keras.initializers.get(self.initializer) if self.initializer is not None else None

        def init(default: Any) -> Any:
            return custom if custom is not None else default

        glorot = TF1GlorotUniform(features + proj, [4 * units])
        self.kernel = self.add_weight(shape=(features, 4 * units), name="kernel", initializer=init(glorot))
        self.recurrent_kernel = self.add_weight(
            shape=(proj, 4 * units), name="recurrent_kernel", initializer=init(glorot)
        )
        self.bias = self.add_weight(
            shape=(4 * units,), name="bias", initializer=GateBias([0.0, self.forget_bias, 0.0, 0.0])
        )
        if self.use_peepholes:  # TF1's names and creation order
            for gate in ("f", "i", "o"):
                weight = self.add_weight(shape=(units,), name=f"w_{gate}_diag", initializer=init("glorot_uniform"))
                setattr(self, f"w_{gate}_diag", weight)
        if self.num_proj is not None:
            self.projection_kernel = self.add_weight(
                shape=(units, self.num_proj), name="projection_kernel", initializer=init("glorot_uniform")
            )
        self.built = True

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        h_prev, c_prev = states[0], states[1]
        z = tf.matmul(inputs, self.kernel) + tf.matmul(h_prev, self.recurrent_kernel) + self.bias
        i, f, g, o = tf.split(z, 4, axis=1)
        if self.use_peepholes:
            forget, keep = tf.sigmoid(f + self.w_f_diag * c_prev), tf.sigmoid(i + self.w_i_diag * c_prev)
            c = forget * c_prev + keep * self.activation(g)
        else:
            c = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * self.activation(g)
        if self.cell_clip is not None:
            c = tf.clip_by_value(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            h = tf.sigmoid(o + self.w_o_diag * c) * self.activation(c)
        else:
            h = tf.sigmoid(o) * self.activation(c)
        if self.num_proj is not None:
            h = tf.matmul(h, self.projection_kernel)
            if self.proj_clip is not None:
                h = tf.clip_by_value(h, -self.proj_clip, self.proj_clip)
        return h, [h, c]

    def get_initial_state(self, batch_size: Any = None) -> List[tf.Tensor]:
        return [tf.zeros(tf.stack([batch_size, size]), self.compute_dtype) for size in self.state_size]

    def zero_state(self, batch_size: int, dtype: Any = None) -> LSTMStateTuple:
        """TF1's `cell.zero_state(batch_size, dtype)`: `LSTMStateTuple(c, h)` of zeros."""
        dtype = dtype or self.compute_dtype
        c, h = tf.zeros((batch_size, self.units), dtype), tf.zeros((batch_size, self.output_size), dtype)
        return LSTMStateTuple(c, h) if self.state_is_tuple else tf.concat([c, h], 1)

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "num_units": self.units,
            "use_peepholes": self.use_peepholes,
            "cell_clip": self.cell_clip,
            "initializer": _serialize_initializer(self.initializer),
            "num_proj": self.num_proj,
            "proj_clip": self.proj_clip,
            "forget_bias": self.forget_bias,
            "state_is_tuple": self.state_is_tuple,
            "activation": keras.activations.serialize(self.activation),
        }


# ------------------------------------------------------------------------------------------ GRU cell
@keras.saving.register_keras_serializable(package=_PACKAGE)
class GRUCell(keras.layers.GRUCell):
    """TF1's `GRUCell`: `keras.layers.GRUCell(reset_after=False)`'s maths, with TF1's initialization.

        z = sigmoid(x_t W_z + h_{t-1} U_z + b_z)            # TF1's update gate "u"
        r = sigmoid(x_t W_r + h_{t-1} U_r + b_r)
        g = activation(x_t W_h + (r * h_{t-1}) U_h + b_h)  # the reset gate is applied *before* U_h
        h_t = z * h_{t-1} + (1 - z) * g

    Keras' default `GRUCell(reset_after=True)` applies `r` after `U_h` and gives other numbers; this cell
    fixes `reset_after=False`, and keeps Keras' `call`, so the GRU fast paths apply. Weights are Keras':
    `kernel (F, 3H)`, `recurrent_kernel (H, 3H)`, `bias (3H,)`, gates `z, r, h` (TF1: `gates/kernel
    (F + H, 2H)` split `r, u`, `candidate/kernel (F + H, H)` and their biases). The bias starts as TF1's:
    1.0 for the gates, 0.0 for the candidate; the kernels from TF1's glorot-uniform (over `(F + H, 2H)`
    for the gates and `(F + H, H)` for the candidate).

    Args:
        num_units: Positive integer, the number of units `H`. `units` is accepted too.
        activation: The candidate's activation. Default (`None`): tanh.
        kernel_initializer: Initializer for `kernel` and `recurrent_kernel` (TF1 used it for both parts of
            each concatenated kernel). Default (`None`): TF1's glorot-uniform.
        bias_initializer: Initializer for the whole bias (TF1: for both biases). Default (`None`): gates
            1.0, candidate 0.0.
        units: Keras alias of `num_units`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: One `(batch, units)` tensor (or a list holding it).
        training: Unused.

    Returns:
        `(h, h)` (a list `[h]` when the state came as a list).

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> outputs, state = ku.dynamic_rnn(ku.tf1.GRUCell(5), np.ones((4, 6, 3), "float32"))
    >>> tuple(outputs.shape), tuple(state.shape)
    ((4, 6, 5), (4, 5))
    """

    def __init__(
        self,
        num_units: Optional[int] = None,
        activation: Any = None,
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        *,
        units: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        units = _units(units, num_units, "GRUCell")
        _check_kwargs(kwargs, "GRUCell", "keras.layers.GRUCell(reset_after=False)")
        self._tf1_initializers = (kernel_initializer, bias_initializer)
        super().__init__(
            units=units,
            activation=_activation(activation),
            recurrent_activation="sigmoid",
            kernel_initializer=kernel_initializer,
            recurrent_initializer=kernel_initializer,
            bias_initializer=bias_initializer if bias_initializer is not None else GateBias([1.0, 1.0, 0.0]),
            reset_after=False,
            **kwargs,
        )

    @property
    def num_units(self) -> int:
        return self.units

    def build(self, input_shape: Any) -> None:
        kernel, _ = self._tf1_initializers
        if kernel is None:
            glorot = TF1GlorotUniform(int(input_shape[-1]) + self.units, [2 * self.units, self.units])
            self.kernel_initializer = self.recurrent_initializer = glorot
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> tf.Tensor:
        return tf.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)

    def get_config(self) -> Dict[str, Any]:
        kernel, bias = self._tf1_initializers
        return {
            **keras.layers.Layer.get_config(self),
            "num_units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": _serialize_initializer(kernel),
            "bias_initializer": _serialize_initializer(bias),
        }


# ------------------------------------------------------------------------------------------ stacks
@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiRNNCell(keras.layers.StackedRNNCells):
    """TF1's `MultiRNNCell`: cells stacked in depth, each layer's output the next layer's input.

    A `keras.layers.StackedRNNCells` (so `keras.layers.RNN` and both unroll layers take it as is) whose
    functional-API state is TF1's: a tuple with one entry per layer (`LSTMStateTuple(c, h)` for an LSTM
    layer), so TF1's `tf.concat(axis=1, values=states)` gives `(batch, sum of units)` and `states[-1].h`
    (or TF1's `states[-1][1]`) is the top layer's output. Inside, and in the layers' `return_state`, the
    state is Keras' nested list.

    Give each layer its own cell (`[BasicRNNCell(n) for _ in range(3)]`): one cell object repeated
    (`[cell] * 3`) shares its weights across the layers, as in TF1 (which warned), and only works when every
    layer sees inputs of the same size.

    Args:
        cells: A list of RNN cells (not RNN layers), bottom layer first.
        state_is_tuple: Must be `True` (TF1's deprecated concatenated state is not supported).
        **kwargs: Base layer arguments.

    Raises:
        TypeError: An entry is an RNN layer or not a cell.
        ValueError: An empty list, or `state_is_tuple=False`.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import keras_unroll as ku
    >>> stack = ku.tf1.MultiRNNCell([ku.tf1.BasicRNNCell(5) for _ in range(3)])
    >>> outputs, states = ku.dynamic_rnn(stack, np.ones((8, 4, 2), "float32"))
    >>> len(states), tuple(tf.concat(axis=1, values=states).shape)     # one state per layer
    (3, (8, 15))
    """

    def __init__(self, cells: Sequence[Any], state_is_tuple: bool = True, **kwargs: Any) -> None:
        if not isinstance(cells, (list, tuple)) or not cells:
            raise ValueError(f"`cells` must be a non-empty list of RNN cells. Received: cells={cells!r}")
        if not _bool(state_is_tuple, "state_is_tuple"):
            raise ValueError(
                "MultiRNNCell supports only `state_is_tuple=True` (TF1 deprecated the concatenated state). "
                "Received: state_is_tuple=False"
            )
        cells = [check_cell(cell, f"cells[{i}]") for i, cell in enumerate(cells)]
        if len({id(cell) for cell in cells}) < len(cells):
            warnings.warn(
                "At least two cells given to MultiRNNCell are the same object, so those layers share their "
                "weights (as in TF1). For separate layers give separate cells: `[Cell(n) for _ in range(k)]`.",
                stacklevel=2,
            )
        super().__init__(list(cells), **kwargs)
        self.state_is_tuple = True

    def build(self, input_shape: Any) -> None:
        seen: Dict[int, int] = {}
        size = int(input_shape[-1])
        for i, cell in enumerate(self.cells):
            if id(cell) in seen and seen[id(cell)] != size:
                raise ValueError(
                    f"cells[{i}] is the same object as an earlier layer, which shares its weights, but it gets "
                    f"{size} input features there and {seen[id(cell)]} before. Give each layer its own cell, "
                    f"e.g. `[BasicRNNCell(n) for _ in range({len(self.cells)})]`. Received: cells[{i}]={cell.name!r}"
                )
            seen[id(cell)] = size
            size = _output_size(cell)
        super().build(input_shape)

    def zero_state(self, batch_size: int, dtype: Any = None) -> tuple:
        """TF1's `cell.zero_state`: a tuple with each layer's zero state in TF1's structure."""
        return tuple(_tf1_zero_state(cell, batch_size, dtype or self.compute_dtype) for cell in self.cells)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "state_is_tuple": True}


def _tf1_zero_state(cell: Any, batch_size: int, dtype: Any) -> Any:
    zeros = [tf.zeros((batch_size, int(size)), dtype) for size in tf.nest.flatten(cell.state_size)]
    return to_tf1_state(cell, tf.nest.pack_sequence_as(cell.state_size, zeros) if len(zeros) > 1 else zeros)


# ------------------------------------------------------------------------------------------ wrappers
def _needs_masks(cell: Any) -> bool:
    """Whether `cell` (or a cell inside it) draws per-sequence dropout masks (Keras' `DropoutRNNCell` protocol)."""
    if isinstance(cell, _Wrapper):
        return cell.dropout > 0
    if isinstance(cell, keras.layers.StackedRNNCells):
        return any(_needs_masks(sub) for sub in cell.cells)
    return isinstance(cell, DropoutRNNCell) and (cell.dropout > 0 or cell.recurrent_dropout > 0)


def _draw_masks(cell: Any, step_input: tf.Tensor) -> Optional[Dict[str, Any]]:
    """The per-sequence masks of every cell inside a wrapper, as a dict of tensors (None: no masks).

    Keras' protocol: `get_dropout_mask(step_input)` / `get_recurrent_dropout_mask(state)` draw a mask and
    keep it on the cell; the loop (or `keras.layers.RNN`) draws before the loop and clears afterwards. A
    wrapper draws for the cells it wraps, keeps their masks in its own, and hands them over at each step.
    """
    if not _needs_masks(cell):
        return None
    batch, dtype = tf.shape(step_input)[0], step_input.dtype
    if isinstance(cell, keras.layers.StackedRNNCells):
        masks = {}
        for index, sub in enumerate(cell.cells):
            sub_masks = _draw_masks(sub, step_input)
            if sub_masks:
                masks[f"cell{index}"] = sub_masks
            step_input = tf.zeros(tf.stack([batch, _output_size(sub)]), dtype)
        return masks
    if isinstance(cell, _Wrapper):
        masks = cell.get_dropout_mask(step_input)
        cell.reset_dropout_mask()
        return masks
    state = tf.zeros(tf.stack([batch, int(tf.nest.flatten(cell.state_size)[0])]), dtype)
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    drawn = {"input": cell.get_dropout_mask(step_input), "recurrent": cell.get_recurrent_dropout_mask(state)}
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    return {key: value for key, value in drawn.items() if value is not None}


def _set_masks(cell: Any, masks: Optional[Dict[str, Any]]) -> None:
    """Hands drawn masks (`_draw_masks`) to the cells; `None` clears them."""
    if isinstance(cell, keras.layers.StackedRNNCells):
        for index, sub in enumerate(cell.cells):
            _set_masks(sub, None if masks is None else masks.get(f"cell{index}"))
    elif isinstance(cell, _Wrapper):
        cell._dropout_mask = masks
    elif isinstance(cell, DropoutRNNCell):
        cell._dropout_mask = None if masks is None else masks.get("input")
        cell._recurrent_dropout_mask = None if masks is None else masks.get("recurrent")


class _Wrapper(keras.layers.Layer, DropoutRNNCell):
    """A cell around a cell: the same state, its own change to the inputs or the output.

    It takes part in Keras' per-sequence dropout-mask protocol (`DropoutRNNCell`) for the cells it wraps:
    the loops and `keras.layers.RNN` draw one mask per sequence for a wrapped `keras.layers.LSTMCell(
    dropout=...)` or a `DropoutWrapper(variational_recurrent=True)` before they run, as for a bare cell.
    """

    recurrent_dropout = 0.0  # read by the loops' mask drawing; every mask of a wrapper is its `_dropout_mask`
    _keras_unroll_wrapper = True  # the functional API gives it the state structure of `self.cell`

    @property
    def dropout(self) -> float:
        """Positive when this wrapper (or a cell inside it) draws per-sequence masks: the loops then draw them."""
        return 1.0 if self._own_masks() or _needs_masks(self.cell) else 0.0

    def _own_masks(self) -> bool:
        return False

    def __init__(self, cell: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = check_cell(cell, "cell")

    @property
    def state_size(self) -> Any:
        return self.cell.state_size

    @property
    def output_size(self) -> int:
        return _output_size(self.cell)

    def build(self, input_shape: Any) -> None:
        if not self.cell.built:
            self.cell.build(input_shape)
            self.cell.built = True
        self.built = True

    def get_initial_state(self, batch_size: Any = None) -> Any:
        getter = getattr(self.cell, "get_initial_state", None)
        if getter is not None:
            return getter(batch_size=batch_size)
        sizes = self.cell.state_size
        zeros = [tf.zeros(tf.stack([batch_size, int(s)]), self.compute_dtype) for s in tf.nest.flatten(sizes)]
        return tf.nest.pack_sequence_as(sizes, zeros) if tf.nest.is_nested(sizes) else zeros

    def zero_state(self, batch_size: int, dtype: Any = None) -> Any:
        return _tf1_zero_state(self, batch_size, dtype or self.compute_dtype)

    def _call_cell(self, inputs: Any, states: Any, training: Any) -> Any:
        accepts = getattr(self.cell, "_call_has_training_arg", True)
        inner = self._masks_for_step(inputs, training).get("inner") if _needs_masks(self.cell) else None
        _set_masks(self.cell, inner)
        try:
            return self.cell(inputs, states, training=training) if accepts else self.cell(inputs, states)
        finally:
            _set_masks(self.cell, None)  # nothing is left on the wrapped cells after a step

    def _masks_for_step(self, inputs: Any, training: Any) -> Dict[str, Any]:
        """This sequence's masks: drawn by the loop before it ran (or now, in a hand-written eager loop)."""
        if training is None or training is False:
            return {}
        masks = getattr(self, "_dropout_mask", None)
        if masks is None:
            if not tf.executing_eagerly():
                raise RuntimeError(
                    f"{type(self).__name__} {self.name!r} needs its per-sequence dropout masks, which the loop "
                    "draws before it runs, and this loop did not. Run the cell in `ku.dynamic_rnn`, "
                    "`ku.static_rnn`, `ku.DynamicUnroll`, `ku.StaticUnroll` or `keras.layers.RNN` (as the cell, "
                    "or inside `MultiRNNCell`), or call `cell.get_dropout_mask(first_inputs)` before your own "
                    f"loop. Received: training={training!r}"
                )
            masks = self.get_dropout_mask(inputs)  # eager, by hand: one mask until `reset_dropout_mask()`
        return masks or {}

    # Keras' per-sequence dropout protocol (`keras.layers.RNN` and the package's loops call these).
    def _create_dropout_mask(self, step_input: Any, dropout_rate: Any = None) -> Any:
        """This sequence's masks (the wrapper's own and those of the cells it wraps), as a dict of tensors."""
        del dropout_rate  # each DropoutWrapper has its own keep probabilities
        masks = self._draw_own_masks(step_input)
        inner = _draw_masks(self.cell, step_input)
        if inner:
            masks["inner"] = inner
        return masks or None

    def get_dropout_mask(self, step_input: Any) -> Any:
        if getattr(self, "_dropout_mask", None) is None and self.dropout > 0:
            self._dropout_mask = self._create_dropout_mask(step_input)
        return getattr(self, "_dropout_mask", None)

    def _draw_own_masks(self, step_input: Any) -> Dict[str, Any]:
        return {}

    def get_recurrent_dropout_mask(self, step_input: Any) -> Any:
        return None

    def reset_dropout_mask(self) -> None:
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        self._recurrent_dropout_mask = None

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell)}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "_Wrapper":
        config = dict(config)
        config["cell"] = keras.saving.deserialize_keras_object(config["cell"], custom_objects=custom_objects)
        return cls(**config)


def _keep_prob(value: Any, name: str) -> float:
    if isinstance(value, (tf.Tensor, tf.Variable)) or hasattr(value, "dtype") and not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a Python float in (0, 1]. TF1 code fed a placeholder to switch dropout off at "
            "test time; in Keras dropout is active only while training (`training=True`, e.g. in `fit`), so "
            f"give the training value as a float. Received: {name}={value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in (0, 1]. Received: {name}={value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(
            f"`{name}` must be in (0, 1] (the probability of keeping a unit; 1 keeps all). Received: {name}={value}"
        )
    return float(value)


def _state_filter(cell: Any) -> List[bool]:
    """Which of the cell's flat (Keras-order) states TF1's `DropoutWrapper` drops: an LSTM's `h`, not its `c`."""
    if lstm_like(cell):
        return [True, False]
    if isinstance(cell, keras.layers.StackedRNNCells):
        return [flag for sub in cell.cells for flag in _state_filter(sub)]
    if isinstance(cell, _Wrapper):
        return _state_filter(cell.cell)
    return [True] * len(tf.nest.flatten(cell.state_size))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropoutWrapper(_Wrapper):
    """TF1's `DropoutWrapper`: dropout on a cell's inputs, outputs and state, while training.

    Each kept unit is scaled by `1 / keep_prob` (so the expected value is unchanged), as `tf.nn.dropout`.

    - `variational_recurrent=False` (TF1's default): a new mask at every time step, for each of the input,
      the output and the new state.
    - `variational_recurrent=True` (Gal & Ghahramani): one mask per sequence for each of them, reused at
      every step. TF1 drew one `(1, size)` mask per run, shared by the whole batch; here each row (each
      sequence) gets its own, as Keras' `dropout`/`recurrent_dropout` do.
    - The state mask drops an LSTM's `h` and leaves its `c` alone (TF1's default state filter), and drops
      every state of other cells; in a stack, each layer's state is filtered this way.
    - Only while training (`training=True`, e.g. in `model.fit`); at inference the wrapper is the identity.
      TF1 had no such switch (code fed `keep_prob=1.0` at test time); a keep probability of 1 is always the
      identity.

    TF1's random numbers cannot be matched; the semantics above are what `tests/test_tf1_cells.py` checks.

    Args:
        cell: The RNN cell to wrap (not an RNN layer).
        input_keep_prob: Float in (0, 1], the probability of keeping each input unit. Default: `1.0`.
        output_keep_prob: Float in (0, 1], for each output unit. Default: `1.0`.
        state_keep_prob: Float in (0, 1], for each unit of the new state (see the filter above).
            Default: `1.0`.
        variational_recurrent: Boolean, one mask per sequence instead of one per step. Default: `False`.
        seed: Optional integer seed.
        input_size: Accepted for TF1 compatibility (TF1 needed it for variational masks); ignored.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `(batch, features)`. states: the wrapped cell's states. training: Python boolean.

    Raises:
        ValueError: A keep probability outside (0, 1].
        TypeError: A keep probability given as a tensor (TF1's placeholder idiom), or `cell` not a cell.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.DropoutWrapper(ku.tf1.BasicLSTMCell(5), input_keep_prob=0.5, seed=1)
    >>> x = np.ones((4, 6, 3), "float32")
    >>> outputs, state = ku.dynamic_rnn(cell, x, training=True)    # dropout on
    >>> outputs, state = ku.dynamic_rnn(cell, x)                   # inference: identity
    >>> tuple(outputs.shape)
    (4, 6, 5)
    """

    def __init__(
        self,
        cell: Any,
        input_keep_prob: float = 1.0,
        output_keep_prob: float = 1.0,
        state_keep_prob: float = 1.0,
        variational_recurrent: bool = False,
        seed: Optional[int] = None,
        input_size: Any = None,
        **kwargs: Any,
    ) -> None:
        del input_size  # TF1 compatibility: the sizes are known when the cell is built
        super().__init__(cell, **kwargs)
        self.input_keep_prob = _keep_prob(input_keep_prob, "input_keep_prob")
        self.output_keep_prob = _keep_prob(output_keep_prob, "output_keep_prob")
        self.state_keep_prob = _keep_prob(state_keep_prob, "state_keep_prob")
        self.variational_recurrent = _bool(variational_recurrent, "variational_recurrent")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _active(self) -> bool:
        return min(self.input_keep_prob, self.output_keep_prob, self.state_keep_prob) < 1.0

    def _own_masks(self) -> bool:
        return self.variational_recurrent and self._active()

    def _draw_own_masks(self, step_input: Any) -> Dict[str, Any]:
        """One mask per sequence (and row) for the input, the output and each dropped state."""
        if not self._own_masks():
            return {}
        batch, dtype = tf.shape(step_input)[0], step_input.dtype

        def mask(size: int, keep: float) -> tf.Tensor:
            ones = tf.ones(tf.stack([batch, int(size)]), dtype)
            return keras.random.dropout(ones, rate=1.0 - keep, seed=self.seed_generator)

        masks: Dict[str, Any] = {}
        if self.input_keep_prob < 1.0:
            masks["input"] = mask(int(step_input.shape[-1]), self.input_keep_prob)
        if self.output_keep_prob < 1.0:
            masks["output"] = mask(self.output_size, self.output_keep_prob)
        if self.state_keep_prob < 1.0:
            sizes = tf.nest.flatten(self.cell.state_size)
            for index, (size, drop) in enumerate(zip(sizes, _state_filter(self.cell))):
                if drop:
                    masks[f"state{index}"] = mask(size, self.state_keep_prob)
        return masks

    def _drop(self, x: tf.Tensor, keep: float, mask: Optional[tf.Tensor]) -> tf.Tensor:
        if self.variational_recurrent:
            return x * mask
        return keras.random.dropout(x, rate=1.0 - keep, seed=self.seed_generator)  # a new mask every step

    def _apply(self, inputs: Any, states: Any, masks: Dict[str, Any]) -> Any:
        if self.input_keep_prob < 1.0:
            inputs = self._drop(inputs, self.input_keep_prob, masks.get("input"))
        output, new_states = self._call_cell(inputs, states, True)
        if self.state_keep_prob < 1.0:
            flat = tf.nest.flatten(new_states)
            dropped = [
                self._drop(s, self.state_keep_prob, masks.get(f"state{i}")) if drop else s
                for i, (s, drop) in enumerate(zip(flat, _state_filter(self.cell)))
            ]
            new_states = tf.nest.pack_sequence_as(new_states, dropped)
        if self.output_keep_prob < 1.0:
            output = self._drop(output, self.output_keep_prob, masks.get("output"))
        return output, new_states

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        if isinstance(training, tf.Tensor) and tf.executing_eagerly():
            training = bool(training.numpy())
        if not self._active() or training is None or training is False:
            return self._call_cell(inputs, states, training)
        masks = self._masks_for_step(inputs, training) if self._own_masks() else {}
        if isinstance(training, tf.Tensor):  # a symbolic flag: choose in the graph
            dropped = self._apply(inputs, states, masks)
            plain = self._call_cell(inputs, states, False)
            return tf.nest.map_structure(lambda a, b: tf.where(training, a, b), dropped, plain)
        return self._apply(inputs, states, masks)

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "input_keep_prob": self.input_keep_prob,
            "output_keep_prob": self.output_keep_prob,
            "state_keep_prob": self.state_keep_prob,
            "variational_recurrent": self.variational_recurrent,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OutputProjectionWrapper(_Wrapper):
    """TF1's `OutputProjectionWrapper`: `output = activation(cell_output W + b)`; the state is the cell's.

    The projection's weights are the attributes `projection_kernel (cell_units, output_size)` and
    `projection_bias (output_size,)`, named `kernel` and `bias` (TF1's variables
    `output_projection_wrapper/kernel` and `/bias`, `ku.load_tf1_weights` fills them). Initialized as TF1:
    glorot-uniform kernel, zero bias. TF1 projected each step's output inside the loop; projecting all
    outputs after the loop with a `Dense` layer gives the same numbers (and is what Keras code does).

    Args:
        cell: The RNN cell to wrap.
        output_size: Positive integer, the projected size.
        activation: Optional activation of the projection. Default: `None` (linear).
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.OutputProjectionWrapper(ku.tf1.BasicRNNCell(100), output_size=1)
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 20, 1), "float32"))
    >>> tuple(outputs.shape), tuple(state.shape)          # projected outputs, the cell's own state
    ((2, 20, 1), (2, 100))
    """

    def __init__(self, cell: Any, output_size: int, activation: Any = None, **kwargs: Any) -> None:
        super().__init__(cell, **kwargs)
        self.projection_size = check_units(output_size, "output_size")
        self.activation = keras.activations.get(activation)

    @property
    def output_size(self) -> int:
        return self.projection_size

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        cell_units = _output_size(self.cell)
        self.projection_kernel = self.add_weight(
            shape=(cell_units, self.projection_size), name="kernel", initializer="glorot_uniform"
        )
        self.projection_bias = self.add_weight(shape=(self.projection_size,), name="bias", initializer="zeros")

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        output, new_states = self._call_cell(inputs, states, training)
        return self.activation(tf.matmul(output, self.projection_kernel) + self.projection_bias), new_states

    def get_config(self) -> Dict[str, Any]:
        return {
            **super().get_config(),
            "output_size": self.projection_size,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualWrapper(_Wrapper):
    """TF1's `ResidualWrapper`: `output = inputs + cell_output` (a residual connection); the state is the cell's.

    The input and the cell's output must have the same size (checked when the cell is built).

    Args:
        cell: The RNN cell to wrap.
        **kwargs: Base layer arguments.

    Raises:
        ValueError: When built for inputs whose size differs from the cell's output size.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.ResidualWrapper(ku.tf1.GRUCell(3))
    >>> outputs, state = ku.dynamic_rnn(cell, np.ones((2, 4, 3), "float32"))   # 3 features = 3 units
    >>> tuple(outputs.shape)
    (2, 4, 3)
    """

    def build(self, input_shape: Any) -> None:
        features, units = int(input_shape[-1]), _output_size(self.cell)
        if features != units:
            raise ValueError(
                "ResidualWrapper adds the input to the cell's output, so they must have the same size: the "
                f"input has {features} features and the cell outputs {units} units. Project the input first or "
                f"use a cell with {features} units. Received: input features={features}, cell output_size={units}"
            )
        super().build(input_shape)

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        output, new_states = self._call_cell(inputs, states, training)
        return inputs + output, new_states


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DeviceWrapper(_Wrapper):
    """TF1's `DeviceWrapper`: runs the wrapped cell's step on `device` (e.g. `"/CPU:0"`, `"/GPU:1"`).

    The placement applies to the step's ops; the weights live where Keras created them (use
    `with tf.device(...)` around the model's construction to place those).

    Args:
        cell: The RNN cell to wrap.
        device: A device string, as `tf.device` takes it.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np
    >>> import keras_unroll as ku
    >>> cell = ku.tf1.DeviceWrapper(ku.tf1.BasicRNNCell(4), "/CPU:0")
    >>> tuple(ku.dynamic_rnn(cell, np.ones((2, 3, 1), "float32"))[0].shape)
    (2, 3, 4)
    """

    def __init__(self, cell: Any, device: str, **kwargs: Any) -> None:
        super().__init__(cell, **kwargs)
        if not isinstance(device, str):
            raise TypeError(f"`device` must be a device string such as '/CPU:0'. Received: device={device!r}")
        self.device = device

    def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
        with tf.device(self.device):
            return self._call_cell(inputs, states, training)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "device": self.device}


# ------------------------------------------------------------------------------- state structures


# ------------------------------------------------------------------------------ TF1's functions
# `ku.tf1` stands in for `tf.contrib.rnn` / `tf.nn.rnn_cell` as a module: `from keras_unroll import tf1 as rnn`
# then `rnn.static_rnn(rnn.BasicLSTMCell(n), steps, dtype=tf.float32)`, as TF1 scripts wrote it.
from keras_unroll.bidirectional import bidirectional_dynamic_rnn, static_bidirectional_rnn  # noqa: E402
from keras_unroll.functional import dynamic_rnn, static_rnn  # noqa: E402
from keras_unroll.raw import raw_rnn  # noqa: E402

__all__ += ["bidirectional_dynamic_rnn", "dynamic_rnn", "raw_rnn", "static_bidirectional_rnn", "static_rnn"]
