"""Merge arithmetic over upstream LoRA deltas, below the method layer (methods call these functions),
and the support-set score that picks merge weights.

Every merge here is exact on ΔWₙ = scaleₙ·Bₙ·Aₙ (A's and B's are never combined separately):
a weighted sum Σ wₙ·ΔWₙ goes through `AdaptedLayer.composed_delta` (one batched matmul per layer);
merges that are not a weighted sum (TIES, DARE) take every ΔWₙ of a layer at once
(`AdaptedLayer.module_deltas`, batched), transform them, and fold the result into W0 once with
`AdaptedLayer.merge_`. TIES and DARE act
per adapted weight (as in PEFT's and mergekit's implementations), so memory stays one layer's N deltas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lorabench.adapters import LoraAdapter, attach_composition
from lorabench.backbones import Backbone
from lorabench.data import Split
from lorabench.errors import ConfigError
from lorabench.lora import AdaptedLayer
from lorabench.training import extract_features

# --- merge math on stacked deltas [N, ...] -----------------------------------------------------


def ties_merge(deltas: torch.Tensor, density: float, scaling: float = 1.0) -> torch.Tensor:
    """TIES (Yadav et al. 2023) on [N, ...]: keep each module's top `density` fraction by magnitude,
    elect each entry's sign as the sign of the trimmed sum, average only the entries that agree."""
    if not 0 < density <= 1:
        raise ConfigError(f"TIES density must be in (0, 1], got {density}.")
    flat = deltas.flatten(1)
    keep = max(1, math.ceil(density * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.abs().topk(keep, dim=1).indices, True)
    trimmed = flat * mask
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & mask
    merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return scaling * merged.view(deltas.shape[1:])


def dare(deltas: torch.Tensor, drop_rate: float, gen: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al. 2024): drop each entry with probability p, rescale the rest by 1/(1-p), so the
    expectation is unchanged; p = 0 returns the deltas as they are."""
    if not 0 <= drop_rate < 1:
        raise ConfigError(f"DARE drop_rate must be in [0, 1), got {drop_rate}.")
    keep = torch.rand(deltas.shape, generator=gen, device=gen.device).to(deltas.device) >= drop_rate
    return deltas * keep / (1 - drop_rate)


# --- merging into a backbone -----------------------------------------------------------------------


@dataclass
class Stacked:
    """The N upstream modules stacked on every adapted layer, and the pristine W0 each merge starts from."""

    layers: dict[str, AdaptedLayer]
    w0: dict[str, torch.Tensor]
    n: int


def stack_modules(backbone: Backbone, adapters: list[LoraAdapter]) -> Stacked:
    if not adapters:
        raise ConfigError("This method merges upstream LoRA modules, but none were given.")
    layers = attach_composition(backbone.model, backbone.targets(), adapters)
    w0 = {name: layer.base.weight.detach().clone() for name, layer in layers.items()}
    return Stacked(layers, w0, len(adapters))


@torch.no_grad()
def merge_weighted_(st: Stacked, weights: Sequence[float] | torch.Tensor) -> None:
    """Set every layer to W0 + Σₙ wₙ·ΔWₙ (re-callable: each call starts again from W0)."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (st.n,):
        raise ValueError(f"expected {st.n} merge weights, got shape {tuple(w.shape)}")
    for name, layer in st.layers.items():
        layer.base.weight.copy_(st.w0[name])
        layer.merge_(layer.composed_delta(coef=w.to(layer.comp_scale.device) * layer.comp_scale))


@torch.no_grad()
def merge_transformed_(st: Stacked, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Set every layer to W0 + transform([ΔW₁..ΔW_N]) (transform: [N, out, in] -> [out, in])."""
    for name, layer in st.layers.items():
        layer.base.weight.copy_(st.w0[name])
        deltas = layer.module_deltas().transpose(0, 1).flatten(1, 2)  # [N, out, in], fused blocks by rows
        layer.merge_(transform(deltas))


# --- scoring merge weights on the support set ------------------------------------------------------


@torch.no_grad()
def support_loss(backbone: Backbone, split: Split, feats: torch.Tensor, temperature: float = 10.0) -> float:
    """A training-free support-set loss, so merge weights can be compared without fitting a head.

    Classification: cross-entropy of a nearest-class-mean classifier (cosine × temperature) on
    L2-normalised features, each example left out of its own class mean when its class has another
    example; at K=1 the mean is the example itself, so the loss measures how well the features keep
    the support classes apart. Multiple choice: cross-entropy of the backbone's zero-shot scorer.
    """
    labels = split.labels
    if split.modality == "multiple_choice":
        head = backbone.make_head(split.num_classes)
        return float(F.cross_entropy(Backbone.logits(head, feats, split.inputs), labels))
    f = F.normalize(feats.float(), dim=-1)
    onehot = F.one_hot(labels, split.num_classes).float()
    sums = onehot.T @ f  # [C, D]: the class means up to scale (cosine ignores scale)
    counts = onehot.sum(0)
    dots = f @ sums.T  # [n, C]
    sq = (sums * sums).sum(-1).expand_as(dots).clone()  # |S_c|²
    # Leave-one-out without materialising n×C means: (S_c - f)·f = dot - 1, |S_c - f|² = |S_c|² - 2·dot + 1.
    own = onehot.bool() & (counts[labels] > 1).unsqueeze(1)
    sq[own] = sq[own] - 2 * dots[own] + 1
    dots[own] = dots[own] - 1
    logits = temperature * dots / sq.clamp(min=1e-12).sqrt()
    logits[:, counts == 0] = float("-inf")  # classes absent from the support set cannot be predicted
    return float(F.cross_entropy(logits, labels))


def weighted_scorer(backbone: Backbone, st: Stacked, support: Split,
                    temperature: float) -> Callable[[Sequence[float]], float]:
    """w ↦ support loss of W0 + Σ wₙ·ΔWₙ (features recomputed per call, never cached)."""

    def score(weights: Sequence[float]) -> float:
        merge_weighted_(st, weights)
        return support_loss(backbone, support, extract_features(backbone, support, None), temperature)

    return score


def require_support(method: str, support: Split) -> None:
    if len(support) == 0:
        raise ConfigError(f"Method {method!r} chooses its merge on the support set, so it needs K >= 1 "
                          f"(got an empty support set).")
