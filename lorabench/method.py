"""The method plugin contract and the method registry.

A method gets a `MethodContext` (its own copy of the backbone, the upstream adapters, the number
of classes, a seed) and implements three hooks: `prepare`, `fit(support)`, `predict(split)`.
It reports its trainable parameters excluding the head, and the head's. It never sees the
evaluator. Built-in methods live in `methods/` and are found through the same entry-point group
(`lorabench.methods`) as third-party plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from lorabench.adapters import LoraAdapter
from lorabench.backbones import Backbone
from lorabench.data import Split
from lorabench.errors import ConfigError
from lorabench.registry import Registry
from lorabench.seeding import generator
from lorabench.training import count_params, extract_features, predict, train_end_to_end, train_head

METHODS: Registry[type["Method"]] = Registry("method", entry_point_group="lorabench.methods")

# Shared defaults; a method overrides what it needs in `defaults`.
BASE_DEFAULTS: dict[str, Any] = {
    "batch_size": 32, "weight_decay": 1e-4,
    "head_lr": 1e-2, "head_epochs": 100,  # linear head on frozen features
    "lr": 1e-3, "epochs": 30, "max_steps": 300,  # end-to-end training
}


@dataclass
class MethodContext:
    backbone: Backbone  # a fresh copy: the method may change its weights
    num_classes: int
    seed: int
    adapters: list[LoraAdapter] = field(default_factory=list)
    lora_rank: int = 16
    lora_alpha: float = 16.0
    task_name: str = ""


class Method:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_upstream: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    defaults: ClassVar[dict[str, Any]] = {}
    tune_grid: ClassVar[dict[str, list[Any]]] = {}  # for --tune: values tried on a validation split

    def __init__(self, **hparams: Any):
        known = self.known_hparams()
        unknown = sorted(set(hparams) - set(known))
        if unknown:
            raise ConfigError(f"Method {self.name!r} has no hyperparameter(s) {unknown}; "
                              f"it takes: {', '.join(sorted(known))}.")
        self.hp: dict[str, Any] = {**known, **hparams}
        self.head: nn.Module | None = None

    @classmethod
    def known_hparams(cls) -> dict[str, Any]:
        return {**BASE_DEFAULTS, **cls.defaults}

    @classmethod
    def resolve_hparams(cls, overrides: dict[str, Any], shared: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults < `shared` (task-wide, only keys this method takes) < `overrides` (checked strictly)."""
        known = cls.known_hparams()
        return {**known, **{k: v for k, v in (shared or {}).items() if k in known}, **overrides}

    # -- hooks ----------------------------------------------------------------------------------
    def prepare(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.gen = generator(ctx.seed, "data-order")
        torch.manual_seed(ctx.seed)  # head / LoRA init
        self.head = ctx.backbone.make_head(ctx.num_classes).to(ctx.backbone.device())

    def fit(self, support: Split) -> None:
        raise NotImplementedError

    def predict(self, split: Split) -> torch.Tensor:
        raise NotImplementedError

    # -- reporting ------------------------------------------------------------------------------
    def trainable_params(self) -> int:
        """Trainable parameters excluding the head."""
        raise NotImplementedError

    def head_params(self) -> int:
        return count_params(self.head.parameters()) if self.head is not None else 0

    def extras(self) -> dict[str, Any]:
        return {}


class FrozenFeatureMethod(Method):
    """Backbone weights fixed after `prepare`: features are computed once and cached, then only the
    head trains. `cache_tag` names the weights (so merged backbones do not share a cache entry)."""

    cache_tag: str = "pristine"

    def fit(self, support: Split) -> None:
        if len(support) == 0:
            return
        feats = extract_features(self.ctx.backbone, support, self.cache_tag)
        self.final_loss = train_head(self.head, feats, support, self.hp, self.gen)

    def predict(self, split: Split) -> torch.Tensor:
        feats = extract_features(self.ctx.backbone, split, self.cache_tag)
        return predict(self.ctx.backbone, self.head, split, feats)


class EndToEndMethod(Method):
    """Trains backbone parameters (returned by `backbone_params`) and the head through the backbone."""

    def backbone_params(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        return [{"params": self.backbone_params(), "lr": self.hp["lr"]},
                {"params": list(self.head.parameters()), "lr": self.hp["head_lr"]}]

    def fit(self, support: Split) -> None:
        if len(support) == 0:
            return
        self.final_loss = train_end_to_end(self.ctx.backbone, self.head, self.param_groups(), support, self.hp, self.gen)

    def predict(self, split: Split) -> torch.Tensor:
        return predict(self.ctx.backbone, self.head, split)

    def trainable_params(self) -> int:
        return count_params(self.backbone_params())
