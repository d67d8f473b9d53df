"""Prints speed ratios measured side by side in one run (see test_speed.py)."""

from __future__ import annotations

MEDIANS: dict[str, float] = {}  # benchmark id -> median seconds, filled by the benchmarks

RATIOS = [  # (label, numerator, denominator, target)
    ("{bb}: learned_composition N=3 step / lora step", "{bb}-learned3", "{bb}-lora", 1.2),
    ("{bb}: learned_composition N=10 step / lora step", "{bb}-learned10", "{bb}-lora", 1.2),
    ("{bb}: learned_composition N=20 step / lora step", "{bb}-learned20", "{bb}-lora", 1.2),
    ("{bb}: uniform-composition eval / bare-backbone eval", "{bb}-eval_uniform", "{bb}-eval_bare", 1.05),
]


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    terminalreporter.section("lorabench speed ratios (medians, same run)")
    for bb in ("efficientnet_lite0", "minilm"):
        for label, num, den, target in RATIOS:
            n, d = MEDIANS.get(num.format(bb=bb)), MEDIANS.get(den.format(bb=bb))
            if n and d:
                ratio = n / d
                verdict = "ok" if ratio <= target else "OVER TARGET"
                terminalreporter.write_line(f"{label.format(bb=bb):<62} {ratio:5.3f}  (target <= {target})  {verdict}")
