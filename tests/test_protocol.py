"""The protocol: profiles, one shared recipe recorded in every record, image views, and result identity."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import QUICK_TASK, registered_task
from lorabench.backbones import create_backbone
from lorabench.errors import UnknownNameError
from lorabench.evaluator import expand_grid, run_cell, run_grid
from lorabench.identity import identify, staleness
from lorabench.method import METHODS, MethodContext
from lorabench.profiles import SMOKE, SMOKE_IMAGE_SIZE
from lorabench.results import load_results
from lorabench.seeding import generator
from lorabench.specs import Recipe, RunConfig
from lorabench.task_registry import all_tasks, get_task
from lorabench.views import crop_boxes, random_views, resize

PAPER_METHODS = ["classifier_tuning", "uniform_composition", "learned_composition", "lora", "full_finetune"]


def test_full_is_the_task_file_and_smoke_is_one_rule_applied_to_any_task():
    full, smoke = get_task("pacs_art_painting"), get_task("pacs_art_painting", "smoke")
    assert full.profile == "full" and full.preprocessing.image_size == 224 and full.recipe == Recipe()
    assert all(u.train.max_examples is None for u in full.upstream)  # full pools
    assert smoke.profile == "smoke" and smoke.preprocessing.image_size == SMOKE_IMAGE_SIZE
    assert smoke.recipe.max_steps == SMOKE.recipe["max_steps"] and smoke.upstream_training.epochs == 1
    assert all(u.train.max_examples == SMOKE.max_upstream_examples for u in smoke.upstream)
    assert smoke.downstream.test.max_examples == SMOKE.max_test_examples
    assert get_task("arc_easy", "smoke").preprocessing.max_length == 64
    for name in ("pacs_art_painting", "split_cifar10", "loo_cifar10", "arc_challenge", "arc_easy", "openbookqa"):
        spec = all_tasks()[name]
        assert spec.suite == "offline" and all(u.train.max_examples is None for u in spec.upstream), name
        if spec.modality == "image":
            assert spec.preprocessing.image_size == 224, name
    with pytest.raises(UnknownNameError, match="Did you mean 'smoke'"):
        get_task("digits", "smok")


def test_a_task_file_can_adjust_its_smoke_profile(tmp_path):
    spec = {**QUICK_TASK, "name": "digits_prof", "profiles": {"smoke": {"recipe": {"head_epochs": 3}}}}
    with registered_task(tmp_path, spec):
        from lorabench.task_registry import _all_tasks
        _all_tasks.cache_clear()
        smoke = get_task("digits_prof", "smoke")
        assert smoke.recipe.head_epochs == 3 and smoke.recipe.max_steps == SMOKE.recipe["max_steps"]
    _all_tasks.cache_clear()


def test_steps_grow_with_k_within_bounds():
    r = Recipe()
    assert r.steps(0) == 0 and r.steps(7) == r.min_steps == 50  # K=1 on PACS: one batch, 50 passes
    assert r.steps(35) == 100 and r.steps(350) == 550 and r.steps(10**6) == r.max_steps


def test_views_are_deterministic_crops_of_the_source_and_test_images_are_only_resized():
    pixels = torch.randint(0, 256, (4, 3, 20, 30), dtype=torch.uint8)
    a = random_views(pixels, 16, generator(1), (0.25, 1.0))
    b = random_views(pixels, 16, generator(1), (0.25, 1.0))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, random_views(pixels, 16, generator(2), (0.25, 1.0)))
    for top, left, h, w in crop_boxes(50, 20, 30, generator(3), (0.25, 1.0)):
        assert 0 <= top and top + h <= 20 and 0 <= left and left + w <= 30
        assert 0.25 * 600 * 0.9 <= h * w <= 600  # within the scale range (up to rounding)
    up = resize(pixels, 40)
    assert up.shape == (4, 3, 40, 40) and up.dtype == torch.float32 and 0 <= up.min() and up.max() <= 255
    same = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(resize(same, 8), same.float())  # already at size: untouched


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    """The five paper methods on one cell of the real digits task, smoke profile."""
    root = tmp_path_factory.mktemp("protocol")
    cells = expand_grid(PAPER_METHODS, ["digits"], [5], [0], None, profile="smoke",
                        results_dir=str(root / "r"), cache_dir=str(root / "c"))
    report = run_grid(cells)
    assert not report.failed, report.failed
    return {r.method: r for r in report.done}


def test_every_record_states_its_profile_and_the_one_shared_recipe(smoke_records):
    recipe = get_task("digits", "smoke").recipe.model_dump(mode="json")
    n = 10  # K = 5 per class, 2 classes
    for method, rec in smoke_records.items():
        assert rec.profile == "smoke" and rec.config["profile"] == "smoke", method
        assert rec.config["recipe"] == recipe and rec.config["protocol_version"] >= 2
        assert {k: rec.config["resolved_hparams"][k] for k in recipe} == recipe, method  # shared, not per method
        assert "--profile smoke" in rec.command
        log = rec.extras["training"]
        assert log["head_loss"] > 0, method  # every method that trains a head warms it up on frozen features
        if METHODS.get(method).__mro__[1].__name__ == "EndToEndMethod":
            assert log["steps"] == Recipe.model_validate(recipe).steps(n), method
        else:
            assert "steps" not in log, method
    assert all(r.config["upstream_quality"] for m, r in smoke_records.items() if "composition" in m)
    q = smoke_records["uniform_composition"].config["upstream_quality"][0]
    assert q["n_heldout"] > 0 and 0 <= q["heldout_accuracy"] <= 1 and 0 <= q["probe_accuracy"] <= 1


def test_end_to_end_training_keeps_batchnorm_frozen_and_full_finetune_trains_the_backbone(quick_task):
    from lorabench.evaluator import encode_cached
    from lorabench.data import load_examples, sample_support

    task = get_task(quick_task)
    bb = create_backbone("efficientnet_lite0")
    ex = load_examples(task.downstream.train)
    support = encode_cached(bb, ex, sample_support(ex.labels, 2, 0), task.preprocessing)
    cls = METHODS.get("full_finetune")
    m = cls(**cls.resolve_hparams({}, task))
    m.prepare(MethodContext(backbone=bb, num_classes=2, seed=0))
    before = {n: t.detach().clone() for n, t in bb.model.state_dict().items()}
    m.fit(support)
    after = bb.model.state_dict()
    stats = [n for n in before if n.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[n], after[n]) for n in stats)  # BatchNorm statistics frozen
    weights = [n for n in before if n.endswith("weight") and "bn" not in n]
    changed = [n for n in weights if not torch.equal(before[n], after[n])]
    assert len(changed) > 0.9 * len(weights)  # every conv trains, not just the head


def test_identity_covers_the_task_file_and_method_defaults_and_old_records_go_stale(tmp_path, monkeypatch):
    spec = {**QUICK_TASK, "name": "digits_ident", "seeds": [0]}
    folder = tmp_path / "tasks"
    folder.mkdir()
    with registered_task(folder, spec):
        from lorabench.task_registry import _all_tasks
        where = dict(results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
        _all_tasks.cache_clear()
        cells = expand_grid(["classifier_tuning"], ["digits_ident"], [1], None, None, **where)
        assert len(run_grid(cells).done) == 1
        assert run_grid(expand_grid(["classifier_tuning"], ["digits_ident"], [1], None, None, **where)).skipped
        # 1) the task file changes (its recipe): the cell is computed again, the old record is stale
        (folder / "digits_ident.yaml").write_text(yaml.safe_dump({**spec, "recipe": {**spec["recipe"], "head_epochs": 7}}))
        _all_tasks.cache_clear()
        again = run_grid(expand_grid(["classifier_tuning"], ["digits_ident"], [1], None, None, **where))
        assert len(again.done) == 1 and not again.skipped
        records, _ = load_results(tmp_path / "r")
        assert len(records) == 2
        stale = [r for r in records if staleness(r)]
        assert len(stale) == 1 and stale[0].config["recipe"]["head_epochs"] == 20
        # 2) a method's default changes: a new identity
        cfg = RunConfig(task="digits_ident", method="lora", backbone="efficientnet_lite0", k=1, seed=0)
        before = identify(cfg).digest
        monkeypatch.setattr(METHODS.get("lora"), "defaults", {**METHODS.get("lora").defaults, "lr": 0.5})
        assert identify(cfg).digest != before
        # 3) the leaderboard shows stale records apart and never averages them in
        from lorabench.leaderboard import build_site
        monkeypatch.undo()
        build_site(tmp_path / "r", tmp_path / "site")
        page = (tmp_path / "site" / "task-digits_ident.html").read_text()
        assert "Stale records (left out)" in page and "1/1 seeds" in page
    _all_tasks.cache_clear()


def test_smoke_records_are_shown_apart_and_never_ranked(smoke_records, tmp_path):
    from lorabench.leaderboard import build_site
    from lorabench.results import write_result

    for rec in smoke_records.values():
        write_result(rec, tmp_path / "r" / "digits" / f"{rec.method}.json")
    report = build_site(tmp_path / "r", tmp_path / "site")
    assert [p.name for p in report.pages] == ["task-digits-smoke.html"]
    page = report.pages[0].read_text()
    assert "smoke profile: not benchmark results" in page and 'class="acc best' not in page
    assert "Upstream modules: their own scores" in page
    index = report.index.read_text()
    assert "not ranked (smoke)" in index and "not benchmark results" in index
