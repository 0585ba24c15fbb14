#!/usr/bin/env python3
"""Speed and GPU memory of the native AffectGPT adapter (``adapters/affectgpt_model.py``) per batch size.

On a GPU machine, with the released parts (folders or hub ids):

    python3 benchmarks/affectgpt_speed.py --llm /models/Qwen2.5-7B-Instruct \\
        --clip /models/clip-vit-large-patch14 --hubert /models/chinese-hubert-large \\
        --checkpoint /models/affectgpt/checkpoint_000060_loss_0.600.pth --json affectgpt_speed.json

No download possible: full-size random-weight parts (Qwen2.5-7B-Instruct's config with its 152064-token
vocabulary, CLIP ViT-L/14, chinese-hubert-large, a LoRA r=16 checkpoint) built on the GPU and written to a
temporary folder (~17 GB of disk, under --tmp), then measured the same way (speed and memory; the answers are noise):

    python3 benchmarks/affectgpt_speed.py --random --json affectgpt_speed.json

CPU smoke run of the script itself with the tests' tiny models (no GPU, under 2 minutes):

    python3 benchmarks/affectgpt_speed.py --cpu-tiny

Each of --samples synthetic samples (8 random faces, 5 s of noise audio, a subtitle; mode multiface_audio_face_text)
goes through ``modality_tokens`` + ``encode`` one at a time, as the adapter does, then batched greedy ``generate``.
Per batch size: samples/s end to end (encoding included) and ``torch.cuda.max_memory_allocated`` (reset per batch
size), plus the peak after loading: the memory needs of the real 7B model in fp16 are what it reports (random weights
rarely stop early, so their rows run all --max-new-tokens). Greedy answers at each batch size are compared with the
smallest batch size's (1 by default). Without a CUDA GPU (and no --cpu-tiny) it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(1, str(REPO / "tests"))  # the tiny random parts of the tests (affectgpt_fixtures)

from unibench.adapters import affectgpt_inputs as agi  # noqa: E402

QUESTION = "Please recognize all possible emotional states of the character."
SUBTITLES = ("I can't believe you did this to me.", "Wow, what a surprise! I never expected to see you here today.",
             "Fine.", "I am worried about tomorrow, everything depends on that interview and I am not ready at all.",
             "Why did you do that? I feel sad and angry, and honestly I do not know what to say anymore.")
CLIP_L14 = dict(text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                 max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
                vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                   num_attention_heads=16, patch_size=14, image_size=224, hidden_act="quick_gelu"),
                projection_dim=768)
HUBERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)


def random_parts(root: Path, device: str, shrink: dict[str, Any] | None = None) -> dict[str, Path]:
    """Random-weight parts under ``root`` (llm/ clip/ hubert/ checkpoint_000000.pth); ``shrink``: smaller sizes."""
    from affectgpt_fixtures import PROMPT_WORDS, checkpoint_shapes
    from extraction_throughput import QWEN25_7B, build_tokenizer
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, GenerationConfig, HubertConfig, HubertModel,
                              Qwen2Config, Qwen2ForCausalLM, Wav2Vec2FeatureExtractor)

    from unibench.adapters.affectgpt_model import LLM_PREFIX, Fusion

    shrink = shrink or {}
    spec = {k: v for k, v in QWEN25_7B.items() if k not in ("architectures", "model_type")} | shrink.get("llm", {})
    clip, hubert = CLIP_L14 | shrink.get("clip", {}), HUBERT_LARGE | shrink.get("hubert", {})
    n_regular = spec["vocab_size"] - 421  # Qwen's layout: 151643 regular tokens, then 3 special + 418 spare ids
    eot, im_end = n_regular, n_regular + 2
    parts = {name: root / name for name in ("llm", "clip", "hubert")}
    build_tokenizer(spec["vocab_size"], n_regular, [PROMPT_WORDS, *SUBTITLES] * 4).save_pretrained(parts["llm"])
    spec.update(bos_token_id=eot, eos_token_id=im_end, pad_token_id=eot)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    try:
        with torch.device(device):
            torch.set_default_dtype(torch.float16 if device != "cpu" else torch.float32)
            llm = Qwen2ForCausalLM(Qwen2Config(**spec))
            torch.set_default_dtype(torch.float32)  # the released encoders are fp32 files
            llm.save_pretrained(parts["llm"])
            del llm
            CLIPModel(CLIPConfig(**clip)).save_pretrained(parts["clip"])
            HubertModel(HubertConfig(**hubert)).save_pretrained(parts["hubert"])
    finally:
        torch.set_default_dtype(default)
    GenerationConfig(bos_token_id=eot, pad_token_id=eot, eos_token_id=[im_end, eot], do_sample=True,
                     repetition_penalty=1.05, temperature=0.7, top_p=0.8, top_k=20).save_pretrained(parts["llm"])
    CLIPImageProcessor().save_pretrained(parts["clip"])
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(parts["hubert"])
    # the checkpoint: the tests' key list at these sizes (LoRA r=16), fusion layers for d_visual/d_audio -> d_llm
    gen = torch.Generator().manual_seed(1)
    kv = spec["hidden_size"] // spec["num_attention_heads"] * spec["num_key_value_heads"]
    lora = checkpoint_shapes(16, spec["hidden_size"], spec["num_hidden_layers"], spec["intermediate_size"], kv)
    with torch.device("meta"):
        fusion = Fusion(clip["projection_dim"], hubert["hidden_size"], spec["hidden_size"])
    shapes = {**{k: v for k, v in lora.items() if k.startswith(LLM_PREFIX)},
              **{k: tuple(v.shape) for k, v in fusion.state_dict().items()}}
    state = {k: torch.randn(*shape, generator=gen) * 0.02 for k, shape in shapes.items()}
    parts["checkpoint"] = root / "checkpoint_000000.pth"
    torch.save({"model": state, "optimizer": {}, "config": {}, "scaler": None, "epoch": 0}, parts["checkpoint"])
    return parts


def synthesize(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    return [{"face": rng.integers(0, 256, (agi.N_FRAMES, 224, 224, 3), dtype=np.uint8),
             "audio": agi.audio_clips(torch.randn(1, agi.SAMPLE_RATE * 5, generator=gen) * 0.1),
             "prompt": agi.MODES[agi.DEFAULT_MODE].prompt(SUBTITLES[i % len(SUBTITLES)], QUESTION)} for i in range(n)]


def run_batches(model: Any, samples: list[dict[str, Any]], bs: int, max_new_tokens: int) -> list[str]:
    mode = agi.MODES[agi.DEFAULT_MODE]
    answers: list[str] = []
    for start in range(0, len(samples), bs):
        batch = [model.encode(s["prompt"], model.modality_tokens(mode, {"face": s["face"], "audio": s["audio"]}),
                              max_new_tokens, 2000) for s in samples[start:start + bs]]
        answers += model.generate(batch, do_sample=False, temperature=1.0, top_p=0.9, max_new_tokens=max_new_tokens,
                                  seed=0)
    return answers


def peak(cuda: bool) -> float:
    """GiB: torch.cuda.max_memory_allocated on a GPU, else the process's peak RSS."""
    used = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return round(used / 2**30, 2)


