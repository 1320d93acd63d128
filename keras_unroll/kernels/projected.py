"""The hoisted step of the static loop: the input projection of every gate done once, outside the steps.

Keras' cells compute `x_t W` inside every step. Here `x W + b` (LSTM's and SimpleRNN's bias, GRU's input
bias) is computed outside the steps (`recurrence.project_steps`), and the Python-unrolled loop runs
`ProjectedCell`, the recurrent half of the cell (`cells.forward_step`, the same maths as the fused while
loop's), over the projected inputs with the generic step. Small steps are projected a few steps per
`[k·B, F] × [F, gH]` product (`chunk`), so that on a multi-core CPU the next chunk's product runs beside
the recurrence instead of before it (figures in docs/performance.md); large steps take one product for the
whole sequence. In the unrolled form there is no O(T²) trap, and plain autodiff measured faster than a
hand-written gradient, so only the projection is hoisted.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import tensorflow as tf

from keras_unroll import step as step_lib
from keras_unroll.kernels import cells, recurrence


def kind(cell: Any) -> Optional[str]:
    """The family (`"simple_rnn"`, `"lstm"`, `"gru"`) if the input projection of `cell` can be hoisted, else
    None: a cell of the fused recurrence's families (`cells.mode_of`); LSTM/GRU with one input product
    (`implementation=2`) and no recurrent dropout."""
    mode = cells.mode_of(cell)
    if mode is None:
        return None
    if mode.family == "simple_rnn":
        return mode.family
    if getattr(cell, "implementation", 2) != 2 or cell.recurrent_dropout > 0:
        return None
    return cells.gated_family(cell)


class ProjectedCell:
    """The recurrent half of a cell, fed with inputs already multiplied by the kernel."""

    _call_has_training_arg = False

    def __init__(self, cell: Any, mode: cells.Mode, weights: cells.Weights) -> None:
        self.mode, self.weights = mode, weights
        self.state_size = cell.state_size
        self.output_size = cell.units

    def __call__(self, xk: tf.Tensor, states: Any) -> Tuple[tf.Tensor, Any]:
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        c = states[1] if self.mode.has_carry else None
        h, c, _ = cells.forward_step(self.mode, xk, states[0], c, self.weights)
        return h, ([h, c] if self.mode.has_carry else [h])


def project_cell(
    cell: Any, prepared: step_lib.Prepared, masks: step_lib.DropoutMasks, chunk: int = 0
) -> Tuple[ProjectedCell, List[tf.Tensor]]:
    """Hoists `x W + b` out of the steps, `chunk` steps per product (0: one product).

    Returns the recurrent half and its T inputs, one `(B, G·H)` tensor per step.
    """
    mode = cells.mode_of(cell)
    if mode is None:
        raise ValueError(f"`cell` cannot take the hoisted step (see `cells.mode_of`). Received: cell={cell!r}")
    t = recurrence.cell_tensors(cell, mode, prepared, masks)
    weights = cells.weights(mode, t["recurrent"], t.get("rbias"), t.get("rec_mask"))
    return ProjectedCell(cell, mode, weights), recurrence.project_steps(t, prepared, chunk)
