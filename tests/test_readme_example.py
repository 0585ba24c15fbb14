"""The README's adapter example runs as printed: written to a module, loaded, run end to end."""
from __future__ import annotations

import csv
import re
import sys

import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import make_task_folder
from unibench.adapters.base import ADAPTERS
from unibench.cli import main

README = __import__("pathlib").Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if "class BrightnessAdapter" in b]
    assert found, "README lost its adapter example"
    return found[0]


def test_adapter_example_is_short():
    assert len(_example().strip().splitlines()) < 50


def test_adapter_example_runs_end_to_end(tmp_path, monkeypatch, capsys, tiny_lexicon_dir):
    pytest.importorskip("av")
    (tmp_path / "my_adapters.py").write_text(_example(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(ADAPTERS, "brightness", raising=False)
    monkeypatch.delitem(sys.modules, "my_adapters", raising=False)
    __import__("my_adapters")  # registers 'brightness', as an installed entry point would
    make_task_folder(tmp_path / "data", "mer2023", n=2)
    code = main(["--model", "brightness", "--model-args", "threshold=90", "--task", "mer2023",
                 "--data-root", str(tmp_path / "data"), "--lexicon", str(tiny_lexicon_dir),
                 "--extractor", "lexicon", "--allow-count-mismatch", "--no-progress",
                 "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"] == "brightness" and row["mer2023"] != "" and "extractor:lexicon" in row["flags"]
    answers = (tmp_path / "out" / "brightness" / "answers" / "mer2023.jsonl").read_text(encoding="utf-8")
    assert answers.count("The person looks") == 2
    monkeypatch.delitem(ADAPTERS, "brightness", raising=False)
