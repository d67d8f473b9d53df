"""Page models and rendering: a task page per (task, profile), the index, claims.html, written by `build_site`.

The jinja2 templates beside this file render with autoescape on, since every string in a result file is
untrusted; pages inline their CSS and SVG, so the site opens from disk with no server and no network.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from pydantic import BaseModel

import lorabench
from lorabench.errors import ConfigError, LorabenchError
from lorabench.hashing import digest_json
from lorabench.leaderboard.claims import CLAIMS_PAGE, evaluate_claims, load_claims, render_claims_page
from lorabench.leaderboard.formatting import pct, pts
from lorabench.leaderboard.marks import ColumnMark, mark_columns
from lorabench.leaderboard.paper import PaperTable, paper_table
from lorabench.leaderboard.rows import (Row, StaleRecord, build_rows, row_label, split_stale,
                                        stale_records)
from lorabench.leaderboard.svg import accuracy_plot, diff_plot, draw_heatmaps
from lorabench.leaderboard.sweeps import sweep_pages
from lorabench.results import load_results, record_problem, write_text_atomic
from lorabench.specs import ResultRecord, TaskSpec, k_order
from lorabench.validation import check_writable

TEMPLATES = Path(__file__).parent / "templates"
# Task names kept as page names; any other name gets a shortened slug plus a digest (see _slug).
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class Provenance(BaseModel):
    n_records: int
    lorabench_versions: list[str]
    git_commits: list[str]
    backbones: list[str]
    devices: list[str]
    torch_versions: list[str]
    data: list[str] = []  # "<file> <content digest>" of every dataset file the records read
    first: str
    last: str


class UpstreamCheck(BaseModel):
    """One upstream module's own check: its accuracy on held-out data of its task beside a linear probe's."""

    name: str
    n_train: int | None = None
    n_heldout: int | None = None
    heldout_accuracy: float | None = None
    probe_accuracy: float | None = None
    steps: int | None = None
    beats_probe: bool | None = None  # None: no probe score, or both at 100 % (the check cannot tell)
    at_ceiling: bool = False


class TaskPage(BaseModel):
    name: str
    profile: str = "full"
    file: str
    setting: str
    suite: str
    backbones: list[str]
    metric: str
    registered: bool
    spec: dict[str, Any] | None = None
    ks: list[str]
    seeds: list[int]
    rows: list[Row]
    best: dict[str, list[Row]]  # per K: the bold row (at most one), only where the seeds back it
    marks: dict[str, ColumnMark] = {}
    plot: dict[str, Any]
    diff_plot: dict[str, Any] = {}  # paired differences of the main pairs against K (see svg.diff_plot)
    unrun_ks: list[str] = []  # K values of the task's grid with no record on this page (no column, no plot slot)
    flags: list[str]
    provenance: Provenance
    upstream_checks: list[UpstreamCheck] = []
    stale: list[StaleRecord] = []
    tags: dict[str, Any] = {}  # the sweep variables of its records (sweeps.py groups pages by them)
    sweep_file: str = ""  # its sweep page, if it is part of one
    paper: PaperTable | None = None  # the paper's own table for the setting this task mirrors


class SiteReport(BaseModel):
    out_dir: Path
    index: Path
    pages: list[Path]
    n_records: int
    bad_files: list[Path]
    bad_records: list[str] = []  # "<cell id> (config <hash>): why", for records left out for their values
    flags: int
    claims: Path | None = None  # claims.html
    sweeps: list[Path] = []  # sweep-<family>-<variable>.html
    claim_totals: dict[str, int] = {}  # verdict -> task x K rows, over every claim


def provenance(records: list[ResultRecord]) -> Provenance:
    dates = sorted(r.created_at for r in records)
    return Provenance(
        n_records=len(records),
        lorabench_versions=sorted({r.lorabench_version for r in records}),
        git_commits=sorted({(r.git_commit or "unknown (not run from a git checkout)")
                            + (" + uncommitted changes" if r.git_dirty else "") for r in records}),
        backbones=sorted({r.backbone for r in records}),
        devices=sorted({r.device for r in records}),
        torch_versions=sorted({r.versions.get("torch", "?") for r in records}),
        data=sorted({f"{key} {digest}" for r in records for key, digest in (r.config.get("data") or {}).items()}
                    | {"(not recorded: run before data digests)" for r in records if not r.config.get("data")}),
        first=dates[0] if dates else "", last=dates[-1] if dates else "",
    )


def _task_spec(name: str) -> TaskSpec | None:
    from lorabench.task_registry import get_task

    try:
        return get_task(name)
    except LorabenchError:
        return None


def _slug(name: str, taken: set[str]) -> str:
    """A page name any filesystem accepts: short plain names as they are (links to them stay stable),
    others cut to 60 safe characters plus a digest of the full name, so distinct names stay distinct.
    `taken` holds lower-cased slugs, since some filesystems ignore case."""
    if SAFE_NAME.fullmatch(name):
        base = name
    else:
        cut = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60].rstrip("-.")
        base = f"{cut or 'task'}-{digest_json(name, 10)}"
    slug, i = base, 2
    while slug.lower() in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug.lower())
    return slug


def upstream_checks(records: list[ResultRecord]) -> list[UpstreamCheck]:
    """The upstream modules' own scores, from the latest record that composed them."""
    with_quality = [r for r in records if r.config.get("upstream_quality")]
    if not with_quality:
        return []
    latest = max(with_quality, key=lambda r: r.created_at)
    out = []
    for q in latest.config["upstream_quality"]:
        check = UpstreamCheck(**{k: q.get(k) for k in UpstreamCheck.model_fields if k in q})
        h, p = check.heldout_accuracy, check.probe_accuracy
        if h is not None and p is not None and math.isfinite(h) and math.isfinite(p):
            check.at_ceiling = h == p == 1.0
            check.beats_probe = None if check.at_ceiling else h > p
        out.append(check)
    return out


