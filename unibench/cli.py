"""`run_bench`: the command line.

    run_bench --model replay --model-args path=DIR --task all --data-root D --lexicon L
    run_bench --demo                      # offline demo suite, seconds, no GPU
    run_bench --check-data --data-root D
    run_bench --list-models | --list-tasks
    run_bench report [--output DIR] [--paper] [--format md|latex|csv|json|html] [--reproduce MODEL]
    run_bench compare A B [--output DIR] [--task ...]      # paired bootstrap comparison
    run_bench robustness ANSWERS --lexicon A --lexicon B ...   # how rankings depend on protocol choices
    run_bench merge <the run's arguments>                   # combine --shard I/N answer logs
    run_bench lexicon audit|explain|fetch ...
    run_bench grouping --gt CSV --pred CSV --synonym-cache DIR   # OV-MER synonym-grouping metric
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from unibench.errors import UserError
from unibench.strict import ArgumentParser, one_line


def _main_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="run_bench",
        description="MER-UniBench: evaluate multimodal LLMs on emotion understanding "
                    "(subcommands: 'report', 'lexicon audit|explain|fetch', 'grouping').")
    p.add_argument("--model", help="adapter name (see --list-models), e.g. replay")
    p.add_argument("--model-args", default="", help="k=v,k2=v2 for the adapter (quote values holding commas)")
    p.add_argument("--task", default="all", help="'all' or a comma list of task ids (see --list-tasks)")
    p.add_argument("--data-root", help="folder holding the task folders (default: $UNIBENCH_DATA)")
    p.add_argument("--lexicon", help="emotion-wheel lexicon folder (default: $UNIBENCH_LEXICON)")
    p.add_argument("--lexicon-cache", help="folder for the compiled lexicon (default: ~/.cache/unibench/lexicon)")
    p.add_argument("--output", default="results", help="results folder (default: results/)")
    p.add_argument("--select", default="best",
                   help="which answer file makes the leaderboard row: best (the paper's best-of-N), last, "
                        "or an answer file name")
    p.add_argument("--level", choices=("level1", "level2"), default="level1",
                   help="emotion-wheel level the labels are mapped to (paper: level1)")
    p.add_argument("--extractor", help="extract labels from free text: vllm | hf | openai | lexicon")
    p.add_argument("--extractor-args", default="", help="k=v,... for the extractor")
    p.add_argument("--cache-dir", help="extraction cache folder (default: ~/.cache/unibench/extraction)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the extraction cache")
    p.add_argument("--paper-sampling", action="store_true",
                   help="LLM extractors: the published sampling (temperature 0.7, top_p 0.8, repetition_penalty "
                        "1.05) instead of greedy decoding; stochastic")
    p.add_argument("--ov-metric", choices=("ew", "grouping", "both"), default="ew",
                   help="open-vocabulary tasks: ew (emotion-wheel F-score, the primary metric) or grouping/both "
                        "(also the LLM synonym-grouping accuracy/recall of OV-MER; needs an LLM --extractor or "
                        "--grouping-cache)")
    p.add_argument("--grouping-cache", help="cached synonym groupings, MER2024 layout DIR/<name>.npy")
    p.add_argument("--jobs", type=int, default=0,
                   help="replay: score tasks in this many processes (default 0: as many as cores are free; 1: "
                        "serial); results are the same either way")
    p.add_argument("--log-samples", choices=("best", "all", "none"), default="best",
                   help="per-sample CSVs (<answer>.samples.csv): best (default: the answer file each task's "
                        "leaderboard row uses), all (every answer file), none")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="resamples for the 95%% bootstrap interval of every answer file's scores (default 1000; "
                        "0: no intervals); written to the per-file JSON and shown by 'run_bench report'")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument("--closed-set", choices=("none", "lexicon", "labels", "reason"), default="none",
                   help="closed-set view of the basic tasks (one class per sample: accuracy, weighted F1, "
                        "confusion matrix), beside the hit rate: 'labels' / 'reason' ask the LLM --extractor with "
                        "the published closed-set prompts (on prompt A's labels / on the answer), 'lexicon' maps "
                        "the extracted labels through the emotion wheel offline (flagged: not the published prompts)")
    g = p.add_argument_group("inference (models that generate answers)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="who answers the samples (and an LLM extractor's prompts): local (default, this process) "
                        "or ray (a pool of Ray actors, one model per worker; pip install 'mer-unibench[ray]')")
    g.add_argument("--ray-address", help="--executor ray: a running cluster to join ('auto', or ray://HOST:PORT); "
                                         "default: start a local Ray instance")
    g.add_argument("--ray-args", default="",
                   help="--executor ray: num_workers=N (default: one per GPU, else per CPU), num_gpus=1 (per "
                        "worker), num_cpus=1 (per worker), max_retries=2 (per batch after a worker dies)")
    g.add_argument("--shard", help="I/N: answer only shard I of N (0-based; a stable split by sample name), into its "
                                   "own answer log; 'run_bench merge' with the same arguments combines the shards")
    g.add_argument("--question", default="affectgpt",
                   help="what each sample is asked: affectgpt (default, spec section 2), ovmer (OV-MER baseline "
                        "prompt with the subtitle), ovmer-nosub, description, or a custom text where {subtitle} "
                        "is replaced by the sample's subtitle")
    g.add_argument("--batch-size", type=int, default=0,
                   help="samples per adapter call (default: the adapter's choice, usually 1; openai: concurrency)")
    g.add_argument("--limit", type=int, help="only the first N samples of each split (results flagged partial)")
    g.add_argument("--device", help="device for local models (cpu, cuda, cuda:1, auto) unless --model-args sets it")
    g.add_argument("--dtype", help="weights dtype for local models (auto, float32, bfloat16, float16)")
    g.add_argument("--fail-fast", action="store_true", help="stop at the first failed sample instead of counting it")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-count-mismatch", action="store_true",
                   help="score even when a test split's size differs from the protocol (rows are flagged)")
    p.add_argument("--skip-bad-gt", action="store_true",
                   help="leave test samples whose ground truth has the wrong type (a number for a word, NaN, ...) "
                        "out of the score instead of stopping (counted, rows flagged bad-gt-skipped:N)")
    p.add_argument("--input-limits",
                   help="bounds on reading .npz files: max_member_mb=1024,max_objects=10000000,max_depth=100 "
                        "(the defaults; also $UNIBENCH_INPUT_LIMITS): raise them for a genuinely larger file")
    p.add_argument("--force-extract", action="store_true",
                   help="run the --extractor even where extraction files (<answer>-openset*.npz) already exist")
    p.add_argument("--paper", action="store_true", help="print the published MER-UniBench rows beside yours")
    p.add_argument("--demo", action="store_true", help="run the bundled offline demo suite (invented data)")
    p.add_argument("--check-data", action="store_true", help="report which tasks' data are present and valid")
    p.add_argument("--list-samples", action="store_true",
                   help="print the test-split sample names of --task (task<TAB>name with several tasks)")
    p.add_argument("--list-models", action="store_true", help="list adapters and what each needs")
    p.add_argument("--list-tasks", action="store_true", help="list the nine tasks")
    return p


def _select_mode(value: str) -> str:
    return value if value in ("best", "last") else f"file:{value}"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 0 <= I < N."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected I/N, e.g. 0/4 (shard 0 of 4)") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text}: needs 0 <= I < N")
    return i, n


def start_workers(args: argparse.Namespace, adapter: Any, extractor: Any, config: Any) -> list[Any]:
    """The Ray pools this run uses (closed by the caller): with ``--executor ray`` the model's workers
    (``config.executor``) and an LLM extractor's; with a local run, an extractor asking for engine replicas
    (``data_parallel_size=N``) gets N actors. Ray is imported only here, and only when needed."""
    from unibench.metrics.llm import LLMExtractor

    llm = extractor if isinstance(extractor, LLMExtractor) else None
    replicated = llm is not None and llm.replicas()[0] > 1
    if args.executor == "local" and not replicated:
        if args.ray_args or args.ray_address:
            raise UserError("--ray-address and --ray-args need --executor ray (or an extractor with "
                            "data_parallel_size > 1)")
        return []
    from unibench.ray_executor import parse_ray_args

    options = parse_ray_args(args.ray_args)
    if not (adapter.generates or llm is not None):
        print("note: --executor ray: nothing to spread over workers (existing answers, no LLM extraction); "
              "scoring here", file=sys.stderr)
        return []
    from unibench.ray_executor import RayExecutor, connect

    connect(args.ray_address, options)
    workers: list[Any] = []
    if args.executor == "ray" and adapter.generates:
        config.executor = RayExecutor(options)
        workers.append(config.executor)
    if llm is not None:
        from unibench.ray_extraction import ExtractionPool, pool_options

        wanted = pool_options(llm, options)
        if wanted is not None:
            llm.generation_pool = ExtractionPool(llm, wanted)
            workers.append(llm.generation_pool)
    return workers


def cmd_run(args: argparse.Namespace) -> int:
    from unibench.adapters.base import make_adapter
    from unibench.metrics.lexicon import load_lexicon
    from unibench.results import check_output_folder, format_table, printable, read_paper_rows
    from unibench.runner import RunConfig, run
    from unibench.tasks import resolve_tasks
    from unibench.tasks.base import resolve_data_root

    if not args.model:
        raise UserError("--model is required (or --demo, --check-data, --list-models); see run_bench --help")
    check_output_folder(Path(args.output))  # before anything is loaded or answered
    tasks = resolve_tasks(args.task)
    adapter = make_adapter(args.model, args.model_args)
    data_root = resolve_data_root(args.data_root)
    lexicon = load_lexicon(args.lexicon, cache_dir=Path(args.lexicon_cache) if args.lexicon_cache else None)
    from unibench.metrics.llm import LLMExtractor

    extractor = None
    if args.extractor:
        from unibench.metrics.extraction import make_extractor

        extractor = make_extractor(args.extractor, args.extractor_args, lexicon=lexicon, use_cache=not args.no_cache,
                                   cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                                   paper_sampling=args.paper_sampling, progress=False if args.no_progress else None)
    if args.closed_set in ("labels", "reason") and not isinstance(extractor, LLMExtractor):
        from unibench.closedset import NO_LLM

        raise UserError(NO_LLM.format(mode=args.closed_set))  # before any task is scored
    if args.batch_size < 0 or (args.limit is not None and args.limit < 1) or args.jobs < 0 or args.bootstrap < 0:
        raise UserError("--batch-size, --jobs and --bootstrap must be 0 or more, --limit at least 1")
    if args.bootstrap_seed < 0:
        raise UserError("--bootstrap-seed must be 0 or more")
    from unibench.metrics.bootstrap import MAX_RESAMPLES

    if args.bootstrap > MAX_RESAMPLES:
        raise UserError(f"--bootstrap {args.bootstrap}: at most {MAX_RESAMPLES} resamples (memory grows with "
                        "resamples x test samples; 1000, the default, gives stable 95% intervals)")
    shard = parse_shard(args.shard) if args.shard else None
    if shard and not adapter.generates:
        raise UserError(f"--shard splits a model's inference; model '{adapter.name}' does not generate answers")
    infer = None
    if adapter.generates:
        from unibench.inference import apply_run_options, infer_task as infer, resolve_question

        resolve_question(args.question, "")  # a bad --question stops before any work
        for note in apply_run_options(adapter, args.model_args, device=args.device, dtype=args.dtype):
            print(f"note: {note}", file=sys.stderr)
    config = RunConfig(tasks=tasks, data_root=data_root, output=Path(args.output),
                       select=_select_mode(args.select), level=args.level,
                       allow_count_mismatch=args.allow_count_mismatch, skip_bad_gt=args.skip_bad_gt,
                       force_extract=args.force_extract, question=args.question,
                       batch_size=args.batch_size, limit=args.limit, fail_fast=args.fail_fast,
                       progress=not args.no_progress, ov_metric=args.ov_metric,
                       grouping_cache=Path(args.grouping_cache) if args.grouping_cache else None,
                       log_samples=args.log_samples, jobs=args.jobs, bootstrap=args.bootstrap, shard=shard,
                       bootstrap_seed=args.bootstrap_seed, closed_set=args.closed_set,
                       extra_metadata={"extraction_stats": extractor.stats} if isinstance(extractor, LLMExtractor) else {})
    workers = start_workers(args, adapter, extractor, config)
    try:
        rows = run(adapter, config, lexicon, extractor=extractor, infer=infer)
    finally:
        for part in workers:
            part.close()
        if extractor is not None:
            from unibench.metrics.llm import format_stats, stats_worth_reporting

            # Only work that happened: a run stopped before any answer prints its error line alone.
            if isinstance(extractor, LLMExtractor) and stats_worth_reporting(extractor.stats):
                print(format_stats(extractor.stats), file=sys.stderr)
            extractor.close()
    model = printable(adapter.model_id())
    mine = [r for r in rows if r["model"] == model]
    shown = (read_paper_rows() + mine) if args.paper else rows
    if shown:  # a run of extra tasks only (ovmerd) leaves the nine-task leaderboard alone
        print(format_table(shown, highlight={model}))
        print(f"\nleaderboard: {Path(args.output) / 'leaderboard.csv'}  (lexicon {lexicon.short_hash})")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from unibench.tasks import resolve_tasks
    from unibench.taskdata import read_subtitles
    from unibench.tasks.base import load_task, resolve_data_root

    root = resolve_data_root(args.data_root)
    bad = 0
    for spec in resolve_tasks(args.task):
        folder = root / spec.folder
        try:
            task = load_task(spec, root, check_count=False)
        except UserError as exc:
            status = "missing" if "not found" in str(exc) else "invalid"
            print(f"{spec.id:12s} {status:15s} {exc}")
            bad += 1
            continue
        notes = []
        if task.warnings:
            status = "count mismatch"
            notes.append(f"{len(task.gt)} samples in {folder / spec.gt_file} ({spec.gt_key}), "
                         f"protocol {spec.expected_count}")
            bad += 1
        else:
            status = "found"
            notes.append(f"{len(task.gt)} samples")
        try:
            subtitles = read_subtitles(folder / spec.subtitle_file, spec.subtitle_column)
            have = sum(1 for n in task.gt if subtitles.get(n, "").strip())
            notes.append(f"subtitles: {have} of {len(task.gt)} present")
        except UserError as exc:
            notes.append(f"subtitles: {exc}")
        for kind in dict.fromkeys(k for k, _, _ in spec.media):
            folders = [sub for k, sub, _ in spec.media if k == kind]
            if not any((folder / sub).is_dir() for sub in folders):
                notes.append(f"{kind}: no {' or '.join(f + '/' for f in folders)} folder")
                continue
            have = sum(1 for n in task.gt if task.media_path(n, kind) is not None)
            notes.append(f"{kind}: {have} of {len(task.gt)} present")
        print(f"{spec.id:12s} {status:15s} " + "; ".join(notes))
    return 1 if bad else 0


def cmd_list_samples(args: argparse.Namespace) -> int:
    """The test split's sample names, one per line (what an answer file of your own must cover)."""
    from unibench.tasks import resolve_tasks
    from unibench.tasks.base import load_task, resolve_data_root

    root = resolve_data_root(args.data_root)
    specs = resolve_tasks(args.task)
    for spec in specs:
        task = load_task(spec, root, check_count=False, skip_bad_gt=args.skip_bad_gt)
        for name in task.gt:
            print(f"{spec.id}\t{name}" if len(specs) > 1 else name)
    return 0


