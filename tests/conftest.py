"""Shared fixtures. Real data lives in ../shared/data beside the repo; tests that need it skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("UNIBENCH_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mer-unibench-sample").is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (the ../shared folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lexicon_2025(shared_data, tmp_path_factory):
    from unibench.metrics.lexicon import load_lexicon

    return load_lexicon(shared_data / "emotion_wheel-affectgpt2025", cache_dir=tmp_path_factory.mktemp("lexcache"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's ~/.cache from tests."""
    monkeypatch.setenv("UNIBENCH_CACHE", str(tmp_path / "unibench-cache"))
