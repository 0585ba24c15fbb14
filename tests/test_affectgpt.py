"""The native AffectGPT adapter on tiny random-weight parts built here (CPU, no download)."""
from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from affectgpt_fixtures import (D_AUDIO, D_LLM, D_VISUAL, build_parts, checkpoint_shapes, model_args,
                                write_checkpoint)
from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, make_task_folder, media_paths, write_wav
from unibench.adapters import affectgpt_inputs as agi
from unibench.cli import main
from unibench.errors import UserError
from unibench.inference import read_answer_log
from unibench.media import MediaError
from unibench.prompts import AFFECTGPT_OV_QUESTION

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("affectgpt")
    out = build_parts(root)
    out["ckpt30"] = write_checkpoint(root / "ckpts" / "run_a" / "checkpoint_000030_loss_0.600.pth", 30,
                                     tied_alias_of=out["llm"])
    out["ckpt35"] = write_checkpoint(root / "ckpts" / "run_a" / "checkpoint_000035_loss_0.500.pth", 35,
                                     tied_alias_of=out["llm"])
    return out


@pytest.fixture(scope="module")
def model(parts):
    from unibench.adapters.affectgpt_model import AffectGPTModel

    m = AffectGPTModel(str(parts["llm"]), str(parts["clip"]), str(parts["hubert"]), "cpu", torch.float32)
    m.load_checkpoint(parts["ckpt30"])
    return m


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    return (rc, *capsys.readouterr())


# --------------------------------------------------------------------------- pure input handling

def test_prompt_of_the_published_mode_word_for_word():
    prompt = agi.MODES["multiface_audio_face_text"].prompt("Hi {there}", AFFECTGPT_OV_QUESTION)
    assert prompt == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as "
        "follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw frames from the video and extract "
        "faces from these frames: <Video><FaceHere></Video>. The subtitle of this video is: <Subtitle>Hi {there}"
        "</Subtitle>. Now, please answer my question based on all the provided information. Please recognize all "
        "possible emotional states of the character. ###Assistant: ")
    # the original's ablation prompts lack '###Human: ' (kept)
    assert agi.MODES["audio_text"].prompt("s", "q").startswith("The audio content is as follows: <Audio>")
    assert agi.MODES["face_text"].prompt("s", "q").startswith("We uniformly sample raw frames")
    assert agi.MODES["textonly"].prompt("s", "q") == (
        "###Human: The subtitle of this video is: <Subtitle>s</Subtitle>. Now, please answer my question based on "
        "all the provided information. q ###Assistant: ")
    assert agi.MODES["multiframe_audio_frame_text"].visual == "frame" and agi.MODES["face"].multi is False


@pytest.mark.parametrize("n, expected", [
    (1, [0] * 8), (3, [0, 1, 2, 2, 2, 2, 2, 2]), (8, list(range(8))),
    (20, [0, 2, 5, 7, 10, 12, 15, 17]), (9, [0, 1, 2, 3, 4, 5, 6, 7])])
def test_face_indices_follow_the_original_rule(n, expected):
    from unibench.media import affectgpt_indices

    assert affectgpt_indices(n, 8) == expected


def test_faces_are_resized_with_opencv_and_sampled(tmp_path):
    import cv2

    faces = (np.arange(5 * 16 * 16 * 3) % 251).astype(np.uint8).reshape(5, 16, 16, 3)
    np.save(tmp_path / "f.npy", faces)
    got = agi.load_face_file(tmp_path / "f.npy")
    assert got.shape == (8, 224, 224, 3) and got.dtype == np.uint8
    for k, i in enumerate([0, 1, 2, 3, 4, 4, 4, 4]):
        assert np.array_equal(got[k], cv2.resize(faces[i], (224, 224)))
    with pytest.raises(MediaError, match="f.npy: face file not found"):
        agi.load_face_file(tmp_path / "missing" / "f.npy")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4)))
    with pytest.raises(MediaError, match=r"bad.npy: expected face crops shaped \[n, H, W, 3\], got \[3, 4\]"):
        agi.load_face_file(tmp_path / "bad.npy")


