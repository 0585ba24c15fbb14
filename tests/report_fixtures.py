"""A report data dict ("unibench-report/1", see unibench/reports.py) assembled from a results folder.

The plot and HTML tests use it so they do not depend on the report builder: it follows the schema
from the files a run writes (leaderboard.csv, summary.json, the per-file JSON, run.json), independently
of unibench.reports, so a bug in one cannot hide behind the same bug in the other.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from unibench.results import load_summaries, read_leaderboard, read_paper_rows, summary_models
from unibench.tasks.base import TASKS


TITLES = {"mer2023": "MER2023", "mer2024": "MER2024", "meld": "MELD", "iemocapfour": "IEMOCAP",
          "cmumosi": "CMU-MOSI", "cmumosei": "CMU-MOSEI", "sims": "SIMS", "simsv2": "SIMS v2",
          "ovmerdplus": "OV-MERD+"}


def _score(value: Any) -> float | None:
    return None if value in (None, "") else round(float(value) * 100, 4)


def _cell_from_leaderboard(row: dict[str, str], task_id: str) -> float | None:
    return round(float(row[task_id]), 4) if row.get(task_id) else None


def build_report_data(output: Path, paper: bool = False) -> dict[str, Any]:
    output = Path(output)
    tasks = [{"id": t, "title": TITLES.get(t, t), "metric": spec.primary_metric,
              "family": spec.family} for t, spec in TASKS.items()]
    folders = summary_models(output)
    models: dict[str, Any] = {}
    for model, folder in folders.items():
        provenance = json.loads((output / folder / "run.json").read_text(encoding="utf-8"))
        entry: dict[str, Any] = {"folder": folder, "provenance": provenance, "tasks": {}}
        for task_id, summary in load_summaries(output, model).items():
            chosen = summary.select("best")
            files = []
            for f in summary.files:
                report = json.loads((output / folder / task_id / f"{f.label}.json").read_text(encoding="utf-8"))
                metric = summary.primary_metric
                per_wheel = {w: round(v[metric] * 100, 4) for w, v in (report.get("per_wheel") or {}).items()
                             if metric in v}
                lo, hi = (f.interval or [None, None])
                files.append({"label": f.label, "order": f.order, "value": _score(f.primary), "lo": _score(lo),
                              "hi": _score(hi), "flags": f.flags, "per_wheel": per_wheel,
                              "extraction": f.extraction, "closed_set": report.get("closed_set")})
            values = np.array([f["value"] for f in files])
            selection = None
            if len(files) > 1:
                median = float(np.median(values))
                selection = {"n_files": len(files), "best": float(values.max()), "median": round(median, 4),
                             "worst": float(values.min()), "spread": round(float(values.max() - values.min()), 4),
                             "expected_max_gain": 1.0, "best_minus_median": round(float(values.max()) - median, 4)}
            samples = output / folder / task_id / f"{chosen.label}.samples.csv"
            selected = next(f for f in files if f["label"] == chosen.label)
            entry["tasks"][task_id] = {
                "metric": summary.primary_metric, "level": summary.level, "lexicon_sha256": summary.lexicon_sha256,
                "flags": summary.flags, "selected": chosen.label,
                "files": [{k: v for k, v in f.items() if k != "closed_set"} for f in files],
                "selection": selection, "closed_set": selected["closed_set"],
                "samples_csv": str(samples.relative_to(output)) if samples.is_file() else None}
        models[model] = entry
    rows = []
    for r in read_leaderboard(output / "leaderboard.csv"):
        model = r["model"]
        tasks_of = models.get(model, {}).get("tasks", {})
        cells = {}
        for t in TASKS:
            if not r.get(t):
                continue
            task = tasks_of.get(t)
            sel = next((f for f in task["files"] if f["label"] == task["selected"]), None) if task else None
            cells[t] = {"value": _cell_from_leaderboard(r, t), "lo": sel and sel["lo"], "hi": sel and sel["hi"],
                        "file": sel and sel["label"], "n_files": task and len(task["files"]),
                        "metric": TASKS[t].primary_metric}
        rows.append({"model": model, "selection": r["selection"], "published": False,
                     "flags": [f for f in r.get("flags", "").split(";") if f],
                     "mean": float(r["mean"]) if r.get("mean") else None, "n_tasks": int(r["n_tasks"] or 0),
                     "cells": cells})
    if paper:
        for r in read_paper_rows():
            cells = {t: {"value": _cell_from_leaderboard(r, t), "lo": None, "hi": None, "file": None,
                         "n_files": None, "metric": TASKS[t].primary_metric} for t in TASKS if r.get(t)}
            rows.append({"model": r["model"], "selection": "published", "published": True, "flags": [],
                         "mean": float(r["mean"]) if r.get("mean") else None, "n_tasks": len(cells),
                         "cells": cells})
    return {"schema": "unibench-report/1", "generated": "2026-11-29T20:00:00", "unibench": "0.1.0",
            "output": str(output), "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95},
            "tasks": tasks, "rows": rows, "models": models}


def closed_set_summary() -> dict[str, Any]:
    """An invented closed-set summary in the schema's shape (six classes plus 'no class')."""
    classes = ["happy", "sad", "neutral", "angry", "surprise", "worried"]
    rng = np.random.default_rng(3)
    confusion = []
    for i in range(len(classes)):
        row = rng.integers(0, 6, size=len(classes) + 1).tolist()
        row[i] += 40
        confusion.append(row)
    n = int(np.sum(confusion))
    correct = sum(confusion[i][i] for i in range(len(classes)))
    return {"mode": "lexicon", "prompt": None, "classes": classes, "extension": False, "n": n,
            "accuracy": correct / n, "weighted_f1": correct / n - 0.02,
            "n_no_class": int(sum(r[-1] for r in confusion)),
            "confusion": confusion, "flags": ["closed-set:lexicon"], "note": "invented for the tests"}


def replay_affectgpt(shared_data: Path, out: Path) -> Path:
    """A real results folder: AffectGPT's seven released checkpoints on MER2023 and CMU-MOSI, replayed by a
    run_bench process into ``out``."""
    sample = shared_data / "mer-unibench-sample"
    subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "run_bench.py"), "--model",
                    "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}", "--task", "mer2023,cmumosi",
                    "--data-root", str(sample / "dataset"), "--lexicon",
                    str(shared_data / "emotion_wheel-affectgpt2025"), "--output", str(out)],
                   check=True, capture_output=True)
    return out