def cmd_list_models() -> int:
    from unibench.adapters.base import available_adapters

    rows = []
    for name, cls in sorted(available_adapters().items()):
        try:
            status = cls.status()
        except Exception as exc:  # status must never crash the listing
            status = f"unavailable ({type(exc).__name__}: {exc})"
        rows.append((name, ",".join(cls.inputs) or "-", status, cls.description))
    w_name = max(len("model"), *(len(r[0]) for r in rows))
    w_inputs = max(len("inputs"), *(len(r[1]) for r in rows))
    print(f"{'model':{w_name}s}  {'inputs':{w_inputs}s}  status")
    for name, inputs, status, description in rows:
        print(f"{name:{w_name}s}  {inputs:{w_inputs}s}  {status}")
        print(f"{'':{w_name}s}  {description}")
    return 0


def cmd_list_tasks() -> int:
    from unibench.tasks import TASKS
    from unibench.tasks.base import EXTRA_TASKS

    for spec in [*TASKS.values(), *EXTRA_TASKS.values()]:
        print(f"{spec.id:12s} {spec.family:9s} n={spec.expected_count:<5d} {spec.primary_metric:8s} "
              f"{spec.folder}/{spec.gt_file} [{spec.gt_key}]" + ("" if spec.in_benchmark else "  (extra)"))
    return 0


