"""`fork_server.run_forked`: what the tests' children get is a fresh process, as `subprocess.run` gives."""

import json
import os

import pytest
from fork_server import run_forked
from helpers import ROOT

_PROBE = """
import json, os, sys
import tensorflow as tf
# Only possible before TensorFlow's runtime starts: the child's runtime is its own, not the server's.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
print(json.dumps({
    "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "logical": len(tf.config.list_logical_devices("CPU")),
    "set": os.environ.get("FORKED_SET"), "unset": "KERAS_UNROLL_TIMED_TRIAL" in os.environ,
    "keras_unroll": any(name.startswith("keras_unroll") for name in sys.modules),
}))
"""


def test_a_child_gets_its_arguments_environment_folder_and_a_runtime_of_its_own(tmp_path):
    assert os.environ.get("KERAS_UNROLL_TIMED_TRIAL") == "0"  # set by conftest, inherited by the server
    runs = [
        run_forked(
            ["-c", _PROBE, "a", "b"], env={"FORKED_SET": "yes"}, unset=["KERAS_UNROLL_TIMED_TRIAL"], cwd=tmp_path
        ),
        run_forked(["-c", _PROBE]),
    ]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    first, second = (json.loads(run.stdout.splitlines()[-1]) for run in runs)
    assert first["argv"] == ["a", "b"] and first["cwd"] == str(tmp_path) and first["set"] == "yes"
    assert not first["unset"] and second["unset"] and second["set"] is None and second["cwd"] == str(ROOT)
    assert first["logical"] == second["logical"] == 2 and first["pid"] != second["pid"] != os.getpid()
    assert not first["keras_unroll"]  # the server imports TensorFlow and Keras only


def test_a_failing_child_returns_its_exit_code_and_output():
    done = run_forked(["-c", "import sys; print('out'); sys.exit(3)"])
    assert (done.returncode, done.stdout) == (3, "out\n")
    done = run_forked(["-c", "raise ValueError('boom')"])
    assert done.returncode == 1 and "ValueError: boom" in done.stderr


def test_a_child_past_its_timeout_raises_and_the_next_call_starts_a_new_server():
    with pytest.raises(RuntimeError, match="timed out after 1 s"):
        run_forked(["-c", "import time; time.sleep(60)"], timeout=1)
    assert run_forked(["-c", "print('again')"]).stdout == "again\n"


def test_an_unknown_flavor_is_refused_by_name():
    with pytest.raises(ValueError, match=r"`flavor` must be one of \['keras', 'tf1'\]. Received: flavor='tf2'"):
        run_forked(["-c", "pass"], flavor="tf2")
