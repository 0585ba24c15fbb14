"""`--executor ray` for an LLM extractor: prompts answered by Ray actors, dedup / cache / stats in the driver.

One local Ray instance (2 CPUs, no dashboard) for the whole module; a fake extractor
(tests/ray_extraction_fixtures.py) answers deterministically from the prompt's words.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import ray_extraction_fixtures as fx  # noqa: E402  (registers --extractor fake-llm)
from fixtures import tiny_lexicon_dir, write_run, write_task  # noqa: E402,F401
from unibench.cli import main  # noqa: E402
from unibench.errors import UserError  # noqa: E402
from unibench.metrics.cache import ExtractionCache, cache_key  # noqa: E402
from unibench.metrics.extraction import make_extractor  # noqa: E402
from unibench.prompts import prompt_a  # noqa: E402
from unibench.ray_executor import RayOptions  # noqa: E402
from unibench.ray_executor import pool_size  # noqa: E402
from unibench.ray_extraction import ExtractionPool, chunk_size, make_chunks  # noqa: E402
from unibench.answerfiles import read_extraction_npz  # noqa: E402

CLUES = ["He is happy.", "She looks sad and worried.", "Angry!", "Nothing to see.", "A surprised face, happy too."]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    fx.share_with_ray_workers()
    yield
    ray.shutdown()


def extractor(cache: Path | None, args: str = ""):
    return make_extractor("fake-llm", args, use_cache=cache is not None, cache_dir=cache, progress=False)


def pooled(cache: Path | None, args: str = "", **options):
    ex = extractor(cache, args)
    ex.generation_pool = ExtractionPool(ex, RayOptions(**{"num_workers": 2, **options}))
    return ex


def prompts(n: int = 40) -> list[str]:
    """n prompts, every distinct one asked twice (dedup must send it once)."""
    distinct = [prompt_a(f"{CLUES[i % len(CLUES)]} (sample {i})") for i in range(n // 2)]
    return distinct + distinct[::-1]


def cache_rows(folder: Path, ex, asked: list[str]) -> dict[str, str]:
    """The cache's answer per prompt asked (what is there for each key), and nothing else stored."""
    dec = ex.decoding().as_dict()
    keys = {cache_key(ex.name, ex.model_identity(), dec, p): p for p in set(asked)}
    with ExtractionCache(folder) as cache:
        found = cache.get_many(list(keys))
        assert cache.count() == len(found)  # nothing stored beyond these prompts
    return {keys[k]: v for k, v in found.items()}


def counted(stats) -> dict:
    return {k: getattr(stats, k) for k in ("prompts", "distinct", "hits", "misses", "generated", "failed",
                                           "unfinished")}


# ---------------------------------------------------------------- plain functions

def test_chunks_cover_every_prompt_once_and_balance_the_workers():
    assert chunk_size(20, 2, 8) == 8 and chunk_size(10_000, 2, 8) == 512 and chunk_size(400, 2, 8) == 50
    chunks = make_chunks([str(i) for i in range(21)], 8)
    assert [(c.start, len(c.prompts)) for c in chunks] == [(0, 8), (8, 8), (16, 5)]
    assert [p for c in chunks for p in c.prompts] == [str(i) for i in range(21)]


class FakeCluster:
    """What pool_size reads of ray: the cluster's resources and the free ones."""

    def __init__(self, total, available=None):
        self.total, self.available = total, available if available is not None else total

    def cluster_resources(self):
        return self.total

    def available_resources(self):
        return self.available


def test_pool_size_and_an_impossible_request():
    assert pool_size(RayOptions(num_workers=2), FakeCluster({"CPU": 2})) == 2
    assert pool_size(RayOptions(num_gpus=1), FakeCluster({"CPU": 16, "GPU": 8})) == 8
    assert pool_size(RayOptions(num_gpus=2), FakeCluster({"CPU": 1, "GPU": 8}, {})) == 4
    assert pool_size(RayOptions(num_cpus=2), FakeCluster({"CPU": 16}, {"CPU": 5})) == 2
    with pytest.raises(UserError, match="num_gpus=1: the Ray cluster has 0 GPU"):
        pool_size(RayOptions(num_gpus=1), FakeCluster({"CPU": 2}))
    with pytest.raises(UserError, match="num_cpus=4: the Ray cluster has 2 CPU"):
        pool_size(RayOptions(num_cpus=4), FakeCluster({"CPU": 2}))


# ---------------------------------------------------------------- the pool

