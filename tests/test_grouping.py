"""The synonym-grouping metric (spec §6): parsing, hand-computed scores, caches, the LLM seam, CLI, runs."""
from __future__ import annotations

import ast
import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fixtures import tiny_lexicon, tiny_lexicon_dir, write_csv, write_run, write_task  # noqa: F401  (fixtures)
from fixtures import AnswersPrompts
from unibench.cli import main
from unibench.errors import UserError
from unibench.metrics.extraction import Extractor
from unibench.metrics.grouping import (grouping_scores, load_grouping_cache, merged_labels, parse_grouping,
                                       prepare_grouping, sample_scores, synonym_map)
from unibench.prompts import PROMPT_GROUPING, prompt_grouping

REFERENCE = {"accuracy": 0.581777108433735, "recall": 0.4977911646586345, "average": 0.5397841365461847}


class ScriptedLLM(AnswersPrompts, Extractor):
    """An extractor whose generate(prompts) -> list[str | None] groups. Records what it was asked."""

    name = "scripted"
    paper_protocol = True

    def __init__(self, answer=None):
        super().__init__()
        self.calls: list[list[str]] = []
        self.answer = answer or (lambda merged: repr([merged]))   # default: everything in one group

    def generate(self, prompts):
        self.calls.append(list(prompts))
        return [self.answer(merged_of(p)) for p in prompts]

    def identity(self):
        return {"backend": self.name}

    def close(self):
        pass


def merged_of(prompt: str) -> list[str]:
    """The U a grouping prompt carries (its {merge} is Python's repr of a list)."""
    head, tail = PROMPT_GROUPING.split("{merge}")
    assert prompt.startswith(head) and prompt.endswith(tail)
    return ast.literal_eval(prompt[len(head):len(prompt) - len(tail)])


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, expected", [
    ("[['happy', 'joyful'], ['sad']]", [["happy", "joyful"], ["sad"]]),
    ("[['happy','joyful'],['sad']]", [["happy", "joyful"], ["sad"]]),
    ('[["happy", "joyful"], ["sad"]]', [["happy", "joyful"], ["sad"]]),
    ("[['a', 'b'],['c']]", [["a", "b"], ["c"]]),
    ("[['self-deprecating', 'humorous']]", [["self-deprecating", "humorous"]]),
    ("[]", []),
    ("[[]]", []),
    ("", []),
    (None, []),
    (float("nan"), []),
    # published quirks kept: an unquoted group is one word; text outside brackets becomes a group
    ("[[happy, joyful], [sad]]", [["happy, joyful"], ["sad"]]),
    ("[['a', 'b']] I hope this helps", [["a", "b"], [" I hope this helps"]]),
    # an apostrophe inside a word splits it (quotes are the separators)
    ("[[\"don't care\", 'indifferent']]", [["don", "t care", "indifferent"]]),
])
def test_parse_grouping(text, expected):
    assert parse_grouping(text) == expected


def test_synonym_map_first_word_and_later_group_wins():
    groups = [["joyful", "happy"], ["sad"], ["happy", "glad"]]
    assert synonym_map(groups) == {"joyful": "joyful", "happy": "happy", "sad": "sad", "glad": "happy"}


def test_merged_labels_order_is_sorted_so_prompts_are_stable():
    assert merged_labels(["sad", "happy"], ["angry", "happy"]) == ["angry", "happy", "sad"]
    assert prompt_grouping(merged_labels(["b", "a"], ["c"])) == prompt_grouping(merged_labels(["a"], ["c", "b"]))
    assert prompt_grouping(["angry", "happy"]).endswith("Input: ['angry', 'happy'] Output:")


# ---------------------------------------------------------------- hand-computed scores

def test_sample_scores_by_hand():
    mapping = synonym_map(parse_grouping("[['happy', 'joyful', 'glad'], ['sad'], ['angry']]"))
    # g = {happy, sad}; p = {happy (glad), angry}: 1 shared of 2 and of 2
    assert sample_scores(["happy", "joyful", "sad"], ["glad", "angry"], mapping)[:2] == (0.5, 0.5)
    # words in no group map to themselves
    assert sample_scores(["calm"], ["calm", "tired"], {})[:2] == (0.5, 1.0)
    # empty prediction: both 0
    assert sample_scores(["calm"], [], {})[:2] == (0.0, 0.0)


