"""`python -m hpc.localslurm start|stop|status|env|restart-slurmd`: run the local SLURM cluster of tests and CI."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from hpc import localslurm


def main(argv: list[str] | None = None) -> int:
    """Run one verb; the exit status is 0 on success, 1 on an error, 3 for `status` when down."""
    parser = argparse.ArgumentParser(
        prog="python -m hpc.localslurm",
        description="A real one-machine SLURM cluster (2 fake GPUs) under one folder.",
    )
    parser.add_argument(
        "verb",
        choices=tuple(_VERBS),
        help="start (no-op when up), stop, status (up/down), env (prints `export SLURM_CONF=...`), "
        "restart-slurmd (the node daemon alone; running jobs live on)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help=f"folder holding every file of the cluster (default {localslurm.default_root()})",
    )
    parser.add_argument(
        "--max-array-size",
        type=int,
        default=None,
        help="Slurm's MaxArraySize (largest array index + 1) for start; a running cluster with "
        f"another value is restarted (default: as running, else {localslurm.DEFAULT_MAX_ARRAY_SIZE})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="localslurm: %(message)s", stream=sys.stderr)
    try:
        return _VERBS[args.verb](args)
    except (localslurm.LocalSlurmError, ValueError) as err:
        print(f"localslurm: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `status | head -1` closed the pipe early; nothing is wrong with the cluster.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _start(args: argparse.Namespace) -> int:
    localslurm.start(args.root, max_array_size=args.max_array_size)
    return 0


def _stop(args: argparse.Namespace) -> int:
    if not localslurm.stop(args.root):
        print("localslurm: was not running", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    up = localslurm.is_up(args.root)
    lines = ["up" if up else "down"]
    for name, pid in localslurm.daemon_states(args.root).items():
        lines.append(f"  {name:<10} {f'pid {pid}' if pid else 'not running'}")
    cluster = localslurm.read_cluster(args.root)
    if up and cluster is not None:
        lines.append(
            f"  SLURM_CONF={cluster.conf} MaxArraySize={cluster.max_array_size} "
            f"CPUs={cluster.cpus} GPUs={cluster.gpus}"
        )
    print("\n".join(lines))
    return 0 if up else 3


def _env(args: argparse.Namespace) -> int:
    print(f"export SLURM_CONF={shlex.quote(str(localslurm.conf_path(args.root)))}")
    if not localslurm.is_up(args.root):
        hint = "the cluster is down; run `python -m hpc.localslurm start`"
        print(f"localslurm: warning: {hint}", file=sys.stderr)
        return 1
    return 0


def _restart_slurmd(args: argparse.Namespace) -> int:
    localslurm.restart_slurmd(args.root)
    return 0


_VERBS = {
    "start": _start,
    "stop": _stop,
    "status": _status,
    "env": _env,
    "restart-slurmd": _restart_slurmd,
}

if __name__ == "__main__":
    sys.exit(main())
