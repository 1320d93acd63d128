"""Tests for `keras_unroll.gpu`: `configure_gpus`, its report and the `devices` CLI subcommand.

Two layers:

- Real TensorFlow on this CPU-only machine, in fresh processes (forked before TensorFlow initialises:
  `fork_server`) where process state matters (device initialization cannot be undone): the no-GPU path, the
  after-initialization error with the caller's location, the identical re-call, `from_config_proto`, and the CLI.
- The planner on lists of fake devices, through the public dry run `configure_gpus.plan(...,
  devices=...)` and the `DeviceProvider` seam: fraction to MiB, equal memory growth, index mapping under
  `CUDA_VISIBLE_DEVICES`, errors; the driver query through `SystemDevices` and a fake `nvidia-smi`.
  TensorFlow itself is never patched, and no private name of `keras_unroll.gpu` is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import stat
import subprocess
import textwrap
from typing import List, Optional, Sequence

import pytest
import tensorflow as tf

import keras_unroll as ku
from keras_unroll import gpu
from keras_unroll.gpu import DriverGpu, DriverQueryError, GpuReport, GpuSetting, PhysicalGpu, SystemDevices

# --------------------------------------------------------------------------------------------------
# Helpers.


def _start_python(code: str):
    """Starts `code` in a fresh process forked from the fork server (TensorFlow imported, not initialised: the
    state a new interpreter has after `import tensorflow`), from the repository root."""
    from fork_server import start_forked

    return start_forked(["-c", code], timeout=180, unset=("CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH"))


def _result(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-3000:]
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, process.stdout[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


def _line_of(code: str, marker: str) -> int:
    return next(i for i, line in enumerate(code.splitlines(), start=1) if marker in line)


@dataclasses.dataclass
class FakeDevices:
    """A `DeviceProvider` over lists of fake devices. `driver=None`: no NVML and no nvidia-smi."""

    physical: Sequence[PhysicalGpu]
    driver: Optional[Sequence[DriverGpu]] = None
    driver_queries: int = 0

    def physical_gpus(self) -> Sequence[PhysicalGpu]:
        return self.physical

    def driver_gpus(self) -> Sequence[DriverGpu]:
        self.driver_queries += 1
        if self.driver is None:
            raise DriverQueryError("fake reason: no pynvml, no nvidia-smi")
        return self.driver


def tf_gpus(count: int, model: Optional[str] = None) -> List[PhysicalGpu]:
    return [PhysicalGpu(i, f"/physical_device:GPU:{i}", model) for i in range(count)]


def driver_gpus(*totals_mb: int, model: Optional[str] = None) -> List[DriverGpu]:
    return [DriverGpu(i, f"GPU-{i}0a1b2c3-uuid", total, model) for i, total in enumerate(totals_mb)]


def plan(devices, environ=None, **kwargs) -> GpuReport:
    """`configure_gpus.plan(**kwargs)` on fake `devices` with the environment `environ` (default: empty)."""
    return ku.configure_gpus.plan(**kwargs, devices=devices, environ={} if environ is None else environ)


# --------------------------------------------------------------------------------------------------
# Real TensorFlow, fresh processes.

BEFORE_INIT_CODE = textwrap.dedent(
    """
    import argparse, json, logging, os, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(name)s %(message)s")
    import tensorflow as tf
    from keras_unroll import gpu
    from keras_unroll_cli import add_devices_command

    out = {}
    config = tf.compat.v1.ConfigProto()  # the notebook's cell
    config.gpu_options.visible_device_list = "0"
    config.gpu_options.per_process_gpu_memory_fraction = 0.5
    config.gpu_options.allow_growth = True
    report = gpu.configure_gpus.from_config_proto(config)
    out["report"] = [report == gpu.GpuReport(), str(report)]
    out["env_growth"] = os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")
    out["keyword_call_is_same"] = gpu.configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True) is report
    # Before the first tensor, other settings are still accepted: the calls' initialization check did not
    # initialize TensorFlow, and left the thread count it probes with at TensorFlow's default.
    out["different_before_init"] = str(gpu.configure_gpus(memory_limit_mb=4000))
    out["threads_after_calls"] = tf.config.threading.get_intra_op_parallelism_threads()
    tf.config.threading.set_inter_op_parallelism_threads(2)  # raises once TensorFlow is initialized
    tf.config.threading.set_inter_op_parallelism_threads(0)
    report = gpu.configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True)

    x = tf.constant([1.0, 2.0]) * 2  # TensorFlow initializes its devices here
    try:
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:
        out["initialized_after_tensor"] = True
    again = gpu.configure_gpus(visible=[0], memory_fraction=0.5, memory_growth=True)
    out["identical_after_init_is_same"] = again is report
    try:
        gpu.configure_gpus(visible="0", memory_limit_mb=4000)  # MARK_DIFFERENT
    except RuntimeError as error:
        out["different_error"] = str(error)

    parser = argparse.ArgumentParser(prog="keras-unroll")
    add_devices_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devices"])
    print("CLI-BEGIN")
    out["cli_rc"] = args.func(args)
    print("CLI-END")
    print("RESULT " + json.dumps(out))
    """
)

AFTER_INIT_CODE = textwrap.dedent(
    """
    import argparse, json
    import tensorflow as tf
    from keras_unroll import gpu
    from keras_unroll_cli import add_devices_command

    out = {}
    tf.constant(1.0)  # a tensor first: TensorFlow initializes its devices
    try:
        gpu.configure_gpus(memory_growth=True)  # MARK_FIRST
    except RuntimeError as error:
        out["error"] = str(error)
    out["last_report_is_none"] = gpu.configure_gpus.last_report is None

    config = tf.compat.v1.ConfigProto()
    config.gpu_options.allow_growth = True
    try:
        gpu.configure_gpus.from_config_proto(config)  # MARK_PROTO
    except RuntimeError as error:
        out["proto_error"] = str(error)
    try:
        gpu.configure_gpus(memory_fraction=0)  # argument errors come first, GPU or not
    except ValueError as error:
        out["validation_error"] = str(error)

    parser = argparse.ArgumentParser(prog="keras-unroll")
    add_devices_command(parser.add_subparsers(dest="command"))
    print("CLI-BEGIN")
    args = parser.parse_args(["devices"])
    out["cli_rc"] = args.func(args)
    print("CLI-END")
    try:
        parser.parse_args(["devices", "--memory-fraction", "1.5"])  # argparse rejects it, in one line
    except SystemExit as exit:
        out["cli_bad_rc"] = exit.code
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def subprocess_runs():
    """Both scripts, started at once."""
    started = {
        "before_init": _start_python(BEFORE_INIT_CODE),
        "after_init": _start_python(AFTER_INIT_CODE),
    }
    return {name: process.wait() for name, process in started.items()}


