"""Shared pieces of the transformers-native multimodal adapters.

Each model file (``hf_video_llava.py``, ``hf_qwen2_audio.py``, ...) is a few
class attributes on :class:`HFAdapter`: which transformers class loads the
checkpoint, which inputs it feeds, how the user turn is laid out. This module
does the rest: options, a status check that imports nothing heavy, device and
dtype resolution, loading, the chat prompt, media loading, batched greedy
generation, and request assembly for vLLM (``backend=vllm``).

torch / transformers / vllm are imported inside functions only, so
``run_bench --list-models`` stays fast.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from unibench.adapters.base import Adapter, Sample
from unibench.errors import MissingExtraError, UserError
from unibench.runtime import requirement_status, user_text
from unibench.runtime import resolve_device as _resolve_device
from unibench.runtime import resolve_dtype as _resolve_dtype
from unibench.media import load_audio, load_frames, uniform_indices
from unibench.vllm_errors import sizing_hint, start_problem

BACKENDS = ("transformers", "vllm")


@dataclass
class HFOptions:
    """``--model-args`` of every transformers-native adapter."""

    path: str                       # local checkpoint folder or hub id (required)
    name: str = ""                  # model name in results (default: the adapter name)
    device: str = "auto"            # auto (GPUs if any, else CPU) | cpu | cuda | cuda:1 | mps
    dtype: str = "auto"             # auto (bfloat16 on GPU, float32 on CPU) | float32 | float16 | bfloat16
    max_new_tokens: int = 512
    num_frames: int = 8             # frames sampled uniformly from each video
    do_sample: bool = False         # greedy by default (deterministic answers)
    temperature: float = 1.0        # only with do_sample=true
    top_p: float = 1.0              # only with do_sample=true
    seed: int = 0
    backend: str = "transformers"   # transformers | vllm
    tensor_parallel_size: int = 1   # vllm only
    gpu_memory_utilization: float = 0.9  # vllm only
    max_model_len: int | None = None  # vllm only: context length the KV cache must hold (None = the model's)


# ---------------------------------------------------------------- subtitle + question, status

def request_text(sample: Sample, medium: str = "video") -> str:
    """The user's words: the subtitle (when the runner passed it separately), then the question (spec §2)."""
    return user_text(sample, lead=f"The subtitle of this {medium} is: ")


def hf_status(cls: type["HFAdapter"]) -> str:
    """'ready', or one line saying what is missing; imports neither torch nor transformers' models."""
    status = requirement_status(("torch", "transformers"), (cls.model_class, *cls.extra_classes))
    if status == "ready" and "video" in cls.inputs:
        # transformers' video processors are torchvision code; without it loading fails later
        status = requirement_status((("torchvision", "torchvision pillow"), ("PIL", "pillow")))
    return status


# ---------------------------------------------------------------- device, dtype, loading

def resolve_device(value: str) -> str:
    """'auto' -> 'auto' when a GPU is present (spread with device_map), else 'cpu'; others as given."""
    return _resolve_device(value, spread=True, what="--model-args device")


def resolve_dtype(value: str, device: str) -> Any:
    return _resolve_dtype(value, device, what="--model-args dtype")


def check_path(path: str, adapter: str, model_types: tuple[str, ...], example: str) -> None:
    """A missing local folder or a checkpoint of another architecture is a user error, said in one line."""
    p = Path(path).expanduser()
    if p.exists():
        config = p / "config.json"
        if not config.is_file():
            raise UserError(f"--model-args path={path}: no config.json there (not a transformers checkpoint)")
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError) as exc:
            raise UserError(f"{config}: cannot read ({exc})") from None
        if model_types and model_type not in model_types:
            raise UserError(f"--model-args path={path}: holds a '{model_type}' model; model '{adapter}' needs "
                            f"{' or '.join(repr(t) for t in model_types)} (e.g. {example})")
        return
    looks_like_hub_id = path.count("/") == 1 and not path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UserError(f"--model-args path={path}: folder not found (give a local checkpoint folder "
                        f"or a hub id such as {example})")


def require_hf(adapter: str, video: bool = False) -> None:
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(package, "hf", f"model '{adapter}'")
    if video:
        try:  # a torchvision built for another torch fails here with RuntimeError, not ImportError
            import PIL  # noqa: F401
            import torchvision.transforms.v2.functional  # noqa: F401
        except Exception as exc:
            raise UserError(f"model '{adapter}' reads video through transformers' video processors, which need "
                            f"torchvision and pillow matching your torch (pip install torchvision pillow): "
                            f"{type(exc).__name__}: {_first_line(exc)}") from None


