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
FEW_SHOT_MAX_K = 10  # K up to this is few-shot: a task's `seeds` apply; beyond it (and K = all), `seeds_many_shot`
MODALITIES: tuple[str, ...] = ("image", "multiple_choice")  # the one vocabulary of tasks, methods and backbones


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
    classes: list[Union[int, str]] | None = Field(
        None, description="class subset, by id, name or name pattern (fnmatch, e.g. 'Greek/*')")
    label_column: str = "label"
    image_column: str = "image"
    holdout: Holdout | None = None
    max_examples: int | None = Field(None, gt=0, description="seeded stratified cap (upstream pools)")
    revision: str | None = Field(None, description="hub copy only: the dataset repository's commit or tag to load "
                                 "(pinned: part of every identity; unpinned: the hub's main, whatever it holds)")

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


def step_budget(n: int, batch_size: int, epochs: int, min_steps: int = 0, max_steps: int | None = None) -> int:
    """`epochs` passes over n examples in batches, within [min_steps, max_steps] (0 for no examples)."""
    if n == 0:
        return 0
    total = epochs * -(-n // batch_size)
    return max(min_steps, min(max_steps, total) if max_steps else total)


E2E_RULE_FIELDS = ("e2e_optimizer", "momentum", "e2e_head_lr")  # the end-to-end phase's rule (issue 25)


class TrainingRecipe(_Strict):
    """What every training loop reads (`lorabench.training`): the batch, the optimizer's weight decay, the
    learning-rate schedule and the image views. `Recipe` (few-shot) and `UpstreamRecipe` add their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    batch_size: int = Field(32, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(1e-4, ge=0)
    augment: bool = Field(True, description="image tasks: random-resized crop + horizontal flip on the training set")
    crop_scale: tuple[float, float] = Field((0.25, 1.0), description="area fraction range of the random crop")
    hflip: bool = True

    @field_validator("crop_scale", mode="before")
    @classmethod
    def _as_tuple(cls, v: Any) -> Any:  # a list from YAML or --hp is the pair it spells, also when validated strictly
        return tuple(v) if isinstance(v, list) else v

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(v)}")
        return v


class Recipe(TrainingRecipe):
    """The few-shot training recipe, shared by every method of a task (written in the task YAML, defaults here).

    Every method that trains a head first trains it on frozen features for `head_epochs` passes over the
    support set (the paper's 50-epoch warm-up, AdamW); frozen-feature methods stop there, end-to-end methods then
    train their parameters and the head for `steps(n_support)` steps of SGD with momentum (`e2e_optimizer`), the
    head at `e2e_head_lr`, with cosine decay: a step that shrinks with the gradient, so a support set the warmed-up
    head already fits (loss 1e-6) leaves it as it is instead of AdamW's full-size, sign-like steps. Image methods
    see random-resized-crop + flip views of the support set (frozen-feature methods: `feature_views` fixed
    views per example, one per epoch in turn); test images are only resized.
    """

    optimizer: Literal["adamw"] = "adamw"
    head_lr: float = Field(1e-2, gt=0)
    head_epochs: int = Field(50, ge=0, description="head warm-up: passes over the support set, frozen features")
    epochs: int = Field(50, ge=0, description="end-to-end: passes over the support set (the budget grows with K)")
    min_steps: int = Field(50, ge=0, description="end-to-end: at least this many steps (K = 1 has one batch)")
    max_steps: int = Field(1000, gt=0, description="end-to-end: at most this many steps (K = all)")
    feature_views: int = Field(10, gt=0, description="frozen-feature methods: augmented views per support example")
    # The end-to-end phase's rule (issue 25, chosen on validation draws: README "The end-to-end rule"). Setting a
    # field to None restores protocol 2 (AdamW, the head at head_lr); None fields stay out of a result's identity.
    e2e_optimizer: Literal["adamw", "sgd"] | None = Field(
        "sgd", description="end-to-end phase optimizer (None: AdamW); SGD's step shrinks with the gradient, AdamW's not")
    momentum: float | None = Field(0.9, ge=0, lt=1, description="end-to-end SGD momentum (None: 0.9)")
    e2e_head_lr: float | None = Field(
        1e-3, ge=0, description="end-to-end phase: the head's learning rate (None: head_lr; 0: kept as warmed up)")

    @staticmethod
    def decides(key: str, value: Any, end_to_end: bool = True) -> bool:
        """Whether a recipe field enters a result's digest: an unset (None) field does not, nor does the
        end-to-end rule for a method that stops after the warm-up (`end_to_end` False): it cannot change its value."""
        return value is not None and (end_to_end or key not in E2E_RULE_FIELDS)

    def identity_dump(self, end_to_end: bool = True) -> dict[str, Any]:
        """The fields that decide a result, for its digest (`decides`)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if self.decides(k, v, end_to_end)}

    def steps(self, n_support: int) -> int:
        """End-to-end steps for a support set of n examples: `epochs` passes, within [min_steps, max_steps]."""
        return step_budget(n_support, self.batch_size, self.epochs, self.min_steps, self.max_steps)

    def e2e_rule(self) -> tuple[str, float, float]:
        """The end-to-end phase's (optimizer, momentum, head learning rate); unset fields take protocol 2's
        (AdamW, 0.9, `head_lr`)."""
        return (self.e2e_optimizer or "adamw", 0.9 if self.momentum is None else self.momentum,
                self.head_lr if self.e2e_head_lr is None else self.e2e_head_lr)


class MethodParams(BaseModel):
    """A method's own hyperparameters, beyond the shared recipe: one field each, with its default and its allowed
    values as pydantic constraints (`Field(0.9, ge=0, lt=1)`). `--hp` values and task files' `hparams:` are
    validated against it strictly (1 is not a bool, 1.5 not an int, NaN not a number), before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EndToEndParams(MethodParams):
    """An end-to-end method's: the learning rate of the backbone parameters it trains."""

    lr: float = Field(1e-3, gt=0)


class UpstreamRecipe(TrainingRecipe):
    """How each upstream LoRA is trained (once per adapter-store key) and checked.

    A stratified `holdout_fraction` of each upstream pool never trains: the adapter's accuracy on it is
    stored beside a linear probe's (frozen backbone, head trained on the same training part), so a module
    that learned nothing its probe could not shows up before anyone composes it."""

    rank: int = Field(16, gt=0)
    alpha: float = Field(16.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    head_lr: float = Field(1e-2, gt=0)
    epochs: int = Field(3, gt=0, description="passes over the upstream training part")
    max_steps: int | None = Field(None, gt=0, description="optional cap on the steps (None: epochs decide)")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="held out of training, for the quality check")
    probe_epochs: int = Field(30, ge=0, description="linear probe on frozen features (0: no probe)")
    seed: int = 0

    def steps(self, n_train: int) -> int:
        return step_budget(n_train, self.batch_size, self.epochs, 0, self.max_steps)


class ProfileOverrides(_Strict):
    """What a profile changes in a task (the smoke profile's rule is `lorabench.profiles.SMOKE`)."""

    preprocessing: Preprocessing | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    upstream_training: dict[str, Any] = Field(default_factory=dict)
    max_upstream_examples: int | None = Field(None, gt=0, description="seeded stratified cap per upstream pool")
    max_test_examples: int | None = Field(None, gt=0, description="seeded stratified cap on the test split")
    k_grid: list[KValue] | None = None


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
    seeds: list[int] = Field(default_factory=lambda: list(range(10)), min_length=1,
                             description=f"seeds at few-shot K (K <= {FEW_SHOT_MAX_K}, K = 0 included)")
    seeds_many_shot: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                                       description=f"seeds at K > {FEW_SHOT_MAX_K} and K = all")
    metric: Literal["accuracy"] = "accuracy"
    preprocessing: Preprocessing = Preprocessing()
    recipe: Recipe = Recipe()
    upstream_training: UpstreamRecipe = UpstreamRecipe()
    profile: str = Field("full", description="set by lorabench.profiles.resolve, never in a task file")
    profiles: dict[str, ProfileOverrides] = Field(
        default_factory=dict, description="per-profile changes on top of the profile's rule (e.g. smoke)")
    hparams: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method hyperparameter overrides ('*' = every method that takes the key)"
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

    @field_validator("hparams")
    @classmethod
    def _no_upstream_hparams(cls, hp: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if "upstream" in hp:
            raise ValueError("upstream training settings moved to the `upstream_training:` block "
                             f"(fields: {', '.join(UpstreamRecipe.model_fields)})")
        return hp

    @model_validator(mode="after")
    def _unique_upstream(self) -> "TaskSpec":
        names = [u.name for u in self.upstream]
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names must be unique, got {names}")
        return self

    def seeds_for(self, k: KValue) -> list[int]:
        """The default seeds of a K: `seeds` in the few-shot range (at K <= 10 the per-seed spread is 10-20
        points, and ten seeds are what it takes to decide a comparison), `seeds_many_shot` beyond it."""
        return list(self.seeds) if k != "all" and k <= FEW_SHOT_MAX_K else list(self.seeds_many_shot)


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
    profile: str = "full"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast for the cell's forward and "
                                               "backward passes (fp32 weights and composition arithmetic)")
    data: dict[str, str] = Field(default_factory=dict, description="content digest of every dataset file the cell "
                                 "reads, its upstream adapters' included (lorabench.data.content_digest; set by "
                                 "lorabench.identity.identify)")
    digest: str = Field("", description="identity of the result: lorabench.identity.identify")
    # Where things are; these do not change the score and are left out of the config hash.
    device: str = "cpu"
    data_dir: str | None = None
    results_dir: str = "results"
    cache_dir: str | None = None

    def score_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"device", "data_dir", "results_dir", "cache_dir", "digest"})

    def config_hash(self) -> str:
        """The result's identity (set by `lorabench.identity.identify` from everything that decides the
        value); a config that was never identified falls back to a hash of its own fields."""
        if self.digest:
            return self.digest
        blob = json.dumps(self.score_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

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


class Composition(BaseModel):
    """The weight of each upstream module in each adapted matrix: `weights[i][n]` is the weight of module
    `upstream[n]` in matrix `matrices[i]` (shape [len(matrices), len(upstream)]; with learned_composition
    each row is a softmax, summing to 1; with a null module, its share is the last column, "(null)"). A
    method with one weight vector for the whole network has one row, named "*". The leaderboard draws it as
    a heatmap, averaged over seeds."""

    model_config = ConfigDict(extra="forbid")

    upstream: list[str]
    matrices: list[str]
    weights: list[list[float]]
    scale: float | None = None  # a learned gain on the whole composed update, applied on top of `weights`

    @model_validator(mode="after")
    def _shape(self) -> "Composition":
        if len(self.weights) != len(self.matrices) or any(len(r) != len(self.upstream) for r in self.weights):
            raise ValueError(f"composition weights must be [{len(self.matrices)} matrices][{len(self.upstream)} "
                             "upstream modules]")
        return self


class ResultRecord(BaseModel):
    """One JSON file per cell (the shape of PEFT's method_comparison results).

    Schema 3 added `composition`; records of schema 2 (composition weights in `extras["learned_weights"]`)
    are still read."""

    model_config = ConfigDict(extra="forbid")

    # A newer schema is not this version's to read (its fields may mean other things): such a record does not
    # validate here, so a grid leaves it alone with a warning and no table shows its value.
    schema_version: int = Field(3, ge=1, le=3)
    cell_id: str
    config_hash: str
    task: str
    suite: str
    setting: str
    method: str
    backbone: str
    k: KValue
    seed: int
    profile: str = "full"
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
    git_dirty: bool | None = None  # tracked files differed from `git_commit` when the cell ran
    lorabench_version: str
    created_at: str
    command: str
    config: dict[str, Any]
    tags: dict[str, Any] = Field(default_factory=dict)
    composition: Composition | None = None
    extras: dict[str, Any] = Field(default_factory=dict)