@pytest.fixture(scope="module")
def before_init_run(subprocess_runs):
    process = subprocess_runs["before_init"]
    return process, _result(process)


@pytest.mark.subprocess
def test_no_gpu_returns_empty_report_and_logs_one_info_line(before_init_run):
    process, out = before_init_run
    is_empty, text = out["report"]
    assert is_empty
    assert "TensorFlow sees no GPU" in text
    info_lines = [line for line in process.stdout.splitlines() if line.startswith("LOG INFO keras_unroll")]
    # One line for each new setting (three calls: the notebook's, a different one, the notebook's again);
    # the identical re-calls are no-ops and log nothing.
    assert (
        info_lines
        == ["LOG INFO keras_unroll configure_gpus: TensorFlow sees no GPU; nothing to configure (running on CPU)."] * 3
    )
    assert "TensorFlow sees no GPU" in out["different_before_init"]
    assert out["env_growth"] is None  # no GPU: nothing to cap, no allocator variable set


@pytest.mark.subprocess
def test_configure_gpus_leaves_tensorflow_uninitialized_and_its_threads_alone(before_init_run):
    """The initialization check behind every call must not itself initialize TensorFlow (else the first call
    would make every later one "too late"), nor leave its probe's thread count behind."""
    _, out = before_init_run
    assert out["threads_after_calls"] == 0  # TensorFlow's default, unchanged by the probe
    assert out["initialized_after_tensor"] is True  # the same public probe does see the initialization


@pytest.mark.subprocess
def test_identical_recall_is_a_noop_even_after_initialization(before_init_run):
    _, out = before_init_run
    # from_config_proto(notebook config) and the keyword call are the same settings.
    assert out["keyword_call_is_same"] is True
    assert out["identical_after_init_is_same"] is True


