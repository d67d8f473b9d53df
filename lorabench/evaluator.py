"""One cell (method × task × K × seed), end to end: data, the cell's one backbone, the upstream modules,
the method, the score, and the record (which the grid writes).

`run_cell` is the single unit every executor calls; `lorabench.grid` expands, validates and runs grids
of cells, `lorabench.provenance` supplies the record's facts about where and how it ran.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

import lorabench
from lorabench.adapters import LoraAdapter, load_adapter
from lorabench.backbones import Backbone, create_backbone
from lorabench.data import Examples, Split, data_key, load_examples, sample_support, smallest_pool
from lorabench.errors import ConfigError
from lorabench.identity import PROTOCOL_VERSION, identify, upstream_jobs_of
from lorabench.method import Method, MethodContext, require_fit
from lorabench.provenance import (device_label, git_commit, git_dirty, peak_memory_mb, reproduce_command,
                                  reset_peak_memory, versions)
from lorabench.seeding import Streams, derive_seed, seed_everything
from lorabench.specs import Preprocessing, ResultRecord, RunConfig, TaskSpec, Timings
from lorabench.task_registry import get_task
from lorabench.upstream import UpstreamJob, ensure_upstream_adapters
from lorabench.validation import check_backbone_fits

_ENCODED: dict[str, Split] = {}


def encode_cached(backbone: Backbone, ex: Examples, idx: np.ndarray | None, prep: Preprocessing) -> Split:
    """Decoded/tokenized inputs, kept for the process: the test split is shared by every cell."""
    key = f"{ex.key}|{backbone.name}|{prep.model_dump_json()}|" + ("all" if idx is None else idx.tobytes().hex())
    if key not in _ENCODED:
        _ENCODED[key] = backbone.encode(ex, idx, prep)
    return _ENCODED[key]


def fit_and_score(method_cls: type[Method], hparams: dict, ctx: MethodContext, support: Split,
                  test: Split) -> tuple[Method, float, dict[str, float]]:
    """prepare → fit(support) → predict(test): the method, its accuracy and the phase timings."""
    t = {}
    t0 = time.perf_counter()
    method = method_cls(**hparams)
    method.prepare(ctx)
    t["prepare_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    method.fit(support)
    t["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = method.predict(test)
    t["eval_s"] = time.perf_counter() - t0
    acc = float((preds == test.labels).float().mean()) if len(test) else float("nan")
    return method, acc, t


def run_cell(cfg: RunConfig, on_event: Callable[..., None] | None = None,
             upstream: list[UpstreamJob] | None = None) -> ResultRecord:
    """Run one cell end to end and return its record (the caller writes it). `upstream`: the store adapters the
    grid built for the cell (`lorabench.grid.CellJob`); alone, the cell builds its own list."""
    t_start = time.perf_counter()
    reset_peak_memory(cfg.device)
    if not cfg.digest:
        cfg = identify(cfg)
    task = get_task(cfg.task, cfg.profile)
    method_cls = require_fit(task, cfg.method)
    hparams = method_cls.resolve_hparams(cfg.hparams, task)
    # Data before weights: a missing dataset is the cheaper and likelier error to report.
    # The record must name the data it ran on: the digests the cell was named with.
    train_ex, test_ex = (load_examples(ref, cfg.data_dir, cfg.data.get(data_key(ref)))
                         for ref in (task.downstream.train, task.downstream.test))
    backbone = create_backbone(cfg.backbone, cfg.device)  # the cell's one backbone: encodes, then the method's
    backbone.precision = cfg.precision
    check_backbone_fits(cfg.backbone, backbone.modality, task)
    per_class = train_ex.modality == "image"  # K per class; QA: K questions in total
    support_idx = sample_support(train_ex.labels, cfg.k, derive_seed(task.name, cfg.k, cfg.seed, "support"), per_class)
    support = encode_cached(backbone, train_ex, support_idx, task.preprocessing)
    test = encode_cached(backbone, test_ex, None, task.preprocessing)

    t0 = time.perf_counter()
    adapters = []
    if method_cls.needs_upstream:
        targets = backbone.targets()
        adapters = [load_adapter(d, targets, backbone.aliases) for d in cfg.upstream_dirs] or ensure_upstream_adapters(
            upstream if upstream is not None else upstream_jobs_of(cfg, task), targets, backbone.aliases,
            on_train=(lambda name: on_event("upstream", cfg, name)) if on_event else None)
    upstream_s = time.perf_counter() - t0
    streams = Streams.of_cell(task.name, cfg.k, cfg.seed)
    num_classes = support.num_classes if len(support) else test.num_classes

    extras: dict[str, Any] = {}
    if cfg.tune and method_cls.tune_grid and len(support):
        hparams, extras["tuning"] = _tune_cell(method_cls, hparams, backbone, adapters, streams, support, train_ex,
                                               support_idx, cfg, task)
    seed_everything(task.name, cfg.k, cfg.seed, "global")
    ctx = MethodContext(backbone, num_classes, streams, adapters)
    method, acc, t = fit_and_score(method_cls, hparams, ctx, support, test)
    extras.update(method.extras())
    if method.log:
        extras["training"] = method.log
    timings = Timings(upstream_s=upstream_s, total_s=time.perf_counter() - t_start, **t)
    return ResultRecord(
        cell_id=cfg.cell_id(), config_hash=cfg.config_hash(), task=task.name, suite=task.suite, setting=task.setting,
        method=cfg.method, backbone=cfg.backbone, k=cfg.k, seed=cfg.seed, profile=task.profile, metric=task.metric,
        value=acc,
        n_support=len(support), n_test=len(test), trainable_params=method.trainable_params(),
        head_params=method.head_params(), timings=timings, peak_memory_mb=round(peak_memory_mb(cfg.device), 1),
        device=device_label(cfg.device), versions=versions(), git_commit=git_commit(), git_dirty=git_dirty(),
        lorabench_version=lorabench.__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=reproduce_command(cfg),
        config={**cfg.model_dump(), "protocol_version": PROTOCOL_VERSION, "recipe": task.recipe.model_dump(mode="json"),
                "preprocessing": task.preprocessing.model_dump(mode="json"), "resolved_hparams": hparams,
                "upstream_training": task.upstream_training.model_dump(mode="json") if adapters else None,
                "data_source": sorted({train_ex.source, test_ex.source}),
                "upstream": [a.source for a in adapters], "upstream_quality": [_quality(a) for a in adapters]},
        tags=dict(task.tags), composition=method.composition(), extras=extras,
    )


def _quality(adapter) -> dict[str, Any]:
    """An upstream module's own check, from its metadata: held-out accuracy beside its linear probe's."""
    m = adapter.meta
    return {"name": adapter.name, "heldout_accuracy": m.get("heldout_accuracy"), "probe_accuracy": m.get("probe_accuracy"),
            "n_train": m.get("n_train"), "n_heldout": m.get("n_heldout"),
            "steps": (m.get("train_log") or {}).get("steps"), "final_loss": (m.get("train_log") or {}).get("final_loss")}


@dataclass
class Trial:
    """One training run of a configuration while tuning: its support set, its streams, its global-seed key."""

    support: Split
    streams: Streams
    seed_key: tuple[Any, ...]


def score_configs(method_cls: type[Method], configs: dict[str, dict[str, Any]], backbone: Backbone,
                  adapters: list[LoraAdapter], trials: list[Trial], val: Split) -> dict[str, list[float]]:
    """The one tuning loop (`run --tune` per cell, `lorabench tune` per task): the validation accuracy of each
    configuration (full hyperparameters, by label) in each trial. Every trial trains its own copy of the
    backbone, so the caller's stays pristine; end-to-end training traces its accuracy on `val`."""
    scores: dict[str, list[float]] = {}
    for label, hp in configs.items():
        scores[label] = []
        for trial in trials:
            seed_everything(*trial.seed_key)
            ctx = MethodContext(backbone.copy(), trial.support.num_classes, trial.streams, adapters, monitor=val)
            scores[label].append(fit_and_score(method_cls, hp, ctx, trial.support, val)[1])
    return scores


