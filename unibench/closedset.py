"""Closed-set view of the basic tasks: one class per sample, accuracy, weighted F1, confusion.

MER-UniBench scores the basic tasks (MER2023, MER2024, MELD, IEMOCAP) open-vocabulary, by the emotion-wheel
hit rate. Emotion-LLaMA-style papers report a closed-set accuracy / weighted F1 instead; the published code
(toolkit/utils/qwen.py: ``reason_to_onehot_qwen``, ``openset_to_onehot_qwen``) has two prompts that turn an
answer into ONE of MER2023's six classes. ``--closed-set`` adds that view to every basic-task answer file,
beside (never instead of) the hit rate: ``<answer>.closedset.npz`` and the per-file JSON's ``closed_set``.

Class sets. MER2023 / MER2024: the published six, ``happy, angry, worried, sad, surprise, neutral`` (hard-coded in
the prompts). Tasks with their own label set (MELD's seven, IEMOCAP's four: ``TaskSpec.emotions``) use it instead,
substituted for the candidate lists of the prompts (the few-shot examples keep their MER words): a documented
extension, flagged ``closed-set:extension``. The gold class is the task's ground-truth word; a word outside the
class set is an error naming the sample.

Modes.

* ``labels``: prompt ``closed_set_from_labels`` on prompt A's label list (a sample without one gets ``[]``);
* ``reason``: prompt ``closed_set_from_reason`` on the free-text answer (an empty or missing answer is not asked:
  no class).

  Both go through the LLM extractor (``LLMExtractor.complete``: deduplicated, in the extraction cache). The reply
  is read as the original does: the text before its first '.', stripped and lower-cased; the class whose name
  equals it, else the class whose name occurs earliest in it as a whole word, else no class (counted as
  unparsed). A failed generation is no class too (counted as failed).

* ``lexicon`` (offline, flagged ``closed-set:lexicon``; NOT the published prompts): each prompt-A label and each
  class name is mapped through the emotion wheel (``Lexicon.map_all_wheels`` at the run's level: five sets of
  wheel words). A (label, class) pair matches on the wheels where their sets share a word; a label equal to the
  class name beats any wheel overlap (the lexicon maps 'neutral' to nothing, so without this rule only an empty
  list could ever be neutral). The prediction is the class of the strongest pair: exact name first, then the
  most matching wheels; ties go to the label that comes first in the answer's list, then to class order. No pair
  matches: an empty list is 'neutral' when 'neutral' is a class (the published prompt maps ``[]`` to neutral),
  anything else is no class.

In every mode a non-text answer, and a sample whose prompt-A extraction failed (lexicon / labels), is no class.

Scores. A sample with no class is wrong. For sklearn it becomes the label ``len(classes)``, outside the classes:
``accuracy_score`` counts it wrong, and ``f1_score(average="weighted", labels=range(len(classes)))`` counts it as
a missed sample of its true class (lower recall) while the extra label has no F1 and no support of its own, so
the weights stay the true classes' supports. The confusion matrix has a row per true class and a column per
class plus a last "no class" column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from unibench.errors import UserError

# The published closed-set prompts, verbatim (/work/shared/spec/prompts.json; the runs of spaces are part of them).
CLOSED_SET_FROM_REASON = "Please act as an expert in the field of emotions. We provide clues that related to the character's emotions. Based on the provided clues, please identify the emotional states of the main character. The main character is the one with the most detailed clues. Please select one of the following emotion labels that best matches the given clues: [happy, angry, worried, sad, surprise, neutral]. We would like to emphasize that please must only output one label from the above candidates: [happy, angry, worried, sad, surprise, neutral]. You cannot output label outside these candidates, like mixed, happiness. Input: We cannot recognize his emotional state; Output: neutral Input: His emotional state is joyful, happiness, anger; Output: happy Input: While the woman in the video appears to be in a positive emotional state, the audio suggests that the speaker might be experiencing anxiety or nervousness, particularly when discussing the shopping card; Output: worried Input: The character likely experiences a range of positive emotions including excitement, enthusiasm, and confidence. They might feel motivated and inspired by the topic they are discussing, demonstrating a high level of engagement and investment; Output: happy Input: {reason}; Output: "
CLOSED_SET_FROM_LABELS = 'Please act as an expert in the field of emotions.             We provide a few words to describe the emotions of a character.             Please choose the emotion label from the following list that is closest to the given words: happy, angry, worried, sad, surprise, neutral.\n            Input: [joyful]; Output: happy             Input: []; Output: neutral             Input: {reason}; Output: '

PROMPT_NAMES = {"labels": "closed_set_from_labels", "reason": "closed_set_from_reason"}
_TEMPLATES = {"labels": CLOSED_SET_FROM_LABELS, "reason": CLOSED_SET_FROM_REASON}
MER_CLASSES: tuple[str, ...] = ("happy", "angry", "worried", "sad", "surprise", "neutral")
_PUBLISHED_LIST = ", ".join(MER_CLASSES)   # as the prompts write it (also inside the bracketed lists)
MODES = ("lexicon", "labels", "reason")
NO_CLASS = -1
NO_LLM = ("--closed-set {mode} needs an LLM --extractor (vllm|hf|openai); --closed-set lexicon works offline")


# ---------------------------------------------------------------- classes and prompts

def task_classes(spec: Any) -> tuple[tuple[str, ...], bool]:
    """(class names, extension): the task's own label set when it has one, else MER2023's six."""
    classes = tuple(str(e).lower().strip() for e in spec.emotions) if spec.emotions else MER_CLASSES
    return classes, classes != MER_CLASSES


def prompt_template(mode: str, classes: Sequence[str]) -> str:
    """The published prompt of ``mode`` with its candidate lists replaced by ``classes`` (verbatim for the six)."""
    return _TEMPLATES[mode].replace(_PUBLISHED_LIST, ", ".join(classes))


def closed_set_prompt(template: str, reason: str) -> str:
    """``str.replace`` keeps any braces in the answer intact."""
    return template.replace("{reason}", str(reason))


def parse_reply(reply: str | None, classes: Sequence[str]) -> int:
    """A closed-set reply -> class index, or NO_CLASS (None = failed generation)."""
    if reply is None:
        return NO_CLASS
    text = reply.split(".", 1)[0].strip().lower()
    if text in classes:
        return list(classes).index(text)
    found = [(m.start(), i) for i, c in enumerate(classes)
             if (m := re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text)) is not None]
    return min(found)[1] if found else NO_CLASS


class _LexiconClassifier:
    """Prompt-A labels -> one class through the emotion wheel (the rule in the module docstring)."""

    def __init__(self, lexicon: Any, level: str, classes: Sequence[str]):
        self.lexicon, self.level, self.classes = lexicon, level, list(classes)
        self.memo: dict[str, list[set[str]]] = {}
        self.class_sets = [self.wheels(c) for c in self.classes]

    def wheels(self, label: str) -> list[set[str]]:
        hit = self.memo.get(label)
        if hit is None:
            hit = self.memo[label] = self.lexicon.map_all_wheels([label], self.level)
        return hit

    def __call__(self, labels: Sequence[str]) -> int:
        best: tuple[int, int, int, int] | None = None   # (-exact, -wheels, label position, class index)
        for pos, label in enumerate(labels):
            sets = self.wheels(label)
            for k, (name, csets) in enumerate(zip(self.classes, self.class_sets)):
                exact = int(label == name)
                wheels = sum(bool(a & b) for a, b in zip(sets, csets))
                if exact or wheels:
                    key = (-exact, -wheels, pos, k)
                    if best is None or key < best:
                        best = key
        if best is not None:
            return best[3]
        if not labels and "neutral" in self.classes:
            return self.classes.index("neutral")
        return NO_CLASS


# ---------------------------------------------------------------- the view

@dataclass
class ClosedSetView:
    """One answer file's closed-set predictions against the gold classes."""

    mode: str
    prompt: str | None                  # closed_set_from_labels | closed_set_from_reason | None (lexicon)
    classes: tuple[str, ...]
    extension: bool                     # the class list is not the published MER2023 six
    names: tuple[str, ...]
    gold: tuple[int, ...]               # class index per sample
    predicted: tuple[int, ...]          # class index, or NO_CLASS
    replies: tuple[str | None, ...] = ()  # the closed-set step's raw replies (labels / reason; None: not asked/failed)
    flags: list[str] = field(default_factory=list)
    note: str = ""
    n_failed: int = 0                   # generations that failed
    n_unparsed: int = 0                 # replies naming no class

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def n_no_class(self) -> int:
        return sum(p == NO_CLASS for p in self.predicted)

    def _labels(self) -> tuple[list[int], list[int]]:
        """(true, predicted) with NO_CLASS as the outside label len(classes) (see the module docstring)."""
        outside = len(self.classes)
        return list(self.gold), [outside if p == NO_CLASS else p for p in self.predicted]

    def accuracy(self) -> float | None:
        if not self.n:
            return None
        from sklearn.metrics import accuracy_score

        y_true, y_pred = self._labels()
        return float(accuracy_score(y_true, y_pred))

    def weighted_f1(self) -> float | None:
        if not self.n:
            return None
        from sklearn.metrics import f1_score

        y_true, y_pred = self._labels()
        return float(f1_score(y_true, y_pred, labels=list(range(len(self.classes))), average="weighted",
                              zero_division=0))

    def confusion(self) -> list[list[int]]:
        """Rows: true classes; columns: predicted classes, then "no class"."""
        k = len(self.classes)
        if not self.n:
            return [[0] * (k + 1) for _ in range(k)]
        from sklearn.metrics import confusion_matrix

        y_true, y_pred = self._labels()
        matrix = confusion_matrix(y_true, y_pred, labels=list(range(k + 1)))
        return [[int(v) for v in row] for row in matrix[:k]]   # the "no class" row is never a true class

    def summary(self) -> dict[str, Any]:
        """The per-file JSON's ``closed_set`` (schema unibench-report/1, "Closed-set summary")."""
        return {"mode": self.mode, "prompt": self.prompt, "classes": list(self.classes), "extension": self.extension,
                "n": self.n, "accuracy": self.accuracy(), "weighted_f1": self.weighted_f1(),
                "n_no_class": self.n_no_class, "n_failed": self.n_failed, "n_unparsed": self.n_unparsed,
                "confusion": self.confusion(), "flags": list(self.flags), "note": self.note}

    def to_arrays(self) -> dict[str, Any]:
        """Plain arrays for ``np.savez`` (no objects): names, gold, predicted, classes, mode (+ replies)."""
        import numpy as np

        out = {"names": np.array(self.names, dtype=str), "gold": np.array(self.gold, dtype=np.int64),
               "predicted": np.array(self.predicted, dtype=np.int64), "classes": np.array(self.classes, dtype=str),
               "mode": np.array(self.mode, dtype=str)}
        if self.prompt is not None:
            out["replies"] = np.array(["" if r is None else r for r in self.replies], dtype=str)
        return out


