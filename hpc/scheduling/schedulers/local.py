"""The local scheduler: lanes (workers) on this machine, each taking the next chunk from a
launch's queue until none is left; submitit's local executor starts and stops them.

The lanes' protocol, written and read here only: a launch's manifests wait in queue/; a lane
claims one by renaming it into claimed/ as `<chunk>.lane<k>.json` (one rename, so two lanes
never run the same chunk) and moves it to done/ when it ends. A chunk is queued while its
manifest waits, running while claimed, ended in done/ or once no lane of its launch lives.
The record keeps each lane's pid and start time (`lanes`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpc.procfs import process_alive, process_start
from hpc.scheduling.records import ArrayRecord, LaunchRecord, write_record
from hpc.scheduling.schedulers import (
    Scheduler,
    Submission,
    Submitted,
    TaskGroup,
    TaskKey,
    Tasks,
    TaskState,
)
from hpc.study.layout import LaneDirs
from hpc.study.spec import Study

try:  # lanes run under submitit; reading their state (status on a login node) needs none
    from submitit.helpers import Checkpointable, DelayedSubmission
except ModuleNotFoundError:  # pragma: no cover - analysis-only installs
    Checkpointable = object  # type: ignore[assignment,misc]

# A local lane has no scheduler to stop it: give it a week.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
# No arrays locally: every chunk goes to the one queue the lanes take from.
NO_ARRAY_LIMIT = 1 << 30


def default_jobs() -> int:
    """Local workers at once: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


class Lane(Checkpointable):
    """A local worker: takes the next chunk from a launch's queue/ until none is left; a
    requeued lane first finishes the chunk it had claimed. `runner` runs each queued file
    (default: the worker's run_chunk on a chunk's manifest)."""

    def __init__(
        self, dirs: LaneDirs, lane: int, runner: Callable[[Path], Any] | None = None
    ) -> None:
        self.dirs = dirs
        self.lane = lane
        self.runner = runner

    def __call__(self) -> int:
        from hpc.worker import interruption, run_chunk
        from hpc.worker.device import DeviceLost

        run = self.runner or run_chunk
        ran = 0
        while (manifest := self._next()) is not None:
            try:
                run(manifest)
            except DeviceLost:
                raise  # this process's device is gone: its next chunk waits for a fresh lane
            except Exception as exc:  # one bad chunk must not stop the lane's others
                if (stop := interruption(exc)) is not None:
                    raise stop from None
                print(f"lane {self.lane}: chunk {manifest.name} failed: {exc!r}", flush=True)
            self.dirs.done.mkdir(exist_ok=True)
            os.replace(manifest, self.dirs.done / manifest.name)
            ran += 1
        return ran

    def _next(self) -> Path | None:
        self.dirs.claimed.mkdir(exist_ok=True)
        mine = sorted(self.dirs.claimed.glob(f"*.lane{self.lane}.json"))
        if mine:
            return mine[0]
        for path in sorted(self.dirs.queue.glob("*.json")):
            target = self.dirs.claimed / f"{path.stem}.lane{self.lane}.json"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another lane took it
            return target
        return None

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(Lane(self.dirs, self.lane, self.runner))


def lane_executor(folder: Path) -> Any:
    """submitit's local executor, whose job controllers run in a session of their own with
    their output in FOLDER/controllers.log: Ctrl-C in a terminal reaches the command
    alone, which stops its lanes (SIGINT to each controller), and no controller's
    KeyboardInterrupt traceback lands on the terminal."""
    import submitit
    from submitit.local.local import LocalJob

    class LaneExecutor(submitit.LocalExecutor):  # type: ignore[misc]
        def _submit_command(self, command: str) -> Any:
            process = _start_controller(self.folder, command, self.parameters)
            return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])

    return LaneExecutor(folder)


def _start_controller(folder: Path, command: str, parameters: dict[str, Any]) -> Any:
    """What `submitit.local.local.start_controller` does (one task, no GPU, no set-up lines),
    in a session of its own, its output to a file."""
    import subprocess

    env = {
        **os.environ,
        "SUBMITIT_LOCAL_NTASKS": "1",
        "SUBMITIT_LOCAL_COMMAND": command,
        "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * parameters.get("timeout_min", 2.0))),
        "SUBMITIT_LOCAL_SIGNAL_DELAY_S": "30",  # submitit's default: a week's limit is far
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_STDERR_TO_STDOUT": "1" if parameters.get("stderr_to_stdout") else "",
        "SUBMITIT_EXECUTOR": "local",
        # As submitit's executor without gpus_per_node: lanes see no GPU (one core each).
        "CUDA_VISIBLE_DEVICES": "",
        "SUBMITIT_LOCAL_WITH_SHELL": "",
    }
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "controllers.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "submitit.local._local", str(folder)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _lane_of(claim: Path) -> int:
    """The lane index in a claimed manifest's name, `<chunk>.lane<k>.json`."""
    return int(claim.name.rsplit(".", 2)[1].removeprefix("lane"))


def _claims(dirs: LaneDirs, chunk: str) -> list[Path]:
    return [*dirs.claimed.glob(f"{chunk}.lane*.json"), *dirs.done.glob(f"{chunk}.lane*.json")]


def _state(dirs: LaneDirs, chunk: str, alive: bool) -> TaskState:
    """Queued, running (with its lane, `lane<k>`, as the job id) or ended."""
    if not alive:
        return TaskState("ended", "")
    if (dirs.queue / f"{chunk}.json").exists():
        return TaskState("queued", "")
    for path in dirs.claimed.glob(f"{chunk}.lane*.json"):
        return TaskState("running", path.name.rsplit(".", 2)[1])
    return TaskState("ended", "")


