"""Adapters: who answers. See :mod:`unibench.adapters.base`."""
from unibench.adapters.base import ADAPTERS, Adapter, AnswerSet, Sample, get_adapter, register_adapter

__all__ = ["ADAPTERS", "Adapter", "AnswerSet", "Sample", "get_adapter", "register_adapter"]
