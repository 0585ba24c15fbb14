#!/usr/bin/env python3
"""Extraction throughput: the published submission pattern versus ours, on the same model and prompts.

    # the real extractor (or any local model folder)
    python benchmarks/extraction_throughput.py /models/Qwen2.5-7B-Instruct
    # no download possible: a random-weight model with Qwen2.5-7B's config (throughput only, not quality)
    python benchmarks/extraction_throughput.py --make-random-model /tmp/qwen7b-random
    python benchmarks/extraction_throughput.py /tmp/qwen7b-random
    # CPU smoke run: a scaled-down random model, a few prompts
    python benchmarks/extraction_throughput.py --make-random-model /tmp/qwen-small --small
    python benchmarks/extraction_throughput.py /tmp/qwen-small --backend hf --limit 48 --max-tokens 8

Two ways of extracting labels with prompt A from AffectGPT-like answers (the
released answers in ``../shared/data/mer-unibench-sample/outputs`` when
present, else synthetic ones with a similar share of repeats):

* ``published``: every answer's prompt, duplicates included, sent 8 at a
  time, one batch after the other (what the published scripts do);
* ``whole-run``: identical prompts sent once and all of them submitted at
  once (vLLM schedules them with continuous batching; the ``hf`` fallback
  uses length-sorted batches of ``--hf-batch-size``).

Both modes use one loaded model, greedy decoding and a fixed output length
(``ignore_eos`` with ``min_tokens = max_tokens``) so that a random model's
early or late end-of-sequence does not skew the numbers. The cache is off.
Reported: wall seconds, GPU-seconds (wall x GPUs in use; 0 on CPU),
prompts/s (answers delivered per second, duplicates included) and the ratio.
vLLM is used when installed, else transformers.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from unibench.errors import UserError  # noqa: E402
from unibench.prompts import PROMPT_A_OV_LABELS, PROMPT_B_SENTIMENT, prompt_a  # noqa: E402

SAMPLE_ANSWERS = REPO.parent / "shared" / "data" / "mer-unibench-sample" / "outputs"

# Qwen2.5-7B-Instruct's config.json (architecture part).
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 131072,
    "max_window_layers": 28, "attention_dropout": 0.0, "initializer_range": 0.02,
    "bos_token_id": 151643, "eos_token_id": 151645,
}
SMALL = {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 8192, "max_window_layers": 4, "max_position_embeddings": 4096}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ---------------------------------------------------------------- prompts

def load_answers(root: Path | None, limit: int | None, seed: int = 0) -> tuple[list[str], str]:
    """AffectGPT's released answers (every answer file, in file order), else synthetic ones."""
    answers: list[str] = []
    source = "synthetic"
    if root is not None and root.is_dir():
        from unibench.adapters.replay import is_answer_npz, read_answer_npz

        for path in sorted(root.rglob("*.npz")):
            if is_answer_npz(path):
                answers.extend(read_answer_npz(path).values())
        if answers:
            source = str(root)
    if not answers:
        rng = random.Random(seed)
        words = ["happy", "sad", "angry", "worried", "surprised", "calm", "excited", "disappointed", "nervous",
                 "relieved", "frustrated", "content", "anxious", "joyful", "confused"]
        # About half repeat an earlier answer, as across checkpoints of one model.
        for _ in range(limit or 2000):
            if answers and rng.random() < 0.48:
                answers.append(rng.choice(answers))
            else:
                answers.append("The character's emotional state is " + ", ".join(rng.sample(words, rng.randint(1, 4)))
                               + ".")
    if limit:
        answers = answers[:limit]
    return answers, source


# ---------------------------------------------------------------- random model

