"""`--executor ray` inference (unibench.ray_executor): the same answers and scores as a local run, nothing lost or
answered twice when an actor or the driver dies, and clear one-line errors. One local Ray instance per module."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import make_task_folder
import ray_fixtures
from ray_fixtures import count_files
from unibench.adapters.base import Sample
from unibench.adapters.replay import read_answer_npz
from unibench.cli import main
from unibench.errors import MissingExtraError, UserError
from unibench.inference import read_answer_log
from unibench.ray_executor import (RayExecutor, RayOptions, parse_ray_args, pool_size, release_all,
                                   require_ray)

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
NAMES = [f"sample_{i:08d}" for i in range(6)]


@pytest.fixture(scope="module")
def ray_instance():
    # The workers unpickle the test adapters by their module (ray_fixtures): tests/ on the PYTHONPATH of the
    # instance's processes, so the workers of every job (also a CLI in a subprocess joining it) import it.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO), before) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(autouse=True)
def _adapters():
    ray_fixtures.register()
    yield
    ray_fixtures.unregister()


@pytest.fixture
def data_root(tmp_path):
    make_task_folder(tmp_path / "data", "mer2023", n=len(NAMES), media=False)
    make_task_folder(tmp_path / "data", "cmumosi", n=4, media=False)
    return tmp_path / "data"


def cli(capsys, data_root, output, lexicon_dir, *extra, model="test-ray-echo", tasks="mer2023"):
    argv = ["--model", model, "--task", tasks, "--data-root", str(data_root), "--output", str(output),
            "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(lexicon_dir), "--no-progress",
            *extra]
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def answer_files(output: Path) -> dict[str, bytes]:
    """Every npz under ``output`` (answers and their extractions), by its path relative to it."""
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("answers/results-*/*/*.npz"))}


def scores(output: Path) -> dict[str, object]:
    """The leaderboard rows and every summary.json, with the output folder's path taken out."""
    out: dict[str, object] = {"leaderboard": (output / "leaderboard.csv").read_text(encoding="utf-8")}
    for path in sorted(output.glob("*/*/summary.json")):
        text = path.read_text(encoding="utf-8").replace(str(output), "<output>")
        out[str(path.relative_to(output))] = json.loads(text)
    return out


def log_counts(log: Path) -> dict[str, int]:
    records, _ = read_answer_log(log)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["name"]] = counts.get(r["name"], 0) + 1
    return counts


def assert_same_results(local: Path, remote: Path) -> None:
    files = answer_files(local)
    assert files and answer_files(remote) == files  # byte for byte
    assert scores(remote) == scores(local)


# ---------------------------------------------------------------- a real (tiny) model

def test_a_tiny_text_model_answers_and_scores_as_the_local_run(capsys, tmp_path, data_root, tiny_lexicon_dir,
                                                               ray_instance):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_adapter_hf_text import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-qwen2")
    common = ["--model-args", f"path={model},max_new_tokens=6", "--device", "cpu", "--batch-size", "2"]
    rc, _, err = cli(capsys, data_root, tmp_path / "local", tiny_lexicon_dir, *common, model="hf-text",
                     tasks="mer2023,cmumosi")
    assert rc == 0, err
    rc, _, err = cli(capsys, data_root, tmp_path / "ray", tiny_lexicon_dir, *common, "--executor", "ray",
                     "--ray-args", "num_workers=2", model="hf-text", tasks="mer2023,cmumosi")
    assert rc == 0, err
    assert_same_results(tmp_path / "local", tmp_path / "ray")
    answers = read_answer_npz(next((tmp_path / "ray").rglob("results-mer2023/*/hf-text-tiny-qwen2.npz")))
    assert sorted(answers) == NAMES and all(answers.values())


# ---------------------------------------------------------------- the pool

def test_one_adapter_copy_per_actor_across_tasks_and_runs(capsys, tmp_path, data_root, tiny_lexicon_dir,
                                                         ray_instance):
    marks = tmp_path / "marks"
    args = ["--model-args", f"runs=2,marker_dir={marks}", "--batch-size", "1"]
    rc, _, err = cli(capsys, data_root, tmp_path / "local", tiny_lexicon_dir, *args, tasks="mer2023,cmumosi")
    assert rc == 0, err
    local_loads = count_files(marks / "loads")
    rc, _, err = cli(capsys, data_root, tmp_path / "ray", tiny_lexicon_dir, *args, "--executor", "ray",
                     "--ray-args", "num_workers=2", tasks="mer2023,cmumosi")
    assert rc == 0, err
    assert_same_results(tmp_path / "local", tmp_path / "ray")
    ray_loads = {pid: n for pid, n in count_files(marks / "loads").items() if pid not in local_loads}
    # 2 tasks x 2 checkpoints x 6 and 4 samples, answered by two model copies loaded once each
    assert len(ray_loads) == 2 and set(ray_loads.values()) == {1}
    answers = read_answer_npz(tmp_path / "ray" / "test-ray-echo" / "answers" / "results-mer2023" / "test-ray-echo"
                              / "ckpt1.npz")
    assert all(a.startswith("ckpt1: ") for a in answers.values())  # use_run reached the actors


