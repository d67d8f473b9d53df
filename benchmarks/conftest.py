"""Prints speed ratios measured side by side in one run (see test_speed.py).

Ratios use each benchmark's *minimum* round time, the estimate least disturbed by other work on a shared
machine (timeit's advice); medians are printed beside them to show the spread.
"""

from __future__ import annotations

TIMES: dict[str, tuple[float, float]] = {}  # benchmark id -> (min, median) seconds, filled by the benchmarks
MEMORY: dict[str, float] = {}  # benchmark id -> MiB the N modules take in the layers
N_STEPS = (3, 20, 50, 100, 200)

RATIOS = [  # (label, numerator, denominator, target); targets: issue 15 asks <= 1.5x at N = 200
    *[(f"{{bb}}: learned_composition N={n} step / lora step", f"{{bb}}-learned{n}", "{bb}-lora",
       1.2 if n <= 20 else 1.5) for n in N_STEPS],
    ("{bb}: uniform-composition eval / bare-backbone eval", "{bb}-eval_uniform", "{bb}-eval_bare", 1.05),
    *[(f"{{bb}}: arrow_routing N={n} eval / bare-backbone eval", f"{{bb}}-arrow{n}", "{bb}-eval_bare", None)
      for n in (3, 20, 50)],
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
                verdict = "no target" if target is None else "ok" if ratio <= target else "OVER TARGET"
                mem = MEMORY.get(num.format(bb=bb))
                terminalreporter.write_line(f"{label.format(bb=bb):<62} {ratio:6.3f}  (median {ratio_median:6.3f})  "
                                            f"target <= {target}  {verdict}"
                                            + (f"  modules in layers: {mem:,.0f} MiB" if mem is not None else ""))