def test_grouping_scores_by_hand():
    gt = {"a": "['Happy', 'joyful', 'sad']", "b": ["calm"], "c": "['worried']", "d": "[tired]"}
    pred = {"a": "[glad, angry]", "b": "['relaxed', 'calm']", "c": "[]"}      # d: no prediction at all
    answers = {
        ("angry", "glad", "happy", "joyful", "sad"): "[['happy', 'joyful', 'glad'], ['sad'], ['angry']]",
        ("calm", "relaxed"): "[['relaxed', 'calm']]",
    }
    llm = ScriptedLLM(lambda merged: answers[tuple(merged)])
    score = grouping_scores(gt, pred, extractor=llm)
    # a: acc 1/2 rec 1/2; b: g={relaxed}, p={relaxed}: 1, 1; c and d: empty prediction: 0, 0
    assert score.metrics["accuracy"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert score.metrics["recall"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert score.metrics["average"] == pytest.approx(0.375)
    assert score.counts == {"n_samples": 4, "n_cached": 0, "n_llm": 2, "n_failed": 0, "n_unparsed": 0,
                            "n_stale_cache": 0, "n_empty_pred": 2}
    assert len(llm.calls) == 1 and len(llm.calls[0]) == 2                  # empty predictions are never sent
    rows = {r["name"]: r for r in score.samples}
    assert rows["a"]["gt"] == ["happy", "joyful", "sad"]                    # lower-cased
    assert rows["a"]["gt_mapped"] == ["happy", "sad"] and rows["a"]["pred_mapped"] == ["angry", "happy"]
    assert rows["c"]["grouping_source"] == "empty-prediction"


def test_identical_label_sets_are_asked_once():
    gt = {"a": ["happy"], "b": ["sad"], "c": ["happy"]}
    pred = {"a": ["sad"], "b": ["happy"], "c": ["sad"]}
    llm = ScriptedLLM()
    score = grouping_scores(gt, pred, extractor=llm)
    assert llm.calls == [[prompt_grouping(["happy", "sad"])]]
    assert score.metrics["accuracy"] == 1.0 and score.metrics["recall"] == 1.0


def test_failed_and_unparsable_groupings_are_counted_not_fatal():
    gt = {"a": ["happy"], "b": ["sad"]}
    pred = {"a": ["glad"], "b": ["down"]}
    llm = ScriptedLLM(lambda merged: None if merged == ["glad", "happy"] else "I cannot group these.")
    score = grouping_scores(gt, pred, extractor=llm)
    assert score.counts["n_failed"] == 1 and score.counts["n_unparsed"] == 1
    assert score.metrics["accuracy"] == 0.0                                 # words map to themselves
    assert any("failed" in w for w in score.warnings) and any("group none of" in w for w in score.warnings)


def test_llm_answers_are_post_processed():
    llm = ScriptedLLM(lambda merged: "Output: [['glad', 'happy']]\n")
    score = grouping_scores({"a": ["happy"]}, {"a": ["glad"]}, extractor=llm)
    assert score.metrics["average"] == 1.0
    assert score.samples[0]["grouping"] == "[['glad', 'happy']]"


def test_empty_gt_gives_recall_zero_with_a_warning():
    score = grouping_scores({"a": "[]"}, {"a": ["happy"]}, extractor=ScriptedLLM())
    assert score.metrics["recall"] == 0.0 and score.metrics["accuracy"] == 0.0
    assert "empty ground truth" in score.warnings[0]


def test_llm_backend_goes_through_the_extraction_cache(tmp_path):
    """With a real LLMExtractor, grouping prompts are deduplicated and cached like prompts A and B."""
    from unibench.metrics.llm import LLMExtractor, LLMOptions

    class Fake(LLMExtractor):
        name = "fake"
        calls = 0

        def generate(self, prompts):
            Fake.calls += len(prompts)
            return [repr([merged_of(p)]) for p in prompts]

    def run_once():
        ext = Fake(LLMOptions(model="fake-model"))
        ext.cache_dir, ext.progress = tmp_path / "cache", False
        try:
            return grouping_scores({"a": ["happy"], "b": ["sad"]}, {"a": ["glad"], "b": ["down"]}, extractor=ext)
        finally:
            ext.close()

    first, second = run_once(), run_once()
    assert Fake.calls == 2                                                  # the second run is all cache hits
    assert first.metrics == second.metrics == {"accuracy": 1.0, "recall": 1.0, "average": 1.0}


# ---------------------------------------------------------------- cached groupings

def test_cache_loader(tmp_path):
    folder = tmp_path / "openset-synonym"
    folder.mkdir()
    np.save(folder / "s1.npy", "[['happy', 'glad']]")
    np.save(folder / "s2.npy", np.array("[['sad']]"))
    assert load_grouping_cache(folder) == {"s1": "[['happy', 'glad']]", "s2": "[['sad']]"}
    np.save(folder / "bad.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="bad.npy: holds a pickled object"):
        load_grouping_cache(folder)
    (folder / "bad.npy").unlink()
    np.save(folder / "num.npy", np.arange(3))
    with pytest.raises(UserError, match="num.npy: expected one string"):
        load_grouping_cache(folder)
    with pytest.raises(UserError, match="not found"):
        load_grouping_cache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no <name>.npy"):
        load_grouping_cache(tmp_path / "empty")


def test_stale_or_missing_cache_entries():
    gt = {"a": ["happy"], "b": ["sad"]}
    pred = {"a": ["glad"], "b": ["down"]}
    cache = {"a": "[['happy', 'glad']]", "b": "[['sad', 'blue']]"}         # b was made for another prediction
    with pytest.raises(UserError, match=r"1 cached grouping\(s\) do not cover .* b lacks 'down'"):
        grouping_scores(gt, pred, cache=cache)
    with pytest.raises(UserError, match=r"1 sample\(s\) have no cached grouping \(e.g. b\)"):
        grouping_scores(gt, pred, cache={"a": cache["a"]})
    llm = ScriptedLLM()
    score = grouping_scores(gt, pred, cache=cache, extractor=llm)          # the LLM regroups the stale one
    assert llm.calls == [[prompt_grouping(["down", "sad"])]]
    assert score.counts["n_cached"] == 1 and score.counts["n_llm"] == 1 and score.counts["n_stale_cache"] == 1
    assert score.metrics["average"] == 1.0


def test_nothing_to_group_with_is_one_line():
    with pytest.raises(UserError, match="needs an LLM"):
        grouping_scores({"a": ["x"]}, {"a": ["y"]})

    from unibench.metrics.backends.lexicon import LexiconExtractor

    with pytest.raises(UserError, match="extractor 'lexicon' cannot group labels"):
        grouping_scores({"a": ["x"]}, {"a": ["y"]}, extractor=LexiconExtractor())
    with pytest.raises(UserError, match="--ov-metric must be one of"):
        prepare_grouping("f1", None, None, ["ov"])
    assert prepare_grouping("ew", None, None, ["ov"]) is None
    with pytest.raises(UserError, match="only read with --ov-metric grouping or both"):
        prepare_grouping("ew", "some/dir", None, ["ov"])
    assert prepare_grouping("both", None, None, ["basic"]) is None         # no open-vocabulary task in the run


# ---------------------------------------------------------------- the published reproduction

@pytest.fixture(scope="module")
def ovmerd(shared_data) -> Path:
    folder = shared_data / "ovmerd"
    if not (folder / "openset-synonym").is_dir():
        pytest.skip(f"OV-MERD data not found at {folder}")
    return folder


def test_reproduction_mer2024_ov_track(ovmerd, capsys, tmp_path):
    rc = main(["grouping", "--gt", str(ovmerd / "check-openset.csv"), "--pred", str(ovmerd / "predict-openset.csv"),
               "--synonym-cache", str(ovmerd / "openset-synonym"), "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "accuracy: 0.581777108433735\n" in out
    assert "recall:   0.4977911646586345\n" in out
    assert "average:  0.5397841365461847\n" in out
    assert "samples:  332 (327 cached groupings, 0 grouped by the LLM, 0 failed, 5 empty predictions)" in out
    result = json.loads((tmp_path / "grouping.json").read_text())
    assert result["metrics"] == pytest.approx(REFERENCE, abs=1e-15)
    assert result["grouping"]["merged_order"] == "sorted"
    with open(tmp_path / "grouping.samples.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 332 and rows[0]["name"] == "sample_00000000"
    assert rows[0]["accuracy"] == "1.0" and rows[0]["recall"] == "0.25"   # hand-checked first sample


def test_reproduction_as_a_function(ovmerd):
    from unibench.metrics.grouping import read_labels_file

    score = grouping_scores(read_labels_file(ovmerd / "check-openset.csv"),
                            read_labels_file(ovmerd / "predict-openset.csv"),
                            cache=load_grouping_cache(ovmerd / "openset-synonym"))
    assert score.metrics["accuracy"] == REFERENCE["accuracy"]
    assert score.metrics["recall"] == REFERENCE["recall"]
    assert score.metrics["average"] == REFERENCE["average"]
    assert score.counts["n_samples"] == 332 and score.counts["n_stale_cache"] == 0


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    rc = main(["grouping", "--gt", str(tmp_path / "missing.csv"), "--pred", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: file not found") and err.count("\n") == 1
    write_csv(tmp_path / "gt.csv", ["name", "labels"], [("a", "['x']")])
    rc = main(["grouping", "--gt", str(tmp_path / "gt.csv"), "--pred", str(tmp_path / "gt.csv")])
    assert rc == 2 and "missing column(s) openset" in capsys.readouterr().err
    write_csv(tmp_path / "ok.csv", ["name", "openset"], [("a", "['x']")])
    rc = main(["grouping", "--gt", str(tmp_path / "ok.csv"), "--pred", str(tmp_path / "ok.csv")])
    assert rc == 2 and "needs an LLM" in capsys.readouterr().err


# ---------------------------------------------------------------- inside a run: --ov-metric

def test_run_adds_grouping_beside_ew(tmp_path, tiny_lexicon_dir, tiny_lexicon):
    """ovmerdplus with cached groupings: grouping_* metrics and columns appear, EW F stays primary."""
    from unibench.adapters.base import make_adapter
    from unibench.runner import RunConfig, run
    from unibench.tasks import get_task

    data = tmp_path / "data"
    write_task(data, "ovmerdplus", {"s1": ["happy", "sad"], "s2": ["angry"], "s3": []})
    models = tmp_path / "answers"
    ov = {"s1": "[joyful, sad]", "s2": "[worried]", "s3": "[calm]"}
    write_run(models, "ovmerdplus", "run1", {"ep1": {"answers": {n: "text" for n in ov}, "ov": ov}})
    cache = tmp_path / "synonyms"
    cache.mkdir()
    np.save(cache / "s1.npy", "[['happy', 'joyful'], ['sad']]")
    np.save(cache / "s2.npy", "[['angry'], ['worried']]")
    np.save(cache / "s3.npy", "[['neutral', 'calm']]")
    config = RunConfig(tasks=[get_task("ovmerdplus")], data_root=data, output=tmp_path / "out",
                       allow_count_mismatch=True, ov_metric="both", grouping_cache=cache)
    rows = run(make_adapter("replay", f"path={models},name=toy"), config, tiny_lexicon)
    result = json.loads((tmp_path / "out" / "toy" / "ovmerdplus" / "ep1.json").read_text())
    m = result["metrics"]
    assert result["primary_metric"] == "fscore" and result["primary"] == m["fscore"]
    # s1: g={happy,sad} p={happy,sad}: 1,1; s2: 0,0; s3 (gt [] -> neutral): g={neutral} p={neutral}: 1,1
    assert m["grouping_accuracy"] == pytest.approx(2 / 3) and m["grouping_recall"] == pytest.approx(2 / 3)
    assert m["grouping_average"] == pytest.approx(2 / 3)
    assert result["counts"]["grouping_n_cached"] == 3
    assert result["grouping"]["cache"] == str(cache) and result["grouping"]["merged_order"] == "sorted"
    with open(tmp_path / "out" / "toy" / "ovmerdplus" / "ep1.samples.csv", encoding="utf-8") as fh:
        samples = {r["name"]: r for r in csv.DictReader(fh)}
    assert samples["s1"]["grouping_accuracy"] == "1.0" and samples["s1"]["grouping_gt"] == "happy|sad"
    assert samples["s2"]["grouping_source"] == "cache"
    assert rows[0]["ovmerdplus"] == f"{m['fscore'] * 100:.2f}"            # the leaderboard keeps EW F


def test_run_without_grouper_stops_before_work(tmp_path, tiny_lexicon):
    from unibench.adapters.base import make_adapter
    from unibench.runner import RunConfig, run
    from unibench.tasks import get_task

    data = tmp_path / "data"
    write_task(data, "ovmerdplus", {"s1": ["happy"]})
    models = tmp_path / "answers"
    write_run(models, "ovmerdplus", "run1", {"ep1": {"answers": {"s1": "t"}, "ov": {"s1": "[happy]"}}})
    config = RunConfig(tasks=[get_task("ovmerdplus")], data_root=data, output=tmp_path / "out",
                       allow_count_mismatch=True, ov_metric="grouping")
    with pytest.raises(UserError, match="needs an LLM"):
        run(make_adapter("replay", f"path={models},name=toy"), config, tiny_lexicon)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- kill -9 mid-grouping, then resume

GROUPING_KILL_SCRIPT = textwrap.dedent('''
    import json, re, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from unibench.metrics.grouping import grouping_scores
    from unibench.metrics.llm import LLMExtractor, LLMOptions

    class SlowGrouper(LLMExtractor):
        name = "slow"
        stream_chunk = 1
        def generate(self, prompts):
            out = []
            for p in prompts:
                time.sleep(float(sys.argv[5]))
                i = re.search(r"w(\\d+)a", p).group(1)
                with open(sys.argv[3], "a") as fh:   # written before the answer is returned
                    fh.write(i + "\\n")
                # even samples: gt and prediction are synonyms; odd ones: not
                out.append(f"[['w{i}a', 'w{i}b']]" if int(i) % 2 == 0 else f"[['w{i}a'], ['w{i}b']]")
            return out

    ext = SlowGrouper(LLMOptions(model="slow-grouper"))
    ext.cache_dir, ext.progress = Path(sys.argv[2]), False
    gt = {f"s{i}": [f"w{i}a"] for i in range(12)}
    pred = {f"s{i}": [f"w{i}b"] for i in range(12)}
    score = grouping_scores(gt, pred, extractor=ext)
    Path(sys.argv[4]).write_text(json.dumps(score.metrics))
    ext.close()
''')


def test_kill_9_mid_grouping_then_resume_gives_identical_scores(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    script = tmp_path / "group.py"
    script.write_text(GROUPING_KILL_SCRIPT)

    def launch(cache: Path, log: Path, result: Path, delay: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(repo), str(cache), str(log), str(result), delay],
                                cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    uninterrupted = tmp_path / "whole.json"
    assert launch(tmp_path / "c0", tmp_path / "w.log", uninterrupted, "0").wait(timeout=120) == 0
    log1, log2, cache = tmp_path / "run1.log", tmp_path / "run2.log", tmp_path / "c"
    proc = launch(cache, log1, tmp_path / "never.json", "0.25")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if log1.exists() and len(log1.read_text().split()) >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the grouping ended before it could be killed"
    time.sleep(0.08)  # past the commit of the 4th answer, well before the 5th finishes
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    finished = log1.read_text().split()
    assert 4 <= len(finished) < 12
    resumed = tmp_path / "resumed.json"
    assert launch(cache, log2, resumed, "0").wait(timeout=120) == 0
    regenerated = log2.read_text().split()
    assert not set(regenerated) & set(finished)  # nothing finished is asked again
    assert sorted(regenerated + finished, key=int) == [str(i) for i in range(12)]
    assert json.loads(resumed.read_text()) == json.loads(uninterrupted.read_text())
    assert json.loads(resumed.read_text())["accuracy"] == pytest.approx(0.5)
