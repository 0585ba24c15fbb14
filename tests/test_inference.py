"""The inference runner (unibench.inference): answers log, npz layout, resume, failures, questions, flags."""
from __future__ import annotations

import dataclasses

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, make_task_folder, media_paths
from unibench.adapters.base import ADAPTERS, Adapter, Sample, register_adapter
from unibench.adapters.replay import read_answer_npz
from unibench.cli import main
from unibench.errors import UserError
from unibench.inference import (Question, apply_run_options, build_samples, read_answer_log, requirement_status,
                                resolve_question, user_text)
from unibench.media import load_faces, load_frames
from unibench.prompts import (AFFECTGPT_OV_QUESTION, OVMER_BASELINE_WITH_SUBTITLE,
                                      OVMER_BASELINE_WITHOUT_SUBTITLE)
from unibench.tasks.base import get_task, load_task

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- test adapters

@dataclass
class EchoOptions:
    name: str = ""
    style: str = "plain"
    device: str = "auto"
    dtype: str = "auto"


class EchoAdapter(Adapter):
    """Loads the sample's frames and faces (so bad media fail), answers 'happy' for everyone."""

    name = "test-echo"
    description = "test adapter"
    inputs = ("video", "face", "subtitle")
    Options = EchoOptions
    asked: ClassVar[list[Sample]] = []
    fail_names: ClassVar[set[str]] = set()
    calls: ClassVar[list[int]] = []

    def answer(self, samples):
        EchoAdapter.calls.append(len(samples))
        out = []
        for s in samples:
            EchoAdapter.asked.append(s)
            load_frames(s.video, 2)
            load_faces(s.face, 2)
            if s.name in EchoAdapter.fail_names:
                raise RuntimeError(f"model exploded on {s.name}")
            out.append(f"I think the person is happy. ({self.options.style})")
        return out


class BrokenAdapter(Adapter):
    name = "test-broken"
    inputs = ("subtitle",)

    def answer(self, samples):
        raise RuntimeError("CUDA error: no kernel image")


class MiscountAdapter(Adapter):
    name = "test-miscount"
    inputs = ("subtitle",)

    def answer(self, samples):
        return ["only one"]


@pytest.fixture(autouse=True)
def _adapters():
    for cls in (EchoAdapter, BrokenAdapter, MiscountAdapter):
        register_adapter(cls)
    EchoAdapter.asked.clear()
    EchoAdapter.calls.clear()
    EchoAdapter.fail_names = set()
    yield
    for cls in (EchoAdapter, BrokenAdapter, MiscountAdapter):
        ADAPTERS.pop(cls.name, None)


@pytest.fixture
def data_root(tmp_path):
    make_task_folder(tmp_path / "data", "mer2023", n=3)
    return tmp_path / "data"


def run(capsys, data_root, output, lexicon_dir, *extra, model="test-echo", model_args=""):
    argv = ["--model", model, "--task", "mer2023", "--data-root", str(data_root), "--output", str(output),
            "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(lexicon_dir),
            "--no-progress", *extra]
    if model_args:
        argv += ["--model-args", model_args]
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def leaderboard(output: Path) -> dict[str, str]:
    import csv

    with open(output / "leaderboard.csv", encoding="utf-8") as fh:
        return next(csv.DictReader(fh))


def asked_names() -> list[str]:
    return [s.name for s in EchoAdapter.asked]


NAMES = ["sample_00000000", "sample_00000001", "sample_00000002"]


# ---------------------------------------------------------------- a full run