def load_processor(path: str) -> Any:
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, ImportError) as exc:
        raise UserError(f"cannot load the processor of {path}: {_first_line(exc)}") from None
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"  # batched generation continues every row at its end
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
    return processor


def load_model(class_name: str, path: str, options: HFOptions, **kwargs: Any) -> Any:
    import transformers

    cls = getattr(transformers, class_name, None)
    if cls is None:
        raise UserError(f"transformers {transformers.__version__} lacks {class_name}: upgrade transformers")
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if device == "auto":
        if importlib.util.find_spec("accelerate") is None:
            raise MissingExtraError("accelerate", "hf", "device=auto on GPUs")
        kwargs["device_map"] = "auto"
    try:
        model = cls.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UserError(f"cannot load {class_name} from {path}: {_first_line(exc)}") from None
    if device != "auto":
        model = model.to(device)
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- media

def video_metadata(path: Path, n: int) -> dict[str, Any] | None:
    """Native fps and frame count of a video, with the indices ``load_frames`` samples.

    Models with time-aware position ids (Qwen) need the sampled frame rate; None when unknown.
    """
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            total = int(stream.frames or 0)
    except Exception:  # the frames loaded fine; metadata is a refinement
        return None
    if not fps or total <= 0:
        return None
    return {"total_num_frames": total, "fps": fps, "duration": total / fps,
            "frames_indices": uniform_indices(total, n)}


@dataclass
class SampleMedia:
    """What one sample feeds the model."""

    text: str
    video: np.ndarray | None = None          # uint8 [n, H, W, 3]
    audio: np.ndarray | None = None          # float32 mono at sample_rate
    sample_rate: int = 16000
    video_meta: dict[str, Any] | None = None

    @property
    def sampled_fps(self) -> float | None:
        """Frames per second of the sampled frames (None when the video's rate is unknown)."""
        meta = self.video_meta
        if not meta:
            return None
        return len(meta["frames_indices"]) / meta["total_num_frames"] * meta["fps"]


# ---------------------------------------------------------------- the adapter

