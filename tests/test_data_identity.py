"""Results are tied to the content of their data, not to its name (issue 29, item 1).

A local data file replaced by another of the same name makes every record run on it stale (saying which file
changed) and the adapters trained on it retrain under new store keys; the old records stay on disk, unreused.
"""

from __future__ import annotations

import copy
import json

import datasets
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from conftest import QUICK_TASK, registered_task
from lorabench.data import content_digest, data_key, load_examples
from lorabench.grid import expand_grid, needed_upstream_jobs, run_grid
from lorabench.hashing import digest_file
from lorabench.identity import staleness
from lorabench.leaderboard.rows import split_stale
from lorabench.results import load_results
from lorabench.specs import DatasetRef

METHODS = ["classifier_tuning", "uniform_composition"]


def write_digits(path, changed: bool = False) -> None:
    """scikit-learn's digits as a local Parquet file in the data pack's layout; `changed`: one image inverted."""
    bunch = load_digits()
    images = (bunch.images * 255 / 16).astype(np.uint8)
    if changed:
        images[0] = 255 - images[0]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a, mode="L") for a in images],
                                     "label": bunch.target.tolist()}, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


def local_task(name: str) -> dict:
    """The quick digits task reading a local file (`mydigits/train.parquet`) instead of the builtin copy."""
    spec = copy.deepcopy(QUICK_TASK)
    spec["name"] = name
    for ref in [*(u["train"] for u in spec["upstream"]), spec["downstream"]["train"], spec["downstream"]["test"]]:
        ref.pop("builtin")
        ref["name"], ref["split"] = "mydigits", "train"
    return spec


@pytest.fixture()
def setup(tmp_path):
    data = tmp_path / "data"
    write_digits(data / "mydigits" / "train.parquet")
    with registered_task(tmp_path, local_task("digits_local")) as name:
        yield name, data, tmp_path


def grid(name, data, tmp_path):
    return expand_grid(METHODS, [name], [1], [0], None, data_dir=str(data), results_dir=str(tmp_path / "results"),
                       cache_dir=str(tmp_path / "cache"))


def test_a_replaced_data_file_makes_its_records_stale_and_its_adapters_retrain(setup):
    name, data, tmp_path = setup
    path = data / "mydigits" / "train.parquet"
    first = grid(name, data, tmp_path)
    old_digest = f"sha256:{digest_file(path)}"
    assert all(c.data == {"mydigits/train": old_digest} for c in first)  # every cell names its data's content
    report = run_grid(first)
    assert len(report.done) == 2 and not report.failed
    old_adapters = sorted((tmp_path / "cache" / "adapters").rglob("adapter_config.json"))
    assert len(old_adapters) == 2
    assert [json.loads(p.read_text())["lorabench"]["data_digest"] for p in old_adapters] == [old_digest] * 2
    records = load_results(tmp_path / "results")[0]
    assert all(staleness(r) is None for r in records)

    write_digits(path, changed=True)  # same name, same size class, one image different
    new_digest = f"sha256:{digest_file(path)}"
    assert new_digest != old_digest
    for r in records:  # stale, and the reason names the file and both digests
        why = staleness(r)
        assert why and "data changed" in why and "mydigits/train" in why and old_digest in why and new_digest in why
    current, stale = split_stale(records)
    assert not any(current.values()) and sum(len(v) for v in stale.values()) == 2  # the leaderboard drops them

    second = grid(name, data, tmp_path)
    assert {c.digest for c in second}.isdisjoint({c.digest for c in first})  # new cells, not the old records
    assert len(needed_upstream_jobs(second)) == 2  # both adapters trained on the file: not in the store any more
    trained = []
    report = run_grid(second, on_event=lambda kind, cfg, *rest: trained.append(rest[0]) if kind == "upstream" else None)
    assert sorted(trained) == ["digits_01", "digits_23"] and len(report.done) == 2
    assert all(r.config["data"] == {"mydigits/train": new_digest} for r in report.done)
    after = load_results(tmp_path / "results")[0]
    assert len(after) == 4  # the old records are kept (stale), none overwritten
    assert sum(staleness(r) is None for r in after) == 2
    assert len(sorted((tmp_path / "cache" / "adapters").rglob("adapter_config.json"))) == 4


def test_a_loaded_split_carries_the_digest_of_what_was_read_and_is_reread_when_the_file_changes(tmp_path):
    path = tmp_path / "mydigits" / "train.parquet"
    write_digits(path)
    ref = DatasetRef(name="mydigits", split="train")
    before = load_examples(ref, tmp_path)
    assert before.digest == content_digest(ref, tmp_path) == f"sha256:{digest_file(path)}"
    write_digits(path, changed=True)
    after = load_examples(ref, tmp_path)  # not the process's cached copy of the old file
    assert after.digest != before.digest
    assert np.asarray(after.dataset[0]["image"]).tolist() != np.asarray(before.dataset[0]["image"]).tolist()


def test_data_not_here_to_read_keeps_the_digest_recorded_with_it_and_hub_data_is_named_by_revision(tmp_path):
    ref = DatasetRef(name="gone", split="train", hub_id="someone/gone")
    recorded = {data_key(ref): "sha256:abc"}
    assert content_digest(ref, tmp_path, recorded) == "sha256:abc"  # a record checked on another machine
    assert content_digest(ref, tmp_path) == "hub:someone/gone@main"  # unpinned: the hub's main
    pinned = ref.model_copy(update={"revision": "0123abc"})
    assert content_digest(pinned, tmp_path) == "hub:someone/gone@0123abc"
    assert content_digest(DatasetRef(name="nowhere", split="x"), None) == "missing"
    builtin = DatasetRef(name="sklearn_digits", split="all", builtin=True)
    assert content_digest(builtin, None).startswith("sha256:") and data_key(builtin) == "builtin/sklearn_digits"


def test_a_file_changed_after_the_grid_was_named_writes_no_record_and_adapters_are_keyed_by_what_they_read(setup):
    name, data, tmp_path = setup
    cells = grid(name, data, tmp_path)  # named with the first file's digest
    write_digits(data / "mydigits" / "train.parquet", changed=True)  # ... which changes before any work
    report = run_grid(cells)
    assert not report.done and len(report.failed) == 2
    assert all("changed during the run" in why and "mydigits/train" in why for _, why in report.failed)
    assert not list((tmp_path / "results").rglob("*.json"))
    now = f"sha256:{digest_file(data / 'mydigits' / 'train.parquet')}"  # adapters are keyed when trained: by what
    stored = [json.loads(p.read_text())["lorabench"] for p in (tmp_path / "cache").rglob("adapter_config.json")]
    assert all(meta["data_digest"] == now for meta in stored)  # they read, never by the grid's stale name
