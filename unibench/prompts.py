"""The protocol's prompt strings, verbatim (spec §2, §3, §6).

They are part of the metric: prompt B keeps its runs of nine spaces. Each
prompt's sha256 is recorded with every extraction so a result says exactly
which text produced it.
"""
from __future__ import annotations

import hashlib

PROMPT_A_OV_LABELS = 'Please assume the role of an expert in the field of emotions. We provide clues that may be related to the emotions of the characters. Based on the provided clues, please identify the emotional states of the main character. The main character is the one with the most detailed clues. Please separate different emotional categories with commas and output only the clearly identifiable emotional categories in a list format. If none are identified, please output an empty list. Input: We cannot recognize his emotional state; Output: [] Input: His emotional state is happy, sad, and angry; Output: [happy, sad, angry] Input: {reason}; Output: '
PROMPT_B_SENTIMENT = 'Please act as an expert in the field of emotions.         We provide a few words to describe the emotions of a character.         Please choose the most likely sentiment from the given candidates: [positive, negative, neutral]         Please direct output answer without analyzing process.         Input: [joyful]; Output: positive         Input: []; Output: neutral         Input: {reason}; Output: '
PROMPT_GROUPING = "Please assume the role of an expert in the field of emotions. We provide a set of emotions. Please group the emotions, with each group containing emotions with the same meaning. Directly output the results. The output format should be a list containing multiple lists. Input: ['Agree', 'agreement', 'Relaxed', 'acceptance', 'pleasant', 'relaxed', 'Accept', 'positive', 'Happy'] Output: [['Agree', 'agreement', 'Accept', 'acceptance'], ['Relaxed', 'relaxed'],['pleasant', 'positive', 'Happy']] Input: {merge} Output:"
AFFECTGPT_OV_QUESTION = 'Please recognize all possible emotional states of the character.'
AFFECTGPT_DESCRIPTION_QUESTION = "Please infer the person's emotional state and provide your reasoning process."
OVMER_BASELINE_WITH_SUBTITLE = 'Subtitle content of this video: {subtitle}; As an expert in the field of emotions, please focus on the facial expressions, body movements, environment, subtitle content, etc., in the video and recognize all possible emotional states of the individual.'
OVMER_BASELINE_WITHOUT_SUBTITLE = 'As an expert in the field of emotions, please focus on the facial expressions, body movements, environment, subtitle content, etc., in the video and recognize all possible emotional states of the individual.'


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_a(reason: str) -> str:
    """Free text -> label list. ``str.replace`` keeps any braces in the answer intact."""
    return PROMPT_A_OV_LABELS.replace("{reason}", str(reason))


def prompt_b(ov_answer: str) -> str:
    """Prompt A's raw answer -> positive / negative / neutral."""
    return PROMPT_B_SENTIMENT.replace("{reason}", str(ov_answer))


def prompt_grouping(labels: list[str]) -> str:
    """``{merge}`` is Python's repr of the list of merged labels."""
    return PROMPT_GROUPING.replace("{merge}", repr(list(labels)))
