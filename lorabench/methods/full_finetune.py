"""Full fine-tuning: every backbone weight and the head train."""

from pydantic import Field

from lorabench.method import EndToEndMethod, MethodContext
from lorabench.specs import EndToEndParams


class FullFinetune(EndToEndMethod):
    name = "full_finetune"
    description = "all backbone weights + head"

    class Params(EndToEndParams):
        lr: float = Field(1e-4, gt=0)  # SGD (the recipe's e2e_optimizer)

    tune_grid = {"lr": [1e-4, 1e-3, 1e-2]}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        for p in ctx.backbone.model.parameters():
            p.requires_grad_(True)

    def backbone_params(self):
        return list(self.ctx.backbone.model.parameters())
