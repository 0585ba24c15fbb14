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


# ================================================================ resource limits (issue 8)
#
# Hostile files are built from raw pickle opcodes and hand-patched zips. Cases
# that would crash or exhaust a normal loader run in a child process, so a
# regression fails one test instead of killing the run.

import pickle as _pickle
import re
import struct
import textwrap
import time
import zlib

from numpy.lib import format as npformat

from unibench import safe_npz
from unibench.safe_npz import InputLimits, check_unique_names, get_limits, parse_limits, set_limits

P3 = b"\x80\x03"


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch):
    """Every test starts from the built-in limits, whatever the environment says."""
    monkeypatch.delenv("UNIBENCH_INPUT_LIMITS", raising=False)
    previous = set_limits(None)
    yield
    set_limits(previous)


def _npy_header(descr: str, shape: tuple) -> bytes:
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _pickle_npz(path: Path, pickle_bytes: bytes, key: str = "name2reason") -> Path:
    """An .npz whose member ``key`` is a 0-d object array stored as exactly these pickle bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", _npy_header("|O", ()) + pickle_bytes)
    return path


def _saved_pickle(value) -> bytes:
    """The pickle of a 0-d object array holding ``value`` (to patch into a hostile one)."""
    holder = np.empty((), dtype=object)
    holder[()] = value
    return _pickle.dumps(holder, protocol=3)     # what the released files hold (numpy 2.4 writes protocol 4)


def _uni(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _deep_lists(n: int) -> bytes:
    return P3 + b"]" * n + b"a" * (n - 1) + b"."


def _deep_dicts(n: int) -> bytes:
    return P3 + (b"}" + _uni("k")) * (n - 1) + b"}" + b"s" * (n - 1) + b"."


def _shared_bomb(levels: int, pair: bytes = b"]") -> bytes:
    """levels x: L = [L_prev, L_prev] (or (L_prev, L_prev) with pair=b')'): 2**levels leaves, ~8 bytes a level."""
    out = P3 + pair + b"q\x000"
    for _ in range(levels):
        out += (b"](h\x00h\x00e" if pair == b"]" else b"h\x00h\x00\x86") + b"q\x000"
    return out


def _run_child(code: str, env: dict | None = None, timeout: int = 120) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"child died (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


_CHILD_PRELUDE = """
    import resource, sys, time
    sys.path.insert(0, {repo!r})
    from unibench.safe_npz import load_npz
    from unibench.errors import UserError
    def attempt(path):
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            value = load_npz(path)
            outcome = "ok " + repr(value)[:60]
        except UserError as exc:
            outcome = "error " + str(exc)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        print(f"{{outcome}} | grew_mb={{grew:.0f}} seconds={{time.perf_counter() - start:.2f}}", flush=True)
