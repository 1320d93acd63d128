"""`tf.distribute`: both layers train under `MirroredStrategy` and `MultiWorkerMirroredStrategy` with `fit`.

Each strategy runs in fresh processes (`distributed_worker.py`, forked from the keras fork server, all three at
once: the two multi-worker processes talk over gRPC on loopback), because logical devices and the multi-worker
cluster must be configured before TensorFlow initialises its devices. Every run trains the same model from
the same fixed weights on the same global batch of 8 rows with plain SGD, so it must reach the weights of the
single-device run in this process (trained once, `worker.REFERENCE`: each layer's one-device run agrees with it
to 2e-7). Tolerance: `atol = rtol = 1e-5`; the only difference is the order in which per-replica gradients are
summed (float32 rounding, measured ≤ 2e-7), while a wrong reduction (summing instead of averaging the replicas'
gradients, or one replica's gradient alone) moves the weights by ~0.1-1.

The mirrored child also trains the book's deep RNN (two stacked `DynamicUnroll`, unknown T) under the strategy
and, once, on one device (`worker.STACKED_REFERENCE`), with `fit`, `evaluate`, `predict` at another batch size
and T, and a `.keras` round trip of the strategy's model
(`test_stacked_layers_under_mirrored_strategy_match_one_device`): one process with two logical CPUs does the work
of both tests.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Dict, List

import distributed_worker as worker
import keras
import numpy as np
import pytest
from fork_server import Forked, start_forked
from helpers import load_npz

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

TIMEOUT_S = 600  # generous: CI machines are shared and the three children run at once; a hang still ends here
ATOL = RTOL = 1e-5
ROUND_TRIP_ATOL = 1e-6  # the same model before and after `.keras`
_PROXY_VARS = ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
_LOOPBACK = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}  # gRPC stays on loopback


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


def _start(strategy: str, out, **env: str) -> Forked:
    """`distributed_worker.py --strategy STRATEGY --out OUT` forked from the keras server (no proxy, `env` added)."""
    argv = [worker.__file__, "--strategy", strategy, "--out", str(out)]
    return start_forked(argv, env={**_LOOPBACK, **env}, unset=_PROXY_VARS, timeout=TIMEOUT_S)


def _finish(children: List[Forked]) -> None:
    """Waits for the children (each killed past `TIMEOUT_S` from its start) and checks each exited cleanly; a
    failed child ends the others (a multi-worker process would wait for its failed peer until its timeout)."""
    try:
        for child in children:
            done = child.wait()
            assert done.returncode == 0, (
                f"worker failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
    finally:
        for child in children:
            child.kill()  # a no-op for children that finished


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Dict[str, tuple]:
    """Both strategies' runs, started together (the two multi-worker processes wait on each other):
    `{name: ([children], output paths)}`."""
    mirrored_out = tmp_path_factory.mktemp("mirrored") / "weights.npz"
    runs = {"mirrored": ([_start("mirrored", mirrored_out)], [mirrored_out])}
    tmp = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    children, outs = [], []
    for index in range(2):
        outs.append(tmp / f"weights-{index}.npz")
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        children.append(_start("multi_worker", outs[-1], TF_CONFIG=json.dumps(tf_config)))
    runs["multi_worker"] = (children, outs)
    yield runs
    for children, _ in runs.values():
        for child in children:
            child.kill()  # a no-op for children that finished
            with contextlib.suppress(RuntimeError):  # a server that died: already reported by the fixtures
                child.wait()


@pytest.fixture(scope="module")
def single_device(started) -> Dict:
    """The reference: `worker.REFERENCE` trained here, on one device, on the same global batch (while the
    children run: `started` comes first)."""
    keras.mixed_precision.set_dtype_policy("float32")
    name, jit = worker.REFERENCE
    return worker.train(name, jit_compile=jit)


@pytest.fixture(scope="module")
def mirrored(started, single_device) -> Dict[str, np.ndarray]:
    children, (out,) = started["mirrored"]
    _finish(children)
    return load_npz(out)


@pytest.fixture(scope="module")
def multi_worker(started, single_device) -> List[Dict[str, np.ndarray]]:
    children, outs = started["multi_worker"]
    _finish(children)
    return [load_npz(out) for out in outs]


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
    _assert_same_training(mirrored, single_device, key)


@pytest.mark.parametrize("model_jit, layer_jit", worker.STACKED_RUNS)
def test_stacked_layers_under_mirrored_strategy_match_one_device(mirrored, model_jit, layer_jit):
    """Two replicas (two logical CPUs) train, evaluate and predict the book's stacked model as one device does,
    from the same weights.

    Plain SGD on the same global batches: the only difference is the order in which the replicas' gradients
    are summed (float32 rounding); a wrong reduction moves the weights by ~0.1.
    """
    key = worker.stacked_run_key(model_jit, layer_jit)
    for prefix in (f"{key}/mirrored", "stacked-single"):
        if f"{prefix}/error" in mirrored:
            pytest.fail(f"{prefix} run failed:\n{mirrored[f'{prefix}/error']}", pytrace=False)
    assert int(mirrored["num_replicas"]) == 2
    run = {name[len(f"{key}/mirrored/") :]: v for name, v in mirrored.items() if name.startswith(f"{key}/mirrored/")}
    single = {name[len("stacked-single/") :]: v for name, v in mirrored.items() if name.startswith("stacked-single/")}
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
        _assert_same_training(run, single_device, key)
    for got, want in zip(multi_worker[0].values(), multi_worker[1].values()):
        np.testing.assert_array_equal(got, want)  # synchronous: both workers hold identical weights


def test_free_ports_are_distinct_and_bindable():
    ports = _free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
