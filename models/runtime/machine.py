"""The machine: what a figure was measured on, and what the service may use of it.

Training cards (`cpu_description`), the evaluation report (`machine_description`) and the benchmarks
(`bench.run`, through `processor_name`) all describe the machine from here; execution plans
(models.runtime.execution) ask it for the cores this process may use and the precisions it runs natively.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

CPUINFO = Path("/proc/cpuinfo")
Precision = Literal["float32", "bfloat16", "float16"]


def processor_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one, else what `platform` knows)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """The processor model and core count, for the model card (figures depend on the machine)."""
    return f"{processor_name()}, {os.cpu_count()} logical cores visible, {torch.get_num_threads()} torch threads"


def machine_description(device: torch.device) -> str:
    """E.g. 'Linux x86_64, Intel Xeon ..., 2 CPU cores, torch 2.13.0+cpu, device cpu'."""
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    return (
        f"{platform.system()} {platform.machine()}, {processor_name()}, {os.cpu_count()} CPU cores "
        f"({torch.get_num_threads()} torch threads), torch {torch.__version__}, device {device} ({accelerator})"
    )


def available_cpus(affinity: Callable[[], set[int]] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers).

    `os.cpu_count()` counts the machine's cores, which a pinned process (`taskset`) or a container with
    a CPU limit does not get; threads beyond its share only fight each other.
    """
    if affinity is None and hasattr(os, "sched_getaffinity"):
        affinity = lambda: os.sched_getaffinity(0)  # noqa: E731
    cores = len(affinity()) if affinity is not None else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`); None: no limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo does not exist)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_precisions(device: torch.device, flags: frozenset[str] | None = None) -> tuple[Precision, ...]:
    """The precisions the device computes natively (not emulated at a loss of speed)."""
    if device.type == "cuda":
        native: list[Precision] = ["float32", "float16"]
        if torch.cuda.is_bf16_supported():
            native.append("bfloat16")
        return tuple(native)
    flags = cpu_flags() if flags is None else flags
    native = ["float32"]
    if flags & {"avx512_bf16", "amx_bf16"}:
        native.append("bfloat16")
    if "amx_fp16" in flags:
        native.append("float16")
    return tuple(native)


def describe_hardware(device: torch.device, flags: frozenset[str] | None = None) -> str:
    """E.g. 'cpu (avx512_bf16)', for messages about what the hardware runs natively."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    flags = cpu_flags() if flags is None else flags
    relevant = sorted(flags & {"avx512f", "avx512_bf16", "amx_bf16", "amx_fp16", "amx_tile"})
    return f"cpu ({', '.join(relevant) or 'no AVX-512 or AMX'})"
