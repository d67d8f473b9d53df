"""Prints speed ratios measured side by side in one run (see test_speed.py).

Ratios use each benchmark's *minimum* round time, the estimate least disturbed by other work on a shared
machine (timeit's advice); medians are printed beside them to show the spread. Training steps run paired with
a LoRA step, round by round, and the median of the per-round ratios is printed too.
"""

from __future__ import annotations

TIMES: dict[str, tuple[float, float]] = {}  # benchmark id -> (min, median) seconds, filled by the benchmarks
MEMORY: dict[str, float] = {}  # benchmark id -> MiB the N modules take in the layers
PAIRED: dict[str, float] = {}  # benchmark id -> median over rounds of (this round / its paired LoRA round)
N_STEPS = (3, 20, 50, 100, 200)

RATIOS = [  # (label, numerator, denominator, target); targets: issue 15 asks <= 1.5x at N = 200
    *[(f"{{bb}}: learned_composition N={n} step / lora step", f"{{bb}}-learned{n}", f"{{bb}}-lora@{n}",
       1.2 if n <= 20 else 1.5) for n in N_STEPS],
    ("{bb}: uniform-composition eval / bare-backbone eval", "{bb}-eval_uniform", "{bb}-eval_bare", 1.05),
    *[(f"{{bb}}: arrow_routing N={n} eval / bare-backbone eval", f"{{bb}}-arrow{n}", "{bb}-eval_bare", None)
      for n in N_STEPS],
    ("{bb}: upstream LoRA step, factored 1x1 conv / merged", "{bb}-upstream_factored", "{bb}-upstream_merged", None),
    ("{bb}: upstream LoRA step, default malloc / freed kept", "{bb}-upstream_default_malloc",
     "{bb}-upstream_merged", None),
]


def pytest_terminal_summary(terminalreporter):
    if not TIMES:
        return
    terminalreporter.section("lorabench speed ratios (same run; min, then median)")
    import torch

    terminalreporter.write_line(f"torch threads: {torch.get_num_threads()}")
    for bb in ("efficientnet_lite0", "efficientnet_lite0@224", "minilm"):
        for label, num, den, target in RATIOS:
            n, d = TIMES.get(num.format(bb=bb)), TIMES.get(den.format(bb=bb))
            if n and d:
                ratio, ratio_median = n[0] / d[0], n[1] / d[1]
                verdict = "no target" if target is None else "ok" if ratio <= target else "OVER TARGET"
                mem = MEMORY.get(num.format(bb=bb))
                paired = PAIRED.get(num.format(bb=bb))
                terminalreporter.write_line(f"{label.format(bb=bb):<62} {ratio:6.3f}  (median {ratio_median:6.3f})  "
                                            + (f"paired median {paired:6.3f}  " if paired is not None else "")
                                            + f"target <= {target}  {verdict}"
                                            + (f"  modules in layers: {mem:,.0f} MiB" if mem is not None else ""))
