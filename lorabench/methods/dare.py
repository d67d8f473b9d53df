"""DARE (Yu et al. 2024): drop-and-rescale each upstream ΔW, then W = W0 + scaling·Σₙ DARE(ΔWₙ).

Each entry of each ΔWₙ is dropped with probability `drop_rate` and the survivors are multiplied by
1/(1 - drop_rate), which keeps every ΔWₙ unchanged in expectation. The drop masks come from the
cell's seed. `scaling` defaults to 1/N, so `drop_rate=0` is `uniform_composition`
(up to float rounding).
Nothing is searched or trained besides the head: 0 trainable parameters.
"""

from typing import Any

from pydantic import Field

from lorabench.merging import dare, merge_transformed_, stack_modules
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import MethodParams


class Dare(FrozenFeatureMethod):
    name = "dare"
    description = "drop-and-rescale each upstream ΔW, sum (× scaling, default 1/N) into W0; head only"
    needs_upstream = True
    tune_grid = {"drop_rate": [0.5, 0.9, 0.99]}

    class Params(MethodParams):
        drop_rate: float = Field(0.9, ge=0, lt=1)
        scaling: float | None = None  # None: 1/N

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        stacked = stack_modules(ctx.backbone, ctx.adapters)
        p = self.params.drop_rate
        scaling = 1.0 / stacked.n if self.params.scaling is None else self.params.scaling
        gen = ctx.streams.generator("dare")
        merge_transformed_(stacked, lambda deltas: scaling * dare(deltas, p, gen).sum(0))
        self.scaling = scaling

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters], "scaling": self.scaling}
