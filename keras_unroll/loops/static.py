"""Static unrolling: a Python `for` over the time steps, TF1's `static_rnn`.

The graph holds one copy of the step per time step, so it grows linearly with T and tracing costs seconds
at T≈1000 (docs/performance.md has the op counts); in exchange there is no loop machinery at all, which is
the fastest choice for short sequences. This module only iterates: what a step does, and which kernel
runs instead of the generic step, is decided by `keras_unroll.plan`.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import tensorflow as tf

from keras_unroll import step as step_lib


def static_loop(
    step: step_lib.StepFn,
    prepared: step_lib.Prepared,
    units: int,
    *,
    return_all_outputs: bool = True,
    step_inputs: Optional[List[tf.Tensor]] = None,
) -> Tuple[Optional[List[tf.Tensor]], tf.Tensor, step_lib.Nested]:
    """Runs `step` T times in Python. Returns `(per-step outputs or None, last_output, final_state)`.

    `step_inputs`: the T inputs of the steps when a kernel has made them already (else `prepared.inputs`
    is unstacked).
    """
    inputs = step_inputs if step_inputs is not None else tf.unstack(prepared.inputs, num=prepared.num_steps, axis=0)
    valid = tf.unstack(prepared.valid, num=prepared.num_steps, axis=0) if prepared.valid is not None else None
    state = prepared.initial_state
    last = step_lib.initial_last_output(units, prepared)
    outputs = []
    for t, x_t in enumerate(inputs):
        emitted, state, last = step(x_t, None if valid is None else valid[t], state, last)
        if return_all_outputs:
            outputs.append(emitted)
    return (outputs if return_all_outputs else None), last, state
