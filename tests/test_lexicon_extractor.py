"""The offline `lexicon` extractor: phrases, negation, punctuation, Chinese, valence, identity, runs."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from fixtures import tiny_lexicon, tiny_lexicon_dir, write_run, write_task  # noqa: F401  (pytest fixtures)
from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics.backends import lexicon as lexbackend
from unibench.metrics.backends.lexicon import (DATA_FILES, LexiconExtractor, PhraseMatcher, read_valence_table,
                                               read_zh_table, tokenize)
from unibench.metrics.extraction import make_extractor


@pytest.fixture
def tiny_ext(tiny_lexicon):
    return make_extractor("lexicon", "", lexicon=tiny_lexicon)


@pytest.fixture(scope="module")
def real_ext(lexicon_2025):
    return make_extractor("lexicon", "", lexicon=lexicon_2025)


def labels(ext, text: str) -> str:
    return ext.extract_ov([text])[0]


# ---------------------------------------------------------------- matching on the tiny lexicon

@pytest.mark.parametrize("text, expected", [
    ("The character's emotional state is happy, sad.", "[happy, sad]"),
    ("HAPPY!!!", "[happy]"),
    ("Sadness... and ANGER?!", "[sadness, anger]"),
    ("happy/sad;angry", "[happy, sad, angry]"),
    ("(joy) [fear] {worry}", "[joy, fear, worry]"),
    ("He feels happy, happy and happier", "[happy]"),            # duplicates once; 'happier' is no form
    ("unhappy, sadder, joyfulness", "[]"),                         # word boundaries: no substrings
    ("", "[]"),
    ("   ", "[]"),
])
def test_word_boundaries_case_and_punctuation(tiny_ext, text, expected):
    assert labels(tiny_ext, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("He is not happy.", "[]"),
    ("She isn't angry", "[]"),
    ("She isn’t angry", "[]"),                                    # curly apostrophe
    ("There is no sign of fear.", "[]"),                           # negator 3 words before
    ("without anger", "[]"),
    ("He never seems sad", "[]"),
    ("not at all happy", "[]"),
    ("neither happy nor sad", "[]"),
    ("He doesn't look worried at all", "[]"),
    ("He is not happy, but sad", "[sad]"),                         # the comma ends the negation
    ("He is not happy but sad", "[sad]"),                          # so does 'but'
    ("Not only that: he is happy", "[happy]"),                     # a colon ends it
    ("no one told him, he is angry", "[angry]"),
    ("It is not that he is happy", "[happy]"),                     # 'not' is 4 words before: outside the window
])
def test_negation(tiny_ext, text, expected):
    assert labels(tiny_ext, text) == expected


def test_negation_window_is_an_option(tiny_lexicon):
    wide = make_extractor("lexicon", "negation_window=4", lexicon=tiny_lexicon)
    off = make_extractor("lexicon", "negation_window=0", lexicon=tiny_lexicon)
    assert labels(wide, "It is not that he is happy") == "[]"
    assert labels(off, "He is not happy") == "[happy]"
    with pytest.raises(UserError, match="negation_window"):
        make_extractor("lexicon", "negation_window=-1", lexicon=tiny_lexicon).extract_ov(["happy"])


def test_stopwords_are_not_labels(tiny_ext):
    # 'content' is a form of the tiny lexicon but in descriptions it is "subtitle content"
    assert labels(tiny_ext, "Based on the subtitle content, he is happy") == "[happy]"
    assert labels(tiny_ext, "a feeling of contentment") == "[contentment]"


def test_phrase_matcher_longest_first_and_hyphens():
    m = PhraseMatcher(["at a loss", "at a loss for words", "double-crossed", "fed up", "loss", "don’t care"])
    found = lambda text: [x.label for x in m.find(tokenize(text), 3) if not x.negated]  # noqa: E731
    assert found("He was at a loss for words.") == ["at a loss for words"]
    assert found("He was at a loss, for words") == ["at a loss"]          # punctuation breaks a phrase
    assert found("at a loss") == ["at a loss"]
    assert found("a big loss") == ["loss"]
    assert found("he felt double-crossed and FED UP") == ["double-crossed", "fed up"]
    assert found("he felt double crossed") == ["double-crossed"]          # hyphen or space, same form
    assert found("I don't care") == ["don’t care"]                         # the lexicon's own spelling back
    assert found("not fed up") == []


def test_tokenize():
    assert tokenize("He isn’t HAPPY—really; self-deprecating.") == \
        ["he", "isn't", "happy", "|", "really", "|", "self", "deprecating", "|"]


def test_output_survives_the_label_parser(real_ext):
    """Every emitted label must come back unchanged through string_to_list (no ', ", ,)."""
    from unibench.labels import normalise_labels

    out = labels(real_ext, "I don't care, he said, at a loss for words and fed up, and self-deprecating")
    assert normalise_labels(out) == ["don’t care", "at a loss for words", "fed up"]


# ---------------------------------------------------------------- the real lexicon

@pytest.mark.parametrize("text, expected", [
    ("The character's emotional state is concern, worry.", "[concern, worry]"),
    ("He appears to be feeling a mix of frustration and disappointment.", "[frustration, disappointment]"),
    ("His facial expressions suggest he is at ease and content.", "[at ease]"),
    ("The man looks burnt out and fed up with the situation.", "[burnt out, fed up]"),
    ("It is clear that he is not feeling particularly happy or content at the moment.", "[]"),
    ("She shows no sign of anger; instead she seems calm and relaxed.", "[calm, relaxed]"),
])
def test_realistic_answers(real_ext, text, expected):
    assert labels(real_ext, text) == expected


def test_real_answers_score_like_the_llm_extraction(shared_data, lexicon_2025, real_ext):
    """On AffectGPT's released MER2023 answers the offline extractor lands near the LLM's hit rate."""
    from unibench.adapters.replay import read_answer_npz, read_extraction_npz
    from unibench.metrics.scores import hit_rate
    from unibench.tasks.base import get_task, load_task

    task = load_task(get_task("mer2023"), shared_data / "mer-unibench-sample" / "dataset")
    run = next((shared_data / "mer-unibench-sample" / "outputs" / "affectgpt" / "results-mer2023").iterdir())
    answer = next(run.glob("checkpoint_000050_*[0-9].npz"))
    answers = read_answer_npz(answer)
    names = list(task.gt)
    ours = dict(zip(names, real_ext.extract_ov([answers.get(n, "") for n in names])))
    authors = read_extraction_npz(Path(str(answer)[:-4] + "-openset.npz"))
    assert hit_rate(task.gt, authors, lexicon_2025).metrics["hit_rate"] == pytest.approx(0.7853869969040248)
    assert hit_rate(task.gt, ours, lexicon_2025).metrics["hit_rate"] == pytest.approx(0.7959863980104552)


# ---------------------------------------------------------------- Chinese

@pytest.mark.parametrize("text, expected", [
    ("他看起来很开心。", "[happy]"),
    ("他感到非常焦虑和害怕", "[anxious, scared]"),
    ("他并不开心，但是很紧张。", "[nervous]"),                       # 并不 negates; the comma ends it
    ("她很不开心", "[]"),                                             # 不 glued to the word
    ("没有一丝恐惧", "[]"),
    ("毫无愤怒", "[]"),
    ("他没生气", "[]"),
    ("他很不满", "[dissatisfied]"),                                   # 不满 is itself a listed word
    ("他很自豪。The man is happy.", "[happy, proud]"),                # mixed: English matches first
    ("今天天气很好", "[]"),
])
def test_chinese(tiny_ext, text, expected):
    assert labels(tiny_ext, text) == expected


def test_chinese_can_be_switched_off(tiny_lexicon):
    ext = make_extractor("lexicon", "chinese=false", lexicon=tiny_lexicon)
    assert labels(ext, "他看起来很开心。") == "[]"


def test_chinese_without_jieba_says_which_extra(tiny_lexicon, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jieba(name, *args, **kwargs):
        if name == "jieba":
            raise ImportError("no jieba")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jieba)
    monkeypatch.setattr(lexbackend, "_SEGMENTERS", {})  # forget the segmenter other tests built
    ext = make_extractor("lexicon", "", lexicon=tiny_lexicon)
    assert labels(ext, "He is happy") == "[happy]"                    # English never needs jieba
    with pytest.raises(UserError, match=r"mer-unibench\[zh\]"):
        ext.extract_ov(["他很开心"])


def test_zh_table_is_well_formed():
    table = read_zh_table()
    assert 150 <= len(table) <= 250
    with open(lexbackend.ZH_FILE, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(table)                                    # no Chinese word listed twice
    assert all(("," not in en and "'" not in en) for en in table.values())


@pytest.mark.parametrize("version", ["emotion_wheel-affectgpt2025", "emotion_wheel-mer2026"])
def test_zh_targets_are_lexicon_words_that_map(shared_data, tmp_path, version):
    from unibench.metrics.lexicon import load_lexicon

    lex = load_lexicon(shared_data / version, cache_dir=tmp_path)
    vocab = set(lex.vocabulary())
    targets = set(read_zh_table().values())
    assert sorted(targets - vocab) == []
    assert sorted(t for t in targets if not any(lex.map_label(t, w) for w in range(1, 6))) == []


# ---------------------------------------------------------------- sentiment

def test_valence_table_covers_every_level1_word(shared_data, tmp_path):
    from unibench.metrics.lexicon import load_lexicon

    table = read_valence_table()
    for version in ("emotion_wheel-affectgpt2025", "emotion_wheel-mer2026"):
        lex = load_lexicon(shared_data / version, cache_dir=tmp_path / version)
        level1 = {w for wheel in lex.wheels.values() for w in wheel}
        assert level1 == set(table)
    assert table["happy"] == 1 and table["sad"] == -1 and table["surprised"] == 0 and table["genius"] == 1


def test_label_valence_prefers_the_wheel_the_word_stands_in(tiny_ext, tiny_lexicon):
    # the published mapping sends 'fear' to happy on wheel 2 (via 'fearless' -> brave)...
    assert tiny_lexicon.map_label("fear", 2) == "happy"
    # ...but 'fear' stands under 'scared' in every wheel, so its valence is negative
    assert tiny_ext.label_valence("fear") == -1
    assert tiny_ext.label_valence("calm") == 1            # level 2 under happy
    assert tiny_ext.label_valence("surprised") == 0       # surprised is neutral
    assert tiny_ext.label_valence("content") == 1         # in no wheel: the synonym mapping (-> happy) votes
    assert tiny_ext.label_valence("neutral") is None      # maps nowhere
    assert tiny_ext.label_valence("nonsense") is None


@pytest.mark.parametrize("ov, expected", [
    ("[happy, joy]", "positive"),
    ("[sad, angry, happy]", "negative"),
    ("[happy, sad]", "neutral"),                          # a tie
    ("[surprised]", "neutral"),
    ("[surprised, calm]", "positive"),                    # neutral labels do not vote
    ("[]", "neutral"),
    ("", "neutral"),
    ("[neutral]", "neutral"),
    ("[nonsense, fear]", "negative"),
    ("['Happy', 'JOY']", "positive"),                     # quoted, any case
])
def test_sentiment(tiny_ext, ov, expected):
    assert tiny_ext.extract_sentiment([ov]) == [expected]


def test_real_sentiment(real_ext):
    out = real_ext.extract_sentiment(["[fear]", "[excited]", "[confused, nervous]", "[happiness, relief]", "[calm]"])
    assert out == ["negative", "positive", "negative", "positive", "positive"]


# ---------------------------------------------------------------- identity and protocol flag

def test_identity_and_flag(tiny_ext, tiny_lexicon):
    ident = tiny_ext.identity()
    assert ident["backend"] == "lexicon" and ident["paper_protocol"] is False
    assert ident["lexicon_sha256"] == tiny_lexicon.sha256
    assert ident["version"] == lexbackend.VERSION
    assert ident["data"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in DATA_FILES}
    assert LexiconExtractor.paper_protocol is False
    assert "not the published" in ident["note"]


def test_no_lexicon_is_one_clear_line():
    ext = make_extractor("lexicon", "")
    with pytest.raises(UserError, match="--lexicon"):
        ext.extract_ov(["happy"])


def test_run_with_lexicon_extractor_is_flagged(tmp_path, tiny_lexicon_dir, capsys):
    """End to end: answers without extraction files, --extractor lexicon fills both prompts; results say so."""
    data = tmp_path / "data"
    write_task(data, "mer2023", {"s1": "happy", "s2": "sad", "s3": "angry"})
    write_task(data, "cmumosi", {"m1": 1.5, "m2": -2.0, "m3": 0.8})
    models = tmp_path / "answers"
    write_run(models, "mer2023", "run1", {"ep1": {"answers": {
        "s1": "He is happy.", "s2": "He is not happy; he is sad.", "s3": "Calm, not angry."}}})
    write_run(models, "cmumosi", "run1", {"ep1": {"answers": {
        "m1": "She seems joyful", "m2": "他很生气", "m3": "no sign of sadness, just calm"}}})
    out = tmp_path / "results"
    rc = main(["--model", "replay", "--model-args", f"path={models},name=toy", "--task", "mer2023,cmumosi",
               "--data-root", str(data), "--lexicon", str(tiny_lexicon_dir), "--output", str(out),
               "--extractor", "lexicon", "--no-cache", "--allow-count-mismatch"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "toy" / "mer2023" / "ep1.json").read_text())
    assert "extractor:lexicon" in result["flags"]
    assert result["extraction"]["extractor"]["backend"] == "lexicon"
    assert result["primary"] == pytest.approx(2 / 3)       # s3 'calm' is no hit for 'angry'
    senti = json.loads((out / "toy" / "cmumosi" / "ep1.json").read_text())
    assert senti["primary"] == 1.0                         # positive, negative (Chinese), positive
    with open(out / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert "extractor:lexicon" in row["flags"]
