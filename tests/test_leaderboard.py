"""The static leaderboard, built from a real short run and checked in headless Chromium.

The expected numbers are recomputed here from the raw JSON files (json + statistics, not the
leaderboard's own code), then compared with what the browser rendered.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import QUICK_TASK, registered_task

import lorabench
from lorabench.errors import ConfigError
from lorabench.evaluator import expand_grid, run_grid
from lorabench.leaderboard import build_site
from lorabench.results import read_result, write_result
from lorabench.specs import ResultRecord

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script>"
CLI = [sys.executable, "-m", "lorabench.cli"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed at "
                                    "/usr/bin/chromium (Debian: apt-get install -y chromium)")


# --- a small DOM, from the browser's dump or from the raw file --------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if ((tag is None or c.tag == tag) and (cls is None or cls in c.classes())
                        and all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                    out.append(c)
                out += c.find_all(tag, cls, **attrs)
        return out

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, (tag, cls, attrs, len(found))
        return found[0]


class DomBuilder(HTMLParser):
    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source", "track", "embed"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def dom(html: str) -> Node:
    b = DomBuilder()
    b.feed(html)
    return b.root


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


def browser_dom(page: Path, tmp_path: Path) -> Node:
    out = chromium(tmp_path / "profile", "--dump-dom", page.resolve().as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    assert "<table" in out.stdout, out.stdout[:500]
    return dom(out.stdout)


# --- expected values, straight from the JSON files --------------------------------------------


def expected_cells(results: Path, task: str) -> dict[tuple[str, str, str], list[float]]:
    """(method, hparams as JSON, K) -> per-seed values."""
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for path in sorted((results / task).glob("*.json")):
        rec = json.loads(path.read_text())
        cells[(rec["method"], json.dumps(rec["config"]["hparams"], sort_keys=True), str(rec["k"]))].append(rec["value"])
    return cells


def fmt(values: list[float]) -> tuple[str, str]:
    return f"{100 * statistics.fmean(values):.2f}", f"{100 * (statistics.stdev(values) if len(values) > 1 else 0.0):.2f}"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_task(tmp_path_factory) -> str:
    """The shared quick digits task with upstream adapters trained for 2 steps on 64 images: real, just not
    good (this file tests rendering, and the adapters dominate its run time). Registered via LORABENCH_TASKS."""
    upstream = [{**u, "train": {**u["train"], "max_examples": 64}} for u in QUICK_TASK["upstream"]]
    spec = {**QUICK_TASK, "name": "digits_lb", "upstream": upstream,
            "upstream_training": {"epochs": 1, "max_steps": 2, "probe_epochs": 2}}
    with registered_task(tmp_path_factory.mktemp("lb_tasks"), spec) as name:
        yield name


@pytest.fixture(scope="module")
def results(quick_task, tmp_path_factory) -> Path:
    """A real short run: classifier tuning at K=1,5 × 2 seeds, learned composition at K=5 seed 0, one
    classifier cell re-run with another config (a disagreement), plus a script-named record and a broken file."""
    root = tmp_path_factory.mktemp("leaderboard")
    where = dict(results_dir=str(root / "results"), cache_dir=str(root / "cache"))
    cells = expand_grid(["classifier_tuning"], [quick_task], [1, 5], [0, 1], None, **where)
    cells += expand_grid(["learned_composition"], [quick_task], [5], [0], None, **where)
    cells += expand_grid(["classifier_tuning"], [quick_task], [1], [0], None, hparams={"head_epochs": 5}, **where)
    report = run_grid(cells)
    assert not report.failed and len(report.done) == len(cells) == 6, report.failed
    base = read_result(cells[0].result_path()).model_dump(mode="json")
    evil = ResultRecord.model_validate({**base, "method": EVIL, "cell_id": base["cell_id"].replace(
        "classifier_tuning", EVIL), "command": base["command"].replace("classifier_tuning", EVIL)})
    write_result(evil, root / "results" / quick_task / "evil.json")
    (root / "results" / "broken.json").write_text('{"not": "a record"}')
    return root / "results"


@pytest.fixture(scope="module")
def site(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([*CLI, "leaderboard", "--results-dir", str(results), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "7 result file(s) -> 1 task page(s)" in proc.stdout
    assert "1 file(s) did not validate" in proc.stderr
    return out


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_chromium
def test_task_page_in_chromium_matches_the_json(site, results, quick_task, tmp_path):
    page = site / f"task-{quick_task}.html"
    doc = browser_dom(page, tmp_path)
    assert not doc.find_all("script"), "the page must carry no script (and the injected one must stay text)"
    table = doc.one("table", "results")
    assert [th.text().strip() for th in table.find_all("th", "k")] == ["K = 1", "K = 5"]
    rows = {(tr.attrs["data-method"], tr.attrs["data-variant"]): tr for tr in table.find_all("tr")
            if "data-method" in tr.attrs}
    assert set(rows) == {("classifier_tuning", "defaults"), ("classifier_tuning", "head_epochs=5"),
                         ("learned_composition", ""), (EVIL, "")}

    # Every cell shows mean ± std over exactly its own configuration's seeds, and the seed count.
    hp_of = {"defaults": "{}", "head_epochs=5": json.dumps({"head_epochs": 5}), "": "{}"}
    expected = expected_cells(results, quick_task)
    best: dict[str, float] = {}
    for (method, variant), tr in rows.items():
        for td in tr.find_all("td", "acc"):
            values = expected.get((method, hp_of[variant], td.attrs["data-k"]), [])
            if not values:
                assert "empty" in td.classes() and "not run (0/2 seeds)" in td.text()
                continue
            mean, std = fmt(values)
            assert td.one("span", "mean").text() == mean, (method, variant, td.attrs["data-k"])
            if len(values) > 1:
                assert td.one("span", "pm").text().strip() == f"± {std}"
            else:  # one seed has no spread to show
                assert not td.find_all("span", "pm")
            assert td.one("span", "seeds").text() == f"{len(values)}/2 seeds"
            assert ("missing" in td.one("span", "seeds").classes()) == (len(values) < 2)
            best[td.attrs["data-k"]] = max(best.get(td.attrs["data-k"], 0.0), statistics.fmean(values))
    assert len(expected[("classifier_tuning", "{}", "1")]) == 2  # the re-run with head_epochs=5 was not averaged in
    for tr in (rows[("classifier_tuning", "defaults")], rows[("classifier_tuning", "head_epochs=5")]):
        assert "conflict" in tr.classes() and "clash" in tr.one("td", data_k="1").classes()
    for k, value in best.items():
        marked = [td for td in table.find_all("td", "best") if td.attrs["data-k"] == k]
        assert marked and all(td.one("span", "mean").text() == f"{100 * value:.2f}" for td in marked), k

    # The script-named method renders as text.
    assert [s.text() for s in table.find_all("span", "method-name")].count(EVIL) == 1

    # Accuracy-vs-K plot: one polyline per row; learned weights heatmap equal to the JSON.
    plot = doc.one("svg", "plot")
    assert len(plot.find_all("polyline")) == 4 and len(plot.find_all("circle")) == 2 + 1 + 1 + 1
    learned = json.loads(next((results / quick_task).glob("learned_composition__*.json")).read_text())
    weights = learned["extras"]["learned_weights"]
    rects = doc.one("svg", "heatmap").find_all("rect", "hm-cell")
    assert len(rects) == len(weights) * 2
    assert [r.attrs["data-matrix"] for r in rects[::2]] == list(weights)  # model order
    for r in rects:
        i = learned["extras"]["upstream"].index(r.attrs["data-upstream"])
        assert float(r.attrs["data-w"]) == pytest.approx(weights[r.attrs["data-matrix"]][i], abs=1e-6)

    # Provenance and the exact commands to reproduce each row.
    prov = doc.one("section", "provenance").text()
    assert lorabench.__version__ in prov and "cpu" in prov and "efficientnet_lite0" in prov
    assert (learned["git_commit"] or "unknown") in prov
    commands = [c.text() for c in doc.find_all("code", "cmd")]
    assert (f"lorabench run --method classifier_tuning --task {quick_task} --k 1,5 --seeds 0,1 "
            "--backbone efficientnet_lite0") in commands
    assert any("--hp head_epochs=5" in c and "--k 1 --seeds 0" in c for c in commands)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard-task.png"
    shot.unlink(missing_ok=True)
    out = chromium(tmp_path / "profile2", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,1600",
                   page.resolve().as_uri())
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        assert len(set(img.convert("L").getdata())) > 50  # not a blank page


@pytest.mark.slow
@needs_chromium
def test_index_in_chromium_lists_tasks_best_methods_and_skipped_files(site, results, quick_task, tmp_path):
    doc = browser_dom(site / "index.html", tmp_path)
    row = doc.one("tr", data_task=quick_task)
    assert row.one("a").attrs["href"] == f"task-{quick_task}.html"
    assert "label shift" in row.text() and "efficientnet_lite0" in row.text()
    expected = expected_cells(results, quick_task)
    for li in row.find_all("li"):
        k = li.attrs["data-k"]
        top = max(statistics.fmean(v) for (m, hp, kk), v in expected.items() if kk == k)
        assert li.one("span", "best-score").text() == f"{100 * top:.2f}"
    assert "broken.json" in doc.one("section", "flags").text()
    assert lorabench.__version__ in doc.one("section", "provenance").text()


@pytest.mark.slow
def test_repeated_runs_that_disagree_are_flagged_and_the_latest_shown(results, quick_task, tmp_path):
    """Same cell, same config, two scores (e.g. merged from two machines): flagged, never averaged."""
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    path = next((copy / quick_task).glob("classifier_tuning__*__k5__s1__*.json"))
    rec = json.loads(path.read_text())
    rerun = {**rec, "value": rec["value"] / 2, "created_at": "2999-01-01T00:00:00+00:00"}
    (path.parent / "rerun.json").write_text(json.dumps(rerun))
    build_site(copy, tmp_path / "site")
    doc = dom((tmp_path / "site" / f"task-{quick_task}.html").read_text())
    td = doc.one("tr", data_method="classifier_tuning", data_variant="defaults").one("td", data_k="5")
    per_seed = {r["seed"]: r["value"] for r in map(json.loads, map(Path.read_text, (copy / quick_task).glob(
        "classifier_tuning__*__k5__*.json")))}
    per_seed[1] = rerun["value"]
    assert td.one("span", "mean").text() == fmt(list(per_seed.values()))[0]
    assert "seed 1 was run 2× with the same config" in td.one("span", "note").text()
    assert "seed 1 was run 2×" in doc.one("section", "flags").text()


def test_missing_or_empty_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        build_site(tmp_path / "nope", tmp_path / "site")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([*CLI, "leaderboard", "--results-dir", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "No result records under" in proc.stderr
    assert not (tmp_path / "site").exists()


def test_the_same_cell_from_another_copy_of_the_data_is_its_own_row(results, quick_task, tmp_path):
    """The local data pack and the hub may hold different copies of a dataset: their scores are kept apart."""
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    path = next((copy / quick_task).glob("classifier_tuning__*__k5__s1__*.json"))
    rec = json.loads(path.read_text())
    assert rec["config"]["data_source"] == ["builtin:sklearn_digits"]  # recorded by the evaluator
    hub = {**rec, "value": 0.5, "config": {**rec["config"], "data_source": ["hub:someone/digits"]}}
    (path.parent / "from_hub.json").write_text(json.dumps(hub))
    build_site(copy, tmp_path / "site")
    doc = dom((tmp_path / "site" / f"task-{quick_task}.html").read_text())
    variants = {tr.attrs["data-variant"] for tr in doc.find_all("tr", data_method="classifier_tuning")}
    assert {"data=builtin:sklearn_digits", "data=hub:someone/digits"} <= variants
    hub_row = doc.one("tr", data_method="classifier_tuning", data_variant="data=hub:someone/digits")
    assert hub_row.one("td", data_k="5").one("span", "mean").text() == fmt([0.5])[0]
    assert "different configurations" in doc.one("section", "flags").text()
