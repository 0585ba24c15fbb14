"""The LLM synonym-grouping metric of OV-MER / the MER2024 OV track (spec §6).

Per sample: lower-case the ground-truth and predicted label lists, take the
set union U, ask an LLM to group U into lists of words with the same
meaning (the protocol's grouping prompt), map every word to the first word of
its group (a word in no group maps to itself), then

    accuracy = |g ∩ p| / |p|   (0 when p is empty)
    recall   = |g ∩ p| / |g|

on the mapped sets g and p. Report the means over samples and their average.

Details that follow the published code (MERTools ``MER2024/main-ov.py``):

* a label list is parsed with :func:`string_to_list`, then each label is
  lower-cased (the published code does not strip; our parser strips, which
  changes nothing on the published files and avoids " happy" != "happy");
* the LLM answer is post-processed like every extractor answer, then parsed
  as a list of lists: split on ``[`` / ``]``, keep the pieces that are not
  empty or ``,`` after stripping, split each on quotes and keep the pieces
  that are not empty or ``,`` after stripping. Grouped words are *not*
  lower-cased or stripped (as published), so an unquoted or re-capitalised
  answer simply leaves words in no group;
* when a word stands in several groups, the last group wins;
* an empty or failed LLM answer groups nothing: every word maps to itself,
  as the published code does when its API calls fail. We count and report
  such samples (``n_failed``) instead of hiding them.

Where we differ, deliberately:

* the order of U. The published code sends ``list(set(gt) | set(pred))``,
  whose order depends on Python's per-process hash seed, so the prompt (and
  the LLM's answer) changes from run to run. We send ``sorted(U)``: the same
  labels always give the same prompt, hence cache hits and reproducible runs;
* a sample whose prediction is empty scores 0 whatever the grouping, so no
  LLM call is made for it (``n_empty_pred``);
* an empty ground truth (only possible in a hand-made CSV: the task loader
  turns it into ``['neutral']``) gives recall 0 and a warning instead of the
  published ZeroDivisionError.

Existing groupings in the MER2024 layout (``openset-synonym/<name>.npy``,
each a numpy string holding the answer text) are imported with
:func:`load_grouping_cache`. That layout is keyed by sample name only, so a
cached grouping is used only when it contains every word of the sample's U;
otherwise it was made for another prediction (stale) and the sample is
regrouped by the LLM, or the run stops with one line saying so. New
groupings live in the extraction cache of the LLM backend (content-addressed
by backend, model, decoding and the exact prompt).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from unibench.errors import UserError
from unibench.labels import normalise_labels
from unibench.prompts import PROMPT_GROUPING, prompt_grouping, prompt_hash
from unibench.metrics.scores import TaskScore
from unibench.metrics.extraction import Extractor

_BRACKETS = re.compile(r"[\[\]]")
_QUOTES = re.compile(r"['\"]")
U_ORDER = "sorted"


# ---------------------------------------------------------------- the pieces

def merged_labels(gt: Sequence[str], pred: Sequence[str]) -> list[str]:
    """U, the union of both label lists, in a deterministic order (sorted)."""
    return sorted(set(gt) | set(pred))


def parse_grouping(text: Any) -> list[list[str]]:
    """An LLM's grouping answer -> list of groups (the published ``listlist_to_list``).

    "[['a', 'b'], ['c']]" -> [['a', 'b'], ['c']]. Anything that is not a
    string (None, NaN) parses to no groups.
    """
    if not isinstance(text, str):
        return []
    groups = []
    for piece in _BRACKETS.split(text):
        if piece.strip() in ("", ","):
            continue
        words = [w for w in _QUOTES.split(piece) if w.strip() not in ("", ",")]
        groups.append(words)
    return groups


def synonym_map(groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Every grouped word -> the first word of its group (a later group wins)."""
    out: dict[str, str] = {}
    for group in groups:
        for word in group:
            out[word] = group[0]
    return out


def grouped_words(groups: Sequence[Sequence[str]]) -> set[str]:
    return {w for g in groups for w in g}


