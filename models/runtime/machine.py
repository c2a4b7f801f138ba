"""What machine a figure was measured on: the one place that describes the processor, cores and torch.

Training cards (`cpu_description`), the evaluation report (`machine_description`) and the benchmarks
(`bench.run`, through `processor_name`) all describe the machine from here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")


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
