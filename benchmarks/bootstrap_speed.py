#!/usr/bin/env python3
"""Time the bootstrap intervals of a full MER-UniBench run: nine tasks x seven answer files.

    python3 benchmarks/bootstrap_speed.py [--resamples 1000] [--files 7] [--repeat 3]

Per-sample score arrays of the protocol's test-split sizes (MER2023 411, MER2024 1169, MELD 2610, IEMOCAP
1241, CMU-MOSI 686, CMU-MOSEI 4659, SIMS 457, SIMS v2 1034, OV-MERD+ 532) are made up (random hits,
precision/recall, sentiments: the cost does not depend on the values), then timed as a run computes them:
per task one resample-count matrix shared by its files and every file's intervals of every headline metric
computed together (metrics.bootstrap.task_intervals),
plus what `run_bench report` adds (the best-of-N selection cost per task). Reported: wall and CPU time per
stage and in total, and peak RSS. Target (issue 10): "a few seconds on this machine".
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from unibench.metrics import bootstrap as bs
from unibench.tasks.base import TASKS


def fake_scores(family: str, n: int, rng: np.random.Generator) -> bs.SampleScores:
    names = [f"sample_{i:06d}" for i in range(n)]
    answered = [True] * n
    if family == "basic":
        hit = rng.integers(0, 2, size=(n, 5)).astype(float)
        hit[rng.random((n, 5)) < 0.05] = np.nan
        return bs.hit_scores(names, hit.tolist(), answered)
    if family == "ov":
        p, r = rng.random((n, 5)), rng.random((n, 5))
        return bs.ov_sample_scores(names, p.tolist(), r.tolist(), answered)
    kept = rng.random(n) > 0.1
    return bs.sentiment_sample_scores(names, kept.tolist(), (rng.random(n) > 0.5).tolist(),
                                      (rng.random(n) > 0.5).tolist(), answered)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resamples", type=int, default=bs.DEFAULT_RESAMPLES)
    p.add_argument("--files", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    tasks = [(spec.id, spec.primary_metric, [fake_scores(spec.family, spec.expected_count, rng)
                                            for _ in range(args.files)]) for spec in TASKS.values()]
    n_samples = sum(files[0].n for _, _, files in tasks)
    print(f"{len(tasks)} tasks x {args.files} answer files, {n_samples} test samples per file set, "
          f"{args.resamples} resamples")
    runs = []
    for _ in range(args.repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _, _, files in tasks:  # what a run does: every file's intervals, a task's files together
            bs.task_intervals(files, args.resamples, bs.DEFAULT_SEED)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        for _, metric, files in tasks:  # what the report adds
            bs.selection_cost(files, metric, args.resamples, bs.DEFAULT_SEED)
        wall2, cpu2 = time.perf_counter(), time.process_time()
        runs.append((wall1 - wall0, cpu1 - cpu0, wall2 - wall1, cpu2 - cpu1))
    best = min(runs, key=lambda r: r[0] + r[2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"intervals (run):        wall {best[0]:.2f} s, CPU {best[1]:.2f} s  "
          f"({len(tasks) * args.files} files)")
    print(f"selection cost (report): wall {best[2]:.2f} s, CPU {best[3]:.2f} s")
    print(f"total:                  wall {best[0] + best[2]:.2f} s; peak RSS {rss:.0f} MB "
          f"(best of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
