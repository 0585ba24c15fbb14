"""Adapter discovery (entry points), --list-models, and the adapters that drive a model's own repository."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, make_task_folder, media_paths, write_video
from unibench.adapters import base
from unibench.adapters.base import ADAPTERS, Sample, available_adapters, make_adapter
from unibench.adapters.chat_univi import ChatUniViAdapter, clean_output, decode_video, frame_positions, video_prompt
from unibench.adapters.video_llama import (AUDIO_VIDEO_MESSAGE, VideoLlamaAdapter, config_args, conversation_name,
                                           generation_kwargs)
from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics.prompts import AFFECTGPT_OV_QUESTION

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


# ---------------------------------------------------------------- video-llama

def test_video_llama_request_assembly():
    assert conversation_name("vicuna") == "default_conversation"
    assert conversation_name("llama_v2") == "conv_llava_llama_2"
    with pytest.raises(UserError, match="model_type must be one of vicuna, llama_v2"):
        conversation_name("mistral")
    opts = make_adapter("video-llama", "cfg_path=eval.yaml,max_new_tokens=64").options
    args = config_args(opts)
    assert (args.cfg_path, args.gpu_id, args.model_type, args.options) == ("eval.yaml", 0, "vicuna", None)
    assert generation_kwargs(opts) == {"num_beams": 1, "temperature": 1.0, "max_new_tokens": 64, "max_length": 2000}
    # the demo's message, with the whitespace its line continuations leave
    assert AUDIO_VIDEO_MESSAGE.count("<ImageHere>") == 2
    assert "<ImageHere>. " + " " * 16 + "Close your ears" in AUDIO_VIDEO_MESSAGE
    assert "</Video>.  " + " " * 16 + "Now answer" in AUDIO_VIDEO_MESSAGE
    assert make_adapter("video-llama", "cfg_path=x.yaml,audio=true").inputs == ("video", "audio", "subtitle")
    with pytest.raises(UserError, match="'cfg_path' is required for model 'video-llama'"):
        make_adapter("video-llama", "")


def test_video_llama_absent_gives_install_instructions(capsys, tmp_path, tiny_lexicon_dir):
    if VideoLlamaAdapter.status() == "ready":
        pytest.skip("Video-LLaMA is installed here")
    assert "needs the Video-LLaMA repository" in VideoLlamaAdapter.status()
    make_task_folder(tmp_path / "data", "mer2023", n=2, media=True)
    rc = main(["--model", "video-llama", "--model-args", "cfg_path=eval.yaml", "--task", "mer2023",
               "--data-root", str(tmp_path / "data"), "--allow-count-mismatch", "--output", str(tmp_path / "out"),
               "--lexicon", str(tiny_lexicon_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert ("error: model 'video-llama' needs the Video-LLaMA code, which is not on PyPI: "
            "git clone https://github.com/DAMO-NLP-SG/Video-LLaMA") in err
    assert err.count("\n") == 1 and "Traceback" not in err


FAKE_VIDEO_LLAMA = {
    "__init__.py": "",
    "common/__init__.py": "",
    "common/config.py": '''
        from types import SimpleNamespace as NS
        class Config:
            def __init__(self, args):
                self.args = args
                self.model_cfg = NS(arch="fake_arch")
                self.datasets_cfg = NS(webvid=NS(vis_processor=NS(train=NS(name="fake_proc"))))
    ''',
    "common/registry.py": '''
        class _Model:
            @classmethod
            def from_config(cls, cfg):
                return cls()
            def to(self, device):
                return self
            def eval(self):
                return self
        class _Registry:
            def get_model_class(self, name):
                assert name == "fake_arch"
                return _Model
            def get_processor_class(self, name):
                return type("Proc", (), {"from_config": classmethod(lambda cls, cfg: cls())})
        registry = _Registry()
    ''',
    "conversation/__init__.py": "",
    "conversation/conversation_video.py": '''
        import os
        class Conversation:
            def __init__(self, system, roles):
                self.system, self.roles, self.messages = system, roles, []
            def copy(self):
                return Conversation(self.system, self.roles)
            def append_message(self, role, message):
                self.messages.append([role, message])
        default_conversation = Conversation("", ("Human", "Assistant"))
        conv_llava_llama_2 = Conversation("You are a helpful language and vision assistant.", ("USER", "ASSISTANT"))
        class Chat:
            def __init__(self, model, vis_processor, device="cuda:0"):
                self.device = device
            def upload_video_without_audio(self, video_path, conv, img_list):
                if not os.path.getsize(video_path):
                    raise RuntimeError("decord cannot open it")
                img_list.append("emb")
                conv.append_message(conv.roles[0], "<Video><ImageHere></Video> The video contains 8 frames.")
            def ask(self, text, conv):
                conv.messages[-1][1] = " ".join([conv.messages[-1][1], text])
            def answer(self, conv, img_list, max_new_tokens=300, num_beams=1, temperature=1.0, max_length=2000):
                return f"[{conv.roles[0]}|{conv.system}|{conv.messages[-1][1]}|{max_new_tokens}]", None
    ''',
    **{f"{sub}/__init__.py": "" for sub in ("datasets", "datasets/builders", "models", "processors", "runners",
                                           "tasks")},
}


@pytest.fixture
def fake_video_llama(tmp_path, monkeypatch):
    root = tmp_path / "fake-repo"
    for rel, code in FAKE_VIDEO_LLAMA.items():
        path = root / "video_llama" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code), encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m == "video_llama" or m.startswith("video_llama.")]:
        del sys.modules[name]


def test_video_llama_drives_the_repository_code(fake_video_llama, tmp_path):
    assert VideoLlamaAdapter.status() == "ready"
    folder = make_task_folder(tmp_path / "data", "mer2023", n=2)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("model: {}\n", encoding="utf-8")
    adapter = make_adapter("video-llama", f"cfg_path={cfg},max_new_tokens=32,device=cpu")
    samples = [Sample(name=f"sample_{i:08d}", task="mer2023", question=AFFECTGPT_OV_QUESTION, subtitle=SUBTITLES[i],
                      video=media_paths(folder, "mer2023", f"sample_{i:08d}")["video"]) for i in range(2)]
    samples[1].video.write_bytes(b"")
    out = adapter.answer(samples)
    assert out[0] == (f"[Human||<Video><ImageHere></Video> The video contains 8 frames. "
                      f"The subtitle of this video is: {SUBTITLES[0]}\n{AFFECTGPT_OV_QUESTION}|32]")
    assert type(out[1]).__name__ == "MediaError" and "Video-LLaMA could not load it" in str(out[1])


# ---------------------------------------------------------------- chat-univi

def test_chat_univi_frame_positions():
    assert frame_positions(100, 25.0, 64) == [0, 25, 50, 75]          # one frame per second
    assert frame_positions(100, 25.0, 64, video_framerate=5) == list(range(0, 100, 5))
    many = frame_positions(3000, 30.0, 64)                              # 100 s: capped, spread uniformly
    assert len(many) == 64 and many[0] == 0 and many[-1] == 2970
    assert frame_positions(8, 8.0, 64) == [0]
    assert frame_positions(10, 0.2, 64) == list(range(10))             # stride never below 1
    assert frame_positions(0, 25.0, 64) == []


def test_chat_univi_prompt_and_output():
    assert video_prompt("How does she feel?", 3, False) == "<image><image><image>\nHow does she feel?"
    assert video_prompt("q", 2, True) == "<im_start><image><image><im_end>\nq"
    assert clean_output("  She is happy.</s> ", "</s>") == "She is happy."
    assert clean_output("She is sad.###", "###") == "She is sad."
    assert clean_output("calm", "") == "calm"


def test_chat_univi_decodes_with_pyav(tmp_path):
    frames, fps = decode_video(write_video(tmp_path / "v.mp4", n_frames=8, fps=8))
    assert len(frames) == 8 and fps == pytest.approx(8.0) and frames[0].shape == (32, 32, 3)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match="video missing or empty"):
        decode_video(empty)


def test_chat_univi_absent_gives_install_instructions(tmp_path):
    if ChatUniViAdapter.status() == "ready":
        pytest.skip("Chat-UniVi is installed here")
    assert "needs the Chat-UniVi repository installed" in ChatUniViAdapter.status()
    adapter = make_adapter("chat-univi", "path=Chat-UniVi/Chat-UniVi")
    assert adapter.model_id() == "chat-univi-Chat-UniVi"
    with pytest.raises(UserError, match="needs the Chat-UniVi code, which is not on PyPI: git clone "
                                        "https://github.com/PKU-YuanGroup/Chat-UniVi"):
        adapter.answer([Sample(name="a", task="t", question="q")])
    assert np.array_equal(frame_positions(5, 1.0, 2), [0, 4])
