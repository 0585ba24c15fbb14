"""Paper-mode metrics against hand-computed cases and library oracles (spec §4-§5)."""
from __future__ import annotations

import random
import warnings
from fractions import Fraction

import pytest

from fixtures import tiny_lexicon, tiny_lexicon_dir  # noqa: F401  (pytest fixtures)
from unibench.metrics.scores import hit_rate, ov_scores, sentiment_scores, weighted_f1


def approx(x):
    return pytest.approx(float(x), abs=1e-12)


# ---------------------------------------------------------------- hit rate

HIT_GT = {"s1": "happy", "s2": "sad", "s3": "neutral", "s4": "surprise", "s5": "fear", "s6": "worried",
          "s7": "angry"}
HIT_PRED = {"s1": "[joy, sad]", "s2": "[happy]", "s3": "[happy]", "s4": "['surprise']", "s5": "[joy]",
            "s7": "[Anger, furious]"}   # s6 has no prediction


def test_hit_rate_hand_computed(tiny_lexicon):
    score = hit_rate(HIT_GT, HIT_PRED, tiny_lexicon)
    # wheel1: s1 1, s2 0, s3 skipped (neutral maps to nothing), s4 1, s5 0 (scared vs happy), s6 0, s7 1 -> 3/6
    # wheel2: fear lands on happy, so s5 hits -> 4/6; wheel3 has no 'surprised': s4 skipped -> 2/5
    per = [Fraction(3, 6), Fraction(4, 6), Fraction(2, 5), Fraction(3, 6), Fraction(3, 6)]
    for w, expected in enumerate(per, 1):
        assert score.per_wheel[f"wheel{w}"]["hit_rate"] == approx(expected)
    assert [score.per_wheel[f"wheel{w}"]["n_scored"] for w in range(1, 6)] == [6, 6, 5, 6, 6]
    assert score.metrics["hit_rate"] == approx(sum(per) / 5) == approx(Fraction(77, 150))
    rows = {r["name"]: r for r in score.samples}
    assert rows["s3"]["hit_w1"] == "" and rows["s3"]["gt_w1"] == ""
    assert rows["s4"]["hit_w3"] == "" and rows["s4"]["hit_w1"] == 1
    assert rows["s1"]["pred_w1"] == "happy|sad" and rows["s1"]["pred"] == "joy|sad"
    assert rows["s5"]["gt_w2"] == "happy" and rows["s5"]["hit_w2"] == 1
    assert rows["s6"]["pred"] == "" and rows["s6"]["hit_w1"] == 0
    assert rows["s7"]["pred_w1"] == "angry"                     # 'furious' is not in format.csv: dropped


def test_hit_rate_level2(tiny_lexicon):
    gt = {"a": "happy", "b": "joy"}
    pred = {"a": "[calm]", "b": "[happy]"}
    assert hit_rate(gt, pred, tiny_lexicon, "level1").metrics["hit_rate"] == approx(1)
    # level 2: happy -> calm (first of its level-2 words) hits 'calm'; joy -> joyful misses happy -> calm
    lvl2 = hit_rate(gt, pred, tiny_lexicon, "level2")
    assert lvl2.per_wheel["wheel1"]["hit_rate"] == approx(Fraction(1, 2))
    rows = {r["name"]: r for r in lvl2.samples}
    assert rows["b"]["gt_w1"] == "joyful" and rows["b"]["pred_w1"] == "calm"


def test_hit_rate_all_skipped_or_empty(tiny_lexicon):
    assert hit_rate({"a": "neutral"}, {"a": "[happy]"}, tiny_lexicon).metrics["hit_rate"] == 0.0
    assert hit_rate({}, {}, tiny_lexicon).metrics["hit_rate"] == 0.0


def _reference_map(lex, label, wheel, level="level1"):
    """Spec §4 written out directly from the three mappings (no precomputed table)."""
    label = label.lower().strip()
    if label not in lex.format2raws:
        return None
    words = sorted(w for f in lex.format2raws[label] for w in lex.raw_mapping.get(f, []))
    m = lex.wheel_map(wheel, level)
    for w in words:
        if w in m:
            return m[w]
    return None


def _reference_hit_rate(lex, gt, pred, level):
    from unibench.labels import string_to_list

    wheels = []
    for w in range(1, 6):
        hits = []
        for name, g in gt.items():
            gs = {x for x in (_reference_map(lex, g, w, level),) if x}
            if not gs:
                continue
            ps = {_reference_map(lex, p, w, level) for p in string_to_list(pred.get(name, ""))} - {None}
            hits.append(len(gs & ps))
        wheels.append(sum(hits) / len(hits) if hits else 0.0)
    return sum(wheels) / 5


