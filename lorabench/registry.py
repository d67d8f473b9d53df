"""Name -> object registries for tasks, methods and backbones.

One pattern for everything: in-tree objects register with a decorator, installed plugins through an
entry-point group. Unknown names fail listing the valid ones; a plugin that fails to import, or is not a
concrete subclass of the registry's `base_cls`, is kept aside (reported by name, with why) instead of breaking
the registry; an in-tree object that breaks the contract fails when it registers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from lorabench.errors import LorabenchError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, base_cls: type | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.base_cls = base_cls
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, object] | None = None
        self.broken: dict[str, str] = {}  # plugin name -> why it could not be loaded

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name or getattr(obj, "name"), obj)
            return obj

        return deco

    def contract_error(self, obj: object) -> str | None:
        """Why `obj` cannot be registered here (not a concrete subclass of `base_cls`), or None."""
        if self.base_cls is None:
            return None
        base = f"{self.base_cls.__module__}.{self.base_cls.__qualname__}"
        if not (isinstance(obj, type) and issubclass(obj, self.base_cls)):
            what = f"class {obj.__qualname__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
            return f"{what} is not a subclass of {base}"
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            return f"class {obj.__qualname__} does not implement {base}'s abstract method(s): {missing}"
        return None

    def add(self, name: str, obj: T, replace: bool = False) -> None:
        why = self.contract_error(obj)
        if why:
            raise LorabenchError(f"{self.kind} {name!r} cannot be registered: {why}.")
        if name in self._items and self._items[name] is not obj and not replace:
            raise LorabenchError(f"{self.kind} {name!r} is registered twice.")
        self._items[name] = obj

    def _discover(self) -> dict[str, object]:
        if self._entry_points is None:
            self._entry_points = {}
            if self.entry_point_group:
                for ep in entry_points(group=self.entry_point_group):
                    self._entry_points.setdefault(ep.name, ep)
        return self._entry_points

    def _load(self, name: str) -> T | None:
        ep = self._discover().get(name)
        if ep is None:
            return None
        try:
            obj = ep.load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plugin must not break the others
            self.broken[name] = f"{type(exc).__name__}: {exc}"
            return None
        why = self.contract_error(obj)
        if why:
            self.broken[name] = why
            return None
        self._items.setdefault(name, obj)
        return self._items[name]

    def names(self) -> list[str]:
        """Every usable name; loading plugins here records broken ones in `self.broken`."""
        for name in self._discover():
            if name not in self._items and name not in self.broken:
                self._load(name)
        return sorted(self._items)

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        obj = self._load(name)
        if obj is not None:
            return obj
        if name in self.broken:
            raise LorabenchError(
                f"The {self.kind} plugin {name!r} is installed but failed to load: {self.broken[name]}"
            )
        raise UnknownNameError(self.kind, name, self.names())

    def __contains__(self, name: str) -> bool:
        return name in self.names()
