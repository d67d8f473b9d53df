"""Phase 2: one LoRA per upstream task, trained once and reused by every method, K and seed.

Adapters live under `<cache>/adapters/<backbone>/<upstream>-<key>/` in the PEFT format; the key
hashes everything that changes the weights (backbone, upstream data, preprocessing, rank, alpha,
training hyperparameters, seed). A file lock per key means two workers never train the same adapter
at once; the second waits and then reuses it. Writes go to a temporary folder renamed into place,
so a killed run never leaves a half-written adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel

from lorabench.adapters import CONFIG_FILE, WEIGHTS_FILE, LoraAdapter, load_adapter, save_adapter
from lorabench.backbones import create_backbone
from lorabench.data import load_examples
from lorabench.lora import attach
from lorabench.seeding import generator, seed_everything
from lorabench.specs import Preprocessing, TaskSpec, UpstreamSpec
from lorabench.training import train_end_to_end

CACHE_ENV = "LORABENCH_CACHE"
UPSTREAM_DEFAULTS: dict[str, Any] = {
    "rank": 16, "alpha": 16.0, "lr": 1e-3, "head_lr": 1e-2, "epochs": 10, "max_steps": 400,
    "batch_size": 32, "weight_decay": 1e-4, "seed": 0,
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    chosen = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lorabench"
    return Path(chosen).expanduser().resolve()


def upstream_hparams(task: TaskSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**UPSTREAM_DEFAULTS, **task.hparams.get("upstream", {}), **(overrides or {})}


def adapter_dir(root: Path, backbone: str, up: UpstreamSpec, prep: Preprocessing, hp: dict[str, Any]) -> Path:
    blob = json.dumps({"backbone": backbone, "data": up.train.model_dump(), "prep": prep.model_dump(), "hp": hp},
                      sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return root / "adapters" / backbone / f"{up.name}-{key}"


def is_complete(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def train_upstream_adapter(backbone_name: str, up: UpstreamSpec, prep: Preprocessing, hp: dict[str, Any],
                           data_dir: str | None, device: str) -> tuple[LoraAdapter, list, dict[str, Any]]:
    """LoRA + head on the upstream task's training data; the head is discarded (as in the paper)."""
    examples = load_examples(up.train, data_dir)  # before the weights: the likelier error, and cheaper
    backbone = create_backbone(backbone_name, device)
    split = backbone.encode(examples, None, prep)
    seed_everything(backbone_name, up.name, hp["seed"], "upstream-init")
    targets = backbone.targets()
    layers = attach(backbone.model, targets)
    for layer in layers.values():
        layer.enable_lora(hp["rank"], hp["alpha"])
    head = backbone.make_head(split.num_classes).to(device)
    groups = [{"params": [p for lay in layers.values() for p in (lay.lora_A, lay.lora_B)], "lr": hp["lr"]},
              {"params": list(head.parameters()), "lr": hp["head_lr"]}]
    t0 = time.perf_counter()
    loss = train_end_to_end(backbone, head, groups, split, hp, generator(backbone_name, up.name, hp["seed"], "order"))
    weights = {name: ab for layer in layers.values() for name, ab in layer.lora_weights().items()}
    meta = {"upstream_task": up.name, "n_train": len(split), "final_loss": loss,
            "train_s": round(time.perf_counter() - t0, 3), "hparams": hp, "backbone": backbone_name}
    adapter = LoraAdapter(up.name, weights, {n: hp["alpha"] / hp["rank"] for n in weights}, backbone_name, meta=meta)
    return adapter, targets, meta


class UpstreamJob(BaseModel):
    """One adapter-store key: everything a worker needs to train (or find) one upstream adapter."""

    path: str
    backbone: str
    upstream: UpstreamSpec
    preprocessing: Preprocessing
    hparams: dict[str, Any]
    data_dir: str | None = None
    device: str = "cpu"


def upstream_jobs(task: TaskSpec, backbone_name: str, data_dir: str | None, cache_dir: str | None,
                  device: str = "cpu", hp_overrides: dict[str, Any] | None = None) -> list[UpstreamJob]:
    """The adapters a task needs on a backbone, one job per adapter-store key."""
    root = cache_root(cache_dir)
    hp = upstream_hparams(task, hp_overrides)
    return [UpstreamJob(path=str(adapter_dir(root, backbone_name, up, task.preprocessing, hp)), backbone=backbone_name,
                        upstream=up, preprocessing=task.preprocessing, hparams=hp, data_dir=data_dir, device=device)
            for up in task.upstream]


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
        hp = job.hparams
        adapter, targets, _ = train_upstream_adapter(job.backbone, job.upstream, job.preprocessing, hp, job.data_dir,
                                                     job.device)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(adapter, tmp, targets, hp["rank"], hp["alpha"])
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return True


def ensure_upstream_adapters(task: TaskSpec, backbone_name: str, data_dir: str | None, cache_dir: str | None,
                             device: str = "cpu", hp_overrides: dict[str, Any] | None = None,
                             on_train: Callable[[str], None] | None = None) -> list[LoraAdapter]:
    """Load the task's upstream adapters, training (once, under a lock) those not yet in the store."""
    backbone = create_backbone(backbone_name, "cpu")
    targets = backbone.targets()
    adapters = []
    for job in upstream_jobs(task, backbone_name, data_dir, cache_dir, device, hp_overrides):
        ensure_upstream_adapter(job, on_train)
        adapters.append(load_adapter(Path(job.path), targets, backbone.aliases, name=job.upstream.name))
    return adapters
