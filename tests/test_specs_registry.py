"""Spec validation errors name the file and field; registries suggest close names."""

from __future__ import annotations

import pytest
import yaml

from lorabench.errors import LorabenchError, SpecError, UnknownNameError
from lorabench.method import METHODS
from lorabench.backbones import BACKBONES
from lorabench.registry import Registry
from lorabench.specs import RunConfig
from lorabench.task_registry import get_task, load_task_file

from conftest import QUICK_TASK


def _write(tmp_path, name, data):
    p = tmp_path / f"{name}.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_valid_spec_loads(tmp_path):
    spec = load_task_file(_write(tmp_path, "digits_quick", QUICK_TASK))
    assert spec.name == "digits_quick" and [u.name for u in spec.upstream] == ["digits_01", "digits_23"]


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(k_grid=[1, -5]), "k_grid"),
    (lambda d: d.update(setting="label-shift"), "setting"),
    (lambda d: d.pop("upstream"), "upstream"),
    (lambda d: d["downstream"]["train"].update(holdout={"test_fraction": 1.5, "part": "train"}),
     "downstream.train.holdout.test_fraction"),
    (lambda d: d.update(k_grid=["most"]), "k_grid.0"),
    (lambda d: d["downstream"].update(tset={}), "downstream.tset"),
])
def test_malformed_spec_names_file_and_field(tmp_path, mutate, field):
    data = yaml.safe_load(yaml.safe_dump(QUICK_TASK))
    mutate(data)
    path = _write(tmp_path, "digits_quick", data)
    with pytest.raises(SpecError) as err:
        load_task_file(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_invalid_yaml_and_name_mismatch(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_task_file(_write(tmp_path, "broken", "name: [unclosed"))
    with pytest.raises(SpecError, match="must be named digits_quick.yaml"):
        load_task_file(_write(tmp_path, "other_name", QUICK_TASK))
    with pytest.raises(SpecError, match="mapping"):
        load_task_file(_write(tmp_path, "listy", "- 1\n- 2\n"))


def test_unknown_names_list_valid_ones_and_close_matches(quick_task):
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("learned_compositon")
    assert "'learned_composition'" in str(err.value).split("Valid")[0]
    assert "classifier_tuning" in str(err.value)
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        get_task("digit")
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        BACKBONES.get("efficientnet-lite0")
    with pytest.raises(UnknownNameError) as err:
        get_task("zzzzzz")
    assert "Did you mean" not in str(err.value) and "digits" in str(err.value)


def test_registry_rejects_duplicates_and_keeps_broken_plugins_aside():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(LorabenchError, match="twice"):
        reg.add("a", 2)

    class BrokenEP:
        name = "boom"

        def load(self):
            raise ImportError("no module named boom_dep")

    reg._entry_points = {"boom": BrokenEP()}
    assert reg.names() == ["a"]  # listing still works
    assert "ImportError" in reg.broken["boom"]
    with pytest.raises(LorabenchError, match="failed to load: ImportError"):
        reg.get("boom")


def test_config_hash_ignores_locations_but_not_hparams():
    a = RunConfig(task="t", method="m", backbone="b", k=1, seed=0)
    b = a.model_copy(update={"results_dir": "/elsewhere", "device": "cuda", "data_dir": "/d"})
    c = a.model_copy(update={"hparams": {"lr": 0.1}})
    assert a.config_hash() == b.config_hash() != c.config_hash()
    assert a.result_path().name.startswith("m__b__k1__s0__")
