"""The closed-set view (``--closed-set``): published prompts, reply parsing, scores, lexicon rule, LLM modes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from fixtures import build_toy_bench, toy_counts  # noqa: F401  (fixture)
from unibench.adapters.base import AnswerSet, ExtractionFailure
from unibench.cli import main
from unibench.closedset import (CLOSED_SET_FROM_LABELS, CLOSED_SET_FROM_REASON, MER_CLASSES, NO_CLASS,
                                ClosedSetView, closed_set_prompt, closed_set_view, parse_reply, prompt_template)
from unibench.errors import UserError
from unibench.metrics.llm import LLMExtractor, LLMOptions
from unibench.taskdata import TaskData
from unibench.tasks.base import TASKS

MER_LIST = "happy, angry, worried, sad, surprise, neutral"
MELD_LIST = "anger, joy, sadness, neutral, disgust, fear, surprise"


def reason_of(prompt: str) -> str:
    return prompt.rsplit("Input: ", 1)[-1].rsplit("; Output:", 1)[0]


class CannedLLM(LLMExtractor):
    """Replies from a table keyed by the prompt's {reason}; records what it was asked."""

    name = "canned"

    def __init__(self, replies: dict[str, str | None], cache_dir: Path | None = None):
        super().__init__(LLMOptions(model="canned-model"))
        self.cache_dir, self.use_cache, self.progress = cache_dir, cache_dir is not None, False
        self.replies = replies
        self.asked: list[str] = []

    def generate(self, prompts: list[str]) -> list[str | None]:
        self.asked.extend(prompts)
        return [self.replies.get(reason_of(p), "mixed") for p in prompts]


def task_of(task_id: str, gt: dict[str, str]) -> TaskData:
    return TaskData(spec=TASKS[task_id], root=Path("."), gt=gt)


# ---------------------------------------------------------------- (1) the prompts are the protocol's

def test_prompt_constants_are_the_published_text():
    path = SHARED / "spec" / "prompts.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    spec = json.loads(path.read_text(encoding="utf-8"))
    assert CLOSED_SET_FROM_REASON == spec["closed_set_from_reason"]
    assert CLOSED_SET_FROM_LABELS == spec["closed_set_from_labels"]
    assert "neutral.\n            Input: [joyful]" in CLOSED_SET_FROM_LABELS   # the runs of spaces survive


def test_candidate_lists_are_substituted_for_other_class_sets():
    assert prompt_template("labels", MER_CLASSES) == CLOSED_SET_FROM_LABELS      # verbatim for the six
    assert prompt_template("reason", MER_CLASSES) == CLOSED_SET_FROM_REASON
    meld = prompt_template("reason", TASKS["meld"].emotions)
    assert meld.count(f"[{MELD_LIST}]") == 2 and MER_LIST not in meld
    assert prompt_template("labels", TASKS["iemocapfour"].emotions).count("happy, sad, neutral, anger.") == 1
    assert closed_set_prompt(CLOSED_SET_FROM_LABELS, "[a {b}]").endswith("Input: [a {b}]; Output: ")


# ---------------------------------------------------------------- (2) reading a reply

@pytest.mark.parametrize("reply, expected", [
    ("happy.", 0), ("Happy", 0), ("I think sad.", 3), ("  Neutral. Because happy.", 5),
    ("worried, maybe sad", 2),            # the earliest class word in the text
    ("surprised", NO_CLASS),              # whole words only
    ("mixed", NO_CLASS), ("", NO_CLASS), (".sad", NO_CLASS), (None, NO_CLASS),
])
def test_parse_reply(reply, expected):
    assert parse_reply(reply, MER_CLASSES) == expected


# ---------------------------------------------------------------- (3) the scores, checked against sklearn

