"""The launcher: submit a study's missing cells as array jobs through submitit, record what
was submitted, and return at once. One launch at a time per study (an fcntl lock), so two
launches never submit the same cell.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from hpc.files import write_json_atomic
from hpc.scheduling.plan import Array, Plan, make_plan, max_array_size
from hpc.scheduling.status import (
    SchedulerError,
    active_cells,
    job_name,
    process_alive,
    process_start,
    read_records,
    squeue_states,
)
from hpc.study.population import (
    Population,
    dataset_arch,
    sample_architectures,
    study_lock,
    unprepared,
)
from hpc.study.results import Cell, is_finished, scan_results
from hpc.study.spec import ClusterSpec, Study

CLUSTERS = ("slurm", "local")
# A local lane has no scheduler to stop it: give it a week.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: the epoch in flight is lost
# Requeues after a time-out a chunk may take (submitit's default is 3): each resumes from the
# last epoch-end checkpoint, so a chunk whose estimate was too low still finishes.
MAX_TIMEOUT_REQUEUES = 20


@dataclass(frozen=True)
class Launch:
    """What one launch did."""

    plan: Plan
    record: str = ""  # the record's id (jobs/<id>/), "" when nothing was submitted
    job_ids: tuple[str, ...] = ()  # array job ids (Slurm) or lane pids (local)
    jobs: tuple[Any, ...] = field(default=(), repr=False)  # submitit Job objects (local lanes)


def default_jobs() -> int:
    """Local workers at once: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def launch(
    study: Study,
    *,
    cluster: str = "slurm",
    jobs: int | None = None,
    dry_run: bool = False,
    reset_retries: bool = False,
) -> Launch:
    """Submit every cell that is neither finished nor queued or running.

    `cluster="local"` runs at most `jobs` workers at once on this machine (default: one per
    core, each with one thread). `dry_run` plans without writing or submitting anything.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster {cluster!r} is not one of {CLUSTERS}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    # A grown study samples its new architectures here (prefix-stable: old ids keep theirs).
    population = sample_architectures(study, write=not dry_run)
    if dry_run:
        return Launch(_plan(study, cluster, jobs, population))
    with study_lock(study, "launch"):
        if reset_retries:
            reset_failed(study)
        plan = _plan(study, cluster, jobs, population)
        if not plan.chunks:
            return Launch(plan)
        missing = unprepared(study, sorted({c.dataset for c in plan.chunks}))
        if missing:
            raise FileNotFoundError(
                f"datasets not prepared yet: {', '.join(missing)}; run `anysweep prepare "
                f"{study.root}` first"
            )
        record_id = next_record_id(study, "L")
        if cluster == "local":
            return _launch_local(study, plan, population, record_id, jobs or default_jobs())
        return _launch_slurm(study, plan, population, record_id)


def _plan(study: Study, cluster: str, jobs: int | None, population: Population) -> Plan:
    active = active_cells(study)  # one scheduler query
    if cluster == "local":
        # No arrays locally: every chunk goes to the queue the workers take from.
        return make_plan(
            study, population, active=active, array_size=1 << 30, lanes=jobs or default_jobs()
        )
    return make_plan(study, population, active=active, array_size=max_array_size(study))


def next_record_id(study: Study, kind: str) -> str:
    jobs = study.root / "jobs"
    taken = [p.name for p in jobs.glob(f"{kind}[0-9][0-9][0-9][0-9]*") if p.is_dir()]
    number = max((int(name[1:]) for name in taken if name[1:].isdigit()), default=0) + 1
    return f"{kind}{number:04d}"


def write_manifests(
    study: Study,
    plan_arrays: Sequence[Array],
    population: Population,
    path_of: Callable[[Array, int], Path],
    threads: int | None = None,
) -> list[list[Path]]:
    """One manifest per chunk, at `path_of(array, chunk index)`; `threads` None gives each
    worker its task's CPUs. Returns the paths per array."""
    from hpc.scheduling.manifest import write_manifest

    paths = []
    for array in plan_arrays:
        entry = study.dataset(array.dataset)
        own = []
        for i, chunk in enumerate(array.chunks):
            path = path_of(array, i)
            write_manifest(
                path,
                study_dir=study.root,
                data_dir=study.data_dir,
                dataset=entry.spec,
                recipe=entry.recipe,
                cells=[(a, s, dataset_arch(population.archs[a], entry)) for a, s in chunk.cells],
                max_attempts=study.settings.max_attempts,
                device=study.settings.device,
                threads=array.cluster.cpus if threads is None else threads,
            )
            own.append(path)
        paths.append(own)
    return paths


