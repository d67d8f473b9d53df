"""Task arithmetic (Ilharco et al. 2023) on LoRA deltas: W = W0 + λ·Σₙ ΔWₙ, then only the head trains.

λ is chosen on the support set, without labels leaking from anywhere else: for each λ in a small grid
the merged backbone's support features are scored by `merging.support_loss` (a leave-one-out
nearest-class-mean cross-entropy, which also works at K=1); the lowest loss wins (ties: smaller λ).
λ is searched, not trained, so the method reports 0 trainable parameters.
"""

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from lorabench.methods.scored_merge import ScoredMerge


class TaskArithmetic(ScoredMerge):
    name = "task_arithmetic"
    description = "W0 + λ·ΣΔW, λ chosen on the support set; head only"

    class Params(ScoredMerge.Params):
        lambdas: list[float] = Field([0.1, 0.25, 0.5, 0.75, 1.0], min_length=1)

    def choose(self, score: Callable[[Sequence[float]], float]) -> list[float]:
        n = self.stacked.n
        self.losses = {float(lam): score([float(lam)] * n) for lam in sorted(self.params.lambdas)}
        self.lam = min(self.losses, key=self.losses.get)
        return [self.lam] * n

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters], "lambda": self.lam,
                "support_loss_per_lambda": {str(k): round(v, 6) for k, v in self.losses.items()}}
