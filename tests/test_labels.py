"""Label-list parsing (paper mode, quirks included) and LLM answer post-processing (spec §3)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unibench.labels import normalise_labels, postprocess_llm_answer, sentiment_value, string_to_list


@pytest.mark.parametrize("text, expected", [
    ("[happy, sad, angry]", ["happy", "sad", "angry"]),
    ("['happy', 'sad']", ["happy", "sad"]),
    ('["happy", "sad"]', ["happy", "sad"]),
    ("happy, sad", ["happy", "sad"]),
    ("[]", []),
    ("", []),
    ("[  ]", []),
    ("[happy,,  , sad]", ["happy", "sad"]),
    # the apostrophe quirk, kept on purpose in paper mode
    ("[don't care, happy]", ["don", "t care", "happy"]),
    ("['don't know']", ["don", "t know"]),
    # only one leading '[' and one trailing ']' are dropped
    ("[[happy], [sad]]", ["[happy]", "[sad]"]),
    ("happy]", ["happy"]),
    ("[happy", ["happy"]),
    # no lower-casing at this stage
    ("[Happy, SAD]", ["Happy", "SAD"]),
    ("[ joyful ]", ["joyful"]),
])
def test_string_to_list(text, expected):
    assert string_to_list(text) == expected


def test_string_to_list_passthrough_and_missing():
    assert string_to_list(["Happy", " sad "]) == ["Happy", " sad "]   # lists pass through untouched
    assert string_to_list(("a", "b")) == ["a", "b"]
    assert string_to_list(np.array(["happy", "sad"])) == ["happy", "sad"]
    assert string_to_list(np.array([], dtype=str)) == []
    assert string_to_list(float("nan")) == []
    assert string_to_list(np.float64("nan")) == []
    assert string_to_list(None) == []
    assert string_to_list(np.array("[happy, sad]")) == ["happy", "sad"]   # 0-d array holds the string


def test_normalise_labels_lowers_and_strips():
    assert normalise_labels("[Happy,  SAD , Worried]") == ["happy", "sad", "worried"]
    assert normalise_labels(["  Joy "]) == ["joy"]
    assert normalise_labels(math.nan) == []
    assert normalise_labels(None) == []


@pytest.mark.parametrize("raw, expected", [
    ("  [happy, sad]  ", "[happy, sad]"),
    ("Output: [happy]", "[happy]"),
    ("output:[happy]", "[happy]"),
    ("Input: positive", "positive"),
    ("input : neutral", "neutral"),
    ("Output：[happy]", "[happy]"),            # full-width colon
    ("[happy,\n sad]\n", "[happy, sad]"),      # newlines removed
    ("positive\n", "positive"),
    ("Outputs: x", "s: x"),                     # only the word is dropped, as published
    ("The Output: [x]", "The Output: [x]"),     # only a leading word
    (": [x]", "[x]"),
    ("", ""),
])
def test_postprocess_llm_answer(raw, expected):
    assert postprocess_llm_answer(raw) == expected


def test_sentiment_value():
    assert sentiment_value("positive") == 1
    assert sentiment_value("negative") == -1
    assert sentiment_value("neutral") == 0
    # anything else is "not parsed": the scorer counts it as 0 and warns
    for other in ("mixed", "Positive", " positive", "", None, 1, np.str_("happy")):
        assert sentiment_value(other) is None
