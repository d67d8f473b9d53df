"""merged_prototypes: W0 + scale·ΣΔWₙ merged once, then a nearest-class-mean head (nothing trains)."""

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from lorabench.data import Split
from lorabench.merging import merge_weighted_, stack_modules
from lorabench.method import Method, MethodContext
from lorabench.specs import MethodParams
from lorabench.training import extract_features


class MergedPrototypes(Method):
    name = "merged_prototypes"
    description = "sum of the upstream ΔW (× scale) merged into W0; class-mean cosine head, no training"
    needs_upstream = True
    modalities = ("image",)

    class Params(MethodParams):  # hyperparameters: defaults and allowed values, checked before any work
        scale: float = Field(0.5, gt=0)

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)  # keeps ctx, seeds the run, makes self.head
        weights = [self.params.scale] * len(ctx.adapters)
        merge_weighted_(stack_modules(ctx.backbone, ctx.adapters), weights)  # exact: W0 + scale·Σ scaleₙ·Bₙ·Aₙ
        self.tag = f"merged_prototypes:{self.params.scale}:" + "|".join(a.source for a in ctx.adapters)

    def fit(self, support: Split) -> None:
        feats = F.normalize(extract_features(self.ctx.backbone, support, self.tag), dim=-1)
        onehot = F.one_hot(support.labels, self.ctx.num_classes).float()
        means = F.normalize(onehot.T @ feats, dim=-1)  # one prototype per class
        with torch.no_grad():
            self.head.weight.copy_(means)
            self.head.bias.zero_()

    def predict(self, split: Split) -> torch.Tensor:
        feats = F.normalize(extract_features(self.ctx.backbone, split, self.tag), dim=-1)
        return self.head(feats.to(self.head.weight.device)).argmax(-1).cpu()

    def trainable_params(self) -> int:
        return 0  # nothing is trained; the head's prototypes count as head parameters

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters], "scale": self.params.scale}
