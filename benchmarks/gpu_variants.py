"""The cohort member of each stepping variant that benchmarks/gpu_cohort.py measures; the
members themselves are hpc's (`hpc.worker.graphs`), so the code measured is the code a study
runs with `[cluster] cuda_graphs`.

- "eager": hpc's `CellRun`, the members' steps one after another on one stream.
- "streams": each member on its own CUDA stream (`StreamRun`).
- "graphs": each member's forward and backward a CUDA graph, replayed in turn on one stream;
  the members' graphs share one memory pool (`GraphRun` with a shared pool).
- "graphs+streams": both, each graph with its own pool (`GraphStreamRun`, what hpc runs).
On the CPU (--smoke) every variant steps as hpc does: there is no stream or graph to use.
"""

from __future__ import annotations

import torch

from hpc.worker.graphs import GraphRun, GraphStreamRun, StreamRun
from hpc.worker.train import CellRun


def member_class(variant: str) -> type[CellRun]:
    """The cohort member of a variant; a fresh GraphRun class per cohort (its shared pool)."""
    if variant == "eager":
        return CellRun
    if variant == "streams":
        return StreamRun
    if variant == "graphs+streams":
        return GraphStreamRun
    if variant == "graphs":
        pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
        return type("SharedPoolGraphRun", (GraphRun,), {"shared_pool": pool})
    raise ValueError(f"unknown variant {variant!r}; valid: eager, streams, graphs, graphs+streams")


VARIANTS = ("streams", "graphs", "graphs+streams")
