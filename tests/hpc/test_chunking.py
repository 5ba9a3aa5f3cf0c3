"""The planner's chunking, checked against the plain search it replaced: for any cells and
capacity, the vectorised search returns exactly the chunks the plain one did."""

from __future__ import annotations

import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpc.scheduling.plan import CHUNK_OVERHEAD_S, PlannedChunk, chunk_cells


def reference_chunk_cells(
    dataset: str, cells: list[tuple[int, int]], seconds: list[float], capacity: float
) -> list[PlannedChunk]:
    """The plain search: every chunk count from the fewest upwards, one share at a time."""
    if not cells:
        return []
    budget = max(capacity - CHUNK_OVERHEAD_S, 1.0)
    cum = np.cumsum(seconds)
    total, n = float(cum[-1]), len(cells)
    for k in range(max(1, math.ceil(total / budget)), n + 1):
        ends = []
        for j in range(1, k):
            i = int(np.searchsorted(cum, j * total / k))
            if i > 0 and (i == n or j * total / k - cum[i - 1] <= cum[i] - j * total / k):
                i -= 1
            ends.append(i + 1)
        bounds = sorted({0, *ends, n})
        parts = list(zip(bounds[:-1], bounds[1:], strict=True))
        sums = [float(cum[e - 1] - (cum[b - 1] if b else 0.0)) for b, e in parts]
        if all(t <= budget or e - b == 1 for (b, e), t in zip(parts, sums, strict=True)):
            return [
                PlannedChunk(dataset, tuple(cells[b:e]), t + CHUNK_OVERHEAD_S)
                for (b, e), t in zip(parts, sums, strict=True)
            ]
    return [
        PlannedChunk(dataset, (c,), t + CHUNK_OVERHEAD_S)
        for c, t in zip(cells, seconds, strict=True)
    ]


def _seconds(kind: str, n: int, rng: np.random.Generator) -> list[float]:
    if kind == "even":
        return [float(rng.choice([60, 100, 600]))] * n
    if kind == "integers":  # running totals land exactly on shares: ties decide the cut
        return rng.integers(0, 50, n).astype(float).tolist()
    if kind == "spread":
        return rng.uniform(30, 3000, n).tolist()
    return rng.lognormal(6, 1.5, n).tolist()  # heavy tail: some cells exceed any capacity


CI_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)


@CI_SETTINGS
@given(
    kind=st.sampled_from(["even", "integers", "spread", "heavy"]),
    n=st.integers(1, 400),
    cells_per_chunk=st.floats(0.3, 60),
    seed=st.integers(0, 2**32 - 1),
)
def test_chunks_equal_the_plain_search_for_any_cells(kind, n, cells_per_chunk, seed) -> None:
    rng = np.random.default_rng(seed)
    seconds = _seconds(kind, n, rng)
    capacity = CHUNK_OVERHEAD_S + cells_per_chunk * float(np.mean(seconds) or 1.0)
    cells = [(a, int(rng.integers(0, 3))) for a in range(n)]
    assert chunk_cells("d", cells, seconds, capacity) == reference_chunk_cells(
        "d", cells, seconds, capacity
    )


def test_chunks_equal_the_plain_search_at_a_study_datasets_size() -> None:
    # 4,500 cells a few to a chunk: the plain search tries hundreds of chunk counts here.
    rng = np.random.default_rng(7)
    seconds = rng.uniform(3000, 3600, 4500).tolist()
    cells = [(a, 0) for a in range(4500)]
    capacity = CHUNK_OVERHEAD_S + 3.4 * 3600
    chunks = chunk_cells("d", cells, seconds, capacity)
    assert chunks == reference_chunk_cells("d", cells, seconds, capacity)
    assert sum(len(c.cells) for c in chunks) == 4500
    assert max(len(c.cells) for c in chunks) == 4


def test_cells_longer_than_the_capacity_everywhere_get_a_chunk_each() -> None:
    chunks = chunk_cells("d", [(0, 0), (1, 0)], [5000.0, 5000.0], capacity=600)
    assert [c.cells for c in chunks] == [((0, 0),), ((1, 0),)]
    assert [c.seconds for c in chunks] == [5000.0 + CHUNK_OVERHEAD_S] * 2
