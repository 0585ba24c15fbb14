"""`affectgpt`: the benchmark's own model, run natively from its released checkpoints.

Three ways to use it (``--model-args``):

* ``checkpoint=FILE`` (one epoch) or ``checkpoints=DIR,epochs=30-60:5`` (the
  paper's best-of-epochs protocol: one answer file per epoch, in the original
  layout ``results-<task>/<DIR name>/<checkpoint stem>.npz``; the base models
  are loaded once and only the trained parts are swapped between epochs), with
  ``llm=``, ``clip=``, ``hubert=`` naming the base models (folders or hub ids);
* ``answers=DIR``: score the released answers (original layout), as ``replay``;
* ``dump=DIR``: also write what the model sees, per sample
  ``DIR/<task>/<name>.npz`` (``DIR/<checkpoint>/<task>/<name>.npz`` with several
  epochs): prompt, input_ids, attention_mask, the modality tokens, inputs_embeds.

Published decoding (sampling, top-k 20 from the LLM's generation config, top-p
0.9) is the default; ``do_sample=false`` is greedy. ``mode=`` picks another
input mode of the original (modality ablations).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from unibench.adapters import affectgpt_inputs as agi
from unibench.adapters.base import Adapter, AnswerRun, AnswerSet, Sample, register_adapter
from unibench.errors import UserError
from unibench.runtime import requirement_status, torch_device_dtype
from unibench.media import MediaError

DEFAULT_LLM = "Qwen/Qwen2.5-7B-Instruct"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_HUBERT = "TencentGameMate/chinese-hubert-large"

WHAT_TO_PASS = (
    "model 'affectgpt' needs its released checkpoints or its released answers:\n"
    "  run the model:   --model-args checkpoint=checkpoint_000050_loss_0.527.pth"
    "[,llm=<Qwen2.5-7B-Instruct>,clip=<clip-vit-large-patch14>,hubert=<chinese-hubert-large>]\n"
    "  paper protocol:  --model-args checkpoints=<folder of checkpoint_*.pth>,epochs=30-60:5\n"
    "  score answers:   --model-args answers=<folder holding results-<task>/<run>/*.npz>\n"
    "Checkpoints and answers come with the AffectGPT release (zeroQiaoba/AffectGPT on GitHub and its model "
    "page); llm/clip/hubert default to the hub ids Qwen/Qwen2.5-7B-Instruct, openai/clip-vit-large-patch14 and "
    "TencentGameMate/chinese-hubert-large, or give local folders.")


@dataclass
class AffectGPTOptions:
    checkpoint: str = ""          # one checkpoint_0000NN_loss_X.pth
    checkpoints: str = ""         # a folder of them (the paper protocol)
    epochs: str = ""              # with checkpoints=: 30-60:5 | 30,45,60 | 50 | all ('' = all)
    answers: str = ""             # released answers to score instead (original layout)
    run: str = ""                 # with answers=: the run folder under results-<task>/
    llm: str = DEFAULT_LLM
    clip: str = DEFAULT_CLIP
    hubert: str = DEFAULT_HUBERT
    mode: str = agi.DEFAULT_MODE  # input mode of the original (face_or_frame)
    name: str = ""                # model name in results (default: affectgpt)
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "auto"           # auto (float16 on GPU as published, float32 on CPU) | float32 | float16 | bfloat16
    do_sample: bool = True        # published: sampling; false = greedy
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0
    max_new_tokens: int = 1200
    max_length: int = 2000
    lora_r: int = 16
    lora_alpha: int = 32
    dump: str = ""                # folder for per-sample model inputs (see module doc)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Content hash of a checkpoint (once per process): what its answers' resume key holds."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]


def find_checkpoints(folder: Path, epochs: list[int] | None) -> list[Path]:
    """The checkpoint files to run, one per epoch (the original refuses 0 or 2+ files for an epoch)."""
    if not folder.is_dir():
        raise UserError(f"--model-args checkpoints={folder}: folder not found")
    found: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("checkpoint_*.pth")):
        epoch = agi.checkpoint_epoch(path)
        if epoch is not None:
            found.setdefault(epoch, []).append(path)
    if not found:
        raise UserError(f"--model-args checkpoints={folder}: no checkpoint_<epoch>_loss_<x>.pth files there")
    wanted = sorted(found) if epochs is None else epochs
    missing = [e for e in wanted if e not in found]
    if missing:
        raise UserError(f"--model-args epochs: no checkpoint for epoch(s) {', '.join(map(str, missing))} in "
                        f"{folder} (epochs there: {', '.join(map(str, sorted(found)))})")
    double = [e for e in wanted if len(found[e]) > 1]
    if double:
        raise UserError(f"{folder}: several checkpoints for epoch {double[0]}: "
                        f"{', '.join(p.name for p in found[double[0]])}")
    return [found[e][0] for e in wanted]


@register_adapter
class AffectGPTAdapter(Adapter):
    description = "AffectGPT (ICML 2025), natively from its released checkpoints (or answers=DIR to replay)"
    inputs: ClassVar[tuple[str, ...]] = ("face", "audio", "subtitle")
    Options = AffectGPTOptions
    model_ref_keys = ("llm", "clip", "hubert")
    # the checkpoint enters the resume key through its run (content hash), not its path
    resume_ignore: ClassVar[tuple[str, ...]] = ("checkpoint", "checkpoints", "epochs", "answers", "run", "dump")
    subtitle_columns = {"mer2024": "chinese"}  # the original reads MER2024's Chinese subtitles

    def __init__(self, options: Any = None):
        super().__init__(options)
        opts = self.options
        if opts.mode not in agi.MODES:
            raise UserError(f"--model-args mode={opts.mode}: unknown input mode (known: {', '.join(agi.MODES)})")
        self.mode = agi.MODES[opts.mode]
        # what the runner hands over ('frame' modes read the video)
        self.inputs = (*("video" if k == "frame" else k for k in self.mode.media), "subtitle")
        if opts.max_new_tokens < 1 or opts.max_new_tokens >= opts.max_length:
            raise UserError(f"--model-args max_new_tokens={opts.max_new_tokens}: must be at least 1 and below "
                            f"max_length={opts.max_length} (the prompt keeps max_length - max_new_tokens tokens)")
        if opts.lora_r < 1:
            raise UserError(f"--model-args lora_r={opts.lora_r}: must be at least 1")
        sources = [k for k in ("checkpoint", "checkpoints", "answers") if getattr(opts, k)]
        if not sources:
            raise UserError(WHAT_TO_PASS)
        if len(sources) > 1:
            raise UserError(f"--model-args: give one of checkpoint=, checkpoints=, answers= (got {', '.join(sources)})")
        if opts.epochs and not opts.checkpoints:
            raise UserError("--model-args epochs= goes with checkpoints=<folder>")
        try:
            epochs = agi.parse_epochs(opts.epochs)
        except ValueError:
            raise UserError(f"--model-args epochs={opts.epochs}: expected e.g. 30-60:5, 30,45,60 or 50") from None
        if opts.checkpoint:
            path = Path(opts.checkpoint).expanduser()
            if not path.is_file():
                raise UserError(f"--model-args checkpoint={opts.checkpoint}: file not found")
            self.checkpoint_files = [path]
        elif opts.checkpoints:
            self.checkpoint_files = find_checkpoints(Path(opts.checkpoints).expanduser(), epochs)
        else:
            self.checkpoint_files = []
        self.default_batch_size = 1 if opts.do_sample else 8
        self._runs = {run.label: path for run, path in
                      ((AnswerRun(p.stem, p.parent.name, ""), p) for p in self.checkpoint_files)}
        self._current: Path | None = self.checkpoint_files[0] if self.checkpoint_files else None
        self._current_label = self._current.stem if self._current else ""
        self._model: Any = None
        self._replay: Any = None

    @classmethod
    def status(cls) -> str:
        return requirement_status(("torch", "transformers", "peft", ("cv2", "opencv-python-headless"),
                                   "soundfile"), ("AutoModelForCausalLM",))

    def model_id(self) -> str:
        return self.options.name or self.name

    # answers without weights ------------------------------------------------
    def answer_sets(self, task: Any) -> list[AnswerSet] | None:
        if not self.options.answers:
            return None
        if self._replay is None:
            from unibench.adapters.replay import ReplayAdapter, ReplayOptions

            self._replay = ReplayAdapter(ReplayOptions(path=Path(self.options.answers), run=self.options.run))
        return self._replay.answer_sets(task)

    # one answer file per checkpoint -----------------------------------------
    def answer_runs(self) -> list[AnswerRun]:
        return [AnswerRun(p.stem, p.parent.name, file_sha256(p)) for p in self.checkpoint_files]

    def use_run(self, run: AnswerRun) -> None:
        self._current = self._runs[run.label]  # loaded at the next answer() call, if any sample is left
        self._current_label = run.label

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["decoding"] = ("sampling (top-k from the LLM's generation_config, top-p "
                           f"{self.options.top_p}, temperature {self.options.temperature}, seed {self.options.seed})"
                           if self.options.do_sample else "greedy")
        return out

    # inference ----------------------------------------------------------------
    def load(self) -> Any:
        if self._model is None:
            from unibench.adapters.affectgpt_model import AffectGPTModel

            opts = self.options
            device, dtype = torch_device_dtype(opts.device, opts.dtype if opts.dtype != "auto" else "float32")
            if opts.dtype == "auto" and device != "cpu":
                import torch

                dtype = torch.float16  # what the published row ran
            try:
                self._model = AffectGPTModel(opts.llm, opts.clip, opts.hubert, device, dtype,
                                             lora_r=opts.lora_r, lora_alpha=opts.lora_alpha)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. an LLM whose layers peft cannot find: a setup error
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UserError(f"cannot build AffectGPT from llm={opts.llm}, clip={opts.clip}, "
                                f"hubert={opts.hubert}: {type(exc).__name__}: {text}") from None
        if self._current is not None:
            self._model.load_checkpoint(self._current)
        return self._model

    def sample_media(self, sample: Sample) -> dict[str, Any]:
        media: dict[str, Any] = {}
        for kind in self.mode.media:
            if kind == "face":
                media[kind] = agi.load_face_file(sample.face)
            elif kind == "frame":
                media[kind] = agi.load_video_frames(sample.video)
            else:
                media[kind] = agi.audio_clips(agi.load_waveform(sample.audio))
        return media

    def answer(self, samples: list[Sample]) -> list[Any]:
        model = self.load()
        opts = self.options
        results: list[Any] = [None] * len(samples)
        ready = []
        for i, sample in enumerate(samples):
            try:
                tokens = model.modality_tokens(self.mode, self.sample_media(sample))
                prompt = self.mode.prompt(sample.subtitle, sample.question)
                encoded = model.encode(prompt, tokens, opts.max_new_tokens, opts.max_length)
            except (MediaError, ValueError) as exc:  # this sample only
                results[i] = exc
                continue
            if opts.dump:
                self.write_dump(sample, encoded)
            ready.append((i, encoded))
        if ready:
            answers = model.generate([e for _, e in ready], opts.do_sample, opts.temperature, opts.top_p,
                                     opts.max_new_tokens, opts.seed)
            for (i, _), text in zip(ready, answers):
                results[i] = text
        return results

    def write_dump(self, sample: Sample, encoded: Any) -> None:
        """What the model sees, for checking a port against the original (names and shapes are a contract)."""
        folder = Path(self.options.dump).expanduser()
        if len(self.checkpoint_files) > 1:
            folder = folder / self._current_label
        folder = folder / sample.task
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "prompt": np.array(encoded.prompt),
            "input_ids": np.asarray(encoded.input_ids, dtype=np.int64),
            "attention_mask": encoded.mask.long().cpu().numpy(),
            "inputs_embeds": encoded.embeds.float().cpu().numpy(),
        }
        for kind, token in encoded.tokens.items():
            arrays[f"{kind}_token"] = token.float().cpu().numpy()
        name = sample.name.replace("/", "_").replace("\\", "_")
        tmp = folder / f".{name}.npz.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(folder / f"{name}.npz")