def test_scores_on_a_hand_case_with_a_no_class_sample():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    view = ClosedSetView("labels", "closed_set_from_labels", ("a", "b", "c"), True, tuple("pqrstu"),
                         gold=(0, 0, 0, 1, 2, 2), predicted=(0, 0, NO_CLASS, 1, 1, 2))
    # by hand: a P=1 R=2/3 F1=0.8 (support 3); b P=1/2 R=1 F1=2/3 (1); c P=1 R=1/2 F1=2/3 (2)
    assert view.accuracy() == pytest.approx(4 / 6)
    assert view.weighted_f1() == pytest.approx((3 * 0.8 + 1 * 2 / 3 + 2 * 2 / 3) / 6)
    assert view.confusion() == [[2, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0]]
    y_true, y_pred = [0, 0, 0, 1, 2, 2], [0, 0, 3, 1, 1, 2]   # no class -> an outside label
    assert view.accuracy() == accuracy_score(y_true, y_pred)
    assert view.weighted_f1() == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="weighted"))
    assert view.confusion() == confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3])[:3].tolist()
    summary = view.summary()
    assert summary["n"] == 6 and summary["n_no_class"] == 1 and summary["classes"] == ["a", "b", "c"]
    assert json.loads(json.dumps(summary)) == summary
    arrays = view.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["predicted"].tolist() == [0, 0, -1, 1, 1, 2] and str(arrays["mode"]) == "labels"


def test_an_empty_view_has_no_scores():
    view = ClosedSetView("lexicon", None, ("a", "b"), True, (), (), ())
    assert view.accuracy() is None and view.weighted_f1() is None and view.confusion() == [[0, 0, 0], [0, 0, 0]]


# ---------------------------------------------------------------- the offline lexicon rule

