"""Test fixture: plugins that import fine but break the method contract, as a half-written plugin would."""

from lorabench.method import Method


class NoPredict(Method):
    """Trains, but forgot `predict` and `trainable_params`: refused when loaded, before it could train."""

    name = "no_predict_example"

    def fit(self, support):
        raise AssertionError("a method that cannot predict must never be trained (test fixture)")


class NotAMethod:
    """Has the hooks' names but is not a lorabench.method.Method."""

    name = "not_a_method_example"

    def fit(self, support): ...

    def predict(self, split): ...
