"""The extraction cache and the LLM extractor base: hits, dedup, sharing, kill -9, corruption."""
from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unibench.errors import UserError
from unibench.metrics.cache import DB_NAME, ExtractionCache, cache_key
from unibench.metrics.llm import LLMExtractor, LLMOptions, format_stats, make_decoding

REPO = Path(__file__).resolve().parent.parent


class FakeLLM(LLMExtractor):
    """Answers '[word<k>]' from the prompt's length; records what it was asked."""

    name = "fake"
    stream_chunk = 3

    def __init__(self, cache_dir: Path | None, fail: set[str] = frozenset(), empty: set[str] = frozenset(),
                 **options):
        super().__init__(LLMOptions(model="fake-model", **options))
        self.cache_dir = cache_dir
        self.use_cache = cache_dir is not None
        self.progress = False
        self.fail, self.empty = fail, empty
        self.asked: list[str] = []

    def generate(self, prompts: list[str]) -> list[str | None]:
        self.asked.extend(prompts)
        out: list[str | None] = []
        for p in prompts:
            reason = p.split("Input: ")[-1].rsplit("; Output:", 1)[0]
            if reason in self.fail:
                out.append(None)
            elif reason in self.empty:
                out.append("  \n")
            else:
                out.append(f"Output: [{reason.upper()}, calm]\n")
        return out


def reasons_of(prompts: list[str]) -> list[str]:
    return [p.split("Input: ")[-1].rsplit("; Output:", 1)[0] for p in prompts]


def test_cache_key_covers_every_part():
    dec = make_decoding(False, 512).as_dict()
    base = cache_key("hf", "m@1", dec, "p")
    assert base == cache_key("hf", "m@1", dict(reversed(list(dec.items()))), "p")  # canonical order
    assert len(base) == 64
    others = {cache_key("vllm", "m@1", dec, "p"), cache_key("hf", "m@2", dec, "p"),
              cache_key("hf", "m@1", make_decoding(True, 512).as_dict(), "p"),
              cache_key("hf", "m@1", make_decoding(False, 256).as_dict(), "p"), cache_key("hf", "m@1", dec, "p ")}
    assert base not in others and len(others) == 5


def test_decoding_defaults_and_paper_sampling():
    assert make_decoding(False, 512).as_dict() == {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0,
                                                   "max_tokens": 512}
    # a seed changes nothing under greedy decoding, so it must not split the cache
    assert make_decoding(False, 512, seed=3).as_dict() == make_decoding(False, 512).as_dict()
    assert make_decoding(True, 512, seed=3).as_dict() == {"temperature": 0.7, "top_p": 0.8,
                                                          "repetition_penalty": 1.05, "max_tokens": 512, "seed": 3}
    with pytest.raises(UserError, match="max_tokens"):
        make_decoding(False, 0)


def test_hit_miss_and_dedup(tmp_path):
    answers = ["happy", "sad", "happy", "angry", "sad", "happy"]
    ext = FakeLLM(tmp_path / "c")
    first = ext.extract_ov(answers)
    assert first == ["[HAPPY, calm]", "[SAD, calm]", "[HAPPY, calm]", "[ANGRY, calm]", "[SAD, calm]", "[HAPPY, calm]"]
    assert reasons_of(ext.asked) == ["happy", "sad", "angry"]  # each distinct prompt once
    assert {k: getattr(ext.stats, k) for k in ("prompts", "distinct", "hits", "misses", "generated", "failed")} == \
        {"prompts": 6, "distinct": 3, "hits": 0, "misses": 3, "generated": 3, "failed": 0}
    ext.close()

    again = FakeLLM(tmp_path / "c")
    assert again.extract_ov(answers + ["calm"]) == first + ["[CALM, calm]"]
    assert reasons_of(again.asked) == ["calm"]
    assert (again.stats.hits, again.stats.misses) == (3, 1)
    assert "3 cache hits, 1 generated" in format_stats(again.stats)
    ident = again.identity()
    assert ident["cache"] == str(tmp_path / "c" / DB_NAME)
    assert ident["decoding"]["temperature"] == 0.0 and ident["prompts"]["prompt_a"]
    again.close()

    # paper sampling is another decoding: nothing is reused
    sampled = FakeLLM(tmp_path / "c", paper_sampling=True, seed=1)
    sampled.extract_ov(["happy"])
    assert reasons_of(sampled.asked) == ["happy"]
    sampled.close()


def test_answers_are_reused_within_a_run_without_a_cache(tmp_path):
    ext = FakeLLM(None)
    ext.extract_ov(["a", "b"])
    assert ext.extract_ov(["b", "a", "c"]) == ["[B, calm]", "[A, calm]", "[C, calm]"]
    assert reasons_of(ext.asked) == ["a", "b", "c"]  # another checkpoint's identical answers are not re-sent
    assert (ext.stats.prompts, ext.stats.distinct, ext.stats.hits, ext.stats.misses) == (5, 3, 0, 3)
    ext.close()


