"""Paper-mode scores: hit rate, sentiment WAF/accuracy, open-vocabulary F/P/R.

Each wheel-based score is computed per wheel (1-5) and averaged, as published.
Functions take plain dicts ``name -> value`` and return a :class:`TaskScore`
holding the headline numbers, the per-wheel numbers and per-sample rows for
error analysis. scikit-learn is the reference for the sentiment scores (see
the tests); a small exact re-implementation is used here because importing
``sklearn.metrics`` costs over a second, more than a whole replay run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from unibench.labels import normalise_labels, sentiment_value
from unibench.metrics.bootstrap import SampleScores, hit_scores, ov_sample_scores, sentiment_sample_scores
from unibench.metrics.lexicon import Lexicon

_NAN = float("nan")

WHEEL_IDS = (1, 2, 3, 4, 5)


@dataclass
class TaskScore:
    metrics: dict[str, float]                       # headline numbers, 0-1
    per_wheel: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # what each test sample contributes (bootstrap intervals, paired comparisons); see metrics.bootstrap
    per_sample: SampleScores | None = None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class _Mapper:
    """Memoised raw value -> (labels, five mapped sets).

    Label strings repeat a lot (six gt labels, the same predictions in every checkpoint's answers), so each
    is parsed and mapped once per lexicon and level, across answer files and tasks (:func:`mapper_for`).
    """

    def __init__(self, lexicon: Lexicon, level: str):
        self.lexicon, self.level, self.memo = lexicon, level, {}

    def __call__(self, value: Any) -> tuple[list[str], list[set[str]]]:
        key = value if isinstance(value, str) else None
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        labels = normalise_labels(value)
        out = (labels, self.lexicon.map_all_wheels(labels, self.level))
        if key is not None:
            self.memo[key] = out
        return out


def mapper_for(lexicon: Lexicon, level: str) -> _Mapper:
    """One memo per lexicon and level, kept on the lexicon (read-only results: safe to share)."""
    key = ("scores-mapper", level)
    mapper = lexicon._maps.get(key)
    if mapper is None:
        mapper = lexicon._maps[key] = _Mapper(lexicon, level)
    return mapper


def _answered(answered: Sequence[bool] | None, pred: Mapping[str, Any], names: list[str]) -> Sequence[bool]:
    """Which samples were answered (for paired comparisons): as the caller knows it (the answer file), else
    the samples that have a prediction."""
    return answered if answered is not None else [n in pred for n in names]


def _texts(sets: list[set[str]]) -> list[str]:
    return ["|".join(sorted(s)) for s in sets]


def hit_rate(gt: Mapping[str, str], pred: Mapping[str, Any], lexicon: Lexicon,
             level: str = "level1", rows: bool = True, answered: Sequence[bool] | None = None) -> TaskScore:
    """Basic tasks: per wheel, mean |mapped gt ∩ mapped prediction| over samples whose gt maps.

    ``rows=False`` skips the per-sample rows (the numbers are the same): for answer files nobody logs."""
    hits: list[list[int]] = [[] for _ in WHEEL_IDS]
    out = []
    per_sample: list[list[float]] = []
    mapper = mapper_for(lexicon, level)
    for name, label in gt.items():
        labels, p_sets = mapper(pred.get(name))
        _, g_sets = mapper(label)
        # gt maps to nothing on a wheel: that wheel skips the sample (NaN here), as published
        sample = [len(g & p) if g else _NAN for g, p in zip(g_sets, p_sets)]
        for i, g in enumerate(g_sets):
            if g:
                hits[i].append(sample[i])
        per_sample.append(sample)
        if rows:
            g_text, p_text = _texts(g_sets), _texts(p_sets)
            row: dict[str, Any] = {"name": name, "gt": label, "pred": "|".join(labels)}
            for i, w in enumerate(WHEEL_IDS):
                row[f"gt_w{w}"] = g_text[i]
                row[f"pred_w{w}"] = p_text[i]
                row[f"hit_w{w}"] = len(g_sets[i] & p_sets[i]) if g_sets[i] else ""
            out.append(row)
    per_wheel = {f"wheel{w}": {"hit_rate": _mean(hits[i]), "n_scored": len(hits[i])} for i, w in enumerate(WHEEL_IDS)}
    score = _mean([v["hit_rate"] for v in per_wheel.values()])
    names = list(gt)
    return TaskScore(metrics={"hit_rate": score}, per_wheel=per_wheel, samples=out, counts={"n_samples": len(gt)},
                     per_sample=hit_scores(names, per_sample, _answered(answered, pred, names)))


def weighted_f1(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float:
    """sklearn's f1_score(average='weighted') for labels that are booleans."""
    total = len(y_true)
    if total == 0:
        return 0.0
    out = 0.0
    for cls in (False, True):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == cls and p == cls)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != cls and p == cls)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == cls and p != cls)
        support = tp + fn
        denom = 2 * tp + fp + fn
        if support and denom:
            out += support * (2 * tp / denom)
    return out / total


