"""`--shard I/N` and `run_bench merge` (unibench.shards): a Slurm job array's shards merged equal one run."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import make_task_folder
from unibench.adapters.base import ADAPTERS, Adapter, AnswerRun, Sample, register_adapter
from unibench.adapters.replay import read_answer_npz
from unibench.cli import main
from unibench.inference import AnswerLog, read_answer_log, shard_log_path, shard_names, shard_of

TASKS = "mer2023,cmumosi"
WORDS = ["happy", "sad", "worried", "angry"]


@dataclass
class ShardOptions:
    name: str = ""
    style: str = "plain"
    runs: int = 0  # answer files per task (like checkpoints); 0: one, named after the model
    device: str = "auto"


class ShardAdapter(Adapter):
    """Answers from the sample's name (and checkpoint): deterministic, instant, countable."""

    name = "test-shard"
    description = "test adapter"
    inputs = ("subtitle",)
    Options = ShardOptions
    asked: ClassVar[list[str]] = []
    fail_names: ClassVar[set[str]] = set()

    def __init__(self, options=None):
        super().__init__(options)
        self.current = ""

    def answer_runs(self) -> list[AnswerRun]:
        return [AnswerRun(f"ckpt{i}", "ckpts", f"id{i}") for i in range(self.options.runs)]

    def use_run(self, run: AnswerRun) -> None:
        self.current = run.label

    def answer(self, samples: list[Sample]) -> list:
        out = []
        for s in samples:
            ShardAdapter.asked.append(s.name)
            if s.name in ShardAdapter.fail_names:
                out.append(RuntimeError(f"model exploded on {s.name}"))
                continue
            i = int(s.name[-2:])
            word = "sad" if self.current == "ckpt1" and i % 3 == 0 else WORDS[i % len(WORDS)]
            out.append(f"The person seems {word}. ({self.options.style})")
        return out


@pytest.fixture(autouse=True)
def _adapter():
    register_adapter(ShardAdapter)
    ShardAdapter.asked.clear()
    ShardAdapter.fail_names = set()
    yield
    ADAPTERS.pop(ShardAdapter.name, None)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shard-data")
    make_task_folder(root, "mer2023", n=13, media=False)
    make_task_folder(root, "cmumosi", n=11, media=False)
    return root


def args(data_root: Path, output: Path, lexicon: Path, *extra: str, tasks: str = TASKS) -> list[str]:
    return ["--model", "test-shard", "--task", tasks, "--data-root", str(data_root), "--output", str(output),
            "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(lexicon), "--no-progress",
            "--bootstrap", "0", *extra]


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def leaderboard(output: Path) -> dict[str, str]:
    with open(output / "leaderboard.csv", encoding="utf-8") as fh:
        return next(csv.DictReader(fh))


def summary(output: Path, task: str) -> dict:
    data = json.loads((output / "test-shard" / task / "summary.json").read_text())
    return {f["label"]: (f["primary"], f["metrics"], f["flags"]) for f in data["files"]}


def npz_files(output: Path) -> dict[str, dict[str, str]]:
    answers = output / "test-shard" / "answers"
    return {str(p.relative_to(answers)): read_answer_npz(p) for p in sorted(answers.rglob("*.npz"))
            if "openset" not in p.name}


def run_shards(capsys, data_root, output, lexicon, n: int, *extra: str, tasks: str = TASKS) -> list[str]:
    said = []
    for i in range(n):
        rc, out, err = cli(capsys, args(data_root, output, lexicon, "--shard", f"{i}/{n}", *extra, tasks=tasks))
        assert rc == 0, err
        said.append(err)
    return said


def strip_seconds(log: Path) -> list[dict]:
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in read_answer_log(log)[0]]


# ---------------------------------------------------------------- the split

def test_the_split_is_stable_and_complete():
    names = [f"sample_{i:08d}" for i in range(200)] + ["Ses05F_impro01_F001", "caf\u00e9", "bad\udcff"]
    for n in (1, 2, 3, 8):
        shards = [shard_names(names, i, n) for i in range(n)]
        assert sorted(x for s in shards for x in s) == sorted(names)  # every name in exactly one shard
        assert all(shard_of(x, n) == i for i, s in enumerate(shards) for x in s)
    # sha256, not hash(): the same on every machine and Python version (computed once, hard-coded)
    assert shard_of("sample_00000000", 8) == 1
    assert shard_of("sample_00000001", 8) == 4
    assert [len(shard_names(names[:200], i, 8)) for i in range(8)] == [19, 27, 27, 30, 24, 27, 26, 20]
    assert shard_log_path(Path("a/answers/mer2023.jsonl"), 3, 8) == Path("a/answers/mer2023.shard-3-of-8.jsonl")


# ---------------------------------------------------------------- shards + merge == one run

