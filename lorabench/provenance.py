"""Where and how a record was made: package versions, the git commit, peak memory, and the command
that reproduces the cell. Kept apart from the cell itself so a record's facts have one source."""

from __future__ import annotations

import platform
import resource
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

import lorabench
from lorabench.specs import RunConfig


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(lorabench.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (None outside a git checkout): a record run from an
    edited tree must not claim to be that commit's. Asked per cell, since a tree can change during a grid."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=Path(lorabench.__file__).parent, capture_output=True, text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Package versions for the record (a fresh dict: callers may add to it)."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    """Read once per process: the installed packages do not change under a running grid, and reading their
    metadata is a good part of a tiny cell's fixed cost."""
    out = {"python": platform.python_version(), "lorabench": lorabench.__version__}
    for pkg in ("torch", "timm", "transformers", "peft", "datasets", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak RSS (KiB on Linux)


def device_label(device: str) -> str:
    return device if device != "cuda" else f"cuda:{torch.cuda.get_device_name()}"


def reproduce_command(cfg: RunConfig) -> str:
    parts = ["lorabench run", f"--method {cfg.method}", f"--task {cfg.task}", f"--k {cfg.k}",
             f"--seeds {cfg.seed}", f"--backbone {cfg.backbone}"]
    parts += [f"--hp {k}={v}" for k, v in sorted(cfg.hparams.items())]
    parts += [f"--upstream {d}" for d in cfg.upstream_dirs]
    if cfg.tune:
        parts.append("--tune")
    if cfg.profile != "full":
        parts.append(f"--profile {cfg.profile}")
    parts.append(f"--precision {cfg.precision}")
    return " ".join(parts)
