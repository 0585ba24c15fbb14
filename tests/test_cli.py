"""`run_bench` as a user meets it: bad input gives one `error:` line naming what is wrong and a non-zero
exit, never a traceback; per-sample gaps are counted warnings, in the terminal and in the results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import (CKPT_A, CKPT_B, build_toy_bench, toy_counts, write_answer_npz, write_csv,  # noqa: F401
                      write_extraction_npz, write_label_npz)
from unibench.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(tmp_path, toy_counts):
    """A fresh toy benchmark per test (tests below damage it); its split sizes count as the protocol's."""
    return build_toy_bench(tmp_path / "b")


def _args(bench, tmp_path, task="mer2023", **over):
    opts = {"--model": "replay", "--model-args": f"path={bench['model']}", "--task": task,
            "--data-root": str(bench["data"]), "--lexicon": str(bench["lexicon"]), "--output": str(tmp_path / "out")}
    opts.update(over)
    out = []
    for k, v in opts.items():
        if v is not None:
            out += [k, v]
    return out


def _fails(capsys, argv, *needles: str) -> str:
    """Run main(); expect exit 2 and exactly one error line containing every needle."""
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, (rc, err)
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "Traceback" not in captured.out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _run_ok(capsys, argv) -> tuple[str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out, captured.err


def _result(tmp_path, task, label=CKPT_A) -> dict:
    return json.loads((tmp_path / "out" / "toy-model" / task / f"{label}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the run's inputs

def test_missing_data_root(bench, tmp_path, capsys, monkeypatch):
    _fails(capsys, _args(bench, tmp_path, **{"--data-root": str(tmp_path / "nope")}),
           f"data root not found: {tmp_path / 'nope'}")
    monkeypatch.delenv("UNIBENCH_DATA", raising=False)
    _fails(capsys, _args(bench, tmp_path, **{"--data-root": None}), "no data root given", "--data-root")


def test_data_root_from_env(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNIBENCH_DATA", str(bench["data"]))
    monkeypatch.setenv("UNIBENCH_LEXICON", str(bench["lexicon"]))
    _run_ok(capsys, _args(bench, tmp_path, **{"--data-root": None, "--lexicon": None}))


def test_missing_task_folder(bench, tmp_path, capsys):
    shutil.rmtree(bench["data"] / "meld-process")
    _fails(capsys, _args(bench, tmp_path, task="mer2023,meld"),
           f"[meld] task folder not found: {bench['data'] / 'meld-process'}")
    assert not (tmp_path / "out" / "toy-model" / "mer2023").exists()     # checked before any scoring


def test_missing_label_file_and_key(bench, tmp_path, capsys):
    label = bench["data"] / "cmumosi-process" / "label.npz"
    write_label_npz(label, {"train_corpus": {}, "valid_corpus": {}})
    _fails(capsys, _args(bench, tmp_path, task="cmumosi"), str(label), "key 'test_corpus' not found",
           "keys: train_corpus, valid_corpus")
    label.unlink()
    _fails(capsys, _args(bench, tmp_path, task="cmumosi"), f"[cmumosi] ground-truth file not found: {label}")


def test_missing_subtitle_file_does_not_stop_scoring(bench, tmp_path, capsys):
    (bench["data"] / "mer2023-dataset-process" / "transcription-engchi-polish.csv").unlink()
    _run_ok(capsys, _args(bench, tmp_path))          # replay scoring never reads subtitles
    rc = main(["--check-data", "--data-root", str(bench["data"]), "--task", "mer2023"])
    out = capsys.readouterr().out
    assert rc == 0 and "subtitles: subtitle file not found: " in out and "transcription-engchi-polish.csv" in out


def test_count_mismatch(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.undo()      # the protocol's real split sizes again
    line = _fails(capsys, _args(bench, tmp_path, task="sims"),
                  f"[sims] {bench['data'] / 'sims-process' / 'label.npz'} (test_corpus) holds 5 test samples, "
                  "the protocol has 457", "--allow-count-mismatch")
    assert line.startswith("error: [sims]")
    out, err = _run_ok(capsys, _args(bench, tmp_path, task="sims") + ["--allow-count-mismatch"])
    assert "warning: [sims]" in err and "holds 5 test samples, the protocol has 457" in err
    assert "[count-mismatch]" in out


def test_unknown_task_and_model(bench, tmp_path, capsys):
    _fails(capsys, _args(bench, tmp_path, task="mer2023,mosi"), "unknown task 'mosi'", "known: mer2023")
    _fails(capsys, _args(bench, tmp_path, **{"--model": "gpt-5o"}), "unknown model 'gpt-5o'", "replay",
           "--list-models")
    _fails(capsys, _args(bench, tmp_path, **{"--model": None}), "--model is required")


def test_bad_model_args_and_extractor(bench, tmp_path, capsys):
    _fails(capsys, _args(bench, tmp_path, **{"--model-args": "paht=x"}), "--model-args: unknown key 'paht'")
    _fails(capsys, _args(bench, tmp_path, **{"--model-args": ""}), "'path' is required for model 'replay'")
    _fails(capsys, _args(bench, tmp_path) + ["--extractor", "nonesuch"], "unknown extractor 'nonesuch'")


def test_bad_lexicon(bench, tmp_path, capsys, monkeypatch):
    _fails(capsys, _args(bench, tmp_path, **{"--lexicon": str(tmp_path / "nolex")}),
           f"lexicon folder not found: {tmp_path / 'nolex'}")
    monkeypatch.delenv("UNIBENCH_LEXICON", raising=False)
    _fails(capsys, _args(bench, tmp_path, **{"--lexicon": None}), "no emotion-wheel lexicon given")
    (bench["lexicon"] / "wheel5.xlsx").unlink()
    _fails(capsys, _args(bench, tmp_path), "lacks wheel5.xlsx")


# ---------------------------------------------------------------- the answers

def _answer_dir(bench, task="mer2023") -> Path:
    return bench["model"] / f"results-{task}" / "run_1"


def test_answer_file_missing_samples_is_a_counted_warning(bench, tmp_path, capsys):
    d = _answer_dir(bench)
    write_answer_npz(d / f"{CKPT_A}.npz", {"m1": "happy"}, ov={"m1": "[happy]"})
    out, err = _run_ok(capsys, _args(bench, tmp_path))
    assert f"warning: 3 test sample(s) have no answer in {d / (CKPT_A + '.npz')} (e.g. m2); scored as empty " \
           "predictions" in err
    data = _result(tmp_path, "mer2023")
    assert "missing-answers:3" in data["flags"] and any("3 test sample(s) have no answer" in w for w in data["warnings"])
    assert data["primary"] == pytest.approx(0.25)       # the 3 missing samples count as misses
    assert "[missing-answers:3]" not in out             # best-of-2 picks the complete file B: the row is clean
    out, _ = _run_ok(capsys, _args(bench, tmp_path) + ["--select", CKPT_A])
    assert "[missing-answers:3]" in out                 # a row built on the incomplete file says so


def test_answer_file_with_extra_samples(bench, tmp_path, capsys):
    d = _answer_dir(bench)
    answers = {n: "x" for n in ("m1", "m2", "m3", "m4", "zz_other", "zz_more")}
    ov = {"m1": "[happy]", "m2": "[sad]", "m3": "[angry]", "m4": "[sad]", "zz_other": "[x]", "zz_more": "[y]"}
    write_answer_npz(d / f"{CKPT_A}.npz", answers, ov=ov)
    _, err = _run_ok(capsys, _args(bench, tmp_path))
    assert "warning: 2 answer(s) in " in err and "are not in the test split (e.g. zz_other); ignored" in err
    assert _result(tmp_path, "mer2023")["primary"] == pytest.approx(0.75)


def test_empty_answers_are_counted(bench, tmp_path, capsys):
    d = _answer_dir(bench)
    write_answer_npz(d / f"{CKPT_B}.npz", {"m1": "", "m2": "  ", "m3": "angry", "m4": "sad"},
                     ov={"m1": "[]", "m2": "[]", "m3": "[angry]", "m4": "[sad]"})
    _, err = _run_ok(capsys, _args(bench, tmp_path) + ["--select", "last"])
    assert "2 empty answer(s) in " in err and "(e.g. m1)" in err
    assert "empty-answers:2" in _result(tmp_path, "mer2023", CKPT_B)["flags"]
    rows = (tmp_path / "out" / "leaderboard.csv").read_text(encoding="utf-8")
    assert "empty-answers:2" in rows


def test_extraction_file_missing_samples(bench, tmp_path, capsys):
    d = _answer_dir(bench)
    write_extraction_npz(d / f"{CKPT_A}-openset.npz", {"m1": "[happy]", "m2": "[sad]"})
    _, err = _run_ok(capsys, _args(bench, tmp_path))
    assert "2 test sample(s) lack extracted labels" in err and f"{CKPT_A}-openset.npz; e.g. m3)" in err
    assert "missing-extraction:2" in _result(tmp_path, "mer2023")["flags"]


def test_unparsed_sentiment_is_a_warning(bench, tmp_path, capsys):
    d = _answer_dir(bench, "cmumosi")
    write_extraction_npz(d / f"{CKPT_A}-openset-sentiment.npz",
                         {"v1": "positive", "v2": "Mixed", "v3": "negative", "v4": "negative", "v5": "neutral"})
    _, err = _run_ok(capsys, _args(bench, tmp_path, task="cmumosi"))
    assert "1 sentiment answer(s) are not positive/negative/neutral and count as 0 (e.g. v2: 'Mixed')" in err
    assert _result(tmp_path, "cmumosi")["counts"]["n_unparsed_sentiment"] == 1


def test_missing_extraction_without_extractor(bench, tmp_path, capsys):
    d = _answer_dir(bench, "cmumosi")
    (d / f"{CKPT_B}-openset-sentiment.npz").unlink()
    _fails(capsys, _args(bench, tmp_path, task="cmumosi"), f"{CKPT_B}-openset-sentiment.npz is missing",
           "an extractor backend is needed")
    (d / f"{CKPT_A}-openset.npz").unlink()
    _fails(capsys, _args(bench, tmp_path, task="cmumosi"), f"no extracted labels for {d / (CKPT_A + '.npz')}",
           f"{CKPT_A}-openset.npz is missing")


def test_truncated_answer_file(bench, tmp_path, capsys):
    f = _answer_dir(bench) / f"{CKPT_B}.npz"
    f.write_bytes(f.read_bytes()[:60])
    _fails(capsys, _args(bench, tmp_path), str(f), "not a readable .npz file")


def test_empty_answer_folder(bench, tmp_path, capsys):
    shutil.rmtree(_answer_dir(bench, "meld"))
    _answer_dir(bench, "meld").mkdir()
    _fails(capsys, _args(bench, tmp_path, task="meld"), "replay: no answer .npz files under",
           str(bench["model"] / "results-meld"))


def _table_model(tmp_path: Path) -> Path:
    d = tmp_path / "tables"
    d.mkdir()
    write_extraction_npz(d / "mer2023-openset.npz", {"m1": "[happy]", "m2": "[sad]", "m3": "[angry]", "m4": "[sad]"})
    return d


def test_non_utf8_answer_csv(bench, tmp_path, capsys):
    d = _table_model(tmp_path)
    (d / "mer2023.csv").write_bytes("name,answer\nm1,tr\xe8s content\n".encode("latin-1"))
    _fails(capsys, _args(bench, tmp_path, **{"--model-args": f"path={d}"}), str(d / "mer2023.csv"),
           "not UTF-8 text")


def test_malformed_answer_csv(bench, tmp_path, capsys):
    d = _table_model(tmp_path)
    write_csv(d / "mer2023.csv", ["name", "answer"], [("m1", "happy"), ("m2", "sad", "oops"), ("m3", "x")])
    _fails(capsys, _args(bench, tmp_path, **{"--model-args": f"path={d}"}), str(d / "mer2023.csv"),
           "line 3: more fields than the header has")
    (d / "mer2023.csv").write_bytes(b'name,answer\nm1,"happy\nm2,sad\n')
    _fails(capsys, _args(bench, tmp_path, **{"--model-args": f"path={d}"}), "malformed CSV")


def test_csv_answers_score(bench, tmp_path, capsys):
    d = _table_model(tmp_path)
    write_csv(d / "mer2023.csv", ["name", "answer"], [(n, "some text") for n in ("m1", "m2", "m3", "m4")])
    out, _ = _run_ok(capsys, _args(bench, tmp_path, **{"--model-args": f"path={d},name=tables"}))
    assert "tables" in out and "75.00" in out


# ---------------------------------------------------------------- listings, and the CLI as a process

def test_list_models_and_tasks(capsys):
    out, _ = _run_ok(capsys, ["--list-models"])
    replay = [l for l in out.splitlines() if l.startswith("replay ")]
    assert len(replay) == 1 and "ready" in replay[0]
    out, _ = _run_ok(capsys, ["--list-tasks"])
    lines = out.splitlines()
    assert [l.split()[0] for l in lines[:9]] == ["mer2023", "mer2024", "meld", "iemocapfour", "cmumosi", "cmumosei",
                                                 "sims", "simsv2", "ovmerdplus"]
    assert "n=1241" in lines[3] and "iemocap-process/label_4way.npz [whole_corpus]" in lines[3]


def test_lexicon_subcommand_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UNIBENCH_LEXICON", raising=False)
    _fails(capsys, ["lexicon", "audit"], "no emotion-wheel lexicon given")
    _fails(capsys, ["lexicon", "explain", "fear", "--lexicon", str(tmp_path)], f"lexicon folder {tmp_path} lacks")


def test_errors_as_a_process(bench, tmp_path):
    """The installed command's behaviour: exit 2, one line on stderr, nothing else."""
    env = {**os.environ, "UNIBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(REPO / "run_bench.py"), *_args(bench, tmp_path, task="mer2023,nosuchtask")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: unknown task 'nosuchtask'") and proc.stderr.count("\n") == 1
    shutil.rmtree(bench["data"] / "mer2023-dataset-process")
    cmd = [sys.executable, str(REPO / "run_bench.py"), *_args(bench, tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"task folder not found: {bench['data'] / 'mer2023-dataset-process'}" in proc.stderr


def test_check_data_counts_media_and_subtitles(tmp_path, capsys):
    bench = build_toy_bench(tmp_path, tasks=("mer2023",))
    folder = bench["data"] / "mer2023-dataset-process"
    (folder / "video").mkdir()
    for name in ("m1", "m2"):
        (folder / "video" / f"{name}.mp4").write_bytes(b"x")
    capsys.readouterr()
    assert main(["--check-data", "--data-root", str(bench["data"]), "--task", "mer2023"]) == 1  # 4 of 411
    line = capsys.readouterr().out.strip()
    assert "subtitles: 4 of 4 present" in line and "video: 2 of 4 present" in line
    assert "audio: no audio/ folder" in line


def test_list_samples_prints_the_test_split(tmp_path, capsys):
    bench = build_toy_bench(tmp_path, tasks=("mer2023", "cmumosi"))
    capsys.readouterr()
    assert main(["--list-samples", "--task", "mer2023", "--data-root", str(bench["data"])]) == 0
    assert capsys.readouterr().out.split() == ["m1", "m2", "m3", "m4"]
    assert main(["--list-samples", "--task", "mer2023,cmumosi", "--data-root", str(bench["data"])]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["mer2023\tm1", "mer2023\tm2"]


def test_executor_ray_on_a_replay_scores_here_without_ray(bench, tmp_path, capsys, monkeypatch):
    """Nothing to spread over workers (existing answers, no LLM extraction): no Ray needed, one note, same row."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: it must not be imported
    out, err = _run_ok(capsys, _args(bench, tmp_path, **{"--executor": "ray", "--ray-args": "num_workers=2"}))
    assert "note: --executor ray: nothing to spread over workers" in err
    rows = (tmp_path / "out" / "leaderboard.csv").read_text(encoding="utf-8")
    assert "toy-model" in rows
    _fails(capsys, _args(bench, tmp_path, **{"--executor": "ray", "--ray-args": "num_workers=-1"}), "--ray-args")
    _fails(capsys, _args(bench, tmp_path, **{"--ray-args": "num_workers=2"}), "need --executor ray")
