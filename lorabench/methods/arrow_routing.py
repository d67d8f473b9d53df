"""Arrow routing (Ostapenko et al. 2024; PEFT's `ArrowConfig`): each token of every adapted layer is routed to
its top-k upstream modules by |⟨prototype, x⟩|, where a module's prototype is the top right-singular vector of
its ΔW in that layer, with softmax weights over the k (`lorabench.routing`). Routing has no parameters and
never sees the support set, so it is zero-shot where the task allows K = 0 (QA); image tasks train only the
head, on frozen features of the routed backbone, as uniform composition does.

Defaults are PEFT's (top_k = 3, router_temperature = 1, 15 power iterations) with a fixed prototype seed.
The routing weights vary per token, so they cannot be merged: prediction runs the routed layers, costing
N·r·(in + out) extra multiply-adds per token and layer, or k·r·(in + out) past 4k modules, where each token
is dispatched to its top-k modules only (`lorabench.lora.ROUTE_DENSE_MAX_RATIO`). The record's composition weights are each module's
mean routing weight over the test set's tokens (padding tokens included for text).
"""

from typing import Any

import torch
from pydantic import Field

from lorabench.adapters import attach_routing
from lorabench.data import Split
from lorabench.hashing import digest_module
from lorabench.method import FrozenFeatureMethod, MethodContext
from lorabench.specs import Composition, MethodParams


# Mean routing weights by (routed weights, split): the test features may come from the feature cache (a later
# seed of the same cell), in which case no token passes the layers and the weights are those seen before.
_SEEN: dict[str, dict[str, torch.Tensor]] = {}


class ArrowRouting(FrozenFeatureMethod):
    name = "arrow_routing"
    description = "per-token top-k routing over the N upstream modules by their ΔW's top singular vector; head only"
    needs_upstream = True

    class Params(MethodParams):
        top_k: int = Field(3, gt=0)
        router_temperature: float = Field(1.0, gt=0)
        power_iters: int = Field(15, gt=0)
        prototype_seed: int = Field(0, ge=0)

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.layers = attach_routing(ctx.backbone.model, ctx.backbone.targets(), ctx.adapters,
                                     self.params.top_k, self.params.router_temperature,
                                     self.params.power_iters, self.params.prototype_seed)

    def predict(self, split: Split) -> torch.Tensor:
        key = f"{digest_module(self.ctx.backbone.model)}|{split.key}"
        for layer in self.layers.values():
            layer.track_routing(True)
        preds = super().predict(split)
        if all(layer.route_tokens for layer in self.layers.values()):
            _SEEN[key] = {t.name: (layer.route_totals[i] / layer.route_tokens).cpu()
                          for layer in self.layers.values() for i, t in enumerate(layer.targets)}
        for layer in self.layers.values():
            layer.track_routing(False)
        self.mean_weights = _SEEN.get(key, {})
        return preds

    def composition(self) -> Composition | None:
        if not getattr(self, "mean_weights", None):
            return None
        return Composition(upstream=[a.name for a in self.ctx.adapters], matrices=list(self.mean_weights),
                           weights=[[round(float(x), 6) for x in w] for w in self.mean_weights.values()])

    def extras(self) -> dict[str, Any]:
        n = len(self.ctx.adapters)
        return {"upstream": [a.name for a in self.ctx.adapters], "top_k_used": min(self.params.top_k, n),
                "routing": "mean weight over test tokens per adapted matrix (composition)"}
