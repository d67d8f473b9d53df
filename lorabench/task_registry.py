"""Load task specs from YAML files: the built-in `tasks/` folder plus folders in LORABENCH_TASKS.

A malformed file fails naming the file and the field path, so a contributor fixes it in one look.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from lorabench.errors import SpecError, UnknownNameError
from lorabench.profiles import resolve
from lorabench.specs import TaskSpec


def task_dirs() -> list[Path]:
    builtin = Path(str(resources.files("lorabench.tasks")))
    extra = [Path(p).expanduser() for p in os.environ.get("LORABENCH_TASKS", "").split(os.pathsep) if p]
    for d in extra:
        if not d.is_dir():
            raise SpecError(f"LORABENCH_TASKS names {d}, which is {'a file' if d.exists() else 'not there'}; "
                            f"it must list folders of task YAML files, separated by {os.pathsep!r}.")
    return [builtin, *extra]


def load_task_file(path: Path) -> TaskSpec:
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
    raw.setdefault("name", Path(path).stem)
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"Task file {path} is invalid: {problems}.") from None
    if spec.name != Path(path).stem:
        raise SpecError(f"Task file {path} declares name {spec.name!r}; the file must be named {spec.name}.yaml.")
    return spec


@lru_cache(maxsize=None)
def _all_tasks(dirs: tuple[Path, ...]) -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            spec = load_task_file(path)
            if spec.name in tasks:
                raise SpecError(f"Task {spec.name!r} is defined twice ({_SOURCES[spec.name]} and {path}).")
            tasks[spec.name] = spec
            _SOURCES[spec.name] = path
    return tasks


_SOURCES: dict[str, Path] = {}


def task_source(name: str) -> str:
    """The file a task was read from (for messages about its content)."""
    all_tasks()
    return f"task file {_SOURCES[name]}" if name in _SOURCES else f"task {name!r}"


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