def cmd_lexicon(argv: list[str]) -> int:
    from unibench.metrics import lexicon_tools
    from unibench.metrics.lexicon import load_lexicon

    p = ArgumentParser(prog="run_bench lexicon", description="inspect or fetch the emotion-wheel lexicon")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audit", help="labels of the basic tasks that map to nothing or somewhere surprising")
    a.add_argument("--lexicon")
    a.add_argument("--level", choices=("level1", "level2"), default="level1")
    e = sub.add_parser("explain", help="show how one label maps on each wheel")
    e.add_argument("label")
    e.add_argument("--lexicon")
    e.add_argument("--level", choices=("level1", "level2"), default="level1")
    f = sub.add_parser("fetch", help="download the official lexicon files (sha256-checked)")
    f.add_argument("dest")
    f.add_argument("--ref", default=lexicon_tools.DEFAULT_REF, help="upstream git ref")
    f.add_argument("--base-url", default=lexicon_tools.UPSTREAM, help="URL template with {ref} and {file}")
    args = p.parse_args(argv)
    if args.cmd == "fetch":
        dest = lexicon_tools.fetch(Path(args.dest), base_url=args.base_url, ref=args.ref)
        print(f"lexicon written to {dest} (all sha256 checks passed)")
        return 0
    lex = load_lexicon(args.lexicon)
    if args.cmd == "explain":
        first = lex.explain(args.label, 1, args.level)
        if not first["forms"]:
            print(f"'{first['label']}' is not in this lexicon (no row of format.csv), so it maps to nothing on "
                  f"every wheel and is dropped when scoring")
            return 1
        print(f"'{first['label']}': lexicon forms {', '.join(sorted(set(first['forms'])))}; synonym candidates "
              f"{', '.join(dict.fromkeys(first['candidates'])) or '(none)'}")
        for w in range(1, 6):
            info = lex.explain(args.label, w, args.level)
            result = f"{info['result']} (via {info['via']})" if info["result"] else "nothing: no candidate is on this wheel"
            print(f"  wheel{w} {args.level}: {result}")
        return 0
    findings = lexicon_tools.audit(lex, level=args.level)
    print(f"lexicon {lex.folder} (sha256 {lex.short_hash}), {args.level}")
    for f in findings:
        print(f"{f['task']:12s} wheel{f['wheel']}  {f['kind']:9s} {f['label']:22s} {f['detail']}")
    print(f"{len(findings)} finding(s)")
    return 0


