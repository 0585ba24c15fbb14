"""The transformers-native adapters without model weights: options, status, prompts, vLLM request assembly.

These run with or without torchvision (which transformers' video processors
need): prompts are built with a tokenizer that carries the model's chat
template, and vLLM is a fake module that records what it is given.
"""
from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import make_task_folder, write_video, write_wav

from unibench.adapters.base import Sample, available_adapters, make_adapter
from unibench.adapters.hf_common import (HFAdapter, SampleMedia, chat_prompt, check_path, hf_status, request_text,
                                         vllm_request, vllm_sampling)
from unibench.errors import UserError

REPO = Path(__file__).resolve().parent.parent
HF_ADAPTERS = ("video-llava", "llava-next-video", "qwen2.5-vl", "qwen2-audio", "qwen2.5-omni", "qwen3-omni",
               "videollama3")
VLLM_ADAPTERS = ("llava-next-video", "qwen2.5-vl", "qwen2-audio", "qwen2.5-omni", "qwen3-omni")


def sample(tmp_path: Path, subtitle: str = "I am fine.", video: bool = True, audio: bool = True) -> Sample:
    return Sample(name="s1", task="mer2023",
                  question="Please recognize all possible emotional states of the character.", subtitle=subtitle,
                  video=write_video(tmp_path / "s1.mp4") if video else None,
                  audio=write_wav(tmp_path / "s1.wav") if audio else None)


# ---------------------------------------------------------------- registry, options, status

def test_every_adapter_is_registered_with_inputs_and_status():
    adapters = available_adapters()
    for name in HF_ADAPTERS + ("qwen-audio",):
        cls = adapters[name]
        assert "subtitle" in cls.inputs
        status = cls.status()
        assert isinstance(status, str) and status
    assert adapters["qwen2-audio"].inputs == ("audio", "subtitle")
    assert adapters["qwen2.5-omni"].inputs == ("video", "audio", "subtitle")
    assert adapters["video-llava"].inputs == ("video", "subtitle")


def test_status_names_a_class_the_installed_transformers_lacks(monkeypatch):
    import unibench.runtime as inference  # the adapters' run-time helpers

    names = set(inference.transformers_names()) - {"VideoLlama3ForConditionalGeneration"}
    monkeypatch.setattr(inference, "_TRANSFORMERS_NAMES", names)
    cls = available_adapters()["videollama3"]
    assert hf_status(cls).endswith("lacks class VideoLlama3ForConditionalGeneration")
    from unibench.cli import main

    assert main(["--list-models"]) == 0  # listed with its status, not an import failure


def test_status_says_video_models_need_torchvision(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    adapters = available_adapters()
    assert hf_status(adapters["video-llava"]) == "needs pip install torchvision pillow"
    assert hf_status(adapters["qwen2-audio"]) == "ready"  # audio models need no torchvision


def test_listing_models_imports_no_torch():
    code = ("import sys; from unibench.adapters.base import available_adapters; "
            "[c.status() for c in available_adapters().values()]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("args, message", [
    ("", "'path' is required"),
    ("path=x/y,num_frames=many", "'num_frames' must be an integer"),
    ("path=x/y,backend=tgi", "backend=tgi: expected transformers or vllm"),
    ("path=x/y,backend=vllm", "model 'video-llava' has no vLLM support"),
    ("path=x/y,num_frames=0", "num_frames=0: must be at least 1"),
    ("path=x/y,temprature=0.2", "unknown key 'temprature'"),
])
def test_model_args_are_typed_and_checked(args, message):
    with pytest.raises(UserError, match=message):
        make_adapter("video-llava", args)


def test_options_defaults_are_greedy_with_eight_frames():
    adapter = make_adapter("qwen2.5-vl", "path=Qwen/Qwen2.5-VL-7B-Instruct")
    opts = adapter.options
    assert (opts.do_sample, opts.num_frames, opts.backend) == (False, 8, "transformers")
    assert adapter.model_id() == "qwen2.5-vl"
    assert make_adapter("qwen2.5-vl", "path=a/b,name=my-vl").model_id() == "my-vl"


