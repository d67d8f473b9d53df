"""Learned composition: W = W0 + Σₙ softmax(v)ₙ ΔWₙ with one logit vector v per adapted matrix.

As in the paper: v starts at 0 (uniform weights), the head is warmed up first on frozen features of the
uniform composition (the shared recipe's warm-up, as for every end-to-end method), then v and the head
train together on augmented views. After training the learned weights are merged into W0, so prediction
costs the bare backbone.
"""

from typing import Any

from lorabench.adapters import attach_composition
from lorabench.data import Split
from lorabench.lora import merge_all_
from lorabench.method import EndToEndMethod, MethodContext
from lorabench.specs import Composition


class LearnedComposition(EndToEndMethod):
    name = "learned_composition"
    description = "per-layer, per-matrix softmax weights over the N upstream ΔW + head"
    needs_upstream = True
    defaults = {"lr": 5e-2}
    tune_grid = {"lr": [1e-2, 5e-2, 2e-1]}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.layers = attach_composition(ctx.backbone.model, ctx.backbone.targets(), ctx.adapters)

    def backbone_params(self):
        return [layer.comp_logits for layer in self.layers.values()]

    def predict(self, split: Split):
        merge_all_(self.ctx.backbone.model)
        return super().predict(split)

    def composition(self) -> Composition:
        rows = [(t.name, layer.composition_weights().detach().cpu()[i])
                for layer in self.layers.values() for i, t in enumerate(layer.targets)]
        return Composition(upstream=[a.name for a in self.ctx.adapters], matrices=[m for m, _ in rows],
                           weights=[[round(float(x), 6) for x in w] for _, w in rows])

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters]}
