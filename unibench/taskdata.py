"""What a task is (:class:`TaskSpec`) and its loaded test split (:class:`TaskData`): the types tasks,
adapters and the runner share. Leaf module; the loaders and the nine definitions live in ``tasks/``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from unibench.errors import UserError
from unibench.prompts import AFFECTGPT_OV_QUESTION as AFFECTGPT_QUESTION
from unibench.strict import read_csv_rows

Family = Literal["basic", "sentiment", "ov"]            # hit rate | WAF | OV F-score
GtKind = Literal["emo_str", "emo_index", "val", "openset"]
Level = Literal["level1", "level2"]                      # emotion-wheel level the labels map to
SENTIMENT: Family = "sentiment"                          # the family scored from prompt B's sentiments
FAMILY_METRIC: dict[str, str] = {"basic": "hit_rate", "sentiment": "waf", "ov": "fscore"}


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task (spec §1). Plain data: the loader below does the rest."""

    id: str
    folder: str
    gt_file: str
    gt_key: str                       # npz key, or 'name,openset' columns for csv
    expected_count: int
    gt_kind: GtKind
    family: Family
    subtitle_file: str
    subtitle_column: str = "english"
    split: str = "all"                # all | session5
    emotions: tuple[str, ...] = ()    # for emo_index
    media: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (kind, folder, extensions)
    question: str = AFFECTGPT_QUESTION
    # False for extra tasks (e.g. OV-MERD): runnable by id, never in '--task all' or the leaderboard.
    in_benchmark: bool = True

    @property
    def primary_metric(self) -> str:
        return FAMILY_METRIC[self.family]

    @property
    def fingerprint(self) -> str:
        """Short hash of the definition: enters cache keys and results."""
        data = {k: v for k, v in asdict(self).items() if k != "in_benchmark"}  # membership is not content
        blob = json.dumps(data, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class TaskData:
    spec: TaskSpec
    root: Path                        # <data-root>/<folder>
    gt: dict[str, Any]                # name -> emo word | valence | list of words
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # e.g. count-mismatch, bad-gt-skipped:N (leaderboard)
    _subtitles: dict[str, dict[str, str]] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.gt)

    def subtitles(self, column: str | None = None) -> dict[str, str]:
        """name -> subtitle ('' when absent), from the task's column or ``column``. Read on first use:
        scoring never needs it."""
        column = column or self.spec.subtitle_column
        if self._subtitles is None:
            self._subtitles = {}
        if column not in self._subtitles:
            self._subtitles[column] = read_subtitles(self.root / self.spec.subtitle_file, column)
        return self._subtitles[column]

    def media_path(self, name: str, kind: str) -> Path | None:
        """The first existing media file of this kind for a sample, else None."""
        for k, folder, exts in self.spec.media:
            if k != kind:
                continue
            for ext in exts:
                path = self.root / folder / f"{name}{ext}"
                if path.exists():
                    return path
        return None

    def media_candidates(self, kind: str) -> list[str]:
        return [f"{folder}/<name>{'|'.join(exts)}" for k, folder, exts in self.spec.media if k == kind]


def read_subtitles(path: Path, column: str) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"subtitle file not found: {path}")
    rows = read_csv_rows(path, required=("name", column))
    out: dict[str, str] = {}
    for r in rows:
        name, text = r["name"], r.get(column) or ""
        if name in out and out[name] != text:  # the model would silently be asked with the last one
            raise UserError(f"{path}: sample '{name}' has two different '{column}' subtitles; keep one row")
        out[name] = text
    return out
