"""One exception family for errors the user can cause; the CLI turns them into one paragraph.

Anything else that escapes is a bug and may show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LorabenchError(Exception):
    """An error caused by user input (a name, a file, a flag) that the user can fix."""


class UnknownNameError(LorabenchError):
    """A name that is not registered; the message lists valid names and close matches."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(self.valid) if self.valid else "(none registered)"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {listed}.")


class SpecError(LorabenchError):
    """A task spec or config file that does not validate."""


class DataNotFoundError(LorabenchError):
    """A dataset that is neither in the data dir nor reachable on the hub."""


class DataError(LorabenchError):
    """A data file that exists but cannot be used (empty, truncated, wrong columns); the message names it."""


class AdapterError(LorabenchError):
    """A LoRA adapter on disk that is corrupt or does not fit the backbone."""


class BackboneUnavailableError(LorabenchError):
    """Pretrained weights that are neither cached locally nor reachable on the hub."""


class ConfigError(LorabenchError):
    """A run option that is out of range or inconsistent with the task."""


class TrainingError(LorabenchError):
    """Training that produced a non-finite loss or weights: the cell fails and writes no record."""
