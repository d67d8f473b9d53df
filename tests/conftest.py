"""Shared fixtures: a quick digits task (tiny images, few steps) and the real offline data pack."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LORABENCH_DATA") or REPO.parent / "shared" / "data")

QUICK_TASK = {
    "name": "digits_quick",
    "suite": "tests",
    "setting": "label_shift",
    "backbone": "efficientnet_lite0",
    "upstream": [
        {"name": f"digits_{a}{b}", "train": {"name": "sklearn_digits", "split": "all", "builtin": True,
                                              "classes": [a, b], "holdout": {"test_fraction": 0.3, "part": "train"}}}
        for a, b in [(0, 1), (2, 3)]
    ],
    "downstream": {
        "name": "digits_89",
        "train": {"name": "sklearn_digits", "split": "all", "builtin": True, "classes": [8, 9],
                  "holdout": {"test_fraction": 0.3, "part": "train"}},
        "test": {"name": "sklearn_digits", "split": "all", "builtin": True, "classes": [8, 9],
                 "holdout": {"test_fraction": 0.3, "part": "test"}},
    },
    "k_grid": [1, 5],
    "seeds": [0, 1],
    "preprocessing": {"image_size": 32},
    # A tiny recipe of its own (the smoke profile's rule would give the same order of size).
    "recipe": {"head_epochs": 20, "epochs": 2, "min_steps": 2, "max_steps": 6, "feature_views": 2},
    "upstream_training": {"epochs": 1, "max_steps": 8, "probe_epochs": 5},
}


@pytest.fixture(scope="session")
def quick_task(tmp_path_factory) -> str:
    """Registers `digits_quick` through LORABENCH_TASKS for this process and its subprocesses."""
    with registered_task(tmp_path_factory.mktemp("tasks"), QUICK_TASK) as name:
        yield name


@contextmanager
def registered_task(folder: Path, spec: dict):
    """Write `spec` as a YAML task into `folder` and put the folder on LORABENCH_TASKS while in the block."""
    (folder / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    old = os.environ.get("LORABENCH_TASKS")
    os.environ["LORABENCH_TASKS"] = os.pathsep.join(p for p in (old, str(folder)) if p)
    try:
        yield spec["name"]
    finally:
        if old is None:
            os.environ.pop("LORABENCH_TASKS", None)
        else:
            os.environ["LORABENCH_TASKS"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"the offline data pack is not at {SHARED_DATA} (set LORABENCH_DATA)")
    return SHARED_DATA