class HFAdapter(Adapter):
    """Base of the transformers-native adapters. Subclasses set the class attributes below."""

    Options: ClassVar[type] = HFOptions
    # engine sizing never changes a greedy answer: kept out of the resume key
    resume_ignore: ClassVar[tuple[str, ...]] = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len")
    model_class: ClassVar[str] = ""                 # transformers class that loads the checkpoint
    extra_classes: ClassVar[tuple[str, ...]] = ()   # further classes the status check requires
    model_types: ClassVar[tuple[str, ...]] = ()     # accepted config.json model_type values
    example: ClassVar[str] = ""                     # a hub id, for messages
    medium: ClassVar[str] = "video"                 # 'video' or 'audio' in the subtitle prefix
    # How the sampled frames' timing reaches time-aware models (Qwen): '' (not at all), 'metadata'
    # (video_metadata to the processor), 'second_per_grid' (per-video video_second_per_grid in the inputs)
    video_timing: ClassVar[str] = ""
    vllm_supported: ClassVar[bool] = False
    # Oldest vLLM release that serves this model the way vllm_request feeds it (see VLLM_FLOORS in the README)
    vllm_min_version: ClassVar[str] = ""
    vllm_min_reason: ClassVar[str] = ""
    # vLLM's processor for this model refuses a bare frame array: send (frames, metadata)
    vllm_video_metadata: ClassVar[bool] = False
    # Fallback prompt when a checkpoint ships no chat template: {media} = placeholders, {text} = request.
    fallback_template: ClassVar[str] = "USER: {media}\n{text} ASSISTANT:"
    media_placeholders: ClassVar[dict[str, str]] = {"video": "<video>", "audio": "<audio>"}

    def __init__(self, options: Any = None):
        super().__init__(options)
        opts = self.options
        if opts.backend not in BACKENDS:
            raise UserError(f"--model-args backend={opts.backend}: expected {' or '.join(BACKENDS)}")
        if opts.backend == "vllm" and not self.vllm_supported:
            raise UserError(f"model '{self.name}' has no vLLM support; use backend=transformers")
        if opts.num_frames < 1:
            raise UserError(f"--model-args num_frames={opts.num_frames}: must be at least 1")
        if opts.max_new_tokens < 1:
            raise UserError(f"--model-args max_new_tokens={opts.max_new_tokens}: must be at least 1")
        if opts.max_model_len is not None and opts.max_model_len < 1:
            raise UserError(f"--model-args max_model_len={opts.max_model_len}: must be at least 1")
        self._model: Any = None
        self._processor: Any = None
        self._engine: Any = None
        # vLLM schedules a large batch itself; transformers batches pad every row to the longest
        self.default_batch_size = 32 if opts.backend == "vllm" else 1

    @classmethod
    def status(cls) -> str:
        return hf_status(cls)

    # what a sample feeds ----------------------------------------------------
    def sample_media(self, sample: Sample) -> SampleMedia:
        """Load the sample's frames / audio (MediaError on bad files: a per-sample failure)."""
        media = SampleMedia(text=request_text(sample, self.medium))
        if "video" in self.inputs:
            media.video = load_frames(sample.video, self.options.num_frames)
            if self.video_timing and sample.video is not None:
                media.video_meta = video_metadata(Path(sample.video), self.options.num_frames)
        if "audio" in self.inputs:
            media.sample_rate = self.sampling_rate()
            media.audio = load_audio(sample.audio, media.sample_rate)
        return media

    def sampling_rate(self) -> int:
        extractor = getattr(self._processor, "feature_extractor", None)
        return int(getattr(extractor, "sampling_rate", 16000) or 16000)

    def content(self, media: SampleMedia) -> list[dict[str, Any]]:
        """The user turn: media placeholders first, then the text."""
        parts: list[dict[str, Any]] = []
        if media.video is not None:
            parts.append({"type": "video"})
        if media.audio is not None:
            parts.append({"type": "audio"})
        parts.append({"type": "text", "text": media.text})
        return parts

    def prompt(self, media: SampleMedia) -> str:
        """The full prompt string, through the checkpoint's chat template when it has one."""
        return chat_prompt(self._processor, self.content(media), self.fallback_template,
                           self.media_placeholders)

    def processor_inputs(self, prompts: list[str], batch: list[SampleMedia]) -> Any:
        kwargs: dict[str, Any] = {"text": prompts, "padding": True, "return_tensors": "pt"}
        timed = all(m.video_meta for m in batch)
        if any(m.video is not None for m in batch):
            kwargs["videos"] = [m.video for m in batch]
            if self.video_timing == "metadata" and timed:
                kwargs["video_metadata"] = [m.video_meta for m in batch]
        if any(m.audio is not None for m in batch):
            kwargs["audio"] = [m.audio for m in batch]
            kwargs["sampling_rate"] = batch[0].sample_rate
        inputs = self._processor(**kwargs)
        if self.video_timing == "second_per_grid" and timed and "video_second_per_grid" in inputs:
            # the omni processors take one fps for the whole batch; each clip has its own
            import torch

            step = self._processor.video_processor.temporal_patch_size
            inputs["video_second_per_grid"] = torch.tensor([step / m.sampled_fps for m in batch])
        return inputs

    # loading --------------------------------------------------------------
    def load(self) -> None:
        if self._processor is not None:
            return
        require_hf(self.name, video="video" in self.inputs)
        check_path(self.options.path, self.name, self.model_types, self.example)
        self._processor = load_processor(self.options.path)
        if self.options.backend == "transformers":
            self._model = self.load_model()

    def load_model(self) -> Any:
        return load_model(self.model_class, self.options.path, self.options)

    # answering --------------------------------------------------------------
    def answer(self, samples: list[Sample]) -> list[str]:
        self.load()
        batch = [self.sample_media(s) for s in samples]
        prompts = [self.prompt(m) for m in batch]
        if self.options.backend == "vllm":
            requests = [vllm_request(p, m, self.vllm_video_metadata) for p, m in zip(prompts, batch)]
            return vllm_generate(self.vllm_engine(), requests, self.options)
        inputs = self.processor_inputs(prompts, batch)
        return generate(self._model, self._processor, inputs, self.options)

    def vllm_engine(self) -> Any:
        if self._engine is None:
            self._engine = make_vllm_engine(self.options, limits={
                kind: 1 for kind in ("video", "audio") if kind in self.inputs},
                need=VLLMNeed(self.name, self.vllm_min_version, self.vllm_min_reason))
        return self._engine


