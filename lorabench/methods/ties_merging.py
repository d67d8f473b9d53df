"""TIES merging (Yadav et al. 2023) of the N upstream ΔW, folded into W0 once; then only the head trains.

Per adapted weight: keep each module's top-`density` entries by magnitude (trim), take each entry's
sign from the trimmed sum (elect), average the entries that agree with it (disjoint merge), and add
`scaling` × that to W0. Nothing is searched or trained besides the head: 0 trainable parameters.
"""

from typing import Any

from pydantic import Field

from lorabench.merging import merge_transformed_, stack_modules, ties_merge
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import MethodParams


class TiesMerging(FrozenFeatureMethod):
    name = "ties_merging"
    description = "TIES trim / elect-sign / disjoint-mean of the N upstream ΔW merged into W0; head only"
    needs_upstream = True

    class Params(MethodParams):
        density: float = Field(0.2, gt=0, le=1)
        scaling: float = 1.0

    tune_grid = {"density": [0.1, 0.2, 0.5]}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        density, scaling = self.params.density, self.params.scaling
        merge_transformed_(stack_modules(ctx.backbone, ctx.adapters), lambda deltas: ties_merge(deltas, density, scaling))

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters]}
