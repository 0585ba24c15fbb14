#!/usr/bin/env python3
"""`python run_bench.py ...` works from a source checkout, installed or not."""
import sys

from unibench.cli import main

if __name__ == "__main__":
    sys.exit(main())
