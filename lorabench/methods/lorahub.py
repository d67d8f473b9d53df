"""LoraHub (Huang et al. 2024) with exact composition: W = W0 + Σₙ wₙ·ΔWₙ, w found without gradients.

The weights w ∈ [-bound, bound]^N minimise support loss(w) + l1·|w|₁, searched by scipy's Nelder-Mead
(bounded, at most `budget` evaluations) from the uniform weights 1/N. Unlike the original, which
sums the A's and the B's separately, every candidate composes ΔW = scale·B·A exactly
(`composed_delta`). The support loss is `merging.support_loss` (a leave-one-out nearest-class-mean
cross-entropy on the merged backbone's features; the zero-shot scorer's for multiple choice): each
candidate costs one forward pass over the support set. w is searched, not trained: 0 trainable
parameters; only the head trains afterwards.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import Field
from scipy.optimize import minimize

from lorabench.methods.scored_merge import ScoredMerge


def lorahub_objective(score: Callable[[np.ndarray], float], l1: float) -> Callable[[np.ndarray], float]:
    return lambda w: score(w) + l1 * float(np.abs(w).sum())


def search_weights(objective: Callable[[np.ndarray], float], n: int, budget: int, bound: float,
                   step: float) -> tuple[np.ndarray, float, int]:
    """Bounded Nelder-Mead from w = 1/N; returns the best weights seen, their objective, #evaluations."""
    seen: list[tuple[float, np.ndarray]] = []

    def tracked(w: np.ndarray) -> float:
        value = objective(w)
        seen.append((value, np.array(w, dtype=float)))
        return value

    x0 = np.full(n, 1.0 / n)
    simplex = np.clip(np.vstack([x0, x0 + step * np.eye(n)]), -bound, bound)
    minimize(tracked, x0, method="Nelder-Mead", bounds=[(-bound, bound)] * n,
             options={"maxfev": budget, "initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-4})
    value, best = min(seen, key=lambda vw: vw[0])
    return best, value, len(seen)


class LoraHub(ScoredMerge):
    name = "lorahub"
    description = "gradient-free search of one weight per module (Nelder-Mead, L1), exact ΣwΔW; head only"

    class Params(ScoredMerge.Params):
        budget: int = Field(30, ge=1)
        l1: float = Field(0.05, ge=0)
        bound: float = Field(1.5, gt=0)
        step: float = Field(0.5, gt=0)

    tune_grid = {"l1": [0.0, 0.05, 0.2]}

    def choose(self, score: Callable[[Sequence[float]], float]) -> list[float]:
        objective = lorahub_objective(score, self.params.l1)
        self.start_value = objective(np.full(self.stacked.n, 1.0 / self.stacked.n))
        self.weights, self.value, self.n_evals = search_weights(
            objective, self.stacked.n, self.params.budget, self.params.bound, self.params.step)
        return self.weights.tolist()

    def extras(self) -> dict[str, Any]:
        return {"upstream": [a.name for a in self.ctx.adapters], "weights": [round(float(w), 6) for w in self.weights],
                "objective": round(self.value, 6), "objective_at_uniform": round(self.start_value, 6),
                "evaluations": self.n_evals}