def test_clip_pixels_equal_the_clip_image_processor():
    from transformers import CLIPImageProcessor

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    proc = CLIPImageProcessor()
    ours = agi.clip_pixels(crops, proc.image_mean, proc.image_std)
    theirs = np.asarray(proc(images=list(crops), return_tensors="np")["pixel_values"])
    assert ours.shape == (3, 3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    # exactly (x/255 - mean)/std
    ref = ((crops.astype(np.float64) / 255 - np.array(proc.image_mean)) / np.array(proc.image_std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("n, starts", [
    (32000, [0] * 8),                                         # exactly 2 s: every clip is the whole file
    (48000, [0, 2000, 4000, 6000, 8000, 10000, 12000, 14000]),  # 3 s: (3-2)/8 s apart
    (40000, [k * 1000 for k in range(8)]),                    # 2.5 s
    (16000 * 18, [k * 32000 for k in range(8)]),              # 18 s: back to back, the last 2 s never read
])
def test_audio_clip_positions(n, starts):
    assert agi.clip_starts(n) == starts


def test_audio_clip_positions_use_exact_fractions_of_the_float_duration():
    for n in (50001, 123457, 16000 * 7 + 3):
        span = Fraction(n / 16000 - 2)          # a float, made exact, as pytorchvideo does
        expected = [int(span * k / 8 * 16000) for k in range(8)]
        assert agi.clip_starts(n) == expected
        assert agi.clip_starts(n)[-1] + 32000 < n  # the last clip ends before the end of the file


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_audio_loading_mixing_padding_and_per_clip_mean_removal(tmp_path, channels):
    import soundfile as sf

    rng = np.random.default_rng(channels)
    data = (rng.standard_normal((50001, channels)) * 0.1 + 0.05).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), data, 16000, subtype="FLOAT")
    wave = agi.load_waveform(tmp_path / "a.wav")
    expected = data.T.mean(axis=0, keepdims=True) if channels == 2 else data.T  # mono only for exactly 2
    np.testing.assert_allclose(wave.numpy(), expected, atol=1e-7)
    clips = agi.audio_clips(wave.clone())
    assert tuple(clips.shape) == (8, expected.shape[0], 32000)
    for k, start in enumerate(agi.clip_starts(50001)):
        raw = expected[:, start:start + 32000].astype(np.float64)
        np.testing.assert_allclose(clips[k].numpy(), raw - raw.mean(), atol=1e-6)  # mean over the whole clip
    # HuBERT reads channel 0, normalised over all eight clips together
    x = clips[:, 0, :].numpy().astype(np.float64)
    np.testing.assert_allclose(agi.hubert_input(clips), (x - x.mean()) / np.sqrt(x.var() + 1e-7), atol=1e-5)
    assert np.array_equal(agi.hubert_input(clips, do_normalize=False), clips[:, 0, :].numpy())


def test_short_audio_is_zero_padded_and_other_rates_resampled(tmp_path):
    write_wav(tmp_path / "short.wav", seconds=0.5)
    wave = agi.load_waveform(tmp_path / "short.wav")
    assert tuple(wave.shape) == (1, 32000) and float(wave[0, 8000:].abs().max()) == 0.0
    write_wav(tmp_path / "8k.wav", seconds=3.0, sample_rate=8000)
    wave = agi.load_waveform(tmp_path / "8k.wav")
    assert tuple(wave.shape) == (1, 48000)
    t = np.arange(48000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    assert np.abs(wave[0, 1000:-1000].numpy() - tone[1000:-1000]).max() < 2e-3  # band-limited: the same tone
    with pytest.raises(MediaError, match="nothing.wav: audio not found"):
        agi.load_waveform(tmp_path / "nothing.wav")


def test_resampling_kernel_properties():
    x = torch.randn(2, 44100, dtype=torch.float64)
    y = agi.resample(x, 44100, 16000)
    assert tuple(y.shape) == (2, 16000)  # ceil(new * length / orig)
    assert agi.resample(x, 16000, 16000) is x
    dc = agi.resample(torch.ones(1, 4000, dtype=torch.float64), 8000, 16000)
    assert abs(float(dc[0, 2000:6000].mean()) - 1.0) < 1e-2  # unit gain away from the edges


def test_truncation_keeps_the_first_max_length_then_the_last_room():
    ids = list(range(2500))
    assert agi.truncate(ids, 1200, 2000) == list(range(1200, 2000))  # first 2000, then the last 800
    assert agi.truncate(list(range(700)), 1200, 2000) == list(range(700))
    assert agi.truncate(list(range(900)), 1200, 2000) == list(range(100, 900))


@pytest.mark.parametrize("text, expected", [
    ("happy, sad###", "happy, sad"),
    ("a ### b ### c", "a ### b"),
    ("calm<|im_end|>ignored", "calm"),
    ("x<|im_start|>inside<|im_start|>after", "inside"),
    ("tail<|endoftext|>", "tail<|endoftext|>"),               # a trailing <|endoftext|> stays
    ("###Human: hi ###Assistant: happy ###", "happy"),
    ("  spaced  ", "spaced"),
])
def test_postprocessing(text, expected):
    assert agi.postprocess(text, "<|im_start|>", "<|im_end|>") == expected


def test_finished_length_stops_at_eos_or_a_stop_sequence():
    stops = [[9], [5], [3, 4], [4, 3]]
    assert agi.finished_length([1, 2, 9, 0, 0], [9, 8], stops) == 3
    assert agi.finished_length([1, 8, 9], [9, 8], stops) == 2
    assert agi.finished_length([1, 3, 4, 7], [9], stops) == 3
    assert agi.finished_length([1, 2, 3], [9], stops) == 3


def test_epochs_parsing():
    assert agi.parse_epochs("30-60:5") == [30, 35, 40, 45, 50, 55, 60]
    assert agi.parse_epochs("30,45") == [30, 45] and agi.parse_epochs("50") == [50]
    assert agi.parse_epochs("") is None and agi.parse_epochs("all") is None
    for bad in ("x", "30-60:0", "-5"):
        with pytest.raises(ValueError):
            agi.parse_epochs(bad)


# --------------------------------------------------------------------------- fusion and checkpoints

def test_fusion_arithmetic_by_hand():
    from unibench.adapters.affectgpt_model import Fusion

    torch.manual_seed(0)
    fusion = Fusion(d_visual=2, d_audio=3, d_llm=4).double()
    hv = torch.randn(1, 8, 2, dtype=torch.float64)
    ha = torch.randn(1, 8, 3, dtype=torch.float64)
    W = {n: (p.detach().numpy()) for n, p in fusion.named_parameters()}
    lin = lambda name, x: W[f"{name}.weight"] @ x + W[f"{name}.bias"]  # noqa: E731
    v_np, a_np = hv[0].numpy(), ha[0].numpy()
    # face: raw linear scores (no softmax), weighted sum over the 8 frames, projection
    scores = np.array([lin("video_attention_mlp", v_np[t])[0] for t in range(8)])
    face = lin("affectgpt_proj", sum(scores[t] * v_np[t] for t in range(8)))
    np.testing.assert_allclose(fusion.visual_token(hv)[0].detach().numpy(), face, rtol=1e-12)
    scores = np.array([lin("audio_attention_mlp", a_np[t])[0] for t in range(8)])
    audio = lin("audio_llama_proj", sum(scores[t] * a_np[t] for t in range(8)))
    np.testing.assert_allclose(fusion.audio_token(ha)[0].detach().numpy(), audio, rtol=1e-12)
    # multi: both streams to max(2, 3) = 3 dims, two raw weights from the concatenation
    v = lin("multi_video_embs", v_np.mean(axis=0))
    u = lin("multi_audio_embs", a_np.mean(axis=0))
    w = lin("fc_att", lin("attention_mlp", np.concatenate([v, u])))
    multi = lin("multi_llama_proj", w[0] * v + w[1] * u)
    np.testing.assert_allclose(fusion.multi_token(hv, ha)[0].detach().numpy(), multi, rtol=1e-12)


def test_checkpoint_with_the_spec_keys_loads_completely(parts, model):
    from unibench.adapters.affectgpt_model import lora_keys, fusion_keys

    expected = checkpoint_shapes()
    assert set(expected) == set(lora_keys(2)) | set(fusion_keys())
    assert len(lora_keys(28)) == 392 and len(fusion_keys()) == 20  # the released 7B checkpoints: 412 tensors
    state = torch.load(parts["ckpt30"], weights_only=True)["model"]
    model.load_checkpoint(parts["ckpt35"])
    model.load_checkpoint(parts["ckpt30"])
    params = model.trained_parameters()
    for key in expected:
        assert torch.equal(params[key].detach().cpu(), state[key]), key
    assert abs(model.llm.peft_config["default"].lora_alpha / model.llm.peft_config["default"].r - 2.0) < 1e-12


def test_spoiled_checkpoints_are_reported_readably(parts, model, tmp_path):
    from unibench.adapters.affectgpt_model import read_checkpoint

    lora_key = "llama_model.base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight"
    bad = write_checkpoint(tmp_path / "checkpoint_000001_loss_1.0.pth", 1, drop=[lora_key],
                           rename={"fc_att.weight": "fc_attn.weight"})
    with pytest.raises(UserError) as err:
        model.load_checkpoint(bad)
    msg = str(err.value)
    assert "\n" not in msg
    assert "2 missing (LoRA 1: " + lora_key + "; fusion 1: fc_att.weight)" in msg
    assert "1 unexpected (fusion 1: fc_attn.weight)" in msg
    qformer = write_checkpoint(tmp_path / "checkpoint_000002_loss_1.0.pth", 2,
                               extra={"video_Qformer.bert.encoder.layer.0.attention.self.query.weight":
                                      torch.zeros(2, 2), "video_query_tokens": torch.zeros(1, 1, 2)})
    with pytest.raises(UserError, match=r"Q-Former fusion configuration of AffectGPT \(2 Q-Former keys"):
        model.load_checkpoint(qformer)
    rank8 = tmp_path / "checkpoint_000003_loss_1.0.pth"
    state = read_checkpoint(parts["ckpt30"])
    state = {k: (v[:8] if ".lora_A." in k else v[:, :8] if ".lora_B." in k else v) for k, v in state.items()}
    torch.save({"model": state}, rank8)
    with pytest.raises(UserError, match="its LoRA rank is 8: pass lora_r=8"):
        model.load_checkpoint(rank8)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth: not a loadable AffectGPT checkpoint"):
        model.load_checkpoint(tmp_path / "junk.pth")
    model.load_checkpoint(parts["ckpt30"])  # a failed load leaves the model usable


def test_hubert_features_keep_the_old_meaning_of_the_last_four_layers(parts, model):
    """In transformers 4.49 hidden_states[-1] of a stable-layer-norm HuBERT was the final layer norm's output."""
    rng = np.random.default_rng(0)
    clips = torch.from_numpy(rng.standard_normal((8, 1, 32000)).astype(np.float32))
    feats = model.audio(clips)
    assert tuple(feats.shape) == (8, D_AUDIO)
    values = torch.from_numpy(agi.hubert_input(clips))
    with torch.no_grad():
        out = model.audio.model(values, output_hidden_states=True)
    inputs_of_last_three = list(out.hidden_states[-4:-1])  # the inputs of the last three layers
    ref = torch.stack([*inputs_of_last_three, out.last_hidden_state]).mean(0).mean(1)
    torch.testing.assert_close(feats, ref)


def test_face_features_are_the_projected_clip_features(model):
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(8, 224, 224, 3), dtype=np.uint8)
    feats = model.face(crops)
    assert tuple(feats.shape) == (8, D_VISUAL)
    with torch.no_grad():
        pixels = torch.from_numpy(agi.clip_pixels(crops, model.face.mean, model.face.std))
        pooled = model.face.model.vision_model(pixel_values=pixels).pooler_output
        torch.testing.assert_close(feats, model.face.model.visual_projection(pooled))


# --------------------------------------------------------------------------- prompt assembly and splicing

def _tokens(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(D_LLM, generator=g) for k in ("face", "audio", "multi")}


def test_splicing_token_by_token(model):
    tok = model.tokenizer
    assert [tok.convert_tokens_to_ids(t) for t in agi.PLACEHOLDERS] == list(range(len(tok) - 5, len(tok)))
    assert tok.bos_token == "<|im_start|>" and tok.pad_token == tok.eos_token == "<|im_end|>"
    prompt = agi.MODES[agi.DEFAULT_MODE].prompt(SUBTITLES[0], AFFECTGPT_OV_QUESTION)
    tokens = _tokens()
    enc = model.encode(prompt, tokens, max_new_tokens=1200, max_length=2000)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert enc.input_ids == ids and tok.bos_token_id not in ids  # no BOS at inference
    table = model.llm.get_input_embeddings().weight
    where = {kind: ids.index(model.ids[ph]) for kind, ph in
             (("multi", agi.MULTI), ("audio", agi.AUDIO), ("face", agi.FACE))}
    assert where["multi"] < where["audio"] < where["face"]
    for pos, tid in enumerate(ids):
        kind = next((k for k, p in where.items() if p == pos), None)
        expected = tokens[kind] if kind else table[tid]
        assert torch.equal(enc.embeds[pos], expected), pos
    assert enc.mask.all()


def test_truncation_can_cut_placeholders_away(model):
    prompt = agi.MODES[agi.DEFAULT_MODE].prompt("I am worried about tomorrow. " * 30, AFFECTGPT_OV_QUESTION)
    full = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert len(full) > 200
    enc = model.encode(prompt, _tokens(), max_new_tokens=20, max_length=200)
    assert enc.input_ids == full[:200][-180:]  # the first 200, then the last 200 - 20
    multi_at = full.index(model.ids[agi.MULTI])
    # cut exactly the multi placeholder: it is silently not spliced, the others are
    tokens = _tokens()
    enc = model.encode(prompt, tokens, max_new_tokens=multi_at + 1, max_length=len(full))
    assert enc.input_ids == full[multi_at + 1:]
    assert model.ids[agi.MULTI] not in enc.input_ids and set(enc.tokens) == {"face", "audio", "multi"}
    table = model.llm.get_input_embeddings().weight
    for pos, tid in enumerate(enc.input_ids):
        kind = {model.ids[agi.AUDIO]: "audio", model.ids[agi.FACE]: "face"}.get(tid)
        assert torch.equal(enc.embeds[pos], tokens[kind] if kind else table[tid])


def test_a_placeholder_in_the_subtitle_fails_that_sample(model):
    prompt = agi.MODES[agi.DEFAULT_MODE].prompt("look <FaceHere>", AFFECTGPT_OV_QUESTION)
    with pytest.raises(ValueError, match="holds 2 <FaceHere> tokens"):
        model.encode(prompt, _tokens(), 1200, 2000)


def test_stop_sequences_come_from_the_tokenizer(model):
    tok = model.tokenizer
    stops = agi.stop_sequences(tok)
    assert stops[0] == [tok.eos_token_id]
    assert stops[1] == [tok("###", add_special_tokens=False)["input_ids"][0]]
    two, one = tok("a##", add_special_tokens=False)["input_ids"][1], tok("a#", add_special_tokens=False)["input_ids"][1]
    assert stops[2:] == [[two, one], [one, two]]
    assert model.eos_ids == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def test_batched_greedy_equals_one_at_a_time(model):
    prompts = [agi.MODES[agi.DEFAULT_MODE].prompt(s, AFFECTGPT_OV_QUESTION) for s in SUBTITLES]
    encoded = [model.encode(p, _tokens(i), 1200, 2000) for i, p in enumerate(prompts)]
    one = [model.generate([e], False, 1.0, 0.9, 16, 0)[0] for e in encoded]
    batch = model.generate(encoded, False, 1.0, 0.9, 16, 0)
    assert batch == one and any(one)


def test_what_generate_receives_is_what_is_dumped(model, monkeypatch):
    prompt = agi.MODES[agi.DEFAULT_MODE].prompt(SUBTITLES[1], AFFECTGPT_OV_QUESTION)
    enc = model.encode(prompt, _tokens(3), 1200, 2000)
    seen = {}
    original = model.llm.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model.llm, "generate", spy)
    model.generate([enc], True, 1.0, 0.9, 4, 0)
    assert torch.equal(seen["inputs_embeds"][0], enc.embeds)
    assert seen["attention_mask"][0].tolist() == [1] * len(enc.input_ids)
    # published decoding: sampling, top-p 0.9, temperature 1, repetition penalty 1.0; top_k not passed (config: 20)
    assert (seen["do_sample"], seen["top_p"], seen["temperature"], seen["repetition_penalty"]) == (True, 0.9, 1.0, 1.0)
    assert "top_k" not in seen and model.llm.generation_config.top_k == 20