"""


def _child(code: str, env: dict | None = None) -> list[str]:
    prelude = textwrap.dedent(_CHILD_PRELUDE.format(repo=str(REPO)))
    return _run_child(prelude + textwrap.dedent(code), env).splitlines()


# ---------------------------------------------------------------- nesting

@pytest.mark.parametrize("build", [_deep_lists, _deep_dicts], ids=["lists", "dicts"])
def test_deep_nesting_is_one_error(tmp_path, build):
    path = _pickle_npz(tmp_path / "deep.npz", build(100_000))
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert msg.startswith(f"{path}: key 'name2reason': nested more than 100 levels deep")
    assert "--input-limits max_depth=" in msg and "UNIBENCH_INPUT_LIMITS" in msg and "\n" not in msg


def test_depth_limit_is_exact_and_can_be_raised(tmp_path):
    ok = _pickle_npz(tmp_path / "ok.npz", _deep_lists(100))
    too = _pickle_npz(tmp_path / "too.npz", _deep_lists(101))
    assert isinstance(load_npz(ok)["name2reason"], list)
    with pytest.raises(UserError, match="nested more than 100 levels deep"):
        load_npz(too)
    assert isinstance(load_npz(too, limits=InputLimits(max_depth=101))["name2reason"], list)
    set_limits(max_depth=200)
    assert isinstance(load_npz(too)["name2reason"], list)


def test_a_list_holding_itself_is_refused(tmp_path):
    path = _pickle_npz(tmp_path / "cycle.npz", P3 + b"]q\x00h\x00a.")
    with pytest.raises(UserError, match=r"nested more than 100 levels deep \(it contains itself\)"):
        load_npz(path)


def test_crashing_structures_are_refused_in_a_child(tmp_path):
    """Structures that crash CPython/numpy when freed or hashed (segfault, not an exception):
    30k nested numpy object arrays (numpy frees them recursively), the same chain left unused in
    the memo while the pickle returns None, a 100k-deep tuple used as a dict key, and dtype states
    that numpy's own unpickling turns into a segfault."""
    def chain(n: int, tail: bytes) -> bytes:
        """n nested 0-d object arrays: _reconstruct(ndarray, (0,), b'b') then BUILD (1, (), O, False, [child])."""
        head = (P3 + b"cnumpy.core.multiarray\n_reconstruct\nq\x010" + b"cnumpy\nndarray\nq\x020"
                + b"cnumpy\ndtype\nq\x03" + _uni("O8") + b"\x89\x88\x87Rq\x040")
        level = b"h\x01h\x02K\x00\x85C\x01b\x87R(K\x01)h\x04\x89]%batbq\x000"
        return b"".join([head, level % b"N", *[level % b"h\x00"] * (n - 1), tail])

    # 30k levels already crash CPython 3.11 + numpy 2.4 when freed
    _pickle_npz(tmp_path / "chain.npz", chain(30_000, b"h\x00."))
    _pickle_npz(tmp_path / "unused.npz", chain(30_000, b"N."))
    _pickle_npz(tmp_path / "tuplekey.npz", P3 + b"}" + b")" + b"\x85" * 100_000 + b"Ns.")
    # numpy's dtype.__setstate__ trusts its input: a 6-item state segfaults, and an object dtype
    # whose flags are set to 0 makes scalar() read 8 bytes as an object pointer
    dtype_o = b"cnumpy\ndtype\n" + _uni("O8") + b"\x89\x88\x87R(K\x03" + _uni("|")
    minus1 = b"J\xff\xff\xff\xff"
    _pickle_npz(tmp_path / "dtypestate.npz", P3 + dtype_o + b"N" + minus1 * 2 + b"K?tb.")
    _pickle_npz(tmp_path / "dtypeflags.npz", P3 + b"cnumpy._core.multiarray\nscalar\n" + dtype_o + b"NNN"
                + minus1 * 2 + b"K\x00tb" + b"C\x08AAAAAAAA\x86R.")
    names = ("chain", "unused", "tuplekey", "dtypestate", "dtypeflags")
    lines = _child(f"""
        for name in {names!r}:
            attempt({str(tmp_path)!r} + "/" + name + ".npz")
    """)
    assert len(lines) == 5, lines
    assert lines[0].startswith("error ") and "nested more than 100 levels deep" in lines[0]
    assert lines[1].startswith("ok {'name2reason': None}")
    assert lines[2].startswith("error ") and "nested more than 100 levels deep" in lines[2]
    for line in lines[3:]:
        assert line.startswith("error ") and "a numpy dtype state that numpy does not write" in line, line


# ---------------------------------------------------------------- object counts and shared references

@pytest.mark.parametrize("pair", [b"]", b")"], ids=["lists", "tuples"])
def test_shared_reference_bomb_is_refused_when_walked(tmp_path, pair):
    path = _pickle_npz(tmp_path / "bomb.npz", _shared_bomb(40, pair) + b"h\x00.")
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert time.perf_counter() - start < 5
    assert str(info.value) == (f"{path}: key 'name2reason': holds more than 10000000 objects (shared references?)"
                               " (limit; raise it with --input-limits max_objects=... or UNIBENCH_INPUT_LIMITS)")


def test_shared_reference_bomb_as_a_dict_key_is_never_hashed(tmp_path):
    """hash() of a 40-level tuple of shared tuples takes 2**40 steps: refused before the dict sees it."""
    path = _pickle_npz(tmp_path / "key.npz", P3 + b"}q\x050" + _shared_bomb(40, b")") + b"h\x05h\x00Ns.")
    start = time.perf_counter()
    with pytest.raises(UserError, match="holds more than 10000000 objects"):
        load_npz(path)
    assert time.perf_counter() - start < 5


