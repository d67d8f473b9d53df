"""Task arithmetic (Ilharco et al. 2023) on LoRA deltas: W = W0 + λ·Σₙ ΔWₙ, then only the head trains.

λ is chosen on the support set, without labels leaking from anywhere else: for each λ in a small grid
the merged backbone's support features are scored by `merging.support_loss` (a leave-one-out
nearest-class-mean cross-entropy, which also works at K=1); the lowest loss wins (ties: smaller λ).
λ is searched, not trained, so the method reports 0 trainable parameters.
"""

from typing import Any

from pydantic import Field

from lorabench.data import Split
from lorabench.merging import merge_weighted_, require_support, stack_modules, weighted_scorer
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import MethodParams


class TaskArithmetic(FrozenFeatureMethod):
    name = "task_arithmetic"
    description = "W0 + λ·ΣΔW, λ chosen on the support set; head only"
    needs_upstream = True

    class Params(MethodParams):
        lambdas: list[float] = Field([0.1, 0.25, 0.5, 0.75, 1.0], min_length=1)
        temperature: float = Field(10.0, gt=0)

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.stacked = stack_modules(ctx.backbone, ctx.adapters)
        self.losses: dict[float, float] = {}

    def fit(self, support: Split) -> None:
        require_support(self.name, support)
        score = weighted_scorer(self.ctx.backbone, self.stacked, support, self.params.temperature)
        n = self.stacked.n
        self.losses = {float(lam): score([float(lam)] * n) for lam in sorted(self.params.lambdas)}
        self.lam = min(self.losses, key=self.losses.get)
        merge_weighted_(self.stacked, [self.lam] * n)
        super().fit(support)

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters], "lambda": self.lam,
                "support_loss_per_lambda": {str(k): round(v, 6) for k, v in self.losses.items()}}
