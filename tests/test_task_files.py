"""Task files written by hand: `include:` (deep-merged bases), `sweep:` (one file, several tasks), `_*.yaml` bases.

Each test writes its files into a fresh folder on LORABENCH_TASKS (or, once, into the built-in tasks/ folder)
and clears the registry's caches around itself.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from lorabench.errors import SpecError
from lorabench.task_registry import (_RESOLVED, _all_tasks, all_tasks, get_task, load_task_file, load_task_specs,
                                     task_dirs, task_source)

from conftest import QUICK_TASK

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "lorabench" / "tasks"
PAPER = "Asadi et al. (2024). Does Combining Parameter-efficient Modules Improve Few-shot Transfer Accuracy?"


def _clear():
    _all_tasks.cache_clear()
    _RESOLVED.clear()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty task folder on LORABENCH_TASKS, holding `_quick.yaml`: the quick digits task as a base."""
    monkeypatch.setenv("LORABENCH_TASKS", str(tmp_path))
    base = {k: v for k, v in QUICK_TASK.items() if k != "name"}
    (tmp_path / "_quick.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    _clear()
    yield tmp_path
    _clear()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- include ---------------------------------------------------------------------------------------


def test_include_deep_merges_under_the_including_file(folder):
    _write(folder, "_tagged.yaml", """\
        include: _quick.yaml
        tags: {family: digits, sizes: {small: 1, large: 9}}
        metadata: {description: from the base, license: BSD-3-Clause}
    """)
    _write(folder, "child.yaml", """\
        include: _tagged.yaml
        recipe: {epochs: 3}            # one key of a mapping: the rest of the base's recipe stays
        k_grid: [5]                    # a list replaces the base's, never appends
        tags: {sizes: {large: 7}}
        metadata: {description: the child's own}
    """)
    child = get_task("child")
    assert child.name == "child"
    assert child.recipe.epochs == 3 and child.recipe.head_epochs == QUICK_TASK["recipe"]["head_epochs"]
    assert child.recipe.max_steps == QUICK_TASK["recipe"]["max_steps"]
    assert child.k_grid == [5]
    assert child.tags == {"family": "digits", "sizes": {"small": 1, "large": 7}}
    assert child.metadata.description == "the child's own" and child.metadata.license == "BSD-3-Clause"
    assert [u.name for u in child.upstream] == ["digits_01", "digits_23"]


def test_include_paths_are_relative_to_the_including_file_and_chain(folder):
    _write(folder, "bases/_root.yaml", "include: ../_quick.yaml\nseeds: [0]\n")
    _write(folder, "bases/_mid.yaml", "include: _root.yaml\nk_grid: [1]\npreprocessing: {image_size: 16}\n")
    _write(folder, "bases/_late.yaml", "preprocessing: {image_size: 48}\n")
    _write(folder, "chained.yaml", "include: [bases/_mid.yaml, bases/_late.yaml]\nsuite: chained\n")
    spec = get_task("chained")
    assert spec.seeds == [0] and spec.k_grid == [1] and spec.suite == "chained"
    assert spec.preprocessing.image_size == 48  # a list of includes: later files win
    assert spec.upstream_training.max_steps == QUICK_TASK["upstream_training"]["max_steps"]


def test_a_task_can_include_another_task_and_keeps_its_own_name(folder):
    _write(folder, "parent_task.yaml", "include: _quick.yaml\n")
    _write(folder, "variant.yaml", "include: parent_task.yaml\nk_grid: [1]\n")
    tasks = all_tasks()
    assert tasks["parent_task"].k_grid == [1, 5] and tasks["variant"].k_grid == [1]
    assert tasks["variant"].name == "variant"  # the included file's name is never inherited
    _write(folder, "renamed.yaml", "include: _quick.yaml\nname: other\n")
    with pytest.raises(SpecError, match="must be named other.yaml"):
        load_task_file(folder / "renamed.yaml")


def test_base_files_are_never_tasks_and_need_no_name(folder):
    _write(folder, "_partial.yaml", "suite: partial  # not a whole task: only ever included\n")
    _write(folder, "whole.yaml", "include: [_quick.yaml, _partial.yaml]\n")
    tasks = all_tasks()
    assert "whole" in tasks and tasks["whole"].suite == "partial"
    assert not [n for n in tasks if n.startswith("_")]


def test_include_cycle_names_the_chain(folder):
    a = _write(folder, "a.yaml", "include: _b.yaml\n")
    _write(folder, "_b.yaml", "include: a.yaml\n")
    with pytest.raises(SpecError, match="cycle") as err:
        all_tasks()
    assert re.search(r"a\.yaml -> \S*_b\.yaml -> \S*a\.yaml", str(err.value)), str(err.value)
    a.write_text("include: a.yaml\n")
    with pytest.raises(SpecError, match="cycle"):
        load_task_file(a)


def test_missing_include_names_both_files(folder):
    path = _write(folder, "lost.yaml", "include: _nowhere.yaml\n")
    with pytest.raises(SpecError) as err:
        load_task_file(path)
    assert str(path) in str(err.value) and "_nowhere.yaml" in str(err.value)


def test_errors_in_an_included_file_name_that_file(folder):
    (folder / "_latin1.yaml").write_bytes("suite: caf\xe9\n".encode("latin-1"))
    path = _write(folder, "uses_latin1.yaml", "include: [_quick.yaml, _latin1.yaml]\n")
    with pytest.raises(SpecError, match="not UTF-8") as err:
        load_task_file(path)
    assert "_latin1.yaml" in str(err.value)
    _write(folder, "_broken.yaml", "recipe: [unclosed\n")
    with pytest.raises(SpecError, match="_broken.yaml is not valid YAML"):
        load_task_file(_write(folder, "uses_broken.yaml", "include: _broken.yaml\n"))
    with pytest.raises(SpecError, match="include must be a file name"):
        load_task_file(_write(folder, "bad_include.yaml", "include: {a: 1}\n"))


def test_x_keys_hold_yaml_anchors_for_the_file(folder):
    _write(folder, "anchored.yaml", """\
        include: _quick.yaml
        x-digits: &digits {name: sklearn_digits, split: all, builtin: true}
        upstream:
          - {name: digits_01, train: {<<: *digits, classes: [0, 1]}}
          - {name: digits_23, train: {<<: *digits, classes: [2, 3]}}
    """)
    spec = get_task("anchored")
    assert [u.train.classes for u in spec.upstream] == [[0, 1], [2, 3]]
    assert all(u.train.builtin and u.train.holdout is None for u in spec.upstream)


def test_a_user_folder_builds_on_the_shipped_files(folder):
    _write(folder, "mine.yaml", "include: digits.yaml  # the built-in folder's\nk_grid: [1]\n")
    mine, digits = get_task("mine"), get_task("digits")
    assert mine.k_grid == [1] and mine.downstream == digits.downstream and mine.recipe == digits.recipe


# --- sweep -----------------------------------------------------------------------------------------

SWEEP = """\
    include: _quick.yaml
    upstream_training: {rank: "{rank}", alpha: "{alpha}"}
    tags: {sweep: rank, rank: "{rank}"}
    metadata: {description: "LoRA rank {rank}, alpha {alpha}"}
    sweep:
      name: "quick_r{rank}"
      over:
        - {rank: 4, alpha: 4.0}
        - {rank: 8, alpha: 8.0, k_grid: [1], recipe: {epochs: 1}}
"""


def test_sweep_expands_into_one_task_per_entry(folder):
    path = _write(folder, "quick_rank_sweep.yaml", SWEEP)
    tasks = all_tasks()
    assert {"quick_r4", "quick_r8"} <= set(tasks) and "quick_rank_sweep" not in tasks
    r4, r8 = tasks["quick_r4"], tasks["quick_r8"]
    assert r4.k_grid == [1, 5] and r8.k_grid == [1]  # the entry merged over the file
    assert r8.recipe.epochs == 1 and r8.recipe.head_epochs == QUICK_TASK["recipe"]["head_epochs"]
    assert r8.upstream_training.rank == 8 and r8.upstream_training.alpha == 8.0
    assert r8.upstream_training.max_steps == QUICK_TASK["upstream_training"]["max_steps"]  # from the include
    assert r8.tags == {"sweep": "rank", "rank": 8} and type(r8.tags["rank"]) is int  # "{rank}" alone: the value
    assert r8.metadata.description == "LoRA rank 8, alpha 8.0"
    assert str(path) in task_source("quick_r8") and "sweep entry 2" in task_source("quick_r8")
    assert [s.name for s, _ in load_task_specs(path)] == ["quick_r4", "quick_r8"]
    with pytest.raises(SpecError, match="sweep"):
        load_task_file(path)


def test_sweep_placeholders_must_name_a_variable_of_the_entry(folder):
    path = _write(folder, "typo_sweep.yaml", SWEEP.replace("LoRA rank {rank}", "LoRA rank {rnak}"))
    with pytest.raises(SpecError) as err:
        load_task_specs(path)
    msg = str(err.value)
    assert str(path) in msg and "sweep entry 1" in msg and "{rnak}" in msg and "metadata.description" in msg
    path.unlink()
    path = _write(folder, "stray_sweep.yaml", SWEEP.replace("{rank: 4, alpha: 4.0}", "{rank: 4, alpha: 4.0, suit: x}"))
    with pytest.raises(SpecError, match="sweep entry 1 sets suit: neither a task field"):
        load_task_specs(path)


def test_swept_names_must_be_unique(folder):
    path = _write(folder, "same_sweep.yaml", SWEEP.replace('"quick_r{rank}"', '"quick_same"'))
    with pytest.raises(SpecError, match="all named 'quick_same'"):
        load_task_specs(path)
    path.unlink()
    sweep = _write(folder, "quick_rank_sweep.yaml", SWEEP)
    plain = _write(folder, "quick_r4.yaml", "include: _quick.yaml\n")
    with pytest.raises(SpecError, match="defined twice") as err:
        all_tasks()
    assert str(sweep) in str(err.value) and str(plain) in str(err.value)


def test_a_sweep_file_cannot_be_included_or_name_its_tasks_otherwise(folder):
    _write(folder, "quick_rank_sweep.yaml", SWEEP)
    with pytest.raises(SpecError, match="holds a sweep"):
        load_task_file(_write(folder, "on_sweep.yaml", "include: quick_rank_sweep.yaml\n"))
    with pytest.raises(SpecError, match="named by sweep.name"):
        load_task_specs(_write(folder, "named_sweep.yaml", "name: named_sweep\n" + textwrap.dedent(SWEEP)))


# --- the shipped task files -------------------------------------------------------------------------


@pytest.fixture
def handwritten():
    """A hand-written task file placed straight into the built-in tasks/ folder, removed afterwards."""
    path = task_dirs()[0] / "zz_handwritten_test_task.yaml"  # the built-in folder: tasks/ in a checkout
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "CONTRIBUTING.md").read_text(), re.S)
    path.write_text(next(b for b in blocks if b.startswith("# Digits with fewer")))  # the documented example
    _clear()
    try:
        yield path
    finally:
        path.unlink()
        _clear()


