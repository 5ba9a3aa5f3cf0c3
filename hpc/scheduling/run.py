"""A whole study in one call: sample, prepare, launch, wait (with a progress bar), collect,
analyze; launched again while failed cells have attempts left. Ctrl-C stops it and the
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
) -> int:
    """sample, prepare, launch, wait (with a progress bar), collect, analyze: the whole study.

    Interrupted (Ctrl-C) and run again, it continues where it stopped. Failed cells are
    launched again while they have attempts left. Returns 0 when every cell finished as
    done or diverged, 1 when some failed.
    """
    study = load_study(study_dir)
    poll_s = poll_s if poll_s is not None else schedulers.get(cluster).poll_s
    check_jobs(jobs)
    check_sources(study)  # before sampling and preparing: an error here costs nothing
    sample_architectures(study, progress=progress)
    prepare_datasets(study, progress=progress)
    with CtrlC() as ctrl_c:
        _launch_until_finished(study, cluster, jobs, poll_s, progress, ctrl_c.check)
    collected = collect(study, progress=progress)
    for line in collected.skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"results: {collected.path} ({collected.cells} cells)", flush=True)
    if analyze:
        _analyze(study.root)
    return _outcome(study)


def _launch_until_finished(
    study: Study,
    cluster: str,
    jobs: int | None,
    poll_s: float,
    progress: bool,
    check: Callable[[], None],
) -> None:
    """Launch and wait, again while failed cells have attempts left or cells that another
    launch ran are left unfinished."""
    rounds = waits = 0  # launches that submitted cells; looks at cells run elsewhere
    while rounds <= study.settings.max_attempts and waits <= WAIT_ROUNDS:
        since = time.time()
        launched = launch(study, cluster=cluster, jobs=jobs)
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

    cells = results.study_cells(study)
    attempts = study.settings.max_attempts
    submitted = list(launched.plan.missing) if launched.record else []
    found = results.scan_results(study)
    with tqdm(
        total=len(cells),
        initial=sum(results.is_finished(found.get(c), attempts) for c in cells),
        desc=study.name,
        unit="cell",
        disable=not progress,
        smoothing=0.1,
    ) as bar:
        while True:
            found = results.scan_results(study)
            check()
            bar.update(sum(results.is_finished(found.get(c), attempts) for c in cells) - bar.n)
            if submitted and all(c in found and found[c].mtime >= since for c in submitted):
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
    found = results.scan_results(study)
    bad = [
        c.key
        for c in results.study_cells(study)
        if found.get(c) is None or not results.is_final(found[c].status)
    ]
    if bad:
        print(
            f"anysweep run: {len(bad)} cell(s) did not finish: {', '.join(bad[:10])}"
            + (" ..." if len(bad) > 10 else "")
            + f"; see `anysweep status {study.root}`",
            file=sys.stderr,
        )
        return 1
    return 0
