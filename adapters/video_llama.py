"""`video-llama`: the published Video-LLaMA baseline, driven through its own code.

Video-LLaMA is not on PyPI, and its ``requirement.txt`` pins neither torch
nor torchaudio (nor ffmpeg): installing from it gets the newest torch, which
no torchaudio matches. The environment that works is the one its
``environment.yml`` pins (there for conda, python 3.9); this harness needs
python >= 3.10, for which every one of those pins has wheels:

    git clone https://github.com/DAMO-NLP-SG/Video-LLaMA
    conda create -n videollama python=3.10 && conda activate videollama
    pip install torch==1.12.1+cu116 torchvision==0.13.1+cu116 torchaudio==0.12.1 \\
        --extra-index-url https://download.pytorch.org/whl/cu116
    pip install transformers==4.28.0 tokenizers==0.13.2 huggingface-hub==0.13.4 accelerate==0.16.0 \\
        timm==0.6.13 decord==0.6.0 omegaconf==2.3.0 iopath==0.1.10 pytorchvideo==0.1.5 webdataset==0.2.48 \\
        opencv-python==4.7.0.72 einops ftfy sentencepiece "numpy<2"
    pip install -e <mer-unibench>
    # edit Video-LLaMA/eval_configs/video_llama_eval_withaudio.yaml: llama_model, ckpt, ckpt_2,
    # imagebind_ckpt_path (the shipped file lists several llama_model choices on one line: keep one)
    PYTHONPATH=$PWD/Video-LLaMA run_bench --model video-llama \\
        --model-args cfg_path=Video-LLaMA/eval_configs/video_llama_eval_withaudio.yaml,audio=true --task mer2023 ...

No ffmpeg is needed: decord's wheel carries its own, and the audio comes from
the task's .wav. For CPU only, use the ``+cpu`` builds and the ``whl/cpu``
index. torch 1.12.1 is built with CUDA 11.6, older than Hopper GPUs (H100,
H200): there a newer torch is needed, with the torchvision and torchaudio of
the same release (an environment upstream never tested).

Per sample, as the authors' demo does: a fresh conversation (``vicuna`` ->
``default_conversation``, ``llama_v2`` -> ``conv_llava_llama_2``), the video
read by their loader (8 uniform frames, 224x224), their visual processor and
Q-Former encoding, the user text (subtitle + question) joined to the video
message, then ``Chat.answer``. With ``audio=true`` the task's own .wav is
encoded (the demo would extract one from the video with ffmpeg and write it
beside the video; we never write into the dataset) and the demo's
audio-visual message is used verbatim. The steps of the demo's
``Chat.upload_video*`` are taken one by one so that only reading the files is
a media error; an error while encoding (model, configuration, CUDA, dtype)
is a model error, and three of them before any success stop the run.

Checked once, at the first sample: the eval config (it must exist and parse,
with ``llama_model`` and ``ckpt``, and for ``audio=true`` the audio branch,
``ckpt_2`` and the ImageBind checkpoint), that their audio loader reads a
valid WAV here (a torchaudio that does not match torch fails every file), and
the model build. A failure there stops the run with one line. On CPU,
``vit_precision`` is set to ``fp32`` (the config's ``fp16`` EVA ViT cannot run
there; a note says so) and ``low_resource`` (8-bit LLaMA) is refused.
"""
from __future__ import annotations

import argparse
import math
import re
import struct
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import UserError, log
from unibench.runtime import torch_device_dtype, user_text
from unibench.media import MediaError, existing_file

REPO_URL = "https://github.com/DAMO-NLP-SG/Video-LLaMA"
# What its environment.yml pins (its requirement.txt pins none of torch, torchaudio, decord).
UPSTREAM_PINS = "torch 1.12.1, torchvision 0.13.1, torchaudio 0.12.1, transformers 4.28.0, decord 0.6.0"
INSTALL = (f"model 'video-llama' needs the Video-LLaMA code, which is not on PyPI: git clone {REPO_URL}; "
           f"install what its environment.yml pins, in a python 3.10 environment: {UPSTREAM_PINS} "
           "(commands in the README); then run with PYTHONPATH=<that folder> and "
           "--model-args cfg_path=<folder>/eval_configs/video_llama_eval_withaudio.yaml")
