"""The Slurm scheduler: arrays submitted through submitit, and every call to a Slurm client
outside the local test cluster (squeue, scancel, scontrol, submitit's Slurm executor).

Each array task gets USR2 `SIGNAL_DELAY_S` before its time limit: the worker stops at the
next step, keeps its last epoch-end checkpoint and requeues the task, which resumes there.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpc.scheduling.records import (
    ArrayRecord,
    LaunchRecord,
    job_name,
    job_prefix,
    write_record,
)
from hpc.scheduling.schedulers import (
    Scheduler,
    SchedulerError,
    Submission,
    Submitted,
    TaskKey,
    Tasks,
    TaskState,
)
from hpc.study.layout import task_manifest
from hpc.study.spec import ClusterSpec, Study

SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: the epoch in flight is lost
# Requeues after a time-out a chunk may take (submitit's default is 3): each resumes from the
# last epoch-end checkpoint, so a chunk whose estimate was too low still finishes.
MAX_TIMEOUT_REQUEUES = 20
# squeue (and sacct) states of a task that will still run (or runs) its cells.
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING")
QUEUED_STATES = (
    "PENDING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SUSPENDED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
)


def sbatch_options(cluster: ClusterSpec, *, gpus: bool = True) -> dict[str, Any]:
    """What one task of a dataset asks of Slurm, as sbatch options ('_' for '-', the names
    submitit's Slurm executor takes): the one place they are built, for launched arrays,
    prepare jobs (`gpus=False`) and rendered scripts."""
    options: dict[str, Any] = {
        "time": cluster.time_min,
        "cpus_per_task": cluster.cpus,
        "mem": f"{cluster.mem_gb}G",
    }
    if gpus and cluster.gpus:
        options["gpus_per_node"] = cluster.gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cluster, key):
            options[key] = getattr(cluster, key)
    return options


def executor_parameters(cluster: ClusterSpec, name: str, *, chunks: bool = True) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a dataset's chunk tasks (requeued on USR2) or,
    with `chunks=False`, for its prepare job."""
    params: dict[str, Any] = {"name": name}
    params.update({f"slurm_{k}": v for k, v in sbatch_options(cluster, gpus=chunks).items()})
    if cluster.setup:
        params["slurm_setup"] = list(cluster.setup)
    if chunks:
        params["slurm_array_parallelism"] = cluster.array_parallelism
        params["slurm_signal_delay_s"] = SIGNAL_DELAY_S
        params["stderr_to_stdout"] = True
        # Requeue on preemption needs requeueable jobs where JobRequeue=0 is the default.
        params["slurm_additional_parameters"] = {"requeue": True}
    return params


# What a launched task runs: submitit's job runner behind an entry point that catches SIGUSR2
# from its first line (`hpc.worker.submitted`), started by a shell that ignores the signal
# until then, so that a preemption at any moment of a task's life stops it, never kills it.
TASK_COMMAND = (
    '/bin/sh -c \'trap "" USR2; exec "$@"\' sh {python} -u -m hpc.worker.submitted {folder}'
)


def chunk_executor(folder: Path) -> Any:
    """submitit's Slurm executor, running chunks through TASK_COMMAND."""
    import submitit

    class ChunkExecutor(submitit.SlurmExecutor):  # type: ignore[misc]
        @property
        def _submitit_command_str(self) -> str:
            return TASK_COMMAND.format(
                python=shlex.quote(sys.executable), folder=shlex.quote(str(self.folder))
            )

    return ChunkExecutor(folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)


def _native(executor: Any, params: dict[str, Any]) -> dict[str, Any]:
    """AutoExecutor's parameters (generic names, `slurm_` prefixes) as SlurmExecutor's."""
    generic = executor._equivalence_dict()  # name -> job_name, ...
    return {generic.get(key, key.removeprefix("slurm_")): value for key, value in params.items()}


def _client(argv: list[str], timeout_s: float = 60) -> str:
    """A Slurm client's output; one that cannot run or fails is a SchedulerError."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"could not run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise SchedulerError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def squeue_states(study: Study) -> dict[tuple[str, int], tuple[str, str]]:
    """{(job name, array task index): (squeue state, job id)} for the study's jobs: one call."""
    out = _client(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%j|%T"])
    prefix = job_prefix(study) + "."
    states: dict[tuple[str, int], tuple[str, str]] = {}
    for line in out.splitlines():
        job_id, _, rest = line.strip().partition("|")
        name, _, state = rest.rpartition("|")
        if not name.startswith(prefix):
            continue
        _, _, task = job_id.partition("_")
        states[(name, int(task) if task.isdigit() else 0)] = (state.strip(), job_id)
    return states


def sacct_states(
    study: Study, records: Sequence[LaunchRecord]
) -> dict[tuple[str, int], tuple[str, str, str]]:
    """{(job name, array task index): (sacct state, job id, exit code)} of the records' jobs,
    each task's latest run, ended ones included: one call."""
    names = sorted({a.job_name for r in records for a in r.arrays})
    if not names:
        return {}
    since = time.localtime(min(r.created_ts for r in records) - 60)
    out = _client(
        [
            *("sacct", "-X", "-n", "-P", "-u", getpass.getuser()),
            *("-S", time.strftime("%Y-%m-%dT%H:%M:%S", since), "--name", ",".join(names)),
            *("-o", "JobID,JobName,State,ExitCode"),
        ]
    )
    states: dict[tuple[str, int], tuple[str, str, str]] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        job_id, name, state, exit_code = parts
        for index, task in _tasks_of(job_id):
            states[(name, index)] = (state.split()[0] if state else "", task, exit_code)
    return states


def _tasks_of(job_id: str) -> list[tuple[int, str]]:
    """(index, task id) of each task a sacct or squeue JobID stands for: `12` (a job), `12_3`,
    or pending tasks as `12_[4-7,9%2]`."""
    base, sep, task = job_id.partition("_")
    if not sep:
        return [(0, base)]
    if task.isdigit():
        return [(int(task), job_id)]
    found = []
    for part in task.strip("[]").partition("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):
            found += [(i, f"{base}_{i}") for i in range(int(low), int(high or low) + 1)]
    return found


def _exit(code: str) -> str:
    """sacct's ExitCode `status:signal` in words: `exit 1`, `signal 9`, '' for 0:0, else as
    Slurm writes it (`ExitCode 0:125`: Slurm's own codes, such as a cgroup's OOM kill)."""
    status, _, signal = code.partition(":")
    if not (status.isdigit() and signal.isdigit()) or code == "0:0":
        return ""
    if int(signal) == 0:
        return f"exit {status}"
    return f"signal {signal}" if int(status) == 0 and int(signal) < 64 else f"ExitCode {code}"


def _task_id(array: ArrayRecord, index: int) -> str:
    """A task's Slurm id as the record knows it ('' for scripts not submitted through us)."""
    if not array.job_id:
        return ""
    # submitit submits a single chunk as a plain job, not an array.
    return array.job_id if len(array) == 1 else f"{array.job_id}_{index}"


def _reported(found: tuple[str, str, str]) -> TaskState:
    """What accounting says of a task: queued, running, or ended and how."""
    state, job_id, exit_code = found
    if state in RUNNING_STATES:
        return TaskState("running", job_id)
    if state in QUEUED_STATES:
        return TaskState("queued", job_id)
    return TaskState("ended", job_id, end=state, reason=_exit(exit_code))


def _state(found: tuple[str, str] | None, array: ArrayRecord, index: int) -> TaskState:
    if found is None:
        return TaskState("ended", _task_id(array, index))
    state, job_id = found
    if state in RUNNING_STATES:
        return TaskState("running", job_id)
    return TaskState("queued" if state in QUEUED_STATES else "ended", job_id)


def max_array_size(study: Study) -> int:
    """The cluster's MaxArraySize: asked of `scontrol show config` when SLURM_CONF names a
    cluster config, else the study's [cluster] max_array_size."""
    fallback = study.cluster.max_array_size
    if not os.environ.get("SLURM_CONF"):
        return fallback
    try:
        out = _client(["scontrol", "show", "config"], timeout_s=30)
    except SchedulerError:
        return fallback
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            size = int(value.strip())
            if size < 1:
                raise ValueError(
                    "this cluster's MaxArraySize is 0: it accepts no array jobs; "
                    "ask its admins, or run with --cluster local"
                )
            return size
    return fallback


class SlurmScheduler(Scheduler):
    name = "slurm"
    queue = "slurm"
    summary = "submitted {n} array jobs (ids {ids})"

    def check_ready(self) -> None:
        if not os.environ.get("SLURM_CONF"):
            raise ValueError(
                "--cluster slurm needs SLURM_CONF set to the cluster's slurm.conf "
                '(for the local test cluster: eval "$(python -m hpc.localslurm env)")'
            )

    def array_size(self, study: Study) -> int:
        return max_array_size(study)

    def submit(self, submission: Submission) -> Submitted:
        from hpc.worker import Chunk

        study, record_id = submission.study, submission.record_id
        manifests = submission.write_array_manifests()
        arrays = submission.arrays()
        folder = study.layout.submitit_dir(record_id, self.name)
        try:
            for k, (array, path) in enumerate(zip(submission.plan.arrays, manifests, strict=True)):
                executor = chunk_executor(folder)
                params = executor_parameters(array.cluster, arrays[k].job_name)
                executor.update_parameters(**_native(executor, params))
                with executor.batch():
                    jobs = [executor.submit(Chunk(path, i)) for i in range(len(array.chunks))]
                job_id = jobs[0].job_id.partition("_")[0]
                arrays[k] = dataclasses.replace(arrays[k], job_id=job_id)
        finally:
            # Whatever was submitted is recorded, even when a later array failed to submit.
            done = [a for a in arrays if a.job_id is not None]
            if done:
                write_record(study, record_id, self.name, done)
        return Submitted(tuple(str(a.job_id) for a in arrays))

    def submit_tasks(self, tasks: Tasks) -> Submitted:
        """One array per group (a dataset's tasks), with its resources but no GPU, as
        prepare jobs ask; the job ids of the arrays."""
        import submitit

        study, run_id = tasks.study, tasks.run_id
        folder = study.layout.record_dir(run_id)
        paths = tasks.write(lambda group, i: task_manifest(folder / group.label, i))
        ids = []
        for group, files in zip(tasks.groups, paths, strict=True):
            executor = submitit.AutoExecutor(
                folder=study.layout.submitit_dir(run_id, self.name), cluster="slurm"
            )
            name = job_name(study, run_id, group.label)
            executor.update_parameters(**executor_parameters(group.cluster, name, chunks=False))
            with executor.batch():
                jobs = [executor.submit(tasks.runner, path) for path in files]
            ids.append(jobs[0].job_id.partition("_")[0])
        return Submitted(tuple(ids))

    def running_tasks(self, study: Study, kind: str) -> set[tuple[str, str]]:
        prefix = job_prefix(study) + "."
        found = set()
        for (name, _task), (state, _id) in squeue_states(study).items():
            run_id, _, label = name.removeprefix(prefix).partition(".")
            if run_id.startswith(kind) and state in (*RUNNING_STATES, *QUEUED_STATES):
                found.add((run_id, label))
        return found

    def task_states(
        self, study: Study, records: Sequence[LaunchRecord]
    ) -> dict[TaskKey, TaskState]:
        queue = squeue_states(study)
        return {
            (record.id, array.label, index): _state(
                queue.get((array.job_name, index)), array, index
            )
            for record in records
            for array in record.arrays
            for index in range(len(array))
        }

    def task_report(
        self, study: Study, records: Sequence[LaunchRecord]
    ) -> dict[TaskKey, TaskState]:
        # sacct remembers how tasks ended; a cluster without accounting has squeue alone.
        try:
            accounting = sacct_states(study, records)
        except SchedulerError:
            return self.task_states(study, records)
        keys = [(r, a, i) for r in records for a in r.arrays for i in range(len(a))]
        # Accounting learns of a job, and of its end, seconds after the controller does: the
        # tasks it does not list yet are looked for in the queue (one squeue more).
        unknown = [k for k in keys if (k[1].job_name, k[2]) not in accounting]
        queue = squeue_states(study) if unknown else {}
        return {
            (record.id, array.label, index): _reported(accounting[(array.job_name, index)])
            if (array.job_name, index) in accounting
            else _state(queue.get((array.job_name, index)), array, index)
            for record, array, index in keys
        }

    def task_log(
        self, study: Study, record: LaunchRecord, array: ArrayRecord, index: int
    ) -> Path | None:
        job = _task_id(array, index)
        path = study.layout.submitit_dir(record.id, self.name) / f"{job}_0_log.out"
        return path if path.exists() else None

    def cancel(self, study: Study, records: Sequence[LaunchRecord]) -> list[str]:
        ids = sorted({job_id.partition("_")[0] for _, job_id in squeue_states(study).values()})
        if ids:
            _client(["scancel", *ids])
        return ids


def submit_prepare(study: Study, names: Sequence[str] | None = None) -> list[str]:
    """One Slurm job per dataset whose files the named ones (default: all) read; job ids."""
    import submitit

    from hpc.study.datasets import files_owners, prepare_one

    ids = []
    for entry in files_owners(study, names):
        spec = entry.prepared_spec
        executor = submitit.AutoExecutor(folder=study.layout.prepare_jobs, cluster="slurm")
        name = f"anysweep-prepare-{spec.name}"
        executor.update_parameters(**executor_parameters(entry.cluster, name, chunks=False))
        ids.append(executor.submit(prepare_one, spec.to_dict(), str(study.data_dir)).job_id)
    return ids


def requeue_this_job() -> str:
    """Requeue the Slurm job (or array task) this process runs in; what happened, for the log."""
    from hpc.provenance import job_id

    # Inside a Slurm job (SLURM_JOB_ID set by slurmd) scontrol talks to the cluster that runs
    # us, whatever SLURM_CONF says; outside one there is nothing to requeue.
    job = job_id()
    if not job or not os.environ.get("SLURM_JOB_ID"):
        return "not in a Slurm job: not requeued; run the chunk again to resume"
    try:
        _client(["scontrol", "requeue", job])
    except SchedulerError as exc:
        return f"scontrol requeue {job}: {exc}"
    return f"requeued job {job}"


SCHEDULER = SlurmScheduler()
