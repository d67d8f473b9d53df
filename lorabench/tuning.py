"""Hyperparameter selection as the paper does it: per dataset, one configuration for every K.

For a task and a method, each configuration of the method's small `tune_grid` is trained on tuning
support sets and scored on a validation draw, and the scores are averaged over the task's K grid; the
best mean wins. The validation draw and the tuning support sets come from training examples that no
evaluation support set of the task's grid (any K, any seed) uses, and never from the test split, so a
choice cannot have seen what it is scored on later. K = all (the whole pool) and K = 0 are left out
of the average: neither leaves a disjoint validation draw / has anything to tune. The grid, every score
and the choice are written to `<results>/_tuning/<task>/<method>__<profile>.json`; `lorabench run
--tuned` then runs the chosen configuration (as `--hp` values, so it is part of each result's identity).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from lorabench.backbones import create_backbone
from lorabench.data import load_examples, sample_support, smallest_pool
from lorabench.errors import ConfigError
from lorabench.evaluator import Trial, encode_cached, grid_configs, score_configs
from lorabench.identity import identify
from lorabench.method import METHODS, require_fit
from lorabench.results import write_json_atomic
from lorabench.seeding import Streams, derive_seed
from lorabench.specs import KValue, RunConfig
from lorabench.task_registry import get_task
from lorabench.upstream import ensure_upstream_adapters, upstream_jobs

TUNING_DIR = "_tuning"  # inside the results folder; result loaders skip it


def tuning_path(results_dir: str | Path, task: str, method: str, profile: str) -> Path:
    return Path(results_dir) / TUNING_DIR / task / f"{method}__{profile}.json"


def validation_draw(labels: np.ndarray, task_name: str, supports: Iterable[tuple[KValue, int]], per_class: bool,
                    n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, tuning pool): both outside every evaluation support set of the (K, seed) pairs."""
    used: set[int] = set()
    for k, seed in supports:
        if k in ("all", 0):
            continue
        used |= set(sample_support(labels, k, derive_seed(task_name, k, seed, "support"), per_class).tolist())
    rest = np.setdiff1d(np.arange(len(labels)), np.fromiter(used, dtype=np.int64, count=len(used)))
    rng = np.random.default_rng(derive_seed(task_name, "tune-validation"))
    if per_class:
        val = [rng.permutation(rest[labels[rest] == c])[:n_val] for c in np.unique(labels)]
        val_idx = np.sort(np.concatenate(val))
    else:
        val_idx = np.sort(rng.permutation(rest)[:n_val])
    return val_idx, np.setdiff1d(rest, val_idx)


def select(task_name: str, method: str, profile: str = "full", ks: list[KValue] | None = None,
           data_dir: str | None = None, cache_dir: str | None = None, device: str = "cpu",
           n_val: int = 50) -> dict[str, Any]:
    """Score every configuration of the method's grid on the validation draw, per K; choose by the mean."""
    task = get_task(task_name, profile)
    method_cls = METHODS.get(method)
    require_fit(task, method)
    if not method_cls.tune_grid:
        raise ConfigError(f"Method {method!r} has no tune_grid, so there is nothing to select; methods with one: "
                          f"{', '.join(n for n in METHODS.names() if METHODS.get(n).tune_grid)}.")
    grid_ks = [k for k in (ks or task.k_grid) if k not in ("all", 0)]
    if not grid_ks:
        raise ConfigError(f"Task {task_name!r}: no K in {ks or task.k_grid} to tune on (K = 0 and 'all' are left out).")
    train_ex = load_examples(task.downstream.train, data_dir)
    per_class = train_ex.modality == "image"
    val_idx, pool = validation_draw(train_ex.labels, task.name, [(k, s) for k in task.k_grid for s in task.seeds_for(k)],
                                    per_class, n_val)
    n_classes = len(train_ex.class_names or [])
    smallest = smallest_pool(train_ex.labels[pool], per_class, n_classes)
    if not len(val_idx) or smallest < max(grid_ks):
        # before the validation draw:
        free = smallest_pool(train_ex.labels[np.concatenate([val_idx, pool])], per_class, n_classes)
        unit = "per class" if per_class else "in total"
        fix = (f"pass a smaller --n-val (at most {free - max(grid_ks)} leaves K = {max(grid_ks)} its supports)"
               if n_val > free - max(grid_ks) and free > max(grid_ks) else "pass a smaller --k")
        raise ConfigError(f"Task {task_name!r}: after setting aside every evaluation support set, {free} example(s) "
                          f"{unit} are free; --n-val {n_val} takes {len(val_idx)} for validation and leaves {smallest} "
                          f"{unit} for tuning supports, so K up to {max(grid_ks)} cannot be tuned: {fix}.")
    backbone = create_backbone(task.backbone, device)
    val = encode_cached(backbone, train_ex, val_idx, task.preprocessing)
    adapters = ensure_upstream_adapters(upstream_jobs(task, task.backbone, data_dir, cache_dir, device),
                                        backbone.targets(), backbone.aliases) if method_cls.needs_upstream else []
    grid = method_cls.tune_grid
    configs = grid_configs(grid)
    trials = [Trial(encode_cached(backbone, train_ex, pool[sample_support(
                        train_ex.labels[pool], k, derive_seed(task.name, k, "tune-support"), per_class)],
                        task.preprocessing),
                    Streams(init=derive_seed(task.name, k, "tune-init"), views=derive_seed(task.name, k, "tune-views")),
                    (task.name, k, "tune-global")) for k in grid_ks]
    accs = score_configs(method_cls, {label: method_cls.resolve_hparams(c, task) for label, c in configs.items()},
                         backbone, adapters, trials, val)
    scores = {label: dict(zip(map(str, grid_ks), per_k)) for label, per_k in accs.items()}
    means = {label: float(np.mean(list(per_k.values()))) for label, per_k in scores.items()}
    chosen = configs[max(means, key=means.get)]  # ties: the first in grid order
    probe = RunConfig(task=task_name, method=method, backbone=task.backbone, k=grid_ks[0], seed=0, profile=profile)
    return {"task": task_name, "method": method, "profile": profile, "grid": grid, "ks": [str(k) for k in grid_ks],
            "n_val": len(val_idx), "n_pool": int(len(pool)), "scores": scores, "mean": means, "chosen": chosen,
            "defaults_digest": identify(probe).digest, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_selection(selection: dict[str, Any], results_dir: str | Path) -> Path:
    path = tuning_path(results_dir, selection["task"], selection["method"], selection["profile"])
    write_json_atomic(path, selection)
    return path


def apply_tuned(cells: list[RunConfig], results_dir: str | Path) -> list[RunConfig]:
    """Each cell with its (task, method)'s selected configuration as --hp values (explicit --hp still win).
    Methods without a tune grid run as they are; a missing selection is an error naming the command to make it."""
    import json

    out = []
    for cfg in cells:
        if not METHODS.get(cfg.method).tune_grid:
            out.append(cfg)
            continue
        path = tuning_path(results_dir, cfg.task, cfg.method, cfg.profile)
        if not path.is_file():
            raise ConfigError(f"--tuned: no selection for {cfg.method} on {cfg.task} ({cfg.profile}) at {path}. Make it "
                              f"with: lorabench tune --method {cfg.method} --task {cfg.task} --profile {cfg.profile} "
                              f"--results-dir {results_dir}")
        chosen = json.loads(path.read_text())["chosen"]
        out.append(identify(cfg.model_copy(update={"hparams": {**chosen, **cfg.hparams}, "digest": ""})))
    return out
