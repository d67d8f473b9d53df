"""Result records on disk: one JSON per cell, written atomically, read back validated.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target, so a
reader (or a re-run after a kill) sees either the whole record or none of it. A file at a record's path
that does not validate is never overwritten: `record_state` tells it apart, and `move_aside` keeps it
under another name; a record of a newer schema is left alone. Only regular files are ever opened, so a
FIFO or a folder named `*.json` cannot hang or break a reader.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import ValidationError

from lorabench.specs import ResultRecord, k_order

R = TypeVar("R")  # a record: ResultRecord, or anything with `seed` and `created_at`

SCHEMA_VERSION = ResultRecord.model_fields["schema_version"].default
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """`text` at `path` whole or not at all: a temp file in the same folder, fsync, rename (records, pages)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a record is for everyone who may read the folder
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(record: ResultRecord, path: Path) -> None:
    write_json_atomic(path, record.model_dump(mode="json"))


def read_result(path: Path) -> ResultRecord | None:
    """The record at `path`, or None if it is missing, not a regular file or not a valid record."""
    try:
        if not Path(path).is_file():
            return None
        return ResultRecord.model_validate_json(Path(path).read_text())
    except (OSError, ValueError, ValidationError):
        return None


RecordState = Literal["missing", "done", "invalid", "newer"]


def record_state(path: Path) -> RecordState:
    """missing; done (a valid record); newer (written by a newer schema: leave it alone); invalid."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return "missing"
    if read_result(path) is not None:
        return "done"
    try:
        version = json.loads(path.read_text()).get("schema_version") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        version = None
    return "newer" if isinstance(version, int) and version > SCHEMA_VERSION else "invalid"


def move_aside(path: Path) -> Path:
    """Rename a file that does not validate to `<name>.invalid-<UTC time>` (not *.json: no reader lists it)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = Path(path).with_name(f"{Path(path).name}.invalid-{stamp}")
    os.replace(path, target)
    return target


def runs_by_seed(records: Iterable[R]) -> dict[int, list[R]]:
    """Each seed's records, oldest first, by seed: the last of a seed is the one a task table shows and a
    comparison pairs (a seed run more than once keeps its latest record)."""
    out: dict[int, list[R]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.created_at):
        out[r.seed].append(r)
    return dict(sorted(out.items()))


def load_results(results_dir: str | os.PathLike) -> tuple[list[ResultRecord], list[Path]]:
    """Every valid record under `results_dir`, plus the paths of files that did not validate."""
    records, bad = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if "_tuning" in path.relative_to(Path(results_dir)).parts:  # hyperparameter selections, not records
            continue
        if path.is_dir():
            continue
        if not path.is_file():  # FIFO, socket, dangling link: never opened
            bad.append(path)
            continue
        rec = read_result(path)
        (records.append(rec) if rec is not None else bad.append(path))
    return records, bad


METRIC_RANGES = {"accuracy": (0.0, 1.0)}


def record_problem(rec: ResultRecord) -> str | None:
    """Why a record's numbers mean nothing (None if they are fine): the grid writes no such record and the
    leaderboard leaves one out, saying why. Pydantic reads NaN and Infinity from JSON as floats, and one
    such value (or a -3.5 accuracy) would poison every mean it enters."""
    if rec.n_test < 1:
        return f"n_test {rec.n_test} is not a positive number of test examples (an empty test split)"
    if rec.metric not in METRIC_RANGES:
        return f"metric {rec.metric!r} is not one the leaderboard can show ({', '.join(METRIC_RANGES)})"
    lo, hi = METRIC_RANGES[rec.metric]
    if not (np.isfinite(rec.value) and lo <= rec.value <= hi):
        return f"value {rec.value} is not a finite {rec.metric} in [{lo:g}, {hi:g}]"
    for field in ("n_support", "trainable_params", "head_params"):
        if getattr(rec, field) < 0:
            return f"{field} {getattr(rec, field)} is negative"
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