def build_tokenizer(vocab_size: int, n_regular: int, corpus: list[str]) -> Any:
    """A byte-level BPE trained on the prompts, padded to the model's vocabulary, with Qwen's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=min(8000, n_regular), show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(trained.to_str())
    vocab: dict[str, int] = dict(state["model"]["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    i = 0
    while len(vocab) < n_regular:  # decodable filler ids, so any id the model emits is a token
        token = f"Ġqz{i:x}"
        i += 1
        if token not in vocab:
            vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    extra = [f"<|reserved_{k}|>" for k in range(vocab_size - n_regular - len(SPECIALS))]
    tok.add_special_tokens([AddedToken(t, special=True) for t in (*SPECIALS, *extra)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def make_random_model(folder: Path, small: bool = False, seed: int = 0, shard_bytes: int = 2 << 30) -> Path:
    """Qwen2.5-7B's architecture (or a scaled-down one) with random weights, written shard by shard."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    spec = dict(QWEN25_7B, **(SMALL if small else {}))
    n_regular = 151643 if not small else spec["vocab_size"] - 3
    specials = {name: n_regular + k for k, name in enumerate(SPECIALS)}
    spec.update(bos_token_id=specials["<|endoftext|>"], eos_token_id=specials["<|im_end|>"])
    dtype = torch.float32 if small else torch.bfloat16
    folder.mkdir(parents=True, exist_ok=True)

    corpus = [prompt_a(a) for a in load_answers(SAMPLE_ANSWERS, 3000)[0]] + [PROMPT_A_OV_LABELS, PROMPT_B_SENTIMENT]
    tokenizer = build_tokenizer(spec["vocab_size"], n_regular, corpus)
    tokenizer.save_pretrained(folder)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config.setdefault("chat_template", CHAT_TEMPLATE)  # older transformers (and vLLM) read it from here
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))

    config = Qwen2Config(**{k: v for k, v in spec.items() if k not in ("architectures", "model_type")},
                         pad_token_id=specials["<|endoftext|>"])
    config.architectures = ["Qwen2ForCausalLM"]
    config.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved["torch_dtype"] = saved["dtype"] = "float32" if small else "bfloat16"  # old and new transformers names
    (folder / "config.json").write_text(json.dumps(saved, indent=2))
    GenerationConfig(bos_token_id=spec["bos_token_id"], eos_token_id=[specials["<|im_end|>"],
                                                                      specials["<|endoftext|>"]],
                     pad_token_id=specials["<|endoftext|>"]).save_pretrained(folder)
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}

    gen = torch.Generator().manual_seed(seed)
    shards: list[dict[str, Any]] = [{}]
    sizes = [0]
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            tensor = torch.zeros(shape, dtype=dtype)
        else:
            tensor = (torch.randn(shape, generator=gen) * spec["initializer_range"] * (25 if small else 1)).to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if sizes[-1] and sizes[-1] + nbytes > shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor
        sizes[-1] += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for k, shard in enumerate(shards, 1):
            fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, indent=1))
    n_params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    print(f"wrote a random-weight {'scaled-down ' if small else ''}Qwen2 model ({n_params / 1e6:,.1f} M parameters, "
          f"{sum(sizes) / 2**30:.2f} GiB) and a tokenizer to {folder}", file=sys.stderr)
    return folder


# ---------------------------------------------------------------- the measurement

def make_backend(kind: str, model: str, args: argparse.Namespace) -> Any:
    from unibench.metrics.extraction import make_extractor

    common = f"model={model},max_tokens={args.max_tokens},ignore_eos=true"
    if kind == "vllm":
        ext = make_extractor("vllm", f"{common},tensor_parallel_size={args.tensor_parallel_size},"
                                     f"gpu_memory_utilization={args.gpu_memory_utilization},"
                                     f"max_model_len={args.max_model_len}", use_cache=False)
    else:
        ext = make_extractor("hf", f"{common},batch_size={args.hf_batch_size}"
                                   + (f",device={args.device}" if args.device else ""), use_cache=False)
    ext.progress = False if args.quiet else None
    return ext


def gpus_in_use(ext: Any, kind: str) -> int:
    if kind == "vllm":
        return int(ext.options.tensor_parallel_size)
    return 1 if str(getattr(ext, "_device", "cpu")).startswith("cuda") else 0


def run_published(ext: Any, kind: str, prompts: list[str], batch: int) -> float:
    """Every prompt, duplicates included, ``batch`` at a time, in file order."""
    ext.options.batch_size = batch
    if kind == "hf":
        ext.options.sort_by_length = False
    started = time.perf_counter()
    delivered = sum(len(group) for group in ext.generate_stream(prompts))
    assert delivered == len(prompts)
    return time.perf_counter() - started


