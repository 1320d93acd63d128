"""GPU visibility and memory settings for TensorFlow 2: the replacement for TF1's `ConfigProto` cell.

The TF1 notebook configured GPUs with an environment variable and a session config:

```python
os.environ["CUDA_VISIBLE_DEVICES"] = "0"
config = tf.ConfigProto()
config.gpu_options.per_process_gpu_memory_fraction = 0.5
config.gpu_options.allow_growth = True
```

TF2 has no session to pass that config to; the same choices go through `tf.config` before TensorFlow
initializes its devices. `configure_gpus` makes them in one call and returns a `GpuReport`:

```python
report = keras_unroll.configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True)
report = keras_unroll.configure_gpus.from_config_proto(config)  # the notebook's ConfigProto as is
```

How the module is put together:

- `_make_request` validates the arguments into a `_Request` (no TensorFlow involved).
- A `DeviceProvider` is the one seam to the machine: the GPUs TensorFlow lists and the GPUs the NVIDIA
  driver lists with their total memory (NVML, else `nvidia-smi`). `SystemDevices` is the real one;
  tests pass fake device lists.
- `_plan` turns a request, a provider and the environment into a `GpuReport` (pure, no side effects);
  `configure_gpus.plan(...)` is its public face: what `configure_gpus(...)` would do, on any devices.
- `_apply` performs the report's settings with `tf.config` and `os.environ`.

The `keras-unroll devices` command (in `keras_unroll_cli`, on top of the library) prints a report.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import numbers
import os
import shutil
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import tensorflow as tf

from keras_unroll.cell import check_bool

__all__ = [
    "DeviceProvider",
    "DriverGpu",
    "DriverQueryError",
    "GpuReport",
    "GpuSetting",
    "PhysicalGpu",
    "SystemDevices",
    "configure_gpus",
]

logger = logging.getLogger("keras_unroll")

VisibleSpec = Union[None, int, str, Sequence[int]]

_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
_CUDA_ENV = "CUDA_VISIBLE_DEVICES"


# --------------------------------------------------------------------------------------------------
# Devices: what TensorFlow sees, what the driver sees, and the seam between them and the planner.


@dataclasses.dataclass(frozen=True)
class PhysicalGpu:
    """A GPU as TensorFlow lists it (`tf.config.list_physical_devices("GPU")`).

    Args:
        index: position in TensorFlow's list, the `k` of `/physical_device:GPU:k`. With
            `CUDA_VISIBLE_DEVICES` set, TensorFlow numbers only the GPUs listed there, from 0.
        name: TensorFlow's device name, e.g. `"/physical_device:GPU:0"`.
        model: the GPU model from `tf.config.experimental.get_device_details`, e.g.
            `"NVIDIA A100-SXM4-40GB"`, or `None` if unknown.
    """

    index: int
    name: str
    model: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DriverGpu:
    """A GPU as the NVIDIA driver lists it (NVML or `nvidia-smi`), with its total memory.

    Args:
        index: the driver's index (`nvidia-smi` numbering, which ignores `CUDA_VISIBLE_DEVICES`).
        uuid: the GPU's UUID, e.g. `"GPU-5a9c..."`.
        total_memory_mb: total memory in MiB.
        model: the GPU model name, or `None` if unknown.
    """

    index: int
    uuid: str
    total_memory_mb: int
    model: Optional[str] = None


class DriverQueryError(Exception):
    """Neither NVML nor `nvidia-smi` could list the driver's GPUs; the message says what was tried.

    A `DeviceProvider.driver_gpus` raises it when the driver cannot be asked; `configure_gpus` then asks
    for `memory_limit_mb` instead of `memory_fraction` (a limit in MiB needs no driver).
    """


class DeviceProvider(Protocol):
    """The one seam between `configure_gpus` and the machine: GPU discovery and total memory.

    The real provider asks TensorFlow and the NVIDIA driver; tests pass lists of fake devices.
    """

    def physical_gpus(self) -> Sequence[PhysicalGpu]:
        """Returns the GPUs TensorFlow lists, in TensorFlow's order."""
        ...

    def driver_gpus(self) -> Sequence[DriverGpu]:
        """Returns the GPUs the driver lists. Raises `DriverQueryError` if it cannot be asked."""
        ...


