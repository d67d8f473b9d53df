"""Run the same grid with the local and the Ray executor, side by side, and print what Ray costs.

    python benchmarks/bench_executors.py                       # digits, 2 methods x K 1,5 x seeds 0,1,2
    python benchmarks/bench_executors.py --methods classifier_tuning --k 1 --seeds 0,1 --num-cpus 2

Upstream adapters are trained once before either run (not timed), so both runs do the same work.
Per-cell overhead = the driver's latency for a cell (submitted -> record back) minus the time spent
inside run_cell; the first cell on each Ray worker also pays for starting that worker process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lorabench.grid import expand_grid, needed_upstream_jobs, run_grid
from lorabench.executors import LocalExecutor, RayExecutor
from lorabench.upstream import ensure_upstream_adapter


def timed_grid(cells, executor) -> tuple[float, dict[str, float], dict[str, float], dict[str, float]]:
    """Wall time, and per cell: driver latency, time inside run_cell, score."""
    started: dict[str, float] = {}
    latency: dict[str, float] = {}

    def on_event(kind, cfg, *rest):
        if kind == "start":
            started[cfg.cell_id()] = time.perf_counter()
        elif kind in ("done", "fail"):
            latency[cfg.cell_id()] = time.perf_counter() - started[cfg.cell_id()]

    t0 = time.perf_counter()
    report = run_grid(cells, on_event=on_event, executor=executor)
    wall = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"{len(report.failed)} cell(s) failed, e.g. {report.failed[0][0].cell_id()}: "
                         f"{report.failed[0][1]}")
    inside = {r.cell_id: r.timings.total_s for r in report.done}
    scores = {r.cell_id: r.value for r in report.done}
    return wall, latency, inside, scores


def overhead(latency: dict[str, float], inside: dict[str, float]) -> list[float]:
    return [latency[c] - inside[c] for c in inside]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--methods", default="classifier_tuning,uniform_composition")
    ap.add_argument("--k", default="1,5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="size of the local Ray instance")
    ap.add_argument("--cpus-per-run", type=float, default=1.0)
    ap.add_argument("--work-dir", type=Path, default=None, help="results + adapter store (default: a temp dir)")
    args = ap.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_executors_"))
    ks = [k if k == "all" else int(k) for k in args.k.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    def cells(name: str):
        return expand_grid(args.methods.split(","), [args.task], ks, seeds, None,
                           results_dir=str(work / name), cache_dir=str(work / "cache"))

    t0 = time.perf_counter()
    for job, _ in needed_upstream_jobs(cells("warmup")).values():
        ensure_upstream_adapter(job)
    print(f"upstream adapters ready in {time.perf_counter() - t0:.1f} s (not timed below); work dir {work}")

    local_cells = cells(f"local-{time.time_ns()}")
    n = len(local_cells)
    local_wall, local_lat, local_in, local_scores = timed_grid(local_cells, LocalExecutor())

    ray_ex = RayExecutor(num_cpus=args.num_cpus, cpus_per_run=args.cpus_per_run)
    t0 = time.perf_counter()
    ray = ray_ex.connect()
    init_s = time.perf_counter() - t0
    workers = ray_ex.slots(ray)
    try:
        ray_wall, ray_lat, ray_in, ray_scores = timed_grid(cells(f"ray-{time.time_ns()}"), ray_ex)
    finally:
        ray_ex.close()

    lo, ro = overhead(local_lat, local_in), overhead(ray_lat, ray_in)
    print(f"\ngrid: {n} cells ({args.task}: {args.methods} x K {args.k} x seeds {args.seeds}); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"local executor : wall {local_wall:7.1f} s  ({local_wall / n:.2f} s/cell, 1 process x "
          f"{torch.get_num_threads()} torch threads)")
    print(f"ray executor   : wall {ray_wall + init_s:7.1f} s  = start Ray {init_s:.1f} s + grid {ray_wall:.1f} s "
          f"({ray_wall / n:.2f} s/cell, {workers} workers x {args.cpus_per_run:g} CPU)")
    print(f"time inside run_cell, summed : local {sum(local_in.values()):.1f} s, ray {sum(ray_in.values()):.1f} s")
    print(f"per-cell overhead (latency - inside run_cell): local mean {statistics.mean(lo):.3f} s; "
          f"ray mean {statistics.mean(ro):.3f} s, median {statistics.median(ro):.3f} s, max {max(ro):.2f} s "
          f"(the max includes starting a worker process)")
    same = local_scores.keys() == ray_scores.keys() and all(local_scores[c] == ray_scores[c] for c in local_scores)
    print(f"same scores on both executors: {'yes' if same else 'NO'} ({len(ray_scores)}/{n} cells)")


if __name__ == "__main__":
    main()