# --------------------------------------------------------------------------- through run_bench

def _bench(tmp_path: Path, n: int = 2) -> Path:
    data = tmp_path / "data"
    for task in ("mer2023", "cmumosi"):
        make_task_folder(data, task, n=n)
    return data


def test_run_bench_greedy_with_dumps(capsys, tmp_path, parts, tiny_lexicon_dir):
    data = _bench(tmp_path)
    out, dump = tmp_path / "out", tmp_path / "dump"
    args = model_args(parts, checkpoint=parts["ckpt30"], do_sample="false", max_new_tokens=12, dump=dump)
    rc, stdout, err = run(capsys, "--model", "affectgpt", "--model-args", args, "--task", "mer2023,cmumosi",
                          "--data-root", data, "--allow-count-mismatch", "--extractor", "lexicon",
                          "--lexicon", tiny_lexicon_dir, "--output", out, "--no-progress", "--device", "cpu")
    assert rc == 0, err
    records, _ = read_answer_log(out / "affectgpt" / "answers" / "mer2023" / "checkpoint_000030_loss_0.600.jsonl")
    assert [r["error"] for r in records] == [None, None]
    assert records[0]["adapter"]["decoding"] == "greedy"
    assert (out / "affectgpt" / "answers" / "results-mer2023" / "run_a" / "checkpoint_000030_loss_0.600.npz").is_file()
    for task in ("mer2023", "cmumosi"):
        for name in ("sample_00000000", "sample_00000001"):
            d = np.load(dump / task / f"{name}.npz")
            assert set(d.files) == {"prompt", "input_ids", "attention_mask", "face_token", "audio_token",
                                    "multi_token", "inputs_embeds"}
            t = len(d["input_ids"])
            assert d["attention_mask"].shape == (t,) and d["inputs_embeds"].shape == (t, D_LLM)
            assert all(d[k].shape == (D_LLM,) and d[k].dtype == np.float32
                       for k in ("face_token", "audio_token", "multi_token"))
            assert d["inputs_embeds"].dtype == np.float32 and d["input_ids"].dtype == np.int64
    d = np.load(dump / "mer2023" / "sample_00000000.npz")
    assert str(d["prompt"]) == agi.MODES[agi.DEFAULT_MODE].prompt(SUBTITLES[0], AFFECTGPT_OV_QUESTION)
    # the dumped tokens sit in inputs_embeds at their placeholders
    assert any(np.array_equal(row, d["face_token"]) for row in d["inputs_embeds"])

    # the same greedy answers one sample at a time and in a batch of two
    rc, _, err = run(capsys, "--model", "affectgpt", "--model-args", args.replace(f",dump={dump}", ""),
                     "--task", "mer2023", "--data-root", data, "--allow-count-mismatch", "--extractor", "lexicon",
                     "--lexicon", tiny_lexicon_dir, "--output", tmp_path / "out2", "--no-progress",
                     "--batch-size", "2")
    assert rc == 0, err
    again, _ = read_answer_log(tmp_path / "out2" / "affectgpt" / "answers" / "mer2023" /
                               "checkpoint_000030_loss_0.600.jsonl")
    assert [r["answer"] for r in again] == [r["answer"] for r in records]