# The demo's audio-visual user message, verbatim: the source's backslash line
# continuations leave their 16-space indents inside the string.
AUDIO_VIDEO_MESSAGE = ("Close your eyes, open your ears and you imagine only based on the sound that: <ImageHere>. "
                       + " " * 16 + "Close your ears, open your eyes and you see that <Video><ImageHere></Video>.  "
                       + " " * 16 + "Now answer my question based on what you have just seen and heard.")
CONVERSATIONS = {"vicuna": "default_conversation", "llama_v2": "conv_llava_llama_2"}
IMAGEBIND_FILE = "imagebind_huge.pth"  # what their model loads from imagebind_ckpt_path
IMAGEBIND_DEFAULT = "/mnt/workspace/ckpt"  # their from_config default for imagebind_ckpt_path
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def gpu_index(device: str) -> int:
    """``cuda:N`` -> N (the demo's ``--gpu-id``); 0 otherwise."""
    _, _, index = str(device).partition(":")
    return int(index) if index.isdigit() else 0


def _get(node: Any, key: str, default: Any = None) -> Any:
    """A key of an (OmegaConf) config node; ``default`` when absent or unreadable."""
    try:
        value = node.get(key, default)
    except Exception:  # noqa: BLE001 - e.g. omegaconf's missing-value errors
        return default
    return default if value is None else value


def config_problems(model_cfg: Any, audio: bool) -> list[str]:
    """What in the model section of an eval config would make loading or every sample fail."""
    problems = []
    if not _get(model_cfg, "arch"):
        problems.append("model.arch is not set")
    llama = str(_get(model_cfg, "llama_model", "")).strip()
    if not llama:
        problems.append("model.llama_model is not set")
    elif not Path(llama).expanduser().exists() and not _HUB_ID.match(llama):
        problems.append(f"model.llama_model: folder not found: {llama}")
    ckpt = str(_get(model_cfg, "ckpt", "")).strip()
    if not ckpt:
        problems.append("model.ckpt is not set (the video branch checkpoint; without it that branch stays random)")
    elif not Path(ckpt).expanduser().is_file():
        problems.append(f"model.ckpt: file not found: {ckpt}")
    ckpt_2 = str(_get(model_cfg, "ckpt_2", "")).strip()
    if ckpt_2 and not Path(ckpt_2).expanduser().is_file():
        problems.append(f"model.ckpt_2: file not found: {ckpt_2}")
    equip_audio = bool(_get(model_cfg, "equip_audio_branch", True))  # their default: True
    if audio and not equip_audio:
        problems.append("audio=true needs model.equip_audio_branch: True (video_llama_eval_withaudio.yaml)")
    if audio and not ckpt_2:
        problems.append("audio=true needs model.ckpt_2 (the audio branch checkpoint)")
    if equip_audio:
        imagebind = Path(str(_get(model_cfg, "imagebind_ckpt_path", IMAGEBIND_DEFAULT))).expanduser() / IMAGEBIND_FILE
        if not imagebind.is_file():
            problems.append(f"model.imagebind_ckpt_path: {imagebind} not found (the audio branch loads it)")
    return problems


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def write_probe_wav(path: Path, seconds: float = 2.0, sample_rate: int = 16000) -> Path:
    """A valid 16 kHz mono 16-bit WAV (a 440 Hz tone), written with the standard library."""
    n = int(seconds * sample_rate)
    data = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / sample_rate))) for i in range(n))
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(data)
    return path


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("video_llama") is not None


# ---------------------------------------------------------------- the adapter

