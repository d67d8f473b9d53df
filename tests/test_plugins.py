"""Third-party methods through the `lorabench.methods` entry-point group: the example plugin installs,
is listed and runs; a plugin that fails on import is reported by name and breaks nothing else.

Plugins are pip-installed into a temporary `--target` folder and seen through PYTHONPATH by CLI
subprocesses, so the test environment itself is never changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lorabench.specs import TaskSpec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lorabench-example-plugin"
BROKEN = REPO / "examples" / "lorabench-broken-plugin"
CLI = [sys.executable, "-m", "lorabench.cli"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory, quick_task) -> dict[str, str]:
    """Both example plugins installed into a temporary folder; the environment that sees them."""
    target = tmp_path_factory.mktemp("plugins")
    for pkg in (EXAMPLE, BROKEN):
        src = tmp_path_factory.mktemp("src") / pkg.name  # a copy: setuptools writes build/ and egg-info in-tree
        shutil.copytree(pkg, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], check=True, capture_output=True, text=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])),
               COLUMNS="250", OMP_NUM_THREADS="1")  # wide tables; one thread on a shared 2-core machine
    return env


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)


def test_example_plugin_is_under_60_lines_and_is_the_one_in_contributing():
    source = (EXAMPLE / "lorabench_example_plugin" / "__init__.py").read_text()
    assert len(source.splitlines()) < 60
    assert source.strip() in (REPO / "CONTRIBUTING.md").read_text()


def test_the_task_example_in_contributing_validates():
    block = re.search(r"```yaml\n(.*?)```", (REPO / "CONTRIBUTING.md").read_text(), re.S).group(1)
    assert TaskSpec.model_validate(yaml.safe_load(block)).name == "my_task"


def test_list_shows_the_plugin_and_reports_the_broken_one_by_name(plugin_env):
    out = cli(["list", "methods"], plugin_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    example = next(line for line in lines if "merged_prototypes" in line)
    assert "class-mean cosine head" in example
    broken = next(line for line in lines if "broken_example" in line)
    assert "broken plugin" in broken and "RuntimeError" in broken
    incomplete = next(line for line in lines if "no_predict_example" in line)
    assert "broken plugin: class NoPredict does not implement" in incomplete
    assert "predict, trainable_params" in out.stdout  # on the row's wrapped continuation
    stranger = next(line for line in lines if "not_a_method_example" in line)
    assert "broken plugin" in stranger and "not a subclass of lorabench.method.Method" in stranger
    for builtin in ("classifier_tuning", "learned_composition", "ties_merging"):  # the others are all still there
        assert builtin in out.stdout


def test_a_broken_plugin_fails_alone_with_its_name_and_reason(plugin_env, tmp_path):
    out = cli(["run", "--method", "broken_example", "--task", "digits_quick", "--k", "1", "--seeds", "0",
               "--results-dir", str(tmp_path / "r")], plugin_env)
    assert out.returncode == 2
    assert "broken_example" in out.stderr and "failed to load" in out.stderr and "on purpose" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("name,why", [
    ("no_predict_example", "does not implement lorabench.method.Method's abstract method(s): predict, trainable_params"),
    ("not_a_method_example", "class NotAMethod is not a subclass of lorabench.method.Method")])
def test_a_plugin_that_breaks_the_method_contract_is_refused_before_any_work(plugin_env, tmp_path, name, why):
    """The contract is checked when the plugin loads: a method without `predict` never trains (its `fit`
    would raise), and nothing is written."""
    results = tmp_path / "r"
    out = cli(["run", "--method", f"classifier_tuning,{name}", "--task", "digits_quick", "--k", "1", "--seeds", "0",
               "--results-dir", str(results)], plugin_env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert name in out.stderr and "failed to load" in out.stderr and why in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr and "never be trained" not in out.stdout + out.stderr
    assert not results.exists() or not list(results.rglob("*.json"))


@pytest.mark.slow
def test_example_plugin_runs_on_digits_beside_the_broken_one(plugin_env, tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "upstream-cache-merging"  # shared with test_merging_methods.py
    results = tmp_path / "results"
    out = cli(["run", "--method", "merged_prototypes,classifier_tuning", "--task", "digits_quick", "--k", "1,5",
               "--seeds", "0", "--results-dir", str(results), "--cache-dir", str(cache)], plugin_env)
    assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in sorted((results / "digits_quick").glob("*.json"))]
    assert sorted((r["method"], r["k"]) for r in records) == [
        ("classifier_tuning", 1), ("classifier_tuning", 5), ("merged_prototypes", 1), ("merged_prototypes", 5)]
    for r in (r for r in records if r["method"] == "merged_prototypes"):
        assert r["trainable_params"] == 0 and r["head_params"] == 1280 * 2 + 2
        assert r["extras"] == {"upstream": ["digits_01", "digits_23"], "scale": 0.5}
        assert 0.0 <= r["value"] <= 1.0 and r["n_test"] == 106


def test_list_shows_the_plugin_backbone_and_reports_the_broken_one(plugin_env):
    out = cli(["list", "backbones"], plugin_env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "example backbone plugin" in next(line for line in lines if "example_mobilenet" in line) or \
        "Random MobileNetV3" in next(line for line in lines if "example_mobilenet" in line)
    broken = next(line for line in lines if "broken_backbone" in line)
    assert "broken plugin" in broken and "RuntimeError" in broken
    assert "efficientnet_lite0" in out.stdout and "minilm" in out.stdout


@pytest.mark.slow
def test_plugin_backbone_trains_upstream_and_runs_cells(plugin_env, tmp_path):
    """A backbone from an installed plugin: validated, its own upstream adapters trained into the store,
    composed, and recorded under its name; a broken backbone plugin is a one-paragraph error."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    out = cli(["run", "--method", "classifier_tuning,uniform_composition", "--task", "digits_quick", "--k", "1",
               "--seeds", "0", "--backbone", "example_mobilenet", "--results-dir", str(results),
               "--cache-dir", str(cache)], plugin_env)
    assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in sorted((results / "digits_quick").glob("*.json"))]
    assert sorted(r["method"] for r in records) == ["classifier_tuning", "uniform_composition"]
    for r in records:
        assert r["backbone"] == "example_mobilenet" and r["head_params"] == 1024 * 2 + 2
        assert 0.0 <= r["value"] <= 1.0 and "--backbone example_mobilenet" in r["command"]
    stored = sorted(p.name.split("-")[0] for p in (cache / "adapters" / "example_mobilenet").iterdir()
                    if not p.name.endswith(".lock"))
    assert stored == ["digits_01", "digits_23"]
    bad = cli(["run", "--method", "classifier_tuning", "--task", "digits_quick", "--k", "1", "--seeds", "0",
               "--backbone", "broken_backbone", "--results-dir", str(results)], plugin_env)
    assert bad.returncode == 2 and "broken_backbone" in bad.stderr and "failed to load" in bad.stderr
    assert "Traceback" not in bad.stderr
