"""The composition methods beyond the paper: their merge math on small random adapters, and a real
run of each on the quick digits task (results written, parameter counts right, choices recorded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lorabench.adapters import LoraAdapter
from lorabench.backbones import MC_TEMPERATURE, create_backbone
from lorabench.data import Split
from lorabench.grid import run_grid
from lorabench.merging import (dare, merge_transformed_, merge_weighted_, stack_modules, support_loss, ties_merge,
                               weighted_scorer)
from lorabench.seeding import Streams
from lorabench.method import METHODS, MethodContext
from lorabench.methods.learned_composition_global import LearnedCompositionGlobal
from lorabench.methods.lorahub import lorahub_objective, search_weights
from lorabench.results import read_result
from lorabench.specs import RunConfig

NEW_METHODS = ["task_arithmetic", "ties_merging", "dare", "lorahub", "best_single_upstream",
               "learned_composition_global", "learned_composition_null", "learned_composition_scaled",
               "learned_composition", "arrow_routing"]


def random_adapters(targets, n: int, rank: int = 4, seed: int = 0) -> list[LoraAdapter]:
    """N adapters with random (non-zero) A and B and different scales, like trained LoRAs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for j in range(n):
        weights = {t.name: (torch.randn(rank, t.in_features, generator=g) * 0.1,
                            torch.randn(t.out_features, rank, generator=g) * 0.1) for t in targets}
        out.append(LoraAdapter(f"up{j}", weights, {t.name: 0.5 + j for t in targets}, source=f"mem://up{j}"))
    return out


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """This machine's 2 cores are shared by several test runs; 2 torch threads then spin against each
    other (a forward pass measured 80x slower than with 1 thread), so these tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_ctx():
    """tiny_vit (fused qkv split into q, k, v blocks) with 3 random upstream modules."""
    bb = create_backbone("tiny_vit")
    return MethodContext(backbone=bb, num_classes=3, streams=Streams(init=0, views=0), adapters=random_adapters(bb.targets(), 3))


def tiny_split(n_per_class: int, classes: int = 3, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    pixels = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=g, dtype=torch.uint8)
    return Split(key=f"tiny-{n_per_class}-{seed}", inputs={"pixels": pixels}, labels=labels, num_classes=classes,
                 modality="image")


def reference_deltas(ctx: MethodContext, module: str) -> torch.Tensor:
    """[N, out, in] from the adapters' own ΔW = scale·B·A, block by block (the slow, obvious path)."""
    blocks = sorted((t for t in ctx.backbone.targets() if t.module == module), key=lambda t: t.rows)
    return torch.stack([torch.cat([ad.delta(t.name) for t in blocks]) for ad in ctx.adapters])


# --- merge math ------------------------------------------------------------------------------------


def test_ties_equals_hand_computation():
    d = torch.tensor([[[4.0, 1.9], [0.5, 2.0]],
                      [[-3.0, 1.5], [1.0, -0.2]],
                      [[2.0, -2.5], [-0.1, 3.0]]])
    # density 0.5 keeps 2 of 4 per module: [[4,0],[0,2]], [[-3,1.5],[0,0]], [[0,-2.5],[0,3]]
    # trimmed sum [[1,-1],[0,5]] -> elected signs [[+,-],[0,+]] (the untrimmed sum would elect + at [0,1]);
    # means of the agreeing entries: 4, -2.5, none -> 0, (2+3)/2
    expected = torch.tensor([[4.0, -2.5], [0.0, 2.5]])
    assert torch.equal(ties_merge(d, density=0.5), expected)
    assert torch.equal(ties_merge(d, density=0.5, scaling=2.0), 2 * expected)
    # density 1 and all signs agreeing: the plain mean
    same = torch.rand(4, 5, 6) + 0.1
    torch.testing.assert_close(ties_merge(same, density=1.0), same.mean(0))


def test_dare_p0_is_the_identity_and_keeps_the_expectation():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(3, 7, 5, generator=g)
    assert torch.equal(dare(d, 0.0, torch.Generator().manual_seed(1)), d)
    ones = torch.ones(200_000)
    out = dare(ones, 0.75, torch.Generator().manual_seed(2))
    kept = out != 0
    assert torch.all(out[kept] == 4.0)  # survivors rescaled by 1/(1-p)
    assert abs(kept.float().mean().item() - 0.25) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.02  # expectation preserved (std of this mean ≈ 0.004)


