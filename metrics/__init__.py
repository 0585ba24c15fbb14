"""Metrics: label parsing, the emotion-wheel lexicon, scores, extraction."""
