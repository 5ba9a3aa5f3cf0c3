"""The daemons' processes: started in the foreground under setsid, known by pid files we write,
stopped by pid (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.procfs import pids, process_alive, stat_fields

# Popen objects of daemons started by this Python process, kept so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    """A started process: its pid and its start time, which tells a reused pid apart."""

    pid: int
    start_time: int  # clock ticks after boot, field 22 of /proc/PID/stat


def read_pid_file(pid_file: Path) -> PidRecord | None:
    """The record in a pid file written by `spawn`, or None if there is none or it is garbled."""
    try:
        pid, start_time = pid_file.read_text().split()
        return PidRecord(int(pid), int(start_time))
    except (OSError, ValueError):
        return None


def is_alive(record: PidRecord) -> bool:
    """Whether the recorded process still runs; a zombie counts as dead (PID 1 reaps slowly)."""
    _reap(record.pid)
    return process_alive(record.pid, record.start_time)


def spawn(
    argv: Sequence[str], pid_file: Path, log_file: Path, env: Mapping[str, str] | None = None
) -> PidRecord:
    """Start `argv` in a new session with output to `log_file`; write its pid file."""
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    _children[proc.pid] = proc
    fields = stat_fields(proc.pid)
    if fields is None:
        raise RuntimeError(f"{argv[0]} exited at once; see {log_file}")
    record = PidRecord(proc.pid, int(fields[19]))
    pid_file.write_text(f"{record.pid} {record.start_time}\n")
    return record


def session_members(leader: PidRecord) -> list[PidRecord]:
    """Live processes in the session a live daemon leads, itself excluded (e.g. job steps)."""
    if not is_alive(leader):
        return []
    members = []
    for pid in pids():
        if pid == leader.pid:
            continue
        fields = stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[3]) == leader.pid:
            members.append(PidRecord(pid, int(fields[19])))
    return members


def terminate(leaders: Sequence[PidRecord], timeout_s: float = 10.0) -> None:
    """Stop daemons and what they forked: SIGTERM the leaders, SIGKILL all left after `timeout_s`.

    The members of each leader's session are recorded before any signal, so only processes
    the daemons started are touched, even if a pid is reused meanwhile.
    """
    live = [r for r in leaders if is_alive(r)]
    members = [m for r in live for m in session_members(r)]
    for record in live:
        _signal(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = [r for r in live if is_alive(r)]
    leftovers = live + [m for m in members if is_alive(m)]
    for record in leftovers:
        _signal(record.pid, signal.SIGKILL)
    for record in leftovers:
        _wait_dead(record, 5.0)


def _wait_dead(record: PidRecord, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while is_alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status of a daemon this process started, so it leaves no zombie."""
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]
