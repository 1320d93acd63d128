"""`tf.distribute`: both layers train under `MirroredStrategy` and `MultiWorkerMirroredStrategy` with `fit`.

Each strategy runs in fresh processes (`distributed_worker.py`), because logical devices and the multi-worker
cluster must be configured before TensorFlow initialises its devices. Every run trains the same model from
the same fixed weights on the same global batch of 8 rows with plain SGD, so it must reach the weights of the
single-device run in this process. Tolerance: `atol = rtol = 1e-5`; the only difference is the order in
which per-replica gradients are summed (float32 rounding, measured ≤ 2e-7), while a wrong reduction
(summing instead of averaging the replicas' gradients, or one replica's gradient alone) moves the weights
by ~0.1-1.

The mirrored child also trains the book's deep RNN (two stacked `DynamicUnroll`, unknown T) under the strategy
and on one device, with `fit`, `evaluate`, `predict` at another batch size and T, and a `.keras` round trip of
the strategy's model (`test_stacked_layers_under_mirrored_strategy_match_one_device`): one process with two
logical CPUs does the work of both tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from typing import Dict, List

import distributed_worker as worker
import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = pathlib.Path(worker.__file__).resolve()
TIMEOUT_S = 600  # generous: CI machines are shared and the three children run at once; a hang still ends here
ATOL = RTOL = 1e-5
ROUND_TRIP_ATOL = 1e-6  # the same model before and after `.keras`
_PROXY_VARS = ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


def _child_env(**extra: str) -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _PROXY_VARS}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # gRPC between workers stays on loopback
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(count: int) -> List[int]:
    """Ports the OS reports free on 127.0.0.1 (all sockets held open together, so the ports differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class _Workers:
    """Child processes started at once; `finish()` waits at most TIMEOUT_S from the start, kills every child on
    timeout, and checks each exited cleanly."""

    def __init__(self, commands: List[List[str]], envs: List[Dict[str, str]]) -> None:
        self.commands = commands
        self.deadline = time.monotonic() + TIMEOUT_S
        self.procs = [
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
            for cmd, env in zip(commands, envs)
        ]

    def finish(self) -> None:
        outputs = []
        try:
            for proc in self.procs:
                out, _ = proc.communicate(timeout=max(1.0, self.deadline - time.monotonic()))
                outputs.append(out)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s and were killed: {self.commands}")
        for proc, out in zip(self.procs, outputs):
            assert proc.returncode == 0, f"worker failed (exit {proc.returncode}):\n{out[-4000:]}"

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.communicate()


def _load(path: pathlib.Path) -> Dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Dict[str, tuple]:
    """Both strategies' runs, started together (each child spends seconds importing TensorFlow, and the two
    multi-worker processes wait on each other): `{name: (_Workers, output paths)}`."""
    mirrored_out = tmp_path_factory.mktemp("mirrored") / "weights.npz"
    runs = {
        "mirrored": (
            _Workers(
                [[sys.executable, str(WORKER), "--strategy", "mirrored", "--out", str(mirrored_out)]], [_child_env()]
            ),
            [mirrored_out],
        )
    }
    tmp = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    commands, envs, outs = [], [], []
    for index in range(2):
        outs.append(tmp / f"weights-{index}.npz")
        commands.append([sys.executable, str(WORKER), "--strategy", "multi_worker", "--out", str(outs[-1])])
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        envs.append(_child_env(TF_CONFIG=json.dumps(tf_config)))
    runs["multi_worker"] = (_Workers(commands, envs), outs)
    yield runs
    for workers, _ in runs.values():
        workers.kill()  # a no-op for children that finished


@pytest.fixture(scope="module")
def single_device(started) -> Dict[str, Dict]:
    """The reference: each layer trained here, on one device, on the same global batch (while the children
    run: `started` comes first)."""
    keras.mixed_precision.set_dtype_policy("float32")
    return {
        worker.run_key(name, jit): worker.train(name, jit_compile=jit)
        for name in worker.LAYERS
        for jit in worker.JIT_COMPILE
    }


@pytest.fixture(scope="module")
def mirrored(started, single_device) -> Dict[str, np.ndarray]:
    workers, (out,) = started["mirrored"]
    workers.finish()
    return _load(out)


@pytest.fixture(scope="module")
def multi_worker(started, single_device) -> List[Dict[str, np.ndarray]]:
    workers, outs = started["multi_worker"]
    workers.finish()
    return [_load(out) for out in outs]


def _assert_same_training(run: Dict[str, np.ndarray], reference: Dict, key: str) -> None:
    weights = [run[f"{key}/{i}"] for i in range(len(reference["weights"]))]
    for got, want in zip(weights, reference["weights"]):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
        assert got.dtype == np.float32
    # The comparison means something only if training moved the weights well beyond the tolerance.
    moved = max(float(np.abs(w - s).max()) for w, s in zip(reference["weights"], worker.initial_weights()))
    assert moved > 0.05
    np.testing.assert_allclose(run[f"{key}/loss"], reference["loss"], atol=ATOL, rtol=RTOL)


RUNS = [worker.run_key(name, jit) for name in worker.LAYERS for jit in worker.JIT_COMPILE]


@pytest.mark.parametrize("key", RUNS)
def test_mirrored_strategy_matches_single_device(mirrored, single_device, key):
    assert int(mirrored["num_replicas"]) == 2  # two logical CPUs, each got half of the global batch
    _assert_same_training(mirrored, single_device[key], key)


@pytest.mark.parametrize("model_jit, layer_jit", worker.STACKED_RUNS)
def test_stacked_layers_under_mirrored_strategy_match_one_device(mirrored, model_jit, layer_jit):
    """Two replicas (two logical CPUs) train, evaluate and predict the book's stacked model as one device does,
    from the same weights.

    Plain SGD on the same global batches: the only difference is the order in which the replicas' gradients
    are summed (float32 rounding); a wrong reduction moves the weights by ~0.1.
    """
    key = worker.stacked_run_key(model_jit, layer_jit)
    for where in ("single", "mirrored"):
        if f"{key}/{where}/error" in mirrored:
            pytest.fail(f"{where} run failed:\n{mirrored[f'{key}/{where}/error']}", pytrace=False)
    assert int(mirrored["num_replicas"]) == 2
    run = {name[len(f"{key}/mirrored/") :]: v for name, v in mirrored.items() if name.startswith(f"{key}/mirrored/")}
    single = {name[len(f"{key}/single/") :]: v for name, v in mirrored.items() if name.startswith(f"{key}/single/")}
    assert np.all(np.isfinite(run["loss"])) and np.isfinite(run["eval_loss"])
    assert {"loss", "eval_loss", "pred_other_batch", "pred_other_t", "weight/0"} <= set(single)
    for name, want in single.items():
        np.testing.assert_allclose(run[name], want, atol=ATOL, rtol=RTOL, err_msg=name)
    assert run["pred_other_t"].shape == (worker.OTHER_BATCH, 1)
    np.testing.assert_allclose(run["loaded_pred_other_t"], run["pred_other_t"], atol=ROUND_TRIP_ATOL, rtol=0)


@pytest.mark.parametrize("key", RUNS)
def test_multi_worker_mirrored_strategy_matches_single_device(multi_worker, single_device, key):
    for run in multi_worker:
        assert int(run["num_replicas"]) == 2  # one replica in each of the two processes
        _assert_same_training(run, single_device[key], key)
    for got, want in zip(multi_worker[0].values(), multi_worker[1].values()):
        np.testing.assert_array_equal(got, want)  # synchronous: both workers hold identical weights


def test_free_ports_are_distinct_and_bindable():
    ports = _free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
