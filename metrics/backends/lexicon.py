"""`lexicon`: an offline, deterministic extractor (NOT the published protocol).

The published protocol asks an LLM (Qwen2.5-7B-Instruct) to turn a model's
free text into labels (prompt A) and labels into a sentiment (prompt B).
This backend does both without any model, so it runs anywhere in seconds;
its numbers are *not* comparable with the published ones, and every result
built on it carries the flag ``extractor:lexicon``.

Labels (``extract_ov``)
    Every surface form of the loaded lexicon's ``format.csv`` (lower-cased)
    is searched for in the text, case-insensitively, on word boundaries,
    longest phrase first ("at a loss for words" before "at a loss"; hyphens
    and spaces are interchangeable, so "double-crossed" matches "double
    crossed"). Punctuation never joins words. A match is dropped when a
    negator (``NEGATORS``: not, no, never, without, any "n't" word, ...)
    stands within ``negation_window`` words before it in the same clause
    (a clause ends at , . ; : ! ? dashes and brackets and at "but",
    "however", ...): "not happy", "isn't angry", "no sign of fear",
    "without anger" give nothing. Forms listed in
    ``data/lexicon_stopwords.txt`` are everyday words that ``format.csv``
    happens to list as emotion forms ("face", "emotion", "see", "going") and
    are not matched. The result is prompt A's format, "[happy, sad]", in
    order of first appearance, so the rest of the pipeline is unchanged.

Chinese
    Several datasets are Chinese, and an answer in Chinese must not score
    zero silently. Text holding CJK characters is also segmented with jieba
    (the ``zh`` extra) and each word is looked up in ``data/zh_emotions.csv``
    (about 200 common Chinese emotion words -> an English word of the
    lexicon, written for this project). Chinese negators (不, 没, 没有, 并不,
    毫无, ...) before a word in the same clause, or glued to it ("不开心"),
    drop it. We chose this over translating with an LLM so the backend stays
    offline and deterministic.

Sentiment (``extract_sentiment``)
    Each label gets a valence from ``data/valence.csv``, a table of the
    wheels' level-1 words (happy, sad, scared, ...; "surprised" is neutral):
    when the label's base word stands in a wheel, the level-1 word above it
    there votes; otherwise the published mapping of the label onto each
    wheel votes. The label's valence is the sign of the vote sum. The
    answer is the majority of its labels' valences, positive against
    negative; a tie or no mapped label gives "neutral".
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from unibench.errors import MissingExtraError, UserError
from unibench.metrics.extraction import Extractor, register_extractor
from unibench.labels import normalise_labels

VERSION = "1"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
VALENCE_FILE = DATA_DIR / "valence.csv"
ZH_FILE = DATA_DIR / "zh_emotions.csv"
STOPWORDS_FILE = DATA_DIR / "lexicon_stopwords.txt"
DATA_FILES = (VALENCE_FILE, ZH_FILE, STOPWORDS_FILE)

# English negation: a small fixed list, plus every "n't" contraction.
NEGATORS = frozenset({
    "not", "no", "never", "without", "nor", "neither", "none", "cannot", "hardly", "barely",
    "lack", "lacks", "lacked", "lacking", "absence", "devoid",
})
# Words that end the clause a negator governs ("not sad but angry": angry stays).
CLAUSE_WORDS = frozenset({"but", "however", "although", "though", "yet", "while", "whereas", "instead"})

# Chinese negation and clause ends.
ZH_NEGATORS = ("并没有", "从来没", "没有", "并不", "毫无", "毫不", "绝不", "从不", "从没", "并非", "不是", "不再",
               "不太", "不够", "不", "没", "无", "未", "别", "非")
ZH_CLAUSE_WORDS = frozenset({"但", "但是", "可是", "然而", "却", "不过", "而是"})

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# A word (letters/digits, inner apostrophes kept: "isn't") or one clause-breaking mark.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[.,;:!?()\[\]{}\"/–—…]|[\u3000-\u303f\uff01-\uff1f]")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "‐": "-", "‑": "-"})
_BREAK = "|"  # token standing for any clause break


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation that ends a clause becomes ``_BREAK``.

    Hyphens join nothing: "double-crossed" and "double crossed" both give
    ["double", "crossed"], so either spelling matches the lexicon's form.
    """
    text = text.lower().translate(_APOSTROPHES).replace("-", " ")
    return [tok if tok[0].isalnum() and tok not in CLAUSE_WORDS else _BREAK for tok in _TOKEN.findall(text)]


def is_negator(token: str) -> bool:
    return token in NEGATORS or token.endswith("n't")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- data files