class WheelLexicon:
    """Five wheels; each label maps to the listed words (the same word on each wheel unless given five)."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table

    def map_all_wheels(self, labels, level="level1"):
        out = [set(), set(), set(), set(), set()]
        for label in labels:
            for i, word in enumerate(self.table.get(label, [""] * 5)):
                if word:
                    out[i].add(word)
        return out


LEX = WheelLexicon({
    "happy": ["happy"] * 5, "joyful": ["happy", "happy", "happy", "happy", "proud"], "sad": ["sad"] * 5,
    "down": ["sad", "sad", "", "", ""], "angry": ["mad"] * 5, "worried": ["scared"] * 5,
    "surprise": ["surprised", "surprised", "", "scared", ""], "shocked": ["surprised", "", "", "scared", ""],
})


@pytest.mark.parametrize("ov, expected", [
    ("[joyful]", "happy"),
    ("[down, joyful]", "happy"),           # joyful matches on 4 wheels, down on 2: most wheels wins
    ("[sad, happy]", "sad"),               # a tie (5 wheels each): the first label wins
    ("[shocked]", "surprise"),             # 2 wheels vs worried's 1
    ("[calm, neutral]", "neutral"),        # exact name (the lexicon maps 'neutral' to nothing)
    ("[]", "neutral"), (None, "neutral"),  # empty list -> neutral, as the published prompt's example
    ("[calm]", None),                      # labels, but none matches
])
def test_lexicon_rule(ov, expected):
    gt = {"s1": "happy"}
    s = AnswerSet("f", {"s1": "text"}, "f.npz", ov_labels={} if ov is None else {"s1": ov})
    view = closed_set_view(task_of("mer2023", gt), s, "lexicon", None, LEX, "level1")
    assert view.predicted == ((MER_CLASSES.index(expected),) if expected else (NO_CLASS,))
    assert view.flags == ["closed-set:lexicon"] and view.prompt is None and not view.extension
    assert "not the published closed-set prompts" in view.note


def test_non_text_answers_and_failed_extractions_have_no_class():
    gt = {"s1": "happy", "s2": "sad", "s3": "sad"}
    s = AnswerSet("f", {"s1": "x", "s3": "y"}, "f.npz", ov_labels={"s1": "[happy]", "s2": "[sad]"},
                  rejected={"s2": "a number"}, extraction_failures=[ExtractionFailure("ov", "s3")])
    view = closed_set_view(task_of("mer2023", gt), s, "lexicon", None, LEX, "level1")
    assert view.predicted == (0, NO_CLASS, NO_CLASS) and view.gold == (0, 3, 3)


def test_a_gold_word_outside_the_classes_names_the_sample():
    s = AnswerSet("f", {"s1": "x"}, "f.npz", ov_labels={"s1": "[joy]"})
    with pytest.raises(UserError, match=r"sample s1 has ground truth 'joy'"):
        closed_set_view(task_of("mer2023", {"s1": "joy"}), s, "lexicon", None, LEX, "level1")


# ---------------------------------------------------------------- (4) lexicon mode on the real MER2023 answers

def test_lexicon_mode_on_real_mer2023(shared_data, tmp_path):
    sample = shared_data / "mer-unibench-sample"
    out = tmp_path / "out"
    assert main(["--model", "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}", "--task", "mer2023",
                 "--data-root", str(sample / "dataset"), "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"),
                 "--output", str(out), "--closed-set", "lexicon", "--no-progress"]) == 0
    folder = out / "affectgpt" / "mer2023"
    reports = sorted(p for p in folder.glob("checkpoint_*.json"))
    assert len(reports) == 7
    for path in reports:
        closed = json.loads(path.read_text())["closed_set"]
        assert closed["classes"] == list(MER_CLASSES) and closed["n"] == 411 and closed["mode"] == "lexicon"
        assert 0 <= closed["accuracy"] <= 1 and 0 <= closed["weighted_f1"] <= 1
        matrix = np.array(closed["confusion"])
        assert matrix.shape == (6, 7) and matrix.sum() == 411 and matrix[:, 6].sum() == closed["n_no_class"]
        assert closed["accuracy"] == pytest.approx(np.trace(matrix[:, :6]) / 411)
        arrays = np.load(path.with_name(path.stem + ".closedset.npz"), allow_pickle=False)
        assert len(arrays["names"]) == 411
        assert (arrays["gold"] == arrays["predicted"]).mean() == pytest.approx(closed["accuracy"])
        assert np.bincount(arrays["gold"]).tolist() == matrix.sum(axis=1).tolist()
    best = json.loads((folder / "checkpoint_000050_loss_0.527.json").read_text())["closed_set"]
    assert best["accuracy"] == pytest.approx(228 / 411)      # pinned: the offline rule on the released answers
    assert best["flags"] == ["closed-set:lexicon"]
    with open(out / "leaderboard.csv", newline="") as fh:   # the hit-rate row is untouched by the view
        row = next(csv.DictReader(fh))
    assert row["mer2023"] == "78.54" and row["model"] == "affectgpt"


# ---------------------------------------------------------------- (5) labels / reason modes through an LLM

def test_labels_mode_asks_the_published_prompt_once_per_distinct_list(tmp_path):
    gt = {"a": "happy", "b": "sad", "c": "neutral", "d": "happy", "e": "worried", "f": "surprise", "g": "angry"}
    ov = {"a": "[joyful]", "b": "[down]", "d": "[joyful]", "e": "[nervous]", "f": "[weird]", "g": "[boom]"}
    s = AnswerSet("f", {n: "text" for n in gt if n != "e"}, "f.npz", ov_labels=ov, rejected={"e": "a list"})
    replies = {"[joyful]": "Output: happy.", "[down]": "I think Sad", "[]": "neutral", "[weird]": "mixed",
               "[boom]": None}
    llm = CannedLLM(replies, cache_dir=tmp_path / "cache")
    view = closed_set_view(task_of("mer2023", gt), s, "labels", llm, None, "level1")
    # c has no labels -> "[]"; d repeats a's list (sent once); e is not text (not asked)
    assert sorted(reason_of(p) for p in llm.asked) == ["[]", "[boom]", "[down]", "[joyful]", "[weird]"]
    assert all(p == CLOSED_SET_FROM_LABELS.replace("{reason}", reason_of(p)) for p in llm.asked)
    assert all(f"words: {MER_LIST}." in p for p in llm.asked)
    assert view.predicted == (0, 3, 5, 0, NO_CLASS, NO_CLASS, NO_CLASS)
    assert view.replies[0] == "happy." and view.replies[4] is None     # post-processed as prompt A's answers
    assert (view.n_failed, view.n_unparsed, view.n_no_class) == (1, 1, 3)
    summary = view.summary()
    assert summary["prompt"] == "closed_set_from_labels" and summary["accuracy"] == pytest.approx(4 / 7)
    assert summary["flags"] == ["closed-set-failures:1"] and "1 failed, 1 unparsed" in summary["note"]
    assert view.to_arrays()["replies"].tolist()[:3] == ["happy.", "I think Sad", "neutral"]
    llm.close()
    again = CannedLLM(replies, cache_dir=tmp_path / "cache")              # a new run: the cache answers
    assert closed_set_view(task_of("mer2023", gt), s, "labels", again, None, "level1").predicted == view.predicted
    assert [reason_of(p) for p in again.asked] == ["[boom]"]              # failures are never cached
    again.close()


def test_reason_mode_sends_the_answer_text():
    gt = {"a": "sad", "b": "happy"}
    s = AnswerSet("f", {"a": "He looks {very} down", "b": "  "}, "f.npz", ov_labels={"a": "[sad]", "b": "[]"})
    llm = CannedLLM({"He looks {very} down": "sad"})
    view = closed_set_view(task_of("mer2023", gt), s, "reason", llm, None, "level1")
    assert llm.asked == [CLOSED_SET_FROM_REASON.replace("{reason}", "He looks {very} down")]
    assert view.predicted == (3, NO_CLASS) and view.prompt == "closed_set_from_reason"   # empty answer: not asked


# ---------------------------------------------------------------- (6) MELD: the task's own labels (extension)

def test_meld_uses_its_seven_labels_and_is_flagged():
    gt = {"dia1_utt0": "anger", "dia1_utt1": "joy", "dia2_utt0": "fear"}
    s = AnswerSet("f", {n: "x" for n in gt}, "f.npz",
                  ov_labels={"dia1_utt0": "[furious]", "dia1_utt1": "[glad]", "dia2_utt0": "[afraid]"})
    llm = CannedLLM({"[furious]": "anger", "[glad]": "Joy.", "[afraid]": "happy"})   # 'happy' is not a MELD class
    view = closed_set_view(task_of("meld", gt), s, "labels", llm, None, "level1")
    assert view.classes == TASKS["meld"].emotions and view.extension
    assert all(f"words: {MELD_LIST}." in p and MER_LIST not in p for p in llm.asked)
    assert view.predicted == (0, 1, NO_CLASS) and view.gold == (0, 1, 5)
    summary = view.summary()
    assert summary["extension"] is True and summary["flags"] == ["closed-set:extension"]
    assert "meld's own labels" in summary["note"] and len(summary["confusion"][0]) == 8


def test_iemocap_lexicon_mode_uses_its_four_labels():
    s = AnswerSet("f", {"x": "t"}, "f.npz", ov_labels={"x": "[angry]"})
    view = closed_set_view(task_of("iemocapfour", {"x": "anger"}), s, "lexicon", None,
                           WheelLexicon({"angry": ["mad"] * 5, "anger": ["mad"] * 5}), "level1")
    assert view.classes == ("happy", "sad", "neutral", "anger") and view.predicted == (3,)
    assert view.flags == ["closed-set:lexicon", "closed-set:extension"]


# ---------------------------------------------------------------- (7) the command line

def test_labels_without_an_llm_extractor_is_one_line(tmp_path, capsys, toy_counts):  # noqa: F811
    bench = build_toy_bench(tmp_path / "b", tasks=("mer2023",))
    capsys.readouterr()
    code = main(["--model", "replay", "--model-args", f"path={bench['model']}", "--task", "mer2023",
                 "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]),
                 "--output", str(tmp_path / "out"), "--closed-set", "labels", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("error: --closed-set labels needs an LLM --extractor (vllm|hf|openai); "
                       "--closed-set lexicon works offline")
    assert not any("Traceback" in line for line in err)


def test_labels_mode_end_to_end_with_a_registered_llm(tmp_path, monkeypatch, toy_counts):  # noqa: F811
    """Through the CLI: MER2023 and MELD toy answers, the closed-set step answered by a registered fake LLM."""
    from unibench.metrics import extraction

    class Echo(LLMExtractor):
        name = "echo"

        def generate(self, prompts):   # echoes the first label of the list
            return [reason_of(p).strip("[]").split(",")[0] + "." for p in prompts]

    extraction._load_builtin()
    monkeypatch.setitem(extraction.EXTRACTORS, "echo", Echo)
    bench = build_toy_bench(tmp_path / "b", tasks=("mer2023", "meld"))
    out = tmp_path / "out"
    assert main(["--model", "replay", "--model-args", f"path={bench['model']}", "--task", "mer2023,meld",
                 "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]), "--output", str(out),
                 "--extractor", "echo", "--extractor-args", "model=echo-model", "--closed-set", "labels",
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    mer = json.loads((out / "toy-model" / "mer2023" / "checkpoint_000010_loss_0.700.json").read_text())
    meld = json.loads((out / "toy-model" / "meld" / "checkpoint_000010_loss_0.700.json").read_text())
    # answer file A gets 3 of 4 basic samples right (the toy benchmark's design); the echo keeps that
    assert mer["closed_set"]["accuracy"] == 0.75 and mer["closed_set"]["extension"] is False
    assert meld["closed_set"]["classes"] == list(TASKS["meld"].emotions) and meld["closed_set"]["extension"]
    assert meld["closed_set"]["accuracy"] == 0.75 and "closed-set:extension" in meld["closed_set"]["flags"]
