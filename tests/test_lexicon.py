"""The emotion-wheel lexicon: building the three mappings, the mapping rule, the cache, audit/explain/fetch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures import tiny_lexicon, tiny_lexicon_dir  # noqa: F401  (pytest fixtures)
from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics import lexicon as lexmod
from unibench.metrics.lexicon import LEXICON_FILES, lexicon_hash, load_lexicon


# ---------------------------------------------------------------- building (hand-checked on the tiny lexicon)

def test_format2raws_follows_the_published_rule(tiny_lexicon):
    f2r = tiny_lexicon.format2raws
    # every surface form -> its word, and the word -> itself (so a word listing itself appears twice)
    assert f2r["happy"] == ["happy", "happy"]
    assert f2r["happiness"] == ["happy"]
    assert f2r["joy"] == ["joyful"]
    # 'fear' is a surface form of three rows: collected in file order
    assert f2r["fear"] == ["fear", "fear", "fearful", "fearless"]
    assert "cheerful" not in f2r          # a wheel word absent from format.csv is unknown
    assert "mad" not in f2r


def test_raw_mapping_is_the_union_of_eight_runs(tiny_lexicon):
    rm = tiny_lexicon.raw_mapping
    assert rm["happy"] == ["happy"]
    assert rm["cheerful"] == ["happy"]
    assert rm["content"] == ["happy"]      # only run 8 lists it: the runs are a union
    assert rm["fear"] == ["scared"]
    assert rm["fearless"] == ["brave"]
    assert "neutral" not in rm
    assert len(rm) == 30                   # 10 words + 19 synonyms + run 8's 'content'; the blank row adds nothing


def test_wheel_tree_repeats_blank_cells_and_lowercases(tiny_lexicon):
    w1 = tiny_lexicon.wheels["wheel1"]
    assert w1["happy"] == {"joyful": ["cheerful", "elated"], "calm": ["relaxed"]}
    assert w1["scared"] == {"worried": ["anxious"], "afraid": ["fearful"]}
    assert w1["disgusted"] == {"revolted": ["repelled"]}        # ' Repelled ' stripped and lowered
    assert "surprised" not in tiny_lexicon.wheels["wheel3"]
    assert tiny_lexicon.wheels["wheel2"]["happy"]["confident"] == ["brave"]


@pytest.mark.parametrize("label, per_wheel", [
    ("happy", ["happy"] * 5),
    ("happiness", ["happy"] * 5),
    ("joy", ["happy"] * 5),
    ("worry", ["scared"] * 5),
    ("calm", ["happy"] * 5),
    ("content", ["happy"] * 5),            # via run 8's synonym
    # sorted candidates are ['brave', 'scared', ...]; only wheel 2 holds 'brave' (under happy)
    ("fear", ["scared", "happy", "scared", "scared", "scared"]),
    ("surprise", ["surprised", "surprised", "", "surprised", "surprised"]),
    ("neutral", [""] * 5),                 # in format.csv but no wheel word behind it
    ("cheerful", [""] * 5),                # not in format.csv: dropped
    ("mad", [""] * 5),
    ("unknownword", [""] * 5),
])
def test_map_label_level1(tiny_lexicon, label, per_wheel):
    assert [tiny_lexicon.map_label(label, w) for w in range(1, 6)] == per_wheel


@pytest.mark.parametrize("label, expected", [
    ("happy", "calm"),        # a level-1 word -> the alphabetically first of its level-2 words
    ("joy", "joyful"),
    ("calm", "calm"),
    ("worry", "worried"),
    ("fear", "afraid"),       # scared -> first of [afraid, worried]
    ("sad", "unhappy"),
    ("disgust", "revolted"),
])
def test_map_label_level2_wheel1(tiny_lexicon, label, expected):
    assert tiny_lexicon.map_label(label, 1, "level2") == expected


def test_map_labels_lowers_strips_and_drops(tiny_lexicon):
    assert tiny_lexicon.map_labels(["  Happy ", "JOY", "neutral", "sad"], 1) == {"happy", "sad"}
    assert tiny_lexicon.map_labels(["fear", "joy"], 2) == {"happy"}
    assert tiny_lexicon.map_labels([], 1) == set()
    assert tiny_lexicon.map_labels(["neutral"], 3) == set()


def test_explain_says_why(tiny_lexicon):
    info = tiny_lexicon.explain("Fear", 2)
    assert info["forms"] == ["fear", "fear", "fearful", "fearless"]
    assert info["candidates"] == ["brave", "scared", "scared", "scared"]
    assert info["via"] == "brave" and info["result"] == "happy"
    assert tiny_lexicon.explain("neutral", 1)["result"] == ""


# ---------------------------------------------------------------- the two real lexicon versions

@pytest.fixture(scope="module")
def real_lexicons(shared_data, tmp_path_factory):
    """Both shared versions, compiled once into one cache folder: (2025, 2026, cache folder)."""
    cache = tmp_path_factory.mktemp("real-lexcache")
    return (load_lexicon(shared_data / "emotion_wheel-affectgpt2025", cache_dir=cache),
            load_lexicon(shared_data / "emotion_wheel-mer2026", cache_dir=cache), cache)


def test_both_shared_versions_load(real_lexicons):
    lex25, lex26, cache = real_lexicons
    assert lex25.sha256 != lex26.sha256
    assert len(lex25.raw_mapping) == len(lex26.raw_mapping) == 1255     # spec §4
    assert len(lex25.format2raws) == 7386 and len(lex26.format2raws) == 7356
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"{lex25.sha256}.json", f"{lex26.sha256}.json"])


def test_compiled_mappings_equal_the_precomputed_2026_file(real_lexicons, shared_data):
    from unibench.safe_npz import load_npz

    lex = real_lexicons[1]
    ref = load_npz(shared_data / "emotion_wheel-mer2026" / "wheel_mapping.npz",
                   ["format_mapping", "raw_mapping", "wheel_map_whole"])
    assert lex.format2raws == ref["format_mapping"]
    assert list(lex.format2raws) == list(ref["format_mapping"])
    # raw_mapping values are sets in the published code: compare as sets
    assert set(lex.raw_mapping) == set(ref["raw_mapping"])
    assert all(set(lex.raw_mapping[k]) == set(v) for k, v in ref["raw_mapping"].items())
    wm = ref["wheel_map_whole"]
    assert sorted(wm) == [f"wheel{w}" for w in range(1, 6)]
    for w in range(1, 6):
        for level in ("level1", "level2"):
            assert lex.wheel_map(w, level) == wm[f"wheel{w}"][level], (w, level)


def test_published_artefacts_2025(lexicon_2025):
    for w in range(1, 6):
        assert lexicon_2025.map_label("neutral", w) == ""
        assert lexicon_2025.map_labels(["neutral"], w) == set()
    assert lexicon_2025.map_label("fear", 2) == "happy"
    assert lexicon_2025.explain("fear", 2)["via"] == "courageous"
    assert lexicon_2025.map_label("fear", 1) == "scared"
    assert lexicon_2025.map_label("happy", 1) == "happy"


def test_versions_differ_on_some_labels(real_lexicons):
    lex25, lex26, _ = real_lexicons
    diff = [k for k in set(lex25.table) | set(lex26.table) if lex25.table.get(k) != lex26.table.get(k)]
    assert len(diff) == 60
    assert lex26.map_label("fear", 2) == "fearful"      # the 2025 artefact fear -> happy is gone
    assert lex26.map_label("neutral", 1) == lex25.map_label("neutral", 1) == ""


# ---------------------------------------------------------------- cache

def test_cache_is_reused_and_keyed_by_sha(tiny_lexicon_dir, tmp_path, monkeypatch):
    folder = tmp_path / "lex"
    shutil.copytree(tiny_lexicon_dir, folder)
    cache = tmp_path / "cache"
    first = load_lexicon(folder, cache_dir=cache)
    assert first.cache_path == cache / f"{first.sha256}.json" and first.cache_path.is_file()
    assert first.sha256 == lexicon_hash(folder)

    def boom(_folder):
        raise AssertionError("rebuilt although the cache was warm")

    monkeypatch.setattr(lexmod, "build_mappings", boom)
    second = load_lexicon(folder, cache_dir=cache)
    assert second.table == first.table and second.sha256 == first.sha256

    # any change to a lexicon file changes the hash and forces a rebuild
    with open(folder / "format.csv", "a", encoding="utf-8") as fh:
        fh.write('glad,"glad,gladness"\n')
    assert lexicon_hash(folder) != first.sha256
    with pytest.raises(AssertionError, match="rebuilt"):
        load_lexicon(folder, cache_dir=cache)
    monkeypatch.undo()
    third = load_lexicon(folder, cache_dir=cache)
    assert third.sha256 != first.sha256
    assert third.map_label("glad", 1) == "happy" and first.map_label("glad", 1) == ""
    assert len(list(cache.glob("*.json"))) == 2


def test_broken_or_old_cache_is_rebuilt(tiny_lexicon_dir, tmp_path):
    cache = tmp_path / "cache"
    lex = load_lexicon(tiny_lexicon_dir, cache_dir=cache)
    lex.cache_path.write_text("{not json", encoding="utf-8")
    again = load_lexicon(tiny_lexicon_dir, cache_dir=cache)
    assert again.table == lex.table
    header, body = lex.cache_path.read_bytes().split(b"\n", 1)  # header line (version, body hash), then the body
    assert json.loads(header)["version"] == json.loads(body)["version"]
    lex.cache_path.write_bytes(json.dumps({"version": -1}).encode() + b"\n" + json.dumps({"table": {}}).encode())
    assert load_lexicon(tiny_lexicon_dir, cache_dir=cache).table == lex.table


def test_uncached_load_writes_nothing(tiny_lexicon_dir, tmp_path):
    lex = load_lexicon(tiny_lexicon_dir, cache_dir=tmp_path / "c", use_cache=False)
    assert lex.cache_path is None and not (tmp_path / "c").exists()
    assert lex.map_label("joy", 1) == "happy"


def test_default_cache_dir_follows_env(tiny_lexicon_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path / "uc"))
    monkeypatch.setenv("UNIBENCH_LEXICON", str(tiny_lexicon_dir))
    lex = load_lexicon(None)
    assert lex.cache_path.parent == tmp_path / "uc" / "lexicon" and lex.cache_path.is_file()


# ---------------------------------------------------------------- bad lexicons

def test_no_lexicon_given(monkeypatch):
    monkeypatch.delenv("UNIBENCH_LEXICON", raising=False)
    with pytest.raises(UserError, match="--lexicon DIR or set UNIBENCH_LEXICON"):
        load_lexicon(None)


def test_missing_folder_and_files(tiny_lexicon_dir, tmp_path):
    with pytest.raises(UserError, match="lexicon folder not found: .*nowhere"):
        load_lexicon(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_lexicon_dir, partial)
    (partial / "wheel3.xlsx").unlink()
    (partial / "synonym.xlsx").unlink()
    with pytest.raises(UserError, match="lacks synonym.xlsx, wheel3.xlsx"):
        load_lexicon(partial)


def test_broken_spreadsheet_names_the_file(tiny_lexicon_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_lexicon_dir, bad)
    (bad / "wheel4.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(UserError, match=r"wheel4\.xlsx: cannot read spreadsheet"):
        load_lexicon(bad, cache_dir=tmp_path / "c")


def test_format_csv_without_columns(tiny_lexicon_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_lexicon_dir, bad)
    (bad / "format.csv").write_text("word,forms\nhappy,happy\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"format\.csv: missing column 'name'"):
        load_lexicon(bad, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- CLI: audit, explain, fetch

def test_audit_on_the_tiny_lexicon(tiny_lexicon_dir, capsys):
    assert main(["lexicon", "audit", "--lexicon", str(tiny_lexicon_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"lexicon {tiny_lexicon_dir} (sha256 ")
    for task in ("mer2023", "mer2024", "meld", "iemocapfour"):
        for w in range(1, 6):
            assert any(l.split()[:4] == [task, f"wheel{w}", "unmapped", "neutral"] for l in lines), (task, w)
    assert any(l.split()[:4] == ["mer2023", "wheel3", "unmapped", "surprise"] for l in lines)
    indirect = [l for l in lines if "indirect" in l]
    assert len(indirect) == 1
    assert indirect[0].split()[:4] == ["meld", "wheel2", "indirect", "fear"]
    assert "-> happy via 'brave', though the wheel puts it under scared" in indirect[0]
    assert any(l.split()[:4] == ["meld", "wheel2", "collision", "joy+fear"] for l in lines)
    assert lines[-1] == f"{len(lines) - 2} finding(s)"


def test_audit_on_the_2025_lexicon(shared_data, capsys):
    assert main(["lexicon", "audit", "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(l.split()[:4] == ["meld", "wheel2", "indirect", "fear"] and "-> happy" in l for l in lines)
    assert sum(1 for l in lines if l.split()[2:4] == ["unmapped", "neutral"]) == 20   # 4 tasks x 5 wheels
    assert lines[-1] == "32 finding(s)"


def test_audit_on_the_2026_lexicon(shared_data, capsys):
    # the later revision fixed format.csv for fear; neutral still maps to nothing
    assert main(["lexicon", "audit", "--lexicon", str(shared_data / "emotion_wheel-mer2026")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for l in lines if l.split()[2:4] == ["unmapped", "neutral"]) == 20
    assert not any(l.split()[2:4] == ["indirect", "fear"] for l in lines)
    assert lines[-1] == "29 finding(s)"


def test_explain_cli(tiny_lexicon_dir, capsys):
    assert main(["lexicon", "explain", "fear", "--lexicon", str(tiny_lexicon_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # the forms and candidates once, then one line per wheel
    assert lines[0] == "'fear': lexicon forms fear, fearful, fearless; synonym candidates brave, scared"
    assert lines[1].split() == ["wheel1", "level1:", "scared", "(via", "scared)"]
    assert lines[2].split() == ["wheel2", "level1:", "happy", "(via", "brave)"]
    assert main(["lexicon", "explain", "neutral", "--lexicon", str(tiny_lexicon_dir)]) == 0
    assert all("nothing: no candidate is on this wheel" in line for line in capsys.readouterr().out.splitlines()[1:])
    assert main(["lexicon", "explain", "xyzzy", "--lexicon", str(tiny_lexicon_dir)]) == 1
    assert "'xyzzy' is not in this lexicon" in capsys.readouterr().out


def _file_url(folder: Path) -> str:
    return folder.resolve().as_uri() + "/{file}"


def test_fetch_checks_sha256_with_local_files(tiny_lexicon_dir, tmp_path):
    from unibench.metrics.lexicon_tools import fetch, sha256_file

    expected = {n: sha256_file(tiny_lexicon_dir / n) for n in LEXICON_FILES}
    dest = fetch(tmp_path / "ok", base_url=_file_url(tiny_lexicon_dir), expected=expected)
    assert sorted(p.name for p in dest.iterdir()) == sorted(LEXICON_FILES)
    assert lexicon_hash(dest) == lexicon_hash(tiny_lexicon_dir)

    wrong = dict(expected, **{"wheel2.xlsx": "0" * 64})
    with pytest.raises(UserError, match=r"wheel2\.xlsx .* has sha256 [0-9a-f]{64}, expected 0{64}; nothing was written"):
        fetch(tmp_path / "bad", base_url=_file_url(tiny_lexicon_dir), expected=wrong)
    assert list((tmp_path / "bad").iterdir()) == []


def test_fetch_cli_refuses_files_that_are_not_the_official_ones(tiny_lexicon_dir, tmp_path, capsys):
    rc = main(["lexicon", "fetch", str(tmp_path / "dest"), "--base-url", _file_url(tiny_lexicon_dir)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: lexicon fetch: format.csv from file://") and err.count("\n") == 1
    assert "nothing was written" in err and "Traceback" not in err
    assert list((tmp_path / "dest").iterdir()) == []


def test_fetch_cli_missing_file(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    rc = main(["lexicon", "fetch", str(tmp_path / "dest"), "--base-url", _file_url(tmp_path / "src")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: lexicon fetch: cannot download file://") and "format.csv" in err


def test_official_hashes_are_those_of_the_2025_lexicon(shared_data, tmp_path, capsys):
    src = shared_data / "emotion_wheel-affectgpt2025"
    assert main(["lexicon", "fetch", str(tmp_path / "dest"), "--base-url", _file_url(src)]) == 0
    assert "all sha256 checks passed" in capsys.readouterr().out
    assert lexicon_hash(tmp_path / "dest") == lexicon_hash(src)
