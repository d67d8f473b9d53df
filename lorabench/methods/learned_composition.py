"""Learned composition: W = W0 + Σₙ softmax(v)ₙ ΔWₙ with one logit vector v per adapted matrix.

As in the paper: v starts at 0 (uniform weights), the head is warmed up first on frozen features of the
uniform composition (the shared recipe's warm-up, as for every end-to-end method), then v and the head
train together on augmented views. After training the learned weights are merged into W0, so prediction
costs the bare backbone.

Softmax weights sum to 1, so the composed update can be re-weighted but never shrunk: when every upstream
module hurts, it cannot go back toward W0. Two variants can (`LearnedCompositionNull`, `..Scaled` below).
"""

from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import Field

from lorabench.adapters import attach_composition
from lorabench.data import Split
from lorabench.lora import merge_all_
from lorabench.method import EndToEndMethod, MethodContext
from lorabench.specs import Composition, EndToEndParams

NULL_MODULE = "(null)"  # the null module's column in the record's composition weights


class LearnedComposition(EndToEndMethod):
    name = "learned_composition"
    description = "per-layer, per-matrix softmax weights over the N upstream ΔW + head"
    needs_upstream = True

    class Params(EndToEndParams):
        lr: float = Field(0.1, gt=0)  # SGD on the logits

    tune_grid = {"lr": [0.1, 1.0, 10.0, 100.0]}  # SGD on the logits (issue 25)
    null: ClassVar[bool] = False  # a null module (ΔW = 0) as one more softmax entry per matrix
    learn_gain: ClassVar[bool] = False  # one learned scale g (init 1) on the whole composed update

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.gain = nn.Parameter(torch.ones((), device=ctx.backbone.device())) if self.learn_gain else None
        self.layers = attach_composition(ctx.backbone.model, ctx.backbone.targets(), ctx.adapters, null=self.null,
                                         gain=self.gain)

    def backbone_params(self):
        return [layer.comp_logits for layer in self.layers.values()] + ([self.gain] if self.learn_gain else [])

    def param_groups(self) -> list[dict]:
        groups = super().param_groups()
        if self.learn_gain:  # no weight decay on the gain: it would pull the update toward 0, a prior we do not want
            groups[0]["params"] = groups[0]["params"][:-1]  # backbone_params() puts the gain last
            groups.insert(1, {"params": [self.gain], "lr": self.params.lr, "weight_decay": 0.0})
        return groups

    def progress(self) -> dict[str, float]:
        """How far the composition weights are from where they started (1/N, or 1/(N+1) with the null module):
        mean and largest |w − w₀| over every adapted matrix and module."""
        with torch.no_grad():
            w = torch.cat([layer.composition_weights(with_null=True) for layer in self.layers.values()])
            shift = (w - 1.0 / w.shape[-1]).abs()
        out = {"weight_shift": float(shift.mean()), "weight_shift_max": float(shift.max())}
        if self.learn_gain:
            out["gain"] = float(self.gain.detach())
        return out

    def predict(self, split: Split):
        merge_all_(self.ctx.backbone.model)
        return super().predict(split)

    def composition(self) -> Composition:
        rows = [(t.name, layer.composition_weights(with_null=True).detach().cpu()[i])
                for layer in self.layers.values() for i, t in enumerate(layer.targets)]
        return Composition(upstream=[a.name for a in self.ctx.adapters] + ([NULL_MODULE] if self.null else []),
                           matrices=[m for m, _ in rows], weights=[[round(float(x), 6) for x in w] for _, w in rows],
                           scale=round(float(self.gain.detach()), 6) if self.learn_gain else None)

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters]}


class LearnedCompositionNull(LearnedComposition):
    """The null module starts with the same logit as the others, so the initial update is N/(N+1) of the
    uniform composition; its learned weight is the share of the update the support set chose to drop."""

    name = "learned_composition_null"
    description = "learned composition with a null module (ΔW = 0) in every softmax: can shrink toward W0 + head"
    null = True


class LearnedCompositionScaled(LearnedComposition):
    """W = W0 + g·Σₙ softmax(v)ₙ ΔWₙ: one gain g for the whole network (init 1: the paper's start), so the
    update can shrink (g < 1), grow or flip sign; 1 trainable parameter more than learned_composition."""

    name = "learned_composition_scaled"
    description = "learned composition times one learned global scale (init 1) + head"
    learn_gain = True
