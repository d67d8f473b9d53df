"""One validation pass over a grid before any work: everything a user can type or put in a file.

`check_grid` runs before the first upstream adapter trains, so a bad value costs a second, not an hour,
and fails with one paragraph (a `ConfigError`, exit code 2) naming the value, where it came from and what
is allowed. Nothing here writes to disk.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from lorabench.errors import ConfigError, DataError, UnknownNameError
from lorabench.precision import PRECISIONS, default_precision
from lorabench.specs import Recipe, RunConfig, TaskSpec

_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")


def check_precision(precision: str | None, device: str) -> str:
    """fp32 or bf16 (None: the device's default); bf16 on MPS is refused (no bf16 autocast there)."""
    if precision is None:
        return default_precision(device)
    if precision not in PRECISIONS:
        raise UnknownNameError("precision", precision, PRECISIONS)
    if precision == "bf16" and device == "mps":
        raise ConfigError("--precision bf16 is not supported on mps; use --precision fp32.")
    return precision


def check_device(device: str) -> str:
    """`cpu`, `cuda`, `cuda:N` (N below the device count) or `mps`; anything else is refused."""
    if not _DEVICE.match(device):
        raise ConfigError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N (N = GPU index) or mps "
                          "(lower case).")
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"--device {device} was asked for, but torch sees no CUDA device here. Use --device cpu.")
        if ":" in device and int(device.split(":")[1]) >= n:
            raise ConfigError(f"--device {device}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}.")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for, but torch sees no MPS device here. Use --device cpu.")
    return device


# --- hyperparameters -----------------------------------------------------------------------------

def _where(error: dict) -> str:
    """The key (and list position) a pydantic error is about: 'lambdas[2]', not a union member's type name."""
    return str(error["loc"][0]) + "".join(f"[{p}]" for p in error["loc"][1:] if isinstance(p, int))


def _problem(error: dict) -> str:
    """One pydantic error as '<key>: <what is wrong>, got <value>'."""
    where = _where(error)
    msg = error["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    return f"{where}: {msg}" + ("" if "got" in msg else f", got {error['input']!r}")


def check_hparams(method_cls, values: dict[str, Any], where: str) -> None:
    """Every key known to the method and every value of the right type, finite and in range.

    `where` says where the values came from (`--hp`, a task file's `hparams.<method>`), for the message."""
    known = method_cls.known_hparams()
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(known), n=2, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        raise ConfigError(f"{where}: method {method_cls.name!r} has no hyperparameter {', '.join(hints)}; it takes: "
                          f"{', '.join(sorted(known))}.")
    recipe_part = {k: v for k, v in values.items() if k in Recipe.model_fields}
    own = {k: v for k, v in values.items() if k not in recipe_part}
    problems = []
    for model, part in ((Recipe, recipe_part), (method_cls.Params, own)):
        if not part:
            continue
        try:  # strictly: 1 is not a bool, 1.5 not an int, "1e-3" not a number; constraints are the fields'
            model.model_validate({**model().model_dump(), **part}, strict=True)
        except ValidationError as exc:
            first = {}  # a union (float | None) fails once per member: say it once per key
            for e in exc.errors():
                first.setdefault(_where(e), _problem(e))
            problems += first.values()
    if problems:
        raise ConfigError(f"{where}: invalid value(s) for method {method_cls.name!r}: {'; '.join(problems)}.")


def check_task_hparams(task: TaskSpec, methods: list[str], source: str) -> None:
    """A task file's `hparams:` block: keys its methods take, values in range; '*' keys must be taken by
    at least one method."""
    from lorabench.method import METHODS

    for block, values in task.hparams.items():
        if block == "*":
            takers = [METHODS.get(m) for m in METHODS.names() if set(values) & set(METHODS.get(m).known_hparams())]
            orphan = sorted(set(values) - {k for cls in takers for k in cls.known_hparams()})
            if orphan:
                raise ConfigError(f"{source}: hparams.'*' sets {orphan}, which no method takes.")
            for name in methods:
                cls = METHODS.get(name)
                check_hparams(cls, {k: v for k, v in values.items() if k in cls.known_hparams()},
                              f"{source} (hparams.'*')")
        else:
            if block not in METHODS:
                from lorabench.errors import UnknownNameError

                raise ConfigError(f"{source}: hparams names {UnknownNameError('method', block, METHODS.names())}")
            if block in methods:
                check_hparams(METHODS.get(block), values, f"{source} (hparams.{block})")


# --- data and K ----------------------------------------------------------------------------------

_COLUMNS = {"multiple_choice": ("question", "choices"), "image": ("image",)}


def _check_columns(ex, ref, modality: str, data_dir: str | None) -> None:
    from lorabench.data import resolve_data_dir

    need = [c for c in _COLUMNS[modality] if c not in ex.dataset.column_names]
    if need:
        where = ex.source or ref.name
        if where.startswith("local:") and resolve_data_dir(data_dir):
            where = str(resolve_data_dir(data_dir) / where.removeprefix("local:"))
        raise DataError(f"Dataset {where} (split {ref.split!r}) lacks column(s) {need} for a "
                          f"{modality} task; its columns: {ex.dataset.column_names}.")


def check_k(task: TaskSpec, ks: list, data_dir: str | None) -> None:
    """K against the downstream pool: every class has K examples (K in total for QA); K = 0 only where a
    zero-shot score exists (multiple-choice tasks: the head is the similarity scorer)."""
    from lorabench.data import load_examples

    train = load_examples(task.downstream.train, data_dir)
    _check_columns(train, task.downstream.train, task.modality, data_dir)
    _check_columns(load_examples(task.downstream.test, data_dir), task.downstream.test, task.modality, data_dir)
    if task.modality == "multiple_choice":
        n, what = len(train.labels), "training questions in total"
    else:
        counts = torch.bincount(torch.as_tensor(train.labels)) if len(train.labels) else torch.zeros(0)
        n, what = (int(counts[counts > 0].min()) if len(counts) else 0), "examples in its smallest class"
    for k in ks:
        if k == "all":
            continue
        if k == 0 and task.modality != "multiple_choice":
            raise ConfigError(f"K=0 on the image task {task.name!r}: there is no support set, so the head would "
                              "score untrained; K=0 (zero-shot) exists for multiple-choice tasks only. Use K >= 1.")
        if k > n:
            raise ConfigError(f"K={k} on task {task.name!r}: its few-shot pool has only {n} {what}. "
                              f"Use K <= {n} or 'all'.")


def check_upstream_data(task: TaskSpec, data_dir: str | None) -> None:
    from lorabench.data import load_examples

    for up in task.upstream:
        _check_columns(load_examples(up.train, data_dir), up.train, task.modality, data_dir)


# --- folders -------------------------------------------------------------------------------------


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """`path` is (or can be created as) a writable folder; nothing is created here. Used for every folder a
    command writes into (results, cache, the leaderboard's --out)."""
    p = Path(path).expanduser()
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise ConfigError(f"{flag} {p} is {'a file' if p.is_file() else 'not a folder'}, not a folder; point {flag} "
                          "at a folder (it is created if missing).")
    probe = p
    while not (probe.exists() or probe.is_symlink()):
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {p}: the folder cannot be created: {probe} is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p}: {'it' if probe == p else probe} is not writable.")


