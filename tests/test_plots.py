"""Report plots: each function returns a PNG of a sensible size, from real results and invented dicts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from report_fixtures import build_report_data, closed_set_summary, replay_affectgpt

pytest.importorskip("matplotlib")

from unibench import plots  # noqa: E402
from unibench.errors import MissingExtraError, UserError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    assert png[:8] == PNG
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def assert_png(png: bytes, min_w: int = 300, min_h: int = 150, max_bytes: int = 400_000) -> None:
    assert isinstance(png, bytes) and png.startswith(PNG)
    w, h = png_size(png)
    assert min_w <= w <= 3000 and min_h <= h <= 3000, (w, h)
    assert 5_000 < len(png) < max_bytes


@pytest.fixture(scope="module")
def affectgpt(shared_data, tmp_path_factory):
    """AffectGPT's seven released checkpoints on MER2023 and CMU-MOSI, with the published rows."""
    out = replay_affectgpt(shared_data, tmp_path_factory.mktemp("res"))
    return out, build_report_data(out, paper=True)


def invented() -> dict:
    """Two models, two tasks, three files each; one sentiment task (no wheels)."""
    def files(base):
        return [{"label": f"checkpoint_0000{10 * (i + 1)}_loss_0.{9 - i}", "order": i, "value": base + i,
                 "lo": base + i - 4, "hi": base + i + 4, "flags": [],
                 "per_wheel": {f"wheel{w}": base + i + w - 3 for w in range(1, 6)}, "extraction": {}}
                for i in range(3)]
    tasks = [{"id": "mer2023", "title": "MER2023", "metric": "hit_rate", "family": "basic"},
             {"id": "cmumosi", "title": "CMU-MOSI", "metric": "waf", "family": "sentiment"}]
    models = {}
    for name, base in (("model-a", 60.0), ("model-b", 70.0)):
        sentiment = [dict(f, per_wheel={}) for f in files(base + 5)]
        models[name] = {"folder": name, "provenance": {}, "tasks": {
            "mer2023": {"metric": "hit_rate", "selected": files(base)[2]["label"], "files": files(base),
                        "closed_set": None, "samples_csv": None},
            "cmumosi": {"metric": "waf", "selected": sentiment[2]["label"], "files": sentiment,
                        "closed_set": None, "samples_csv": None}}}
    rows = [{"model": m, "selection": "best-of-3", "published": False, "flags": [], "mean": 0, "n_tasks": 2,
             "cells": {t: {"value": v["files"][2]["value"], "lo": v["files"][2]["lo"], "hi": v["files"][2]["hi"]}
                       for t, v in info["tasks"].items()}} for m, info in models.items()]
    rows.append({"model": "Paper (AVT)", "selection": "published", "published": True, "flags": [], "mean": 50,
                 "n_tasks": 2, "cells": {"mer2023": {"value": 50.0, "lo": None, "hi": None},
                                         "cmumosi": {"value": 55.0, "lo": None, "hi": None}}})
    return {"tasks": tasks, "rows": rows, "models": models}


def test_task_bars_on_real_results_with_published_rows(affectgpt):
    _, data = affectgpt
    assert [r["cells"]["mer2023"]["value"] for r in data["rows"] if r["model"] == "affectgpt"] == [78.54]
    assert_png(plots.task_bars(data))


def test_metric_by_epoch_on_the_seven_checkpoints(affectgpt):
    _, data = affectgpt
    assert plots.multi_file_tasks(data, "affectgpt") == ["mer2023", "cmumosi"]
    png = plots.metric_by_epoch(data, "affectgpt")
    assert_png(png, min_w=800)  # two panels side by side
    assert plots.metric_by_epoch(data, "affectgpt") == png  # the same data gives the same bytes


def test_wheel_heatmap_on_real_results_skips_the_sentiment_task(affectgpt):
    _, data = affectgpt
    assert_png(plots.wheel_heatmap(data, "affectgpt"))


def test_write_report_plots_writes_every_applicable_plot(affectgpt, tmp_path):
    _, data = affectgpt
    written = plots.write_report_plots(data, tmp_path / "report-plots")
    assert sorted(written) == ["affectgpt-epochs", "affectgpt-wheels", "task_bars"]
    for name, path in written.items():
        assert path == tmp_path / "report-plots" / f"{name}.png"
        assert_png(path.read_bytes())


def test_invented_two_models():
    data = invented()
    assert_png(plots.task_bars(data))
    assert_png(plots.metric_by_epoch(data, "model-b"))
    assert_png(plots.wheel_heatmap(data, "model-a"))
    with pytest.raises(UserError, match="no model 'nobody'"):
        plots.wheel_heatmap(data, "nobody")


def test_single_file_models_have_no_epoch_plot():
    data = invented()
    for entry in data["models"]["model-a"]["tasks"].values():
        entry["files"] = entry["files"][-1:]
    with pytest.raises(UserError, match="one answer file per task"):
        plots.metric_by_epoch(data, "model-a")
    assert "model-a-epochs" not in plots.report_plots(data)
    assert "model-b-epochs" in plots.report_plots(data)


def test_confusion_matrix_and_its_shape_check():
    summary = closed_set_summary()
    assert_png(plots.confusion_matrix(summary, "model · MER2023: closed set"))
    summary["confusion"] = [row[:-1] for row in summary["confusion"]]  # no 'no class' column
    with pytest.raises(UserError, match="6 x 7"):
        plots.confusion_matrix(summary, "bad")


def test_rank_agreement_heatmap():
    names = ["paper protocol", "level 2", "lexicon 2024", "last checkpoint"]
    matrix = [[1.0, 0.8, 0.6, -0.2], [0.8, 1.0, 0.5, 0.0], [0.6, 0.5, 1.0, 0.3], [-0.2, 0.0, 0.3, 1.0]]
    assert_png(plots.rank_agreement(names, matrix, "Rank agreement"))
    with pytest.raises(UserError, match="expected 4 x 4"):
        plots.rank_agreement(names, matrix[:3], "bad")


def test_short_labels():
    assert plots.short_labels(["checkpoint_000030_loss_0.602", "checkpoint_000035_loss_0.597"]) == \
        (["30", "35"], "checkpoint")
    assert plots.short_labels(["run-epoch1-final", "run-epoch2-final"]) == (["1", "2"], "answer file")
    ticks, _ = plots.short_labels(["a" * 40, "b" * 40])
    assert all(len(t) <= 14 for t in ticks)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: every import of it raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'mer-unibench\[plots\]'"):
        plots.rank_agreement(["a"], [[1.0]], "x")


def test_plots_module_does_not_import_matplotlib_at_import_time():
    code = "import sys, unibench.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