def test_check_path_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        check_path(str(tmp_path / "nope"), "video-llava", ("video_llava",), "LanguageBind/Video-LLaVA-7B-hf")
    with pytest.raises(UserError, match="no config.json"):
        check_path(str(tmp_path), "video-llava", ("video_llava",), "LanguageBind/Video-LLaVA-7B-hf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="holds a 'llama' model; model 'video-llava' needs 'video_llava'"):
        check_path(str(tmp_path), "video-llava", ("video_llava",), "LanguageBind/Video-LLaVA-7B-hf")
    check_path("LanguageBind/Video-LLaVA-7B-hf", "video-llava", ("video_llava",), "")  # a hub id passes


def test_missing_model_folder_fails_the_run_in_one_line(tmp_path, tiny_lexicon_dir, capsys):  # noqa: F811
    from unibench.cli import main

    data = tmp_path / "data"
    make_task_folder(data, "mer2023", n=2)
    rc = main(["--model", "qwen2-audio", "--model-args", f"path={tmp_path / 'missing'}", "--task", "mer2023",
               "--data-root", str(data), "--allow-count-mismatch", "--extractor", "lexicon",
               "--lexicon", str(tiny_lexicon_dir), "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "folder not found" in err and "Traceback" not in err


# ---------------------------------------------------------------- the request

def test_request_text_puts_the_subtitle_before_the_question(tmp_path):
    s = Sample(name="a", task="mer2023", question="How does the person feel?", subtitle=" I won! ")
    assert request_text(s) == "The subtitle of this video is: I won!\nHow does the person feel?"
    assert request_text(s, "audio").startswith("The subtitle of this audio is: I won!\n")
    # the runner leaves Sample.subtitle empty when the question already embeds it (ovmer prompt)
    assert request_text(Sample(name="a", task="t", question="Q")) == "Q"


def test_chat_prompt_uses_the_template_or_the_fallback():
    from test_adapters_hf_models import VIDEO_LLAVA_TEMPLATE, build_tokenizer

    content = [{"type": "video"}, {"type": "text", "text": "how does she feel"}]
    tok = build_tokenizer(["<image>", "<video>"], VIDEO_LLAVA_TEMPLATE)
    assert chat_prompt(tok, content, "unused") == "USER: <video>\nhow does she feel ASSISTANT:"
    bare = types.SimpleNamespace(chat_template=None)
    assert chat_prompt(bare, content, "USER: {media}\n{text} ASSISTANT:", {"video": "<video>"}) == \
        "USER: <video>\nhow does she feel ASSISTANT:"


def test_sample_media_loads_frames_audio_and_frame_timing(tmp_path):
    adapter = make_adapter("qwen2.5-omni", "path=a/b,num_frames=4")
    media = adapter.sample_media(sample(tmp_path))
    assert media.video.shape == (4, 32, 32, 3) and media.video.dtype == np.uint8
    assert media.audio.dtype == np.float32 and media.sample_rate == 16000 and len(media.audio) == 8000
    assert media.video_meta["total_num_frames"] == 8 and media.video_meta["fps"] == pytest.approx(8.0)
    assert media.video_meta["frames_indices"] == [0, 2, 5, 7]
    assert media.sampled_fps == pytest.approx(4.0)  # 4 frames over a one-second clip
    assert media.text.startswith("The subtitle of this video is: I am fine.\n")
    assert [p["type"] for p in adapter.content(media)] == ["video", "audio", "text"]


def test_bad_media_raise_media_error(tmp_path):
    from unibench.media import MediaError

    adapter = make_adapter("qwen2-audio", "path=a/b")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav file")
    with pytest.raises(MediaError, match="broken.wav"):
        adapter.sample_media(Sample(name="x", task="t", question="Q", audio=broken))


# ---------------------------------------------------------------- vLLM (fake engine)

class FakeLLM:
    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.requests: list[dict[str, Any]] = []
        self.params: Any = None
        FakeLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=True):
        self.requests.extend(requests)
        self.params = params
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" happy and calm {i} ")])
                for i, _ in enumerate(requests)]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_vllm_sampling_is_greedy_unless_asked():
    adapter = make_adapter("qwen2-audio", "path=a/b,max_new_tokens=64,seed=3")
    assert vllm_sampling(adapter.options) == {"temperature": 0.0, "max_tokens": 64, "seed": 3}
    adapter = make_adapter("qwen2-audio", "path=a/b,do_sample=true,temperature=0.7,top_p=0.8")
    assert vllm_sampling(adapter.options) == {"temperature": 0.7, "top_p": 0.8, "max_tokens": 512, "seed": 0}
    assert adapter.default_batch_size == 1  # transformers: one sample per call unless --batch-size
    assert make_adapter("qwen2-audio", "path=a/b,backend=vllm").default_batch_size == 32


