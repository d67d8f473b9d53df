"""Zero-shot: score choices with the untrained scorer (QA only).

For MiniLM the scorer is 20·cos(question, choice); for a seq2seq LM, the choice log-likelihood.
Nothing trains, so the support set is ignored.
"""

from lorabench.data import Split
from lorabench.method import FrozenFeatureMethod


class ZeroShot(FrozenFeatureMethod):
    name = "zero_shot"
    description = "untrained scorer (multiple-choice QA only)"
    modalities = ("multiple_choice",)

    def fit(self, support: Split) -> None:
        pass

    def head_params(self) -> int:
        return 0
