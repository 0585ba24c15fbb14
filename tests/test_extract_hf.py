"""`hf` backend end to end on a tiny random-weight Qwen2 model and a tokenizer built here (no download)."""
from __future__ import annotations

from pathlib import Path

import pytest

from unibench.errors import UserError
from unibench.metrics.extraction import make_extractor
from unibench.labels import normalise_labels, sentiment_value
from unibench.prompts import PROMPT_A_OV_LABELS, PROMPT_B_SENTIMENT

pytest.importorskip("torch")
pytest.importorskip("transformers")

# Qwen's chat template, cut to what a single user turn needs.
QWEN_STYLE_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

ANSWERS = [
    "The character's emotional state is happy, excited.",
    "He seems sad and somewhat disappointed.",
    "The character's emotional state is happy, excited.",
    "",
    "她看起来很生气。",  # Chinese answers must not break anything
    "Neutral; no clear cues {braces} [brackets] 'quotes' don't",
]


def make_tiny_model(folder: Path, seed: int = 0, chat_template: str | None = QWEN_STYLE_TEMPLATE) -> Path:
    """A Qwen2-architecture model (hidden 32, 2 layers) with random weights and a byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [PROMPT_A_OV_LABELS, PROMPT_B_SENTIMENT, *ANSWERS, "positive negative neutral [happy, sad, angry]"] * 3
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        tok.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, initializer_range=0.5, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


def hf(model: Path, cache_dir: Path | None, extra: str = ""):
    ext = make_extractor("hf", f"model={model},device=cpu,max_new_tokens=6,batch_size=4{extra}",
                         cache_dir=cache_dir, use_cache=cache_dir is not None, progress=False)
    return ext


def test_end_to_end_garbage_output_parses(tiny_model, tmp_path):
    ext = hf(tiny_model, tmp_path / "cache", ",ignore_eos=true")
    ov = ext.extract_ov(ANSWERS)
    assert len(ov) == len(ANSWERS)
    assert all(isinstance(o, str) for o in ov)  # ignore_eos: six new tokens each, never empty
    assert ov[0] == ov[2]                       # the same prompt gives the same answer (sent once)
    assert ext.stats.distinct == 5 and ext.stats.misses == 5 and ext.stats.failed == 0
    for o in ov:
        labels = normalise_labels(o)            # garbage in, a list of strings out: never an exception
        assert isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    senti = ext.extract_sentiment(ov)
    assert all(s is None or sentiment_value(s) in (None, -1, 0, 1) for s in senti)
    ident = ext.identity()
    assert ident["backend"] == "hf" and ident["decoding"]["max_tokens"] == 6 and ident["decoding"]["ignore_eos"]
    assert ident["model_identity"].startswith(tiny_model.name + "@")
    assert ident["device"] == "cpu"
    ext.close()

    # A second extractor answers everything from the cache without loading the model.
    again = hf(tiny_model, tmp_path / "cache", ",ignore_eos=true")
    assert again.extract_ov(ANSWERS) == ov
    assert again._model is None and again.stats.hits == 5 and again.stats.misses == 0
    again.close()


def test_batched_left_padding_matches_one_by_one(tiny_model):
    prompts = ANSWERS[:2] + ANSWERS[4:]
    batched = hf(tiny_model, None, ",ignore_eos=true").extract_ov(prompts)
    single = make_extractor("hf", f"model={tiny_model},device=cpu,max_new_tokens=6,batch_size=1,ignore_eos=true",
                            use_cache=False, progress=False).extract_ov(prompts)
    assert batched == single


def test_greedy_default_can_fail_samples_without_crashing(tiny_model):
    # Without ignore_eos a random model may stop at once: an empty answer is a failed sample (None).
    ext = hf(tiny_model, None)
    out = ext.extract_ov(ANSWERS)
    assert len(out) == len(ANSWERS)
    assert ext.stats.generated + ext.stats.failed == 5
    assert ext.stats.failed == sum(o is None for o in {a: o for a, o in zip(ANSWERS, out)}.values())
    assert ext.identity()["decoding"] == {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0,
                                          "max_tokens": 6}


def test_paper_sampling_is_seeded(tiny_model):
    args = f"model={tiny_model},device=cpu,max_new_tokens=5,ignore_eos=true,paper_sampling=true,seed=7"
    a = make_extractor("hf", args, use_cache=False, progress=False).extract_ov(ANSWERS[:2])
    b = make_extractor("hf", args, use_cache=False, progress=False).extract_ov(ANSWERS[:2])
    assert a == b
    dec = make_extractor("hf", args, use_cache=False).identity()["decoding"]
    assert (dec["temperature"], dec["top_p"], dec["repetition_penalty"], dec["seed"]) == (0.7, 0.8, 1.05, 7)


def test_unknown_model_path_is_one_line(tmp_path):
    ext = hf(tmp_path / "no-such-model", None)
    with pytest.raises(UserError) as info:
        ext.extract_ov(["x"])
    assert "cannot load" in str(info.value) and "no-such-model" in str(info.value)
    assert "\n" not in str(info.value)


def test_model_without_chat_template_is_refused(tmp_path):
    folder = make_tiny_model(tmp_path / "plain", chat_template=None)
    with pytest.raises(UserError, match="no chat template"):
        hf(folder, None).extract_ov(["x"])


def test_bad_options_are_one_line(tiny_model):
    with pytest.raises(UserError, match="dtype"):
        make_extractor("hf", f"model={tiny_model},dtype=float8", use_cache=False).extract_ov(["x"])
    with pytest.raises(UserError, match="batch_size"):
        make_extractor("hf", f"model={tiny_model},batch_size=0")
    with pytest.raises(UserError, match="'model' is required"):
        make_extractor("hf", "device=cpu")
