#!/usr/bin/env python3
"""Plain baseline: score released replay answers the obvious way, without the harness.

    python3 benchmarks/baseline_replay.py --answers DIR --data-root DIR --lexicon DIR
                                          [--tasks mer2023,cmumosi] [--no-check]

What a user would write from the published protocol (../shared/spec/mer-unibench.md,
sections 4, 5 and 7) with pandas, numpy and scikit-learn, and nothing of this
repository: read the emotion-wheel lexicon with ``pd.read_excel`` / ``pd.read_csv``,
then for every answer file ``results-<task>/<run>/<answer>.npz`` load its
extraction file (``-openset.npz`` for basic tasks, ``-openset-sentiment.npz`` for
sentiment tasks) and loop over the answers: hit rate over wheels 1-5 at level 1
for basic tasks, WAF with ``sklearn.metrics.f1_score(average='weighted')`` for
sentiment tasks; best of N over the answer files; two decimals.

It is the comparison point of ``benchmarks/replay_speed.py`` (its own process,
timed as a whole). Inputs are trusted: every npz is read with
``numpy.load(allow_pickle=True)``. On the AffectGPT sample it must give
MER2023 78.54 and CMU-MOSI 81.30; it exits 1 when it does not (``--no-check``
skips that, e.g. for other data).

Last line printed: ``RESULT <task>=<score> ... answers=<n> files=<n>``.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

# task -> (dataset folder, label file, key, family)
TASKS = {
    "mer2023": ("mer2023-dataset-process", "label-6way.npz", "test1_corpus", "basic"),
    "cmumosi": ("cmumosi-process", "label.npz", "test_corpus", "sentiment"),
}
EXPECTED = {"mer2023": "78.54", "cmumosi": "81.30"}  # published AffectGPT row (best of the released checkpoints)
WHEELS = ["wheel1", "wheel2", "wheel3", "wheel4", "wheel5"]


def string_to_list(value):
    """Published label-list parsing: '' / NaN -> []; drop one leading '[' and one trailing ']';
    split on ' " and , ; strip; drop empty pieces."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    text = str(value)
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [p.strip() for p in re.split(r"[',\"]", text) if p.strip()]


# ------------------------------------------------------------------ the lexicon

def read_format2raws(folder):
    df = pd.read_csv(os.path.join(folder, "format.csv"))
    format2raws = {}
    for _, row in df.iterrows():
        name = row["name"]
        for form in string_to_list(row["format"]):
            format2raws.setdefault(form, []).append(name)
        format2raws.setdefault(name, []).append(name)
    return format2raws


def read_raw_mapping(folder):
    df = pd.read_excel(os.path.join(folder, "synonym.xlsx"))
    raw_mapping = {}
    for run in range(1, 9):
        for _, row in df.iterrows():
            word = row[f"word_run{run}"]
            if pd.isna(word):
                continue
            word = str(word).strip().lower()
            raw_mapping.setdefault(word, set()).add(word)
            for synonym in string_to_list(row[f"synonym_run{run}"]):
                raw_mapping.setdefault(synonym.strip().lower(), set()).add(word)
    return raw_mapping


def read_wheel_level1(folder, wheel):
    """Every level1/level2/level3 word of one wheel -> its level1 word (blank cells repeat the value above)."""
    df = pd.read_excel(os.path.join(folder, f"{wheel}.xlsx"))
    df = df[["level1", "level2", "level3"]].ffill()
    tree = {}
    for _, row in df.iterrows():
        l1, l2, l3 = (str(row[c]).lower().strip() for c in ("level1", "level2", "level3"))
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    mapping = {}
    for l1, children in tree.items():
        mapping[l1] = l1
        for l2, leaves in children.items():
            mapping[l2] = l1
            for l3 in leaves:
                mapping[l3] = l1
    return mapping


def map_label(label, format2raws, raw_mapping, wheel_map):
    """One label -> its wheel word, or None (dropped)."""
    label = label.lower().strip()
    if label not in format2raws:
        return None
    candidates = []
    for form in format2raws[label]:
        candidates.extend(raw_mapping.get(form, ()))
    for candidate in sorted(candidates):
        if candidate in wheel_map:
            return wheel_map[candidate]
    return None