def test_run_writes_answers_npz_extractions_and_a_leaderboard_row(capsys, data_root, tmp_path, tiny_lexicon_dir):
    out_dir = tmp_path / "out"
    rc, out, err = run(capsys, data_root, out_dir, tiny_lexicon_dir)
    assert rc == 0, err
    assert asked_names() == NAMES
    first = EchoAdapter.asked[0]
    task_dir = data_root / "mer2023-dataset-process"
    assert first.question == AFFECTGPT_OV_QUESTION
    assert first.subtitle == SUBTITLES[0]
    assert first.video == task_dir / "video" / "sample_00000000.mp4"
    assert first.face == task_dir / "openface_face" / "sample_00000000.npy"
    assert first.audio is None  # not declared, not given

    records, _ = read_answer_log(out_dir / "test-echo" / "answers" / "mer2023.jsonl")
    assert [r["name"] for r in records] == NAMES
    assert all(r["error"] is None and r["answer"] == "I think the person is happy. (plain)" for r in records)
    assert records[0]["adapter"] == {"adapter": "test-echo",
                                     "args": {"name": "", "style": "plain", "device": "auto", "dtype": "auto"}}
    assert records[0]["question_mode"] == "affectgpt" and len(records[0]["question_hash"]) == 16
    assert "device" not in records[0]["keyed_args"]  # where it runs does not change what it answers

    npz = out_dir / "test-echo" / "answers" / "results-mer2023" / "test-echo" / "test-echo.npz"
    assert read_answer_npz(npz) == {n: "I think the person is happy. (plain)" for n in NAMES}
    assert (npz.parent / "test-echo-openset.npz").is_file()  # extraction lands beside the answers

    row = leaderboard(out_dir)
    assert row["model"] == "test-echo"
    assert row["mer2023"] == "33.33"  # gt happy, sad, worried; every answer says happy
    assert "extractor:lexicon" in row["flags"] and "failed" not in row["flags"]

    # the published layout replays to the same score
    rc, _, err = run(capsys, data_root, tmp_path / "replayed", tiny_lexicon_dir, model="replay",
                     model_args=f"path={out_dir / 'test-echo' / 'answers'}")
    assert rc == 0, err
    assert leaderboard(tmp_path / "replayed")["mer2023"] == "33.33"


def test_rerun_asks_nothing_again(capsys, data_root, tmp_path, tiny_lexicon_dir):
    assert run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)[0] == 0
    EchoAdapter.asked.clear()
    # --device only fills an option: it does not make the finished answers stale
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--device", "cpu")
    assert rc == 0, err
    assert asked_names() == []
    assert leaderboard(tmp_path / "out")["mer2023"] == "33.33"


def test_a_changed_model_or_question_refuses_stale_answers(capsys, data_root, tmp_path, tiny_lexicon_dir):
    assert run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)[0] == 0
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, model_args="style=loud")
    assert rc == 2
    assert "holds answers from a different setup (style: plain -> loud)" in err
    assert "--model-args name=NEW" in err and "Traceback" not in err
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--question", "ovmer")
    assert rc == 2 and "question affectgpt" in err and "-> ovmer" in err
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--dtype", "bfloat16")
    assert rc == 2 and "dtype: auto -> bfloat16" in err
    # a new name is a new results folder: no conflict
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, model_args="style=loud,name=loud")
    assert rc == 0, err


def test_limit_runs_the_first_samples_and_flags_the_row_partial(capsys, data_root, tmp_path, tiny_lexicon_dir):
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--limit", "2")
    assert rc == 0, err
    assert asked_names() == NAMES[:2]
    row = leaderboard(tmp_path / "out")
    assert "partial:2/3" in row["flags"]
    assert row["mer2023"] == "50.00"  # happy, sad
    summary = json.loads((tmp_path / "out" / "test-echo" / "mer2023" / "summary.json").read_text())
    assert summary["n_test"] == 2
    EchoAdapter.asked.clear()
    assert run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)[0] == 0
    assert asked_names() == NAMES[2:]
    row = leaderboard(tmp_path / "out")
    assert "partial" not in row["flags"] and row["mer2023"] == "33.33"


def test_a_line_cut_by_a_kill_is_ignored_and_replaced(capsys, data_root, tmp_path, tiny_lexicon_dir):
    assert run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)[0] == 0
    log = tmp_path / "out" / "test-echo" / "answers" / "mer2023.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[:-40])  # the last record half written, no newline
    EchoAdapter.asked.clear()
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)
    assert rc == 0, err
    assert asked_names() == NAMES[2:]
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["name"] for line in lines] == NAMES  # the cut line is gone, not glued to


def test_a_corrupt_complete_line_is_a_clear_error(capsys, data_root, tmp_path, tiny_lexicon_dir):
    assert run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)[0] == 0
    log = tmp_path / "out" / "test-echo" / "answers" / "mer2023.jsonl"
    log.write_text("{broken\n" + log.read_text(encoding="utf-8"), encoding="utf-8")
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir)
    assert rc == 2 and "mer2023.jsonl: line 1 is not valid JSON" in err


