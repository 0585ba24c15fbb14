"""Runs sharing one --output: no leaderboard row is ever lost, no file is ever half written.

Before the output-folder lock, each run read leaderboard.csv, rebuilt it without
its neighbour's new row and replaced it (up to 13 of 20 rounds lost a row with a
2,000-row leaderboard). These tests race real ``run_bench`` processes, and many
more rounds of the leaderboard update itself, on a pre-filled leaderboard.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import TOY_BEST as TASKS_PRIMARY, build_toy_bench
from unibench.results import LEADERBOARD_COLUMNS, read_leaderboard, update_leaderboard, write_json

PREFILLED = 2000


def prefill(output: Path, n: int = PREFILLED) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "leaderboard.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LEADERBOARD_COLUMNS)
        w.writeheader()
        for i in range(n):
            w.writerow({"model": f"old-{i:05d}", "selection": "best-of-7", "mer2023": "50.00", "mean": "50.00",
                        "n_tasks": "1", "flags": ""})


def _summary(model: str, task: str, value: float) -> dict:
    return {"task": task, "model": model, "primary_metric": "hit_rate", "level": "level1", "n_test": 3,
            "n_files": 1, "files": [{"label": "a", "source": "a.npz", "order": 0, "primary": value,
                                     "metrics": {}, "flags": []}],
            "best": "a", "last": "a", "lexicon_sha256": "x", "task_fingerprint": "y", "flags": []}


def _writer(output: str, model: str, rounds: int, barrier) -> None:
    out = Path(output)
    for r in range(rounds):
        name = f"{model}-r{r:02d}"
        write_json(out / name / "mer2023" / "summary.json", _summary(name, "mer2023", 0.5 + r / 100))
        barrier.wait()  # every worker updates the leaderboard at the same moment
        update_leaderboard(out, name, "best")


def test_update_leaderboard_loses_no_row_over_many_rounds(tmp_path):
    """4 processes x 25 rounds of simultaneous read-modify-write on a 2,000-row leaderboard."""
    prefill(tmp_path)
    workers, rounds = 4, 25
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), f"w{i}", rounds, barrier)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = read_leaderboard(tmp_path / "leaderboard.csv")
    models = {r["model"] for r in rows}
    assert len(rows) == PREFILLED + workers * rounds
    assert {f"old-{i:05d}" for i in range(PREFILLED)} <= models
    assert {f"w{i}-r{r:02d}" for i in range(workers) for r in range(rounds)} <= models
    assert not list(tmp_path.glob("leaderboard.csv.tmp*"))


def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unibench.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("rounds", [4])
def test_concurrent_run_bench_processes_share_one_output(tmp_path, rounds):
    """Real processes: 3 models plus one model split over two processes (different tasks), every round."""
    bench = build_toy_bench(tmp_path, tasks=("mer2023", "cmumosi"))
    out = tmp_path / "results"
    prefill(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "UNIBENCH_CACHE": str(tmp_path / "cache")}
    common = ["--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]), "--output", str(out),
              "--allow-count-mismatch"]
    for r in range(rounds):
        procs = [_cli(["--model", "replay", "--model-args", f"path={bench['model']},name=m{i}-r{r}",
                       "--task", "mer2023", *common], env) for i in range(3)]
        procs += [_cli(["--model", "replay", "--model-args", f"path={bench['model']},name=split-r{r}",
                        "--task", task, *common], env) for task in ("mer2023", "cmumosi")]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            assert "Traceback" not in err
    rows = read_leaderboard(out / "leaderboard.csv")
    by_model = {r["model"]: r for r in rows}
    assert len(rows) == PREFILLED + rounds * 4
    for r in range(rounds):
        for i in range(3):
            assert by_model[f"m{i}-r{r}"]["mer2023"] == TASKS_PRIMARY["mer2023"]
        split = by_model[f"split-r{r}"]  # both tasks in one row, whichever process finished last
        assert split["mer2023"] == TASKS_PRIMARY["mer2023"] and split["cmumosi"] == TASKS_PRIMARY["cmumosi"]
        assert split["n_tasks"] == "2"


def _hold_lock_and_hang(output: str, ready) -> None:
    from unibench.results import output_lock

    with output_lock(Path(output)):
        # a half-written temporary file, as a kill in the middle of a leaderboard rewrite leaves it
        (Path(output) / f"leaderboard.csv.tmp{os.getpid()}").write_text("model,sel")
        ready.set()
        import time

        time.sleep(600)


def test_kill_9_while_holding_the_lock_blocks_nothing_and_loses_nothing(tmp_path):
    prefill(tmp_path, 50)
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_lock_and_hang, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid, 9)
    proc.join(10)
    write_json(tmp_path / "after" / "mer2023" / "summary.json", _summary("after", "mer2023", 0.6))
    rows = update_leaderboard(tmp_path, "after", "best")  # the dead process's lock went with it
    assert len(rows) == 51 and len(read_leaderboard(tmp_path / "leaderboard.csv")) == 51