def _tune_cell(method_cls: type[Method], hparams: dict[str, Any], backbone: Backbone, adapters: list[LoraAdapter],
               streams: Streams, support: Split, train_ex: Examples, support_idx: np.ndarray, cfg: RunConfig,
               task: TaskSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """`run --tune`: pick hyperparameters by accuracy on a validation draw disjoint from the cell's support set,
    training on that support set with the cell's own streams."""
    rest = np.setdiff1d(np.arange(len(train_ex.labels)), support_idx)
    per_class = train_ex.modality == "image"
    labels = train_ex.labels[rest]
    k_val = min(cfg.k if cfg.k != "all" else 20, smallest_pool(labels, per_class, support.num_classes))
    if k_val < 1:
        raise ConfigError(f"--tune needs training examples outside the support set; task {task.name!r} has none left.")
    val_idx = rest[sample_support(labels, k_val, derive_seed(task.name, cfg.k, cfg.seed, "val"), per_class)]
    val = encode_cached(backbone, train_ex, val_idx, task.preprocessing)
    grid = method_cls.tune_grid
    configs = {label: {**hparams, **config} for label, config in grid_configs(grid).items()}
    scores = score_configs(method_cls, configs, backbone, adapters,
                           [Trial(support, streams, (task.name, cfg.k, cfg.seed, "global"))], val)
    best = configs[max(scores, key=lambda label: scores[label][0])]  # ties: the first in grid order
    return best, {"n_val": len(val), "val_accuracy": {label: s[0] for label, s in scores.items()},
                  "chosen": {k: best[k] for k in grid}}


def grid_configs(grid: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """A method's tune grid as label -> configuration ('lr=0.001, epochs=5' -> {...}), in grid order."""
    return {", ".join(f"{k}={v}" for k, v in zip(grid, combo)): dict(zip(grid, combo))
            for combo in itertools.product(*grid.values())}
