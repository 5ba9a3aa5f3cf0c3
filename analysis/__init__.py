"""What the study found: results.h5 as tables, correlations with intervals and noise floors,
proxy recommendations, figures and a report. Importing the package loads nothing heavy;
each name below is imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_results": "analysis.frame",
    "Study": "analysis.frame",
    "analyze": "analysis.report",
    "analyze_scores": "analysis.zerocost",
    "Analysis": "analysis.result",
    "write_report": "analysis.report",
    "correlate": "analysis.stats",
    "Correlations": "analysis.stats",
    "synthetic_results": "analysis.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
