"""`video-llama`: the published Video-LLaMA baseline, driven through its own code.

Video-LLaMA is not on PyPI. Install it once, then point the adapter at an eval config:

    git clone https://github.com/DAMO-NLP-SG/Video-LLaMA && cd Video-LLaMA
    pip install -r requirement.txt      # its own pins (torch, decord, ffmpeg-python, ...)
    # edit eval_configs/video_llama_eval_withaudio.yaml: llama_model, ckpt, ckpt_2 paths
    PYTHONPATH=$PWD run_bench --model video-llama \\
        --model-args cfg_path=eval_configs/video_llama_eval_withaudio.yaml,audio=true --task mer2023 ...

Per sample, as the authors' demo does: a fresh conversation (``vicuna`` ->
``default_conversation``, ``llama_v2`` -> ``conv_llava_llama_2``), the video
uploaded through ``Chat`` (8 uniform frames, 224x224, their loader), the user
text (subtitle + question) joined to the video message, then ``Chat.answer``.
With ``audio=true`` the task's own .wav is encoded (the demo would extract one
from the video with ffmpeg and write it beside the video; we never write into
the dataset) and the demo's audio-visual message is used verbatim.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import UserError
from unibench.inference import torch_device_dtype, user_text
from unibench.media import MediaError

REPO_URL = "https://github.com/DAMO-NLP-SG/Video-LLaMA"
INSTALL = (f"model 'video-llama' needs the Video-LLaMA code, which is not on PyPI: git clone {REPO_URL}; "
           "pip install -r Video-LLaMA/requirement.txt; then run with PYTHONPATH=<that folder> and "
           "--model-args cfg_path=<folder>/eval_configs/video_llama_eval_withaudio.yaml")
# The demo's audio-visual user message, verbatim: the source's backslash line
# continuations leave their 16-space indents inside the string.
AUDIO_VIDEO_MESSAGE = ("Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>. "
                       + " " * 16 + "Close your ears, open your eyes and you see that <Video><ImageHere></Video>.  "
                       + " " * 16 + "Now answer my question based on what you have just seen and heard.")
CONVERSATIONS = {"vicuna": "default_conversation", "llama_v2": "conv_llava_llama_2"}


@dataclass
class VideoLlamaOptions:
    cfg_path: Path                 # the repo's eval config (llama_model / ckpt paths inside)
    name: str = ""                 # leaderboard name (default: video-llama)
    model_type: str = "vicuna"     # vicuna | llama_v2 (picks the conversation template, as the demo)
    audio: bool = False            # the audio branch too (the withaudio config)
    device: str = "auto"
    num_beams: int = 1
    temperature: float = 1.0       # the demo samples (do_sample=True inside Chat.answer)
    max_new_tokens: int = 300
    max_length: int = 2000
    seed: int = 42


# ---------------------------------------------------------------- request assembly (plain functions)

def conversation_name(model_type: str) -> str:
    if model_type not in CONVERSATIONS:
        raise UserError(f"video-llama: model_type must be one of {', '.join(CONVERSATIONS)}, got '{model_type}'")
    return CONVERSATIONS[model_type]


def config_args(opts: VideoLlamaOptions, gpu_id: int = 0) -> argparse.Namespace:
    """What the repo's ``Config(args)`` reads (the demo's argparse namespace)."""
    return argparse.Namespace(cfg_path=str(opts.cfg_path), gpu_id=gpu_id, model_type=opts.model_type,
                              options=None, cfg_options=None)


def generation_kwargs(opts: VideoLlamaOptions) -> dict[str, Any]:
    return {"num_beams": opts.num_beams, "temperature": opts.temperature,
            "max_new_tokens": opts.max_new_tokens, "max_length": opts.max_length}


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("video_llama") is not None


# ---------------------------------------------------------------- the adapter

@register_adapter
class VideoLlamaAdapter(Adapter):
    name = "video-llama"
    description = "Video-LLaMA through its own repository (not on PyPI; audio=true adds its audio branch)"
    inputs = ("video", "subtitle")
    Options = VideoLlamaOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        conversation_name(self.options.model_type)
        self.inputs = ("video", "audio", "subtitle") if self.options.audio else ("video", "subtitle")
        self._chat: Any = None
        self._template: Any = None
        self._device = "cpu"

    @classmethod
    def status(cls) -> str:
        return "ready" if is_installed() else f"needs the Video-LLaMA repository on PYTHONPATH ({REPO_URL})"

    def _load(self) -> None:
        if not is_installed():
            raise UserError(INSTALL)
        if not Path(self.options.cfg_path).is_file():
            raise UserError(f"video-llama: eval config not found: {self.options.cfg_path} (--model-args cfg_path=...)")
        import importlib

        conv_mod = importlib.import_module("video_llama.conversation.conversation_video")
        config_mod = importlib.import_module("video_llama.common.config")
        registry = importlib.import_module("video_llama.common.registry").registry
        for sub in ("datasets.builders", "models", "processors", "runners", "tasks"):
            importlib.import_module(f"video_llama.{sub}")  # the demo imports these to fill the registry
        self._device, _ = torch_device_dtype(self.options.device, "float32")
        cfg = config_mod.Config(config_args(self.options))
        model_cfg = cfg.model_cfg
        model = registry.get_model_class(model_cfg.arch).from_config(model_cfg).to(self._device).eval()
        vis_cfg = cfg.datasets_cfg.webvid.vis_processor.train
        vis_processor = registry.get_processor_class(vis_cfg.name).from_config(vis_cfg)
        self._chat = conv_mod.Chat(model, vis_processor, device=self._device)
        self._template = getattr(conv_mod, conversation_name(self.options.model_type))

    def _upload_audio_video(self, sample: Sample, conv: Any, img_list: list) -> None:
        """The demo's audio-visual upload, reading the task's .wav instead of extracting one."""
        import importlib

        load_video = importlib.import_module("video_llama.processors.video_processor").load_video
        load_audio = importlib.import_module("video_llama.models.ImageBind.data").load_and_transform_audio_data
        chat = self._chat
        video, _ = load_video(video_path=str(sample.video), n_frms=8, height=224, width=224,
                              sampling="uniform", return_msg=True)
        video = chat.vis_processor.transform(video).unsqueeze(0).to(self._device)
        audio = load_audio([str(sample.audio)], "cpu", clips_per_video=8).to(self._device)
        image_emb, _ = chat.model.encode_videoQformer_visual(video)
        audio_emb, _ = chat.model.encode_audioQformer(audio)
        img_list += [audio_emb, image_emb]
        conv.system = ""
        conv.append_message(conv.roles[0], AUDIO_VIDEO_MESSAGE)

    def answer(self, samples: list[Sample]) -> list[Any]:
        if self._chat is None:
            self._load()
        import torch  # the repository needs it: present once _load has passed
        out: list[Any] = []
        for sample in samples:
            torch.manual_seed(self.options.seed)
            conv = self._template.copy()
            conv.system = ""  # the demo clears it for videos
            img_list: list = []
            try:
                if self.options.audio:
                    self._upload_audio_video(sample, conv, img_list)
                else:
                    self._chat.upload_video_without_audio(str(sample.video), conv, img_list)
            except Exception as exc:  # their loaders raise many types on a broken file
                out.append(MediaError(f"{sample.video}: Video-LLaMA could not load it ({exc})"))
                continue
            self._chat.ask(user_text(sample), conv)
            out.append(self._chat.answer(conv=conv, img_list=img_list, **generation_kwargs(self.options))[0])
        return out
