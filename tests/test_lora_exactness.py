"""Composition is exact on ΔW = scale·B·A; parameter counts match the paper's formulas."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch

from lorabench.adapters import LoraAdapter, attach_composition, load_adapter, save_adapter, stack_adapters
from lorabench.backbones import BERT_RULES, T5_RULES, VIT_RULES, EFFNET_RULES, create_backbone
from lorabench.errors import AdapterError
from lorabench.lora import attach, compose_delta, find_targets, lora_param_count, merge_all_
from lorabench.precision import autocast

torch.set_default_dtype(torch.float32)


def random_adapter(targets, rank, seed, name=None, alpha=None, dtype=torch.float32) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    w = {t.name: (torch.randn(rank, t.in_features, generator=g, dtype=dtype) * 0.1,
                  torch.randn(t.out_features, rank, generator=g, dtype=dtype) * 0.1) for t in targets}
    alpha = alpha if alpha is not None else 2.0 * rank
    return LoraAdapter(name or f"ad{seed}", w, {n: alpha / rank for n in w}, source=f"mem:{seed}")


def reference_delta(adapters, weights, target):
    """Σₙ wₙ·scaleₙ·Bₙ·Aₙ with an explicit Python loop, in float64."""
    return sum(w * ad.scales[target.name] * (ad.weights[target.name][1].double() @ ad.weights[target.name][0].double())
               for w, ad in zip(weights, adapters))


def randomize_logits(layers, seed: int) -> torch.Generator:
    """Random composition logits on every layer (so the weights are not uniform); the generator goes on."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            layer.comp_logits.copy_(torch.randn(layer.comp_logits.shape, generator=g))
    return g


def test_compose_delta_matches_loop_to_1e6():
    g = torch.Generator().manual_seed(0)
    s, n, r, out, inp = 3, 7, 4, 10, 12
    a = [torch.randn(s, r, inp, generator=g, dtype=torch.float64) for _ in range(n)]
    b = [torch.randn(s, out, r, generator=g, dtype=torch.float64) for _ in range(n)]
    coef = torch.rand(s, n, generator=g, dtype=torch.float64)
    got = compose_delta(torch.cat(a, 1), torch.cat(b, 2), coef, r)
    want = torch.stack([sum(coef[i, j] * b[j][i] @ a[j][i] for j in range(n)) for i in range(s)])
    assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: inside a bf16 cell's autocast, still exact
@pytest.mark.parametrize("materialize", [True, False], ids=["stacked-dW", "factors"])
@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_bert", "tiny_t5", "efficientnet_lite0"])
def test_learned_layer_weight_is_exact_weighted_sum(backbone, materialize, precision, monkeypatch):
    if materialize:  # these ranks (4, 8) would compose from the factors at this machine's balance
        monkeypatch.setattr("lorabench.adapters.CPU_BALANCE_PER_THREAD", 0.0)
    else:
        monkeypatch.setattr("lorabench.adapters.STACKED_DELTA_BUDGET_BYTES", 0)
    bb = create_backbone(backbone)
    targets = bb.targets()
    adapters = [random_adapter(targets, rank=r, seed=i) for i, r in enumerate([4, 8, 4])]  # mixed ranks
    w0 = {t.module: bb.model.get_submodule(t.module).weight.detach().clone() for t in targets}
    with autocast("cpu", precision):
        layers = attach_composition(bb.model, targets, adapters)
    assert all((layer.comp_delta is not None) == materialize for layer in layers.values())
    randomize_logits(layers, seed=1)
    for t in targets:
        layer = layers[t.module]
        i = layer.targets.index(t)
        weights = torch.softmax(layer.comp_logits[i].double(), -1)
        with autocast("cpu", precision):
            got = layer.composed_delta()
        assert got.dtype == torch.float32
        assert torch.allclose(got.double()[t.rows[0]:t.rows[1]], reference_delta(adapters, weights, t), atol=1e-6), t.name
    with autocast("cpu", precision):
        merge_all_(bb.model)  # folding into W0 gives the same matrix
    for t in targets[:6]:
        layer = layers[t.module]
        i = layer.targets.index(t)
        weights = torch.softmax(layer.comp_logits[i].double(), -1)
        merged = layer.base.weight.detach().double().flatten(1)[t.rows[0]:t.rows[1]]
        want = w0[t.module].double().flatten(1)[t.rows[0]:t.rows[1]] + reference_delta(adapters, weights, t)
        assert torch.allclose(merged, want, atol=1e-6)


