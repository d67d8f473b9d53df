"""Claims against records: each comparison evaluated on every (task, backbone, K) it covers, paired by seed
(the latest record per seed, one configuration per side), then pooled per comparison."""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from lorabench.errors import SpecError
from lorabench.leaderboard.paper import paper_accuracy, paper_table
from lorabench.leaderboard.rows import describe_variants, variant_key
from lorabench.specs import ResultRecord, k_order
from lorabench.stats import compare, per_seed
from lorabench.leaderboard.claims.loading import file_label
from lorabench.leaderboard.claims.schema import Comparison, LoadedClaim, TaskFilter
from lorabench.leaderboard.claims.verdicts import (NOT_RUN, UNDECIDED, VERDICTS, ClaimPooled, ClaimRow, decide,
                                                   pool_comparison, seeds_to_decide)


class ClaimResult(BaseModel):
    id: str
    text: str
    source: str
    note: str
    file: str
    file_label: str = ""
    title: str = ""
    comparisons: list[dict[str, str]]  # label, K range and tasks of each, in words
    rows: list[ClaimRow]
    pooled: list[ClaimPooled] = []  # one per comparison
    counts: dict[str, int]
    has_paper_numbers: bool = False
    skipped_tasks: list[str] = []  # tasks with records but neither method of any comparison


class ClaimsReport(BaseModel):
    claims: list[ClaimResult]
    files: list[str]
    file_labels: list[str] = []
    totals: dict[str, int]