def _parse_nvidia_smi(text: str) -> List[DriverGpu]:
    """Parses `nvidia-smi --query-gpu=index,uuid,memory.total,name --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        index, uuid, total, model = (part.strip() for part in line.split(",", 3))
        gpus.append(DriverGpu(int(index), uuid, int(float(total)), model or None))
    return gpus


def _as_text(value: Union[str, bytes]) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _query_driver_gpus(use_nvml: bool = True, nvidia_smi: str = "nvidia-smi") -> List[DriverGpu]:
    """Lists the driver's GPUs with NVML (`nvidia-ml-py`) if installed, else with `nvidia-smi`.

    Raises:
        DriverQueryError: if neither works; the message lists what was tried and why it failed.
    """
    tried = []
    if use_nvml:
        try:
            import pynvml  # provided by the `nvidia-ml-py` package
        except ImportError:
            tried.append("NVML: the `nvidia-ml-py` package (module `pynvml`) is not installed")
        else:
            try:
                pynvml.nvmlInit()
                try:
                    gpus = []
                    for i in range(pynvml.nvmlDeviceGetCount()):
                        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                        gpus.append(
                            DriverGpu(
                                index=i,
                                uuid=_as_text(pynvml.nvmlDeviceGetUUID(handle)),
                                total_memory_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                                model=_as_text(pynvml.nvmlDeviceGetName(handle)),
                            )
                        )
                    return gpus
                finally:
                    pynvml.nvmlShutdown()
            except pynvml.NVMLError as error:
                tried.append(f"NVML: {error}")
    executable = shutil.which(nvidia_smi)
    if executable is None:
        tried.append(f"`{nvidia_smi}` is not on the PATH")
    else:
        command = [
            executable,
            "--query-gpu=index,uuid,memory.total,name",
            "--format=csv,noheader,nounits",
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            tried.append(f"`{nvidia_smi}` failed: {error}")
        else:
            if result.returncode == 0:
                try:
                    return _parse_nvidia_smi(result.stdout)
                except ValueError as error:
                    tried.append(f"`{nvidia_smi}` printed output that could not be parsed ({error})")
            else:
                reason = (result.stderr or result.stdout).strip()
                tried.append(f"`{nvidia_smi}` exited with code {result.returncode}: {reason}")
    raise DriverQueryError("; ".join(tried))


class SystemDevices:
    """The real `DeviceProvider`: TensorFlow's physical GPUs and the NVIDIA driver's list.

    Args:
        use_nvml: ask NVML (the `nvidia-ml-py` package) first, if it is installed. Defaults to `True`.
        nvidia_smi: the `nvidia-smi` executable asked when NVML is not used or fails, a name on the PATH
            or a path. Defaults to `"nvidia-smi"`.

    Example:

    ```python
    devices = keras_unroll.gpu.SystemDevices(use_nvml=False)
    devices.driver_gpus()  # [DriverGpu(index=0, uuid='GPU-...', total_memory_mb=16160, ...)] or DriverQueryError
    ```
    """

    def __init__(self, use_nvml: bool = True, nvidia_smi: str = "nvidia-smi") -> None:
        self.use_nvml = use_nvml
        self.nvidia_smi = nvidia_smi

    def physical_gpus(self) -> List[PhysicalGpu]:
        gpus = []
        for i, device in enumerate(tf.config.list_physical_devices("GPU")):
            try:
                model = tf.config.experimental.get_device_details(device).get("device_name")
            except (ValueError, RuntimeError):
                model = None
            gpus.append(PhysicalGpu(index=i, name=device.name, model=model))
        return gpus

    def driver_gpus(self) -> List[DriverGpu]:
        return _query_driver_gpus(self.use_nvml, self.nvidia_smi)


# --------------------------------------------------------------------------------------------------
# The report.


@dataclasses.dataclass(frozen=True)
class GpuSetting:
    """The settings `configure_gpus` applied to one visible GPU.

    Args:
        index: TensorFlow's index of the GPU (`/physical_device:GPU:<index>`).
        driver_gpu: the driver's name for it: its `nvidia-smi` index, or the UUID given in
            `CUDA_VISIBLE_DEVICES`.
        memory_growth: whether TensorFlow allocates this GPU's memory on demand.
        memory_limit_mb: the cap on TensorFlow's allocator in MiB, or `None` for no cap.
        memory_fraction: the `memory_fraction` the cap was computed from, if any.
        total_memory_mb: the GPU's total memory in MiB, if it was looked up.
    """

    index: int
    driver_gpu: str
    memory_growth: bool
    memory_limit_mb: Optional[int] = None
    memory_fraction: Optional[float] = None
    total_memory_mb: Optional[int] = None

    def __str__(self) -> str:
        if self.memory_limit_mb is None:
            limit = "no memory limit"
        elif self.memory_fraction is not None:
            limit = f"memory_limit={self.memory_limit_mb} MiB ({self.memory_fraction:g} of {self.total_memory_mb} MiB)"
        else:
            limit = f"memory_limit={self.memory_limit_mb} MiB"
        growth = "on" if self.memory_growth else "off"
        return f"GPU:{self.index} (driver GPU {self.driver_gpu}): {limit}, memory growth {growth}"


@dataclasses.dataclass(frozen=True)
class GpuReport:
    """What `configure_gpus` found and did. `str(report)` gives a readable summary.

    Args:
        gpus_seen: every GPU TensorFlow lists (empty on a machine without GPU).
        gpus_visible: TensorFlow indices of the GPUs left visible.
        settings: one `GpuSetting` per visible GPU.
        environment: environment variables set, as `(name, value)` pairs, e.g.
            `(("TF_FORCE_GPU_ALLOW_GROWTH", "true"),)`.
        cuda_visible_devices: the value of `CUDA_VISIBLE_DEVICES` at the call, or `None` if unset.
    """

    gpus_seen: Tuple[PhysicalGpu, ...] = ()
    gpus_visible: Tuple[int, ...] = ()
    settings: Tuple[GpuSetting, ...] = ()
    environment: Tuple[Tuple[str, str], ...] = ()
    cuda_visible_devices: Optional[str] = None

    def __str__(self) -> str:
        if not self.gpus_seen:
            return "GPU configuration: TensorFlow sees no GPU; nothing to configure (running on CPU)."
        seen = ", ".join(f"GPU:{gpu.index}" + (f" ({gpu.model})" if gpu.model else "") for gpu in self.gpus_seen)
        lines = ["GPU configuration:", f"  GPUs seen:    {seen}"]
        if self.cuda_visible_devices is not None:
            lines.append(f"  CUDA_VISIBLE_DEVICES={self.cuda_visible_devices!r}")
        visible = ", ".join(f"GPU:{i}" for i in self.gpus_visible) or "none (CPU only)"
        lines.append(f"  GPUs visible: {visible}")
        lines.extend(f"  {setting}" for setting in self.settings)
        if self.environment:
            lines.append("  environment:  " + ", ".join(f"{k}={v}" for k, v in self.environment))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Argument validation.


@dataclasses.dataclass(frozen=True)
class _Request:
    visible: Optional[Tuple[int, ...]]
    memory_fraction: Optional[float]
    memory_limit_mb: Optional[int]
    memory_growth: bool

    def __str__(self) -> str:
        return (
            f"visible={None if self.visible is None else list(self.visible)}, "
            f"memory_fraction={self.memory_fraction}, memory_limit_mb={self.memory_limit_mb}, "
            f"memory_growth={self.memory_growth}"
        )


def _parse_visible(value: Any, name: str = "visible") -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(
            f'`{name}` must be GPU indices such as "0", "0,1" or [0, 1], not a bool. Received: {name}={value!r}'
        )
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(
            f'`{name}` must be GPU indices as a string ("0,1"), an int or a list of ints, not bytes '
            f"(whose items are character codes). Received: {name}={value!r}"
        )
    if isinstance(value, numbers.Integral):
        indices = [int(value)]
    elif isinstance(value, str):
        if not value.strip():
            raise ValueError(
                f'`{name}` is empty. Pass GPU indices such as "0" or "0,1", or [] to hide every '
                f"GPU. Received: {name}={value!r}"
            )
        indices = []
        for part in value.split(","):
            item = part.strip()
            if not (item.isascii() and item.isdigit()):
                raise ValueError(
                    f"`{name}` must list non-negative GPU indices separated by commas, such as "
                    f'"0" or "0,1"; {item!r} is not one. Received: {name}={value!r}'
                )
            indices.append(int(item))
    elif isinstance(value, Sequence):
        indices = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, numbers.Integral):
                raise TypeError(
                    f"`{name}` must contain integer GPU indices; {item!r} is a "
                    f"{type(item).__name__}. Received: {name}={value!r}"
                )
            indices.append(int(item))
    else:
        raise TypeError(
            f'`{name}` must be GPU indices as a string ("0,1"), an int or a list of ints. '
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if any(i < 0 for i in indices):
        raise ValueError(f"`{name}` must contain non-negative GPU indices. Received: {name}={value!r}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"`{name}` lists a GPU more than once. Received: {name}={value!r}")
    return tuple(indices)


def _check_fraction(value: Any, name: str = "memory_fraction") -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number in (0, 1], the share of each GPU's total memory. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    fraction = float(value)
    if not 0.0 < fraction <= 1.0:  # also rejects NaN
        raise ValueError(
            f"`{name}` must be in (0, 1], the share of each GPU's total memory; to cap memory in "
            f"MiB pass `memory_limit_mb` instead. Received: {name}={value!r}"
        )
    return fraction


def _check_limit(value: Any, name: str = "memory_limit_mb") -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive integer number of MiB. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer number of MiB. Received: {name}={value!r}")
    return int(value)


def _make_request(
    visible: VisibleSpec,
    memory_fraction: Optional[float],
    memory_limit_mb: Optional[int],
    memory_growth: bool,
    names: Tuple[str, str, str, str] = (
        "visible",
        "memory_fraction",
        "memory_limit_mb",
        "memory_growth",
    ),
) -> _Request:
    """Validates `configure_gpus` arguments. `names` are the argument names the errors use."""
    visible_name, fraction_name, limit_name, growth_name = names
    parsed_visible = _parse_visible(visible, visible_name)
    fraction = _check_fraction(memory_fraction, fraction_name)
    limit = _check_limit(memory_limit_mb, limit_name)
    if fraction is not None and limit is not None:
        raise ValueError(
            f"Pass either `{fraction_name}` or `{limit_name}`, not both: each sets the memory cap. "
            f"Received: {fraction_name}={memory_fraction!r}, {limit_name}={memory_limit_mb!r}"
        )
    return _Request(parsed_visible, fraction, limit, check_bool(memory_growth, growth_name))


def _request_from_config_proto(config: Any) -> _Request:
    """Reads the notebook's `tf.compat.v1.ConfigProto` GPU options into a `_Request`."""
    if not isinstance(config, tf.compat.v1.ConfigProto):
        raise TypeError(
            "`config` must be a `tf.compat.v1.ConfigProto`. "
            f"Received: config={config!r} of type {type(config).__name__}"
        )
    options = config.gpu_options
    if len(options.experimental.virtual_devices):
        raise ValueError(
            "`config.gpu_options.experimental.virtual_devices` is not translated by "
            "`from_config_proto`; call `tf.config.set_logical_device_configuration` instead. "
            f"Received: virtual_devices={list(options.experimental.virtual_devices)!r}"
        )
    visible = options.visible_device_list or None  # "" means every GPU, as in TF1
    # The proto stores a float32. The upb protobuf backend reads 0.3 back as 0.3, others as
    # 0.30000001192092896: round so it compares equal to `memory_fraction=0.3` with every backend.
    fraction = round(options.per_process_gpu_memory_fraction, 6) or None  # 0 is the proto default
    return _make_request(
        visible,
        fraction,
        None,
        bool(options.allow_growth),
        names=(
            "config.gpu_options.visible_device_list",
            "config.gpu_options.per_process_gpu_memory_fraction",
            "memory_limit_mb",
            "config.gpu_options.allow_growth",
        ),
    )