# ---------------------------------------------------------------- failures

def break_media(folder: Path) -> None:
    """sample 0: video missing; 1: zero-length video; 2: corrupt face .npy; 3 and 4 fine."""
    paths = [media_paths(folder, "mer2023", f"sample_{i:08d}") for i in range(5)]
    paths[0]["video"].unlink()
    paths[1]["video"].write_bytes(b"")
    paths[2]["face"].write_bytes(b"\x93NUMPY\x01\x00garbage")


def test_bad_media_are_counted_not_fatal_and_retried_on_rerun(capsys, tmp_path, tiny_lexicon_dir):
    folder = make_task_folder(tmp_path / "data", "mer2023", n=5)
    break_media(folder)
    rc, out, err = run(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir, "--batch-size", "2")
    assert rc == 0, err
    assert "3 sample(s) failed and are scored as empty predictions" in err
    records, _ = read_answer_log(tmp_path / "out" / "test-echo" / "answers" / "mer2023.jsonl")
    errors = {r["name"]: r["error"] for r in records}
    assert errors["sample_00000000"].startswith("MediaError: no video file for sample 'sample_00000000'")
    assert "empty video file" in errors["sample_00000001"]
    assert "cannot read face array" in errors["sample_00000002"]
    assert errors["sample_00000003"] is None and errors["sample_00000004"] is None
    row = leaderboard(tmp_path / "out")
    assert "failed-samples:3" in row["flags"]
    # one hit (sample 4: happy) of five, failures scored as empty: 20% on four wheels; the tiny
    # lexicon's wheel 3 has no 'surprised' cluster, so sample 3 leaves that wheel (1/4): mean 21%
    assert row["mer2023"] == "21.00"
    # the missing video never reached the adapter; the broken batch was retried one sample at a time
    assert "sample_00000000" not in asked_names()

    # fix one file and rerun: only the failed samples are asked again
    from media_fixtures import write_video

    write_video(media_paths(folder, "mer2023", "sample_00000001")["video"])
    EchoAdapter.asked.clear()
    rc, _, err = run(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir)
    assert rc == 0, err
    assert sorted(set(asked_names())) == ["sample_00000001", "sample_00000002"]
    assert "failed-samples:2" in leaderboard(tmp_path / "out")["flags"]


def test_fail_fast_stops_at_the_first_failure(capsys, tmp_path, tiny_lexicon_dir):
    folder = make_task_folder(tmp_path / "data", "mer2023", n=5)
    break_media(folder)
    rc, _, err = run(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir, "--fail-fast")
    assert rc == 2
    assert "error: [mer2023] sample 'sample_00000000' failed: MediaError: no video file" in err
    assert "(--fail-fast)" in err and "Traceback" not in err
    assert asked_names() == []
    records, _ = read_answer_log(tmp_path / "out" / "test-echo" / "answers" / "mer2023.jsonl")
    assert [r["name"] for r in records] == ["sample_00000000"]  # the failure is recorded all the same


def test_a_model_error_in_a_batch_fails_only_its_sample(capsys, data_root, tmp_path, tiny_lexicon_dir):
    EchoAdapter.fail_names = {"sample_00000001"}
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--batch-size", "3")
    assert rc == 0, err
    assert EchoAdapter.calls == [3, 1, 1, 1]  # the batch, then one by one
    records, _ = read_answer_log(tmp_path / "out" / "test-echo" / "answers" / "mer2023.jsonl")
    errors = {r["name"]: r["error"] for r in records}
    assert errors == {"sample_00000000": None, "sample_00000001": "RuntimeError: model exploded on sample_00000001",
                      "sample_00000002": None}
    assert "failed-samples:1" in leaderboard(tmp_path / "out")["flags"]


def test_a_model_that_fails_every_sample_stops_early(capsys, tmp_path, tiny_lexicon_dir):
    make_task_folder(tmp_path / "data", "mer2023", n=5, media=False)
    rc, _, err = run(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir, model="test-broken")
    assert rc == 2
    assert "the first 3 samples all failed in model 'test-broken' (last: RuntimeError: CUDA error" in err