def array_layout(folder: Path) -> Callable[[Array, int], Path]:
    """`folder/<label>/<i>.json`: what `python -m hpc.worker --array DIR --task-id i` reads."""
    return lambda array, i: folder / array.label / f"{i}.json"


def record_arrays(study: Study, record_id: str, plan_arrays: Sequence[Array]) -> list[dict]:
    """The arrays part of a record: label, dataset, job name, and each task's cells."""
    return [
        {
            "label": a.label,
            "dataset": a.dataset,
            "job_name": job_name(study, record_id, a.label),
            "job_id": None,
            "tasks": [
                {"chunk": f"{a.label}.{i}", "cells": [list(c) for c in chunk.cells]}
                for i, chunk in enumerate(a.chunks)
            ],
        }
        for a in plan_arrays
    ]


def write_record(
    study: Study, record_id: str, cluster: str, arrays: list[dict], **extra: Any
) -> None:
    from hpc.worker.provenance import now

    data = {
        "id": record_id,
        "cluster": cluster,
        "created": now(),
        "created_ts": time.time(),
        "arrays": arrays,
        **extra,
    }
    write_json_atomic(study.root / "jobs" / record_id / "record.json", data)


def slurm_parameters(cluster: ClusterSpec, name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters for one array of a dataset."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": cluster.time_min,
        "cpus_per_task": cluster.cpus,
        "mem_gb": cluster.mem_gb,
        "slurm_array_parallelism": cluster.array_parallelism,
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
        "stderr_to_stdout": True,
    }
    if cluster.gpus:
        params["gpus_per_node"] = cluster.gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cluster, key):
            params[f"slurm_{key}"] = getattr(cluster, key)
    if cluster.setup:
        params["slurm_setup"] = list(cluster.setup)
    # Requeue on preemption needs the job to be requeueable where JobRequeue=0 is the default.
    params["slurm_additional_parameters"] = {"requeue": True}
    return params


def _launch_slurm(study: Study, plan: Plan, population: Population, record_id: str) -> Launch:
    from hpc.worker import Chunk

    folder = study.root / "jobs" / record_id
    manifests = write_manifests(study, plan.arrays, population, array_layout(folder))
    arrays = record_arrays(study, record_id, plan.arrays)
    job_ids = []
    try:
        for array, record, paths in zip(plan.arrays, arrays, manifests, strict=True):
            executor = submitit.AutoExecutor(
                folder=folder / "slurm", cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES
            )
            executor.update_parameters(**slurm_parameters(array.cluster, record["job_name"]))
            with executor.batch():
                submitted = [executor.submit(Chunk(path)) for path in paths]
            record["job_id"] = submitted[0].job_id.partition("_")[0]
            job_ids.append(record["job_id"])
    finally:
        # Whatever was submitted is recorded, even when a later array failed to submit.
        done = [a for a in arrays if a["job_id"] is not None]
        if done:
            write_record(study, record_id, "slurm", done)
    return Launch(plan, record_id, tuple(job_ids))


class Lane(submitit.helpers.Checkpointable):
    """A local worker: takes the next chunk from a launch's queue/ until none is left.

    Claiming moves a manifest into claimed/ with one rename, so two lanes never run the same
    chunk; a requeued lane first finishes the chunk it had claimed.
    """

    def __init__(self, folder: str, lane: int) -> None:
        self.folder = folder
        self.lane = lane

    def __call__(self) -> int:
        from hpc.worker import interruption, run_chunk

        ran = 0
        while (manifest := self._next()) is not None:
            try:
                run_chunk(manifest)
            except Exception as exc:  # one bad chunk must not stop the lane's others
                if (stop := interruption(exc)) is not None:
                    raise stop from None
                print(f"lane {self.lane}: chunk {manifest.name} failed: {exc!r}", flush=True)
            done = Path(self.folder) / "done" / manifest.name
            done.parent.mkdir(exist_ok=True)
            os.replace(manifest, done)
            ran += 1
        return ran

    def _next(self) -> Path | None:
        root = Path(self.folder)
        claimed = root / "claimed"
        claimed.mkdir(exist_ok=True)
        mine = sorted(claimed.glob(f"*.lane{self.lane}.json"))
        if mine:
            return mine[0]
        for path in sorted((root / "queue").glob("*.json")):
            target = claimed / f"{path.stem}.lane{self.lane}.json"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another lane took it
            return target
        return None

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(Lane(self.folder, self.lane))