def read_valence_table(path: Path = VALENCE_FILE) -> dict[str, int]:
    """Level-1 wheel word -> +1 / -1 / 0."""
    values = {"positive": 1, "negative": -1, "neutral": 0}
    out: dict[str, int] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), 2):
            word, valence = (row.get("word") or "").strip().lower(), (row.get("valence") or "").strip()
            if not word or valence not in values:
                raise UserError(f"{path}: line {lineno}: needs a word and a valence of positive/negative/neutral")
            out[word] = values[valence]
    return out


def read_zh_table(path: Path = ZH_FILE) -> dict[str, str]:
    """Chinese emotion word -> English word of the lexicon."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), 2):
            zh, en = (row.get("zh") or "").strip(), (row.get("en") or "").strip().lower()
            if not zh or not en:
                raise UserError(f"{path}: line {lineno}: needs 'zh' and 'en'")
            out[zh] = en
    return out


def read_stopwords(path: Path = STOPWORDS_FILE) -> set[str]:
    words = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip().lower()
            if line:
                words.add(line)
    return words


# ---------------------------------------------------------------- matching

@dataclass(frozen=True)
class Match:
    label: str
    start: int          # position (token index for English, character offset for Chinese)
    negated: bool


class PhraseMatcher:
    """Longest-first phrase lookup over word tokens."""

    def __init__(self, forms: Sequence[str], stopwords: set[str] = frozenset()):
        self.phrases: dict[tuple[str, ...], str] = {}
        for form in forms:
            if form in stopwords:
                continue
            key = tuple(tokenize(form))
            # Forms whose tokens hold punctuation or negators cannot be claims of an emotion.
            if not key or _BREAK in key or (len(key) == 1 and is_negator(key[0])):
                continue
            self.phrases.setdefault(key, form)
        # first word -> phrase lengths starting with it, longest first: most tokens start nothing
        starts: dict[str, set[int]] = {}
        for key in self.phrases:
            starts.setdefault(key[0], set()).add(len(key))
        self.starts = {w: sorted(lengths, reverse=True) for w, lengths in starts.items()}

    def find(self, tokens: list[str], window: int) -> list[Match]:
        out: list[Match] = []
        i, n = 0, len(tokens)
        while i < n:
            for length in self.starts.get(tokens[i], ()):
                form = self.phrases.get(tuple(tokens[i:i + length])) if i + length <= n else None
                if form is not None:
                    out.append(Match(form, i, self._negated(tokens, i, window)))
                    i += length
                    break
            else:
                i += 1
        return out

    @staticmethod
    def _negated(tokens: list[str], start: int, window: int) -> bool:
        for j in range(start - 1, max(start - 1 - window, -1), -1):
            if tokens[j] == _BREAK:
                return False
            if is_negator(tokens[j]):
                return True
        return False


_SEGMENTERS: dict[str, Any] = {}


class ChineseMatcher:
    """jieba segmentation against the Chinese word list, with Chinese negators."""

    def __init__(self, table: dict[str, str]):
        self.table = table
        self._tokenizer = None

    def _segmenter(self):
        if self._tokenizer is None:
            key = "\n".join(sorted(self.table))
            if key not in _SEGMENTERS:  # loading jieba's dictionary takes a second: once per process
                try:
                    import jieba
                except ImportError:
                    raise MissingExtraError("jieba", "zh", "the lexicon extractor on Chinese answers") from None
                import logging

                jieba.setLogLevel(logging.WARNING)
                tk = jieba.Tokenizer()  # our own instance: jieba's global dictionary stays untouched
                for word in [*self.table, *ZH_NEGATORS]:  # our words segment as units ("自豪", not "自" + "豪")
                    tk.add_word(word, freq=100000)
                _SEGMENTERS[key] = tk
            self._tokenizer = _SEGMENTERS[key]
        return self._tokenizer

    def find(self, text: str, window: int) -> list[Match]:
        tokens = [(w, s) for w, s, _ in self._segmenter().tokenize(text) if w.strip()]
        out = []
        for i, (word, start) in enumerate(tokens):
            label = self.table.get(word)
            glued = False
            if label is None:  # "不开心" segmented as one word: a negator glued to a listed word
                for neg in ZH_NEGATORS:
                    if word.startswith(neg) and word[len(neg):] in self.table:
                        label, glued = self.table[word[len(neg):]], True
                        break
            if label is None:
                continue
            out.append(Match(label, start, glued or self._negated(tokens, i, window)))
        return out

    @staticmethod
    def _negated(tokens: list[tuple[str, int]], i: int, window: int) -> bool:
        for j in range(i - 1, max(i - 1 - window, -1), -1):
            word = tokens[j][0]
            if word in ZH_CLAUSE_WORDS or not (_CJK.search(word) or word.isalnum()):
                return False  # punctuation or "但是" ends the clause
            if word in ZH_NEGATORS:
                return True
        return False


# ---------------------------------------------------------------- the extractor

@dataclass
class LexiconOptions:
    negation_window: int = 3   # words before a match searched for a negator
    chinese: bool = True       # segment CJK text with jieba against data/zh_emotions.csv


def format_labels(labels: Sequence[str]) -> str:
    """Prompt A's answer format: "[happy, sad]"."""
    return "[" + ", ".join(labels) + "]"