# --- the pass ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneFacts:
    modality: str
    targets: list
    aliases: frozenset


def check_backbone_fits(name: str, modality: str, task: TaskSpec) -> None:
    """A backbone serves one task modality; the grid checks it before any work, a lone cell again."""
    if modality != task.modality:
        raise ConfigError(f"--backbone {name} takes {modality} tasks; task {task.name!r} is {task.modality}.")


@lru_cache(maxsize=None)
def backbone_facts(name: str) -> BackboneFacts:
    """What validation needs of a backbone, built once per process (a build loads its weights)."""
    from lorabench.backbones import create_backbone

    bb = create_backbone(name, "cpu")
    return BackboneFacts(bb.modality, bb.targets(), frozenset(bb.aliases))


def check_grid(cells: list[RunConfig]) -> list[str]:
    """Validate every cell of a grid before any work; raises a LorabenchError naming the first problem. Returns
    warnings: inputs that are valid but surprising (the CLI prints them before it runs anything)."""
    from lorabench.adapters import load_adapter
    from lorabench.method import METHODS
    from lorabench.task_registry import get_task, task_source

    warnings: list[str] = []
    if not cells:
        return warnings
    check_device(cells[0].device)
    check_writable(cells[0].results_dir, "--results-dir")
    seen: set = set()
    backbones: dict[str, Any] = {}
    for cfg in cells:
        task = get_task(cfg.task, cfg.profile)
        method_cls = METHODS.get(cfg.method)
        if cfg.seed < 0:
            raise ConfigError(f"--seeds: seeds are non-negative integers, got {cfg.seed}.")
        if (cfg.task, cfg.profile) not in seen:
            seen.add((cfg.task, cfg.profile))
            methods = sorted({c.method for c in cells if c.task == cfg.task})
            check_task_hparams(task, methods, task_source(cfg.task))
            check_k(task, sorted({c.k for c in cells if c.task == cfg.task}, key=str), cfg.data_dir)
            if any(METHODS.get(m).needs_upstream for m in methods) and not cfg.upstream_dirs:
                check_upstream_data(task, cfg.data_dir)
                from lorabench.upstream import cache_root

                check_writable(cache_root(cfg.cache_dir), "--cache-dir")
        if (cfg.task, cfg.method) not in seen:
            seen.add((cfg.task, cfg.method))
            check_hparams(method_cls, cfg.hparams, "--hp")
            check_hparams(method_cls, method_cls.resolve_hparams(cfg.hparams, task), f"task {task.name!r} with --hp")
        if cfg.backbone not in backbones:
            backbones[cfg.backbone] = backbone_facts(cfg.backbone)
            for d in cfg.upstream_dirs:
                adapter = load_adapter(d, backbones[cfg.backbone].targets, backbones[cfg.backbone].aliases)
                bad = [t for t, (a, b) in adapter.weights.items() if not (torch.isfinite(a).all() and torch.isfinite(b).all())]
                if bad:
                    raise ConfigError(f"--upstream {d}: the adapter holds non-finite (NaN or inf) weights in "
                                      f"{len(bad)} matrices (first: {bad[0]}); retrain or replace it.")
                targets = backbones[cfg.backbone].targets
                missing = [t.name for t in targets if t.name not in adapter.weights]
                if missing:  # PEFT's reading of a partial adapter, exact, but rarely what was meant
                    warnings.append(f"--upstream {d} adapts {len(targets) - len(missing)} of the {len(targets)} target "
                                    f"matrices of {cfg.backbone} (not, e.g., {missing[0]}): composed, it leaves the "
                                    "others as they are (ΔW = 0), as PEFT reads a partial adapter.")
        if (cfg.task, cfg.backbone) not in seen:
            seen.add((cfg.task, cfg.backbone))
            check_backbone_fits(cfg.backbone, backbones[cfg.backbone].modality, task)
    return warnings