# --------------------------------------------------------------------------------------------------
# Planning: request + devices + environment -> report. Pure: no TensorFlow state is touched.


def _cuda_entries(value: str) -> List[str]:
    """The GPUs `CUDA_VISIBLE_DEVICES` lists; like CUDA, stops at the first invalid entry."""
    entries = []
    for part in value.split(","):
        item = part.strip()
        if (item.isascii() and item.isdigit()) or item.startswith(("GPU-", "MIG-")):
            entries.append(item)
        else:
            break
    return entries


def _describe(gpus: Sequence[PhysicalGpu], driver_ids: Sequence[str]) -> str:
    return ", ".join(f"GPU:{gpu.index} (driver GPU {driver_ids[gpu.index]})" for gpu in gpus)


def _find_driver_gpu(driver_id: str, driver_gpus: Sequence[DriverGpu]) -> Optional[DriverGpu]:
    for gpu in driver_gpus:
        if driver_id.isdigit() and gpu.index == int(driver_id):
            return gpu
        if driver_id.startswith("GPU-") and gpu.uuid.startswith(driver_id):  # CUDA accepts prefixes
            return gpu
    return None


def _plan(request: _Request, devices: DeviceProvider, environ: Mapping[str, str]) -> GpuReport:
    """Decides what to set for `request` on `devices`. Returns the report; applies nothing.

    Index mapping: TensorFlow numbers the GPUs CUDA shows it from 0. With
    `CUDA_VISIBLE_DEVICES="2,3"`, TensorFlow's GPU:0 is driver GPU 2 and GPU:1 is driver GPU 3, so
    `visible` indices are TensorFlow's, and total memory is looked up under the driver's id.
    """
    gpus = tuple(devices.physical_gpus())
    cuda_visible = environ.get(_CUDA_ENV)
    if not gpus:
        return GpuReport(cuda_visible_devices=cuda_visible)
    driver_ids, visible = _driver_ids_and_visible(gpus, request.visible, cuda_visible)
    _check_visible(visible, gpus, driver_ids, cuda_visible)
    limits: Dict[int, Optional[int]] = {i: request.memory_limit_mb for i in visible}
    totals: Dict[int, Optional[int]] = {i: None for i in visible}
    if request.memory_fraction is not None and visible:
        for i, total in _total_memory(request.memory_fraction, devices, gpus, driver_ids, visible).items():
            limits[i], totals[i] = _fraction_limit(request.memory_fraction, i, total), total
    settings = tuple(
        GpuSetting(
            index=i,
            driver_gpu=driver_ids[i],
            memory_growth=request.memory_growth,
            memory_limit_mb=limits[i],
            memory_fraction=request.memory_fraction if limits[i] is not None else None,
            total_memory_mb=totals[i],
        )
        for i in visible
    )
    capped = any(setting.memory_limit_mb is not None for setting in settings)
    return GpuReport(
        gpus_seen=gpus,
        gpus_visible=tuple(visible),
        settings=settings,
        environment=_growth_environment(request.memory_growth, capped, environ),
        cuda_visible_devices=cuda_visible,
    )


