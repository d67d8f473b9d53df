"""Best single upstream module: W = W0 + ΔW_b for the one module b that fits the support set best.

Each module alone is merged into W0 and its support features are scored by `merging.support_loss`
(a leave-one-out nearest-class-mean cross-entropy, usable at K=1); the lowest loss wins. It answers
whether composing helps over simply choosing. The choice is searched, not trained: 0 trainable parameters.
"""

from collections.abc import Callable, Sequence
from typing import Any

from lorabench.methods.scored_merge import ScoredMerge


class BestSingleUpstream(ScoredMerge):
    name = "best_single_upstream"
    description = "the one upstream ΔW with the lowest support loss, merged into W0; head only"

    def choose(self, score: Callable[[Sequence[float]], float]) -> list[float]:
        n = self.stacked.n
        self.losses = [score([float(i == j) for i in range(n)]) for j in range(n)]
        self.best = min(range(n), key=self.losses.__getitem__)
        return [float(i == self.best) for i in range(n)]

    def extras(self) -> dict[str, Any]:
        names = [a.name for a in self.ctx.adapters]
        return {"upstream": names, "chosen": names[self.best],
                "support_loss": {n: round(v, 6) for n, v in zip(names, self.losses)}}
