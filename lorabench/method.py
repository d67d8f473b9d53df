"""The method plugin contract and the method registry.

A method gets a `MethodContext` (the cell's backbone, the upstream adapters, the number of classes,
the cell's named random streams) and implements three hooks: `prepare`, `fit(support)`, `predict(split)`.
It reports its trainable parameters excluding the head, and the head's. It never sees the
evaluator. Built-in methods live in `lorabench/methods/` and are found through the same entry-point group
(`lorabench.methods`) as third-party plugins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from lorabench.adapters import LoraAdapter
from lorabench.backbones import Backbone
from lorabench.data import Split
from lorabench.errors import ConfigError
from lorabench.registry import Registry
from lorabench.seeding import Streams
from lorabench.specs import MODALITIES, Composition, EndToEndParams, MethodParams, Recipe, TaskSpec
from lorabench.training import (count_params, extract_features, predict, relative_shift, support_bank,
                                train_end_to_end, train_head)


def require_fit(task: TaskSpec, method: str) -> type["Method"]:
    """The method class, once `method` is known to exist (a bad name fails with suggestions) and to apply
    to the task's modality."""
    method_cls = METHODS.get(method)
    if task.modality not in method_cls.modalities:
        fits = sorted(n for n in METHODS.names() if task.modality in METHODS.get(n).modalities)
        raise ConfigError(f"Method {method!r} does not apply to {task.modality} tasks like {task.name!r} "
                          f"(it takes {', '.join(method_cls.modalities)} tasks). Methods for {task.name!r}: "
                          f"{', '.join(fits)}.")
    return method_cls


# The shared recipe's fields are hyperparameters of every method (the task's `recipe:` sets them for all).
RECIPE_KEYS = tuple(Recipe.model_fields)


@dataclass
class MethodContext:
    """Everything a method may use, handed to `Method.prepare`; the data come later through `fit`/`predict`.

    - `backbone`: the cell's backbone, the method's to change (merge into, attach LoRA to, train). Useful
      parts: `model`, `targets()` (the adapted matrices), `features(batch)`, `make_head(num_classes)`, `device()`.
    - `adapters`: the N upstream LoRA modules (`LoraAdapter`: `weights[target] = (A, B)`, `scales`,
      `delta(target)`), loaded only when the method sets `needs_upstream`; compose them with
      `lorabench.adapters.attach_composition` (exact on ΔW = scale·B·A) rather than by hand, and merge them
      with the plain functions of `lorabench.merging`.
    - `num_classes`: classes (or choices) of the downstream task.
    - `streams`: the cell's named random streams (`lorabench.seeding.Streams`): `streams.generator("name")`
      for any randomness of the method, `streams.init` seeds the head / LoRA init, `streams.views` the
      support set's augmented views (the same for every method of the cell).
    - `monitor`: a validation draw (tuning only, never the test split) whose accuracy end-to-end training
      logs at a few points of its trace; None in evaluation cells.
    """

    backbone: Backbone  # the cell's own: the method may change its weights
    num_classes: int
    streams: Streams
    adapters: list[LoraAdapter] = field(default_factory=list)
    monitor: Split | None = None


