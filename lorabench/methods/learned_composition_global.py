"""Learned composition with one weight vector for the whole network: W_l = W0_l + Σₙ softmax(v)ₙ ΔWₙ,l.

The same as `learned_composition` except that every adapted matrix shares one logit vector v ∈ R^N
(N trainable parameters instead of N per matrix), to test whether per-layer weights matter.
"""

import torch
import torch.nn as nn

from lorabench.adapters import attach_composition
from lorabench.method import Method, MethodContext
from lorabench.methods.learned_composition import LearnedComposition
from lorabench.specs import Composition


class LearnedCompositionGlobal(LearnedComposition):
    name = "learned_composition_global"
    description = "one softmax weight vector over the N upstream ΔW shared by all layers + head"

    def prepare(self, ctx: MethodContext) -> None:
        Method.prepare(self, ctx)  # head and seeds only; the composition is attached below, with shared logits
        self.logits = nn.Parameter(torch.zeros(len(ctx.adapters), device=ctx.backbone.device()))
        self.layers = attach_composition(ctx.backbone.model, ctx.backbone.targets(), ctx.adapters,
                                         shared_logits=self.logits)

    def backbone_params(self):
        return [self.logits]

    def composition(self) -> Composition:
        weights = torch.softmax(self.logits.detach(), -1).cpu()
        return Composition(upstream=[a.name for a in self.ctx.adapters], matrices=["*"],
                           weights=[[round(float(x), 6) for x in weights]])
