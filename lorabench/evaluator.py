"""The evaluator: one function runs one cell (method × task × K × seed) and writes its record.

`run_cell` is the single unit every executor calls. `run_grid` expands and runs a grid, skipping
finished cells; it reports through a callback, so nothing here depends on a terminal UI.
"""

from __future__ import annotations

import itertools
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lorabench
from lorabench.adapters import load_adapter
from lorabench.backbones import Backbone, create_backbone
from lorabench.data import Examples, Split, load_examples, sample_support
from lorabench.errors import ConfigError
from lorabench.executors import Executor, LocalExecutor
from lorabench.method import METHODS, Method, MethodContext
from lorabench.results import SCHEMA_VERSION, move_aside, record_state, write_result
from lorabench.seeding import derive_seed, seed_everything
from lorabench.specs import KValue, Preprocessing, ResultRecord, RunConfig, TaskSpec, Timings, k_order
from lorabench.identity import PROTOCOL_VERSION, identify
from lorabench.task_registry import get_task
from lorabench.upstream import UpstreamJob, ensure_upstream_adapter, ensure_upstream_adapters, is_complete, upstream_jobs
from lorabench.validation import check_grid

_ENCODED: dict[str, Split] = {}


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(lorabench.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "lorabench": lorabench.__version__}
    for pkg in ("torch", "timm", "transformers", "peft", "datasets", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak RSS (KiB on Linux)


def encode_cached(backbone: Backbone, ex: Examples, idx: np.ndarray | None, prep: Preprocessing) -> Split:
    """Decoded/tokenized inputs, kept for the process: the test split is shared by every cell."""
    key = f"{ex.key}|{backbone.name}|{prep.model_dump_json()}|" + ("all" if idx is None else idx.tobytes().hex())
    if key not in _ENCODED:
        _ENCODED[key] = backbone.encode(ex, idx, prep)
    return _ENCODED[key]


def reproduce_command(cfg: RunConfig) -> str:
    parts = ["lorabench run", f"--method {cfg.method}", f"--task {cfg.task}", f"--k {cfg.k}",
             f"--seeds {cfg.seed}", f"--backbone {cfg.backbone}"]
    parts += [f"--hp {k}={v}" for k, v in sorted(cfg.hparams.items())]
    parts += [f"--upstream {d}" for d in cfg.upstream_dirs]
    if cfg.tune:
        parts.append("--tune")
    if cfg.profile != "full":
        parts.append(f"--profile {cfg.profile}")
    return " ".join(parts)


def method_context(task: TaskSpec, backbone: str, device: str, num_classes: int, seed: int, view_seed: int,
                   adapters: list) -> MethodContext:
    """What a method gets in `prepare`: a fresh backbone copy, the adapters, and the cell's seeds."""
    up = task.upstream_training
    return MethodContext(backbone=create_backbone(backbone, device), num_classes=num_classes, seed=seed,
                         view_seed=view_seed, adapters=adapters, lora_rank=up.rank, lora_alpha=up.alpha,
                         task_name=task.name)


def _evaluate(method_cls: type[Method], hparams: dict, ctx_factory: Callable[[], MethodContext], support: Split,
              test: Split) -> tuple[Method, float, dict[str, float]]:
    t = {}
    t0 = time.perf_counter()
    method = method_cls(**hparams)
    method.prepare(ctx_factory())
    t["prepare_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    method.fit(support)
    t["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = method.predict(test)
    t["eval_s"] = time.perf_counter() - t0
    acc = float((preds == test.labels).float().mean()) if len(test) else float("nan")
    return method, acc, t


def run_cell(cfg: RunConfig, on_event: Callable[..., None] | None = None) -> ResultRecord:
    """Run one cell end to end and return its record (the caller writes it)."""
    t_start = time.perf_counter()
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if not cfg.digest:
        cfg = identify(cfg)
    task = get_task(cfg.task, cfg.profile)
    method_cls = METHODS.get(cfg.method)
    modality = require_fit(task, cfg.method)
    hparams = method_cls.resolve_hparams(cfg.hparams, task)
    # Data before weights: a missing dataset is the cheaper and likelier error to report.
    train_ex = load_examples(task.downstream.train, cfg.data_dir)
    test_ex = load_examples(task.downstream.test, cfg.data_dir)
    backbone = create_backbone(cfg.backbone, cfg.device)
    if backbone.modality != modality:
        raise ConfigError(f"Backbone {cfg.backbone!r} takes {backbone.modality}; task {task.name!r} needs {modality}.")
    per_class = task.modality != "multiple_choice"
    support_idx = sample_support(train_ex.labels, cfg.k, derive_seed(task.name, cfg.k, cfg.seed, "support"), per_class)
    support = encode_cached(backbone, train_ex, support_idx, task.preprocessing)
    test = encode_cached(backbone, test_ex, None, task.preprocessing)

    t0 = time.perf_counter()
    adapters = []
    if method_cls.needs_upstream:
        targets = backbone.targets()
        adapters = [load_adapter(d, targets, backbone.aliases) for d in cfg.upstream_dirs] or ensure_upstream_adapters(
            task, cfg.backbone, cfg.data_dir, cfg.cache_dir, cfg.device,
            on_train=(lambda name: on_event("upstream", cfg, name)) if on_event else None)
    upstream_s = time.perf_counter() - t0
    up_rec = task.upstream_training
    init_seed = derive_seed(task.name, cfg.k, cfg.seed, "init")
    view_seed = derive_seed(task.name, cfg.k, cfg.seed, "views")

    def ctx_factory() -> MethodContext:
        return method_context(task, cfg.backbone, cfg.device, support.num_classes if len(support) else test.num_classes,
                              init_seed, view_seed, adapters)

    extras: dict[str, Any] = {}
    if cfg.tune and method_cls.tune_grid and len(support):
        hparams, extras["tuning"] = _tune(method_cls, hparams, ctx_factory, support, train_ex, support_idx, cfg, task,
                                          backbone)
    seed_everything(task.name, cfg.k, cfg.seed, "global")
    method, acc, t = _evaluate(method_cls, hparams, ctx_factory, support, test)
    extras.update(method.extras())
    if method.log:
        extras["training"] = method.log
    timings = Timings(upstream_s=upstream_s, total_s=time.perf_counter() - t_start, **t)
    return ResultRecord(
        cell_id=cfg.cell_id(), config_hash=cfg.config_hash(), task=task.name, suite=task.suite, setting=task.setting,
        method=cfg.method, backbone=cfg.backbone, k=cfg.k, seed=cfg.seed, profile=task.profile, metric=task.metric,
        value=acc,
        n_support=len(support), n_test=len(test), trainable_params=method.trainable_params(),
        head_params=method.head_params(), timings=timings, peak_memory_mb=round(_peak_memory_mb(cfg.device), 1),
        device=cfg.device if cfg.device != "cuda" else f"cuda:{torch.cuda.get_device_name()}",
        versions=versions(), git_commit=git_commit(), lorabench_version=lorabench.__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=reproduce_command(cfg),
        config={**cfg.model_dump(), "protocol_version": PROTOCOL_VERSION, "recipe": task.recipe.model_dump(mode="json"),
                "preprocessing": task.preprocessing.model_dump(mode="json"), "resolved_hparams": hparams,
                "upstream_training": up_rec.model_dump(mode="json") if adapters else None,
                "data_source": sorted({train_ex.source, test_ex.source}),
                "upstream": [a.source for a in adapters], "upstream_quality": [_quality(a) for a in adapters]},
        tags=dict(task.tags), extras=extras,
    )


def _quality(adapter) -> dict[str, Any]:
    """An upstream module's own check, from its metadata: held-out accuracy beside its linear probe's."""
    m = adapter.meta
    return {"name": adapter.name, "heldout_accuracy": m.get("heldout_accuracy"), "probe_accuracy": m.get("probe_accuracy"),
            "n_train": m.get("n_train"), "n_heldout": m.get("n_heldout"),
            "steps": (m.get("train_log") or {}).get("steps"), "final_loss": (m.get("train_log") or {}).get("final_loss")}


def _tune(method_cls, hparams, ctx_factory, support, train_ex, support_idx, cfg, task, backbone):
    """Pick hyperparameters by accuracy on a validation draw disjoint from the support set."""
    rest = np.setdiff1d(np.arange(len(train_ex.labels)), support_idx)
    per_class = task.modality != "multiple_choice"
    labels = train_ex.labels[rest]
    k_val = cfg.k if cfg.k != "all" else 20
    if per_class:
        k_val = min(k_val, int(np.bincount(labels, minlength=support.num_classes).min()))
    else:
        k_val = min(k_val, len(rest))
    if k_val < 1:
        raise ConfigError(f"--tune needs training examples outside the support set; task {task.name!r} has none left.")
    val_idx = rest[sample_support(labels, k_val, derive_seed(task.name, cfg.k, cfg.seed, "val"), per_class)]
    val = encode_cached(backbone, train_ex, val_idx, task.preprocessing)
    grid = method_cls.tune_grid
    scores = {}
    best, best_acc = hparams, -1.0
    for combo in itertools.product(*grid.values()):
        trial = {**hparams, **dict(zip(grid, combo))}
        seed_everything(task.name, cfg.k, cfg.seed, "global")
        _, acc, _ = _evaluate(method_cls, trial, ctx_factory, support, val)
        scores[", ".join(f"{k}={v}" for k, v in zip(grid, combo))] = acc
        if acc > best_acc:
            best, best_acc = trial, acc
    return best, {"n_val": len(val), "val_accuracy": scores, "chosen": {k: best[k] for k in grid}}


# --- grids -----------------------------------------------------------------------------------------


def require_fit(task: TaskSpec, method: str) -> str:
    """The input kind ("image" or "text") of `task`, once `method` is known to exist and to apply to it."""
    method_cls = METHODS.get(method)  # a bad name fails here, with suggestions
    modality = "text" if task.modality == "multiple_choice" else "image"
    if modality not in method_cls.modalities:
        fits = sorted(n for n in METHODS.names() if modality in METHODS.get(n).modalities)
        raise ConfigError(f"Method {method!r} does not apply to {task.modality} tasks like {task.name!r} "
                          f"(it takes {', '.join(method_cls.modalities)} tasks). Methods for {task.name!r}: "
                          f"{', '.join(fits)}.")
    return modality


def expand_grid(methods: list[str], tasks: list[str], ks: list[KValue] | None, seeds: list[int] | None,
                backbone: str | None, **common: Any) -> list[RunConfig]:
    """Every (task, method, K, seed) cell; fails before any work on a bad name or a method that does not
    apply to a task's modality (rather than failing each of its cells)."""
    def unique(xs):  # a name or value given twice is run once
        return list(dict.fromkeys(xs)) if xs is not None else None

    methods, tasks, ks, seeds = unique(methods), unique(tasks), unique(ks), unique(seeds)
    profile = common.get("profile", "full")
    cells = []
    for task_name in tasks:
        task = get_task(task_name, profile)
        for method in methods:
            require_fit(task, method)
            if common.get("upstream_dirs") and not METHODS.get(method).needs_upstream:
                raise ConfigError(f"--upstream was given, but method {method!r} does not use upstream modules; "
                                  f"methods that do: {', '.join(n for n in METHODS.names() if METHODS.get(n).needs_upstream)}.")
            for k in (ks or task.k_grid):
                for seed in (seeds if seeds is not None else task.seeds):
                    cells.append(identify(RunConfig(task=task_name, method=method, backbone=backbone or task.backbone,
                                                    k=k, seed=seed, **common)))
    return cells


@dataclass
class GridReport:
    done: list[ResultRecord] = field(default_factory=list)
    skipped: list[RunConfig] = field(default_factory=list)
    failed: list[tuple[RunConfig, str]] = field(default_factory=list)
    left: list[RunConfig] = field(default_factory=list)  # not run: the grid stopped early (a write failed)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (record path, where the invalid file went)
    stop_reason: str | None = None


def execute_cell(cfg: RunConfig) -> dict[str, Any]:
    """The job every executor runs for a cell: its record as plain JSON data, for the driver to write."""
    return run_cell(cfg).model_dump(mode="json")


def needed_upstream_jobs(cells: list[RunConfig]) -> dict[str, tuple[UpstreamJob, list[RunConfig]]]:
    """Adapters the cells will load from the store and that are not there yet: store path -> (job, cells)."""
    jobs: dict[str, tuple[UpstreamJob, list[RunConfig]]] = {}
    for cfg in cells:
        if cfg.upstream_dirs or not METHODS.get(cfg.method).needs_upstream:
            continue
        for job in upstream_jobs(get_task(cfg.task, cfg.profile), cfg.backbone, cfg.data_dir, cfg.cache_dir, cfg.device):
            if not is_complete(Path(job.path)):
                jobs.setdefault(job.path, (job, []))[1].append(cfg)
    return jobs


def run_grid(cells: list[RunConfig], on_event: Callable[..., None] | None = None,
             executor: Executor | None = None, validate: bool = True) -> GridReport:
    """Run every unfinished cell on `executor` (default: in this process) and write each record atomically.

    Two phases: first the missing upstream adapters, one job per adapter-store key (in parallel on Ray),
    then the cells. Workers return records; the driver validates and writes them, so workers need not
    share the results folder. A failed cell is reported and the others go on.
    Every cell is validated first (`lorabench.validation.check_grid`), before any work. A file at a cell's
    path that is not a valid record is moved aside, one of a newer schema is left alone (the cell is not
    run). A record that cannot be written fails its cell and stops the grid (`report.left`: not run).
    Events: ("skip"|"start", cfg), ("done", cfg, record), ("fail", cfg, why), ("warn", cfg, message),
    ("upstream", cfg, name) / ("upstream_end", cfg, name, why_or_None) around an adapter's training.
    """
    emit = on_event or (lambda *a: None)
    executor = executor or LocalExecutor()
    if validate:
        check_grid(cells)
    report = GridReport()
    todo = []
    for cfg in cells:
        state = record_state(cfg.result_path())
        if state == "done":
            report.skipped.append(cfg)
            emit("skip", cfg)
            continue
        if state == "newer":
            report.skipped.append(cfg)
            emit("warn", cfg, f"{cfg.result_path()} was written by a newer lorabench (schema > {SCHEMA_VERSION}); "
                              "left alone, the cell is not run. Upgrade lorabench to read it.")
            emit("skip", cfg)
            continue
        if state == "invalid":
            aside = move_aside(cfg.result_path())
            report.moved.append((str(cfg.result_path()), str(aside)))
            emit("warn", cfg, f"{cfg.result_path()} is not a valid record; kept as {aside.name}, the cell runs again.")
        todo.append(cfg)

    blocked: dict[str, str] = {}  # cell id -> why its upstream adapters are missing
    jobs = list(needed_upstream_jobs(todo).values())
    with closing(executor.run(ensure_upstream_adapter, [job for job, _ in jobs])) as events:
        for kind, i, outcome in events:
            job, users = jobs[i]
            if kind == "start":
                emit("upstream", users[0], job.upstream.name)
                continue
            emit("upstream_end", users[0], job.upstream.name, outcome.error)
            if outcome.error:
                for cfg in users:
                    blocked.setdefault(cfg.cell_id(), f"upstream adapter {job.upstream.name!r} could not be "
                                                      f"trained: {outcome.error}")

    runnable = []
    for cfg in todo:
        if cfg.cell_id() in blocked:
            report.failed.append((cfg, blocked[cfg.cell_id()]))
            emit("fail", cfg, blocked[cfg.cell_id()])
        else:
            runnable.append(cfg)
    with closing(executor.run(execute_cell, runnable)) as events:
        for kind, i, outcome in events:
            cfg = runnable[i]
            if kind == "start":
                emit("start", cfg)
                continue
            why = outcome.error
            if why is None:
                try:
                    record = ResultRecord.model_validate(outcome.value)
                except ValueError as exc:
                    record, why = None, f"its record does not validate ({str(exc).splitlines()[0]}); nothing written"
                else:
                    why = _meaningless(record)
            if why is None:
                try:
                    write_result(record, cfg.result_path())
                except OSError as exc:
                    why = f"could not write its record to {cfg.result_path()}: {exc.strerror or exc}"
                    report.stop_reason = why
            if why is not None:
                report.failed.append((cfg, why))
                emit("fail", cfg, why)
                if report.stop_reason:
                    break
            else:
                report.done.append(record)
                emit("done", cfg, record)
    finished = {c.cell_id() for c in report.skipped} | {r.cell_id for r in report.done} | {c.cell_id() for c, _ in report.failed}
    report.left = [c for c in cells if c.cell_id() not in finished]
    return report


def _meaningless(record: ResultRecord) -> str | None:
    """Why a computed score must not be written (a NaN accuracy, an empty test set), or None."""
    if record.n_test <= 0:
        return "the test split is empty; nothing written"
    if not (np.isfinite(record.value) and 0.0 <= record.value <= 1.0):
        return f"its {record.metric} is {record.value!r}, not a finite value in [0, 1]; nothing written"
    return None


def summarize(records: list[ResultRecord]) -> list[dict[str, Any]]:
    """Mean ± sample std (n − 1) over seeds per (task, profile, method, backbone, K), per-seed values kept."""
    groups: dict[tuple, list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((r.task, r.profile, r.method, r.backbone, str(r.k)), []).append(r)
    rows = []
    for (task, profile, method, backbone, k), recs in groups.items():
        vals = np.array([r.value for r in recs])
        rows.append({"task": task, "profile": profile, "method": method, "backbone": backbone, "k": k,
                     "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                     "n_seeds": len(vals), "values": vals.tolist(),
                     "trainable_params": recs[0].trainable_params, "head_params": recs[0].head_params})
    return sorted(rows, key=lambda r: (r["task"], r["method"], k_order(r["k"])))

