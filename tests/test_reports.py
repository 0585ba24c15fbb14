"""`run_bench report`: the report data, its tables (md, LaTeX, CSV, JSON, HTML hand-off), what best-of-N
costs, and the reproduction report against a published row."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
import types
from pathlib import Path

import pytest

from unibench.cli import main
from unibench.reports import latex_escape, report_data
from unibench.tasks.base import TASKS

PAPER_TITLES = ["MER2023", "MER2024", "MELD", "IEMOCAP", "CMU-MOSI", "CMU-MOSEI", "SIMS", "SIMS v2", "OV-MERD+"]


def report(capsys, output: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["report", "--output", str(output), *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ================================================================ AffectGPT's released answers (real data)

@pytest.fixture(scope="module")
def affectgpt(shared_data, tmp_path_factory) -> Path:
    """A replay of AffectGPT's seven released checkpoints on MER2023 and CMU-MOSI."""
    sample = shared_data / "mer-unibench-sample"
    output = tmp_path_factory.mktemp("affectgpt") / "res"
    rc = main(["--model", "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}",
               "--task", "mer2023,cmumosi", "--data-root", str(sample / "dataset"),
               "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"), "--output", str(output)])
    assert rc == 0
    return output


def test_report_data_of_a_real_run(affectgpt):
    data = report_data(affectgpt)
    assert data["schema"] == "unibench-report/1"
    assert [t["id"] for t in data["tasks"]] == list(TASKS)
    assert [t["title"] for t in data["tasks"]] == PAPER_TITLES
    assert data["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 0.95}
    (row,) = data["rows"]
    assert (row["model"], row["selection"], row["published"], row["n_tasks"]) == ("affectgpt", "best-of-7", False, 2)
    mer, mosi = row["cells"]["mer2023"], row["cells"]["cmumosi"]
    assert f"{mer['value']:.2f}" == "78.54" and f"{mosi['value']:.2f}" == "81.30"
    assert mer["file"] == "checkpoint_000050_loss_0.527" and mosi["file"] == "checkpoint_000040_loss_0.569"
    assert (mer["metric"], mosi["metric"], mer["n_files"]) == ("hit_rate", "waf", 7)
    for cell in (mer, mosi):
        assert cell["lo"] < cell["value"] < cell["hi"] and cell["hi"] - cell["lo"] < 10
    assert (mer["lo"], mer["hi"]) == (74.3693, 82.3084)        # the interval the run stored, x100
    assert row["mean"] == pytest.approx((mer["value"] + mosi["value"]) / 2, abs=1e-4)
    assert f"{row['mean']:.2f}" == "79.92"

    model = data["models"]["affectgpt"]
    assert model["folder"] == "affectgpt" and model["provenance"]["adapter"]["adapter"] == "replay"
    task = model["tasks"]["mer2023"]
    assert task["selected"] == mer["file"] and task["level"] == "level1" and len(task["lexicon_sha256"]) == 64
    assert task["samples_csv"] == "affectgpt/mer2023/checkpoint_000050_loss_0.527.samples.csv"
    assert [f["order"] for f in task["files"]] == list(range(7))
    best_file = next(f for f in task["files"] if f["label"] == mer["file"])
    assert best_file["value"] == mer["value"] and sorted(best_file["per_wheel"]) == [f"wheel{i}" for i in range(1, 6)]
    assert model["tasks"]["cmumosi"]["files"][0]["per_wheel"] == {}       # sentiment: no wheels
    for task_id in ("mer2023", "cmumosi"):
        s = model["tasks"][task_id]["selection"]
        values = sorted(f["value"] for f in model["tasks"][task_id]["files"])
        assert s["n_files"] == 7 and s["best"] == row["cells"][task_id]["value"]
        assert s["best"] >= s["median"] >= s["worst"] and s["worst"] == values[0] and s["median"] == values[3]
        assert s["spread"] == pytest.approx(s["best"] - s["worst"], abs=2e-4)
        assert s["best_minus_median"] == pytest.approx(s["best"] - s["median"], abs=2e-4)
        assert 0 < s["expected_max_gain"] < s["spread"]
    json.dumps(data)  # JSON-serialisable as it is


def test_json_format_is_the_report_data(affectgpt, capsys):
    rc, out, _ = report(capsys, affectgpt, "--format", "json", "--paper")
    assert rc == 0
    data = json.loads(out)
    assert data["rows"][0]["cells"]["mer2023"]["value"] == 78.5387
    assert [r["model"] for r in data["rows"] if r["published"]][-1] == "AffectGPT (AVT)" and len(data["rows"]) == 20


def test_latex_in_the_papers_style(affectgpt, capsys):
    rc, out, _ = report(capsys, affectgpt, "--format", "latex", "--paper")
    assert rc == 0
    assert out.index(r"\toprule") < out.index(r"\midrule") < out.index(r"\bottomrule")
    ours = next(line for line in out.splitlines() if line.startswith("affectgpt & best-of-7"))
    # 78.54 ties the published AVT row (both bold); 81.30 is below AffectGPT (AT)'s 83.46
    assert r"& \textbf{78.54} &" in ours and "& 81.30 &" in ours and ours.endswith(r"& 79.92 & 2 \\")
    avt = next(line for line in out.splitlines() if line.startswith("AffectGPT (AVT) & published"))
    assert r"\textbf{74.77}" in avt and r"\textbf{83.46}" in out
    header = next(line for line in out.splitlines() if line.startswith("Model & Selection"))
    assert header.split(" & ")[2:11] == PAPER_TITLES
    assert r"\scriptsize" in out and "[74.37, 82.31]" in out          # intervals in a second, smaller table
    assert "checkpoint_0000" not in out.split(r"\end{table*}")[0]         # the main table: values only
    assert "sits 3.90 points above the median file" in out               # what best-of-7 costs


def test_markdown_table_in_paper_order(affectgpt, capsys):
    rc, out, _ = report(capsys, affectgpt, "--format", "md")
    assert rc == 0
    lines = out.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Model", "Selection", *PAPER_TITLES, "Mean", "Tasks"]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:3] == ["affectgpt", "best-of-7", "78.54 [74.37, 82.31]"] and cells[6] == "81.30 [78.30, 84.37]"
    assert cells[-2:] == ["79.92", "2"] and cells[3] == "--"
    assert any(line.startswith("Scores x100") and "bootstrap interval" in line and "best-of-N" in line
               for line in lines)
    assert "### Selection: affectgpt" in out
    assert re.search(r"\| MER2023 \| 7 \| 78\.54 \| \d+\.\d\d \| 72\.55 \|", out)
    assert re.search(r"MER2023: the best-of-7 row sits \d+\.\d\d points above the median file; \d+\.\d\d points of a "
                     r"best-of-7 pick are expected from sampling noise alone\.", out)


def test_csv_one_row_per_model_and_selection(affectgpt, capsys, tmp_path):
    target = tmp_path / "table.csv"
    rc, out, err = report(capsys, affectgpt, "--format", "csv", "--paper", "--to", str(target))
    assert rc == 0 and out == "" and err.strip() == f"wrote {target}"
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["model", "selection", "published",
                             *(f"{t}{s}" for t in TASKS for s in ("", "_lo", "_hi")), "mean", "n_tasks", "flags"]
    assert {k: rows[0][k] for k in ("model", "mer2023", "mer2023_lo", "mer2023_hi", "cmumosi", "mer2024", "mean")} == \
        {"model": "affectgpt", "mer2023": "78.54", "mer2023_lo": "74.37", "mer2023_hi": "82.31", "cmumosi": "81.30",
         "mer2024": "", "mean": "79.92"}
    assert len(rows) == 20 and rows[-1]["model"] == "AffectGPT (AVT)" and rows[-1]["published"] == "1"
    assert (affectgpt / "leaderboard.csv").read_text(encoding="utf-8").startswith("model,selection,mer2023,")


def test_text_format_adds_the_selection_and_the_default_stays_the_table(affectgpt, capsys):
    rc, out, _ = report(capsys, affectgpt)
    assert rc == 0 and len(out.splitlines()) == 3 and "selection:" not in out
    rc, out, _ = report(capsys, affectgpt, "--format", "text")
    assert rc == 0 and out.splitlines()[2].split()[:4] == ["affectgpt", "best-of-7", "78.54", "81.30"]
    assert "selection: affectgpt" in out and "expected from sampling noise alone" in out


def test_reproduction_of_affectgpt(affectgpt, capsys):
    rc, out, _ = report(capsys, affectgpt, "--reproduce", "affectgpt")
    assert rc == 0
    assert "against the published row AffectGPT (AVT)" in out and "--paper-row" in out
    assert re.search(r"MER2023\s+78\.54\s+78\.54\s+0\.00\s+\[74\.37, 82\.31\]\s+equal", out)
    assert re.search(r"CMU-MOSI\s+81\.30\s+81\.30\s+0\.00\s+\[78\.30, 84\.37\]\s+equal", out)
    assert re.search(r"MER2024\s+--\s+78\.80\s+--\s+--\s+not run", out)
    assert "summary: 2 equal, 7 not run" in out
    assert "selection: best-of-7 (MER2023: checkpoint_000050_loss_0.527; CMU-MOSI: checkpoint_000040_loss_0.569)" in out
    assert "extractor: authors' extraction files" in out and "level: level1" in out
    assert re.search(r"lexicon: sha256 [0-9a-f]{64}", out) and "numpy" in out
    assert "not run: MER2024, MELD, IEMOCAP, CMU-MOSEI, SIMS, SIMS v2, OV-MERD+" in out

    rc, out, _ = report(capsys, affectgpt, "--reproduce", "AffectGPT", "--paper-row", "affectgpt (avt)",
                        "--format", "json")
    rep = json.loads(out)
    assert rc == 0 and rep["paper_row"] == "AffectGPT (AVT)"
    verdicts = {t["task"]: t["verdict"] for t in rep["tasks"]}
    assert verdicts["mer2023"] == verdicts["cmumosi"] == "equal" and verdicts["meld"] == "not run"

    rc, out, _ = report(capsys, affectgpt, "--reproduce", "affectgpt", "--paper-row", "AffectGPT (AT)",
                        "--format", "md")
    assert rc == 0 and "| MER2023 | 78.54 | 72.94 | +5.60 | [74.37, 82.31] | outside interval |" in out
    assert "| CMU-MOSI | 81.30 | 83.46 | -2.16 | [78.30, 84.37] | within interval |" in out


def test_reproduction_refusals_are_one_line(affectgpt, capsys):
    rc, out, err = report(capsys, affectgpt, "--reproduce", "affectgpt", "--paper-row", "AffectGPT (XYZ)")
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: --paper-row AffectGPT (XYZ): no such published row") and "AffectGPT (AVT)" in err
    rc, _, err = report(capsys, affectgpt, "--reproduce", "nobody")
    assert rc == 2 and len(err.splitlines()) == 1 and "models: affectgpt" in err
    rc, _, err = report(capsys, affectgpt, "--reproduce", "affectgpt", "--format", "latex")
    assert rc == 2 and "--reproduce writes text, md, json" in err


def test_html_is_handed_to_unibench_html(affectgpt, capsys, monkeypatch, tmp_path):
    seen = {}

    def render_html(data, output, report_path, plot_folder=None):
        seen.update(data=data, output=output, path=report_path)
        return report_path

    monkeypatch.setitem(sys.modules, "unibench.html", types.SimpleNamespace(render_html=render_html))
    rc, _, err = report(capsys, affectgpt, "--format", "html")
    assert rc == 0 and seen["path"] == affectgpt / "report.html" and err.strip() == f"wrote {affectgpt / 'report.html'}"
    assert seen["data"]["schema"] == "unibench-report/1"
    assert seen["data"]["rows"][0]["cells"]["mer2023"]["value"] == 78.5387          # rounded, as report_data
    rc, _, _ = report(capsys, affectgpt, "--format", "html", "--to", str(tmp_path / "r.html"))
    assert rc == 0 and seen["path"] == tmp_path / "r.html"
    monkeypatch.setitem(sys.modules, "unibench.html", None)               # not installed: one clear line
    rc, _, err = report(capsys, affectgpt, "--format", "html")
    assert rc == 2 and "unibench/html.py" in err and len(err.splitlines()) == 1


def test_damaged_and_missing_files(affectgpt, tmp_path, capsys):
    output = tmp_path / "res"
    shutil.copytree(affectgpt, output)
    task_dir = output / "affectgpt" / "mer2023"
    summary = json.loads((task_dir / "summary.json").read_text(encoding="utf-8"))
    for f in summary["files"]:
        f.pop("interval")                                   # an older summary: intervals come from the scores
    (task_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (output / "affectgpt" / "run.json").unlink()
    data = report_data(output)
    assert (data["rows"][0]["cells"]["mer2023"]["lo"], data["rows"][0]["cells"]["mer2023"]["hi"]) == (74.3693, 82.3084)
    assert data["models"]["affectgpt"]["provenance"] == {}

    (task_dir / "checkpoint_000030_loss_0.602.scores.npz").unlink()   # no per-sample scores: no selection cost
    data = report_data(output)
    files = {f["label"]: f for f in data["models"]["affectgpt"]["tasks"]["mer2023"]["files"]}
    assert data["models"]["affectgpt"]["tasks"]["mer2023"]["selection"] is None
    assert files["checkpoint_000030_loss_0.602"]["lo"] is None and files["checkpoint_000035_loss_0.597"]["lo"] > 0

    bad = task_dir / "checkpoint_000035_loss_0.597.scores.npz"
    bad.write_bytes(b"not a zip")
    rc, _, err = report(capsys, output, "--format", "md")
    assert rc == 2 and str(bad) in err and len(err.splitlines()) == 1
    bad.unlink()
    broken = task_dir / "checkpoint_000040_loss_0.569.json"
    broken.write_text('{"primary": ', encoding="utf-8")
    rc, _, err = report(capsys, output, "--format", "latex")
    assert rc == 2 and str(broken) in err and "not valid JSON" in err


# ================================================================ invented data: nine tasks, several models

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The offline demo (two models, nine tasks) plus a third model named with LaTeX's special characters."""
    output = tmp_path_factory.mktemp("demo") / "out"
    assert main(["--demo", "--output", str(output)]) == 0
    data = output / "demo-data"
    assert main(["--model", "replay", "--model-args", f"path={data / 'answers' / 'demo-modelA'},name=my_model&co",
                 "--task", "all", "--data-root", str(data / "dataset"), "--lexicon", str(data / "lexicon"),
                 "--output", str(output), "--select", "last", "--allow-count-mismatch"]) == 0
    return output


def test_nine_tasks_and_three_models(demo):
    data = report_data(demo)
    assert [(r["model"], r["selection"], r["n_tasks"]) for r in data["rows"]] == \
        [("demo-modelA", "best-of-3", 9), ("demo-modelB", "single", 9), ("my_model&co", "last", 9)]
    last = data["rows"][2]
    assert all(c["file"] == "checkpoint_000030_loss_0.655" for c in last["cells"].values())  # the last checkpoint
    assert last["flags"] == ["count-mismatch"]
    assert data["models"]["demo-modelB"]["tasks"]["mer2023"]["selection"] is None            # one file: no cost
    assert data["models"]["demo-modelA"]["tasks"]["mer2023"]["selection"]["n_files"] == 3


def test_latex_bold_per_column_and_escaped_names(demo, capsys):
    rc, out, _ = report(capsys, demo, "--format", "latex")
    assert rc == 0
    data = report_data(demo)
    main_table = out.split(r"\end{table*}")[0]
    lines = {line.split(" & ")[0]: line.rstrip(r" \\").split(" & ") for line in main_table.splitlines()
             if line.startswith(("demo-model", "my"))}
    assert set(lines) == {"demo-modelA", "demo-modelB", r"my\_model\&co"}
    for i, task in enumerate(TASKS, start=2):
        best = max(f"{r['cells'][task]['value']:.2f}" for r in data["rows"])
        for row in data["rows"]:
            cell = lines[latex_escape(row["model"])][i]
            value = f"{row['cells'][task]['value']:.2f}"
            assert cell == (rf"\textbf{{{value}}}" if value == best else value), (task, row["model"])
    assert lines["demo-modelA"][11] == r"\textbf{82.68}" and lines["demo-modelB"][11] == "66.51"
    assert latex_escape("a_b&c%d#e$f{g}h~i^j\\k") == \
        r"a\_b\&c\%d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"


def test_markdown_escapes_a_pipe_in_a_name(demo, capsys, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(demo, output, ignore=shutil.ignore_patterns("demo-data"))
    board = output / "leaderboard.csv"
    board.write_text(board.read_text(encoding="utf-8") + "hand|entered,published,60.00,,,,,,,,,60.00,1,\n",
                     encoding="utf-8")
    rc, out, _ = report(capsys, output, "--format", "md")
    assert rc == 0 and "| hand\\|entered | published | 60.00 | -- |" in out   # a row without results on disk


def test_html_report_writes_the_page_and_its_plots_as_png(affectgpt, capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="the plots extra (matplotlib) is not installed")
    page = tmp_path / "out" / "report.html"
    code, _, err = report(capsys, affectgpt, "--format", "html", "--paper", "--to", str(page))
    assert code == 0 and f"wrote {page}" in err
    html = page.read_text(encoding="utf-8")
    assert "78.54" in html and "81.30" in html and "https://" not in html
    pngs = sorted(p.name for p in (tmp_path / "out" / "report-plots").glob("*.png"))
    assert pngs == ["affectgpt-epochs.png", "affectgpt-wheels.png", "task_bars.png"]
    assert all((tmp_path / "out" / "report-plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in pngs)
