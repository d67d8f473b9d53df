"""Arrow routing: prototypes are ΔW's top right-singular vectors, the routing weights are PEFT's own (compared
against `peft`'s ArrowLoraLinearLayer through `create_arrow_model` on a tiny BERT), routed layers are exact on
the factors (Linear, fused q/k/v blocks and 1x1 convs), and the method runs as a cell."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lorabench.adapters import attach_composition, attach_routing, save_adapter
from lorabench.backbones import create_backbone
from lorabench.evaluator import run_cell
from lorabench.lora import adapted_layers
from lorabench.routing import arrow_coefficients, arrow_prototypes
from lorabench.specs import RunConfig
from test_lora_exactness import random_adapter


class _Softmaxes(TorchFunctionMode):
    """Records the output of every torch.softmax call with `width` entries on the last dim (the routers')."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.seen = width, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.softmax and out.shape[-1] == self.width:
            self.seen.append(out.detach().clone())
        return out


def test_prototype_is_the_top_right_singular_vector_of_BA():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(12, 4, generator=g))
    v, _ = torch.linalg.qr(torch.randn(20, 4, generator=g))
    sv = torch.tensor([5.0, 2.0, 1.0, 0.5])  # well separated: 15 power steps converge to (2/5)^30
    delta = u @ torch.diag(sv) @ v.T  # rank 4, out 12, in 20
    b, a = u @ torch.diag(sv), v.T  # B·A = ΔW with A = Vᵀ, B = U·Σ ...
    mix = torch.randn(4, 4, generator=g)  # ... and any other factorisation of the same ΔW
    protos = arrow_prototypes(torch.stack([a, torch.linalg.solve(mix, a), torch.zeros_like(a)]),
                              torch.stack([b, b @ mix, b]))
    top = torch.linalg.svd(delta).Vh[0]
    for p in protos[:2]:
        assert abs(float(p @ top)) == pytest.approx(1.0, abs=1e-5)
    assert float(protos[2].abs().max()) == 0.0  # a module that leaves the matrix alone has no direction


