"""Deterministic K-shot sampling, stable holdouts, and the local-data loader on real Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from lorabench.data import load_examples, sample_support, stratified_partition
from lorabench.errors import ConfigError, DataNotFoundError
from lorabench.specs import DatasetRef, Holdout

LABELS = np.repeat(np.arange(4), [10, 7, 12, 9])


def test_support_is_k_per_class_and_deterministic():
    a = sample_support(LABELS, 5, seed=123)
    b = sample_support(LABELS, 5, seed=123)
    c = sample_support(LABELS, 5, seed=124)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(LABELS[a]).tolist() == [5, 5, 5, 5]
    assert len(set(a.tolist())) == len(a)


def test_support_all_total_and_errors():
    assert np.array_equal(sample_support(LABELS, "all", 0), np.arange(len(LABELS)))
    assert len(sample_support(LABELS, 0, 0)) == 0
    total = sample_support(LABELS, 3, 7, per_class=False)
    assert len(total) == 3 and np.array_equal(total, sample_support(LABELS, 3, 7, per_class=False))
    with pytest.raises(ConfigError, match=r"class 1 has only 7 .* K <= 7"):
        sample_support(LABELS, 8, 0)
    with pytest.raises(ConfigError, match="larger than the 38"):
        sample_support(LABELS, 39, 0, per_class=False)


def test_stratified_partition_is_stable_disjoint_and_complete():
    tr1, te1 = stratified_partition(LABELS, 0.3, seed=0)
    tr2, te2 = stratified_partition(LABELS, 0.3, seed=0)
    assert np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
    assert not set(tr1) & set(te1)
    assert sorted([*tr1, *te1]) == list(range(len(LABELS)))
    assert np.bincount(LABELS[te1]).tolist() == [3, 2, 4, 3]  # round(n * 0.3) per class


def test_builtin_digits_class_subset_and_holdout():
    train = load_examples(DatasetRef(name="sklearn_digits", split="all", builtin=True, classes=[8, 9],
                                     holdout=Holdout(test_fraction=0.3, part="train")))
    test = load_examples(DatasetRef(name="sklearn_digits", split="all", builtin=True, classes=[8, 9],
                                    holdout=Holdout(test_fraction=0.3, part="test")))
    assert train.class_names == ["8", "9"] and set(train.labels) == {0, 1}
    # sklearn has 174 eights and 180 nines: 70/30 per class
    assert len(train.labels) + len(test.labels) == 174 + 180
    assert np.bincount(test.labels).tolist() == [round(174 * 0.3), round(180 * 0.3)]


def test_local_parquet_loader_on_real_data(shared_data):
    ref = DatasetRef(name="sign_digits", split="test", classes=["3", "7"])
    ex = load_examples(ref, shared_data)
    raw = pq.read_table(shared_data / "sign_digits" / "test.parquet").column("label").to_numpy()
    assert ex.class_names == ["3", "7"]
    assert np.bincount(ex.labels).tolist() == [int((raw == 3).sum()), int((raw == 7).sum())]
    img = ex.dataset[0]["image"]
    assert img.size == (64, 64)  # decoded by datasets' Image feature


def test_pacs_by_class_name(shared_data):
    ex = load_examples(DatasetRef(name="pacs", split="sketch", classes=["horse", "dog"]), shared_data)
    raw = pq.read_table(shared_data / "pacs" / "sketch.parquet").column("label").to_numpy()
    names = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert ex.class_names == ["horse", "dog"]
    assert np.bincount(ex.labels).tolist() == [int((raw == names.index("horse")).sum()), int((raw == 0).sum())]


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("LORABENCH_DATA", raising=False)
    ref = DatasetRef(name="not_here", split="train")
    with pytest.raises(DataNotFoundError) as err:
        load_examples(ref, tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "not_here" / "train.parquet") in msg and "no hub id" in msg and "--data-dir" in msg
    with pytest.raises(DataNotFoundError, match="neither --data-dir nor"):
        load_examples(ref, None)
    with pytest.raises(ConfigError, match="no class 'cat'"):
        load_examples(DatasetRef(name="sklearn_digits", split="all", builtin=True, classes=["cat"]))


def test_class_patterns_select_whole_omniglot_alphabets(shared_data):
    """The library suite's Omniglot modules: one fnmatch pattern per alphabet; the 8 partition the 242 characters."""
    from lorabench.task_registry import get_task

    groups = [u.train for u in get_task("library_sign_digits_n143").upstream if u.name.startswith("omniglot_")]
    full = load_examples(DatasetRef(name="omniglot_small", split="train"), shared_data)
    seen = []
    for ref in groups:
        ex = load_examples(ref.model_copy(update={"max_examples": None}), shared_data)
        alphabet = ref.classes[0].removesuffix("/*")
        assert ex.class_names == sorted(n for n in full.class_names if n.split("/")[0] == alphabet)
        assert len(ex.labels) == 15 * len(ex.class_names)  # 15 drawers of each character in the train split
        capped = load_examples(ref, shared_data)
        # the cap is stratified (rounded per class), so it lands within one image per class of 300
        n_cap = len(capped.labels)
        assert (n_cap == len(ex.labels) if len(ex.labels) <= 300 else abs(n_cap - 300) <= len(ex.class_names)), n_cap
        assert set(capped.labels) == set(range(len(ex.class_names)))
        seen += ex.class_names
    assert sorted(seen) == full.class_names and len(seen) == 242
    with pytest.raises(ConfigError, match="no class matching 'Klingon/\\*'"):
        load_examples(DatasetRef(name="omniglot_small", split="train", classes=["Klingon/*"]), shared_data)
    with pytest.raises(ConfigError, match="more than once"):
        load_examples(DatasetRef(name="omniglot_small", split="train", classes=["Greek/*", "Greek/character01"]),
                      shared_data)
