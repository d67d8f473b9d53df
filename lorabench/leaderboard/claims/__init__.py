"""Claims as data: a paper's statements ("uniform composition beats full fine-tuning at K <= 5") written as
comparisons in a YAML file, and checked against the current results, paired by seed.

A claims file lists claims; each claim has comparisons {a, b, relation, margin, k, tasks, params, paper}.
Every comparison is evaluated per task x backbone x K it covers, with `lorabench.stats.compare` over the
seeds both methods ran (the others are named as dropped):

* ">" (A better): supported if the paired 95% CI of A - B lies above 0, contradicted if below, else undecided;
  "<" is the mirror image;
* "≈" with margin m (accuracy points): supported if the CI lies inside [-m, m], contradicted if it lies
  entirely outside, else undecided;
* fewer than 2 matched seeds: undecided (one seed has no spread); a method with no records: "not run".

"Seeds needed" is `lorabench.stats.seeds_needed` (paired t-test, alpha 0.05, power 0.8) at the observed
mean difference and spread, for the distance from the mean to the boundary the interval has to clear
(0 for ">" and "<"; the nearer of +-m for "≈").

Only current full-profile records with showable values enter: the caller (`build_site`) passes the records
its task tables use, so stale, smoke and invalid records never reach a verdict.

The package, one job per module: `schema` (the file format), `loading` (reading files), `verdicts` (a stratum's
verdict, pooling, seeds needed), `evaluation` (claims against records), `page` (claims.html).
"""

from lorabench.leaderboard.claims.evaluation import ClaimResult, ClaimsReport, evaluate_claims
from lorabench.leaderboard.claims.loading import PAPER_CLAIMS, file_label, load_claims, load_claims_file
from lorabench.leaderboard.claims.page import CLAIMS_PAGE, render_claims_page
from lorabench.leaderboard.claims.schema import Claim, Comparison, KRange, LoadedClaim, TaskFilter, parse_k
from lorabench.leaderboard.claims.verdicts import (CONTRADICTED, NOT_RUN, SUPPORTED, UNDECIDED, VERDICTS, ClaimPooled,
                                                   ClaimRow, decide, decide_interval, pool_comparison, seeds_to_decide)

__all__ = ["CLAIMS_PAGE", "CONTRADICTED", "NOT_RUN", "PAPER_CLAIMS", "SUPPORTED", "UNDECIDED", "VERDICTS", "Claim",
           "ClaimPooled", "ClaimResult", "ClaimRow", "ClaimsReport", "Comparison", "KRange", "LoadedClaim", "TaskFilter",
           "decide", "decide_interval", "evaluate_claims", "file_label", "load_claims", "load_claims_file", "parse_k",
           "pool_comparison", "render_claims_page", "seeds_to_decide"]
