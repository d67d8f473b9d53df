"""LoRA from scratch: a new rank-r LoRA on the backbone's targets, trained on the support set."""

from pydantic import Field

from lorabench.lora import attach
from lorabench.method import EndToEndMethod, MethodContext
from lorabench.specs import EndToEndParams


class LoraFromScratch(EndToEndMethod):
    name = "lora"
    description = "new rank-r LoRA on the backbone's targets + head"

    class Params(EndToEndParams):
        lr: float = Field(1e-3, gt=0)  # SGD (the recipe's e2e_optimizer)
        rank: int = Field(16, ge=1)
        alpha: float = Field(16.0, gt=0)

    tune_grid = {"lr": [1e-4, 1e-3, 1e-2]}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        self.layers = attach(ctx.backbone.model, ctx.backbone.targets())
        for layer in self.layers.values():
            layer.enable_lora(self.params.rank, self.params.alpha)

    def backbone_params(self):
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]
