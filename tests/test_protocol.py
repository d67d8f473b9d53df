"""The protocol: profiles, one shared recipe recorded in every record, image views, and result identity."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import QUICK_TASK, registered_task
from lorabench.backbones import create_backbone
from lorabench.errors import UnknownNameError
from lorabench.grid import expand_grid, run_grid
from lorabench.identity import identify, staleness
from lorabench.method import METHODS, MethodContext
from lorabench.profiles import SMOKE, SMOKE_IMAGE_SIZE
from lorabench.results import load_results
from lorabench.seeding import Streams, generator
from lorabench.specs import Recipe, ResultRecord, RunConfig
from lorabench.task_registry import all_tasks, get_task
from lorabench.views import crop_boxes, random_views, resize

REPO = Path(__file__).resolve().parents[1]

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


def _views_one_by_one(pixels, size, gen, scale=(0.25, 1.0), hflip=True):
    """The reference: crop each image and `resize` it alone (how views were made before they were batched)."""
    boxes = crop_boxes(len(pixels), pixels.shape[2], pixels.shape[3], gen, scale)
    flips = (torch.rand(len(pixels), generator=gen) < 0.5).tolist() if hflip else [False] * len(pixels)
    views = [resize(pixels[i:i + 1, :, t:t + h, l:l + w], size)[0] for i, (t, l, h, w) in enumerate(boxes)]
    return torch.stack([v.flip(-1) if f else v for v, f in zip(views, flips)])


@pytest.mark.parametrize("source,size,hflip", [((20, 30), 48, True), ((128, 128), 224, True), ((60, 50), 16, True),
                                               ((32, 32), 224, False)])
def test_batched_views_are_each_crop_resized_alone(source, size, hflip):
    """Up- and downsampling (antialiased), flips on and off: the batched product is the per-image resize."""
    pixels = torch.randint(0, 256, (12, 3, *source), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = random_views(pixels, size, generator("v", 1), hflip=hflip)
    ref = _views_one_by_one(pixels, size, generator("v", 1), hflip=hflip)
    assert got.shape == ref.shape == (12, 3, size, size) and got.dtype == torch.float32
    assert (got - ref).abs().max() < 1e-3  # on the 0..255 scale
    gen_a, gen_b = generator("v", 2), generator("v", 2)  # and the generator is consumed as before
    random_views(pixels, size, gen_a, hflip=hflip)
    _views_one_by_one(pixels, size, gen_b, hflip=hflip)
    assert torch.equal(torch.rand(3, generator=gen_a), torch.rand(3, generator=gen_b))


def test_crop_boxes_of_a_seed_are_the_ones_records_were_made_with():
    """Pinned: boxes drawn by the code every committed record was trained with (changing them changes the protocol)."""
    assert crop_boxes(6, 128, 128, generator("views", 0), (0.25, 1.0)) == [
        (24, 24, 69, 76), (50, 45, 65, 82), (22, 8, 79, 102), (1, 10, 112, 87), (6, 34, 116, 89), (49, 12, 77, 62)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_on_the_device_match_the_cpu():
    pixels = torch.randint(0, 256, (16, 3, 128, 128), dtype=torch.uint8)
    cpu = random_views(pixels, 224, generator("v", 3))
    gpu = random_views(pixels.cuda(), 224, generator("v", 3))
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_and_inference_on_a_cuda_device_do_not_wait_for_it_each_step():
    """Steps are queued, not waited for: the host syncs PyTorch reports (`set_sync_debug_mode`) grow with the
    non-finite checks' reads (one per CHECK_EVERY steps), not by one or more per step (an index on the host, a
    pageable copy, a tensor made on the device from a list each were one): end-to-end training on a split with
    random views, head training on a feature bank, and feature extraction, each run short and long."""
    import warnings

    from lorabench.data import Split
    from lorabench.lora import attach
    from lorabench.specs import UpstreamRecipe
    from lorabench.training import CHECK_EVERY, extract_features, train_end_to_end, train_head

    backbone = create_backbone("efficientnet_lite0", "cuda")
    recipe = UpstreamRecipe(batch_size=8)
    for layer in attach(backbone.model, backbone.targets()).values():
        layer.enable_lora(recipe.rank, recipe.alpha)
    head = backbone.make_head(3).cuda()
    groups = [{"params": [p for p in backbone.model.parameters() if p.requires_grad], "lr": 1e-4},
              {"params": list(head.parameters()), "lr": 1e-3}]
    g = torch.Generator().manual_seed(0)
    split = Split(key="sync", inputs={"pixels": torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)},
                  labels=torch.randint(0, 3, (64,), generator=g), num_classes=3, modality="image",
                  meta={"image_size": 64})
    bank = torch.randn(1, 64, backbone.feature_dim)

    def syncs(fn) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    def e2e(steps):
        return lambda: train_end_to_end(backbone, head, groups, split, recipe, generator("sync", steps), steps=steps,
                                        trace_every=steps)

    def heads(epochs):  # 8 steps per epoch
        return lambda: train_head(head, bank, split, recipe, generator("sync"), epochs, 1e-3)

    def features(n):
        part = split.subset(torch.arange(n).numpy())
        return lambda: extract_features(backbone, part, cache=False, batch_size=8)

    e2e(10)(), heads(1)(), features(8)()  # warm-up: kernels chosen, allocators filled
    extra = 2 * CHECK_EVERY
    assert syncs(e2e(10 + extra)) - syncs(e2e(10)) <= 2 + 1  # two more checks (and one spare)
    assert syncs(heads(2 + extra // 8)) - syncs(heads(2)) <= 2 + 1
    assert syncs(features(64)) - syncs(features(8)) <= 1  # 8 batches against 1: the same reads


@pytest.mark.parametrize("bad_step", [0, 7, 24, 25, 33, 39])
def test_a_non_finite_loss_is_named_by_its_step_though_the_device_is_read_in_chunks(bad_step):
    """Losses are checked every CHECK_EVERY steps and at the end: the error still names the first bad step."""
    from lorabench.errors import TrainingError
    from lorabench.training import run_steps
    w = torch.nn.Parameter(torch.ones(2))
    from lorabench.specs import TrainingRecipe
    recipe = TrainingRecipe(weight_decay=0.0)
    batches = iter([(0, torch.arange(2))] * 40)

    steps = []

    def loss_of(p, idx):
        steps.append(len(steps))
        return (w * (float("nan") if steps[-1] == bad_step else 1.0)).sum()

    with pytest.raises(TrainingError, match=f"became nan at step {bad_step};"):
        run_steps([{"params": [w], "lr": 0.0}], recipe, 40, batches, loss_of, "head training", "sgd", 0.9)


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


def test_a_bf16_cell_is_its_own_record_and_scores_close_to_its_fp32_twin(smoke_records):
    """CPU autocast stands in for CUDA's: same cells in bf16, each a record of its own, the score within 3 points."""
    fp32 = smoke_records
    where = fp32["learned_composition"].config
    cells = expand_grid(["classifier_tuning", "learned_composition", "lora"], ["digits"], [5], [0], None,
                        profile="smoke", precision="bf16", results_dir=where["results_dir"], cache_dir=where["cache_dir"])
    report = run_grid(cells)
    assert not report.failed and not report.skipped and len(report.done) == 3  # not the fp32 records
    for rec in report.done:
        twin = fp32[rec.method]
        assert rec.config["precision"] == "bf16" and twin.config["precision"] == "fp32"
        assert rec.config_hash != twin.config_hash and "--precision bf16" in rec.command
        assert abs(rec.value - twin.value) <= 0.03, (rec.method, rec.value, twin.value)
    up16, up32 = (r["learned_composition"].config["upstream"] for r in ({x.method: x for x in report.done}, fp32))
    assert len(up16) == len(up32) and not set(up16) & set(up32)  # composes adapters trained in bf16, stored apart
    bb = create_backbone("efficientnet_lite0")
    x = {"pixels": torch.randint(0, 256, (2, 3, 64, 64)).float()}
    f32 = bb.features(x)
    bb.precision = "bf16"
    f16 = bb.features(x)
    assert f16.dtype == torch.float32 and not torch.equal(f16, f32)  # bf16 really ran, and left as fp32
    assert torch.allclose(f16, f32, atol=0.1 * f32.abs().max().item())


