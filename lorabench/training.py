"""Plain training and inference loops shared by the methods.

Frozen features are cached per (backbone, weights tag, split) for the whole process, so a linear
probe over a grid of K and seeds runs the backbone once per split instead of once per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lorabench.backbones import Backbone
from lorabench.data import Split

_FEATURES: dict[tuple[str, str, str], torch.Tensor] = {}


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterable[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def extract_features(backbone: Backbone, split: Split, cache_tag: str | None = None, batch_size: int = 64) -> torch.Tensor:
    """Features of every example (CPU tensor). `cache_tag` names the weights; None disables caching."""
    key = (backbone.name, cache_tag or "", split.key)
    if cache_tag is not None and key in _FEATURES:
        return _FEATURES[key]
    backbone.model.eval()
    chunks = [backbone.features(split.batch(torch.arange(i, min(i + batch_size, len(split))))).float().cpu()
              for i in range(0, len(split), batch_size)]
    feats = torch.cat(chunks) if chunks else torch.empty(0, backbone.feature_dim)
    if cache_tag is not None:
        _FEATURES[key] = feats
    return feats


def clear_feature_cache() -> None:
    _FEATURES.clear()


def _optimizer(groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def train_head(head: nn.Module, feats: torch.Tensor, split: Split, hp: dict, gen: torch.Generator,
               epochs: int | None = None) -> float:
    """Train only the head on precomputed features; returns the last epoch's mean loss."""
    dev = next(head.parameters()).device
    opt = _optimizer([{"params": list(head.parameters()), "lr": hp["head_lr"]}], hp["weight_decay"])
    loss_val = math.nan
    for _ in range(hp["head_epochs"] if epochs is None else epochs):
        total = 0.0
        for idx in minibatches(len(split), hp["batch_size"], gen):
            batch = split.batch(idx)
            logits = Backbone.logits(head, feats[idx].to(dev), batch)
            loss = F.cross_entropy(logits, split.labels[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        loss_val = total / max(len(split), 1)
    return loss_val


def train_end_to_end(backbone: Backbone, head: nn.Module, groups: list[dict], split: Split, hp: dict,
                     gen: torch.Generator) -> float:
    """Train `groups` (param groups with their lr) through the backbone; the backbone stays in eval
    mode (frozen BatchNorm statistics, no dropout), which few-shot batches of 2 cannot estimate."""
    dev = backbone.device()
    opt = _optimizer(groups, hp["weight_decay"])
    steps_per_epoch = math.ceil(len(split) / hp["batch_size"])
    epochs = max(1, min(hp["epochs"], math.ceil(hp["max_steps"] / max(steps_per_epoch, 1))))
    backbone.model.eval()
    loss_val = math.nan
    for _ in range(epochs):
        total = 0.0
        for idx in minibatches(len(split), hp["batch_size"], gen):
            batch = split.batch(idx)
            logits = Backbone.logits(head, backbone.features(batch), batch)
            loss = F.cross_entropy(logits, split.labels[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        loss_val = total / max(len(split), 1)
    return loss_val


@torch.no_grad()
def predict(backbone: Backbone, head: nn.Module, split: Split, feats: torch.Tensor | None = None,
            batch_size: int = 64) -> torch.Tensor:
    """Predicted class / choice per example; uses `feats` when given (frozen-feature methods)."""
    backbone.model.eval()
    dev = next(head.parameters()).device
    preds = []
    for i in range(0, len(split), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(split)))
        batch = split.batch(idx)
        f = feats[idx].to(dev) if feats is not None else backbone.features(batch)
        preds.append(Backbone.logits(head, f, batch).argmax(-1).cpu())
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def count_params(params: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
