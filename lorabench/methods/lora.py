"""LoRA from scratch: a new rank-r LoRA on the backbone's targets, trained on the support set."""

from lorabench.lora import attach
from lorabench.method import EndToEndMethod, MethodContext


class LoraFromScratch(EndToEndMethod):
    name = "lora"
    description = "new rank-r LoRA on the backbone's targets + head"
    defaults = {"lr": 1e-3, "rank": 16, "alpha": 16.0}  # SGD (the recipe's e2e_optimizer)
    tune_grid = {"lr": [1e-4, 1e-3, 1e-2]}
    hparam_ranges = {"rank": ">=1", "alpha": ">0"}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.layers = attach(ctx.backbone.model, ctx.backbone.targets())
        for layer in self.layers.values():
            layer.enable_lora(self.hp["rank"], self.hp["alpha"])

    def backbone_params(self):
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]
