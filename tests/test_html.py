"""The HTML report: one self-contained file, the real leaderboard in it, untrusted text escaped."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from report_fixtures import build_report_data, closed_set_summary, replay_affectgpt
from unibench.html import render_html, worst_samples

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def affectgpt(shared_data, tmp_path_factory):
    """AffectGPT's seven released checkpoints on MER2023 and CMU-MOSI (a real results folder)."""
    out = replay_affectgpt(shared_data, tmp_path_factory.mktemp("res"))
    return out


@pytest.fixture(scope="module")
def real_page(affectgpt, tmp_path_factory):
    page = render_html(build_report_data(affectgpt, paper=True), affectgpt,
                       tmp_path_factory.mktemp("page") / "report.html")
    return page, page.read_text(encoding="utf-8")


def without_user_text(page: str) -> str:
    """The page minus the escaped untrusted text cells (answers, paths in code) where a URL may legitimately sit."""
    return re.sub(r'<td class="text">.*?</td>|<code[^>]*>.*?</code>', "", page, flags=re.S)


def assert_self_contained(page: str) -> None:
    own = without_user_text(page)
    for ref in ("http://", "https://", 'src="//', "href=", "<link", "@import", "url("):
        assert ref not in own, ref
    assert re.findall(r'<img [^>]*src="([^"]{0,22})', page) and \
        all(s.startswith("data:image/png;base64,") for s in re.findall(r'<img [^>]*src="([^"]{0,22})', page))
    assert "<script" not in page.lower()


def test_real_report_is_self_contained_with_the_leaderboard(real_page):
    path, page = real_page
    assert_self_contained(page)
    table = page[page.index('<table class="leaderboard">'):page.index("</table>")]
    ours = table[table.index('<td class="model">affectgpt</td>'):]
    ours = ours[:ours.index("</tr>")]
    assert '<td class="num best" title="file checkpoint_000050_loss_0.527">78.54<span class="ci">[74.37, 82.31]' \
        in ours  # MER2023 ties the published AffectGPT (AVT) 78.54: both bold
    assert "81.30" in ours and "best-of-7" in ours and "79.92" in ours
    assert page.count('<tr class="published">') == 19 + 1     # 19 published rows + their provenance line
    assert page.count("<details>") == 2                         # mer2023 and cmumosi
    assert "&#9733; selected" in page
    assert "Picking the best of 7 files on the test set gives 78.54" in page
    assert path.stat().st_size < 2_000_000


def test_real_worst_samples_are_the_lowest_scored(affectgpt):
    path = next((affectgpt / "affectgpt" / "mer2023").glob("*.samples.csv"))
    kind, worst, total = worst_samples(path)
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    zero = [r["name"] for r in rows
            if any(r[f"hit_w{w}"] for w in range(1, 6))
            and all(float(r[f"hit_w{w}"]) == 0 for w in range(1, 6) if r[f"hit_w{w}"])]
    assert kind == "hit" and total == 323                       # 323 samples map on some wheel (per_wheel n_scored)
    assert len(zero) >= 10 and [s.row["name"] for s in worst] == zero[:10]
    kind, worst, total = worst_samples(next((affectgpt / "affectgpt" / "cmumosi").glob("*.samples.csv")))
    assert kind == "sentiment" and all(s.score == 0 and s.row["kept"] == "1" for s in worst)