def test_two_epochs_give_two_answer_files_and_a_best_of_2_row(capsys, tmp_path, parts, tiny_lexicon_dir):
    data = _bench(tmp_path)
    out = tmp_path / "out"
    args = model_args(parts, checkpoints=parts["ckpt30"].parent, epochs="30-35:5", do_sample="false",
                      max_new_tokens=8)
    common = ["--model", "affectgpt", "--model-args", args, "--task", "mer2023,cmumosi", "--data-root", data,
              "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", tiny_lexicon_dir, "--output", out,
              "--no-progress"]
    rc, stdout, err = run(capsys, *common)
    assert rc == 0, err
    for task in ("mer2023", "cmumosi"):
        folder = out / "affectgpt" / "answers" / f"results-{task}" / "run_a"
        assert sorted(p.name for p in folder.glob("checkpoint_*0.npz")) == [
            "checkpoint_000030_loss_0.600.npz", "checkpoint_000035_loss_0.500.npz"]
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"] == "affectgpt" and row["selection"] == "best-of-2" and row["n_tasks"] == "2"
    # a rerun resumes everything (no model is even loaded) and gives the same row
    rc, _, err = run(capsys, *common)
    assert rc == 0, err
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        assert next(csv.DictReader(fh)) == row
    # the answers of epoch 30 are those of a single-checkpoint run
    one = tmp_path / "one"
    rc, _, err = run(capsys, *common[:3], model_args(parts, checkpoint=parts["ckpt30"], do_sample="false",
                                                     max_new_tokens=8), *common[4:-3], "--output", one,
                     "--no-progress")
    assert rc == 0, err
    a, _ = read_answer_log(out / "affectgpt" / "answers" / "cmumosi" / "checkpoint_000030_loss_0.600.jsonl")
    b, _ = read_answer_log(one / "affectgpt" / "answers" / "cmumosi" / "checkpoint_000030_loss_0.600.jsonl")
    assert [r["answer"] for r in a] == [r["answer"] for r in b] and a[0]["key"] == b[0]["key"]


