"""Which arithmetic the networks run in during synthesis: fp32, or bf16 autocast.

bf16 halves the bytes and, on hardware with bf16 matrix units, multiplies the convolutions'
throughput: measured on a 2-core Xeon with AMX, G took 0.55 s instead of 2.39 s for 16 slices,
changing its output by up to 0.008 of V99.5 (docs/performance.md). Without native bf16 the
same autocast is emulated and far slower (on the 2-core AMD EPYC with AVX2 only, 18.6 s
instead of 0.87 s for S on 8 slices), so "auto" uses it only where the CPU has it:

- CUDA: bf16 (tensor cores; what synthesis always did on a GPU);
- CPU: bf16 where the CPU has native bf16 (AMX or AVX512-BF16, from /proc/cpuinfo's flags, or
  torch's CPU capability where there is no /proc), else fp32;
- anything else (MPS, ...): fp32.

`smile synthesize --precision fp32|bf16` forces either.

A gated G (gated.py) stays in fp32 under bf16: its gate is a hard floor (values below it count
as 0), so bf16's rounding of the gate's logits (up to 0.37 measured) opens or shuts it at a few
rim pixels, and each such pixel jumps by up to 0.39 of V99.5 (measured on the bundled case:
32 of 48,401 brain pixels of three slices), far above the 0.01 the issue allows; its C moved by
up to 0.016 where the gate was open in both. S and R, and the paper's residual G, change smoothly
with their inputs and run in bf16 (`in_bf16`).
"""
from __future__ import annotations

from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")   # /proc/cpuinfo flags of native bf16 arithmetic


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_cpu(flags=None) -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16)."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return any(f in flags for f in BF16_FLAGS)
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AMX" in capability or "BF16" in capability


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`: torch.bfloat16, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and native_bf16_cpu():
        return torch.bfloat16
    return None


def describe(precision: str, device: torch.device) -> str:
    """What `precision` means on `device`, in words (for `smile bench` and notes)."""
    dtype = autocast_dtype(precision, device)
    name = "bf16 autocast" if dtype is not None else "fp32"
    if precision != "auto":
        return f"{name} (forced)"
    why = {"cuda": "CUDA", "cpu": "native bf16" if dtype is not None else "no native bf16 on this CPU"}
    return f"{name} ({why.get(device.type, device.type)})"


def in_bf16(net: torch.nn.Module) -> bool:
    """Whether `net` may run under bf16 autocast: not a gated G (see the module docstring)."""
    inner = getattr(net, "net", net)   # smile bench wraps networks in a timer
    return not hasattr(inner, "parts")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, and a cgroup v2 quota (a container started with
    `--cpus 2` on a 64-core host sees 64 cores; torch would start 64 threads that take turns)."""
    import os
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def fit_threads() -> int:
    """torch's threads brought down to the usable CPUs (never up; an OMP_NUM_THREADS the user set
    is left alone). Returns the number of threads."""
    import os
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())
    return torch.get_num_threads()
