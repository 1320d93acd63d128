"""Fresh Python processes for the tests' children, without paying TensorFlow's import in each.

`run_forked(argv, flavor=...)` runs `python *argv` (`-c SOURCE ...`, `-m MODULE ...` or `SCRIPT ...`) in a child
forked from a server process of that flavor (`python tests/fork_server.py --serve FLAVOR FD`), which has imported
TensorFlow once and run nothing. pytest-xdist's controller starts a `"keras"` and a `"tf1"` server for all its
workers (`share_servers`, from tests/conftest.py: one TensorFlow import each instead of one per worker); a
process that has no shared server of a flavor starts its own on first use. Each process talks to its server over
a Unix socket, and gets only its own children:

- `"tf1"`: TF1's cells (tf-keras, `TF_USE_LEGACY_KERAS=1`), for the TF1 oracles (`tf1_reference.run_tf1`);
- `"keras"`: TensorFlow and Keras 3, not `keras_unroll` (a child imports it itself, or blocks it). `import
  tensorflow` imports Keras 3 anyway (TF 2.21): a serving child has what a deployment server's process has;
- `"bare"`: nothing, for the server's own tests of killing and restarting it.

A child starts from a process that has only done the imports: TensorFlow's runtime (devices, threads, allocator,
XLA) is not initialised before the fork, so a child configures logical devices, the allocator
(`TF_CPU_ALLOCATOR_USE_BFC`), op determinism or a `keras_unroll` environment switch as a new Python would. It
just does not pay the ~6 s of CPU of the import again. The environment is the server's (`child_env`,
this repository first on `PYTHONPATH`), with `env` added and `unset` removed; the working directory is the
repository's root unless `cwd` is given.

`with python_children_forked():` routes the `subprocess.run([sys.executable, ...])` calls of the code under test
(the benchmarks' `--quick` children) to the keras server.

`start_forked` takes the same arguments and returns at once with a `Forked` handle (`wait()` gives the
`CompletedProcess`, `kill()` ends the child): the children of one server run at the same time (the
multi-worker `tf.distribute` workers talk to each other), and `run_forked` is `start_forked(...).wait()`. Each
child leads a process group of its own: a child past its `timeout` is killed with what it started, the server
and the other children go on; when a child ends, what it left running in its group ends too; when a process
disconnects (a worker that ends), its children still running end. A server that dies, or does not answer a kill
within 30 s, is killed with all its children (a shared one: every worker's) and the next call starts a new one.
The server reaps its children: their CPU counts in its owner's children's once the server is waited for.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The environment variable that names the servers a parent process shares with its children (`share_servers`).
SHARED_ENV = "KERAS_UNROLL_TEST_FORK_SERVERS"


def child_env(**extra: str) -> Dict[str, str]:
    """The environment for a child Python process: this one's, with TensorFlow quiet, this repository first on
    `PYTHONPATH` (so the child imports the `keras_unroll` under test), no `TF_CONFIG`, and `extra` on top."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


#: flavor -> (what the server adds to `child_env()`, what it imports before forking)
FLAVORS = {
    # `BasicRNNCell` loads tf-keras' TF1 cells (a lazy import) before forking.
    "tf1": ({"TF_USE_LEGACY_KERAS": "1"}, "import tensorflow as tf\ntf.compat.v1.nn.rnn_cell.BasicRNNCell"),
    "keras": ({}, "import tensorflow\nimport keras"),
    # Nothing imported: the server's own tests of killing and restarting it (cheap to start again).
    "bare": ({}, ""),
}
#: How long a killed child (or a closing server) gets to be reaped before its whole server is killed.
_GRACE_S = 30


