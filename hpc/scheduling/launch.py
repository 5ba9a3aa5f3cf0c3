"""The launcher: plan a study's missing cells and hand them to a scheduler, which submits
them (or, for sbatch, writes them for a person to submit) and records what it did; it
returns at once. One launch at a time per study (a lock), so two launches never submit the
same cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.scheduling import schedulers
from hpc.scheduling.plan import Plan, make_plan
from hpc.scheduling.records import next_record_id, read_records
from hpc.scheduling.schedulers import Scheduler, Submission
from hpc.scheduling.status import active_mask, tasks
from hpc.study.datasets import files_owners, source_problems, unprepared
from hpc.study.layout import study_lock
from hpc.study.packs import set_aside_rows
from hpc.study.population import Population, sample_architectures
from hpc.study.results import FAILED, Cell, Grid, Standing, finished_mask, standing
from hpc.study.spec import Study
from hpc.study.stale import refusal


class StaleCellsError(ValueError):
    """Cells trained with what study.toml no longer says: a launch would mix them."""


@dataclass(frozen=True)
class Launch:
    """What one launch did."""

    plan: Plan
    record: str = ""  # the record's id (jobs/<id>/), "" when nothing was submitted
    job_ids: tuple[str, ...] = ()  # array job ids (Slurm) or lane pids (local)
    jobs: tuple[Any, ...] = field(default=(), repr=False)  # submitit Jobs that end with us
    files: tuple[Path, ...] = ()  # what a person submits (sbatch scripts, then submit.sh)
    problems: tuple[str, ...] = ()  # a dry run: what it found wrong (sources not found, ...)

    def running(self) -> bool:
        """Whether processes this launch started here still run (looking reaps those that
        ended)."""
        return not all(job.done() for job in self.jobs)

    def stop(self) -> None:
        """Stop the processes this launch started here (submitit's way: SIGINT, then
        SIGKILL); jobs on a cluster run on."""
        for job in self.jobs:
            if not job.done():
                job.cancel()


def launch(
    study: Study,
    *,
    cluster: str = "slurm",
    jobs: int | None = None,
    dry_run: bool = False,
    reset_retries: bool = False,
    retrain_stale: bool = False,
) -> Launch:
    """Submit every cell that is neither finished nor queued or running, through the
    scheduler `cluster` names (slurm, local or sbatch).

    `cluster="local"` runs at most `jobs` workers at once on this machine (default: one per
    core, each with one thread). `dry_run` plans without writing or submitting anything,
    and checks what it can of the sources of datasets not prepared yet (`problems`).
    Refuses (StaleCellsError) while cells are stale, unless `retrain_stale` sets their
    results aside under jobs/stale/ and trains them again.
    """
    scheduler = schedulers.get(cluster)
    check_jobs(jobs)
    # A grown study samples its new architectures here (prefix-stable: old ids keep theirs).
    population = sample_architectures(study, write=not dry_run)
    if dry_run:
        now = standing(study, population)
        plan = _plan(study, scheduler, jobs, population, now, project=True)
        note, problems = dry_checks(study)
        plan = dataclasses.replace(plan, notes=plan.notes + note)
        return Launch(_with_stale_note(plan, now, retrain_stale), problems=problems)
    with study_lock(study.layout, "launch"):
        now = standing(study, population)
        if reset_retries and reset_failed(study, now):
            now = standing(study, population)
        stale = len(now.stale_cells())
        if stale and not retrain_stale:
            raise StaleCellsError(refusal(now.stale, stale, "launch"))
        if retrain_stale and now.stale.records.any():
            set_aside_rows(study.layout, now.index, np.flatnonzero(now.stale.records), "stale")
            now = standing(study, population)
        plan = _plan(study, scheduler, jobs, population, now)
        if not plan.chunks:
            return Launch(plan)
        missing = unprepared(study, sorted({c.dataset for c in plan.chunks}))
        if missing:
            raise FileNotFoundError(
                f"datasets not prepared yet: {', '.join(missing)}; run `anysweep prepare "
                f"{study.root}` first"
            )
        record_id = next_record_id(study, scheduler.record_kind)
        submitted = scheduler.submit(Submission(study, plan, population, record_id, jobs))
    return Launch(plan, record_id, submitted.job_ids, submitted.jobs, submitted.files)


def check_jobs(jobs: int | None) -> None:
    """`--jobs` (local workers at once), when given, is a positive number."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (workers at once), got {jobs}")


def dry_checks(study: Study) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a dry run checks of the datasets not prepared yet, without reading an image:
    (a note of what it could not check, the problems it found in their sources)."""
    missing = unprepared(study, [d.name for d in study.datasets])
    if not missing:
        return (), ()
    sources = [e.prepared_spec.name for e in files_owners(study, missing)]
    note = (
        f"not checked by a dry run: the images of {', '.join(sources)} (whether each reads, "
        "its channels and size); `anysweep prepare` checks them before any training"
    )
    return (note,), tuple(source_problems(study, missing))


def _plan(
    study: Study,
    scheduler: Scheduler,
    jobs: int | None,
    population: Population,
    now: Standing,
    project: bool = False,
) -> Plan:
    active = active_mask(Grid.of(study), tasks(study))  # one scheduler query
    return make_plan(
        study,
        population,
        outcomes=now.outcomes,
        active=active,
        array_size=scheduler.array_size(study),
        lanes=scheduler.lanes(jobs),
        project=project,
    )


def _with_stale_note(plan: Plan, now: Standing, retrain: bool) -> Plan:
    stale = len(now.stale_cells())
    if not stale:
        return plan
    note = refusal(now.stale, stale, "launch")
    if retrain:
        note = f"{stale:,} stale cells would be set aside under jobs/stale/ and trained again"
    return dataclasses.replace(plan, notes=(*plan.notes, note))


def reset_failed(study: Study, now: Standing | None = None) -> list[Cell]:
    """Give failed cells that used up their attempts a fresh count: their failed records
    are set aside under jobs/reset/ (kept for their tracebacks), so the next launch runs
    them again."""
    now = standing(study) if now is None else now
    out = now.outcomes
    spent = finished_mask(out.status, out.attempts, study.settings.max_attempts)
    cells = np.flatnonzero(spent & (out.status == FAILED) & ~out.stale)
    if not len(cells):
        return []
    grid = out.grid
    records = now.index.records
    position = grid.dataset_index(now.index.datasets)[records["dataset"]]
    where = grid.index(position, records["arch_id"], records["seed"])
    rows = np.flatnonzero(np.isin(where, cells) & (records["status"] == FAILED))
    set_aside_rows(study.layout, now.index, rows, "reset")
    return grid.cells(cells)


def cancel(study: Study) -> list[str]:
    """Cancel the study's queued and running jobs; returns what was cancelled."""
    return schedulers.cancel_all(study, read_records(study))
