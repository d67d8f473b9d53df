"""End-to-end cells on a quick digits task: results, parameter counts, reuse, resume, determinism."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lorabench.backbones import create_backbone
from lorabench.errors import ConfigError
from lorabench.evaluator import run_cell
from lorabench.grid import expand_grid, run_grid
from lorabench.lora import lora_param_count
from lorabench.results import load_results, read_result
from lorabench.specs import ResultRecord, RunConfig

CLI = [sys.executable, "-m", "lorabench.cli"]


def cfg(task, method, tmp_path, k=1, seed=0, **kw) -> RunConfig:
    return RunConfig(task=task, method=method, backbone="efficientnet_lite0", k=k, seed=seed,
                     results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


def test_same_seed_same_score_and_record_validates(quick_task, store):
    for method in ("classifier_tuning", "lora"):
        a = run_cell(cfg(quick_task, method, store, k=5, seed=1))
        b = run_cell(cfg(quick_task, method, store, k=5, seed=1))
        assert a.value == b.value, method
        ResultRecord.model_validate(a.model_dump(mode="json"))
        assert a.n_support == 10 and a.n_test == 106 and a.head_params == 1280 * 2 + 2
        assert a.git_commit is None or len(a.git_commit) == 40
        assert a.git_dirty is None if a.git_commit is None else isinstance(a.git_dirty, bool)
        assert "torch" in a.versions and a.command.startswith("lorabench run --method")


def test_every_method_reports_its_parameter_counts_and_upstream_is_trained_once(quick_task, store):
    bb = create_backbone("efficientnet_lite0")
    targets = bb.targets()
    expected = {
        "classifier_tuning": 0,
        "uniform_composition": 0,
        "learned_composition": len(targets) * 2,  # one weight per upstream module per adapted matrix
        "lora": lora_param_count(targets, 16),
        "full_finetune": bb.num_params(),
    }
    trained: list[str] = []
    for method, count in expected.items():
        rec = run_cell(cfg(quick_task, method, store), on_event=lambda kind, c, *r: trained.append(r[0]))
        assert rec.trainable_params == count, method
        assert 0.0 <= rec.value <= 1.0
    assert trained == ["digits_01", "digits_23"]  # first composition method trains; the next one reuses
    adapters = sorted((store / "cache" / "adapters" / "efficientnet_lite0").glob("digits_*"))
    assert [p.name.split("-")[0] for p in adapters if not p.name.endswith(".lock")] == ["digits_01", "digits_23"]
    rec = run_cell(cfg(quick_task, "learned_composition", store, k=5))
    w = rec.composition  # typed: [matrices][upstream], one softmax row per adapted matrix
    assert w.upstream == rec.extras["upstream"] == ["digits_01", "digits_23"]
    assert w.matrices == [t.name for t in targets] and len(w.weights) == len(targets)
    assert all(abs(sum(v) - 1) < 1e-5 and len(v) == 2 for v in w.weights)


def test_learned_composition_records_how_far_its_weights_moved_at_k1(quick_task, store):
    """K = 1: the record carries the end-to-end trace, whose last row states how far the composition weights left
    1/N (the weights in the record itself); the warm-up ran first, from the uniform composition's features.
    Whether they should move at all is the support loss's call (tests/test_recipe.py), not this test's."""
    rec = run_cell(cfg(quick_task, "learned_composition", store, k=1, seed=0))
    weights = [x for v in rec.composition.weights for x in v]
    log = rec.extras["training"]
    assert log["steps"] == 2 and log["head_loss"] > 0 and log["optimizer"] == "sgd"  # 2 epochs of one batch
    assert [r["step"] for r in log["trace"]] == [0, 1, 2]
    assert max(abs(x - 0.5) for x in weights) == pytest.approx(log["trace"][-1]["weight_shift_max"], abs=1e-5)


def test_grid_skips_finished_cells_and_survives_interruption(quick_task, tmp_path):
    cells = expand_grid(["classifier_tuning"], [quick_task], None, None, None,
                        results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    assert len(cells) == 4  # K in {1, 5} x seeds {0, 1}
    seen = []

    def interrupt_after_two(kind, c, *rest):
        if kind == "done":
            seen.append(c)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, on_event=interrupt_after_two)
    records, bad = load_results(tmp_path / "r")
    assert len(records) == 2 and not bad
    assert not list((tmp_path / "r").rglob("*.tmp"))
    report = run_grid(cells)
    assert [c.cell_id() for c in report.skipped] == [c.cell_id() for c in seen]
    assert len(report.done) == 2 and len(load_results(tmp_path / "r")[0]) == 4


def test_killed_cli_run_loses_nothing_and_resumes(quick_task, tmp_path):
    results = tmp_path / "r"
    args = CLI + ["run", "--method", "classifier_tuning", "--task", quick_task, "--k", "1,5", "--seeds", "0,1,2",
                  "--results-dir", str(results), "--cache-dir", str(tmp_path / "c")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(results.rglob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert 2 <= len(first) < 6, "the run should have been killed half way"
    assert all(read_result(p) is not None for p in first)  # every file on disk is a whole record
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert len(after) == 6 and all(after[p] == first[p] for p in first)  # finished cells were skipped
    assert "accuracy" in done.stdout and "± " in done.stdout


def test_tune_picks_from_the_grid_on_a_disjoint_validation_draw(quick_task, tmp_path):
    rec = run_cell(cfg(quick_task, "classifier_tuning", tmp_path, k=5, tune=True))
    tuning = rec.extras["tuning"]
    assert set(tuning["val_accuracy"]) == {"head_lr=0.001", "head_lr=0.01", "head_lr=0.1"}
    best = max(tuning["val_accuracy"].values())
    assert tuning["val_accuracy"][f"head_lr={tuning['chosen']['head_lr']}"] == best
    assert rec.config["resolved_hparams"]["head_lr"] == tuning["chosen"]["head_lr"] and tuning["n_val"] == 10


def test_default_digits_task_and_list(tmp_path):
    out = subprocess.run(CLI + ["list", "tasks"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "digits" in out.stdout and "label_shift" in out.stdout
    out = subprocess.run(CLI + ["list", "methods"], capture_output=True, text=True, timeout=60)
    for name in ("classifier_tuning", "lora", "full_finetune", "uniform_composition", "learned_composition", "zero_shot"):
        assert name in out.stdout


def test_a_method_that_does_not_fit_the_task_is_refused_before_any_cell_runs(tmp_path):
    with pytest.raises(ConfigError) as err:
        expand_grid(["classifier_tuning", "zero_shot"], ["digits"], [1], [0], None, results_dir=str(tmp_path))
    msg = str(err.value)
    assert "'zero_shot' does not apply to image tasks like 'digits'" in msg
    assert "classifier_tuning" in msg.split("Methods for 'digits':")[1] and "zero_shot" not in msg.split(":")[-1]
    assert not any(tmp_path.iterdir())
