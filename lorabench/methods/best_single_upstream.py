"""Best single upstream module: W = W0 + ΔW_b for the one module b that fits the support set best.

Each module alone is merged into W0 and its support features are scored by `merging.support_loss`
(a leave-one-out nearest-class-mean cross-entropy, usable at K=1); the lowest loss wins. It answers
whether composing helps over simply choosing. The choice is searched, not trained: 0 trainable parameters.
"""

from typing import Any

from pydantic import Field

from lorabench.data import Split
from lorabench.merging import merge_weighted_, require_support, stack_modules, weighted_scorer
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import MethodParams


class BestSingleUpstream(FrozenFeatureMethod):
    name = "best_single_upstream"
    description = "the one upstream ΔW with the lowest support loss, merged into W0; head only"
    needs_upstream = True

    class Params(MethodParams):
        temperature: float = Field(10.0, gt=0)

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.stacked = stack_modules(ctx.backbone, ctx.adapters)
        self.losses: list[float] = []

    def fit(self, support: Split) -> None:
        require_support(self.name, support)
        score = weighted_scorer(self.ctx.backbone, self.stacked, support, self.params.temperature)
        n = self.stacked.n
        self.losses = [score([float(i == j) for i in range(n)]) for j in range(n)]
        self.best = min(range(n), key=self.losses.__getitem__)
        merge_weighted_(self.stacked, [float(i == self.best) for i in range(n)])
        super().fit(support)

    def extras(self) -> dict[str, Any]:
        names = [a.name for a in self.ctx.adapters]
        return {"upstream": names, "chosen": names[self.best],
                "support_loss": {n: round(v, 6) for n, v in zip(names, self.losses)}}