def _ranked(submission: Submission) -> dict[tuple[str, int], int]:
    """Each chunk's rank, longest first: lanes take chunks in name order, so the longest
    start first and the lanes finish close together."""
    by_cost = sorted(
        (
            (chunk.seconds, array.label, i)
            for array in submission.plan.arrays
            for i, chunk in enumerate(array.chunks)
        ),
        key=lambda item: -item[0],
    )
    return {(label, i): r for r, (_, label, i) in enumerate(by_cost)}


class LocalScheduler(Scheduler):
    name = "local"
    queue = "local"
    summary = "started {n} local workers (pids {ids})"
    poll_s = 1.0

    def array_size(self, study: Study) -> int:
        return NO_ARRAY_LIMIT

    def lanes(self, jobs: int | None) -> int | None:
        return jobs or default_jobs()

    def submit(self, submission: Submission) -> Submitted:
        study, record_id = submission.study, submission.record_id
        dirs = study.layout.lanes(record_id)
        rank = _ranked(submission)
        arrays = [_ranked_tasks(a, rank) for a in submission.arrays()]
        submission.write_manifests(
            lambda a, i: dirs.queue / f"{rank[(a.label, i)]:05d}-{a.label}.{i}.json", threads=1
        )
        lanes = min(self.lanes(submission.jobs) or 1, len(rank))
        started: list[Any] = []
        try:
            started.extend(_start_lanes(study, record_id, lanes))
            pids = [int(job.job_id) for job in started]
            own = {"lanes": [{"pid": pid, "start": process_start(pid)} for pid in pids]}
            write_record(study, record_id, self.name, arrays, own)
        except BaseException:
            # Lanes that no record names would be invisible to status and cancel: stop them.
            for job in started:
                job.cancel()
            raise
        return Submitted(tuple(str(p) for p in pids), tuple(started))

    def submit_tasks(self, tasks: Tasks) -> Submitted:
        """Lanes that take the tasks from the run's queue/, the costliest first; they end with
        the command that started them (no record names them)."""
        costs = sorted(
            ((cost, g.label, i) for g in tasks.groups for i, cost in enumerate(g.costs)),
            key=lambda item: -item[0],
        )
        rank = {(label, i): r for r, (_, label, i) in enumerate(costs)}
        dirs = tasks.study.layout.lanes(tasks.run_id)

        def path_of(group: TaskGroup, i: int) -> Path:
            return dirs.queue / f"{rank[(group.label, i)]:05d}-{group.label}.{i}.json"

        tasks.write(path_of, threads=1)
        lanes = min(self.lanes(tasks.jobs) or 1, len(rank))
        started = _start_lanes(tasks.study, tasks.run_id, lanes, tasks.runner)
        return Submitted(tuple(str(job.job_id) for job in started), tuple(started))

    def task_states(
        self, study: Study, records: Sequence[LaunchRecord]
    ) -> dict[TaskKey, TaskState]:
        states = {}
        for record in records:
            lanes = record.own.get("lanes", [])
            alive = any(process_alive(lane["pid"], lane["start"]) for lane in lanes)
            dirs = study.layout.lanes(record.id)
            for array in record.arrays:
                for index in range(len(array)):
                    key = (record.id, array.label, index)
                    states[key] = _state(dirs, array.chunk(index), alive)
        return states

    def task_log(
        self, study: Study, record: LaunchRecord, array: ArrayRecord, index: int
    ) -> Path | None:
        claims = _claims(study.layout.lanes(record.id), array.chunk(index))
        if not claims:
            return None
        pid = record.own["lanes"][_lane_of(claims[0])]["pid"]
        path = study.layout.submitit_dir(record.id, self.name) / f"{pid}_0_log.out"
        return path if path.exists() else None

    def cancel(self, study: Study, records: Sequence[LaunchRecord]) -> list[str]:
        cancelled = []
        for record in records:
            for lane in record.own.get("lanes", []):
                if process_alive(lane["pid"], lane["start"]):
                    # SIGINT is how submitit stops a local job: its tasks get SIGINT, then SIGKILL.
                    os.kill(lane["pid"], signal.SIGINT)
                    cancelled.append(str(lane["pid"]))
        return cancelled


def _start_lanes(
    study: Study, record_id: str, lanes: int, runner: Callable[[Path], Any] | None = None
) -> list[Any]:
    """Start `lanes` lanes on the queue of jobs/<record_id>/ (`lane_executor`); if one fails
    to start, those started are stopped."""
    executor = lane_executor(study.layout.submitit_dir(record_id, LocalScheduler.name))
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, stderr_to_stdout=True)
    dirs = study.layout.lanes(record_id)
    started: list[Any] = []
    try:
        started.extend(executor.submit(Lane(dirs, lane, runner)) for lane in range(lanes))
    except BaseException:
        for job in started:
            job.cancel()
        raise
    return started


def _ranked_tasks(array: ArrayRecord, rank: dict[tuple[str, int], int]) -> ArrayRecord:
    """The array with each task named after its queued manifest, `<rank>-<label>.<index>`."""
    from dataclasses import replace

    names = tuple(f"{rank[(array.label, i)]:05d}-{array.chunk(i)}" for i in range(len(array)))
    return replace(array, chunks=names)


SCHEDULER = LocalScheduler()