def _variants(recs: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """Records of one method on one (task, backbone), split by configuration (never mixed)."""
    out: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in recs:
        out[variant_key(r)].append(r)
    return dict(sorted(out.items()))


def _variant_labels(groups: dict[str, list[ResultRecord]]) -> dict[str, str]:
    if len(groups) < 2:
        return {key: "" for key in groups}
    keys = list(groups)
    return dict(zip(keys, describe_variants([json.loads(k) for k in keys])))


def _task_info(name: str, recs: list[ResultRecord]) -> tuple[str, str, list[str]]:
    """(setting, suite, K grid) from the registered spec, else from the records."""
    from lorabench.errors import LorabenchError
    from lorabench.task_registry import get_task

    try:
        spec = get_task(name)
        return spec.setting, spec.suite, [str(k) for k in spec.k_grid]
    except LorabenchError:
        latest = max(recs, key=lambda r: r.created_at) if recs else None
        return (latest.setting if latest else "", latest.suite if latest else "", [])


def _known_tasks() -> list[str]:
    from lorabench.task_registry import all_tasks

    try:
        return sorted(all_tasks())
    except Exception:  # a broken task folder is reported elsewhere; here it only narrows the check
        return []


def _evaluate_comparison(index: int, comp: Comparison, by_task: dict[str, list[ResultRecord]],
                         task_files: dict[str, str], claim_file: str, claim_id: str) -> tuple[list[ClaimRow], set[str]]:
    rows: list[ClaimRow] = []
    skipped: set[str] = set()
    if isinstance(comp.tasks, list):
        known = set(_known_tasks()) | set(by_task)
        for t in comp.tasks:
            if t not in known:
                close = difflib.get_close_matches(t, sorted(known), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise SpecError(f"Claims file {claim_file}: claim {claim_id!r}, comparisons[{index}].tasks: unknown task "
                                f"{t!r}: it is neither registered nor in the results.{hint}")
        names = list(dict.fromkeys(comp.tasks))
    else:
        names = sorted(by_task)
    for task in names:
        recs = by_task.get(task, [])
        setting, suite, grid = _task_info(task, recs)
        if isinstance(comp.tasks, TaskFilter) and not comp.tasks.matches(setting, suite):
            continue
        side = {m: [r for r in recs if r.method == m] for m in (comp.a, comp.b)}
        if not isinstance(comp.tasks, list) and not side[comp.a] and not side[comp.b]:
            skipped.add(task)  # a wildcard does not list every task neither method was run on
            continue
        # Ks some method ran on this task (as on the task pages); where none of them is in the claim's range, the
        # grid's Ks in range, so an untested claim shows as "not run" instead of vanishing
        ks = [k for k in sorted({str(r.k) for r in recs}, key=k_order) if comp.k.covers(k)]
        ks = ks or [k for k in sorted(set(grid), key=k_order) if comp.k.covers(k)]
        backbones = sorted({r.backbone for r in side[comp.a] + side[comp.b]}) or [""]
        for backbone in backbones:
            for k in ks:
                ra = [r for r in side[comp.a] if r.backbone == backbone and str(r.k) == k]
                rb = [r for r in side[comp.b] if r.backbone == backbone and str(r.k) == k]
                rows += _rows_for_cell(index, comp, task, task_files.get(task), backbone, k, ra, rb)
    return rows, skipped


def _rows_for_cell(index: int, comp: Comparison, task: str, task_file: str | None, backbone: str, k: str,
                   ra: list[ResultRecord], rb: list[ResultRecord]) -> list[ClaimRow]:
    base = dict(comparison=index, label=comp.label, a=comp.a, b=comp.b, relation=comp.relation, margin=comp.margin,
                task=task, task_file=task_file, backbone=backbone, k=k)
    paper = next((p for p in comp.paper if p.task == task and str(p.k) == k), None)
    table = paper_table(task)
    if paper is not None:
        base |= dict(paper_a=paper.a, paper_b=paper.b)
    elif table is not None:  # the paper's tables, for a task that mirrors one of its settings
        base |= dict(paper_a=paper_accuracy(task, comp.a, k), paper_b=paper_accuracy(task, comp.b, k))
    if table is not None and (base.get("paper_a") is not None or base.get("paper_b") is not None):
        base["paper_backbone"] = f"{table.backbone}, {table.table}"
    if not ra or not rb:
        missing = [m for m, rs in ((comp.a, ra), (comp.b, rb)) if not rs]
        return [ClaimRow(**base, verdict=NOT_RUN, why=f"no current full-profile records of {' or '.join(missing)} "
                         f"at K={k}" + (f" on {backbone}" if backbone else ""),
                         params_a=sorted({r.trainable_params for r in ra}),
                         params_b=sorted({r.trainable_params for r in rb}))]
    ga, gb = _variants(ra), _variants(rb)
    la, lb = _variant_labels(ga), _variant_labels(gb)
    rows = []
    for ka, recs_a in ga.items():
        for kb, recs_b in gb.items():
            variant = "; ".join(x for x in (f"{comp.a}: {la[ka]}" if la[ka] else "",
                                            f"{comp.b}: {lb[kb]}" if lb[kb] else "") if x)
            try:  # the latest record per seed, as the task table shows it; one configuration per side
                c = compare(per_seed(recs_a), per_seed(recs_b))
            except ValueError as exc:
                rows.append(ClaimRow(**base, variant=variant, verdict=UNDECIDED, why=f"not comparable: {exc}"))
                continue
            verdict, why = decide(c, comp.relation, comp.margin)
            need, need_note = seeds_to_decide(c, comp.relation, comp.margin)
            pa, pb = sorted({r.trainable_params for r in recs_a}), sorted({r.trainable_params for r in recs_b})
            ok = None
            if comp.params:
                ok = max(pa) < min(pb) if comp.params == "<" else min(pa) > max(pb)
            if c.dropped:
                who = {"A missing": f"no {comp.a} record", "B missing": f"no {comp.b} record"}
                why += "; dropped: " + ", ".join(f"seed {s} ({who.get(w, w)})" for s, w in c.dropped.items())
            rows.append(ClaimRow(**base, variant=variant, verdict=verdict, why=why, n=c.n, seeds=c.seeds,
                                 dropped=c.dropped, mean_diff=c.mean_diff, sd_diff=c.sd_diff, ci_low=c.ci_low,
                                 ci_high=c.ci_high, wins=c.wins, ties=c.ties, losses=c.losses, seeds_needed=need,
                                 seeds_needed_note=need_note, params_a=pa, params_b=pb, params_ok=ok))
    return rows


def evaluate_claims(claims: Sequence[LoadedClaim], records: Iterable[ResultRecord],
                    task_files: dict[str, str] | None = None) -> ClaimsReport:
    """Every claim against `records`: pass only current, full-profile records with showable values
    (`build_site` passes exactly those its task tables use). `task_files`: task name -> its page."""
    by_task: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        if r.profile == "full":  # a smoke record is never evidence, even if a caller passes one
            by_task[r.task].append(r)
    results = []
    for lc in claims:
        claim, rows, skipped = lc.claim, [], set()
        for i, comp in enumerate(claim.comparisons):
            r, s = _evaluate_comparison(i, comp, by_task, task_files or {}, lc.file, claim.id)
            rows += r
            skipped |= s
        rows.sort(key=lambda r: (r.comparison, r.task, r.backbone, k_order(r.k), r.variant))
        counts = {v: sum(1 for r in rows if r.verdict == v) for v in VERDICTS}
        used = {r.task for r in rows}
        results.append(ClaimResult(
            id=claim.id, text=claim.text, source=claim.source, note=claim.note, file=lc.file,
            file_label=file_label(lc.file), title=lc.title,
            comparisons=[{"label": c.label, "k": c.k.label, "tasks": c.tasks_label,
                          "params": {"<": f"{c.a} should have fewer trainable parameters than {c.b}",
                                     ">": f"{c.a} should have more trainable parameters than {c.b}"}.get(c.params or "", "")}
                         for c in claim.comparisons],
            rows=rows, pooled=[pool_comparison(i, comp, [r for r in rows if r.comparison == i])
                               for i, comp in enumerate(claim.comparisons)],
            counts=counts, has_paper_numbers=any(r.paper_a is not None or r.paper_b is not None for r in rows),
            skipped_tasks=sorted(skipped - used)))
    totals = {v: sum(c.counts[v] for c in results) for v in VERDICTS}
    files = list(dict.fromkeys(lc.file for lc in claims))
    return ClaimsReport(claims=results, files=files, file_labels=[file_label(f) for f in files], totals=totals)
