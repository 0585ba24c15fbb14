"""The adapters that drive a model's own repository: `video-llama` and `chat-univi`.

Neither repository is installed here: small fake packages stand in for them
(same module names, same call signatures), written per test under tmp_path.
No GPU, no network, no weights.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, frame_value, make_task_folder, media_paths, write_video, write_wav
from unibench.adapters import chat_univi
from unibench.adapters.base import Sample, make_adapter
from unibench.adapters.chat_univi import (ChatUniViAdapter, clean_output, frame_positions, sampled_frames,
                                          video_prompt)
from unibench.adapters.video_llama import (AUDIO_VIDEO_MESSAGE, VideoLlamaAdapter, config_args, config_problems,
                                           conversation_name, generation_kwargs, gpu_index)
from unibench.cli import main
from unibench.errors import UserError
from unibench.inference import read_answer_log
from unibench.prompts import AFFECTGPT_OV_QUESTION


def write_package(root: Path, package: str, files: dict[str, str]) -> None:
    for rel, code in files.items():
        path = root / package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code), encoding="utf-8")


def forget_package(package: str) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def run_cli(capsys, data_root: Path, output: Path, lexicon_dir: Path, model: str, model_args: str):
    rc = main(["--model", model, "--model-args", model_args, "--task", "mer2023", "--data-root", str(data_root),
               "--output", str(output), "--allow-count-mismatch", "--extractor", "lexicon",
               "--lexicon", str(lexicon_dir), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def samples_of(folder: Path, n: int, audio: bool = False) -> list[Sample]:
    out = []
    for i in range(n):
        paths = media_paths(folder, "mer2023", f"sample_{i:08d}")
        out.append(Sample(name=f"sample_{i:08d}", task="mer2023", question=AFFECTGPT_OV_QUESTION,
                          subtitle=SUBTITLES[i], video=paths["video"], audio=paths["audio"] if audio else None))
    return out


# ================================================================ video-llama

# The fake repository: the eval config is read as JSON (valid YAML); the model
# section gets their default vit_precision fp16 as their Config merge does.
FAKE_VIDEO_LLAMA = {
    "__init__.py": "",
    "common/__init__.py": "",
    "common/config.py": '''
        import json

        class Node(dict):
            def __getattr__(self, key):
                try:
                    return self[key]
                except KeyError:
                    raise AttributeError(key) from None
            def __setattr__(self, key, value):
                self[key] = value

        def _node(value):
            return Node({k: _node(v) for k, v in value.items()}) if isinstance(value, dict) else value

        class Config:
            def __init__(self, args):
                self.args = args
                with open(args.cfg_path, encoding="utf-8") as fh:
                    config = _node(json.load(fh))
                assert config.get("model") is not None, "Missing model configuration file."
                self.model_cfg = _node({"vit_precision": "fp16", **config["model"]})
                self.datasets_cfg = config["datasets"]
    ''',
    "common/registry.py": '''
        import torch

        class _Model:
            built = []          # every model config built, as the model saw it
            @classmethod
            def from_config(cls, cfg):
                cls.built.append(dict(cfg))
                if cfg.get("fake_build_error"):
                    raise OSError("ckpt/vicuna-7b/ is not a folder with a tokenizer")
                model = cls()
                model.cfg = dict(cfg)
                return model
            def to(self, device):
                self.device = device
                return self
            def eval(self):
                return self
            def encode_videoQformer_visual(self, video):
                if self.cfg.get("fake_encode_error"):
                    raise RuntimeError('"addmm_impl_cpu_" not implemented for \\'Half\\'')
                return torch.ones(1, 32, 8) * video.shape[2], None
            def encode_audioQformer(self, audio):
                return torch.zeros(1, 8, 8), None

        class _Processor:
            @classmethod
            def from_config(cls, cfg):
                return cls()
            def transform(self, frames):
                return frames

        class _Registry:
            def get_model_class(self, name):
                assert name == "fake_arch"
                return _Model
            def get_processor_class(self, name):
                return _Processor

        registry = _Registry()
    ''',
    "processors/video_processor.py": '''
        import os
        import torch

        def load_video(video_path, n_frms=8, height=-1, width=-1, sampling="uniform", return_msg=False):
            if not os.path.getsize(video_path):
                raise RuntimeError("[decord] Error reading " + video_path)
            return torch.zeros(3, n_frms, 4, 4), "The video contains 8 frames."
    ''',
    "models/ImageBind/__init__.py": "",
    "models/ImageBind/data.py": '''
        import os
        import wave
        import torch

        def load_and_transform_audio_data(audio_paths, device, clips_per_video=3):
            if os.environ.get("FAKE_TORCHAUDIO_BROKEN"):
                raise RuntimeError("No audio I/O backend is available.")
            for path in audio_paths:
                with wave.open(path) as fh:
                    fh.getnframes()
            return torch.zeros(len(audio_paths), clips_per_video, 1, 4, 4)
    ''',
    "conversation/__init__.py": "",
    "conversation/conversation_video.py": '''
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
                self.model, self.vis_processor, self.device = model, vis_processor, device
            def ask(self, text, conv):
                conv.messages[-1][1] = " ".join([conv.messages[-1][1], text])
            def answer(self, conv, img_list, max_new_tokens=300, num_beams=1, temperature=1.0, max_length=2000):
                return f"[{conv.roles[0]}|{conv.system}|{conv.messages[-1][1]}|{max_new_tokens}|{len(img_list)}]", None
    ''',
    **{f"{sub}/__init__.py": "" for sub in ("datasets", "datasets/builders", "models", "processors", "runners",
                                           "tasks")},
}


@pytest.fixture
def fake_video_llama(tmp_path, monkeypatch):
    root = tmp_path / "fake-repo"
    write_package(root, "video_llama", FAKE_VIDEO_LLAMA)
    monkeypatch.syspath_prepend(str(root))
    yield root
    forget_package("video_llama")


def built_models() -> list[dict]:
    return sys.modules["video_llama.common.registry"]._Model.built


def write_eval_config(tmp_path: Path, **model) -> Path:
    """A complete eval config (as JSON, which is YAML) whose files exist; ``model`` overrides its model keys."""
    ckpt = tmp_path / "ckpt"
    (ckpt / "vicuna-7b").mkdir(parents=True, exist_ok=True)
    (ckpt / "imagebind").mkdir(exist_ok=True)
    for name in ("VL_LLaMA_2_7B_Finetuned.pth", "AL_LLaMA_2_7B_Finetuned.pth", "imagebind/imagebind_huge.pth"):
        (ckpt / name).write_bytes(b"weights")
    section = {"arch": "fake_arch", "model_type": "pretrain_vicuna", "llama_model": str(ckpt / "vicuna-7b"),
               "imagebind_ckpt_path": str(ckpt / "imagebind"), "ckpt": str(ckpt / "VL_LLaMA_2_7B_Finetuned.pth"),
               "ckpt_2": str(ckpt / "AL_LLaMA_2_7B_Finetuned.pth"), "equip_audio_branch": True}
    section.update(model)
    section = {k: v for k, v in section.items() if v is not None}
    cfg = {"model": section, "run": {"task": "video_text_pretrain"},
           "datasets": {"webvid": {"vis_processor": {"train": {"name": "alpro_video_eval", "n_frms": 8,
                                                                "image_size": 224}}}}}
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def test_video_llama_request_assembly():
    assert conversation_name("vicuna") == "default_conversation"
    assert conversation_name("llama_v2") == "conv_llava_llama_2"
    with pytest.raises(UserError, match="model_type must be one of vicuna, llama_v2"):
        conversation_name("mistral")
    opts = make_adapter("video-llama", "cfg_path=eval.yaml,max_new_tokens=64").options
    args = config_args(opts)
    assert (args.cfg_path, args.gpu_id, args.model_type, args.options) == ("eval.yaml", 0, "vicuna", None)
    assert config_args(opts, gpu_index("cuda:2")).gpu_id == 2 and gpu_index("cuda") == gpu_index("cpu") == 0
    assert generation_kwargs(opts) == {"num_beams": 1, "temperature": 1.0, "max_new_tokens": 64, "max_length": 2000}
    # the demo's message, with the whitespace its line continuations leave
    assert AUDIO_VIDEO_MESSAGE.count("<ImageHere>") == 2
    assert "<ImageHere>. " + " " * 16 + "Close your ears" in AUDIO_VIDEO_MESSAGE
    assert "</Video>.  " + " " * 16 + "Now answer" in AUDIO_VIDEO_MESSAGE
    assert make_adapter("video-llama", "cfg_path=x.yaml,audio=true").inputs == ("video", "audio", "subtitle")
    with pytest.raises(UserError, match="'cfg_path' is required for model 'video-llama'"):
        make_adapter("video-llama", "")


def test_video_llama_config_problems(tmp_path):
    ok = json.loads(write_eval_config(tmp_path).read_text())["model"]
    assert config_problems(ok, audio=True) == []
    assert config_problems({**ok, "llama_model": "lmsys/vicuna-7b-v1.5"}, audio=False) == []  # a hub id
    problems = config_problems({**ok, "llama_model": "ckpt/vicuna-13b/", "ckpt": "", "ckpt_2": "",
                                "imagebind_ckpt_path": str(tmp_path / "nowhere")}, audio=True)
    assert any("llama_model: folder not found: ckpt/vicuna-13b/" in p for p in problems)
    assert any(p.startswith("model.ckpt is not set") for p in problems)
    assert "audio=true needs model.ckpt_2 (the audio branch checkpoint)" in problems
    assert any("imagebind_huge.pth not found" in p for p in problems)
    assert config_problems({**ok, "equip_audio_branch": False}, audio=True) == [
        "audio=true needs model.equip_audio_branch: True (video_llama_eval_withaudio.yaml)"]
    no_audio = {**ok, "equip_audio_branch": False, "imagebind_ckpt_path": "", "ckpt_2": ""}
    assert config_problems(no_audio, audio=False) == []


def test_video_llama_absent_gives_install_instructions(capsys, tmp_path, tiny_lexicon_dir):
    if VideoLlamaAdapter.status() == "ready":
        pytest.skip("Video-LLaMA is installed here")
    assert "needs the Video-LLaMA repository" in VideoLlamaAdapter.status()
    make_task_folder(tmp_path / "data", "mer2023", n=2, media=True)
    rc, _, err = run_cli(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir, "video-llama",
                         "cfg_path=eval.yaml")
    assert rc == 2
    assert ("error: model 'video-llama' needs the Video-LLaMA code, which is not on PyPI: "
            "git clone https://github.com/DAMO-NLP-SG/Video-LLaMA") in err
    assert "environment.yml pins" in err and "torch 1.12.1" in err and "torchaudio 0.12.1" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_video_llama_drives_the_repository_code(fake_video_llama, tmp_path, capsys):
    assert VideoLlamaAdapter.status() == "ready"
    folder = make_task_folder(tmp_path / "data", "mer2023", n=3)
    cfg = write_eval_config(tmp_path)
    adapter = make_adapter("video-llama", f"cfg_path={cfg},max_new_tokens=32,device=cpu")
    samples = samples_of(folder, 3)
    samples[1].video.write_bytes(b"")          # unreadable: a media error
    samples[2].video.unlink()                  # missing: a media error
    out = adapter.answer(samples)
    assert out[0] == (f"[Human||<Video><ImageHere></Video> The video contains 8 frames. "
                      f"The subtitle of this video is: {SUBTITLES[0]}\n{AFFECTGPT_OV_QUESTION}|32|1]")
    assert type(out[1]).__name__ == "MediaError" and "Video-LLaMA could not read the video" in str(out[1])
    assert "[decord] Error reading" in str(out[1])
    assert type(out[2]).__name__ == "MediaError" and "video not found" in str(out[2])
    # on CPU their fp16 EVA ViT cannot run: the model is built with fp32, and a note says so
    assert [m["vit_precision"] for m in built_models()] == ["fp32"]
    err = capsys.readouterr().err
    assert "note: video-llama on cpu: vit_precision fp16 -> fp32" in err
    assert adapter._chat.model.device == "cpu" and adapter._chat.device == "cpu"


def test_video_llama_audio_branch(fake_video_llama, tmp_path):
    folder = make_task_folder(tmp_path / "data", "mer2023", n=3)
    cfg = write_eval_config(tmp_path, vit_precision="fp32")
    adapter = make_adapter("video-llama", f"cfg_path={cfg},audio=true,max_new_tokens=8,device=cpu")
    samples = samples_of(folder, 3, audio=True)
    samples[1].audio.write_bytes(b"not a wav")
    samples[2].audio.unlink()
    out = adapter.answer(samples)
    assert out[0] == f"[Human||{AUDIO_VIDEO_MESSAGE} The subtitle of this video is: {SUBTITLES[0]}\n" \
                     f"{AFFECTGPT_OV_QUESTION}|8|2]"
    assert type(out[1]).__name__ == "MediaError" and "Video-LLaMA could not read the audio" in str(out[1])
    assert type(out[2]).__name__ == "MediaError" and "audio not found" in str(out[2])


def test_video_llama_a_broken_audio_loader_is_one_setup_error(fake_video_llama, tmp_path, monkeypatch):
    """torchaudio not matching torch fails every file: checked once on a valid WAV, not 'bad audio' per sample."""
    monkeypatch.setenv("FAKE_TORCHAUDIO_BROKEN", "1")
    folder = make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("video-llama", f"cfg_path={write_eval_config(tmp_path)},audio=true,device=cpu")
    with pytest.raises(UserError, match="its audio loader cannot read a valid 16 kHz WAV here \\(RuntimeError: "
                                        "No audio I/O backend is available.\\); torchaudio must match torch"):
        adapter.answer(samples_of(folder, 1, audio=True))
    assert built_models() == []


def test_video_llama_encoding_errors_stop_the_run(fake_video_llama, capsys, tmp_path, tiny_lexicon_dir):
    """An error while encoding is a model error: three in a row stop the run (not five 'bad videos')."""
    make_task_folder(tmp_path / "data", "mer2023", n=5)
    cfg = write_eval_config(tmp_path, fake_encode_error=True)
    rc, _, err = run_cli(capsys, tmp_path / "data", tmp_path / "out", tiny_lexicon_dir, "video-llama",
                         f"cfg_path={cfg},device=cpu")
    assert rc == 2, err
    assert ("error: [mer2023] the first 3 samples all failed in model 'video-llama' (last: RuntimeError: "
            "\"addmm_impl_cpu_\" not implemented for 'Half')") in err
    assert "Traceback" not in err
    records, _ = read_answer_log(tmp_path / "out" / "video-llama" / "answers" / "mer2023.jsonl")
    assert len(records) == 3 and all(r["error"].startswith("RuntimeError:") for r in records)
    assert len(built_models()) == 1


@pytest.mark.parametrize("problem, message", [
    ("unparsable", "cannot use the eval config"),
    ("no-ckpt", "model.ckpt is not set"),
    ("low-resource", "model.low_resource: True loads LLaMA in 8 bit on a GPU; set it False on CPU"),
    ("build", "building the model from"),
])
def test_video_llama_setup_problems_are_one_line_once(fake_video_llama, tmp_path, problem, message):
    folder = make_task_folder(tmp_path / "data", "mer2023", n=1)
    overrides = {"no-ckpt": {"ckpt": ""}, "low-resource": {"low_resource": True},
                 "build": {"fake_build_error": True}}.get(problem, {})
    cfg = write_eval_config(tmp_path, **overrides)
    if problem == "unparsable":  # the shipped file: several llama_model choices on one line
        cfg.write_text('model:\n  llama_model: "ckpt/vicuna-13b/" or "ckpt/vicuna-7b/"\n', encoding="utf-8")
    adapter = make_adapter("video-llama", f"cfg_path={cfg},device=cpu")
    for _ in range(2):  # remembered: the second call neither rebuilds nor re-reads
        with pytest.raises(UserError, match=message) as info:
            adapter.answer(samples_of(folder, 1))
        assert "\n" not in str(info.value)
    assert len(built_models()) == (1 if problem == "build" else 0)
    if problem == "build":
        assert "(OSError: ckpt/vicuna-7b/ is not a folder with a tokenizer)" in str(info.value)


# ================================================================ chat-univi

FAKE_CHAT_UNIVI = {
    "__init__.py": "",
    "constants.py": '''
        IMAGE_TOKEN_INDEX = -200
        DEFAULT_IMAGE_TOKEN = "<image>"
        DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
        DEFAULT_IM_START_TOKEN = "<im_start>"
        DEFAULT_IM_END_TOKEN = "<im_end>"
    ''',
    "conversation.py": '''
        from enum import Enum, auto

        class SeparatorStyle(Enum):
            SINGLE = auto()
            TWO = auto()

        class Conversation:
            def __init__(self, system, roles, sep="###", sep2=None, sep_style=SeparatorStyle.SINGLE):
                self.system, self.roles, self.sep, self.sep2, self.sep_style = system, roles, sep, sep2, sep_style
                self.messages = []
            def copy(self):
                return Conversation(self.system, self.roles, self.sep, self.sep2, self.sep_style)
            def append_message(self, role, message):
                self.messages.append([role, message])
            def get_prompt(self):
                return self.system + "".join(f"{self.sep}{r}: {m or ''}" for r, m in self.messages)

        conv_templates = {"simple": Conversation("A chat.", ("Human", "Assistant"))}
    ''',
    "mm_utils.py": '''
        import torch

        PROMPTS = []

        def tokenizer_image_token(prompt, tokenizer, image_token_index, return_tensors=None):
            PROMPTS.append(prompt)
            return torch.tensor([1, 2, 3])

        class KeywordsStoppingCriteria:
            def __init__(self, keywords, tokenizer, input_ids):
                self.keywords = keywords
    ''',
    "model/__init__.py": "",
    "model/builder.py": '''
        import os
        import numpy as np
        import torch

        CALLS = []

        class Processor:
            def preprocess(self, image, return_tensors="pt"):
                return {"pixel_values": torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float()}

        class Tower:
            def __init__(self):
                self.is_loaded, self.device = False, "meta"
            def load_model(self):
                self.image_processor = Processor()
                self.image_eval_processor = Processor()
                self.is_loaded = True
            def to(self, device=None, dtype=None):
                if str(device).startswith("cuda") and not torch.cuda.is_available():
                    raise AssertionError("Torch not compiled with CUDA enabled")
                self.device = str(device)
                return self

        class Tokenizer:
            def __init__(self):
                self.tokens = ["<s>"]
            def add_tokens(self, tokens, special_tokens=False):
                self.tokens += [t for t in tokens if t not in self.tokens]
            def __len__(self):
                return len(self.tokens)
            def batch_decode(self, ids, skip_special_tokens=True):
                return [" answer " + " ".join(str(i) for i in row.tolist()) + " ###" for row in ids]

        class Model:
            def __init__(self):
                self.config = type("Config", (), {"mm_use_im_start_end": False, "mm_use_im_patch_token": True})()
                self.tower, self.images = Tower(), []
            def get_vision_tower(self):
                return self.tower
            def resize_token_embeddings(self, n):
                self.vocab = n
            def to(self, device=None, dtype=None):
                self.device, self.dtype = str(device), dtype
                self.tower.to(device=device, dtype=dtype)
                return self
            def eval(self):
                return self
            def generate(self, ids, images=None, **kwargs):
                self.images.append(images)
                return torch.cat([ids, torch.tensor([[7, len(images)]])], dim=1)

        def load_pretrained_model(model_path, model_base, model_name, load_8bit=False, load_4bit=False,
                                  device_map="auto"):
            CALLS.append((model_path, model_base, model_name))
            if os.environ.get("FAKE_CHATUNIVI_LOAD_ERROR"):
                raise OSError(f"{model_path} does not appear to have a file named config.json")
            tokenizer, model = Tokenizer(), Model()
            image_processor = None
            if "chatunivi" in model_name.lower():  # as theirs: the tower goes to CUDA unconditionally
                tokenizer.add_tokens(["<im_patch>"], special_tokens=True)
                model.resize_token_embeddings(len(tokenizer))
                tower = model.get_vision_tower()
                if not tower.is_loaded:
                    tower.load_model()
                    tower.to(device="cuda", dtype=torch.float16)
                image_processor = tower.image_eval_processor
            return tokenizer, model, image_processor, 2048
    ''',
}


@pytest.fixture
def fake_chat_univi(tmp_path, monkeypatch):
    root = tmp_path / "fake-chatunivi"
    write_package(root, "ChatUniVi", FAKE_CHAT_UNIVI)
    monkeypatch.syspath_prepend(str(root))
    yield root
    forget_package("ChatUniVi")


def builder_calls() -> list[tuple]:
    return sys.modules["ChatUniVi.model.builder"].CALLS


def full_decode_reference(path: Path, max_frames: int, video_framerate: int) -> tuple[list[np.ndarray], list[int]]:
    """What the adapter did before: decode and keep every frame, then pick the positions."""
    import av

    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    positions = frame_positions(len(frames), fps, max_frames, video_framerate)
    return [frames[i] for i in positions], positions


def write_long_video(path: Path, seconds: int = 30, fps: int = 25, size: tuple[int, int] = (48, 32)) -> Path:
    """A clip whose frames all differ (a moving bar over a grey level that changes every frame)."""
    import av

    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            img = np.full((height, width, 3), (i * 37) % 200 + 20, dtype=np.uint8)
            img[:, (i * 2) % (width - 8):(i * 2) % (width - 8) + 8] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_chat_univi_frame_positions():
    assert frame_positions(100, 25.0, 64) == [0, 25, 50, 75]          # one frame per second
    assert frame_positions(100, 25.0, 64, video_framerate=5) == list(range(0, 100, 5))
    many = frame_positions(3000, 30.0, 64)                              # 100 s: capped, spread uniformly
    assert len(many) == 64 and many[0] == 0 and many[-1] == 2970
    assert frame_positions(8, 8.0, 64) == [0]
    assert frame_positions(10, 0.2, 64) == list(range(10))             # stride never below 1
    assert frame_positions(0, 25.0, 64) == []
    assert np.array_equal(frame_positions(5, 1.0, 2), [0, 4])


def test_chat_univi_prompt_and_output():
    assert video_prompt("How does she feel?", 3, False) == "<image><image><image>\nHow does she feel?"
    assert video_prompt("q", 2, True) == "<im_start><image><image><im_end>\nq"
    assert clean_output("  She is happy.</s> ", "</s>") == "She is happy."
    assert clean_output("She is sad.###", "###") == "She is sad."
    assert clean_output("calm", "") == "calm"


def test_chat_univi_decodes_with_pyav(tmp_path):
    frames, positions, fps = sampled_frames(write_video(tmp_path / "v.mp4", n_frames=8, fps=8), 64,
                                            video_framerate=8)
    assert positions == list(range(8)) and fps == pytest.approx(8.0) and frames[0].shape == (32, 32, 3)
    assert [int(round(f.mean())) for f in frames] == pytest.approx([frame_value(i) for i in range(8)], abs=6)
    _, positions, _ = sampled_frames(tmp_path / "v.mp4", 64)  # 1 frame per second of an 8 fps second
    assert positions == [0]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(Exception, match="video missing or empty"):
        sampled_frames(empty, 64)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    with pytest.raises(Exception, match="cannot decode video") as info:
        sampled_frames(broken, 64)
    assert type(info.value).__name__ == "MediaError"


@pytest.mark.parametrize("max_frames, framerate", [(64, 1), (8, 1), (64, 5)])
def test_chat_univi_keeps_only_the_sampled_frames_of_a_long_clip(tmp_path, monkeypatch, max_frames, framerate):
    path = write_long_video(tmp_path / "long.mp4")  # 30 s, 750 frames
    expected, expected_positions = full_decode_reference(path, max_frames, framerate)
    converted = []
    real_rgb = chat_univi._rgb
    monkeypatch.setattr(chat_univi, "_rgb", lambda frame: converted.append(1) or real_rgb(frame))
    frames, positions, fps = sampled_frames(path, max_frames, framerate)
    assert fps == pytest.approx(25.0)
    assert positions == expected_positions
    assert len(positions) == {(64, 1): 30, (8, 1): 8, (64, 5): 64}[(max_frames, framerate)]
    assert len(converted) == len(positions)  # only the sampled frames become arrays
    assert len(frames) == len(expected) and all(np.array_equal(a, b) for a, b in zip(frames, expected))
    # prepare (the image processor) is applied as each frame is kept
    prepared, _, _ = sampled_frames(path, max_frames, framerate, prepare=lambda rgb: rgb.mean())
    assert prepared == [f.mean() for f in expected]


def test_chat_univi_absent_gives_install_instructions(tmp_path):
    if ChatUniViAdapter.status() == "ready":
        pytest.skip("Chat-UniVi is installed here")
    assert "needs the Chat-UniVi repository installed" in ChatUniViAdapter.status()
    adapter = make_adapter("chat-univi", "path=Chat-UniVi/Chat-UniVi")
    assert adapter.model_id() == "chat-univi-Chat-UniVi"
    with pytest.raises(UserError, match="needs the Chat-UniVi code, which is not on PyPI: git clone "
                                        "https://github.com/PKU-YuanGroup/Chat-UniVi"):
        adapter.answer([Sample(name="a", task="t", question="q")])


def test_chat_univi_runs_without_cuda(fake_chat_univi, tmp_path, monkeypatch):
    """Their loader sends the vision tower to CUDA: without CUDA the tower is loaded and moved with the model."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = make_task_folder(tmp_path / "data", "mer2023", n=3)
    adapter = make_adapter("chat-univi", "path=/models/Chat-UniVi,video_framerate=8,device=auto")
    samples = samples_of(folder, 3)
    samples[2].video.write_bytes(b"")
    out = adapter.answer(samples)
    assert builder_calls() == [("/models/Chat-UniVi", None, "unibench-plain")]
    model = adapter._m["model"]
    assert model.device == "cpu" and model.dtype == torch.float32 and model.tower.device == "cpu"
    assert model.tower.is_loaded and model.vocab == 2
    assert out[:2] == ["answer 7 8", "answer 7 8"]  # 8 frames each (8 fps clip, 8 frames per second)
    assert [tuple(images.shape) for images in model.images] == [(8, 3, 32, 32)] * 2
    first = model.images[0]
    assert [float(first[i].mean()) for i in range(8)] == pytest.approx([frame_value(i) for i in range(8)], abs=6)
    prompt = sys.modules["ChatUniVi.mm_utils"].PROMPTS[0]
    assert "<image>" * 8 + f"\nThe subtitle of this video is: {SUBTITLES[0]}" in prompt
    assert type(out[2]).__name__ == "MediaError" and "video missing or empty" in str(out[2])
    adapter.answer(samples[:1])
    assert len(builder_calls()) == 1

    # a failure of the image processor is the model's, not the file's
    def broken(*args, **kwargs):
        raise ValueError("mean must have 3 elements")

    monkeypatch.setattr(adapter._m["processor"], "preprocess", broken)
    (error,) = adapter.answer(samples[:1])
    assert type(error).__name__ == "ValueError"