@register_extractor
class LexiconExtractor(Extractor):
    name = "lexicon"
    description = ("offline, deterministic: lexicon word/phrase matching with negation, jieba for Chinese, "
                   "valence table for sentiment (not the published protocol)")
    Options = LexiconOptions
    paper_protocol = False

    def _need_lexicon(self):
        if self.lexicon is None:
            raise UserError("the lexicon extractor needs the emotion-wheel lexicon (--lexicon DIR)")
        if self.options.negation_window < 0:
            raise UserError("--extractor-args negation_window must be >= 0")
        return self.lexicon

    def identity(self) -> dict[str, Any]:
        lex = self.lexicon
        return {
            "backend": self.name, "version": VERSION, "paper_protocol": False,
            "lexicon_sha256": getattr(lex, "sha256", None),
            "data": {p.name: file_sha256(p) for p in DATA_FILES},
            "negation_window": self.options.negation_window, "chinese": self.options.chinese,
            "note": "offline lexicon matching, not the published LLM protocol",
        }

    # ------------------------------------------------------------ matchers
    @cached_property
    def _english(self) -> PhraseMatcher:
        return PhraseMatcher(self._need_lexicon().vocabulary(), read_stopwords())

    @cached_property
    def _chinese(self) -> ChineseMatcher:
        return ChineseMatcher(read_zh_table())

    def labels(self, text: str) -> list[str]:
        """The non-negated lexicon labels of one answer, in order of first appearance."""
        if not isinstance(text, str) or not text.strip():
            return []
        window = self.options.negation_window
        matches = self._english.find(tokenize(text), window)
        if self.options.chinese and _CJK.search(text):
            # English matches sort before Chinese ones; order only matters for display.
            matches = matches + self._chinese.find(text, window)
        return list(dict.fromkeys(m.label for m in matches if not m.negated))

    def extract_ov(self, texts: Sequence[str]) -> list[str | None]:
        self._need_lexicon()
        return [format_labels(self.labels(t)) for t in texts]

    # ------------------------------------------------------------ sentiment
    @cached_property
    def _valence_table(self) -> dict[str, int]:
        return read_valence_table()

    @cached_property
    def _valence_memo(self) -> dict[str, int | None]:
        return {}

    def label_valence(self, label: str) -> int | None:
        """+1 / -1 / 0 for a lexicon label; None when no wheel knows it."""
        label = label.lower().strip()
        memo = self._valence_memo
        if label not in memo:
            memo[label] = self._label_valence(label)
        return memo[label]

    def _label_valence(self, label: str) -> int | None:
        lex = self._need_lexicon()
        table = self._valence_table
        raws = lex.format2raws.get(label, [])
        votes = []
        for w in range(1, 6):  # 1. the base word stands in the wheel: the level-1 word above it
            wmap = lex.wheel_map(w, "level1")
            above = {wmap[r] for r in raws if r in wmap}
            if above:
                votes.append(_sign(sum(table.get(a, 0) for a in above)))
        if not votes:  # 2. otherwise the published synonym mapping onto each wheel
            for w in range(1, 6):
                word = lex.map_label(label, w)
                if word:
                    votes.append(table.get(word, 0))
        if not votes:
            return None
        return _sign(sum(votes))

    def sentiment(self, labels: Sequence[str]) -> str:
        pos = neg = 0
        for label in labels:
            v = self.label_valence(label)
            if v is not None and v > 0:
                pos += 1
            elif v is not None and v < 0:
                neg += 1
        return "positive" if pos > neg else "negative" if neg > pos else "neutral"

    def extract_sentiment(self, ov_answers: Sequence[str]) -> list[str | None]:
        self._need_lexicon()
        return [self.sentiment(normalise_labels(a)) for a in ov_answers]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)
