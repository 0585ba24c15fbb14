"""The extraction stage of a run: fill an answer set's missing labels with the configured extractor.

Prompt A turns each answer into a label list; for the sentiment tasks prompt
B turns prompt A's raw answer into positive / negative / neutral. What the
authors already extracted (``-openset.npz`` beside the answers) is kept.

The extractions are saved in the original layout (``<answer>-openset.npz``
and ``<answer>-openset-sentiment.npz``, arrays ``filenames`` and
``fileitems``) in the task's results folder, and beside the answer file too
when that folder is writable and holds no such file yet, so the published
scripts (and a later replay) read ours. A failed sample is never saved
beside the answers: a rerun extracts it again, the rest from the cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from unibench.adapters.base import AnswerSet, ExtractionFailure
from unibench.errors import log
from unibench.metrics.extraction import Extractor
from unibench.answerfiles import answer_stem, provenance_path, save_extraction_npz
from unibench.taskdata import SENTIMENT, TaskSpec



def fill_extractions(answer_set: AnswerSet, spec: TaskSpec, extractor: Extractor, output_dir: Path,
                     names: Sequence[str] | None = None) -> dict[str, Any]:
    """Run prompt A (and prompt B for sentiment tasks) where the answer set lacks them.

    ``names`` is the test split in order (only those answers are extracted);
    default: every answer, in file order. Returns a small report (what ran,
    failures, where files were saved); the answer set is updated in place.
    """
    order = [n for n in (names if names is not None else answer_set.answers) if n in answer_set.answers]
    label = extractor.source_label()
    failures: list[ExtractionFailure] = []
    report: dict[str, Any] = {"ov": 0, "sentiment": 0, "saved": []}
    new_ov = new_senti = False

    if answer_set.ov_labels is None:
        results = extractor.extract_ov([answer_set.answers[n] for n in order])
        ov: dict[str, str] = {}
        for name, value in zip(order, results):
            if value is None:
                failures.append(ExtractionFailure("ov", name))
                ov[name] = ""  # scores as an empty prediction
            else:
                ov[name] = str(value)
        answer_set.ov_labels = ov
        answer_set.ov_source = label
        report["ov"] = len(order)
        new_ov = True

    if spec.family == SENTIMENT and answer_set.sentiments is None:
        ov_labels = answer_set.ov_labels or {}
        failed_a = {f.name for f in failures}
        todo = [n for n in order if n in ov_labels and n not in failed_a]
        results = extractor.extract_sentiment([ov_labels[n] for n in todo]) if todo else []
        senti: dict[str, str] = {n: "" for n in order if n in failed_a}  # no labels, no sentiment: unparsed (0)
        for name, value in zip(todo, results):
            if value is None:
                failures.append(ExtractionFailure("sentiment", name))
                senti[name] = ""  # unparsed: counts as 0, as the scorer does for any other word
            else:
                senti[name] = str(value)
        answer_set.sentiments = {n: senti[n] for n in order if n in senti}
        answer_set.sentiment_source = label
        report["sentiment"] = len(todo)
        new_senti = True

    answer_set.extraction_failures.extend(failures)
    report["failures"] = failures

    stem = Path(answer_stem(answer_set.source)).name
    saved: list[str] = []
    targets = [Path(output_dir) / stem]
    beside = _beside_target(answer_set.source, spec, failures, extractor)
    if beside is not None:
        targets.append(beside)
    for base in targets:
        is_beside = base is not targets[0]
        for new, mapping, suffix in ((new_ov, answer_set.ov_labels, "-openset.npz"),
                                     (new_senti, answer_set.sentiments, "-openset-sentiment.npz")):
            if not new or mapping is None:
                continue
            path = Path(f"{base}{suffix}")
            if is_beside and path.exists():
                continue  # never overwrite the authors' (or an earlier run's) files
            try:
                save_extraction_npz(path, mapping)
            except OSError as exc:
                if not is_beside:
                    raise
                log(f"  note: could not save {path} beside the answers ({exc.strerror})")
                continue
            saved.append(str(path))
    if beside is not None and any(s.startswith(str(beside)) for s in saved):
        _write_provenance(beside, extractor, label, new_ov, new_senti)
    report["saved"] = saved
    if saved:
        answer_set.extraction_source = "; ".join(saved)
    return report


def _write_provenance(stem: Path, extractor: Any, label: str, ov: bool, sentiment: bool) -> None:
    import json

    path = provenance_path(stem)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            data = {}
    if not isinstance(data, dict):
        data = {}
    identity = extractor.identity()
    for key, made in (("ov", ov), ("sentiment", sentiment)):
        if made:
            data[key] = {"source": label, "extractor": identity, "backend": extractor.name,
                         "paper_protocol": extractor.paper_protocol}
    try:
        from unibench.results import write_json

        write_json(path, data)  # atomic: a concurrent reader never sees half a note
    except OSError:
        pass  # the npz files are there; only their provenance note is missing


def _beside_target(source: str, spec: TaskSpec, failures: list[ExtractionFailure], extractor: Any) -> Path | None:
    """Where the published scripts look for extractions, when it is ours to write.

    A provenance note (``<answer>-extraction.json``) goes with them, so a
    later replay knows they are not the authors' and flags a non-protocol
    (lexicon) extraction as such.
    """
    path = Path(source)
    if failures or not path.is_file():
        return None
    # A JSONL/CSV holding several tasks would get one file for all of them: only per-task files qualify.
    if path.suffix != ".npz" and path.stem != spec.id:
        return None
    if not os.access(path.parent, os.W_OK):
        return None
    return Path(answer_stem(source))