# ---------------------------------------------------------------- prompt and generation

def chat_prompt(processor: Any, content: list[dict[str, Any]], fallback: str,
                placeholders: dict[str, str] | None = None) -> str:
    """One user turn rendered with the processor's chat template (generation prompt added).

    Checkpoints without a template get ``fallback`` with ``{media}`` (the
    placeholder tokens of the content's media, in order) and ``{text}``.
    """
    messages = [{"role": "user", "content": content}]
    template = getattr(processor, "chat_template", None)
    if template:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    placeholders = placeholders or {}
    media = "".join(placeholders.get(part["type"], "") for part in content if part["type"] != "text")
    text = " ".join(part["text"] for part in content if part["type"] == "text")
    return fallback.format(media=media, text=text)


def generate(model: Any, processor: Any, inputs: Any, options: HFOptions) -> list[str]:
    """Generate for a processed batch; decode only the new tokens of each row."""
    import torch

    device = getattr(model, "device", None)
    dtype = getattr(model, "dtype", None)
    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device) if device is not None else value
            if dtype is not None and torch.is_floating_point(value):
                value = value.to(dtype)  # pixel values / audio features in the model's precision
        moved[key] = value
    kwargs: dict[str, Any] = {"max_new_tokens": options.max_new_tokens, "do_sample": options.do_sample}
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p)
    else:  # the checkpoint's generation_config may carry sampling defaults: greedy means greedy
        kwargs.update(temperature=None, top_p=None, top_k=None)
    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(tokenizer, "pad_token_id", None) is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(options.seed)
    with torch.inference_mode():
        out = model.generate(**moved, **kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    new_tokens = sequences[:, moved["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [t.strip() for t in texts]


# ---------------------------------------------------------------- vLLM

# Frame rate assumed for a clip whose own rate is unknown: Qwen's processors default to 2 fps as well,
# so the transformers and vLLM paths time such clips alike.
DEFAULT_VIDEO_FPS = 2.0


def vllm_video_metadata(media: SampleMedia) -> dict[str, Any]:
    """The metadata vLLM's own video loader attaches to a clip, for frames we sampled ourselves.

    Same keys as vLLM's loaders (``vllm.multimodal.video``): fps, duration, total_num_frames,
    frames_indices, video_backend, and do_sample_frames=False because the frames are already sampled.
    Built from the frame count when the file's rate or length is unknown.
    """
    assert media.video is not None
    n = int(media.video.shape[0])
    meta = media.video_meta
    if meta and len(meta.get("frames_indices", ())) == n:
        total, fps = int(meta["total_num_frames"]), float(meta["fps"])
        indices = [int(i) for i in meta["frames_indices"]]
    else:  # no timing from the file: the sampled frames are the clip, at the default rate
        total, fps, indices = n, DEFAULT_VIDEO_FPS, list(range(n))
    return {"fps": fps, "duration": total / fps, "total_num_frames": total, "frames_indices": indices,
            "video_backend": "pyav", "do_sample_frames": False}


def vllm_request(prompt: str, media: SampleMedia, video_metadata: bool = False) -> dict[str, Any]:
    """One request for ``vllm.LLM.generate``: the templated prompt and its multi_modal_data.

    ``video_metadata``: send the video as ``(frames, metadata)`` and tell the processor not to sample
    frames again (Qwen2.5-VL in current vLLM refuses a bare frame array).
    """
    data: dict[str, Any] = {}
    request: dict[str, Any] = {"prompt": prompt}
    if media.video is not None:
        if video_metadata:
            data["video"] = (media.video, vllm_video_metadata(media))
            request["mm_processor_kwargs"] = {"do_sample_frames": False}
        else:
            data["video"] = media.video
    if media.audio is not None:
        data["audio"] = (media.audio, media.sample_rate)
    if data:
        request["multi_modal_data"] = data
    return request


def vllm_sampling(options: HFOptions) -> dict[str, Any]:
    """SamplingParams keyword arguments (greedy unless do_sample)."""
    if options.do_sample:
        return {"temperature": options.temperature, "top_p": options.top_p,
                "max_tokens": options.max_new_tokens, "seed": options.seed}
    return {"temperature": 0.0, "max_tokens": options.max_new_tokens, "seed": options.seed}


@dataclass(frozen=True)
class VLLMNeed:
    """The oldest vLLM release an adapter's vLLM path works with, and why."""

    adapter: str
    min_version: str = ""
    reason: str = ""


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.11.1rc2.dev5+gabc' -> (0, 11, 1): the numeric release, enough to compare against a floor."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):  # '1rc2': a pre-release of 1; stop here
            break
    return tuple(parts)


def installed_vllm_version(module: Any = None) -> str | None:
    """The installed vLLM's version (None when it cannot be told)."""
    from importlib import metadata

    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version:
        return version
    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return None


def check_vllm_version(need: VLLMNeed, installed: str | None) -> None:
    """One UserError line when the installed vLLM is older than the adapter needs; unknown versions pass."""
    if not need.min_version or not installed:
        return
    if version_tuple(installed) < version_tuple(need.min_version):
        why = f" ({need.reason})" if need.reason else ""
        raise UserError(f"model '{need.adapter}' with backend=vllm needs vLLM >= {need.min_version}{why}; "
                        f"installed: {installed} (pip install -U 'vllm>={need.min_version}')")


def make_vllm_engine(options: HFOptions, limits: dict[str, int], need: VLLMNeed | None = None) -> Any:
    if importlib.util.find_spec("vllm") is None:
        raise UserError("backend=vllm needs vLLM on a GPU machine: pip install 'mer-unibench[vllm]' "
                        "(or use backend=transformers)")
    import vllm

    if need is not None:
        check_vllm_version(need, installed_vllm_version(vllm))
    kwargs: dict[str, Any] = {"model": options.path, "dtype": options.dtype,
                              "tensor_parallel_size": options.tensor_parallel_size, "seed": options.seed,
                              "gpu_memory_utilization": options.gpu_memory_utilization,
                              "limit_mm_per_prompt": limits}
    if options.max_model_len:
        kwargs["max_model_len"] = options.max_model_len
    try:
        return vllm.LLM(**kwargs)
    except UserError:
        raise
    except Exception as exc:
        raise vllm_start_error(exc, options) from None


def vllm_start_error(exc: BaseException, options: HFOptions) -> UserError:
    """One line for an engine that did not start: what happened and the knobs that fix it.

    vLLM >= 0.11 starts its engine core in another process: a failure there reaches us as
    ``RuntimeError('Engine core initialization failed...')`` (the cause is in vLLM's log above); a KV
    cache too small for the context is a ``ValueError`` naming max_model_len / the KV cache.
    """
    where = f"'{options.path}'"
    text = f"{type(exc).__name__}: {exc}".lower()
    if any(s in text for s in ("out of memory", "outofmemory", "no available memory for the cache blocks",
                               "insufficient memory", "not enough memory")):
        # the extractor's hint: other processes may hold the GPU, so less of it, or a shorter context
        return UserError(f"vLLM: GPU out of memory starting {where} ({_first_line(exc)}); lower --model-args "
                         f"max_model_len (now {options.max_model_len or 'the model default'}) or "
                         f"gpu_memory_utilization (now {options.gpu_memory_utilization}), or raise "
                         f"tensor_parallel_size (now {options.tensor_parallel_size})")
    problem = start_problem(exc, where, sizing_hint("--model-args", options.max_model_len,
                                                    options.gpu_memory_utilization, options.tensor_parallel_size),
                            _first_line(exc))
    if problem:
        return UserError(f"vLLM: {problem}")
    return UserError(f"vLLM cannot load {options.path}: {type(exc).__name__}: {_first_line(exc)}")


def vllm_generate(engine: Any, requests: list[dict[str, Any]], options: HFOptions,
                  sampling_factory: Any = None) -> list[str]:
    """Run requests through a ``vllm.LLM``-like engine; one answer per request, in order."""
    if sampling_factory is None:
        from vllm import SamplingParams as sampling_factory  # noqa: N813
    params = sampling_factory(**vllm_sampling(options))
    outputs = engine.generate(requests, params, use_tqdm=False)
    return [out.outputs[0].text.strip() if out.outputs else "" for out in outputs]


__all__ = ["HFAdapter", "HFOptions", "SampleMedia", "chat_prompt", "check_path", "generate", "hf_status",
           "load_model", "load_processor", "request_text", "resolve_device", "resolve_dtype",
           "video_metadata", "VLLMNeed", "check_vllm_version", "installed_vllm_version", "make_vllm_engine",
           "version_tuple", "vllm_generate", "vllm_request", "vllm_sampling", "vllm_start_error",
           "vllm_video_metadata"]