def _driver_ids_and_visible(
    gpus: Sequence[PhysicalGpu], visible: Optional[Tuple[int, ...]], cuda_visible: Optional[str]
) -> Tuple[List[str], Tuple[int, ...]]:
    """The driver id of each of TensorFlow's GPUs, and the GPUs to make visible (all when not asked).

    A `CUDA_VISIBLE_DEVICES` that lists fewer GPUs than TensorFlow sees was set after CUDA started (TensorFlow
    starts it at its first device query), so the driver ignored it: it is applied as `visible` when it holds
    indices and nothing else was asked, else ignored, with a warning either way."""
    driver_ids = [str(gpu.index) for gpu in gpus]
    if cuda_visible is not None:
        entries = _cuda_entries(cuda_visible)
        if len(entries) >= len(gpus):
            driver_ids = entries[: len(gpus)]
        else:
            if visible is None and all(entry.isdigit() for entry in entries):
                visible = tuple(int(entry) for entry in entries)
                action = f"applying it as visible={list(visible)}"
            else:
                action = "ignoring it"
            logger.warning(
                "%s=%r lists %d GPU(s) but TensorFlow sees %d: it was set after CUDA initialized "
                "(set it before importing TensorFlow, or pass `visible`); %s.",
                _CUDA_ENV,
                cuda_visible,
                len(entries),
                len(gpus),
                action,
            )
    return driver_ids, (tuple(gpu.index for gpu in gpus) if visible is None else visible)


