"""The leaderboard contract (issue 2, item 6) on a toy benchmark whose scores are worked out by hand."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from fixtures import (CKPT_A, CKPT_B, LAYOUT, TOY_A, TOY_B, TOY_BEST, TOY_MEANS, build_toy_bench, toy_counts,  # noqa: F401
                      write_run, toy_answers)
from unibench.cli import main
from unibench.results import (LEADERBOARD_COLUMNS, TaskSummary, leaderboard_row, read_paper_rows, select_file, selection_label,
                              update_leaderboard)

NINE = list(LAYOUT)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_toy_bench(tmp_path_factory.mktemp("toy"))


def _run(bench, out: Path, *extra: str, tasks: str = "all", model_args: str = "") -> int:
    args = f"path={bench['model']}" + (f",{model_args}" if model_args else "")
    return main(["--model", "replay", "--model-args", args, "--task", tasks, "--data-root", str(bench["data"]),
                 "--lexicon", str(bench["lexicon"]), "--output", str(out), *extra])


def _read(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "leaderboard.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _row(rows, model="toy-model", selection="best-of-2"):
    found = [r for r in rows if r["model"] == model and r["selection"] == selection]
    assert len(found) == 1, rows
    return found[0]


def test_columns_values_and_best_of_n(bench, tmp_path, toy_counts, capsys):
    assert _run(bench, tmp_path) == 0
    header, rows = _read(tmp_path)
    assert header == ["model", "selection", *NINE, "mean", "n_tasks", "flags"] == LEADERBOARD_COLUMNS
    row = _row(rows)
    assert {t: row[t] for t in NINE} == TOY_BEST
    assert row["mean"] == TOY_MEANS["best"] and row["n_tasks"] == "9" and row["flags"] == ""
    assert all(re.fullmatch(r"\d+\.\d\d", row[c]) for c in [*NINE, "mean"])       # x100, two decimals
    out = capsys.readouterr().out
    assert re.search(r"toy-model\s+best-of-2\s+75\.00\s+75\.00", out)             # printed too
    # the OV tie goes to the first file, as np.argmax does; sentiment's best is the second file
    ov = json.loads((tmp_path / "toy-model" / "ovmerdplus" / "summary.json").read_text(encoding="utf-8"))
    assert ov["best"] == CKPT_A and ov["last"] == CKPT_B
    sims = json.loads((tmp_path / "toy-model" / "sims" / "summary.json").read_text(encoding="utf-8"))
    assert sims["best"] == CKPT_B and [round(f["primary"] * 100, 2) for f in sims["files"]] == [73.33, 100.0]


def test_select_last_and_a_file_give_their_own_rows(bench, tmp_path, toy_counts):
    assert _run(bench, tmp_path) == 0
    assert _run(bench, tmp_path, "--select", "last") == 0
    assert _run(bench, tmp_path, "--select", CKPT_A) == 0
    _, rows = _read(tmp_path)
    assert [(r["model"], r["selection"]) for r in rows] == [
        ("toy-model", "best-of-2"), ("toy-model", f"file:{CKPT_A}"), ("toy-model", "last")]
    last, fixed = _row(rows, selection="last"), _row(rows, selection=f"file:{CKPT_A}")
    assert {t: last[t] for t in NINE} == TOY_B and last["mean"] == TOY_MEANS["last"]
    assert {t: fixed[t] for t in NINE} == TOY_A and fixed["mean"] == TOY_MEANS["A"]
    assert _row(rows)["mean"] == TOY_MEANS["best"]              # the best-of-N row is kept


def test_select_by_file_name_with_suffix_and_unknown_file(bench, tmp_path, toy_counts, capsys):
    assert _run(bench, tmp_path, "--select", f"{CKPT_B}.npz", tasks="mer2023") == 0
    _, rows = _read(tmp_path)
    assert _row(rows, selection=f"file:{CKPT_B}.npz")["mer2023"] == "50.00"
    capsys.readouterr()
    assert _run(bench, tmp_path, "--select", "checkpoint_999", tasks="mer2023") == 2
    err = capsys.readouterr().err
    assert err == (f"error: [mer2023] --select checkpoint_999: no such answer file (files: {CKPT_A}, {CKPT_B})\n")


def test_tasks_not_run_are_empty_and_the_mean_is_over_present_tasks(bench, tmp_path, toy_counts):
    assert _run(bench, tmp_path, tasks="mer2023,cmumosi") == 0
    row = _row(_read(tmp_path)[1])
    assert (row["mer2023"], row["cmumosi"]) == ("75.00", "100.00")
    assert all(row[t] == "" for t in NINE if t not in ("mer2023", "cmumosi"))
    assert row["mean"] == "87.50" and row["n_tasks"] == "2"
    # running another task later accumulates into the same row
    assert _run(bench, tmp_path, tasks="ovmerdplus") == 0
    rows = _read(tmp_path)[1]
    assert len(rows) == 1
    row = rows[0]
    assert (row["mer2023"], row["cmumosi"], row["ovmerdplus"], row["n_tasks"]) == ("75.00", "100.00", "85.71", "3")
    assert row["mean"] == f"{(75 + 100 + 600 / 7) / 3:.2f}" == "86.90"


def test_rerun_replaces_the_row(bench, tmp_path, toy_counts):
    assert _run(bench, tmp_path, tasks="mer2023") == 0
    assert _run(bench, tmp_path, tasks="mer2023") == 0
    assert len(_read(tmp_path)[1]) == 1
    # new answers for the same model and selection: the row changes, no second row appears
    model = tmp_path / "toy-model"
    write_run(model, "mer2023", "run_1", {CKPT_A: toy_answers("mer2023", "B"), CKPT_B: toy_answers("mer2023", "B")})
    import shutil

    shutil.copytree(bench["data"], tmp_path / "data")
    assert main(["--model", "replay", "--model-args", f"path={model}", "--task", "mer2023",
                 "--data-root", str(tmp_path / "data"), "--lexicon", str(bench["lexicon"]),
                 "--output", str(tmp_path)]) == 0
    rows = _read(tmp_path)[1]
    assert len(rows) == 1 and rows[0]["mer2023"] == "50.00"


def test_other_models_rows_are_kept_and_sorted(bench, tmp_path, toy_counts):
    assert _run(bench, tmp_path, tasks="mer2023", model_args="name=zeta") == 0
    assert _run(bench, tmp_path, tasks="mer2023", model_args="name=alpha") == 0
    assert _run(bench, tmp_path, tasks="mer2023", model_args="name=zeta") == 0
    rows = _read(tmp_path)[1]
    assert [r["model"] for r in rows] == ["alpha", "zeta"]


def test_flags_column(bench, tmp_path):
    # without the toy counts the splits are smaller than the protocol's: allowed, and the row says so
    assert _run(bench, tmp_path, "--allow-count-mismatch", tasks="mer2023,sims") == 0
    row = _row(_read(tmp_path)[1])
    assert row["flags"] == "count-mismatch" and row["mer2023"] == "75.00"


def test_report_prints_the_leaderboard_and_the_published_rows(bench, tmp_path, toy_counts, capsys):
    assert _run(bench, tmp_path, tasks="mer2023") == 0
    capsys.readouterr()
    assert main(["report", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "selection", "mer2023"]
    assert len(out) == 3 and out[2].split()[:3] == ["toy-model", "best-of-2", "75.00"] and out[2].endswith("*")
    assert main(["report", "--output", str(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"AffectGPT \(AVT\)\s+published\s+78\.54\s+78\.80\s+55\.65\s+60\.54\s+81\.30\s+80\.90\s+88\.49"
                     r"\s+86\.18\s+62\.52\s+74\.77\s+9", out)
    lines = out.splitlines()
    assert len(lines) == 2 + 19 + 1
    assert lines[-1].split()[:3] == ["toy-model", "best-of-2", "75.00"]


def test_report_without_a_leaderboard(tmp_path, capsys):
    assert main(["report", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no leaderboard at {tmp_path / 'leaderboard.csv'}: run a model first\n"
    assert main(["report", "--output", str(tmp_path), "--paper"]) == 0
    assert "published" in capsys.readouterr().out


def test_run_with_paper_prints_published_rows_beside_yours(bench, tmp_path, toy_counts, capsys):
    assert _run(bench, tmp_path, "--paper", tasks="mer2023") == 0
    out = capsys.readouterr().out
    assert "OneLLM (AT)" in out and re.search(r"toy-model\s+best-of-2\s+75\.00", out)


def test_paper_rows():
    rows = read_paper_rows()
    assert len(rows) == 19
    affect = [r for r in rows if r["model"].startswith("AffectGPT")]
    assert affect and affect[-1]["mean"] == "74.77" and affect[-1]["mer2023"] == "78.54"
    assert all(r["selection"] == "published" and r["n_tasks"] == "9" for r in rows)


def test_paper_table_is_the_shipped_reference(shared_data):
    from unibench.results import paper_table_path

    shared = shared_data.parent / "spec" / "paper_table.csv"
    assert paper_table_path().read_text(encoding="utf-8") == shared.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the pieces, on summaries

def _summary(values: list[float], flags=None) -> TaskSummary:
    return TaskSummary.from_json({"files": [{"label": f"f{i}", "order": i, "primary": v, "flags": []}
                                            for i, v in enumerate(values)],
                                  "flags": flags or [], "lexicon_sha256": "abc"})


def test_select_file_rules():
    s = _summary([0.5, 0.7, 0.7, 0.6])
    assert select_file(s, "best").label == "f1"          # first of the tied best
    assert select_file(s, "last").label == "f3"
    assert select_file(s, "file:f2").label == "f2"
    assert select_file(s, "file:f2.npz").label == "f2"
    assert select_file(s, "file:nope") is None
    assert select_file(TaskSummary("t", "m", "hit_rate", "level1", 0, [], "", ""), "best") is None


def test_summary_json_round_trip():
    data = {"task": "mer2023", "model": "m", "primary_metric": "hit_rate", "level": "level1", "n_test": 4,
            "n_files": 2, "files": [{"label": "a", "source": "a.npz", "order": 0, "primary": 0.5, "metrics": {},
                                     "flags": [], "extraction": {"ov": "", "sentiment": ""}},
                                    {"label": "b", "source": "b.npz", "order": 1, "primary": 0.75, "metrics": {},
                                     "flags": ["x"], "extraction": {"ov": "", "sentiment": ""}}],
            "best": "b", "last": "b", "lexicon_sha256": "s", "task_fingerprint": "f", "flags": []}
    assert TaskSummary.from_json(data).to_json() == data


def test_selection_labels():
    assert selection_label("best", [_summary([1, 2]), _summary([1, 2])]) == "best-of-2"
    assert selection_label("best", [_summary([1, 2]), _summary([1, 2, 3])]) == "best-of-2..3"
    assert selection_label("best", [_summary([1])]) == "single"
    assert selection_label("last", [_summary([1, 2])]) == "last"
    assert selection_label("file:x", []) == "file:x"


def test_leaderboard_row_from_summaries():
    row = leaderboard_row("m", {"mer2023": _summary([0.12345, 0.5]), "sims": _summary([0.66666], ["count-mismatch"])},
                          "best")
    assert (row["mer2023"], row["sims"], row["meld"]) == ("50.00", "66.67", "")
    assert row["mean"] == f"{(50 + 66.666) / 2:.2f}" and row["n_tasks"] == "2" and row["flags"] == "count-mismatch"
    mixed = _summary([0.4])
    mixed.lexicon_sha256 = "def"
    assert "mixed-lexicons" in leaderboard_row("m", {"mer2023": _summary([0.5]), "meld": mixed}, "best")["flags"]
    empty = leaderboard_row("m", {}, "best")
    assert empty["mean"] == "" and empty["n_tasks"] == "0"


def test_leaderboard_is_rebuilt_from_disk(bench, tmp_path, toy_counts):
    assert _run(bench, tmp_path, tasks="meld,simsv2") == 0
    before = _read(tmp_path)[1]
    (tmp_path / "leaderboard.csv").unlink()
    update_leaderboard(tmp_path, "toy-model", "best")
    assert _read(tmp_path)[1] == before
