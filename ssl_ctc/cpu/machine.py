"""What this processor is and can do: its name, the flags that decide the CPU paths, its cores.

Usage::

    cpu_flags()  # {"flags": ["avx2", "avx512_bf16", ...], "capability": "AVX512", ...}
"""

import os
import platform
from pathlib import Path

import torch


def cpu_name():
    """CPU model from /proc/cpuinfo, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# The /proc/cpuinfo flags that decide the CPU inference paths (vector width, bf16, int8).
SPEED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
                   "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags():
    """The CPU's speed-relevant flags (``SPEED_CPU_FLAGS`` present), torch's capability, cores.

    Example
    -------
    >>> flags = cpu_flags()
    >>> sorted(flags) == ["capability", "cores", "flags", "quantized_engine"]
    True
    """
    present = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                present.update(line.split(":", 1)[1].split())
                break
    return {"flags": [flag for flag in SPEED_CPU_FLAGS if flag in present],
            "capability": torch.backends.cpu.get_cpu_capability(),
            "quantized_engine": torch.backends.quantized.engine,
            "cores": os.cpu_count()}


def available_cpu_cores():
    """The CPU cores this process may run on (its affinity), whatever OMP_NUM_THREADS says.

    torchrun sets ``OMP_NUM_THREADS=1`` for several processes per node, so torch's
    current thread count is not what a CPU test should use after training.

    Example
    -------
    >>> available_cpu_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# The flags of processors that compute in bf16 (without them bf16 autocast is slower than fp32).
BF16_INSTRUCTIONS = ("avx512_bf16", "amx_bf16")


def has_bf16_instructions(flags=None):
    """Whether the processor computes in bf16 (avx512_bf16 or AMX), from its flags.

    Arguments
    ---------
    flags : dict, optional
        ``cpu_flags()``'s result (this processor's by default).

    Example
    -------
    >>> has_bf16_instructions({"flags": ["avx2", "avx512_bf16"]})
    True
    """
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags["flags"] for flag in BF16_INSTRUCTIONS)