@pytest.mark.subprocess
def test_different_settings_after_initialization_raise_with_caller_location(before_init_run):
    _, out = before_init_run
    message = out["different_error"]
    assert "before any model, tensor or device query" in message
    assert f"<string>:{_line_of(BEFORE_INIT_CODE, 'MARK_DIFFERENT')} (in <module>)" in message
    assert "Received: visible=[0], memory_fraction=None, memory_limit_mb=4000" in message


@pytest.mark.subprocess
def test_devices_command_prints_devices_memory_and_last_report(before_init_run):
    process, out = before_init_run
    assert out["cli_rc"] == 0
    cli = process.stdout.split("CLI-BEGIN\n", 1)[1].split("CLI-END", 1)[0]
    assert "Physical devices:\n  /physical_device:CPU:0 (CPU)" in cli
    assert "Logical devices:\n  /device:CPU:0 (CPU), memory: " in cli
    assert cli.rstrip().endswith("TensorFlow sees no GPU; nothing to configure (running on CPU).")


@pytest.mark.subprocess
def test_after_initialization_first_call_raises_and_cli_reports_not_configured(subprocess_runs):
    process = subprocess_runs["after_init"]
    out = _result(process)

    assert "must run before TensorFlow initializes its devices" in out["error"]
    assert "before any model, tensor or device query" in out["error"]
    assert f"<string>:{_line_of(AFTER_INIT_CODE, 'MARK_FIRST')} (in <module>)" in out["error"]
    assert "Received: visible=None, memory_fraction=None, memory_limit_mb=None, memory_growth=True" in out["error"]
    assert out["last_report_is_none"] is True
    assert f"<string>:{_line_of(AFTER_INIT_CODE, 'MARK_PROTO')}" in out["proto_error"]
    assert "Received: memory_fraction=0" in out["validation_error"]

    cli = process.stdout.split("CLI-BEGIN\n", 1)[1].split("CLI-END", 1)[0]
    assert out["cli_rc"] == 0
    assert cli.rstrip().endswith(
        "GPU settings: TensorFlow's defaults (every GPU visible, all of its memory allocated at start); "
        "--visible, --memory-fraction, --memory-limit-mb and --memory-growth change them."
    )
    # The CPU's default allocator counts nothing: "n/a" and how to turn counting on, not a misleading 0 MiB.
    assert "/device:CPU:0 (CPU), memory: n/a\n" in cli
    assert "memory n/a: TensorFlow counts memory here only with TF_CPU_ALLOCATOR_USE_BFC=true" in cli
    assert out["cli_bad_rc"] == 2
    assert "argument --memory-fraction: expected a number in (0, 1]" in process.stderr
    assert "Received: '1.5'" in process.stderr and "memory_fraction" not in process.stderr


# --------------------------------------------------------------------------------------------------
# Argument validation (raises before any TensorFlow state is read or changed).


@pytest.mark.parametrize(
    "kwargs, error, expected",
    [
        ({"memory_fraction": 0}, ValueError, "Received: memory_fraction=0"),
        ({"memory_fraction": 1.5}, ValueError, "Received: memory_fraction=1.5"),
        ({"memory_fraction": -0.25}, ValueError, "Received: memory_fraction=-0.25"),
        ({"memory_fraction": float("nan")}, ValueError, "Received: memory_fraction=nan"),
        ({"memory_fraction": "0.5"}, TypeError, "Received: memory_fraction='0.5'"),
        ({"memory_fraction": True}, TypeError, "Received: memory_fraction=True"),
        ({"memory_limit_mb": -1}, ValueError, "Received: memory_limit_mb=-1"),
        ({"memory_limit_mb": 0}, ValueError, "Received: memory_limit_mb=0"),
        ({"memory_limit_mb": 8000.5}, TypeError, "Received: memory_limit_mb=8000.5"),
        ({"visible": "a"}, ValueError, "Received: visible='a'"),
        ({"visible": "0,,1"}, ValueError, "Received: visible='0,,1'"),
        ({"visible": "-1"}, ValueError, "Received: visible='-1'"),
        ({"visible": ""}, ValueError, "Received: visible=''"),
        ({"visible": "0,0"}, ValueError, "Received: visible='0,0'"),
        ({"visible": [0, -1]}, ValueError, "Received: visible=[0, -1]"),
        ({"visible": [0, "1"]}, TypeError, "Received: visible=[0, '1']"),
        ({"visible": 1.0}, TypeError, "Received: visible=1.0"),
        ({"visible": True}, TypeError, "Received: visible=True"),
        ({"memory_growth": "yes"}, TypeError, "Received: memory_growth='yes'"),
        (
            {"memory_fraction": 0.5, "memory_limit_mb": 8000},
            ValueError,
            "Received: memory_fraction=0.5, memory_limit_mb=8000",
        ),
    ],
)
def test_invalid_arguments_raise_with_received_value(kwargs, error, expected):
    with pytest.raises(error) as info:
        gpu.configure_gpus(**kwargs)
    assert expected in str(info.value)
    assert f"`{next(iter(kwargs))}`" in str(info.value)  # names the argument


