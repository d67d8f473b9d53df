"""Classifier tuning: frozen backbone, only a linear head trains (features computed once)."""

from lorabench.method import FrozenFeatureMethod


class ClassifierTuning(FrozenFeatureMethod):
    name = "classifier_tuning"
    description = "frozen backbone; linear head only"
    tune_grid = {"head_lr": [1e-3, 1e-2, 1e-1]}
