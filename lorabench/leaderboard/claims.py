"""Claims as data: a paper's statements ("uniform composition beats full fine-tuning at K <= 5") written as
comparisons in a YAML file, and checked against the current results, paired by seed.

A claims file lists claims; each claim has comparisons {a, b, relation, margin, k, tasks, params, paper}.
Every comparison is evaluated per task x backbone x K it covers, with `lorabench.stats.compare` over the
seeds both methods ran (the others are named as dropped):

* ">" (A better): supported if the paired 95% CI of A - B lies above 0, contradicted if below, else undecided;
  "<" is the mirror image;
* "≈" with margin m (accuracy points): supported if the CI lies inside [-m, m], contradicted if it lies
  entirely outside, else undecided;
* fewer than 2 matched seeds: undecided (one seed has no spread); a method with no records: "not run".

"Seeds needed" is `lorabench.stats.seeds_needed` (paired t-test, alpha 0.05, power 0.8) at the observed
mean difference and spread, for the distance from the mean to the boundary the interval has to clear
(0 for ">" and "<"; the nearer of +-m for "≈").

Only current full-profile records with showable values enter: the caller (`build_site`) passes the records
its task tables use, so stale, smoke and invalid records never reach a verdict.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lorabench.errors import SpecError
from lorabench.leaderboard.formatting import pts
from lorabench.leaderboard.paper import paper_accuracy, paper_table
from lorabench.leaderboard.rows import describe_variants, variant_of
from lorabench.leaderboard.svg import forest_plot
from lorabench.specs import ResultRecord, Setting, k_order
from lorabench.stats import PairedComparison, compare, per_seed, pool_effects, seeds_needed

PAPER_CLAIMS = Path(__file__).parent / "claims" / "paper.yaml"
CLAIMS_PAGE = "claims.html"
SUPPORTED, CONTRADICTED, UNDECIDED, NOT_RUN = "supported", "contradicted", "undecided", "not run"
VERDICTS = (SUPPORTED, CONTRADICTED, UNDECIDED, NOT_RUN)
RELATION_ALIASES = {">": ">", "<": "<", "≈": "≈", "~": "≈", "~=": "≈", "approx": "≈"}
_K_OP = re.compile(r"^\s*(<=|>=|==|<|>|=)?\s*(\d+)\s*$")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


# --- the file format -----------------------------------------------------------------------------


class KRange(BaseModel):
    """Which K values a comparison covers: lo <= K <= hi over integers, plus K = "all" if `all`."""

    model_config = ConfigDict(frozen=True)
    lo: int = 0
    hi: int | None = None  # None: no upper bound on integer K
    ints: bool = True  # integer K values at all (False for k: all)
    all: bool = False
    text: str = ""  # as written, for the page

    def covers(self, k: Any) -> bool:
        if str(k) == "all":
            return self.all
        return self.ints and self.lo <= int(k) and (self.hi is None or int(k) <= self.hi)

    @property
    def label(self) -> str:
        if not self.ints:
            return "K = all" if self.all else "no K"
        if self.hi is None:
            return "any K" if self.lo == 0 and self.all else (f"K ≥ {self.lo}" + ("" if self.all else " (not all)"))
        if self.lo == self.hi:
            return f"K = {self.lo}"
        lo = "" if self.lo == 0 else f"{self.lo} ≤ "
        return f"{lo}K ≤ {self.hi}" + (" or K = all" if self.all else "")


def parse_k(value: Any) -> KRange:
    """'<=5', '<5', '>=10', '>10' (these two include 'all': the whole training set is more than any K), '5' or
    5 or '==5', 'all', '*', or [lo, hi] inclusive (hi may be 'all')."""
    bad = (f"{value!r} is not a K range: use '<=5', '<5', '>=10', '>10', '5', 'all', '*' or [lo, hi] "
           "(inclusive; hi may be 'all')")
    if isinstance(value, bool):
        raise ValueError(bad)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(bad)
        return KRange(lo=value, hi=value, text=str(value))
    if isinstance(value, str):
        s = value.strip()
        if s == "*":
            return KRange(all=True, text=s)
        if s == "all":
            return KRange(ints=False, all=True, text=s)
        m = _K_OP.match(s)
        if not m:
            raise ValueError(bad)
        op, n = m.group(1) or "==", int(m.group(2))
        return {"<=": KRange(lo=0, hi=n, text=s), "<": KRange(lo=0, hi=n - 1, ints=n > 0, text=s),
                ">=": KRange(lo=n, all=True, text=s), ">": KRange(lo=n + 1, all=True, text=s),
                "==": KRange(lo=n, hi=n, text=s), "=": KRange(lo=n, hi=n, text=s)}[op]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = value
        if isinstance(lo, bool) or not isinstance(lo, int) or lo < 0:
            raise ValueError(bad)
        if hi == "all":
            return KRange(lo=lo, all=True, text=f"[{lo}, all]")
        if isinstance(hi, bool) or not isinstance(hi, int) or hi < lo:
            raise ValueError(bad + f"; got lo={lo!r}, hi={hi!r}")
        return KRange(lo=lo, hi=hi, text=f"[{lo}, {hi}]")
    raise ValueError(bad)


class TaskFilter(BaseModel):
    """Tasks by their setting and/or suite (both must match when both are given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    setting: list[Setting] | None = None
    suite: list[str] | None = None

    @field_validator("setting", "suite", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _something(self) -> TaskFilter:
        if not self.setting and not self.suite:
            raise ValueError("a task filter needs `setting` and/or `suite` (or use tasks: '*' for every task)")
        return self

    def matches(self, setting: str, suite: str) -> bool:
        return (not self.setting or setting in self.setting) and (not self.suite or suite in self.suite)

    @property
    def label(self) -> str:
        parts = ([f"setting {' or '.join(self.setting)}"] if self.setting else []) + (
            [f"suite {' or '.join(self.suite)}"] if self.suite else [])
        return ", ".join(parts)


def _task_filter(v: dict) -> TaskFilter:
    """{setting: ..., suite: ...} with one clear message per mistake (not pydantic's union of three shapes)."""
    extra = sorted(set(map(str, v)) - {"setting", "suite"})
    if extra:
        raise ValueError(f"a task filter takes `setting` and/or `suite`, not {', '.join(extra)}")
    settings = list(get_args(Setting))
    for key in ("setting", "suite"):
        vals = v.get(key)
        vals = [vals] if isinstance(vals, str) else vals
        if vals is not None and not (isinstance(vals, list) and all(isinstance(x, str) and x for x in vals)):
            raise ValueError(f"{key} {v.get(key)!r} should be a name or a list of names")
        if key == "setting":
            for x in vals or []:
                if x not in settings:
                    close = difflib.get_close_matches(x, settings, n=1, cutoff=0.5)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"{x!r} is not a setting.{hint} Settings: {', '.join(settings)}")
    return TaskFilter.model_validate(v)


class PaperNumber(BaseModel):
    """The paper's own accuracies (in %, as printed) for one task and K; None where not transcribed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    k: Union[int, Literal["all"]]
    a: float | None = Field(None, ge=0, le=100)
    b: float | None = Field(None, ge=0, le=100)


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    relation: Literal[">", "<", "≈"]
    margin: float | None = Field(None, description="accuracy points; required for '≈'")
    k: KRange
    tasks: Union[Literal["*"], list[str], TaskFilter] = "*"
    params: Literal["<", ">"] | None = None  # A's trainable parameters fewer / more than B's
    paper: list[PaperNumber] = []

    @field_validator("relation", mode="before")
    @classmethod
    def _relation(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip() in RELATION_ALIASES:
            return RELATION_ALIASES[v.strip()]
        raise ValueError(f"{v!r} is not a relation: use '>' (A better), '<' (A worse) or '≈' (also '~': within "
                         "±margin accuracy points)")

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v: Any) -> Any:
        return v if isinstance(v, KRange) else parse_k(v)

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, v: Any) -> Any:
        if v == "*" or isinstance(v, TaskFilter):
            return v
        if isinstance(v, dict):
            return _task_filter(v)
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and v and all(isinstance(t, str) and t for t in v):
            return v
        raise ValueError(f"{v!r}: tasks is '*' (every task), a list of task names, or a filter such as "
                         "{setting: covariate_shift} or {suite: paper}")

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0 < v <= 100):
            raise ValueError(f"margin {v} must be a number of accuracy points in (0, 100]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Comparison:
        if self.relation == "≈" and self.margin is None:
            raise ValueError("relation '≈' needs a margin in accuracy points (e.g. margin: 1.0): how close is close")
        if self.relation != "≈" and self.margin is not None:
            raise ValueError(f"margin is only for relation '≈'; '{self.relation}' compares with zero")
        if self.a == self.b:
            raise ValueError(f"a and b are both {self.a!r}: a comparison needs two methods")
        from lorabench.method import METHODS

        names = METHODS.names()
        for side, name in (("a", self.a), ("b", self.b)):
            if name not in names:
                close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"{side}: unknown method {name!r}.{hint} Registered methods: {', '.join(names)}")
        return self

    @property
    def label(self) -> str:
        rel = f"≈ (±{self.margin:g} pts)" if self.relation == "≈" else self.relation
        return f"{self.a} {rel} {self.b}"

    @property
    def tasks_label(self) -> str:
        if self.tasks == "*":
            return "every task"
        return ", ".join(self.tasks) if isinstance(self.tasks, list) else self.tasks.label


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=ID_PATTERN)
    text: str = Field(min_length=1)
    source: str = ""
    note: str = ""
    comparisons: list[Comparison] = Field(min_length=1)


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str = ""
    citation: str = ""
    claims: list[Claim] = Field(min_length=1)


class LoadedClaim(BaseModel):
    claim: Claim
    file: str  # where it came from, as given
    title: str = ""
    citation: str = ""


# --- reading files -------------------------------------------------------------------------------


def _where(loc: tuple, raw: Any) -> str:
    """claims[2].comparisons[0].relation, with the claim's id when the file gives one."""
    out, node = "", raw
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if i == 1 and loc[0] == "claims" and isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" (id {node['id']!r})"
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("function-after", "function-before"):
            out += ("." if out else "") + part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _messages(exc: ValidationError, raw: Any) -> list[str]:
    seen, out = set(), []
    for e in exc.errors():
        where = _where(tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in (
            "str", "list[str]", "TaskFilter", "literal['*']")))), raw)
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (allowed: see the format at the top of lorabench/leaderboard/claims/paper.yaml)"
        key = (where, msg)
        if key not in seen:
            seen.add(key)
            out.append(f"{where}: {msg}")
    return out


