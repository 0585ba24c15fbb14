"""Bootstrap intervals: the vectorised replicates equal a plain per-resample loop that recomputes the score
with the scorers themselves, and the intervals of a run land in the per-file JSON and the summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unibench.metrics import bootstrap as bs
from unibench.metrics.scores import weighted_f1

RESAMPLES, SEED = 200, 7


def naive_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _mean_or_zero(values):
    return sum(values) / len(values) if values else 0.0


def naive_hit_rate(hit: np.ndarray) -> float:
    """Per wheel the mean over samples whose gt maps (not NaN), then the mean over wheels: the scorer's rule."""
    return _mean_or_zero([_mean_or_zero([v for v in hit[:, w] if not np.isnan(v)]) for w in range(5)])


def naive_ov(p: np.ndarray, r: np.ndarray) -> float:
    fs = []
    for w in range(5):
        ps = [v for v in p[:, w] if not np.isnan(v)]
        rs = [v for v in r[:, w] if not np.isnan(v)]
        P, R = _mean_or_zero(ps), _mean_or_zero(rs)
        fs.append(2 * P * R / (P + R) if P + R else 0.0)
    return _mean_or_zero(fs)


def naive_waf(kept, t, p) -> float:
    return weighted_f1([bool(x) for x, k in zip(t, kept) if k], [bool(x) for x, k in zip(p, kept) if k])


@pytest.fixture
def rng():
    return np.random.default_rng(123)


def test_hit_rate_replicates_equal_a_loop_over_resamples(rng):
    n = 57
    hit = rng.integers(0, 2, size=(n, 5)).astype(float)
    hit[rng.random((n, 5)) < 0.2] = np.nan              # gt maps to nothing on that wheel
    scores = bs.hit_scores([f"s{i}" for i in range(n)], hit.tolist(), [True] * n)
    assert bs.point_estimates(scores)["hit_rate"] == pytest.approx(naive_hit_rate(hit), abs=1e-12)
    reps = bs.replicates(scores, RESAMPLES, SEED)["hit_rate"]
    loop = [naive_hit_rate(hit[idx]) for idx in naive_indices(n)]
    np.testing.assert_allclose(reps, loop, atol=1e-12)


def test_ov_f_comes_from_resampled_mean_precision_and_recall(rng):
    n = 40
    p, r = rng.random((n, 5)), rng.random((n, 5))
    p[:3], r[:3] = np.nan, np.nan
    scores = bs.ov_sample_scores([f"s{i}" for i in range(n)], p.tolist(), r.tolist(), [True] * n)
    reps = bs.replicates(scores, RESAMPLES, SEED)
    loop = [naive_ov(p[idx], r[idx]) for idx in naive_indices(n)]
    np.testing.assert_allclose(reps["fscore"], loop, atol=1e-12)
    # not the mean of per-sample F values
    per_sample_f = np.nanmean(np.where(p + r > 0, 2 * p * r / (p + r), 0.0))
    assert abs(bs.point_estimates(scores)["fscore"] - per_sample_f) > 1e-3


def test_waf_replicates_equal_sklearn_on_each_resample(rng):
    from sklearn.metrics import accuracy_score, f1_score

    n = 80
    kept = rng.random(n) > 0.15
    t, p = rng.random(n) > 0.5, rng.random(n) > 0.4
    scores = bs.sentiment_sample_scores([f"s{i}" for i in range(n)], kept.tolist(), t.tolist(), p.tolist(), [True] * n)
    reps = bs.replicates(scores, RESAMPLES, SEED)
    for b, idx in enumerate(naive_indices(n)):
        k = kept[idx]
        assert reps["waf"][b] == pytest.approx(f1_score(t[idx][k], p[idx][k], average="weighted"), abs=1e-12)
        assert reps["accuracy"][b] == pytest.approx(accuracy_score(t[idx][k], p[idx][k]), abs=1e-12)
        assert reps["waf"][b] == pytest.approx(naive_waf(k, t[idx], p[idx]), abs=1e-12)


