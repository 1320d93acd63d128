"""`keras-unroll devices`: TensorFlow's devices, their memory and the GPU settings, as a command.

Imported by `keras_unroll_cli` once the options are parsed (it imports TensorFlow); it reads the library
through its public functions (`keras_unroll.configure_gpus`), never the other way round.
"""

from __future__ import annotations

import argparse
import os
import sys

import tensorflow as tf

from keras_unroll._format import format_bytes
from keras_unroll.gpu import configure_gpus

_OPTIONS = (
    ("visible", "--visible"),
    ("memory_fraction", "--memory-fraction"),
    ("memory_limit_mb", "--memory-limit-mb"),
    ("memory_growth", "--memory-growth"),
)
_NOT_CONFIGURED = (
    "GPU settings: TensorFlow's defaults (every GPU visible, all of its memory allocated at start); "
    "--visible, --memory-fraction, --memory-limit-mb and --memory-growth change them."
)
_MEMORY_NA = (
    "n/a: TensorFlow counts memory here only with TF_CPU_ALLOCATOR_USE_BFC=true "
    "(e.g. `TF_CPU_ALLOCATOR_USE_BFC=true keras-unroll devices`)"
)


def _memory_info_text(device_name: str) -> str:
    try:
        info = tf.config.experimental.get_memory_info(device_name)
    except ValueError:  # e.g. "Memory statistics not tracked" on a device without BFC allocator
        return "n/a"
    counted = "CPU" not in device_name.upper() or os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() == "true"
    if not counted and not info["current"] and not info["peak"]:  # the CPU's default allocator counts nothing
        return "n/a"
    return f"current={format_bytes(info['current'])}, peak={format_bytes(info['peak'])}"


def _configure(args: argparse.Namespace) -> bool:
    """Applies the options through `configure_gpus`; False (after one line on stderr) if it refused them."""
    options = [getattr(args, argument) for argument, _ in _OPTIONS]
    if options == [None, None, None, False]:
        return True
    try:
        configure_gpus(*options)
    except (TypeError, ValueError, RuntimeError) as error:
        message = str(error)  # argparse checked the values; this is TensorFlow or the GPUs refusing
        for argument, flag in _OPTIONS:
            message = message.replace(f"`{argument}`", flag).replace(f"{argument}=", f"{flag}=")
        print(f"keras-unroll devices: error: {message}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Runs `keras-unroll devices` for parsed arguments; returns the exit code (2: settings refused)."""
    if not _configure(args):
        return 2
    print("Physical devices:")
    for device in tf.config.list_physical_devices():
        print(f"  {device.name} ({device.device_type})")
    print("Logical devices:")
    untracked = False
    for device in tf.config.list_logical_devices():
        memory = _memory_info_text(device.name)
        untracked = untracked or memory == "n/a"
        print(f"  {device.name} ({device.device_type}), memory: {memory}")
    if untracked:
        print(f"  memory {_MEMORY_NA}")
    report = configure_gpus.last_report
    print(_NOT_CONFIGURED if report is None else report)
    return 0
