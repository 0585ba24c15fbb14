"""The replay adapter: the original results layout, JSONL/CSV answers, extraction files, run choice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fixtures import write_answer_npz, write_csv, write_extraction_npz
from unibench.adapters.base import available_adapters, make_adapter
from unibench.adapters.replay import ReplayAdapter, ReplayOptions, is_answer_npz, read_extraction_npz
from unibench.errors import UserError
from unibench.runner import check_extractions
from unibench.tasks import TaskData, get_task

GT = {"s1": "happy", "s2": "sad", "s3": "angry"}


def _task(tid: str = "mer2023", gt=None) -> TaskData:
    return TaskData(spec=get_task(tid), root=Path("/nonexistent"), gt=dict(gt or GT))


def _replay(path, **kw) -> ReplayAdapter:
    return ReplayAdapter(ReplayOptions(path=Path(path), **kw))


def _answers(tag: str) -> dict[str, str]:
    return {n: f"{tag}: the person seems {e}." for n, e in GT.items()}


# ---------------------------------------------------------------- the original layout

def test_results_layout_with_several_files_and_extractions(tmp_path):
    run = tmp_path / "model" / "results-cmumosi" / "run_1"
    write_answer_npz(run / "checkpoint_000020_loss_0.5.npz", _answers("b"), ov={"s1": "[happy]"},
                     sentiment={"s1": "positive"})
    write_answer_npz(run / "checkpoint_000010_loss_0.6.npz", _answers("a"), ov={"s1": "[sad]", "s2": "[]"},
                     sentiment={"s1": "negative", "s2": "neutral"})
    write_answer_npz(run / "checkpoint_000030_loss_0.4.npz", _answers("c"))     # no extraction files
    sets = _replay(tmp_path / "model").answer_sets(_task("cmumosi"))
    assert [s.label for s in sets] == ["checkpoint_000010_loss_0.6", "checkpoint_000020_loss_0.5",
                                       "checkpoint_000030_loss_0.4"]
    assert [s.order for s in sets] == [0, 1, 2]
    first = sets[0]
    assert first.answers["s2"] == "a: the person seems sad."
    assert first.source == str(run / "checkpoint_000010_loss_0.6.npz")
    assert first.ov_labels == {"s1": "[sad]", "s2": "[]"}
    assert first.sentiments == {"s1": "negative", "s2": "neutral"}
    assert first.ov_source == f"file:{run / 'checkpoint_000010_loss_0.6-openset.npz'}"
    assert first.sentiment_source == f"file:{run / 'checkpoint_000010_loss_0.6-openset-sentiment.npz'}"
    assert first.warnings == []
    assert sets[2].ov_labels is None and sets[2].sentiments is None and sets[2].ov_source == ""


def test_is_answer_npz():
    assert is_answer_npz(Path("checkpoint_000050_loss_0.527.npz"))
    assert not is_answer_npz(Path("checkpoint_000050_loss_0.527-openset.npz"))
    assert not is_answer_npz(Path("checkpoint_000050_loss_0.527-openset-sentiment.npz"))
    assert not is_answer_npz(Path("x-sentiment.npz"))
    assert not is_answer_npz(Path("notes.txt"))


def _runs(root: Path, counts: dict[str, int]) -> Path:
    for run, n in counts.items():
        for i in range(n):
            write_answer_npz(root / "results-mer2023" / run / f"ckpt_{i}.npz", _answers(f"{run}-{i}"))
    return root


def test_default_run_is_the_one_with_most_files(tmp_path):
    _runs(tmp_path, {"run_a": 2, "run_b": 3})
    sets = _replay(tmp_path).answer_sets(_task())
    assert len(sets) == 3 and sets[0].answers["s1"].startswith("run_b-0")
    assert sets[0].warnings == ["run folder chosen: run_b (most answer files among 2)"]


def test_run_option_exact_and_prefix(tmp_path):
    _runs(tmp_path, {"run_a": 2, "run_b": 3, "other": 1})
    sets = _replay(tmp_path, run="run_a").answer_sets(_task())
    assert len(sets) == 2 and sets[1].answers["s1"].startswith("run_a-1") and sets[0].warnings == []
    sets = _replay(tmp_path, run="oth").answer_sets(_task())         # a unique prefix
    assert len(sets) == 1 and sets[0].answers["s1"].startswith("other-0")
    with pytest.raises(UserError) as info:
        _replay(tmp_path, run="nope").answer_sets(_task())
    assert str(info.value) == (f"replay: no run 'nope' in {tmp_path / 'results-mer2023'} "
                               "(runs: other, run_a, run_b)")


def test_tied_runs_need_a_choice(tmp_path):
    _runs(tmp_path, {"run_a": 2, "run_c": 2, "small": 1})
    with pytest.raises(UserError) as info:
        _replay(tmp_path).answer_sets(_task())
    assert str(info.value) == (f"replay: several runs in {tmp_path / 'results-mer2023'} (run_a, run_c); "
                               "choose one with --model-args run=NAME")
    assert len(_replay(tmp_path, run="run_c").answer_sets(_task())) == 2


def test_empty_run_folder(tmp_path):
    (tmp_path / "results-mer2023" / "run_a").mkdir(parents=True)
    write_extraction_npz(tmp_path / "results-mer2023" / "run_a" / "x-openset.npz", {"s1": "[happy]"})
    with pytest.raises(UserError, match=r"replay: no answer \.npz files under .*results-mer2023"):
        _replay(tmp_path).answer_sets(_task())


def test_missing_path_and_missing_task(tmp_path):
    with pytest.raises(UserError) as info:
        _replay(tmp_path / "nothing").answer_sets(_task())
    assert str(info.value) == f"replay: answers not found: {tmp_path / 'nothing'}"
    _runs(tmp_path, {"run_a": 1})
    with pytest.raises(UserError) as info:
        _replay(tmp_path).answer_sets(_task("meld", {"d": "joy"}))
    assert str(info.value) == (f"replay: no answers for task 'meld' under {tmp_path} "
                               "(looked for results-meld/<run>/*.npz and meld.jsonl/.csv)")


def test_answer_npz_problems(tmp_path):
    run = tmp_path / "results-mer2023" / "r"
    run.mkdir(parents=True)
    np.savez(run / "bad.npz", name2reason=np.array(["not", "a", "dict"], dtype=object))
    with pytest.raises(UserError, match=r"bad\.npz: 'name2reason' holds ndarray, expected a dict name -> answer"):
        _replay(tmp_path).answer_sets(_task())
    np.savez(run / "bad.npz", answers=np.array([1]))
    with pytest.raises(UserError, match=r"bad\.npz: key 'name2reason' not found \(keys: answers\)"):
        _replay(tmp_path).answer_sets(_task())
    write_answer_npz(run / "bad.npz", {"s1": None, "s2": 3, "s3": "fine"})
    s = _replay(tmp_path).answer_sets(_task())[0]
    assert s.answers == {"s3": "fine"}  # never str(3) scored as text: failed samples, flagged by the runner
    assert s.rejected == {"s1": "answer is NoneType, not text", "s2": "answer is int, not text"}


def test_extraction_file_problems(tmp_path):
    path = tmp_path / "x-openset.npz"
    np.savez(path, filenames=np.array(["a", "b"]), fileitems=np.array(["[happy]"]))
    with pytest.raises(UserError) as info:
        read_extraction_npz(path)
    assert str(info.value) == f"{path}: 'filenames' has 2 entries but 'fileitems' has 1"
    np.savez(path, filenames=np.array(["a"]))
    with pytest.raises(UserError, match=r"x-openset\.npz: key 'fileitems' not found"):
        read_extraction_npz(path)
    write_extraction_npz(path, {"a": "[happy, sad]", "b": ""})
    assert read_extraction_npz(path) == {"a": "[happy, sad]", "b": ""}


# ---------------------------------------------------------------- JSONL and CSV

def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_single_jsonl_file_with_task_column(tmp_path):
    path = _jsonl(tmp_path / "mymodel.jsonl", [
        {"task": "mer2023", "name": "s1", "answer": "happy"},
        {"task": "meld", "name": "s1", "answer": "ignored for mer2023"},
        {"name": "s2", "answer": None},                 # no task: applies to every task
        {"task": "mer2023", "name": "s3", "answer": "angry", "extra": 1},
    ])
    write_extraction_npz(tmp_path / "mymodel-openset.npz", {"s1": "[happy]", "s3": "[angry]"})
    adapter = _replay(path)
    assert adapter.model_id() == "mymodel"
    (s,) = adapter.answer_sets(_task())
    assert s.answers == {"s1": "happy", "s3": "angry"} and s.rejected == {"s2": "answer is NoneType, not text"}
    assert s.label == "mymodel" and s.source == str(path)
    assert s.ov_labels == {"s1": "[happy]", "s3": "[angry]"}
    assert s.ov_source == f"file:{tmp_path / 'mymodel-openset.npz'}"
    assert s.sentiments is None
    assert adapter.answer_sets(_task("meld", {"s1": "joy"}))[0].answers == {"s1": "ignored for mer2023"}


def test_csv_file(tmp_path):
    path = write_csv(tmp_path / "answers.csv", ["name", "answer"], [("s1", "Joyful, maybe, \"quoted\""), ("s2", "")])
    (s,) = _replay(path).answer_sets(_task())
    assert s.answers == {"s1": 'Joyful, maybe, "quoted"', "s2": ""}


def test_folder_with_per_task_tables(tmp_path):
    _jsonl(tmp_path / "mer2023.jsonl", [{"name": "s1", "answer": "from jsonl"}])
    write_csv(tmp_path / "cmumosi.csv", ["name", "answer"], [("v1", "from csv")])
    write_extraction_npz(tmp_path / "cmumosi-openset.npz", {"v1": "[happy]"})
    write_extraction_npz(tmp_path / "cmumosi-openset-sentiment.npz", {"v1": "positive"})
    write_answer_npz(tmp_path / "meld.npz", {"d1": "from npz"})
    adapter = _replay(tmp_path, name="custom")
    assert adapter.model_id() == "custom"
    assert adapter.answer_sets(_task())[0].answers == {"s1": "from jsonl"}
    senti = adapter.answer_sets(_task("cmumosi", {"v1": 1.0}))[0]
    assert senti.answers == {"v1": "from csv"} and senti.label == "cmumosi"
    assert senti.sentiments == {"v1": "positive"} and senti.ov_labels == {"v1": "[happy]"}
    assert adapter.answer_sets(_task("meld", {"d1": "joy"}))[0].answers == {"d1": "from npz"}
    assert _replay(tmp_path).model_id() == tmp_path.name


@pytest.mark.parametrize("content, needle", [
    ('{"name": "s1", "answer": "a"}\n{"name": "s1", "answer": "b"}\n', "answers: 1 sample name(s) appear more than once with different values (e.g. 's1')"),
    ('{"name": "s1", "answer": "a"}\n{broken\n', "line 2: not valid JSON"),
    ('{"name": "s1"}\n', "line 1: needs 'name' and 'answer' fields"),
    ('["s1", "a"]\n', "line 1: needs 'name' and 'answer' fields"),
])
def test_bad_jsonl(tmp_path, content, needle):
    path = tmp_path / "a.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        _replay(path).answer_sets(_task())
    assert str(info.value) == f"{path}: {needle}" or str(info.value).startswith(f"{path}: {needle}")


def test_bad_tables(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes('{"name": "s1", "answer": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"a\.jsonl: not UTF-8 text"):
        _replay(path).answer_sets(_task())
    csv_path = write_csv(tmp_path / "b.csv", ["name", "text"], [("s1", "x")])
    with pytest.raises(UserError, match=r"b\.csv: missing column\(s\) answer"):
        _replay(csv_path).answer_sets(_task())
    csv_path.write_bytes("name,answer\ns1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"b\.csv: not UTF-8 text"):
        _replay(csv_path).answer_sets(_task())
    txt = tmp_path / "c.txt"
    txt.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"c\.txt: answer files must be \.npz, \.jsonl or \.csv"):
        _replay(txt).answer_sets(_task())


# ---------------------------------------------------------------- registry, options, extraction checks

def test_registry_and_options(tmp_path):
    assert available_adapters()["replay"] is ReplayAdapter
    adapter = make_adapter("replay", f"path={tmp_path},name=My Model,run=r1")
    assert adapter.options == ReplayOptions(path=tmp_path, name="My Model", run="r1")
    assert adapter.model_id() == "My Model"
    assert adapter.describe() == {"adapter": "replay", "args": {"path": str(tmp_path), "name": "My Model",
                                                                "run": "r1"}}
    assert ReplayAdapter.generates is False
    with pytest.raises(UserError, match="--model-args: 'path' is required for model 'replay'"):
        make_adapter("replay", "")
    with pytest.raises(UserError, match=r"--model-args: unknown key 'pth' for model 'replay' \(known: path, name, run\)"):
        make_adapter("replay", "pth=x")
    with pytest.raises(UserError, match=r"unknown model 'replya' \(known: .*replay.*see --list-models\)"):
        make_adapter("replya", "")


def test_missing_extractions_stop_with_one_line(tmp_path):
    run = tmp_path / "results-cmumosi" / "r"
    write_answer_npz(run / "ck1.npz", {"v1": "happy"}, ov={"v1": "[happy]"})     # no sentiment file
    sets = _replay(tmp_path).answer_sets(_task("cmumosi", {"v1": 1.0}))
    with pytest.raises(UserError) as info:
        check_extractions(get_task("cmumosi"), sets, extractor=None)
    assert str(info.value) == (f"[cmumosi] no sentiment extraction for {run / 'ck1.npz'}: "
                               f"{run / 'ck1'}-openset-sentiment.npz is missing; an extractor backend is needed "
                               "(--extractor vllm|hf|openai|lexicon)")
    check_extractions(get_task("cmumosi"), sets, extractor=object())       # an extractor will fill it
    write_answer_npz(tmp_path / "results-mer2023" / "r" / "ck1.npz", {"s1": "happy"})
    sets = _replay(tmp_path).answer_sets(_task())
    with pytest.raises(UserError, match=r"\[mer2023\] no extracted labels for .*ck1\.npz: .*ck1-openset\.npz is missing; "
                                        r"an extractor backend is needed"):
        check_extractions(get_task("mer2023"), sets, extractor=None)
