"""End to end: transformers-native multimodal adapters on tiny random-weight models.

Each test builds a model of the real architecture from a tiny config (1-2
layers, hidden 32, a vocabulary of a few dozen words), a tokenizer made with
the ``tokenizers`` library (the model's special tokens included, a chat
template set) and the real processor classes with small sizes, saves them
with ``save_pretrained``, writes a two-sample task with generated .mp4, .wav
and face .npy files, and runs ``run_bench`` in-process with the offline
``lexicon`` extractor: answers, extractions and a leaderboard row must come
out. Nothing is downloaded.

Video models need transformers' video processors, which are torchvision code
(and pillow): without a working torchvision those tests skip with that reason
(tests/test_adapters_hf_common.py covers their request assembly anyway).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import make_task_folder

pytest.importorskip("torch")
pytest.importorskip("transformers")

WORDS = ["happy", "sad", "angry", "worried", "surprise", "calm", "neutral", "joyful", "the", "person", "is",
         "feels", "and", "very", "a", "bit", "please", "recognize", "all", "possible", "emotional", "states",
         "of", "character", "subtitle", "this", "video", "audio", "user", "assistant", "system", "USER",
         "ASSISTANT", ":", ",", ".", ";", "!", "?", "you", "helpful"]


def _video_stack() -> str | None:
    """Why transformers' video processors cannot run here, or None when they can."""
    try:
        import PIL  # noqa: F401
        import torchvision  # noqa: F401
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception as exc:  # a torchvision built for another torch raises RuntimeError, not ImportError
        return f"transformers' video processors need a working torchvision and pillow ({type(exc).__name__}: {exc})"
    return None


needs_video = pytest.mark.skipif(_video_stack() is not None, reason=str(_video_stack()))