def _check_visible(
    visible: Sequence[int], gpus: Sequence[PhysicalGpu], driver_ids: Sequence[str], cuda_visible: Optional[str]
) -> None:
    """`ValueError` naming the first of `visible` that TensorFlow does not see."""
    missing = [i for i in visible if i >= len(gpus)]
    if not missing:
        return
    renumbered = (
        f" TensorFlow numbers the GPUs listed in {_CUDA_ENV}={cuda_visible!r} from 0."
        if cuda_visible is not None
        else ""
    )
    raise ValueError(
        f"`visible` names GPU {missing[0]}, which does not exist. TensorFlow sees "
        f"{len(gpus)} GPU(s): {_describe(gpus, driver_ids)}.{renumbered} "
        f"Received: visible={list(visible)}"
    )


def _total_memory(
    fraction: float,
    devices: DeviceProvider,
    gpus: Sequence[PhysicalGpu],
    driver_ids: Sequence[str],
    visible: Sequence[int],
) -> Dict[int, int]:
    """The total memory (MiB) of each visible GPU, read from the driver, for `memory_fraction=fraction`."""
    try:
        driver_gpus = devices.driver_gpus()
    except DriverQueryError as error:
        raise RuntimeError(
            f"memory_fraction={fraction} needs each GPU's total memory, which is "
            "read from the NVIDIA driver through NVML (`pip install nvidia-ml-py`) or "
            "`nvidia-smi`, and neither is available here "
            f"({error}). Install one of them, or pass `memory_limit_mb=<MiB>` instead of "
            "`memory_fraction`."
        ) from error
    totals = {}
    for i in visible:
        driver_gpu = _find_driver_gpu(driver_ids[i], driver_gpus)
        if driver_gpu is None:
            listed = ", ".join(f"{g.index} ({g.uuid})" for g in driver_gpus) or "none"
            raise RuntimeError(
                f"Cannot find the total memory of GPU:{i} (driver GPU {driver_ids[i]}): the "
                f"driver lists GPUs {listed}. Pass `memory_limit_mb=<MiB>` instead of "
                f"`memory_fraction`. Received: memory_fraction={fraction}"
            )
        model = gpus[i].model
        if model and driver_gpu.model and model != driver_gpu.model:
            raise RuntimeError(
                f"TensorFlow's GPU:{i} is a {model}, but driver GPU {driver_ids[i]} is a "
                f"{driver_gpu.model}: CUDA and nvidia-smi order the GPUs differently. Set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID before importing TensorFlow, or pass "
                "`memory_limit_mb=<MiB>` instead of `memory_fraction`."
            )
        totals[i] = driver_gpu.total_memory_mb
    return totals


def _fraction_limit(fraction: float, index: int, total_mb: int) -> int:
    """`fraction` of GPU:`index`'s `total_mb`, in whole MiB (at least 1)."""
    limit = math.floor(fraction * total_mb)
    if limit < 1:
        raise ValueError(
            f"`memory_fraction` of GPU:{index}'s {total_mb} MiB is less than 1 MiB. "
            f"Received: memory_fraction={fraction}"
        )
    return limit