def test_interval_is_the_percentile_of_the_replicates_and_brackets_the_estimate(rng):
    n = 300
    hit = rng.integers(0, 2, size=(n, 5)).astype(float)
    scores = bs.hit_scores([f"s{i}" for i in range(n)], hit.tolist(), [True] * n)
    iv = bs.intervals(scores, 1000, 0)["hit_rate"]
    reps = bs.replicates(scores, 1000, 0)["hit_rate"]
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert iv.lo < iv.estimate < iv.hi
    # about the normal-theory width for a mean of 0/1 hits averaged over wheels
    assert 0.5 < (iv.hi - iv.lo) / (2 * 1.96 * np.std(hit.mean(axis=1)) / np.sqrt(n)) < 1.5


def test_paired_difference_of_a_file_with_itself_is_zero_with_p_one(rng):
    n = 50
    hit = rng.integers(0, 2, size=(n, 5)).astype(float)
    a = bs.hit_scores([f"s{i}" for i in range(n)], hit.tolist(), [True] * n)
    d = bs.paired_difference(a, a, "hit_rate", RESAMPLES, SEED)
    assert (d.difference, d.lo, d.hi, d.p_value, d.n) == (0.0, 0.0, 0.0, 1.0, n)


def test_paired_difference_uses_the_samples_both_answered(rng):
    n = 60
    names = [f"s{i}" for i in range(n)]
    ha, hb = rng.integers(0, 2, size=(n, 5)).astype(float), rng.integers(0, 2, size=(n, 5)).astype(float)
    answered_b = [i % 10 != 0 for i in range(n)]
    a = bs.hit_scores(names, ha.tolist(), [True] * n)
    b = bs.hit_scores(names[::-1], hb[::-1].tolist(), answered_b[::-1])      # another order: paired by name
    d = bs.paired_difference(a, b, "hit_rate", RESAMPLES, SEED)
    keep = np.array(answered_b)
    assert d.n == keep.sum()
    assert d.difference == pytest.approx(naive_hit_rate(ha[keep]) - naive_hit_rate(hb[keep]), abs=1e-12)
    loop = [naive_hit_rate(ha[keep][idx]) - naive_hit_rate(hb[keep][idx]) for idx in naive_indices(int(keep.sum()))]
    assert (d.lo, d.hi) == pytest.approx(tuple(np.quantile(loop, [0.025, 0.975])), abs=1e-12)


def test_selection_cost_of_identical_files_is_pure_noise(rng):
    n = 200
    base = rng.integers(0, 2, size=(n, 5)).astype(float)
    names = [f"s{i}" for i in range(n)]
    same = [bs.hit_scores(names, base.tolist(), [True] * n) for _ in range(4)]
    cost = bs.selection_cost(same, "hit_rate", 300, 0)
    assert cost.spread == 0.0 and cost.expected_max_gain == pytest.approx(0.0, abs=1e-12)
    noisy = [bs.hit_scores(names, rng.integers(0, 2, size=(n, 5)).astype(float).tolist(), [True] * n)
             for _ in range(7)]
    cost = bs.selection_cost(noisy, "hit_rate", 300, 0)
    assert cost.best >= cost.median >= cost.worst and cost.expected_max_gain > 0


def test_sample_scores_round_trip_through_npz(tmp_path, rng):
    n = 12
    s = bs.ov_sample_scores([f"名{i}" for i in range(n)], rng.random((n, 5)).tolist(), rng.random((n, 5)).tolist(),
                            [i % 2 == 0 for i in range(n)])
    np.savez(tmp_path / "x.npz", **s.to_arrays())
    with np.load(tmp_path / "x.npz", allow_pickle=False) as data:
        back = bs.SampleScores.from_arrays(dict(data))
    assert back.names == s.names and back.kind == "ov"
    np.testing.assert_array_equal(back.answered, s.answered)
    np.testing.assert_array_equal(back.values["precision"], s.values["precision"])
    with pytest.raises(ValueError):
        bs.SampleScores.from_arrays({**s.to_arrays(), "recall": np.zeros(3)})