def sample_scores(gt: Sequence[str], pred: Sequence[str], mapping: Mapping[str, str]
                  ) -> tuple[float, float, set[str], set[str]]:
    """(accuracy, recall, mapped gt, mapped prediction) of one sample."""
    g = {mapping.get(w, w) for w in gt}
    p = {mapping.get(w, w) for w in pred}
    if not p:
        return 0.0, 0.0, g, p
    inter = len(g & p)
    return inter / len(p), (inter / len(g) if g else 0.0), g, p


# ---------------------------------------------------------------- cached groupings

def load_grouping_cache(folder: str | Path) -> dict[str, str]:
    """Read ``<folder>/<name>.npy`` files (MER2024 layout): name -> grouping text.

    Each file must be a plain unicode array (what ``np.save`` writes for a
    str); pickled object arrays are refused, never executed.
    """
    import numpy as np

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"grouping cache folder not found: {folder}")
    out: dict[str, str] = {}
    for path in sorted(p for p in folder.glob("*.npy") if p.is_file()):  # never open a FIFO or a device
        _check_grouping_header(path)  # a header claiming a huge array is refused before numpy allocates it
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:  # the header was checked: the data is cut short or corrupt
            raise UserError(f"{path}: not a readable .npy file ({str(exc).splitlines()[0][:100]})") from None
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: not a readable .npy file ({exc})") from None
        if arr.dtype.kind not in "US" or arr.size != 1:
            raise UserError(f"{path}: expected one string (the LLM's grouping), found {arr.dtype} {arr.shape}")
        value = arr.reshape(()).item()
        out[path.stem] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not out:
        raise UserError(f"grouping cache folder {folder} holds no <name>.npy files")
    return out


