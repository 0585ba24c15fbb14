"""`run_bench robustness`: rankings of answer files under the protocol's arbitrary choices."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fixtures import tiny_lexicon_dir, write_extraction_npz, write_run, write_task  # noqa: F401 (fixture)
from unibench.cli import main as cli_main

# ---------------------------------------------------------------- an invented case with a known reordering

# mer2023-like split: wheel 3 of the tiny lexicon has no 'surprised' cluster, so the two 'surprise' samples
# count on wheels 1, 2, 4, 5 and are skipped on wheel 3.
GT = {"s1": "happy", "s2": "surprise", "s3": "sad", "s4": "angry", "s5": "surprise"}
RIGHT = {"a": ("s2", "s5"), "b": ("s1",), "c": ("s1", "s3"), "d": ()}
# Hit rates worked out by hand (hits / samples whose gt maps on the wheel):
#   unit   wheels 1,2,4,5   wheel 3   mean of five wheels
#   a      2/5 = 0.4        0/3       (4 * 0.4 + 0) / 5     = 0.32
#   b      1/5 = 0.2        1/3       (4 * 0.2 + 1/3) / 5   = 0.2267
#   c      2/5 = 0.4        2/3       (4 * 0.4 + 2/3) / 5   = 0.4533
#   d      0                0         0
# Protocol ranking c, a, b, d. Wheel 3 ranks c, b, then a and d tied. Of the six pairs, (a, b) is discordant,
# (a, d) is tied on wheel 3 only and the other four concordant: tau-b = (4 - 1) / sqrt(6 * 5).
PROTOCOL = {"a": 0.32, "b": (0.8 + 1 / 3) / 5, "c": (1.6 + 2 / 3) / 5, "d": 0.0}
TAU_WHEEL3 = 3 / math.sqrt(30)
# Wheel 1: a and c tie (0.4), b 0.2, d 0: (a, c) tied on wheel 1 only, five pairs concordant.
TAU_WHEEL1 = 5 / math.sqrt(30)


def _labels(unit: str, right: tuple[str, ...]) -> dict[str, str]:
    return {n: f"[{'surprised' if g == 'surprise' else g}]" if n in right else "[disgusted]" for n, g in GT.items()}


def tiny_case(root: Path, alt: bool = False) -> tuple[Path, Path]:
    data = root / "data"
    write_task(data, "mer2023", GT)
    files = {f"unit_{u}": {"answers": {n: f"answer {n}" for n in GT}, "ov": _labels(u, r)} for u, r in RIGHT.items()}
    run_dir = write_run(root / "model", "mer2023", "run_1", files)
    if alt:  # a second extraction: the same labels, except that unit d is now right everywhere
        for u, r in RIGHT.items():
            write_extraction_npz(run_dir / f"unit_{u}-openset-alt.npz", _labels(u, tuple(GT) if u == "d" else r))
    return data, root / "model"


def run_json(capsys, argv: list[str]) -> dict:
    assert cli_main(["robustness", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_known_reordering_on_wheel_3(tmp_path, capsys, tiny_lexicon_dir):
    data, model = tiny_case(tmp_path)
    out = run_json(capsys, [str(model), "--task", "mer2023", "--data-root", str(data), "--lexicon",
                            str(tiny_lexicon_dir), "--allow-count-mismatch"])
    task = out["tasks"]["mer2023"]
    assert out["schema"] == "unibench-robustness/1" and out["unit"] == "files"
    assert task["units"] == ["unit_a", "unit_b", "unit_c", "unit_d"]
    assert task["scores"]["protocol"] == pytest.approx([PROTOCOL[u] for u in "abcd"])
    assert task["scores"]["wheel3"] == pytest.approx([0, 1 / 3, 2 / 3, 0])
    assert task["ranks"]["protocol"] == [2, 3, 1, 4]
    assert task["ranks"]["wheel3"] == [3, 2, 1, 3]
    w3 = task["vs_protocol"]["wheel3"]
    assert w3["kendall_tau"] == pytest.approx(TAU_WHEEL3)
    assert (w3["rank_changes"], w3["max_rank_shift"], w3["top1_changed"]) == (3, 1, False)
    w1 = task["vs_protocol"]["wheel1"]
    assert w1["kendall_tau"] == pytest.approx(TAU_WHEEL1)
    # a ties c at the top on wheel 1: the protocol's top unit keeps rank 1, so the top is unchanged
    assert (w1["rank_changes"], w1["top1_changed"], w1["top1_variant"]) == (1, False, "unit_c")
    agreement = out["agreement"]["mer2023"]
    i, j = agreement["names"].index("protocol"), agreement["names"].index("wheel3")
    assert agreement["kendall_tau"][i][i] == 1.0
    assert agreement["kendall_tau"][i][j] == agreement["kendall_tau"][j][i] == pytest.approx(TAU_WHEEL3)
    assert "[mer2023] wheel 3 alone reorders 3 of 4 units (at most 1 place); top-1 unchanged; tau 0.55" \
        in out["summary"]
    notes = " ".join(task["notes"])
    assert "one --lexicon given" in notes and "second extractor: not available" in notes


def test_second_extraction_is_a_variant(tmp_path, capsys, tiny_lexicon_dir):
    data, model = tiny_case(tmp_path, alt=True)
    out = run_json(capsys, [str(model), "--task", "mer2023", "--data-root", str(data), "--lexicon",
                            str(tiny_lexicon_dir), "--allow-count-mismatch"])
    alt = out["tasks"]["mer2023"]["vs_protocol"]["extractor:alt"]
    assert out["tasks"]["mer2023"]["scores"]["extractor:alt"][3] == pytest.approx(1.0)
    assert (alt["top1_changed"], alt["top1_variant"], alt["rank_changes"]) == (True, "unit_d", 4)


def test_text_and_markdown_reports(tmp_path, capsys, tiny_lexicon_dir):
    data, model = tiny_case(tmp_path)
    args = [str(model), "--task", "mer2023", "--data-root", str(data), "--lexicon", str(tiny_lexicon_dir),
            "--allow-count-mismatch"]
    assert cli_main(["robustness", *args]) == 0
    text = capsys.readouterr().out
    assert "wheel3               0.55  " in text and "findings:" in text
    assert cli_main(["robustness", *args, "--format", "md"]) == 0
    assert "| variant vs protocol | tau | rho | rank changes | max shift | top-1 |" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__(0, "/nonexistent/answers"), "error: answers not found: /nonexistent/answers"),
    (lambda a: a.__setitem__(2, "mer2099"), "error: unknown task 'mer2099'"),
    (lambda a: a.__setitem__(6, "/nonexistent/lexicon"), "error: lexicon folder not found: /nonexistent/lexicon"),
    (lambda a: a.__setitem__(4, "/nonexistent/data"), "error: data root not found: /nonexistent/data"),
])
def test_bad_input_is_one_line(tmp_path, capsys, tiny_lexicon_dir, change, message):
    data, model = tiny_case(tmp_path)
    args = [str(model), "--task", "mer2023", "--data-root", str(data), "--lexicon", str(tiny_lexicon_dir),
            "--allow-count-mismatch"]
    change(args)
    assert cli_main(["robustness", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_one_answer_file_cannot_be_ranked(tmp_path, capsys, tiny_lexicon_dir):
    data = tmp_path / "data"
    write_task(data, "mer2023", GT)
    write_run(tmp_path / "model", "mer2023", "run_1",
              {"only": {"answers": {n: "x" for n in GT}, "ov": _labels("a", ())}})
    assert cli_main(["robustness", str(tmp_path / "model"), "--task", "mer2023", "--data-root", str(data),
                     "--lexicon", str(tiny_lexicon_dir), "--allow-count-mismatch"]) == 2
    err = capsys.readouterr().err
    assert "a ranking needs at least two units" in err and err.count("\n") == 1


# ---------------------------------------------------------------- the real data

@pytest.fixture(scope="module")
def ovmerd_robustness(shared_data, tmp_path_factory):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["robustness", str(shared_data / "ovmerd" / "baselines"), "--task", "ovmerd",
                         "--data-root", str(shared_data / "ovmerd"),
                         "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"),
                         "--lexicon", str(shared_data / "emotion_wheel-mer2026"),
                         "--grouping-cache", str(shared_data / "ovmerd" / "openset-synonym"), "--format", "json"])
    assert code == 0
    return json.loads(out.getvalue())


def test_ovmerd_baselines_are_thirty_units(ovmerd_robustness):
    out = ovmerd_robustness
    task = out["tasks"]["ovmerd"]
    assert out["unit"] == "models" and len(task["units"]) == 30
    assert "Chat-UniVi/output-reason-7b-nosubtitle-addsub-eng" in task["units"]
    names = out["agreement"]["ovmerd"]["names"]
    assert names == ["protocol", "wheel1", "wheel2", "wheel3", "wheel4", "wheel5", "level2", "lexicon2"]
    tau = out["agreement"]["ovmerd"]["kendall_tau"]
    assert all(tau[i][i] == 1.0 for i in range(len(names)))
    assert all(-1 <= x <= 1 for row in tau for x in row)
    # the cached groupings were made for predict-openset.csv, not for these baselines: said, not scored
    assert any(n.startswith("grouping metric: not available") and "cover 0 of 30 units" in n for n in task["notes"])
    assert any(v["name"] == "lexicon2" and "emotion_wheel-mer2026" in v["description"] for v in out["variants"])


def test_ovmerd_protocol_scores_equal_a_replay_run(ovmerd_robustness, shared_data, tmp_path, capsys):
    task = ovmerd_robustness["tasks"]["ovmerd"]
    assert cli_main(["--model", "replay", "--model-args", f"path={shared_data / 'ovmerd' / 'baselines'},run=Chat-UniVi",
                     "--task", "ovmerd", "--data-root", str(shared_data / "ovmerd"),
                     "--lexicon", str(shared_data / "emotion_wheel-affectgpt2025"), "--bootstrap", "0",
                     "--output", str(tmp_path / "res")]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "res" / "Chat-UniVi" / "ovmerd" / "summary.json").read_text())
    for f in summary["files"]:
        i = task["units"].index(f"Chat-UniVi/{f['label']}")
        assert task["scores"]["protocol"][i] == f["primary"]
    best = task["units"][task["ranks"]["protocol"].index(1)]
    assert best == "Chat-UniVi/output-reason-7b-nosubtitle-addsub-eng"
    assert round(max(task["scores"]["protocol"]) * 100, 2) == 57.16


def test_short_labels_drop_what_every_file_name_shares():
    from unibench.robustness import short_labels

    assert short_labels(["A/output-reason-7b-subtitle-eng", "A/output-reason-7b-nosubtitle-eng",
                         "B/output-reason-7b-subtitle-eng"]) == ["A/subtitle", "A/nosubtitle", "B/subtitle"]
    assert short_labels(["run/ckpt_10", "run/ckpt_20"]) == ["ckpt_10", "ckpt_20"]  # one run folder
    assert short_labels(["ckpt_10", "ckpt_20"]) == ["ckpt_10", "ckpt_20"]
