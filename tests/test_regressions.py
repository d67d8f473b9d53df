"""Regression tests for bugs the suite once let through ("Results you can trust", point 10).

Each test targets one seeded bug and fails when it is put back:

a. `full_finetune` training only the head (backbone parameters left frozen);
b. BatchNorm in train mode during end-to-end training (batch statistics used, running stats moved);
c. `learned_composition` without the shared head warm-up on the uniform composition's features;
d. the adapter-store key ignoring the task's `upstream_training` recipe (old adapters reused);
e. the score computed on the support set instead of the test split;
f. per-layer `learned_composition` logits that never move, or move as one vector for the whole network.

They run on the quick digits task (32 px, a handful of steps), at the method level where possible, with
synthetic upstream adapters large enough that composing them visibly changes the backbone.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

import lorabench.method as method_module
from conftest import QUICK_TASK, registered_task
from lorabench.adapters import LoraAdapter
from lorabench.backbones import create_backbone
from lorabench.data import load_examples, sample_support
from lorabench.evaluator import encode_cached, run_cell
from lorabench.grid import needed_upstream_jobs
from lorabench.seeding import Streams
from lorabench.method import METHODS, MethodContext
from lorabench.specs import RunConfig, UpstreamRecipe
from lorabench.task_registry import get_task
from lorabench.upstream import CONFIG_FILE, WEIGHTS_FILE, adapter_dir, adapter_key, cache_root, upstream_jobs

BACKBONE = "efficientnet_lite0"
N_ADAPTERS = 3


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task(quick_task):
    return get_task(quick_task)


def support_split(task, k: int, seed: int = 0):
    bb = create_backbone(BACKBONE)
    ex = load_examples(task.downstream.train)
    return encode_cached(bb, ex, sample_support(ex.labels, k, seed), task.preprocessing)


@pytest.fixture(scope="module")
def adapters():
    """N synthetic upstream adapters on every target: random (A, B) of a size that changes the features."""
    targets = create_backbone(BACKBONE).targets()
    gen = torch.Generator().manual_seed(1234)
    out = []
    rank = 4
    for j in range(N_ADAPTERS):
        weights = {t.name: (torch.randn(rank, t.in_features, generator=gen) / math.sqrt(t.in_features),
                            torch.randn(t.out_features, rank, generator=gen) * 0.2 / math.sqrt(rank))
                   for t in targets}
        out.append(LoraAdapter(f"synthetic_{j}", weights, {n: 1.0 for n in weights}, BACKBONE))
    return out


def make_method(name: str, task, adapters=(), seed: int = 0, view_seed: int = 0, **overrides):
    cls = METHODS.get(name)
    m = cls(**cls.resolve_hparams(overrides, task))
    bb = create_backbone(BACKBONE)
    m.prepare(MethodContext(backbone=bb, num_classes=2, streams=Streams(init=seed, views=view_seed),
                            adapters=list(adapters) if cls.needs_upstream else []))
    return m


def capture_end_to_end(monkeypatch):
    """Wrap the end-to-end trainer the methods call; returns a dict that says when it runs and with what head."""
    seen: dict = {"calls": 0, "active": False, "head_at_start": None}
    original = method_module.train_end_to_end

    def wrapper(backbone, head, *args, **kw):
        seen["calls"] += 1
        seen["head_at_start"] = copy.deepcopy(head.state_dict())
        seen["active"] = True
        try:
            return original(backbone, head, *args, **kw)
        finally:
            seen["active"] = False

    monkeypatch.setattr(method_module, "train_end_to_end", wrapper)
    return seen


# --- a. full_finetune trains the backbone ---------------------------------------------------------


def test_a_full_finetune_trains_every_backbone_weight_not_only_the_head(task):
    support = support_split(task, 2)
    m = make_method("full_finetune", task)
    model = m.ctx.backbone.model
    params = dict(model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert not frozen, f"full_finetune left {len(frozen)} backbone parameters frozen, e.g. {frozen[:3]}"
    assert m.trainable_params() == m.ctx.backbone.num_params()

    before = {n: p.detach().clone() for n, p in params.items()}
    pristine = create_backbone(BACKBONE)
    m.fit(support)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    # Every backbone tensor (convs, BN affine weights and biases) gets a gradient and an AdamW step.
    assert len(unchanged) <= 0.02 * len(params), f"{len(unchanged)}/{len(params)} unchanged, e.g. {unchanged[:5]}"
    convs = [n for n in params if "conv" in n and n.endswith("weight")]
    assert convs and not [n for n in convs if n in unchanged]
    # ... so the features themselves move, not just the head on top of them.
    batch = support.batch(torch.arange(len(support)))
    with torch.no_grad():
        model.eval()
        assert not torch.allclose(m.ctx.backbone.features(batch), pristine.features(batch))


# --- b. BatchNorm stays in eval mode during end-to-end training -----------------------------------


@pytest.mark.parametrize("method", ["full_finetune", "lora", "learned_composition"])
def test_b_end_to_end_forwards_use_frozen_batchnorm_statistics(task, adapters, method, monkeypatch):
    seen = capture_end_to_end(monkeypatch)
    support = support_split(task, 5)  # batches of 10: batch statistics would differ clearly from the running ones
    m = make_method(method, task, adapters)
    model = m.ctx.backbone.model
    bns = {n: mod for n, mod in model.named_modules() if isinstance(mod, _BatchNorm)}
    assert len(bns) > 10
    stats_before = {n: t.detach().clone() for n, t in model.state_dict().items()
                    if n.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    records: list[tuple[str, bool, float]] = []

    def hook(name):
        def fn(mod, inputs, output):
            if not seen["active"]:
                return
            x = inputs[0]
            with torch.no_grad():  # what eval-mode BN gives for this input (running statistics)
                ref = F.batch_norm(x, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.0, mod.eps)
                if hasattr(mod, "act"):
                    ref = mod.act(mod.drop(ref) if hasattr(mod, "drop") else ref)
                err = float((output.detach() - ref).abs().max())
            records.append((name, mod.training, err))
        return fn

    handles = [mod.register_forward_hook(hook(n)) for n, mod in bns.items()]
    try:
        m.fit(support)
    finally:
        for h in handles:
            h.remove()
    assert seen["calls"] == 1
    steps = m.log["steps"]
    assert steps >= 2 and len(records) == steps * len(bns)  # every BN, every training forward
    in_train_mode = sorted({n for n, training, _ in records if training})
    assert not in_train_mode, f"BatchNorm in train mode during end-to-end training: {in_train_mode[:5]}"
    worst = max(err for _, _, err in records)
    assert worst < 1e-4, f"BN outputs are not those of its running statistics (max diff {worst})"
    after = model.state_dict()
    moved = [n for n, t in stats_before.items() if not torch.equal(t, after[n])]
    assert not moved, f"BatchNorm buffers changed: {moved[:5]}"


# --- c. learned_composition warms its head up on the uniform composition first --------------------


def test_c_learned_composition_warms_up_its_head_exactly_like_uniform_composition(task, adapters, monkeypatch):
    support = support_split(task, 5)
    # The reference: the uniform composition's head, trained on frozen features with the same recipe, the same
    # head init (ctx seed), the same batch stream and the same views (view seed).
    ref = make_method("uniform_composition", task, adapters, seed=7, view_seed=11)
    init = copy.deepcopy(ref.head.state_dict())
    ref.fit(support)
    bare = make_method("classifier_tuning", task, seed=7, view_seed=11)
    bare.fit(support)

    seen = capture_end_to_end(monkeypatch)
    m = make_method("learned_composition", task, adapters, seed=7, view_seed=11)
    assert all(torch.equal(init[k], v) for k, v in m.head.state_dict().items())  # same head init
    m.fit(support)
    assert seen["calls"] == 1
    warm = seen["head_at_start"]
    # The warm-up ran: the head entering end-to-end training is no longer its init ...
    assert not all(torch.equal(init[k], warm[k]) for k in init), "no head warm-up before end-to-end training"
    # ... it is the uniform composition's trained head (features of W0 + (1/N)ΣΔW, not of the bare backbone) ...
    for k, v in ref.head.state_dict().items():
        assert torch.allclose(warm[k], v, atol=1e-4, rtol=1e-3), k
    assert not all(torch.allclose(warm[k], v, atol=1e-4, rtol=1e-3) for k, v in bare.head.state_dict().items())
    # ... and its warm-up loss is logged.
    assert math.isfinite(m.log["head_loss"]) and m.log["head_loss"] == pytest.approx(ref.log["head_loss"], rel=1e-3)


# --- d. the adapter-store key covers the upstream training recipe ---------------------------------


def _changed(field: str, value):
    special = {"schedule": "constant", "max_steps": 5, "crop_scale": (0.5, 1.0), "holdout_fraction": 0.2}
    if field in special:
        return special[field] if value != special[field] else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, (tuple, list)):
        return type(value)(x * 0.5 for x in value)
    if isinstance(value, str):
        return value + "_x"
    return None


def test_d_adapter_store_path_changes_with_every_upstream_training_field(task, tmp_path):
    root = cache_root(tmp_path)
    up = task.upstream[0]
    base = task.upstream_training
    data = "sha256:" + "0" * 64
    base_dir = adapter_dir(root, BACKBONE, up, task.preprocessing, base, data=data)
    fields = list(UpstreamRecipe.model_fields)
    assert {"lr", "epochs", "rank", "alpha", "max_steps", "head_lr", "seed"} <= set(fields)
    for f in fields:
        new = _changed(f, getattr(base, f))
        assert new is not None, f"no changed value for UpstreamRecipe.{f}; extend _changed"
        other = base.model_copy(update={f: new})
        assert (adapter_key(BACKBONE, up, task.preprocessing, other, data=data)
                != adapter_key(BACKBONE, up, task.preprocessing, base, data=data)), f
        assert adapter_dir(root, BACKBONE, up, task.preprocessing, other, data=data) != base_dir, f
    assert adapter_dir(root, BACKBONE, up, task.preprocessing, base, data="sha256:" + "1" * 64) != base_dir  # content


def test_d_a_changed_upstream_recipe_never_reuses_the_old_adapters(quick_task, tmp_path):
    cache = tmp_path / "cache"
    old = get_task(quick_task)
    old_paths = [j.path for j in upstream_jobs(old, BACKBONE, None, str(cache))]
    # Mark the old recipe's adapters as present in the store (a complete adapter is its two files).
    for p in old_paths:
        Path(p).mkdir(parents=True)
        (Path(p) / CONFIG_FILE).write_text("{}")
        (Path(p) / WEIGHTS_FILE).write_bytes(b"")

    def cell(name):
        return RunConfig(task=name, method="learned_composition", backbone=BACKBONE, k=1, seed=0,
                         results_dir=str(tmp_path / "results"), cache_dir=str(cache))

    assert needed_upstream_jobs([cell(quick_task)]) == {}  # same recipe: reused
    # The smoke profile's adapters (smaller recipe, capped pools) are other adapters, never the full ones.
    smoke = get_task(quick_task, "smoke")
    assert smoke.upstream_training != old.upstream_training
    assert not set(j.path for j in upstream_jobs(smoke, BACKBONE, None, str(cache))) & set(old_paths)
    for change in ({"lr": 3e-3}, {"epochs": 2}, {"rank": 8}):
        spec = {**QUICK_TASK, "name": f"digits_up_{next(iter(change))}",
                "upstream_training": {**QUICK_TASK["upstream_training"], **change}}
        folder = tmp_path / spec["name"]
        folder.mkdir()
        with registered_task(folder, spec) as name:
            new = get_task(name)
            assert new.upstream_training != old.upstream_training
            new_paths = [j.path for j in upstream_jobs(new, BACKBONE, None, str(cache))]
            assert not set(new_paths) & set(old_paths), change
            assert sorted(needed_upstream_jobs([cell(name)])) == sorted(new_paths), change  # retrained, not reused


# --- e. the score is accuracy on the test split -------------------------------------------------


@pytest.mark.parametrize("k", [1, 5])
def test_e_the_score_is_accuracy_on_the_whole_test_split(quick_task, tmp_path, monkeypatch, k):
    cls = METHODS.get("classifier_tuning")
    original = cls.predict
    calls = []

    def spy(self, split):
        preds = original(self, split)
        calls.append((split, preds.clone()))
        return preds

    monkeypatch.setattr(cls, "predict", spy)
    task = get_task(quick_task)
    test_labels = torch.as_tensor(load_examples(task.downstream.test).labels, dtype=torch.long)
    train_n = len(load_examples(task.downstream.train).labels)
    rec = run_cell(RunConfig(task=quick_task, method="classifier_tuning", backbone=BACKBONE, k=k, seed=0,
                             results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache")))
    assert rec.n_support == 2 * k and rec.n_test == len(test_labels) != train_n
    assert len(calls) == 1, [len(s) for s, _ in calls]
    split, preds = calls[0]
    assert len(split) == len(test_labels) and torch.equal(split.labels, test_labels)
    assert rec.value == pytest.approx(float((preds == test_labels).float().mean()), abs=1e-9)


# --- f. per-layer learned_composition: every matrix's logits move, each its own way ----------------


def test_f_per_layer_learned_composition_logits_move_and_differ_between_layers(task, adapters):
    support = support_split(task, 5)
    m = make_method("learned_composition", task, adapters, min_steps=4)
    targets = m.ctx.backbone.targets()
    logits = [layer.comp_logits for layer in m.layers.values()]
    assert len({id(p) for p in logits}) == len(logits)  # one parameter per layer, not shared
    assert sum(p.numel() for p in logits) == len(targets) * N_ADAPTERS == m.trainable_params()
    assert all(p.requires_grad and torch.count_nonzero(p) == 0 for p in logits)  # starts uniform
    m.fit(support)
    rows = torch.cat([p.detach().reshape(-1, N_ADAPTERS) for p in logits])  # one row per adapted matrix
    assert rows.shape == (len(targets), N_ADAPTERS)
    moved = (rows.abs().amax(-1) > 1e-4).float().mean()
    assert moved >= 0.9, f"only {moved:.0%} of the adapted matrices' logits moved"
    centred = rows - rows.mean(-1, keepdim=True)  # softmax ignores a common shift
    spread = (centred - centred.mean(0)).abs().amax()
    assert spread > 1e-3, "every layer learned the same weights: the logits behave as one global vector"
    w = m.composition()
    assert len(w.matrices) == len(targets) and len({tuple(v) for v in w.weights}) > len(targets) // 2
