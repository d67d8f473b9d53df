"""The layout's contracts: one backbone per cell, one vocabulary of modalities, named random streams,
typed composition weights, and one training loop for heads and end-to-end training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lorabench.evaluator as evaluator
import lorabench.training as training
from lorabench.method import METHODS, Method
from lorabench.seeding import Streams, derive_seed, generator
from lorabench.specs import MODALITIES, Composition, RunConfig, TaskSpec


def cfg(task, method, tmp_path, **kw) -> RunConfig:
    return RunConfig(task=task, method=method, backbone="efficientnet_lite0", k=1, seed=0,
                     results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.mark.parametrize("method,tune", [("uniform_composition", False), ("learned_composition", False),
                                         ("classifier_tuning", True)])
def test_a_cell_builds_its_backbone_once(quick_task, store, monkeypatch, method, tune):
    """Encoding, upstream loading and the method share the cell's one backbone; --tune trials train copies."""
    calls = []
    real = evaluator.create_backbone
    monkeypatch.setattr(evaluator, "create_backbone", lambda *a, **k: calls.append(a) or real(*a, **k))
    rec = evaluator.run_cell(cfg(quick_task, method, store, tune=tune))
    assert len(calls) == 1 and 0.0 <= rec.value <= 1.0
    if tune:
        assert len(rec.extras["tuning"]["val_accuracy"]) == 3  # three trials, each on its own copy


def test_a_grid_builds_each_cells_upstream_job_list_once_and_the_cell_loads_that_list(quick_task, tmp_path,
                                                                                      monkeypatch):
    """The grid's upstream phase and its cells share one list per cell: the worker builds none of its own."""
    import lorabench.identity as identity
    from lorabench.grid import expand_grid, run_grid

    cells = expand_grid(["uniform_composition", "classifier_tuning"], [quick_task], [1], [0, 1], None,
                        results_dir=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"))
    built, loaded = [], []
    real_jobs, real_ensure = identity.upstream_jobs, evaluator.ensure_upstream_adapters
    monkeypatch.setattr(identity, "upstream_jobs", lambda *a, **k: built.append(a[0].name) or real_jobs(*a, **k))
    monkeypatch.setattr(evaluator, "ensure_upstream_adapters",
                        lambda jobs, *a, **k: loaded.append([j.path for j in jobs]) or real_ensure(jobs, *a, **k))
    report = run_grid(cells)
    assert len(report.done) == 4
    assert len(built) == 2  # the two composition cells, once each (classifier tuning composes nothing)
    assert len(loaded) == 2 and all(paths and all(Path(p).is_dir() for p in paths) for paths in loaded)


def test_the_method_gets_the_cell_backbone_with_pristine_weights(quick_task, store):
    """The backbone that encoded the data is the one the method changes: after a uniform composition its
    adapted weights moved away from a fresh copy's, and nothing else did."""
    from lorabench.backbones import create_backbone

    seen = {}
    cls = METHODS.get("uniform_composition")
    real_prepare = cls.prepare

    def spy(self, ctx):
        seen["before"] = {n: p.detach().clone() for n, p in ctx.backbone.model.named_parameters()}
        real_prepare(self, ctx)
        seen["after"] = {n.replace(".base.", "."): p.detach().clone()  # adapted layers wrap W0 as `.base`
                         for n, p in ctx.backbone.model.named_parameters()}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "prepare", spy)
        evaluator.run_cell(cfg(quick_task, "uniform_composition", store))
    fresh = dict(create_backbone("efficientnet_lite0").model.named_parameters())
    assert all(torch.equal(seen["before"][n], fresh[n]) for n in fresh)
    moved = {n for n in fresh if not torch.equal(seen["after"][n], seen["before"][n])}
    assert moved and all(".conv_pw" in n or ".conv_pwl" in n for n in moved)


def test_modalities_are_the_task_vocabulary_and_a_foreign_word_fails_at_definition():
    assert set(MODALITIES) == set(TaskSpec.model_fields["modality"].annotation.__args__)
    for name in METHODS.names():
        assert set(METHODS.get(name).modalities) <= set(MODALITIES), name
    with pytest.raises(TypeError, match="multiple_choice"):
        class _Text(Method):  # the old word for QA
            name = "text_method"
            modalities = ("text",)
    with pytest.raises(TypeError, match="no task modality"):
        class _Str(Method):  # a bare string, not a tuple
            name = "str_method"
            modalities = "image"


def test_the_method_registry_refuses_a_class_that_breaks_the_contract():
    """Abstract hooks: a subclass missing one cannot be instantiated or registered; nor can a non-Method."""
    from lorabench.errors import LorabenchError
    from lorabench.method import EndToEndMethod, FrozenFeatureMethod
    from lorabench.registry import Registry

    reg = Registry("method", base_cls=Method)

    class Half(Method):
        def fit(self, support): ...

    class NoParams(EndToEndMethod):  # end-to-end training needs to know what it trains
        pass

    class Whole(FrozenFeatureMethod):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Half()
    with pytest.raises(LorabenchError, match=r"'half' cannot be registered: class .*Half does not implement "
                                             r"lorabench.method.Method's abstract method\(s\): predict, trainable_params"):
        reg.add("half", Half)
    with pytest.raises(LorabenchError, match="abstract method.*backbone_params"):
        reg.add("no_params", NoParams)
    with pytest.raises(LorabenchError, match="'stranger' cannot be registered: a function is not a subclass"):
        reg.add("stranger", lambda: None)
    reg.add("whole", Whole)
    assert reg.get("whole") is Whole and not reg.broken