def test_coefficients_by_hand():
    protos = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])  # S = 1, N = 3, in = 2
    tok = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    # |<p, x>| = [2, 1, 0.4] for the first token, all 0 for the second
    c2 = arrow_coefficients(tok, protos, top_k=2, temperature=0.5)
    e = torch.exp(torch.tensor([4.0, 2.0]))
    assert torch.allclose(c2[0, 0], torch.tensor([e[0] / e.sum(), e[1] / e.sum(), 0.0]))
    assert float(c2[0, 0, 2]) == 0.0 and torch.allclose(c2.sum(-1), torch.ones(2, 1))
    assert torch.allclose(arrow_coefficients(tok, protos, 1, 1.0)[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    c_all = arrow_coefficients(tok, protos, top_k=9, temperature=1.0)  # top-k past N: every module
    assert torch.allclose(c_all[0, 0], torch.softmax(torch.tensor([2.0, 1.0, 0.4]), -1))


@pytest.mark.parametrize("dispatch", [False, True], ids=["dense", "dispatched"])
@pytest.mark.parametrize("top_k, temperature", [(2, 0.7), (3, 1.0)])
def test_routing_matches_peft_arrow_on_tiny_bert(tmp_path, top_k, temperature, dispatch, monkeypatch):
    """PEFT's create_arrow_model over the same three adapters (saved by lorabench in the PEFT format): the same
    prototypes, the same per-token routing weights in every routed layer, the same hidden states; dispatching
    each token to its top-k modules only (what large N uses) gives the same hidden states."""
    from peft import ArrowConfig, create_arrow_model

    if dispatch:
        monkeypatch.setattr("lorabench.lora.ROUTE_DENSE_MAX_RATIO", 0)

    bb = create_backbone("tiny_bert")
    pristine = copy.deepcopy(bb.model).eval()
    targets = bb.targets()
    adapters = [random_adapter(targets, 4, seed=s, alpha=8.0) for s in range(3)]
    paths = []
    for i, ad in enumerate(adapters):
        save_adapter(ad, tmp_path / f"ad{i}", targets, rank=4, alpha=8.0)
        paths.append(str(tmp_path / f"ad{i}"))
    layers = attach_routing(bb.model, targets, adapters, top_k, temperature, iters=15, seed=7)
    bb.model.eval()
    peft_model = create_arrow_model(copy.deepcopy(pristine), paths,
                                    ArrowConfig(top_k=top_k, router_temperature=temperature, rng_seed=7)).eval()

    g = torch.Generator().manual_seed(1)
    inputs = {"input_ids": torch.randint(0, bb.model.config.vocab_size, (2, 9), generator=g),
              "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    with torch.no_grad(), _Softmaxes(top_k if dispatch else 3) as ours:
        mine = bb.model(**inputs).last_hidden_state
    with torch.no_grad(), _Softmaxes(3) as theirs:
        peft_out = peft_model(**inputs).last_hidden_state
    assert float((mine - pristine(**inputs).last_hidden_state).abs().max()) > 1e-3  # routing changes the function
    assert len(ours.seen) == len(theirs.seen) == len(targets)  # one router per adapted matrix, in the same order
    for c_ours, c_peft in zip(ours.seen, theirs.seen):
        if dispatch:  # softmax over the top-k scores only: PEFT's nonzero weights, in descending order
            c_peft = c_peft.reshape(-1, c_peft.shape[-1]).sort(-1, descending=True).values[:, :top_k]
        assert torch.allclose(c_ours.reshape(c_peft.shape), c_peft, atol=1e-5)
    if top_k < 3:
        assert all(int((c == 0).sum(-1).min()) == 3 - top_k for c in theirs.seen)
    assert float((mine - peft_out).abs().max()) <= 1e-5

    routers = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules()
               if type(m).__name__ == "ArrowLoraLinearLayer"}
    for mpath, layer in layers.items():
        theirs_p = routers[f"{mpath}.lora_arrow.arrow_router"].prototypes
        assert torch.allclose(layer.route_protos[0].abs(), theirs_p.abs(), atol=1e-5), mpath


@pytest.mark.parametrize("backbone", ["tiny_vit", "efficientnet_lite0"])
def test_routing_over_copies_of_one_module_is_that_module(backbone):
    """The weights of each token sum to 1, so routing over N copies of one module is W0 + ΔW exactly, whatever
    the route, on fused q/k/v blocks (tiny_vit) and on 1x1 convs, strided ones included (EfficientNet)."""
    bb = create_backbone(backbone)
    targets = bb.targets()
    ad = random_adapter(targets, 4, seed=3, alpha=8.0)
    merged = copy.deepcopy(bb.model)
    attach_composition(merged, targets, [ad])
    for layer in adapted_layers(merged).values():
        layer.merge_()
    attach_routing(bb.model, targets, [ad, ad, ad], top_k=2, temperature=0.3)
    bb.model.eval(), merged.eval()
    size = 32 if backbone == "efficientnet_lite0" else bb.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(bb.model(x), merged(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["tiny_vit", "efficientnet_lite0", "tiny_bert"])
def test_dispatching_top_k_modules_equals_the_dense_mixture(backbone, monkeypatch):
    """Past ROUTE_DENSE_MAX_RATIO x top-k modules a routed layer runs only each token's top-k modules (sorted
    by module, like a mixture of experts). Same features and the same routing totals as running all N."""
    bb = create_backbone(backbone)
    targets = bb.targets()
    layers = attach_routing(bb.model, targets, [random_adapter(targets, 4, seed=s) for s in range(10)], 3, 0.8)
    g = torch.Generator().manual_seed(0)
    if bb.modality == "image":
        batch = {"pixels": torch.randint(0, 256, (2, 3, bb.image_size, bb.image_size), generator=g)}
    else:
        batch = {"q_ids": torch.randint(5, 70, (3, 7), generator=g), "q_mask": torch.ones(3, 7, dtype=torch.long),
                 "c_ids": torch.randint(5, 70, (3, 4, 5), generator=g), "c_mask": torch.ones(3, 4, 5, dtype=torch.long),
                 "choice_mask": torch.ones(3, 4, dtype=torch.bool)}
    out = {}
    for ratio in (100, 0):  # all dense, then all dispatched (10 modules > 0 x 3)
        monkeypatch.setattr("lorabench.lora.ROUTE_DENSE_MAX_RATIO", ratio)
        for layer in layers.values():
            layer.track_routing(True)
        with torch.no_grad():
            feats = bb.features(batch)
        out[ratio] = feats, torch.cat([layer.route_totals.flatten() for layer in layers.values()])
    scale = float(out[100][0].abs().max())
    # float32 sums in another order, through up to 16 blocks (EfficientNet): 1e-5 to 2e-5 of the scale seen
    assert float((out[0][0] - out[100][0]).abs().max()) <= 5e-5 * scale
    tot = float(out[100][1].abs().max())  # totals over up to 12,544 pixels: float32 order, like the features
    assert float((out[0][1] - out[100][1]).abs().max()) <= 5e-5 * tot
    assert int((out[0][1] == 0).sum()) < out[0][1].numel()  # tokens did spread over the modules


def test_routed_conv_is_the_per_pixel_mixture():
    """A routed 1x1 conv adds, at every pixel, Σₙ cₙ(x)·scaleₙ·Bₙ(Aₙx) with c from that pixel's channels."""
    bb = create_backbone("efficientnet_lite0")
    targets = [t for t in bb.targets() if t.conv][:3]
    adapters = [random_adapter(targets, 4, seed=s, alpha=4.0 * (s + 1)) for s in range(3)]
    layers = attach_routing(bb.model, targets, adapters, top_k=2, temperature=0.5)
    name, layer = next(iter(layers.items()))
    x = torch.randn(2, layer.in_features, 5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = layer(x) - layer.base(x)
        tok = x.movedim(1, -1).reshape(-1, layer.in_features)
        c = layer.routing_weights(tok)[:, 0]  # [t, N]
        want = sum(c[:, n:n + 1] * ad.scales[name] * (tok @ ad.weights[name][0].T @ ad.weights[name][1].T)
                   for n, ad in enumerate(adapters))
    assert torch.allclose(got.movedim(1, -1).reshape(-1, got.shape[1]), want, atol=1e-5)
    assert int((c == 0).sum(-1).min()) == 1  # top-2 of 3
    with pytest.raises(ValueError, match="depend on the input"):
        layer.merge_()


def test_arrow_cell_records_mean_routing_weights(quick_task, tmp_path_factory):
    store = tmp_path_factory.getbasetemp() / "arrow-store"
    rec = {}
    for seed in (0, 1):  # the second seed reuses the first's test features: same routing, still reported
        cfg = RunConfig(task=quick_task, method="arrow_routing", backbone="efficientnet_lite0", k=1, seed=seed,
                        results_dir=str(store / "results"), cache_dir=str(store / "cache"))
        rec[seed] = run_cell(cfg)
    r = rec[0]
    assert r.trainable_params == 0 and r.head_params > 0 and 0.0 <= r.value <= 1.0
    comp = r.composition
    assert comp.upstream == ["digits_01", "digits_23"] and len(comp.matrices) == 31
    w = torch.tensor(comp.weights)
    assert torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-4) and float(w.min()) >= 0
    assert float((w - 0.5).abs().max()) > 1e-3  # routed, not uniform
    assert rec[1].composition == comp and r.extras["top_k_used"] == 2