@pytest.mark.parametrize("runs", [0, 2], ids=["one-answer-file", "two-checkpoints"])
def test_shards_merged_then_scored_equal_the_unsharded_run(capsys, data_root, tmp_path, tiny_lexicon_dir, runs):
    model_args = ["--model-args", f"runs={runs}"]
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    rc, _, err = cli(capsys, args(data_root, whole, tiny_lexicon_dir, *model_args))
    assert rc == 0, err
    asked_whole = sorted(ShardAdapter.asked)
    ShardAdapter.asked.clear()

    said = run_shards(capsys, data_root, sharded, tiny_lexicon_dir, 2, *model_args)
    assert sorted(ShardAdapter.asked) == asked_whole  # each sample answered once, by its shard
    answers = sharded / "test-shard" / "answers"
    logs = sorted(str(p.relative_to(answers)) for p in answers.rglob("*.jsonl"))
    stems = [f"{t}/ckpt{r}" for t in ("cmumosi", "mer2023") for r in range(runs)] if runs else ["cmumosi", "mer2023"]
    assert logs == sorted(f"{stem}.shard-{i}-of-2.jsonl" for stem in stems for i in (0, 1))
    assert npz_files(sharded) == {}  # a shard writes no npz, scores nothing, touches no leaderboard
    assert not (sharded / "leaderboard.csv").exists() and not (sharded / "test-shard" / "mer2023").exists()
    lines = [line for line in said[0].splitlines() if line.strip()]
    assert len(lines) == 2 * max(1, runs) + 1, said[0]  # one line per answer file, then the end of the shard
    assert lines[0].startswith("shard 0/2 of mer2023") and "run `run_bench merge` with the same arguments" in lines[0]
    assert "cmumosi" in lines[-2] and "Traceback" not in said[0]
    assert lines[-1].startswith("shard 0/2 done:") and not lines[-1].startswith("error")

    ShardAdapter.asked.clear()
    rc, out, err = cli(capsys, ["merge", *args(data_root, sharded, tiny_lexicon_dir, *model_args)])
    assert rc == 0, err
    assert ShardAdapter.asked == []  # merging never asks the model
    assert "[mer2023" in out and "merged 2 shards" in out and "0 failed" in out and "next: run_bench" in out
    first_merge = {p: p.read_bytes() for p in answers.rglob("*") if p.is_file()}

    rc, out, err = cli(capsys, ["merge", *args(data_root, sharded, tiny_lexicon_dir, *model_args)])
    assert rc == 0, err  # merging again is idempotent
    assert {p: p.read_bytes() for p in answers.rglob("*") if p.is_file()} == first_merge

    rc, _, err = cli(capsys, args(data_root, sharded, tiny_lexicon_dir, *model_args))
    assert rc == 0, err
    assert ShardAdapter.asked == []  # the final run finds every sample answered: it only extracts and scores
    assert npz_files(sharded) == npz_files(whole)
    for task in ("mer2023", "cmumosi"):
        assert summary(sharded, task) == summary(whole, task)
    # the merged logs are the normal ones: test-split order, the same records as the unsharded run's
    normal = sorted(p.relative_to(whole) for p in (whole / "test-shard" / "answers").rglob("*.jsonl"))
    assert len(normal) == len(stems)
    for log in normal:
        assert strip_seconds(sharded / log) == strip_seconds(whole / log)
    assert leaderboard(sharded) == leaderboard(whole)
    assert leaderboard(whole)["mer2023"] not in ("", "0.00") and leaderboard(whole)["cmumosi"] not in ("", "0.00")


def test_a_shard_resumes_its_own_log_and_failures_are_counted(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    bad = shard_names([f"sample_{i:08d}" for i in range(13)], 1, 2)[0]
    ShardAdapter.fail_names = {bad}
    run_shards(capsys, data_root, out_dir, tiny_lexicon_dir, 2, tasks="mer2023")
    ShardAdapter.asked.clear()
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--shard", "0/2", tasks="mer2023"))
    assert rc == 0 and ShardAdapter.asked == [], err  # shard 0 was complete: nothing asked again

    rc, out, err = cli(capsys, ["merge", *args(data_root, out_dir, tiny_lexicon_dir, tasks="mer2023")])
    assert rc == 0, err
    assert "1 failed" in out and bad in out and "--shard 1/2" in out
    ShardAdapter.fail_names = set()
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, tasks="mer2023"))
    assert rc == 0, err
    assert ShardAdapter.asked == [bad]  # the run without --shard retries the failed sample only
    assert "failed" not in leaderboard(out_dir)["flags"]


def test_an_empty_shard_still_counts_as_run(capsys, tmp_path, tiny_lexicon_dir):
    root = tmp_path / "data"
    make_task_folder(root, "mer2023", n=2, media=False)
    run_shards(capsys, root, tmp_path / "out", tiny_lexicon_dir, 5, tasks="mer2023")
    rc, out, err = cli(capsys, ["merge", *args(root, tmp_path / "out", tiny_lexicon_dir, tasks="mer2023")])
    assert rc == 0, err
    assert "merged 5 shards" in out and "2 answers" in out