def _readable_streams() -> None:
    """A file name that is not valid UTF-8 (surrogate escapes) is printed with backslashes, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError):  # e.g. a test's capture stream
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _readable_streams()
    try:
        if argv and argv[0] == "lexicon":
            return cmd_lexicon(argv[1:])
        if argv and argv[0] == "report":
            from unibench.reports import main as cmd_report

            return cmd_report(argv[1:])
        if argv and argv[0] == "compare":
            from unibench.compare import main as cmd_compare

            return cmd_compare(argv[1:])
        if argv and argv[0] == "merge":
            from unibench.shards import main as cmd_merge

            return cmd_merge(argv[1:])
        if argv and argv[0] == "robustness":
            from unibench.robustness import main as cmd_robustness

            return cmd_robustness(argv[1:])
        if argv and argv[0] == "grouping":
            from unibench.metrics.grouping import cli_main as cmd_grouping

            return cmd_grouping(argv[1:])
        args = _main_parser().parse_args(argv)
        from unibench.safe_npz import get_limits, set_limits

        if args.input_limits:
            set_limits(args.input_limits)
        get_limits()  # a bad $UNIBENCH_INPUT_LIMITS is one line here, before any file is read
        if args.list_models:
            return cmd_list_models()
        if args.list_tasks:
            return cmd_list_tasks()
        if args.check_data:
            return cmd_check_data(args)
        if args.list_samples:
            return cmd_list_samples(args)
        if args.demo:
            from unibench.demo import run_demo

            return run_demo(args)
        return cmd_run(args)
    except UserError as exc:
        # exit status 0 (a --shard run that finished its part) is news, not an error
        print(f"error: {one_line(str(exc))}" if exc.exit_code else one_line(str(exc)), file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("error: out of memory (an input far larger than expected? see 'what the harness guarantees' in "
              "the README for the input limits)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # before OSError, its base class: `run_bench report | head` is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file system problem the checks could not foresee (disk full, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