@pytest.mark.parametrize("level", ["level1", "level2"])
def test_hit_rate_equals_the_spec_rule_on_random_cases(tiny_lexicon, level):
    rng = random.Random(7)
    vocab = sorted(tiny_lexicon.format2raws) + ["cheerful", "mad", "nonsense"]
    for _ in range(30):
        names = [f"n{i}" for i in range(rng.randint(1, 12))]
        gt = {n: rng.choice(vocab) for n in names}
        pred = {n: "[" + ", ".join(rng.sample(vocab, rng.randint(0, 4))) + "]" for n in names if rng.random() < 0.9}
        got = hit_rate(gt, pred, tiny_lexicon, level).metrics["hit_rate"]
        assert got == approx(_reference_hit_rate(tiny_lexicon, gt, pred, level))


def test_hit_rate_equals_the_spec_rule_on_the_real_lexicon(lexicon_2025):
    rng = random.Random(11)
    vocab = sorted(lexicon_2025.format2raws)
    basic = ["angry", "happy", "neutral", "sad", "surprise", "worried", "joy", "fear", "disgust", "anger", "sadness"]
    names = [f"n{i}" for i in range(300)]
    gt = {n: rng.choice(basic) for n in names}
    pred = {n: "[" + ", ".join(rng.sample(vocab, rng.randint(0, 5)) + [rng.choice(basic)]) + "]" for n in names}
    got = hit_rate(gt, pred, lexicon_2025).metrics["hit_rate"]
    assert got == approx(_reference_hit_rate(lexicon_2025, gt, pred, "level1"))
    for w in range(1, 6):
        for label in rng.sample(vocab, 200) + basic:
            assert (lexicon_2025.map_label(label, w) or None) == _reference_map(lexicon_2025, label, w)


# ---------------------------------------------------------------- sentiment

def test_sentiment_hand_computed():
    gt = {"a": 1.5, "b": -2.0, "c": 0.0, "d": 0.4, "e": -0.2, "f": 2.0}
    pred = {"a": "positive", "b": "neutral", "c": "positive", "d": "neutral", "e": "mixed"}   # f missing
    score = sentiment_scores(gt, pred, ov_labels={"a": "[happy]"})
    # kept: a b d e f (c has val 0); y = [T F T F T]; neutral and unparsed count as 0 -> not positive
    # y_hat = [T F F F F]: accuracy 3/5; F1(True) = 2*1/(2+0+2) = 1/2 (support 3),
    # F1(False) = 2*2/(4+2+0) = 2/3 (support 2) -> WAF = (3/2 + 4/3)/5 = 17/30
    assert score.metrics["accuracy"] == approx(Fraction(3, 5))
    assert score.metrics["waf"] == approx(Fraction(17, 30))
    assert score.counts == {"n_samples": 6, "n_scored": 5, "n_unparsed_sentiment": 2}
    assert len(score.warnings) == 1
    assert score.warnings[0].startswith("2 sentiment answer(s) are not positive/negative/neutral")
    assert "e: 'mixed'" in score.warnings[0]
    rows = {r["name"]: r for r in score.samples}
    assert rows["c"]["kept"] == 0 and rows["c"]["correct"] == ""
    assert rows["b"]["pred"] == 0 and rows["b"]["correct"] == 1
    assert rows["a"]["ov_labels"] == "[happy]" and rows["f"]["sentiment"] == ""


def test_sentiment_degenerate_cases():
    empty = sentiment_scores({"a": 0.0, "b": 0}, {"a": "positive", "b": "negative"})
    assert empty.metrics == {"waf": 0.0, "accuracy": 0.0} and empty.counts["n_scored"] == 0
    perfect = sentiment_scores({"a": 1.0, "b": -1.0}, {"a": "positive", "b": "negative"})
    assert perfect.metrics == {"waf": 1.0, "accuracy": 1.0} and perfect.warnings == []
    wrong = sentiment_scores({"a": 1.0, "b": 2.0}, {"a": "negative", "b": "neutral"})
    assert wrong.metrics == {"waf": 0.0, "accuracy": 0.0}


