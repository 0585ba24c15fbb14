"""Adapter discovery (entry points) and --list-models.

The adapters that drive a model's own repository (video-llama, chat-univi): tests/test_upstream_adapters.py.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unibench.adapters import base
from unibench.adapters.base import ADAPTERS, Sample, available_adapters, make_adapter
from unibench.cli import main
from unibench.errors import UserError

REPO = Path(__file__).resolve().parent.parent
OWN_ADAPTERS = ("hf-text", "openai", "video-llama", "chat-univi", "replay")


# ---------------------------------------------------------------- entry points

PLUGIN_CODE = textwrap.dedent('''
    from dataclasses import dataclass
    from unibench.adapters.base import Adapter

    @dataclass
    class Opts:
        greeting: str = "hello"

    class PluginAdapter(Adapter):
        name = "my-plugin"
        description = "an adapter from an installed package"
        inputs = ("audio", "subtitle")
        Options = Opts

        @classmethod
        def status(cls):
            return "needs pip install my-plugin-extras"

        def answer(self, samples):
            return [self.options.greeting for _ in samples]
''')


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A package 'myplug' with a dist-info declaring two unibench.adapters entry points (one broken)."""
    site = tmp_path / "site"
    (site / "myplug").mkdir(parents=True)
    (site / "myplug" / "__init__.py").write_text(PLUGIN_CODE, encoding="utf-8")
    dist = site / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[unibench.adapters]\nmy-plugin = myplug:PluginAdapter\nbroken = myplug_missing:Nothing\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(base, "_ENTRY_POINTS_LOADED", False)
    yield site
    ADAPTERS.pop("my-plugin", None)
    sys.modules.pop("myplug", None)


def test_entry_point_adapters_are_found_and_broken_ones_only_warn(plugin_path, capsys):
    adapters = available_adapters()
    err = capsys.readouterr().err
    assert adapters["my-plugin"].__module__ == "myplug"
    assert "warning: adapter plug-in 'broken' failed to load" in err
    assert all(name in adapters for name in OWN_ADAPTERS)
    adapter = make_adapter("my-plugin", "greeting=hi")
    assert adapter.answer([Sample(name="a", task="t", question="q")]) == ["hi"]
    with pytest.raises(UserError, match="unknown key 'greet' for model 'my-plugin' \\(known: greeting\\)"):
        make_adapter("my-plugin", "greet=hi")


def test_list_models_shows_plugins_inputs_and_status(plugin_path, capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["model", "inputs", "status"]
    row = next(i for i, line in enumerate(lines) if line.startswith("my-plugin "))
    assert lines[row].split()[1] == "audio,subtitle"
    assert lines[row].endswith("needs pip install my-plugin-extras")
    assert lines[row + 1].strip() == "an adapter from an installed package"
    for name in OWN_ADAPTERS:
        assert any(line.startswith(name + " ") for line in lines), name


def test_list_models_imports_no_heavy_package():
    code = ("import sys; from unibench.cli import main; main(['--list-models']); "
            "heavy = [m for m in ('torch', 'openai', 'av', 'soundfile', 'video_llama', 'ChatUniVi') if m in sys.modules];"
            "print('HEAVY', heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert "hf-text" in done.stdout and "video-llama" in done.stdout


def test_unknown_model_lists_the_known_ones(capsys, tmp_path):
    rc = main(["--model", "no-such-model", "--task", "mer2023", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown model 'no-such-model' (known: " in err and "hf-text" in err
