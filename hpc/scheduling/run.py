"""A whole study in one call: sample, prepare, score (the training-free scores, unless
[scores] enabled = false), launch, wait (with a progress bar), collect, analyze; launched
again while failed cells have attempts left. Ctrl-C stops it and the
workers it started here; run again, it continues where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hpc.scheduling import schedulers, status
from hpc.scheduling.launch import Launch, check_jobs, launch
from hpc.study import results
from hpc.study.collect import collect
from hpc.study.datasets import check_sources, prepare_datasets
from hpc.study.population import sample_architectures
from hpc.study.spec import Study, load_study

# How often a run waits for cells that another launch had queued or running, then looks again.
WAIT_ROUNDS = 3


def run_study(
    study_dir: Path | str,
    cluster: str = "local",
    jobs: int | None = None,
    progress: bool = True,
    analyze: bool = True,
    poll_s: float | None = None,
    retrain_stale: bool = False,
) -> int:
    """sample, prepare, score, launch, wait (with a progress bar), collect, analyze: the
    whole study.

    Interrupted (Ctrl-C) and run again, it continues where it stopped. Failed cells are
    launched again while they have attempts left. Refuses while cells are stale, unless
    `retrain_stale` (see `launch`). Returns 0 when every cell finished as done or diverged,
    1 when some failed.
    """
    study = load_study(study_dir)
    poll_s = poll_s if poll_s is not None else schedulers.get(cluster).poll_s
    check_jobs(jobs)
    check_sources(study)  # before sampling and preparing: an error here costs nothing
    population = sample_architectures(study, progress=progress)
    _check_stale(study, population, retrain_stale)
    prepare_datasets(study, progress=progress)
    with CtrlC() as ctrl_c:
        if study.scores.enabled:
            _score(study, cluster, jobs, poll_s, progress, ctrl_c.check)
        _launch_until_finished(study, cluster, jobs, poll_s, progress, ctrl_c.check, retrain_stale)
    collected = collect(study, progress=progress)
    for line in collected.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"results: {collected.path} ({collected.cells} cells)", flush=True)
    if analyze:
        _analyze(study.root)
    return _outcome(study)


def _score(
    study: Study,
    cluster: str,
    jobs: int | None,
    poll_s: float,
    progress: bool,
    check: Callable[[], None],
) -> None:
    """The training-free scores before training, waited for; networks left unscored are
    reported and the training goes on (`anysweep score` computes them later)."""
    from hpc.scheduling.scores import score_study, summary

    scored = score_study(
        study, cluster=cluster, jobs=jobs, progress=progress, poll_s=poll_s, check=check
    )
    if scored.unscored or scored.busy:
        print(summary(scored, study), file=sys.stderr, flush=True)


def _check_stale(study: Study, population: Any, retrain: bool) -> None:
    """Refuse before preparing anything while cells are stale (launch would refuse too)."""
    from hpc.scheduling.launch import StaleCellsError
    from hpc.study.stale import refusal

    now = results.standing(study, population)
    stale = len(now.stale_cells())
    if stale and not retrain:
        raise StaleCellsError(refusal(now.stale, stale, "run"))


def _launch_until_finished(
    study: Study,
    cluster: str,
    jobs: int | None,
    poll_s: float,
    progress: bool,
    check: Callable[[], None],
    retrain_stale: bool = False,
) -> None:
    """Launch and wait, again while failed cells have attempts left or cells that another
    launch ran are left unfinished."""
    rounds = waits = 0  # launches that submitted cells; looks at cells run elsewhere
    while rounds <= study.settings.max_attempts and waits <= WAIT_ROUNDS:
        since = time.time()
        launched = launch(study, cluster=cluster, jobs=jobs, retrain_stale=retrain_stale)
        try:
            wait(study, launched, since, poll_s, progress, check)
        except BaseException:
            # Ctrl-C or an error: the local workers end with the command that started
            # them (their cells resume next time); Slurm jobs run on.
            launched.stop()
            raise
        if launched.record:
            rounds += 1
        elif launched.plan.active:
            waits += 1  # cells queued or running elsewhere ended: launch what they left
        else:
            break


class CtrlC:
    """Remembers Ctrl-C, so that one swallowed by library code (h5py's weak-reference
    callbacks print "Exception ignored" and go on) is raised at the next `check`."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt


def wait(
    study: Study,
    launched: Launch,
    since: float,
    poll_s: float,
    progress: bool,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Until no task of the study is queued or running, or every cell this launch submitted
    has a new result (its workers may still be exiting); the bar counts finished cells.
    `check` is called at every look (it raises to stop the waiting)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    attempts = study.settings.max_attempts
    submitted = launched.plan.to_run if launched.record else np.zeros(0, dtype=np.int64)
    out = results.standing(study).outcomes
    with tqdm(
        total=len(out.grid),
        initial=int(out.finished(attempts).sum()),
        desc=study.name,
        unit="cell",
        disable=not progress,
        smoothing=0.1,
    ) as bar:
        while True:
            out = results.standing(study).outcomes
            check()
            bar.update(int(out.finished(attempts).sum()) - bar.n)
            if len(submitted) and bool((out.written[submitted] >= since).all()):
                break
            launched.running()  # reaps this process's lanes that ended
            if not any(t.state != "ended" for t in status.tasks(study)):
                break
            check()
            time.sleep(poll_s)


def _analyze(root: Path) -> None:
    try:
        module = importlib.import_module("analysis.cli")
    except ModuleNotFoundError:
        print(
            "anysweep run: analysis is not installed here; skipped `anysweep analyze`",
            file=sys.stderr,
        )
        return
    parser = argparse.ArgumentParser(prog="anysweep analyze")
    module.add_arguments(parser)
    module.run(parser.parse_args([str(root)]))


def _outcome(study: Study) -> int:
    out = results.standing(study).outcomes
    bad = out.grid.cells(np.flatnonzero(~out.final())[:10])
    count = int((~out.final()).sum())
    if count:
        print(
            f"anysweep run: {count} cell(s) did not finish: {', '.join(c.key for c in bad)}"
            + (" ..." if count > 10 else "")
            + f"; see `anysweep status {study.root}`",
            file=sys.stderr,
        )
        return 1
    return 0