def test_object_count_limit(tmp_path):
    path = tmp_path / "many.npz"
    holder = np.empty((), dtype=object)
    holder[()] = {f"s{i}": f"answer {i}" for i in range(3000)}
    np.savez(path, name2reason=holder)
    with pytest.raises(UserError, match=r"key 'name2reason': holds more than 1000 objects \(limit; raise it "
                                        r"with --input-limits max_objects="):
        load_npz(path, limits=InputLimits(max_objects=1000))
    assert len(load_npz(path, limits=InputLimits(max_objects=20_000))["name2reason"]) == 3000


def test_memo_index_bomb_costs_nothing(tmp_path):
    """10 bytes that make the C unpickler allocate and clear 32 GB for its memo (LONG_BINPUT 2**31)."""
    path = _pickle_npz(tmp_path / "memo.npz", P3 + b"]r\xff\xff\xff\x7f0j\xff\xff\xff\x7f.")
    lines = _child(f"attempt({str(path)!r})")
    assert lines[0].startswith("ok {'name2reason': []}"), lines
    assert float(lines[0].split("grew_mb=")[1].split()[0]) < 50


@pytest.mark.parametrize("payload, message", [
    ((bytes, 10 ** 12), "builds more than 1024 MB"),
    ((bytearray, 10 ** 10), "builds more than 1024 MB"),
    ((tuple, "x" * 20_000_000), "holds more than 10000000 objects"),
    ((str, ["a"] * 10), "refused to call str() on a list"),
], ids=["bytes", "bytearray", "tuple-of-chars", "str-of-list"])
def test_allowed_callables_cannot_allocate_unbounded(tmp_path, payload, message):
    path = _evil_npz(tmp_path / "alloc.npz", _Payload(*payload), key="name2reason")
    with pytest.raises(UserError, match=re.escape(message)):
        load_npz(path)


def test_numpy_reconstruct_with_a_huge_shape_is_refused(tmp_path):
    from numpy._core.multiarray import _reconstruct

    for shape, dtype in (((10 ** 10,), b"O"), ((10 ** 6, 10 ** 6), b"b")):
        path = _evil_npz(tmp_path / "huge.npz", _Payload(_reconstruct, np.ndarray, shape, dtype), key="name2reason")
        with pytest.raises(UserError, match="builds more than 1024 MB"):
            load_npz(path)


def test_object_array_state_must_match_its_shape(tmp_path):
    """numpy reads past the end of a short list here (an out-of-bounds read in C)."""
    good = _saved_pickle({"a": 1})
    bad = good.replace(b")", b"K\x05\x85", 1)     # the state's shape () -> (5,), with a 1-item list
    assert bad != good
    path = _pickle_npz(tmp_path / "state.npz", bad)
    with pytest.raises(UserError, match="object array state does not match its shape"):
        load_npz(path)


# ---------------------------------------------------------------- decompressed size

def _deflate_bomb(prefix: bytes, total: int, segment: int = 16 << 20) -> tuple[bytes, int]:
    """A raw deflate stream: ``prefix`` then zeros up to ``total`` bytes, ~1000:1 (built in ~0.1 s)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = c.compress(bytes(segment)) + c.flush(zlib.Z_FULL_FLUSH)
    count = (total - len(prefix)) // segment
    return head + zeros * count + c.flush(zlib.Z_FINISH), len(prefix) + count * segment


def _raw_member_zip(path: Path, name: str, raw: bytes, declared: int) -> Path:
    """A zip whose one member is ``raw`` deflate data declaring ``declared`` bytes (headers patched by hand)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), raw)
    blob = bytearray(path.read_bytes())
    central = blob.index(b"PK\x01\x02")
    for method_at, size_at in ((8, 22), (central + 10, central + 24)):
        struct.pack_into("<H", blob, method_at, zipfile.ZIP_DEFLATED)
        struct.pack_into("<I", blob, size_at, declared)
    path.write_bytes(bytes(blob))
    return path


