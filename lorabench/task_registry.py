"""Load task specs from YAML files: the built-in `lorabench/tasks/` folder plus folders in LORABENCH_TASKS.

Task files are written by hand; these keep them short without a generator:

* `include: base.yaml` (or a list, merged in order, later files winning): the included mappings are
  deep-merged under the file (mappings merge key by key; lists and scalars are replaced; the including
  file wins). Paths are relative to the including file, else to the built-in folder (so a user folder
  can build on the shipped bases). Files named `_*.yaml` are bases: only included, never tasks.
  A `name` is never inherited: it defaults to the file's stem.
* `sweep: {name: "x_r{rank}", over: [{rank: 4, ...}, ...]}`: one task per entry, the entry deep-merged
  over the file. An entry's top-level scalars are variables: `{var}` in any string of the task is
  replaced by its value (a string that is exactly "{var}" takes the value itself, int or float kept),
  and the variables that are not task fields are removed. The file registers only the expanded tasks.
* `library: {pools: [...], order_seed: "...", size: N}` writes `upstream:` for a library of many small
  modules: each pool is `{prefix, train, pairs: C}` (one module per class pair of C classes, named
  `<prefix>_<a><b>`) or `{prefix, train, groups: {name: [classes...]}}` (one module per group); the modules
  are put in one fixed order (a permutation seeded by `order_seed`) and the first `size` (default: all)
  are the task's, so a sweep over `size` gives nested pools. A file's `library` replaces an included
  `upstream` list (and its `upstream` an included `library`).
* Top-level keys starting with `x-` are ignored: a place for YAML anchors that the file reuses
  (`x-train: &train {...}`, then `train: {<<: *train, classes: [0, 1]}`).

A malformed file fails naming the file (and sweep entry) and the field path, so a contributor fixes it
in one look.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from lorabench.errors import SpecError, UnknownNameError
from lorabench.profiles import resolve
from lorabench.seeding import derive_seed
from lorabench.specs import TaskSpec

PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _builtin_dir() -> Path:
    return Path(str(resources.files("lorabench.tasks")))


def task_dirs() -> list[Path]:
    builtin = _builtin_dir()
    extra = [Path(p).expanduser() for p in os.environ.get("LORABENCH_TASKS", "").split(os.pathsep) if p]
    for d in extra:
        if not d.is_dir():
            raise SpecError(f"LORABENCH_TASKS names {d}, which is {'a file' if d.exists() else 'not there'}; "
                            f"it must list folders of task YAML files, separated by {os.pathsep!r}.")
    return [builtin, *extra]


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(f"Task file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8.") from None
    except OSError as exc:
        raise SpecError(f"Task file {path} cannot be read: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"Task file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"Task file {path} must hold a mapping of fields, got {type(raw).__name__}.")
    return {k: v for k, v in raw.items() if not str(k).startswith("x-")}  # x-: the file's own YAML anchors


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merge recursively, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _with_includes(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's mapping with everything it includes merged underneath."""
    chain = (*chain, Path(path))
    raw = _read(path)
    includes = raw.pop("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError(f"Task file {path}: include must be a file name or a list of them, got {includes!r}.")
    merged: dict = {}
    for inc in includes:
        target = Path(path).parent / inc
        if not target.is_file() and (_builtin_dir() / inc).is_file():
            target = _builtin_dir() / inc  # a file in a LORABENCH_TASKS folder can build on the shipped bases
        if target.resolve() in [p.resolve() for p in chain]:
            cycle = " -> ".join(str(p) for p in (*chain, target))
            raise SpecError(f"Task files include each other in a cycle: {cycle}.")
        if not target.is_file():
            raise SpecError(f"Task file {path} includes {inc}, which is not there ({target}, nor in the built-in "
                            f"tasks folder {_builtin_dir()}).")
        base = _with_includes(target, chain)
        if "sweep" in base:
            raise SpecError(f"Task file {path} includes {target}, which holds a sweep; include a plain task "
                            f"or base file instead.")
        base.pop("name", None)  # a task's name is its own file's, never inherited
        merged = _merge(merged, base)
    # `library` and `upstream` are two ways to write one list: the including file's replaces the inherited one
    for mine, theirs in (("library", "upstream"), ("upstream", "library")):
        if mine in raw:
            merged.pop(theirs, None)
    return _merge(merged, raw)


def _pool_modules(pool, where: str) -> list[dict]:
    if not isinstance(pool, dict) or not {"prefix", "train"} <= set(pool) or len(set(pool) & {"pairs", "groups"}) != 1 \
            or set(pool) - {"prefix", "train", "pairs", "groups"}:
        raise SpecError(f"{where} must be a mapping of `prefix`, `train` and exactly one of `pairs` (a number of "
                        f"classes) or `groups` (a mapping of module name to classes), got {pool!r}.")
    prefix, train = pool["prefix"], pool["train"]
    if not isinstance(prefix, str) or not isinstance(train, dict) or "classes" in train:
        raise SpecError(f"{where}: `prefix` must be a string and `train` a dataset mapping without `classes` "
                        f"(the pool sets them).")
    if "pairs" in pool:
        c = pool["pairs"]
        if not isinstance(c, int) or isinstance(c, bool) or c < 2:
            raise SpecError(f"{where}: pairs must be a number of classes of at least 2, got {c!r}.")
        sep = "" if c <= 10 else "_"
        return [{"name": f"{prefix}_{a}{sep}{b}", "train": {**train, "classes": [a, b]}}
                for a in range(c) for b in range(a + 1, c)]
    groups = pool["groups"]
    if not isinstance(groups, dict) or not groups or not all(isinstance(v, list) and v for v in groups.values()):
        raise SpecError(f"{where}: groups must map each module's name to a non-empty list of classes.")
    return [{"name": f"{prefix}_{name}", "train": {**train, "classes": classes}} for name, classes in groups.items()]


def _library(raw: dict, where: str) -> dict:
    """`raw` with its `library:` written out as `upstream:` (see the module docstring)."""
    if "library" not in raw:
        return raw
    raw = dict(raw)
    lib = raw.pop("library")
    if "upstream" in raw:
        raise SpecError(f"{where} sets both `library` and `upstream`; a library writes the upstream list itself.")
    if not isinstance(lib, dict) or "pools" not in lib or set(lib) - {"pools", "order_seed", "size"}:
        raise SpecError(f"{where}: library must be a mapping with `pools` (a list) and optionally `order_seed` "
                        f"(a string) and `size` (how many of the ordered modules to keep), got keys {sorted(lib)}.")
    pools = lib["pools"]
    if not isinstance(pools, list) or not pools:
        raise SpecError(f"{where}: library.pools must be a non-empty list.")
    modules = [m for i, pool in enumerate(pools, 1) for m in _pool_modules(pool, f"{where}, library pool {i}")]
    names = [m["name"] for m in modules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"{where}: library modules {twice} are named twice; give the pools different prefixes.")
    if "order_seed" in lib:
        modules = [modules[i] for i in np.random.default_rng(derive_seed(lib["order_seed"])).permutation(len(modules))]
    size = lib.get("size", len(modules))
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= len(modules):
        raise SpecError(f"{where}: library.size must be a whole number from 1 to {len(modules)} (the pools' "
                        f"modules), got {size!r}.")
    raw["upstream"] = modules[:size]
    return raw


def _validate(raw: dict, where: str) -> TaskSpec:
    raw = _library(raw, where)
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{where} is invalid: {problems}.") from None


def _fill(value, variables: dict, used: set, where: str, field: str = ""):
    """`value` with every `{var}` in its strings replaced (a new object: YAML aliases share theirs)."""
    if isinstance(value, dict):
        return {k: _fill(v, variables, used, where, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, variables, used, where, f"{field}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    for var in PLACEHOLDER.findall(value):
        if var not in variables:
            have = ", ".join(sorted(variables)) or "none"
            raise SpecError(f"{where}: {field} uses {{{var}}}, which the entry does not set (its variables: {have}).")
        used.add(var)
    whole = PLACEHOLDER.fullmatch(value)
    if whole:
        return variables[whole.group(1)]
    return PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), value)


def _expand(path: Path, body: dict, sweep) -> list[tuple[TaskSpec, str]]:
    """The tasks of a sweep file: each entry merged over the body, its variables filled in."""
    if not isinstance(sweep, dict) or set(sweep) != {"name", "over"} or not isinstance(sweep["name"], str):
        raise SpecError(f"Task file {path}: sweep must be a mapping with exactly `name` (a string with "
                        f"{{var}} placeholders) and `over` (a list of entries).")
    entries = sweep["over"]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SpecError(f"Task file {path}: sweep.over must be a non-empty list of mappings.")
    if "name" in body or any("name" in e for e in entries):
        raise SpecError(f"Task file {path} holds a sweep, so its tasks are named by sweep.name; remove `name`.")
    out: list[tuple[TaskSpec, str]] = []
    for i, entry in enumerate(entries, 1):
        where = f"Task file {path}, sweep entry {i}"
        variables = {k: v for k, v in entry.items() if isinstance(v, (str, int, float, bool))}
        used: set[str] = set()
        name = _fill(sweep["name"], variables, used, where, "sweep.name")
        raw = {k: v for k, v in _merge(body, entry).items() if k in TaskSpec.model_fields or k not in variables}
        raw = {**_fill(raw, variables, used, where), "name": str(name)}
        unused = sorted(set(variables) - used - set(TaskSpec.model_fields))
        if unused:
            raise SpecError(f"{where} sets {', '.join(unused)}: neither a task field nor used as a {{placeholder}}.")
        source = f"task file {path}, sweep entry {i} ({name})"
        out.append((_validate(raw, f"{where} ({name})"), source))
    names = [spec.name for spec, _ in out]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise SpecError(f"Task file {path}: sweep entries {[i for i, n in enumerate(names, 1) if n == twice]} are all "
                        f"named {twice!r}; sweep.name must tell the entries apart.")
    return out


def _plain(path: Path, raw: dict) -> TaskSpec:
    raw.setdefault("name", path.stem)
    spec = _validate(raw, f"Task file {path}")
    if spec.name != path.stem:
        raise SpecError(f"Task file {path} declares name {spec.name!r}; the file must be named {spec.name}.yaml.")
    return spec


def load_task_specs(path: Path) -> list[tuple[TaskSpec, str]]:
    """Every task a file defines (one; a sweep file: one per entry), each with its source for messages."""
    raw = _with_includes(Path(path))
    if "sweep" in raw:
        return _expand(Path(path), raw, raw.pop("sweep"))
    return [(_plain(Path(path), raw), f"task file {path}")]


def load_task_file(path: Path) -> TaskSpec:
    """The task of a plain task file (a sweep file defines several: `load_task_specs`)."""
    raw = _with_includes(Path(path))
    if "sweep" in raw:
        raise SpecError(f"Task file {path} holds a sweep of several tasks; load it with load_task_specs.")
    return _plain(Path(path), raw)


@lru_cache(maxsize=None)
def _all_tasks(dirs: tuple[Path, ...]) -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for d in dirs:
        found = [s for path in sorted(d.glob("*.yaml")) if not path.name.startswith("_") for s in load_task_specs(path)]
        for spec, source in sorted(found, key=lambda s: s[0].name):  # listed by name, as one file per task was
            if spec.name in tasks:
                raise SpecError(f"Task {spec.name!r} is defined twice ({_SOURCES[spec.name]} and {source}).")
            tasks[spec.name] = spec
            _SOURCES[spec.name] = source
    return tasks


_SOURCES: dict[str, str] = {}


def task_source(name: str) -> str:
    """Where a task was read from: its file, and for a swept task the entry (for messages about its content)."""
    all_tasks()
    return _SOURCES.get(name, f"task {name!r}")


def all_tasks() -> dict[str, TaskSpec]:
    return _all_tasks(tuple(task_dirs()))


def get_task(name: str, profile: str = "full") -> TaskSpec:
    """The task as run under `profile` (`lorabench.profiles`): full by default."""
    tasks = all_tasks()
    if name not in tasks:
        raise UnknownNameError("task", name, tasks)
    key = (name, profile, id(tasks[name]))
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve(tasks[name], profile)
    return _RESOLVED[key]


_RESOLVED: dict[tuple[str, str, int], TaskSpec] = {}
