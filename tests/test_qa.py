"""Multiple-choice QA: loaders keep the labelled answer in place, the two scorers compute what they claim.

Real questions come from the offline pack (skipped without it), read independently with pyarrow.
"""

from __future__ import annotations

import os

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
import yaml

from lorabench.backbones import _mean_pool, create_backbone
from lorabench.data import _to_local_layout, load_examples
from lorabench.specs import DatasetRef, Preprocessing, RunConfig
from lorabench.task_registry import get_task
from lorabench.training import extract_features, predict

QA = ["arc_challenge", "sciq", "csqa", "quail"]


def _raw(shared_data, name: str, split: str) -> dict[str, dict]:
    rows = pq.read_table(shared_data / name / f"{split}.parquet").to_pylist()
    return {r["id"]: r for r in rows}


def _qa_refs() -> list[DatasetRef]:
    task = get_task("arc_challenge")
    return [u.train for u in task.upstream] + [task.downstream.train, task.downstream.test]


@pytest.mark.parametrize("ref", _qa_refs(), ids=lambda r: f"{r.name}-{r.split}")
def test_loaders_keep_the_labelled_answer_in_place(ref, shared_data):
    ex = load_examples(ref, shared_data)
    raw = _raw(shared_data, ref.name, ref.split)
    assert ex.class_names is None and len(ex.labels) == min(len(raw), ref.max_examples or len(raw))
    for row, label in zip(ex.dataset, ex.labels):
        src = raw[row["id"]]
        assert row["choices"] == src["choices"] and label == src["label"]
        assert row["choices"][label] == src["choices"][src["label"]]


def test_encoded_choices_put_the_answer_at_the_label(shared_data):
    bb = create_backbone("minilm")
    ex = load_examples(get_task("arc_challenge").downstream.test, shared_data)
    idx = np.arange(0, len(ex.labels), 37)
    split = bb.encode(ex, idx, Preprocessing(max_length=128))
    tok = bb.tokenizer
    for j, i in enumerate(idx):
        row = ex.dataset[int(i)]
        assert split.labels[j] == ex.labels[i]
        assert split.inputs["choice_mask"][j].sum() == len(row["choices"])
        got = tok.decode(split.inputs["c_ids"][j, split.labels[j]], skip_special_tokens=True)
        assert got == tok.decode(tok(row["choices"][row["label"]])["input_ids"], skip_special_tokens=True)


def _hub_rows(shared_data, name: str, n: int = 40) -> list[dict]:
    return pq.read_table(shared_data / name / "train.parquet").slice(0, n).to_pylist()


def test_hub_converters_give_the_local_layout(shared_data):
    """Each hub layout, rebuilt from real local rows, converts back to the same question and gold answer."""
    letters = "ABCDE"
    arc = _hub_rows(shared_data, "arc_challenge")
    hub = datasets.Dataset.from_list([{"id": r["id"], "question": r["question"], "answerKey": letters[r["label"]],
                                       "choices": {"text": r["choices"], "label": list(letters[:len(r["choices"])])}}
                                      for r in arc])
    got = _to_local_layout(hub, DatasetRef(name="arc_challenge", split="x", hub_format="ai2_arc"))
    assert got.to_list() == [{k: r[k] for k in ("id", "question", "context", "choices", "label")} for r in arc]

    quail = _hub_rows(shared_data, "quail")
    hub = datasets.Dataset.from_list([{"id": r["id"], "context": r["context"], "question": r["question"],
                                       "answers": r["choices"], "correct_answer_id": r["label"], "domain": "x"}
                                      for r in quail])
    got = _to_local_layout(hub, DatasetRef(name="quail", split="x", hub_format="quail"))
    assert got.to_list() == [{k: r[k] for k in ("id", "question", "context", "choices", "label")} for r in quail]

    sciq = _hub_rows(shared_data, "sciq")
    hub = datasets.Dataset.from_list([{"question": r["question"], "support": r["context"],
                                       "correct_answer": r["choices"][r["label"]],
                                       **{f"distractor{i + 1}": c for i, c in
                                          enumerate(c for j, c in enumerate(r["choices"]) if j != r["label"])}}
                                      for r in sciq])
    got = _to_local_layout(hub, DatasetRef(name="sciq", split="x", hub_format="sciq")).to_list()
    for r, g in zip(sciq, got):
        assert sorted(g["choices"]) == sorted(r["choices"]) and g["choices"][g["label"]] == r["choices"][r["label"]]
        assert g["context"] == r["context"] and g["question"] == r["question"]
    assert len({g["label"] for g in got}) > 1  # the gold answer is not always in the same slot


def test_long_contexts_are_cut_not_the_question_or_options(shared_data):
    rows = load_examples(DatasetRef(name="quail", split="test"), shared_data)
    ex = type(rows)(key="q", dataset=rows.dataset.select(range(3)), labels=rows.labels[:3], class_names=None,
                    modality="multiple_choice")
    for name, max_len in (("tiny_t5", 256), ("minilm", 64)):  # tiny_t5's vocabulary is character-level
        bb = create_backbone(name)
        split = bb.encode(ex, None, Preprocessing(max_length=max_len))
        for j in range(3):
            text = bb.tokenizer.decode(split.inputs["q_ids"][j], skip_special_tokens=True)
            row = ex.dataset[j]
            question = bb.tokenizer.decode(bb.tokenizer(row["question"], add_special_tokens=False)["input_ids"],
                                           skip_special_tokens=True)
            assert max_len - 2 <= split.inputs["q_mask"][j].sum() <= max_len  # long passage: budget used, not exceeded
            assert question in text
            if name == "tiny_t5":  # context first (cut), then question, options and the answer cue
                last = bb.tokenizer.decode(bb.tokenizer(row["choices"][-1], add_special_tokens=False)["input_ids"],
                                           skip_special_tokens=True)
                assert text.endswith(f"{last} answer") and "options" in text


