"""Phase 2: one LoRA per upstream task, trained once and reused by every method, K and seed.

Adapters live under `<cache>/adapters/<backbone>/<upstream>-<key>/` in the PEFT format; the key
is a digest of everything that changes the weights (backbone, upstream data: its reference and the content of
its file, preprocessing, the task's `upstream_training` recipe, UPSTREAM_VERSION). Each adapter's metadata records its quality: accuracy
on a held-out part of its own pool beside a linear probe's on the same part. A file lock per key means two workers never train the same adapter
at once; the second waits and then reuses it. Writes go to a temporary folder renamed into place,
so a killed run never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from pydantic import BaseModel

from lorabench.adapters import CONFIG_FILE, WEIGHTS_FILE, LoraAdapter, load_adapter, save_adapter
from lorabench.backbones import create_backbone
from lorabench.data import Split, content_digest, data_key, load_examples, stratified_partition
from lorabench.hashing import digest_json
from lorabench.lora import Target, attach
from lorabench.seeding import derive_seed, generator, seed_everything
from lorabench.specs import Preprocessing, TaskSpec, UpstreamRecipe, UpstreamSpec
from lorabench.training import extract_features, predict, train_end_to_end, train_head

CACHE_ENV = "LORABENCH_CACHE"
# Bumped whenever upstream training changes in a way the recipe does not show (new adapter-store keys).
UPSTREAM_VERSION = 2


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    chosen = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lorabench"
    return Path(chosen).expanduser().resolve()


def adapter_key(backbone: str, up: UpstreamSpec, prep: Preprocessing, recipe: UpstreamRecipe,
                precision: str = "fp32", *, data: str) -> str:
    """The store key of one adapter: a digest of everything that changes its weights, the content of its
    training data (`data`, `lorabench.data.content_digest` of `up.train`) included (the precision it trained in
    only when it is not fp32, so every adapter trained before precision existed keeps its key)."""
    return digest_json({"version": UPSTREAM_VERSION, "backbone": backbone, "data": up.train.model_dump(mode="json"),
                        "content": data, "prep": prep.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json"),
                        **({"precision": precision} if precision != "fp32" else {})}, 12)


def adapter_dir(root: Path, backbone: str, up: UpstreamSpec, prep: Preprocessing, recipe: UpstreamRecipe,
                precision: str = "fp32", *, data: str) -> Path:
    return root / "adapters" / backbone / f"{up.name}-{adapter_key(backbone, up, prep, recipe, precision, data=data)}"


def is_complete(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _accuracy(backbone, head, split: Split) -> float:
    return float((predict(backbone, head, split) == split.labels).float().mean()) if len(split) else math.nan


def train_upstream_adapter(backbone_name: str, up: UpstreamSpec, prep: Preprocessing, recipe: UpstreamRecipe,
                           data_dir: str | None, device: str, precision: str = "fp32", data: str | None = None
                           ) -> tuple[LoraAdapter, list, dict[str, Any]]:
    """LoRA + head on the upstream task's training part; the head is discarded (as in the paper).

    A stratified `holdout_fraction` of the pool never trains: the adapter (with its head) is scored on it,
    beside a linear probe of the frozen backbone trained on the same training part, and both go into the
    adapter's metadata."""
    examples = load_examples(up.train, data_dir, data)  # before the weights: the likelier error, and cheaper
    backbone = create_backbone(backbone_name, device)
    backbone.precision = precision
    per_class = examples.modality == "image"
    idx = np.arange(len(examples.labels))
    held = np.arange(0)
    if recipe.holdout_fraction > 0 and per_class:
        idx, held = stratified_partition(examples.labels, recipe.holdout_fraction,
                                         derive_seed(up.name, recipe.seed, "upstream-holdout"))
    elif recipe.holdout_fraction > 0:
        perm = np.random.default_rng(derive_seed(up.name, recipe.seed, "upstream-holdout")).permutation(len(idx))
        n_held = int(round(len(idx) * recipe.holdout_fraction))
        held, idx = np.sort(perm[:n_held]), np.sort(perm[n_held:])
    split = backbone.encode(examples, idx, prep)
    heldout = backbone.encode(examples, held, prep)
    t0 = time.perf_counter()
    probe, probe_head = math.nan, None
    if recipe.probe_epochs:  # the probe is also the head's warm start, as downstream
        seed_everything(backbone_name, up.name, recipe.seed, "probe-init")
        probe_head = backbone.make_head(split.num_classes).to(device)
        train_head(probe_head, extract_features(backbone, split, cache=False)[None], split, recipe,
                   generator(backbone_name, up.name, recipe.seed, "probe"), recipe.probe_epochs, recipe.head_lr)
        if len(heldout):
            probe = float((predict(backbone, probe_head, heldout, extract_features(backbone, heldout, cache=False))
                           == heldout.labels).float().mean())
    probe_s = time.perf_counter() - t0
    seed_everything(backbone_name, up.name, recipe.seed, "upstream-init")
    targets = backbone.targets()
    layers = attach(backbone.model, targets)
    for layer in layers.values():
        layer.enable_lora(recipe.rank, recipe.alpha)
    head = probe_head if probe_head is not None else backbone.make_head(split.num_classes).to(device)
    groups = [{"params": [p for lay in layers.values() for p in (lay.lora_A, lay.lora_B)], "lr": recipe.lr},
              {"params": list(head.parameters()), "lr": recipe.head_lr}]
    t0 = time.perf_counter()
    log = train_end_to_end(backbone, head, groups, split, recipe, generator(backbone_name, up.name, recipe.seed, "order"))
    train_s = time.perf_counter() - t0
    weights = {name: ab for layer in layers.values() for name, ab in layer.lora_weights().items()}
    meta = {"upstream_task": up.name, "train_data": json.loads(examples.key), "data_source": examples.source,
            "data_digest": examples.digest,
            "n_train": len(split), "n_heldout": len(heldout),
            "heldout_accuracy": _accuracy(backbone, head, heldout), "probe_accuracy": probe,
            "train_log": log, "train_s": round(train_s, 3), "probe_s": round(probe_s, 3),
            "recipe": recipe.model_dump(mode="json"),
            "backbone": backbone_name, "upstream_version": UPSTREAM_VERSION, "precision": precision}
    adapter = LoraAdapter(up.name, weights, {n: recipe.alpha / recipe.rank for n in weights}, backbone_name, meta=meta)
    return adapter, targets, meta


