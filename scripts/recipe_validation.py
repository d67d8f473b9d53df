"""Choose the end-to-end recipe on validation data: every candidate rule, per method and learning rate, on
tuning support sets and a validation draw that no evaluation support set (any K of the task, seeds 0-9) uses,
and never the test split (`lorabench.tuning.validation_draw`).

For each draw it also runs the warm-up-only methods (classifier_tuning, uniform_composition): the state the
end-to-end phase starts from, so a rule that undoes the warm-up shows as a negative difference. Every run
keeps its end-to-end trace (support loss, head shift, weight / parameter shift, validation accuracy at a few
points). One JSON line per run in --out; `--summary` prints the table the README quotes.

    python scripts/recipe_validation.py --task digits --k 1,5 --draws 0,1,2 --out val_digits.jsonl
    python scripts/recipe_validation.py --summary val_digits.jsonl
    python scripts/recipe_validation.py --choose val_digits.jsonl val_pacs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

# Candidate rules for the phase after the warm-up (recipe fields); the method's `lr` is searched per rule.
RULES = {
    "adamw": {"e2e_optimizer": "adamw"},  # protocol 2: AdamW, head at head_lr
    "adamw_head0": {"e2e_optimizer": "adamw", "e2e_head_lr": 0.0},  # AdamW, the warmed-up head kept
    "sgd": {"e2e_optimizer": "sgd", "e2e_head_lr": 1e-2},  # SGD + momentum 0.9, head at 1e-2
    "sgd_head0": {"e2e_optimizer": "sgd", "e2e_head_lr": 0.0},
    "sgd_head1e-3": {"e2e_optimizer": "sgd", "e2e_head_lr": 1e-3},
}
LRS = {
    "adamw": {"learned_composition": [1e-2, 5e-2, 2e-1], "lora": [1e-4, 1e-3, 1e-2], "full_finetune": [1e-5, 1e-4, 1e-3]},
    "sgd": {"learned_composition": [0.1, 1.0, 10.0, 100.0], "lora": [1e-4, 1e-3, 1e-2], "full_finetune": [1e-4, 1e-3, 1e-2]},
}
WARMUP_ONLY = {"learned_composition": "uniform_composition", "lora": "classifier_tuning",
               "full_finetune": "classifier_tuning"}


def run(args: argparse.Namespace) -> None:
    from lorabench.backbones import create_backbone
    from lorabench.data import load_examples, sample_support
    from lorabench.evaluator import encode_cached, fit_and_score, method_context
    from lorabench.method import METHODS
    from lorabench.seeding import Streams, derive_seed, seed_everything
    from lorabench.task_registry import get_task
    from lorabench.tuning import validation_draw
    from lorabench.upstream import ensure_upstream_adapters

    task = get_task(args.task, args.profile)
    per_class = task.modality != "multiple_choice"
    train_ex = load_examples(task.downstream.train, args.data_dir)
    # Disjoint from every evaluation support set of the few-shot K (<= 10) at seeds 0-9; the K = 50 / 100 supports
    # of a 205-per-class pool would leave nothing (those cells are not what this recipe is chosen on).
    few = [k for k in task.k_grid if k != "all" and k <= 10]
    val_idx, pool = validation_draw(train_ex.labels, task.name, [(k, s) for k in few for s in range(10)], per_class,
                                    args.n_val)
    smallest = int(np.bincount(train_ex.labels[val_idx]).min()) if per_class else len(val_idx)
    if smallest < min(20, args.n_val):  # a class may have fewer than --n-val left: take what there is, not too few
        sys.exit(f"only {smallest} validation examples left in a class ({len(val_idx)} in all)")
    backbone = create_backbone(task.backbone, "cpu")
    val = encode_cached(backbone, train_ex, val_idx, task.preprocessing)
    adapters = ensure_upstream_adapters(task, task.backbone, backbone.targets(), backbone.aliases, args.data_dir,
                                        args.cache_dir, "cpu")
    done = set()
    out = Path(args.out)
    if out.exists():
        done = {(r["k"], r["draw"], r["method"], r["rule"], r["lr"]) for r in map(json.loads, out.open())}
    for spec in args.lr or []:  # FAMILY:METHOD=v1,v2 replaces that family's grid for that method
        family, rest = spec.split(":", 1)
        method, values = rest.split("=", 1)
        LRS[family][method] = [float(v) for v in values.split(",")]
    rules = args.rules.split(",")
    methods = args.methods.split(",")
    for k in [int(x) for x in args.k.split(",")]:
        for draw in [int(x) for x in args.draws.split(",")]:
            sub = sample_support(train_ex.labels[pool], k, derive_seed(task.name, k, "tune-support", draw), per_class)
            support = encode_cached(backbone, train_ex, pool[sub], task.preprocessing)
            streams = Streams(init=derive_seed(task.name, k, draw, "tune-init"),
                              views=derive_seed(task.name, k, draw, "tune-views"))
            jobs = [(m, "warmup", None, {}) for m in ("classifier_tuning", "uniform_composition")]
            for m in methods:
                for rule in rules:
                    family = "sgd" if RULES[rule]["e2e_optimizer"] == "sgd" else "adamw"
                    jobs += [(m, rule, lr, {**RULES[rule], "lr": lr}) for lr in LRS[family][m]]
            for m, rule, lr, hp in jobs:
                if (k, draw, m, rule, lr) in done:
                    continue
                cls = METHODS.get(m)
                seed_everything(task.name, k, draw, "tune-global")
                ctx = method_context(task, backbone.copy(), support.num_classes, streams,
                                     adapters if cls.needs_upstream else [], monitor=val)
                t0 = time.perf_counter()
                method, acc, _ = fit_and_score(cls, cls.resolve_hparams(hp, task), ctx, support, val)
                row = {"task": task.name, "profile": args.profile, "k": k, "val_excludes_k": few, "draw": draw, "method": m, "rule": rule,
                       "lr": lr, "val_accuracy": acc, "n_val": len(val), "seconds": round(time.perf_counter() - t0, 1),
                       "log": method.log}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"k={k} draw={draw} {m:22s} {rule:12s} lr={lr} val={acc:.3f} ({row['seconds']} s)", flush=True)


def gains(rows: list[dict]):
    """A run's validation accuracy minus that of the warm-up-only method on the same task, K and draw, in points."""
    base = {(r["task"], r["k"], r["draw"], r["method"]): r["val_accuracy"] for r in rows if r["rule"] == "warmup"}
    return lambda r: 100 * (r["val_accuracy"] - base[(r["task"], r["k"], r["draw"], WARMUP_ONLY[r["method"]])])