def test_missing_media_fail_their_sample_only(capsys, tmp_path, parts, tiny_lexicon_dir):
    data = _bench(tmp_path, n=3)
    media_paths(data / "mer2023-dataset-process", "mer2023", "sample_00000001")["face"].unlink()
    out = tmp_path / "out"
    rc, _, err = run(capsys, "--model", "affectgpt", "--model-args",
                     model_args(parts, checkpoint=parts["ckpt30"], do_sample="false", max_new_tokens=4),
                     "--task", "mer2023", "--data-root", data, "--allow-count-mismatch", "--extractor", "lexicon",
                     "--lexicon", tiny_lexicon_dir, "--output", out, "--no-progress")
    assert rc == 0, err
    records, _ = read_answer_log(out / "affectgpt" / "answers" / "mer2023" / "checkpoint_000030_loss_0.600.jsonl")
    errors = {r["name"]: r["error"] for r in records}
    assert errors["sample_00000000"] is None and errors["sample_00000002"] is None
    assert errors["sample_00000001"].startswith("MediaError: no face file for sample 'sample_00000001'")
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        assert "failed-samples:1" in next(csv.DictReader(fh))["flags"]


def test_mer2024_gets_its_chinese_subtitles(tmp_path):
    from unibench.adapters.base import make_adapter
    from unibench.inference import build_samples, resolve_question
    from unibench.tasks.base import get_task, load_task

    make_task_folder(tmp_path, "mer2024", n=1, media=False)
    task = load_task(get_task("mer2024"), tmp_path, check_count=False)
    (tmp_path / "c.pth").write_bytes(b"")
    adapter = make_adapter("affectgpt", f"checkpoint={tmp_path / 'c.pth'}")
    (sample, _), = build_samples(adapter, task, resolve_question("affectgpt", task.spec.question), task.names)
    assert sample.subtitle == "中文"