def test_a_method_declares_its_hyperparameters_as_a_params_model():
    """Defaults and allowed values live in one pydantic model: `defaults` is derived from it; the old dict forms
    and a field that would change the shared recipe fail when the class is defined."""
    from pydantic import Field

    from lorabench.specs import EndToEndParams, MethodParams

    lora = METHODS.get("lora")
    assert lora.defaults == {"lr": 1e-3, "rank": 16, "alpha": 16.0} and issubclass(lora.Params, EndToEndParams)
    assert METHODS.get("learned_composition_null").defaults == {"lr": 0.1}  # inherited with the class
    with pytest.raises(TypeError, match="a `Params` model now, not `defaults`"):
        class _Dict(Method):
            defaults = {"scale": 0.5}
    with pytest.raises(TypeError, match="not `hparam_ranges`"):
        class _Ranges(Method):
            hparam_ranges = {"scale": ">0"}
    with pytest.raises(TypeError, match=r"Params fields \['head_lr'\] are fields of the shared recipe"):
        class _Clash(Method):
            class Params(MethodParams):
                head_lr: float = Field(0.1, gt=0)


def test_streams_are_named_and_independent():
    s = Streams.of_cell("digits", 5, 1)
    assert s.init == derive_seed("digits", 5, 1, "init") and s.views == derive_seed("digits", 5, 1, "views")
    assert torch.equal(torch.rand(4, generator=s.generator("data-order")),
                       torch.rand(4, generator=generator(s.init, "data-order")))
    assert not torch.equal(torch.rand(4, generator=s.generator("data-order")),
                           torch.rand(4, generator=s.generator("dare")))
    assert Streams.of_cell("digits", 5, 2) != s and Streams.of_cell("digits", 1, 1) != s


def test_composition_is_typed_with_a_checked_shape():
    c = Composition(upstream=["a", "b"], matrices=["m1", "m2", "m3"], weights=[[0.5, 0.5], [0.2, 0.8], [1, 0]])
    assert c.weights[1][1] == 0.8
    with pytest.raises(ValueError, match=r"\[3 matrices\]\[2 upstream"):
        Composition(upstream=["a", "b"], matrices=["m1", "m2", "m3"], weights=[[0.5, 0.5], [1.0]])
    with pytest.raises(ValueError, match=r"\[1 matrices\]"):
        Composition(upstream=["a"], matrices=["m"], weights=[])


def test_head_and_end_to_end_training_go_through_one_loop(monkeypatch):
    """Both trainers delegate their steps (optimizer, schedule, NaN check) to `training.run_steps`."""
    from lorabench.backbones import create_backbone
    from lorabench.data import Split
    from lorabench.lora import attach
    from lorabench.specs import Recipe

    calls = []
    real = training.run_steps
    monkeypatch.setattr(training, "run_steps", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    bb = create_backbone("tiny_vit")
    split = Split(key="t", inputs={"pixels": torch.rand(4, 3, 32, 32)}, labels=torch.tensor([0, 1, 0, 1]),
                  num_classes=2, modality="image", meta={"image_size": 32})
    recipe = Recipe(batch_size=2, head_epochs=3)
    head = bb.make_head(2)
    bank = training.extract_features(bb, split)[None]
    training.train_head(head, bank, split, recipe, torch.Generator().manual_seed(0), recipe.head_epochs, recipe.head_lr)
    layers = attach(bb.model, bb.targets())
    for layer in layers.values():
        layer.enable_lora(2, 2.0)
    groups = [{"params": [p for lay in layers.values() for p in (lay.lora_A, lay.lora_B)], "lr": 1e-3}]
    log = training.train_end_to_end(bb, head, groups, split, recipe, torch.Generator().manual_seed(0), steps=5)
    assert calls == [3 * 2, 5] and log["steps"] == 5


def test_imports_follow_the_readme_module_map():
    """The README's module map is the layering: every `lorabench/*.py` is in it, and each module imports only
    from its own row or earlier ones (data flows one way; no cycles)."""
    import ast
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = repo.joinpath("README.md").read_text()
    table = readme[readme.index("Module map"):].split("\n\n")[1]
    row_of = {}
    for i, line in enumerate(l for l in table.splitlines() if l.startswith("| `")):
        for name in re.findall(r"`(\w+)\.py`", line.split("|")[1]):
            row_of[name] = i
    modules = {p.stem: p for p in (repo / "lorabench").glob("*.py") if p.stem != "__init__"}
    assert set(modules) <= set(row_of), f"not in the README's module map: {sorted(set(modules) - set(row_of))}"
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for t in targets:
                dep = t.split(".")[1] if t.startswith("lorabench.") else None
                if dep in modules:
                    assert row_of[dep] <= row_of[name], f"{name}.py imports {dep}.py from a later layer"


def test_git_dirty_says_whether_tracked_files_differ_from_the_commit(tmp_path, monkeypatch):
    """A record run from an edited tree says so (`git_dirty`), instead of claiming to be the commit's."""
    import subprocess

    import lorabench
    import lorabench.provenance as provenance

    repo = tmp_path / "repo"
    pkg = repo / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    monkeypatch.setattr(lorabench, "__file__", str(pkg / "__init__.py"))
    assert provenance.git_dirty() is False
    (pkg / "__init__.py").write_text("x = 2\n")
    assert provenance.git_dirty() is True
    monkeypatch.setattr(lorabench, "__file__", str(tmp_path / "nogit" / "__init__.py"))
    (tmp_path / "nogit").mkdir()
    assert provenance.git_dirty() is None