def summary(path: str) -> None:
    """Per (K, method, rule): validation accuracy of the best lr (mean over draws, lr chosen per rule on the
    mean), minus the warm-up-only method of the same draws; and how far the head moved."""
    rows = [json.loads(line) for line in open(path)]
    gain = gains(rows)
    cells = defaultdict(list)
    for r in rows:
        if r["rule"] != "warmup":
            cells[(r["k"], r["method"], r["rule"], r["lr"])].append(r)
    best = {}
    for (k, m, rule, lr), rs in cells.items():
        mean = float(np.mean([r["val_accuracy"] for r in rs]))
        key = (k, m, rule)
        if key not in best or mean > best[key][0]:
            best[key] = (mean, lr, rs)
    print(f"{rows[0]['task']} ({rows[0]['profile']}), validation accuracy %, n_val = {rows[0]['n_val']}")
    print("| K | method | rule | best lr | val acc | − warm-up only | worst lr: − warm-up | head shift | weight/param shift | draws |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (k, m, rule), (mean, lr, rs) in sorted(best.items()):
        diffs = [gain(r) for r in rs]
        worst = min(float(np.mean([gain(r) for r in cells[(k, m, rule, l)]]))
                    for (kk, mm, ru, l) in cells if (kk, mm, ru) == (k, m, rule))
        last = [r["log"]["trace"][-1] for r in rs if r["log"].get("trace")]
        head = float(np.mean([t["head_shift"] for t in last])) if last else float("nan")
        shift_key = "weight_shift" if m == "learned_composition" else "param_shift"
        shift = float(np.mean([t.get(shift_key, np.nan) for t in last])) if last else float("nan")
        print(f"| {k} | {m} | {rule} | {lr:g} | {100 * mean:.1f} | {np.mean(diffs):+.1f} | {worst:+.1f} | "
              f"{head:.3f} | {shift:.3g} | {len(rs)} |")


def choose(paths: list[str], floor: float = -2.0) -> None:
    """The rule choice. Per rule, method and task, the lr is selected as `lorabench tune` does (best mean over the
    task's K); a rule qualifies if no (method, task, K) loses more than `floor` points to its warm-up-only method
    (the phase must not undo the warm-up); among those, the best mean difference wins."""
    rows = [json.loads(line) for p in paths for line in open(p)]
    gain = gains(rows)
    acc = defaultdict(list)  # (rule, method, task, lr, k) -> differences to warm-up only, per draw
    for r in rows:
        if r["rule"] != "warmup":
            acc[(r["rule"], r["method"], r["task"], r["lr"], r["k"])].append(gain(r))
    by_rule = defaultdict(dict)  # rule -> (method, task) -> (lr, {k: mean diff})
    for rule, m, task in sorted({key[:3] for key in acc}):
        lrs = sorted({key[3] for key in acc if key[:3] == (rule, m, task)})
        per_lr = {lr: {k: float(np.mean(v)) for (ru, mm, t, l, k), v in acc.items() if (ru, mm, t, l) == (rule, m, task, lr)}
                  for lr in lrs}
        lr = max(lrs, key=lambda x: np.mean(list(per_lr[x].values())))
        by_rule[rule][(m, task)] = (lr, per_lr[lr])
    print(f"| rule | worst (method, task, K): − warm-up | mean − warm-up | qualifies (worst ≥ {floor:+g}) | per method/task: lr, diff per K |")
    print("|---|---|---|---|---|")
    for rule, cells in by_rule.items():
        diffs = [(d, m, t, k) for (m, t), (lr, per_k) in cells.items() for k, d in per_k.items()]
        worst = min(diffs)
        mean = float(np.mean([d for d, *_ in diffs]))
        detail = "; ".join(f"{m.split('_')[0]}/{t[:6]} {lr:g}: " + ", ".join(f"K{k} {d:+.1f}" for k, d in sorted(per_k.items()))
                           for (m, t), (lr, per_k) in sorted(cells.items()))
        print(f"| {rule} | {worst[0]:+.1f} ({worst[1]}, {worst[2]}, {worst[3]}) | {mean:+.2f} | "
              f"{'yes' if worst[0] >= floor else 'no'} | {detail} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--k", default="1,5")
    ap.add_argument("--draws", default="0,1,2")
    ap.add_argument("--methods", default="learned_composition,lora,full_finetune")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--lr", action="append", help="FAMILY:METHOD=v1,v2 (family adamw or sgd): that grid instead")
    ap.add_argument("--n-val", type=int, default=50)
    ap.add_argument("--data-dir")
    ap.add_argument("--cache-dir")
    ap.add_argument("--out")
    ap.add_argument("--summary")
    ap.add_argument("--choose", nargs="+", metavar="JSONL", help="apply the rule choice to these files")
    args = ap.parse_args(argv)
    if args.choose:
        choose(args.choose)
    elif args.summary:
        summary(args.summary)
    else:
        if not (args.task and args.out):
            sys.exit("--task and --out are required (or --summary FILE)")
        run(args)


if __name__ == "__main__":
    main()
