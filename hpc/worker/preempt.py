"""The stop request of this process: SIGUSR2 (Slurm's warning before a time limit, or a
preemption) sets a flag that the trainer polls after every step.

A task's entry points (`python -m hpc.worker`, `python -m hpc.worker.submitted`) install the
handler before anything heavy is imported: unpickling a chunk imports torch, seconds in
which the signal's default action would end the task as FAILED. This module imports nothing
but the standard library for that reason.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_requested = threading.Event()
_from_start = False  # an entry point installed the handler when the process started


def _request(signum: int, frame: FrameType | None) -> None:
    _requested.set()


def catch_from_start() -> None:
    """The first thing a task's entry point does: from now on SIGUSR2 requests a stop, and a
    request made before the worker runs stays for it to see."""
    global _from_start
    _from_start = True
    signal.signal(signal.SIGUSR2, _request)


def is_ours(handler: object) -> bool:
    """Whether a signal handler is this module's (not, say, submitit's requeue handler)."""
    return handler is _request


@contextlib.contextmanager
def caught() -> Iterator[Callable[[], bool]]:
    """While inside, SIGUSR2 requests a stop; yields the function that tells whether one was.

    A request caught since the entry point started counts; without an entry point (the worker
    called in-process) each use starts without one. The previous handler is back afterwards.
    Outside the main thread no handler can be installed: the flag is only read.
    """
    if not _from_start:
        _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield _requested.is_set
        return
    previous = signal.signal(signal.SIGUSR2, _request)
    try:
        yield _requested.is_set
    finally:
        signal.signal(signal.SIGUSR2, previous)
