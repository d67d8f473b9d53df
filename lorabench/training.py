"""The shared training loops: head warm-up on frozen features (AdamW), the end-to-end phase (the recipe's rule:
SGD with momentum), upstream training (AdamW), all with cosine decay, on the recipe's image views.

Every method of a (task, K, seed) cell goes through these functions with the same recipe and the same
generator, so it sees the same batch stream (indices and augmentations) and the same head init.
Frozen features are cached for the process under a digest of the weights actually in the backbone (and
of the split and the views), so a grid over K and seeds runs the backbone once per distinct input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lorabench.backbones import Backbone
from lorabench.data import Split
from lorabench.errors import TrainingError
from lorabench.hashing import digest_json, digest_module
from lorabench.runtime import keep_freed_memory, to_device
from lorabench.seeding import generator
from lorabench.specs import Recipe, TrainingRecipe, UpstreamRecipe
from lorabench.views import random_views

_FEATURES: dict[str, torch.Tensor] = {}
EVAL_BATCH_CPU, EVAL_BATCH_CUDA = 64, 512  # see eval_batch_size


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> Iterable[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def augments(split: Split, recipe: TrainingRecipe) -> bool:
    """Random views apply to image splits when the recipe asks for them."""
    return split.modality == "image" and recipe.augment


def train_batch(split: Split, idx: torch.Tensor, recipe: TrainingRecipe, gen: torch.Generator
                ) -> dict[str, torch.Tensor]:
    """A training batch: random-resized-crop + flip views of images (recipe), else the plain inputs."""
    if not augments(split, recipe):
        return split.batch(idx)
    batch = {k: v[idx] for k, v in split.inputs.items()}
    size = split.meta.get("image_size", batch["pixels"].shape[-1])
    batch["pixels"] = random_views(batch["pixels"], size, gen, tuple(recipe.crop_scale), recipe.hflip)
    return batch


def eval_batch_size(device: torch.device | str) -> int:
    """Batch of inference (features, predictions): nothing is kept for a backward pass, so on an accelerator
    a big batch fills it; on the CPU 64 already keeps the cores busy and bounds the activations' memory."""
    return EVAL_BATCH_CUDA if torch.device(device).type == "cuda" else EVAL_BATCH_CPU


def extract_features(backbone: Backbone, split: Split, cache: bool | str | None = True, batch_size: int | None = None,
                     views: int = 0, view_seed: int = 0, recipe: TrainingRecipe | None = None) -> torch.Tensor:
    """Features of every example (CPU tensor): [n, d] of the resized images, or with `views` = V > 0,
    [V, n, d] of V random views per example (view v of the whole split is drawn from (view_seed, v), so
    the views do not depend on who asks). Cached under a digest of the backbone's weights; a falsy
    `cache` disables caching (e.g. a weight search that tries many merges once each)."""
    keep_freed_memory()
    aug = recipe.model_copy(update={"augment": True}) if views else None  # views: always crops + flips
    key = None
    if cache:
        key = digest_json([backbone.name, digest_module(backbone.model), backbone.precision, split.key, views,
                           view_seed, aug and [aug.crop_scale, aug.hflip]])
        if key in _FEATURES:
            return _FEATURES[key]
    backbone.model.eval()
    dev = backbone.device()
    batch_size = batch_size or eval_batch_size(dev)
    split = on_device(split, dev)
    passes = []
    with torch.inference_mode():
        for v in range(max(views, 1)):
            gen = generator(view_seed, "view", v) if views else None
            chunks = []
            for i in range(0, len(split), batch_size):
                idx = torch.arange(i, min(i + batch_size, len(split)))
                batch = train_batch(split, idx, aug, gen) if views else split.batch(idx)
                chunks.append(backbone.features(batch).float())
            passes.append(torch.cat(chunks) if chunks else torch.empty(0, backbone.feature_dim, device=dev))
        feats = torch.stack(passes) if views else passes[0]
    feats = feats.cpu().clone()  # one read back; a normal tensor: autograd refuses inference tensors
    if key is not None:
        _FEATURES[key] = feats
    return feats


def support_bank(backbone: Backbone, support: Split, recipe: Recipe, view_seed: int) -> torch.Tensor:
    """What a head trains on: [V, n, d] frozen features of V augmented views (image tasks with
    augmentation) or [1, n, d] of the inputs themselves."""
    if augments(support, recipe):
        return extract_features(backbone, support, views=recipe.feature_views, view_seed=view_seed, recipe=recipe)
    return extract_features(backbone, support)[None]