def test_zip_bombs_fail_fast_in_bounded_memory(tmp_path):
    """Members that inflate to 3 GB (3 MB on disk): an object array and a float array with trailing data.
    Peak memory stays ~64 MB above the baseline (bytes past 64 MB are counted, not kept); here with
    max_member_mb=256 from the environment so the test inflates 256 MB, not the default 1 GB."""
    obj, size = _deflate_bomb(_npy_header("|O", ()) + P3, 3 << 30)
    _raw_member_zip(tmp_path / "obj.npz", "name2reason.npy", obj, size)
    arr, size = _deflate_bomb(_npy_header("<f8", (4,)) + bytes(32), 3 << 30)
    _raw_member_zip(tmp_path / "arr.npz", "filenames.npy", arr, size)
    lines = _child(f"""
        attempt({str(tmp_path / 'obj.npz')!r})
        attempt({str(tmp_path / 'arr.npz')!r})
    """, env={"UNIBENCH_INPUT_LIMITS": "max_member_mb=256"})
    assert len(lines) == 2, lines
    for line, name, key in zip(lines, ("obj", "arr"), ("name2reason", "filenames")):
        assert line.startswith(f"error {tmp_path / name}.npz: key '{key}': decompresses to more than 256 MB "
                               "(limit; raise it with --input-limits max_member_mb=... or UNIBENCH_INPUT_LIMITS) |"), line
        grew = float(line.split("grew_mb=")[1].split()[0])
        seconds = float(line.split("seconds=")[1])
        assert grew < 150 and seconds < 30, line


def test_zip_member_declaring_a_small_size_is_cut_there(tmp_path):
    raw, _ = _deflate_bomb(_npy_header("|O", ()) + P3, 1 << 30)
    path = _raw_member_zip(tmp_path / "small.npz", "name2reason.npy", raw, 4096)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"small\.npz: key 'name2reason': (truncated or corrupt|unsafe or corrupt)"):
        load_npz(path)
    assert time.perf_counter() - start < 5


def test_huge_declared_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "shape.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("filenames.npy", _npy_header("<f8", (10 ** 12,)) + bytes(64))
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert time.perf_counter() - start < 2
    assert str(info.value).startswith(f"{path}: key 'filenames': its header declares a 1000000000000 float64 "
                                      "array of 7629394.5 MB, more than 1024 MB (limit; raise it with "
                                      "--input-limits max_member_mb=")


def test_member_size_limit_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, filenames=np.array([f"sample_{i:08d}" for i in range(50_000)]))  # 3.2 MB as <U15
    small = InputLimits(max_member_mb=1)
    with pytest.raises(UserError, match=r"key 'filenames': its header declares a 50000 <U15 array of 2\.9 MB, "
                                        r"more than 1 MB"):
        load_npz(path, limits=small)
    holder = np.empty((), dtype=object)
    holder[()] = {f"s{i}": f"answer {i} " + "x" * 100 for i in range(20_000)}    # ~2.6 MB of pickle
    np.savez_compressed(tmp_path / "answers.npz", name2reason=holder)
    with pytest.raises(UserError, match=r"key 'name2reason': decompresses to more than 1 MB"):
        load_npz(tmp_path / "answers.npz", limits=small)
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_member_mb=1")
    with pytest.raises(UserError, match="decompresses to more than 1 MB"):
        load_npz(tmp_path / "answers.npz")
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_member_mb=8")
    assert len(load_npz(tmp_path / "answers.npz")["name2reason"]) == 20_000
    assert len(load_npz(path)["filenames"]) == 50_000
    set_limits("max_member_mb=1")                   # the CLI flag overrides the environment
    with pytest.raises(UserError, match="more than 1 MB"):
        load_npz(path)


def test_large_member_past_the_keep_cap_is_read_again(tmp_path, monkeypatch):
    """Past 64 MB (here 1 MB) the bytes are only counted; a member within the limit is then re-read."""
    monkeypatch.setattr(safe_npz, "_KEEP_CAP", 1 << 20)
    holder = np.empty((), dtype=object)
    holder[()] = {f"s{i}": "y" * 200 for i in range(20_000)}
    np.savez(tmp_path / "a.npz", name2reason=holder)
    assert load_npz(tmp_path / "a.npz")["name2reason"] == holder[()]


def test_memory_and_recursion_errors_become_one_line(tmp_path, monkeypatch):
    path = write_label_npz(tmp_path / "l.npz", {"test_corpus": {"a": {"val": 1.0}}})
    for exc in (MemoryError(), RecursionError("maximum recursion depth exceeded")):
        def boom(data, limits, exc=exc):
            raise exc
        monkeypatch.setattr(safe_npz, "_bounded_loads", boom)
        with pytest.raises(UserError) as info:
            load_npz(path)
        assert str(info.value).startswith(f"{path}: key 'test_corpus': too large or too deeply nested to load "
                                          f"({type(exc).__name__} within the input limits max_member_mb=1024,")