def run_whole(ext: Any, kind: str, prompts: list[str], hf_batch: int) -> float:
    """Identical prompts once, all submitted together (hf: sorted batches)."""
    ext.options.batch_size = 0 if kind == "vllm" else hf_batch
    if kind == "hf":
        ext.options.sort_by_length = True
    ext._answered.clear()
    started = time.perf_counter()
    out = ext.complete(prompts, what="whole-run", postprocess=False)
    assert len(out) == len(prompts)
    return time.perf_counter() - started


def environment(kind: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "backend": kind}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
    except ImportError:
        pass
    if kind == "vllm":
        import vllm

        info["vllm"] = vllm.__version__
    else:
        import transformers

        info["transformers"] = transformers.__version__
    return info


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    kind = args.backend
    if kind == "auto":
        kind = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    answers, source = load_answers(None if args.synthetic else Path(args.answers), args.limit)
    prompts = [prompt_a(a) for a in answers]
    distinct = len(set(prompts))
    ext = make_backend(kind, args.model, args)
    loading = time.perf_counter()
    ext.prepare()
    load_s = time.perf_counter() - loading
    list(ext.generate_stream(prompts[: min(8, len(prompts))]))  # warm-up: kernels, CUDA graphs, caches
    gpus = gpus_in_use(ext, kind)
    print(f"{len(prompts)} prompts ({distinct} distinct) from {source}; backend {kind}, {gpus} GPU(s), "
          f"{args.max_tokens} new tokens each; model loaded in {load_s:.1f} s", file=sys.stderr)

    results: dict[str, Any] = {}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode == "published":
            wall = run_published(ext, kind, prompts, args.published_batch)
            sent = len(prompts)
        elif mode == "whole":
            wall = run_whole(ext, kind, prompts, args.hf_batch_size)
            sent = distinct
        else:
            raise UserError(f"--modes: unknown mode '{mode}' (published, whole)")
        results[mode] = {"wall_s": round(wall, 3), "gpu_s": round(wall * gpus, 3), "prompts_sent": sent,
                         "prompts_per_s": round(len(prompts) / wall, 3),
                         "tokens_generated_per_s": round(sent * args.max_tokens / wall, 1)}
        print(f"  {mode:9s}: {wall:9.2f} s wall, {wall * gpus:9.2f} GPU-s, {sent:6d} sent, "
              f"{len(prompts) / wall:8.2f} prompts/s", file=sys.stderr)
    ext.close()
    report: dict[str, Any] = {
        "model": str(args.model), "prompts": len(prompts), "distinct": distinct, "answers": source,
        "max_tokens": args.max_tokens, "published_batch": args.published_batch, "load_s": round(load_s, 2),
        "environment": environment(kind), "modes": results,
    }
    if "published" in results and "whole" in results:
        ratio = results["published"]["wall_s"] / max(results["whole"]["wall_s"], 1e-9)
        report["speedup"] = round(ratio, 2)
        unit = "GPU-seconds" if gpus else "CPU wall-seconds"
        print(f"whole-run with dedup needs {ratio:.2f}x fewer {unit} than batch-of-{args.published_batch} "
              "sequential submission", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model folder (or hub id) to measure")
    p.add_argument("--make-random-model", metavar="DIR",
                   help="write a random-weight model with Qwen2.5-7B's config and a tokenizer to DIR")
    p.add_argument("--small", action="store_true", help="with --make-random-model: a scaled-down config (CPU)")
    p.add_argument("--backend", choices=("auto", "vllm", "hf"), default="auto")
    p.add_argument("--answers", default=str(SAMPLE_ANSWERS), help="folder of answer .npz files (name2reason)")
    p.add_argument("--synthetic", action="store_true", help="synthetic answers even when real ones are present")
    p.add_argument("--limit", type=int, help="only the first N answers")
    p.add_argument("--max-tokens", type=int, default=32,
                   help="fixed output length (default 32: a label list is 10-30 tokens)")
    p.add_argument("--modes", default="published,whole")
    p.add_argument("--published-batch", type=int, default=8)
    p.add_argument("--hf-batch-size", type=int, default=32)
    p.add_argument("--device", default="", help="hf: cpu | cuda (default: cuda when available)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        if args.make_random_model:
            make_random_model(Path(args.make_random_model), small=args.small)
            if not args.model:
                return 0
        if not args.model:
            p.error("give a model folder, or --make-random-model DIR")
        report = benchmark(args)
        text = json.dumps(report, indent=1)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