def test_weighted_and_transformed_merges_are_exact_on_delta(tiny_ctx):
    st = stack_modules(tiny_ctx.backbone, tiny_ctx.adapters)
    w = [0.7, -0.3, 1.2]
    merge_weighted_(st, [5.0, 5.0, 5.0])  # a previous candidate must not leak into the next
    merge_weighted_(st, w)
    for name, layer in st.layers.items():
        ref = st.w0[name] + torch.einsum("n,noi->oi", torch.tensor(w), reference_deltas(tiny_ctx, name))
        torch.testing.assert_close(layer.base.weight, ref, rtol=1e-5, atol=1e-6)
        assert layer.mode == "base"
    merge_transformed_(st, lambda deltas: ties_merge(deltas, density=0.3))
    for name, layer in st.layers.items():
        ref = st.w0[name] + ties_merge(reference_deltas(tiny_ctx, name), density=0.3)
        torch.testing.assert_close(layer.base.weight, ref, rtol=1e-5, atol=1e-6)


def test_dare_method_with_p0_equals_uniform_composition(tiny_ctx):
    dare_cls, uniform_cls = METHODS.get("dare"), METHODS.get("uniform_composition")
    merged = {}
    for cls, hp in ((dare_cls, {"drop_rate": 0.0}), (uniform_cls, {})):
        bb = create_backbone("tiny_vit")
        m = cls(**cls.resolve_hparams(hp))
        m.prepare(MethodContext(backbone=bb, num_classes=3, streams=Streams(init=0, views=0), adapters=tiny_ctx.adapters))
        merged[cls.name] = {n: p.detach().clone() for n, p in bb.model.named_parameters()}
    for name, p in merged["dare"].items():
        torch.testing.assert_close(p, merged["uniform_composition"][name], rtol=1e-5, atol=1e-6)


def test_support_loss_is_leave_one_out_nearest_class_mean(tiny_ctx):
    bb = tiny_ctx.backbone
    for k in (1, 3):
        split = tiny_split(k)
        feats = torch.randn(len(split), 16, generator=torch.Generator().manual_seed(k))
        f = F.normalize(feats, dim=-1)
        losses = []
        for i in range(len(f)):  # the obvious loop
            logits = []
            for c in range(3):
                members = [j for j in range(len(f)) if split.labels[j] == c and (j != i or k == 1)]
                logits.append(10.0 * F.cosine_similarity(f[i], f[members].mean(0), dim=0))
            losses.append(-torch.log_softmax(torch.stack(logits), 0)[split.labels[i]])
        assert support_loss(bb, split, feats, 10.0) == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)


def test_support_loss_for_multiple_choice_is_the_zero_shot_scorers():
    bb = create_backbone("tiny_bert")
    feats = torch.randn(4, 3, bb.feature_dim, generator=torch.Generator().manual_seed(0)) * 0.1
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True], [True, False, True]])
    split = Split(key="mc", inputs={"choice_mask": mask}, labels=torch.tensor([0, 1, 2, 2]), num_classes=3,
                  modality="multiple_choice")
    logits = (MC_TEMPERATURE * feats.sum(-1)).masked_fill(~mask, float("-inf"))  # 20·cos as the head starts
    assert support_loss(bb, split, feats) == pytest.approx(float(F.cross_entropy(logits, split.labels)), rel=1e-5)


def test_candidate_scores_are_those_of_a_backbone_merged_by_hand(tiny_ctx):
    split = tiny_split(2)
    st = stack_modules(tiny_ctx.backbone, tiny_ctx.adapters)
    score = weighted_scorer(tiny_ctx.backbone, st, split, 10.0)
    w = [0.5, 0.0, -1.0]
    got = score(w)
    ref_bb = create_backbone("tiny_vit")
    with torch.no_grad():
        for name in st.layers:
            weight = ref_bb.model.get_submodule(name).weight
            weight += torch.einsum("n,noi->oi", torch.tensor(w), reference_deltas(tiny_ctx, name)).view_as(weight)
    ref_feats = ref_bb.features(split.inputs)
    assert got == pytest.approx(support_loss(ref_bb, split, ref_feats, 10.0), rel=1e-4)


def test_lorahub_objective_adds_the_l1_term_and_the_search_finds_the_minimum():
    def score(w):
        return float(((np.asarray(w) - np.array([0.8, -0.4])) ** 2).sum())

    obj = lorahub_objective(score, l1=0.3)
    w = np.array([0.5, -1.0])
    assert obj(w) == pytest.approx(score(w) + 0.3 * 1.5)
    best, value, evals = search_weights(lorahub_objective(score, 0.0), 2, budget=60, bound=1.5, step=0.5)
    assert evals <= 60 and value == pytest.approx(score(best))
    np.testing.assert_allclose(best, [0.8, -0.4], atol=0.05)
    sparse, _, _ = search_weights(lorahub_objective(score, 5.0), 2, budget=60, bound=1.5, step=0.5)
    assert np.abs(sparse).sum() < 0.05  # a strong L1 penalty drives the weights to zero


