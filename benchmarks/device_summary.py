"""One grid's figures for the device scripts (device_check.sh, device_pacs.sh): its records' cell time, upstream
training time and images/s, and the GPU's SM utilisation from `nvidia-smi dmon -s u` sampled each second.

    python benchmarks/device_summary.py RESULTS_DIR [--dmon FILE] [--wall SECONDS] [--store ADAPTER_STORE]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def sm_samples(dmon: Path) -> list[int]:
    """The `sm` column (percent) of `nvidia-smi dmon -s u`: one row per second, headers start with '#'."""
    rows = [line.split() for line in dmon.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [int(r[1]) for r in rows if len(r) > 1 and r[1].isdigit()]


def upstream_lines(store: Path) -> list[str]:
    """Each adapter the store holds (a fresh store: those this grid trained): training and probe seconds and the
    training images/s (steps x batch / seconds), from the metadata the trainer writes beside the weights."""
    lines = []
    for cfg in sorted(store.rglob("adapter_config.json")):
        meta = json.loads(cfg.read_text()).get("lorabench", {})
        if "train_s" not in meta:
            continue
        images = meta["train_log"]["steps"] * meta["recipe"]["batch_size"]
        lines.append(f"  upstream {meta['upstream_task']}: train {meta['train_s']:.1f} s "
                     f"({images / max(meta['train_s'], 1e-9):.0f} images/s, {meta['train_log']['steps']} steps), "
                     f"probe {meta['probe_s']:.1f} s, precision {meta.get('precision') or 'fp32'}")
    return lines


def summary(results: Path, dmon: Path | None = None, wall: float | None = None,
            store: Path | None = None) -> list[str]:
    recs = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    cells = [r["timings"]["total_s"] for r in recs]
    lines = [f"{len(recs)} records; cell seconds: sum {sum(cells):.1f}, max {max(cells, default=0):.1f}; "
             f"precision {sorted({r['config'].get('precision', 'fp32') for r in recs})}; device {sorted({r['device'] for r in recs})}"]
    if wall:
        lines.append(f"grid wall time {wall:.0f} s (process start, data, upstream training and every cell)")
    by_method: dict[str, list[float]] = {}
    for r in recs:
        by_method.setdefault(f"{r['method']} K={r['k']}", []).append(r["timings"]["total_s"])
    lines += [f"  {name}: {len(v)} cells, mean {statistics.mean(v):.2f} s" for name, v in sorted(by_method.items())]
    if store is not None and store.is_dir():
        lines += upstream_lines(store)
    if dmon is not None and dmon.is_file():
        sm = sm_samples(dmon)
        lines.append(f"SM utilisation over {len(sm)} s: mean {statistics.mean(sm):.1f} %, max {max(sm)} %" if sm
                     else "no dmon samples")
    return lines


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--dmon", type=Path)
    ap.add_argument("--wall", type=float, help="the grid's wall-clock seconds")
    ap.add_argument("--store", type=Path, help="the adapter store the grid trained into")
    a = ap.parse_args()
    print("\n".join(summary(a.results, a.dmon, a.wall, a.store)))