def test_a_handwritten_task_in_the_builtin_folder_just_works(handwritten, tmp_path):
    from lorabench.specs import RunConfig
    from lorabench.validation import check_grid

    spec = get_task("zz_handwritten_test_task")
    digits = get_task("digits")
    assert spec.k_grid == [1, 5] and spec.suite == "tests" and spec.recipe.max_steps == 50
    assert spec.upstream == digits.upstream and spec.recipe.head_epochs == digits.recipe.head_epochs
    assert spec.preprocessing == digits.preprocessing and spec.metadata.license == digits.metadata.license
    assert task_source(spec.name) == f"task file {handwritten}"
    cells = [RunConfig(task=spec.name, method="classifier_tuning", backbone=spec.backbone, k=k, seed=0,
                       results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache")) for k in spec.k_grid]
    check_grid(cells)
    from lorabench.evaluator import run_cell

    rec = run_cell(cells[0])  # and it runs: one cell, head only (no upstream training needed)
    assert rec.task == spec.name and rec.n_support == 2 and 0.0 <= rec.value <= 1.0


SHIPPED = sorted(p for p in TASKS.glob("*.yaml") if not p.name.startswith("_"))
BASES = sorted(TASKS.glob("_*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_task_file_loads_and_is_short(path):
    """Hand-readable: a plain task file is at most 40 lines; a sweep file at most 25 lines per task it defines."""
    specs = load_task_specs(path)
    lines = len(path.read_text().splitlines())
    if "sweep" in yaml.safe_load(path.read_text()):
        assert len(specs) > 1 and path.stem.endswith("_sweep") and lines <= 25 * len(specs), lines
    else:
        assert [s.name for s, _ in specs] == [path.stem] and lines <= 40, lines
    assert "Generated by" not in path.read_text()


def test_every_shipped_base_is_included_somewhere():
    used = set()
    for path in [*SHIPPED, *BASES]:
        inc = yaml.safe_load(path.read_text()).get("include", [])
        used |= {(path.parent / i).resolve() for i in ([inc] if isinstance(inc, str) else inc)}
    assert not {b.resolve() for b in BASES} - used


def test_shipped_licences_and_citations_agree_across_tasks(monkeypatch):
    """What the generator guaranteed by writing it once: a dataset's licence reads the same in every task."""
    monkeypatch.delenv("LORABENCH_TASKS", raising=False)
    _clear()
    licences: dict[str, set[str]] = {}
    for spec in all_tasks().values():
        if spec.name == "digits":
            continue
        assert spec.metadata.citation.startswith(PAPER), spec.name
        for part in re.split(r"; (?=\w+: )", spec.metadata.license):
            name, text = part.split(": ", 1)
            licences.setdefault(name, set()).add(text)
    assert {n: t for n, t in licences.items() if len(t) > 1} == {}
    _clear()


# --- library ---------------------------------------------------------------------------------------

LIBRARY = """\
include: _quick.yaml
tags: {sweep: n_upstream, n_upstream: "{n}"}
library:
  order_seed: "lib:test"
  size: "{n}"
  pools:
    - {prefix: d, pairs: 4, train: {name: sklearn_digits, split: all, builtin: true, max_examples: 50}}
    - prefix: g
      train: {name: sklearn_digits, split: all, builtin: true}
      groups: {low: [0, 1, 2], high: [7, 8, 9]}
sweep:
  name: "lib_n{n}"
  over: [{n: 1}, {n: 3}, {n: 8}]
"""


def test_library_writes_pair_and_group_modules_in_one_nested_seeded_order(folder):
    _write(folder, "lib_sweep.yaml", LIBRARY)
    tasks = all_tasks()
    n1, n3, n8 = (tasks[f"lib_n{n}"] for n in (1, 3, 8))
    names = [u.name for u in n8.upstream]
    # 4 classes give 6 pairs, plus 2 groups; each module is a class subset of the pool's dataset
    assert sorted(names) == ["d_01", "d_02", "d_03", "d_12", "d_13", "d_23", "g_high", "g_low"]
    by_name = {u.name: u.train for u in n8.upstream}
    assert by_name["d_13"].classes == [1, 3] and by_name["d_13"].max_examples == 50
    assert by_name["g_high"].classes == [7, 8, 9] and by_name["g_high"].max_examples is None
    # nested: the task with N modules holds the first N of the one fixed order
    assert [u.name for u in n3.upstream] == names[:3] and [u.name for u in n1.upstream] == names[:1]
    assert n3.tags == {"sweep": "n_upstream", "n_upstream": 3}
    assert names != sorted(names, key=lambda n: (n[0] != "d", n))  # the order is a permutation, not the pools'
    _clear()
    assert [u.name for u in all_tasks()["lib_n8"].upstream] == names  # and it is the same every time


@pytest.mark.parametrize("change, message", [
    (("size: \"{n}\"", "size: 9"), "library.size must be a whole number from 1 to 8"),
    (("pairs: 4,", "pairs: 1,"), "pairs must be a number of classes of at least 2"),
    (("{prefix: d, pairs: 4,", "{prefix: d, pairs: 4, groups: {a: [0]},"), "exactly one of `pairs`"),
    (("prefix: g\n", "prefix: d\n      groups: {\"01\": [0, 1]}\n"), "named twice"),
    (("order_seed: \"lib:test\"", "order_seed: 1\n  shuffle: true"), "library must be a mapping with `pools`"),
    (("split: all, builtin: true, max_examples: 50}", "split: all, builtin: true, classes: [0, 1]}"),
     "without `classes`"),
])
def test_a_malformed_library_names_the_file_and_what_is_allowed(folder, change, message):
    text = LIBRARY.replace(*change)
    if "named twice" in message:
        text = LIBRARY.replace("    - prefix: g\n      train: {name: sklearn_digits, split: all, builtin: true}\n"
                               "      groups: {low: [0, 1, 2], high: [7, 8, 9]}\n",
                               "    - prefix: d\n      train: {name: sklearn_digits, split: all, builtin: true}\n"
                               "      groups: {\"01\": [0, 1]}\n")
    assert text != LIBRARY
    path = _write(folder, "lib_sweep.yaml", text)
    with pytest.raises(SpecError, match=re.escape(message)) as err:
        load_task_specs(path)
    assert str(path) in str(err.value)


def test_a_library_and_an_upstream_list_are_exclusive(folder):
    text = LIBRARY.replace("library:", "upstream: [{name: u, train: {name: sklearn_digits, split: all, builtin: true}}]"
                           "\nlibrary:")
    with pytest.raises(SpecError, match="both `library` and `upstream`"):
        load_task_specs(_write(folder, "lib_sweep.yaml", text))


def test_the_shipped_library_suite_holds_143_experts_nested_and_held_out_from_the_downstream():
    sizes = [1, 3, 10, 30, 100, 143]
    specs = [get_task(f"library_sign_digits_n{n}") for n in sizes]
    full = [u.name for u in specs[-1].upstream]
    assert len(full) == len(set(full)) == 143
    for n, spec in zip(sizes, specs):
        assert [u.name for u in spec.upstream] == full[:n] and spec.tags["n_upstream"] == n
        assert spec.preprocessing.image_size == 224 and spec.upstream_training.epochs == 1  # the stated budget
        assert spec.k_grid == [1, 5] and spec.seeds == list(range(10))
    counts = {p: sum(n.startswith(p + "_") for n in full) for p in ("cifar10", "fmnist", "mnist5k", "omniglot")}
    assert counts == {"cifar10": 45, "fmnist": 45, "mnist5k": 45, "omniglot": 8}
    pools = {u.train.name for u in specs[-1].upstream}
    assert specs[-1].downstream.train.name == specs[-1].downstream.test.name == "sign_digits" not in pools
    caps = {u.train.max_examples for u in specs[-1].upstream}
    assert caps == {200, 300}  # a few hundred images per expert
