"""Tiny job functions the tests submit to the local cluster (submitit pickles functions by
module, so they must live in an importable module)."""

from __future__ import annotations


def square(x: int) -> int:
    """x squared, computed on a node."""
    return x * x


def fail(message: str) -> None:
    """Raise ValueError(message) on a node, so the caller sees a failed job."""
    raise ValueError(message)
