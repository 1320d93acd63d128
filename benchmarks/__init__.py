"""Benchmarks for keras_unroll: `python -m benchmarks` (speed, `speed.py`), `python -m benchmarks memory` (memory).

They print tables of ratios measured side by side in one run and never gate CI (CI runs `--quick` only).
"""
