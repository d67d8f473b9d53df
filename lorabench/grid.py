"""A grid of cells: expansion (every task × method × K × seed), validation before any work, skipping
finished cells, the upstream phase (each missing adapter trained once), then the cells on an executor.

The driver writes every record (workers only return them), so workers need not share the results folder.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabench.errors import ConfigError
from lorabench.evaluator import run_cell
from lorabench.executors import Executor, LocalExecutor
from lorabench.identity import identify, upstream_jobs_of
from lorabench.method import METHODS, require_fit
from lorabench.results import SCHEMA_VERSION, move_aside, record_problem, record_state, write_result
from lorabench.specs import KValue, ResultRecord, RunConfig
from lorabench.task_registry import get_task
from lorabench.upstream import UpstreamJob, ensure_upstream_adapter, is_complete
from lorabench.validation import check_grid


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
                for seed in (seeds if seeds is not None else task.seeds_for(k)):
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


@dataclass(frozen=True)
class CellJob:
    """What an executor runs for one cell: its config and the store adapters it loads, the list the grid built
    once for the cell (and trained, where missing), so a worker loads exactly those, whatever its own files."""

    cfg: RunConfig
    upstream: list[UpstreamJob]

    @classmethod
    def of(cls, cfg: RunConfig) -> "CellJob":
        return cls(cfg, upstream_jobs_of(cfg))


def execute_cell(job: CellJob) -> dict[str, Any]:
    """The job every executor runs for a cell: its record as plain JSON data, for the driver to write."""
    return run_cell(job.cfg, upstream=job.upstream).model_dump(mode="json")


def needed_upstream_jobs(cells: list[RunConfig] | list[CellJob]) -> dict[str, tuple[UpstreamJob, list[RunConfig]]]:
    """Adapters the cells will load from the store and that are not there yet: store path -> (job, cells)."""
    jobs: dict[str, tuple[UpstreamJob, list[RunConfig]]] = {}
    for cell in cells:
        cell = cell if isinstance(cell, CellJob) else CellJob.of(cell)
        for job in cell.upstream:
            if not is_complete(Path(job.path)):
                jobs.setdefault(job.path, (job, []))[1].append(cell.cfg)
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
    planned = [CellJob.of(cfg) for cfg in todo]  # each cell's store adapters, built once for the grid
    jobs = list(needed_upstream_jobs(planned).values())
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
    for cell in planned:
        cfg = cell.cfg
        if cfg.cell_id() in blocked:
            report.failed.append((cfg, blocked[cfg.cell_id()]))
            emit("fail", cfg, blocked[cfg.cell_id()])
        else:
            runnable.append(cell)
    with closing(executor.run(execute_cell, runnable)) as events:
        for kind, i, outcome in events:
            cfg = runnable[i].cfg
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
                    why = record_problem(record)
                    why = why and f"{why}; nothing written"
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