def hostile_folder(root: Path) -> tuple[Path, dict]:
    """An invented results folder: a model named like markup, an answer holding a script and a URL."""
    model = f'evil{HOSTILE}"'
    folder = root / "evil"
    (folder / "mer2023").mkdir(parents=True)
    header = ["name", "gt", "pred", *[f"{k}_w{w}" for w in range(1, 6) for k in ("gt", "pred", "hit")], "answer",
              "ov_raw"]
    with open(folder / "mer2023" / "a.samples.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerow(["s1", "happy", "<b>x</b>", *(["happy", "<i>", "0"] * 5),
                         f"{HOSTILE} see https://evil.example/a.png", "[<img src=x onerror=alert(2)>]"])
        writer.writerow(["s2", "sad", "sad", *(["sad", "sad", "1"] * 5), "sad", "[sad]"])
    files = [{"label": "a", "order": 0, "value": 50.0, "lo": 10.0, "hi": 90.0, "flags": [HOSTILE],
              "per_wheel": {f"wheel{w}": 50.0 for w in range(1, 6)}, "extraction": {}}]
    data = {"schema": "unibench-report/1", "generated": "2026-11-29T20:00:00", "unibench": "0.1.0",
            "output": str(root), "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95},
            "tasks": [{"id": "mer2023", "title": "MER2023", "metric": "hit_rate", "family": "basic"}],
            "rows": [{"model": model, "selection": "single", "published": False, "flags": [HOSTILE], "mean": 50.0,
                      "n_tasks": 1, "cells": {"mer2023": {"value": 50.0, "lo": 10.0, "hi": 90.0, "file": "a",
                                                          "n_files": 1, "metric": "hit_rate"}}}],
            "models": {model: {"folder": "evil", "provenance": {"command": ["run_bench.py", HOSTILE]},
                               "tasks": {"mer2023": {"metric": "hit_rate", "level": "level1", "lexicon_sha256": "ab",
                                                     "flags": [], "selected": "a", "files": files, "selection": None,
                                                     "closed_set": closed_set_summary(),
                                                     "samples_csv": "evil/mer2023/a.samples.csv"}}}}}
    return root, data


def test_hostile_text_is_escaped(tmp_path):
    output, data = hostile_folder(tmp_path / "res")
    page = render_html(data, output, tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img src=x" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; see https://evil.example/a.png" in page   # the answer, as text
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert 'evil&lt;script&gt;alert(1)&lt;/script&gt;&quot;' in page                      # the model name
    assert_self_contained(page)                   # the URL sits only inside the escaped answer cell
    assert "Closed-set view" in page and "accuracy" in page
    assert "The 2 lowest of 2 scored samples" in page
    assert page.index(">s1<") < page.index(">s2<")   # s1 scored 0, s2 scored 1


def test_robustness_findings_are_included_when_present(tmp_path):
    output, data = hostile_folder(tmp_path / "res")
    (output / "robustness.json").write_text(json.dumps({
        "summary": ["Ranking is stable under level 2 <b>(tau 0.8)</b>"],
        "agreement": {"mer2023": {"names": ["protocol", "level2"], "kendall_tau": [[1, 0.8], [0.8, None]],
                                   "spearman_rho": [[1, 0.9], [0.9, 1]]}}}))
    page = render_html(data, output, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Robustness</h2>" in page and "Ranking is stable under level 2 &lt;b&gt;" in page
    assert "mer2023: Kendall tau between rankings" in page
    assert page.count("data:image/png;base64,") >= 4      # bars, wheels, confusion, agreement
    (output / "robustness.json").unlink()
    assert "Robustness" not in render_html(data, output, tmp_path / "r2.html").read_text(encoding="utf-8")


def test_report_without_matplotlib_says_how_to_get_plots(tmp_path, monkeypatch):
    output, data = hostile_folder(tmp_path / "res")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    page = render_html(data, output, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "pip install &#x27;mer-unibench[plots]&#x27;" in page and "data:image/png" not in page


def test_page_renders_in_chromium(real_page, tmp_path):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("Chromium not installed: the headless rendering check needs chromium, chromium-browser or "
                    "google-chrome on PATH")
    path, _ = real_page
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path}",
                           "--dump-dom", path.resolve().as_uri()], capture_output=True, text=True, timeout=90)
    dom = done.stdout
    assert done.returncode == 0 and '<table class="leaderboard">' in dom, done.stderr[-500:]
    assert ">affectgpt<" in dom and "78.54" in dom


def test_report_data_of_the_report_builder_renders(affectgpt, tmp_path):
    """With unibench.reports.report_data (the report command's builder), when it is there."""
    reports = pytest.importorskip("unibench.reports")
    if not hasattr(reports, "report_data"):
        pytest.skip("unibench.reports has no report_data yet")
    page = render_html(reports.report_data(affectgpt, paper=True), affectgpt, tmp_path / "r.html")
    text = page.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert '<td class="num best" title="file checkpoint_000050_loss_0.527">78.54' in text   # ties the paper's 78.54
    assert "Picking the best of 7 files on the test set gives 78.54, 3.90 above the median file (74.64" in text