def test_end_to_end_training_keeps_batchnorm_frozen_and_full_finetune_trains_the_backbone(quick_task):
    from lorabench.evaluator import encode_cached
    from lorabench.data import load_examples, sample_support

    task = get_task(quick_task)
    bb = create_backbone("efficientnet_lite0")
    ex = load_examples(task.downstream.train)
    support = encode_cached(bb, ex, sample_support(ex.labels, 2, 0), task.preprocessing)
    cls = METHODS.get("full_finetune")
    m = cls(**cls.resolve_hparams({}, task))
    m.prepare(MethodContext(backbone=bb, num_classes=2, streams=Streams(init=0, views=0)))
    before = {n: t.detach().clone() for n, t in bb.model.state_dict().items()}
    m.fit(support)
    after = bb.model.state_dict()
    stats = [n for n in before if n.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[n], after[n]) for n in stats)  # BatchNorm statistics frozen
    weights = [n for n in before if n.endswith("weight") and "bn" not in n]
    changed = [n for n in weights if not torch.equal(before[n], after[n])]
    assert len(changed) > 0.9 * len(weights)  # every conv trains, not just the head


def test_identity_covers_the_task_file_and_method_defaults_and_old_records_go_stale(tmp_path, monkeypatch, capsys):
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
        from lorabench import cli
        monkeypatch.setattr(sys, "argv", ["lorabench", "run", "-m", "classifier_tuning", "-t", "digits_ident", "--k", "1",
                                          "--results-dir", where["results_dir"], "--cache-dir", where["cache_dir"]])
        cli.main()  # `lorabench run` itself: returns (exit 0) after computing the cell again
        assert "1 done 0 skipped" in " ".join(capsys.readouterr().out.split())
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


