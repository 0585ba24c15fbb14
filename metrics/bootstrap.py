"""Uncertainty of a score: per-sample score arrays, percentile bootstrap intervals, paired differences.

A score of this benchmark is a statistic of its test samples (hit rate: per wheel a mean over the samples
whose ground truth maps; WAF: weighted F1 of the kept samples; OV F: per wheel F of the mean precision
and mean recall). To know how much it would move on another draw of test samples, the samples are
resampled with replacement and the *same statistic* is recomputed on each resample, the way the point
estimate is computed (so the OV F comes from resampled mean precision and recall, never from a mean of
per-sample F values).

Vectorised: a resample is a row of counts (how often each sample was drawn), so every resample of every
per-wheel mean is one matrix product ``counts @ values``. The counts depend only on the number of samples
and the seed, so every answer file of a task is resampled identically: intervals of two files (two
checkpoints) are paired, and a paired difference is the difference of their replicates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

DEFAULT_RESAMPLES = 1000
# the resamples are a (resamples, samples) matrix: 10 000 x CMU-MOSEI's 4 659 samples is 373 MB (x2 while drawn)
MAX_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
KINDS = ("hit", "sentiment", "ov")          # basic tasks | sentiment tasks | open vocabulary
KIND_OF_FAMILY = {"basic": "hit", "sentiment": "sentiment", "ov": "ov"}
METHOD = "percentile bootstrap over test samples (resampled with replacement, statistic recomputed)"


@dataclass
class SampleScores:
    """What each test sample contributes to a task's score, in the order of the test split.

    ``hit``: ``hit`` (n, 5) hits per wheel, NaN where the ground truth maps to nothing on that wheel.
    ``ov``: ``precision`` and ``recall`` (n, 5), NaN where the ground truth maps to nothing.
    ``sentiment``: ``kept`` (n,) ground truth valence != 0, ``y_true`` / ``y_pred`` (n,) positive or not.
    ``answered``: the answer file has a (text) answer for the sample; a paired comparison uses the samples
    both files answered.
    """

    kind: str
    names: list[str]
    answered: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sample-score kind {self.kind!r}")

    @property
    def n(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray) -> "SampleScores":
        return SampleScores(self.kind, [self.names[i] for i in index], self.answered[index],
                            {k: v[index] for k, v in self.values.items()})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """For ``np.savez`` (no object arrays: the file reads back without pickle)."""
        return {"kind": np.array(self.kind), "names": np.array(self.names, dtype=str),
                "answered": self.answered.astype(bool), **self.values}

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any]) -> "SampleScores":
        """Read back what :meth:`to_arrays` wrote; ValueError saying what is wrong with anything else
        (these files sit in a results folder anyone may have edited)."""
        kind = str(np.asarray(data["kind"]).item()) if "kind" in data else ""
        want = {"hit": ("hit",), "ov": ("precision", "recall"), "sentiment": ("kept", "y_true", "y_pred")}.get(kind)
        if want is None:
            raise ValueError(f"unknown sample-score kind {kind!r}")
        raw_names = np.asarray(data["names"]) if "names" in data else np.array([])
        if raw_names.ndim != 1 or (raw_names.size and raw_names.dtype.kind != "U"):
            raise ValueError("'names' is not a list of text")
        names = [str(n) for n in raw_names.tolist()]
        n = len(names)
        values = {}
        for key in want:
            if key not in data:
                raise ValueError(f"no '{key}' array")
            value = np.asarray(data[key])
            if len(value) != n:
                raise ValueError(f"'{key}' has {len(value)} rows for {n} names")
            if kind == "sentiment":
                if value.ndim != 1 or value.dtype.kind not in "biu" or (value.size and not np.isin(value, (0, 1)).all()):
                    raise ValueError(f"'{key}' is not one true/false value per sample")
                value = value.astype(bool)
            else:
                if value.shape != (n, 5) or value.dtype.kind not in "fiu":
                    raise ValueError(f"'{key}' is not five numbers per sample")
                value = value.astype(np.float64)
                known = value[~np.isnan(value)]
                top = np.inf if key == "hit" else 1.0
                if known.size and not ((known >= 0) & (known <= top) & np.isfinite(known)).all():
                    raise ValueError(f"'{key}' holds values outside {'0..' if key == 'hit' else '[0, 1]'}"
                                     f"{'' if key != 'hit' else ' (finite)'}")
            values[key] = value
        if kind == "ov" and not np.array_equal(np.isnan(values["precision"]), np.isnan(values["recall"])):
            raise ValueError("'precision' and 'recall' are missing for different samples")
        answered = np.asarray(data["answered"]) if "answered" in data else None
        if answered is None or answered.ndim != 1 or len(answered) != n or answered.dtype.kind not in "biu":
            raise ValueError("'answered' is not one true/false value per sample")
        return cls(kind, names, answered.astype(bool), values)


# ---------------------------------------------------------------- building them from per-sample lists

def hit_scores(names: list[str], hits: list[list[float]], answered: list[bool]) -> SampleScores:
    """``hits``: per sample five values, NaN for a wheel the ground truth does not map on."""
    return SampleScores("hit", names, np.array(answered, dtype=bool),
                        {"hit": np.array(hits, dtype=np.float64).reshape(len(names), 5)})


def ov_sample_scores(names: list[str], precision: list[list[float]], recall: list[list[float]],
                     answered: list[bool]) -> SampleScores:
    return SampleScores("ov", names, np.array(answered, dtype=bool),
                        {"precision": np.array(precision, dtype=np.float64).reshape(len(names), 5),
                         "recall": np.array(recall, dtype=np.float64).reshape(len(names), 5)})


def sentiment_sample_scores(names: list[str], kept: list[bool], y_true: list[bool], y_pred: list[bool],
                            answered: list[bool]) -> SampleScores:
    return SampleScores("sentiment", names, np.array(answered, dtype=bool),
                        {"kept": np.array(kept, dtype=bool), "y_true": np.array(y_true, dtype=bool),
                         "y_pred": np.array(y_pred, dtype=bool)})


# ---------------------------------------------------------------- the statistics, on weighted samples

def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (an empty mean is 0, as the scorer's)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def statistics(scores: SampleScores, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every headline metric of ``scores`` under sample weights ``weights`` (R, n): R values per metric.

    Weights of ones give the point estimate; bootstrap counts give the replicates."""
    return {k: v[:, 0] for k, v in batch_statistics([scores], weights).items()}


