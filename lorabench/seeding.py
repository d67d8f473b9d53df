"""Every random stream of a cell is derived from (task, K, seed, stream).

So a cell is reproducible alone, in any order, on any executor, and streams do not interfere:
changing how many random numbers the init uses does not change the support set.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def seed_everything(*parts: object) -> int:
    """Seed python, numpy and torch global state (for code we do not control, e.g. init)."""
    s = derive_seed(*parts)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s
