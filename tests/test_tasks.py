"""The task suites: every YAML validates, class splits are what the paper says, PACS hold-outs are fixed.

Checks that need the offline data pack (../shared/data) skip cleanly without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lorabench.data import HUB_FORMATS, load_examples, sample_support
from lorabench.seeding import derive_seed
from lorabench.task_registry import all_tasks, get_task, load_task_specs

REPO = Path(__file__).resolve().parents[1]
TASK_FILES = sorted(p for p in (REPO / "lorabench" / "tasks").glob("*.yaml") if not p.name.startswith("_"))  # _*.yaml: bases
PAPER_K = {"label_shift": [1, 2, 5, 10, 20, 50, "all"], "covariate_shift": [1, 5, 10, 50, 100, "all"],
           "task_shift": [1, 2, 5, 10, 20, 50, "all"], "multiple_choice": [0, 1, 2, 3, 4, 5]}


def _classes(ref) -> set[int]:
    return set(ref.classes)


# --- every spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.stem)
def test_every_yaml_validates_with_metadata(path):
    for spec, _ in load_task_specs(path):  # one task, or one per entry of a sweep file
        assert spec.seeds == list(range(10)) and spec.seeds_many_shot == [0, 1, 2]  # the benchmark's standard
        assert spec.metadata.description and spec.metadata.license != "unknown" and spec.metadata.citation
        refs = [u.train for u in spec.upstream] + [spec.downstream.train, spec.downstream.test]
        for ref in refs:
            assert ref.builtin or ref.hub_id or spec.suite.startswith("offline"), f"{ref.name}: no source online"
            assert ref.hub_format is None or ref.hub_format in HUB_FORMATS
        if spec.suite.startswith("paper"):  # the paper's settings: hub data, full upstream pools
            assert all(r.hub_id and r.max_examples is None for r in refs)
        if spec.modality == "multiple_choice":
            assert spec.k_grid == PAPER_K["multiple_choice"] and spec.backbone in ("minilm", "flan_t5_large")


def test_registry_lists_every_setting_of_the_paper():
    tasks = all_tasks()
    main = ["split_cifar100", "split_cifar10", "pacs_art_painting", "pacs_sketch", "pacs_art_painting_vit_b32",
            "pacs_sketch_vit_b32", "stanford_cars", "food101", "sun397", "eurosat", "flowers102", "cifar100",
            "loo_cifar10", "loo_fashion_mnist", "loo_mnist5k", "loo_sign_digits", "loo_pacs_photo", "arc_challenge",
            "arc_challenge_flan_t5"]
    assert not set(main) - set(tasks)
    for name in main:
        spec = tasks[name]
        key = "multiple_choice" if spec.modality == "multiple_choice" else spec.setting
        # Grids are the paper's, minus K values larger than a class of the pool (named in the description).
        assert set(spec.k_grid) <= set(PAPER_K[key])
        dropped = set(PAPER_K[key]) - set(spec.k_grid)
        assert not dropped or "left out" in spec.metadata.description, name
    sweeps = {t.tags["sweep"] for t in tasks.values() if "sweep" in t.tags}
    assert sweeps == {"n_upstream", "split_size", "entangled", "rank"}


def test_tags_match_what_each_sweep_changes():
    for spec in all_tasks().values():
        sweep = spec.tags.get("sweep")
        if sweep in ("n_upstream", "split_size"):
            assert len(spec.upstream) == spec.tags["n_upstream"]
        if sweep == "split_size":
            assert all(len(u.train.classes) == spec.tags["split_size"] for u in spec.upstream)
        if sweep == "rank":
            r = spec.tags["rank"]
            assert spec.upstream_training.rank == r == spec.hparams["lora"]["rank"]
        if sweep == "entangled":
            down = _classes(spec.downstream.train)
            assert all(len(_classes(u.train) & down) == spec.tags["shared_classes"] for u in spec.upstream)


# --- class splits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n_classes", [("split_cifar100", 100), ("split_cifar10", 10)])
def test_label_shift_splits_are_disjoint_and_cover_the_label_set(name, n_classes):
    spec = get_task(name)
    splits = [_classes(u.train) for u in spec.upstream] + [_classes(spec.downstream.train)]
    assert sum(len(s) for s in splits) == len(set().union(*splits)) == n_classes  # disjoint, complete
    assert len({len(s) for s in splits}) == 1  # equal sizes: 25 / 2 classes
    assert spec.downstream.train.classes == spec.downstream.test.classes


def test_split_size_sweep_partitions_the_other_75_classes():
    down = _classes(get_task("split_cifar100").downstream.train)
    for n in (1, 3, 5, 15, 25):
        spec = get_task(f"split_cifar100_n{n}")
        ups = [_classes(u.train) for u in spec.upstream]
        assert len(ups) == n and all(len(u) == 75 // n for u in ups)
        assert set().union(*ups) == set(range(100)) - down and sum(map(len, ups)) == 75
        assert _classes(spec.downstream.train) == down


def test_shift_tasks_keep_downstream_out_of_upstream():
    tasks = all_tasks()
    for spec in tasks.values():
        if spec.setting == "covariate_shift":  # other PACS domains, never the downstream one
            domains = {u.train.split for u in spec.upstream}
            assert spec.downstream.train.split not in domains and len(domains) == 3
        if spec.setting == "task_shift":
            ups = {(u.train.name, u.train.split if u.train.name == "pacs" else "") for u in spec.upstream}
            down = spec.downstream.train
            assert (down.name, down.split if down.name == "pacs" else "") not in ups
    # Fig. 5: the N-subsets are nested subsets of the full upstream set
    for down in ("food101", "cifar100"):
        full = [u.name for u in tasks[down].upstream]
        subsets = [[u.name for u in tasks[f"{down}_n{n}"].upstream] for n in range(1, 5)]
        assert all(set(s) <= set(full) for s in subsets)
        assert all(subsets[i] == subsets[i + 1][: i + 1] for i in range(3))


# --- on the real data -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pacs_art_painting", "pacs_sketch", "loo_pacs_photo", "loo_sign_digits"])
def test_offline_k_grids_can_be_drawn(name, shared_data):
    spec = get_task(name)
    labels = load_examples(spec.downstream.train, shared_data).labels
    biggest = max(k for k in spec.k_grid if k != "all")
    assert biggest <= np.bincount(labels).min()


def _paths(ex) -> np.ndarray:
    return np.asarray([img["path"] for img in ex.dataset.cast_column("image", _undecoded())["image"]])


def _undecoded():
    import datasets

    return datasets.Image(decode=False)


@pytest.mark.parametrize("name", ["pacs_art_painting", "pacs_sketch"])
def test_pacs_holdout_is_fixed_disjoint_and_stratified(name, shared_data):
    spec = get_task(name)
    train, test = load_examples(spec.downstream.train, shared_data), load_examples(spec.downstream.test, shared_data)
    train_paths, test_paths = _paths(train), _paths(test)
    domain = pq.read_table(shared_data / "pacs" / f"{spec.downstream.train.split}.parquet", columns=["image", "label"])
    raw_labels = domain.column("label").to_numpy()
    raw_paths = [img["path"] for img in domain.column("image").to_pylist()]
    # a partition of the whole domain, 30% of every class held out
    assert not set(train_paths) & set(test_paths)
    assert sorted([*train_paths, *test_paths]) == sorted(raw_paths)
    frac = spec.downstream.test.holdout.test_fraction
    assert np.bincount(test.labels).tolist() == [round(n * frac) for n in np.bincount(raw_labels)]
    # support sets, drawn as the evaluator draws them, come from the train part only
    for k in [k for k in spec.k_grid if k != "all"]:
        for seed in spec.seeds:
            idx = sample_support(train.labels, k, derive_seed(spec.name, k, seed, "support"))
            assert not set(train_paths[idx]) & set(test_paths)
    # the same held-out images in a fresh process (a new run)
    code = ("import json,sys; from lorabench.data import load_examples; from lorabench.task_registry import get_task; "
            "import datasets; t=get_task(sys.argv[1]); ex=load_examples(t.downstream.test, sys.argv[2]); "
            "print(json.dumps([i['path'] for i in ex.dataset.cast_column('image', datasets.Image(decode=False))['image']]))")
    out = subprocess.run([sys.executable, "-c", code, name, str(shared_data)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == test_paths.tolist()


def test_hub_filter_gives_the_local_domain_split(shared_data):
    """The hub copy of PACS is one split with a `domain` column; filtering it must give the domain."""
    import datasets

    from lorabench.data import _to_local_layout

    parts = [datasets.load_dataset("parquet", data_files=str(shared_data / "pacs" / f"{d}.parquet"), split="train")
             for d in ("photo", "sketch")]
    merged = datasets.concatenate_datasets(parts)  # the hub layout: every domain in one split
    ref = get_task("pacs_sketch").downstream.test
    got = _to_local_layout(merged, ref)
    assert got["label"] == parts[1]["label"] and set(got["domain"]) == {"sketch"}


def test_hub_only_task_fails_offline_saying_where_it_looked(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("LORABENCH_DATA", None)
    cmd = [sys.executable, "-m", "lorabench.cli", "run", "--method", "classifier_tuning", "--task", "food101",
           "--backbone", "efficientnet_lite0", "--k", "1", "--seeds", "0", "--data-dir", str(tmp_path / "data"),
           "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0
    assert "Traceback" not in text
    assert str(tmp_path / "data" / "food101" / "train.parquet") in text and "'ethz/food101'" in text


def test_paper_backbone_offline_fails_in_one_paragraph_naming_the_weights(tmp_path, quick_task):
    """vit_b32 (the paper's backbone) comes from the hub: offline and uncached, the run says which weights are
    missing and which backbones work offline, instead of a traceback, before any cell runs (exit 2)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "lorabench.cli", "run", "--method", "classifier_tuning", "--task", quick_task,
           "--backbone", "vit_b32", "--k", "1", "--seeds", "0,1", "--results-dir", str(tmp_path / "res"),
           "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2
    assert "Traceback" not in text
    assert text.count("Could not load the pretrained weights 'timm/vit_base_patch32_224.augreg_in21k'") == 1
    assert "--backbone efficientnet_lite0" in text
    assert not list((tmp_path / "res").rglob("*.json"))
