"""--log-samples best|all|none: per-sample CSVs on demand; the scores never depend on it."""
from __future__ import annotations

import json

import pytest

from fixtures import CKPT_A, CKPT_B, build_toy_bench, toy_counts  # noqa: F401  (fixture)
from unibench.cli import main


def _run(bench, out, *extra):
    rc = main(["--model", "replay", "--model-args", f"path={bench['model']}", "--task", "mer2023,cmumosi,ovmerdplus",
               "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]), "--output", str(out),
               "--no-progress", *extra])
    assert rc == 0


def _results(out):
    """Every result file except the per-sample CSVs, and the leaderboard."""
    files = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in sorted(out.rglob("*.json"))
             if p.name != "run.json"}
    return files, (out / "leaderboard.csv").read_text(encoding="utf-8")


def _csvs(out):
    return {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in sorted(out.rglob("*.samples.csv"))}


@pytest.fixture
def bench(tmp_path, toy_counts):
    return build_toy_bench(tmp_path, tasks=("mer2023", "cmumosi", "ovmerdplus"))


def test_best_logs_the_leaderboard_file_of_each_task_and_scores_stay_the_same(bench, tmp_path, capsys):
    _run(bench, tmp_path / "all", "--log-samples", "all")
    _run(bench, tmp_path / "best")
    _run(bench, tmp_path / "none", "--log-samples", "none")
    assert _results(tmp_path / "all") == _results(tmp_path / "best") == _results(tmp_path / "none")
    every, best = _csvs(tmp_path / "all"), _csvs(tmp_path / "best")
    assert len(every) == 6 and not _csvs(tmp_path / "none")  # two answer files per task
    for task in ("mer2023", "cmumosi", "ovmerdplus"):
        summary = json.loads((tmp_path / "best" / "toy-model" / task / "summary.json").read_text(encoding="utf-8"))
        name = f"toy-model/{task}/{summary['best']}.samples.csv"
        assert [k for k in best if k.startswith(f"toy-model/{task}/")] == [name]
        assert best[name] == every[name]  # the same rows as when every file is logged


def test_select_last_logs_the_last_file_and_no_stale_csv_is_left(bench, tmp_path, capsys):
    out = tmp_path / "out"
    _run(bench, out, "--log-samples", "all")
    _run(bench, out, "--select", "last")
    assert sorted(p.name for p in (out / "toy-model" / "mer2023").glob("*.samples.csv")) == \
        [f"{CKPT_B}.samples.csv"]


def test_replay_never_imports_heavy_libraries(bench, tmp_path):
    """A replay (warm lexicon cache) stays off pandas, scikit-learn, torch and transformers: they cost more than
    the whole run. Checked in a fresh interpreter after a full run_bench replay."""
    import subprocess
    import sys

    cache = tmp_path / "lexcache"
    argv = ["--model", "replay", "--model-args", f"path={bench['model']}", "--task", "mer2023,cmumosi",
            "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]), "--lexicon-cache", str(cache),
            "--output", str(tmp_path / "out"), "--no-progress", "--allow-count-mismatch"]
    code = ("import sys; from unibench.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('pandas', 'sklearn', 'torch', 'transformers', 'scipy') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True)  # fills the cache
    out = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True).stdout
    assert "HEAVY []" in out