def measure(parts: dict[str, Any], device: str, dtype: torch.dtype, sizes: list[int], n: int,
            max_new_tokens: int) -> dict[str, Any]:
    from unibench.adapters.affectgpt_model import AffectGPTModel

    cuda = device.startswith("cuda")
    if cuda:
        gc.collect()  # the random parts' builders, if any, are gone before the peak counts
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = AffectGPTModel(str(parts["llm"]), str(parts["clip"]), str(parts["hubert"]), device=device, dtype=dtype)
    model.load_checkpoint(parts["checkpoint"])
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype),
                           "llm_vocab": int(model.llm.get_input_embeddings().weight.shape[0]),
                           "load_seconds": round(time.perf_counter() - t0, 1), "load_peak_gib": peak(cuda),
                           "memory": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
                           "samples": n, "max_new_tokens": max_new_tokens, "reference_batch_size": sizes[0], "rows": []}
    samples = synthesize(n)
    run_batches(model, samples[:1], 1, 2)  # warm-up (kernels, allocator), untimed
    reference: list[str] | None = None
    for bs in sizes:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        answers = run_batches(model, samples, bs, max_new_tokens)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        reference = reference if reference is not None else answers
        out["rows"].append({"batch_size": bs, "seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 3),
                            "peak_gib": peak(cuda), "same_answers": sum(a == b for a, b in zip(answers, reference)),
                            "total": n})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llm", default="Qwen/Qwen2.5-7B-Instruct")
    p.add_argument("--clip", default="openai/clip-vit-large-patch14")
    p.add_argument("--hubert", default="TencentGameMate/chinese-hubert-large")
    p.add_argument("--checkpoint", type=Path, help="an AffectGPT checkpoint_*.pth")
    p.add_argument("--random", action="store_true", help="full-size random-weight parts, built here (no download)")
    p.add_argument("--cpu-tiny", action="store_true", help="the tests' tiny models on the CPU (smoke run)")
    p.add_argument("--batch-sizes", default="1,4,8,16")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--tmp", type=Path, default=None, help="folder for --random's parts (~17 GB; default: system temp)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    if args.cpu_tiny:
        device, dtype, sizes, n, new = "cpu", torch.float32, [1, 2, 4], 4, 8
    elif not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark measures the 7B model on a GPU; nothing was measured")
        return 0
    else:
        device, dtype, n, new = "cuda", torch.float16, args.samples, args.max_new_tokens
        sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
        if not args.random and args.checkpoint is None:
            p.error("pass --checkpoint (with --llm/--clip/--hubert), or --random")
    work = Path(tempfile.mkdtemp(prefix="affectgpt-speed-", dir=args.tmp)) if args.random or args.cpu_tiny else None
    try:
        if args.cpu_tiny:
            from affectgpt_fixtures import build_parts, write_checkpoint

            parts = {**build_parts(work), "checkpoint": write_checkpoint(work / "checkpoint_000001.pth", seed=1)}
            what = "tiny random test models (tests/affectgpt_fixtures.py), CPU, float32"
        elif args.random:
            t0 = time.perf_counter()
            parts = random_parts(work, device)
            what = f"full-size random weights (built and written in {time.perf_counter() - t0:.0f} s)"
        else:
            parts = {"llm": args.llm, "clip": args.clip, "hubert": args.hubert, "checkpoint": args.checkpoint}
            what = f"{args.llm} + {args.clip} + {args.hubert}, {args.checkpoint}"
        result = {"parts": what, **measure(parts, device, dtype, sizes, n, new)}
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"AffectGPT native adapter: {what}")
    print(f"  {result['device']}, {result['dtype']}, LLM vocab {result['llm_vocab']}; {n} samples, greedy, "
          f"max_new_tokens {new}; memory = {result['memory']}")
    print(f"  load: {result['load_seconds']} s, peak {result['load_peak_gib']} GiB")
    print(f"  {'batch':>5}  {'seconds':>8}  {'samples/s':>9}  {'peak GiB':>8}  same as bs{sizes[0]}")
    for r in result["rows"]:
        print(f"  {r['batch_size']:>5}  {r['seconds']:>8.2f}  {r['samples_per_s']:>9.3f}  {r['peak_gib']:>8.2f}  "
              f"{r['same_answers']}/{r['total']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
