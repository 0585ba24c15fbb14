"""The hostile-input suite: malformed and adversarial inputs, class by class (issue 8).

Every case ends in exactly one of two ways, checked here:

* refused: exit status != 0 and exactly one ``error:`` line on stderr naming the
  file / field / sample, no traceback; or
* accepted: exit status 0, a counted warning on stderr and a flag in the
  leaderboard row, and a score equal to what the protocol gives when the bad
  part counts as a failed sample.

Inputs are built here from the invented toy benchmark (tests/fixtures.py); the
run goes through ``unibench.cli.main`` in-process (an exception escaping it
would be a traceback, and fails the test).
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pytest

from fixtures import (CKPT_A, LAYOUT, TOY_GT, _stored, build_toy_bench, toy_answers, toy_counts,  # noqa: F401
                      write_answer_npz, write_extraction_npz, write_label_npz)
from unibench.adapters.base import ADAPTERS, Adapter, Sample
from unibench.cli import main
from unibench.results import LEADERBOARD_COLUMNS, read_leaderboard

TASKS3 = ("mer2023", "meld", "cmumosi", "ovmerdplus")


# ---------------------------------------------------------------- harness

@dataclass
class Outcome:
    rc: int
    out: str
    err: str
    output: Path

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def row(self, model: str) -> dict[str, str]:
        rows = [r for r in read_leaderboard(self.output / "leaderboard.csv") if r["model"] == model]
        assert rows, f"no leaderboard row for {model}"
        return rows[0]


def refused(o: Outcome, *needles: str) -> None:
    """Exit != 0, exactly one error line naming what is wrong, no traceback."""
    assert o.rc != 0, f"accepted (rc 0) but should be refused; stderr:\n{o.err}"
    assert "Traceback" not in o.err
    assert len(o.error_lines) == 1, o.err
    for needle in needles:
        assert needle in o.error_lines[0], f"{needle!r} not in {o.error_lines[0]!r}"


def flagged(o: Outcome, model: str, flag: str, warning: str = "") -> dict[str, str]:
    assert o.rc == 0, o.err
    assert "Traceback" not in o.err
    row = o.row(model)
    assert any(f.startswith(flag) for f in row["flags"].split(";")), row["flags"]
    if warning:
        assert warning in o.err, o.err
    return row


@pytest.fixture
def bench(tmp_path, toy_counts):
    paths = build_toy_bench(tmp_path, tasks=TASKS3)
    return paths


def run(bench: dict[str, Path], capsys, *extra: str, task: str = "mer2023", model_args: str | None = None,
        output: Path | None = None, model: str = "replay") -> Outcome:
    output = output or bench["model"].parent / "results"
    args = model_args if model_args is not None else f"path={bench['model']}"
    argv = ["--model", model, "--model-args", args, "--task", task, "--data-root", str(bench["data"]),
            "--lexicon", str(bench["lexicon"]), "--output", str(output), "--no-progress", *extra]
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    return Outcome(rc, cap.out, cap.err, output)


def answer_file(bench: dict[str, Path], task: str, ckpt: str = CKPT_A) -> Path:
    return bench["model"] / f"results-{task}" / "run_1" / f"{ckpt}.npz"


def label_file(bench: dict[str, Path], task: str) -> Path:
    folder, gt_file, _, _ = LAYOUT[task]
    return bench["data"] / folder / gt_file


def rewrite_gt(bench: dict[str, Path], task: str, name: str, field: str, value: Any) -> Path:
    gt_key = LAYOUT[task][2]
    corpus = {n: _stored(task, v) for n, v in TOY_GT[task].items()}
    corpus[name] = {**corpus[name], field: value}
    return write_label_npz(label_file(bench, task), {gt_key: corpus})


# ---- raw pickles and npz members (what np.save cannot write)

def npy_object(pickle_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + pickle_bytes


def write_npz_members(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for key, data in members.items():
            zf.writestr(f"{key}.npy", data)
    return path


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def dict_pickle_with_duplicates(pairs: list[tuple[str, str]]) -> bytes:
    """A pickled dict built with SETITEMS from ``pairs`` in order (a key may repeat)."""
    body = b"".join(_unicode(k) + _unicode(v) for k, v in pairs)
    return b"\x80\x02}(" + body + b"u."


def nested_list_pickle(depth: int) -> bytes:
    """[[[...]]] ``depth`` levels deep, built without recursion."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def answers_of(bench: dict[str, Path], task: str, ckpt: str = CKPT_A) -> dict[str, str]:
    return dict(toy_answers(task, "A" if ckpt == CKPT_A else "B")["answers"])


# ================================================================ class 1: ground truth of the wrong type

BAD_GT = [
    ("mer2023", "m2", "emo", 3),
    ("mer2023", "m2", "emo", ["sad"]),
    ("mer2023", "m2", "emo", None),
    ("mer2023", "m2", "emo", ""),
    ("mer2023", "m2", "emo", b"sad"),
    ("mer2023", "m2", "emo", {"word": "sad"}),
    ("meld", "dia1_utt1", "emo", "joy"),
    ("meld", "dia1_utt1", "emo", -1),
    ("meld", "dia1_utt1", "emo", 7),
    ("meld", "dia1_utt1", "emo", 1.5),
    ("meld", "dia1_utt1", "emo", None),
    ("meld", "dia1_utt1", "emo", True),
    ("cmumosi", "v2", "val", float("nan")),
    ("cmumosi", "v2", "val", float("inf")),
    ("cmumosi", "v2", "val", -float("inf")),
    ("cmumosi", "v2", "val", "0.5"),
    ("cmumosi", "v2", "val", None),
    ("cmumosi", "v2", "val", [1.0]),
    ("cmumosi", "v2", "val", np.float64("nan")),
]