def test_an_adapter_returning_the_wrong_count_is_a_clear_error(capsys, data_root, tmp_path, tiny_lexicon_dir):
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--batch-size", "2",
                     model="test-miscount")
    assert rc == 2 and "returned 1 answer(s) for 2 sample(s)" in err


def test_bad_inference_flags(capsys, data_root, tmp_path, tiny_lexicon_dir):
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--question", "ovmr")
    assert rc == 2 and "--question: unknown mode 'ovmr'" in err
    rc, _, err = run(capsys, data_root, tmp_path / "out", tiny_lexicon_dir, "--limit", "0")
    assert rc == 2 and "--limit at least 1" in err


# ---------------------------------------------------------------- questions and samples

def test_question_modes():
    q = resolve_question("affectgpt", AFFECTGPT_OV_QUESTION)
    assert (q.text("hi"), q.pass_subtitle) == (AFFECTGPT_OV_QUESTION, True)
    q = resolve_question("ovmer", AFFECTGPT_OV_QUESTION)
    assert q.text("I {really} won") == OVMER_BASELINE_WITH_SUBTITLE.replace("{subtitle}", "I {really} won")
    assert not q.pass_subtitle
    q = resolve_question("ovmer-nosub", AFFECTGPT_OV_QUESTION)
    assert (q.text("hi"), q.pass_subtitle) == (OVMER_BASELINE_WITHOUT_SUBTITLE, False)
    q = resolve_question("What does the speaker feel? They say: {subtitle}", "")
    assert q.mode == "custom" and q.text("yes") == "What does the speaker feel? They say: yes"
    assert resolve_question("How do they feel?", "").pass_subtitle
    assert resolve_question("ovmer", "").hash != resolve_question("ovmer-nosub", "").hash
    with pytest.raises(UserError, match="unknown mode 'ovmer2'"):
        resolve_question("ovmer2", "")


class SubtitleOnly(Adapter):
    name = "x-subtitle"
    inputs = ("subtitle",)


class VideoOnly(Adapter):
    name = "x-video"
    inputs = ("video",)


class FaceAndAudio(Adapter):
    name = "x-face-audio"
    inputs = ("face", "audio")


def test_samples_carry_only_declared_inputs_and_never_the_subtitle_twice(tmp_path):
    make_task_folder(tmp_path / "data", "mer2023", n=2)
    make_task_folder(tmp_path / "data", "cmumosi", n=2)
    task = load_task(get_task("mer2023"), tmp_path / "data", check_count=False)
    names = task.names

    (s, problem), _ = build_samples(SubtitleOnly(), task, resolve_question("affectgpt", task.spec.question), names)
    assert problem is None and s.subtitle == SUBTITLES[0] and s.video is None and s.face is None
    assert user_text(s) == f"The subtitle of this video is: {SUBTITLES[0]}\n{AFFECTGPT_OV_QUESTION}"

    (s, _), _ = build_samples(SubtitleOnly(), task, resolve_question("ovmer", ""), names)
    assert s.subtitle == "" and SUBTITLES[0] in s.question  # the question already carries it
    assert user_text(s) == s.question

    (s, _), _ = build_samples(VideoOnly(), task, resolve_question("ovmer", ""), names)
    assert s.video is not None and SUBTITLES[0] in s.question and s.subtitle == ""
    (s, _), _ = build_samples(VideoOnly(), task, resolve_question("affectgpt", task.spec.question), names)
    assert s.subtitle == "" and s.question == AFFECTGPT_OV_QUESTION

    (s, problem), _ = build_samples(FaceAndAudio(), task, resolve_question("affectgpt", ""), names)
    assert s.face.name == "sample_00000000.npy" and s.audio.name == "sample_00000000.wav" and problem is None

    media_paths(task.root, "mer2023", names[1])["audio"].unlink()
    _, (s, problem) = build_samples(FaceAndAudio(), task, resolve_question("affectgpt", ""), names)
    assert s.audio is None
    assert problem.startswith("MediaError: no audio file for sample 'sample_00000001' (looked for audio/<name>.wav")

    spec = get_task("cmumosi")
    faceless = dataclasses.replace(spec, media=tuple(m for m in spec.media if m[0] != "face"))
    mosi = load_task(faceless, tmp_path / "data", check_count=False)
    with pytest.raises(UserError, match="needs face input, but task 'cmumosi' has no face files"):
        build_samples(FaceAndAudio(), mosi, resolve_question("affectgpt", ""), mosi.names)