@register_adapter
class VideoLlamaAdapter(Adapter):
    description = "Video-LLaMA through its own repository (not on PyPI; audio=true adds its audio branch)"
    inputs = ("video", "subtitle")
    Options = VideoLlamaOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        conversation_name(self.options.model_type)
        self.inputs = ("video", "audio", "subtitle") if self.options.audio else ("video", "subtitle")
        self._chat: Any = None
        self._template: Any = None
        self._load_video: Any = None
        self._load_audio: Any = None
        self._device = "cpu"
        self._load_error: UserError | None = None

    @classmethod
    def status(cls) -> str:
        return "ready" if is_installed() else f"needs the Video-LLaMA repository on PYTHONPATH ({REPO_URL})"

    def _load(self) -> None:
        """Load once; a failure is a UserError (one line, the run stops) and is remembered, never retried."""
        if self._load_error is not None:
            raise self._load_error
        try:
            self._load_model()
        except UserError as exc:
            self._load_error = exc
            raise

    def _load_model(self) -> None:
        opts = self.options
        if not is_installed():
            raise UserError(INSTALL)
        cfg_path = Path(opts.cfg_path)
        if not cfg_path.is_file():
            raise UserError(f"video-llama: eval config not found: {cfg_path} (--model-args cfg_path=...)")
        import importlib

        try:
            conv_mod = importlib.import_module("video_llama.conversation.conversation_video")
            config_mod = importlib.import_module("video_llama.common.config")
            registry = importlib.import_module("video_llama.common.registry").registry
            for sub in ("datasets.builders", "models", "processors", "runners", "tasks"):
                importlib.import_module(f"video_llama.{sub}")  # the demo imports these to fill the registry
            load_video = importlib.import_module("video_llama.processors.video_processor").load_video
            load_audio = importlib.import_module("video_llama.models.ImageBind.data").load_and_transform_audio_data
        except Exception as exc:  # noqa: BLE001 - a missing or mismatched package
            raise UserError(f"video-llama: importing the Video-LLaMA code failed ({_error_line(exc)}); "
                            f"it needs what its environment.yml pins: {UPSTREAM_PINS}") from None
        self._device, _ = torch_device_dtype(opts.device, "float32")
        on_gpu = self._device.startswith("cuda")
        try:
            cfg = config_mod.Config(config_args(opts, gpu_index(self._device)))
            model_cfg = cfg.model_cfg
            vis_cfg = cfg.datasets_cfg.webvid.vis_processor.train
            vis_name = vis_cfg.name
        except Exception as exc:  # noqa: BLE001 - YAML or missing sections
            raise UserError(f"video-llama: cannot use the eval config {cfg_path} ({_error_line(exc)}); start from "
                            "the repository's eval_configs/*.yaml (model: and datasets: webvid: vis_processor: "
                            "train:) with your paths: one llama_model (the shipped files list several on one line), "
                            "ckpt, ckpt_2, imagebind_ckpt_path") from None
        problems = config_problems(model_cfg, opts.audio)
        if _get(model_cfg, "low_resource", False) and not on_gpu:
            problems.append("model.low_resource: True loads LLaMA in 8 bit on a GPU; set it False on CPU")
        if problems:
            raise UserError(f"video-llama: eval config {cfg_path}: " + "; ".join(problems))
        if on_gpu:
            model_cfg.device_8bit = gpu_index(self._device)  # as the demo (--gpu-id)
        elif str(_get(model_cfg, "vit_precision", "fp16")) != "fp32":  # their default: fp16
            precision = _get(model_cfg, "vit_precision", "fp16")
            model_cfg.vit_precision = "fp32"
            log(f"note: video-llama on {self._device}: vit_precision {precision} -> fp32 (the EVA ViT in fp16 "
                "does not run on CPU)")
        if opts.audio:
            self._probe_audio_loader(load_audio)
        try:
            model = registry.get_model_class(model_cfg.arch).from_config(model_cfg).to(self._device).eval()
            vis_processor = registry.get_processor_class(vis_name).from_config(vis_cfg)
            self._chat = conv_mod.Chat(model, vis_processor, device=self._device)
        except Exception as exc:  # noqa: BLE001 - weights, memory, CUDA: nothing a retry per sample fixes
            raise UserError(f"video-llama: building the model from {cfg_path} failed ({_error_line(exc)})") from None
        self._template = getattr(conv_mod, conversation_name(opts.model_type))
        self._load_video, self._load_audio = load_video, load_audio

    @staticmethod
    def _probe_audio_loader(load_audio: Any) -> None:
        """Their audio loader on a valid WAV: when it fails here, it is the environment, not the task's files."""
        with tempfile.TemporaryDirectory() as tmp:
            probe = write_probe_wav(Path(tmp) / "probe.wav")
            try:
                load_audio([str(probe)], "cpu", clips_per_video=8)
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"video-llama: its audio loader cannot read a valid 16 kHz WAV here "
                                f"({_error_line(exc)}); torchaudio must match torch, as its environment.yml pins: "
                                f"{UPSTREAM_PINS}") from None

    def _read_media(self, sample: Sample) -> tuple[Any, str, Any]:
        """The sample's frames (and audio) read by Video-LLaMA's own loaders: the only media errors."""
        video_path = existing_file(sample.video, "video", "video not found")
        try:
            frames, msg = self._load_video(video_path=str(video_path), n_frms=8, height=224, width=224,
                                           sampling="uniform", return_msg=True)
        except Exception as exc:  # noqa: BLE001 - decord raises many types on a broken file
            raise MediaError(f"{video_path}: Video-LLaMA could not read the video ({_error_line(exc)})") from None
        audio = None
        if self.options.audio:
            audio_path = existing_file(sample.audio, "audio", "audio not found")
            try:
                audio = self._load_audio([str(audio_path)], "cpu", clips_per_video=8)
            except Exception as exc:  # noqa: BLE001 - the loader reads WAVs here (checked at load)
                raise MediaError(f"{audio_path}: Video-LLaMA could not read the audio ({_error_line(exc)})") from None
        return frames, msg, audio

    def _encode(self, frames: Any, msg: str, audio: Any, conv: Any, img_list: list) -> None:
        """The rest of the demo's ``Chat.upload_video_without_audio`` / audio-visual upload."""
        chat = self._chat
        video = chat.vis_processor.transform(frames).unsqueeze(0).to(self._device)
        if audio is None:
            image_emb, _ = chat.model.encode_videoQformer_visual(video)
            img_list.append(image_emb)
            conv.append_message(conv.roles[0], "<Video><ImageHere></Video> " + msg)
            return
        audio = audio.to(self._device)
        image_emb, _ = chat.model.encode_videoQformer_visual(video)
        audio_emb, _ = chat.model.encode_audioQformer(audio)
        img_list += [audio_emb, image_emb]
        conv.system = ""
        conv.append_message(conv.roles[0], AUDIO_VIDEO_MESSAGE)

    def _answer_one(self, sample: Sample, torch: Any) -> str:
        torch.manual_seed(self.options.seed)
        frames, msg, audio = self._read_media(sample)  # MediaError: a media failure
        conv = self._template.copy()
        conv.system = ""  # the demo clears it for videos
        img_list: list = []
        self._encode(frames, msg, audio, conv, img_list)  # anything raised from here on is a model error
        self._chat.ask(user_text(sample), conv)
        return self._chat.answer(conv=conv, img_list=img_list, **generation_kwargs(self.options))[0]

    def answer(self, samples: list[Sample]) -> list[Any]:
        if self._chat is None:
            self._load()
        import torch  # the repository needs it: present once _load has passed

        out: list[Any] = []
        for sample in samples:
            try:
                out.append(self._answer_one(sample, torch))
            except Exception as exc:  # noqa: BLE001 - this sample only: MediaError, or a model error that counts
                out.append(exc)
        return out