# --------------------------------------------------------------------------- configuration errors

@pytest.mark.parametrize("args, message", [
    ("", "needs its released checkpoints or its released answers"),
    ("checkpoint=/nowhere/c.pth", "checkpoint=/nowhere/c.pth: file not found"),
    ("checkpoints=/nowhere", "checkpoints=/nowhere: folder not found"),
    ("answers=a,checkpoint=b", "give one of checkpoint=, checkpoints=, answers="),
    ("answers=a,mode=smell", "mode=smell: unknown input mode"),
    ("answers=a,max_new_tokens=2000", "max_new_tokens=2000: must be at least 1 and below max_length=2000"),
    ("answers=a,epochs=30-60:5", "epochs= goes with checkpoints="),
])
def test_configuration_errors_are_one_clear_message(capsys, tmp_path, args, message):
    rc, _, err = run(capsys, "--model", "affectgpt", "--model-args", args, "--task", "mer2023",
                     "--data-root", tmp_path, "--output", tmp_path / "out")
    assert rc != 0 and message in err and "Traceback" not in err


def test_epochs_must_all_be_there(capsys, tmp_path, parts):
    folder = parts["ckpt30"].parent
    rc, _, err = run(capsys, "--model", "affectgpt", "--model-args", f"checkpoints={folder},epochs=30-45:5",
                     "--task", "mer2023", "--data-root", tmp_path, "--output", tmp_path / "out")
    assert rc != 0 and "no checkpoint for epoch(s) 40, 45" in err and "(epochs there: 30, 35)" in err


