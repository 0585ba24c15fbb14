"""Replay tasks scored in parallel processes: the same files, byte for byte, and the same first error."""
from __future__ import annotations

import sys

import pytest

from fixtures import LAYOUT, build_toy_bench, toy_counts  # noqa: F401  (fixture)
from unibench.cli import main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parallel scoring forks (Linux)")
TASKS = ("mer2023", "meld", "cmumosi", "ovmerdplus")


@pytest.fixture
def bench(tmp_path, toy_counts):
    return build_toy_bench(tmp_path, tasks=TASKS)


def _run(bench, out, capsys, *extra):
    capsys.readouterr()
    rc = main(["--model", "replay", "--model-args", f"path={bench['model']}", "--task", ",".join(TASKS),
               "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]), "--output", str(out),
               "--no-progress", *extra])
    return rc, capsys.readouterr().err


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".unibench.lock")}


def test_parallel_results_are_byte_identical_to_serial(bench, tmp_path, capsys):
    rc1, err1 = _run(bench, tmp_path / "serial", capsys, "--jobs", "1", "--log-samples", "all")
    rc4, err4 = _run(bench, tmp_path / "parallel", capsys, "--jobs", "4", "--log-samples", "all")
    assert rc1 == rc4 == 0
    assert _files(tmp_path / "serial") == _files(tmp_path / "parallel")
    assert err1 == err4  # the same lines, in task order


def test_parallel_reports_the_same_first_error(bench, tmp_path, capsys):
    # a check-time problem in the third task: no task is written, and the message is the serial one
    (bench["data"] / LAYOUT["cmumosi"][0] / LAYOUT["cmumosi"][1]).write_bytes(b"not a zip")
    serial = _run(bench, tmp_path / "s", capsys, "--jobs", "1")
    parallel = _run(bench, tmp_path / "p", capsys, "--jobs", "3")
    assert serial[0] == parallel[0] == 2
    assert serial[1] == parallel[1] and serial[1].startswith("error:") and "label.npz" in serial[1]
    assert not (tmp_path / "p" / "toy-model").exists()  # nothing written when a check fails
