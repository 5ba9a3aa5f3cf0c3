"""Project-wide test set-up: tests marked `slurm` run against the local SLURM cluster
(hpc.localslurm); when it is down they skip, or fail when CI=true."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable

import pytest

from hpc import localslurm

START_HINT = (
    "start it with `python -m hpc.localslurm start --max-array-size 4` and "
    '`eval "$(python -m hpc.localslurm env)"`, or run `make test`'
)


# The Ctrl-C tests need SIGINT delivered. A suite started in the background of a shell
# without job control (`nohup make test &`) inherits it ignored, and so would every process
# it starts: restore Python's handler (children then get the default action).
signal.signal(signal.SIGINT, signal.default_int_handler)


def in_ci() -> bool:
    """Whether the tests run in CI, where every SLURM test must run."""
    return os.environ.get("CI", "").strip().lower() == "true"


@functools.cache
def _find_cluster() -> tuple[localslurm.Cluster | None, str]:
    """The cluster SLURM_CONF points at, found by its pid files: no Slurm client is called,
    since a client without a local config asks DNS for a cluster."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return None, "SLURM_CONF is not set"
    cluster = localslurm.cluster_at(conf)
    if cluster is None:
        return None, f"SLURM_CONF={conf} is not a running local cluster of hpc.localslurm"
    return cluster, ""


def require_cluster() -> localslurm.Cluster:
    """The local cluster; skips the test when it is down, fails it when CI=true."""
    cluster, why = _find_cluster()
    if cluster is None:
        message = f"the local SLURM cluster is down ({why}); {START_HINT}"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return cluster


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        require_cluster()


@pytest.fixture(scope="session")
def slurm_cluster() -> localslurm.Cluster:
    """The running local cluster (conf path, max array size, GPUs), SLURM_CONF already set."""
    return require_cluster()


@pytest.fixture
def wait_for_job(slurm_cluster: localslurm.Cluster) -> Callable[..., str]:
    """`wait_for_job(job_id, timeout_s=60)`: poll sacct until the job ends; its final state."""
    return slurm_cluster.wait
