"""The end-to-end phase after the head warm-up (issue 25): it must not undo a warm-up that already fits the
support set, and it must still learn where the support set carries signal.

Under protocol 2 (AdamW after the warm-up, head at head_lr) a head whose support loss was 1e-6 took
full-size, sign-like steps (AdamW's lr·m/√v does not shrink with the gradient) and lost up to 20 points.
The recipe's end-to-end optimizer is SGD with momentum, whose step is proportional to the gradient.
These tests run the real methods on the quick digits task with synthetic upstream modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from lorabench.adapters import LoraAdapter
from lorabench.backbones import create_backbone
from lorabench.data import load_examples, sample_support
from lorabench.evaluator import encode_cached
from lorabench.method import METHODS, MethodContext
from lorabench.seeding import Streams
from lorabench.task_registry import get_task
from lorabench.training import relative_shift, trace_points

BACKBONE = "efficientnet_lite0"
# A warm-up that fits the K = 1 support set to a loss below 1e-5 on exactly the inputs the end-to-end phase then
# sees (no augmentation, so a fresh view cannot bring new signal), then 20 end-to-end steps.
FITTED = {"augment": False, "head_epochs": 500, "head_lr": 0.1, "min_steps": 20, "max_steps": 20}


@pytest.fixture(scope="module")
def task(quick_task):
    return get_task(quick_task)


@pytest.fixture(scope="module")
def splits(task):
    bb = create_backbone(BACKBONE)
    ex = load_examples(task.downstream.train)
    test_ex = load_examples(task.downstream.test)
    return (encode_cached(bb, ex, sample_support(ex.labels, 1, 3), task.preprocessing),
            encode_cached(bb, test_ex, None, task.preprocessing))


def synthetic(targets, name: str, size: float, seed: int) -> LoraAdapter:
    gen = torch.Generator().manual_seed(seed)
    rank = 4
    weights = {t.name: (torch.randn(rank, t.in_features, generator=gen) / math.sqrt(t.in_features),
                        torch.randn(t.out_features, rank, generator=gen) * size / math.sqrt(rank)) for t in targets}
    return LoraAdapter(name, weights, {n: 1.0 for n in weights}, BACKBONE)


@pytest.fixture(scope="module")
def adapters():
    targets = create_backbone(BACKBONE).targets()
    return [synthetic(targets, f"synthetic_{j}", 0.2, 100 + j) for j in range(3)]


def fitted(name: str, task, adapters, support, **overrides):
    cls = METHODS.get(name)
    m = cls(**cls.resolve_hparams({**FITTED, **overrides}, task))
    m.prepare(MethodContext(backbone=create_backbone(BACKBONE), num_classes=2, streams=Streams(init=5, views=6),
                            adapters=list(adapters) if cls.needs_upstream else []))
    m.fit(support)
    return m


SGD = {"e2e_optimizer": "sgd", "e2e_head_lr": 1e-2}
SGD_LR = {"learned_composition": 1.0, "lora": 1e-3, "full_finetune": 1e-3}  # the middle of each method's SGD grid


@pytest.mark.parametrize("name, warmup_only", [("learned_composition", "uniform_composition"),
                                                ("lora", "classifier_tuning"),
                                                ("full_finetune", "classifier_tuning")])
def test_a_head_that_fits_the_support_set_is_left_as_the_warm_up_made_it(task, adapters, splits, name, warmup_only):
    support, test = splits
    ref = fitted(warmup_only, task, adapters, support)  # the same head init, views and warm-up: the start state
    m = fitted(name, task, adapters, support, lr=SGD_LR[name], **SGD)
    log = m.log
    assert max(log["head_loss"], log["first_loss"]) < 1e-5, f"precondition: the warm-up fits the support set {log}"
    assert log["steps"] == 20 and log["optimizer"] == "sgd"
    trace = log["trace"]
    assert trace[0]["step"] == 0 and trace[-1]["step"] == 20
    end = trace[-1]
    assert end["head_shift"] < 1e-3, f"the end-to-end phase moved the fitted head by {end['head_shift']:.2e}"
    if name == "learned_composition":
        assert end["weight_shift_max"] < 1e-2, f"composition weights left 1/N by {end['weight_shift_max']:.2e}"
    else:
        assert end["param_shift"] < 1e-2, end
    # The score: the same test predictions as the warm-up-only method (uniform composition / classifier tuning).
    agree = float((m.predict(test) == ref.predict(test)).float().mean())
    assert agree >= 0.99, f"{name} agrees with {warmup_only} on only {agree:.1%} of the test images"


def test_protocol_2s_adamw_phase_bends_a_head_that_already_fits(task, adapters, splits):
    """The failure itself, kept visible: AdamW's step lr·m/√v has the same size on a loss of 1e-6 as on a loss of 1,
    so the same fitted head is moved by a large fraction of its norm (protocol 2: the head at head_lr)."""
    support, _ = splits
    m = fitted("learned_composition", task, adapters, support, lr=5e-2, e2e_optimizer=None, momentum=None,
               e2e_head_lr=None)  # None: protocol 2's rule
    assert max(m.log["head_loss"], m.log["first_loss"]) < 1e-5
    end = m.log["trace"][-1]
    assert end["head_shift"] > 0.05 and end["weight_shift_max"] > 0.05, end


def test_where_the_support_set_has_signal_the_weights_move_toward_the_module_that_helps(task, splits):
    """Module 0 scrambles the features (a large random ΔW), module 1 leaves them nearly as they are. After a short
    warm-up the support loss is far from 0; with the head held as warmed up (e2e_head_lr = 0) only the composition
    can lower it, and the SGD phase must shift weight from module 0 to module 1 while the loss falls."""
    support, _ = splits
    targets = create_backbone(BACKBONE).targets()
    harmful, benign = synthetic(targets, "harmful", 2.0, 7), synthetic(targets, "benign", 1e-3, 8)
    m = fitted("learned_composition", task, [harmful, benign], support, head_epochs=2, min_steps=30, max_steps=30,
               lr=0.03, e2e_optimizer="sgd", e2e_head_lr=0.0)
    trace = m.log["trace"]
    assert trace[-1]["loss"] < trace[1]["loss"] / 10, "the support loss did not fall"
    assert trace[-1]["head_shift"] == 0.0
    w = torch.tensor(m.composition().weights)[:, 1]  # the benign module's weight, per adapted matrix
    assert float(w.mean()) > 0.55, f"benign module's mean weight {float(w.mean()):.4f}"
    assert float((w > 0.5).float().mean()) > 0.6


def test_the_trace_logs_what_moves_and_the_monitor_split_at_a_few_points(task, adapters, splits):
    support, test = splits
    logged, scored = trace_points(40, 2, 4)
    assert logged == set(range(0, 41, 2)) and scored == {0, 10, 20, 30, 40}
    assert trace_points(7, 5, 0) == ({0, 5, 7}, set())
    cls = METHODS.get("learned_composition")
    m = cls(**cls.resolve_hparams({"min_steps": 8, "max_steps": 8}, task))
    m.prepare(MethodContext(backbone=create_backbone(BACKBONE), num_classes=2, streams=Streams(init=1, views=2),
                            adapters=list(adapters), monitor=test))
    m.fit(support)
    trace = m.log["trace"]
    assert [r["step"] for r in trace] == list(range(9))
    assert [r["step"] for r in trace if "monitor_accuracy" in r] == [0, 2, 4, 6, 8]
    assert all(0 <= r["monitor_accuracy"] <= 1 for r in trace if "monitor_accuracy" in r)
    assert all(r["loss"] > 0 and r["head_shift"] >= 0 and r["weight_shift"] >= 0 for r in trace[1:])
    a, b = [torch.ones(3), torch.zeros(2)], [torch.ones(3) * 2, torch.ones(2)]
    assert relative_shift(a, b) == pytest.approx(math.sqrt(3 + 2) / math.sqrt(12 + 2))
