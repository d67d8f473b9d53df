"""The support-scored merges (task arithmetic, LoraHub, best single upstream): W = W0 + Σₙ wₙ·ΔWₙ with the weights
w chosen by the support set's `merging.support_loss`, searched rather than trained, then only the head trains.

One contract for the three: `choose(score)` returns w, given `score(w)`, the support loss of the backbone merged
with w (exact on ΔW, `merging.weighted_scorer`); the merge, its checks and the scorer's temperature live here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence

from pydantic import Field

from lorabench.data import Split
from lorabench.merging import merge_weighted_, require_support, stack_modules, weighted_scorer
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import MethodParams


class ScoredMerge(FrozenFeatureMethod):
    """Merge the upstream modules with the weights `choose` picks on the support loss; 0 trainable parameters."""

    needs_upstream = True

    class Params(MethodParams):
        temperature: float = Field(10.0, gt=0, description="logit scale of the support loss's cosine classifier")

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.stacked = stack_modules(ctx.backbone, ctx.adapters)

    @abstractmethod
    def choose(self, score: Callable[[Sequence[float]], float]) -> list[float]:
        """The merge weights (one per upstream module), given the support loss of a weighting."""

    def fit(self, support: Split) -> None:
        require_support(self.name, support)
        weights = self.choose(weighted_scorer(self.ctx.backbone, self.stacked, support, self.params.temperature))
        merge_weighted_(self.stacked, weights)
        super().fit(support)
