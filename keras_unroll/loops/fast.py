"""Fast paths: the same unroll with the input projection hoisted out of the loop and a fused backward pass.

What `make_step` does per time step for a `SimpleRNNCell` (and so for `BasicRNNCell`) is

    h_t = activation(x_t W + b + h_{t-1} U)

The fast path computes `xw = x W + b` for all steps at once (one `[T·B, F] × [F, H]` product) and runs only
`h_t = activation(xw_t + h_{t-1} U)` in the loop. Its gradient is written by hand (`tf.custom_gradient`
over the whole recurrence), because plain autodiff of a loop that reads a hoisted, differentiable tensor
costs O(T²) in a `tf.while_loop` (measured: 1.8× slower than Keras at T=1000). The backward loop only does
`dh_{t-1} = dz_t Uᵀ` per step; `dU = Σ h_{t-1}ᵀ dz_t` is one big matrix product after the loop, and `dW`,
`db`, `dx` come from autodiff of the hoisted product.

- Masks and `sequence_length` keep their semantics: an invalid step copies the state through (so its
  gradient passes through unchanged), and the emitted/last outputs are derived after the loop from the
  state sequence (after a row's first valid step, the state *is* its last valid output).
- Dropout uses the cell's own per-sequence masks (`_core.dropout_masks`), exactly as the generic step.
- Activations: `tanh` (default), `sigmoid`, `relu` and `linear` take the fast path; their derivative is
  computed from the output (`1-h²`, `h(1-h)`, `h>0`, `1`). Any other activation takes the generic path.
- In the static (Python-unrolled) loop the projection is hoisted but the gradient is plain autodiff
  (`STATIC_CUSTOM_GRADIENT`, measured faster there: no O(T²) trap without a while loop).
- `LSTMCell`/`GRUCell` (implementation 2, no recurrent dropout): the input projection is hoisted in the
  static (Python) loop only, where autodiff has no O(T²) trap; their while loop stays generic.
- Every other cell, and any subclass that overrides `call`, takes the generic path.

`jit_compile` (XLA) wraps a whole loop in its own `tf.function(jit_compile=True)` (`run_compiled`), so it
is compiled even inside `model.fit` on CPU, where Keras' `jit_compile="auto"` resolves to `False`.

Tests force the generic path with `generic_only()` to compare both on the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import keras
import tensorflow as tf

from keras_unroll.loops import _core

#: When `True`, every loop takes the generic path (`_core.make_step`). Set it with `generic_only()`.
GENERIC_ONLY = False


@contextlib.contextmanager
def generic_only() -> Iterator[None]:
    """Within this block every loop (traced in it) uses the generic step: for tests and comparisons."""
    global GENERIC_ONLY
    previous, GENERIC_ONLY = GENERIC_ONLY, True
    try:
        yield
    finally:
        GENERIC_ONLY = previous


# ----------------------------------------------------------------------------------- eligibility
def _derivatives() -> Dict[Any, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """activation -> `(h, g) -> g * activation'(z)`, from the output `h = activation(z)`, in one op each
    (measured: the backward loop is op-bound; `1 - h*h` and a product are three ops, `TanhGrad` one)."""
    return {
        keras.activations.tanh: lambda h, g: tf.raw_ops.TanhGrad(y=h, dy=g),
        keras.activations.sigmoid: lambda h, g: tf.raw_ops.SigmoidGrad(y=h, dy=g),
        keras.activations.relu: lambda h, g: tf.raw_ops.ReluGrad(gradients=g, features=h),
        keras.activations.linear: lambda h, g: g,
    }


def _python_training(training: Any) -> Optional[bool]:
    """`training` as a Python bool (or None); raises `TypeError` for a symbolic tensor."""
    if training is None or isinstance(training, bool):
        return training
    if isinstance(training, tf.Tensor) and tf.executing_eagerly():
        return bool(training.numpy())
    if isinstance(training, tf.Tensor):
        raise TypeError("symbolic training flag")
    return bool(training)


def simple_rnn_derivative(cell: Any, training: Any) -> Optional[Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """`(h, g) -> g * activation'` (from the output `h`) if `cell` can take the fused path, else None."""
    if GENERIC_ONLY or not isinstance(cell, keras.layers.SimpleRNNCell):
        return None
    if type(cell).call is not keras.layers.SimpleRNNCell.call:
        return None  # a subclass with its own maths
    try:
        _python_training(training)
    except TypeError:
        return None
    return _derivatives().get(cell.activation)


def gated_kind(cell: Any, training: Any) -> Optional[str]:
    """`"lstm"` or `"gru"` if the input projection of `cell` can be hoisted, else None."""
    if GENERIC_ONLY:
        return None
    for kind, base in (("lstm", keras.layers.LSTMCell), ("gru", keras.layers.GRUCell)):
        if isinstance(cell, base) and type(cell).call is base.call:
            if getattr(cell, "implementation", 2) != 2 or cell.recurrent_dropout > 0:
                return None
            try:
                _python_training(training)
            except TypeError:
                return None
            return kind
    return None


# ------------------------------------------------------------------------------ the fused recurrence
def _as_tensor(variable: Any, dtype: Any) -> tf.Tensor:
    value = tf.convert_to_tensor(variable)
    return tf.cast(value, dtype) if value.dtype != dtype else value


#: How the loops read step t of a (T, ...) tensor: "ta" (a TensorArray unstacked before the loop) or
#: "slice" (`tf.gather` on the tensor itself, no copy up front). The reads are never differentiated
#: (the gradient is hand-written), so neither has the O(T²) trap. Measured (docs/performance.md): no
#: difference beyond noise at 256·50·64·256, 32·28·28·128 and 32·1000·8·32, with and without XLA.
READ_MODE = "ta"


def _reader(tensor: tf.Tensor, steps: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    if READ_MODE == "slice":
        return lambda t: tf.gather(tensor, t)
    ta = tf.TensorArray(tensor.dtype, size=steps, element_shape=tensor.shape[1:]).unstack(tensor)
    return ta.read


def _recurrence(
    xw: tf.Tensor,
    h0: tf.Tensor,
    kernel: tf.Tensor,
    *,
    activation: Callable[[tf.Tensor], tf.Tensor],
    derivative: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    rec_mask: Optional[tf.Tensor],
    valid: Optional[tf.Tensor],
    stop: Optional[tf.Tensor],
    unrolled: bool,
    num_steps: Optional[int],
) -> Tuple[tf.Tensor, tf.Tensor]:
    """`hs[t] = where(valid_t, act(xw_t + (h_{t-1}·m) U), h_{t-1})` with a hand-written gradient.

    Returns `(hs (T, B, H), h_last)`. With an early `stop` (a scalar tensor <= T; only in the while loop),
    `hs[t >= stop]` is zero and `h_last` is the state after step `stop - 1`.
    """
    dtype = xw.dtype

    def forward_step(xw_t, valid_t, h):
        h_in = h * rec_mask if rec_mask is not None else h
        a = activation(xw_t + tf.matmul(h_in, kernel))
        return a if valid_t is None else tf.where(valid_t[:, None], a, h)

    def backward_step(h_t, valid_t, g):
        """g = dL/dh_t (all paths). Returns (dz_t, dL/dh_{t-1})."""
        dz = derivative(h_t, g)
        if valid_t is not None:
            dz = tf.where(valid_t[:, None], dz, tf.zeros_like(dz))
        d_prev = tf.matmul(dz, kernel, transpose_b=True)
        if rec_mask is not None:
            d_prev = d_prev * rec_mask
        if valid_t is not None:
            d_prev = d_prev + tf.where(valid_t[:, None], tf.zeros_like(g), g)
        return dz, d_prev

    @tf.custom_gradient
    def run(xw, h0, kernel_in):
        del kernel_in  # the closure's `kernel` is the same tensor
        if unrolled:
            xs = tf.unstack(xw, num=num_steps)
            vs = tf.unstack(valid, num=num_steps) if valid is not None else [None] * num_steps
            h, states = h0, []
            for xw_t, v_t in zip(xs, vs):
                h = forward_step(xw_t, v_t, h)
                states.append(h)
            hs, h_last = tf.stack(states), h
        else:
            steps = tf.shape(xw)[0]
            read_xw = _reader(xw, steps)
            read_v = None if valid is None else _reader(valid, steps)
            hs_ta = tf.TensorArray(dtype, size=steps, element_shape=h0.shape)

            def body(t, h, hs_ta):
                h = forward_step(read_xw(t), None if read_v is None else read_v(t), h)
                return t + 1, h, hs_ta.write(t, h)

            limit = steps if stop is None else stop
            t, h_last, hs_ta = tf.while_loop(
                lambda t, *_: t < limit, body, (tf.constant(0), h0, hs_ta), maximum_iterations=steps
            )
            if stop is not None:
                zeros = tf.zeros_like(h0)
                _, hs_ta = tf.while_loop(
                    lambda t, _: t < steps, lambda t, ta: (t + 1, ta.write(t, zeros)), (t, hs_ta),
                    maximum_iterations=steps,
                )
            hs = hs_ta.stack()
            hs.set_shape(xw.shape[:1].concatenate(h0.shape))

        def grad(d_hs, d_last):
            # d_hs is None when only the last output/state is used (return_sequences=False).
            g = tf.zeros_like(h0) if d_last is None else d_last
            if unrolled:
                d_list = [None] * num_steps if d_hs is None else tf.unstack(d_hs, num=num_steps)
                dzs = [None] * num_steps
                for t in reversed(range(num_steps)):
                    g = g if d_list[t] is None else g + d_list[t]
                    dzs[t], g = backward_step(states[t], vs[t], g)
                dz_all = tf.stack(dzs)
            else:
                steps = tf.shape(xw)[0]
                read_h = _reader(hs, steps)
                read_d = None if d_hs is None else _reader(d_hs, steps)
                dz_ta = tf.TensorArray(dtype, size=steps, element_shape=h0.shape)
                # New readers: a forward TensorArray must not cross into the gradient (XLA cannot pass it).
                read_v_back = None if valid is None else _reader(valid, steps)
                first = (steps if stop is None else stop) - 1
                if stop is not None:
                    zeros = tf.zeros_like(h0)
                    _, dz_ta = tf.while_loop(
                        lambda t, _: t < steps, lambda t, ta: (t + 1, ta.write(t, zeros)), (first + 1, dz_ta),
                        maximum_iterations=steps,
                    )

                def back_body(t, g, dz_ta):
                    v_t = None if read_v_back is None else read_v_back(t)
                    dz, g = backward_step(read_h(t), v_t, g if read_d is None else g + read_d(t))
                    return t - 1, g, dz_ta.write(t, dz)

                _, g, dz_ta = tf.while_loop(
                    lambda t, *_: t >= 0, back_body, (first, g, dz_ta), maximum_iterations=steps
                )
                dz_all = dz_ta.stack()
            units = tf.shape(h0)[-1]
            h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
            if rec_mask is not None:
                h_prev = h_prev * rec_mask
            d_kernel = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(dz_all, [-1, units]), transpose_a=True)
            return dz_all, g, d_kernel

        return (hs, h_last), grad

    if unrolled and not STATIC_CUSTOM_GRADIENT:
        # Python-unrolled: plain autodiff has no O(T^2) trap here; only the projection is hoisted.
        vs = tf.unstack(valid, num=num_steps) if valid is not None else [None] * num_steps
        h, states = h0, []
        for xw_t, v_t in zip(tf.unstack(xw, num=num_steps), vs):
            h = forward_step(xw_t, v_t, h)
            states.append(h)
        return tf.stack(states), h
    return run(xw, h0, kernel)


#: The Python-unrolled loop hoists the projection but keeps plain autodiff: measured at 32·28·28·128,
#: 64·100·16·64 and 256·50·64·256, the hand-written backward pass was 10-20 % slower there (autodiff lets
#: each step's `dU` product run on the other core while the `dh` chain goes on; a Python-unrolled graph has
#: no O(T²) trap). `True` runs the hand-written gradient in the static loop too (kept for re-measuring).
STATIC_CUSTOM_GRADIENT = False


def simple_rnn_loop(
    cell: Any,
    prepared: _core.Prepared,
    *,
    training: Any = None,
    return_all_outputs: bool = True,
    unrolled: bool = False,
) -> Tuple[Optional[tf.Tensor], tf.Tensor, List[tf.Tensor]]:
    """The fused SimpleRNN unroll. Returns `(outputs (T, B, H) or None, last_output, [final_state])`.

    `unrolled=True` writes the loop out in Python (for `StaticUnroll`), else it is a `tf.while_loop`.
    """
    derivative = simple_rnn_derivative(cell, training)
    if derivative is None:
        raise ValueError(f"`cell` cannot take the fused SimpleRNN path. Received: cell={cell!r}")
    training = _python_training(training)
    inputs = prepared.inputs
    dtype = inputs.dtype
    steps = prepared.num_steps if prepared.num_steps is not None else tf.shape(inputs)[0]
    with _core.dropout_masks(cell, prepared, training):
        dp_mask = rec_mask = None
        if training:
            dp_mask = cell.get_dropout_mask(inputs[0])
            rec_mask = cell.get_recurrent_dropout_mask(prepared.initial_state[0])
    if dp_mask is not None:
        inputs = inputs * dp_mask
    features = prepared.features
    xw = tf.matmul(tf.reshape(inputs, [-1, features]), _as_tensor(cell.kernel, dtype))
    if cell.bias is not None:
        xw = xw + _as_tensor(cell.bias, dtype)
    xw = tf.reshape(xw, tf.concat([tf.shape(inputs)[:2], [cell.units]], axis=0))
    xw.set_shape(inputs.shape[:2].concatenate([cell.units]))
    stop = None
    if prepared.max_length is not None and not unrolled:
        stop = tf.minimum(steps, prepared.max_length)
    hs, h_last = _recurrence(
        xw,
        prepared.initial_state[0],
        _as_tensor(cell.recurrent_kernel, dtype),
        activation=cell.activation,
        derivative=derivative,
        rec_mask=rec_mask,
        valid=prepared.valid,
        stop=stop,
        unrolled=unrolled,
        num_steps=prepared.num_steps,
    )
    valid = prepared.valid
    if valid is None:
        return (hs if return_all_outputs else None), h_last, [h_last]
    seen = tf.cumsum(tf.cast(valid, tf.int32), axis=0) > 0  # (T, B): a valid step happened at or before t
    last = tf.where(tf.reduce_any(valid, axis=0)[:, None], h_last, tf.zeros_like(h_last))
    outputs = None
    if return_all_outputs:
        keep = valid if prepared.zero_output else seen
        outputs = tf.where(keep[:, :, None], hs, tf.zeros_like(hs))
    return outputs, last, [h_last]


# ------------------------------------------------------------------------ hoisted LSTM / GRU (static)
class _ProjectedCell:
    """The recurrent half of an `LSTMCell`/`GRUCell`, fed with inputs already multiplied by the kernel."""

    _call_has_training_arg = False

    def __init__(self, cell: Any, kind: str, dtype: Any) -> None:
        self.kind = kind
        self.state_size = cell.state_size
        self.output_size = cell.units
        self.units = cell.units
        self.activation = cell.activation
        self.recurrent_activation = cell.recurrent_activation
        self.recurrent_kernel = _as_tensor(cell.recurrent_kernel, dtype)
        self.bias = _as_tensor(cell.bias, dtype) if cell.use_bias else None
        self.reset_after = getattr(cell, "reset_after", False)

    def __call__(self, xk: tf.Tensor, states: Any) -> Tuple[tf.Tensor, Any]:
        if self.kind == "lstm":
            h_tm1, c_tm1 = states
            z = xk + tf.matmul(h_tm1, self.recurrent_kernel)
            if self.bias is not None:
                z = z + self.bias
            z0, z1, z2, z3 = tf.split(z, 4, axis=1)
            i = self.recurrent_activation(z0)
            f = self.recurrent_activation(z1)
            c = f * c_tm1 + i * self.activation(z2)
            o = self.recurrent_activation(z3)
            h = o * self.activation(c)
            return h, [h, c]
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        units = self.units
        x_z, x_r, x_h = tf.split(xk, 3, axis=-1)
        if self.reset_after:
            inner = tf.matmul(h_tm1, self.recurrent_kernel)
            if self.bias is not None:
                inner = inner + self.bias[1]
        else:
            inner = tf.matmul(h_tm1, self.recurrent_kernel[:, : 2 * units])
        z = self.recurrent_activation(x_z + inner[:, :units])
        r = self.recurrent_activation(x_r + inner[:, units : 2 * units])
        if self.reset_after:
            recurrent_h = r * inner[:, 2 * units :]
        else:
            recurrent_h = tf.matmul(r * h_tm1, self.recurrent_kernel[:, 2 * units :])
        hh = self.activation(x_h + recurrent_h)
        h = z * h_tm1 + (1 - z) * hh
        return h, [h]


def project_gated(cell: Any, kind: str, prepared: _core.Prepared, training: Any) -> Tuple[Any, _core.Prepared]:
    """Hoists `x W` (and GRU's input bias) out of the loop: returns the recurrent half and the new inputs."""
    training = _python_training(training)
    inputs = prepared.inputs
    dtype = inputs.dtype
    with _core.dropout_masks(cell, prepared, training):
        dp_mask = cell.get_dropout_mask(inputs[0]) if training and cell.dropout > 0 else None
    if dp_mask is not None:
        inputs = inputs * dp_mask
    kernel = _as_tensor(cell.kernel, dtype)
    width = kernel.shape[-1]
    xk = tf.matmul(tf.reshape(inputs, [-1, prepared.features]), kernel)
    if kind == "gru" and cell.use_bias:
        bias = _as_tensor(cell.bias, dtype)
        xk = xk + (bias[0] if cell.reset_after else bias)
    xk = tf.reshape(xk, tf.concat([tf.shape(inputs)[:2], [width]], axis=0))
    xk.set_shape(inputs.shape[:2].concatenate([width]))
    projected = _ProjectedCell(cell, kind, dtype)
    return projected, dataclasses.replace(prepared, inputs=xk, features=width)


# ------------------------------------------------------------------------------------- dispatch
def static_fast_path(
    cell: Any, prepared: _core.Prepared, *, training: Any, return_all_outputs: bool
) -> Optional[tuple]:
    """The static loop's fast path for `cell`, or None when it takes the generic path."""
    if simple_rnn_derivative(cell, training) is not None:
        outputs, last, state = simple_rnn_loop(
            cell, prepared, training=training, return_all_outputs=return_all_outputs, unrolled=True
        )
        return (tf.unstack(outputs, num=prepared.num_steps) if outputs is not None else None), last, state
    kind = gated_kind(cell, training)
    if kind is not None:
        from keras_unroll.loops.static import static_loop

        projected, projected_prepared = project_gated(cell, kind, prepared, training)
        return static_loop(projected, projected_prepared, training=None, return_all_outputs=return_all_outputs)
    return None


def dynamic_fast_path(
    cell: Any, prepared: _core.Prepared, *, training: Any, return_all_outputs: bool
) -> Optional[tuple]:
    """The while loop's fast path for `cell`, or None when it takes the generic path."""
    if simple_rnn_derivative(cell, training) is not None:
        return simple_rnn_loop(cell, prepared, training=training, return_all_outputs=return_all_outputs)
    return None


def _warn_once(cell: Any, message: str) -> None:
    if not cell.__dict__.get("_keras_unroll_warned_jit"):
        cell.__dict__["_keras_unroll_warned_jit"] = True
        warnings.warn(message, stacklevel=4)


def run_compiled(loop: Callable[..., tuple], cell: Any, prepared: _core.Prepared, **options: Any) -> tuple:
    """Runs `loop(cell, prepared, **options)` XLA-compiled, in a `tf.function(jit_compile=True)` cached per cell.

    Its own compiled function makes XLA independent of the caller: eager calls, `model.fit` with the CPU
    default `jit_compile=False`, and `model.fit(jit_compile=True)` (where it is simply inlined).
    """
    if loop.__name__ == "dynamic_loop" and simple_rnn_derivative(cell, options.get("training")) is None:
        # TF cannot differentiate a compiled `tf.while_loop` from outside XLA (its gradient accumulators are
        # TensorLists, which may not cross the XLA boundary); only the fused loop, whose gradient is its own
        # loop, compiles alone. Other cells are compiled by `model.compile(jit_compile=True)` as a whole.
        _warn_once(
            cell,
            f"jit_compile=True: the while loop of {type(cell).__name__} cannot be XLA-compiled on its own "
            "(only the SimpleRNN family's fused loop can); it runs uncompiled. To compile it, compile the whole "
            "train step: `model.compile(..., jit_compile=True)`.",
        )
        from keras_unroll.loops.dynamic import run_dynamic

        return run_dynamic(cell, prepared, **options)
    try:
        options["training"] = _python_training(options.get("training"))
    except TypeError:  # a symbolic training flag cannot key a cache; run uncompiled
        return loop(cell, prepared, **options)
    key = (loop.__name__, GENERIC_ONLY, prepared.zero_output, prepared.num_steps, prepared.max_length is None)
    key += tuple(sorted(options.items()))
    cache = cell.__dict__.setdefault("_keras_unroll_compiled_fns", {})
    fn = cache.get(key)
    if fn is None:
        static = dict(zero_output=prepared.zero_output, num_steps=prepared.num_steps, features=prepared.features)

        def compiled(inputs, valid, initial_state, max_length, masks):
            rebuilt = _core.Prepared(
                inputs=inputs,
                valid=valid,
                initial_state=initial_state,
                batch_size=tf.shape(inputs)[1],
                max_length=max_length,
                **static,
            )
            for dropout_cell, (dp_mask, rec_mask) in zip(_dropout_cells(cell), masks or ()):
                # The loop's `dropout_masks` finds these and uses them instead of drawing new ones.
                dropout_cell._dropout_mask, dropout_cell._recurrent_dropout_mask = dp_mask, rec_mask
            try:
                return loop(cell, rebuilt, **options)
            finally:
                _core.reset_dropout(cell)

        fn = cache[key] = tf.function(compiled, jit_compile=True, autograph=False)
    masks = None
    if options.get("training"):
        # Drawn outside XLA, so a seed gives the same masks compiled or not (XLA's random bits differ).
        with _core.dropout_masks(cell, prepared, True):
            masks = [(c._dropout_mask, c._recurrent_dropout_mask) for c in _dropout_cells(cell)]
    return fn(prepared.inputs, prepared.valid, prepared.initial_state, prepared.max_length, masks)


def _dropout_cells(cell: Any) -> List[Any]:
    """The cells (in a stack too) that draw Keras dropout masks."""
    from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

    if isinstance(cell, keras.layers.StackedRNNCells):
        return [c for sub_cell in cell.cells for c in _dropout_cells(sub_cell)]
    return [cell] if isinstance(cell, DropoutRNNCell) else []
