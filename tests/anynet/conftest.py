"""Shared set-up for the anynet tests."""

import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The test models are tiny and latency-bound: a second intra-op thread only spin-waits,
    # which on a busy 2-core machine makes them 10-20x slower.
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
