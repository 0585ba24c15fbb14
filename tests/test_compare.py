"""`run_bench compare`: paired bootstrap differences per task and over the task mean, on real replayed answers,
checked against the run's own summaries and against a naive per-resample bootstrap written here."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from unibench.cli import main as cli_main
from unibench.compare import compare_mean, holm, TaskComparison
from unibench.metrics.bootstrap import paired_replicates
from unibench.metrics.bootstrap import SampleScores, hit_scores, paired_difference, resample_counts
from unibench.results import read_summary

BEST = "checkpoint_000050_loss_0.527"     # AffectGPT's best mer2023 file (78.54)
EARLY = "checkpoint_000030_loss_0.602"    # its first checkpoint (72.55)


@pytest.fixture(scope="module")
def results(shared_data, tmp_path_factory) -> Path:
    """AffectGPT's 7 released checkpoints replayed on mer2023 and cmumosi, plus a 'limited' model: the same
    answers on the first 200 mer2023 samples only (--limit)."""
    sample = shared_data / "mer-unibench-sample"
    out = tmp_path_factory.mktemp("compare") / "res"
    common = ["--data-root", str(sample / "dataset"), "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"),
              "--output", str(out)]
    path = f"path={sample / 'outputs' / 'affectgpt'}"
    assert cli_main(["--model", "replay", "--model-args", path, "--task", "mer2023,cmumosi", *common]) == 0
    assert cli_main(["--model", "replay", "--model-args", f"{path},name=limited", "--task", "mer2023",
                     "--limit", "200", *common]) == 0
    return out


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert cli_main(["compare", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert cli_main(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


# ---------------------------------------------------------------- real data

def test_two_checkpoints_on_mer2023_match_their_summary(results, capsys):
    out = run_json(capsys, f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(results), "--task", "mer2023")
    summary = read_summary(results / "affectgpt" / "mer2023" / "summary.json")
    primary = {f.label: f.primary for f in summary.files}
    assert f"{primary[BEST] * 100:.2f}" == "78.54" and f"{primary[EARLY] * 100:.2f}" == "72.55"
    (row,) = out["tasks"]
    assert (row["task"], row["metric"], row["a_file"], row["b_file"]) == ("mer2023", "hit_rate", BEST, EARLY)
    assert row["a"] == pytest.approx(primary[BEST], abs=1e-12)
    assert row["b"] == pytest.approx(primary[EARLY], abs=1e-12)
    assert row["difference"] == pytest.approx(primary[BEST] - primary[EARLY], abs=1e-12)
    assert row["lo"] < row["difference"] < row["hi"]
    assert 0 < row["p_value"] <= 1 and row["p_holm"] == row["p_value"]      # one task: Holm changes nothing
    assert (row["n"], row["unanswered"], row["only_a"], row["only_b"]) == (411, 0, 0, 0)
    assert out["mean"]["difference"] == pytest.approx(row["difference"], abs=1e-12)  # one task: mean is it
    assert out["mean"]["p_value"] == pytest.approx(row["p_value"])
    assert out["not_compared"] == [] and "single pre-specified comparison" in out["caveat"]


def test_a_file_against_itself_differs_by_nothing(results, capsys):
    out = run_json(capsys, f"affectgpt:{BEST}", f"affectgpt:{BEST}", "--output", str(results))
    assert [r["task"] for r in out["tasks"]] == ["mer2023", "cmumosi"]
    for row in out["tasks"] + [out["mean"]]:
        assert (row["difference"], row["lo"], row["hi"], row["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_models_use_their_leaderboard_files_and_mix_with_a_file(results, capsys):
    out = run_json(capsys, "affectgpt", f"affectgpt:{EARLY}", "--output", str(results))
    by_task = {r["task"]: r for r in out["tasks"]}
    for task in ("mer2023", "cmumosi"):
        summary = read_summary(results / "affectgpt" / task / "summary.json")
        best = summary.select("best")
        assert by_task[task]["a_file"] == best.label and by_task[task]["b_file"] == EARLY
        assert by_task[task]["a"] == pytest.approx(best.primary, abs=1e-12)
    # the mean over tasks: difference of the task means, Holm over the two task p-values
    assert out["mean"]["difference"] == pytest.approx(np.mean([r["difference"] for r in out["tasks"]]), abs=1e-12)
    assert out["mean"]["lo"] < out["mean"]["difference"] < out["mean"]["hi"]
    assert [r["p_holm"] for r in out["tasks"]] == holm([r["p_value"] for r in out["tasks"]])
    last = run_json(capsys, "affectgpt", "affectgpt", "--select", "last", "--output", str(results))
    assert {r["a_file"] for r in last["tasks"]} == {"checkpoint_000060_loss_0.480"}


def test_different_sample_sets_are_paired_on_their_intersection(results, capsys):
    out = run_json(capsys, f"affectgpt:{BEST}", f"limited:{BEST}", "--output", str(results))
    (row,) = out["tasks"]
    assert (row["task"], row["n"], row["only_a"], row["only_b"]) == ("mer2023", 200, 211, 0)
    assert (row["difference"], row["p_value"]) == (0.0, 1.0)         # the same answers on the same samples
    assert out["not_compared"] == [{"task": "cmumosi", "reason": f"B (limited, answer file {BEST}) has no results"}]
    assert any("paired on the 200 both hold" in n for n in out["notes"])
    capsys.readouterr()
    assert cli_main(["compare", f"affectgpt:{BEST}", f"limited:{BEST}", "--output", str(results)]) == 0
    text = capsys.readouterr().out
    assert "paired on the 200 both hold" in text and "not compared:" in text and "cmumosi: B" in text
    assert "about 0.05 false 'significant'" in text and "Holm" in text


def test_text_and_markdown_show_x100_rows_and_the_caveat(results, capsys):
    for fmt in ("text", "md"):
        capsys.readouterr()
        assert cli_main(["compare", f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(results),
                         "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert "78.54" in text and "72.55" in text and "+5.98" in text and "mean (2 tasks)" in text
        assert "about 0.10 false 'significant' difference(s)" in text
        assert "single pre-specified comparison" in text


def test_bad_names_exit_2_with_one_line(results, capsys):
    out = str(results)
    assert "unknown model 'nope'" in run_error(capsys, "affectgpt", "nope", "--output", out)
    assert "models: affectgpt, limited" in run_error(capsys, "nope:x", "affectgpt", "--output", out)
    err = run_error(capsys, "affectgpt", "affectgpt:no_such_file", "--output", out)
    assert "no answer file 'no_such_file'" in err and EARLY in err
    assert "unknown task(s) foo" in run_error(capsys, "affectgpt", "affectgpt", "--task", "foo", "--output", out)
    assert "no results folder" in run_error(capsys, "a", "b", "--output", str(results / "missing"))
    assert "--resamples" in run_error(capsys, "affectgpt", "affectgpt", "--resamples", "0", "--output", out)


def test_missing_or_malformed_scores_say_rerun(results, tmp_path, capsys):
    copy = tmp_path / "res"
    shutil.copytree(results, copy)
    npz = copy / "affectgpt" / "mer2023" / f"{BEST}.scores.npz"
    npz.unlink()
    err = run_error(capsys, f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(copy))
    assert str(npz) in err and "rerun --task mer2023" in err
    npz.write_bytes(b"not a zip")
    err = run_error(capsys, f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(copy))
    assert str(npz) in err and "rerun --task mer2023" in err
    np.savez(npz, kind=np.array("hit"), names=np.array(["a", "b"]), answered=np.ones(2, bool), hit=np.ones(2))
    err = run_error(capsys, f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(copy))
    assert "'hit' is not five numbers per sample" in err and "rerun --task mer2023" in err
    np.savez(npz, kind=np.array("hit"), names=np.array(["a", "b"]), answered=np.ones(2, bool),
             hit=np.full((2, 5), np.inf))
    err = run_error(capsys, f"affectgpt:{BEST}", f"affectgpt:{EARLY}", "--output", str(copy))
    assert "'hit' holds values outside" in err and str(npz) in err


# ---------------------------------------------------------------- independent checks on invented data

def invented_pair(n: int, seed: int) -> tuple[SampleScores, SampleScores]:
    """Two hit-rate files on n samples: hits 0/1 per wheel, NaN where the ground truth does not map."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]
    unmapped = rng.random((n, 5)) < 0.2
    files = []
    for p in (0.7, 0.55):
        hits = (rng.random((n, 5)) < p).astype(float)
        hits[unmapped] = np.nan
        files.append(hit_scores(names, hits.tolist(), [True] * n))
    return files[0], files[1]


