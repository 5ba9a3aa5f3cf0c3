"""What /proc says of a process: whether it still runs and when it started, which tells a
reused pid apart. The local lanes and the local Slurm cluster's daemons are both known by
(pid, start time)."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from the state on (index 0 = state, 3 = session, 19 = start
    time in clock ticks after boot), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses; what follows the last ')' is fixed.
    return text[text.rindex(")") + 2 :].split()


def pids() -> list[int]:
    """Every process /proc lists now."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def process_start(pid: int) -> int:
    """A process's start time (clock ticks after boot); 0 when it is not there."""
    fields = stat_fields(pid)
    return 0 if fields is None else int(fields[19])


def process_alive(pid: int, start: int) -> bool:
    """Whether a process we started still runs: same pid and start time, not a zombie (the
    machine's PID 1 may reap slowly)."""
    fields = stat_fields(pid)
    if fields is None:
        if not Path("/proc/self/stat").exists():  # no procfs: fall back to a signal probe
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == start
