"""MER-UniBench evaluation harness.

The design card keeps ``adapters/``, ``metrics/`` and ``tasks/`` beside
``unibench/``. Installed, setuptools maps them to ``unibench.adapters`` etc.;
run from a source checkout without installing, the same names resolve because
the checkout root is appended to this package's search path.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "metrics", "__init__.py")) and _root not in __path__:
    __path__.append(_root)  # type: ignore[name-defined]