def test_failed_and_empty_answers_are_never_cached(tmp_path):
    ext = FakeLLM(tmp_path / "c", fail={"x"}, empty={"y"})
    assert ext.extract_ov(["x", "y", "z", "x"]) == [None, None, "[Z, calm]", None]
    assert ext.stats.failed == 2 and ext.stats.generated == 1
    assert ext.failure_reasons["empty answer"] == 1
    ext.close()
    retry = FakeLLM(tmp_path / "c")
    assert retry.extract_ov(["x", "y", "z"]) == ["[X, calm]", "[Y, calm]", "[Z, calm]"]
    assert reasons_of(retry.asked) == ["x", "y"]
    retry.close()


def test_sentiment_uses_prompt_b_on_prompt_a_answer(tmp_path):
    ext = FakeLLM(tmp_path / "c")
    out = ext.extract_sentiment(["[happy]"])
    assert out == ["[[HAPPY], calm]"]
    assert "Please choose the most likely sentiment" in ext.asked[0] and "Input: [happy]; Output: " in ext.asked[0]
    ext.close()


def test_no_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path / "default"))
    for _ in range(2):
        ext = FakeLLM(None)
        ext.extract_ov(["a", "b"])
        assert reasons_of(ext.asked) == ["a", "b"]
        assert ext.identity()["cache"] == "disabled"
        ext.close()
    assert not (tmp_path / "default").exists()


def test_default_cache_dir_is_under_unibench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path / "uc"))
    ext = FakeLLM(None)
    ext.use_cache = True
    ext.extract_ov(["a"])
    assert (tmp_path / "uc" / "extraction" / DB_NAME).is_file()
    ext.close()


def test_database_is_wal_and_stores_raw_answers(tmp_path):
    ext = FakeLLM(tmp_path / "c")
    ext.extract_ov(["happy"])
    ext.close()
    conn = sqlite3.connect(tmp_path / "c" / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT response, backend, model FROM extraction").fetchall()
    conn.close()
    assert rows == [("Output: [HAPPY, calm]\n", "fake", "fake-model")]  # raw; post-processing happens on read


def _worker(cache_dir: str, start: int, count: int, queue) -> None:
    try:
        ext = FakeLLM(Path(cache_dir))
        ext.stream_chunk = 1  # one commit per answer: as much lock contention as possible
        out = ext.extract_ov([f"w{i}" for i in range(start, start + count)])
        ext.close()
        queue.put(("ok", sum(o is not None for o in out)))
    except BaseException as exc:  # report, never hang the parent
        queue.put(("error", repr(exc)))


def test_two_processes_share_one_cache(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "c"), start, 150, queue)) for start in (0, 75)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [("ok", 150), ("ok", 150)]
    with ExtractionCache(tmp_path / "c") as cache:
        assert cache.count() == 225  # the union, each prompt once
    ext = FakeLLM(tmp_path / "c")
    ext.extract_ov([f"w{i}" for i in range(225)])
    assert ext.asked == [] and ext.stats.hits == 225
    ext.close()


KILL_SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from unibench.metrics.llm import LLMExtractor, LLMOptions

    class Slow(LLMExtractor):
        name = "slow"
        stream_chunk = 1
        def generate(self, prompts):
            out = []
            for p in prompts:
                time.sleep(0.25)
                reason = p.split("Input: ")[-1].rsplit("; Output:", 1)[0]
                with open(sys.argv[3], "a") as fh:   # 'finished' log, written before the answer is returned
                    fh.write(reason + "\\n")
                out.append("[" + reason + "]")
            return out

    ext = Slow(LLMOptions(model="slow-model"))
    ext.cache_dir, ext.progress = Path(sys.argv[2]), False
    ext.extract_ov(["s%d" % i for i in range(12)])
    ext.close()
''')


def test_kill_9_mid_run_then_resume(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(KILL_SCRIPT)
    log1, log2, cache_dir = tmp_path / "run1.log", tmp_path / "run2.log", tmp_path / "c"
    proc = subprocess.Popen([sys.executable, str(script), str(REPO), str(cache_dir), str(log1)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        if log1.exists() and len(log1.read_text().split()) >= 4:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the extraction ended before it could be killed"
    time.sleep(0.08)  # past the commit of the 4th answer, well before the 5th finishes (0.25 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    finished = log1.read_text().split()
    assert 4 <= len(finished) < 12
    with ExtractionCache(cache_dir) as cache:
        assert cache.count() == len(finished)  # every finished answer was committed

    subprocess.run([sys.executable, str(script), str(REPO), str(cache_dir), str(log2)], cwd=REPO,
                   check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    regenerated = log2.read_text().split()
    assert not set(regenerated) & set(finished)
    assert sorted(regenerated + finished) == sorted(f"s{i}" for i in range(12))


def test_corrupt_cache_file_gives_one_clear_line(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"this is not a database, just garbage " * 200)
    ext = FakeLLM(folder)
    with pytest.raises(UserError) as info:
        ext.extract_ov(["a"])
    msg = str(info.value)
    assert str(folder / DB_NAME) in msg and "--no-cache" in msg and "delete" in msg and "\n" not in msg
    assert ext.asked == []  # nothing generated before the cache was checked
