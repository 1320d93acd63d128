"""`fork_server`: what the tests' children get is a fresh process, as `subprocess.run` gives, and the children of
one server run at the same time (`start_forked`)."""

import json
import os
import pathlib
import subprocess
import sys
import time

import fork_server
import pytest
from fork_server import python_children_forked, run_forked, start_forked
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
#: Writes "its server's pid, its own pid" to the file `argv[1]`, then waits for the file `argv[2]` and prints it.
_WAIT_FOR = """
import os, pathlib, sys, time
mine, theirs = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
mine.write_text(f"{os.getppid()} {os.getpid()}")
while not theirs.exists() or not theirs.read_text():
    time.sleep(0.01)
print(theirs.read_text())
"""
#: Starts a grandchild, writes "its pid, the grandchild's pid" to the file `pids`, then sleeps past any timeout.
_SLEEPER = """
import os, pathlib, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
pathlib.Path("pids").write_text(f"{os.getpid()} {grandchild.pid}")
time.sleep(120)
"""


def _ends(pid: int, seconds: float = 10.0) -> bool:
    """Whether process `pid` ends (is gone or a zombie) within `seconds`."""
    for _ in range(int(seconds * 100)):
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


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


def test_children_of_one_server_run_at_the_same_time(tmp_path):
    # Each waits for the file the other writes: one at a time, the first would wait until its timeout.
    children = [start_forked(["-c", _WAIT_FOR, a, b], cwd=tmp_path, timeout=120) for a, b in (("a", "b"), ("b", "a"))]
    done = [child.wait() for child in children]
    assert [run.returncode for run in done] == [0, 0], [run.stderr[-2000:] for run in done]
    (server_a, pid_a), (server_b, pid_b) = ((tmp_path / name).read_text().split() for name in ("a", "b"))
    assert [run.stdout for run in done] == [f"{server_b} {pid_b}\n", f"{server_a} {pid_a}\n"]
    assert server_a == server_b and pid_a != pid_b  # two children of one server
    assert children[0].wait() is done[0]  # waiting again returns the same result


def test_a_child_past_its_timeout_is_killed_with_what_it_started_and_the_others_go_on(tmp_path):
    waiting = start_forked(["-c", _WAIT_FOR, "b", "a"], cwd=tmp_path)
    sleeper = start_forked(["-c", _SLEEPER], cwd=tmp_path, timeout=5)
    with pytest.raises(RuntimeError, match="timed out after 5 s and was killed"):
        sleeper.wait()
    child, grandchild = (int(pid) for pid in (tmp_path / "pids").read_text().split())
    assert _ends(child) and _ends(grandchild)  # no orphan left running
    (tmp_path / "a").write_text("go")  # the other child, started before the timeout, still runs and ends
    assert waiting.wait().stdout == "go\n"
    server = (tmp_path / "b").read_text().split()[0]
    assert run_forked(["-c", "import os; print(os.getppid())"]).stdout == f"{server}\n"  # the same server


def test_a_killed_child_returns_minus_nine_and_its_siblings_go_on(tmp_path):
    first, second = (start_forked(["-c", _WAIT_FOR, name, "never"], cwd=tmp_path) for name in ("a", "b"))
    first.kill()
    assert first.wait().returncode == -9
    (tmp_path / "never").write_text("done")
    assert second.wait().stdout == "done\n"


def test_a_server_that_dies_ends_its_children_and_the_next_call_starts_a_new_one(tmp_path):
    """On the `"bare"` flavor (nothing imported), so that the restart does not import TensorFlow again."""
    waiting = start_forked(["-c", _WAIT_FOR, "a", "never"], cwd=tmp_path, flavor="bare")
    killer = start_forked(
        ["-c", _WAIT_FOR + "os.kill(os.getppid(), 9)\ntime.sleep(120)", "b", "a"], cwd=tmp_path, flavor="bare"
    )
    for child in (killer, waiting):
        with pytest.raises(RuntimeError, match="'bare' fork server died"):
            child.wait()
    server, child = (tmp_path / "a").read_text().split()
    assert _ends(int(child)) and _ends(int((tmp_path / "b").read_text().split()[1]))
    new_server = run_forked(["-c", "import os; print(os.getppid())"], flavor="bare").stdout.strip()
    assert new_server != server


