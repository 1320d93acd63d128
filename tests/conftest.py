"""Test-wide settings: quiet TensorFlow, deterministic seeds, the repo root for subprocess tests."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The planner's timed trial (plan.Tuning.timed_trial) picks kernels by speed: off for reproducible tests;
# tests/test_timed_trial.py turns it on where it is under test.
os.environ.setdefault("KERAS_UNROLL_TIMED_TRIAL", "0")
# The compile tier (plan.Tuning.compile_min_steps) keeps short sequences uncompiled by default: the suite's tiny
# shapes compile from the first call, so that every test covers the compiled kernels (tests/test_first_minute.py
# tests the tier itself).
os.environ.setdefault("KERAS_UNROLL_COMPILE_MIN_STEPS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_dtype_policy("float32")
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def subprocess_env():
    """Environment for a child Python: quiet TF, the repo importable."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
