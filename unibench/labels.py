"""Label-list parsing and LLM answer post-processing, as the published code does it."""
from __future__ import annotations

import math
import re
from typing import Any

_SPLIT = re.compile(r"[',\"]")
def string_to_list(value: Any) -> list[str]:
    """Parse a label list the way the published scoring does (paper mode).

    Lists and arrays pass through; "" and NaN give []; otherwise one leading
    ``[`` and one trailing ``]`` are dropped and the rest is split on any of
    ``'`` ``"`` ``,``. The apostrophe split is a known quirk kept on purpose:
    "don't" becomes ["don", "t"].
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, str):
        out = value.tolist()
        return out if isinstance(out, list) else string_to_list(out)
    if isinstance(value, float) and math.isnan(value):
        return []
    text = str(value)
    if text == "":
        return []
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [piece.strip() for piece in _SPLIT.split(text) if piece.strip()]


def normalise_labels(value: Any) -> list[str]:
    """Parse, then lower-case and strip each label (what the scorers compare)."""
    return [str(item).lower().strip() for item in string_to_list(value)]


def postprocess_llm_answer(text: str) -> str:
    """Clean an extractor LLM's answer as the published pipeline does.

    Strip; then, in this order and each at most once, drop a leading 输入,
    输出 and 翻译 ("input", "output", "translation"), then a leading
    ``output``, ``Output``, ``input`` and ``Input`` (so "Output Input: x"
    loses both words); strip; drop one leading colon (ASCII or full-width);
    remove newlines; strip.
    """
    text = text.strip()
    for word in ("输入", "输出", "翻译"):
        if text.startswith(word):
            text = text[len(word):]
    for word in ("output", "Output", "input", "Input"):
        if text.startswith(word):
            text = text[len(word):]
    text = text.strip()
    for colon in (":", "："):
        if text.startswith(colon):
            text = text[len(colon):]
    return text.strip().replace("\n", "").strip()


SENTIMENT_VALUES = {"positive": 1, "negative": -1, "neutral": 0}


def sentiment_value(answer: Any) -> int | None:
    """Prompt B's answer to -1/0/1; None when it is none of the three words."""
    if not isinstance(answer, str):
        return None
    return SENTIMENT_VALUES.get(answer)