def test_weighted_f1_and_accuracy_against_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(3)
    for trial in range(60):
        n = rng.randint(1, 40)
        bias = rng.random()
        y_true = [rng.random() < bias for _ in range(n)]
        y_pred = [rng.random() < 0.5 for _ in range(n)] if trial % 5 else [y_true[0]] * n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # sklearn warns on a class with no prediction; the value is still 0
            expected = f1_score(y_true, y_pred, average="weighted")
        assert weighted_f1(y_true, y_pred) == approx(expected), (y_true, y_pred)


def test_sentiment_scores_against_sklearn_on_random_cases():
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(5)
    words = ["positive", "negative", "neutral", "mixed", None]
    for _ in range(100):
        n = rng.randint(2, 30)
        gt = {f"s{i}": rng.choice([-3.0, -1.2, -0.4, 0.0, 0.0, 0.6, 1.8, 3.0]) for i in range(n)}
        pred = {k: w for k in gt if (w := rng.choice(words)) is not None}
        value = {"positive": 1, "negative": -1}
        kept = [k for k, v in gt.items() if v != 0]
        if not kept:
            continue
        y = [gt[k] > 0 for k in kept]
        y_hat = [value.get(pred.get(k), 0) > 0 for k in kept]
        score = sentiment_scores(gt, pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert score.metrics["waf"] == approx(f1_score(y, y_hat, average="weighted"))
        assert score.metrics["accuracy"] == approx(accuracy_score(y, y_hat))


# ---------------------------------------------------------------- open vocabulary

def test_ov_scores_hand_computed(tiny_lexicon):
    gt = {"s1": ["happy", "sad"], "s2": ["fear"], "s3": ["neutral"], "s4": ["Surprise", "worried"], "s5": ["angry"]}
    pred = {"s1": "[joy]", "s2": "[]", "s3": "[happy]", "s4": "[surprise, happy, sad]"}   # s5 has no prediction
    score = ov_scores(gt, pred, tiny_lexicon)
    # wheel1: s1 P=1 R=1/2; s2 empty prediction P=R=0; s3 skipped (gt maps to nothing);
    #         s4 g={surprised, scared} p={surprised, happy, sad}: P=1/3 R=1/2; s5 P=R=0
    #         P = 1/3, R = 1/4, F = 2PR/(P+R) = 2/7 (from the means, not a mean of per-sample F)
    # wheel3 has no 'surprised': s4 g={scared}, P=R=0 -> P=1/4, R=1/8, F=1/6; wheels 2, 4, 5 as wheel 1
    P = [Fraction(1, 3)] * 5
    R = [Fraction(1, 4)] * 5
    P[2], R[2] = Fraction(1, 4), Fraction(1, 8)
    F = [2 * p * r / (p + r) for p, r in zip(P, R)]
    assert F[0] == Fraction(2, 7) and F[2] == Fraction(1, 6)
    for w in range(1, 6):
        pw = score.per_wheel[f"wheel{w}"]
        assert (pw["precision"], pw["recall"], pw["fscore"]) == (approx(P[w - 1]), approx(R[w - 1]), approx(F[w - 1]))
        assert pw["n_scored"] == 4
    assert score.metrics["fscore"] == approx(Fraction(11, 42))
    assert score.metrics["precision"] == approx(Fraction(19, 60))
    assert score.metrics["recall"] == approx(Fraction(9, 40))
    rows = {r["name"]: r for r in score.samples}
    assert rows["s3"]["precision_w1"] == "" and rows["s3"]["recall_w1"] == ""
    assert rows["s2"]["precision_w1"] == 0.0 and rows["s2"]["recall_w1"] == 0.0
    assert rows["s4"]["gt"] == "surprise|worried"


def test_ov_scores_level2_and_empty(tiny_lexicon):
    gt = {"a": ["happy", "joy"]}
    pred = {"a": "[calm]"}
    lvl1 = ov_scores(gt, pred, tiny_lexicon)
    assert lvl1.metrics == {"fscore": approx(1), "precision": approx(1), "recall": approx(1)}
    lvl2 = ov_scores(gt, pred, tiny_lexicon, "level2")
    # level 2: g = {calm, joyful}, p = {calm}: P = 1, R = 1/2, F = 2/3 on every wheel
    assert lvl2.metrics["fscore"] == approx(Fraction(2, 3))
    nothing = ov_scores({"a": ["neutral"]}, {"a": "[happy]"}, tiny_lexicon)
    assert nothing.metrics == {"fscore": 0.0, "precision": 0.0, "recall": 0.0}
