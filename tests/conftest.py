"""Test-wide settings: quiet TensorFlow, deterministic seeds, the repo root for subprocess tests.

Shared test vocabulary (the layers, unrolls, tolerances, comparison) lives in `tests/helpers.py`.
"""

import contextlib
import gc
import importlib.util
import mmap
import os
import pathlib
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The planner's timed trial (plan.Tuning.timed_trial) picks kernels by speed: off for reproducible tests;
# tests/test_timed_trial.py turns it on where it is under test.
os.environ.setdefault("KERAS_UNROLL_TIMED_TRIAL", "0")
# The compile tier (plan.Tuning.compile_min_steps) keeps short sequences uncompiled by default: the suite's tiny
# shapes compile from the first call, so that every test covers the compiled kernels (tests/test_first_minute.py
# tests the tier itself).
os.environ.setdefault("KERAS_UNROLL_COMPILE_MIN_STEPS", "0")
# The suite's cost is tracing and XLA compilation of tiny shapes, on 2 cores shared by 3 pytest-xdist workers (and
# the children they start, which inherit these). One TensorFlow thread per pool stops the workers' pools
# oversubscribing the cores. XLA's CPU backend compiles the same HLO faster at LLVM optimization level 0 and with
# its LLVM IR emitters instead of the MLIR fusion emitters (whose pass pipelines ran for every fusion).
# Measured on tests/test_gated_kernels.py (-n 2): 105.7 s; one thread per pool 89.9 s; both 79.3 s. The emitters,
# on test_gated_kernels.py and test_fast_paths.py side by side: 161.8 s of CPU at XLA's default emitters, 134.6 s
# with the LLVM IR ones. The tolerances of the tests hold (bit-identity tests compare runs of one setting); XLA at
# its defaults, as users run it, is tested against Keras in a child without these settings
# (`test_equivalence.py::test_xla_at_tensorflows_default_settings_matches_keras`), and `make demo` and the
# benchmarks run XLA at its defaults. Set any of these to override.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def _xla_defines(flag: str) -> bool:
    """Whether the installed TensorFlow's XLA has `flag` (read from its library without importing TensorFlow): an
    unknown flag in `XLA_FLAGS` aborts the process, and XLA's fusion emitters, with their switch, are newer than
    TF 2.16 (`make test-oldest`)."""
    spec = importlib.util.find_spec("tensorflow")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for library in sorted(pathlib.Path(folder).glob("libtensorflow_framework*")):
            with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as contents:
                return contents.find(flag.encode()) != -1
    return False


_EMITTERS = "--xla_cpu_use_fusion_emitters=false" if _xla_defines("xla_cpu_use_fusion_emitters") else ""
os.environ.setdefault("XLA_FLAGS", f"--xla_backend_optimization_level=0 {_EMITTERS}".strip())


@contextlib.contextmanager
def _native_stderr_dropped():
    """Sends file descriptor 2 to a temporary file for the block, and drops what C++ code wrote there.

    TensorFlow's native libraries log INFO lines ("oneDNN custom operations are on", "Could not find cuda
    drivers") to file descriptor 2 as they load, before absl's logging is initialized and whatever
    `TF_CPP_MIN_LOG_LEVEL` says. pytest captures them while it imports this file and writes them out at exit,
    after its summary (with pytest-xdist, the workers write them into the controller's capture). If the block
    raises (a broken TensorFlow install), what was written is shown before the error propagates.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as written:
        os.dup2(written.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            written.seek(0)
            sys.stderr.write(written.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _runs_tests(config: pytest.Config) -> bool:
    """False in pytest-xdist's controller (`-n 3`): it hands the tests to its workers and runs none itself."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) or not config.getoption("numprocesses", default=None)


def pytest_configure(config):
    """Imports TensorFlow and Keras where tests run, before any test file does (quiet), and tunes the collector.

    Not in pytest-xdist's controller: its import (~7 s of CPU) competed with the two workers' own at start-up.

    A worker's heap holds millions of objects that live as long as it does (TensorFlow's and Keras' modules) and,
    test after test, traced graphs. Python's cyclic garbage collector scanned all of them at every full
    collection: 3632 collections in tests/test_gated_kernels.py + test_keras_dropin.py + test_tf1_cells.py.
    Frozen, the imports are never scanned again, and fewer, larger young collections find the same cycles (941
    collections, the same peak RSS; 1.2 % and 3.5 % less CPU on two sets of three files, each run side by side
    with the defaults).
    """
    if not _runs_tests(config):
        from fork_server import share_servers

        share_servers(["keras", "tf1"])  # one of each for all the workers, instead of one per worker
        return
    with _native_stderr_dropped():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def pytest_unconfigure(config):
    """Ends the fork servers pytest-xdist's controller shared with its workers (`pytest_configure`)."""
    from fork_server import stop_shared_servers

    stop_shared_servers()


def pytest_sessionfinish(session, exitstatus):
    """Frees TensorFlow's graphs and collects garbage while the session is still running.

    At the end of a pytest-xdist run the controller shuts its workers down and execnet gives each one 5 s before
    it sends it SIGINT. A worker holds gigabytes of traced graphs; left to pytest's final `gc.collect()` (at
    unconfigure, after the worker reported its results) collecting them could take longer, and the SIGINT then
    landed in a finalizer: a `PytestUnraisableExceptionWarning` holding a `KeyboardInterrupt` after a green
    summary. Here (before pytest-xdist's own hook reports the worker finished) the controller still waits.
    """
    if "keras" in sys.modules:  # not in pytest-xdist's controller
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()


#: The longest test files, longest first (summed `--durations=0` of a full `make test`, 2026-12-07). pytest-xdist's
#: `--dist loadfile` hands files to its workers in collection order; run alphabetically, a long file handed out
#: last kept one worker busy while the other had nothing left. Longest first, the short files even out the end.
LONGEST_FILES = (
    "test_real_models.py", "test_gated_kernels.py", "test_deploy.py", "test_fast_paths.py", "test_distribute.py",
    "test_first_minute.py", "test_memory.py", "test_examples.py", "test_demo.py", "test_layers.py",
    "test_cudnn_plan.py", "test_tf1_cells.py", "test_benchmarks.py", "test_timed_trial.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Runs the `LONGEST_FILES` first, in that order; every other file after them, in collection order."""
    missing = [name for name in LONGEST_FILES if not (ROOT / "tests" / name).is_file()]
    if missing:  # a renamed file would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py: LONGEST_FILES names files that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: a file's tests keep order


@pytest.fixture(autouse=True)
def _seeded():
    import keras

    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_dtype_policy("float32")
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def subprocess_env():
    """Environment for a child Python: quiet TF, the repo importable (`helpers.child_env`)."""
    from helpers import child_env

    return child_env()
