"""Bad input, one row per case: exit code 2, one paragraph naming the offending value, no traceback, and the
results folder byte-identical before and after (nothing lost, overwritten or invented).

The CLI runs in-process (`lorabench.cli.main`), so an uncaught exception surfaces here as itself instead
of a SystemExit and fails the test; one subprocess row checks the real console script as well.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import QUICK_TASK
from lorabench.adapters import LoraAdapter, save_adapter
from lorabench.backbones import create_backbone

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(quick_task, tmp_path_factory):
    """A results folder holding one real record, and the files the bad cases point at."""
    from lorabench.grid import expand_grid, run_grid

    root = tmp_path_factory.mktemp("cli_errors")
    results = root / "results"
    cells = expand_grid(["classifier_tuning"], [quick_task], [1], [0], None, results_dir=str(results),
                        cache_dir=str(root / "cache"))
    assert len(run_grid(cells).done) == 1
    umask = os.umask(0)
    os.umask(umask)
    assert cells[0].result_path().stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    (root / "a_file").write_text("not a folder")
    # an adapter that fits the backbone but is full of NaN
    bb = create_backbone("efficientnet_lite0")
    targets = bb.targets()
    w = {t.name: (torch.full((4, t.in_features), math.nan), torch.zeros(t.out_features, 4)) for t in targets}
    save_adapter(LoraAdapter("nan", w, {n: 1.0 for n in w}, source="test"), root / "nan_adapter", targets, 4, 4.0)
    # broken task files, each in its own folder (one broken file breaks every listing that reads it)
    def task_dir(name: str, spec: dict | None = None, raw: bytes | None = None) -> str:
        d = root / name
        d.mkdir()
        path = d / f"{(spec or {}).get('name', 'broken_task')}.yaml"
        path.write_bytes(raw if raw is not None else yaml.safe_dump(spec).encode())
        return str(d)

    base = {**QUICK_TASK, "name": "digits_bad"}
    dirs = {
        "bad_value": task_dir("t_value", {**base, "hparams": {"lora": {"lr": -1.0}}}),
        "bad_key": task_dir("t_key", {**base, "hparams": {"lora": {"lrr": 0.1}}}),
        "bad_star": task_dir("t_star", {**base, "hparams": {"*": {"head_lr": "fast"}}}),
        "upstream_hp": task_dir("t_up", {**base, "hparams": {"upstream": {"lr": 0.1}}}),
        "bad_recipe": task_dir("t_recipe", {**base, "recipe": {**base["recipe"], "head_lr": float("nan")}}),
        "latin1": task_dir("t_latin1", raw="name: digits_bad\nsuite: caf\xe9\n".encode("latin-1")),
    }
    # data faults: a QA task's files truncated, empty, or of an image dataset's schema
    data = {}
    for kind in ("truncated", "empty", "schema"):
        d = root / f"data_{kind}" / "arc_easy"
        d.mkdir(parents=True)
        for split in ("train", "test"):
            src = SHARED / ("cifar10" if kind == "schema" else "arc_easy") / f"{split}.parquet"
            blob = src.read_bytes() if src.is_file() else b""
            (d / f"{split}.parquet").write_bytes({"truncated": blob[: len(blob) // 3], "empty": b"",
                                                   "schema": blob}[kind])
        data[kind] = str(d.parent)
    return {"root": root, "results": results, "task": quick_task, "dirs": dirs, "data": data}


def R(w):
    return ["--results-dir", str(w["results"]), "--cache-dir", str(w["root"] / "cache")]


# (id, args(world) -> argv, needle(s) that must appear in the message, env(world) -> extra env or None)
CASES = [
    ("device-tpu", lambda w: ["run", "-m", "lora", "-t", w["task"], "--device", "tpu", *R(w)], ["'tpu'"], None),
    ("device-upper", lambda w: ["run", "-m", "lora", "-t", w["task"], "--device", "CPU", *R(w)], ["'CPU'"], None),
    ("device-cuda7", lambda w: ["run", "-m", "lora", "-t", w["task"], "--device", "cuda:7", *R(w)], ["cuda:7"], None),
    ("executor", lambda w: ["run", "-m", "lora", "-t", w["task"], "--executor", "dask", *R(w)], ["dask"], None),
    ("list-typo", lambda w: ["list", "taskz"], ["taskz"], None),
    ("missing-method", lambda w: ["run", "-t", w["task"], *R(w)], ["--method"], None),
    ("unknown-flag", lambda w: ["run", "-m", "lora", "-t", w["task"], "--kk", "1", *R(w)], ["--kk"], None),
    ("cpus-not-number", lambda w: ["run", "-m", "lora", "-t", w["task"], "--cpus-per-run", "abc", *R(w)],
     ["--cpus-per-run"], None),
    ("upstream-two-values", lambda w: ["run", "-m", "uniform_composition", "-t", w["task"], "--upstream",
                                       str(w["root"]), str(w["root"] / "a_file"), *R(w)], ["a_file"], None),
    ("unknown-method", lambda w: ["run", "-m", "lorra", "-t", w["task"], *R(w)], ["Did you mean 'lora'"], None),
    ("unknown-task", lambda w: ["run", "-m", "lora", "-t", "digits_quik", *R(w)], ["Did you mean 'digits_quick'"],
     None),
    ("unknown-backbone", lambda w: ["run", "-m", "lora", "-t", w["task"], "-b", "resnet", *R(w)], ["'resnet'"], None),
    ("backbone-modality", lambda w: ["run", "-m", "lora", "-t", w["task"], "-b", "tiny_bert", *R(w)],
     ["tiny_bert", "multiple_choice"], None),
    ("unknown-profile", lambda w: ["run", "-m", "lora", "-t", w["task"], "--profile", "smok", *R(w)],
     ["'smok'", "smoke"], None),
    ("method-not-for-task", lambda w: ["run", "-m", "zero_shot", "-t", w["task"], *R(w)], ["does not apply"], None),
    ("k-text", lambda w: ["run", "-m", "lora", "-t", w["task"], "--k", "1,two", *R(w)], ["'two'"], None),
    ("k-zero-image", lambda w: ["run", "-m", "classifier_tuning", "-t", w["task"], "--k", "0", *R(w)],
     ["K=0", "multiple-choice"], None),
    ("k-above-class", lambda w: ["run", "-m", "lora", "-t", w["task"], "--k", "500", *R(w)], ["K=500", "has only"],
     None),
    ("seed-negative", lambda w: ["run", "-m", "lora", "-t", w["task"], "--seeds", "-1", *R(w)], ["-1"], None),
    ("seed-text", lambda w: ["run", "-m", "lora", "-t", w["task"], "--seeds", "a", *R(w)], ["--seeds"], None),
    ("hp-unknown", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "lrr=1", *R(w)],
     ["'lrr'", "did you mean 'lr'"], None),
    ("hp-negative-epochs", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "epochs=-5", *R(w)],
     ["epochs", "-5"], None),
    ("hp-nan", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "head_lr=NaN", *R(w)], ["head_lr", "nan"],
     None),
    ("hp-text", lambda w: ["run", "-m", "classifier_tuning", "-t", w["task"], "--hp", "head_lr=abc", *R(w)],
     ["head_lr", "'abc'"], None),
    ("hp-batch-zero", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "batch_size=0", *R(w)],
     ["batch_size", "0"], None),
    ("hp-float-rank", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "rank=1.5", *R(w)], ["rank", "1.5"],
     None),
    ("hp-bool", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "augment=1", *R(w)], ["augment"], None),
    ("hp-no-equals", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "lr", *R(w)], ["key=value"], None),
    ("hp-drop-rate", lambda w: ["run", "-m", "dare", "-t", w["task"], "--hp", "drop_rate=1", *R(w)],
     ["drop_rate", "less than 1", "got 1"], None),
    ("upstream-unused", lambda w: ["run", "-m", "classifier_tuning", "-t", w["task"], "--upstream",
                                   str(w["root"] / "nan_adapter"), *R(w)], ["does not use upstream"], None),
    ("upstream-missing", lambda w: ["run", "-m", "uniform_composition", "-t", w["task"], "--upstream",
                                    str(w["root"] / "nope"), *R(w)], ["nope"], None),
    ("upstream-nan", lambda w: ["run", "-m", "uniform_composition", "-t", w["task"], "--upstream",
                                str(w["root"] / "nan_adapter"), *R(w)], ["nan_adapter", "non-finite"], None),
    ("results-dir-file", lambda w: ["run", "-m", "lora", "-t", w["task"], "--results-dir", str(w["root"] / "a_file")],
     ["a_file", "not a folder"], None),
    ("results-dir-below-file", lambda w: ["run", "-m", "lora", "-t", w["task"], "--results-dir",
                                          str(w["root"] / "a_file" / "r")], ["a_file"], None),
    ("cache-dir-file", lambda w: ["run", "-m", "uniform_composition", "-t", w["task"], "--results-dir",
                                  str(w["results"]), "--cache-dir", str(w["root"] / "a_file")], ["a_file"], None),
    ("ray-flags-local", lambda w: ["run", "-m", "lora", "-t", w["task"], "--gpus-per-run", "1", *R(w)],
     ["--executor ray"], None),
    ("task-file-bad-value", lambda w: ["run", "-m", "lora", "-t", "digits_bad", *R(w)],
     ["digits_bad.yaml", "lr", "-1"], lambda w: {"LORABENCH_TASKS": w["dirs"]["bad_value"]}),
    ("task-file-bad-key", lambda w: ["run", "-m", "lora", "-t", "digits_bad", *R(w)],
     ["digits_bad.yaml", "'lrr'"], lambda w: {"LORABENCH_TASKS": w["dirs"]["bad_key"]}),
    ("task-file-bad-star", lambda w: ["run", "-m", "classifier_tuning", "-t", "digits_bad", *R(w)],
     ["digits_bad.yaml", "head_lr", "'fast'"], lambda w: {"LORABENCH_TASKS": w["dirs"]["bad_star"]}),
    ("task-file-upstream-hparams", lambda w: ["run", "-m", "lora", "-t", "digits_bad", *R(w)],
     ["digits_bad.yaml", "upstream_training"], lambda w: {"LORABENCH_TASKS": w["dirs"]["upstream_hp"]}),
    ("task-file-nan-recipe", lambda w: ["run", "-m", "lora", "-t", "digits_bad", *R(w)],
     ["digits_bad.yaml", "head_lr"], lambda w: {"LORABENCH_TASKS": w["dirs"]["bad_recipe"]}),
    ("task-file-not-utf8", lambda w: ["list", "tasks"], ["broken_task.yaml", "UTF-8"],
     lambda w: {"LORABENCH_TASKS": w["dirs"]["latin1"]}),
    ("tasks-env-nowhere", lambda w: ["list", "tasks"], ["LORABENCH_TASKS", "no_such_folder"],
     lambda w: {"LORABENCH_TASKS": str(w["root"] / "no_such_folder")}),
    ("data-truncated", lambda w: ["run", "-m", "zero_shot", "-t", "arc_easy", "--k", "0", "--data-dir",
                                  w["data"]["truncated"], *R(w)], ["train.parquet", "not a readable Parquet"], None),
    ("data-empty", lambda w: ["run", "-m", "zero_shot", "-t", "arc_easy", "--k", "0", "--data-dir",
                              w["data"]["empty"], *R(w)], ["train.parquet", "empty"], None),
    ("data-wrong-schema", lambda w: ["run", "-m", "zero_shot", "-t", "arc_easy", "--k", "0", "--data-dir",
                                     w["data"]["schema"], *R(w)], ["train.parquet", "question"], None),
    ("leaderboard-out-file", lambda w: ["leaderboard", "--results-dir", str(w["results"]), "--out",
                                        str(w["root"] / "a_file")], ["a_file"], None),
    ("tune-bad-device", lambda w: ["tune", "-m", "lora", "-t", w["task"], "--device", "gpu", *R(w)[:2]], ["'gpu'"],
     None),
    # issue 29: inputs that used to crash or to mean nothing and still exit 0
    ("k-superscript", lambda w: ["run", "-m", "lora", "-t", w["task"], "--k", "²", *R(w)], ["--k", "'²'"], None),
    ("compare-k-superscript", lambda w: ["compare", "lora", "classifier_tuning", "-t", w["task"], "--k", "1,²",
                                         *R(w)[:2]], ["--k", "'²'"], None),
    ("seeds-superscript", lambda w: ["run", "-m", "lora", "-t", w["task"], "--seeds", "0,²", *R(w)], ["--seeds", "'0,²'"],
     None),
    ("method-empty", lambda w: ["run", "-m", "", "-t", w["task"], *R(w)], ["--method names nothing"], None),
    ("method-comma", lambda w: ["run", "-m", ",", "-t", w["task"], *R(w)], ["--method names nothing", "','"], None),
    ("task-empty", lambda w: ["run", "-m", "lora", "-t", "", *R(w)], ["--task names nothing", "lorabench list tasks"],
     None),
    ("tune-method-empty", lambda w: ["tune", "-m", " ", "-t", w["task"], *R(w)[:2]], ["--method names nothing"], None),
    ("k-empty", lambda w: ["run", "-m", "lora", "-t", w["task"], "--k", "", *R(w)], ["--k", "leave --k out"], None),
    ("seeds-empty", lambda w: ["run", "-m", "lora", "-t", w["task"], "--seeds", "", *R(w)], ["leave --seeds out"],
     None),
    ("results-dir-empty", lambda w: ["run", "-m", "lora", "-t", w["task"], "--results-dir", ""],
     ["--results-dir is empty"], None),
    ("leaderboard-out-empty", lambda w: ["leaderboard", "--results-dir", str(w["results"]), "--out", " "],
     ["--out is empty"], None),
    ("hp-twice", lambda w: ["run", "-m", "lora", "-t", w["task"], "--hp", "lr=0.1", "--hp", "lr=0.2", *R(w)],
     ["--hp lr is given twice", "lr=0.1", "lr=0.2"], None),
    ("tune-n-val-too-big", lambda w: ["tune", "-m", "classifier_tuning", "-t", w["task"], "--n-val", "100000",
                                      *R(w)[:2]], ["--n-val 100000", "pass a smaller --n-val"], None),
]


def invoke(argv: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str]:
    from lorabench import cli

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["lorabench", *argv])
    code = 0
    try:  # any exception but SystemExit (a bug) propagates and fails the test
        cli.main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_work(case, world, monkeypatch, capsys):
    name, argv, needles, env = case
    if name.startswith("data-") and not (SHARED / "arc_easy" / "train.parquet").is_file():
        pytest.skip("needs the offline data pack")
    before = snapshot(world["results"])
    code, text = invoke(argv(world), env(world) if env else {}, monkeypatch, capsys)
    flat = " ".join(text.split())
    assert code == 2, (name, code, text)
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in flat, (name, needle, text)
    assert snapshot(world["results"]) == before, name  # nothing written, moved or deleted


def test_a_record_of_a_newer_schema_alone_is_left_alone_with_a_warning_and_not_summarised(world, monkeypatch, capsys):
    """Even when a newer record's fields all read (only `schema_version` says it is newer), it is not this
    version's record: the cell is not run, the file is kept, a warning says why, and its value is not printed."""
    import json

    from lorabench.grid import expand_grid, run_grid

    cells = expand_grid(["classifier_tuning"], [world["task"]], [5], [1], None, results_dir=str(world["results"]),
                        cache_dir=str(world["root"] / "cache"))
    path = cells[0].result_path()
    run_grid(cells)  # a real record of this cell, then rewritten as a newer version's
    blob = json.dumps({**json.loads(path.read_text()), "schema_version": 99, "value": 0.123456}).encode()
    path.write_bytes(blob)
    try:
        code, text = invoke(["run", "-m", "classifier_tuning", "-t", world["task"], "--k", "5", "--seeds", "1",
                             *R(world)], {}, monkeypatch, capsys)
        flat = " ".join(text.split())
        assert code == 0, text
        assert "newer lorabench" in flat and "12.35" not in flat  # warned; 0.123456 never shown as a result
        assert path.read_bytes() == blob
    finally:
        path.unlink()


