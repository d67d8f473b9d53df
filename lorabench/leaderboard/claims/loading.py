"""Reading claims files: the paper's (shipped beside this module) and the user's, each error located in the
file (claims[2] (id 'x').comparisons[0].relation) with close matches; ids unique over all files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lorabench.errors import SpecError
from lorabench.leaderboard.claims.schema import ClaimsFile, LoadedClaim

PAPER_CLAIMS = Path(__file__).parent / "paper.yaml"


def _where(loc: tuple, raw: Any) -> str:
    """claims[2].comparisons[0].relation, with the claim's id when the file gives one."""
    out, node = "", raw
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if i == 1 and loc[0] == "claims" and isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" (id {node['id']!r})"
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("function-after", "function-before"):
            out += ("." if out else "") + part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _messages(exc: ValidationError, raw: Any) -> list[str]:
    seen, out = set(), []
    for e in exc.errors():
        where = _where(tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in (
            "str", "list[str]", "TaskFilter", "literal['*']")))), raw)
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (allowed: see the format at the top of lorabench/leaderboard/claims/paper.yaml)"
        key = (where, msg)
        if key not in seen:
            seen.add(key)
            out.append(f"{where}: {msg}")
    return out


def load_claims_file(path: str | Path) -> list[LoadedClaim]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"--claims {path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"--claims {path}: cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"Claims file {path}: not valid YAML{at} ({problem}).") from None
    if not isinstance(raw, dict):
        raise SpecError(f"Claims file {path}: expected a mapping with a `claims:` list at the top level, got "
                        f"{type(raw).__name__ if raw is not None else 'an empty file'}.")
    try:
        parsed = ClaimsFile.model_validate(raw)
    except ValidationError as exc:
        msgs = _messages(exc, raw)
        more = f" (and {len(msgs) - 5} more)" if len(msgs) > 5 else ""
        raise SpecError(f"Claims file {path} does not validate: " + "; ".join(msgs[:5]) + more + ".") from None
    ids = [c.id for c in parsed.claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SpecError(f"Claims file {path}: claim id(s) {', '.join(map(repr, dup))} appear more than once; "
                        "each claim needs its own id.")
    return [LoadedClaim(claim=c, file=str(path), title=parsed.title, citation=parsed.citation) for c in parsed.claims]


def load_claims(files: Iterable[str | Path] = (), include_paper: bool = True) -> list[LoadedClaim]:
    """The paper's claims (shipped with the package) followed by each file's, ids unique over all of them."""
    out: list[LoadedClaim] = []
    paths = ([PAPER_CLAIMS] if include_paper else []) + [Path(f) for f in files]
    seen: dict[str, str] = {}
    for path in dict.fromkeys(paths):  # a file given twice is read once
        for lc in load_claims_file(path):
            if lc.claim.id in seen:
                raise SpecError(f"Claims file {path}: claim id {lc.claim.id!r} is already used in {seen[lc.claim.id]}; "
                                "give it another id.")
            seen[lc.claim.id] = str(path)
            out.append(lc)
    return out


def file_label(file: str) -> str:
    """The shipped paper claims by their place in the package; other files as given on the command line."""
    return "lorabench/leaderboard/claims/paper.yaml (built in)" if Path(file) == PAPER_CLAIMS else file
