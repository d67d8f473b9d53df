"""One digest helper for every key: result identities, adapter-store keys, cache keys.

sha256 everywhere (never Python's salted `hash()`), so a key is the same in every process and on
every machine, and a cache can be keyed by the content it depends on rather than by a name.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


def digest_json(obj: Any, n: int = 16) -> str:
    """Digest of a JSON-able object (keys sorted, so dict order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def digest_bytes(data: bytes, n: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:n]


def digest_files(paths: list[Path], n: int = 16) -> str:
    """Digest of the files' contents in order (e.g. a PEFT adapter folder's config and weights)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:n]


def digest_file(path: str | os.PathLike) -> str:
    """The sha256 (hex, whole) of a file's content, as data packs publish it; read once per process per
    (path, size, mtime), so naming the same data file in many cells costs one read."""
    st = os.stat(path)
    return _digest_file(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _digest_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def digest_module(model: torch.nn.Module, n: int = 16) -> str:
    """Digest of every parameter and buffer a module computes with (persistent or not), by name.

    Feature caches key on this, so a method that changes the weights can never be served the features
    of other weights, whatever it names them."""
    h = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name]
        if t is None:
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    for name, mod in sorted(model.named_modules()):  # modes decide the function, e.g. a LoRA layer's
        mode = getattr(mod, "mode", None)
        if isinstance(mode, str):
            h.update(f"{name}:mode={mode}".encode())
    return h.hexdigest()[:n]