@pytest.mark.parametrize(
    "visible, expected",
    [("0", (0,)), ("0,1", (0, 1)), (" 2 , 0 ", (2, 0)), (1, (1,)), ([0, 1], (0, 1)), ([], ()), (None, None)],
)
def test_visible_forms_parse_to_indices(visible, expected):
    assert plan(FakeDevices(tf_gpus(3)), visible=visible).gpus_visible == ((0, 1, 2) if expected is None else expected)


# --------------------------------------------------------------------------------------------------
# from_config_proto on a real tf.compat.v1.ConfigProto (parsing only; applying runs in subprocesses).


def test_config_proto_options_become_the_same_request_as_keywords():
    config = tf.compat.v1.ConfigProto()
    config.gpu_options.visible_device_list = "0,1"
    config.gpu_options.per_process_gpu_memory_fraction = 0.3  # float32 in the proto
    config.gpu_options.allow_growth = True
    devices = FakeDevices(tf_gpus(3), driver_gpus(10000, 10000, 10000))
    report = ku.configure_gpus.plan_from_config_proto(config, devices=devices, environ={})
    assert report == plan(devices, visible="0,1", memory_fraction=0.3, memory_growth=True)
    assert [(s.index, s.memory_fraction, s.memory_limit_mb, s.memory_growth) for s in report.settings] == [
        (0, 0.3, 3000, True),  # 0.3 exactly, not float32's 0.30000001192092896
        (1, 0.3, 3000, True),
    ]


def test_default_config_proto_requests_nothing():
    devices = FakeDevices(tf_gpus(2), driver=None)
    report = ku.configure_gpus.plan_from_config_proto(tf.compat.v1.ConfigProto(), devices=devices, environ={})
    assert report == plan(devices)
    assert [(s.memory_growth, s.memory_limit_mb) for s in report.settings] == [(False, None), (False, None)]


def test_config_proto_errors_name_the_proto_field():
    config = tf.compat.v1.ConfigProto()
    config.gpu_options.per_process_gpu_memory_fraction = 1.5  # TF1's unified memory
    with pytest.raises(ValueError, match=r"config\.gpu_options\.per_process_gpu_memory_fraction.*Received: "):
        gpu.configure_gpus.from_config_proto(config)

    config = tf.compat.v1.ConfigProto()
    config.gpu_options.visible_device_list = "0,a"
    with pytest.raises(ValueError, match=r"Received: config\.gpu_options\.visible_device_list='0,a'"):
        gpu.configure_gpus.from_config_proto(config)

    config = tf.compat.v1.ConfigProto()
    config.gpu_options.experimental.virtual_devices.add().memory_limit_mb.append(1024)
    with pytest.raises(ValueError, match="set_logical_device_configuration"):
        gpu.configure_gpus.from_config_proto(config)

    with pytest.raises(TypeError, match=r"Received: config=\{'allow_growth': True\}"):
        gpu.configure_gpus.from_config_proto({"allow_growth": True})


# --------------------------------------------------------------------------------------------------
# The planner on fake devices.