def test_status_line():
    from unibench.adapters.affectgpt import AffectGPTAdapter

    assert AffectGPTAdapter.status() == "ready"


# --------------------------------------------------------------------------- without weights: released answers

def test_released_answers_give_the_published_numbers(capsys, tmp_path, shared_data):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "--model", "affectgpt", "--model-args",
                          f"answers={shared_data / 'mer-unibench-sample' / 'outputs' / 'affectgpt'}",
                          "--task", "mer2023,cmumosi", "--data-root", shared_data / "mer-unibench-sample" / "dataset",
                          "--lexicon", shared_data / "emotion_wheel-affectgpt2025", "--output", out)
    assert rc == 0, err
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert (row["model"], row["selection"], row["mer2023"], row["cmumosi"]) == ("affectgpt", "best-of-7", "78.54",
                                                                               "81.30")


def test_all_nine_tasks_on_cpu(capsys, tmp_path, parts, tiny_lexicon_dir):
    from unibench.tasks.base import TASKS

    for task in TASKS:
        make_task_folder(tmp_path / "data", task, n=1)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "--model", "affectgpt", "--model-args",
                          model_args(parts, checkpoint=parts["ckpt35"], max_new_tokens=4),  # published sampling
                          "--task", "all", "--data-root", tmp_path / "data", "--allow-count-mismatch",
                          "--extractor", "lexicon", "--lexicon", tiny_lexicon_dir, "--output", out, "--no-progress")
    assert rc == 0, err
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["n_tasks"] == "9" and "failed-samples" not in row["flags"]
    for task in TASKS:
        records, _ = read_answer_log(out / "affectgpt" / "answers" / task / "checkpoint_000035_loss_0.500.jsonl")
        assert len(records) == 1 and records[0]["error"] is None, task
        assert records[0]["adapter"]["decoding"].startswith("sampling")