def test_vllm_request_carries_frames_and_audio():
    frames = np.zeros((8, 4, 4, 3), np.uint8)
    audio = np.zeros(160, np.float32)
    req = vllm_request("P", SampleMedia(text="t", video=frames, audio=audio, sample_rate=16000))
    assert req["prompt"] == "P"
    assert req["multi_modal_data"]["video"] is frames
    assert req["multi_modal_data"]["audio"][0] is audio and req["multi_modal_data"]["audio"][1] == 16000
    assert vllm_request("P", SampleMedia(text="t")) == {"prompt": "P"}


def test_backend_vllm_without_vllm_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    from test_adapters_hf_models import build_tokenizer

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    adapter = make_adapter("qwen2-audio", "path=a/b,backend=vllm")
    adapter._processor = build_tokenizer([], "{{ messages[0]['content'][-1]['text'] }}")
    with pytest.raises(UserError, match=r"needs vLLM on a GPU machine: pip install 'mer-unibench\[vllm\]'"):
        adapter.answer([sample(tmp_path, video=False)])


def _template_for(name: str) -> tuple[list[str], str]:
    import test_adapters_hf_models as m

    if name == "llava-next-video":
        return ["<image>", "<video>"], m.VIDEO_LLAVA_TEMPLATE
    if name == "qwen2.5-vl":
        return m.QWEN_SPECIAL + m.QWEN_VISION_SPECIAL, m.QWEN_VL_TEMPLATE
    if name == "qwen2-audio":
        return m.QWEN_SPECIAL + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"], m.QWEN_AUDIO_TEMPLATE
    return m.QWEN_SPECIAL + list(m.OMNI_TOKENS.values()), m.OMNI_TEMPLATE


PLACEHOLDER = {"llava-next-video": "<video>", "qwen2.5-vl": "<|vision_start|><|video_pad|><|vision_end|>",
               "qwen2-audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
               "qwen2.5-omni": "<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>",
               "qwen3-omni": "<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>"}


@pytest.mark.parametrize("name", VLLM_ADAPTERS)
def test_vllm_backend_assembles_requests(name, tmp_path, fake_vllm):
    from test_adapters_hf_models import build_tokenizer

    special, template = _template_for(name)
    adapter = make_adapter(name, "path=org/model,backend=vllm,num_frames=4,max_new_tokens=32,tensor_parallel_size=2")
    adapter._processor = build_tokenizer(special, template)  # the chat template is all vLLM mode needs from it
    answers = adapter.answer([sample(tmp_path, subtitle="We won."), sample(tmp_path, subtitle="")])
    assert answers == ["happy and calm 0", "happy and calm 1"]
    (engine,) = FakeLLM.instances
    assert engine.kwargs["model"] == "org/model" and engine.kwargs["tensor_parallel_size"] == 2
    assert engine.kwargs["limit_mm_per_prompt"] == {k: 1 for k in ("video", "audio") if k in adapter.inputs}
    assert engine.params.kwargs == {"temperature": 0.0, "max_tokens": 32, "seed": 0}
    first, second = engine.requests
    assert PLACEHOLDER[name] in first["prompt"]
    medium = "audio" if name == "qwen2-audio" else "video"
    assert f"The subtitle of this {medium} is: We won.\nPlease recognize" in first["prompt"]
    assert "subtitle" not in second["prompt"]
    data = first["multi_modal_data"]
    if "video" in adapter.inputs:
        video = data["video"][0] if name == "qwen2.5-vl" else data["video"]  # Qwen2.5-VL: (frames, metadata)
        assert video.shape == (4, 32, 32, 3)
    if "audio" in adapter.inputs:
        assert data["audio"][1] == 16000 and data["audio"][0].shape == (8000,)
    assert set(data) == {k for k in ("video", "audio") if k in adapter.inputs}


