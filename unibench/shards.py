"""`--shard I/N` and `run_bench merge` (being written)."""
from __future__ import annotations


def main(argv: list[str]) -> int:
    raise NotImplementedError
