"""OV-MERD as an extra task: registration, the nine-task leaderboard, scoring the ten baselines (EW, grouping)."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures import AnswersPrompts, tiny_lexicon, tiny_lexicon_dir, write_answer_npz, write_csv  # noqa: F401  (fixtures)
from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics.extraction import Extractor
from unibench.labels import normalise_labels
from unibench.prompts import PROMPT_GROUPING
from unibench.tasks import TASKS, get_task, resolve_tasks
from unibench.tasks.base import EXTRA_TASKS

REPO = Path(__file__).resolve().parent.parent
NINE = ["mer2023", "mer2024", "meld", "iemocapfour", "cmumosi", "cmumosei", "sims", "simsv2", "ovmerdplus"]
BASELINES = ["Chat-UniVi", "LLaMA-VID", "Otter", "Qwen-Audio", "SALMONN", "Video-ChatGPT", "Video-LLaVA",
             "VideoChat", "VideoChat2", "mPLUG-Owl"]


# ---------------------------------------------------------------- the task

def test_ovmerd_is_an_extra_task():
    spec = get_task("OVMERD")
    assert (spec.folder, spec.gt_file, spec.gt_key, spec.expected_count, spec.family, spec.gt_kind) == \
        (".", "check-openset.csv", "name,openset", 332, "ov", "openset")
    assert spec.in_benchmark is False and spec.primary_metric == "fscore"
    assert "ovmerd" in EXTRA_TASKS and "ovmerd" not in TASKS
    assert [s.id for s in resolve_tasks("all")] == NINE
    assert [s.id for s in resolve_tasks("ovmerd,mer2023")] == ["ovmerd", "mer2023"]
    # leaderboard membership is not part of what a task is: fingerprints ignore it
    assert dataclasses.replace(spec, in_benchmark=True).fingerprint == spec.fingerprint


def test_leaderboard_keeps_exactly_the_nine_columns():
    from unibench.results import LEADERBOARD_COLUMNS

    assert LEADERBOARD_COLUMNS == ["model", "selection", *NINE, "mean", "n_tasks", "flags"]


def test_list_tasks_marks_it_extra(capsys):
    assert main(["--list-tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("ovmerd") and lines[-1].endswith("(extra)")


def test_unknown_task_lists_extras():
    with pytest.raises(UserError, match=r"known: mer2023, .*ovmerdplus, ovmerd, or 'all' for the nine"):
        get_task("ovmer")


# ---------------------------------------------------------------- scoring, synthetic data (no shared data needed)

def write_baseline(root: Path, model: str, variant: str, ov: dict[str, str]) -> None:
    stem = root / "baselines" / "results-ovmerd" / model / f"output-reason-7b-{variant}.npz"
    write_answer_npz(stem, {n: f"answer {n}" for n in ov}, ov=ov)


def test_synthetic_ovmerd_ew_by_hand(tmp_path, tiny_lexicon_dir, capsys):
    write_csv(tmp_path / "check-openset.csv", ["name", "openset"],
              [("s1", "['happy', 'sad']"), ("s2", "['angry']")])
    write_baseline(tmp_path, "ModelA", "subtitle-eng", {"s1": "[joy]", "s2": "[]"})
    write_baseline(tmp_path, "ModelA", "nosubtitle-eng", {"s1": "[joy, sad]", "s2": "[anger]"})
    out = tmp_path / "out"
    rc = main(["--task", "ovmerd", "--data-root", str(tmp_path), "--model", "replay",
               "--model-args", f"path={tmp_path / 'baselines'},run=ModelA,name=ModelA",
               "--lexicon", str(tiny_lexicon_dir), "--output", str(out), "--allow-count-mismatch"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads((out / "ModelA" / "ovmerd" / "summary.json").read_text())
    scores = {f["label"]: f["metrics"] for f in summary["files"]}
    # s1: g={happy,sad}, p={happy}: P 1, R 1/2; s2: nothing predicted: 0, 0 -> P 1/2, R 1/4, F 1/3 on every wheel
    assert scores["output-reason-7b-subtitle-eng"]["fscore"] == pytest.approx(1 / 3)
    assert scores["output-reason-7b-nosubtitle-eng"]["fscore"] == pytest.approx(1.0)
    assert summary["best"] == "output-reason-7b-nosubtitle-eng"
    assert "output-reason-7b-subtitle-eng: fscore 33.33" in captured.err       # every file is logged
    assert not (out / "leaderboard.csv").exists()                              # extra task: no leaderboard row
    assert captured.out == ""


def test_synthetic_ovmerd_grouping_with_a_scripted_llm(tmp_path, tiny_lexicon):
    from unibench.adapters.base import make_adapter
    from unibench.runner import RunConfig, run

    write_csv(tmp_path / "check-openset.csv", ["name", "openset"], [("s1", "['happy', 'sad']"), ("s2", "['angry']")])
    write_baseline(tmp_path, "ModelA", "subtitle-eng", {"s1": "[glad, down]", "s2": "[furious, tired]"})
    llm = FirstLetterLLM()
    config = RunConfig(tasks=[get_task("ovmerd")], data_root=tmp_path, output=tmp_path / "out",
                       allow_count_mismatch=True, ov_metric="both")
    assert run(make_adapter("replay", f"path={tmp_path / 'baselines'},run=ModelA"), config, tiny_lexicon,
               extractor=llm) == []
    result = json.loads((tmp_path / "out" / "ModelA" / "ovmerd" / "output-reason-7b-subtitle-eng.json")
                        .read_text())
    # first-letter groups: s1 U=[down, glad, happy, sad]: no shared letters -> 0; s2 U=[angry, furious, tired]: 0
    assert result["metrics"]["grouping_average"] == 0.0
    assert llm.prompts == [PROMPT_GROUPING.replace("{merge}", repr(["down", "glad", "happy", "sad"])),
                           PROMPT_GROUPING.replace("{merge}", repr(["angry", "furious", "tired"]))]
    assert result["grouping"]["extractor"] == {"backend": "first-letter"}


class FirstLetterLLM(AnswersPrompts, Extractor):
    """A scripted 'LLM': groups the words of U by their first letter (sorted groups, sorted words)."""

    name = "first-letter"
    paper_protocol = True

    def __init__(self):
        super().__init__()
        self.prompts: list[str] = []
        self.batches: list[list[str]] = []

    def generate(self, prompts):
        self.prompts.extend(prompts)
        self.batches.append(list(prompts))
        head, tail = PROMPT_GROUPING.split("{merge}")
        out = []
        for p in prompts:
            merged = ast.literal_eval(p[len(head):len(p) - len(tail)])
            groups: dict[str, list[str]] = {}
            for w in merged:
                groups.setdefault(w[0], []).append(w)
            out.append(repr(list(groups.values())))
        return out

    def identity(self):
        return {"backend": self.name}

    def close(self):
        pass


# ---------------------------------------------------------------- the ten real baselines

@pytest.fixture(scope="module")
def ovmerd_dir(shared_data) -> Path:
    folder = shared_data / "ovmerd"
    if not (folder / "baselines" / "results-ovmerd").is_dir():
        pytest.skip(f"OV-MERD baselines not found at {folder}")
    return folder


def ew_fscore_by_hand(gt: dict, pred: dict, lexicon) -> float:
    """Spec §5 written out plainly, independent of unibench.metrics.scores."""
    fs = []
    for w in range(1, 6):
        ps, rs = [], []
        for name, labels in gt.items():
            g = lexicon.map_labels(normalise_labels(labels), w)
            p = lexicon.map_labels(normalise_labels(pred.get(name, "")), w)
            if not g:
                continue
            ps.append(len(g & p) / len(p) if p else 0.0)
            rs.append(len(g & p) / len(g) if p else 0.0)
        P, R = sum(ps) / len(ps), sum(rs) / len(rs)
        fs.append(2 * P * R / (P + R) if P + R else 0.0)
    return sum(fs) / 5


def test_ten_baselines_with_ew(ovmerd_dir, lexicon_2025, tmp_path):
    """The script scores all ten (30 answer files) with the authors' extractions, no LLM."""
    from unibench.adapters.replay import read_extraction_npz
    from unibench.tasks.base import load_task

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ovmerd_baselines.py"),
                           "--baselines", str(ovmerd_dir / "baselines"), "--lexicon", str(lexicon_2025.folder),
                           "--output", str(out), "--lexicon-cache", str(tmp_path / "lexcache")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import csv

    with open(out / "ovmerd_baselines.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 30 and sorted({r["model"] for r in table}) == sorted(BASELINES)
    chat = {r["variant"]: r["fscore"] for r in table if r["model"] == "Chat-UniVi"}
    assert chat == {"nosubtitle-addsub-eng": "57.16", "nosubtitle-eng": "42.26", "subtitle-eng": "52.53"}
    assert not (out / "leaderboard.csv").exists()

    task = load_task(get_task("ovmerd"), ovmerd_dir)
    for model in BASELINES:
        summary = json.loads((out / model / "ovmerd" / "summary.json").read_text())
        assert summary["n_files"] == 3
        for f in summary["files"]:
            authors = read_extraction_npz(Path(f["source"][:-4] + "-openset.npz"))
            assert f["metrics"]["fscore"] == pytest.approx(ew_fscore_by_hand(task.gt, authors, lexicon_2025),
                                                           abs=1e-12), (model, f["label"])


def test_baseline_grouping_needs_an_llm_not_a_stale_cache(ovmerd_dir, lexicon_2025, tmp_path, capsys):
    """The cached groupings belong to predict-openset.csv: for a baseline they do not cover the labels."""
    rc = main(["--task", "ovmerd", "--data-root", str(ovmerd_dir), "--model", "replay",
               "--model-args", f"path={ovmerd_dir / 'baselines'},run=Chat-UniVi,name=Chat-UniVi",
               "--lexicon", str(lexicon_2025.folder), "--output", str(tmp_path),
               "--ov-metric", "both", "--grouping-cache", str(ovmerd_dir / "openset-synonym")])
    err = capsys.readouterr().err
    assert rc == 2 and "do not cover the sample's labels" in err and "--extractor" in err


def test_baseline_grouping_with_a_scripted_llm(ovmerd_dir, lexicon_2025, tmp_path):
    from unibench.adapters.base import make_adapter
    from unibench.adapters.replay import read_extraction_npz
    from unibench.runner import RunConfig, run
    from unibench.tasks.base import load_task

    llm = FirstLetterLLM()
    config = RunConfig(tasks=[get_task("ovmerd")], data_root=ovmerd_dir, output=tmp_path, ov_metric="grouping")
    run(make_adapter("replay", f"path={ovmerd_dir / 'baselines'},run=Chat-UniVi,name=Chat-UniVi"), config,
        lexicon_2025, extractor=llm)
    task = load_task(get_task("ovmerd"), ovmerd_dir)
    summary = json.loads((tmp_path / "Chat-UniVi" / "ovmerd" / "summary.json").read_text())
    for f in summary["files"]:
        pred = read_extraction_npz(Path(f["source"][:-4] + "-openset.npz"))
        accs, recs = [], []
        for name, labels in task.gt.items():          # §6 by hand with first-letter groups
            g_l, p_l = normalise_labels(labels), normalise_labels(pred.get(name, ""))
            first = {}
            for w in sorted(set(g_l) | set(p_l)):
                first.setdefault(w[0], w)
            g, p = {first[w[0]] for w in g_l}, {first[w[0]] for w in p_l}
            accs.append(len(g & p) / len(p) if p else 0.0)
            recs.append(len(g & p) / len(g) if p else 0.0)
        m = f["metrics"]
        assert m["grouping_accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
        assert m["grouping_recall"] == pytest.approx(np.mean(recs), abs=1e-12)
        assert m["fscore"] == f["primary"]                                       # EW F stays the primary
    # one call per answer file, each U asked once per call (across calls, an LLM backend's cache answers)
    assert len(llm.batches) == 3 and all(len(b) == len(set(b)) for b in llm.batches)
