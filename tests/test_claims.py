"""Claims as data: the paper's claims file, its validation, the verdict per claim x task x K, and claims.html.

Records are written by hand (`fake_record`, never run); expected intervals are recomputed here with scipy
from the per-seed values, not with the leaderboard's code.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import QUICK_TASK, registered_task
from scipy import stats as sps
from test_leaderboard import Node, browser_dom, dom, fake_record, needs_chromium, write_records

from lorabench.errors import SpecError
from lorabench.leaderboard import build_site
from lorabench.leaderboard.claims import (NOT_RUN, SUPPORTED, UNDECIDED, CONTRADICTED, decide,
                                          load_claims, load_claims_file, parse_k, seeds_to_decide)
from lorabench.stats import compare, seeds_needed

REPO = Path(__file__).resolve().parents[1]
DOCS_RESULTS = REPO / "docs" / "results"


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def claims_task(tmp_path_factory) -> str:
    """A registered task with five seeds and K = 1, 5, all; its records are written by hand."""
    spec = {**QUICK_TASK, "name": "digits_claims", "k_grid": [1, 5, "all"], "seeds": [0, 1, 2, 3, 4]}
    with registered_task(tmp_path_factory.mktemp("claims_tasks"), spec) as name:
        yield name


def records(task: str, values: dict[str, dict[object, dict[int, float]]], **fields) -> dict[str, dict]:
    """{method: {K: {seed: value}}} -> record dicts, named uniquely."""
    out = {}
    for method, by_k in values.items():
        for k, seeds in by_k.items():
            for seed, v in seeds.items():
                extra = {"n_support": 40} if k == "all" else {}
                out[f"{method}_k{k}_s{seed}"] = fake_record(task, v, k, seed, method=method, **extra, **fields)
    return out


def write_claims(path: Path, claims: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"claims": claims}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def build(tmp_path: Path, task: str, values: dict, claims: list[dict], extra_records: dict | None = None) -> Node:
    write_records(tmp_path / "results" / task, {**records(task, values), **(extra_records or {})})
    claims_file = write_claims(tmp_path / "mine.yaml", claims)
    report = build_site(tmp_path / "results", tmp_path / "site", [claims_file])
    assert report.claims == tmp_path / "site" / "claims.html"
    return dom(report.claims.read_text(encoding="utf-8"))


def rows(page: Node, claim_id: str) -> dict[tuple[str, str, str], Node]:
    """(task, K, 'a>b') -> its row in the claim's verdict table."""
    section = page.one("section", "claim", data_claim=claim_id)
    out = {}
    for tr in section.find_all("tr", "claim-row"):
        key = (tr.attrs["data-task"], tr.attrs["data-k"], f"{tr.attrs['data-a']}>{tr.attrs['data-b']}")
        assert key not in out, key
        out[key] = tr
    return out


def t_interval(diffs: list[float]) -> tuple[float, float]:
    n = len(diffs)
    mean, sd = sum(diffs) / n, math.sqrt(sum((d - sum(diffs) / n) ** 2 for d in diffs) / (n - 1))
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def claim(cid: str, *comparisons: dict, **fields) -> dict:
    return {"id": cid, "text": f"claim {cid}", "source": "test", "comparisons": list(comparisons), **fields}


BASE = {0: 0.55, 1: 0.62, 2: 0.70, 3: 0.58, 4: 0.66}
NOISE = {0: 0.004, 1: -0.003, 2: 0.002, 3: -0.001, 4: 0.0}


# --- the file format -----------------------------------------------------------------------------


def test_the_shipped_paper_claims_parse_and_carry_no_invented_numbers():
    assert '"lorabench.leaderboard.claims" = ["*.yaml"]' in (REPO / "pyproject.toml").read_text()  # package data
    loaded = load_claims()
    by_id = {lc.claim.id: lc.claim for lc in loaded}
    assert set(by_id) == {"few_shot_composition_beats_full_finetune", "few_shot_composition_beats_lora",
                          "full_shot_learned_matches_lora", "few_shot_composition_beats_classifier_tuning"}
    pairs = {(c.a, c.relation, c.b, c.k.text) for cl in by_id.values() for c in cl.comparisons}
    assert ("uniform_composition", ">", "full_finetune", "<=5") in pairs
    assert ("learned_composition", ">", "lora", "<=5") in pairs
    assert ("learned_composition", "≈", "lora", "all") in pairs
    assert ("uniform_composition", ">", "classifier_tuning", "<=5") in pairs
    approx = by_id["full_shot_learned_matches_lora"].comparisons[0]
    assert approx.margin == 1.0 and approx.params == "<"
    assert all(not c.paper for cl in by_id.values() for c in cl.comparisons)  # paper numbers: not transcribed
    assert all(cl.source for cl in by_id.values())