def _check_grouping_header(path: Path) -> None:
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as fh:
            version = npformat.read_magic(fh)
            header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, _, dtype = header(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy file ({str(exc).splitlines()[0][:100]})") from None
    size = 1
    for d in shape:
        size *= d
    if dtype.hasobject:
        raise UserError(f"{path}: holds a pickled object, not a grouping string (refused)")
    if dtype.kind not in "US" or size != 1 or dtype.itemsize > 1 << 24:
        raise UserError(f"{path}: expected one string (the LLM's grouping), found {dtype} {tuple(shape)}")


# ---------------------------------------------------------------- asking the LLM

def can_group(extractor: Extractor | None) -> bool:
    return extractor is not None and extractor.answers_prompts


def require_grouper(extractor: Extractor | None, cache: Mapping[str, str] | None) -> None:
    """Stop before any work when neither an LLM nor cached groupings are available."""
    if cache is not None or can_group(extractor):
        return
    if extractor is None:
        raise UserError("the grouping metric needs an LLM (--extractor vllm|hf|openai) or cached groupings "
                        "(--grouping-cache DIR in the MER2024 openset-synonym layout)")
    raise UserError(f"extractor '{extractor.name}' cannot group labels: the grouping metric "
                    "needs an LLM backend (--extractor vllm|hf|openai) or --grouping-cache DIR")


def ask_llm(extractor: Extractor, merged: Sequence[Sequence[str]]) -> list[str | None]:
    """One grouping answer per U (post-processed; None = failed), through the extractor's ``complete``:
    LLM backends dedup the prompts and go through the extraction cache."""
    prompts = [prompt_grouping(list(u)) for u in merged]
    if not prompts:
        return []
    answers = list(extractor.complete(prompts, what="grouping"))
    if len(answers) != len(prompts):
        raise UserError(f"extractor '{extractor.name}' returned {len(answers)} groupings for {len(prompts)} prompts")
    return answers


# ---------------------------------------------------------------- the metric

@dataclass
class _Pending:
    name: str
    gt: list[str]
    pred: list[str]
    merged: list[str]
    grouping: str | None = None
    source: str = ""
    stale: bool = False


def grouping_scores(gt: Mapping[str, Any], pred: Mapping[str, Any], cache: Mapping[str, str] | None = None,
                    extractor: Any = None, cache_label: str = "grouping cache") -> TaskScore:
    """The §6 metric over every sample of ``gt`` (a missing prediction counts as empty).

    Returns a :class:`TaskScore` with metrics ``accuracy``, ``recall``,
    ``average`` (0-1), per-sample rows and counts of where each grouping
    came from.
    """
    require_grouper(extractor, cache)
    pending: list[_Pending] = []
    for name, labels in gt.items():
        g, p = normalise_labels(labels), normalise_labels(pred.get(name))
        item = _Pending(name, g, p, merged_labels(g, p))
        if not p:
            item.source = "empty-prediction"
        elif cache is not None and name in cache:
            groups = parse_grouping(cache[name])
            if set(item.merged) <= grouped_words(groups):
                item.grouping, item.source = cache[name], "cache"
            else:
                item.stale = True
        pending.append(item)

    todo = [it for it in pending if not it.source]
    if todo and not can_group(extractor):
        stale = [it for it in todo if it.stale]
        absent = [it for it in todo if not it.stale]
        parts = []
        if absent:
            parts.append(f"{len(absent)} sample(s) have no cached grouping (e.g. {absent[0].name})")
        if stale:
            lacking = sorted(set(stale[0].merged) - grouped_words(parse_grouping(cache[stale[0].name])))
            parts.append(f"{len(stale)} cached grouping(s) do not cover the sample's labels, so they were made "
                         f"for another prediction (e.g. {stale[0].name} lacks {', '.join(map(repr, lacking[:3]))})")
        raise UserError(f"{cache_label}: {'; '.join(parts)}; pass an LLM extractor "
                        "(--extractor vllm|hf|openai) to group them")
    if todo:
        answers = ask_llm(extractor, [it.merged for it in todo])
        for it, answer in zip(todo, answers):
            it.grouping = answer
            it.source = "llm" if answer is not None else "failed"

    rows, accs, recs = [], [], []
    failed, unparsed, empty_gt = [], [], []
    for it in pending:
        groups = parse_grouping(it.grouping)
        if it.source == "llm" and not set(it.merged) & grouped_words(groups):  # prose, or words it rewrote
            unparsed.append(it.name)
        if it.source == "failed":
            failed.append(it.name)
        if not it.gt:
            empty_gt.append(it.name)
        acc, rec, g, p = sample_scores(it.gt, it.pred, synonym_map(groups))
        accs.append(acc)
        recs.append(rec)
        source = it.source + (" (stale cache)" if it.stale else "")
        rows.append({"name": it.name, "gt": it.gt, "pred": it.pred, "merged": it.merged,
                     "grouping": it.grouping or "", "grouping_source": source,
                     "gt_mapped": sorted(g), "pred_mapped": sorted(p), "accuracy": acc, "recall": rec})
    n = len(rows)
    acc_mean = sum(accs) / n if n else 0.0
    rec_mean = sum(recs) / n if n else 0.0
    counts = {"n_samples": n,
              "n_cached": sum(1 for it in pending if it.source == "cache"),
              "n_llm": sum(1 for it in pending if it.source == "llm"),
              "n_failed": len(failed), "n_unparsed": len(unparsed),
              "n_stale_cache": sum(1 for it in pending if it.stale),
              "n_empty_pred": sum(1 for it in pending if it.source == "empty-prediction")}
    warnings = []
    if failed:
        warnings.append(f"grouping: {len(failed)} LLM grouping(s) failed (e.g. {failed[0]}); their words map to "
                        "themselves, as the published code does")
    if unparsed:
        warnings.append(f"grouping: {len(unparsed)} LLM answer(s) group none of the sample's labels "
                        f"(e.g. {unparsed[0]}); their words map to themselves")
    if empty_gt:
        warnings.append(f"grouping: {len(empty_gt)} sample(s) have an empty ground truth (e.g. {empty_gt[0]}); "
                        "recall 0")
    return TaskScore(metrics={"accuracy": acc_mean, "recall": rec_mean, "average": (acc_mean + rec_mean) / 2},
                     samples=rows, counts=counts, warnings=warnings)


def grouping_identity(extractor: Any, cache_label: str | None) -> dict[str, Any]:
    """What produced the groupings: recorded beside the scores."""
    ident = None
    if can_group(extractor):
        try:
            ident = extractor.identity()
        except Exception:  # identity is informative only; never fail a run over it
            ident = {"backend": extractor.name}  # type: ignore[union-attr]
    return {"prompt": prompt_hash(PROMPT_GROUPING), "merged_order": U_ORDER, "cache": cache_label,
            "extractor": ident}


def merge_into(score: TaskScore, grouping: TaskScore) -> None:
    """Add the grouping metric to an EW score: ``grouping_*`` metrics, counts and per-sample columns."""
    for key, value in grouping.metrics.items():
        score.metrics[f"grouping_{key}"] = value
    for key, value in grouping.counts.items():
        score.counts[f"grouping_{key}"] = value
    score.warnings.extend(grouping.warnings)
    by_name = {r["name"]: r for r in grouping.samples}
    for row in score.samples:
        g = by_name.get(row["name"])
        if g is None:
            continue
        row["grouping"] = g["grouping"]
        row["grouping_source"] = g["grouping_source"]
        row["grouping_gt"] = g["gt_mapped"]
        row["grouping_pred"] = g["pred_mapped"]
        row["grouping_accuracy"] = g["accuracy"]
        row["grouping_recall"] = g["recall"]


# ---------------------------------------------------------------- inside a run (--ov-metric)

OV_METRICS = ("ew", "grouping", "both")


@dataclass
class GroupingRun:
    """The grouping metric for the open-vocabulary tasks of one run."""

    extractor: Any = None
    cache: Mapping[str, str] | None = None
    cache_dir: str | None = None

    def add_to(self, gt: Mapping[str, Any], ov_labels: Mapping[str, Any], score: TaskScore) -> TaskScore:
        """Score one answer file and add ``grouping_*`` metrics and columns to its EW score; returns the
        grouping score (its rows can be merged into a later EW score with :func:`merge_into`)."""
        grouping = grouping_scores(gt, ov_labels, cache=self.cache, extractor=self.extractor,
                                   cache_label=self.cache_dir or "grouping cache")
        merge_into(score, grouping)
        return grouping

    def identity(self) -> dict[str, Any]:
        return grouping_identity(self.extractor, self.cache_dir)


def prepare_grouping(ov_metric: str, cache_dir: str | Path | None, extractor: Any,
                     families: Sequence[str]) -> GroupingRun | None:
    """Check and load what ``--ov-metric`` needs before any work; None when EW alone is asked for.

    ``grouping`` and ``both`` compute the same numbers: the EW F-score stays
    the primary (leaderboard) metric and costs nothing, the grouping metric
    is added beside it.
    """
    if ov_metric not in OV_METRICS:
        raise UserError(f"--ov-metric must be one of {', '.join(OV_METRICS)}, got '{ov_metric}'")
    if ov_metric == "ew":
        if cache_dir:
            raise UserError("--grouping-cache is only read with --ov-metric grouping or both")
        return None
    if "ov" not in families:
        return None
    cache = load_grouping_cache(cache_dir) if cache_dir else None
    if cache is None:
        require_grouper(extractor, None)  # an LLM is the only source left
    # A non-LLM extractor (lexicon) cannot group: only the cache is used, and missing groupings stop the run.
    return GroupingRun(extractor=extractor if can_group(extractor) else None, cache=cache,
                       cache_dir=str(cache_dir) if cache_dir else None)


# ---------------------------------------------------------------- `run_bench grouping`

def read_labels_file(path: Path, column: str = "openset") -> dict[str, str]:
    """A CSV with ``name`` and a label-list column, or an authors' ``-openset.npz``."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    if path.suffix == ".npz":
        from unibench.answerfiles import read_extraction_npz

        return read_extraction_npz(path)
    from unibench.strict import read_csv_rows

    rows = read_csv_rows(path, required=("name", column))
    out: dict[str, str] = {}
    for lineno, row in enumerate(rows, 2):
        if row["name"] in out:
            raise UserError(f"{path}: line {lineno}: sample '{row['name']}' appears twice")
        out[row["name"]] = row[column]
    return out


def cli_main(argv: list[str]) -> int:
    """``run_bench grouping``: the §6 metric for one prediction file."""
    from unibench.strict import ArgumentParser

    p = ArgumentParser(
        prog="run_bench grouping",
        description="LLM synonym-grouping metric (OV-MER / MER2024 OV track): accuracy, recall, their average. "
                    "Example: run_bench grouping --gt ../shared/data/ovmerd/check-openset.csv "
                    "--pred ../shared/data/ovmerd/predict-openset.csv "
                    "--synonym-cache ../shared/data/ovmerd/openset-synonym")
    p.add_argument("--gt", required=True, help="ground truth: CSV with columns name, openset")
    p.add_argument("--pred", required=True, help="prediction: CSV with columns name, openset, or an -openset.npz")
    p.add_argument("--column", default="openset", help="label-list column of the CSVs (default: openset)")
    p.add_argument("--synonym-cache", help="cached groupings, MER2024 layout: DIR/<name>.npy")
    p.add_argument("--extractor", help="LLM that groups what the cache lacks: vllm | hf | openai")
    p.add_argument("--extractor-args", default="", help="k=v,... for the extractor (e.g. model=PATH)")
    p.add_argument("--cache-dir", help="extraction cache folder of the LLM (default: ~/.cache/unibench/extraction)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the extraction cache")
    p.add_argument("--output", help="write grouping.json and grouping.samples.csv into this folder")
    args = p.parse_args(argv)

    gt = read_labels_file(Path(args.gt), args.column)
    pred = read_labels_file(Path(args.pred), args.column)
    extra = [n for n in pred if n not in gt]
    cache = load_grouping_cache(args.synonym_cache) if args.synonym_cache else None
    extractor = None
    if args.extractor:
        from unibench.metrics.extraction import make_extractor

        context: dict[str, Any] = {"use_cache": not args.no_cache}
        if args.cache_dir:
            context["cache_dir"] = Path(args.cache_dir)
        extractor = make_extractor(args.extractor, args.extractor_args, **context)
    require_grouper(extractor, cache)
    try:
        score = grouping_scores(gt, pred, cache=cache, extractor=extractor,
                                cache_label=str(args.synonym_cache or "grouping cache"))
        ident = grouping_identity(extractor, args.synonym_cache)
    finally:
        if extractor is not None:
            extractor.close()
    m, c = score.metrics, score.counts
    print(f"accuracy: {m['accuracy']!r}")
    print(f"recall:   {m['recall']!r}")
    print(f"average:  {m['average']!r}")
    print(f"samples:  {c['n_samples']} ({c['n_cached']} cached groupings, {c['n_llm']} grouped by the LLM, "
          f"{c['n_failed']} failed, {c['n_empty_pred']} empty predictions)")
    missing = [n for n in gt if n not in pred]
    if missing:
        score.warnings.append(f"{len(missing)} sample(s) of {args.gt} have no prediction (e.g. {missing[0]}); "
                              "scored as empty predictions")
    if extra:
        score.warnings.append(f"{len(extra)} prediction(s) are not in {args.gt} (e.g. {extra[0]}); ignored")
    for w in score.warnings:
        print(f"warning: {w}")
    if args.output:
        from unibench.fileio import write_json, write_samples_csv

        out = Path(args.output)
        write_json(out / "grouping.json", {"gt": args.gt, "pred": args.pred, "metrics": m, "counts": c,
                                           "warnings": score.warnings, "grouping": ident})
        write_samples_csv(out / "grouping.samples.csv", score.samples)
        print(f"written: {out / 'grouping.json'}, {out / 'grouping.samples.csv'}")
    return 0