def batch_statistics(files: list[SampleScores], weights: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`statistics` of several answer files over the same samples at once: metric -> (R, files).

    The files' arrays sit side by side, so each statistic is one matrix product for all of them."""
    w = np.asarray(weights, dtype=np.float64)
    kind, n, k = files[0].kind, files[0].n, len(files)
    if kind == "hit":
        hit = np.stack([f.values["hit"] for f in files], axis=1)                    # (n, files, 5)
        mask = ~np.isnan(hit)
        num = w @ np.where(mask, hit, 0.0).reshape(n, -1)
        per_wheel = _ratio(num, w @ mask.reshape(n, -1).astype(np.float64)).reshape(-1, k, 5)
        return {"hit_rate": per_wheel.mean(axis=2)}
    if kind == "ov":
        p = np.stack([f.values["precision"] for f in files], axis=1)
        r = np.stack([f.values["recall"] for f in files], axis=1)
        mask = ~np.isnan(p)
        den = w @ mask.reshape(n, -1).astype(np.float64)
        pm = _ratio(w @ np.where(mask, p, 0.0).reshape(n, -1), den).reshape(-1, k, 5)
        rm = _ratio(w @ np.where(mask, r, 0.0).reshape(n, -1), den).reshape(-1, k, 5)  # r is NaN where p is
        f = _ratio(2 * pm * rm, pm + rm)
        return {"fscore": f.mean(axis=2), "precision": pm.mean(axis=2), "recall": rm.mean(axis=2)}
    kept, t, p = (np.stack([f.values[key] for f in files], axis=1) for key in ("kept", "y_true", "y_pred"))
    cells = np.stack([kept & t & p, kept & t & ~p, kept & ~t & p, kept & ~t & ~p], axis=1)    # (n, 4, files)
    tp, fn, fp, tn = np.moveaxis((w @ cells.reshape(n, -1).astype(np.float64)).reshape(-1, 4, k), 1, 0)
    total = tp + fn + fp + tn                                       # positive class: tp, fn, fp; negative: tn
    f_pos = _ratio(2 * tp, 2 * tp + fp + fn)
    f_neg = _ratio(2 * tn, 2 * tn + fn + fp)
    waf = _ratio((tp + fn) * f_pos + (tn + fp) * f_neg, total)
    return {"waf": waf, "accuracy": _ratio(tp + tn, total)}


def point_estimates(scores: SampleScores) -> dict[str, float]:
    return {k: float(v[0]) for k, v in statistics(scores, np.ones((1, scores.n))).items()}


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(resamples, n): how often each of n samples is drawn in each resample (each row sums to n).

    Depends only on (n, resamples, seed): every answer file of a task gets the same resamples."""
    if n == 0:
        return np.zeros((resamples, 0))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    draws += (np.arange(resamples) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def replicates(scores: SampleScores, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
               counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Bootstrap replicates of every headline metric: metric -> (resamples,)."""
    if counts is None:
        counts = resample_counts(scores.n, resamples, seed)
    return statistics(scores, counts)


def _quantile(ordered: np.ndarray, q: float) -> float:
    """numpy.quantile's default (linear) rule on sorted values; written out because numpy's first call
    costs ~20 ms of lazy set-up, a twentieth of a whole replay run."""
    h = (len(ordered) - 1) * q
    i = int(np.floor(h))
    j = min(i + 1, len(ordered) - 1)
    return float(ordered[i] + (h - i) * (ordered[j] - ordered[i]))


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    return _quantile(ordered, alpha), _quantile(ordered, 1.0 - alpha)


@dataclass
class Interval:
    metric: str
    estimate: float
    lo: float
    hi: float
    level: float = DEFAULT_LEVEL
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "estimate": self.estimate, "lo": self.lo, "hi": self.hi,
                "level": self.level, "resamples": self.resamples, "seed": self.seed, "method": METHOD}