def test_an_unknown_flavor_is_refused_by_name():
    with pytest.raises(ValueError, match=r"`flavor` must be one of \['bare', 'keras', 'tf1'\]. Received: flavor='tf2'"):
        run_forked(["-c", "pass"], flavor="tf2")
    with pytest.raises(ValueError, match=r"`flavor` must be one of \['bare', 'keras', 'tf1'\]. Received: flavor='tf2'"):
        start_forked(["-c", "pass"], flavor="tf2")


def test_python_children_of_the_code_under_test_are_forked_with_the_same_result(tmp_path):
    """`python_children_forked`: `subprocess.run([sys.executable, ...])` as the benchmarks call it gives what a
    new Python gives (environment, folder, output, `check`); other commands, and calls after the block, are
    not forked."""
    probe = (
        "import json, os\n"
        "print(json.dumps([os.getppid(), os.getcwd(), os.environ.get('FORKED_SET'), "
        "'KERAS_UNROLL_TIMED_TRIAL' in os.environ]))"
    )
    env = {name: value for name, value in os.environ.items() if name != "KERAS_UNROLL_TIMED_TRIAL"}
    with python_children_forked() as forked:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env={**env, "FORKED_SET": "yes"},
            cwd=tmp_path,
        )
        parent, cwd, set_, timed_trial = json.loads(done.stdout)
        assert (cwd, set_, timed_trial, done.returncode) == (str(tmp_path), "yes", False, 0)
        assert parent != os.getpid()  # its parent is the keras server, not this process
        with pytest.raises(subprocess.CalledProcessError) as failed:
            subprocess.run(
                [sys.executable, "-c", "print('out'); raise SystemExit(3)"], capture_output=True, text=True, check=True
            )
        assert (failed.value.returncode, failed.value.stdout) == (3, "out\n")
        echoed = subprocess.run(["echo", "plain"], capture_output=True, text=True)  # not Python: runs as it is
    assert forked == [["-c", probe], ["-c", "print('out'); raise SystemExit(3)"]] and echoed.stdout == "plain\n"
    after = subprocess.run([sys.executable, "-c", "import os; print(os.getppid())"], capture_output=True, text=True)
    assert after.stdout == f"{os.getpid()}\n" and len(forked) == 2


def test_a_shared_server_serves_each_connection_its_own_children(tmp_path, monkeypatch):
    """`share_servers` (what pytest-xdist's controller does for its workers): two connections, as two workers
    make, fork their children from the one shared server; a connection that closes ends only its own children,
    and `stop_shared_servers` ends the server."""
    monkeypatch.setenv(fork_server.SHARED_ENV, "{}")
    fork_server.share_servers(["bare"])
    shared_pid = fork_server._SHARED[-1]["pid"]
    first, second = fork_server._Server("bare"), fork_server._Server("bare")  # two workers' connections
    try:
        assert first.owned is None and second.owned is None
        jobs = {}
        for server, name in ((first, "a"), (second, "b")):
            forked = fork_server.Forked(
                server, ["-c", _WAIT_FOR, name, "never"], 60, env={}, unset=[], cwd=str(tmp_path)
            )
            jobs[name] = forked
        for name in ("a", "b"):
            while not (tmp_path / name).exists() or not (tmp_path / name).read_text():
                time.sleep(0.01)
        parents, pids = zip(*((int(n) for n in (tmp_path / name).read_text().split()) for name in ("a", "b")))
        assert parents == (shared_pid, shared_pid)
        first.close()  # the first worker goes away: its child ends, the second's goes on
        assert _ends(pids[0]) and not _ends(pids[1], seconds=0.5)
        (tmp_path / "never").write_text("done")
        assert jobs["b"].wait().stdout == "done\n"
    finally:
        second.close()
        fork_server.stop_shared_servers()
    assert _ends(shared_pid)