def naive_hit_rate(hits: np.ndarray) -> float:
    """Mean over wheels of each wheel's hit rate over its mapped samples (0 for a wheel with none)."""
    per_wheel = []
    for w in range(5):
        column = hits[:, w]
        mapped = column[~np.isnan(column)]
        per_wheel.append(mapped.mean() if len(mapped) else 0.0)
    return float(np.mean(per_wheel))


def naive_replicates(a: SampleScores, b: SampleScores, resamples: int, seed: int) -> np.ndarray:
    n = a.n
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return np.array([naive_hit_rate(a.values["hit"][idx]) - naive_hit_rate(b.values["hit"][idx]) for idx in draws])


def test_paired_difference_equals_a_naive_per_resample_loop():
    a, b = invented_pair(40, seed=1)
    resamples, seed = 300, 7
    d_star = naive_replicates(a, b, resamples, seed)
    d = naive_hit_rate(a.values["hit"]) - naive_hit_rate(b.values["hit"])
    lo, hi = np.quantile(d_star, [0.025, 0.975])
    p = (1 + np.sum(np.abs(d_star - d_star.mean()) >= abs(d) - 1e-12)) / (1 + resamples)
    got = paired_difference(a, b, "hit_rate", resamples, seed)
    assert got.difference == pytest.approx(d, abs=1e-12)
    assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got.p_value == pytest.approx(p, abs=1e-12) and got.n == 40
    assert paired_replicates(a, b, "hit_rate", resamples, seed)[2] == pytest.approx(d_star, abs=1e-12)


