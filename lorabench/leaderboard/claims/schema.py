"""The claims file format (pydantic): claims, their comparisons {a, b, relation, margin, k, tasks, params,
paper}, K ranges and task filters. A claim file is validated against these models when it is read."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lorabench.specs import Setting

RELATION_ALIASES = {">": ">", "<": "<", "≈": "≈", "~": "≈", "~=": "≈", "approx": "≈"}
_K_OP = re.compile(r"^\s*(<=|>=|==|<|>|=)?\s*(\d+)\s*$")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


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