def test_vllm_end_to_end_through_run_bench(tmp_path, tiny_lexicon_dir, fake_vllm):  # noqa: F811
    """qwen2-audio with backend=vllm: run_bench -> fake engine -> answers, extraction, leaderboard."""
    from test_adapters_hf_models import build_qwen2_audio, check_outputs, run_bench

    model_dir = build_qwen2_audio(tmp_path / "qwen2-audio-tiny")
    out = run_bench("qwen2-audio", model_dir, tmp_path, tiny_lexicon_dir, model_args="backend=vllm")
    records = check_outputs(out, "qwen2-audio")
    assert [r["answer"] for r in records] == ["happy and calm 0", "happy and calm 1"]
    (engine,) = FakeLLM.instances
    assert engine.kwargs["model"] == str(model_dir)
    assert all("<|audio_bos|><|AUDIO|><|audio_eos|>" in r["prompt"] for r in engine.requests)


# ---------------------------------------------------------------- qwen-audio (v1, remote code; faked)

class FakeQwenAudioTokenizer:
    def from_list_format(self, items: list[dict[str, str]]) -> str:
        return "".join(f"Audio 1:<audio>{i['audio']}</audio>\n" if "audio" in i else i["text"] for i in items)


class FakeQwenAudioModel:
    def __init__(self):
        self.generation_config = types.SimpleNamespace(chat_format="chatml", max_window_size=6144, do_sample=True,
                                                       temperature=0.9, top_p=0.8, top_k=0, max_new_tokens=None)
        self.calls: list[tuple[str, Any]] = []

    def chat(self, tokenizer, query, history=None, generation_config=None):
        self.calls.append((query, generation_config))
        return f"He sounds sad {len(self.calls)}.", [(query, "...")]


def test_qwen_audio_asks_the_remote_chat_with_audio_path_and_subtitle(tmp_path, monkeypatch,
                                                                      tiny_lexicon_dir):  # noqa: F811
    import unibench.adapters.hf_qwen_audio as qa
    from test_adapters_hf_models import check_outputs
    from unibench.cli import main

    model = FakeQwenAudioModel()
    monkeypatch.setattr(qa, "load_remote", lambda path, options: (model, FakeQwenAudioTokenizer()))
    ckpt = tmp_path / "Qwen-Audio-Chat"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "qwen", "auto_map": {}}))
    data = tmp_path / "data"
    folder = make_task_folder(data, "mer2023", n=2)
    base = ["--model", "qwen-audio", "--task", "mer2023", "--data-root", str(data), "--allow-count-mismatch",
            "--extractor", "lexicon", "--lexicon", str(tiny_lexicon_dir), "--output", str(tmp_path / "out"),
            "--no-progress", "--no-cache"]
    assert main(base + ["--model-args", f"path={ckpt}"]) == 2  # refuses to run remote code unasked
    assert main(base + ["--model-args", f"path={ckpt},trust_remote_code=true,max_new_tokens=20"]) == 0
    check_outputs(tmp_path / "out", "qwen-audio")
    query, config = model.calls[0]
    assert f"<audio>{folder / 'audio' / 'sample_00000000.wav'}</audio>" in query
    assert "The subtitle of this audio is: I am so happy to see you again" in query
    assert query.endswith("Please recognize all possible emotional states of the character.")
    assert (config.do_sample, config.max_new_tokens, config.temperature) == (False, 20, None)
    assert config.chat_format == "chatml"
    assert model.generation_config.do_sample is True  # the model's own config is left alone


def test_qwen_audio_needs_trust_remote_code_message(tmp_path):
    adapter = make_adapter("qwen-audio", f"path={tmp_path}")
    with pytest.raises(UserError, match="review it, then pass --model-args trust_remote_code=true"):
        adapter.answer([sample(tmp_path, video=False)])
    with pytest.raises(UserError, match="has no vLLM support"):
        make_adapter("qwen-audio", "path=a/b,backend=vllm")


def test_qwen_audio_says_what_its_remote_code_needs(tmp_path, monkeypatch):
    import importlib.util

    import unibench.adapters.hf_qwen_audio as qa

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tiktoken" else real(name, *a))
    assert qa.QwenAudioAdapter.status() == "needs pip install tiktoken"
    adapter = make_adapter("qwen-audio", f"path={tmp_path},trust_remote_code=true")
    with pytest.raises(UserError, match="needs tiktoken: pip install tiktoken"):
        qa.load_remote(str(tmp_path), adapter.options)
    with pytest.raises(UserError, match="no config.json there"):
        adapter.load()