def load_claims_file(path: str | Path) -> list[LoadedClaim]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"--claims {path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"--claims {path}: cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"Claims file {path}: not valid YAML{at} ({problem}).") from None
    if not isinstance(raw, dict):
        raise SpecError(f"Claims file {path}: expected a mapping with a `claims:` list at the top level, got "
                        f"{type(raw).__name__ if raw is not None else 'an empty file'}.")
    try:
        parsed = ClaimsFile.model_validate(raw)
    except ValidationError as exc:
        msgs = _messages(exc, raw)
        more = f" (and {len(msgs) - 5} more)" if len(msgs) > 5 else ""
        raise SpecError(f"Claims file {path} does not validate: " + "; ".join(msgs[:5]) + more + ".") from None
    ids = [c.id for c in parsed.claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SpecError(f"Claims file {path}: claim id(s) {', '.join(map(repr, dup))} appear more than once; "
                        "each claim needs its own id.")
    return [LoadedClaim(claim=c, file=str(path), title=parsed.title, citation=parsed.citation) for c in parsed.claims]


def load_claims(files: Iterable[str | Path] = (), include_paper: bool = True) -> list[LoadedClaim]:
    """The paper's claims (shipped with the package) followed by each file's, ids unique over all of them."""
    out: list[LoadedClaim] = []
    paths = ([PAPER_CLAIMS] if include_paper else []) + [Path(f) for f in files]
    seen: dict[str, str] = {}
    for path in dict.fromkeys(paths):  # a file given twice is read once
        for lc in load_claims_file(path):
            if lc.claim.id in seen:
                raise SpecError(f"Claims file {path}: claim id {lc.claim.id!r} is already used in {seen[lc.claim.id]}; "
                                "give it another id.")
            seen[lc.claim.id] = str(path)
            out.append(lc)
    return out


# --- evaluation ----------------------------------------------------------------------------------


class ClaimRow(BaseModel):
    """One comparison of one claim on one task, backbone and K."""

    comparison: int  # index in the claim's comparisons
    label: str  # "uniform_composition > full_finetune"
    a: str
    b: str
    relation: str
    margin: float | None = None
    task: str
    task_file: str | None = None  # its page on the site, if it has one
    backbone: str = ""
    k: str
    variant: str = ""  # which configurations, when a method was run more than one way
    verdict: str = NOT_RUN
    why: str = ""
    n: int = 0
    seeds: list[int] = []
    dropped: dict[int, str] = {}
    mean_diff: float | None = None  # A - B, accuracy fraction
    sd_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    seeds_needed: int | None = None
    seeds_needed_note: str = ""
    params_a: list[int] = []
    params_b: list[int] = []
    params_ok: bool | None = None  # the claim's `params` relation holds (None: not asked, or not run)
    paper_a: float | None = None  # the paper's numbers (%), where transcribed
    paper_b: float | None = None
    paper_backbone: str = ""  # the backbone the paper's numbers are on (never ours)


class ClaimPooled(BaseModel):
    """One comparison of a claim over all its strata (task, backbone, K): the pooled paired effect
    (`lorabench.stats.pool_effects`), its verdict, the heterogeneity between strata and the forest plot."""

    comparison: int
    label: str
    verdict: str = NOT_RUN
    why: str = ""
    strata: int = 0
    tasks: list[str] = []
    seeds: int = 0  # seed pairs over the pooled strata
    mean_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    tau2: float | None = None
    i2: float | None = None
    q_pvalue: float | None = None
    left_out: list[str] = []  # strata that were run but cannot be pooled, and why
    forest: dict[str, Any] = {}


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


def decide(c: PairedComparison, relation: str, margin: float | None = None) -> tuple[str, str]:
    """The verdict for `A relation B` from the paired comparison A - B, and why in words.
    `margin` is in accuracy points (fraction * 100), as the claims file gives it."""
    if c.n < 2 or c.ci is None:
        return UNDECIDED, (f"{c.n} seed(s) run by both: too few for an interval (n ≥ 2 needed)")
    return decide_interval(c.ci, relation, margin)


def decide_interval(interval: tuple[float, float], relation: str, margin: float | None = None) -> tuple[str, str]:
    """The verdict for `A relation B` from a 95% interval of A - B (one stratum's, or a claim's pooled one)."""
    lo, hi = interval
    ci = f"95% CI [{pts(lo)}, {pts(hi)}] pts"
    if relation == ">":
        if lo > 0:
            return SUPPORTED, f"{ci} lies above 0"
        if hi < 0:
            return CONTRADICTED, f"{ci} lies below 0: B is better"
        return UNDECIDED, f"{ci} holds 0"
    if relation == "<":
        if hi < 0:
            return SUPPORTED, f"{ci} lies below 0"
        if lo > 0:
            return CONTRADICTED, f"{ci} lies above 0: A is better"
        return UNDECIDED, f"{ci} holds 0"
    if relation == "≈":
        if margin is None:
            raise ValueError("relation '≈' needs a margin")
        m = margin / 100
        band = f"[−{margin:g}, +{margin:g}]"
        if -m <= lo and hi <= m:
            return SUPPORTED, f"{ci} lies within {band}"
        if lo > m or hi < -m:
            return CONTRADICTED, f"{ci} lies entirely outside {band}"
        return UNDECIDED, f"{ci} overlaps the edge of {band}"
    raise ValueError(f"unknown relation {relation!r}")


def pool_comparison(index: int, comp: Comparison, rows: list[ClaimRow]) -> ClaimPooled:
    """Pool one comparison's strata: every row with an interval (≥ 2 seeds) and a single configuration per side."""
    run = [r for r in rows if r.verdict != NOT_RUN]
    usable = [r for r in run if r.n >= 2 and r.sd_diff is not None and r.mean_diff is not None and not r.variant]
    left_out = [f"{r.task} K={r.k}: " + ("several configurations" if r.variant else "fewer than 2 seeds")
                for r in run if r not in usable]
    out = ClaimPooled(comparison=index, label=comp.label, left_out=left_out, strata=len(usable),
                      tasks=sorted({r.task for r in usable}), seeds=sum(r.n for r in usable))
    if not usable:
        out.verdict = NOT_RUN if not run else UNDECIDED
        out.why = "no stratum has both methods" if not run else "no stratum has an interval to pool"
        return out
    multi_backbone = len({r.backbone for r in usable}) > 1
    label = {id(r): f"{r.task}{f' ({r.backbone})' if multi_backbone else ''}, K={r.k}" for r in usable}
    if len(usable) == 1:
        r = usable[0]
        out.mean_diff, out.ci_low, out.ci_high, out.verdict = r.mean_diff, r.ci_low, r.ci_high, r.verdict
        out.why = f"one stratum ({label[id(r)]}): its own paired interval; nothing to pool"
        weights = [1.0]
    else:
        p = pool_effects([r.mean_diff for r in usable], [r.sd_diff ** 2 / r.n for r in usable])
        out.mean_diff, out.ci_low, out.ci_high = p.mean, p.ci_low, p.ci_high
        out.tau2, out.i2, out.q_pvalue = p.tau2, p.i2, p.q_pvalue
        out.verdict, why = decide_interval(p.ci, comp.relation, comp.margin)
        out.why = (f"{why}; random effects over {p.k} strata ({len(out.tasks)} task(s), {out.seeds} seed pairs), "
                   f"HKSJ interval on t({p.k - 1}); τ² = {1e4 * p.tau2:.2f} pts², I² = {100 * p.i2:.0f}%")
        weights = p.weights
    strata = [{"label": label[id(r)], "task": r.task, "k": r.k, "mean": r.mean_diff, "ci_low": r.ci_low,
               "ci_high": r.ci_high, "weight": w} for r, w in zip(usable, weights)]
    pooled = ({"mean": out.mean_diff, "ci_low": out.ci_low, "ci_high": out.ci_high}
              if len(usable) > 1 else None)
    out.forest = forest_plot(strata, pooled, comp.margin if comp.relation == "≈" else None)
    return out


def seeds_to_decide(c: PairedComparison, relation: str, margin: float | None = None) -> tuple[int | None, str]:
    """Seeds a paired t-test (alpha 0.05, power 0.8) needs at the observed mean difference and spread, for
    the distance between the mean and the boundary the interval has to clear."""
    if c.n < 2 or c.mean_diff is None or c.sd_diff is None:
        return None, "needs ≥ 2 seeds run by both to estimate the spread"
    mean = c.mean_diff
    if relation == "≈":
        dist = abs(abs(mean) - (margin or 0) / 100)
        what = f"the ±{margin:g} pts band"
    else:
        dist, what = abs(mean), "0"
    if dist < 1e-12:
        return None, f"the mean difference sits on {what}: no number of seeds decides it"
    n = seeds_needed(dist, c.sd_diff)
    if n is None:
        return None, "more than 100,000 seeds at this effect and spread"
    return n, (f"paired t-test, α = 0.05, 80% power, for a mean {pts(mean)} pts {pts(dist, signed=False)} pts "
               f"from {what} with per-seed sd {pts(c.sd_diff, signed=False)} pts")


def _variants(recs: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """Records of one method on one (task, backbone), split by configuration (never mixed)."""
    out: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in recs:
        out[json.dumps(variant_of(r), sort_keys=True, default=str)].append(r)
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


def _evaluate_comparison(ci: int, comp: Comparison, by_task: dict[str, list[ResultRecord]],
                         task_files: dict[str, str], claim_file: str, claim_id: str) -> tuple[list[ClaimRow], set[str]]:
    rows: list[ClaimRow] = []
    skipped: set[str] = set()
    if isinstance(comp.tasks, list):
        known = set(_known_tasks()) | set(by_task)
        for t in comp.tasks:
            if t not in known:
                close = difflib.get_close_matches(t, sorted(known), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise SpecError(f"Claims file {claim_file}: claim {claim_id!r}, comparisons[{ci}].tasks: unknown task "
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
                rows += _rows_for_cell(ci, comp, task, task_files.get(task), backbone, k, ra, rb)
    return rows, skipped


def _rows_for_cell(ci: int, comp: Comparison, task: str, task_file: str | None, backbone: str, k: str,
                   ra: list[ResultRecord], rb: list[ResultRecord]) -> list[ClaimRow]:
    base = dict(comparison=ci, label=comp.label, a=comp.a, b=comp.b, relation=comp.relation, margin=comp.margin,
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


def file_label(file: str) -> str:
    """The shipped paper claims by their place in the package; other files as given on the command line."""
    return "lorabench/leaderboard/claims/paper.yaml (built in)" if Path(file) == PAPER_CLAIMS else file


def render_claims_page(env, report: ClaimsReport, pages: list, meta: dict[str, Any]) -> str:
    """claims.html, in the site's jinja environment (same base template, nav and footer as the task pages)."""
    env.filters.setdefault("pts", pts)
    return env.get_template("claims.html").render(report=report, verdicts=VERDICTS, pages=pages, meta=meta,
                                                  on_claims_page=True)