def _run_job(job: Dict[str, Any], server_fds: List[int]) -> None:  # pragma: no cover - a forked child
    """Runs `python *job["argv"]` in this forked process, with `job["env"]` added to the environment, `job["unset"]`
    removed, in `job["cwd"]`, and its output in the files `job["stdout"]`, `job["stderr"]`; never returns."""
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # its own process group (the server sets it too): a kill reaches what it starts
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own `subprocess` children are its business
        for fd in server_fds:
            os.close(fd)
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _serve(flavor: str, listen_fd: int) -> None:  # pragma: no cover - runs in the server process
    """Runs the flavor's imports once, then serves the clients that connect to the listening Unix socket
    `listen_fd`: a job (a JSON line) forks a child at once, without waiting for the others. Each client is
    answered (JSON lines) `{"id", "pid"}` when its child starts and `{"id", "returncode"}` when it ends;
    `{"kill": id}` kills its child's group. A client that disconnects has its children killed (nobody waits for
    them any more). At the end of its standard input (its owner's end) the server kills every child still
    running and exits once they are reaped."""
    exec(FLAVORS[flavor][1], {})
    os.dup2(2, 1)  # a stray print lands in the log
    listener = socket.socket(fileno=listen_fd)
    wake_read, wake_write = os.pipe()  # SIGCHLD writes a byte here: a child ended
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    clients: Dict[socket.socket, bytes] = {}  # connection -> what it sent after its last full line
    running: Dict[Any, int] = {}  # (connection, job id) -> pid
    owned = True

    def reply(conn: socket.socket, message: Dict[str, Any]) -> None:
        if conn in clients:
            try:
                conn.sendall((json.dumps(message) + "\n").encode())
            except OSError:
                pass  # it went away: its end of file comes next

    def drop(conn: socket.socket) -> None:
        for (owner, _), pid in running.items():
            if owner is conn:
                _kill_group(pid)
        del clients[conn]
        conn.close()

    while owned or running:
        ready, _, _ = select.select([wake_read, 0, listener, *clients] if owned else [wake_read], [], [])
        if wake_read in ready:
            while True:
                try:
                    if not os.read(wake_read, 512):
                        break
                except BlockingIOError:
                    break
        for (conn, job_id), pid in list(running.items()):  # reap every child that ended
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                continue
            _kill_group(pid)  # what it left running (its zombie keeps the group's id from being reused)
            _, status = os.waitpid(pid, 0)
            del running[conn, job_id]
            reply(conn, {"id": job_id, "returncode": os.waitstatus_to_exitcode(status)})
        if not owned:
            continue
        if 0 in ready and not os.read(0, 1 << 16):
            owned = False
            for conn in list(clients):
                drop(conn)
            listener.close()
            continue
        if listener in ready:
            clients[listener.accept()[0]] = b""
        for conn in [item for item in ready if item in clients]:
            try:
                data = conn.recv(1 << 16)
            except OSError:  # reset: it closed with our answers unread
                data = b""
            if not data:
                drop(conn)
                continue
            *lines, clients[conn] = (clients[conn] + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "kill" in message:
                    if (conn, message["kill"]) in running:
                        _kill_group(running[conn, message["kill"]])
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _run_job(message, [listener.fileno(), wake_read, wake_write, *(c.fileno() for c in clients)])
                try:
                    os.setpgid(pid, pid)  # as the child does: whichever runs first, the group exists
                except (PermissionError, ProcessLookupError):
                    pass  # the child already did (and may have exec'd or ended)
                running[conn, message["id"]] = pid
                reply(conn, {"id": message["id"], "pid": pid})


def _start_server(flavor: str) -> Dict[str, Any]:
    """A new server of `flavor`, owned by this process (its standard input): `{"process", "path", "pid", "log"}`.
    The listening socket exists before the server starts, so a client can connect at once."""
    folder = tempfile.mkdtemp(prefix="fork_server_", dir="/tmp" if os.path.isdir("/tmp") else None)  # a short path
    path, log = os.path.join(folder, "socket"), os.path.join(folder, "log")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", flavor, str(listener.fileno())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=child_env(**FLAVORS[flavor][0]),
            cwd=ROOT,
            pass_fds=[listener.fileno()],
            start_new_session=True,  # its own process group, as each of its children: a kill ends them all
        )
    listener.close()
    return {"process": process, "path": path, "pid": process.pid, "log": log}


def _stop_server(started: Dict[str, Any], kill: bool = False) -> None:
    """Ends a server this process started: at the end of its input it kills the children left and exits."""
    process = started["process"]
    if process.poll() is None and not kill:
        process.stdin.close()
        try:
            process.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:
            kill = True
    if kill and process.poll() is None:
        _kill_group(process.pid)
        process.wait()
    shutil.rmtree(os.path.dirname(started["path"]), ignore_errors=True)


