"""`hf-text` end to end with a tiny random-weight Qwen2 and a tokenizer built here (no download)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, make_task_folder
from unibench.adapters.hf_text import HFTextAdapter, build_prompt, plain_prompt
from unibench.cli import main
from unibench.inference import read_answer_log
from unibench.prompts import AFFECTGPT_OV_QUESTION

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


WORDS = ("i am so happy sad angry worried surprised calm to see you again this is wonderful why did do that feel "
         "and about tomorrow wow what a surprise please recognize all possible emotional states of the character "
         "subtitle video user assistant system").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_lm(folder: Path, chat_template: bool = True) -> Path:
    """A 1-layer Qwen2 with random (seeded) weights and a word-level tokenizer, saved as a model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    # byte-level BPE, as Qwen2's own tokenizer class (which transformers picks from the config) expects
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    vocab = tok.get_vocab()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     additional_special_tokens=["<|im_start|>"])
    if chat_template:
        hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=0, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    # special and blank tokens never win the argmax (tied embeddings), so greedy answers hold text
    blank = [i for t, i in vocab.items() if t in special or not tok.decode([i]).strip()]
    with torch.no_grad():
        model.model.embed_tokens.weight[blank] = 0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-qwen2"))


def direct_answers(model_dir: Path, texts: list[str], max_new_tokens: int) -> list[str]:
    """What the model answers, computed here without the adapter (one prompt at a time)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def run(capsys, *argv):
    rc = main(list(argv))
    return (rc, *capsys.readouterr())


def test_hf_text_end_to_end(capsys, tmp_path, tiny_lm, tiny_lexicon_dir):
    make_task_folder(tmp_path / "data", "mer2023", n=2, media=False)
    make_task_folder(tmp_path / "data", "cmumosi", n=2, media=False)
    common = ["--model", "hf-text", "--task", "mer2023,cmumosi", "--data-root", str(tmp_path / "data"),
              "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(tiny_lexicon_dir),
              "--no-progress"]
    rc, out, err = run(capsys, *common, "--model-args", f"path={tiny_lm},max_new_tokens=6",
                       "--output", str(tmp_path / "out"), "--batch-size", "2", "--device", "cpu")
    assert rc == 0, err
    model_dir = tmp_path / "out" / f"hf-text-{tiny_lm.name}"
    records, _ = read_answer_log(model_dir / "answers" / "mer2023.jsonl")
    answers = [r["answer"] for r in records]
    texts = [f"The subtitle of this video is: {SUBTITLES[i]}\n{AFFECTGPT_OV_QUESTION}" for i in range(2)]
    assert answers == direct_answers(tiny_lm, texts, 6)
    assert all(r["error"] is None for r in records) and all(a for a in answers)
    assert records[0]["adapter"]["args"]["device"] == "cpu"  # --device filled the option
    # extractions beside the answers, and a leaderboard row for both tasks
    run_dir = model_dir / "answers" / "results-cmumosi" / model_dir.name
    assert (run_dir / f"{model_dir.name}-openset.npz").is_file()
    assert (run_dir / f"{model_dir.name}-openset-sentiment.npz").is_file()
    with open(tmp_path / "out" / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"] == model_dir.name and row["n_tasks"] == "2"
    assert row["mer2023"] != "" and row["cmumosi"] != ""
    assert "extractor:lexicon" in row["flags"]

    # one sample per call gives the same answers as the left-padded batch of two
    rc, _, err = run(capsys, *common, "--model-args", f"path={tiny_lm},max_new_tokens=6",
                     "--output", str(tmp_path / "out1"), "--batch-size", "1")
    assert rc == 0, err
    again, _ = read_answer_log(tmp_path / "out1" / model_dir.name / "answers" / "mer2023.jsonl")
    assert [r["answer"] for r in again] == answers


def test_prompts_with_and_without_a_chat_template(tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    prompt, templated = build_prompt(tok, "how do they feel", system="be brief")
    assert templated
    assert prompt == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhow do they feel<|im_end|>\n"
                      "<|im_start|>assistant\n")
    tok.chat_template = None
    assert build_prompt(tok, "how do they feel") == (plain_prompt("how do they feel"), False)
    assert plain_prompt("x") == "x\nAnswer:"


def test_model_without_chat_template_answers(tmp_path):
    folder = build_tiny_lm(tmp_path / "plain", chat_template=False)
    from unibench.adapters.base import make_adapter
    from unibench.adapters.base import Sample

    adapter = make_adapter("hf-text", f"path={folder},max_new_tokens=3,device=cpu")
    out = adapter.answer([Sample(name="a", task="t", question="how do they feel", subtitle="i am happy"),
                          Sample(name="b", task="t", question="how do they feel")])
    assert len(out) == 2 and all(isinstance(a, str) and a for a in out)


@pytest.mark.parametrize("args, message", [
    ("pathh=x", "--model-args: unknown key 'pathh' for model 'hf-text' (known: path, name, device"),
    ("path=x,max_new_tokens=many", "--model-args: 'max_new_tokens' must be an integer, got 'many'"),
    ("path=x,do_sample=perhaps", "--model-args: 'do_sample' must be true or false, got 'perhaps'"),
    ("max_new_tokens=4", "--model-args: 'path' is required for model 'hf-text'"),
    ("path=./no/such/model", "hf-text: model folder not found: ./no/such/model"),
    pytest.param("path=Qwen/Qwen2.5-0.5B-Instruct,device=cuda:3", "device=cuda:3: no CUDA GPU is visible to torch",
                 marks=pytest.mark.skipif(_has_cuda(), reason="a GPU is visible here")),
])
def test_model_args_errors_are_one_line(capsys, tmp_path, tiny_lexicon_dir, args, message):
    make_task_folder(tmp_path / "data", "mer2023", n=2, media=False)
    rc, _, err = run(capsys, "--model", "hf-text", "--model-args", args, "--task", "mer2023",
                     "--data-root", str(tmp_path / "data"), "--allow-count-mismatch", "--lexicon",
                     str(tiny_lexicon_dir), "--extractor", "lexicon", "--output", str(tmp_path / "out"),
                     "--no-progress")
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_status_and_identity(tiny_lm):
    assert HFTextAdapter.status() == "ready"
    from unibench.adapters.base import make_adapter

    assert make_adapter("hf-text", f"path={tiny_lm}").model_id() == f"hf-text-{tiny_lm.name}"
    assert make_adapter("hf-text", f"path={tiny_lm},name=my-lm").model_id() == "my-lm"