def _optimizer(groups: list[dict], weight_decay: float, kind: str = "adamw", momentum: float = 0.9
               ) -> torch.optim.Optimizer:
    """AdamW (warm-up, upstream training), or SGD with momentum, whose step shrinks with the gradient: on a
    support set that a warmed-up head already fits, AdamW's lr·m/√v takes full-size steps on a loss of 1e-6."""
    groups = [g for g in groups if g["params"]]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def _schedule(opt: torch.optim.Optimizer, kind: str, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from each group's lr to 0 over `total` steps (or a constant lr)."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


CHECK_EVERY = 25  # steps between the non-finite-loss checks: each reads the device (a host sync)
DEVICE_DATA_BYTES = 8 << 30  # a split (or feature bank) up to this size moves to the device whole; a larger one stays


def on_device(split: Split, device: torch.device) -> Split:
    """`split` moved to `device` once, if it fits (`DEVICE_DATA_BYTES`): its batches, resizes and views are then
    made there, and only its uint8 pixels ever cross from the host."""
    return split.to(device) if split.nbytes() <= DEVICE_DATA_BYTES else split


def _check(losses: list[torch.Tensor], first: int, what: str) -> None:
    """Stop on a non-finite loss among `losses` (steps `first`, `first` + 1, ...), naming the first such step."""
    if not losses:
        return
    bad = ~torch.isfinite(torch.stack(losses))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise TrainingError(f"{what}: the training loss became {float(losses[i])} at step {first + i}; no result is "
                            "written. Lower the learning rate (--hp lr=..., head_lr=...) or check the inputs.")


def _passes(n: int, batch_size: int, gen: torch.Generator) -> Iterator[tuple[int, torch.Tensor]]:
    """(pass, indices) batches: pass after pass over the n examples, each in a fresh order from `gen`."""
    p = 0
    while n:
        for idx in minibatches(n, batch_size, gen):
            yield p, idx
        p += 1


def run_steps(groups: list[dict], recipe: TrainingRecipe, steps: int, batches: Iterator[tuple[int, torch.Tensor]],
              loss_of: Callable[[int, torch.Tensor], torch.Tensor], what: str, optimizer: str = "adamw",
              momentum: float = 0.9, after_step: Callable[[int, torch.Tensor], None] | None = None
              ) -> list[tuple[int, int, float]]:
    """The one training loop of the protocol, for heads, end-to-end methods and upstream modules alike:
    `steps` steps of `optimizer` (the recipe's weight decay; `momentum` for SGD) under the recipe's schedule, on
    `batches`; a loss that is not finite stops it with an error naming its step. Losses stay on the device and
    are checked every `CHECK_EVERY` steps and at the end, so a step does not wait for the device.
    `after_step(step, loss)` is called after each update with the (device) loss (the end-to-end trace).
    Returns (pass, batch size, loss) per step."""
    keep_freed_memory()
    opt = _optimizer(groups, recipe.weight_decay, optimizer, momentum)
    sched = _schedule(opt, recipe.schedule, max(steps, 1))
    passes, sizes, losses = [], [], []
    for step, (p, idx) in zip(range(steps), batches):  # range first: no batch is drawn past the last step
        loss = loss_of(p, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        passes.append(p)
        sizes.append(len(idx))
        losses.append(loss.detach())
        if (step + 1) % CHECK_EVERY == 0:
            _check(losses[-CHECK_EVERY:], step + 1 - CHECK_EVERY, what)
        if after_step is not None:
            after_step(step + 1, losses[-1])
    _check(losses[len(losses) - len(losses) % CHECK_EVERY:], len(losses) - len(losses) % CHECK_EVERY, what)
    values = torch.stack(losses).tolist() if losses else []
    return list(zip(passes, sizes, values))


def train_head(head: nn.Module, bank: torch.Tensor, split: Split, recipe: TrainingRecipe, gen: torch.Generator,
               epochs: int, lr: float) -> float:
    """Train only the head on frozen features `bank` ([V, n, ...]: V views, epoch e uses view e mod V; see
    `support_bank`) for `epochs` passes over the split at learning rate `lr` (the few-shot warm-up: the recipe's
    `head_epochs` and `head_lr`; the upstream probe: `probe_epochs`); returns the last epoch's mean loss."""
    if len(bank) and bank.shape[1] != len(split):
        raise ValueError(f"bank of shape {tuple(bank.shape)} is not [views, {len(split)}, ...]")
    dev = next(head.parameters()).device
    n = len(split)
    mc = split.modality == "multiple_choice"
    if bank.nbytes <= DEVICE_DATA_BYTES:  # once, not a copy per step
        bank = to_device(bank, dev)
    labels = to_device(split.labels, bank.device)

    def loss_of(epoch: int, idx: torch.Tensor) -> torch.Tensor:
        rows = to_device(idx, bank.device)
        logits = Backbone.logits(head, to_device(bank[epoch % len(bank)][rows], dev), split.batch(idx) if mc else {})
        return F.cross_entropy(logits, to_device(labels[rows], dev))

    log = run_steps([{"params": list(head.parameters()), "lr": lr}], recipe,
                    epochs * math.ceil(n / recipe.batch_size), _passes(n, recipe.batch_size, gen), loss_of,
                    "head training")
    last = [loss * size for p, size, loss in log if p == epochs - 1]
    return sum(last) / max(n, 1) if last else math.nan


def relative_shift(params: list[torch.Tensor], start: list[torch.Tensor]) -> float:
    """‖θ − θ₀‖ / ‖θ₀‖ over a list of tensors (how far training moved them from where it started)."""
    num = sum(float((p.detach() - q).pow(2).sum()) for p, q in zip(params, start))
    den = sum(float(q.pow(2).sum()) for q in start)
    return math.sqrt(num / den) if den else math.sqrt(num)


def trace_points(steps: int, every: int, monitor_points: int) -> tuple[set[int], set[int]]:
    """Steps after which the trace logs (the start, every `every` steps and the last) and those at which it
    also scores the monitor split (0, then `monitor_points` evenly spaced, the last included)."""
    logged = {0, steps} | set(range(every, steps + 1, every))
    scored = {0} | {round(steps * i / monitor_points) for i in range(1, monitor_points + 1)} if monitor_points else set()
    return logged, scored


def train_end_to_end(backbone: Backbone, head: nn.Module, groups: list[dict], split: Split,
                     recipe: Recipe | UpstreamRecipe, gen: torch.Generator, steps: int | None = None,
                     progress: Callable[[], dict[str, float]] | None = None,
                     monitor: Split | None = None, trace_every: int | None = None, optimizer: str = "adamw",
                     momentum: float = 0.9) -> dict[str, Any]:
    """Train `groups` (param groups with their lr) and the head through the backbone for `steps` steps
    (default: the recipe's budget, `recipe.steps`) with `optimizer` (a few-shot cell passes its recipe's
    end-to-end rule, `Recipe.e2e_rule`; upstream training AdamW), on batches that cycle through the
    support set in a fresh order each pass (random views for images). The backbone stays in eval mode:
    BatchNorm statistics stay frozen and dropout off, which few-shot batches of 2 could not estimate anyway.

    The returned log holds a `trace`: every `trace_every` steps (default: about 20 rows) the support loss, the
    head's relative shift from its warmed-up weights, what `progress()` reports (e.g. the composition
    weights' shift) and, at a few points, the accuracy on `monitor` (a validation draw; never the test split)."""
    dev = backbone.device()
    steps = recipe.steps(len(split)) if steps is None else steps
    params = [p for g in groups for p in g["params"]]
    frozen = sum(not p.requires_grad for p in params)
    if frozen:  # a plugin bug that would otherwise train nothing and still report every parameter as trainable
        raise ValueError(f"{frozen} of the {len(params)} parameters handed to end-to-end training do not require "
                         "grad; set requires_grad_(True) on them in the method's prepare().")
    backbone.model.eval()
    split = on_device(split, dev)  # once: batches and their views are then made on the device
    head_params = list(head.parameters())
    head_start = [p.detach().clone() for p in head_params]
    logged, scored = trace_points(steps, trace_every or max(1, steps // 20), 4 if monitor is not None and len(monitor)
                                  else 0)
    trace: list[dict[str, float]] = []

    def record(step: int, loss: torch.Tensor | None) -> None:
        if step not in logged and step not in scored:
            return
        row: dict[str, float] = {"step": step}
        if loss is not None:
            row["loss"] = float(loss)
        row["head_shift"] = relative_shift(head_params, head_start)
        row.update(progress() if progress is not None else {})
        if step in scored:
            row["monitor_accuracy"] = float((predict(backbone, head, monitor) == monitor.labels).float().mean())
        trace.append(row)

    def loss_of(_: int, idx: torch.Tensor) -> torch.Tensor:
        idx = to_device(idx, split.labels.device)  # queued, not waited for (an index on the host would be)
        batch = train_batch(split, idx, recipe, gen)
        return F.cross_entropy(Backbone.logits(head, backbone.features(batch), batch), to_device(split.labels[idx], dev))

    if steps:
        record(0, None)
    losses = [loss for _, _, loss in run_steps(groups, recipe, steps, _passes(len(split), recipe.batch_size, gen),
                                               loss_of, "end-to-end training", optimizer, momentum, record)]
    if any(not torch.isfinite(p).all() for p in params):
        raise TrainingError("end-to-end training left non-finite weights; no result is written.")
    tail = losses[-max(1, len(losses) // 10):] if losses else [math.nan]
    return {"steps": steps, "optimizer": optimizer,
            "first_loss": losses[0] if losses else math.nan, "final_loss": sum(tail) / len(tail), "trace": trace}


@torch.inference_mode()
def predict(backbone: Backbone, head: nn.Module, split: Split, feats: torch.Tensor | None = None,
            batch_size: int | None = None) -> torch.Tensor:
    """Predicted class / choice per example; uses `feats` when given (frozen-feature methods)."""
    backbone.model.eval()
    batch_size = batch_size or eval_batch_size(backbone.device())
    dev = next(head.parameters()).device
    inputs = feats is None or split.modality == "multiple_choice"  # the batches' inputs are read (QA: choice masks)
    if inputs:
        split = on_device(split, backbone.device())
    if feats is not None:
        feats = to_device(feats, dev)
    preds = []
    for i in range(0, len(split), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(split)))
        batch = split.batch(idx) if inputs else {}
        f = feats[to_device(idx, feats.device)] if feats is not None else backbone.features(batch)
        preds.append(Backbone.logits(head, f, batch).argmax(-1))
    return torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)  # one read back


def count_params(params: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