class UpstreamJob(BaseModel):
    """One adapter-store key: everything a worker needs to train (or find) one upstream adapter."""

    path: str
    backbone: str
    upstream: UpstreamSpec
    preprocessing: Preprocessing
    recipe: UpstreamRecipe
    data: str  # the content digest of its training data, part of its key (lorabench.data.content_digest)
    data_dir: str | None = None
    device: str = "cpu"
    precision: str = "fp32"


def upstream_jobs(task: TaskSpec, backbone_name: str, data_dir: str | None, cache_dir: str | None,
                  device: str = "cpu", precision: str = "fp32", recorded: Mapping[str, str] | None = None
                  ) -> list[UpstreamJob]:
    """The adapters a task needs on a backbone, one job per adapter-store key (`recorded`: the data digests a
    record was run with, for data not here to read; see `lorabench.data.content_digest`)."""
    root = cache_root(cache_dir)
    rec = task.upstream_training
    jobs, digests = [], {}  # many upstream pools are parts of one file: its digest is looked up once
    for up in task.upstream:
        key = data_key(up.train)
        if key not in digests:
            digests[key] = content_digest(up.train, data_dir, recorded)
        data = digests[key]
        jobs.append(UpstreamJob(path=str(adapter_dir(root, backbone_name, up, task.preprocessing, rec, precision,
                                                     data=data)),
                                backbone=backbone_name, upstream=up, preprocessing=task.preprocessing, recipe=rec,
                                data=data, data_dir=data_dir, device=device, precision=precision))
    return jobs


def ensure_upstream_adapter(job: UpstreamJob, on_train: Callable[[str], None] | None = None) -> bool:
    """Train one adapter into the store unless it is there already; True if this call trained it.

    Safe to call from many workers at once: the lock makes the second wait, then reuse.
    """
    path = Path(job.path)
    if is_complete(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if is_complete(path):  # another worker finished it while we waited
            return False
        if on_train:
            on_train(job.upstream.name)
        rec = job.recipe
        adapter, targets, _ = train_upstream_adapter(job.backbone, job.upstream, job.preprocessing, rec, job.data_dir,
                                                     job.device, job.precision, job.data)  # the key's data or nothing
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(adapter, tmp, targets, rec.rank, rec.alpha)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return True


def ensure_upstream_adapters(jobs: list[UpstreamJob], targets: list[Target], aliases: set[str],
                             on_train: Callable[[str], None] | None = None) -> list[LoraAdapter]:
    """Load the jobs' adapters onto `targets` (the caller's backbone's), training (once, under a lock) those not
    yet in the store (a grid has trained them already: then this only loads)."""
    adapters = []
    for job in jobs:
        ensure_upstream_adapter(job, on_train)
        adapters.append(load_adapter(Path(job.path), targets, aliases, name=job.upstream.name))
    return adapters
