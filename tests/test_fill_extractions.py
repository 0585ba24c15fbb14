"""The extraction stage of a run, and an end-to-end `run_bench --extractor hf` on synthetic tasks."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fixtures import tiny_lexicon_dir, write_answer_npz, write_extraction_npz, write_run, write_task  # noqa: F401
from unibench.adapters.base import AnswerSet
from unibench.adapters.replay import attach_extractions, read_extraction_npz
from unibench.cli import main
from unibench.extract import fill_extractions
from unibench.metrics.extraction import Extractor
from unibench.prompts import prompt_hash
from unibench.tasks import get_task


class Scripted(Extractor):
    """Prompt A: the answer upper-cased in brackets (None for 'FAIL'); prompt B: 'positive' (None for '[BAD]')."""

    name = "scripted"

    def __init__(self):
        super().__init__()
        self.ov_calls: list[list[str]] = []
        self.senti_calls: list[list[str]] = []

    def source_label(self) -> str:
        return "extractor:scripted:m1"

    def extract_ov(self, texts):
        self.ov_calls.append(list(texts))
        return [None if t == "FAIL" else f"[{t.upper()}]" for t in texts]

    def extract_sentiment(self, ov_answers):
        self.senti_calls.append(list(ov_answers))
        return [None if a == "[BAD]" else "positive" for a in ov_answers]


def test_basic_task_fills_labels_in_split_order(tmp_path):
    s = AnswerSet(label="ans", answers={"b": "sad", "x": "not in split", "a": "happy", "c": "FAIL"},
                  source=str(tmp_path / "answers.jsonl"))
    ext = Scripted()
    report = fill_extractions(s, get_task("mer2023"), ext, output_dir=tmp_path / "out", names=["a", "b", "c", "d"])
    assert ext.ov_calls == [["happy", "sad", "FAIL"]] and ext.senti_calls == []  # 'd' has no answer; 'x' not in split
    assert s.ov_labels == {"a": "[HAPPY]", "b": "[SAD]", "c": ""}   # a failed sample scores as an empty prediction
    assert [str(f) for f in s.extraction_failures] == ["ov:c"] and s.ov_source == "extractor:scripted:m1"
    assert s.sentiments is None
    saved = tmp_path / "out" / "answers-openset.npz"
    assert report["saved"] == [str(saved)] and s.extraction_source == str(saved)
    assert read_extraction_npz(saved) == {"a": "[HAPPY]", "b": "[SAD]", "c": ""}
    assert not (tmp_path / "answers-openset.npz").exists()  # a multi-task table / failures: never beside


def test_sentiment_task_saves_beside_the_answers_in_the_original_layout(tmp_path):
    answer = write_answer_npz(tmp_path / "run" / "checkpoint_000010_loss_0.5.npz", {"a": "good", "b": "meh"})
    s = attach_extractions(AnswerSet(label="ck10", answers={"a": "good", "b": "meh"}, source=str(answer)), answer)
    assert s.ov_labels is None
    ext = Scripted()
    report = fill_extractions(s, get_task("cmumosi"), ext, output_dir=tmp_path / "out", names=["a", "b"])
    assert ext.senti_calls == [["[GOOD]", "[MEH]"]]            # prompt B reads prompt A's raw answers
    assert s.sentiments == {"a": "positive", "b": "positive"} and s.sentiment_source == "extractor:scripted:m1"
    assert s.extraction_failures == []
    beside_ov = tmp_path / "run" / "checkpoint_000010_loss_0.5-openset.npz"
    beside_senti = tmp_path / "run" / "checkpoint_000010_loss_0.5-openset-sentiment.npz"
    assert sorted(report["saved"]) == sorted([str(tmp_path / "out" / "checkpoint_000010_loss_0.5-openset.npz"),
                                              str(tmp_path / "out" / "checkpoint_000010_loss_0.5-openset-sentiment.npz"),
                                              str(beside_ov), str(beside_senti)])
    # the replay adapter (and the published scripts) read ours back
    again = attach_extractions(AnswerSet(label="ck10", answers={}, source=str(answer)), answer)
    assert again.ov_labels == {"a": "[GOOD]", "b": "[MEH]"} and again.sentiments == s.sentiments
    import numpy as np

    with np.load(beside_ov, allow_pickle=False) as data:  # plain unicode arrays, no pickle
        assert data["filenames"].dtype.kind == "U" and list(data["fileitems"]) == ["[GOOD]", "[MEH]"]


def test_failures_on_a_sentiment_task(tmp_path):
    s = AnswerSet(label="l", answers={"a": "FAIL", "b": "bad", "c": "fine"}, source=str(tmp_path / "cmumosi.jsonl"))
    ext = Scripted()
    fill_extractions(s, get_task("cmumosi"), ext, output_dir=tmp_path / "out", names=["a", "b", "c"])
    assert ext.senti_calls == [["[BAD]", "[FINE]"]]  # no prompt B without prompt A's labels
    assert s.sentiments == {"a": "", "b": "", "c": "positive"}  # '' is unparsed: counts as 0
    assert [str(f) for f in s.extraction_failures] == ["ov:a", "sentiment:b"]


def test_authors_files_are_kept_and_never_overwritten(tmp_path):
    answer = write_answer_npz(tmp_path / "cmumosi.npz", {"a": "x"}, ov={"a": "[joy]"})
    existing = write_extraction_npz(tmp_path / "cmumosi-openset-sentiment.npz", {"zzz": "neutral"})
    s = AnswerSet(label="l", answers={"a": "x"}, source=str(answer), ov_labels={"a": "[joy]"}, ov_source="file:x")
    ext = Scripted()
    report = fill_extractions(s, get_task("cmumosi"), ext, output_dir=tmp_path / "out")
    assert ext.ov_calls == [] and ext.senti_calls == [["[joy]"]]
    assert s.ov_source == "file:x" and s.sentiments == {"a": "positive"}
    assert read_extraction_npz(existing) == {"zzz": "neutral"}  # untouched
    assert report["saved"] == [str(tmp_path / "out" / "cmumosi-openset-sentiment.npz")]


# ---------------------------------------------------------------- end to end through the CLI

MER = {"m1": "happy", "m2": "sad", "m3": "angry", "m4": "worried", "m5": "surprised"}
MOSI = {"s1": 1.5, "s2": -2.0, "s3": 0.6, "s4": -0.4}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_extract_hf import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-e2e"))


def synthetic_bench(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    write_task(data, "mer2023", MER)
    write_task(data, "cmumosi", MOSI)
    answers = root / "answers" / "tinygpt"
    for task, gt in (("mer2023", MER), ("cmumosi", MOSI)):
        for epoch in (10, 20):
            write_run(answers, task, "run1", {f"checkpoint_0000{epoch}_loss_0.5": {
                "answers": {n: f"The character's emotional state is {v}." for n, v in gt.items()}}})
    return data, answers


def run_cli(data, answers, lexicon, out, model, cache, *extra):
    return main(["--model", "replay", "--model-args", f"path={answers}", "--task", "mer2023,cmumosi",
                 "--data-root", str(data), "--lexicon", str(lexicon), "--output", str(out), "--allow-count-mismatch",
                 "--extractor", "hf", "--extractor-args", f"model={model},device=cpu,max_new_tokens=4,batch_size=8",
                 "--cache-dir", str(cache), *extra])


def test_run_bench_with_hf_extractor(tmp_path, tiny_model, tiny_lexicon_dir, capsys):
    data, answers = synthetic_bench(tmp_path)
    out, cache = tmp_path / "results", tmp_path / "cache"
    assert run_cli(data, answers, tiny_lexicon_dir, out, tiny_model, cache) == 0
    captured = capsys.readouterr()
    run = json.loads((out / "tinygpt" / "run.json").read_text())
    stats = run["extraction_stats"]
    # Prompt A: 2 files x (5 + 4) answers, the same text in both files: 18 prompts, 9 distinct.
    # Prompt B: 2 files x 4 label lists (garbage from a random model, so up to 4 distinct).
    assert stats["prompts"] == 26 and 10 <= stats["distinct"] <= 13
    assert stats["hits"] == 0 and stats["misses"] == stats["distinct"] and stats["failed"] == 0
    assert stats["prompts_per_second"] > 0
    assert (f"extraction [hf]: 26 prompts ({stats['distinct']} distinct): 0 cache hits, "
            f"{stats['distinct']} generated") in captured.err
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == "tinygpt"]
    assert len(rows) == 1 and rows[0]["mer2023"] != "" and rows[0]["cmumosi"] != ""
    assert 0.0 <= float(rows[0]["mer2023"]) <= 100.0

    assert run["extractor"]["backend"] == "hf" and run["extractor"]["decoding"]["temperature"] == 0.0
    assert run["extractor"]["prompts"]["prompt_a"] == prompt_hash(
        __import__("unibench.prompts", fromlist=["x"]).PROMPT_A_OV_LABELS)

    detail = json.loads((out / "tinygpt" / "cmumosi" / "checkpoint_000010_loss_0.5.json").read_text())
    assert detail["extraction"]["ov"] == f"extractor:hf:{tiny_model}"
    assert detail["extraction"]["sentiment"] == f"extractor:hf:{tiny_model}"
    for task, stem in (("mer2023", "checkpoint_000010_loss_0.5"), ("cmumosi", "checkpoint_000020_loss_0.5")):
        saved = out / "tinygpt" / task / f"{stem}-openset.npz"
        beside = answers / f"results-{task}" / "run1" / f"{stem}-openset.npz"
        names = list(MER if task == "mer2023" else MOSI)
        assert list(read_extraction_npz(saved)) == names and read_extraction_npz(beside) == read_extraction_npz(saved)
    assert (out / "tinygpt" / "cmumosi" / "checkpoint_000010_loss_0.5-openset-sentiment.npz").is_file()

    # Rerun after removing what was saved beside the answers: everything comes from the cache.
    for path in answers.rglob("*-openset*.npz"):
        path.unlink()
    assert run_cli(data, answers, tiny_lexicon_dir, tmp_path / "results2", tiny_model, cache) == 0
    assert f"{stats['distinct']} cache hits, 0 generated" in capsys.readouterr().err
    run2 = json.loads((tmp_path / "results2" / "tinygpt" / "run.json").read_text())
    assert run2["extraction_stats"]["hits"] == stats["distinct"] and run2["extraction_stats"]["misses"] == 0


def test_corrupt_cache_stops_the_run_with_one_line(tmp_path, tiny_model, tiny_lexicon_dir, capsys):
    data, answers = synthetic_bench(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "extraction.sqlite").write_bytes(b"\x00garbage" * 500)
    assert run_cli(data, answers, tiny_lexicon_dir, tmp_path / "out", tiny_model, cache) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "extraction.sqlite" in err[0] and "--no-cache" in err[0]
    # --no-cache runs regardless, and leaves the broken file alone
    assert run_cli(data, answers, tiny_lexicon_dir, tmp_path / "out", tiny_model, cache, "--no-cache") == 0
    assert (cache / "extraction.sqlite").read_bytes() == b"\x00garbage" * 500


def test_missing_vllm_is_one_line_from_the_cli(tmp_path, tiny_lexicon_dir, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    data, answers = synthetic_bench(tmp_path)
    rc = main(["--model", "replay", "--model-args", f"path={answers}", "--task", "mer2023", "--data-root", str(data),
               "--lexicon", str(tiny_lexicon_dir), "--output", str(tmp_path / "o"), "--allow-count-mismatch",
               "--extractor", "vllm", "--extractor-args", "model=/models/qwen"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: the 'vllm' extractor needs the 'vllm' package: pip install 'mer-unibench[vllm]'"]


def test_failed_extractions_are_flagged_in_the_results(tmp_path, tiny_lexicon_dir):
    from unibench.adapters.base import make_adapter
    from unibench.metrics.lexicon import load_lexicon
    from unibench.runner import RunConfig, run
    from unibench.tasks import resolve_tasks

    data = tmp_path / "data"
    write_task(data, "cmumosi", MOSI)
    answers = tmp_path / "answers" / "tinygpt"
    texts = {"s1": "FAIL", "s2": "bad", "s3": "good", "s4": "fine"}
    write_run(answers, "cmumosi", "run1", {"checkpoint_000010_loss_0.5": {"answers": texts}})
    lexicon = load_lexicon(tiny_lexicon_dir, cache_dir=tmp_path / "lexcache")
    config = RunConfig(tasks=resolve_tasks("cmumosi"), data_root=data, output=tmp_path / "out",
                       allow_count_mismatch=True)
    rows = run(make_adapter("replay", f"path={answers}"), config, lexicon, extractor=Scripted())
    assert "extraction-failures:2" in rows[0]["flags"]
    detail = json.loads((tmp_path / "out" / "tinygpt" / "cmumosi" / "checkpoint_000010_loss_0.5.json").read_text())
    assert detail["extraction"]["failures"] == ["ov:s1", "sentiment:s2"]
    assert any("2 extraction(s) failed" in w for w in detail["warnings"])
    assert detail["counts"]["n_unparsed_sentiment"] == 2  # failed samples score as unparsed (0)
    # nothing is saved beside the answers while samples failed: a rerun extracts them again
    assert not list(answers.rglob("*-openset*.npz"))


def test_saved_beside_files_say_who_made_them(tmp_path):
    answer = write_answer_npz(tmp_path / "run" / "ck.npz", {"a": "good"})
    s = attach_extractions(AnswerSet(label="ck", answers={"a": "good"}, source=str(answer)), answer)
    fill_extractions(s, get_task("cmumosi"), Scripted(), output_dir=tmp_path / "out", names=["a"])
    note = json.loads((tmp_path / "run" / "ck-extraction.json").read_text())
    assert note["ov"]["source"] == note["sentiment"]["source"] == "extractor:scripted:m1"
    again = attach_extractions(AnswerSet(label="ck", answers={}, source=str(answer)), answer)
    assert again.ov_source == f"file:{tmp_path / 'run' / 'ck-openset.npz'} (made by extractor:scripted:m1)"


def test_an_offline_extraction_saved_beside_the_answers_keeps_its_flag(tmp_path):
    """A later replay must not take a lexicon extraction for the authors' LLM extraction."""
    class Offline(Scripted):
        name = "offline"
        paper_protocol = False

    answer = write_answer_npz(tmp_path / "run" / "ck.npz", {"a": "good"})
    s = attach_extractions(AnswerSet(label="ck", answers={"a": "good"}, source=str(answer)), answer)
    fill_extractions(s, get_task("mer2023"), Offline(), output_dir=tmp_path / "out", names=["a"])
    assert (tmp_path / "run" / "ck-openset.npz").is_file()
    again = attach_extractions(AnswerSet(label="ck", answers={}, source=str(answer)), answer)
    assert again.extraction_flags == ["extractor:offline"]
    plain = attach_extractions(AnswerSet(label="ck", answers={}, source=str(answer)), answer)
    (tmp_path / "run" / "ck-extraction.json").unlink()  # the authors' files carry no note and no flag
    assert attach_extractions(AnswerSet(label="ck", answers={}, source=str(answer)), answer).extraction_flags == []
    assert plain.ov_labels == again.ov_labels
