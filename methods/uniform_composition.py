"""Uniform composition: W = W0 + (1/N)·Σₙ ΔWₙ, merged into the weights once; only the head trains."""

import torch

from lorabench.adapters import attach_composition
from lorabench.method import FrozenFeatureMethod, MethodContext


def merge_uniform_(ctx: MethodContext) -> None:
    n = len(ctx.adapters)
    for layer in attach_composition(ctx.backbone.model, ctx.backbone.targets(), ctx.adapters).values():
        coef = torch.full((n,), 1.0 / n, device=layer.comp_scale.device) * layer.comp_scale
        layer.merge_(layer.composed_delta(coef=coef))


class UniformComposition(FrozenFeatureMethod):
    name = "uniform_composition"
    description = "average of the N upstream ΔW merged into W0; head only"
    needs_upstream = True

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        merge_uniform_(ctx)
