"""`run_bench --demo`: the whole pipeline on a small bundled suite of invented data.

``suite.json`` beside this file holds everything, all of it made up: sample
names, labels and subtitles for the nine tasks, two demo models' answers with
their extraction outputs, and a small emotion-wheel lexicon. ``materialise``
writes it out in the benchmark's real layouts (label npz files with pickled
dicts, subtitle CSVs, ``results-<task>/<run>/<file>.npz`` answers with
``-openset.npz`` beside them, ``format.csv``/``synonym.xlsx``/``wheel*.xlsx``),
so the demo runs exactly the code a real run uses: the replay adapter, the
lexicon compiler, the scorers and the leaderboard. It is rebuilt only when the
suite changes. No network, no GPU, a few seconds.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from unibench.errors import UserError, log

SUITE_PATH = Path(__file__).with_name("suite.json")
LAYOUT_VERSION = "1"          # bump when materialise() writes something different
STAMP = ".suite-sha256"
BANNER = ("DEMO numbers on invented data (run_bench --demo): they show the pipeline working end to end and are "
          "NOT MER-UniBench results.")


def load_suite(path: Path = SUITE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def suite_hash(path: Path = SUITE_PATH) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(LAYOUT_VERSION.encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- writers (the real file formats)

def _npz_dict(path: Path, **dicts: dict) -> None:
    """Each key holds one pickled dict in a 0-d object array, as the benchmark ships them."""
    arrays = {}
    for key, value in dicts.items():
        holder = np.empty((), dtype=object)
        holder[()] = value
        arrays[key] = holder
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _extraction_npz(path: Path, items: dict[str, str]) -> None:
    np.savez(path, filenames=np.array(list(items), dtype=str), fileitems=np.array(list(items.values()), dtype=str))


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for row in rows:
        ws.append([cell if cell != "" else None for cell in row])   # blank cell: repeats the value above
    wb.save(path)


def write_lexicon(folder: Path, lexicon: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _csv(folder / "format.csv", ["name", "format"], lexicon["format"])
    extra = dict(lexicon.get("run8_extra", []))
    header = [f"{kind}_run{r}" for r in range(1, 9) for kind in ("word", "synonym")]
    rows = []
    for word, synonyms in lexicon["synonyms"]:
        row: list[Any] = []
        for r in range(1, 9):   # eight LLM runs; run 8 adds a few synonyms (the runs are a union)
            row += [word, synonyms + (", " + extra[word] if r == 8 and word in extra else "")]
        rows.append(row)
    _xlsx(folder / "synonym.xlsx", header, rows)
    for wheel, wrows in lexicon["wheels"].items():
        _xlsx(folder / f"{wheel}.xlsx", ["level1", "level2", "level3"], wrows)


def write_dataset(root: Path, tasks: dict[str, Any]) -> None:
    from unibench.tasks import TASKS

    for task_id, entry in tasks.items():
        spec = TASKS[task_id]
        folder = root / spec.folder
        folder.mkdir(parents=True, exist_ok=True)
        samples = entry["samples"]
        if spec.gt_kind == "openset":
            _csv(folder / spec.gt_file, ["name", "openset"], [[s[0], repr(list(s[1]))] for s in samples])
            _csv(folder / spec.subtitle_file, ["name", spec.subtitle_column], [[s[0], s[2]] for s in samples])
            continue
        corpus: dict[str, dict] = {}
        for name, gt, *_ in samples + entry.get("other_sessions", []):
            if spec.gt_kind == "emo_index":
                corpus[name] = {"emo": spec.emotions.index(gt), "val": 0.0}
            elif spec.gt_kind == "val":
                corpus[name] = {"emo": 0, "val": float(gt)}
            else:
                corpus[name] = {"emo": gt, "val": 0.0}
        _npz_dict(folder / spec.gt_file, **{spec.gt_key: corpus, "train_corpus": {}})
        _csv(folder / spec.subtitle_file, ["name", "chinese", spec.subtitle_column],
             [[s[0], s[3], s[2]] for s in samples])


def write_answers(model_dir: Path, model: dict[str, Any]) -> None:
    for task_id, files in model["files"].items():
        for stem, rows in files.items():
            answers = {name: r[0] for name, r in rows.items()}
            ov = {name: r[1] for name, r in rows.items()}
            senti = {name: r[2] for name, r in rows.items() if len(r) > 2}
            if model["layout"] == "results":       # results-<task>/<run>/<file>.npz, extractions beside
                base = model_dir / f"results-{task_id}" / model["run"] / stem
                _npz_dict(base.with_name(base.name + ".npz"), name2reason=answers)
            else:                                  # <task>.jsonl, extractions beside
                base = model_dir / task_id
                base.parent.mkdir(parents=True, exist_ok=True)
                with open(base.with_name(base.name + ".jsonl"), "w", encoding="utf-8") as fh:
                    for name, text in answers.items():
                        fh.write(json.dumps({"name": name, "answer": text}, ensure_ascii=False) + "\n")
            _extraction_npz(base.with_name(base.name + "-openset.npz"), ov)
            if senti:
                _extraction_npz(base.with_name(base.name + "-openset-sentiment.npz"), senti)


def materialise(dest: Path, suite_path: Path = SUITE_PATH) -> Path:
    """Write the suite under ``dest`` (dataset/, lexicon/, answers/<model>/) unless it is already there."""
    sha = suite_hash(suite_path)
    stamp = dest / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == sha:
        return dest
    suite = load_suite(suite_path)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_dataset(tmp / "dataset", suite["tasks"])
        write_lexicon(tmp / "lexicon", suite["lexicon"])
        for name, model in suite["models"].items():
            write_answers(tmp / "answers" / name, model)
        (tmp / STAMP).write_text(sha + "\n", encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except OSError as exc:
        raise UserError(f"demo: cannot write the demo data under {dest} ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------- the command

def run_demo(args: argparse.Namespace) -> int:
    from unibench.adapters.replay import ReplayAdapter, ReplayOptions
    from unibench.metrics.lexicon import load_lexicon
    from unibench.results import format_table, read_paper_rows
    from unibench.runner import RunConfig, run
    from unibench.tasks import resolve_tasks

    output = Path("results/demo") if args.output == "results" else Path(args.output)
    ignored = [flag for flag, value in (("--model", args.model), ("--data-root", args.data_root),
                                        ("--lexicon", args.lexicon)) if value]
    if ignored:
        log(f"note: --demo uses its bundled suite; ignoring {', '.join(ignored)}")
    suite = load_suite()
    specs = resolve_tasks(getattr(args, "task", "all") or "all")
    absent = [s.id for s in specs if s.id not in suite["tasks"]]
    if absent:
        raise UserError(f"the demo suite has no task '{absent[0]}' (it has: {', '.join(suite['tasks'])})")
    # The demo splits are small by design: make them the expected size so rows are not flagged.
    specs = [dataclasses.replace(s, expected_count=len(suite["tasks"][s.id]["samples"])) for s in specs]

    data = materialise(output / "demo-data")
    lexicon = load_lexicon(data / "lexicon", cache_dir=data / ".lexicon-cache")
    if args.select not in ("best", "last"):   # the two demo models' answer files have different names
        raise UserError(f"--demo takes --select best or last, not '{args.select}'")
    select = args.select
    log(f"== {BANNER}")
    rows: list[dict[str, str]] = []
    models = list(suite["models"])
    for model in models:
        adapter = ReplayAdapter(ReplayOptions(path=data / "answers" / model, name=model))
        config = RunConfig(tasks=specs, data_root=data / "dataset", output=output, select=select,
                           level=args.level, allow_count_mismatch=True,
                           closed_set="lexicon",  # the report shows the closed-set view (offline mapping, flagged)
                           extra_metadata={"demo": "invented data, not MER-UniBench results"})
        rows = run(adapter, config, lexicon)
    shown = [r for r in rows if r["model"] in models]
    if getattr(args, "paper", False):
        shown = read_paper_rows() + shown
    print()
    print("=" * 100)
    print(BANNER)
    print("=" * 100)
    print(format_table(shown, highlight=set(models)))
    print(f"\nleaderboard: {output / 'leaderboard.csv'}  (demo data: {data}; lexicon {lexicon.short_hash})")
    from unibench.reports import report_data, write_html

    page = write_html(report_data(output, paper=True), output, output / "report.html")
    print(f"report:      {page}  (one HTML page: table with 95% intervals, plots, worst samples, provenance; "
          f"also: run_bench report --output {output} --format md|latex|csv|json)")
    print("Real data: run_bench --model replay --model-args path=DIR --data-root DIR --lexicon DIR "
          "(see the README)")
    return 0