def _launch_local(
    study: Study, plan: Plan, population: Population, record_id: str, jobs: int
) -> Launch:
    folder = study.root / "jobs" / record_id
    arrays = record_arrays(study, record_id, plan.arrays)
    # Lanes take chunks in name order: longest first keeps them finishing together.
    by_cost = sorted(
        (
            (chunk.seconds, array.label, i)
            for array in plan.arrays
            for i, chunk in enumerate(array.chunks)
        ),
        key=lambda item: -item[0],
    )
    rank = {(label, i): r for r, (_, label, i) in enumerate(by_cost)}
    for array in arrays:
        for i, task in enumerate(array["tasks"]):
            task["chunk"] = f"{rank[(array['label'], i)]:05d}-{task['chunk']}"
    write_manifests(
        study,
        plan.arrays,
        population,
        threads=1,
        path_of=lambda a, i: folder / "queue" / f"{rank[(a.label, i)]:05d}-{a.label}.{i}.json",
    )
    lanes = min(jobs, len(by_cost))
    executor = submitit.AutoExecutor(folder=folder / "local", cluster="local")
    executor.update_parameters(
        timeout_min=LOCAL_TIMEOUT_MIN,
        stderr_to_stdout=True,
        name=job_name(study, record_id, "local"),
    )
    submitted: list[Any] = []
    try:
        for lane in range(lanes):
            submitted.append(executor.submit(Lane(str(folder), lane)))
        pids = [int(job.job_id) for job in submitted]
        write_record(
            study,
            record_id,
            "local",
            arrays,
            lanes=[{"pid": pid, "start": process_start(pid)} for pid in pids],
        )
    except BaseException:
        # Lanes that no record names would be invisible to status and cancel: stop them.
        for job in submitted:
            job.cancel()
        raise
    return Launch(plan, record_id, tuple(str(p) for p in pids), tuple(submitted))


def reset_failed(study: Study) -> list[Cell]:
    """Give failed cells that used up their attempts a fresh count: their result files move
    to jobs/reset/ (kept for their tracebacks), so the next launch runs them again."""
    results = scan_results(study)
    attempts = study.settings.max_attempts
    reset = [c for c, r in results.items() if r.status == "failed" and is_finished(r, attempts)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for cell in reset:
        source = study.root / "results" / cell.dataset / f"{cell.arch_id}-s{cell.seed}.h5"
        target = study.root / "jobs" / "reset" / stamp / cell.dataset / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
    return reset


def cancel(study: Study) -> list[str]:
    """Cancel the study's queued and running jobs; returns what was cancelled."""
    records = read_records(study)
    cancelled = []
    if any(r["cluster"] in ("slurm", "sbatch") for r in records):
        ids = sorted({job_id.partition("_")[0] for _, job_id in squeue_states(study).values()})
        if ids:
            done = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise SchedulerError(f"scancel failed ({done.returncode}): {done.stderr.strip()}")
            cancelled.extend(ids)
    for record in records:
        for lane in record.get("lanes", []):
            if process_alive(lane["pid"], lane["start"]):
                # SIGINT is how submitit stops a local job: its tasks get SIGINT, then SIGKILL.
                os.kill(lane["pid"], signal.SIGINT)
                cancelled.append(str(lane["pid"]))
    return cancelled


def lanes_running(launched: Launch) -> bool:
    """Whether a local launch's lanes still run (polling reaps those that ended)."""
    return not all(job.done() for job in launched.jobs)


def cancel_lanes(launched: Launch) -> None:
    """Stop the lanes this process started (submitit's way: SIGINT, then SIGKILL)."""
    for job in launched.jobs:
        if not job.done():
            job.cancel()