@pytest.mark.parametrize("task,name,field,value", BAD_GT, ids=[f"{t}-{f}-{v!r}" for t, _, f, v in BAD_GT])
def test_wrong_type_ground_truth_stops_naming_file_and_sample(bench, capsys, task, name, field, value):
    path = rewrite_gt(bench, task, name, field, value)
    o = run(bench, capsys, task=task)
    refused(o, str(path), f"'{name}'", "--skip-bad-gt")


@pytest.mark.parametrize("task,name,field,value", [BAD_GT[0], BAD_GT[7], BAD_GT[12]],
                         ids=["mer2023-number", "meld-negative-index", "cmumosi-nan"])
def test_skip_bad_gt_leaves_the_sample_out_counted_and_flagged(bench, capsys, task, name, field, value):
    rewrite_gt(bench, task, name, field, value)
    o = run(bench, capsys, "--skip-bad-gt", task=task)
    row = flagged(o, "toy-model", "bad-gt-skipped:1", "invalid ground truth left out")
    assert row[task] != ""


def test_non_text_sample_name_in_ground_truth_is_refused(bench, capsys):
    gt_key = LAYOUT["mer2023"][2]
    corpus: dict[Any, Any] = {n: _stored("mer2023", v) for n, v in TOY_GT["mer2023"].items()}
    corpus[12345] = corpus.pop("m4")
    path = write_label_npz(label_file(bench, "mer2023"), {gt_key: corpus})
    refused(run(bench, capsys), str(path), "12345", "not text")


def test_ov_ground_truth_duplicates_refused_unless_they_agree(bench, capsys):
    path = label_file(bench, "ovmerdplus")
    rows = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(rows + [rows[1].replace("[", "[sad, ")]) + "\n", encoding="utf-8")
    refused(run(bench, capsys, task="ovmerdplus"), str(path), "more than once")
    path.write_text("\n".join(rows + [rows[1]]) + "\n", encoding="utf-8")
    o = run(bench, capsys, task="ovmerdplus")
    assert o.rc == 0 and "counted once" in o.err


def test_ov_ground_truth_row_without_labels_is_refused(bench, capsys):
    path = label_file(bench, "ovmerdplus")
    path.write_text(path.read_text(encoding="utf-8") + "o9\n", encoding="utf-8")
    refused(run(bench, capsys, task="ovmerdplus"), str(path), "'o9'")


# ================================================================ class 2: duplicate sample names

def test_pickled_answer_dict_with_conflicting_duplicate_key_is_refused(bench, capsys):
    answers = answers_of(bench, "mer2023")
    pairs = list(answers.items()) + [("m1", "The character's emotional state is sad.")]
    path = write_npz_members(answer_file(bench, "mer2023"), {"name2reason": npy_object(dict_pickle_with_duplicates(pairs))})
    refused(run(bench, capsys), str(path), "m1", "more than once")


def test_pickled_answer_dict_with_agreeing_duplicate_key_is_counted_once(bench, capsys):
    baseline = run(bench, capsys)
    answers = answers_of(bench, "mer2023")
    pairs = list(answers.items()) + [("m1", answers["m1"])]
    write_npz_members(answer_file(bench, "mer2023"), {"name2reason": npy_object(dict_pickle_with_duplicates(pairs))})
    o = run(bench, capsys)
    assert o.rc == 0 and "counted once" in o.err
    assert o.row("toy-model")["mer2023"] == baseline.row("toy-model")["mer2023"]


def test_extraction_file_with_conflicting_repeated_name_is_refused(bench, capsys):
    ov = dict(toy_answers("mer2023", "A")["ov"])
    stem = str(answer_file(bench, "mer2023"))[:-4]
    path = Path(stem + "-openset.npz")
    names, items = list(ov) + ["m1"], list(ov.values()) + ["[sad]"]
    np.savez(path, filenames=np.array(names), fileitems=np.array(items))
    refused(run(bench, capsys), str(path), "m1", "more than once")


def test_extraction_file_with_agreeing_repeated_name_is_counted_once(bench, capsys):
    ov = dict(toy_answers("mer2023", "A")["ov"])
    path = Path(str(answer_file(bench, "mer2023"))[:-4] + "-openset.npz")
    np.savez(path, filenames=np.array(list(ov) + ["m1"]), fileitems=np.array(list(ov.values()) + [ov["m1"]]))
    o = run(bench, capsys)
    assert o.rc == 0 and "counted once" in o.err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_table_answers_with_conflicting_duplicates_are_refused(bench, capsys, tmp_path, fmt):
    answers = answers_of(bench, "mer2023")
    path = tmp_path / f"mine.{fmt}"
    rows = list(answers.items()) + [("m2", "something else")]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"name": n, "answer": a}) + "\n" for n, a in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows([("name", "answer"), *rows])
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "m2")


# ================================================================ class 3: answers that are not text

NON_TEXT = [7, 2.5, ["happy"], {"emotion": "happy"}, b"happy", None, True]


