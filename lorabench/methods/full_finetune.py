"""Full fine-tuning: every backbone weight and the head train."""

from lorabench.method import EndToEndMethod, MethodContext


class FullFinetune(EndToEndMethod):
    name = "full_finetune"
    description = "all backbone weights + head"
    defaults = {"lr": 1e-4}  # SGD (the recipe's e2e_optimizer)
    tune_grid = {"lr": [1e-4, 1e-3, 1e-2]}

    def prepare(self, ctx: MethodContext) -> None:
        super().prepare(ctx)
        for p in ctx.backbone.model.parameters():
            p.requires_grad_(True)

    def backbone_params(self):
        return list(self.ctx.backbone.model.parameters())