def test_pool_equals_local_in_answers_cache_and_stats(tmp_path):
    asked = prompts()
    local = extractor(tmp_path / "local")
    expected = local.complete(asked)
    log = tmp_path / "log"
    log.mkdir()
    ex = pooled(tmp_path / "ray", f"log={log}")
    try:
        assert ex.complete(asked) == expected
        assert cache_rows(tmp_path / "ray", ex, asked) == cache_rows(tmp_path / "local", local, asked)
        assert counted(ex.stats) == counted(local.stats) == {
            "prompts": 40, "distinct": 20, "hits": 0, "misses": 20, "generated": 20, "failed": 0, "unfinished": 0}
        # Dedup stays in the driver: each distinct prompt went to exactly one actor, once; both actors worked.
        assert sorted(fx.generated(log)) == sorted(set(asked))
        pool = ex.generation_pool
        assert len(pool.answered_by) == 2 and sum(pool.answered_by.values()) == 20
        workers = set(pool.answered_by)
        # A second call reuses the same actors (the model is loaded once); answers from the cache are not sent.
        more = [prompt_a(f"Angry again {i}") for i in range(10)]
        assert ex.complete(asked + more) == expected + local.complete(more)
        assert set(pool.answered_by) == workers and sum(pool.answered_by.values()) == 30
        assert ex.stats.hits == 0 and ex.stats.generated == 30  # earlier answers come from this run's memory
    finally:
        ex.generation_pool.close()
        ex.generation_pool.close()  # idempotent
        ex.close()
        local.close()


def test_a_failed_prompt_is_counted_and_never_cached(tmp_path):
    asked = prompts(20)
    ex = pooled(tmp_path / "cache", "fail_on=Nothing to see")
    try:
        out = ex.complete(asked)
    finally:
        ex.generation_pool.close()
    bad = {p for p in asked if "Nothing to see" in p}
    assert bad and all((o is None) == (p in bad) for p, o in zip(asked, out))
    assert ex.stats.failed == len(bad) and ex.stats.generated == 10 - len(bad)
    assert ex.failure_reasons["fake failure"] == len(bad)  # the actors' notes reach the driver's log
    assert set(cache_rows(tmp_path / "cache", ex, asked)) == set(asked) - bad
    ex.close()


def test_an_actor_killed_mid_stream_loses_and_duplicates_nothing(tmp_path):
    asked = prompts(60)
    marker = tmp_path / "died"
    ex = pooled(tmp_path / "cache", f"die_on=Angry,die_marker={marker}")
    try:
        out = ex.complete(asked)
        assert marker.is_file() and ex.generation_pool.deaths == 1
    finally:
        ex.generation_pool.close()
    assert out == extractor(None).complete(asked)
    assert counted(ex.stats) == {"prompts": 60, "distinct": 30, "hits": 0, "misses": 30, "generated": 30,
                                 "failed": 0, "unfinished": 0}
    rows = cache_rows(tmp_path / "cache", ex, asked)
    assert set(rows) == set(asked)  # every prompt once (a key is stored once)
    ex.close()


def test_without_retries_a_dead_actors_prompts_fail_and_are_counted(tmp_path):
    asked = prompts(20)
    ex = pooled(tmp_path / "cache", f"die_on=Angry,die_marker={tmp_path / 'died'}", max_retries=0)
    try:
        out = ex.complete(asked)
    finally:
        ex.generation_pool.close()
    lost = {p for p, o in zip(asked, out) if o is None}
    assert any("Angry" in p for p in lost) and ex.stats.failed == len(lost) < 10  # only the dead chunk
    assert ex.stats.generated + ex.stats.failed == 10
    assert not set(cache_rows(tmp_path / "cache", ex, asked)) & lost
    assert any("extraction worker died" in r for r in ex.failure_reasons)
    ex.close()


def test_a_user_error_on_an_actor_is_the_same_one_line(tmp_path):
    ex = pooled(None, "refuse=fake-llm: no chat template in /models/x")
    try:
        with pytest.raises(UserError) as info:
            ex.complete(prompts(4))
    finally:
        ex.generation_pool.close()
    assert str(info.value) == "fake-llm: no chat template in /models/x"
    assert ex.stats.unfinished == 2 and ex.stats.generated == 0


# ---------------------------------------------------------------- end to end through the CLI

MER = {"m1": "happy", "m2": "sad", "m3": "angry", "m4": "worried", "m5": "surprised"}
MOSI = {"s1": 1.5, "s2": -2.0, "s3": 0.6, "s4": -0.4}


def bench(root: Path) -> tuple[Path, Path]:
    """Invented answers without extraction files: the run must extract."""
    data = root / "data"
    write_task(data, "mer2023", MER)
    write_task(data, "cmumosi", MOSI)
    answers = root / "answers" / "fakegpt"
    for task, gt in (("mer2023", MER), ("cmumosi", MOSI)):
        for epoch, twist in ((10, ""), (20, " and happy")):
            write_run(answers, task, "run1", {f"checkpoint_0000{epoch}_loss_0.5": {
                "answers": {n: f"The character seems {v}{twist}." for n, v in gt.items()}}})
    return data, answers


