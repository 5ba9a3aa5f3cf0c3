"""Where and with what a cell ran: job id, host, GPU, software versions, timestamps.

Imports torch lazily so a login node can call the Slurm and host functions without it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import sys
from collections.abc import Mapping


def job_id(environ: Mapping[str, str] | None = None) -> str:
    """The Slurm job id as `scontrol` names it: `ARRAYJOB_TASK` for an array task, else the job id.

    Empty outside Slurm.
    """
    env = os.environ if environ is None else environ
    array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return env.get("SLURM_JOB_ID", "")


def host() -> str:
    return socket.gethostname()


def device_name(device: str) -> str:
    """The GPU's marketing name for a CUDA device, "cpu" otherwise."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def versions() -> dict[str, str]:
    """Versions of what computed a result; ffcv only when this process imported it."""
    import numpy
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        # The project runs from a checkout as often as installed; "" then says "not installed".
        "anysweep": _dist_version("anysweep"),
    }
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    if "ffcv" in sys.modules:
        # ffcv.__version__ of the 1.0.2 release reads 0.0.3rc1; the distribution knows better.
        out["ffcv"] = _dist_version("ffcv")
    return out


def versions_json() -> str:
    return json.dumps(versions(), sort_keys=True)


def now() -> str:
    """The current time, ISO 8601 in UTC to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
