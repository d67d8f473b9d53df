"""runtime.keep_freed_memory: a training step's freed activation maps are reused, not page-faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys, torch
from lorabench.runtime import keep_freed_memory
tuned = keep_freed_memory()
conv = torch.nn.Conv2d(64, 64, 1)
x = torch.randn(16, 64, 112, 112, requires_grad=True)  # 51 MB maps: above glibc's largest dynamic threshold
def step():
    y = torch.nn.functional.relu6(conv(x) * 2.0)
    y.square().mean().backward()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(opt_out: bool) -> dict:
    env = {**os.environ, "LORABENCH_KEEP_FREED_MEMORY": "0" if opt_out else "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain, tuned = _probe(opt_out=True), _probe(opt_out=False)
    assert plain["tuned"] is False and tuned["tuned"] is True
    map_pages = 16 * 64 * 112 * 112 * 4 // os.sysconf("SC_PAGE_SIZE")
    assert plain["faults"] > 3 * 3 * map_pages  # 3 steps, each faulting in at least 3 fresh maps
    assert tuned["faults"] < plain["faults"] / 4  # measured: 63k against 640k faults


def test_the_setting_is_made_once_per_process():
    from lorabench.runtime import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