def test_an_upstream_adapter_of_half_the_matrices_is_run_with_a_warning(world, tmp_path, monkeypatch, capsys):
    """Valid (PEFT reads the missing matrices as unchanged) but rarely meant: a warning, from the checks that run
    before any cell."""
    from lorabench.adapters import LoraAdapter, save_adapter
    from lorabench.backbones import create_backbone

    targets = create_backbone("efficientnet_lite0").targets()
    half = targets[: len(targets) // 2]
    w = {t.name: (torch.zeros(4, t.in_features), torch.zeros(t.out_features, 4)) for t in half}
    save_adapter(LoraAdapter("half", w, {n: 1.0 for n in w}, source="test"), tmp_path / "half", half, 4, 4.0)
    code, text = invoke(["run", "-m", "uniform_composition", "-t", world["task"], "--k", "1", "--seeds", "0",
                         "--upstream", str(tmp_path / "half"), "--results-dir", str(tmp_path / "r")], {}, monkeypatch,
                        capsys)
    flat = " ".join(text.split())
    assert code == 0, text
    assert f"adapts {len(half)} of the {len(targets)} target matrices" in flat and "ΔW = 0" in flat


def test_the_console_script_prints_one_paragraph_too(world):
    out = subprocess.run([sys.executable, "-m", "lorabench.cli", "run", "-m", "lora", "-t", world["task"],
                          "--device", "tpu", *R(world)], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout and "'tpu'" in out.stderr


def test_a_record_that_does_not_validate_is_moved_aside_and_a_newer_one_is_left_alone(world, monkeypatch, capsys):
    """Never overwritten: a truncated record is renamed `<name>.invalid-<time>` and its cell runs again;
    a record of a newer schema (with a field this version does not know) is kept byte for byte, not run."""
    import json

    from lorabench.grid import expand_grid
    from lorabench.results import read_result

    results = world["results"]
    cells = expand_grid(["classifier_tuning"], [world["task"]], [1], [0, 1], None, results_dir=str(results),
                        cache_dir=str(world["root"] / "cache"))
    good = cells[0].result_path()
    original = good.read_bytes()
    newer = cells[1].result_path()
    newer.parent.mkdir(parents=True, exist_ok=True)
    newer_blob = json.dumps({**json.loads(original), "schema_version": 99, "from_the_future": 1}).encode()
    newer.write_bytes(newer_blob)
    good.write_bytes(original[: len(original) // 2])  # truncated
    try:
        code, text = invoke(["run", "-m", "classifier_tuning", "-t", world["task"], "--k", "1", "--seeds", "0,1",
                             *R(world)], {}, monkeypatch, capsys)
        assert code == 0, text
        flat = " ".join(text.split())
        assert "newer lorabench" in flat and "moved aside" in flat
        aside = list(good.parent.glob(good.name + ".invalid-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == original[: len(original) // 2]
        assert read_result(good) is not None  # recomputed
        assert newer.read_bytes() == newer_blob  # left alone
    finally:
        newer.unlink()
        for p in good.parent.glob(good.name + ".invalid-*"):
            p.unlink()
        good.write_bytes(original)


def test_a_write_failure_fails_the_cell_and_stops_the_grid_with_what_is_left(world, tmp_path, monkeypatch, capsys):
    """A full disk (ENOSPC from the writer) fails the first finished cell with the reason, nothing partial
    stays behind, and the summary lists the cells not run and how to resume."""
    import errno

    import lorabench.results as results_mod

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_mod.os, "fsync", full_disk)  # the writer's data never reaches the disk
    out = tmp_path / "r"
    code, text = invoke(["run", "-m", "classifier_tuning", "-t", world["task"], "--k", "1,5", "--seeds", "0",
                         "--results-dir", str(out), "--cache-dir", str(world["root"] / "cache")], {},
                        monkeypatch, capsys)
    flat = " ".join(text.split())
    assert code == 1, text
    assert "No space left on device" in flat and "the grid stopped" in flat and "1 cell(s) not run" in flat
    assert "k=5/seed=0" in flat and "re-run the same command" in flat
    assert "Traceback" not in text
    assert not [p for p in out.rglob("*") if p.is_file()]  # no partial or temporary file left


# The CLI in a child process whose second cell holds (it marks that it started, then waits): the interrupt arrives
# while a cell is running, on a fast machine or a loaded one, instead of racing the grid to its end.
HOLD_SECOND_CELL = """
import faulthandler, pathlib, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for every thread's stack if it hangs
import lorabench.grid as grid
marker = pathlib.Path(sys.argv.pop(1))
real, calls = grid.run_cell, []
def held(cfg, *args, **kwargs):
    calls.append(cfg)
    if len(calls) == 2:
        marker.touch()
        time.sleep(600)
    return real(cfg, *args, **kwargs)
grid.run_cell = held
sys.argv[0] = "lorabench"
from lorabench.cli import main
main()
"""


def test_ctrl_c_says_how_many_cells_are_done_and_how_to_resume(world, tmp_path):
    import signal
    import time

    out, started = tmp_path / "r", tmp_path / "second-cell-started"
    args = [sys.executable, "-c", HOLD_SECOND_CELL, str(started), "run", "-m", "classifier_tuning", "-t", world["task"],
            "--k", "1,5", "--seeds", "0,1,2", "--results-dir", str(out), "--cache-dir", str(world["root"] / "cache")]
    # The child gets Ctrl-C's default action even where the suite runs with SIGINT ignored (as a background job of a
    # non-interactive shell does): Python installs its KeyboardInterrupt handler only over the default, and an
    # ignored SIGINT is inherited, so the child slept on through the Ctrl-C and the test hung 120 s.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not started.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert started.exists(), "the second cell never started"
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hangs, then clean up
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"no exit within 120 s of Ctrl-C (process still running: {alive}; if not, a child holds its "
                    f"pipes). stdout: {stdout[-2000:]}\nstderr and stacks: {stderr[-8000:]}")
    flat = " ".join((stdout + stderr).split())
    assert proc.returncode == 130, flat
    assert "Traceback" not in flat
    assert len(list(out.rglob("*.json"))) == 1  # the first cell's record, and no other
    assert "interrupted: 1 cell(s) done, 0 skipped, 0 failed, 5 not finished" in flat
    assert "re-run the same command to resume" in flat


def test_a_cell_whose_training_diverges_fails_with_exit_1_and_writes_nothing(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    code, text = invoke(["run", "-m", "lora", "-t", world["task"], "--k", "1", "--seeds", "0", "--hp", "lr=1e30",
                         "--results-dir", str(out), "--cache-dir", str(world["root"] / "cache")], {},
                        monkeypatch, capsys)
    flat = " ".join(text.split())
    assert code == 1 and "Traceback" not in text
    assert "1 cell(s) failed" in flat and "the training loss became nan" in flat and "no result is written" in flat
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_repeated_names_and_values_are_run_and_counted_once(world, monkeypatch, capsys):
    before = snapshot(world["results"])
    t = world["task"]
    code, text = invoke(["run", "-m", "classifier_tuning,classifier_tuning", "-t", f"{t},{t}", "--k", "1,1",
                         "--seeds", "0,0", *R(world)], {}, monkeypatch, capsys)
    flat = " ".join(text.split())
    assert code == 0, text
    assert "1/1" in flat and "0 done 1 skipped" in flat  # one cell, already finished
    assert re.search(r"classifier_tuning │ efficientnet_lite0 │ 1 │ [\d.]+ ± 0\.00 │ 1 │", flat), flat  # one seed
    assert snapshot(world["results"]) == before


def test_a_read_only_results_folder_is_refused_before_any_work(world, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write into a folder of mode 0500, so for root the folder is not read-only")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, text = invoke(["run", "-m", "lora", "-t", world["task"], "--results-dir", str(ro / "r"), "--cache-dir",
                             str(world["root"] / "cache")], {}, monkeypatch, capsys)
        assert code == 2 and "not writable" in " ".join(text.split()) and "Traceback" not in text
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o700)