def samples(names=NAMES) -> list[Sample]:
    return [Sample(name=n, task="mer2023", question="How does the person feel?", subtitle=f"subtitle {n}")
            for n in names]


def answer_all(executor: RayExecutor, adapter, batches) -> dict[str, list[tuple]]:
    got: dict[str, list[tuple]] = {}
    for batch, results, seconds in executor.answer_batches(adapter, None, batches):
        assert len(batch) == len(results) and seconds >= 0
        for s, r in zip(batch, results):
            got.setdefault(s.name, []).append(r)
    return got


def test_a_worker_that_keeps_dying_fails_its_batch_after_the_retries(tmp_path, ray_instance):
    adapter = ray_fixtures.RayEchoAdapter(ray_fixtures.RayEchoOptions(die_always_on=NAMES[1], fail_on=NAMES[4],
                                                                      marker_dir=str(tmp_path)))
    # one worker: the batches behind the deadly one on the same actor die with it, and must not be charged for it
    executor = RayExecutor(RayOptions(num_workers=1, max_retries=1))
    try:
        batches = [[s] for s in samples()[:3]] + [samples()[3:]]
        got = answer_all(executor, adapter, batches)
        assert sorted(got) == NAMES and all(len(v) == 1 for v in got.values())  # each sample once
        answer, error = got[NAMES[1]][0]
        assert answer is None and error.startswith("WorkerDied: ") and error.endswith("after 1 retries")
        assert got[NAMES[4]][0] == (None, f"RuntimeError: model exploded on {NAMES[4]}")  # per-sample, as local
        assert all(got[n][0][1] is None for n in NAMES if n not in (NAMES[1], NAMES[4]))
        assert count_files(tmp_path / "calls")[NAMES[0]] == 1
        # the pool lives on (replacements) for the next call
        assert answer_all(executor, adapter, [samples()[:1]])[NAMES[0]][0][1] is None
        release_all()  # e.g. before the extraction pool needs the GPUs
        assert executor._pool is None
        assert answer_all(executor, adapter, [samples()[:1]])[NAMES[0]][0][1] is None  # a new pool
    finally:
        executor.close()
        executor.close()  # idempotent


class FakeHandle:
    """An actor handle that records what it was sent."""

    def __init__(self):
        self.sent: list[str] = []
        self.answer = self

    def remote(self, batch, run):
        self.sent.append(batch[0].name)
        return object()


def test_a_batch_sent_again_after_a_death_runs_alone():
    from collections import deque

    from unibench.ray_executor import _Actor, _Job, _Pool

    busy, idle = _Actor(FakeHandle(), in_flight=1), _Actor(FakeHandle())
    pool = _Pool(adapter=None, blob_ref=None, size=2, epoch=1, actors=[busy, idle])
    retried, *fresh = [_Job([s]) for s in samples()[:4]]
    retried.attempts = 1
    pending, in_flight = deque([retried, *fresh]), {}
    RayExecutor(RayOptions())._submit(pool, pending, in_flight, None)
    # the retried batch alone on the idle actor; the busy one fills up to two; the rest waits
    assert idle.handle.sent == [NAMES[0]] and idle.alone
    assert busy.handle.sent == [NAMES[1]] and busy.in_flight == 2
    assert [j.batch[0].name for j in pending] == NAMES[2:4]
    # a retried batch waits for an idle actor, and nothing jumps ahead of it meanwhile
    again = _Job(samples()[4:5], attempts=1)
    pending.appendleft(again)
    busy.in_flight = 1
    RayExecutor(RayOptions())._submit(pool, pending, in_flight, None)
    assert pending[0] is again and busy.handle.sent == [NAMES[1]]


def test_a_user_error_in_a_worker_stops_the_run_with_its_line(tmp_path, ray_instance):
    adapter = ray_fixtures.RayEchoAdapter(ray_fixtures.RayEchoOptions(user_error_on=NAMES[2]))
    executor = RayExecutor(RayOptions(num_workers=1))
    try:
        with pytest.raises(UserError, match=f"^test-ray-echo: bad setup at {NAMES[2]}$"):
            answer_all(executor, adapter, [[s] for s in samples()])
        assert executor._pool is None  # stopped early: the actors went with it
    finally:
        executor.close()


def test_an_adapter_that_cannot_be_pickled_is_a_clear_error(ray_instance):
    adapter = ray_fixtures.RayEchoAdapter()
    adapter._lock = threading.Lock()  # e.g. a loaded model with a handle that does not pickle
    executor = RayExecutor(RayOptions(num_workers=1))
    with pytest.raises(UserError, match="cannot be sent to Ray workers .*load the model lazily"):
        answer_all(executor, adapter, [samples()[:1]])
    executor.close()


