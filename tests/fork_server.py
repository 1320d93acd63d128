"""Fresh Python processes for the tests' children, without paying TensorFlow's import in each.

`run_forked(argv, flavor=...)` runs `python *argv` (`-c SOURCE ...`, `-m MODULE ...` or `SCRIPT ...`) in a child
forked from a server process of that flavor (`python tests/fork_server.py --serve FLAVOR`, started on first use,
one per flavor and pytest process), which has imported TensorFlow once and run nothing:

- `"tf1"`: TF1's cells (tf-keras, `TF_USE_LEGACY_KERAS=1`), for the TF1 oracles (`tf1_reference.run_tf1`);
- `"keras"`: TensorFlow and Keras 3, not `keras_unroll` (a child imports it itself, or blocks it). `import
  tensorflow` imports Keras 3 anyway (TF 2.21): a serving child has what a deployment server's process has.

A child starts from a process that has only done the imports: TensorFlow's runtime (devices, threads, allocator,
XLA) is not initialised before the fork, so a child configures logical devices, the allocator
(`TF_CPU_ALLOCATOR_USE_BFC`), op determinism or a `keras_unroll` environment switch as a new Python would. It
just does not pay the ~6 s of CPU of the import again. The environment is the server's (`helpers.child_env`,
this repository first on `PYTHONPATH`), with `env` added and `unset` removed; the working directory is the
repository's root unless `cwd` is given. Jobs run one at a time per server.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence

#: flavor -> (what the server adds to `helpers.child_env()`, what it imports before forking)
FLAVORS = {
    # `BasicRNNCell` loads tf-keras' TF1 cells (a lazy import) before forking.
    "tf1": ({"TF_USE_LEGACY_KERAS": "1"}, "import tensorflow as tf\ntf.compat.v1.nn.rnn_cell.BasicRNNCell"),
    "keras": ({}, "import tensorflow\nimport keras"),
}


def _run_job(job: Dict[str, Any], out_path: str, err_path: str) -> None:  # pragma: no cover - a forked child
    """Runs `python *job["argv"]` in this forked process, with `job["env"]` added to the environment, `job["unset"]`
    removed, in `job["cwd"]`, and its output in the two files; never returns."""
    import runpy
    import traceback

    code = 1
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(file, fd)
            os.close(file)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the server's job channel
        os.close(null)
        for name in job["unset"]:
            os.environ.pop(name, None)
        os.environ.update(job["env"])
        if job["cwd"]:
            os.chdir(job["cwd"])
        argv = job["argv"]
        if argv[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif argv[0] == "-m":
            sys.argv, sys.path[0] = list(argv[1:]), os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
    except BaseException:  # reported as a failed child, as Python itself would
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(flavor: str) -> None:  # pragma: no cover - runs in the server process
    """Runs the flavor's imports once, then each job (a JSON line on stdin) in a forked child, and answers
    `{"returncode", "stdout", "stderr"}` (a JSON line on stdout), until stdin closes."""
    exec(FLAVORS[flavor][1], {})
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a stray print cannot break the channel
    for line in sys.stdin:
        job = json.loads(line)
        with tempfile.TemporaryDirectory(prefix="forked_job_") as tmp:
            out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                replies.close()
                _run_job(job, out_path, err_path)
            _, status = os.waitpid(pid, 0)
            reply = {"returncode": os.waitstatus_to_exitcode(status)}
            for name, path in (("stdout", out_path), ("stderr", err_path)):
                with open(path, errors="replace") as file:
                    reply[name] = file.read()
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class _Server:
    """The parent's end of one server process (see the module docstring)."""

    def __init__(self, flavor: str) -> None:
        from helpers import ROOT, child_env

        self.flavor = flavor
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", flavor],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=child_env(**FLAVORS[flavor][0]),
            cwd=ROOT,
            start_new_session=True,  # its own process group: a timeout ends the server and its child together
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, job: Dict[str, Any], timeout: float) -> subprocess.CompletedProcess:
        try:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the server died: reported below
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            what = f"timed out after {timeout} s" if not ready else "died"
            self.close(kill=True)
            self.log.seek(0)
            log = self.log.read()[-4000:].decode(errors="replace")
            raise RuntimeError(f"The {self.flavor!r} fork server {what} running {job['argv'][:2]}:\n{log}")
        reply = json.loads(line)
        return subprocess.CompletedProcess(job["argv"], reply["returncode"], reply["stdout"], reply["stderr"])

    def close(self, kill: bool = False) -> None:
        if self.alive() and not kill:
            self.process.stdin.close()  # the server ends at the end of its input
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill = True
        if kill and self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_SERVERS: Dict[str, _Server] = {}


def _close_servers() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].close()


def run_forked(
    argv: Sequence[str],
    *,
    flavor: str = "keras",
    timeout: float = 600,
    env: Optional[Dict[str, str]] = None,
    unset: Sequence[str] = (),
    cwd: Any = None,
) -> subprocess.CompletedProcess:
    """Runs `python *argv` in a child forked from this process's `flavor` server and returns its
    `CompletedProcess` (`returncode`, `stdout`, `stderr` as text), as `subprocess.run(..., capture_output=True,
    text=True)` would; a server that dies or a child that exceeds `timeout` raises `RuntimeError`."""
    if flavor not in FLAVORS:
        raise ValueError(f"`flavor` must be one of {sorted(FLAVORS)}. Received: flavor={flavor!r}")
    server = _SERVERS.get(flavor)
    if server is None or not server.alive():
        if not _SERVERS:
            atexit.register(_close_servers)
        server = _SERVERS[flavor] = _Server(flavor)
    job = {"argv": list(argv), "env": dict(env or {}), "unset": list(unset), "cwd": str(cwd) if cwd else ""}
    return server.run(job, timeout)


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2])