def _growth_environment(memory_growth: bool, capped: bool, environ: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    """The environment variables to set: `TF_FORCE_GPU_ALLOW_GROWTH=true` for memory growth with a limit.

    tf.config refuses memory growth on a GPU with a logical-device memory_limit ("Cannot set memory growth on
    device when virtual devices configured", TF issue #38367). The GPU allocator itself composes both: the
    logical device's memory_limit becomes the BFC allocator's total size, and TF_FORCE_GPU_ALLOW_GROWTH=true
    makes it allocate that size on demand. In TensorFlow's source:
      tensorflow/core/common_runtime/gpu/gpu_device.cc: CreateDevices turns
        virtual_devices.memory_limit_mb into memory_limit and calls
        GPUProcessState::GetGPUAllocator(gpu_options, tf_gpu_id, memory_limit);
      tensorflow/core/common_runtime/gpu/gpu_process_state.cc: GetGPUAllocator builds
        GPUBFCAllocator(sub_allocator, total_bytes=memory_limit, gpu_options, ...);
      tensorflow/core/common_runtime/gpu/gpu_bfc_allocator.cc: GetAllowGrowthValue returns
        true when getenv("TF_FORCE_GPU_ALLOW_GROWTH") is "true", whatever gpu_options says;
      tensorflow/core/common_runtime/bfc_allocator.cc (xla/tsl/framework/ in newer TF):
        with allow_growth the first region is 2 MiB and Extend() grows it while
        total_region_allocated_bytes_ stays within memory_limit_.
    The variable is read when the allocator is created, at device initialization, so setting it here
    (before initialization) is in time.
    """
    if memory_growth and capped:
        if environ.get(_GROWTH_ENV) not in (None, "true"):
            logger.warning(
                "Overriding %s=%r with 'true' for memory_growth=True with a memory limit.",
                _GROWTH_ENV,
                environ.get(_GROWTH_ENV),
            )
        return ((_GROWTH_ENV, "true"),)
    if not memory_growth and environ.get(_GROWTH_ENV) == "true":
        logger.warning(
            "memory_growth=False, but the environment sets %s=true, which turns memory growth on "
            "for every GPU; unset it to allocate up front.",
            _GROWTH_ENV,
        )
    return ()


# --------------------------------------------------------------------------------------------------
# Applying a report to TensorFlow.


def _devices_initialized() -> bool:
    """Whether TensorFlow has already created its runtime, and with it its devices.

    Once the eager context exists, `tf.config` refuses changes: `set_visible_devices`,
    `set_memory_growth`, `set_logical_device_configuration` and the thread-count setters all test
    `context.context()._context_handle is not None` (tensorflow/python/eager/context.py). On a GPU
    machine the GPU calls themselves raise; on a CPU-only one there is no GPU call to fail, so we ask
    the same question through public API: changing the intra-op thread count raises RuntimeError
    after initialization. Before it, the count is set back at once; `0` (TensorFlow's default,
    "system picks") written back gives the same `ConfigProto`.
    """
    current = tf.config.threading.get_intra_op_parallelism_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(current + 1)
    except RuntimeError:
        return True
    tf.config.threading.set_intra_op_parallelism_threads(current)
    return False


def _caller_location() -> str:
    """`file:line (in function)` of the first frame outside this module: where the user called."""
    here = os.path.normcase(os.path.abspath(__file__))
    frame = inspect.currentframe()
    try:
        while frame is not None:
            filename = frame.f_code.co_filename
            if os.path.normcase(os.path.abspath(filename)) != here:
                return f"{filename}:{frame.f_lineno} (in {frame.f_code.co_name})"
            frame = frame.f_back
        return "<unknown location>"
    finally:
        del frame


def _too_late_error(request: _Request) -> RuntimeError:
    return RuntimeError(
        "configure_gpus() must run before TensorFlow initializes its devices, but they are "
        "already initialized, so GPU visibility and memory settings can no longer change. Call it "
        "before any model, tensor or device query (e.g. `keras.Model`, `tf.constant`, "
        "`tf.config.list_logical_devices()`), right after the imports at the top of the program. "
        f"The call is at {_caller_location()}. (Repeating the call that already succeeded is "
        f"allowed.) Received: {request}"
    )


def _apply(report: GpuReport, request: _Request, set_by_us: Mapping[str, str]) -> None:
    """Applies `report` with tf.config and os.environ. `set_by_us`: variables an earlier call set."""
    devices = tf.config.list_physical_devices("GPU")
    try:
        tf.config.set_visible_devices([devices[i] for i in report.gpus_visible], "GPU")
        for setting in report.settings:
            device = devices[setting.index]
            if setting.memory_limit_mb is not None:
                limit = tf.config.LogicalDeviceConfiguration(memory_limit=setting.memory_limit_mb)
                tf.config.set_logical_device_configuration(device, [limit])
            elif tf.config.get_logical_device_configuration(device) is not None:
                raise RuntimeError(
                    f"An earlier configure_gpus call in this process capped GPU:{setting.index}'s "
                    "memory, and tf.config cannot remove a cap once set. Restart the process and "
                    f"call configure_gpus once, with the settings you want. Received: {request}"
                )
            else:
                # Every visible GPU gets the same value: TensorFlow requires it
                # ("Memory growth cannot differ between GPU devices").
                tf.config.experimental.set_memory_growth(device, setting.memory_growth)
    except RuntimeError as error:
        if "after being initialized" in str(error):
            raise _too_late_error(request) from error
        raise
    for name, value in set_by_us.items():
        if os.environ.get(name) == value and (name, value) not in report.environment:
            del os.environ[name]  # an earlier call in this process set it; this one does not want it
    for name, value in report.environment:
        os.environ[name] = value


class _ConfigureGpus:
    """Chooses the GPUs TensorFlow uses and how it allocates their memory. Call before using TF.

    The TF2 replacement for the TF1 notebook cell

    ```python
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    config = tf.ConfigProto()
    config.gpu_options.per_process_gpu_memory_fraction = 0.5
    config.gpu_options.allow_growth = True
    ```

    which is `configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True)`, or
    `configure_gpus.from_config_proto(config)` to reuse the notebook's `config` as it is.

    - `visible` goes to `tf.config.set_visible_devices`.
    - `memory_growth` goes to `tf.config.experimental.set_memory_growth`, on every visible GPU
      alike (TensorFlow requires the same value on all).
    - `memory_fraction` or `memory_limit_mb` caps TensorFlow's allocator on each visible GPU with
      `tf.config.set_logical_device_configuration(gpu, [LogicalDeviceConfiguration(memory_limit)])`.
      A fraction is turned into MiB from the GPU's total memory, read from the NVIDIA driver
      (NVML via `nvidia-ml-py` if installed, else `nvidia-smi`).
    - A cap together with `memory_growth=True` (the notebook's combination) is refused by
      `tf.config`; TensorFlow's allocator still supports it: the cap sets the allocator's size and
      the environment variable `TF_FORCE_GPU_ALLOW_GROWTH=true`, which this sets, makes it allocate
      on demand up to that size.

    `visible` counts GPUs as TensorFlow does. With `CUDA_VISIBLE_DEVICES` set before TensorFlow
    starts CUDA, TensorFlow sees only the GPUs listed there, renumbered from 0: with
    `CUDA_VISIBLE_DEVICES="2,3"`, `visible=[1]` is the driver's (nvidia-smi's) GPU 3, and its total
    memory is looked up as GPU 3. If `CUDA_VISIBLE_DEVICES` was set too late to take effect
    (TensorFlow sees more GPUs than it lists) and `visible` is not given, its indices are applied as
    `visible`, with a warning.

    On a machine without GPU this returns an empty report and logs one INFO line on the
    `keras_unroll` logger. Calling again with identical settings returns the same report, even after
    TensorFlow has initialized its devices; different settings after that raise `RuntimeError`.

    Args:
        visible: GPU indices to keep visible: `"0"`, `"0,1"`, `1` or `[0, 1]`; `[]` hides every
            GPU. Defaults to `None`: every GPU.
        memory_fraction: share of each visible GPU's total memory TensorFlow may use, in (0, 1].
        memory_limit_mb: cap in MiB on each visible GPU. Pass this or `memory_fraction`, not both.
        memory_growth: allocate GPU memory on demand instead of all at once. Defaults to `False`.

    Returns:
        A `GpuReport`: the GPUs seen, the ones made visible and the settings applied to each.

    Raises:
        ValueError: for invalid values (indices that are not non-negative integers, a fraction
            outside (0, 1], a non-positive limit, both fraction and limit, an index of a GPU that
            does not exist: the message lists the GPUs that do).
        TypeError: for arguments of the wrong type.
        RuntimeError: when TensorFlow has already initialized its devices (the message shows the
            call's file and line), or when `memory_fraction` needs a GPU's total memory and neither
            NVML nor `nvidia-smi` can tell it (pass `memory_limit_mb` instead).

    Example:

    ```python
    import keras_unroll as ku
    report = ku.configure_gpus(visible="0", memory_fraction=0.5, memory_growth=True)
    print(report)  # on a machine without GPU: "... TensorFlow sees no GPU ..."
    ```
    """

    def __init__(self) -> None:
        self._last: Optional[Tuple[_Request, GpuReport]] = None
        self._environment_set: Dict[str, str] = {}

    @property
    def last_report(self) -> Optional[GpuReport]:
        """The report of the last successful call in this process, or `None`."""
        return None if self._last is None else self._last[1]

    def __call__(
        self,
        visible: VisibleSpec = None,
        memory_fraction: Optional[float] = None,
        memory_limit_mb: Optional[int] = None,
        memory_growth: bool = False,
    ) -> GpuReport:
        """Configures GPUs; see the class docstring (`help(configure_gpus)`) for details."""
        request = _make_request(visible, memory_fraction, memory_limit_mb, memory_growth)
        return self._configure(request)

    def from_config_proto(self, config: tf.compat.v1.ConfigProto) -> GpuReport:
        """Applies a TF1 `tf.compat.v1.ConfigProto`'s GPU options through `configure_gpus`.

        Reads `gpu_options.visible_device_list` (as `visible`; empty means every GPU),
        `gpu_options.per_process_gpu_memory_fraction` (as `memory_fraction`; 0 means unset) and
        `gpu_options.allow_growth` (as `memory_growth`). `CUDA_VISIBLE_DEVICES` is read from the
        environment as in `configure_gpus`: when it took effect, TensorFlow (like TF1) numbers the
        GPUs it lists from 0, and `visible_device_list` indices count in that numbering; when it was
        set too late and the list is empty, its indices become `visible`.

        Args:
            config: a `tf.compat.v1.ConfigProto`, as built in the TF1 notebook.

        Returns:
            The `GpuReport`, as `configure_gpus` returns it.

        Raises:
            TypeError: if `config` is not a `tf.compat.v1.ConfigProto`.
            ValueError: for options `tf.config` cannot express, e.g. a fraction above 1 (TF1's
                unified memory) or `experimental.virtual_devices`.
            RuntimeError: as `configure_gpus`.

        Example:

        ```python
        config = tf.compat.v1.ConfigProto()
        config.gpu_options.per_process_gpu_memory_fraction = 0.5
        config.gpu_options.allow_growth = True
        report = ku.configure_gpus.from_config_proto(config)
        ```
        """
        return self._configure(_request_from_config_proto(config))

    def plan(
        self,
        visible: VisibleSpec = None,
        memory_fraction: Optional[float] = None,
        memory_limit_mb: Optional[int] = None,
        memory_growth: bool = False,
        *,
        devices: Optional[DeviceProvider] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> GpuReport:
        """What `configure_gpus(...)` would set, without setting anything: a dry run.

        Validates the arguments and plans exactly as a call does (fraction to MiB from each GPU's total
        memory, `CUDA_VISIBLE_DEVICES` renumbering, the allocator variable), then returns the report instead
        of applying it. Nothing in TensorFlow or the environment changes, so it can run at any time.

        Args:
            visible, memory_fraction, memory_limit_mb, memory_growth: as for `configure_gpus`.
            devices: the `DeviceProvider` to plan for. Defaults to `SystemDevices()`, this machine; a
                description of another machine (lists of `PhysicalGpu` and `DriverGpu`) plans for that one.
            environ: the environment variables to read (`CUDA_VISIBLE_DEVICES`,
                `TF_FORCE_GPU_ALLOW_GROWTH`). Defaults to `os.environ`.

        Returns:
            The `GpuReport` the call would return.

        Raises:
            ValueError, TypeError, RuntimeError: as `configure_gpus`, except the too-late error (nothing is
            applied, so nothing is too late).

        Example:

        ```python
        report = ku.configure_gpus.plan(memory_fraction=0.5)
        print(report)  # what configure_gpus(memory_fraction=0.5) would do here
        ```
        """
        request = _make_request(visible, memory_fraction, memory_limit_mb, memory_growth)
        return _plan(
            request, SystemDevices() if devices is None else devices, os.environ if environ is None else environ
        )

    def plan_from_config_proto(
        self,
        config: tf.compat.v1.ConfigProto,
        *,
        devices: Optional[DeviceProvider] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> GpuReport:
        """What `from_config_proto(config)` would set, without setting anything (see `plan`).

        Args:
            config: a `tf.compat.v1.ConfigProto`, as for `from_config_proto`.
            devices, environ: as for `plan`.

        Returns:
            The `GpuReport` `from_config_proto(config)` would return.

        Example:

        ```python
        config = tf.compat.v1.ConfigProto()
        config.gpu_options.allow_growth = True
        report = ku.configure_gpus.plan_from_config_proto(config)
        ```
        """
        request = _request_from_config_proto(config)
        return _plan(
            request, SystemDevices() if devices is None else devices, os.environ if environ is None else environ
        )

    def _configure(self, request: _Request) -> GpuReport:
        if self._last is not None and self._last[0] == request:
            return self._last[1]
        if _devices_initialized():
            raise _too_late_error(request)
        report = _plan(request, SystemDevices(), os.environ)
        if not report.gpus_seen:
            logger.info("configure_gpus: TensorFlow sees no GPU; nothing to configure (running on CPU).")
        else:
            _apply(report, request, self._environment_set)
            self._environment_set = dict(report.environment)
        self._last = (request, report)
        return report


configure_gpus = _ConfigureGpus()
