#!/usr/bin/env python3
"""Time a replay run end to end: the whole `run_bench` process, as a user starts it.

    python3 benchmarks/replay_speed.py [--runs 7] [--shared ../shared] [--check]

Scores AffectGPT's released answers for MER2023 + CMU-MOSI (14 answer files,
~7.6k answers, ../shared/data/mer-unibench-sample) with the 2025 lexicon. One
untimed warm-up run fills a private lexicon cache first (target: "lexicon cache
warm"); then each timed run is a fresh `python3 run_bench.py ...` subprocess.
Reported: median / min / max wall time, answers per second (at the median),
and peak RSS per run (``ru_maxrss`` of each child, read with ``os.wait4``: the
same field ``getrusage(RUSAGE_CHILDREN)`` reports, but per run so the warm-up
cannot inflate it). For context it also times a bare interpreter start and
`run_bench --list-tasks`. The run's leaderboard is checked (78.54 / 81.30), so
a fast but wrong run never passes.

Targets (issue 2, on the 2-core dev machine): < 0.6 s wall, < 300 MB.
``--check`` exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_WALL_S = 0.6
TARGET_RSS_MB = 300.0
EXPECTED = {"mer2023": "78.54", "cmumosi": "81.30"}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MB, exit status, CPU seconds user+sys) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
    rss_kb = usage.ru_maxrss  # kilobytes on Linux
    return wall, rss_kb / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def count_answers(answers_root: Path, tasks: list[str]) -> tuple[int, int]:
    """(answers, answer files) the run scores."""
    sys.path.insert(0, str(REPO))
    from unibench.adapters.replay import is_answer_npz, read_answer_npz

    n = files = 0
    for task in tasks:
        for run in (answers_root / f"results-{task}").iterdir():
            for f in run.iterdir():
                if is_answer_npz(f):
                    n += len(read_answer_npz(f))
                    files += 1
    return n, files


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("UNIBENCH_SHARED", REPO.parent / "shared")),
                   help="the shared/ folder holding data/mer-unibench-sample (default: ../shared)")
    p.add_argument("--runs", type=int, default=7, help="timed runs (default 7)")
    p.add_argument("--lexicon", default="emotion_wheel-affectgpt2025", help="lexicon folder under shared/data")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()

    sample = args.shared / "data" / "mer-unibench-sample"
    if not sample.is_dir():
        print(f"error: real data not found at {sample} (pass --shared DIR)", file=sys.stderr)
        return 2
    tasks = list(EXPECTED)
    answers = sample / "outputs" / "affectgpt"
    n_answers, n_files = count_answers(answers, tasks)

    work = Path(tempfile.mkdtemp(prefix="unibench-bench-"))
    env = {**os.environ, "UNIBENCH_CACHE": str(work / "cache"), "PYTHONDONTWRITEBYTECODE": "0"}
    cmd = [sys.executable, str(REPO / "run_bench.py"), "--model", "replay", "--model-args", f"path={answers}",
           "--task", ",".join(tasks), "--data-root", str(sample / "dataset"),
           "--lexicon", str(args.shared / "data" / args.lexicon), "--output", str(work / "out")]
    try:
        cold_wall, cold_rss, rc, _ = timed(cmd, env)              # warm-up: compiles the lexicon cache
        if rc != 0:
            print(f"error: the replay run failed (exit {rc}); run it by hand:\n  {' '.join(cmd)}", file=sys.stderr)
            return 2
        walls, rsss, cpus = [], [], []
        for _ in range(args.runs):
            wall, rss, rc, cpu = timed(cmd, env)
            if rc != 0:
                print(f"error: a timed run failed (exit {rc})", file=sys.stderr)
                return 2
            walls.append(wall)
            rsss.append(rss)
            cpus.append(cpu)
        with open(work / "out" / "leaderboard.csv", encoding="utf-8", newline="") as fh:
            row = next(csv.DictReader(fh))
        got = {t: row[t] for t in tasks}
        baseline = statistics.median(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(3))
        startup = statistics.median(timed([sys.executable, str(REPO / "run_bench.py"), "--list-tasks"], env)[0]
                                    for _ in range(3))
        children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = statistics.median(walls)
    peak = max(rsss)
    print(f"replay MER2023 + CMU-MOSI: {n_files} answer files, {n_answers} answers, lexicon {args.lexicon}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"  warm-up (builds the lexicon cache): {cold_wall:.3f} s, {cold_rss:.0f} MB")
    print(f"  wall, lexicon cache warm ({args.runs} runs): median {median:.3f} s  "
          f"(min {min(walls):.3f}, max {max(walls):.3f})")
    cpu = statistics.median(cpus)
    busy = "  (wall well above CPU: the machine was busy)" if median > 1.2 * cpu else ""
    print(f"  CPU time (user+sys) per run: median {cpu:.3f} s; load average {os.getloadavg()[0]:.1f}{busy}")
    print(f"  answers/second: {n_answers / median:,.0f}")
    print(f"  peak RSS per run: {peak:.0f} MB (max over runs; RUSAGE_CHILDREN incl. warm-up: {children_rss:.0f} MB)")
    print(f"  context: bare interpreter {baseline:.3f} s; run_bench --list-tasks {startup:.3f} s")
    ok_values = got == EXPECTED
    ok_wall, ok_rss = median < TARGET_WALL_S, peak < TARGET_RSS_MB
    print(f"  leaderboard {got}: {'ok' if ok_values else 'WRONG, expected ' + str(EXPECTED)}")
    print(f"  targets: wall < {TARGET_WALL_S} s {'met' if ok_wall else 'MISSED'}; "
          f"RSS < {TARGET_RSS_MB:.0f} MB {'met' if ok_rss else 'MISSED'}")
    if not ok_values:
        return 1
    return 1 if args.check and not (ok_wall and ok_rss) else 0


if __name__ == "__main__":
    sys.exit(main())
