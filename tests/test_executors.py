"""The grid on Ray (a local 2-CPU instance, no dashboard, offline) against the local executor.

Same scores, failures reported without stopping the others, adapters trained once, and a worker
killed mid-grid costs only its own cell: the re-run (through the CLI, joining the running instance)
completes exactly the missing ones.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lorabench.adapters import WEIGHTS_FILE
from lorabench.errors import ConfigError
from lorabench.grid import expand_grid, run_grid
from lorabench.executors import LocalExecutor, RayExecutor
from lorabench.results import load_results
from lorabench.task_registry import get_task
from lorabench.upstream import ensure_upstream_adapter, upstream_jobs


def test_missing_ray_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lorabench\[ray\]'"):
        RayExecutor()
    hide_ray = ("import sys; sys.modules['ray'] = None; sys.argv = ['lorabench'] + sys.argv[1:]; "
                "from lorabench.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", hide_ray, "run", "-m", "classifier_tuning", "-t", "digits", "--k", "1",
                          "--results-dir", str(tmp_path), "--executor", "ray"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "pip install 'lorabench[ray]'" in " ".join(out.stderr.split()), out.stderr
    assert "Traceback" not in out.stderr and not list(tmp_path.iterdir())


def test_an_unreachable_ray_address_fails_at_once():
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match="No Ray head answers"):
            RayExecutor(address=address).connect()
        assert time.perf_counter() - t0 < 10
    with pytest.raises(ConfigError, match="takes 'auto', HOST:PORT"):
        RayExecutor(address="headnode").connect()


def test_local_executor_reports_a_failing_job_and_goes_on():
    events = list(LocalExecutor().run(lambda x: 10 // x, [1, 0, 5]))
    assert [(kind, i) for kind, i, _ in events] == [("start", 0), ("end", 0), ("start", 1), ("end", 1),
                                                    ("start", 2), ("end", 2)]
    outcomes = [o for kind, _, o in events if kind == "end"]
    assert [o.value for o in outcomes] == [10, None, 2]
    assert outcomes[1].error.startswith("ZeroDivisionError") and "Traceback" in outcomes[1].error


# --- on a local Ray instance ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_executor(quick_task):
    """One local Ray instance for the module; it sees LORABENCH_TASKS through the forwarded env."""
    pytest.importorskip("ray")
    ex = RayExecutor(num_cpus=2, cpus_per_run=1)
    ex.connect()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("adapters")


def grid(task, results: Path, cache: Path, methods=("classifier_tuning", "uniform_composition"), ks=(1, 5),
         seeds=(0, 1)):
    return expand_grid(list(methods), [task], list(ks), list(seeds), None, results_dir=str(results),
                       cache_dir=str(cache))


@pytest.mark.slow
def test_ray_gives_exactly_the_local_scores_trains_upstream_once_and_reports_failures(quick_task, ray_executor,
                                                                                      cache, tmp_path):
    events: list[tuple] = []
    ray_cells = grid(quick_task, tmp_path / "ray", cache)
    ray_cells += grid(quick_task, tmp_path / "ray", cache, ks=[500], seeds=[0])  # K=500: more than a class has
    # validate=False: the pre-flight K check would refuse K=500 up front; here the worker's own failure is the point
    report = run_grid(ray_cells, on_event=lambda *e: events.append(e), executor=ray_executor, validate=False)
    assert len(report.done) == 8 and not report.skipped
    assert sorted(c.cell_id() for c, _ in report.failed) == sorted(c.cell_id() for c in ray_cells if c.k == 500)
    assert all("K=500 examples per class were asked for" in why for _, why in report.failed)
    # the upstream phase trained each adapter once, in parallel, before any cell started
    kinds = [e[0] for e in events]
    assert sorted(e[2] for e in events if e[0] == "upstream") == ["digits_01", "digits_23"]
    assert max(i for i, k in enumerate(kinds) if k == "upstream_end") < kinds.index("start")
    assert kinds.count("start") == 10 and kinds.count("done") == 8 and kinds.count("fail") == 2

    # Same thread count as a Ray worker with 1 CPU: CPU float reductions depend on it (README, "Same scores on both executors").
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local_events: list[tuple] = []
        local = run_grid(grid(quick_task, tmp_path / "local", cache), on_event=lambda *e: local_events.append(e))
    finally:
        torch.set_num_threads(threads)
    assert not any(e[0] == "upstream" for e in local_events)  # reused from the store, never trained again
    ray_scores = {r.cell_id: r.value for r in load_results(tmp_path / "ray")[0]}
    local_scores = {r.cell_id: r.value for r in local.done}
    assert len(local_scores) == 8 and ray_scores == local_scores
    on_ray = load_results(tmp_path / "ray")[0][0]
    assert on_ray.config_hash == next(r.config_hash for r in local.done if r.cell_id == on_ray.cell_id)


def test_two_workers_asking_for_one_adapter_train_it_once(quick_task, ray_executor, tmp_path):
    job = upstream_jobs(get_task(quick_task), "efficientnet_lite0", None, str(tmp_path / "ray"))[0]
    outcomes = [o for kind, _, o in ray_executor.run(ensure_upstream_adapter, [job, job]) if kind == "end"]
    assert sorted(o.value for o in outcomes) == [False, True] and not any(o.error for o in outcomes)
    store = Path(job.path).parent
    assert sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock")) == [Path(job.path).name]
    # the adapter a Ray worker trained is bit for bit the one this process trains with as many threads
    local_job = upstream_jobs(get_task(quick_task), "efficientnet_lite0", None, str(tmp_path / "local"))[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert ensure_upstream_adapter(local_job)
    finally:
        torch.set_num_threads(threads)
    assert (Path(job.path) / WEIGHTS_FILE).read_bytes() == (Path(local_job.path) / WEIGHTS_FILE).read_bytes()


def _busy_ray_workers() -> list[int]:
    """Pids of Ray worker processes running a job right now (their title is `ray::run_job`)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::run_job"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray workers through /proc")