@pytest.mark.parametrize("value", NON_TEXT, ids=[type(v).__name__ for v in NON_TEXT])
def test_non_text_answer_in_npz_is_a_flagged_failure(bench, capsys, value):
    answers: dict[str, Any] = answers_of(bench, "mer2023")
    answers["m1"] = value  # m1 is answered right in file A: a silent str() would keep its hit
    ov = toy_answers("mer2023", "A")["ov"]
    write_answer_npz(answer_file(bench, "mer2023"), answers, ov)
    o = run(bench, capsys, "--select", CKPT_A)
    row = flagged(o, "toy-model", "non-text-answers:1", "not text")
    assert row["mer2023"] == "50.00"  # 2 of 4 right once m1 counts as a failed sample (75.00 before)


@pytest.mark.parametrize("value", [7, ["happy"], {"a": 1}, None, False], ids=["int", "list", "dict", "null", "bool"])
def test_non_text_answer_in_jsonl_is_a_flagged_failure(bench, capsys, tmp_path, value):
    answers: dict[str, Any] = answers_of(bench, "mer2023")
    answers["m1"] = value
    path = tmp_path / "mer2023.jsonl"
    path.write_text("".join(json.dumps({"name": n, "answer": a}) + "\n" for n, a in answers.items()),
                    encoding="utf-8")
    o = run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path},name=mine")
    flagged(o, "mine", "non-text-answers:1", "not text")


def test_csv_row_without_an_answer_is_a_flagged_failure(bench, capsys, tmp_path):
    answers = answers_of(bench, "mer2023")
    path = tmp_path / "mer2023.csv"
    lines = ["name,answer"] + [f'{n},"{a}"' for n, a in answers.items() if n != "m1"] + ["m1"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    o = run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path},name=mine")
    flagged(o, "mine", "non-text-answers:1")