def test_wrong_base_models_are_one_line(capsys, tmp_path, parts, tiny_lexicon_dir):
    make_task_folder(tmp_path / "data", "mer2023", n=1)
    for swap, message in ((dict(clip=parts["hubert"]), "clip="), (dict(llm=tmp_path / "nothing"), "llm=")):
        args = model_args({**parts, **swap}, checkpoint=parts["ckpt30"], max_new_tokens=2)
        rc, _, err = run(capsys, "--model", "affectgpt", "--model-args", args, "--task", "mer2023",
                         "--data-root", tmp_path / "data", "--allow-count-mismatch", "--extractor", "lexicon",
                         "--output", tmp_path / "out", "--no-progress", "--lexicon", tiny_lexicon_dir)
        assert rc != 0 and message in err and "Traceback" not in err, err


def test_frame_modes_sample_video_frames_with_the_original_rule(tmp_path):
    from media_fixtures import frame_value, write_video

    write_video(tmp_path / "v.mp4", n_frames=20)
    frames = agi.load_video_frames(tmp_path / "v.mp4")
    assert frames.shape == (8, 224, 224, 3)
    # frame i is filled with frame_value(i); the codec may blur values slightly
    got = [int(round(float(f.mean()))) for f in frames]
    assert all(abs(g - frame_value(i) % 256) <= 3 for g, i in zip(got, [0, 2, 5, 7, 10, 12, 15, 17])), got
