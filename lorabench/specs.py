"""The typed core: task specs (from YAML), run configs and result records (pydantic).

Everything that crosses a module boundary or touches disk is one of these models, so a malformed
file fails at load with its field path, and a result file can be re-validated by anyone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KValue = Union[int, Literal["all"]]


def k_order(k: KValue | str) -> tuple[int, int]:
    """Sort key for K values: ascending, "all" last."""
    return (1, 0) if str(k) == "all" else (0, int(k))
Setting = Literal["label_shift", "covariate_shift", "task_shift"]
Modality = Literal["image", "multiple_choice"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Holdout(_Strict):
    """A fixed, seeded, stratified partition of one split (for datasets with a single split)."""

    test_fraction: float = Field(gt=0, lt=1)
    part: Literal["train", "test"]
    seed: int = 0


class DatasetRef(_Strict):
    """Where one split of one dataset comes from: a local name (data dir), a hub id, or a builtin."""

    name: str = Field(description="local folder name under the data dir: <name>/<split>.parquet")
    split: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str | None = Field(None, description="split name on the hub, if it differs")
    hub_filter: dict[str, Union[str, int]] | None = Field(
        None, description="hub copy only: keep rows whose columns equal these values (e.g. PACS's domain)"
    )
    hub_format: str | None = Field(
        None, description="hub copy only: named converter to the local column layout (lorabench.data.HUB_FORMATS)"
    )
    builtin: bool = Field(False, description="data shipped inside an installed dependency")
    classes: list[Union[int, str]] | None = Field(None, description="class subset, by id or name")
    label_column: str = "label"
    image_column: str = "image"
    holdout: Holdout | None = None
    max_examples: int | None = Field(None, gt=0, description="seeded stratified cap (upstream pools)")

    def cache_key(self) -> str:
        return self.model_dump_json()


class UpstreamSpec(_Strict):
    name: str
    train: DatasetRef


class DownstreamSpec(_Strict):
    name: str
    train: DatasetRef
    test: DatasetRef


class Preprocessing(_Strict):
    image_size: int | None = Field(None, gt=0)
    max_length: int | None = Field(None, gt=0)


class TaskMetadata(_Strict):
    """MTEB-style declarative metadata: what a reader needs to trust and cite a score."""

    description: str = ""
    license: str = "unknown"
    citation: str = ""
    reference: str = ""


class TaskSpec(_Strict):
    name: str
    suite: str
    setting: Setting
    modality: Modality = "image"
    backbone: str
    upstream: list[UpstreamSpec] = Field(min_length=1)
    downstream: DownstreamSpec
    k_grid: list[KValue] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    metric: Literal["accuracy"] = "accuracy"
    preprocessing: Preprocessing = Preprocessing()
    hparams: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method hyperparameter overrides ('*' = all methods)"
    )
    tags: dict[str, Any] = Field(default_factory=dict, description="sweep variables, e.g. n_upstream")
    metadata: TaskMetadata = TaskMetadata()

    @field_validator("k_grid")
    @classmethod
    def _k_positive(cls, ks: list[KValue]) -> list[KValue]:
        for k in ks:
            if k != "all" and k < 0:
                raise ValueError(f"K must be >= 0 or 'all', got {k}")
        return ks

    @model_validator(mode="after")
    def _unique_upstream(self) -> "TaskSpec":
        names = [u.name for u in self.upstream]
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names must be unique, got {names}")
        return self


class RunConfig(_Strict):
    """One cell of the grid, fully resolved: everything that determines its score."""

    task: str
    method: str
    backbone: str
    k: KValue
    seed: int
    hparams: dict[str, Any] = Field(default_factory=dict)
    upstream_dirs: list[str] = Field(default_factory=list)
    tune: bool = False
    # Where things are; these do not change the score and are left out of the config hash.
    device: str = "cpu"
    data_dir: str | None = None
    results_dir: str = "results"
    cache_dir: str | None = None

    def score_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"device", "data_dir", "results_dir", "cache_dir"})

    def config_hash(self) -> str:
        blob = json.dumps(self.score_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def cell_id(self) -> str:
        return f"{self.task}/{self.method}/{self.backbone}/k={self.k}/seed={self.seed}"

    def result_path(self) -> Path:
        name = f"{self.method}__{self.backbone}__k{self.k}__s{self.seed}__{self.config_hash()}.json"
        return Path(self.results_dir) / self.task / name


class Timings(BaseModel):
    upstream_s: float = 0.0
    prepare_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    total_s: float = 0.0


class ResultRecord(BaseModel):
    """One JSON file per cell (the shape of PEFT's method_comparison results)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    cell_id: str
    config_hash: str
    task: str
    suite: str
    setting: str
    method: str
    backbone: str
    k: KValue
    seed: int
    metric: str
    value: float
    n_support: int
    n_test: int
    trainable_params: int = Field(description="trainable parameters excluding the head")
    head_params: int
    timings: Timings
    peak_memory_mb: float
    device: str
    versions: dict[str, str]
    git_commit: str | None
    lorabench_version: str
    created_at: str
    command: str
    config: dict[str, Any]
    tags: dict[str, Any] = Field(default_factory=dict)
    extras: dict[str, Any] = Field(default_factory=dict)
