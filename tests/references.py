"""Plain NumPy references that every loop and fast path is checked against."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def basic_rnn(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: Optional[np.ndarray] = None,
    *,
    initial_state: Optional[np.ndarray] = None,
    valid: Optional[np.ndarray] = None,
    zero_output: bool = False,
    go_backwards: bool = False,
    activation=np.tanh,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`h_t = act(x_t W + h_{t-1} U + b)` over a batch-major `x` (B, T, F), one step at a time, in float64.

    `valid` (B, T) bool: invalid steps copy the state and emit zeros (`zero_output`) or the last valid
    output. Returns `(outputs (B, T, H), last_valid_output (B, H), final_state (B, H))`, outputs in
    processing order (reversed with `go_backwards`, as Keras returns them).
    """
    x = np.asarray(x, np.float64)
    B, T, _ = x.shape
    H = recurrent_kernel.shape[0]
    if valid is None:
        valid = np.ones((B, T), bool)
    valid = np.asarray(valid, bool)
    if go_backwards:
        x, valid = x[:, ::-1], valid[:, ::-1]
    h = np.zeros((B, H)) if initial_state is None else np.asarray(initial_state, np.float64)
    b = np.zeros(H) if bias is None else bias
    last = np.zeros((B, H))
    outputs = np.zeros((B, T, H))
    for t in range(T):
        new_h = activation(x[:, t] @ kernel + h @ recurrent_kernel + b)
        v = valid[:, t][:, None]
        h = np.where(v, new_h, h)
        last = np.where(v, new_h, last)
        outputs[:, t] = np.where(v, new_h, 0.0 if zero_output else last)
    return outputs, last, h


def lengths_to_valid(lengths, num_steps: int) -> np.ndarray:
    """TF1's `sequence_length` as a (B, T) validity mask: `t < length`."""
    return np.arange(num_steps)[None, :] < np.asarray(lengths)[:, None]