@pytest.mark.parametrize("field,value", [("method", "lora"), ("task", "split_cifar10"), ("backbone", "tiny_vit"),
                                         ("k", 10), ("seed", 7)])
def test_a_record_whose_top_level_disagrees_with_its_config_is_stale(field, value, tmp_path):
    """The leaderboard ranks a record by its top-level fields but its digest covers only its config: a record
    whose two halves name different cells (edited, mis-written) is stale, never a current score."""
    from lorabench.leaderboard.rows import split_stale

    src = sorted((REPO / "docs" / "results" / "digits").glob("classifier_tuning__*__k1__s0__*.json"))
    current = [r for r in (ResultRecord.model_validate_json(p.read_text()) for p in src) if staleness(r) is None]
    assert current, "a current committed digits record"
    rec = current[0]
    bent = rec.model_copy(update={field: value})
    why = staleness(bent)
    assert why and "top-level fields disagree with its own config" in why and f"{field} {value!r}" in why
    current_rows, stale_rows = split_stale([bent])
    assert not any(current_rows.values()) and [r for rs in stale_rows.values() for r, _ in rs] == [bent]


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


def test_qa_tasks_follow_the_same_recipe_on_the_smoke_profile(shared_data, tmp_path):
    """Multiple-choice QA through the same code path: upstream probe + LoRA, head warm-up, end-to-end steps."""
    cells = expand_grid(["uniform_composition", "learned_composition"], ["arc_easy"], [2], [0], None, profile="smoke",
                        data_dir=str(shared_data), results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    report = run_grid(cells)
    assert not report.failed, report.failed
    recs = {r.method: r for r in report.done}
    assert recs["learned_composition"].extras["training"]["steps"] == get_task("arc_easy", "smoke").recipe.steps(2)
    for rec in recs.values():
        assert rec.n_support == 2 and rec.n_test <= SMOKE.max_test_examples + 4 and rec.extras["training"]["head_loss"] > 0
        quality = rec.config["upstream_quality"]
        assert [q["name"] for q in quality] == ["sciq", "csqa", "quail"]
        assert all(q["n_heldout"] > 0 and 0 <= q["probe_accuracy"] <= 1 for q in quality)


def test_tune_selects_one_configuration_per_task_on_data_no_support_set_uses(quick_task, tmp_path):
    import subprocess
    import sys

    from lorabench.data import load_examples, sample_support
    from lorabench.seeding import derive_seed
    from lorabench.tuning import apply_tuned, validation_draw

    task = get_task(quick_task)
    labels = load_examples(task.downstream.train).labels
    val, pool = validation_draw(labels, task.name, [(k, s) for k in task.k_grid for s in task.seeds_for(k)], True, 20)
    for k in task.k_grid:
        for seed in task.seeds_for(k):
            used = sample_support(labels, k, derive_seed(task.name, k, seed, "support"), True)
            assert not set(used) & (set(val) | set(pool))
    assert len(val) == 40 and not set(val) & set(pool)
    res = tmp_path / "r"
    cli = [sys.executable, "-m", "lorabench.cli"]
    out = subprocess.run(cli + ["tune", "-m", "classifier_tuning", "-t", quick_task, "--n-val", "20",
                                "--results-dir", str(res)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    sel = json.loads((res / "_tuning" / quick_task / "classifier_tuning__full.json").read_text())
    assert set(sel["scores"]) == {"head_lr=0.001", "head_lr=0.01", "head_lr=0.1"} and sel["ks"] == ["1", "5"]
    best = max(sel["mean"].values())
    assert sel["mean"][f"head_lr={sel['chosen']['head_lr']}"] == best and sel["n_val"] == 40
    for label, per_k in sel["scores"].items():
        assert sel["mean"][label] == pytest.approx(sum(per_k.values()) / 2)  # averaged over the K grid
    cells = apply_tuned(expand_grid(["classifier_tuning", "uniform_composition"], [quick_task], [1], [0], None,
                                    results_dir=str(res)), res)
    assert cells[0].hparams == sel["chosen"] and cells[1].hparams == {}
    assert load_results(res) == ([], [])  # the selection is not taken for a result record


def test_the_library_suite_runs_on_the_smoke_profile(shared_data, tmp_path):
    """library_sign_digits_n10 end to end from the command line: 10 small experts trained into a fresh store, then
    uniform composition, Arrow routing and the best single module over them."""
    import subprocess
    import sys

    from lorabench.results import load_results

    res, cache = tmp_path / "r", tmp_path / "c"
    out = subprocess.run([sys.executable, "-m", "lorabench.cli", "run", "-m",
                          "uniform_composition,arrow_routing,best_single_upstream", "-t", "library_sign_digits_n10",
                          "--k", "1", "--seeds", "0", "--profile", "smoke", "--data-dir", str(shared_data),
                          "--results-dir", str(res), "--cache-dir", str(cache)], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    recs, bad = load_results(res)
    assert not bad and sorted(r.method for r in recs) == ["arrow_routing", "best_single_upstream", "uniform_composition"]
    spec = get_task("library_sign_digits_n10", "smoke")
    names = [u.name for u in spec.upstream]
    assert len(list((cache / "adapters" / "efficientnet_lite0").glob("*-*/adapter_config.json"))) == 10
    for rec in recs:
        assert rec.profile == "smoke" and rec.tags == {"sweep": "n_upstream", "n_upstream": 10}
        assert rec.n_support == 10 and [q["name"] for q in rec.config["upstream_quality"]] == names
        assert 0 <= rec.value <= 1
    arrow = next(r for r in recs if r.method == "arrow_routing")
    assert arrow.composition.upstream == names
    best = next(r for r in recs if r.method == "best_single_upstream")
    assert best.extras["chosen"] in names and len(best.extras["support_loss"]) == 10


def test_a_grid_without_seeds_runs_ten_at_few_shot_k_and_three_beyond():
    """The default seeds per K: 0-9 at K <= 10 (and K = 0), the task's many-shot list (0-2) at K > 10 and 'all'."""
    task = get_task("pacs_art_painting")
    cells = expand_grid(["classifier_tuning"], ["pacs_art_painting"], [1, 10, 50, "all"], None, None)
    seeds = {k: sorted(c.seed for c in cells if c.k == k) for k in (1, 10, 50, "all")}
    assert seeds == {1: list(range(10)), 10: list(range(10)), 50: [0, 1, 2], "all": [0, 1, 2]}
    assert task.seeds_for(0) == list(range(10))
    assert [c.seed for c in expand_grid(["classifier_tuning"], ["pacs_art_painting"], [1], [4], None)] == [4]