def sentiment_scores(gt: Mapping[str, float], pred: Mapping[str, Any], ov_labels: Mapping[str, Any] | None = None,
                     rows: bool = True, answered: Sequence[bool] | None = None) -> TaskScore:
    """Sentiment tasks: WAF and accuracy on samples whose gt valence is not 0.

    Prompt B's answer is positive=1, negative=-1, neutral=0; anything else is
    0 (counted as a warning). Then y = gt > 0 and ŷ = pred > 0, so a
    'neutral' prediction counts as negative, as published.
    """
    y_true, y_pred, out = [], [], []
    unparsed = []
    all_kept, all_true, all_pred = [], [], []
    for name, val in gt.items():
        answer = pred.get(name)
        value = sentiment_value(answer)
        if value is None:
            unparsed.append(name)
            value = 0
        kept, positive, predicted = float(val) != 0, float(val) > 0, value > 0
        all_kept.append(kept)
        all_true.append(positive)
        all_pred.append(predicted)
        if kept:
            y_true.append(positive)
            y_pred.append(predicted)
        if rows:
            out.append({"name": name, "gt": float(val),
                        "ov_labels": "" if ov_labels is None else ov_labels.get(name, ""),
                        "sentiment": answer if answer is not None else "", "pred": value, "kept": int(kept),
                        "correct": int(y_true[-1] == y_pred[-1]) if kept else ""})
    acc = _mean([1.0 if t == p else 0.0 for t, p in zip(y_true, y_pred)])
    warnings = []
    if unparsed:
        warnings.append(f"{len(unparsed)} sentiment answer(s) are not positive/negative/neutral and count as 0 "
                        f"(e.g. {unparsed[0]}: {pred.get(unparsed[0])!r})")
    return TaskScore(metrics={"waf": weighted_f1(y_true, y_pred), "accuracy": acc}, samples=out,
                     counts={"n_samples": len(gt), "n_scored": len(y_true), "n_unparsed_sentiment": len(unparsed)},
                     warnings=warnings,
                     per_sample=sentiment_sample_scores(list(gt), all_kept, all_true, all_pred,
                                                        _answered(answered, pred, list(gt))))


def ov_scores(gt: Mapping[str, Any], pred: Mapping[str, Any], lexicon: Lexicon, level: str = "level1",
              rows: bool = True, answered: Sequence[bool] | None = None) -> TaskScore:
    """Open vocabulary: per wheel mean precision and recall, F from the means; then mean over wheels."""
    precisions: list[list[float]] = [[] for _ in WHEEL_IDS]
    recalls: list[list[float]] = [[] for _ in WHEEL_IDS]
    out = []
    sample_p: list[list[float]] = []
    sample_r: list[list[float]] = []
    mapper = mapper_for(lexicon, level)
    for name, labels_gt in gt.items():
        row_p, row_r = [_NAN] * len(WHEEL_IDS), [_NAN] * len(WHEEL_IDS)
        sample_p.append(row_p)
        sample_r.append(row_r)
        g_labels, g_sets = mapper(labels_gt)
        p_labels, p_sets = mapper(pred.get(name))
        row: dict[str, Any] = {"name": name, "gt": "|".join(g_labels), "pred": "|".join(p_labels)} if rows else {}
        if rows:
            g_text, p_text = _texts(g_sets), _texts(p_sets)
        for i, w in enumerate(WHEEL_IDS):
            g, p = g_sets[i], p_sets[i]
            if rows:
                row[f"gt_w{w}"] = g_text[i]
                row[f"pred_w{w}"] = p_text[i]
            if not g:
                if rows:
                    row[f"precision_w{w}"] = row[f"recall_w{w}"] = ""
                continue
            inter = len(g & p)
            prec = inter / len(p) if p else 0.0
            rec = inter / len(g) if p else 0.0
            if rows:
                row[f"precision_w{w}"], row[f"recall_w{w}"] = prec, rec
            precisions[i].append(prec)
            recalls[i].append(rec)
            row_p[i], row_r[i] = prec, rec
        if rows:
            out.append(row)
    per_wheel = {}
    for i, w in enumerate(WHEEL_IDS):
        P, R = _mean(precisions[i]), _mean(recalls[i])
        F = 2 * P * R / (P + R) if P + R else 0.0
        per_wheel[f"wheel{w}"] = {"fscore": F, "precision": P, "recall": R, "n_scored": len(precisions[i])}
    metrics = {k: _mean([v[k] for v in per_wheel.values()]) for k in ("fscore", "precision", "recall")}
    names = list(gt)
    return TaskScore(metrics=metrics, per_wheel=per_wheel, samples=out, counts={"n_samples": len(gt)},
                     per_sample=ov_sample_scores(names, sample_p, sample_r, _answered(answered, pred, names)))
