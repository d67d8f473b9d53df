"""benchmarks/device_summary.py: the figures a lent GPU's one prepared run reports (issue 26) come from real
records, a real adapter store and nvidia-smi dmon's own format, so a run is not wasted on a misread file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `nvidia-smi dmon -s u -d 1` as it prints: two header lines (repeated every so often), one row per second;
# columns the GPU does not report read "-".
DMON = """# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0      4      1      0      0      -      -
    0     62     20      0      0      -      -
# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0     90     35      0      0      -      -
    0      -      -      -      -      -      -
"""


@pytest.fixture(scope="module")
def device_summary():
    spec = importlib.util.spec_from_file_location("device_summary", REPO / "benchmarks" / "device_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_reads_the_records_the_adapter_store_and_dmon_of_a_real_grid(device_summary, quick_task,
                                                                                 tmp_path):
    from lorabench.grid import expand_grid, run_grid

    cells = expand_grid(["uniform_composition", "classifier_tuning"], [quick_task], [1], [0], None,
                        results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    assert len(run_grid(cells).done) == 2
    (tmp_path / "dmon.txt").write_text(DMON)

    lines = device_summary.summary(tmp_path / "r", tmp_path / "dmon.txt", 12.0, tmp_path / "c")
    text = "\n".join(lines)
    assert lines[0].startswith("2 records;") and "precision ['fp32']" in lines[0] and "device ['cpu']" in lines[0]
    assert "grid wall time 12 s" in text
    assert "classifier_tuning K=1: 1 cells" in text and "uniform_composition K=1: 1 cells" in text
    assert "SM utilisation over 3 s: mean 52.0 %, max 90 %" in text  # (4 + 62 + 90) / 3; headers and "-" skipped

    metas = [json.loads(p.read_text())["lorabench"] for p in (tmp_path / "c").rglob("adapter_config.json")]
    assert sorted(m["upstream_task"] for m in metas) == ["digits_01", "digits_23"]
    for m in metas:  # images/s = steps x batch / seconds, from what the trainer wrote
        rate = m["train_log"]["steps"] * m["recipe"]["batch_size"] / m["train_s"]
        assert f"upstream {m['upstream_task']}: train {m['train_s']:.1f} s ({rate:.0f} images/s," in text
