"""Seven bugs that once passed the suite, or were caught only by a test about something else (issue 29, (a)–(g)).

Each test states the behaviour the bug breaks, on the real code path, and fails when the behaviour is taken out
(how each was checked is in the issue's note): (a) every seed its own head init, every method of a cell the same;
(b) a NaN score never becomes a record; (c) a smoke and a full cell never share a record; (d) frozen-feature
methods predict on the plain test images, not augmented views; (e) the test set is the same for every seed;
(f) the adapter store keys adapters by backbone; (g) an upstream adapter trains on its own task's pool.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import lorabench.evaluator as evaluator
import lorabench.method as method_module
from conftest import QUICK_TASK, registered_task
from lorabench.data import content_digest, load_examples
from lorabench.grid import expand_grid, run_grid
from lorabench.identity import identify, upstream_jobs_of
from lorabench.method import Method
from lorabench.results import record_state
from lorabench.specs import RunConfig
from lorabench.task_registry import get_task
from lorabench.upstream import adapter_key, ensure_upstream_adapter

BACKBONE = "efficientnet_lite0"


def cfg(task: str, method: str, store: Path, k=1, seed=0, **kw) -> RunConfig:
    return RunConfig(task=task, method=method, backbone=kw.pop("backbone", BACKBONE), k=k, seed=seed,
                     results_dir=str(store / "results"), cache_dir=str(store / "cache"), **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("bugs-store")


# --- (a) ---------------------------------------------------------------------------------------------------


def test_a_each_seed_draws_its_own_head_init_and_the_methods_of_a_cell_share_it(quick_task, store, monkeypatch):
    heads = {}
    real = Method.prepare

    def spy(self, ctx):
        real(self, ctx)
        heads[(self.name, seed_now[0])] = [p.detach().clone() for p in self.head.parameters()]

    seed_now = [None]
    monkeypatch.setattr(Method, "prepare", spy)
    for seed in (0, 1):
        seed_now[0] = seed
        for m in ("classifier_tuning", "uniform_composition"):
            evaluator.run_cell(cfg(quick_task, m, store, seed=seed))
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(heads[a], heads[b]))  # noqa: E731
    assert same(("classifier_tuning", 0), ("uniform_composition", 0))  # one cell, one head init
    assert same(("classifier_tuning", 1), ("uniform_composition", 1))
    assert not same(("classifier_tuning", 0), ("classifier_tuning", 1))  # another seed, another init


# --- (b) ---------------------------------------------------------------------------------------------------


def test_b_a_nan_score_never_becomes_a_record(quick_task, tmp_path, monkeypatch):
    real = evaluator.fit_and_score
    monkeypatch.setattr(evaluator, "fit_and_score", lambda *a, **k: (lambda m, acc, t: (m, math.nan, t))(*real(*a, **k)))
    cells = expand_grid(["classifier_tuning"], [quick_task], [1], [0], None, results_dir=str(tmp_path / "r"),
                        cache_dir=str(tmp_path / "c"))
    report = run_grid(cells)
    assert not report.done and len(report.failed) == 1
    assert "nan" in report.failed[0][1] and "nothing written" in report.failed[0][1]
    assert not list((tmp_path / "r").rglob("*.json"))


# --- (c) ---------------------------------------------------------------------------------------------------


def test_c_a_smoke_cell_and_a_full_cell_never_share_a_record(tmp_path):
    """A task already as small as the smoke rule makes it: its smoke and full specs differ in the profile alone,
    and still name two cells."""
    tiny = {**QUICK_TASK, "name": "digits_tiny_already",
            "recipe": {"head_epochs": 5, "epochs": 2, "min_steps": 2, "max_steps": 4, "feature_views": 2},
            "upstream_training": {"epochs": 1, "max_steps": 4, "probe_epochs": 5},
            "preprocessing": {"image_size": 32, "max_length": 64},
            "upstream": [{**u, "train": {**u["train"], "max_examples": 64}} for u in QUICK_TASK["upstream"]],
            "downstream": {**QUICK_TASK["downstream"],
                           "test": {**QUICK_TASK["downstream"]["test"], "max_examples": 120}}}
    with registered_task(tmp_path, tiny) as name:
        from lorabench.task_registry import _all_tasks
        _all_tasks.cache_clear()
        full, smoke = get_task(name, "full"), get_task(name, "smoke")
        assert full.model_dump(exclude={"profile"}) == smoke.model_dump(exclude={"profile"})  # the premise
        a = identify(cfg(name, "classifier_tuning", tmp_path, profile="full"))
        b = identify(cfg(name, "classifier_tuning", tmp_path, profile="smoke"))
        assert a.digest != b.digest and a.result_path() != b.result_path()
        run_grid([b])  # the smoke record exists; the full cell is still to be run
        assert record_state(b.result_path()) == "done" and record_state(a.result_path()) == "missing"
    _all_tasks.cache_clear()


# --- (d) ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["classifier_tuning", "uniform_composition"])
def test_d_frozen_feature_methods_predict_on_the_plain_test_images(quick_task, store, monkeypatch, method):
    seen = {}
    real = method_module.predict

    def spy(backbone, head, split, feats=None, **kw):
        if feats is not None and len(split) == seen.setdefault("n_test", len(split)):
            with torch.no_grad():
                seen["plain"] = backbone.features(split.batch(torch.arange(len(split))))
            seen["used"] = feats.clone()
        return real(backbone, head, split, feats, **kw)

    monkeypatch.setattr(method_module, "predict", spy)
    rec = evaluator.run_cell(cfg(quick_task, method, store, k=5))
    assert seen["used"].shape == seen["plain"].shape and len(seen["used"]) == rec.n_test
    assert torch.allclose(seen["used"], seen["plain"], atol=1e-4)  # views would differ by far more


# --- (e) ---------------------------------------------------------------------------------------------------


def test_e_every_seed_is_scored_on_one_test_set(quick_task, store, monkeypatch):
    seen = []
    real = evaluator.fit_and_score
    monkeypatch.setattr(evaluator, "fit_and_score",
                        lambda cls, hp, ctx, support, test: seen.append((support, test)) or real(cls, hp, ctx, support, test))
    for seed in (0, 1):
        evaluator.run_cell(cfg(quick_task, "classifier_tuning", store, seed=seed))
    (sa, ta), (sb, tb) = seen
    assert torch.equal(ta.labels, tb.labels) and torch.equal(ta.inputs["pixels"], tb.inputs["pixels"])
    assert not torch.equal(sa.inputs["pixels"], sb.inputs["pixels"])  # the support sets do differ


# --- (f) ---------------------------------------------------------------------------------------------------


def test_f_the_adapter_store_keys_and_files_adapters_by_backbone(quick_task, tmp_path):
    task = get_task(quick_task)
    up = task.upstream[0]
    keys = {b: adapter_key(b, up, task.preprocessing, task.upstream_training, data=content_digest(up.train, None))
            for b in (BACKBONE, "tiny_vit")}
    assert keys[BACKBONE] != keys["tiny_vit"]
    paths = {b: [Path(j.path) for j in upstream_jobs_of(cfg(quick_task, "uniform_composition", tmp_path, backbone=b))]
             for b in (BACKBONE, "tiny_vit")}
    assert all(p.parent.name == b for b, ps in paths.items() for p in ps)
    assert not set(paths[BACKBONE]) & set(paths["tiny_vit"])


# --- (g) ---------------------------------------------------------------------------------------------------


def test_g_an_upstream_adapter_trains_on_its_own_tasks_pool(quick_task, tmp_path):
    from lorabench.adapters import load_adapter
    from lorabench.backbones import create_backbone

    jobs = upstream_jobs_of(cfg(quick_task, "uniform_composition", tmp_path))
    bb = create_backbone(BACKBONE)
    for job in jobs:
        ensure_upstream_adapter(job)
        meta = load_adapter(Path(job.path), bb.targets(), bb.aliases).meta
        pool = load_examples(job.upstream.train)
        assert meta["upstream_task"] == job.upstream.name
        assert meta["train_data"] == job.upstream.train.model_dump(mode="json")  # what was loaded is its own ref
        assert meta["n_train"] + meta["n_heldout"] == len(pool.labels)
    downstream = get_task(quick_task).downstream.train.model_dump(mode="json")
    assert all(load_adapter(Path(j.path), bb.targets(), bb.aliases).meta["train_data"] != downstream for j in jobs)