def task_page(name: str, records: list[ResultRecord], file: str, profile: str = "full",
              stale: list[tuple[ResultRecord, str]] = ()) -> TaskPage:
    spec = _task_spec(name)
    # Only the K values something was run at: a grid K with no record gets no column and no plot slot.
    ks = sorted({str(r.k) for r in records}, key=k_order)
    unrun_ks = sorted({str(k) for k in spec.k_grid} - set(ks), key=k_order) if spec else []
    run_seeds = sorted({r.seed for r in records})
    seeds_of = {k: (spec.seeds_for(k if k == "all" else int(k)) if spec else run_seeds) for k in ks}
    seeds = sorted({s for k in ks for s in seeds_of[k]}) if spec else run_seeds
    rows, flags = build_rows(records, ks, seeds_of)
    draw_heatmaps(rows)
    if profile == "full":
        marks = mark_columns(rows, ks)
    else:  # never ranked: a smoke number is a test of the pipeline, not a benchmark result
        marks = {k: ColumnMark(k=k, status="unranked") for k in ks}
        flags.insert(0, f"These are {profile}-profile records: a small version of the protocol for tests and CI. "
                        "They are not benchmark results and are never ranked or averaged with full-profile ones.")
    best = {k: [r for r in rows if r.cells[k].best] for k in ks}
    checks = upstream_checks(records)
    weak = [c.name for c in checks if c.beats_probe is False]
    if weak:
        flags.append(f"Upstream module(s) {', '.join(weak)} do not beat a linear probe on their own held-out data "
                     "(see the upstream table): they may have learned little their task needs.")
    stale_rows = stale_records(stale)
    if stale_rows:
        flags.append(f"{len(stale_rows)} stale record(s) (their inputs changed since they were run) are left out of "
                     "the table and listed below; re-run those cells for current results.")
    incomplete = sum(1 for r in rows for c in r.cells.values() if c.values and c.missing_seeds)
    if incomplete:
        flags.append(f"{incomplete} cell(s) have fewer seeds than the task's default for their K "
                     f"({', '.join(f'K = {k}: {len(seeds_of[k])}' for k in ks)}).")
    latest = max(records, key=lambda r: r.created_at)
    return TaskPage(
        name=name, profile=profile, upstream_checks=checks, stale=stale_rows, file=file, setting=latest.setting, suite=latest.suite,
        backbones=sorted({r.backbone for r in records}), metric=latest.metric, registered=spec is not None,
        spec=spec.model_dump(mode="json") if spec else None, ks=ks, seeds=seeds, rows=rows, best=best, marks=marks,
        plot=accuracy_plot(rows, ks), diff_plot=diff_plot(rows, ks), unrun_ks=unrun_ks, flags=flags,
        provenance=provenance(records), tags=latest.tags, paper=paper_table(name),
    )


def _stale_only_page(name: str, profile: str, stale: list[tuple[ResultRecord, str]], file: str) -> TaskPage:
    """A task whose every record is stale: an empty table, the stale list, and a flag saying so."""
    page = task_page(name, [r for r, _ in stale], file, profile, stale)
    page.rows, page.best = [], {k: [] for k in page.ks}
    page.marks = {k: ColumnMark(k=k, status="unranked" if profile != "full" else "none") for k in page.ks}
    page.plot, page.diff_plot = accuracy_plot([], page.ks), diff_plot([], page.ks)
    return page


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_FIELD_CHARS = 4000  # a printed string longer than this is cut (the record keeps it whole)