def build_tokenizer(special: list[str], template: str, words: list[str] = WORDS, eos: str = "</s>",
                    pad: str = "<pad>", bos: str | None = None) -> Any:
    """A word-level fast tokenizer: the model's special tokens stay whole, other words split on spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in [pad, eos, "<unk>"] + ([bos] if bos else []) + special + words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token="<unk>",
                                   bos_token=bos, additional_special_tokens=special)
    fast.chat_template = template
    return fast


def save(model: Any, processor: Any, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_bench(adapter: str, model_dir: Path, tmp_path: Path, lexicon_dir: Path, task: str = "mer2023",
              model_args: str = "", batch_size: int = 2) -> Path:
    """run_bench in-process on a synthetic two-sample task; returns the output folder."""
    from unibench.cli import main

    data = tmp_path / "data"
    make_task_folder(data, task, n=2)
    out = tmp_path / "out"
    args = f"path={model_dir},max_new_tokens=5" + (f",{model_args}" if model_args else "")
    rc = main(["--model", adapter, "--model-args", args, "--task", task, "--data-root", str(data),
               "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(lexicon_dir),
               "--output", str(out), "--batch-size", str(batch_size), "--no-progress", "--no-cache"])
    assert rc == 0
    return out


def check_outputs(out: Path, model: str, task: str = "mer2023") -> list[dict[str, Any]]:
    """Two answered samples, their extractions, a scored task and the leaderboard row."""
    log = out / model / "answers" / f"{task}.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2
    assert [r["error"] for r in records] == [None, None], records
    # random weights may pick only special tokens (decoded as ""), but not for every sample
    assert all(isinstance(r["answer"], str) for r in records) and any(r["answer"] for r in records), records
    npz = out / model / "answers" / f"results-{task}" / model / f"{model}.npz"
    assert npz.is_file()
    summary = json.loads((out / model / task / "summary.json").read_text())
    assert summary["n_test"] == 2
    detail = json.loads((out / model / task / f"{summary['best']}.json").read_text())
    assert detail["extraction"]["extractor"]["backend"] == "lexicon"
    assert "extractor:lexicon" in detail["flags"]
    with open(out / "leaderboard.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == model]
    assert len(rows) == 1 and rows[0][task] != ""
    return records


# ---------------------------------------------------------------- Video-LLaVA

VIDEO_LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<video>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def build_video_llava(folder: Path) -> Path:
    import torch
    from transformers import (CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration,
                              VideoLlavaImageProcessor, VideoLlavaProcessor, VideoLlavaVideoProcessor)

    tok = build_tokenizer(["<image>", "<video>"], VIDEO_LLAVA_TEMPLATE)
    # 28x28 frames, 14-pixel patches: 4 patches + CLS = 5 video tokens per frame
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = VideoLlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                              image_token_index=tok.convert_tokens_to_ids("<image>"),
                              video_token_index=tok.convert_tokens_to_ids("<video>"),
                              image_seq_length=4, video_seq_length=5 * 8)
    torch.manual_seed(0)
    model = VideoLlavaForConditionalGeneration(config)
    sizes = {"size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28}}
    processor = VideoLlavaProcessor(image_processor=VideoLlavaImageProcessor(**sizes),
                                    video_processor=VideoLlavaVideoProcessor(**sizes), tokenizer=tok,
                                    patch_size=14, vision_feature_select_strategy="default",
                                    chat_template=VIDEO_LLAVA_TEMPLATE)
    return save(model, processor, folder)


@needs_video
def test_video_llava_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_video_llava(tmp_path / "video-llava-tiny")
    out = run_bench("video-llava", model_dir, tmp_path, tiny_lexicon_dir)
    records = check_outputs(out, "video-llava")
    assert records[0]["adapter"]["args"]["num_frames"] == "8"


# ---------------------------------------------------------------- Qwen2-Audio (no torchvision needed)

QWEN_AUDIO_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'audio' %}Audio: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>"]


def tiny_qwen2_text(vocab: int, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=512, bos_token_id=None, **extra)


def whisper_features(n_mels: int = 16) -> Any:
    from transformers import WhisperFeatureExtractor

    # 1-second windows: 100 mel frames -> 50 encoder positions -> at most 25 audio tokens
    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=1,
                                   n_fft=400)


def build_qwen2_audio(folder: Path) -> Path:
    import torch
    from transformers import (Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, Qwen2Config)

    tok = build_tokenizer(QWEN_SPECIAL + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"], QWEN_AUDIO_TEMPLATE,
                          eos="<|endoftext|>")
    audio = Qwen2AudioEncoderConfig(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2,
                                    encoder_ffn_dim=64, d_model=32, max_source_positions=50)
    text = Qwen2Config(**tiny_qwen2_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    config = Qwen2AudioConfig(audio_config=audio, text_config=text,
                              audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config)
    processor = Qwen2AudioProcessor(feature_extractor=whisper_features(), tokenizer=tok,
                                    chat_template=QWEN_AUDIO_TEMPLATE)
    return save(model, processor, folder)


def test_qwen2_audio_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_qwen2_audio(tmp_path / "qwen2-audio-tiny")
    out = run_bench("qwen2-audio", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "qwen2-audio")


# ---------------------------------------------------------------- Qwen2.5-VL

QWEN_VL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_VISION_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# frames are resized to 28x28 (patch 14, merge 2): 4 patches per frame pair, 1 token after merging
QWEN_VISION_SIZE = {"shortest_edge": 28 * 28, "longest_edge": 28 * 28}


def build_qwen25_vl(folder: Path) -> Path:
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    tok = build_tokenizer(QWEN_SPECIAL + QWEN_VISION_SPECIAL, QWEN_VL_TEMPLATE, eos="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_VISION_SPECIAL}
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, window_size=56, fullatt_block_indexes=[0])
    text = tiny_qwen2_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "mrope_section": [2, 3, 3]})
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=QWEN_VISION_SIZE),
                                    video_processor=Qwen2VLVideoProcessor(size=QWEN_VISION_SIZE), tokenizer=tok,
                                    chat_template=QWEN_VL_TEMPLATE)
    return save(model, processor, folder)


@needs_video
def test_qwen25_vl_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_qwen25_vl(tmp_path / "qwen2.5-vl-tiny")
    out = run_bench("qwen2.5-vl", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "qwen2.5-vl")


# ---------------------------------------------------------------- LLaVA-NeXT-Video

def build_llava_next_video(folder: Path) -> Path:
    import torch
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextImageProcessor, LlavaNextVideoConfig,
                              LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor,
                              LlavaNextVideoVideoProcessor)

    tok = build_tokenizer(["<image>", "<video>"], VIDEO_LLAVA_TEMPLATE)
    # 28x28 frames, 7-pixel patches: 16 patches, pooled 2x2 -> 4 video tokens per frame
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=7, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = LlavaNextVideoConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"),
                                  image_grid_pinpoints=[[28, 28]], spatial_pool_stride=2,
                                  image_seq_length=16, video_seq_length=4 * 8)
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(config)
    sizes = {"size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28}}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**sizes),
        image_processor=LlavaNextImageProcessor(image_grid_pinpoints=[[28, 28]], **sizes),
        tokenizer=tok, patch_size=7, vision_feature_select_strategy="default", chat_template=VIDEO_LLAVA_TEMPLATE)
    return save(model, processor, folder)


@needs_video
def test_llava_next_video_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_llava_next_video(tmp_path / "llava-next-video-tiny")
    out = run_bench("llava-next-video", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "llava-next-video")


# ---------------------------------------------------------------- Qwen2.5-Omni, Qwen3-Omni (thinkers)

OMNI_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
OMNI_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
               "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
               "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


def omni_tokenizer() -> tuple[Any, dict[str, int]]:
    """The omni processors read their placeholders from named tokenizer attributes (tokenizer.audio_token...)."""
    from transformers import PreTrainedTokenizerFast

    base = build_tokenizer(QWEN_SPECIAL + list(OMNI_TOKENS.values()), OMNI_TEMPLATE, eos="<|endoftext|>")
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, pad_token="<pad>",
                                  eos_token="<|endoftext|>", unk_token="<unk>", extra_special_tokens=OMNI_TOKENS)
    tok.chat_template = OMNI_TEMPLATE
    return tok, {name: tok.convert_tokens_to_ids(t) for name, t in OMNI_TOKENS.items()}


def omni_thinker_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(audio_token_id=ids["audio_token"], image_token_id=ids["image_token"],
                video_token_id=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
                audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
                vision_end_token_id=ids["vision_eos_token"], user_token_id=0)


def omni_processor(cls: Any, tok: Any, patch: int, n_mels: int = 16) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": (2 * patch) ** 2, "longest_edge": (2 * patch) ** 2}
    return cls(image_processor=Qwen2VLImageProcessor(size=size, patch_size=patch),
               video_processor=Qwen2VLVideoProcessor(size=size, patch_size=patch),
               feature_extractor=whisper_features(n_mels), tokenizer=tok, chat_template=OMNI_TEMPLATE)


def build_qwen25_omni(folder: Path) -> Path:
    """A full Qwen2.5-Omni checkpoint without the talker (as published, less the speech parts)."""
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor

    tok, ids = omni_tokenizer()
    thinker = dict(
        audio_config=dict(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, max_source_positions=50, n_window=50, output_dim=32),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, window_size=56,
                           fullatt_block_indexes=[0]),
        text_config=tiny_qwen2_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                     "mrope_section": [2, 3, 3]}),
        **omni_thinker_ids(ids))
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    torch.manual_seed(0)
    model = Qwen2_5OmniForConditionalGeneration(config)
    return save(model, omni_processor(Qwen2_5OmniProcessor, tok, patch=14), folder)


def build_qwen3_omni(folder: Path) -> Path:
    """A Qwen3-Omni (MoE) thinker: 4 experts of which 2 are active, one decoder layer."""
    import torch
    from transformers import (Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerConfig,
                              Qwen3OmniMoeThinkerForConditionalGeneration)

    tok, ids = omni_tokenizer()
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, max_source_positions=100, n_window=50, output_dim=32, n_window_infer=100,
                          downsample_hidden_size=8),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                           num_position_embeddings=16, deepstack_visual_indexes=[0]),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, moe_intermediate_size=16,
                         num_experts=4, num_experts_per_tok=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3], "interleaved": True}),
        **omni_thinker_ids(ids))
    torch.manual_seed(0)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(config)
    return save(model, omni_processor(Qwen3OmniMoeProcessor, tok, patch=16), folder)


@needs_video
def test_qwen25_omni_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_qwen25_omni(tmp_path / "qwen2.5-omni-tiny")
    out = run_bench("qwen2.5-omni", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "qwen2.5-omni")


@needs_video
def test_qwen3_omni_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_qwen3_omni(tmp_path / "qwen3-omni-tiny")
    out = run_bench("qwen3-omni", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "qwen3-omni")


# ---------------------------------------------------------------- VideoLLaMA 3

def build_videollama3(folder: Path) -> Path:
    import torch
    from transformers import (VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3ImageProcessor,
                              VideoLlama3Processor, VideoLlama3VideoProcessor)

    tok = build_tokenizer(QWEN_SPECIAL + QWEN_VISION_SPECIAL + ["Time"], QWEN_VL_TEMPLATE, eos="<|endoftext|>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=14)
    text = tiny_qwen2_text(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = VideoLlama3Config(vision_config=vision, text_config=text,
                               image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                               video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"))
    torch.manual_seed(0)
    model = VideoLlama3ForConditionalGeneration(config)
    processor = VideoLlama3Processor(image_processor=VideoLlama3ImageProcessor(size=QWEN_VISION_SIZE),
                                     video_processor=VideoLlama3VideoProcessor(size=QWEN_VISION_SIZE),
                                     tokenizer=tok, chat_template=QWEN_VL_TEMPLATE)
    return save(model, processor, folder)


@needs_video
def test_videollama3_end_to_end(tmp_path, tiny_lexicon_dir):  # noqa: F811
    model_dir = build_videollama3(tmp_path / "videollama3-tiny")
    out = run_bench("videollama3", model_dir, tmp_path, tiny_lexicon_dir)
    check_outputs(out, "videollama3")


def test_bad_media_fail_only_their_sample(tmp_path, tiny_lexicon_dir):  # noqa: F811
    """A corrupt .wav in a batch of two: that sample is recorded as failed, the other is answered."""
    import soundfile  # noqa: F401  (media extra)

    from unibench.cli import main

    model_dir = build_qwen2_audio(tmp_path / "qwen2-audio-tiny")
    data = tmp_path / "data"
    folder = make_task_folder(data, "mer2023", n=2)
    (folder / "audio" / "sample_00000001.wav").write_bytes(b"RIFF....garbage")
    out = tmp_path / "out"
    rc = main(["--model", "qwen2-audio", "--model-args", f"path={model_dir},max_new_tokens=3", "--task", "mer2023",
               "--data-root", str(data), "--allow-count-mismatch", "--extractor", "lexicon",
               "--lexicon", str(tiny_lexicon_dir), "--output", str(out), "--batch-size", "2", "--no-progress",
               "--no-cache"])
    assert rc == 0
    records = {json.loads(line)["name"]: json.loads(line)
               for line in (out / "qwen2-audio" / "answers" / "mer2023.jsonl").read_text().splitlines()}
    assert records["sample_00000000"]["error"] is None
    assert records["sample_00000001"]["error"].startswith("MediaError: ")
    assert "sample_00000001.wav" in records["sample_00000001"]["error"]
    with open(out / "leaderboard.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["model"] == "qwen2-audio")
    assert "failed-samples:1" in json.dumps(row)
