"""Datasets through one loader (`datasets`): builtin data, then the local data dir, then the hub.

Also the two pieces of sampling that decide what a method sees: seeded stratified partitions of
single-split datasets (PACS, digits) and K-shot support sets drawn from (task, K, seed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorabench.errors import ConfigError, DataError, DataNotFoundError
from lorabench.hashing import digest_bytes, digest_file
from lorabench.runtime import to_device
from lorabench.seeding import derive_seed
from lorabench.specs import DatasetRef, KValue, Modality
from lorabench.views import resize

DATA_ENV = "LORABENCH_DATA"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir if data_dir else os.environ.get(DATA_ENV)
    return Path(chosen).expanduser().resolve() if chosen else None


# --- builtin data: shipped inside an installed dependency, so the default suite runs offline ----


@lru_cache(maxsize=1)
def _sklearn_digits():
    """scikit-learn's 1,797 digits as a `datasets.Dataset` (built once per process: encoding the images is most
    of a small digits grid's fixed cost; every split of it is a `select` of this one, which copies nothing)."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 values in 0..16 -> 8-bit grayscale images; the backbone resizes them.
    images = [Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L") for img in bunch.images]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    return datasets.Dataset.from_dict({"image": images, "label": bunch.target.tolist()}, features=features)


@lru_cache(maxsize=1)
def _sklearn_digits_digest() -> str:
    """The content of scikit-learn's digits (pixel values and labels as loaded), not of its file: a release
    that recompresses the same data keeps the digest, one that changes a value does not."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    h = hashlib.sha256()
    for arr in (bunch.images, bunch.target):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


BUILTIN_DATASETS = {"sklearn_digits": _sklearn_digits}
BUILTIN_DIGESTS = {"sklearn_digits": _sklearn_digits_digest}


# --- what the data is: a digest of its content, in every identity ------------------------------------


def data_key(ref: DatasetRef) -> str:
    """The file (or builtin, or hub split) a ref reads: several refs of one file (class subsets, holdout parts)
    share its content digest."""
    return f"builtin/{ref.name}" if ref.builtin else f"{ref.name}/{ref.split}"


def content_digest(ref: DatasetRef, data_dir: str | os.PathLike | None, recorded: Mapping[str, str] | None = None
                   ) -> str:
    """What the data a ref loads is, looked up in the loader's order: `sha256:<hex>` of the local Parquet file
    (the digest the data pack's manifest lists) or of a builtin's values, else `hub:<id>[/<config>]@<revision>`
    (the pinned revision; unpinned refs follow the hub's `main`). Where the ref's data is not here to read (a
    record checked on another machine), the digest `recorded` with it is taken as is; failing that, `missing`
    (the grid's checks then say where they looked)."""
    if ref.builtin:
        return f"sha256:{BUILTIN_DIGESTS[ref.name]()}" if ref.name in BUILTIN_DIGESTS else "missing"
    root = resolve_data_dir(data_dir)
    path = root / ref.name / f"{ref.split}.parquet" if root is not None else None
    if path is not None and path.is_file():
        return f"sha256:{digest_file(path)}"
    if recorded and data_key(ref) in recorded:
        return recorded[data_key(ref)]
    if ref.hub_id:
        return f"hub:{ref.hub_id}{'/' + ref.hub_config if ref.hub_config else ''}@{ref.revision or 'main'}"
    return "missing"


# --- loading -------------------------------------------------------------------------------------


_HUB_DOWN: list[str] = []  # set by the first failed connection to the hub in this process


def _load_raw(ref: DatasetRef, data_dir: Path | None):
    """Return a `datasets.Dataset` for the ref's split and where it came from, or fail saying where we looked.

    The source is kept in every result: the local pack and the hub can hold different copies of a dataset
    (PACS locally is re-encoded at 128 px), so their scores must not be averaged together."""
    import datasets

    if ref.builtin:
        if ref.name not in BUILTIN_DATASETS:
            raise DataNotFoundError(
                f"No builtin dataset {ref.name!r}; builtin datasets: {', '.join(BUILTIN_DATASETS)}."
            )
        return BUILTIN_DATASETS[ref.name](), f"builtin:{ref.name}"
    looked: list[str] = []
    if data_dir is not None:
        path = data_dir / ref.name / f"{ref.split}.parquet"
        if path.is_file():
            return _read_parquet(path, ref.split), f"local:{ref.name}/{ref.split}.parquet"
        looked.append(f"{path} (no such file)")
    else:
        looked.append(f"no local data dir (neither --data-dir nor ${DATA_ENV} is set)")
    if ref.hub_id and _HUB_DOWN:
        looked.append(f"not the hub id {ref.hub_id!r}: the hub was unreachable earlier in this process ({_HUB_DOWN[0]})")
    elif ref.hub_id:
        try:
            ds = datasets.load_dataset(ref.hub_id, ref.hub_config, split=ref.hub_split or ref.split,
                                      revision=ref.revision)
        except Exception as exc:  # offline, missing, gated...: report every place we looked
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            looked.append(f"the hub id {ref.hub_id!r} ({why})")
            if isinstance(exc, ConnectionError):  # offline: don't sit through the hub's retries once per dataset
                _HUB_DOWN.append(why)
        else:
            return _to_local_layout(ds, ref), f"hub:{ref.hub_id}{'/' + ref.hub_config if ref.hub_config else ''}"
    else:
        looked.append("no hub id is declared for it")
    raise DataNotFoundError(
        f"Dataset {ref.name!r} split {ref.split!r} was not found. Looked at: {'; '.join(looked)}. "
        f"Fix: point --data-dir (or ${DATA_ENV}) at a folder holding {ref.name}/{ref.split}.parquet "
        f"(the Hugging Face parquet layout), or run with internet access so the hub copy can be downloaded."
    )


def _read_parquet(path: Path, split: str):
    """A local Parquet file, or a DataError naming it and what is wrong (empty, truncated, not Parquet)."""
    import datasets
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"Data file {path} is empty (0 bytes); restore it from the data pack.")
    try:
        pq.read_metadata(path)  # footer check: catches truncated or non-Parquet files in milliseconds
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
        raise DataError(f"Data file {path} is not a readable Parquet file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); it may be truncated. Restore it from the data pack.") from None
    try:
        return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
    except Exception as exc:
        raise DataError(f"Data file {path} could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}).") from None


# --- hub copies -> the local layout ---------------------------------------------------------------
# Local QA Parquet files hold `id, question, context, choices (list of str), label (int)`; each hub
# dataset has its own columns, so a spec names the converter (`hub_format`) instead of code branching.


def _qa_from_answer_key(ex: dict) -> dict:
    """ai2_arc, commonsense_qa: choices = {text: [...], label: ["A", ...]}, answerKey = "B"."""
    keys = list(ex["choices"]["label"])
    if ex["answerKey"] not in keys:
        raise ConfigError(f"Question {ex['id']!r} has answerKey {ex['answerKey']!r}, not one of {keys} "
                          f"(unlabelled hub split?).")
    return {"id": ex["id"], "question": ex["question"], "context": "",
            "choices": list(ex["choices"]["text"]), "label": keys.index(ex["answerKey"])}


def _qa_from_sciq(ex: dict) -> dict:
    """allenai/sciq lists the correct answer apart from three distractors: put the four in a fixed
    order per question (sha1 of question and slot), so the gold position carries no signal."""
    options = [ex["distractor1"], ex["distractor2"], ex["distractor3"], ex["correct_answer"]]
    order = sorted(range(4), key=lambda j: hashlib.sha1(f"{ex['question']}|{j}".encode()).hexdigest())
    return {"id": hashlib.sha1(ex["question"].encode()).hexdigest()[:16], "question": ex["question"],
            "context": ex["support"] or "", "choices": [options[j] for j in order], "label": order.index(3)}


def _qa_from_quail(ex: dict) -> dict:
    """textmachinelab/quail: answers (list) + correct_answer_id, with the passage in `context`."""
    return {"id": ex["id"], "question": ex["question"], "context": ex["context"],
            "choices": list(ex["answers"]), "label": int(ex["correct_answer_id"])}


def _qa_from_openbookqa(ex: dict) -> dict:
    """allenai/openbookqa: like ARC, with the question in `question_stem`."""
    return _qa_from_answer_key({**ex, "question": ex["question_stem"]})


HUB_FORMATS = {
    "ai2_arc": _qa_from_answer_key,
    "openbookqa": _qa_from_openbookqa,
    "commonsense_qa": _qa_from_answer_key,
    "sciq": _qa_from_sciq,
    "quail": _qa_from_quail,
}


def _to_local_layout(ds, ref: DatasetRef):
    """Apply the ref's hub-only row filter and column converter to a freshly loaded hub split."""
    if ref.hub_filter:
        missing = sorted(set(ref.hub_filter) - set(ds.column_names))
        if missing:
            raise ConfigError(f"hub_filter of {ref.name!r} names column(s) {missing}; the hub copy of "
                              f"{ref.hub_id!r} has {ds.column_names}.")
        cols = list(ref.hub_filter)
        want = tuple(ref.hub_filter[c] for c in cols)
        ds = ds.filter(lambda *vals: tuple(vals) == want, input_columns=cols)
    if ref.hub_format:
        if ref.hub_format not in HUB_FORMATS:
            raise ConfigError(f"Unknown hub_format {ref.hub_format!r} for {ref.name!r}; "
                              f"known: {', '.join(sorted(HUB_FORMATS))}.")
        ds = ds.map(HUB_FORMATS[ref.hub_format], remove_columns=ds.column_names)
    return ds


def _class_names(ds, label_column: str) -> list[str]:
    feature = ds.features.get(label_column)
    if feature is not None and hasattr(feature, "names"):
        return list(feature.names)
    return [str(v) for v in sorted(set(ds[label_column]))]


def stratified_partition(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle; the first round(n*fraction) go to test. Stable across runs."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass
class Examples:
    """A loaded, filtered dataset split: rows plus labels (classes remapped to 0..C-1; the right choice for QA)."""

    key: str
    dataset: Any  # datasets.Dataset
    labels: np.ndarray
    class_names: list[str] | None  # None for multiple-choice QA
    modality: Modality  # what every branch on the kind of data reads (the task's word, lorabench.specs.MODALITIES)
    source: str = ""  # builtin:NAME, local:NAME/SPLIT.parquet or hub:ID[/CONFIG]
    digest: str = ""  # content_digest of what was loaded


@lru_cache(maxsize=64)
def _load_examples_cached(ref_json: str, data_dir: str | None, digest: str) -> Examples:
    ref = DatasetRef.model_validate_json(ref_json)
    ds, source = _load_raw(ref, Path(data_dir) if data_dir else None)
    if ref.label_column not in ds.column_names:
        raise DataError(
            f"Dataset {source} has no label column {ref.label_column!r}; its columns: {ds.column_names}."
        )
    if ref.image_column != "image" and ref.image_column in ds.column_names:  # backbones read "image"
        ds = ds.rename_column(ref.image_column, "image")
    labels = np.asarray(ds[ref.label_column], dtype=np.int64)
    names: list[str] | None = None
    modality: Modality = "multiple_choice" if "choices" in ds.column_names else "image"
    if modality == "image":  # classification: class names and subsets
        all_names = _class_names(ds, ref.label_column)
        names = all_names
        if ref.classes is not None:
            ids = []
            for c in ref.classes:
                if isinstance(c, str) and any(ch in c for ch in "*?["):  # a pattern: every matching name, in order
                    hits = [i for i, n in enumerate(all_names) if fnmatch.fnmatchcase(n, c)]
                    if not hits:
                        raise ConfigError(f"Dataset {ref.name!r} has no class matching {c!r}; classes: {all_names}.")
                    ids.extend(hits)
                elif isinstance(c, str):
                    if c not in all_names:
                        raise ConfigError(f"Dataset {ref.name!r} has no class {c!r}; classes: {all_names}.")
                    ids.append(all_names.index(c))
                else:
                    if not 0 <= c < len(all_names):
                        raise ConfigError(f"Dataset {ref.name!r} has classes 0..{len(all_names) - 1}, not {c}.")
                    ids.append(c)
            twice = sorted({all_names[i] for i in ids if ids.count(i) > 1})
            if twice:
                raise ConfigError(f"Dataset {ref.name!r}: classes {ref.classes} select {twice} more than once.")
            remap = {old: new for new, old in enumerate(ids)}
            keep = np.flatnonzero(np.isin(labels, ids))
            ds = ds.select(keep)
            labels = np.asarray([remap[int(v)] for v in labels[keep]], dtype=np.int64)
            names = [all_names[i] for i in ids]
    if ref.holdout is not None:
        train, test = stratified_partition(labels, ref.holdout.test_fraction, ref.holdout.seed)
        keep = train if ref.holdout.part == "train" else test
        ds, labels = ds.select(keep), labels[keep]
    if ref.max_examples is not None and len(labels) > ref.max_examples:
        frac = 1 - ref.max_examples / len(labels)
        keep, _ = stratified_partition(labels, frac, derive_seed(ref.name, ref.split, "cap"))
        ds, labels = ds.select(keep), labels[keep]
    return Examples(key=ref_json, dataset=ds, labels=labels, class_names=names, modality=modality, source=source,
                    digest=digest)


def load_examples(ref: DatasetRef, data_dir: str | os.PathLike | None = None, expected: str | None = None
                  ) -> Examples:
    """The ref's rows, loaded once per process per content (a file replaced under a running process is read
    again, and its new digest goes with it). `expected`: the digest a cell or adapter was named with; other
    content is refused before any work, so nothing is written under a name that is not its data's."""
    resolved = resolve_data_dir(data_dir)
    digest = content_digest(ref, resolved)
    if expected is not None and digest != expected:
        raise DataError(f"{data_key(ref)} is {digest} now, not {expected} as when the run was named (the file changed "
                        "during the run); nothing was written. Run the grid again.")
    return _load_examples_cached(ref.cache_key(), str(resolved) if resolved else None, digest)


# --- what methods see ----------------------------------------------------------------------------


@dataclass
class Split:
    """Encoded inputs (tensors, first dim = example) and labels; `key` identifies it for caches."""

    key: str
    inputs: dict[str, torch.Tensor]  # image: "pixels"; multiple_choice: "q_ids", "q_mask", "c_ids", "c_mask", "choice_mask"
    labels: torch.Tensor
    num_classes: int  # classes, or choices per question
    modality: Modality
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "Split":
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Split(
            key=f"{self.key}[{len(idx)}:{digest_bytes(idx.numpy().tobytes())}]",
            inputs={k: v[idx] for k, v in self.inputs.items()},
            labels=self.labels[idx],
            num_classes=self.num_classes,
            modality=self.modality,
            class_names=self.class_names,
            meta=dict(self.meta),
        )

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in [*self.inputs.values(), self.labels])

    def to(self, device: torch.device | str) -> "Split":
        """The same split with its tensors on `device` (itself if they are there): training draws its batches
        and views where the model is, instead of copying every batch from the host."""
        tensors = [*self.inputs.values(), self.labels]
        if all(t.device == torch.device(device) for t in tensors):
            return self
        return Split(key=self.key, inputs={k: v.to(device) for k, v in self.inputs.items()},
                     labels=self.labels.to(device), num_classes=self.num_classes, modality=self.modality,
                     class_names=self.class_names, meta=dict(self.meta))

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs of `indices`; images resized (only) to the task's input size, as float 0..255. Indices
        on the host index a split on the device without the host waiting (`runtime.to_device`)."""
        out = {k: v[to_device(indices, v.device)] for k, v in self.inputs.items()}
        if self.modality == "image" and "image_size" in self.meta:
            out["pixels"] = resize(out["pixels"], self.meta["image_size"])
        return out


def smallest_pool(labels: np.ndarray, per_class: bool, num_classes: int = 0) -> int:
    """The most K a pool allows: its smallest class count (a class of the `num_classes` with no example counts
    0), or its number of examples when K counts in total (QA); 0 for an empty pool."""
    if not len(labels):
        return 0
    return int(np.bincount(labels, minlength=num_classes).min()) if per_class else len(labels)


def sample_support(labels: np.ndarray, k: KValue, seed: int, per_class: bool = True) -> np.ndarray:
    """K examples per class (or K in total for QA), drawn from `seed`; 'all' = every index.

    Deterministic: the same (labels, K, seed) always gives the same sorted indices.
    """
    labels = np.asarray(labels)
    if k == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if not per_class:
        if k > len(labels):
            raise ConfigError(f"K={k} is larger than the {len(labels)} training examples available.")
        return np.sort(rng.choice(len(labels), size=k, replace=False))
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if k > len(idx):
            raise ConfigError(
                f"K={k} examples per class were asked for, but class {c} has only {len(idx)} training "
                f"examples. Use K <= {min(np.bincount(labels)[np.unique(labels)])} or 'all'."
            )
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)
