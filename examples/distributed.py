"""Data-parallel training with `tf.distribute`: `MirroredStrategy` and `MultiWorkerMirroredStrategy`.

Both layers are ordinary Keras layers, so scaling out is the standard Keras recipe: create the model (and
compile it) inside `strategy.scope()`, feed `fit` the *global* batch, and each replica gets a slice of it;
gradients are averaged over the global batch, so N replicas take the same steps as one device would.

Roles (`--role`):
  demo      (default) on this machine, no GPU needed: trains with MirroredStrategy over two logical CPU
            devices, then starts two worker processes that train with MultiWorkerMirroredStrategy over
            127.0.0.1, and checks that both reach the same weights.
  mirrored  one machine, all its GPUs (or N logical CPUs with --cpu-replicas N).
  worker    one process of a multi-worker job; reads the cluster from the TF_CONFIG environment variable.

On a real cluster, start `python examples/distributed.py --role worker` once per host, each with TF_CONFIG
naming every worker and its own index (see docs/scaling.md), e.g. on host 0 of two:
  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'

Run:  python examples/distributed.py [--quick]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

STEPS, FEATURES, UNITS = 20, 1, 16


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--role", choices=["demo", "mirrored", "worker"], default="demo")
    parser.add_argument("--layer", choices=["StaticUnroll", "DynamicUnroll"], default="DynamicUnroll")
    parser.add_argument("--cpu-replicas", type=int, default=2, help="logical CPU replicas when there is no GPU")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--save-weights", default=None, help="write the trained weights here (.npz)")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------ the task
def time_series(n_series: int):
    """Noisy sine waves: predict the value after each window of STEPS values (the notebook's time series)."""
    rng = np.random.default_rng(0)
    t0 = rng.uniform(0, 10, size=(n_series, 1))
    t = t0 + np.arange(STEPS + 1) * 0.1
    series = np.sin(t) * np.sin(5 * t) + 0.05 * rng.normal(size=t.shape)
    return series[:, :STEPS, None].astype("float32"), series[:, STEPS:].astype("float32")


def make_dataset(global_batch: int, n_series: int):
    """The global batch: `fit` splits each one across the replicas (no shuffling, so runs are comparable)."""
    import tensorflow as tf

    x, y = time_series(n_series)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def make_model(layer_name: str):
    import keras

    import keras_unroll as ku

    keras.utils.set_random_seed(42)  # same initial weights in every process
    layer = getattr(ku, layer_name)(ku.BasicRNNCell(UNITS))
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def train(strategy, name: str, args) -> list:
    per_replica_batch = 4 if args.quick else 32
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    epochs = args.epochs or (2 if args.quick else 20)
    n_series = global_batch * (3 if args.quick else 50)
    with strategy.scope():  # variables are created once per replica and kept in sync
        model = make_model(args.layer)
    history = model.fit(make_dataset(global_batch, n_series), epochs=epochs, shuffle=False, verbose=0)
    print(
        f"  {name}: {strategy.num_replicas_in_sync} replicas, global batch {global_batch}, "
        f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}"
    )
    weights = model.get_weights()
    if args.save_weights:
        np.savez(args.save_weights, *weights)
    return weights


# ---------------------------------------------------------------------------------------- strategies
def keras3_multi_worker_fix(strategy):
    """Lets `model.fit` run under `MultiWorkerMirroredStrategy` with Keras 3 (keras-team/keras#20585).

    Keras' TF trainer asks this strategy to reduce a nested `(x, y)` batch in one call, and scalar logs along
    `axis=0`; both fail ("Attempt to convert a value (PerReplica...)" / "Invalid reduction dimension 0").
    Reducing leaf by leaf, and scalars across replicas only, is what both calls mean.
    """
    import tensorflow as tf

    reduce_one = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda leaf: reduce(reduce_op, leaf, axis), value)
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return reduce_one(reduce_op, value, axis)

    strategy.reduce = reduce
    return strategy


def mirrored_strategy(cpu_replicas: int):
    """All GPUs of this machine; without a GPU, `cpu_replicas` logical CPUs (set before TF uses a device)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_local_workers(args, out_dir: str, n_workers: int = 2, timeout_s: float = 600) -> list:
    """Starts `n_workers` copies of this script as a MultiWorkerMirroredStrategy cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(n_workers)]}
    procs, outs = [], []
    for index in range(n_workers):
        outs.append(os.path.join(out_dir, f"worker-{index}.npz"))
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        command = [sys.executable, os.path.abspath(__file__), "--role", "worker", "--layer", args.layer]
        command += ["--save-weights", outs[-1]] + (["--quick"] if args.quick else [])
        command += ["--epochs", str(args.epochs)] if args.epochs else []
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout_s
    try:
        results = [proc.communicate(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    except subprocess.TimeoutExpired as error:
        for proc in procs:
            proc.kill()
        raise SystemExit(f"the workers did not finish within {timeout_s:.0f} s and were stopped") from error
    for index, (proc, (stdout, stderr)) in enumerate(zip(procs, results)):
        if proc.returncode != 0:
            raise SystemExit(f"worker {index} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        if index == 0:
            print(stdout.rstrip())
    return [list(np.load(out).values()) for out in outs]


def main() -> None:
    args = parse_args()
    if args.role == "worker":  # one process of a cluster described by TF_CONFIG
        import tensorflow as tf

        strategy = keras3_multi_worker_fix(tf.distribute.MultiWorkerMirroredStrategy())
        train(strategy, "MultiWorkerMirroredStrategy", args)
        return
    strategy = mirrored_strategy(args.cpu_replicas)
    print(f"MirroredStrategy on this machine ({args.layer}):")
    mirrored_weights = train(strategy, "MirroredStrategy", args)
    if args.role == "mirrored":
        return
    print("MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1:")
    with tempfile.TemporaryDirectory() as out_dir:
        workers = run_local_workers(args, out_dir)
    # Same data, same initial weights, same global batch (2 replicas both ways): the same training.
    difference = max(float(np.abs(a - b).max()) for worker in workers for a, b in zip(worker, mirrored_weights))
    print(f"largest weight difference, 2 workers vs 2 mirrored replicas: {difference:.2e}")
    assert difference < 1e-4, difference


if __name__ == "__main__":
    main()