def intervals(scores: SampleScores, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              level: float = DEFAULT_LEVEL, counts: np.ndarray | None = None) -> dict[str, Interval]:
    """A percentile interval for every headline metric of one answer file."""
    return task_intervals([scores], resamples, seed, level, counts)[0]


def task_intervals(files: list[SampleScores], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   level: float = DEFAULT_LEVEL, counts: np.ndarray | None = None) -> list[dict[str, Interval]]:
    """:func:`intervals` of every answer file of a task, computed together (the same resamples for all:
    paired) when the files hold the same samples in the same order, else one by one. Same numbers either way."""
    if not files:
        return []
    first = files[0]
    if any(f.kind != first.kind or f.names != first.names for f in files[1:]):
        return [task_intervals([f], resamples, seed, level, counts)[0] for f in files]
    if counts is None or counts.shape != (resamples, first.n):
        counts = resample_counts(first.n, resamples, seed)
    points = batch_statistics(files, np.ones((1, first.n)))
    reps = batch_statistics(files, counts)
    alpha = (1.0 - level) / 2
    out: list[dict[str, Interval]] = [{} for _ in files]
    for metric, values in reps.items():
        ordered = np.sort(values, axis=0)
        for i in range(len(files)):
            out[i][metric] = Interval(metric, float(points[metric][0, i]), _quantile(ordered[:, i], alpha),
                                      _quantile(ordered[:, i], 1.0 - alpha), level=level, resamples=resamples,
                                      seed=seed)
    return out


# ---------------------------------------------------------------- paired comparisons and selection

