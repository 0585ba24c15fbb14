"""The restricted npz loader: hostile pickles are refused and never run; broken files give one clear error."""
from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fixtures import write_label_npz, write_lexicon, write_task  # noqa: F401
from unibench.cli import main
from unibench.errors import UserError
from unibench.safe_npz import load_npz
from unibench.tasks import get_task, load_task

REPO = Path(__file__).resolve().parent.parent


class _Payload:
    """Pickles as a call to ``func(*args)``: what a hostile label file would hold."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_npz(path: Path, payload, key: str = "test1_corpus") -> Path:
    holder = np.empty((), dtype=object)
    holder[()] = {"sample_1": {"emo": "happy", "val": 1.0, "x": payload}}
    np.savez(path, **{key: holder})
    return path


def test_os_system_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _evil_npz(tmp_path / "evil.npz", _Payload(os.system, f"touch {marker}"))
    with pytest.raises(UserError) as info:
        load_npz(path)
    msg = str(info.value)
    assert str(path) in msg and "'test1_corpus'" in msg
    assert "refused to load posix.system" in msg or "refused to load os.system" in msg
    assert "only dicts, lists, strings, numbers and numpy arrays are accepted" in msg
    assert not marker.exists()
    # the file really is hostile: numpy's own loader with allow_pickle runs it
    np.load(path, allow_pickle=True)["test1_corpus"]
    assert marker.exists()


@pytest.mark.parametrize("func, args, name", [
    (builtins.eval, ("1+1",), "builtins.eval"),
    (builtins.exec, ("x = 1",), "builtins.exec"),
    (builtins.getattr, ("text", "upper"), "builtins.getattr"),
    (subprocess.Popen, (["true"],), "subprocess.Popen"),
    (np.load, ("x.npy",), "numpy.load"),
])
def test_other_callables_are_refused(tmp_path, func, args, name):
    path = _evil_npz(tmp_path / "evil.npz", _Payload(func, *args))
    with pytest.raises(UserError, match=f"refused to load {name}"):
        load_npz(path, ["test1_corpus"])


def test_hostile_label_file_through_the_task_loader(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "data" / "mer2023-dataset-process"
    folder.mkdir(parents=True)
    _evil_npz(folder / "label-6way.npz", _Payload(os.system, f"touch {marker}"))
    with pytest.raises(UserError, match=r"label-6way\.npz: key 'test1_corpus': unsafe or corrupt pickle"):
        load_task(get_task("mer2023"), tmp_path / "data", check_count=False)
    assert not marker.exists()


def test_hostile_answer_file_through_the_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    write_task(tmp_path / "data", "mer2023", {"s1": "happy", "s2": "sad"})
    run_dir = tmp_path / "answers" / "results-mer2023" / "run1"
    run_dir.mkdir(parents=True)
    _evil_npz(run_dir / "checkpoint_1.npz", _Payload(os.system, f"touch {marker}"), key="name2reason")
    write_lexicon(tmp_path / "lex")
    rc = main(["--model", "replay", "--model-args", f"path={tmp_path / 'answers'}", "--task", "mer2023",
               "--data-root", str(tmp_path / "data"), "--lexicon", str(tmp_path / "lex"),
               "--output", str(tmp_path / "out"), "--allow-count-mismatch"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "checkpoint_1.npz: key 'name2reason': unsafe or corrupt pickle" in lines[0]
    assert "Traceback" not in err
    assert not marker.exists()


# ---------------------------------------------------------------- what must still load

def test_real_shared_label_files_load_like_numpy(shared_data):
    for rel in ("mer-unibench-sample/dataset/mer2023-dataset-process/label-6way.npz",
                "mer-unibench-sample/dataset/cmumosi-process/label.npz"):
        path = shared_data / rel
        ours = load_npz(path)
        ref = np.load(path, allow_pickle=True)    # trusted: the benchmark's own files
        assert sorted(ours) == sorted(ref.files)
        for key in ref.files:
            assert ours[key] == ref[key].item(), key


def test_plain_and_object_arrays(tmp_path):
    path = tmp_path / "mixed.npz"
    holder = np.empty((), dtype=object)
    holder[()] = {"a": {"emo": np.int64(3), "val": np.float64(-1.5)}, "b": {"emo": "happy", "val": 0.0}}
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.savez(path, corpus=holder, names=np.array(["x", "yy"]), values=np.arange(5), f=fortran,
             scalar=np.float64(2.5), objs=np.array([["a", 1], ["b", 2]], dtype=object))
    data = load_npz(path)
    assert data["corpus"] == {"a": {"emo": 3, "val": -1.5}, "b": {"emo": "happy", "val": 0.0}}
    assert isinstance(data["corpus"]["a"]["val"], np.float64)
    assert data["names"].tolist() == ["x", "yy"]
    assert data["values"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(data["f"], fortran)
    assert float(data["scalar"]) == 2.5
    assert data["objs"].tolist() == [["a", 1], ["b", 2]]
    assert list(load_npz(path, ["names"])) == ["names"]


def test_compressed_npz(tmp_path):
    path = tmp_path / "c.npz"
    holder = np.empty((), dtype=object)
    holder[()] = {"k": "v"}
    np.savez_compressed(path, name2reason=holder, filenames=np.array(["a", "b"]))
    data = load_npz(path)
    assert data["name2reason"] == {"k": "v"} and data["filenames"].tolist() == ["a", "b"]


def test_version_2_header(tmp_path):
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array(buf, np.arange(4), version=(2, 0))
    path = tmp_path / "v2.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("arr.npy", buf.getvalue())
    assert load_npz(path)["arr"].tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- broken files

def test_missing_file_and_key(tmp_path):
    with pytest.raises(UserError, match=r"nothere\.npz: file not found"):
        load_npz(tmp_path / "nothere.npz")
    path = write_label_npz(tmp_path / "l.npz", {"test_corpus": {"a": {"val": 1.0}}, "train_corpus": {}})
    with pytest.raises(UserError, match=r"l\.npz: key 'test1_corpus' not found \(keys: test_corpus, train_corpus\)"):
        load_npz(path, ["test1_corpus"])


def test_not_a_zip(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(UserError, match=r"text\.npz: not a readable \.npz file"):
        load_npz(path)
    with pytest.raises(UserError, match="not a readable .npz file"):
        load_npz(tmp_path)      # a folder


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_file(tmp_path, keep):
    good = write_label_npz(tmp_path / "good.npz", {"test_corpus": {f"s{i}": {"val": float(i)} for i in range(200)}})
    blob = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(UserError, match=r"bad\.npz: "):
        load_npz(bad)


def test_corrupt_member_data(tmp_path):
    good = write_label_npz(tmp_path / "good.npz", {"test_corpus": {f"s{i}": {"val": float(i)} for i in range(200)}})
    blob = bytearray(good.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 16] = b"\x00" * 16        # the central directory survives; the data does not
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=r"bad\.npz: key 'test_corpus': (truncated or corrupt|unsafe or corrupt)"):
        load_npz(bad)


def test_truncated_pickle_inside_a_valid_zip(tmp_path):
    from numpy.lib import format as npformat

    holder = np.empty((), dtype=object)
    holder[()] = {f"s{i}": {"val": float(i)} for i in range(50)}
    buf = io.BytesIO()
    npformat.write_array(buf, holder, allow_pickle=True)
    path = tmp_path / "cut.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test_corpus.npy", buf.getvalue()[:-40])
    with pytest.raises(UserError, match=r"cut\.npz: key 'test_corpus': (unsafe or corrupt pickle|truncated or corrupt)"):
        load_npz(path)


def test_truncated_label_file_via_cli_subprocess(tmp_path):
    """The whole CLI as a user runs it: one error line, exit 2, no traceback."""
    write_task(tmp_path / "data", "cmumosi", {f"v{i}": 0.5 * (i - 3) for i in range(8)})
    label = tmp_path / "data" / "cmumosi-process" / "label.npz"
    label.write_bytes(label.read_bytes()[:100])
    write_lexicon(tmp_path / "lex")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_bench.py"), "--model", "replay", "--model-args", f"path={tmp_path}",
         "--task", "cmumosi", "--data-root", str(tmp_path / "data"), "--lexicon", str(tmp_path / "lex"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "UNIBENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {label}: not a readable .npz file")