def _uniform_model(bb, targets, adapters):
    model = copy.deepcopy(bb.model)
    n = len(adapters)
    for layer in attach_composition(model, targets, adapters).values():
        layer.merge_(layer.composed_delta(coef=torch.full((n,), 1.0 / n) * layer.comp_scale))
    return model


@pytest.mark.parametrize("backbone", ["tiny_vit", "efficientnet_lite0"])
def test_uniform_of_one_module_is_that_module_and_learned_init_is_uniform(backbone):
    bb = create_backbone(backbone)
    targets = bb.targets()
    ad = random_adapter(targets, 4, seed=3)
    one = _uniform_model(bb, targets, [ad])
    for t in targets:
        merged = one.get_submodule(t.module).base.weight.detach().flatten(1)[t.rows[0]:t.rows[1]]
        base = bb.model.get_submodule(t.module).weight.detach().flatten(1)[t.rows[0]:t.rows[1]]
        assert torch.allclose(merged.double() - base.double(), ad.delta(t.name).double(), atol=1e-6)

    adapters = [random_adapter(targets, 4, seed=s) for s in (5, 6, 7)]
    uniform = _uniform_model(bb, targets, adapters).eval()
    learned = copy.deepcopy(bb.model)
    attach_composition(learned, targets, adapters)  # logits start at 0 -> softmax uniform
    learned.eval()
    x = torch.rand(2, 3, bb.image_size, bb.image_size) if backbone == "tiny_vit" else torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(learned(x), uniform(x), atol=1e-5)
        assert not torch.allclose(uniform(x), bb.model(x), atol=1e-3)  # the adapters do change the function


def test_lora_layer_forward_matches_definition():
    bb = create_backbone("tiny_vit")
    targets = bb.targets()
    qkv = bb.model.blocks[0].attn.qkv
    w0, b0 = qkv.weight.detach().clone(), qkv.bias.detach().clone()
    layer = attach(bb.model, targets)["blocks.0.attn.qkv"]
    layer.enable_lora(rank=4, alpha=8.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5, w0.shape[1])
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    delta = torch.cat([b[i] @ a[i] for i in range(3)]) * 2.0  # q, k, v blocks stacked by rows
    assert torch.allclose(layer(x), x @ (w0 + delta).T + b0, atol=1e-5)
    block0 = [t for t in targets if t.module == "blocks.0.attn.qkv"]
    assert lora_param_count(block0, 4) == layer.lora_A.numel() + layer.lora_B.numel() == 3 * 4 * (48 + 48)


def test_conv_lora_forward_matches_definition():
    bb = create_backbone("efficientnet_lite0")
    t = bb.targets()[3]
    conv = bb.model.get_submodule(t.module)
    w0 = conv.weight.detach().clone()
    layer = attach(bb.model, [t])[t.module]
    layer.enable_lora(rank=4, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, t.in_features, 6, 6)
    delta = (layer.lora_B[0] @ layer.lora_A[0]).detach()
    want = torch.nn.functional.conv2d(x, (w0.flatten(1) + delta)[:, :, None, None])
    assert torch.allclose(layer(x), want, atol=1e-4)


def test_conv_lora_gradients_are_the_factored_definitions():
    """A 1x1 conv's LoRA runs as one conv with W0 + scale·B·A; its gradients for A, B and the input are those of
    y = W0·x + scale·B·(A·x) (float64, so agreement is to rounding)."""
    bb = create_backbone("efficientnet_lite0")
    t = bb.targets()[3]
    layer = attach(bb.model, [t])[t.module]
    layer.enable_lora(rank=4, alpha=12.0)
    layer.double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g, dtype=torch.float64))
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64))
    x = torch.randn(3, t.in_features, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, t.out_features, 5, 7, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((layer(x) * up).sum(), [x, layer.lora_A, layer.lora_B])
    a, b = (layer.lora_A[0].detach().clone().requires_grad_(), layer.lora_B[0].detach().clone().requires_grad_())
    w0 = layer.base.weight.detach().flatten(1)
    conv = torch.nn.functional.conv2d
    y = conv(x, w0[:, :, None, None]) + 3.0 * conv(conv(x, a[:, :, None, None]), b[:, :, None, None])
    want = torch.autograd.grad((y * up).sum(), [x, a, b])
    assert layer.lora_A.dtype == torch.float64
    for gv, wv in zip(got, want):
        assert torch.allclose(gv.reshape(wv.shape), wv, rtol=1e-10, atol=1e-10)


def test_param_counts_match_the_formulas():
    import timm
    from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch32_224", pretrained=False, num_classes=0)
        bert = BertModel(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536))
        t5cfg = T5Config(d_model=1024, d_kv=64, num_heads=16, d_ff=2816, num_layers=24, num_decoder_layers=24,
                         feed_forward_proj="gated-gelu", vocab_size=32128)
        t5 = T5ForConditionalGeneration(t5cfg)
    assert lora_param_count(find_targets(vit, VIT_RULES), 16) == 12 * 3 * (768 * 16 + 16 * 768) == 884_736
    assert lora_param_count(find_targets(bert, BERT_RULES), 16) == 6 * 3 * 16 * (384 + 384) == 221_184
    inner = t5cfg.num_heads * t5cfg.d_kv
    n_mats = 3 * t5cfg.num_layers + 6 * t5cfg.num_decoder_layers  # encoder self; decoder self + cross
    assert lora_param_count(find_targets(t5, T5_RULES), 16) == n_mats * 16 * (1024 + inner) == 7_077_888
    eff = find_targets(create_backbone("efficientnet_lite0").model, EFFNET_RULES)
    assert len(eff) == 31 and all(t.conv for t in eff)