def test_jsonl_sample_name_that_is_not_text_is_refused(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.jsonl"
    path.write_text(json.dumps({"name": 17, "answer": "happy"}) + "\n", encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "line 1", "17")


def test_extraction_item_that_is_not_text_is_a_flagged_failure(bench, capsys):
    ov = dict(toy_answers("mer2023", "A")["ov"])
    path = Path(str(answer_file(bench, "mer2023"))[:-4] + "-openset.npz")
    items = np.array(list(ov.values()), dtype=object)
    items[0] = 42
    np.savez(path, filenames=np.array(list(ov)), fileitems=items)
    o = run(bench, capsys, "--select", CKPT_A)
    row = flagged(o, "toy-model", "extraction-failures:1")
    assert row["mer2023"] == "50.00"


# ================================================================ class 4: resource exhaustion

def test_deeply_nested_answer_pickle_is_refused(bench, capsys):
    path = write_npz_members(answer_file(bench, "mer2023"), {"name2reason": npy_object(nested_list_pickle(200_000))})
    refused(run(bench, capsys), str(path))


def test_deeply_nested_label_pickle_is_refused(bench, capsys):
    path = write_npz_members(label_file(bench, "mer2023"), {"test1_corpus": npy_object(nested_list_pickle(200_000))})
    refused(run(bench, capsys), str(path))


def test_shared_reference_bomb_is_refused(bench, capsys):
    bomb = b"\x80\x02}" + _unicode("m1")
    inner = b"]" + _unicode("x") + b"a"
    for _ in range(60):  # each level: a list holding the previous level twice
        inner = inner + b"p0\n0]g0\nag0\na"
    data = bomb + inner + b"s."
    path = write_npz_members(answer_file(bench, "mer2023"), {"name2reason": npy_object(data)})
    refused(run(bench, capsys), str(path))


def test_zip_member_that_inflates_to_gigabytes_is_refused(bench, capsys, tmp_path):
    path = answer_file(bench, "mer2023")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (3 * 2**30,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("name2reason.npy", "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            block = bytes(2**24)
            for _ in range(3 * 2**30 // 2**24):
                fh.write(block)
    assert path.stat().st_size < 20 * 2**20
    refused(run(bench, capsys), str(path))


def test_npy_header_claiming_a_huge_array_is_refused(bench, capsys):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    path = write_npz_members(Path(str(answer_file(bench, "mer2023"))[:-4] + "-openset.npz"),
                             {"filenames": header.getvalue(), "fileitems": header.getvalue()})
    refused(run(bench, capsys), str(path))


def test_deeply_nested_jsonl_answer_is_refused(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.jsonl"
    path.write_text('{"name": "m1", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "line 1")


# ================================================================ class 5: malformed side files

BAD_PROVENANCE = [
    "[1, 2]",
    '"lexicon"',
    '{"ov": "lexicon"}',
    '{"ov": {"source": 5}}',
    '{"ov": {"paper_protocol": "no"}}',
    '{"ov": ',
]


@pytest.mark.parametrize("text", BAD_PROVENANCE, ids=range(len(BAD_PROVENANCE)))
def test_extraction_note_of_the_wrong_shape_is_refused(bench, capsys, text):
    path = Path(str(answer_file(bench, "mer2023"))[:-4] + "-extraction.json")
    path.write_text(text, encoding="utf-8")
    refused(run(bench, capsys), str(path), "extraction note")


def test_extraction_note_not_utf8_is_refused(bench, capsys):
    path = Path(str(answer_file(bench, "mer2023"))[:-4] + "-extraction.json")
    path.write_bytes(b'{"ov": {"source": "\xff\xfe"}}')
    refused(run(bench, capsys), str(path), "UTF-8")


@pytest.mark.parametrize("content", ["[]", '{"version": 999}', "not json", '{"version": %s, "wheels": 5}',
                                     "EDITED", "SHORT-ROWS"],
                         ids=["list", "old-version", "not-json", "wrong-shape", "edited-body", "short-rows"])
def test_lexicon_cache_of_the_wrong_shape_is_rebuilt(bench, capsys, tmp_path, content):
    from unibench.metrics.lexicon import CACHE_VERSION, lexicon_hash

    cache = tmp_path / "lexcache"
    baseline = run(bench, capsys, "--lexicon-cache", str(cache))
    path = cache / f"{lexicon_hash(bench['lexicon'])}.json"
    assert path.is_file()
    if content == "EDITED":  # a row changed by hand: its body no longer matches the hash it was written with
        header, body = path.read_bytes().split(b"\n", 1)
        data = json.loads(body)
        data["table"]["sad"] = [""] * 10
        path.write_bytes(header + b"\n" + json.dumps(data).encode())
    elif content == "SHORT-ROWS":  # consistent hash, wrong shape
        import hashlib

        data = json.loads(path.read_bytes().split(b"\n", 1)[1])
        data["table"] = {k: v[:3] for k, v in data["table"].items()}
        body = json.dumps(data).encode()
        path.write_bytes(json.dumps({"version": CACHE_VERSION, "body_sha256": hashlib.sha256(body).hexdigest()})
                         .encode() + b"\n" + body)
    else:
        path.write_text(content.replace("%s", json.dumps(CACHE_VERSION)), encoding="utf-8")
    o = run(bench, capsys, "--lexicon-cache", str(cache))
    assert o.rc == 0 and "Traceback" not in o.err
    if content != '{"version": 999}':
        assert "rebuilt" in o.err
    assert o.row("toy-model")["mer2023"] == baseline.row("toy-model")["mer2023"]
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["version"] == CACHE_VERSION


# ================================================================ class 6: names

def test_answer_file_name_that_is_not_utf8(bench, capsys):
    run_dir = answer_file(bench, "mer2023").parent
    odd = os.fsdecode(b"checkpoint_000030_\xff\xfe")
    content = toy_answers("mer2023", "A")
    write_answer_npz(run_dir / f"{odd}.npz", content["answers"], content["ov"])
    o = run(bench, capsys)
    assert "Traceback" not in o.err
    if o.rc == 0:
        assert o.row("toy-model")["mer2023"] == "75.00"
        summary = json.loads((o.output / "toy-model" / "mer2023" / "summary.json").read_text(encoding="utf-8"))
        assert summary["n_files"] == 3
    else:
        refused(o)


def test_data_root_whose_name_is_not_utf8(bench, capsys):
    odd = bench["data"].parent / os.fsdecode(b"data-\xff")
    bench["data"].rename(odd)
    o = run({**bench, "data": odd}, capsys)
    assert o.rc == 0 and "Traceback" not in o.err


def test_sample_name_that_is_not_valid_unicode(bench, capsys):
    """A pickled name can hold a lone surrogate (bytes that were not UTF-8): results are still written."""
    odd = "m1" + os.fsdecode(b"\xff")
    gt_key = LAYOUT["mer2023"][2]
    corpus = {n: _stored("mer2023", v) for n, v in TOY_GT["mer2023"].items()}
    corpus[odd] = corpus.pop("m1")
    write_label_npz(label_file(bench, "mer2023"), {gt_key: corpus})
    content = toy_answers("mer2023", "A")
    answers = {odd if n == "m1" else n: a for n, a in content["answers"].items()}
    ov = {odd if n == "m1" else n: a for n, a in content["ov"].items()}
    write_answer_npz(answer_file(bench, "mer2023"), answers, ov)
    o = run(bench, capsys, "--select", CKPT_A)
    assert o.rc == 0, o.err
    assert o.row("toy-model")["mer2023"] == "75.00"


def test_answer_text_that_is_not_valid_unicode_goes_through_an_extractor(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.jsonl"
    answers = answers_of(bench, "mer2023")
    answers["m1"] = answers["m1"] + os.fsdecode(b" \xff\xfe")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        for n, a in answers.items():
            fh.write(json.dumps({"name": n, "answer": a}) + "\n")  # ASCII JSON: the lone surrogate as \udcff
    o = run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path},name=mine")
    assert o.rc == 0, o.err


def test_model_name_too_long_for_a_file_name(bench, capsys):
    name = "m" * 300
    o = run(bench, capsys, model_args=f"path={bench['model']},name={name}")
    assert o.rc == 0, o.err
    assert o.row(name)["mer2023"] == "75.00"
    assert all(len(p.name) <= 255 for p in o.output.iterdir())


def test_model_name_that_is_not_utf8(bench, capsys):
    name = os.fsdecode(b"model-\xff")
    o = run(bench, capsys, model_args=f"path={bench['model']},name={name}")
    assert "Traceback" not in o.err
    assert o.rc == 0 or len(o.error_lines) == 1
    if o.rc == 0:
        assert (o.output / "leaderboard.csv").read_bytes().decode("utf-8")


def test_model_names_that_are_path_tricks_stay_inside_the_output(bench, capsys):
    for name in ("../escape", "..", "/etc/passwd", "a/b"):
        o = run(bench, capsys, model_args=f"path={bench['model']},name={name}")
        assert o.rc == 0, o.err
    assert not (o.output.parent / "escape").exists()
    assert sorted(p.name for p in o.output.iterdir() if p.is_dir()) == ["a_b", "escape", "etc_passwd", "unnamed"]


# ================================================================ class 7: the output folder

def test_output_that_is_a_file(bench, capsys, tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("x")
    refused(run(bench, capsys, output=out), str(out), "is a file")


def test_output_below_a_file(bench, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    refused(run(bench, capsys, output=blocker / "results"), str(blocker), "is a file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_output_not_writable(bench, capsys, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        refused(run(bench, capsys, output=out), str(out), "cannot write")
    finally:
        out.chmod(0o755)


def test_model_folder_that_is_a_file(bench, capsys, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "toy-model").write_text("x")
    refused(run(bench, capsys, output=out), "toy-model", "is a file")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[]", b'{"files": [{"label": 1}]}',
                                     b'{"files": [{"label": "a", "primary": NaN, "order": 0}]}'],
                         ids=["bad-json", "not-utf8", "list", "bad-file-entry", "nan"])
def test_corrupt_earlier_summary_is_named_left_out_and_flagged(bench, capsys, content):
    run(bench, capsys, task="cmumosi")
    path = bench["model"].parent / "results" / "toy-model" / "cmumosi" / "summary.json"
    path.write_bytes(content)
    o = run(bench, capsys, task="mer2023")
    row = flagged(o, "toy-model", "unreadable-summary:cmumosi", str(path))
    assert row["mer2023"] == "75.00" and row["cmumosi"] == ""


@pytest.mark.parametrize("content", [b"model,selection\n\xff\xfe,best\n", b"\x00\x01\x02",
                                     b'model,selection,mer2023\n"unterminated,best,1\n'],
                         ids=["not-utf8", "binary", "bad-quote"])
def test_unreadable_leaderboard_is_kept_aside_and_rebuilt(bench, capsys, content):
    first = run(bench, capsys, model_args=f"path={bench['model']},name=first")
    board = first.output / "leaderboard.csv"
    board.write_bytes(content)
    o = run(bench, capsys, model_args=f"path={bench['model']},name=second")
    assert o.rc == 0 and "kept as leaderboard.csv.bad-" in o.err
    models = {r["model"] for r in read_leaderboard(board)}
    assert models == {"first", "second"}  # the first row is rebuilt from its summaries, not lost
    assert [p.read_bytes() for p in o.output.glob("leaderboard.csv.bad-*")] == [content]


def test_leaderboard_with_foreign_columns_keeps_its_rows(bench, capsys):
    first = run(bench, capsys, model_args=f"path={bench['model']},name=first")
    board = first.output / "leaderboard.csv"
    rows = read_leaderboard(board)
    with open(board, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*LEADERBOARD_COLUMNS, "notes"])
        w.writeheader()
        for r in rows + [{"model": "hand-entered", "selection": "published", "mer2023": "60.00", "notes": "x"}]:
            w.writerow(r)
    o = run(bench, capsys, model_args=f"path={bench['model']},name=second")
    assert o.rc == 0 and "foreign: notes" in o.err
    assert {r["model"] for r in read_leaderboard(board)} == {"first", "second", "hand-entered"}


def test_report_on_an_unreadable_leaderboard_says_how_to_repair(bench, capsys):
    first = run(bench, capsys, model_args=f"path={bench['model']},name=first")
    board = first.output / "leaderboard.csv"
    board.write_bytes(b"\xff\xfe garbage")
    capsys.readouterr()
    rc = main(["report", "--output", str(first.output)])
    err = capsys.readouterr().err
    o = Outcome(rc, "", err, first.output)
    refused(o, str(board), "--rebuild")
    rc = main(["report", "--output", str(first.output), "--rebuild"])
    cap = capsys.readouterr()
    assert rc == 0 and "first" in cap.out
    assert {r["model"] for r in read_leaderboard(board)} == {"first"}


def test_report_on_a_file(capsys, tmp_path):
    f = tmp_path / "x"
    f.write_text("x")
    capsys.readouterr()
    rc = main(["report", "--output", str(f)])
    refused(Outcome(rc, "", capsys.readouterr().err, f), str(f))


# ================================================================ class 9: checks before the first sample

class RecordingAdapter(Adapter):
    """A generating model that records every sample it is asked."""

    name = "test-hostile-recorder"
    inputs = ("video", "subtitle")
    asked: ClassVar[list[str]] = []
    reply: ClassVar[Callable[[Sample], Any]] = staticmethod(lambda s: "The person is happy.")

    def answer(self, samples):
        RecordingAdapter.asked.extend(s.name for s in samples)
        return [RecordingAdapter.reply(s) for s in samples]


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setitem(ADAPTERS, RecordingAdapter.name, RecordingAdapter)
    RecordingAdapter.asked = []
    RecordingAdapter.reply = staticmethod(lambda s: "The person is happy.")
    return RecordingAdapter


def _media(bench: dict[str, Path], task: str) -> None:
    folder = bench["data"] / LAYOUT[task][0]
    sub = {"meld": "subvideo"}.get(task, "video")
    (folder / sub).mkdir(exist_ok=True)
    for n in TOY_GT[task]:
        (folder / sub / f"{n}.mp4").write_bytes(b"")


def test_missing_task_folder_stops_before_any_sample(bench, capsys, recorder):
    _media(bench, "mer2023")
    import shutil

    shutil.rmtree(bench["data"] / LAYOUT["meld"][0])
    o = run(bench, capsys, "--extractor", "lexicon", task="mer2023,meld", model="test-hostile-recorder",
            model_args="")
    refused(o, "meld")
    assert recorder.asked == []


def test_missing_media_folder_stops_before_any_sample(bench, capsys, recorder):
    _media(bench, "mer2023")  # meld has no subvideo/ folder
    o = run(bench, capsys, "--extractor", "lexicon", task="mer2023,meld", model="test-hostile-recorder",
            model_args="")
    refused(o, "subvideo")
    assert recorder.asked == []


def test_missing_subtitles_stop_before_any_sample(bench, capsys, recorder):
    _media(bench, "mer2023")
    _media(bench, "meld")
    (bench["data"] / LAYOUT["meld"][0] / LAYOUT["meld"][3]).unlink()
    o = run(bench, capsys, "--extractor", "lexicon", task="mer2023,meld", model="test-hostile-recorder",
            model_args="")
    refused(o, "subtitle")
    assert recorder.asked == []


def test_generating_model_without_extractor_stops_before_any_sample(bench, capsys, recorder):
    _media(bench, "mer2023")
    o = run(bench, capsys, task="mer2023", model="test-hostile-recorder", model_args="")
    refused(o, "--extractor")
    assert recorder.asked == []


def test_output_checked_before_any_sample(bench, capsys, recorder, tmp_path):
    _media(bench, "mer2023")
    out = tmp_path / "file-output"
    out.write_text("x")
    refused(run(bench, capsys, "--extractor", "lexicon", model="test-hostile-recorder", model_args="", output=out),
            "is a file")
    assert recorder.asked == []


@pytest.mark.parametrize("value", [7, ["happy"], {"a": "b"}, b"happy"], ids=["int", "list", "dict", "bytes"])
def test_adapter_returning_non_text_fails_that_sample(bench, capsys, recorder, value):
    _media(bench, "mer2023")
    recorder.reply = staticmethod(lambda s: value if s.name == "m1" else "The person is happy.")
    o = run(bench, capsys, "--extractor", "lexicon", model="test-hostile-recorder", model_args="")
    flagged(o, "test-hostile-recorder", "failed-samples:1", "not text")


# ================================================================ class 10: honest flags

def test_existing_extraction_files_win_and_the_row_is_not_flagged_with_the_unused_extractor(bench, capsys):
    o = run(bench, capsys, "--extractor", "lexicon")
    assert o.rc == 0 and "used existing extractions" in o.err
    assert "extractor:lexicon" not in o.row("toy-model")["flags"]


def test_force_extract_runs_the_configured_extractor_and_flags_it(bench, capsys):
    o = run(bench, capsys, "--extractor", "lexicon", "--force-extract")
    assert o.rc == 0, o.err
    assert "extractor:lexicon" in o.row("toy-model")["flags"]
    assert "used existing extractions" not in o.err


def test_force_extract_without_an_extractor_is_refused(bench, capsys):
    refused(run(bench, capsys, "--force-extract"), "--force-extract", "--extractor")


# ================================================================ the input limits are an option

@pytest.fixture
def reset_limits():
    from unibench.safe_npz import set_limits

    yield
    set_limits(None)


def test_input_limits_can_be_lowered_and_raised(bench, capsys, reset_limits):
    o = run(bench, capsys, "--input-limits", "max_member_mb=0.0001")
    refused(o, "max_member_mb")
    o = run(bench, capsys, "--input-limits", "max_member_mb=4096,max_objects=50000000,max_depth=200")
    assert o.rc == 0 and o.row("toy-model")["mer2023"] == "75.00"


def test_input_limits_from_the_environment(bench, capsys, monkeypatch, reset_limits):
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_objects=3")
    refused(run(bench, capsys), "max_objects")


@pytest.mark.parametrize("text", ["max_member_mb=lots", "speed=3", "max_depth=-1"])
def test_bad_input_limits_are_refused(bench, capsys, text, reset_limits):
    refused(run(bench, capsys, "--input-limits", text), "--input-limits")


# ================================================================ found by an independent audit

def test_two_model_names_that_map_to_one_folder_are_refused(bench, capsys):
    assert run(bench, capsys, model_args=f"path={bench['model']},name=team/x").rc == 0
    o = run(bench, capsys, model_args=f"path={bench['model']},name=team_x")
    refused(o, "team/x", "same folder")


def test_a_level2_run_flags_the_row(bench, capsys):
    run(bench, capsys, task="cmumosi")
    o = run(bench, capsys, "--level", "level2", task="mer2023")
    row = flagged(o, "toy-model", "level:level2")
    assert "mixed-levels" in row["flags"].split(";")


@pytest.mark.parametrize("task,name,field,value", [("cmumosi", "v2", "val", 10**400),
                                                   ("mer2023", "m2", "emo", 10**5000),
                                                   ("meld", "dia1_utt1", "emo", 10**5000),
                                                   ("mer2023", "m2", "emo", "[]"),
                                                   ("mer2023", "m2", "emo", ", ")],
                         ids=["val-overflows-float", "emo-5000-digits", "index-5000-digits", "emo-brackets",
                              "emo-comma"])
def test_ground_truth_values_past_python_limits_are_refused(bench, capsys, task, name, field, value):
    path = rewrite_gt(bench, task, name, field, value)
    refused(run(bench, capsys, task=task), str(path), f"'{name}'")


def test_jsonl_answer_with_an_integer_past_the_digit_limit(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.jsonl"
    path.write_text('{"name": "m1", "answer": ' + "9" * 5000 + "}\n", encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "line 1")


def test_jsonl_row_with_a_key_given_twice_is_refused(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.jsonl"
    path.write_text('{"name": "m1", "answer": "happy", "answer": "sad"}\n', encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "twice")


def test_csv_header_naming_a_column_twice_is_refused(bench, capsys, tmp_path):
    path = tmp_path / "mer2023.csv"
    path.write_text('name,answer,answer\nm1,"I am happy.","I am sad."\n', encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model_args=f"path={path}"), str(path), "twice")
    gt = label_file(bench, "ovmerdplus")
    lines = gt.read_text(encoding="utf-8").splitlines()
    gt.write_text("\n".join([lines[0] + ",openset"] + [f"{line},[sad]" for line in lines[1:]]) + "\n")
    refused(run(bench, capsys, task="ovmerdplus"), str(gt), "twice")


def test_summary_whose_flags_are_not_text_is_left_out_and_flagged(bench, capsys):
    run(bench, capsys, task="cmumosi")
    path = bench["model"].parent / "results" / "toy-model" / "cmumosi" / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for f in data["files"]:
        f["flags"] = [{"a": 1}]
    path.write_text(json.dumps(data), encoding="utf-8")
    flagged(run(bench, capsys, task="mer2023"), "toy-model", "unreadable-summary:cmumosi")


@pytest.mark.parametrize("primary", [1e308, -0.5], ids=["huge", "negative"])
def test_summary_with_an_impossible_score_is_left_out_and_flagged(bench, capsys, primary):
    run(bench, capsys, task="cmumosi")
    path = bench["model"].parent / "results" / "toy-model" / "cmumosi" / "summary.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["files"][0]["primary"] = primary
    path.write_text(json.dumps(data), encoding="utf-8")
    row = flagged(run(bench, capsys, task="mer2023"), "toy-model", "unreadable-summary:cmumosi")
    assert row["cmumosi"] == ""


def test_non_utf8_model_name_keeps_one_row_over_reruns(bench, capsys):
    name = os.fsdecode(b"m\xff\xfe")
    for _ in range(3):
        assert run(bench, capsys, model_args=f"path={bench['model']},name={name}").rc == 0
    rows = read_leaderboard(bench["model"].parent / "results" / "leaderboard.csv")
    assert len(rows) == 1


def test_leaderboard_cut_short_in_its_last_row_is_kept_aside_and_rebuilt(bench, capsys):
    first = run(bench, capsys, model_args=f"path={bench['model']},name=first", task="cmumosi")
    board = first.output / "leaderboard.csv"
    data = board.read_bytes()
    board.write_bytes(data.rstrip(b"\r\n")[:-3])
    o = run(bench, capsys, model_args=f"path={bench['model']},name=second")
    assert o.rc == 0 and "cut short" in o.err
    rows = {r["model"]: r for r in read_leaderboard(board)}
    assert rows["first"]["cmumosi"] == "100.00" and "second" in rows


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_named_like_an_answer_file_is_not_opened(bench, capsys):
    os.mkfifo(answer_file(bench, "mer2023").parent / "checkpoint_000030_x.npz")
    o = run(bench, capsys)
    assert o.rc == 0 and o.row("toy-model")["mer2023"] == "75.00"


def test_file_named_like_an_extraction_without_an_answer_is_said(bench, capsys):
    content = toy_answers("mer2023", "A")
    write_answer_npz(answer_file(bench, "mer2023").parent / "checkpoint_000030-openset_tuned.npz",
                     content["answers"])
    o = run(bench, capsys)
    assert o.rc == 0 and "named like extraction files" in o.err


def test_error_text_with_carriage_returns_stays_one_line(bench, capsys):
    gt_key = LAYOUT["mer2023"][2]
    corpus = {n: _stored("mer2023", v) for n, v in TOY_GT["mer2023"].items()}
    corpus["m2\rerror: injected"] = {"emo": 3, "val": 0.0}
    write_label_npz(label_file(bench, "mer2023"), {gt_key: corpus})
    o = run(bench, capsys)
    refused(o)
    assert len(o.err.splitlines()) == 1


@pytest.mark.parametrize("argv", [["--level", "bad"], ["--batch-size", "abc"], ["--frobnicate"],
                                  ["report", "--frobnicate"], ["lexicon", "frob"], ["grouping", "--gt", "x"]],
                         ids=["choice", "type", "unknown", "report", "lexicon", "grouping"])
def test_bad_command_lines_are_one_error_line(capsys, argv):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    refused(Outcome(rc, "", err, Path(".")), "see run_bench")


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_limit_below_one_is_refused_for_replay_too(bench, capsys, limit):
    refused(run(bench, capsys, "--limit", limit), "--limit")


@pytest.mark.parametrize("args", ["base_url=http://127.0.0.1:9/v1,model=x,timeout=nan",
                                  "base_url=http://127.0.0.1:9/v1,model=x,timeout=inf",
                                  "base_url=127.0.0.1:9,model=x", "base_url=ftp://127.0.0.1:9/v1,model=x"],
                         ids=["nan", "inf", "no-scheme", "ftp"])
def test_openai_extractor_settings_are_checked_up_front(bench, capsys, args):
    pytest.importorskip("openai")
    refused(run(bench, capsys, "--extractor", "openai", "--extractor-args", args, "--force-extract"), "base_url"
            if "base_url=h" not in args else "timeout")


def test_unreachable_extraction_server_stops_a_generating_run_before_any_sample(bench, capsys, recorder):
    pytest.importorskip("openai")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _media(bench, "mer2023")
    o = run(bench, capsys, "--extractor", "openai", "--extractor-args", f"base_url=http://127.0.0.1:{port}/v1,model=x",
            model="test-hostile-recorder", model_args="")
    refused(o, f"127.0.0.1:{port}", "before any work")
    assert recorder.asked == []


def test_two_different_subtitles_for_one_sample_are_refused_before_any_sample(bench, capsys, recorder):
    _media(bench, "mer2023")
    path = bench["data"] / LAYOUT["mer2023"][0] / LAYOUT["mer2023"][3]
    path.write_text(path.read_text(encoding="utf-8") + "m1,中文,a different subtitle\n", encoding="utf-8")
    refused(run(bench, capsys, "--extractor", "lexicon", model="test-hostile-recorder", model_args=""),
            str(path), "'m1'")
    assert recorder.asked == []


def test_shared_output_files_that_are_folders_are_found_before_work(bench, capsys, tmp_path):
    for shared in ("leaderboard.csv", ".unibench.lock"):
        out = tmp_path / f"out-{shared}"
        (out / shared).mkdir(parents=True)
        refused(run(bench, capsys, output=out), shared, "not a file")


def test_an_empty_wheel_is_refused(bench, capsys, tmp_path):
    import shutil

    from fixtures import write_xlsx

    lexicon = tmp_path / "lexicon-copy"
    shutil.copytree(bench["lexicon"], lexicon)
    write_xlsx(lexicon / "wheel3.xlsx", ["level1", "level2", "level3"], [])
    o = run({**bench, "lexicon": lexicon}, capsys)
    refused(o, "wheel3.xlsx", "no emotion words")


def test_a_non_text_answer_in_the_extraction_cache_is_one_line(tmp_path):
    import sqlite3

    from unibench.errors import UserError
    from unibench.metrics.cache import DB_NAME, ExtractionCache

    with ExtractionCache(tmp_path) as cache:
        cache.put_many([("k1", "[happy]")], backend="b", model="m")
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("UPDATE extraction SET response = CAST(response AS BLOB)")
    with ExtractionCache(tmp_path) as cache, pytest.raises(UserError, match="not text.*--no-cache"):
        cache.get_many(["k1"])


# ================================================================ found by a second audit

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_in_place_of_the_lexicon_cache_does_not_block(bench, capsys, tmp_path):
    from unibench.metrics.lexicon import lexicon_hash

    cache = tmp_path / "lc"
    cache.mkdir()
    os.mkfifo(cache / f"{lexicon_hash(bench['lexicon'])}.json")
    o = run(bench, capsys, "--lexicon-cache", str(cache))
    assert o.rc == 0 and "rebuilt" in o.err


def test_replay_path_that_is_a_link_loop(bench, capsys, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(run(bench, capsys, model_args=f"path={loop}"), str(loop))


@pytest.mark.parametrize("url", ["http://x/{nope}/{file}", "http://x/{0}", "http://x/{file", "http://[::1/{file}",
                                 "http://127.0.0.1:9/a b/{file}"])
def test_lexicon_fetch_with_a_malformed_url_template(capsys, tmp_path, url):
    capsys.readouterr()
    rc = main(["lexicon", "fetch", str(tmp_path / "lex"), "--base-url", url])
    refused(Outcome(rc, "", capsys.readouterr().err, tmp_path), "lexicon fetch")


def test_npz_holding_a_member_with_and_without_the_npy_extension_is_refused(bench, capsys):
    path = label_file(bench, "mer2023")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("test1_corpus", b"whatever numpy would read instead")
    refused(run(bench, capsys), str(path), "test1_corpus.npy")


def test_nul_byte_in_a_csv_label_is_refused(bench, capsys):
    path = label_file(bench, "ovmerdplus")
    path.write_text(path.read_text(encoding="utf-8").replace("happy", "hap\x00py", 1), encoding="utf-8")
    refused(run(bench, capsys, task="ovmerdplus"), str(path), "NUL")


@pytest.mark.parametrize("value", ["175.00", "nan", "abc"])
def test_leaderboard_holding_an_impossible_score(bench, capsys, value):
    first = run(bench, capsys, model_args=f"path={bench['model']},name=first")
    board = first.output / "leaderboard.csv"
    rows = read_leaderboard(board)
    rows[0]["mer2023"] = value
    with open(board, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LEADERBOARD_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    capsys.readouterr()
    rc = main(["report", "--output", str(first.output)])
    refused(Outcome(rc, "", capsys.readouterr().err, first.output), "not a score", "--rebuild")
    o = run(bench, capsys, model_args=f"path={bench['model']},name=second")
    assert o.rc == 0 and "not a score" in o.err
    assert {r["model"]: r["mer2023"] for r in read_leaderboard(board)} == {"first": "75.00", "second": "75.00"}


def test_every_row_of_a_model_follows_its_summaries(bench, capsys):
    """A level-2 run with another selection also updates the model's best row (as --rebuild would)."""
    run(bench, capsys)
    o = run(bench, capsys, "--level", "level2", "--select", "last")
    assert o.rc == 0
    board = o.output / "leaderboard.csv"
    live = {r["selection"]: r for r in read_leaderboard(board)}
    assert all("level:level2" in r["flags"] for r in live.values()) and len(live) == 2
    capsys.readouterr()
    assert main(["report", "--output", str(o.output), "--rebuild"]) == 0
    assert {r["selection"]: r for r in read_leaderboard(board)} == live


def test_bad_input_limits_in_the_environment_stop_check_data_too(bench, capsys, monkeypatch, reset_limits):
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_objects=lots")
    capsys.readouterr()
    rc = main(["--check-data", "--data-root", str(bench["data"]), "--task", "mer2023"])
    refused(Outcome(rc, "", capsys.readouterr().err, Path(".")), "UNIBENCH_INPUT_LIMITS")
