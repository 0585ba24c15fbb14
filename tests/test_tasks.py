"""The nine task definitions and their loaders, on synthetic folders in the real layouts (spec §1)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fixtures import LAYOUT, write_csv, write_label_npz, write_task
from unibench.cli import main
from unibench.errors import UserError
from unibench.tasks import TASKS, get_task, load_task, resolve_tasks
from unibench.tasks.base import resolve_data_root

# spec §1, written out: id -> (folder, gt file, key, n, family, subtitle file, subtitle column)
SPEC_TABLE = {
    "mer2023": ("mer2023-dataset-process", "label-6way.npz", "test1_corpus", 411, "basic",
                "transcription-engchi-polish.csv", "english"),
    "mer2024": ("mer2024-dataset-process", "label-6way.npz", "test1_corpus", 1169, "basic",
                "transcription_merge.csv", "english"),
    "meld": ("meld-process", "label.npz", "test_corpus", 2610, "basic", "transcription-engchi-polish.csv", "english"),
    "iemocapfour": ("iemocap-process", "label_4way.npz", "whole_corpus", 1241, "basic",
                    "transcription-engchi-polish.csv", "english"),
    "cmumosi": ("cmumosi-process", "label.npz", "test_corpus", 686, "sentiment",
                "transcription-engchi-polish.csv", "english"),
    "cmumosei": ("cmumosei-process", "label.npz", "test_corpus", 4659, "sentiment",
                 "transcription-engchi-polish.csv", "english"),
    "sims": ("sims-process", "label.npz", "test_corpus", 457, "sentiment", "transcription-engchi-polish.csv", "english"),
    "simsv2": ("simsv2-process", "label.npz", "test_corpus", 1034, "sentiment",
               "transcription-engchi-polish.csv", "english"),
    "ovmerdplus": ("ovmerdplus-process", "ovlabel.csv", "name,openset", 532, "ov", "subtitle_eng.csv", "sentence"),
}


def test_catalog_matches_the_protocol():
    assert list(TASKS) == list(SPEC_TABLE)
    for tid, (folder, gt_file, key, n, family, sub_file, sub_col) in SPEC_TABLE.items():
        spec = TASKS[tid]
        assert (spec.folder, spec.gt_file, spec.gt_key, spec.expected_count, spec.family,
                spec.subtitle_file, spec.subtitle_column) == (folder, gt_file, key, n, family, sub_file, sub_col), tid
        assert spec.primary_metric == {"basic": "hit_rate", "sentiment": "waf", "ov": "fscore"}[family]
        assert (folder, gt_file, key, sub_file) == LAYOUT[tid]      # the fixtures write what the protocol says
    assert TASKS["meld"].emotions == ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise")
    assert TASKS["iemocapfour"].emotions == ("happy", "sad", "neutral", "anger")
    assert TASKS["iemocapfour"].split == "session5"
    assert TASKS["mer2023"].question == "Please recognize all possible emotional states of the character."


def test_fingerprints_are_short_distinct_and_stable():
    prints = {spec.fingerprint for spec in TASKS.values()}
    assert len(prints) == 9 and all(re.fullmatch(r"[0-9a-f]{12}", p) for p in prints)
    assert TASKS["sims"].fingerprint == get_task("sims").fingerprint


# ---------------------------------------------------------------- each loader

BASIC_GT = {"sample_00000001": "happy", "sample_00000002": "worried", "sample_00000003": "neutral"}
SENTI_GT = {"vid_a_1": 1.4, "vid_a_2": -0.6, "vid_b_1": 0.0, "vid_b_2": np.float64(2.8)}


@pytest.mark.parametrize("tid", ["mer2023", "mer2024"])
def test_mer_loaders(tmp_path, tid):
    write_task(tmp_path, tid, BASIC_GT, decoys={"sample_train": "sad"})
    task = load_task(get_task(tid), tmp_path, check_count=False)
    assert task.gt == BASIC_GT            # emo strings as stored; the train corpus is ignored
    assert task.root == tmp_path / TASKS[tid].folder
    assert task.names == list(BASIC_GT)
    assert len(task.warnings) == 1 and f"holds 3 test samples, the protocol has {TASKS[tid].expected_count}" \
        in task.warnings[0]
    assert task.subtitles()["sample_00000002"] == "subtitle of sample_00000002"


def test_meld_index_to_name(tmp_path):
    gt = {f"dia{i}_utt0": i for i in range(7)}           # indices as stored
    write_task(tmp_path, "meld", gt, decoys={"dia99_utt9": 2})
    task = load_task(get_task("meld"), tmp_path, check_count=False)
    assert task.gt == {f"dia{i}_utt0": e for i, e in
                       enumerate(["anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"])}


def test_iemocap_session5_split_and_index_to_name(tmp_path):
    gt = {"Ses05F_impro01_F000": 0, "Ses05F_impro01_M001": 1, "Ses05M_script02_M012": 2, "Ses05M_impro07_F020": 3}
    decoys = {"Ses01F_impro01_F000": 0, "Ses02M_script01_M001": 1, "Ses03F_impro03_F010": 2, "Ses04M_impro05_M002": 3,
              "Ses1": 0, "S5": 1}
    write_task(tmp_path, "iemocapfour", gt, decoys=decoys)
    task = load_task(get_task("iemocapfour"), tmp_path, check_count=False)
    assert task.gt == {"Ses05F_impro01_F000": "happy", "Ses05F_impro01_M001": "sad",
                       "Ses05M_script02_M012": "neutral", "Ses05M_impro07_F020": "anger"}


@pytest.mark.parametrize("tid", ["cmumosi", "cmumosei", "sims", "simsv2"])
def test_sentiment_loaders(tmp_path, tid):
    write_task(tmp_path, tid, SENTI_GT, decoys={"train_1": 3.0})
    task = load_task(get_task(tid), tmp_path, check_count=False)
    assert task.gt == {k: float(v) for k, v in SENTI_GT.items()}
    assert all(type(v) in (float, np.float64) for v in task.gt.values())
    assert task.subtitles()["vid_b_1"] == "subtitle of vid_b_1"


def test_ovmerdplus_loader_and_empty_list_means_neutral(tmp_path):
    gt = {"samp_1": "['Happy', 'relieved']", "samp_2": "[]", "samp_3": "", "samp_4": "['worried']",
          "samp_5": "[don't know]"}
    write_task(tmp_path, "ovmerdplus", gt, subtitles={"samp_1": "Hello there", "samp_2": ""})
    task = load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    assert task.gt == {"samp_1": ["Happy", "relieved"], "samp_2": ["neutral"], "samp_3": ["neutral"],
                       "samp_4": ["worried"], "samp_5": ["don", "t know"]}
    subs = task.subtitles()
    assert subs == {"samp_1": "Hello there", "samp_2": ""}          # column 'sentence'; a blank cell is ""
    assert subs.get("samp_3", "") == ""


def test_subtitle_columns_per_task(tmp_path):
    write_task(tmp_path, "mer2024", {"s1": "happy"}, subtitles={"s1": "english text"})
    path = tmp_path / "mer2024-dataset-process" / "transcription_merge.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == "name,chinese,english"
    assert load_task(get_task("mer2024"), tmp_path, check_count=False).subtitles() == {"s1": "english text"}


def test_exact_count_loads_without_warnings(tmp_path):
    gt = {f"sample_{i:08d}": ["happy", "sad", "angry", "neutral", "worried", "surprise"][i % 6] for i in range(411)}
    write_task(tmp_path, "mer2023", gt)
    task = load_task(get_task("mer2023"), tmp_path)     # check_count=True
    assert len(task.gt) == 411 and task.warnings == []


def test_media_paths(tmp_path):
    write_task(tmp_path, "mer2023", BASIC_GT)
    root = tmp_path / "mer2023-dataset-process"
    for rel in ("video/sample_00000001.mp4", "video/sample_00000002.avi", "audio/sample_00000001.wav",
                "openface_face/sample_00000001.npy"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    task = load_task(get_task("mer2023"), tmp_path, check_count=False)
    assert task.media_path("sample_00000001", "video") == root / "video/sample_00000001.mp4"
    assert task.media_path("sample_00000002", "video") == root / "video/sample_00000002.avi"
    assert task.media_path("sample_00000001", "audio") == root / "audio/sample_00000001.wav"
    assert task.media_path("sample_00000001", "face") == root / "openface_face/sample_00000001.npy"
    assert task.media_path("sample_00000003", "video") is None
    assert task.media_candidates("video") == ["video/<name>.mp4|.avi"]
    media = {tid: {kind: folder for kind, folder, _ in TASKS[tid].media} for tid in TASKS}
    assert media["simsv2"]["video"] == "video_new" and media["iemocapfour"]["video"] == "subvideo-tgt"
    assert media["cmumosei"]["video"] == "subvideo_new" and media["meld"]["audio"] == "subaudio"
    assert all(media[tid]["face"] == "openface_face" for tid in TASKS)  # AffectGPT reads faces for all nine


# ---------------------------------------------------------------- selecting tasks and the data root

def test_resolve_tasks():
    assert [s.id for s in resolve_tasks("all")] == list(TASKS)
    assert [s.id for s in resolve_tasks(" ALL ")] == list(TASKS)
    assert [s.id for s in resolve_tasks("MER2023, cmumosi,mer2023,")] == ["mer2023", "cmumosi"]
    with pytest.raises(UserError, match=r"unknown task 'mer2025' \(known: mer2023, mer2024, .*ovmerdplus.*'all'"):
        resolve_tasks("mer2023,mer2025")
    with pytest.raises(UserError, match="--task is empty"):
        resolve_tasks(" , ")


def test_resolve_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIBENCH_DATA", raising=False)
    with pytest.raises(UserError, match="no data root given: pass --data-root DIR or set UNIBENCH_DATA"):
        resolve_data_root(None)
    with pytest.raises(UserError, match=f"data root not found: {re.escape(str(tmp_path / 'x'))}"):
        resolve_data_root(str(tmp_path / "x"))
    monkeypatch.setenv("UNIBENCH_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root(str(tmp_path)) == tmp_path


# ---------------------------------------------------------------- bad input

def _err(exc_info) -> str:
    return str(exc_info.value)


def test_missing_task_folder_and_label_file(tmp_path):
    with pytest.raises(UserError) as info:
        load_task(get_task("sims"), tmp_path)
    assert _err(info) == f"[sims] task folder not found: {tmp_path / 'sims-process'}"
    (tmp_path / "sims-process").mkdir()
    with pytest.raises(UserError) as info:
        load_task(get_task("sims"), tmp_path)
    assert _err(info) == f"[sims] ground-truth file not found: {tmp_path / 'sims-process' / 'label.npz'}"
    (tmp_path / "ovmerdplus-process").mkdir()
    with pytest.raises(UserError, match=r"\[ovmerdplus\] ground-truth file not found: .*ovlabel\.csv"):
        load_task(get_task("ovmerdplus"), tmp_path)


def test_missing_label_key(tmp_path):
    write_label_npz(tmp_path / "mer2023-dataset-process" / "label-6way.npz",
                    {"train_corpus": {"a": {"emo": "happy"}}, "test2_corpus": {}})
    with pytest.raises(UserError) as info:
        load_task(get_task("mer2023"), tmp_path)
    assert _err(info).endswith("label-6way.npz: key 'test1_corpus' not found (keys: test2_corpus, train_corpus)")


def test_count_mismatch_is_an_error_by_default(tmp_path):
    write_task(tmp_path, "cmumosi", SENTI_GT)
    with pytest.raises(UserError) as info:
        load_task(get_task("cmumosi"), tmp_path)
    msg = _err(info)
    assert msg.startswith(f"[cmumosi] {tmp_path / 'cmumosi-process' / 'label.npz'} (test_corpus) holds 4 test samples, "
                          "the protocol has 686")
    assert "--allow-count-mismatch" in msg


@pytest.mark.parametrize("corpus, needle", [
    ({"a": {"val": 1.0}}, "sample 'a': no 'emo' field"),
    ({"a": "happy"}, "sample 'a': no 'emo' field"),
])
def test_sample_without_its_field(tmp_path, corpus, needle):
    write_label_npz(tmp_path / "mer2023-dataset-process" / "label-6way.npz", {"test1_corpus": corpus})
    with pytest.raises(UserError, match=f"label-6way.npz: key 'test1_corpus', {needle}"):
        load_task(get_task("mer2023"), tmp_path, check_count=False)


def test_bad_values(tmp_path):
    write_label_npz(tmp_path / "meld-process" / "label.npz", {"test_corpus": {"d1": {"emo": 9, "val": 0}}})
    with pytest.raises(UserError, match=r"label\.npz: key 'test_corpus', sample 'd1': 'emo' index int 9 is outside 0\.\.6 \(\['anger'"):
        load_task(get_task("meld"), tmp_path, check_count=False)
    write_label_npz(tmp_path / "sims-process" / "label.npz", {"test_corpus": {"v1": {"emo": 0, "val": "high"}}})
    with pytest.raises(UserError, match=r"label\.npz: key 'test_corpus', sample 'v1': 'val' is str 'high', expected a number"):
        load_task(get_task("sims"), tmp_path, check_count=False)
    write_label_npz(tmp_path / "cmumosi-process" / "label.npz", {"test_corpus": ["not", "a", "dict"]})
    with pytest.raises(UserError, match="key 'test_corpus' holds list, expected a dict name -> labels"):
        load_task(get_task("cmumosi"), tmp_path, check_count=False)


def test_ovlabel_csv_problems(tmp_path):
    folder = tmp_path / "ovmerdplus-process"
    write_csv(folder / "ovlabel.csv", ["name", "labels"], [("a", "[happy]")])
    with pytest.raises(UserError, match=r"ovlabel\.csv: missing column\(s\) openset \(found: name, labels\)"):
        load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    write_csv(folder / "ovlabel.csv", ["name", "openset"], [("a", "[happy]"), ("b", "[sad]", "extra")])
    with pytest.raises(UserError, match=r"ovlabel\.csv: line 3: more fields than the header has"):
        load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    (folder / "ovlabel.csv").write_bytes("name,openset\nä,[happy]\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"ovlabel\.csv: not UTF-8 text \(invalid .* at byte 13\)"):
        load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    # an unterminated quote must not swallow the rows after it
    (folder / "ovlabel.csv").write_bytes(b'name,openset\na,"[happy\nb,[sad]\nc,[angry]\n')
    with pytest.raises(UserError, match=r"ovlabel\.csv: malformed CSV \(unexpected end of data\)"):
        load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    (folder / "ovlabel.csv").write_bytes(b'name,openset\na,"[happy]"x\n')
    with pytest.raises(UserError, match=r"ovlabel\.csv: malformed CSV"):
        load_task(get_task("ovmerdplus"), tmp_path, check_count=False)
    # a UTF-8 byte-order mark is fine
    (folder / "ovlabel.csv").write_bytes("\ufeffname,openset\na,[happy]\n".encode("utf-8"))
    assert load_task(get_task("ovmerdplus"), tmp_path, check_count=False).gt == {"a": ["happy"]}


def test_subtitle_file_problems(tmp_path):
    write_task(tmp_path, "cmumosei", SENTI_GT, write_subtitles=False)
    task = load_task(get_task("cmumosei"), tmp_path, check_count=False)   # scoring never needs subtitles
    path = tmp_path / "cmumosei-process" / "transcription-engchi-polish.csv"
    with pytest.raises(UserError) as info:
        task.subtitles()
    assert _err(info) == f"subtitle file not found: {path}"
    write_csv(path, ["name", "chinese"], [("vid_a_1", "中文")])
    with pytest.raises(UserError, match=r"transcription-engchi-polish\.csv: missing column\(s\) english"):
        load_task(get_task("cmumosei"), tmp_path, check_count=False).subtitles()
    path.write_bytes("name,chinese,english\nvid_a_1,中文,hi\n".encode("gbk"))
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_task(get_task("cmumosei"), tmp_path, check_count=False).subtitles()


# ---------------------------------------------------------------- run_bench --check-data

def test_check_data_reports_each_task(tmp_path, capsys):
    write_task(tmp_path, "mer2023", {f"sample_{i:08d}": "happy" for i in range(411)})
    write_task(tmp_path, "cmumosi", SENTI_GT)
    write_task(tmp_path, "sims", SENTI_GT, write_subtitles=False)
    (tmp_path / "meld-process").mkdir()
    rc = main(["--check-data", "--data-root", str(tmp_path), "--task", "mer2023,cmumosi,sims,meld,mer2024"])
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines()}
    assert rc == 1
    assert lines["mer2023"].split()[1] == "found" and "411 samples" in lines["mer2023"]
    assert "video: no video/" in lines["mer2023"]
    assert "count mismatch" in lines["cmumosi"]
    assert f"4 samples in {tmp_path / 'cmumosi-process' / 'label.npz'} (test_corpus), protocol 686" in lines["cmumosi"]
    assert f"subtitles: subtitle file not found: {tmp_path / 'sims-process' / 'transcription-engchi-polish.csv'}" \
        in lines["sims"]
    assert lines["meld"].split()[1] == "missing" and "label.npz" in lines["meld"]
    assert lines["mer2024"].split()[1] == "missing" and "mer2024-dataset-process" in lines["mer2024"]


def test_check_data_all_found(tmp_path, capsys):
    write_task(tmp_path, "mer2023", {f"sample_{i:08d}": "sad" for i in range(411)})
    assert main(["--check-data", "--data-root", str(tmp_path), "--task", "mer2023"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["mer2023", "found"]


def test_check_data_on_the_real_sample(shared_data, capsys):
    root = shared_data / "mer-unibench-sample" / "dataset"
    assert main(["--check-data", "--data-root", str(root), "--task", "mer2023,cmumosi"]) == 0
    out = capsys.readouterr().out
    assert "411 samples" in out and "686 samples" in out
