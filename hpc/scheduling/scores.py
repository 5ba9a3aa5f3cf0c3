"""`anysweep score`: the training-free scores of every (architecture, dataset) of a study, for
every seed, before training. The missing rows (hpc.study.scores) become one task per block of
architectures of a dataset, handed to a scheduler: local lanes (one process per core, one torch
thread each), waited for with a progress bar, or one Slurm array per dataset. Run again, it
computes only what is not stored; Ctrl-C stops the local lanes, and the blocks they had
finished stay stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpc.scheduling import schedulers
from hpc.scheduling.records import next_record_id
from hpc.scheduling.schedulers import Scheduler, Submitted, TaskGroup, Tasks
from hpc.study.datasets import unprepared
from hpc.study.layout import study_lock
from hpc.study.population import load_population
from hpc.study.scores import Row, ScoreTask, plan_scores, read_score_files, stored_rows
from hpc.study.spec import Study

RUN_KIND = "Z"  # score runs are jobs/Z0001, Z0002, ...


@dataclass(frozen=True)
class ScoreRun:
    """What one `score_study` did."""

    run_id: str  # jobs/<run_id>/; "" when there was nothing to submit
    planned: int  # networks to score (architecture, dataset, seed) when it started
    scored: int  # of those, stored when it ended (not waited for: 0)
    job_ids: tuple[str, ...] = ()  # Slurm array job ids, or local lane pids
    busy: tuple[str, ...] = ()  # datasets left alone: other jobs are scoring them
    unscored: tuple[str, ...] = ()  # "dataset: n networks" left after waiting
    waited: bool = False


def _check_unprepared(study: Study, tasks: Sequence[ScoreTask]) -> None:
    """The datasets left to score must be prepared: one error naming them, before compute."""
    missing = unprepared(study, list(dict.fromkeys(t.dataset for t in tasks)))
    if missing:
        raise FileNotFoundError(
            f"datasets not prepared yet: {', '.join(missing)}; run `anysweep prepare "
            f"{study.root}` first"
        )


def score_study(
    study: Study,
    *,
    cluster: str = "local",
    jobs: int | None = None,
    names: Sequence[str] | None = None,
    wait: bool = True,
    progress: bool = True,
    poll_s: float = 1.0,
    check: Callable[[], None] = lambda: None,
) -> ScoreRun:
    """Compute every missing score of the named datasets (default all) through the scheduler
    `cluster` names; with `wait`, until no task of this run is left, showing progress.
    `check` is called at every look (it raises to stop the waiting)."""
    scheduler = schedulers.get(cluster)
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    scheduler.check_ready()
    for name in names or ():
        study.dataset(name)  # an unknown one is an error naming the study's datasets
    population = load_population(study)
    with study_lock(study.layout, "scores"):
        busy = sorted({label for _, label in scheduler.running_tasks(study, RUN_KIND)})
        tasks = [t for t in plan_scores(study, population, names) if t.dataset not in busy]
        planned = sum(len(t.rows) for t in tasks)
        if not tasks:
            return ScoreRun("", 0, 0, busy=tuple(busy))
        _check_unprepared(study, tasks)
        from hpc.worker.scores import score_task  # torch: once the input is known good

        run_id = next_record_id(study, RUN_KIND)
        submitted = scheduler.submit_tasks(
            Tasks(study, run_id, _groups(study, tasks), score_task, jobs)
        )
        if not wait:
            return ScoreRun(run_id, planned, 0, submitted.job_ids, tuple(busy))
        try:
            scored, unscored = _wait(
                study, scheduler, run_id, submitted, tasks, progress, poll_s, check
            )
        except BaseException:
            for job in submitted.jobs:  # local lanes end with this command
                if not job.done():
                    job.cancel()
            raise
    return ScoreRun(run_id, planned, scored, submitted.job_ids, tuple(busy), unscored, True)


def _groups(study: Study, tasks: list[ScoreTask]) -> tuple[TaskGroup, ...]:
    """The tasks by dataset, each with its dataset's resources."""
    groups = []
    for name in dict.fromkeys(t.dataset for t in tasks):
        mine = [t for t in tasks if t.dataset == name]
        groups.append(
            TaskGroup(
                label=name,
                cluster=study.dataset(name).cluster,
                tasks=tuple(t.to_dict() for t in mine),
                costs=tuple(t.cost for t in mine),
            )
        )
    return tuple(groups)


def _wait(
    study: Study,
    scheduler: Scheduler,
    run_id: str,
    submitted: Submitted,
    tasks: list[ScoreTask],
    progress: bool,
    poll_s: float,
    check: Callable[[], None],
) -> tuple[int, tuple[str, ...]]:
    """Until no task of the run is left (local lanes end when their queue is empty); the
    bar counts stored networks. Returns how many were stored and, per dataset, how many
    were not."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    wanted: dict[str, set[Row]] = {t.dataset: set() for t in tasks}
    for task in tasks:
        wanted[task.dataset].update(task.rows)
    total = sum(len(rows) for rows in wanted.values())
    with tqdm(total=total, desc=f"{study.name} scores", unit="net", disable=not progress) as bar:
        while True:
            check()
            left = _left(study, wanted)
            bar.update(total - sum(left.values()) - bar.n)
            if not _running(study, scheduler, run_id, submitted):
                break
            time.sleep(poll_s)
    left = _left(study, wanted)
    unscored = tuple(f"{name}: {n} networks" for name, n in left.items() if n)
    return total - sum(left.values()), unscored


def _left(study: Study, wanted: dict[str, set[Row]]) -> dict[str, int]:
    """Per dataset, how many wanted rows are not stored yet."""
    return {
        name: len(rows - stored_rows(read_score_files(study, study.dataset(name))))
        for name, rows in wanted.items()
    }


def _running(study: Study, scheduler: Scheduler, run_id: str, submitted: Submitted) -> bool:
    if submitted.jobs:
        return not all(job.done() for job in submitted.jobs)
    return any(run == run_id for run, _ in scheduler.running_tasks(study, RUN_KIND))


def summary(run: ScoreRun, study: Study) -> str:
    """What a score run did, in a line or two (`anysweep score` prints it)."""
    lines = []
    if run.busy:
        lines.append(f"left alone, other jobs are scoring them: {', '.join(run.busy)}")
    if not run.run_id:
        lines.append("nothing to score: every score of the study is stored")
    elif not run.waited:
        lines.append(
            f"submitted {len(run.job_ids)} array job(s) ({', '.join(run.job_ids)}) to score "
            f"{run.planned} networks; logs in {study.layout.record_dir(run.run_id)}"
        )
    else:
        lines.append(
            f"scored {run.scored} of {run.planned} networks; files in {study.layout.scores}"
        )
    if run.unscored:
        logs = study.layout.record_dir(run.run_id)
        lines.append(f"not scored: {'; '.join(run.unscored)}; the task logs are in {logs}")
    return "\n".join(lines)