@pytest.mark.parametrize("spec, yes, no", [
    ("<=5", [0, 1, 5], [6, 10, "all"]),
    ("<5", [1, 4], [5, "all"]),
    (">=10", [10, 50, "all"], [5]),
    (">10", [50, "all"], [10]),
    ("5", [5], [1, 10, "all"]),
    (5, [5], [1, "all"]),
    ("all", ["all"], [1, 5, 100]),
    ("*", [0, 1, 100, "all"], []),
    ([1, 5], [1, 3, 5], [0, 10, "all"]),
    ([10, "all"], [10, 100, "all"], [5]),
])
def test_k_ranges(spec, yes, no):
    r = parse_k(spec)
    assert all(r.covers(k) for k in yes) and not any(r.covers(k) for k in no)


BAD = [
    ("relation: '=>'", {"a": "uniform_composition", "b": "lora", "relation": "=>", "k": "<=5"},
     "claims[0] (id 'bad').comparisons[0].relation", "is not a relation"),
    ("bad k", {"a": "uniform_composition", "b": "lora", "relation": ">", "k": "few"},
     "claims[0] (id 'bad').comparisons[0].k", "is not a K range"),
    ("≈ without margin", {"a": "uniform_composition", "b": "lora", "relation": "≈", "k": "all"},
     "claims[0] (id 'bad').comparisons[0]", "needs a margin"),
    ("margin on >", {"a": "uniform_composition", "b": "lora", "relation": ">", "k": 1, "margin": 1},
     "claims[0] (id 'bad').comparisons[0]", "margin is only for relation '≈'"),
    ("unknown method", {"a": "uniform_compositon", "b": "lora", "relation": ">", "k": 1},
     "claims[0] (id 'bad').comparisons[0]", "unknown method 'uniform_compositon'. Did you mean 'uniform_composition'"),
    ("unknown setting", {"a": "uniform_composition", "b": "lora", "relation": ">", "k": 1,
                         "tasks": {"setting": "covariate"}}, "comparisons[0].tasks", "Did you mean 'covariate_shift'"),
    ("unknown field", {"a": "uniform_composition", "b": "lora", "relation": ">", "k": 1, "kk": 2},
     "claims[0] (id 'bad').comparisons[0].kk", "unknown field"),
]