def test_a_replay_writes_intervals_and_score_arrays(shared_data, tmp_path):
    from unibench.cli import main

    sample = shared_data / "mer-unibench-sample"
    out = tmp_path / "res"
    assert main(["--model", "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}",
                 "--task", "mer2023,cmumosi", "--data-root", str(sample / "dataset"),
                 "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"), "--output", str(out)]) == 0
    for task, metric, best in (("mer2023", "hit_rate", 0.7854), ("cmumosi", "waf", 0.8130)):
        summary = json.loads((out / "affectgpt" / task / "summary.json").read_text())
        chosen = next(f for f in summary["files"] if f["label"] == summary["best"])
        assert round(chosen["primary"], 4) == best
        lo, hi = chosen["interval"]
        assert lo < chosen["primary"] < hi and hi - lo < 0.1
        report = json.loads((out / "affectgpt" / task / f"{summary['best']}.json").read_text())
        iv = report["intervals"][metric]
        assert (iv["lo"], iv["hi"], iv["resamples"], iv["seed"]) == (lo, hi, 1000, 0)
        with np.load(out / "affectgpt" / task / f"{summary['best']}.scores.npz", allow_pickle=False) as data:
            scores = bs.SampleScores.from_arrays(dict(data))
        assert bs.point_estimates(scores)[metric] == pytest.approx(chosen["primary"], abs=1e-12)
        assert scores.n == (411 if task == "mer2023" else 686)
    # --bootstrap 0: no intervals, the same scores
    out0 = tmp_path / "res0"
    assert main(["--model", "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}",
                 "--task", "mer2023", "--data-root", str(sample / "dataset"), "--bootstrap", "0",
                 "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"), "--output", str(out0)]) == 0
    summary0 = json.loads((out0 / "affectgpt" / "mer2023" / "summary.json").read_text())
    assert all("interval" not in f for f in summary0["files"])
    import csv

    with open(out0 / "leaderboard.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["mer2023"] == "78.54"


@pytest.mark.parametrize("kind", ["hit", "ov", "sentiment"])
def test_a_task_s_files_computed_together_equal_one_by_one(kind, rng):
    n, k = 73, 4
    names = [f"s{i}" for i in range(n)]
    files = []
    for _ in range(k):
        if kind == "hit":
            hit = rng.integers(0, 3, size=(n, 5)).astype(float)
            hit[:5, 2] = np.nan
            files.append(bs.hit_scores(names, hit.tolist(), [True] * n))
        elif kind == "ov":
            p, r = rng.random((n, 5)), rng.random((n, 5))
            p[:4], r[:4] = np.nan, np.nan
            files.append(bs.ov_sample_scores(names, p.tolist(), r.tolist(), [True] * n))
        else:
            files.append(bs.sentiment_sample_scores(names, (rng.random(n) > 0.1).tolist(),
                                                    (rng.random(n) > 0.5).tolist(), (rng.random(n) > 0.5).tolist(),
                                                    [True] * n))
    together = bs.task_intervals(files, RESAMPLES, SEED)
    for f, batch in zip(files, together):
        alone = bs.intervals(f, RESAMPLES, SEED)
        assert batch.keys() == alone.keys()
        for metric in alone:
            assert (batch[metric].estimate, batch[metric].lo, batch[metric].hi) == pytest.approx(
                (alone[metric].estimate, alone[metric].lo, alone[metric].hi), abs=1e-12)
            assert batch[metric].estimate == pytest.approx(bs.point_estimates(f)[metric], abs=1e-12)
    # files over different samples are done one by one, with the same result
    other = bs.SampleScores(files[0].kind, names[::-1], files[0].answered[::-1],
                            {key: v[::-1] for key, v in files[0].values.items()})
    mixed = bs.task_intervals([files[1], other], RESAMPLES, SEED)
    assert mixed[0]["hit_rate" if kind == "hit" else ("fscore" if kind == "ov" else "waf")].lo == pytest.approx(
        together[1]["hit_rate" if kind == "hit" else ("fscore" if kind == "ov" else "waf")].lo, abs=1e-12)
