"""claims.html, rendered in the site's jinja environment."""

from __future__ import annotations

from typing import Any


from lorabench.leaderboard.formatting import pts
from lorabench.leaderboard.claims.evaluation import ClaimsReport
from lorabench.leaderboard.claims.verdicts import VERDICTS

CLAIMS_PAGE = "claims.html"


def render_claims_page(env, report: ClaimsReport, pages: list, meta: dict[str, Any]) -> str:
    """claims.html, in the site's jinja environment (same base template, nav and footer as the task pages)."""
    env.filters.setdefault("pts", pts)
    return env.get_template("claims.html").render(report=report, verdicts=VERDICTS, pages=pages, meta=meta,
                                                  on_claims_page=True)