def test_fraction_becomes_mib_of_each_gpus_total_memory():
    devices = FakeDevices(tf_gpus(2), driver_gpus(16160, 24576))
    report = plan(devices, memory_fraction=0.5)
    assert report.gpus_visible == (0, 1)
    assert report.settings == (
        GpuSetting(0, "0", memory_growth=False, memory_limit_mb=8080, memory_fraction=0.5, total_memory_mb=16160),
        GpuSetting(1, "1", memory_growth=False, memory_limit_mb=12288, memory_fraction=0.5, total_memory_mb=24576),
    )
    assert report.environment == ()  # a cap without growth needs no allocator variable


def test_fraction_rounds_down_to_whole_mib():
    devices = FakeDevices(tf_gpus(1), driver_gpus(24576))
    report = plan(devices, memory_fraction=0.3)
    assert report.settings[0].memory_limit_mb == 7372  # 0.3 * 24576 = 7372.8, never above the share


def test_memory_growth_is_set_alike_on_every_visible_gpu():
    devices = FakeDevices(tf_gpus(3), driver=None)  # no driver: growth must not need one
    report = plan(devices, visible=[0, 2], memory_growth=True)
    assert report.gpus_visible == (0, 2)
    assert [(s.index, s.memory_growth, s.memory_limit_mb) for s in report.settings] == [
        (0, True, None),
        (2, True, None),
    ]
    assert report.environment == ()  # plain growth goes through tf.config.experimental.set_memory_growth
    assert devices.driver_queries == 0

    everything = plan(devices, memory_growth=True)
    assert [s.memory_growth for s in everything.settings] == [True, True, True]


def test_growth_with_a_cap_plans_force_allow_growth_and_the_limit():
    devices = FakeDevices(tf_gpus(2), driver_gpus(16160, 16160))
    report = plan(devices, memory_fraction=0.5, memory_growth=True)
    assert report.environment == (("TF_FORCE_GPU_ALLOW_GROWTH", "true"),)
    assert [(s.memory_limit_mb, s.memory_growth) for s in report.settings] == [(8080, True), (8080, True)]

    no_driver = FakeDevices(tf_gpus(1), driver=None)
    report = plan(no_driver, memory_limit_mb=4000, memory_growth=True)
    assert report.environment == (("TF_FORCE_GPU_ALLOW_GROWTH", "true"),)
    assert report.settings[0].memory_limit_mb == 4000
    assert no_driver.driver_queries == 0  # a limit in MiB needs no driver


def test_growth_with_a_cap_warns_when_overriding_the_environment(caplog):
    devices = FakeDevices(tf_gpus(1))
    with caplog.at_level(logging.WARNING, logger="keras_unroll"):
        report = plan(devices, {"TF_FORCE_GPU_ALLOW_GROWTH": "false"}, memory_limit_mb=4000, memory_growth=True)
    assert report.environment == (("TF_FORCE_GPU_ALLOW_GROWTH", "true"),)
    assert "Overriding TF_FORCE_GPU_ALLOW_GROWTH='false'" in caplog.text


def test_cuda_visible_devices_renumbering_maps_to_driver_gpus():
    # The driver has 4 GPUs; CUDA_VISIBLE_DEVICES="2,3" shows TensorFlow two, as GPU:0 and GPU:1.
    devices = FakeDevices(tf_gpus(2), driver_gpus(8000, 16000, 24000, 32000))
    report = plan(devices, {"CUDA_VISIBLE_DEVICES": "2,3"}, visible="1", memory_fraction=0.5)
    assert report.gpus_visible == (1,)
    (setting,) = report.settings
    assert (setting.index, setting.driver_gpu, setting.total_memory_mb, setting.memory_limit_mb) == (
        1,
        "3",
        32000,
        16000,
    )
    assert report.cuda_visible_devices == "2,3"


def test_cuda_visible_devices_uuid_prefix_maps_to_driver_gpu():
    devices = FakeDevices(tf_gpus(1), driver_gpus(8000, 16000, 24000))
    report = plan(devices, {"CUDA_VISIBLE_DEVICES": "GPU-20a1"}, memory_fraction=0.25)
    assert (report.settings[0].driver_gpu, report.settings[0].memory_limit_mb) == ("GPU-20a1", 6000)