def test_chat_univi_with_cuda_keeps_their_loader(fake_chat_univi, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    folder = make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("chat-univi", "path=/models/Chat-UniVi,device=cpu")
    assert adapter.answer(samples_of(folder, 1)) == ["answer 7 1"]
    assert builder_calls() == [("/models/Chat-UniVi", None, "ChatUniVi")]
    assert adapter._m["model"].tower.device == "cpu"  # moved back with the model


def test_chat_univi_model_base_without_cuda_is_one_line_once(fake_chat_univi, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("chat-univi", "path=/models/lora,model_base=/models/vicuna-7b")
    for _ in range(2):
        with pytest.raises(UserError, match="model_base=/models/vicuna-7b needs a CUDA GPU"):
            adapter.answer(samples_of(folder, 1))
    assert builder_calls() == []


def test_chat_univi_load_failure_stops_the_run_once(fake_chat_univi, capsys, tmp_path, tiny_lexicon_dir,
                                                    monkeypatch):
    monkeypatch.setenv("FAKE_CHATUNIVI_LOAD_ERROR", "1")
    folder = make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("chat-univi", "path=/models/missing,device=cpu")
    for _ in range(2):
        with pytest.raises(UserError, match="chat-univi: loading the model from /models/missing failed \\(OSError: "):
            adapter.answer(samples_of(folder, 1))
    assert len(builder_calls()) == 1

    make_task_folder(tmp_path / "data2", "mer2023", n=4)
    rc, _, err = run_cli(capsys, tmp_path / "data2", tmp_path / "out", tiny_lexicon_dir, "chat-univi",
                         "path=/models/missing,device=cpu")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: chat-univi: loading the model from /models/missing failed (OSError: ")
    assert len(builder_calls()) == 2  # once for the whole run
