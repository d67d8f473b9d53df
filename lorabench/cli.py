"""Command line: `lorabench run`, `lorabench list`, `lorabench leaderboard`.

The only module that imports typer and rich. User errors (LorabenchError) become one paragraph on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lorabench.errors import ConfigError, LorabenchError
from lorabench.specs import FEW_SHOT_MAX_K

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmark LoRA composition for few-shot transfer.")
# Piped output (files, CI logs, tests) is rendered wide rather than wrapped at rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


_ASCII_INT = re.compile(r"-?[0-9]+")  # not str.isdigit / int(): they take '²' and other scripts' digits


def _parse_k(text: str | None) -> list[Any] | None:
    """--k: None (not given: the task's grid), else K values; an empty value is an error, not the default."""
    if text is None:
        return None
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            out.append("all")
        elif _ASCII_INT.fullmatch(part) and not part.startswith("-"):
            out.append(int(part))
        else:
            raise ConfigError(f"--k takes a comma-separated list of non-negative integers or 'all' (e.g. 1,5,all); "
                              f"got {part!r}" + (" (leave --k out for the task's own grid)" if not text.strip() else "")
                              + ".")
    return out


def _parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(_ASCII_INT.fullmatch(p) for p in parts):
        raise ConfigError(f"{flag} takes a comma-separated list of integers (e.g. 0,1,2); got {text!r}"
                          + (f" (leave {flag} out for the task's own)" if not text.strip() else "") + ".")
    return [int(p) for p in parts]


def _parse_hparams(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--hp takes key=value (e.g. --hp lr=1e-3); got {item!r}.")
        key, value = item.split("=", 1)
        key = key.strip()
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if key in out:
            raise ConfigError(f"--hp {key} is given twice ({key}={out[key]!r} and {key}={parsed!r}); give it once.")
        out[key] = parsed
    return out


def _split_names(values: list[str], flag: str) -> list[str]:
    """Names from repeated and comma-separated values; naming nothing at all is an error, not an empty grid."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{flag} names nothing (got {', '.join(map(repr, values))}): give at least one name; "
                          f"`lorabench list {'tasks' if flag == '--task' else 'methods'}` lists them.")
    return names


def _folder(value: str, flag: str) -> Path:
    """A folder option: an empty value is an error (pathlib would read it as '.', the current folder)."""
    if not value.strip():
        raise ConfigError(f"{flag} is empty: give a folder (e.g. {flag} results), or leave it out for the default.")
    return Path(value)


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


def _seeds_words(spec) -> str:
    """'0-9 (K <= 10), 0-2 (larger K)': a task's default seeds per K range."""
    def span(s: list[int]) -> str:
        return f"{s[0]}-{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))
    few, many = span(spec.seeds), span(spec.seeds_many_shot)
    return few if few == many else f"{few} (K <= {FEW_SHOT_MAX_K}), {many} (larger K)"


@app.command()
def run(
    method: list[str] = typer.Option(..., "--method", "-m", help="Method name(s); repeat or comma-separate."),
    task: list[str] = typer.Option(..., "--task", "-t", help="Task name(s); repeat or comma-separate."),
    k: Optional[str] = typer.Option(None, "--k", help="K values, e.g. 1,5,all (default: the task's grid)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (default: the task's seeds)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone (default: the task's)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local data folder (<name>/<split>.parquet); else $LORABENCH_DATA, else the hub."),
    results_dir: str = typer.Option("results", "--results-dir", help="Where result JSON files go."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Upstream adapter store; else $LORABENCH_CACHE, else ~/.cache/lorabench."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 or bf16 (autocast); default bf16 on CUDA, fp32 elsewhere."),
    hp: list[str] = typer.Option([], "--hp", help="Hyperparameter override key=value (repeatable)."),
    upstream: list[Path] = typer.Option([], "--upstream", help="PEFT LoRA folder(s) to compose instead of training upstream adapters."),
    tune: bool = typer.Option(False, "--tune", help="Pick hyperparameters from the method's grid on a validation draw."),
    profile: str = typer.Option("full", "--profile", help="full: the benchmark protocol (default, the only one ranked); smoke: a tiny version for tests and CI."),
    tuned: bool = typer.Option(False, "--tuned", help="Use the configuration `lorabench tune` selected per (task, method) (from the results dir)."),
    executor: ExecutorKind = typer.Option(ExecutorKind.local, "--executor", help="local: in this process; ray: one Ray task per cell (pip install 'lorabench[ray]')."),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="Ray: CPUs reserved per cell and per upstream adapter."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="Ray: GPUs reserved per cell (fractions share a GPU)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray: auto, host:6379 or ray://host:10001 joins a running cluster; default starts a local instance."),
) -> None:
    """Run method × task × K × seed; finished cells are skipped; prints mean ± std per K."""
    from lorabench.grid import expand_grid, run_grid
    from lorabench.results import summarize
    from lorabench.executors import make_executor
    from lorabench.results import read_result
    from lorabench.validation import check_device, check_grid, check_precision

    results_dir = _folder(results_dir, "--results-dir")
    check_device(device)
    precision = check_precision(precision, device)
    for d in upstream:
        if not d.is_dir():
            raise ConfigError(f"--upstream {d}: no such folder (expected a PEFT adapter folder).")
    cells = expand_grid(
        _split_names(method, "--method"), _split_names(task, "--task"), _parse_k(k), _parse_ints(seeds, "--seeds"), backbone,
        hparams=_parse_hparams(hp), upstream_dirs=[str(p.resolve()) for p in upstream], tune=tune, profile=profile,
        device=device, precision=precision, data_dir=str(data_dir) if data_dir else None,
        results_dir=str(results_dir), cache_dir=str(cache_dir) if cache_dir else None,
    )
    if tuned:
        from lorabench.tuning import apply_tuned

        cells = apply_tuned(cells, results_dir)
    if executor == ExecutorKind.local and (ray_address or cpus_per_run != 1.0 or gpus_per_run):
        raise ConfigError("--ray-address, --cpus-per-run and --gpus-per-run apply to --executor ray only.")
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0; got {cpus_per_run} and {gpus_per_run}.")
    for warning in check_grid(cells):  # before any work: names, K, hyperparameters, data, folders, adapters
        err_console.print(f"[yellow]warning[/]: {escape(warning)}")
    runner = make_executor(executor.value, address=ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    counts = {"running": 0, "done": 0, "skipped": 0, "failed": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("[yellow]{task.fields[running]} running[/] [green]{task.fields[done]} done[/] "
                             "[dim]{task.fields[skipped]} skipped[/] [red]{task.fields[failed]} failed[/]"),
                  console=console, transient=False) as progress:
        bar = progress.add_task(f"cells ({executor.value})", total=len(cells), **counts)

        running: set[str] = set()

        def on_event(kind: str, cfg, *rest) -> None:
            if kind == "start":
                running.add(cfg.cell_id())
                counts["running"] = len(running)
                progress.update(bar, description=f"[bold]{cfg.cell_id()}", **counts)
            elif kind == "upstream":
                progress.console.print(f"training upstream adapter [cyan]{rest[0]}[/] for {cfg.task} on {cfg.backbone}")
            elif kind == "warn":
                progress.console.print(f"[yellow]warning[/]: {escape(rest[0])}")
            elif kind == "upstream_end" and rest[1]:
                progress.console.print(f"[red]upstream adapter {rest[0]} failed[/]: {escape(rest[1].splitlines()[0])}")
            elif kind in ("done", "skip", "fail"):
                key = {"done": "done", "skip": "skipped", "fail": "failed"}[kind]
                counts[key] += 1
                running.discard(cfg.cell_id())
                counts["running"] = len(running)
                if kind == "fail":
                    progress.console.print(f"[red]failed[/] {cfg.cell_id()}: {escape(rest[0].splitlines()[0])}")
                progress.update(bar, advance=1, **counts)

        try:
            report = run_grid(cells, on_event=on_event, executor=runner, validate=False)
        except KeyboardInterrupt:
            progress.stop()
            left = len(cells) - counts["done"] - counts["skipped"] - counts["failed"]
            err_console.print(f"interrupted: {counts['done']} cell(s) done, {counts['skipped']} skipped, "
                              f"{counts['failed']} failed, {left} not finished. Finished cells are saved; re-run "
                              f"the same command to resume (they are skipped): lorabench {shlex.join(sys.argv[1:])}",
                              highlight=False)
            raise typer.Exit(130) from None
        finally:
            runner.close()
    records = [r for r in (read_result(c.result_path()) for c in cells) if r is not None]
    table = _table("task", "method", "backbone", "K", "accuracy", "seeds", "trainable (head)",
                   title=f"accuracy (mean ± sample std over seeds, {profile} profile"
                         f"{': NOT benchmark results' if profile != 'full' else ''}) — results in {results_dir}")
    for row in summarize(records):
        table.add_row(row["task"], row["method"], row["backbone"], row["k"],
                      f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}", str(row["n_seeds"]),
                      f"{row['trainable_params']:,} ({row['head_params']:,})")
    console.print(table)
    for path, aside in report.moved:
        err_console.print(f"[yellow]moved aside[/] {path} (not a valid record) -> {aside}")
    if report.failed:
        err_console.print(f"[red]{len(report.failed)} cell(s) failed:[/]")
        for cfg, why in report.failed:
            err_console.print(f"  {cfg.cell_id()}: {escape(why)}")
    if report.stop_reason:
        err_console.print(f"[red]the grid stopped[/]: {escape(report.stop_reason)}. {len(report.left)} cell(s) not run:")
        for cfg in report.left:
            err_console.print(f"  {cfg.cell_id()}")
        err_console.print("fix the results folder and re-run the same command; finished cells are skipped.")
    if report.failed or report.left:
        raise typer.Exit(1)


@app.command()
def tune(
    method: list[str] = typer.Option(..., "--method", "-m", help="Method name(s) with a tune grid."),
    task: list[str] = typer.Option(..., "--task", "-t", help="Task name(s)."),
    k: Optional[str] = typer.Option(None, "--k", help="K values to average over (default: the task's grid, without 0 and all)."),
    profile: str = typer.Option("full", "--profile", help="full or smoke."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local data folder; else $LORABENCH_DATA, else the hub."),
    results_dir: str = typer.Option("results", "--results-dir", help="The selection goes to <results-dir>/_tuning/<task>/."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Upstream adapter store."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    n_val: int = typer.Option(50, "--n-val", min=1, help="Validation examples per class (in total for QA)."),
) -> None:
    """Select one configuration per (task, method) from the method's grid, averaged over the K grid, on a
    validation draw disjoint from every support set and the test split (the paper's protocol)."""
    from lorabench.tuning import select, write_selection
    from lorabench.validation import check_device, check_writable

    results_dir = _folder(results_dir, "--results-dir")
    check_device(device)
    check_writable(results_dir, "--results-dir")

    for task_name in dict.fromkeys(_split_names(task, "--task")):
        for name in dict.fromkeys(_split_names(method, "--method")):
            sel = select(task_name, name, profile, _parse_k(k), str(data_dir) if data_dir else None,
                         str(cache_dir) if cache_dir else None, device, n_val)
            path = write_selection(sel, results_dir)
            table = _table("configuration", *[f"K = {kk}" for kk in sel["ks"]], "mean",
                           title=f"{name} on {task_name} ({profile}): validation accuracy, {sel['n_val']} examples")
            for label, per_k in sel["scores"].items():
                mark = " (chosen)" if sel["mean"][label] == max(sel["mean"].values()) else ""
                table.add_row(label + mark, *[f"{100 * per_k[kk]:.2f}" for kk in sel["ks"]],
                              f"{100 * sel['mean'][label]:.2f}")
            console.print(table)
            console.print(f"chosen: {sel['chosen']} -> {path}; run it with `lorabench run ... --tuned`")


@app.command()
def compare(
    methods: list[str] = typer.Argument(..., help="Two methods, A then B: the difference is A - B."),
    task: str = typer.Option(..., "--task", "-t", help="Task name."),
    k: str = typer.Option(..., "--k", help="K values, e.g. 1,5,all."),
    results_dir: str = typer.Option("results", "--results-dir", help="Folder of result JSON files."),
    profile: str = typer.Option("full", "--profile", help="full (default) or smoke."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone (default: the task's)."),
    ci: str = typer.Option("t", "--ci", help="t: paired t interval; bootstrap: paired bootstrap over seeds."),
) -> None:
    """Paired comparison of two methods per K over the seeds both have (current records only): mean
    difference, its standard error and 95 % CI, wins/ties/losses, Wilcoxon and sign tests, and a verdict."""
    from lorabench.identity import staleness
    from lorabench.results import load_results
    from lorabench.stats import CI_METHODS, compare_records, seeds_needed
    from lorabench.task_registry import get_task

    results_dir = _folder(results_dir, "--results-dir")
    if len(methods) != 2 or methods[0] == methods[1]:
        raise ConfigError(f"compare takes two different methods, A and B; got {methods}.")
    if ci not in CI_METHODS:
        raise ConfigError(f"--ci {ci!r}: use one of {', '.join(CI_METHODS)}.")
    spec = get_task(task, profile)
    from lorabench.method import METHODS

    for m in methods:
        METHODS.get(m)  # unknown names fail with suggestions
    if not results_dir.is_dir():
        raise ConfigError(f"--results-dir {results_dir}: no such folder.")
    ks = _parse_k(k)
    bb = backbone or spec.backbone
    records, _ = load_results(results_dir)
    pool = [r for r in records if r.task == task and r.profile == profile and r.backbone == bb and not staleness(r)]
    table = _table("K", "n", "A − B (pts)", "SE", "95 % CI", "W/T/L", "Wilcoxon p", "sign p", "verdict",
                   "seeds to decide",
                   title=f"{methods[0]} (A) vs {methods[1]} (B) on {task} ({profile}, {bb}); paired over seeds")
    for kk in ks:
        a = [r for r in pool if r.method == methods[0] and str(r.k) == str(kk)]
        b = [r for r in pool if r.method == methods[1] and str(r.k) == str(kk)]
        if not a or not b:
            missing = [m for m, recs in zip(methods, (a, b)) if not recs]
            table.add_row(str(kk), "0", "", "", "", "", "", "", f"no current records of {', '.join(missing)}", "")
            continue
        c = compare_records(a, b, ci=ci)
        pts = lambda x: "" if x is None else f"{100 * x:+.2f}"  # noqa: E731
        need = seeds_needed(c.mean_diff, c.sd_diff) if c.n >= 2 and c.sd_diff else None
        dropped = f" (dropped seeds {sorted(c.dropped)})" if c.dropped else ""
        table.add_row(str(kk), f"{c.n}{dropped}", pts(c.mean_diff), "" if c.se is None else f"{100 * c.se:.2f}",
                      "" if c.ci is None else f"[{pts(c.ci_low)}, {pts(c.ci_high)}]", f"{c.wins}/{c.ties}/{c.losses}",
                      "" if c.wilcoxon_pvalue is None else f"{c.wilcoxon_pvalue:.3g}",
                      "" if c.sign_pvalue is None else f"{c.sign_pvalue:.3g}", c.verdict,
                      "" if need is None else str(need))
    console.print(table)


class Listable(str, Enum):
    tasks = "tasks"
    methods = "methods"
    backbones = "backbones"


def _table(*columns: str, title: str | None = None) -> Table:
    """A table that folds long cells instead of truncating them (names must stay copy-pastable)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


@app.command("list")
def list_(what: Listable = typer.Argument(..., help="tasks, methods or backbones")) -> None:
    """List registered tasks, methods or backbones."""
    if what == Listable.tasks:
        from lorabench.task_registry import all_tasks

        table = _table("task", "setting", "suite", "modality", "backbone", "N upstream", "K grid", "seeds")
        for spec in sorted(all_tasks().values(), key=lambda s: (s.suite, s.name)):
            table.add_row(spec.name, spec.setting, spec.suite, spec.modality, spec.backbone,
                          str(len(spec.upstream)),
                          ",".join(map(str, spec.k_grid)), _seeds_words(spec))
    elif what == Listable.methods:
        from lorabench.method import METHODS

        table = _table("method", "needs upstream", "modalities", "description")
        for name in METHODS.names():
            cls = METHODS.get(name)
            table.add_row(name, "yes" if cls.needs_upstream else "no", ", ".join(cls.modalities), cls.description)
        for name, why in METHODS.broken.items():
            table.add_row(f"[red]{name}[/]", "", "", f"[red]broken plugin: {why}[/]")
    else:
        from lorabench.backbones import BACKBONES

        table = _table("backbone", "description")
        for name in BACKBONES.names():
            doc = (BACKBONES.get(name).__doc__ or "").strip().splitlines()
            table.add_row(name, doc[0] if doc else "")
        for name, why in BACKBONES.broken.items():
            table.add_row(f"[red]{name}[/]", f"[red]broken plugin: {why}[/]")
    console.print(table)


@app.command()
def leaderboard(
    results_dir: str = typer.Option("results", "--results-dir", help="Folder of result JSON files (searched recursively)."),
    out: str = typer.Option("site", "--out", help="Folder to write the static site into (index.html + one page per task)."),
    claims: Optional[list[Path]] = typer.Option(None, "--claims", help="A YAML file of claims to check on claims.html, besides the paper's (repeatable; format: lorabench/leaderboard/claims/paper.yaml)."),
) -> None:
    """Render all results into a static HTML leaderboard that opens from disk (no server, no network)."""
    from lorabench.leaderboard import build_site

    report = build_site(_folder(results_dir, "--results-dir"), _folder(out, "--out"), claims or ())
    console.print(f"{report.n_records} result file(s) -> {len(report.pages)} task page(s); open {report.index}")
    if report.claims:
        console.print(f"claims: {', '.join(f'{n} {v}' for v, n in report.claim_totals.items())} (task × K rows) -> {report.claims}")
    if report.bad_files:
        err_console.print(f"[yellow]{len(report.bad_files)} file(s) did not validate and were left out[/] "
                          "(listed on the index page).")
    if report.bad_records:
        err_console.print(f"[yellow]{len(report.bad_records)} record(s) with impossible values were left out[/] "
                          "(listed on the index page).")
    if report.flags:
        err_console.print(f"[yellow]{report.flags} flag(s)[/] (disagreeing configs, missing seeds) are shown on the pages.")


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's exception base: the installed typer bundles its own click (typer._click), and a separate
    click may be installed too; both are caught."""
    kinds: list[type[BaseException]] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            kinds.append(__import__(mod, fromlist=["ClickException"]).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(kinds)


def _aborts() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [KeyboardInterrupt, typer.Abort]
    try:
        import click

        kinds.append(click.exceptions.Abort)
    except (ImportError, AttributeError):
        pass
    return tuple(kinds)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns the code of typer.Exit here instead of raising
        if isinstance(code, int) and code:
            sys.exit(code)
    except LorabenchError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _usage_errors() as exc:  # usage errors: click's own one-paragraph message, exit 2
        exc.show()
        sys.exit(2)
    except _aborts():
        err_console.print("aborted; finished cells are saved and will be skipped on a re-run.")
        sys.exit(130)


if __name__ == "__main__":
    main()