def map_labels(labels, format2raws, raw_mapping, wheel_map):
    out = set()
    for label in labels:
        mapped = map_label(label, format2raws, raw_mapping, wheel_map)
        if mapped is not None:
            out.add(mapped)
    return out


# ------------------------------------------------------------------ the metrics

def hit_rate(gt, pred, format2raws, raw_mapping, wheel_maps):
    """Per wheel: mean |mapped gt & mapped prediction| over samples whose gt maps; mean over wheels."""
    per_wheel = []
    for wheel_map in wheel_maps:
        hits = []
        for name, label in gt.items():
            g = map_labels(string_to_list(label), format2raws, raw_mapping, wheel_map)
            if not g:
                continue
            p = map_labels(string_to_list(pred.get(name, "")), format2raws, raw_mapping, wheel_map)
            hits.append(len(g & p))
        per_wheel.append(np.mean(hits) if hits else 0.0)
    return float(np.mean(per_wheel))


def waf(gt, pred):
    """Keep samples with gt valence != 0; y = gt > 0, y_hat = pred > 0 (neutral counts as negative)."""
    values = {"positive": 1, "negative": -1, "neutral": 0}
    y_true, y_pred = [], []
    for name, val in gt.items():
        if val == 0:
            continue
        y_true.append(val > 0)
        y_pred.append(values.get(pred.get(name), 0) > 0)
    return float(f1_score(y_true, y_pred, average="weighted"))


def read_extraction(path):
    data = np.load(path, allow_pickle=True)
    return dict(zip(data["filenames"].tolist(), data["fileitems"].tolist()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--answers", required=True, help="folder holding results-<task>/<run>/*.npz")
    p.add_argument("--data-root", required=True, help="folder holding <task folder>/label*.npz")
    p.add_argument("--lexicon", required=True, help="folder holding format.csv, synonym.xlsx, wheel1..5.xlsx")
    p.add_argument("--tasks", default="mer2023,cmumosi")
    p.add_argument("--no-check", action="store_true", help="do not require the published 78.54 / 81.30")
    args = p.parse_args()

    format2raws = read_format2raws(args.lexicon)
    raw_mapping = read_raw_mapping(args.lexicon)
    wheel_maps = [read_wheel_level1(args.lexicon, w) for w in WHEELS]

    results, n_answers, n_files = {}, 0, 0
    for task in args.tasks.split(","):
        folder, label_file, key, family = TASKS[task]
        corpus = np.load(os.path.join(args.data_root, folder, label_file), allow_pickle=True)[key].tolist()
        gt = {name: (info["emo"] if family == "basic" else float(info["val"])) for name, info in corpus.items()}
        scores = {}
        for answer_path in sorted(glob.glob(os.path.join(args.answers, f"results-{task}", "*", "*.npz"))):
            if "-openset" in os.path.basename(answer_path):
                continue
            answers = np.load(answer_path, allow_pickle=True)["name2reason"].tolist()
            n_answers += len(answers)
            n_files += 1
            stem = answer_path[:-len(".npz")]
            if family == "basic":
                scores[answer_path] = hit_rate(gt, read_extraction(stem + "-openset.npz"),
                                               format2raws, raw_mapping, wheel_maps)
            else:
                scores[answer_path] = waf(gt, read_extraction(stem + "-openset-sentiment.npz"))
        best = max(scores, key=scores.get)
        results[task] = f"{scores[best] * 100:.2f}"
        print(f"{task}: best of {len(scores)} = {results[task]} "
              f"({os.path.basename(best)[:-4]}; {'hit rate' if family == 'basic' else 'WAF'})")

    print("RESULT " + " ".join(f"{t}={v}" for t, v in results.items()) + f" answers={n_answers} files={n_files}")
    wrong = {t: v for t, v in results.items() if t in EXPECTED and v != EXPECTED[t]}
    if wrong and not args.no_check:
        print(f"error: expected {EXPECTED}, got {results}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