class Method(ABC):
    """The plugin contract (`fit`, `predict` and `trainable_params` are abstract: a class missing one cannot be
    instantiated, and the registry refuses it when it is loaded, before any work). Subclass, set the class attributes, implement the hooks, and register the
    class under the `lorabench.methods` entry-point group. The evaluator calls, once per cell:
    `Method(**hparams)` → `prepare(ctx)` → `fit(support)` → `predict(test)` → `trainable_params()`,
    `head_params()`, `extras()`. A method never sees the test labels, the evaluator or the results.

    - `name` (the registry key), `description` (one line for `lorabench list methods`);
    - `needs_upstream`: True to receive the upstream adapters in `ctx.adapters`;
    - `modalities`: the task modalities it applies to, "image" and/or "multiple_choice" (QA) — the words of
      `TaskSpec.modality`; any other word fails when the class is defined (so a plugin fails at registration);
    - `Params`: its hyperparameters beyond the task's shared recipe (`lorabench.specs.Recipe`, whose fields
      every method takes), a `lorabench.specs.MethodParams` model: a field each, its default and its allowed
      values as pydantic constraints, checked strictly before any work; users override them with `--hp k=v` (an
      unknown key is an error). `defaults` is derived from it (read-only). `tune_grid`: the values `--tune`
      tries on a validation draw;
    - in the hooks, `self.recipe` is the task's shared recipe as a typed `Recipe` (what the training loops take),
      `self.params` the method's own `Params`, and `self.hp` every hyperparameter by name (as recorded);
    - `prepare(ctx)`: keep the context, build the head (call `super().prepare(ctx)`), change the backbone;
    - `fit(support)`: train on the K-shot support `Split` (it may be empty: K = 0);
    - `predict(split)`: a [len(split)] tensor of predicted class / choice indices;
    - `trainable_params()`: parameters trained on the support set, excluding the head (values searched
      without gradients, e.g. merge weights, are not counted: say so in the docstring);
    - `extras()`: JSON-able facts worth keeping in the result record (chosen weights, losses...).

    `FrozenFeatureMethod` and `EndToEndMethod` below implement `fit`/`predict` for the two usual cases.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_upstream: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    Params: ClassVar[type[MethodParams]] = MethodParams
    defaults: ClassVar[dict[str, Any]] = {}  # Params' defaults, set when the class is defined
    tune_grid: ClassVar[dict[str, list[Any]]] = {}  # for --tune: values tried on a validation split

    def __init__(self, **hparams: Any):
        known = self.known_hparams()
        unknown = sorted(set(hparams) - set(known))
        if unknown:
            raise ConfigError(f"Method {self.name!r} has no hyperparameter(s) {unknown}; "
                              f"it takes: {', '.join(sorted(known))}.")
        self.hp: dict[str, Any] = {**known, **hparams}  # as recorded (resolved_hparams) and digested
        # The shared recipe as the typed object the training loops take (its fields are in `hp` too).
        self.recipe = Recipe.model_validate({k: self.hp[k] for k in RECIPE_KEYS})
        self.params = self.Params.model_validate({k: self.hp[k] for k in self.Params.model_fields})  # the method's own
        self.head: nn.Module | None = None
        self.log: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for old in ("defaults", "hparam_ranges"):
            if old in cls.__dict__:
                raise TypeError(f"Method {cls.__name__}: hyperparameters are a `Params` model now, not `{old}`: "
                                "declare `class Params(lorabench.specs.MethodParams)` with a field per hyperparameter, "
                                "e.g. `scale: float = Field(0.5, gt=0)` (see CONTRIBUTING.md).")
        if not (isinstance(cls.Params, type) and issubclass(cls.Params, MethodParams)):
            raise TypeError(f"Method {cls.__name__}: Params must be a subclass of lorabench.specs.MethodParams.")
        shared = sorted(set(cls.Params.model_fields) & set(RECIPE_KEYS))
        if shared:  # the recipe is the task's, shared by every method: a method default cannot change it
            raise TypeError(f"Method {cls.__name__}: Params fields {shared} are fields of the shared recipe "
                            "(lorabench.specs.Recipe); set them per task in its YAML `recipe:` instead.")
        cls.defaults = cls.Params().model_dump(mode="json")
        unknown = [m for m in cls.modalities if m not in MODALITIES]
        if unknown or isinstance(cls.modalities, str):
            raise TypeError(f"Method {cls.__name__}: modalities {cls.modalities!r} name no task modality; "
                            f"tasks have {', '.join(MODALITIES)} (a tuple of those)"
                            + (" — for QA say 'multiple_choice'." if "text" in unknown else "."))

    @classmethod
    def known_hparams(cls) -> dict[str, Any]:
        return {**Recipe().model_dump(mode="json"), **cls.defaults}

    @classmethod
    def resolve_hparams(cls, overrides: dict[str, Any] | None = None, task: TaskSpec | None = None) -> dict[str, Any]:
        """Method defaults < the task's recipe (shared by all methods) < the task's `hparams` for '*' (keys this
        method takes) and for this method < `overrides` (--hp; unknown keys are an error in __init__)."""
        known = cls.known_hparams()
        if task is None:
            return {**known, **(overrides or {})}
        shared = {k: v for k, v in task.hparams.get("*", {}).items() if k in known}
        return {**known, **task.recipe.model_dump(mode="json"), **shared, **task.hparams.get(cls.name, {}),
                **(overrides or {})}

    # -- hooks ----------------------------------------------------------------------------------
    def prepare(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.gen = ctx.streams.generator("data-order")  # the batch order every method of the cell shares
        torch.manual_seed(ctx.streams.init)  # head / LoRA init
        self.head = ctx.backbone.make_head(ctx.num_classes).to(ctx.backbone.device())

    @abstractmethod
    def fit(self, support: Split) -> None:
        """Train on the K-shot support set (possibly empty: K = 0)."""

    @abstractmethod
    def predict(self, split: Split) -> torch.Tensor:
        """A [len(split)] tensor of predicted class / choice indices."""

    # -- reporting ------------------------------------------------------------------------------
    @abstractmethod
    def trainable_params(self) -> int:
        """Trainable parameters excluding the head."""

    def head_params(self) -> int:
        return count_params(self.head.parameters()) if self.head is not None else 0

    def extras(self) -> dict[str, Any]:
        return {}

    def composition(self) -> Composition | None:
        """The weights a composition method put on each upstream module, per adapted matrix (the record's
        `composition` field, drawn as a heatmap on the leaderboard); None for methods that have none."""
        return None


def warm_up_head(head: nn.Module, ctx: MethodContext, support: Split, recipe: Recipe, gen: torch.Generator) -> float:
    """The shared head warm-up: `head_epochs` passes at `head_lr` on frozen features of the support set's views
    (the cell's view stream, so every method of the cell sees the same views); the last epoch's mean loss."""
    bank = support_bank(ctx.backbone, support, recipe, ctx.streams.views)
    return train_head(head, bank, support, recipe, gen, recipe.head_epochs, recipe.head_lr)


class FrozenFeatureMethod(Method):
    """Backbone weights fixed after `prepare`: only the head trains, for the recipe's `head_epochs` on
    frozen features of the support set's augmented views. Features are cached under a digest of the
    weights actually in the backbone, so merged backbones never share a cache entry by mistake."""

    def fit(self, support: Split) -> None:
        if len(support) == 0:
            return
        self.log["head_loss"] = warm_up_head(self.head, self.ctx, support, self.recipe, self.gen)

    def predict(self, split: Split) -> torch.Tensor:
        feats = extract_features(self.ctx.backbone, split)
        return predict(self.ctx.backbone, self.head, split, feats)

    def trainable_params(self) -> int:
        """Only the head trains (merge weights searched without gradients do not count)."""
        return 0


class EndToEndMethod(Method):
    """Trains backbone parameters (returned by `backbone_params`) and the head through the backbone, after the
    shared head warm-up: the head first trains on frozen features of the backbone as `prepare` left it (bare
    for lora/full_finetune, the uniform composition for learned_composition), exactly as a frozen-feature
    method's head does, then the recipe's `steps(n)` train both."""

    Params = EndToEndParams

    @abstractmethod
    def backbone_params(self) -> list[nn.Parameter]:
        """The backbone parameters end-to-end training updates (beside the head)."""

    def head_lr_after_warmup(self) -> float:
        """The head's learning rate in the end-to-end phase: the recipe's `e2e_head_lr` (None: `head_lr`)."""
        return self.recipe.e2e_rule()[2]

    def param_groups(self) -> list[dict]:
        return [{"params": self.backbone_params(), "lr": self.params.lr},
                {"params": list(self.head.parameters()), "lr": self.head_lr_after_warmup()}]

    def progress(self) -> dict[str, float]:
        """What the end-to-end trace logs about the method's own parameters: their relative shift from the
        start of the phase (composition methods report their weights' shift instead)."""
        return {"param_shift": relative_shift(self.backbone_params(), self._start)}

    def fit(self, support: Split) -> None:
        if len(support) == 0:
            return
        self.log["head_loss"] = warm_up_head(self.head, self.ctx, support, self.recipe, self.gen)
        self._start = [p.detach().clone() for p in self.backbone_params()]
        optimizer, momentum, _ = self.recipe.e2e_rule()
        self.log.update(train_end_to_end(self.ctx.backbone, self.head, self.param_groups(), support, self.recipe,
                                         self.gen, progress=self.progress, monitor=self.ctx.monitor,
                                         optimizer=optimizer, momentum=momentum))

    def predict(self, split: Split) -> torch.Tensor:
        return predict(self.ctx.backbone, self.head, split)

    def trainable_params(self) -> int:
        return count_params(self.backbone_params())


# Built-in methods and plugins alike come through the entry-point group; a class that is not a Method or leaves
# an abstract hook unimplemented is refused when it is loaded.
METHODS: Registry[type[Method]] = Registry("method", entry_point_group="lorabench.methods", base_cls=Method)