def run_cli(root: Path, data: Path, answers: Path, lexicon: Path, *extra: str) -> Path:
    mine = root / "answers-copy" / "fakegpt"  # each run its own copy: extractions are saved beside the answers
    shutil.copytree(answers, mine)
    out, log = root / "results", root / "log"
    log.mkdir(parents=True)
    assert main(["--model", "replay", "--model-args", f"path={mine}", "--task", "mer2023,cmumosi",
                 "--data-root", str(data), "--lexicon", str(lexicon), "--output", str(out),
                 "--allow-count-mismatch", "--no-progress", "--bootstrap", "0", "--extractor", "fake-llm",
                 "--extractor-args", f"log={log}", "--cache-dir", str(root / "cache"), *extra]) == 0
    return out


def leaderboard_row(out: Path) -> dict:
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["model"] == "fakegpt"]
    return {k: v for k, v in row.items() if "time" not in k and "date" not in k}


def test_cli_ray_run_equals_the_local_run(tmp_path, tiny_lexicon_dir):
    data, answers = bench(tmp_path)
    local = run_cli(tmp_path / "local", data, answers, tiny_lexicon_dir)
    pooled_out = run_cli(tmp_path / "ray", data, answers, tiny_lexicon_dir,
                         "--executor", "ray", "--ray-args", "num_workers=2")
    assert leaderboard_row(pooled_out) == leaderboard_row(local)
    assert leaderboard_row(local)["mer2023"] == "100.00" and leaderboard_row(local)["cmumosi"] != ""
    # The Ray run's prompts were generated by actors, the local run's here; each distinct prompt once.
    assert {p.stem for p in (tmp_path / "local" / "log").glob("*.log")} == {str(os.getpid())}
    ray_pids = {p.stem for p in (tmp_path / "ray" / "log").glob("*.log")}
    assert ray_pids and str(os.getpid()) not in ray_pids
    assert sorted(fx.generated(tmp_path / "ray" / "log")) == sorted(fx.generated(tmp_path / "local" / "log"))
    saved = sorted(p.relative_to(local) for p in local.rglob("*-openset*.npz"))
    assert len(saved) == 6 and saved == sorted(p.relative_to(pooled_out) for p in pooled_out.rglob("*-openset*.npz"))
    for rel in saved:
        assert read_extraction_npz(pooled_out / rel) == read_extraction_npz(local / rel)
    for task in ("mer2023", "cmumosi"):
        for detail in sorted((local / "fakegpt" / task).glob("checkpoint_*.json")):
            # Everything the result file says, once each run's own folder is named alike.
            mine = (pooled_out / "fakegpt" / task / detail.name).read_text().replace(str(tmp_path / "ray"), "RUN")
            theirs = detail.read_text().replace(str(tmp_path / "local"), "RUN")
            assert json.loads(mine) == json.loads(theirs)
    stats = [json.loads((o / "fakegpt" / "run.json").read_text())["extraction_stats"] for o in (local, pooled_out)]
    assert [counted_dict(s) for s in stats] == [counted_dict(stats[0])] * 2 and stats[0]["generated"] > 0


def counted_dict(stats: dict) -> dict:
    return {k: stats[k] for k in ("prompts", "distinct", "hits", "misses", "generated", "failed")}


def test_a_worker_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """The extractor's class cannot be unpickled on the workers (as on a node without the package)."""
    (tmp_path / "nowhere_backend.py").write_text(
        "from ray_extraction_fixtures import FakeLLMExtractor\n\n"
        "class NowhereExtractor(FakeLLMExtractor):\n    name = 'nowhere'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from nowhere_backend import NowhereExtractor

    ex = NowhereExtractor(fx.FakeOptions())
    ex.generation_pool = ExtractionPool(ex, RayOptions(num_workers=1))
    try:
        with pytest.raises(UserError, match="an extraction worker could not start .*nowhere_backend") as info:
            ex.complete(prompts(4))
    finally:
        ex.generation_pool.close()
    assert "\n" not in str(info.value)


def test_data_parallel_replicas_become_the_pool():
    """--extractor-args data_parallel_size=N: N actors, each with tensor_parallel_size GPUs, even without
    --executor ray; one engine: no pool unless --executor ray gives one."""
    from unibench.metrics.backends.vllm_backend import VLLMExtractor, VLLMOptions
    from unibench.ray_extraction import pool_options

    replicated = VLLMExtractor(VLLMOptions(model="m", data_parallel_size=4, tensor_parallel_size=2), engine=object())
    assert replicated.replicas() == (4, 2.0)
    assert pool_options(replicated, None) == RayOptions(num_workers=4, num_gpus=2.0)
    assert pool_options(replicated, RayOptions(num_workers=9, num_cpus=3, max_retries=5)) == RayOptions(
        num_workers=4, num_gpus=2.0, num_cpus=3, max_retries=5)
    single = VLLMExtractor(VLLMOptions(model="m"), engine=object())
    assert single.replicas() == (1, 0.0) and pool_options(single, None) is None
    given = RayOptions(num_workers=2)
    assert pool_options(single, given) is given
    assert replicated.identity()["data_parallel_size"] == 4
    with pytest.raises(UserError, match="data_parallel_size must be at least 1"):
        VLLMExtractor(VLLMOptions(model="m", data_parallel_size=0), engine=object())
