"""The identity of a result: a digest of everything that decides its value.

Two cells with the same digest must give the same score (up to floating-point nondeterminism); change
any input (the task file's data references, the content of the data files, preprocessing or recipe, a
method's defaults, the upstream adapters' data or training recipe, the profile, the protocol version) and the
digest changes, so the cell is run again and an old record is recognised as stale instead of being reused or
averaged in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorabench.adapters import CONFIG_FILE, WEIGHTS_FILE
from lorabench.data import content_digest, data_key
from lorabench.errors import AdapterError, LorabenchError
from lorabench.hashing import digest_files, digest_json
from lorabench.method import METHODS, EndToEndMethod
from lorabench.specs import Recipe, ResultRecord, RunConfig, TaskSpec
from lorabench.task_registry import get_task
from lorabench.upstream import UpstreamJob, upstream_jobs

# Bumped whenever the evaluation protocol changes in a way the specs do not show (training loops, metrics).
PROTOCOL_VERSION = 2
# The parts of a task that decide a cell's value (the grid lists, suite, tags and prose do not).
# The fields a record shows at its top level and also keeps in its config (which the digest covers).
CELL_FIELDS = ("task", "method", "backbone", "k", "seed", "profile")
TASK_FIELDS = {"name", "modality", "metric", "downstream", "preprocessing", "recipe", "profile"}


def upstream_jobs_of(cfg: RunConfig, task: TaskSpec | None = None) -> list[UpstreamJob]:
    """The store adapters a cell composes: the one list the grid trains (those missing, before any cell), the
    cell loads and the cell's identity names. Empty for a method without upstream modules or with --upstream."""
    if cfg.upstream_dirs or not METHODS.get(cfg.method).needs_upstream:
        return []
    task = task or get_task(cfg.task, cfg.profile)
    return upstream_jobs(task, cfg.backbone, cfg.data_dir, cfg.cache_dir, cfg.device, cfg.precision, cfg.data)


def data_digests(cfg: RunConfig, task: TaskSpec | None = None) -> dict[str, str]:
    """The content digest of every dataset file the cell reads (its support and test pools, and its store
    adapters' training pools), by file: `lorabench.data.content_digest`, with `cfg.data` (a record's) for data
    not here to read."""
    task = task or get_task(cfg.task, cfg.profile)
    refs = [task.downstream.train, task.downstream.test]
    if not cfg.upstream_dirs and METHODS.get(cfg.method).needs_upstream:
        refs += [up.train for up in task.upstream]
    files = {data_key(ref): ref for ref in refs}  # many refs (class subsets, holdout parts) read one file
    return {key: content_digest(ref, cfg.data_dir, cfg.data) for key, ref in files.items()}


def upstream_identity(task: TaskSpec, cfg: RunConfig) -> list[str]:
    """What the composed modules are: store keys of the task's upstream adapters, or the content digests
    of the adapter folders given with --upstream."""
    if not METHODS.get(cfg.method).needs_upstream:
        return []
    if cfg.upstream_dirs:
        out = []
        for d in map(Path, cfg.upstream_dirs):
            files = [d / CONFIG_FILE, d / WEIGHTS_FILE]
            if not all(f.is_file() for f in files):
                raise AdapterError(f"--upstream {d}: expected a PEFT adapter folder with {CONFIG_FILE} and "
                                   f"{WEIGHTS_FILE}.")
            out.append(digest_files(files))
        return out
    return [Path(job.path).name for job in upstream_jobs_of(cfg, task)]  # <name>-<store key>


def decisive_inputs(cfg: RunConfig) -> dict[str, Any]:
    """Everything that decides a cell's value (what its digest hashes): protocol version, the task's deciding
    fields, the content of its data, the method and its resolved hyperparameters, backbone, K, seed, tuning, the
    upstream modules and a non-default precision."""
    task = get_task(cfg.task, cfg.profile)
    method_cls = METHODS.get(cfg.method)
    e2e = issubclass(method_cls, EndToEndMethod)
    hparams = {k: v for k, v in method_cls.resolve_hparams(cfg.hparams, task).items()
               if k not in Recipe.model_fields or Recipe.decides(k, v, e2e)}
    return {"protocol": PROTOCOL_VERSION,
            "task": {**task.model_dump(mode="json", include=TASK_FIELDS), "recipe": task.recipe.identity_dump(e2e)},
            "data": cfg.data or data_digests(cfg, task),  # as identify has just set them
            "method": cfg.method, "hparams": hparams,
            "backbone": cfg.backbone, "k": cfg.k, "seed": cfg.seed, "tune": cfg.tune,
            "upstream": upstream_identity(task, cfg),
            **({"precision": cfg.precision} if cfg.precision != "fp32" else {})}  # fp32: as every older record


def identify(cfg: RunConfig) -> RunConfig:
    """`cfg` with its data digests and its digest set (the result file's name and the record's `config_hash`)."""
    cfg = cfg.model_copy(update={"data": data_digests(cfg)})
    return cfg.model_copy(update={"digest": digest_json(decisive_inputs(cfg))})


def staleness(record: ResultRecord) -> str | None:
    """Why `record` no longer matches what the current specs would run (None if it still does). A record is
    ranked by its top-level fields but identified by its config, so the two must name the same cell."""
    fields = {k: v for k, v in record.config.items() if k in RunConfig.model_fields and k != "digest"}
    clash = [f"{f} {getattr(record, f)!r} vs {fields.get(f)!r}" for f in CELL_FIELDS
             if str(getattr(record, f)) != str(fields.get(f))]
    if clash:
        return (f"its top-level fields disagree with its own config ({'; '.join(clash)}): the record was edited or "
                "mis-written; re-run the cell")
    try:
        current = identify(RunConfig.model_validate(fields))
    except LorabenchError as exc:
        return f"its inputs cannot be resolved any more ({exc})"
    except ValueError as exc:
        return f"its config does not validate ({str(exc).splitlines()[0]})"
    if current.digest == record.config_hash:
        return None
    then = fields.get("data") or {}
    changed = [f"{key}: {then[key]} then, {now} now" for key, now in current.data.items() if key in then and
               then[key] != now]
    if changed:
        return f"its data changed since it was run ({'; '.join(changed)}): re-run the cell for a current result"
    return ("its inputs changed since it was run (task file, data, method defaults, upstream adapters, profile or "
            "protocol version): re-run the cell for a current result")