def test_cuda_visible_devices_set_too_late_is_applied_as_visible(caplog):
    # TensorFlow sees both GPUs, so the variable came after CUDA started; its intent is kept.
    devices = FakeDevices(tf_gpus(2))
    with caplog.at_level(logging.WARNING, logger="keras_unroll"):
        report = plan(devices, {"CUDA_VISIBLE_DEVICES": "1"})
    assert report.gpus_visible == (1,)
    assert "set after CUDA initialized" in caplog.text

    explicit = plan(devices, {"CUDA_VISIBLE_DEVICES": "1"}, visible=[0])
    assert explicit.gpus_visible == (0,)  # an explicit `visible` wins


def test_nonexistent_index_error_lists_the_gpus_that_exist():
    devices = FakeDevices(tf_gpus(2))
    with pytest.raises(ValueError) as info:
        plan(devices, {"CUDA_VISIBLE_DEVICES": "2,3"}, visible=[0, 3])
    message = str(info.value)
    assert "names GPU 3, which does not exist" in message
    assert "TensorFlow sees 2 GPU(s): GPU:0 (driver GPU 2), GPU:1 (driver GPU 3)" in message
    assert "numbers the GPUs listed in CUDA_VISIBLE_DEVICES='2,3' from 0" in message
    assert message.endswith("Received: visible=[0, 3]")


def test_missing_nvml_and_nvidia_smi_asks_for_memory_limit_mb():
    devices = FakeDevices(tf_gpus(1), driver=None)
    with pytest.raises(RuntimeError) as info:
        plan(devices, memory_fraction=0.5)
    message = str(info.value)
    assert "memory_fraction=0.5 needs each GPU's total memory" in message
    assert "nvidia-ml-py" in message and "nvidia-smi" in message
    assert "fake reason: no pynvml, no nvidia-smi" in message
    assert "pass `memory_limit_mb=<MiB>` instead" in message


def test_gpu_unknown_to_the_driver_asks_for_memory_limit_mb():
    devices = FakeDevices(tf_gpus(2), driver_gpus(16160))  # the driver lists one GPU only
    with pytest.raises(RuntimeError, match=r"GPU:1 \(driver GPU 1\).*memory_limit_mb"):
        plan(devices, memory_fraction=0.5)


def test_cuda_and_driver_order_mismatch_is_detected_by_model():
    devices = FakeDevices(tf_gpus(1, model="NVIDIA A100"), driver_gpus(16160, model="NVIDIA T4"))
    with pytest.raises(RuntimeError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        plan(devices, memory_fraction=0.5)


def test_no_gpu_plans_an_empty_report_whatever_was_asked():
    devices = FakeDevices([], driver=None)
    report = plan(devices, visible=[3], memory_fraction=0.5, memory_growth=True)
    assert report == GpuReport()
    assert devices.driver_queries == 0


def test_report_str_shows_gpus_visibility_settings_and_environment():
    devices = FakeDevices(tf_gpus(2, model="Tesla V100"), driver_gpus(16160, 16160, model="Tesla V100"))
    report = plan(devices, visible="1", memory_fraction=0.5, memory_growth=True)
    assert str(report) == "\n".join(
        [
            "GPU configuration:",
            "  GPUs seen:    GPU:0 (Tesla V100), GPU:1 (Tesla V100)",
            "  GPUs visible: GPU:1",
            "  GPU:1 (driver GPU 1): memory_limit=8080 MiB (0.5 of 16160 MiB), memory growth on",
            "  environment:  TF_FORCE_GPU_ALLOW_GROWTH=true",
        ]
    )
    hidden = plan(devices, visible=[])
    assert "GPUs visible: none (CPU only)" in str(hidden)


def test_cuda_entries_stop_at_the_first_invalid_one_like_cuda():
    # Indices and UUIDs, spaces allowed: TensorFlow's three GPUs are the driver's 0, 2 and GPU-ab...
    report = plan(FakeDevices(tf_gpus(3)), {"CUDA_VISIBLE_DEVICES": "0, 2,GPU-ab"})
    assert [s.driver_gpu for s in report.settings] == ["0", "2", "GPU-ab"]
    # ... CUDA reads "1,-1,2" as "1": one GPU, the driver's 1 ...
    report = plan(FakeDevices(tf_gpus(1)), {"CUDA_VISIBLE_DEVICES": "1,-1,2"})
    assert [s.driver_gpu for s in report.settings] == ["1"]
    # ... so TensorFlow seeing two means the variable came too late, and it is applied as visible=[1] ...
    report = plan(FakeDevices(tf_gpus(2)), {"CUDA_VISIBLE_DEVICES": "1,-1,2"})
    assert report.gpus_visible == (1,)
    # ... and an empty value lists no GPU: every one hidden, as CUDA would have.
    assert plan(FakeDevices(tf_gpus(1)), {"CUDA_VISIBLE_DEVICES": ""}).gpus_visible == ()


# --------------------------------------------------------------------------------------------------
# The driver query (a fake `nvidia-smi` executable; NVML is skipped or absent).


def _write_fake_nvidia_smi(tmp_path: pathlib.Path, stdout: str, code: int = 0) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}EOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_nvidia_smi_output_is_parsed(tmp_path):
    smi = _write_fake_nvidia_smi(
        tmp_path, "0, GPU-aaa, 16160, Tesla V100-SXM2-16GB\n1, GPU-bbb, 81920, NVIDIA A100, 80GB PCIe\n"
    )
    assert SystemDevices(use_nvml=False, nvidia_smi=smi).driver_gpus() == [
        DriverGpu(0, "GPU-aaa", 16160, "Tesla V100-SXM2-16GB"),
        DriverGpu(1, "GPU-bbb", 81920, "NVIDIA A100, 80GB PCIe"),
    ]


