"""Every random stream of a cell is derived from (task, K, seed, stream).

So a cell is reproducible alone, in any order, on any executor, and streams do not interfere:
changing how many random numbers the init uses does not change the support set.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Streams:
    """The named random streams a method gets (`MethodContext.streams`), instead of one bare seed.

    The words, once: a cell's **seed** is the user's (`--seeds 0,1,2`); every stream of the cell is a
    seed *derived* from (task, K, seed, stream name): `support` (which K examples), `init` (head and
    LoRA init; also the root of a method's own named generators), `views` (the augmented views of the
    support set, the same for every method), `val` (the --tune validation draw), `global` (python /
    numpy / torch state, for code we do not control). The **holdout seed** of a task file splits a
    single-split dataset into train and test; the **upstream seed** (`upstream_training.seed`) trains
    the upstream modules. None of them depends on another.
    """

    init: int
    views: int

    @classmethod
    def of_cell(cls, task: str, k: object, seed: int) -> "Streams":
        return cls(init=derive_seed(task, k, seed, "init"), views=derive_seed(task, k, seed, "views"))

    def generator(self, name: str) -> torch.Generator:
        """A method's own stream, e.g. "data-order" (the shared batch order) or "dare" (drop masks)."""
        return generator(self.init, name)
