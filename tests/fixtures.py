"""Synthetic datasets in the benchmark's real layouts, written by the tests themselves.

Nothing here is copied from the real data: the folder names, file names,
npz keys and CSV columns follow the protocol (spec §1), the values are
invented. Writers are independent of the product code on purpose, so a bug in
the loaders cannot hide behind the same bug in the writers.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pytest

# ---------------------------------------------------------------- task layouts

# task id -> (folder, gt file, gt key, subtitle file, subtitle columns)
LAYOUT = {
    "mer2023": ("mer2023-dataset-process", "label-6way.npz", "test1_corpus", "transcription-engchi-polish.csv"),
    "mer2024": ("mer2024-dataset-process", "label-6way.npz", "test1_corpus", "transcription_merge.csv"),
    "meld": ("meld-process", "label.npz", "test_corpus", "transcription-engchi-polish.csv"),
    "iemocapfour": ("iemocap-process", "label_4way.npz", "whole_corpus", "transcription-engchi-polish.csv"),
    "cmumosi": ("cmumosi-process", "label.npz", "test_corpus", "transcription-engchi-polish.csv"),
    "cmumosei": ("cmumosei-process", "label.npz", "test_corpus", "transcription-engchi-polish.csv"),
    "sims": ("sims-process", "label.npz", "test_corpus", "transcription-engchi-polish.csv"),
    "simsv2": ("simsv2-process", "label.npz", "test_corpus", "transcription-engchi-polish.csv"),
    "ovmerdplus": ("ovmerdplus-process", "ovlabel.csv", "name,openset", "subtitle_eng.csv"),
}
MELD_EMOTIONS = ["anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"]
IEMOCAP_EMOTIONS = ["happy", "sad", "neutral", "anger"]
BASIC = ("mer2023", "mer2024", "meld", "iemocapfour")
SENTIMENT = ("cmumosi", "cmumosei", "sims", "simsv2")


def write_label_npz(path: Path, corpora: Mapping[str, Mapping[str, dict]]) -> Path:
    """One pickled dict per key, as the benchmark ships them (0-d object arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, corpus in corpora.items():
        holder = np.empty((), dtype=object)
        holder[()] = dict(corpus) if isinstance(corpus, Mapping) else corpus
        arrays[key] = holder
    np.savez(path, **arrays)
    return path


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _stored(task_id: str, value: Any) -> dict:
    """A gt value as the label npz stores it ('emo' word or index, 'val' float)."""
    if task_id in ("mer2023", "mer2024"):
        return {"emo": value, "val": np.float64(1.0)}
    if task_id == "meld":
        return {"emo": MELD_EMOTIONS.index(value) if isinstance(value, str) else value, "val": 0.0}
    if task_id == "iemocapfour":
        return {"emo": IEMOCAP_EMOTIONS.index(value) if isinstance(value, str) else value, "val": 0.0}
    return {"emo": 0, "val": np.float64(value)}


def write_task(root: Path, task_id: str, gt: Mapping[str, Any], *, subtitles: Mapping[str, str] | None = None,
               decoys: Mapping[str, Any] | None = None, write_subtitles: bool = True) -> Path:
    """Write one task folder under ``root`` in the real layout; returns the folder.

    ``gt`` maps sample names to an emotion word (basic tasks; MELD/IEMOCAP
    words are stored as indices), a valence (sentiment) or a list of words
    (OV-MERD+). ``decoys`` are written where the loader must ignore them
    (another corpus key; for IEMOCAP, sessions 1-4 in the same key).
    """
    folder, gt_file, gt_key, sub_file = LAYOUT[task_id]
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    names = list(gt)
    if task_id == "ovmerdplus":
        rows = [(n, repr(list(v)) if isinstance(v, (list, tuple)) else v) for n, v in gt.items()]
        write_csv(base / gt_file, ["name", "openset"], rows)
    else:
        corpus = {n: _stored(task_id, v) for n, v in gt.items()}
        corpora: dict[str, dict] = {}
        if task_id == "iemocapfour":
            corpus.update({n: _stored(task_id, v) for n, v in (decoys or {}).items()})
            corpora[gt_key] = corpus
        else:
            corpora["train_corpus"] = {n: _stored(task_id, v) for n, v in (decoys or {}).items()}
            corpora[gt_key] = corpus
        write_label_npz(base / gt_file, corpora)
    if write_subtitles:
        subs = subtitles if subtitles is not None else {n: f"subtitle of {n}" for n in names}
        if task_id == "ovmerdplus":
            write_csv(base / sub_file, ["name", "sentence"], [(n, s) for n, s in subs.items()])
        elif task_id == "mer2024":
            write_csv(base / sub_file, ["name", "chinese", "english"], [(n, "中文", s) for n, s in subs.items()])
        else:
            write_csv(base / sub_file, ["name", "chinese", "english"], [(n, "中文字幕", s) for n, s in subs.items()])
    return base


# ---------------------------------------------------------------- answers

def write_extraction_npz(path: Path, items: Mapping[str, str]) -> Path:
    """An authors' extraction file: parallel arrays ``filenames`` and ``fileitems``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, filenames=np.array(list(items), dtype=str), fileitems=np.array(list(items.values()), dtype=str))
    return path


def write_answer_npz(path: Path, answers: Mapping[str, str], ov: Mapping[str, str] | None = None,
                     sentiment: Mapping[str, str] | None = None) -> Path:
    """``<stem>.npz`` (key name2reason) and, if given, ``<stem>-openset.npz`` / ``-openset-sentiment.npz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = np.empty((), dtype=object)
    holder[()] = dict(answers)
    np.savez(path, name2reason=holder)
    stem = str(path)[:-4]
    if ov is not None:
        write_extraction_npz(Path(stem + "-openset.npz"), ov)
    if sentiment is not None:
        write_extraction_npz(Path(stem + "-openset-sentiment.npz"), sentiment)
    return path


def write_run(model_dir: Path, task_id: str, run: str, files: Mapping[str, Mapping[str, Any]]) -> Path:
    """``results-<task>/<run>/<stem>.npz`` for each ``stem -> {'answers', 'ov', 'sentiment'}``."""
    run_dir = model_dir / f"results-{task_id}" / run
    for stem, content in files.items():
        write_answer_npz(run_dir / f"{stem}.npz", content["answers"], content.get("ov"), content.get("sentiment"))
    return run_dir


def answer_text(labels: list[str]) -> str:
    return "The character's emotional state is " + ", ".join(labels) + "." if labels else "I cannot tell."


def ov_string(labels: list[str]) -> str:
    return "[" + ", ".join(labels) + "]"


# ---------------------------------------------------------------- a tiny lexicon

# format.csv rows: a word and its comma-joined surface forms. 'fear', 'fearful'
# and 'fearless' share the form 'fear' (a stemming artefact, as in the real
# file), so 'fear' collects the synonyms of 'fearless' too.
TINY_FORMAT = [
    ("happy", "happy,happiness,happily"),
    ("joyful", "joyful,joy,joyfully"),
    ("sad", "sad,sadness,sadly"),
    ("angry", "angry,anger,angrily"),
    ("worried", "worried,worry,worries"),
    ("fear", "fear,fears,feared"),
    ("fearful", "fearful,fear,fearfully"),
    ("fearless", "fearless,fear,fearlessly"),
    ("surprised", "surprised,surprise,surprising"),
    ("disgusted", "disgusted,disgust"),
    ("calm", "calm,calmness"),
    ("neutral", "neutral,neutrality"),
    ("content", "content,contentment"),
    ("don", "don"),
]
# synonym.xlsx: wheel word -> synonyms (runs 1-7); run 8 adds EXTRA (the runs are a union).
TINY_SYNONYMS = {
    "happy": ["cheerful", "glad"],
    "joyful": ["elated"],
    "sad": ["unhappy", "sorrowful"],
    "angry": ["furious", "mad"],
    "worried": ["anxious", "uneasy"],
    "scared": ["afraid", "fear", "fearful"],
    "brave": ["fearless", "courageous"],
    "surprised": ["amazed", "astonished"],
    "disgusted": ["revolted"],
    "calm": ["relaxed", "peaceful"],
}
TINY_SYNONYMS_RUN8_EXTRA = {"happy": ["content"]}
# wheels: rows (level1, level2, level3); None = blank cell (repeats the value above).
_WHEEL_BASE = [
    ("Happy", "Joyful", "Cheerful"),
    (None, None, "Elated"),
    (None, "Calm", "Relaxed"),
    ("Sad", "Unhappy", "Sorrowful"),
    ("Angry", "Furious", "Mad"),
    ("Scared", "Worried", "Anxious"),
    (None, "Afraid", "Fearful"),
    ("Surprised", "Amazed", "Astonished"),
    ("Disgusted", "Revolted", " Repelled "),
]
TINY_WHEELS = {
    1: _WHEEL_BASE,
    # wheel 2 files 'brave' under happy: 'fear' (via its form 'fearless') lands on happy
    2: _WHEEL_BASE + [("Happy", "Confident", "Brave")],
    # wheel 3 has no 'surprised' cluster: surprise maps to nothing there
    3: [r for r in _WHEEL_BASE if r[0] != "Surprised"],
    4: _WHEEL_BASE,
    5: _WHEEL_BASE,
}


def write_xlsx(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for row in rows:
        ws.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def write_lexicon(folder: Path, fmt=TINY_FORMAT, synonyms=TINY_SYNONYMS, run8_extra=TINY_SYNONYMS_RUN8_EXTRA,
                  wheels=TINY_WHEELS) -> Path:
    """format.csv, synonym.xlsx (8 runs) and wheel1..5.xlsx, in the real formats."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "format.csv", ["name", "format"], fmt)
    header = [f"{kind}_run{r}" for r in range(1, 9) for kind in ("word", "synonym")]
    rows = []
    for word, syns in synonyms.items():
        row = []
        for r in range(1, 9):
            s = syns + (run8_extra.get(word, []) if r == 8 else [])
            row += [word, ", ".join(s)]
        rows.append(row)
    rows.append([None] * len(header))  # blank row: skipped by the reader
    write_xlsx(folder / "synonym.xlsx", header, rows)
    for w, wrows in wheels.items():
        write_xlsx(folder / f"wheel{w}.xlsx", ["level1", "level2", "level3"], wrows)
    return folder


# ---------------------------------------------------------------- shared pytest fixtures (import them by name)

_BUILT: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tiny_lexicon_dir(tmp_path_factory) -> Path:
    """The tiny lexicon's folder (written once per test session)."""
    if "dir" not in _BUILT:
        _BUILT["dir"] = write_lexicon(tmp_path_factory.mktemp("tiny-lexicon"))
    return _BUILT["dir"]


@pytest.fixture(scope="session")
def tiny_lexicon(tiny_lexicon_dir, tmp_path_factory):
    """The tiny lexicon, compiled (once per test session)."""
    if "lex" not in _BUILT:
        from unibench.metrics.lexicon import load_lexicon

        _BUILT["lex"] = load_lexicon(tiny_lexicon_dir, cache_dir=tmp_path_factory.mktemp("tiny-lexcache"))
    return _BUILT["lex"]


# ---------------------------------------------------------------- a toy benchmark with known scores

CKPT_A, CKPT_B = "checkpoint_000010_loss_0.700", "checkpoint_000020_loss_0.600"
TOY_GT = {
    "mer2023": {"m1": "happy", "m2": "sad", "m3": "angry", "m4": "worried"},
    "mer2024": {"n1": "worried", "n2": "happy", "n3": "sad", "n4": "angry"},
    "meld": {"dia1_utt0": "anger", "dia1_utt1": "joy", "dia2_utt0": "sadness", "dia2_utt1": "disgust"},
    "iemocapfour": {"Ses05F_impro01_F000": "happy", "Ses05M_impro01_M001": "sad", "Ses05F_script01_F002": "anger",
                    "Ses05M_script02_M003": "happy"},
    "cmumosi": {"v1": 1.0, "v2": -1.0, "v3": 2.0, "v4": -2.0, "v5": 0.0},
    "cmumosei": {"w1": 1.0, "w2": -1.0, "w3": 2.0, "w4": -2.0, "w5": 0.0},
    "sims": {"x1": 1.0, "x2": -1.0, "x3": 2.0, "x4": -2.0, "x5": 0.0},
    "simsv2": {"y1": 1.0, "y2": -1.0, "y3": 2.0, "y4": -2.0, "y5": 0.0},
    "ovmerdplus": {"o1": ["happy", "sad"], "o2": ["angry"], "o3": []},
}
IEMOCAP_OTHER_SESSIONS = {"Ses01F_impro01_F000": "sad", "Ses04M_script01_M000": "anger"}
# Scores (x100, two decimals) of the two answer files, worked out by hand:
#  basic: A gets 3 of 4 right (75.00), B 2 of 4 (50.00);
#  sentiment: A calls one positive sample negative -> WAF (2/3 + 4/5)/2 = 73.33; B is right everywhere (100.00);
#  OV: both give P = 1, R = 3/4 -> F = 6/7 = 85.71 (a tie: the first file wins 'best').
TOY_A = {**{t: "75.00" for t in BASIC}, **{t: "73.33" for t in SENTIMENT}, "ovmerdplus": "85.71"}
TOY_B = {**{t: "50.00" for t in BASIC}, **{t: "100.00" for t in SENTIMENT}, "ovmerdplus": "85.71"}
TOY_BEST = {**{t: "75.00" for t in BASIC}, **{t: "100.00" for t in SENTIMENT}, "ovmerdplus": "85.71"}
TOY_MEANS = {"best": "87.30", "last": "76.19", "A": "75.45"}


def _wrong(label: str) -> str:
    return "happy" if label in ("sad", "sadness") else "sad"


def toy_answers(task_id: str, which: str) -> dict[str, dict[str, str]]:
    """One answer file's contents: {'answers', 'ov'[, 'sentiment']}."""
    gt = TOY_GT[task_id]
    names = list(gt)
    answers, ov, senti = {}, {}, {}
    for i, name in enumerate(names):
        if task_id in BASIC:
            right = i < 3 if which == "A" else i in (0, 2)
            labels = [gt[name]] if right else [_wrong(gt[name])]
        elif task_id in SENTIMENT:
            positive = gt[name] > 0 if not (which == "A" and name.endswith("3")) else False
            labels = ["happy"] if positive else ["sad"]
            senti[name] = "positive" if positive else "negative"
        else:
            labels = {"o1": ["happy"] if which == "A" else ["joy"], "o2": ["angry"] if which == "A" else
                      ["anger", "furious"], "o3": ["happy"]}[name]
        answers[name] = answer_text(labels)
        ov[name] = ov_string(labels)
    out = {"answers": answers, "ov": ov}
    if task_id in SENTIMENT:
        out["sentiment"] = senti
    return out


def build_toy_bench(root: Path, tasks: Iterable[str] = tuple(LAYOUT), lexicon: bool = True) -> dict[str, Path]:
    """Data root, lexicon and a model's answers (two checkpoints per task) under ``root``."""
    data, model = root / "data", root / "toy-model"
    for tid in tasks:
        write_task(data, tid, TOY_GT[tid], decoys=IEMOCAP_OTHER_SESSIONS if tid == "iemocapfour" else None)
        write_run(model, tid, "run_1", {CKPT_A: toy_answers(tid, "A"), CKPT_B: toy_answers(tid, "B")})
    paths = {"data": data, "model": model}
    if lexicon:
        paths["lexicon"] = write_lexicon(root / "lexicon")
    return paths


@pytest.fixture
def toy_counts(monkeypatch):
    """Make the protocol's expected split sizes those of the toy benchmark (so rows carry no count flag)."""
    import dataclasses

    from unibench.tasks import TASKS

    for tid, gt in TOY_GT.items():
        monkeypatch.setitem(TASKS, tid, dataclasses.replace(TASKS[tid], expected_count=len(gt)))


class AnswersPrompts:
    """Mixin for test extractors: answer free prompts (``complete``, as the grouping metric asks) with the
    class's ``generate(prompts)``: distinct prompts once, post-processed as an LLM backend's answers are."""

    answers_prompts = True

    def complete(self, prompts, what="prompts", postprocess=True):
        from unibench.labels import postprocess_llm_answer

        distinct = list(dict.fromkeys(prompts))
        answers = self.generate(distinct)
        by_prompt = {p: (postprocess_llm_answer(a) if isinstance(a, str) and a.strip() else None)
                     for p, a in zip(distinct, answers)}
        return [by_prompt[p] for p in prompts]