def test_unsupported_zip_method_is_refused(tmp_path):
    path = tmp_path / "bz.npz"
    holder = np.empty((), dtype=object)
    holder[()] = {"a": "b"}
    buf = io.BytesIO()
    npformat.write_array(buf, holder, allow_pickle=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("name2reason.npy", buf.getvalue())
    with pytest.raises(UserError, match=r"key 'name2reason': compressed with zip method 12; only stored and deflate"):
        load_npz(path)


# ---------------------------------------------------------------- the settings

def test_parse_limits():
    assert parse_limits("") == InputLimits()
    assert parse_limits("max_member_mb=2048, max_objects=20_000_000,max_depth=200") == InputLimits(2048, 20_000_000, 200)
    assert parse_limits("max_objects=2e7").max_objects == 20_000_000
    assert parse_limits("max_depth=5", base=InputLimits(max_member_mb=7)) == InputLimits(7, 10_000_000, 5)
    assert parse_limits(InputLimits(512, 10, 3).as_text()) == InputLimits(512, 10, 3)
    with pytest.raises(UserError, match=r"^--input-limits: unknown limit 'max_size' in 'max_size=3' "
                                        r"\(known: max_member_mb, max_objects, max_depth\)$"):
        parse_limits("max_size=3")
    with pytest.raises(UserError, match=r"^--input-limits: max_objects must be a positive whole number, got 'lots'$"):
        parse_limits("max_objects=lots")
    for bad in ("max_depth=0", "max_depth=1.5", "max_member_mb=-1", "max_member_mb=inf", "max_member_mb=nan"):
        with pytest.raises(UserError, match=rf"^--input-limits: {bad.split('=')[0]} must be a positive"):
            parse_limits(bad)
    with pytest.raises(UserError, match=r"'max_depth' needs a value"):
        parse_limits("max_depth")
    with pytest.raises(UserError, match=r"^UNIBENCH_INPUT_LIMITS: unknown limit"):
        parse_limits("x=1", source="UNIBENCH_INPUT_LIMITS")


def test_env_var_and_set_limits(tmp_path, monkeypatch):
    assert get_limits() == InputLimits()
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_depth=7")
    assert get_limits() == InputLimits(max_depth=7)
    previous = set_limits("max_objects=99")           # refines the environment's setting
    assert previous is None and get_limits() == InputLimits(max_objects=99, max_depth=7)
    assert set_limits(max_member_mb=3) == InputLimits(max_objects=99, max_depth=7)
    assert get_limits() == InputLimits(3, 99, 7)
    set_limits(None)
    assert get_limits() == InputLimits(max_depth=7)
    monkeypatch.setenv("UNIBENCH_INPUT_LIMITS", "max_dpeth=7")
    path = write_label_npz(tmp_path / "l.npz", {"test_corpus": {"a": {"val": 1.0}}})
    with pytest.raises(UserError, match=r"^UNIBENCH_INPUT_LIMITS: unknown limit 'max_dpeth'"):
        load_npz(path)
    with pytest.raises(UserError, match="unknown limit 'max_size'"):
        set_limits(max_size=1)
    with pytest.raises(UserError, match="max_depth must be a positive whole number"):
        InputLimits(max_depth=0)


# ---------------------------------------------------------------- duplicate sample names

def _with_duplicate(value: dict, rename: str, to: str) -> bytes:
    """numpy's pickle of ``value`` with the key ``rename`` renamed to ``to`` (an existing key)."""
    data = _saved_pickle(value)
    assert data.count(_uni(rename)) == 1
    return data.replace(_uni(rename), _uni(to))


def test_duplicate_sample_with_the_same_value_is_counted_once(tmp_path):
    path = _pickle_npz(tmp_path / "dup.npz", _with_duplicate({"a": "happy", "b": "sad", "zz": "happy"}, "zz", "a"))
    notes: list[str] = []
    assert load_npz(path, notes=notes)["name2reason"] == {"a": "happy", "b": "sad"}
    assert notes == [f"1 sample name(s) appear more than once with the same value in {path} key 'name2reason' "
                     "(e.g. 'a'); counted once"]
    assert load_npz(path)["name2reason"] == {"a": "happy", "b": "sad"}     # no notes list: still loads


def test_duplicate_samples_with_different_values_are_refused(tmp_path):
    value = {"a": "happy", "b": "sad", "zz": "angry", "c": "x", "yy": "y"}
    data = _with_duplicate(value, "zz", "a").replace(_uni("yy"), _uni("c"))
    path = _pickle_npz(tmp_path / "dup.npz", data)
    with pytest.raises(UserError) as info:
        load_npz(path, notes=[])
    assert str(info.value) == (f"{path}: key 'name2reason': 2 sample name(s) appear more than once with different "
                               "values (e.g. 'a', 'c'); remove the duplicates")


def test_duplicates_across_setitems_batches_and_in_label_dicts(tmp_path):
    # numpy writes dicts in batches of 1000 items: the copy lands in a later batch
    value = {f"s{i:04d}": {"emo": "happy", "val": float(i)} for i in range(2500)}
    path = _pickle_npz(tmp_path / "batch.npz", _with_duplicate(value, "s2400", "s0001"), key="test_corpus")
    with pytest.raises(UserError, match=r"key 'test_corpus': 1 sample name\(s\) appear more than once with "
                                        r"different values \(e\.g\. 's0001'\)"):
        load_npz(path)
    # a label's own dict with 'val' twice (the two-key fast path)
    path = _pickle_npz(tmp_path / "inner.npz", _with_duplicate({"a": {"emo": "happy", "vv": 1.5}}, "vv", "emo"),
                       key="test_corpus")
    with pytest.raises(UserError, match=r"1 key\(s\) of nested dicts appear more than once with different values "
                                        r"\(e\.g\. 'emo'\)"):
        load_npz(path)


def test_duplicates_through_dict_calls_and_the_dict_opcode(tmp_path):
    path = _evil_npz(tmp_path / "call.npz", _Payload(dict, [("a", 1), ("a", 2)]), key="name2reason")
    with pytest.raises(UserError, match=r"1 key\(s\) of nested dicts appear more than once with different values"):
        load_npz(path)
    # protocol 0/1 DICT: MARK k v k v DICT, here as the stored value itself
    path = _pickle_npz(tmp_path / "op.npz", b"(" + _uni("a") + _uni("x") + _uni("a") + _uni("x") + b"d.")
    notes: list[str] = []
    assert load_npz(path, notes=notes)["name2reason"] == {"a": "x"}
    assert len(notes) == 1 and "1 sample name(s) appear more than once with the same value" in notes[0]


def test_check_unique_names():
    notes: list[str] = []
    assert check_unique_names("f.npz", ["a", "b"], ["x", "y"], "key 'filenames'", notes) == 0
    assert check_unique_names("f.npz", np.array(["a", "b", "a", "a"]), np.array(["x", "y", "x", "x"]),
                              "key 'filenames'", notes) == 1
    assert notes == ["1 sample name(s) appear more than once with the same value in f.npz key 'filenames' "
                     "(e.g. 'a'); counted once"]
    with pytest.raises(UserError) as info:
        check_unique_names("f.npz", ["a", "b", "a", "b", "c"], ["x", "y", "z", "y", "w"], "key 'filenames'")
    assert str(info.value) == ("f.npz: key 'filenames': 1 sample name(s) appear more than once with different "
                               "values (e.g. 'a'); remove the duplicates")
    with pytest.raises(UserError, match="has 3 names but 2 values"):
        check_unique_names("f.npz", ["a", "a", "b"], ["x", "y"], "key 'filenames'")


def test_a_key_stored_twice_in_the_archive_is_refused(tmp_path):
    path = tmp_path / "twice.npz"
    buf = io.BytesIO()
    npformat.write_array(buf, np.array(["a"]))
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("filenames.npy", buf.getvalue())
            zf.writestr("filenames.npy", buf.getvalue())
    with pytest.raises(UserError, match=r"key 'filenames' is stored 2 times in the archive"):
        load_npz(path)


# ---------------------------------------------------------------- real files: unchanged

def test_every_real_npz_loads_like_numpy(shared_data):
    files = sorted(shared_data.rglob("*.npz"))
    assert len(files) >= 30
    for path in files:
        notes: list[str] = []
        ours = load_npz(path, notes=notes)
        assert not notes, notes
        with np.load(path, allow_pickle=True) as ref:    # trusted: the benchmark's own files
            assert sorted(ours) == sorted(ref.files), path
            for key in ref.files:
                want = ref[key]
                got = ours[key]
                if want.dtype == object and want.shape == ():
                    assert type(got) is type(want.item()) and got == want.item(), (path, key)
                else:
                    assert got.dtype == want.dtype and got.shape == want.shape, (path, key)
                    assert got.tolist() == want.tolist(), (path, key)
