"""The extraction pool of `--executor ray` (being written)."""
from __future__ import annotations
