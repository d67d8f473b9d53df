"""Name -> object registries for tasks, methods and backbones.

One pattern for everything: in-tree objects register with a decorator, installed plugins through an
entry-point group. Unknown names fail listing the valid ones; a plugin that fails to import is kept
aside (reported by name) instead of breaking the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from lorabench.errors import LorabenchError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, object] | None = None
        self.broken: dict[str, str] = {}  # plugin name -> why it could not be loaded

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name or getattr(obj, "name"), obj)
            return obj

        return deco

    def add(self, name: str, obj: T, replace: bool = False) -> None:
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
