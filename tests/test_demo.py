"""`run_bench --demo`: the bundled invented suite, materialised in the real layouts, end to end."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from unibench import demo
from unibench.cli import main
from unibench.tasks import TASKS, get_task, load_task

REPO = Path(__file__).resolve().parent.parent

# The demo's leaderboard, as the invented suite gives it (a regression check on the whole scoring path).
EXPECTED_A = {"mer2023": "76.00", "mer2024": "76.56", "meld": "82.33", "iemocapfour": "78.89", "cmumosi": "90.75",
              "cmumosei": "92.21", "sims": "79.63", "simsv2": "90.56", "ovmerdplus": "77.15", "mean": "82.68"}
EXPECTED_B = {"mer2023": "59.00", "mer2024": "78.78", "meld": "70.00", "iemocapfour": "70.00", "cmumosi": "44.55",
              "cmumosei": "68.08", "sims": "87.41", "simsv2": "64.24", "ovmerdplus": "56.54", "mean": "66.51"}


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {(r["model"], r["selection"]): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run shared by the tests below: (output folder, stdout, stderr, seconds)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    start = time.perf_counter()
    so, se = io.StringIO(), io.StringIO()
    with redirect_stdout(so), redirect_stderr(se):   # capsys is function-scoped; the demo keeps its own cache
        rc = main(["--demo", "--output", str(out)])
    assert rc == 0, se.getvalue()
    return out, so.getvalue(), se.getvalue(), time.perf_counter() - start


def test_demo_leaderboard(demo_run):
    out, stdout, stderr, seconds = demo_run
    rows = _rows(out / "leaderboard.csv")
    assert set(rows) == {("demo-modelA", "best-of-3"), ("demo-modelB", "single")}
    a, b = rows[("demo-modelA", "best-of-3")], rows[("demo-modelB", "single")]
    assert {k: a[k] for k in EXPECTED_A} == EXPECTED_A
    assert {k: b[k] for k in EXPECTED_B} == EXPECTED_B
    assert a["n_tasks"] == b["n_tasks"] == "9"
    assert a["flags"] == "" and b["flags"] == "missing-answers:1"   # one unanswered sample, on purpose
    assert seconds < 15


def test_demo_output_says_it_is_a_demo(demo_run):
    out, stdout, stderr, _ = demo_run
    assert demo.BANNER in stdout and "NOT MER-UniBench results" in stdout
    assert "demo-modelA  best-of-3" in stdout
    assert f"leaderboard: {out / 'leaderboard.csv'}" in stdout
    assert "[ovmerdplus] 1 answer file(s)" in stderr
    assert "1 sentiment answer(s) are not positive/negative/neutral" in stderr    # counted, not silent
    run_json = json.loads((out / "demo-modelA" / "run.json").read_text(encoding="utf-8"))
    assert run_json["demo"] == "invented data, not MER-UniBench results"


def test_demo_writes_the_normal_results(demo_run):
    out = demo_run[0]
    summary = json.loads((out / "demo-modelA" / "cmumosi" / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_files"] == 3 and summary["best"] == "checkpoint_000030_loss_0.655"
    detail = json.loads((out / "demo-modelA" / "cmumosi" / "checkpoint_000030_loss_0.655.json")
                        .read_text(encoding="utf-8"))
    assert set(detail["metrics"]) == {"waf", "accuracy"}
    assert detail["extraction"]["sentiment"].endswith("checkpoint_000030_loss_0.655-openset-sentiment.npz")
    ov = json.loads((out / "demo-modelB" / "ovmerdplus" / "ovmerdplus.json").read_text(encoding="utf-8"))
    assert set(ov["per_wheel"]) == {f"wheel{w}" for w in range(1, 6)}
    # --log-samples best (default): the per-sample CSV of the answer file the leaderboard row uses, only
    mer = json.loads((out / "demo-modelA" / "mer2023" / "summary.json").read_text(encoding="utf-8"))
    assert [p.name for p in (out / "demo-modelA" / "mer2023").glob("*.samples.csv")] == [f"{mer['best']}.samples.csv"]


def test_materialised_layout_is_the_real_one(demo_run):
    data = demo_run[0] / "demo-data"
    suite = demo.load_suite()
    for tid, spec in TASKS.items():
        task = load_task(spec, data / "dataset", check_count=False)
        assert len(task.gt) == len(suite["tasks"][tid]["samples"]), tid
        assert set(task.subtitles()) == set(task.gt)
    iemo = load_task(get_task("iemocapfour"), data / "dataset", check_count=False)
    assert all(n[4] == "5" for n in iemo.gt) and not any(n.startswith("Ses01") for n in iemo.gt)
    assert set(iemo.gt.values()) <= {"happy", "sad", "neutral", "anger"}
    ov = load_task(get_task("ovmerdplus"), data / "dataset", check_count=False)
    assert ["neutral"] in ov.gt.values()                         # an empty list in ovlabel.csv
    run_dir = data / "answers" / "demo-modelA" / "results-sims" / "demo_run_20250101"
    names = sorted(p.name for p in run_dir.iterdir())
    assert names[:3] == ["checkpoint_000010_loss_0.912-openset-sentiment.npz",
                         "checkpoint_000010_loss_0.912-openset.npz", "checkpoint_000010_loss_0.912.npz"]
    assert len(names) == 9
    b = data / "answers" / "demo-modelB"
    assert (b / "mer2023.jsonl").is_file() and (b / "mer2023-openset.npz").is_file()
    assert (b / "cmumosi-openset-sentiment.npz").is_file() and not (b / "mer2023-openset-sentiment.npz").exists()
    assert sorted(p.name for p in (data / "lexicon").iterdir()) == sorted(
        ["format.csv", "synonym.xlsx"] + [f"wheel{w}.xlsx" for w in range(1, 6)])


def test_demo_lexicon_has_the_published_kind_of_artefacts(demo_run):
    from unibench.metrics.lexicon import load_lexicon

    lex = load_lexicon(demo_run[0] / "demo-data" / "lexicon", use_cache=False)
    assert len(lex.raw_mapping) > 30
    assert [lex.map_label("neutral", w) for w in range(1, 6)] == [""] * 5
    assert lex.map_label("fear", 2) == "happy" and lex.map_label("fear", 1) == "scared"
    assert lex.map_label("surprise", 5) == "" and lex.map_label("surprise", 1) == "surprised"


def test_materialise_only_when_the_suite_changes(tmp_path, monkeypatch):
    dest = tmp_path / "demo-data"
    demo.materialise(dest)
    assert (dest / demo.STAMP).read_text(encoding="utf-8").strip() == demo.suite_hash()

    def boom(*a, **k):
        raise AssertionError("rewrote the demo data although the suite did not change")

    monkeypatch.setattr(demo, "write_dataset", boom)
    demo.materialise(dest)                                       # stamp matches: nothing is written
    monkeypatch.undo()

    changed = tmp_path / "suite.json"
    suite = demo.load_suite()
    first = suite["tasks"]["mer2023"]["samples"][0]
    first[1] = "sad" if first[1] != "sad" else "happy"
    changed.write_text(json.dumps(suite), encoding="utf-8")
    (dest / "stale-file").write_text("x", encoding="utf-8")
    demo.materialise(dest, suite_path=changed)
    assert (dest / demo.STAMP).read_text(encoding="utf-8").strip() == demo.suite_hash(changed)
    assert not (dest / "stale-file").exists()                     # rebuilt from scratch
    gt = load_task(get_task("mer2023"), dest / "dataset", check_count=False).gt
    assert gt[first[0]] == first[1]
    assert not list(tmp_path.glob("demo-data.tmp*"))


def test_demo_default_output_is_results_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--demo", "--task", "mer2023,cmumosi"]) == 0
    rows = _rows(tmp_path / "results" / "demo" / "leaderboard.csv")
    row = rows[("demo-modelA", "best-of-3")]
    assert (row["mer2023"], row["cmumosi"], row["meld"], row["n_tasks"]) == ("76.00", "90.75", "", "2")
    assert "NOT MER-UniBench results" in capsys.readouterr().out
    assert not (tmp_path / "results" / "leaderboard.csv").exists()


def test_demo_rejects_what_it_cannot_do(tmp_path, capsys):
    rc = main(["--demo", "--task", "ovmerd", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: the demo suite has no task 'ovmerd'") and "Traceback" not in err
    rc = main(["--demo", "--select", "checkpoint_000010_loss_0.912", "--output", str(tmp_path)])
    assert rc == 2 and capsys.readouterr().err == ("error: --demo takes --select best or last, "
                                                   "not 'checkpoint_000010_loss_0.912'\n")
    assert not (tmp_path / "leaderboard.csv").exists()


def test_demo_select_last(tmp_path, capsys):
    assert main(["--demo", "--select", "last", "--task", "mer2023,meld", "--output", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "leaderboard.csv")
    assert set(rows) == {("demo-modelA", "last"), ("demo-modelB", "last")}
    assert rows[("demo-modelA", "last")]["mer2023"] != EXPECTED_A["mer2023"]      # checkpoint 30, not the best


def test_demo_as_a_user_runs_it(tmp_path):
    env = {**os.environ, "UNIBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "run_bench.py"), "--demo", "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert demo.BANNER in proc.stdout and "Traceback" not in proc.stderr
    assert _rows(tmp_path / "o" / "leaderboard.csv")[("demo-modelA", "best-of-3")]["mean"] == EXPECTED_A["mean"]
