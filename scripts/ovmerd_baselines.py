#!/usr/bin/env python3
"""Score the OV-MER zero-shot baselines on OV-MERD (an extra task, not one of the nine).

    python3 scripts/ovmerd_baselines.py --baselines ../shared/data/ovmerd/baselines \
        --lexicon ../shared/data/emotion_wheel-affectgpt2025 --output results-ovmerd [run_bench options...]

Runs ``run_bench --task ovmerd --model replay`` once per model folder under
``<baselines>/results-ovmerd/`` (the data root is the folder above
``baselines/``, which holds ``check-openset.csv``), then prints one table:
a row per model and answer-file variant with the EW F-score, precision and
recall (and the grouping metric when ``--ov-metric grouping|both`` is passed
through, which needs an LLM ``--extractor``: the baselines have no cached
groupings). The table is also written to ``<output>/ovmerd_baselines.csv``.
Any further option (``--ov-metric both --extractor vllm --extractor-args
model=...``) goes to ``run_bench`` unchanged.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unibench.cli import main as run_bench  # noqa: E402

METRICS = ("fscore", "precision", "recall", "grouping_accuracy", "grouping_recall", "grouping_average")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baselines", required=True, help="folder holding results-ovmerd/<model>/")
    p.add_argument("--output", default="results-ovmerd")
    p.add_argument("--data-root", help="folder with check-openset.csv (default: the folder above --baselines)")
    args, passthrough = p.parse_known_args(argv)
    base = Path(args.baselines)
    models = sorted(d.name for d in (base / "results-ovmerd").iterdir() if d.is_dir()) \
        if (base / "results-ovmerd").is_dir() else []
    if not models:
        print(f"error: no model folders under {base / 'results-ovmerd'}", file=sys.stderr)
        return 2
    data_root = args.data_root or str(base.resolve().parent)
    rows = []
    for model in models:
        rc = run_bench(["--task", "ovmerd", "--data-root", data_root, "--model", "replay",
                        "--model-args", f"path={base},run={model},name={model}", "--output", args.output,
                        *passthrough])
        if rc != 0:
            return rc
        with open(Path(args.output) / model / "ovmerd" / "summary.json", encoding="utf-8") as fh:
            summary = json.load(fh)
        for f in summary["files"]:
            variant = f["label"].replace("output-reason-7b-", "")
            rows.append({"model": model, "variant": variant,
                         **{k: f"{f['metrics'][k] * 100:.2f}" for k in METRICS if k in f["metrics"]},
                         "flags": ";".join(f["flags"])})
    columns = ["model", "variant", *[k for k in METRICS if any(k in r for r in rows)], "flags"]
    out = Path(args.output) / "ovmerd_baselines.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