def test_peft_roundtrip_and_errors(tmp_path):
    bb = create_backbone("tiny_vit")
    targets = bb.targets()
    ad = random_adapter(targets, 4, seed=11, alpha=8.0)
    save_adapter(ad, tmp_path / "a", targets, rank=4, alpha=8.0)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    back = load_adapter(tmp_path / "a", targets)
    for t in targets:
        assert torch.allclose(back.delta(t.name), ad.delta(t.name))

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp_path / "corrupt" / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match=r"corrupt/adapter_model.safetensors.*corrupt"):
        load_adapter(tmp_path / "corrupt", targets)
    other = create_backbone("tiny_bert").targets()
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        load_adapter(tmp_path / "a", other)  # wrong backbone: names do not match
    with pytest.raises(AdapterError, match="trained on 'tiny_vit'"):
        ad.base_model = "tiny_vit"
        save_adapter(ad, tmp_path / "b", targets, rank=4, alpha=8.0)
        load_adapter(tmp_path / "b", targets, backbone_aliases={"vit_b32"})
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_adapter(tmp_path, targets)


def test_real_peft_adapter_loads_exactly(tmp_path):
    """An adapter trained by PEFT itself (fused qkv, no q/k/v split) composes to PEFT's own merged ΔW."""
    from peft import LoraConfig, get_peft_model

    bb = create_backbone("tiny_vit")
    w0 = bb.model.blocks[1].attn.qkv.weight.detach().clone()
    peft_model = get_peft_model(copy.deepcopy(bb.model), LoraConfig(r=4, lora_alpha=12, target_modules=["qkv"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    peft_model.save_pretrained(tmp_path / "peft")
    merged = peft_model.merge_and_unload().blocks[1].attn.qkv.weight.detach()
    ad = load_adapter(tmp_path / "peft", bb.targets())
    assert sorted(ad.weights)[:3] == ["blocks.0.attn.qkv.k", "blocks.0.attn.qkv.q", "blocks.0.attn.qkv.v"]
    ours = torch.cat([ad.delta(f"blocks.1.attn.qkv.{b}") for b in "qkv"])
    assert torch.allclose(w0 + ours, merged, atol=1e-6)

    # and on BERT query/key/value (real module names, PEFT's own key layout)
    bert = create_backbone("tiny_bert")
    pm = get_peft_model(copy.deepcopy(bert.model), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_()
    pm.save_pretrained(tmp_path / "peft_bert")
    q0 = bert.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    mq = pm.merge_and_unload().encoder.layer[0].attention.self.query.weight.detach()
    ad = load_adapter(tmp_path / "peft_bert", bert.targets())
    assert torch.allclose(q0 + ad.delta("encoder.layer.0.attention.self.query"), mq, atol=1e-6)
    # key was not adapted: stacking gives it an exact zero delta
    stacked = stack_adapters(bert.targets(), [ad])
    a_cat, b_cat, scales, r = stacked["encoder.layer.0.attention.self.key"]
    assert float(compose_delta(a_cat, b_cat, scales, r).abs().max()) == 0.0


@pytest.mark.parametrize("materialize", [True, False], ids=["stacked-dW", "factors"])
@pytest.mark.parametrize("backbone", ["tiny_vit", "efficientnet_lite0"])
def test_null_module_and_global_gain_are_exact_on_delta(backbone, materialize, monkeypatch):
    """W = W0 + g·Σₙ softmax(v)ₙ ΔWₙ over N modules + a null one (ΔW = 0, the softmax's last entry): the
    weighted sum of the real modules, times the shared gain, exactly; a dominant null logit or g = 0 gives W0."""
    if materialize:  # these ranks (4, 8) would compose from the factors at this machine's balance
        monkeypatch.setattr("lorabench.adapters.CPU_BALANCE_PER_THREAD", 0.0)
    else:
        monkeypatch.setattr("lorabench.adapters.STACKED_DELTA_BUDGET_BYTES", 0)
    bb = create_backbone(backbone)
    targets = bb.targets()
    adapters = [random_adapter(targets, rank=r, seed=i) for i, r in enumerate([4, 8, 4])]
    w0 = {t.module: bb.model.get_submodule(t.module).weight.detach().clone() for t in targets}
    gain = torch.nn.Parameter(torch.tensor(0.37))
    layers = attach_composition(bb.model, targets, adapters, null=True, gain=gain)
    g = randomize_logits(layers, seed=2)
    assert all(layer.comp_logits.shape == (layer.n_blocks, len(adapters) + 1) for layer in layers.values())
    for t in targets:
        layer = layers[t.module]
        i = layer.targets.index(t)
        full = torch.softmax(layer.comp_logits[i].double(), -1)
        assert torch.allclose(layer.composition_weights(with_null=True)[i].double(), full)
        weights = full[:-1]  # the null module contributes ΔW = 0
        assert weights.sum() < 1 - 1e-3  # the update shrank: these weights no longer sum to 1
        got = layer.composed_delta().double()[t.rows[0]:t.rows[1]]
        assert torch.allclose(got, 0.37 * reference_delta(adapters, weights, t), atol=1e-6), t.name
    # the gain is one parameter shared by every layer, and gradients reach it and the null logits
    assert {id(layer.comp_gain) for layer in layers.values()} == {id(gain)}
    x = torch.randn(2, 3, bb.image_size, bb.image_size, generator=g)
    out = bb.model(x)  # a random projection: the plain sum of a LayerNorm'd output has no gradient
    (out @ torch.randn(out.shape[-1], generator=g)).sum().backward()
    assert gain.grad is not None and gain.grad != 0
    assert all(layer.comp_logits.grad[:, -1].abs().sum() > 0 for layer in layers.values())
    with torch.no_grad():  # "less of everything": back to the bare backbone either way
        for layer in layers.values():
            layer.comp_logits[:, -1] = 60.0
    assert all(layer.composed_delta().abs().max() < 1e-12 for layer in layers.values())
    with torch.no_grad():
        for layer in layers.values():
            layer.comp_logits.zero_()
        gain.zero_()
    merge_all_(bb.model)
    for t in targets[:6]:
        assert torch.equal(layers[t.module].base.weight.detach(), w0[t.module]), t.name


def test_both_paths_give_the_same_logit_gradients(monkeypatch):
    """One training step's gradient on every composition logit is the same from the stacked ΔW and from the
    factors (the paths differ in speed only)."""
    grads = {}
    torch.set_default_dtype(torch.float64)  # in float64, so float32's summation order (which BLAS kernel, which
    try:  # alignment) cannot decide the comparison: the two paths must agree as mathematics, to 1e-9
        for path in ("stack", "factors"):
            monkeypatch.setattr("lorabench.adapters.CPU_BALANCE_PER_THREAD", 0.0 if path == "stack" else 1e9)
            bb = create_backbone("tiny_vit")
            bb.model.double()
            targets = bb.targets()
            adapters = [random_adapter(targets, 4, seed=i, dtype=torch.float64) for i in range(3)]
            layers = attach_composition(bb.model, targets, adapters)
            assert all((layer.comp_delta is not None) == (path == "stack") for layer in layers.values())
            randomize_logits(layers, seed=4)
            x = torch.randint(0, 256, (2, 3, bb.image_size, bb.image_size), generator=torch.Generator().manual_seed(0))
            bb.model(((x / 255 - 0.5) / 0.5).double()).square().sum().backward()
            grads[path] = torch.cat([layer.comp_logits.grad.flatten() for layer in layers.values()])
    finally:
        torch.set_default_dtype(torch.float32)
    assert grads["stack"].dtype == torch.float64 and grads["stack"].abs().max() > 0
    assert torch.allclose(grads["stack"], grads["factors"], rtol=1e-9, atol=1e-12)


def test_stacked_layers_follow_the_machine_balance_and_the_budget(monkeypatch):
    from lorabench.adapters import stacked_layers

    sizes = {"big": 1000, "small": 10, "mid": 100}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # CPU balance 6 flops/byte: stack from rank 12
    assert stacked_layers(sizes, n=4, rank=16, device_type="cpu", budget=10**9) == {"big", "small", "mid"}
    assert stacked_layers(sizes, n=4, rank=8, device_type="cpu", budget=10**9) == set()
    # smallest first while the stacks fit: 4 bytes x 4 modules x (10 + 100) = 1,760 bytes
    assert stacked_layers(sizes, n=4, rank=16, device_type="cpu", budget=1760) == {"small", "mid"}
    assert stacked_layers(sizes, n=4, rank=16, device_type="cpu", budget=1759) == {"small"}
    assert stacked_layers(sizes, n=4, rank=16, device_type="cuda", budget=10**9) == set()  # balance 14
    assert stacked_layers(sizes, n=4, rank=32, device_type="cuda", budget=10**9) == {"big", "small", "mid"}


def test_the_text_scorer_composes_each_weight_once_per_batch(monkeypatch):
    """Question and choices are two encoder passes; `compose_once` builds each layer's weight once and the
    features and logit gradients equal those of composing twice."""
    from lorabench.lora import AdaptedLayer

    out = {}
    for reuse in (True, False):
        bb = create_backbone("tiny_bert")
        targets = bb.targets()
        layers = attach_composition(bb.model, targets, [random_adapter(targets, 4, seed=i) for i in range(3)])
        randomize_logits(layers, seed=5)
        calls = []
        real = AdaptedLayer.composed_delta
        monkeypatch.setattr(AdaptedLayer, "composed_delta", lambda self, *a: calls.append(self) or real(self, *a))
        if not reuse:
            monkeypatch.setattr("lorabench.backbones.compose_once", lambda model: contextlib.nullcontext())
        g = torch.Generator().manual_seed(0)
        batch = {"q_ids": torch.randint(5, 70, (3, 7), generator=g), "q_mask": torch.ones(3, 7, dtype=torch.long),
                 "c_ids": torch.randint(5, 70, (3, 4, 5), generator=g), "c_mask": torch.ones(3, 4, 5, dtype=torch.long),
                 "choice_mask": torch.ones(3, 4, dtype=torch.bool)}
        feats = bb.features(batch)
        feats.sum().backward()
        out[reuse] = feats.detach(), torch.cat([layer.comp_logits.grad.flatten() for layer in layers.values()])
        assert len(calls) == len(layers) * (1 if reuse else 2)
        assert all(layer.reuse is None for layer in layers.values())  # the block leaves no cached weight
        monkeypatch.undo()
    assert torch.allclose(out[True][0], out[False][0], atol=1e-6)
    assert out[True][1].abs().max() > 0
    assert torch.allclose(out[True][1], out[False][1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("e", [48, 12, 7])  # 8, 4 (12 = 4 x 3) and 1 column block (7 is prime)
def test_stack_products_are_the_plain_matrix_products(e):
    """The column-blocked batched GEMMs (both cores instead of MKL's one-core GEMV) give Σₙ wₙMₙ and ⟨Mₙ, g⟩,
    and the composition's autograd function their exact gradient (float64 gradcheck)."""
    from lorabench.lora import _StackedSum, stack_matvec, stack_vecmat

    g = torch.Generator().manual_seed(e)
    m = torch.randn(5, e, generator=g, dtype=torch.float64)
    w, x = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(e, generator=g, dtype=torch.float64)
    assert torch.allclose(stack_vecmat(w, m), w @ m, atol=1e-12)
    assert torch.allclose(stack_matvec(m, x), m @ x, atol=1e-12)
    strided = torch.randn(2 * e, generator=g, dtype=torch.float64)[::2]  # a gradient need not be contiguous
    assert torch.allclose(stack_matvec(m, strided), m @ strided, atol=1e-12)
    coef = torch.randn(2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    stack = torch.randn(2, 5, e, generator=g, dtype=torch.float64)
    assert torch.allclose(_StackedSum.apply(coef, stack), torch.einsum("sn,sne->se", coef, stack), atol=1e-12)
    assert torch.autograd.gradcheck(lambda c: _StackedSum.apply(c, stack), (coef,))