def test_mean_over_tasks_averages_each_tasks_own_replicates():
    """Two disjoint tasks of different sizes, each resampled with its own counts; the mean's replicates are
    the average of the per-task replicate differences, its p-value the shifted null of paired_difference."""
    resamples, seed = 200, 3
    rows = []
    for task, n in (("mer2023", 30), ("meld", 50)):
        a, b = invented_pair(n, seed=n)
        pd = paired_difference(a, b, "hit_rate", resamples, seed)
        reps = naive_replicates(a, b, resamples, seed)
        rows.append(TaskComparison(task, "hit_rate", "a", "b", pd.a, pd.b, pd.difference, pd.lo, pd.hi,
                                   pd.p_value, pd.n, 0, 0, 0, replicates=reps))
    mean = compare_mean(rows)
    d_star = (rows[0].replicates + rows[1].replicates) / 2
    d = (rows[0].difference + rows[1].difference) / 2
    assert mean.difference == pytest.approx(d, abs=1e-12)
    assert (mean.lo, mean.hi) == tuple(pytest.approx(v, abs=1e-12) for v in np.quantile(d_star, [0.025, 0.975]))
    extreme = np.sum(np.abs(d_star - d_star.mean()) >= abs(d) - 1e-12)
    assert mean.p_value == pytest.approx((1 + extreme) / (1 + resamples))
    # the counts behind each task's replicates are those resample_counts gives for its size
    assert resample_counts(30, resamples, seed).sum(axis=1).tolist() == [30.0] * resamples


def test_holm_against_a_hand_computed_case():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]                      # capped at 1, then kept monotone
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_unanswered_samples_are_left_out_and_counted():
    from unibench.compare import _NotCompared, compare_task

    a, b = invented_pair(20, seed=5)
    b.answered[[2, 9, 11]] = False
    row = compare_task("mer2023", "a", "b", a, b, 100, 0)
    assert (row.n, row.unanswered, row.only_a, row.only_b) == (17, 3, 0, 0)
    keep = np.array([i for i in range(20) if i not in (2, 9, 11)])
    assert row.difference == pytest.approx(naive_hit_rate(a.values["hit"][keep]) - naive_hit_rate(b.values["hit"][keep]))
    b.answered[:] = False
    with pytest.raises(_NotCompared, match="no sample that both answered"):
        compare_task("mer2023", "a", "b", a, b, 100, 0)