@pytest.mark.parametrize("what, comparison, where, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_claims_file_is_a_spec_error_naming_file_and_field(tmp_path, what, comparison, where, message):
    path = write_claims(tmp_path / "bad.yaml", [claim("bad", comparison)])
    with pytest.raises(SpecError) as err:
        load_claims_file(path)
    text = str(err.value)
    assert str(path) in text and where in text and message in text, text


@pytest.mark.parametrize("content, message", [
    ("claims: [\n  {id: x\n", "not valid YAML at line"),
    ("- just a list\n", "expected a mapping with a `claims:` list"),
    ("", "an empty file"),
    ("claims: []\n", "claims: List should have at least 1 item"),
    ("claims:\n  - {id: 'has space', text: t, comparisons: [{a: lora, b: uniform_composition, relation: '>', k: 1}]}\n",
     "claims[0] (id 'has space').id"),
    ("claims:\n  - {id: x, text: t, comparisons: [{a: lora, b: full_finetune, relation: '>', k: 1}]}\n"
     "  - {id: x, text: u, comparisons: [{a: lora, b: full_finetune, relation: '<', k: 5}]}\n", "appear more than once"),
])
def test_malformed_claims_files(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SpecError, match="bad.yaml") as err:
        load_claims_file(path)
    assert message in str(err.value), str(err.value)


def test_a_claim_id_already_used_by_the_paper_is_refused(tmp_path):
    path = write_claims(tmp_path / "mine.yaml", [claim("full_shot_learned_matches_lora", {
        "a": "lora", "b": "full_finetune", "relation": ">", "k": 1})])
    with pytest.raises(SpecError, match="already used in .*paper.yaml"):
        load_claims([path])


def run_cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`lorabench ...` in this process: (exit code, stdout, stderr); a bug propagates as itself."""
    from lorabench import cli

    monkeypatch.setattr(sys, "argv", ["lorabench", *argv])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_bad_claims_file_through_the_cli_exits_2_without_a_traceback_and_writes_nothing(tmp_path, monkeypatch,
                                                                                          capsys):
    bad = write_claims(tmp_path / "bad.yaml", [claim("bad", {"a": "uniform_composition", "b": "lora",
                                                              "relation": "≈", "k": "all", "margin": -1})])
    out = tmp_path / "site"
    code, stdout, stderr = run_cli(["leaderboard", "--results-dir", str(DOCS_RESULTS), "--out", str(out),
                                    "--claims", str(bad)], monkeypatch, capsys)
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    flat = " ".join(stderr.split())
    assert "bad.yaml" in flat and "comparisons[0].margin" in flat and "accuracy points" in flat, flat
    assert not out.exists()
    code, _, stderr = run_cli(["leaderboard", "--results-dir", str(DOCS_RESULTS), "--out", str(out),
                               "--claims", str(tmp_path / "nope.yaml")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in stderr
    assert "nope.yaml: no such file" in " ".join(stderr.split())


# --- verdicts on synthetic records ----------------------------------------------------------------


def test_decide_on_paired_comparisons():
    a = {s: BASE[s] + 0.10 + NOISE[s] for s in BASE}
    up = compare(a, BASE)
    assert decide(up, ">")[0] == SUPPORTED and decide(up, "<")[0] == CONTRADICTED
    assert decide(compare(BASE, a), ">")[0] == CONTRADICTED
    wide = compare({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.45, 1: 0.65, 2: 0.38})
    assert wide.ci_low < 0 < wide.ci_high and decide(wide, ">")[0] == UNDECIDED
    one = compare({0: 0.9}, {0: 0.1})
    assert one.n == 1 and decide(one, ">") == (UNDECIDED, "1 seed(s) run by both: too few for an interval (n ≥ 2 needed)")
    # ≈ with margin 1.0 point: diffs of a few tenths of a point with a small spread lie inside [-1, +1]
    close = compare({s: BASE[s] + NOISE[s] / 2 for s in BASE}, BASE)
    assert -0.01 <= close.ci_low and close.ci_high <= 0.01
    assert decide(close, "≈", 1.0)[0] == SUPPORTED
    assert decide(up, "≈", 1.0)[0] == CONTRADICTED  # +10 points, tightly: entirely outside ±1
    assert decide(up, "≈", 15.0)[0] == SUPPORTED
    assert decide(wide, "≈", 1.0)[0] == UNDECIDED  # straddles the band's edge
    assert decide(compare(BASE, dict(BASE)), "≈", 1.0)[0] == SUPPORTED  # identical: CI [0, 0]


def test_seeds_needed_uses_the_distance_to_the_boundary():
    c = compare({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.45, 1: 0.56, 2: 0.41})
    n, note = seeds_to_decide(c, ">")
    assert n == seeds_needed(abs(c.mean_diff), c.sd_diff) and "80% power" in note
    n_approx, _ = seeds_to_decide(c, "≈", 5.0)
    assert n_approx == seeds_needed(abs(0.05 - abs(c.mean_diff)), c.sd_diff)
    assert seeds_to_decide(compare({0: 0.9}, {0: 0.1}), ">") == (None, "needs ≥ 2 seeds run by both to estimate the spread")


def test_verdicts_per_task_and_k_on_the_page(claims_task, tmp_path):
    """learned beats classifier by 10 points on every seed at K=1 (supported) and loses by 10 at K=5
    (contradicted); uniform ran one seed at K=1 (undecided, n=1); lora never ran K=5 (not run)."""
    learned = {s: BASE[s] + 0.10 + NOISE[s] for s in BASE}
    values = {"classifier_tuning": {1: BASE, 5: BASE},
              "learned_composition": {1: learned, 5: {s: BASE[s] - 0.10 + NOISE[s] for s in BASE}},
              "uniform_composition": {1: {2: 0.9}},
              "lora": {1: BASE}}
    page = build(tmp_path, claims_task, values, [
        claim("mine", {"a": "learned_composition", "b": "classifier_tuning", "relation": ">", "k": "<=5"},
              {"a": "uniform_composition", "b": "classifier_tuning", "relation": ">", "k": 1},
              {"a": "learned_composition", "b": "lora", "relation": ">", "k": [1, 5], "tasks": [claims_task]})])
    got = rows(page, "mine")
    t = claims_task
    assert set(got) == {(t, "1", "learned_composition>classifier_tuning"), (t, "5", "learned_composition>classifier_tuning"),
                        (t, "1", "uniform_composition>classifier_tuning"), (t, "1", "learned_composition>lora"),
                        (t, "5", "learned_composition>lora")}
    sup = got[(t, "1", "learned_composition>classifier_tuning")]
    assert sup.attrs["data-verdict"] == SUPPORTED and sup.attrs["data-n"] == "5"
    lo, hi = t_interval([learned[s] - BASE[s] for s in BASE])
    assert sup.one("td", "ci").text() == f"[{pts(lo)}, {pts(hi)}]"
    assert sup.one("td", "diff").text() == pts(sum(learned[s] - BASE[s] for s in BASE) / 5)
    assert sup.one("td", "wtl").text() == "5/0/0"
    assert sup.one("span", "verdict").text() == "supported" and "verdict-supported" in sup.one("span", "verdict").classes()
    assert got[(t, "5", "learned_composition>classifier_tuning")].attrs["data-verdict"] == CONTRADICTED
    one = got[(t, "1", "uniform_composition>classifier_tuning")]
    assert one.attrs["data-verdict"] == UNDECIDED and one.attrs["data-n"] == "1"
    assert "too few for an interval" in one.text() and one.one("td", "ci").text() == "—"
    assert "dropped" in one.one("td", "verdict-cell").text()  # the seeds uniform did not run are named
    not_run = got[(t, "5", "learned_composition>lora")]
    assert not_run.attrs["data-verdict"] == NOT_RUN and "no current full-profile records of lora at K=5" in not_run.text()
    section = page.one("section", "claim", data_claim="mine")  # strata not run wait behind a toggle
    hidden = section.one("details", "not-run-rows").find_all("tr", "claim-row")
    assert [tr.attrs["data-verdict"] for tr in hidden] == [NOT_RUN]
    assert NOT_RUN not in [tr.attrs["data-verdict"] for tr in section.one("table", "verdicts").find_all("tr", "claim-row")]
    counts = {li.attrs["data-verdict"]: li.one("span", "count").text()
              for li in page.one("section", "claim", data_claim="mine").one("ul", "claim-counts").find_all("li")}
    assert counts == {"supported": "2", "contradicted": "1", "undecided": "1", "not run": "1"}
    summary = page.one("table", "claims-summary").one("tr", data_claim="mine")
    assert [td.text() for td in summary.find_all("td")] == ["2", "1", "1", "1"]
    assert "paper numbers: not transcribed" in page.one("section", "claim", data_claim="mine").text()


def test_a_seed_only_one_side_ran_is_dropped_and_named(claims_task, tmp_path):
    a = {s: BASE[s] + 0.10 + NOISE[s] for s in BASE}
    b = {s: v for s, v in BASE.items() if s != 4}
    page = build(tmp_path, claims_task, {"learned_composition": {5: a}, "lora": {5: b}},
                 [claim("drop", {"a": "learned_composition", "b": "lora", "relation": ">", "k": 5})])
    tr = rows(page, "drop")[(claims_task, "5", "learned_composition>lora")]
    assert tr.attrs["data-n"] == "4" and tr.attrs["data-verdict"] == SUPPORTED
    assert "dropped: seed 4 (no lora record)" in tr.one("td", "verdict-cell").text()
    lo, hi = t_interval([a[s] - b[s] for s in b])
    assert tr.one("td", "ci").text() == f"[{pts(lo)}, {pts(hi)}]"


def test_approximately_equal_with_a_margin(claims_task, tmp_path):
    """At K=all learned is within a few tenths of a point of lora on every seed (supported with margin 1),
    with 93 vs 338,944 trainable parameters (the `params: '<'` check holds)."""
    learned = {s: BASE[s] + NOISE[s] for s in BASE}
    values = {"learned_composition": {"all": learned}, "lora": {"all": BASE}, "uniform_composition": {"all": {
        s: BASE[s] + 0.05 + NOISE[s] for s in BASE}}, "full_finetune": {"all": {0: 0.5, 1: 0.7, 2: 0.55, 3: 0.62, 4: 0.64}}}
    write_records(tmp_path / "results" / claims_task, {
        **records(claims_task, {"learned_composition": values["learned_composition"]}, trainable_params=93),
        **records(claims_task, {"lora": values["lora"]}, trainable_params=338944)})
    page = build(tmp_path, claims_task, {m: v for m, v in values.items() if m not in ("learned_composition", "lora")}, [
        claim("approx", {"a": "learned_composition", "b": "lora", "relation": "≈", "margin": 1.0, "k": "all",
                         "params": "<"},
              {"a": "uniform_composition", "b": "lora", "relation": "~", "margin": 1.0, "k": "all"},
              {"a": "full_finetune", "b": "lora", "relation": "≈", "margin": 1.0, "k": "all"})])
    got = rows(page, "approx")
    t = claims_task
    inside = got[(t, "all", "learned_composition>lora")]
    assert inside.attrs["data-verdict"] == SUPPORTED and "within [−1, +1]" in inside.one("td", "verdict-cell").attrs["title"]
    assert inside.one("td", "params").text().strip() == "93 / 338,944 ✓"
    assert got[(t, "all", "uniform_composition>lora")].attrs["data-verdict"] == CONTRADICTED  # +5 points, tightly
    assert got[(t, "all", "full_finetune>lora")].attrs["data-verdict"] == UNDECIDED  # spread over the band's edge


def test_stale_smoke_and_invalid_records_never_enter(claims_task, tmp_path):
    """The same supported comparison as above, plus records that would flip it if they entered."""
    a = {s: BASE[s] + 0.10 + NOISE[s] for s in BASE}
    extra = {"stale": fake_record(claims_task, 0.01, 1, 0, method="learned_composition", config_hash="0" * 16,
                                  created_at="2999-01-01T00:00:00+00:00"),
             "invalid": fake_record(claims_task, 1.5, 1, 1, method="classifier_tuning",
                                    created_at="2999-01-01T00:00:00+00:00"),
             "smoke": fake_record(claims_task, 0.01, 1, 2, method="learned_composition", profile="smoke",
                                  created_at="2999-01-01T00:00:00+00:00")}
    page = build(tmp_path, claims_task, {"learned_composition": {1: a}, "classifier_tuning": {1: BASE}},
                 [claim("clean", {"a": "learned_composition", "b": "classifier_tuning", "relation": ">", "k": 1})],
                 extra_records=extra)
    tr = rows(page, "clean")[(claims_task, "1", "learned_composition>classifier_tuning")]
    lo, hi = t_interval([a[s] - BASE[s] for s in BASE])
    assert tr.attrs["data-verdict"] == SUPPORTED and tr.one("td", "ci").text() == f"[{pts(lo)}, {pts(hi)}]"
    assert tr.one("td", "wtl").text() == "5/0/0"


def test_task_filters_and_unknown_task_names(claims_task, tmp_path):
    better = {s: BASE[s] + 0.1 + NOISE[s] for s in BASE}
    page = build(tmp_path, claims_task, {"learned_composition": {1: better}, "lora": {1: BASE}}, [
        claim("shifted", {"a": "learned_composition", "b": "lora", "relation": ">", "k": 1,
                          "tasks": {"setting": "covariate_shift"}}),
        claim("labels", {"a": "learned_composition", "b": "lora", "relation": ">", "k": 1,
                         "tasks": {"setting": ["label_shift", "task_shift"], "suite": "tests"}})])
    assert not rows(page, "shifted")  # the test task is a label-shift task
    assert rows(page, "labels")[(claims_task, "1", "learned_composition>lora")].attrs["data-verdict"] == SUPPORTED
    bad = write_claims(tmp_path / "typo.yaml", [claim("typo", {"a": "learned_composition", "b": "lora",
                                                                "relation": ">", "k": 1, "tasks": ["digits_claim"]})])
    with pytest.raises(SpecError, match=r"typo.yaml: claim 'typo', comparisons\[0\].tasks: unknown task 'digits_claim'"):
        build_site(tmp_path / "results", tmp_path / "site2", [bad])


def test_a_user_claims_file_through_the_cli(claims_task, tmp_path, monkeypatch, capsys):
    write_records(tmp_path / "results" / claims_task, records(claims_task, {
        "learned_composition": {1: {s: BASE[s] + 0.1 + NOISE[s] for s in BASE}}, "lora": {1: BASE}}))
    mine = write_claims(tmp_path / "mine.yaml", [claim("mine", {"a": "learned_composition", "b": "lora",
                                                                 "relation": ">", "k": "<=1"})])
    code, stdout, stderr = run_cli(["leaderboard", "--results-dir", str(tmp_path / "results"), "--out",
                                    str(tmp_path / "site"), "--claims", str(mine)], monkeypatch, capsys)
    assert code == 0, stderr[-2000:]
    assert re.search(r"claims: \d+ supported, \d+ contradicted, \d+ undecided, \d+ not run", stdout), stdout
    page = dom((tmp_path / "site" / "claims.html").read_text())
    assert rows(page, "mine")[(claims_task, "1", "learned_composition>lora")].attrs["data-verdict"] == SUPPORTED
    assert page.find_all("section", "claim", data_claim="few_shot_composition_beats_lora")  # the paper's, too
    assert str(mine) in page.text()


# --- the committed real records --------------------------------------------------------------------


def raw_values(task: str) -> dict[tuple[str, str], dict[int, float]]:
    """Per (method, K), seed -> value of the committed records that are current (a stale record, e.g. of an
    earlier end-to-end rule, never enters a verdict)."""
    from lorabench.identity import staleness
    from lorabench.specs import ResultRecord

    out: dict[tuple[str, str], dict[int, float]] = {}
    for path in sorted((DOCS_RESULTS / task).glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("profile") == "full" and staleness(ResultRecord.model_validate(rec)) is None:
            out.setdefault((rec["method"], str(rec["k"])), {})[rec["seed"]] = rec["value"]
    return out


@pytest.fixture(scope="module")
def real_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("claims_site")
    report = build_site(DOCS_RESULTS, out)
    assert report.claims == out / "claims.html"
    return out


@pytest.mark.parametrize("task", ["pacs_art_painting", "digits", "split_cifar10"])
def test_the_page_from_the_committed_records_has_verdicts(real_site, task):
    """Each verdict on the committed records, recomputed here from their JSON: the paired t interval of the
    per-seed differences decides supported / contradicted / undecided."""
    page = dom((real_site / "claims.html").read_text(encoding="utf-8"))
    raw = raw_values(task)
    checked = 0
    for claim, pair in [("few_shot_composition_beats_full_finetune", ("uniform_composition", "full_finetune")),
                        ("few_shot_composition_beats_lora", ("learned_composition", "lora"))]:
        got = rows(page, claim)
        for k in ("1", "5"):
            a, b = raw.get((pair[0], k), {}), raw.get((pair[1], k), {})
            if not (a or b):  # neither method has a current record at this K: no row, or a "not run" one
                tr = got.get((task, k, f"{pair[0]}>{pair[1]}"))
                assert tr is None or tr.attrs["data-verdict"] == NOT_RUN, (task, k, pair)
                checked += 1
                continue
            tr = got[(task, k, f"{pair[0]}>{pair[1]}")]
            diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
            if len(diffs) < 2:  # not run under the current protocol (yet), or too few shared seeds
                assert tr.attrs["data-verdict"] == (NOT_RUN if not (a and b) else UNDECIDED), (task, k, pair)
                checked += 1
                continue
            lo, hi = t_interval(diffs)
            want = SUPPORTED if lo > 0 else CONTRADICTED if hi < 0 else UNDECIDED
            assert tr.attrs["data-verdict"] == want and tr.attrs["data-n"] == str(len(diffs))
            assert tr.one("td", "ci").text() == f"[{pts(lo)}, {pts(hi)}]"
            assert tr.one("th").one("a").attrs["href"] == f"task-{task}.html"
            checked += 1
    assert checked == 4


def test_the_page_from_the_committed_records_has_pacs_and_arc_rows(real_site):
    page = dom((real_site / "claims.html").read_text(encoding="utf-8"))
    # K = all was run on digits only (a verdict there while its records are current; under a later end-to-end rule
    # they are stale until re-run) and a "not run" row for PACS and ARC-Easy
    full = rows(page, "full_shot_learned_matches_lora")
    digits = raw_values("digits")
    ran = bool(digits.get(("learned_composition", "all")) and digits.get(("lora", "all")))
    assert (full.pop(("digits", "all", "learned_composition>lora")).attrs["data-verdict"] != NOT_RUN) == ran
    assert {tr.attrs["data-verdict"] for tr in full.values()} == {NOT_RUN}
    assert ("pacs_art_painting", "all", "learned_composition>lora") in full
    # only the Ks some method ran on a task get rows (arc_easy: 0 and 5, not its grid's 1-4)
    assert {key[1] for key in rows(page, "few_shot_composition_beats_lora") if key[0] == "arc_easy"} <= {"0", "5"}
    index = dom((real_site / "index.html").read_text(encoding="utf-8"))
    assert index.one("section", "claims-overview").find_all("a")[0].attrs["href"] == "claims.html"
    assert any(a.attrs.get("href") == "claims.html" for a in index.one("nav").find_all("a"))


@needs_chromium
def test_the_claims_page_renders_its_verdict_tables_in_chromium(real_site, tmp_path):
    page = browser_dom(real_site / "claims.html", tmp_path)
    tables = page.find_all("table", "claims")  # the verdict tables and those of strata not run (behind a toggle)
    static = dom((real_site / "claims.html").read_text(encoding="utf-8")).find_all("table", "claims")
    assert len(tables) == len(static) and len(page.find_all("table", "verdicts")) == 3
    for task in ("pacs_art_painting", "digits", "split_cifar10", "arc_easy"):  # every row the page holds is rendered
        count = sum(tr.attrs["data-task"] == task for t in tables for tr in t.find_all("tr", "claim-row"))
        assert count == sum(tr.attrs["data-task"] == task for t in static for tr in t.find_all("tr", "claim-row")), task
        assert count > 0, task
    for tr in (tr for t in tables for tr in t.find_all("tr", "claim-row")):
        badge = tr.one("span", "verdict")
        assert badge.text() == tr.attrs["data-verdict"] and f"verdict-{badge.text().replace(' ', '-')}" in badge.classes()
    assert page.one("a", "claims-link").attrs["class"].split() == ["claims-link", "here"]
    pooled = page.one("table", "pooled").find_all("tr", "pooled-row")  # one line per comparison, rendered
    assert len(pooled) == len(dom((real_site / "claims.html").read_text(encoding="utf-8")).one("table", "pooled")
                              .find_all("tr", "pooled-row")) > 0
    assert all(tr.one("span", "verdict").text() == tr.attrs["data-verdict"] for tr in pooled)
    assert len(page.find_all("svg", "forest-plot")) == sum(tr.attrs["data-strata"] != "0" for tr in pooled)
    shot = tmp_path / "claims.png"
    from test_leaderboard import chromium

    out = chromium(tmp_path / "profile2", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1400,1200",
                   (real_site / "claims.html").resolve().as_uri())
    assert out.returncode == 0 and shot.stat().st_size > 10_000, out.stderr[-2000:]
    artifacts = REPO / "test-artifacts"
    if artifacts.is_dir():
        shutil.copy(shot, artifacts / "claims.png")


def test_a_claim_is_pooled_over_its_strata_with_a_forest_plot(claims_task, tmp_path):
    """K=1: learned ahead by ~10 points on every seed; K=5: ahead by ~2; K=all: one seed only (left out, named).
    The pooled line is the random-effects pool of the two rows with an interval, with one forest row each."""
    from lorabench.stats import pool_effects
    up10 = {s: BASE[s] + 0.10 + NOISE[s] for s in BASE}
    up2 = {s: BASE[s] + 0.02 + 2 * NOISE[s] for s in BASE}
    values = {"classifier_tuning": {1: BASE, 5: BASE, "all": BASE},
              "learned_composition": {1: up10, 5: up2, "all": {0: 0.9}}}
    page = build(tmp_path, claims_task, values, [
        claim("pooled", {"a": "learned_composition", "b": "classifier_tuning", "relation": ">", "k": "*"})])
    strata = []
    for k, a in ((1, up10), (5, up2)):
        d = [a[s] - BASE[s] for s in BASE]
        m = sum(d) / 5
        strata.append((m, sum((x - m) ** 2 for x in d) / 4 / 5))  # mean and squared paired SE
    want = pool_effects([m for m, _ in strata], [v for _, v in strata])
    line = page.one("table", "pooled").one("tr", "pooled-row", data_claim="pooled")
    assert line.attrs["data-strata"] == "2" and line.attrs["data-verdict"] == (SUPPORTED if want.ci_low > 0 else UNDECIDED)
    cells = [td.text() for td in line.find_all("td")]
    assert cells[2] == pts(want.mean) and cells[3] == f"[{pts(want.ci_low)}, {pts(want.ci_high)}]"
    assert cells[4:7] == ["2", "1", "10"]  # strata, tasks, seed pairs
    assert want.i2 > 0.9 and cells[8] == f"{100 * want.i2:.0f}%"  # 10 vs 2 points: heterogeneous, and shown so
    section = page.one("section", "claim", data_claim="pooled")
    assert "left out: " in section.text() and f"{claims_task} K=all: fewer than 2 seeds" in section.text()
    forest = section.one("svg", "forest-plot")
    rows_ = forest.find_all("g", "stratum")
    assert [(g.attrs["data-k"], float(g.attrs["data-mean"])) for g in rows_] == [
        ("1", pytest.approx(strata[0][0])), ("5", pytest.approx(strata[1][0]))]
    assert sum(float(g.attrs["data-weight"]) for g in rows_) == pytest.approx(1.0)
    diamond = forest.one("g", "pooled")
    assert float(diamond.attrs["data-ci-low"]) == pytest.approx(want.ci_low)


def test_the_papers_numbers_come_from_its_data_file_to_the_pacs_page_and_the_claims(tmp_path, monkeypatch):
    """Change one number in a copy of the shipped tables: the PACS art page and the claims row show the changed
    number (so nothing is typed into a template), labelled with the paper's backbone."""
    from lorabench.leaderboard import paper
    raw = yaml.safe_load(paper.PAPER_TABLES.read_text(encoding="utf-8"))
    assert raw["source"].startswith("arXiv:2402.15414")  # the source line is shipped with the numbers
    raw["tables"]["table7_pacs_art_painting"]["rows"]["learned"][0] = [12.34, 5.67]
    changed = tmp_path / "tables.yaml"
    changed.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setattr(paper, "PAPER_TABLES", changed)
    task = "pacs_art_painting"
    recs = {f"{m}_s{s}": fake_record(task, 0.5 + 0.01 * s + (0.05 if m == "learned_composition" else 0), 1, s, method=m)
            for m in ("learned_composition", "full_finetune") for s in (0, 1, 2)}
    write_records(tmp_path / "results" / task, recs)
    report = build_site(tmp_path / "results", tmp_path / "site")
    page = dom((tmp_path / "site" / f"task-{task}.html").read_text(encoding="utf-8"))
    table = page.one("div", "paper-table")
    assert table.attrs["data-paper-task"] == "pacs_art_painting_vit_b32" and "ViT-B/32, not ours" in table.text()
    cell = table.one("tr", data_method="learned_composition").one("td", data_k="1")
    assert cell.one("span", "mean").text() == "12.34" and cell.one("span", "pm").text().strip() == "± 5.67"
    full = raw["tables"]["table7_pacs_art_painting"]["rows"]["full_ft"][0][0]
    claims = dom(report.claims.read_text(encoding="utf-8"))
    row = rows(claims, "few_shot_composition_beats_full_finetune")[(task, "1", "learned_composition>full_finetune")]
    assert row.one("td", "paper").text().startswith(f"12.34 / {full} ({12.34 - full:+.2f})")
    assert "paper: ViT-B/32, Table 7" in row.one("td", "paper").text()


def test_the_index_opens_with_the_pooled_verdicts_and_links_the_claims_first(real_site):
    index = (real_site / "index.html").read_text(encoding="utf-8")
    assert index.index('class="claims-overview"') < index.index('<table class="index">')
    lines = dom(index).one("section", "claims-overview").find_all("li")
    pooled = dom((real_site / "claims.html").read_text(encoding="utf-8")).one("table", "pooled").find_all("tr", "pooled-row")
    assert [(li.attrs["data-claim"], li.attrs["data-verdict"]) for li in lines] == [
        (tr.attrs["data-claim"], tr.attrs["data-verdict"]) for tr in pooled] and lines
