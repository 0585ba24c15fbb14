"""`run_bench report`: the leaderboard and the reports a paper needs (to be extended)."""
from __future__ import annotations

import sys
from pathlib import Path

from unibench.errors import UserError
from unibench.strict import ArgumentParser


def main(argv: list[str]) -> int:
    from unibench.results import (LeaderboardProblem, check_output_folder, format_table, read_leaderboard,
                                  read_paper_rows, rebuild_leaderboard)

    p = ArgumentParser(prog="run_bench report", description="print the leaderboard")
    p.add_argument("--output", default="results")
    p.add_argument("--paper", action="store_true", help="include the published rows")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild leaderboard.csv from the summaries on disk (a bad old file is kept aside)")
    args = p.parse_args(argv)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a results folder")
    path = output / "leaderboard.csv"
    if args.rebuild:
        check_output_folder(output)
        notes: list[str] = []
        rows = rebuild_leaderboard(output, notes)
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
        print(f"rebuilt {path}: {len(rows)} row(s)", file=sys.stderr)
    else:
        try:
            rows = read_leaderboard(path)
        except LeaderboardProblem as exc:
            raise UserError(f"{path}: {exc}; run_bench report --output {output} --rebuild keeps it aside and "
                            "rebuilds it from the summaries on disk") from None
    if not rows and not args.paper:
        raise UserError(f"no leaderboard at {path}: run a model first")
    print(format_table((read_paper_rows() if args.paper else []) + rows, highlight={r["model"] for r in rows}))
    return 0