def test_chunked_embeddings_equal_one_padded_pass():
    bb = create_backbone("tiny_bert")
    tok = bb.tokenizer
    texts = ["a", "the cat sat on the mat", "x y", "one two three four five six seven eight", "b c", ""] * 5
    enc = tok(texts, padding=True, return_tensors="pt")
    from lorabench.backbones import _embed

    with torch.no_grad():
        chunked = _embed(bb.model, enc["input_ids"], enc["attention_mask"], chunk=4)
        whole = _mean_pool(bb.model(**enc).last_hidden_state, enc["attention_mask"])
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_tiny_t5_rank_classification_is_the_summed_choice_loglik(shared_data):
    bb = create_backbone("tiny_t5")
    torch.manual_seed(0)
    with torch.no_grad():  # a random T5 with non-trivial weights
        for p in bb.model.parameters():
            p.normal_(0, 0.5)
    ex = load_examples(get_task("arc_challenge").downstream.train, shared_data)
    split = bb.encode(ex, np.arange(6), Preprocessing(max_length=96))
    with torch.no_grad():
        scores = bb.features(split.batch(torch.arange(6))).squeeze(-1)
        manual = torch.full_like(scores, float("-inf"))
        for i in range(6):
            q = split.inputs["q_ids"][i][split.inputs["q_mask"][i] == 1][None]
            for j, choice in enumerate(ex.dataset[i]["choices"]):
                labels = torch.tensor([bb.tokenizer(choice)["input_ids"]])
                out = bb.model(input_ids=q, labels=labels)  # mean token NLL
                manual[i, j] = -out.loss * labels.shape[1]
    real = split.inputs["choice_mask"][:6]
    assert torch.allclose(scores[real], manual[real], atol=1e-4)
    head = bb.make_head(split.num_classes)
    preds = predict(bb, head, split.subset(np.arange(6)))
    assert preds.tolist() == manual.argmax(-1).tolist()


def test_minilm_zero_shot_is_cosine_and_beats_chance(shared_data):
    bb = create_backbone("minilm")
    ex = load_examples(DatasetRef(name="csqa", split="test"), shared_data)
    split = bb.encode(ex, np.arange(120), Preprocessing(max_length=64))
    feats = extract_features(bb, split)
    logits = bb.make_head(split.num_classes)(feats).squeeze(-1)
    with torch.no_grad():  # by hand: 20 · cos(mean-pooled question, mean-pooled choice)
        i = 7
        tok = bb.tokenizer
        row = ex.dataset[i]
        q = tok(row["question"], return_tensors="pt")
        c = tok(row["choices"], padding=True, return_tensors="pt")
        e_q = _mean_pool(bb.model(**q).last_hidden_state, q["attention_mask"])
        e_c = _mean_pool(bb.model(**c).last_hidden_state, c["attention_mask"])
        cos = F.cosine_similarity(e_q, e_c)
    assert torch.allclose(logits[i, : len(row["choices"])], 20 * cos, atol=1e-4)
    acc = (predict(bb, bb.make_head(split.num_classes), split, feats) == split.labels).float().mean()
    assert acc > 0.3  # chance is 1/5 on CommonsenseQA


@pytest.mark.slow
def test_k0_rows_are_the_bare_and_the_uniform_zero_shot(shared_data, tmp_path, monkeypatch):
    """K = 0 on a small ARC task: every bare-backbone method scores the untrained scorer, and learned
    composition (nothing to learn yet) scores exactly the uniform composition."""
    from lorabench.evaluator import run_cell

    task = yaml.safe_load(get_task("arc_challenge").model_dump_json())
    for up in task["upstream"][:2]:
        up["train"]["max_examples"] = 24
    task.update(name="arc_quick", suite="tests", upstream=task["upstream"][:2],
                upstream_training={"epochs": 1, "max_steps": 3, "batch_size": 8, "probe_epochs": 2})
    task["downstream"]["test"]["max_examples"] = 60
    (tmp_path / "arc_quick.yaml").write_text(yaml.safe_dump(task))
    monkeypatch.setenv("LORABENCH_TASKS", str(tmp_path))

    def score(method):
        cfg = RunConfig(task="arc_quick", method=method, backbone="minilm", k=0, seed=0, data_dir=str(shared_data),
                        results_dir=str(tmp_path / "res"), cache_dir=str(tmp_path / "cache"))
        rec = run_cell(cfg)
        assert rec.n_support == 0 and abs(rec.n_test - 60) <= 4  # a stratified cap rounds per answer slot
        n_test.append(rec.n_test)
        records[method] = rec
        return rec.value

    n_test: list[int] = []
    records = {}
    bare = {m: score(m) for m in ("zero_shot", "classifier_tuning", "lora")}
    assert len(set(bare.values())) == 1, bare
    uniform, learned = score("uniform_composition"), score("learned_composition")
    assert abs(uniform - learned) <= 1 / n_test[0]
    assert 0.0 <= score("arrow_routing") <= 1.0  # zero-shot routing: K = 0 is allowed
    routed = records["arrow_routing"].composition  # every token of the test set was routed over the 2 modules
    assert len(routed.upstream) == 2 and all(abs(sum(w) - 1) < 1e-4 for w in routed.weights)
    assert os.path.isdir(tmp_path / "cache" / "adapters" / "minilm")