def test_failing_or_missing_nvidia_smi_raises_a_query_error(tmp_path):
    smi = _write_fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed\n", code=9)
    with pytest.raises(DriverQueryError, match="exited with code 9: NVIDIA-SMI has failed"):
        SystemDevices(use_nvml=False, nvidia_smi=smi).driver_gpus()
    with pytest.raises(DriverQueryError, match="`no-such-nvidia-smi` is not on the PATH"):
        SystemDevices(use_nvml=False, nvidia_smi="no-such-nvidia-smi").driver_gpus()


def test_missing_nvml_module_is_reported():
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("nvidia-ml-py is installed here, so the missing-module path cannot be reached")
    with pytest.raises(DriverQueryError, match=r"`nvidia-ml-py` package \(module `pynvml`\) is not installed"):
        SystemDevices(use_nvml=True, nvidia_smi="no-such-nvidia-smi").driver_gpus()


# --------------------------------------------------------------------------------------------------
# CLI registration (running it initializes TensorFlow, so that happens in the subprocesses above). The command
# lives in the command line (`keras_unroll_cli`), on top of `keras_unroll.gpu`.


def test_add_command_registers_devices_with_options():
    from keras_unroll_cli import add_devices_command

    parser = argparse.ArgumentParser(prog="keras-unroll")
    returned = add_devices_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devices", "--visible", "0,1", "--memory-fraction", "0.5", "--memory-growth"])
    assert isinstance(returned, argparse.ArgumentParser)
    assert (args.command, args.visible, args.memory_fraction, args.memory_limit_mb, args.memory_growth) == (
        "devices",
        "0,1",
        0.5,
        None,
        True,
    )
    assert callable(args.func)  # what it prints is checked in the fresh processes above
    defaults = parser.parse_args(["devices"])
    assert (defaults.visible, defaults.memory_fraction, defaults.memory_growth) == (None, None, False)


# --------------------------------------------------------------------------------------------------
# The dry run itself.


def test_plan_is_a_dry_run_that_validates_like_a_call():
    environment, last = dict(os.environ), ku.configure_gpus.last_report
    report = plan(FakeDevices(tf_gpus(2)), memory_limit_mb=4000, memory_growth=True)
    assert report.environment == (("TF_FORCE_GPU_ALLOW_GROWTH", "true"),)  # planned ...
    assert dict(os.environ) == environment and ku.configure_gpus.last_report is last  # ... not applied
    with pytest.raises(ValueError, match="Received: memory_fraction=2"):
        plan(FakeDevices(tf_gpus(1)), memory_fraction=2)
    if not tf.config.list_physical_devices("GPU"):  # this machine, by default: no GPU, nothing to set
        assert ku.configure_gpus.plan(memory_fraction=0.5).settings == ()