# ---------------------------------------------------------------- refusals: one line, exit 2

def merge(capsys, data_root, out_dir, lexicon, *extra) -> str:
    rc, _, err = cli(capsys, ["merge", *args(data_root, out_dir, lexicon, *extra, tasks="mer2023")])
    assert rc == 2, err
    return one_line_error(err)


def test_merge_refuses_a_missing_shard_mixed_n_and_no_shards(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "no shard logs mer2023.shard-I-of-N.jsonl" in line and "--shard I/N" in line

    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--shard", "1/3", tasks="mer2023"))
    assert rc == 0, err
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "shard 0/3 is missing" in line and "mer2023.shard-0-of-3.jsonl" in line and "missing shards: 0, 2" in line

    run_shards(capsys, data_root, out_dir, tiny_lexicon_dir, 2, tasks="mer2023")
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "shard logs of different N are mixed" in line and "of-2.jsonl" in line and "of-3.jsonl" in line
    assert not (out_dir / "test-shard" / "answers" / "mer2023.jsonl").exists()  # nothing written


def test_merge_refuses_an_incomplete_shard_and_a_sample_in_the_wrong_shard(capsys, data_root, tmp_path,
                                                                            tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    run_shards(capsys, data_root, out_dir, tiny_lexicon_dir, 2, tasks="mer2023")
    answers = out_dir / "test-shard" / "answers"
    shard1 = answers / "mer2023.shard-1-of-2.jsonl"
    lines = shard1.read_bytes().splitlines(keepends=True)
    shard1.write_bytes(b"".join(lines[:-2]))  # a job killed before its last two samples
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "incomplete: shard 1/2 lacks 2 sample(s)" in line and str(shard1) in line and "rerun --shard 1/2" in line

    shard0 = answers / "mer2023.shard-0-of-2.jsonl"
    shard1.write_bytes(b"".join(lines) + shard0.read_bytes().splitlines(keepends=True)[0])
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "belongs to shard 0/2, not 1/2" in line and str(shard1) in line


def test_a_shard_log_of_another_setup_is_refused(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--shard", "0/2", "--model-args",
                                  "style=loud", tasks="mer2023"))
    assert rc == 0, err
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--shard", "1/2", "--question", "ovmer",
                                  tasks="mer2023"))
    assert rc == 0, err
    # the shard run itself refuses to mix setups in its log, as a normal run does
    ShardAdapter.asked.clear()
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--shard", "0/2", tasks="mer2023"))
    assert rc == 2 and ShardAdapter.asked == []
    line = one_line_error(err)
    assert "mer2023.shard-0-of-2.jsonl holds answers from a different setup (style: loud -> plain)" in line
    # merge with either setup's arguments: the other shard's records have another key
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "mer2023.shard-0-of-2.jsonl holds answers from a different setup" in line
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir, "--model-args", "style=loud")
    assert "mer2023.shard-1-of-2.jsonl holds answers from a different setup" in line and "question" in line


def test_merge_refuses_a_normal_log_of_another_setup(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    run_shards(capsys, data_root, out_dir, tiny_lexicon_dir, 2, tasks="mer2023")
    rc, _, err = cli(capsys, args(data_root, out_dir, tiny_lexicon_dir, "--question", "ovmer", "--limit", "1",
                                  tasks="mer2023"))
    assert rc == 0, err
    line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert "answers/mer2023.jsonl holds answers from a different setup" in line


@pytest.mark.parametrize("value", ["2/2", "x", "1/0", "-1/2"])
def test_a_bad_shard_value_is_one_line(capsys, data_root, tmp_path, tiny_lexicon_dir, value):
    rc, _, err = cli(capsys, args(data_root, tmp_path / "out", tiny_lexicon_dir, f"--shard={value}"))
    assert rc == 2
    assert f"--shard {value}" in one_line_error(err)
    assert ShardAdapter.asked == []


def test_merge_takes_the_run_arguments_without_shard(capsys, data_root, tmp_path, tiny_lexicon_dir):
    line = merge(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--shard", "0/2")
    assert "without --shard" in line
    rc, _, err = cli(capsys, ["merge", "--model", "replay", "--model-args", f"path={tmp_path}",
                              "--data-root", str(data_root)])
    assert rc == 2 and "does not generate answers" in one_line_error(err)


def test_merge_refuses_a_shard_still_being_written(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    run_shards(capsys, data_root, out_dir, tiny_lexicon_dir, 2, tasks="mer2023")
    shard1 = out_dir / "test-shard" / "answers" / "mer2023.shard-1-of-2.jsonl"
    writer = AnswerLog(shard1, shard1.stat().st_size)  # a job of the array still running
    try:
        line = merge(capsys, data_root, out_dir, tiny_lexicon_dir)
    finally:
        writer.close()
    assert str(shard1) in line and "still writing" in line
