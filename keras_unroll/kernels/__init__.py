"""Kernels: fused recurrences and hoisted steps on dense tensors (no dispatch; see `keras_unroll.plan`)."""
