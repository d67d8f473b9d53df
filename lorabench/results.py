"""Result records on disk: one JSON per cell, written atomically, read back validated.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target, so a
reader (or a re-run after a kill) sees either the whole record or none of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from lorabench.specs import ResultRecord


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(record: ResultRecord, path: Path) -> None:
    write_json_atomic(path, record.model_dump(mode="json"))


def read_result(path: Path) -> ResultRecord | None:
    """The record at `path`, or None if it is missing or not a valid record."""
    try:
        return ResultRecord.model_validate_json(Path(path).read_text())
    except (OSError, ValueError, ValidationError):
        return None


def is_done(path: Path) -> bool:
    return read_result(path) is not None


def load_results(results_dir: str | os.PathLike) -> tuple[list[ResultRecord], list[Path]]:
    """Every valid record under `results_dir`, plus the paths of files that did not validate."""
    records, bad = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if "_tuning" in path.relative_to(Path(results_dir)).parts:  # hyperparameter selections, not records
            continue
        rec = read_result(path)
        (records.append(rec) if rec is not None else bad.append(path))
    return records, bad
