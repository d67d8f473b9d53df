"""Uniform composition: W = W0 + (1/N)·Σₙ ΔWₙ, merged into the weights once; only the head trains."""

from lorabench.merging import merge_weighted_, stack_modules
from lorabench.method import FrozenFeatureMethod, MethodContext


class UniformComposition(FrozenFeatureMethod):
    name = "uniform_composition"
    description = "average of the N upstream ΔW merged into W0; head only"
    needs_upstream = True

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        n = len(ctx.adapters)
        merge_weighted_(stack_modules(ctx.backbone, ctx.adapters), [1.0 / n] * n)
