"""Numeric precision of a cell: fp32, or bf16 autocast (the default on CUDA).

bf16 autocast runs the backbone's matmuls and convolutions (`Backbone.features`, forward and so backward) in
bf16 on fp32 weights (the optimizer keeps fp32 masters); features leave it as fp32, so heads, losses and
everything outside the backbone's forward (merges, the composition arithmetic on ΔW, which `lorabench.lora`
keeps out of autocast) stay fp32 and composition remains exact on ΔW = scale·B·A. The precision is recorded in every record and
enters its identity when it is not fp32 (every record made before it existed is fp32).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def default_precision(device: str) -> str:
    """bf16 where it is native and fast (CUDA), fp32 elsewhere."""
    return "bf16" if device.startswith("cuda") else "fp32"


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device` (a no-op for fp32)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")