def test_killed_worker_loses_one_cell_and_the_cli_rerun_completes_only_the_missing(quick_task, ray_executor,
                                                                                  cache, tmp_path, monkeypatch):
    results = tmp_path / "r"
    cells = grid(quick_task, results, cache, methods=["classifier_tuning"])
    victim, mark = cells[2].cell_id(), tmp_path / "victim.pid"
    killed: list[int] = []

    def held(job, _victim=victim, _mark=str(mark)):  # pickled by value: the Ray worker runs this
        if job.cfg.cell_id() == _victim:  # say which process holds the cell, then hold it until killed
            import os as os_
            import pathlib
            import time as time_
            pathlib.Path(_mark).write_text(str(os_.getpid()))
            time_.sleep(600)
        from lorabench.grid import execute_cell
        return execute_cell(job)

    def kill_the_worker_holding_the_victim(kind, cfg, *rest):
        if kind == "start" and cfg.cell_id() == victim:  # wait for the event (the worker holds it), not a delay
            deadline = time.time() + 240
            while not (mark.exists() and mark.read_text()) and time.time() < deadline:
                time.sleep(0.01)
            pid = int(mark.read_text())
            assert pid in _busy_ray_workers()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    monkeypatch.setattr("lorabench.grid.execute_cell", held)
    first = run_grid(cells, on_event=kill_the_worker_holding_the_victim, executor=ray_executor)
    monkeypatch.undo()
    assert killed and [c.cell_id() for c, _ in first.failed] == [victim]  # exactly the held cell was lost
    assert all("Ray lost this job" in why for _, why in first.failed)
    assert len(first.done) + len(first.failed) == 4  # the others went on
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert len(before) == len(first.done)

    # re-run through the CLI, joining the running instance
    args = [sys.executable, "-m", "lorabench.cli", "run", "--method", "classifier_tuning",
            "--task", quick_task, "--k", "1,5", "--seeds", "0,1", "--results-dir", str(results),
            "--cache-dir", str(cache), "--executor", "ray", "--ray-address", "auto"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert len(after) == 4 and all(after[p] == before[p] for p in before)  # finished cells were not re-run
    rerun = {r.cell_id for r in load_results(results)[0] if r.cell_id not in {c.cell_id for c in first.done}}
    assert rerun == {c.cell_id() for c, _ in first.failed}  # ... and exactly the lost ones were


def test_local_only_flags_are_refused_without_ray(quick_task, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lorabench.cli", "run", "--method", "classifier_tuning", "--task",
                          quick_task, "--results-dir", str(tmp_path), "--ray-address", "auto"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "apply to --executor ray only" in " ".join(out.stderr.split())