def test_a_worker_that_cannot_start_is_one_line(monkeypatch, ray_instance):
    import unibench.ray_executor as ray_executor

    monkeypatch.setattr(ray_executor, "AnswerWorker", ray_fixtures.BrokenWorker)
    executor = RayExecutor(RayOptions(num_workers=1))
    with pytest.raises(UserError, match=r"a Ray worker could not start \(ImportError: No module named 'unibench'\); "
                                        "every node needs mer-unibench installed"):
        answer_all(executor, ray_fixtures.RayEchoAdapter(), [samples()[:1]])
    executor.close()


class FakeRay:
    def __init__(self, total, available=None):
        self.total, self.available = total, available or total

    def cluster_resources(self):
        return self.total

    def available_resources(self):
        return self.available


def test_pool_size():
    assert pool_size(RayOptions(), FakeRay({"CPU": 16.0}, {"CPU": 5.0})) == 5  # a worker per free CPU
    assert pool_size(RayOptions(num_cpus=2), FakeRay({"CPU": 16.0})) == 8
    assert pool_size(RayOptions(num_gpus=1), FakeRay({"CPU": 64.0, "GPU": 8.0})) == 8  # a model per GPU
    assert pool_size(RayOptions(num_gpus=0.5), FakeRay({"CPU": 64.0, "GPU": 2.0})) == 4
    assert pool_size(RayOptions(num_workers=3), FakeRay({"CPU": 4.0})) == 3
    with pytest.raises(UserError, match="needs 8 GPU.*has 2"):
        pool_size(RayOptions(num_workers=8, num_gpus=1), FakeRay({"CPU": 64.0, "GPU": 2.0}))
    with pytest.raises(UserError, match="num_gpus=1: the Ray cluster has 0 GPU"):
        pool_size(RayOptions(num_gpus=1), FakeRay({"CPU": 64.0}))
    assert parse_ray_args("num_workers=2,num_gpus=1,max_retries=0") == RayOptions(2, 1.0, 1.0, 0)


def test_a_missing_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError) as caught:
        require_ray()
    assert str(caught.value) == "--executor ray needs the 'ray' package: pip install 'mer-unibench[ray]'"


# ---------------------------------------------------------------- deaths

def test_an_actor_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(capsys, tmp_path, data_root,
                                                                          tiny_lexicon_dir, ray_instance):
    marks = tmp_path / "marks"
    rc, _, err = cli(capsys, data_root, tmp_path / "local", tiny_lexicon_dir, "--batch-size", "1")
    assert rc == 0, err
    rc, _, err = cli(capsys, data_root, tmp_path / "ray", tiny_lexicon_dir, "--batch-size", "1",
                     "--model-args", f"die_once_on={NAMES[2]},marker_dir={marks}", "--executor", "ray",
                     "--ray-args", "num_workers=2")
    assert rc == 0, err
    assert (marks / f"died-{NAMES[2]}").is_file()  # a worker process did exit mid-run
    assert "a Ray worker died" in err and "sent again (retry 1 of 2)" in err
    log = tmp_path / "ray" / "test-ray-echo" / "answers" / "mer2023.jsonl"
    assert log_counts(log) == {n: 1 for n in NAMES}
    records, _ = read_answer_log(log)
    assert all(r["error"] is None for r in records)
    assert count_files(marks / "calls")[NAMES[2]] == 1  # answered once, by the replacement
    assert_same_results(tmp_path / "local", tmp_path / "ray")


def test_the_driver_killed_with_sigkill_resumes_from_the_log(capsys, tmp_path, data_root, tiny_lexicon_dir,
                                                             ray_instance):
    n = len(NAMES)
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import ray_fixtures; ray_fixtures.register(); "
            "from unibench.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "--model", "test-ray-echo", "--task", "mer2023", "--data-root",
            str(data_root), "--output", str(tmp_path / "ray"), "--allow-count-mismatch", "--extractor", "lexicon",
            "--lexicon", str(tiny_lexicon_dir), "--no-progress", "--batch-size", "1", "--executor", "ray",
            "--ray-address", ray_instance, "--ray-args", "num_workers=2"]
    log = tmp_path / "ray" / "test-ray-echo" / "answers" / "mer2023.jsonl"
    first, second = tmp_path / "marks1", tmp_path / "marks2"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*argv, "--model-args", f"slow=0.5,marker_dir={first}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 40
    try:
        while time.time() < deadline:
            if log.is_file() and log.read_bytes().count(b"\n") >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("no answers appeared within 40 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = {r["name"] for r in read_answer_log(log)[0] if r["error"] is None}
    assert 2 <= len(finished) < n

    done = subprocess.run([*argv, "--model-args", f"marker_dir={second}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "resuming:" in done.stderr
    asked_again = set(count_files(second / "calls"))
    assert not asked_again & finished  # finished answers are not redone
    assert asked_again | finished == set(NAMES)
    assert log_counts(log) == {n: 1 for n in NAMES}
    rc, _, err = cli(capsys, data_root, tmp_path / "local", tiny_lexicon_dir, "--batch-size", "1")
    assert rc == 0, err
    assert_same_results(tmp_path / "local", tmp_path / "ray")
