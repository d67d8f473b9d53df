"""Process-level settings, and host-to-device copies, that make training fast without changing what it computes.

glibc's malloc serves each block above its mmap threshold (at most 32 MiB when left dynamic) with a fresh
mmap and returns it on free, so every training step page-faults and zero-fills its activation maps again
(an EfficientNet-Lite0 step at 224 px, batch 32, allocates GiBs of them). Raising the threshold and the trim
threshold keeps freed blocks in the heap for the next step (`benchmarks/test_speed.py::test_upstream_lora_step`
times an upstream LoRA step both ways, side by side). The process keeps its peak memory instead of handing it
back between steps.

On CUDA, a copy from pageable host memory makes the host wait: PyTorch's blocking host-to-device copy (and the
index a CUDA tensor is indexed with when the index lives on the host) synchronises the stream, so the host cannot
queue the next step while the device works on this one. `to_device` sends host tensors through pinned memory with
a non-blocking copy instead (the caching host allocator keeps the pinned block until the copy is done).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

OPT_OUT_ENV = "LORABENCH_KEEP_FREED_MEMORY"  # "0" leaves malloc as it is
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # blocks above 1 GiB (composition stacks) still get their own mapping
_TRIM_THRESHOLD = (1 << 31) - 1
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc malloc once per process (see the module docstring); True if it is tuned.

    A no-op off Linux/glibc, and when LORABENCH_KEEP_FREED_MEMORY=0."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT_ENV, "1") == "0":
        return _done
    _done = set_malloc_thresholds(_MMAP_THRESHOLD, _TRIM_THRESHOLD)
    return _done


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (bytes); False where there is no glibc mallopt.
    (The speed benchmark also uses it to put back the default's behaviour, side by side.)"""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """`t` on `device` (itself if it is there): a host tensor bound for CUDA goes through pinned memory with a
    non-blocking copy, so the host queues the copy and moves on instead of waiting for the device to drain."""
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
