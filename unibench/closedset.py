"""Closed-set view (placeholder until written)."""
