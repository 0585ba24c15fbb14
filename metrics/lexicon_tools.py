"""Lexicon audit (what the wheels do to the basic tasks' labels) and fetch (with sha256 checks)."""
from __future__ import annotations

import hashlib
import http.client
import shutil
import tempfile
import urllib.request
from pathlib import Path

from unibench.errors import UserError
from unibench.metrics.lexicon import LEXICON_FILES, Lexicon

# The basic tasks' label sets, as the published loaders name them.
BASIC_LABELS = {
    "mer2023": ("angry", "happy", "neutral", "sad", "surprise", "worried"),
    "mer2024": ("angry", "happy", "neutral", "sad", "surprise", "worried"),
    "meld": ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"),
    "iemocapfour": ("happy", "sad", "neutral", "anger"),
}


def audit(lexicon: Lexicon, labels: dict[str, tuple[str, ...]] | None = None, level: str = "level1") -> list[dict]:
    """One finding per (task, label, wheel) that deserves a look.

    * ``unmapped``: the label maps to nothing (its samples drop out of the hit rate);
    * ``indirect``: the wheel holds the label itself under one cluster but the
      published sorted-synonym rule sends it to another (e.g. fear -> happy);
    * ``collision``: two different labels of one task land on the same cluster,
      so the hit rate cannot tell them apart.
    """
    labels = labels or BASIC_LABELS
    findings = []
    for task, names in labels.items():
        for w in range(1, 6):
            wmap = lexicon.wheel_map(w, level)
            mapped = {}
            for label in names:
                got = lexicon.map_label(label, w, level)
                mapped[label] = got
                if not got:
                    findings.append({"task": task, "label": label, "wheel": w, "kind": "unmapped",
                                     "detail": "maps to nothing: samples with this label are skipped"})
                    continue
                direct = wmap.get(label) or next((wmap[f] for f in lexicon.format2raws.get(label, []) if f in wmap), "")
                if direct and direct != got:
                    how = lexicon.explain(label, w, level)
                    findings.append({"task": task, "label": label, "wheel": w, "kind": "indirect",
                                     "detail": f"-> {got} via '{how['via']}', though the wheel puts it under {direct}"})
            seen: dict[str, list[str]] = {}
            for label, got in mapped.items():
                if got:
                    seen.setdefault(got, []).append(label)
            for cluster, group in seen.items():
                if len(group) > 1:
                    findings.append({"task": task, "label": "+".join(group), "wheel": w, "kind": "collision",
                                     "detail": f"all map to {cluster}"})
    return findings


# ---------------------------------------------------------------- fetch

# sha256 of the lexicon files used for the AffectGPT paper's numbers.
OFFICIAL_SHA256 = {
    "format.csv": "ba6de7d61db8e129d1d7ef8a2aae22a9e93a2c2e3e683e6f2735d04455f016f2",
    "synonym.xlsx": "23f81f9ab1d2418aaf96775304fb5dc52c62bb5d5ef652a97471d045fc9d2e29",
    "wheel1.xlsx": "e70485d354b82a7491ff24648273182a5f4f13f92c76e6b3e4f9033f5e6afcc1",
    "wheel2.xlsx": "acc001e076a8e60440361f58dd8c05ed900c4890c84bb7d8d1df93708a7d9c87",
    "wheel3.xlsx": "d62f30bf88c17c55876634cd088eacaef98278fc25457474364439872f9dbf83",
    "wheel4.xlsx": "660260561b7fe15550f3679a01e7c783608ce3403d4c28db0a88520f68d83aea",
    "wheel5.xlsx": "2dd4595b2cf8e7628ca06a416a8e38ac831614b244f23d1ae613dc34007649f1",
}
UPSTREAM = "https://raw.githubusercontent.com/zeroQiaoba/AffectGPT/{ref}/AffectGPT/emotion_wheel/{file}"
DEFAULT_REF = "master"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(dest: Path, base_url: str = UPSTREAM, ref: str = DEFAULT_REF,
          expected: dict[str, str] | None = None, timeout: float = 60.0) -> Path:
    """Download the lexicon files into ``dest``; every file must match its pinned sha256.

    Files land in a temporary folder first, so a failed check leaves ``dest``
    untouched.
    """
    expected = OFFICIAL_SHA256 if expected is None else expected
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        for name in LEXICON_FILES:
            try:
                url = base_url.format(ref=ref, file=name)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise UserError(f"lexicon fetch: --base-url '{base_url}' is not a template with {{ref}} and "
                                f"{{file}} ({type(exc).__name__}: {exc})") from None
            target = Path(tmp) / name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as fh:
                    shutil.copyfileobj(resp, fh)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # InvalidURL: a URL that is not one
                raise UserError(f"lexicon fetch: cannot download {url} ({exc})") from None
            got = sha256_file(target)
            if name in expected and got != expected[name]:
                raise UserError(f"lexicon fetch: {name} from {url} has sha256 {got}, expected {expected[name]}; "
                                "nothing was written")
        for name in LEXICON_FILES:
            shutil.move(str(Path(tmp) / name), dest / name)
    return dest