def test_global_composition_shares_one_vector_across_layers(tiny_ctx):
    m = LearnedCompositionGlobal(**LearnedCompositionGlobal.resolve_hparams({"epochs": 1, "max_steps": 2,
                                                                             "min_steps": 0, "head_epochs": 1,
                                                                             "lr": 0.5}))
    m.prepare(tiny_ctx)
    logits = {id(layer.comp_logits) for layer in m.layers.values()}
    assert logits == {id(m.logits)} and m.logits.shape == (3,)
    assert m.trainable_params() == 3
    m.fit(tiny_split(2))
    assert not torch.equal(m.logits.detach(), torch.zeros(3))  # it trained
    first = next(iter(m.layers.values())).composition_weights()
    for layer in m.layers.values():
        assert torch.equal(layer.composition_weights()[0], first[0])


# --- real runs on the quick digits task --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_records(quick_task, tmp_path_factory):
    """Every new method at K=2, seed 0, on digits_quick (2 upstream pairs, tiny images)."""
    cache = tmp_path_factory.getbasetemp() / "upstream-cache-merging"  # shared with test_plugins.py
    results = tmp_path_factory.mktemp("merge-results")
    cells = [RunConfig(task=quick_task, method=m, backbone="efficientnet_lite0", k=2, seed=0,
                       hparams={"budget": 12} if m == "lorahub" else {}, results_dir=str(results),
                       cache_dir=str(cache)) for m in NEW_METHODS]
    report = run_grid(cells)
    assert not report.failed, report.failed
    assert len(report.done) == len(cells)
    return {c.method: read_result(c.result_path()) for c in cells}


@pytest.mark.slow
def test_each_new_method_runs_on_digits_and_reports_parameter_counts(digits_records):
    for method, rec in digits_records.items():
        assert rec is not None, f"{method} wrote no valid result"
        assert rec.n_support == 4 and rec.n_test == 106 and 0.0 <= rec.value <= 1.0
        assert rec.head_params == 1280 * 2 + 2
        # N = 2 shared weights; learned: N per adapted matrix, +1 with a null module, +1 gain; merges train none
        matrices = len(rec.composition.matrices) if rec.composition else 0
        expected = {"learned_composition_global": 2, "learned_composition": 2 * matrices,
                    "learned_composition_null": 3 * matrices, "learned_composition_scaled": 2 * matrices + 1}
        assert rec.trainable_params == expected.get(method, 0), method
        assert rec.extras["upstream"] == ["digits_01", "digits_23"]


@pytest.mark.slow
def test_digits_runs_record_the_choices_made_on_the_support_set(digits_records):
    ta = digits_records["task_arithmetic"].extras
    losses = {float(k): v for k, v in ta["support_loss_per_lambda"].items()}
    assert ta["lambda"] == min(losses, key=losses.get) and len(losses) == 5
    single = digits_records["best_single_upstream"].extras
    assert single["chosen"] == min(single["support_loss"], key=single["support_loss"].get)
    hub = digits_records["lorahub"].extras
    assert len(hub["weights"]) == 2 and hub["evaluations"] <= 12
    assert hub["objective"] <= hub["objective_at_uniform"] + 1e-6  # the start point is one of the candidates
    glob = digits_records["learned_composition_global"].composition
    assert glob.matrices == ["*"] and len(glob.weights[0]) == 2 and math.isclose(sum(glob.weights[0]), 1.0, abs_tol=1e-5)
    assert digits_records["dare"].extras["scaling"] == 0.5


@pytest.mark.slow
def test_composition_that_can_shrink_records_its_null_share_and_gain(digits_records):
    """The null variant's weights have a "(null)" column and each row still sums to 1 with it; the scaled
    variant records its learned gain, which left its init of 1; both start where the paper's method does
    up to the null share (same head warm-up), so they are paired with learned_composition."""
    null = digits_records["learned_composition_null"].composition
    assert null.upstream == ["digits_01", "digits_23", "(null)"] and null.scale is None
    assert all(abs(sum(row) - 1) < 1e-5 and len(row) == 3 for row in null.weights)
    # the null share gets gradient (it left 1/3), however little SGD moved it on this smoke support set
    assert max(abs(row[2] - 1 / 3) for row in null.weights) > 1e-6
    scaled = digits_records["learned_composition_scaled"].composition
    assert scaled.upstream == ["digits_01", "digits_23"] and scaled.scale is not None and scaled.scale != 1.0
    assert all(abs(sum(row) - 1) < 1e-5 for row in scaled.weights)
    plain = digits_records["learned_composition"]
    assert plain.composition.scale is None and plain.composition.matrices == null.matrices == scaled.matrices
