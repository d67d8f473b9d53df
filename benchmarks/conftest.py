"""Prints speed ratios measured side by side in one run (see test_speed.py).

Ratios use each benchmark's *minimum* round time, the estimate least disturbed by other work on a shared
machine (timeit's advice); medians are printed beside them to show the spread.
"""

from __future__ import annotations

TIMES: dict[str, tuple[float, float]] = {}  # benchmark id -> (min, median) seconds, filled by the benchmarks

RATIOS = [  # (label, numerator, denominator, target)
    ("{bb}: learned_composition N=3 step / lora step", "{bb}-learned3", "{bb}-lora", 1.2),
    ("{bb}: learned_composition N=10 step / lora step", "{bb}-learned10", "{bb}-lora", 1.2),
    ("{bb}: learned_composition N=20 step / lora step", "{bb}-learned20", "{bb}-lora", 1.2),
    ("{bb}: uniform-composition eval / bare-backbone eval", "{bb}-eval_uniform", "{bb}-eval_bare", 1.05),
]


def pytest_terminal_summary(terminalreporter):
    if not TIMES:
        return
    terminalreporter.section("lorabench speed ratios (same run; min, then median)")
    for bb in ("efficientnet_lite0", "minilm"):
        for label, num, den, target in RATIOS:
            n, d = TIMES.get(num.format(bb=bb)), TIMES.get(den.format(bb=bb))
            if n and d:
                ratio, ratio_median = n[0] / d[0], n[1] / d[1]
                verdict = "ok" if ratio <= target else "OVER TARGET"
                terminalreporter.write_line(f"{label.format(bb=bb):<62} {ratio:5.3f}  (median {ratio_median:5.3f})  "
                                            f"target <= {target}  {verdict}")