def bounded(value: Any) -> Any:
    """What a page prints of any value: no control characters (a NUL from a record field is not text; U+FFFD
    stands in its place) and no string beyond MAX_FIELD_CHARS (one 50 MB field must not make a 100 MB page).
    Markup the templates build (SVG, links) keeps its length; only control characters leave it."""
    if isinstance(value, markupsafe.Markup):
        return markupsafe.Markup(_CONTROL.sub("", value))
    if isinstance(value, str):
        value = _CONTROL.sub("\ufffd", value)
        if len(value) > MAX_FIELD_CHARS:
            value = f"{value[:MAX_FIELD_CHARS]} … [{len(value) - MAX_FIELD_CHARS:,} more characters in the record]"
    return value


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, finalize=bounded,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = pct
    env.filters["pts"] = pts
    env.filters["count"] = lambda n: f"{n:,}"
    # Escaped, with a line-break chance after each underscore: long snake_case method names wrap there.
    env.filters["wbr"] = lambda text: markupsafe.Markup("_<wbr>").join(str(bounded(str(text))).split("_"))
    env.globals["row_label"] = row_label
    return env


def _check_targets(paths: list[Path], out_dir: Path) -> None:
    """Refuse to write through a link, into a FIFO (it would block) or over a folder left in `out_dir`."""
    for path in paths:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"--out {out_dir}: {path} exists and is not a regular file; remove it or choose "
                              "another --out.")


def build_site(results_dir: str | Path, out_dir: str | Path, claims_files: list[str | Path] | tuple = ()) -> SiteReport:
    """Render every valid record under `results_dir` into `out_dir` (index.html + task-<name>.html + claims.html:
    the paper's claims, plus those of each of `claims_files`, checked against the current full-profile records)."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"--results-dir {results_dir}: no such folder (it should hold <task>/*.json result files "
                          "written by `lorabench run`).")
    check_writable(out_dir, "--out")
    claims = load_claims(claims_files)  # a bad claims file fails before anything is read or written
    loaded, bad = load_results(results_dir)
    records, bad_records = [], []
    for r in loaded:
        why = record_problem(r)
        (bad_records.append(f"{r.cell_id} (config {r.config_hash}): {why}") if why else records.append(r))
    if not records:
        extra = f"; {len(bad)} JSON file(s) there did not validate as result records" if bad else ""
        if bad_records:
            extra += f"; {len(bad_records)} record(s) hold values that cannot be shown, e.g. {bad_records[0]}"
        raise ConfigError(f"No result records under {results_dir}{extra}. Run `lorabench run ... --results-dir "
                          f"{results_dir}` first.")
    by_task, stale = split_stale(records)
    taken: set[str] = {"index"}
    pages = []
    for (t, profile), recs in sorted(by_task.items(), key=lambda kv: (kv[0][1] != "full", kv[0])):
        slug = _slug(t if profile == "full" else f"{t}-{profile}", taken)
        file = f"task-{slug}.html"
        pages.append(task_page(t, recs, file, profile, stale[(t, profile)]) if recs else
                     _stale_only_page(t, profile, stale[(t, profile)], file))
    sweeps = sweep_pages(pages)
    by_file = {p.file: p for p in pages}
    taken_sweeps: set[str] = set()  # "sweep-" files never meet "task-" ones, so a name space of their own
    for sw in sweeps:
        sw.file = f"sweep-{_slug(f'{sw.family}-{sw.variable}', taken_sweeps)}.html"
        for point in sw.points:
            by_file[point.file].sweep_file = sw.file
    env = environment()
    meta = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "version": lorabench.__version__,
            "results_dir": str(results_dir), "bad_files": [str(p) for p in bad], "bad_records": bad_records}
    claims_report = evaluate_claims(claims, [r for (_, p), recs in by_task.items() if p == "full" for r in recs],
                                    {page.name: page.file for page in pages if page.profile == "full"})
    index, claims_path = out_dir / "index.html", out_dir / CLAIMS_PAGE
    written = [out_dir / page.file for page in pages] + [out_dir / sw.file for sw in sweeps]
    _check_targets([index, claims_path, *written], out_dir)
    html = [env.get_template("task.html").render(page=page, pages=pages, meta=meta) for page in pages]
    html += [env.get_template("sweep.html").render(sweep=sw, pages=pages, meta=meta) for sw in sweeps]
    html.append(render_claims_page(env, claims_report, pages, meta))
    html.append(env.get_template("index.html").render(pages=pages, meta=meta, provenance=provenance(records),
                                                      claims=claims_report, sweeps=sweeps))
    path = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in zip([*written, claims_path, index], html):
            write_text_atomic(path, text)  # whole or not at all: a full disk leaves the previous page
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot write {path}: {exc.strerror or exc}.") from None
    return SiteReport(out_dir=out_dir, index=index, pages=written[:len(pages)], sweeps=written[len(pages):],
                      n_records=len(records), bad_files=bad,
                      bad_records=bad_records, flags=sum(len(p.flags) for p in pages), claims=claims_path,
                      claim_totals=claims_report.totals)