def gold_classes(task: Any, classes: Sequence[str]) -> list[int]:
    """The gold class index of every sample; a ground-truth word outside the classes names the sample."""
    out = []
    for name, word in task.gt.items():
        key = str(word).lower().strip()
        if key not in classes:
            raise UserError(f"[{task.spec.id}] closed set: sample {name} has ground truth '{word}', not one of "
                            f"the classes [{', '.join(classes)}]")
        out.append(list(classes).index(key))
    return out


def closed_set_view(task: Any, s: Any, mode: str, extractor: Any, lexicon: Any, level: str) -> ClosedSetView:
    """The closed-set view of one answer file (``s``: an AnswerSet) of a basic task."""
    if mode not in MODES:
        raise UserError(f"--closed-set: unknown mode '{mode}' (none, {', '.join(MODES)})")
    classes, extension = task_classes(task.spec)
    names = tuple(task.names)
    gold = gold_classes(task, classes)
    ov = s.ov_labels or {}
    failed_a = {f.name for f in s.extraction_failures if f.prompt == "ov"}
    usable = [n not in s.rejected for n in names]          # non-text answers: no class in every mode
    flags = ["closed-set:extension"] if extension else []
    ext_note = f"; classes = {task.spec.id}'s own labels (extension)" if extension else ""
    if mode == "lexicon":
        from unibench.labels import normalise_labels

        classify = _LexiconClassifier(lexicon, level, classes)
        predicted = [classify(normalise_labels(ov.get(n) or "[]")) if ok and n not in failed_a else NO_CLASS
                     for n, ok in zip(names, usable)]
        return ClosedSetView(mode, None, classes, extension, names, tuple(gold), tuple(predicted),
                             flags=["closed-set:lexicon", *flags],
                             note="offline mapping through the emotion wheel, not the published closed-set prompts"
                                  f" ({level}){ext_note}")
    from unibench.metrics.llm import LLMExtractor

    if not isinstance(extractor, LLMExtractor):
        raise UserError(NO_LLM.format(mode=mode))
    template = prompt_template(mode, classes)
    inputs: dict[int, str] = {}                              # sample position -> what {reason} becomes
    for i, (n, ok) in enumerate(zip(names, usable)):
        if not ok:
            continue
        if mode == "labels":
            if n not in failed_a:
                inputs[i] = str(ov.get(n) or "[]")
        else:
            answer = s.answers.get(n)
            if isinstance(answer, str) and answer.strip():
                inputs[i] = answer
    asked = list(inputs)
    got = extractor.complete([closed_set_prompt(template, inputs[i]) for i in asked], what=f"closed-set {mode}")
    replies: list[str | None] = [None] * len(names)
    predicted = [NO_CLASS] * len(names)
    n_failed = n_unparsed = 0
    for i, reply in zip(asked, got):
        replies[i] = reply
        predicted[i] = parse_reply(reply, classes)
        if reply is None:
            n_failed += 1
        elif predicted[i] == NO_CLASS:
            n_unparsed += 1
    if n_failed:
        flags.append(f"closed-set-failures:{n_failed}")
    note = (f"published prompt {PROMPT_NAMES[mode]} via {extractor.source_label()}: {len(asked)} of {len(names)} "
            f"samples asked, {n_failed} failed, {n_unparsed} unparsed (no class){ext_note}")
    return ClosedSetView(mode, PROMPT_NAMES[mode], classes, extension, names, tuple(gold), tuple(predicted),
                         tuple(replies), flags, note, n_failed, n_unparsed)
