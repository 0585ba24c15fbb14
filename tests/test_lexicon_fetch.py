"""`lexicon fetch`: every downloaded file must match its pinned sha256 (tested with file:// URLs, no network)."""
from __future__ import annotations

import hashlib

import pytest

from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics import lexicon_tools
from unibench.metrics.lexicon import LEXICON_FILES


def _source(tmp_path):
    src = tmp_path / "upstream"
    src.mkdir()
    for name in LEXICON_FILES:
        (src / name).write_bytes(f"content of {name}".encode())
    sums = {name: hashlib.sha256((src / name).read_bytes()).hexdigest() for name in LEXICON_FILES}
    return src, sums


def test_fetch_writes_all_files_when_hashes_match(tmp_path):
    src, sums = _source(tmp_path)
    dest = tmp_path / "lex"
    lexicon_tools.fetch(dest, base_url=src.as_uri() + "/{file}", expected=sums)
    for name in LEXICON_FILES:
        assert (dest / name).read_bytes() == f"content of {name}".encode()
    assert sorted(p.name for p in dest.iterdir()) == sorted(LEXICON_FILES)  # no temp folder left behind


def test_fetch_refuses_a_file_with_another_hash_and_writes_nothing(tmp_path):
    src, sums = _source(tmp_path)
    (src / "wheel3.xlsx").write_bytes(b"tampered")
    dest = tmp_path / "lex"
    with pytest.raises(UserError, match=r"wheel3\.xlsx .* has sha256 [0-9a-f]{64}, expected " + sums["wheel3.xlsx"]):
        lexicon_tools.fetch(dest, base_url=src.as_uri() + "/{file}", expected=sums)
    assert list(dest.iterdir()) == []


def test_fetch_cli_reports_unreachable_source_in_one_line(tmp_path, capsys):
    code = main(["lexicon", "fetch", str(tmp_path / "lex"), "--base-url", (tmp_path / "nowhere").as_uri() + "/{file}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: lexicon fetch: cannot download file://") and err.count("\n") == 1


def test_pinned_hashes_are_those_of_the_paper_lexicon(shared_data):
    folder = shared_data / "emotion_wheel-affectgpt2025"
    for name, digest in lexicon_tools.OFFICIAL_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
