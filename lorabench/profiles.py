"""Profiles: `full` is the benchmark's protocol; `smoke` is the same pipeline made small, for tests and CI.

A profile is one rule applied to any task (`SMOKE`), plus what a task file adds under `profiles:`. The
resolved spec carries its profile, every record stores it, and the leaderboard ranks `full` only.
"""

from __future__ import annotations

from lorabench.errors import UnknownNameError
from lorabench.specs import DatasetRef, Preprocessing, ProfileOverrides, TaskSpec

PROFILES = ("full", "smoke")
# The smoke rule: small inputs, a handful of steps, small pools. Never a benchmark number.
SMOKE = ProfileOverrides(
    recipe={"head_epochs": 5, "epochs": 2, "min_steps": 2, "max_steps": 4, "feature_views": 2},
    upstream_training={"epochs": 1, "max_steps": 4, "probe_epochs": 5},
    max_upstream_examples=64, max_test_examples=120,
)
SMOKE_IMAGE_SIZE = 32
SMOKE_MAX_LENGTH = 64


def _cap(ref: DatasetRef, cap: int | None) -> DatasetRef:
    if cap is None:
        return ref
    return ref.model_copy(update={"max_examples": min(cap, ref.max_examples or cap)})


def _apply(spec: TaskSpec, o: ProfileOverrides) -> TaskSpec:
    recipe = type(spec.recipe).model_validate({**spec.recipe.model_dump(), **o.recipe})
    up_rec = type(spec.upstream_training).model_validate({**spec.upstream_training.model_dump(), **o.upstream_training})
    upstream = [u.model_copy(update={"train": _cap(u.train, o.max_upstream_examples)}) for u in spec.upstream]
    down = spec.downstream.model_copy(update={"test": _cap(spec.downstream.test, o.max_test_examples)})
    update = {"recipe": recipe, "upstream_training": up_rec, "upstream": upstream, "downstream": down}
    if o.preprocessing is not None:
        update["preprocessing"] = o.preprocessing
    if o.k_grid is not None:
        update["k_grid"] = o.k_grid
    return spec.model_copy(update=update)


def resolve(spec: TaskSpec, profile: str = "full") -> TaskSpec:
    """The task as run under `profile`: the profile's rule, then the task's own `profiles:` entry."""
    if profile not in PROFILES:
        raise UnknownNameError("profile", profile, PROFILES)
    out = spec
    if profile == "smoke":
        p = spec.preprocessing
        small = Preprocessing(image_size=min(p.image_size or SMOKE_IMAGE_SIZE, SMOKE_IMAGE_SIZE),
                              max_length=min(p.max_length or SMOKE_MAX_LENGTH, SMOKE_MAX_LENGTH))
        out = _apply(out, SMOKE.model_copy(update={"preprocessing": small}))
    if profile in spec.profiles:
        out = _apply(out, spec.profiles[profile])
    # Validate the combination once more (a profile may not break the spec's own rules).
    return TaskSpec.model_validate({**out.model_dump(), "profile": profile})
