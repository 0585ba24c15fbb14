"""The published numbers from the released answers, through the whole CLI (issue 2, 'Done when').

Needs ../shared/data (skipped with a reason when absent): MER2023 best = 78.54 at checkpoint 50 and
CMU-MOSI best WAF = 81.30 at checkpoint 40 must come out exactly, with both lexicon versions.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest

from unibench.cli import main

CK = {30: "checkpoint_000030_loss_0.602", 35: "checkpoint_000035_loss_0.597", 40: "checkpoint_000040_loss_0.569",
      45: "checkpoint_000045_loss_0.551", 50: "checkpoint_000050_loss_0.527", 55: "checkpoint_000055_loss_0.493",
      60: "checkpoint_000060_loss_0.480"}
# Every answer file's primary metric with the 2025 lexicon (the paper's); regression values.
MER2023_HIT = {30: 0.7255402730548648, 35: 0.7678668223113232, 40: 0.73442825965589, 45: 0.746375678830635,
               50: 0.7853869969040248, 55: 0.7569750799370654, 60: 0.73686849718317}
CMUMOSI_WAF = {30: 0.8121243289256722, 35: 0.7848303812919246, 40: 0.8130135648592024, 45: 0.807404351183497,
               50: 0.7984825883084752, 55: 0.7953405499982902, 60: 0.7830397046943699}
# The 2026 lexicon changes one MER2023 file's hit rate (CMU-MOSI uses no wheel).
MER2023_HIT_2026 = {**MER2023_HIT, 55: 0.7563558848906258}


def _run(shared_data: Path, out: Path, lexicon: str, *extra: str) -> int:
    sample = shared_data / "mer-unibench-sample"
    return main(["--model", "replay", "--model-args", f"path={sample / 'outputs' / 'affectgpt'}",
                 "--task", "mer2023,cmumosi", "--data-root", str(sample / "dataset"),
                 "--lexicon", str(shared_data / lexicon), "--output", str(out), *extra])


def _leaderboard(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "leaderboard.csv", encoding="utf-8", newline="") as fh:
        return {r["selection"]: r for r in csv.DictReader(fh)}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run_2025(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro2025")
    assert _run(shared_data, out, "emotion_wheel-affectgpt2025") == 0
    return out


def test_published_numbers(run_2025):
    row = _leaderboard(run_2025)["best-of-7"]
    assert row["model"] == "affectgpt"
    assert row["mer2023"] == "78.54" and row["cmumosi"] == "81.30"
    assert row["mean"] == "79.92" and row["n_tasks"] == "2" and row["flags"] == ""
    assert all(row[t] == "" for t in ("mer2024", "meld", "iemocapfour", "cmumosei", "sims", "simsv2", "ovmerdplus"))


def test_best_files_and_every_checkpoint(run_2025):
    mer = _json(run_2025 / "affectgpt" / "mer2023" / "summary.json")
    mosi = _json(run_2025 / "affectgpt" / "cmumosi" / "summary.json")
    assert mer["best"] == CK[50] and mosi["best"] == CK[40]
    assert mer["last"] == mosi["last"] == CK[60]
    assert {f["label"]: f["primary"] for f in mer["files"]} == pytest.approx({CK[k]: v for k, v in MER2023_HIT.items()},
                                                                            abs=1e-12)
    assert {f["label"]: f["primary"] for f in mosi["files"]} == pytest.approx({CK[k]: v for k, v in CMUMOSI_WAF.items()},
                                                                             abs=1e-12)
    assert mer["n_test"] == 411 and mosi["n_test"] == 686


def test_detailed_results(run_2025, shared_data):
    mosi = _json(run_2025 / "affectgpt" / "cmumosi" / f"{CK[40]}.json")
    assert mosi["metrics"]["accuracy"] == pytest.approx(0.8125, abs=1e-12)       # CMU-MOSI accuracy is reported
    assert mosi["metrics"]["waf"] == pytest.approx(CMUMOSI_WAF[40], abs=1e-12)
    assert mosi["counts"] == {"n_samples": 686, "n_scored": 656, "n_unparsed_sentiment": 7}
    assert mosi["extraction"]["sentiment"].endswith(f"{CK[40]}-openset-sentiment.npz")
    mer = _json(run_2025 / "affectgpt" / "mer2023" / f"{CK[50]}.json")
    assert set(mer["per_wheel"]) == {f"wheel{w}" for w in range(1, 6)}
    per = [mer["per_wheel"][f"wheel{w}"]["hit_rate"] for w in range(1, 6)]
    assert sum(per) / 5 == pytest.approx(MER2023_HIT[50], abs=1e-12)
    assert mer["lexicon"]["sha256"] == _json(run_2025 / "affectgpt" / "run.json")["lexicon"]["sha256"]
    with open(run_2025 / "affectgpt" / "mer2023" / f"{CK[50]}.samples.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 411 and {"name", "gt", "pred", "hit_w1", "gt_w2", "pred_w5"} <= set(rows[0])
    # neutral samples map to nothing on every wheel: skipped, as published
    neutral = [r for r in rows if r["gt"] == "neutral"]
    assert neutral and all(r[f"hit_w{w}"] == "" for r in neutral for w in range(1, 6))


def test_waf_and_accuracy_match_sklearn_on_the_real_files(run_2025, shared_data):
    from sklearn.metrics import accuracy_score, f1_score

    from unibench.safe_npz import load_npz

    sample = shared_data / "mer-unibench-sample"
    gt = load_npz(sample / "dataset" / "cmumosi-process" / "label.npz", ["test_corpus"])["test_corpus"]
    run_dir = next((sample / "outputs" / "affectgpt" / "results-cmumosi").iterdir())
    value = {"positive": 1, "negative": -1, "neutral": 0}
    for k, label in CK.items():
        data = load_npz(run_dir / f"{label}-openset-sentiment.npz")
        pred = dict(zip(data["filenames"].tolist(), data["fileitems"].tolist()))
        kept = [n for n, item in gt.items() if item["val"] != 0]
        y = [gt[n]["val"] > 0 for n in kept]
        y_hat = [value.get(pred.get(n), 0) > 0 for n in kept]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            waf = f1_score(y, y_hat, average="weighted")
        ours = _json(run_2025 / "affectgpt" / "cmumosi" / f"{label}.json")["metrics"]
        assert ours["waf"] == pytest.approx(waf, abs=1e-12)
        assert ours["accuracy"] == pytest.approx(accuracy_score(y, y_hat), abs=1e-12)


def test_fixed_file_rows(run_2025, shared_data):
    assert _run(shared_data, run_2025, "emotion_wheel-affectgpt2025", "--select", "last") == 0
    assert _run(shared_data, run_2025, "emotion_wheel-affectgpt2025", "--select", CK[40]) == 0
    rows = _leaderboard(run_2025)
    assert set(rows) == {"best-of-7", "last", f"file:{CK[40]}"}
    assert (rows["last"]["mer2023"], rows["last"]["cmumosi"]) == ("73.69", "78.30")
    assert (rows[f"file:{CK[40]}"]["mer2023"], rows[f"file:{CK[40]}"]["cmumosi"]) == ("73.44", "81.30")
    assert rows["best-of-7"]["mer2023"] == "78.54"


def test_the_2026_lexicon(shared_data, tmp_path):
    assert _run(shared_data, tmp_path, "emotion_wheel-mer2026") == 0
    row = _leaderboard(tmp_path)["best-of-7"]
    assert row["mer2023"] == "78.54" and row["cmumosi"] == "81.30"     # the best files are unaffected
    mer = _json(tmp_path / "affectgpt" / "mer2023" / "summary.json")
    assert {f["label"]: f["primary"] for f in mer["files"]} == pytest.approx(
        {CK[k]: v for k, v in MER2023_HIT_2026.items()}, abs=1e-12)
    from unibench.metrics.lexicon import lexicon_hash

    assert mer["lexicon_sha256"] == lexicon_hash(shared_data / "emotion_wheel-mer2026")
    assert mer["lexicon_sha256"] != lexicon_hash(shared_data / "emotion_wheel-affectgpt2025")