def _connect(path: str) -> Optional[socket.socket]:
    """A connection to the server listening at `path`, or None if none listens there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


class _Server:
    """This process's connection to one server (see the module docstring): the one its parent shares
    (`share_servers`), or else one it starts and owns."""

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self.owned: Optional[Dict[str, Any]] = None
        self.info = json.loads(os.environ.get(SHARED_ENV, "{}")).get(flavor)
        conn = _connect(self.info["path"]) if self.info else None
        if conn is None:  # none shared, or it is gone: a server of its own
            self.owned = self.info = _start_server(flavor)
            conn = _connect(self.info["path"])
        if conn is None:
            raise RuntimeError(f"The {flavor!r} fork server it started does not accept connections")
        self.conn = conn
        self.jobs = 0
        self.pids: Dict[int, int] = {}  # job id -> pid, for the children still running
        self.returncodes: Dict[int, int] = {}  # job id -> returncode, for the children that ended
        self.pending = b""
        self.eof = False

    def alive(self) -> bool:
        return not self.eof and (self.owned is None or self.owned["process"].poll() is None)

    def _send(self, message: Dict[str, Any]) -> None:
        try:
            self.conn.sendall((json.dumps(message) + "\n").encode())
        except OSError:
            pass  # the server died: the next read reports it

    def _read(self, deadline: float) -> None:
        """Reads what the server said until `deadline` or until it said something."""
        ready, _, _ = select.select([self.conn], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return
        try:
            data = self.conn.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "returncode" in message:
                self.pids.pop(message["id"], None)
                self.returncodes[message["id"]] = message["returncode"]
            else:
                self.pids[message["id"]] = message["pid"]

    def start(self, job: Dict[str, Any]) -> int:
        self.jobs += 1
        self._send({"id": self.jobs, **job})
        return self.jobs

    def kill(self, job_id: int) -> None:
        self._send({"kill": job_id})

    def wait(self, job_id: int, deadline: float) -> Optional[int]:
        """The child's returncode, or None at `deadline`; a dead server raises `RuntimeError`."""
        while job_id not in self.returncodes:
            if not self.alive():
                self.close(kill=True)
                raise RuntimeError(f"The {self.flavor!r} fork server died:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                return None
            self._read(deadline)
        return self.returncodes.pop(job_id)

    def log_tail(self) -> str:
        try:
            with open(self.info["log"], "rb") as log:
                return log.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def close(self, kill: bool = False) -> None:
        """Disconnects (the server kills this process's children left). With `kill` (a server that died or does
        not answer), the server is killed with all its children, then what this process heard started."""
        if kill:
            _kill_group(self.info["pid"])
            deadline = time.monotonic() + 10
            while not self.eof and time.monotonic() < deadline:  # the children it started that nobody heard end
                self._read(deadline)
            for pid in self.pids.values():
                _kill_group(pid)
            self.pids.clear()
        self.conn.close()
        self.eof = True
        if self.owned is not None:
            _stop_server(self.owned, kill=kill)


class Forked:
    """A child started by `start_forked`: `wait()` returns its `CompletedProcess`, `kill()` ends it."""

    def __init__(self, server: _Server, argv: Sequence[str], timeout: float, **job: Any) -> None:
        self.argv, self.timeout = list(argv), timeout
        self._server = server
        self._folder = tempfile.mkdtemp(prefix="forked_job_")
        self._paths = {name: os.path.join(self._folder, name) for name in ("stdout", "stderr")}
        self._id = server.start({"argv": self.argv, **job, **self._paths})
        self._deadline = time.monotonic() + timeout
        self._done: Optional[subprocess.CompletedProcess] = None

    def kill(self) -> None:
        """Kills the child (and what it started); `wait()` then returns its returncode `-9`."""
        if self._done is None and self._server.alive():
            self._server.kill(self._id)

    def _output(self, returncode: int) -> subprocess.CompletedProcess:
        outputs = []
        for name in ("stdout", "stderr"):
            try:
                with open(self._paths[name], errors="replace") as file:
                    outputs.append(file.read())
            except FileNotFoundError:  # the child died before opening it
                outputs.append("")
        shutil.rmtree(self._folder, ignore_errors=True)
        self._done = subprocess.CompletedProcess(self.argv, returncode, *outputs)
        return self._done

    def wait(self) -> subprocess.CompletedProcess:
        """Waits for the child and returns its `CompletedProcess` (`returncode`, `stdout`, `stderr` as text);
        a child past its `timeout` is killed and raises `RuntimeError`, as does a server that dies."""
        if self._done is not None:
            return self._done
        server = self._server
        try:
            returncode = server.wait(self._id, self._deadline)
            if returncode is not None:
                return self._output(returncode)
            self.kill()
            returncode = server.wait(self._id, time.monotonic() + _GRACE_S)
        except RuntimeError as error:
            self._output(-signal.SIGKILL)
            raise RuntimeError(f"{error}\nwhile running {self.argv[:2]}") from None
        if returncode is None:  # the server does not answer: it ends with all its children
            server.close(kill=True)
        done = self._output(-signal.SIGKILL if returncode is None else returncode)
        raise RuntimeError(
            f"A child of the {server.flavor!r} fork server timed out after {self.timeout} s and was killed, running "
            f"{self.argv[:2]}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


_SERVERS: Dict[str, _Server] = {}


_SHARED: List[Dict[str, Any]] = []  # the servers this process started for its children (`share_servers`)


def _close_servers() -> None:
    while _SERVERS:
        _SERVERS.popitem()[1].close()


def share_servers(flavors: Sequence[str]) -> None:
    """Starts a server of each flavor now and names them in this process's environment (`SHARED_ENV`), so the
    processes it starts afterwards (pytest-xdist's workers) connect to these instead of importing TensorFlow
    in a server each. Each connection gets its own children; `stop_shared_servers()` ends them."""
    started = {flavor: _start_server(flavor) for flavor in flavors}
    _SHARED.extend(started.values())
    shared = json.loads(os.environ.get(SHARED_ENV, "{}"))
    shared.update({flavor: {key: found[key] for key in ("path", "pid", "log")} for flavor, found in started.items()})
    os.environ[SHARED_ENV] = json.dumps(shared)


def stop_shared_servers() -> None:
    """Ends the servers `share_servers` started (with the children still running)."""
    os.environ.pop(SHARED_ENV, None)
    while _SHARED:
        _stop_server(_SHARED.pop())


def start_forked(
    argv: Sequence[str],
    *,
    flavor: str = "keras",
    timeout: float = 600,
    env: Optional[Dict[str, str]] = None,
    unset: Sequence[str] = (),
    cwd: Any = None,
) -> Forked:
    """Starts `python *argv` in a child forked from this process's `flavor` server and returns at once; the
    child's `timeout` counts from now. Children of one server run at the same time."""
    if flavor not in FLAVORS:
        raise ValueError(f"`flavor` must be one of {sorted(FLAVORS)}. Received: flavor={flavor!r}")
    server = _SERVERS.get(flavor)
    if server is None or not server.alive():
        if not _SERVERS:
            atexit.register(_close_servers)
        server = _SERVERS[flavor] = _Server(flavor)
    return Forked(server, argv, timeout, env=dict(env or {}), unset=list(unset), cwd=str(cwd) if cwd else "")


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
    return start_forked(argv, flavor=flavor, timeout=timeout, env=env, unset=unset, cwd=cwd).wait()


@contextlib.contextmanager
def python_children_forked() -> Iterator[List[List[str]]]:
    """In the block, `subprocess.run([sys.executable, *argv], capture_output=True, text=True, ...)`
    runs `python *argv` forked from the keras server, with the same result (`check`, `env`, `timeout`, `cwd`);
    every other call runs as before. For code under test that starts Python children itself (the benchmarks'
    `--quick` runs). Yields the list of the forked `argv`s, so a test can check the route was taken."""
    real_run = subprocess.run
    forked: List[List[str]] = []

    def run(args: Any, **kwargs: Any) -> Any:
        options = {key: kwargs.pop(key, None) for key in ("capture_output", "text", "check", "env", "timeout", "cwd")}
        if (
            kwargs
            or not isinstance(args, (list, tuple))
            or not args
            or args[0] != sys.executable
            or not (options["capture_output"] and options["text"])
        ):
            return real_run(args, **kwargs, **{key: value for key, value in options.items() if value is not None})
        env = options["env"]
        added = {} if env is None else {name: value for name, value in env.items() if os.environ.get(name) != value}
        unset = [] if env is None else [name for name in os.environ if name not in env]
        forked.append(list(args[1:]))
        done = run_forked(args[1:], env=added, unset=unset, timeout=options["timeout"] or 1800, cwd=options["cwd"])
        if options["check"] and done.returncode:
            raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
        return done

    subprocess.run = run  # type: ignore[assignment]  # the module's attribute: what `subprocess.run(...)` finds
    try:
        yield forked
    finally:
        subprocess.run = real_run


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]))