def test_run_wide_device_and_dtype_fill_unset_options_only():
    a = EchoAdapter(EchoOptions())
    assert apply_run_options(a, "", device="cuda:1", dtype="bfloat16") == []
    assert (a.options.device, a.options.dtype) == ("cuda:1", "bfloat16")
    a = EchoAdapter(EchoOptions(device="cpu"))
    apply_run_options(a, "device=cpu", device="cuda:1", dtype=None)
    assert (a.options.device, a.options.dtype) == ("cpu", "auto")
    notes = apply_run_options(SubtitleOnly(), "", device="cuda")
    assert notes == ["--device ignored: model 'x-subtitle' has no 'device' option"]


def test_requirement_status(monkeypatch):
    assert requirement_status(("json",)) == "ready"
    assert requirement_status(("no_such_pkg_xyz", ("also_missing", "also-missing"))) == \
        "needs pip install no_such_pkg_xyz"
    assert requirement_status((("no_such_pkg_xyz", "NoSuch-Dist"),)) == "needs pip install NoSuch-Dist"
    from importlib import metadata

    version = metadata.version("transformers")
    assert requirement_status(("transformers",), ("Qwen2ForCausalLM",)) == "ready"
    assert requirement_status(("transformers",), ("Qwen2ForCausalLM", "NoSuchModelForAnything")) == \
        f"transformers {version} lacks class NoSuchModelForAnything"


def test_question_dataclass_is_stable():
    # the hash enters every record: it must not change between releases for the same text
    assert Question("affectgpt", AFFECTGPT_OV_QUESTION, True).hash == \
        resolve_question("affectgpt", AFFECTGPT_OV_QUESTION).hash


# ---------------------------------------------------------------- kill -9 and resume

SLOW_PLUGIN = textwrap.dedent('''
    import os, time
    from unibench.adapters.base import Adapter, register_adapter

    @register_adapter
    class Slow(Adapter):
        name = "test-slow"
        inputs = ("subtitle",)

        def answer(self, samples):
            with open(os.environ["ASKED_LOG"], "a") as fh:
                fh.write("".join(s.name + "\\n" for s in samples))
            time.sleep(float(os.environ.get("SLOW_S", "0")))
            return ["I feel happy today." for s in samples]
''')


def test_kill_9_loses_nothing_finished(tmp_path, tiny_lexicon_dir):
    make_task_folder(tmp_path / "data", "mer2023", n=8, media=False)
    plugin_dir = tmp_path / "plug"
    plugin_dir.mkdir()
    (plugin_dir / "slow_plugin.py").write_text(SLOW_PLUGIN, encoding="utf-8")
    code = (f"import sys; sys.path.insert(0, {str(plugin_dir)!r}); import slow_plugin; "
            "from unibench.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "--model", "test-slow", "--task", "mer2023", "--data-root",
            str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--allow-count-mismatch",
            "--extractor", "lexicon", "--lexicon", str(tiny_lexicon_dir), "--no-progress"]
    log = tmp_path / "out" / "test-slow" / "answers" / "mer2023.jsonl"
    first_asked = tmp_path / "asked1.txt"
    env = {**os.environ, "ASKED_LOG": str(first_asked), "SLOW_S": "0.3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if log.is_file() and log.read_bytes().count(b"\n") >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("no answers appeared within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    records, _ = read_answer_log(log)
    finished = {r["name"] for r in records if r["error"] is None}
    assert 3 <= len(finished) < 8

    second_asked = tmp_path / "asked2.txt"
    env.update(ASKED_LOG=str(second_asked), SLOW_S="0")
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    asked_again = set(second_asked.read_text().split())
    assert not asked_again & finished
    assert asked_again | finished == {f"sample_{i:08d}" for i in range(8)}
    records, _ = read_answer_log(log)
    assert sorted({r["name"] for r in records}) == [f"sample_{i:08d}" for i in range(8)]
    assert "resuming:" in done.stderr