def align(a: SampleScores, b: SampleScores, answered_only: bool = True) -> tuple[SampleScores, SampleScores]:
    """The samples both score arrays hold (and, by default, both answered), in ``a``'s order."""
    if a.kind != b.kind:
        raise ValueError(f"cannot pair a {a.kind} score with a {b.kind} score")
    where_b = {n: i for i, n in enumerate(b.names)}
    ia, ib = [], []
    for i, n in enumerate(a.names):
        j = where_b.get(n)
        if j is not None and (not answered_only or (a.answered[i] and b.answered[j])):
            ia.append(i)
            ib.append(j)
    return a.subset(np.array(ia, dtype=int)), b.subset(np.array(ib, dtype=int))


@dataclass
class PairedDifference:
    metric: str
    a: float
    b: float
    difference: float              # a - b
    lo: float
    hi: float
    p_value: float
    n: int
    resamples: int
    seed: int
    replicates: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)   # d* behind lo, hi, p

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "replicates"}


def paired_replicates(a: SampleScores, b: SampleScores, metric: str, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, answered_only: bool = True
                      ) -> tuple[SampleScores, SampleScores, np.ndarray]:
    """The two files on the samples both have (:func:`align`) and the bootstrap replicates of a - b there,
    both resampled with the same counts."""
    a2, b2 = align(a, b, answered_only)
    counts = resample_counts(a2.n, resamples, seed)
    return a2, b2, replicates(a2, counts=counts)[metric] - replicates(b2, counts=counts)[metric]


def shifted_null_p(d: float, d_star: np.ndarray) -> float:
    """Two-sided p-value of an observed difference ``d``: the share of its replicates, shifted to mean zero
    (the null of no difference), at least as far from zero: (1 + #{|d* - mean d*| >= |d|}) / (1 + resamples)."""
    extreme = int(np.sum(np.abs(d_star - d_star.mean()) >= abs(d) - 1e-12))
    return min(1.0, (1 + extreme) / (1 + len(d_star)))


def paired_difference(a: SampleScores, b: SampleScores, metric: str, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
                      answered_only: bool = True) -> PairedDifference:
    """a - b on the samples both have, with its paired bootstrap interval and a two-sided p-value
    (:func:`paired_replicates`, :func:`shifted_null_p`)."""
    a2, b2, d_star = paired_replicates(a, b, metric, resamples, seed, answered_only)
    pa, pb = point_estimates(a2)[metric], point_estimates(b2)[metric]
    d = pa - pb
    lo, hi = percentile_interval(d_star, level)
    return PairedDifference(metric, pa, pb, d, lo, hi, shifted_null_p(d, d_star), a2.n, resamples, seed, d_star)


@dataclass
class Selection:
    """What best-of-N costs: the spread of N answer files of one task and how much of the best is selection."""

    metric: str
    n_files: int
    best: float
    median: float
    worst: float
    spread: float                  # best - worst
    expected_max_gain: float       # E[max over files] - mean under no real difference between files
    best_minus_median: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def selection_cost(files: list[SampleScores], metric: str, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> Selection:
    """Best, median and spread of the files' scores, and the gain expected from picking the best of N files
    that do not really differ: each file's bootstrap replicates are centred on its own estimate (sampling
    noise only; shared resamples keep the files' correlation), and the gain is the mean over resamples of
    the largest centred deviation. A best-of-N row sits that much above a typical file by chance alone."""
    points = np.array([point_estimates(f)[metric] for f in files])
    gain = 0.0
    if len(files) > 1 and all(f.n == files[0].n and f.names == files[0].names for f in files):
        counts = resample_counts(files[0].n, resamples, seed)
        reps = np.stack([replicates(f, counts=counts)[metric] for f in files])   # (files, resamples)
        gain = float(np.mean(np.max(reps - reps.mean(axis=1, keepdims=True), axis=0)))
    elif len(files) > 1:  # different sample sets: resample each on its own (independent noise)
        reps = np.stack([replicates(f, resamples, seed + i)[metric] for i, f in enumerate(files)])
        gain = float(np.mean(np.max(reps - reps.mean(axis=1, keepdims=True), axis=0)))
    return Selection(metric, len(files), float(points.max()), float(np.median(points)), float(points.min()),
                     float(points.max() - points.min()), gain, float(points.max() - np.median(points)))
