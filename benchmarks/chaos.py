"""Fault injection on the local Slurm cluster: a small study driven through the real CLI
(`python -m hpc.cli init/launch/status/collect`, as a user types it) while seeded faults hit
it at random moments; then every cell must be in results.h5 exactly once and equal to an
undisturbed run of the same study (`anysweep run --cluster local`).

    SLURM_CONF=/tmp/anysweep-slurm/etc/slurm.conf python -m benchmarks.chaos [--short] [--seed 0]

Faults: USR2 (to steps, `--full`, `--batch`), SIGKILL of a task's worker (its pid from
`scontrol listpids`), `scontrol requeue`, a restart of slurmd (`python -m hpc.localslurm
restart-slurmd`; not in --short, the cluster is shared), two launches at once, a collect
beside a launch, and a task's pack of cell records truncated to half (its cells' records
lost, as a disk could lose them). A fault is survived when no cell it hit ends lost,
duplicated or changed and no cell newly failed because of it (a failure seen by
`status` after a fault is blamed on the latest fault that hit the cell's task, else on the
latest that hit the cell).
Prints faults injected / survived / cells lost / duplicated / changed; exits 1 unless zero
cells were lost, duplicated or changed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = [sys.executable]
STUDY = """\
[study]
name = "chaos"
reference = "digits"
architectures = {architectures}
seeds = 1
max_attempts = 2
device = "cpu"

[design]
space = "anynetx_a"
seed = 0
stages = 2
max_depth = 1
max_width = 16
stem = "small"
stem_width = 8
resolution = 16
num_classes = 10

[recipe]
epochs = 2
batch_size = 64
base_lr = 0.5
augment = "none"

[cluster]
gpus = 0
cpus = 1
mem_gb = 1
time_min = 5
margin = 0.7
throughput = 1e15

[datasets.digits]
resolution = 8
max_train = 1200
max_test = 300

[datasets.fashion_mnist]
resolution = 8
max_train = 300
max_test = 100
"""
TASK_FAULTS = ("usr2", "usr2_full", "usr2_batch", "kill", "requeue")
GLOBAL_FAULTS = ("launch_pair", "collect_launch", "truncate", "restart_slurmd")
COMPARED_CURVES = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")


@dataclass(frozen=True)
class Config:
    architectures: int
    faults: int
    slurmd_restarts: int
    gap_s: tuple[float, float]  # seconds between faults
    grow: int = 0  # start with this many architectures, raise by as many when all are done


SHORT = Config(architectures=4, faults=6, slurmd_restarts=0, gap_s=(1.0, 3.0))
LONG = Config(architectures=192, faults=60, slurmd_restarts=3, gap_s=(0.5, 3.0), grow=24)


@dataclass
class Fault:
    kind: str
    target: str  # a task id, a cell, or "study"
    cells: set[tuple[str, int, int]] = field(default_factory=set)
    note: str = ""
    failed: bool = False  # a cell it hit showed a failed attempt


def culprit(faults: list[Fault], cell: tuple[str, int, int]) -> Fault:
    """The fault a newly failed cell is blamed on: the latest that hit the cell's task, else
    the latest that hit the cell at all (a launch, a collect, a restart)."""
    for kinds in (TASK_FAULTS, (*TASK_FAULTS, *GLOBAL_FAULTS)):
        for fault in reversed(faults):
            if fault.kind in kinds and cell in fault.cells:
                return fault
    return faults[-1]


def cli(study: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*PY, "-m", "hpc.cli", args[0], str(study), *args[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def slurm(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def make_study(folder: Path, config: Config) -> Path:
    """`anysweep init`, then the demo cut down to seconds a cell; prepared once."""
    folder.mkdir(parents=True)
    done = cli(folder, "init")
    assert done.returncode == 0, done.stderr
    (folder / "study.toml").write_text(STUDY.format(architectures=config.architectures))
    for verb in ("sample", "prepare"):
        done = cli(folder, verb, timeout=600)
        assert done.returncode == 0, f"{verb}: {done.stderr}"
    return folder


def write_size(study: Path, architectures: int) -> None:
    (study / "study.toml").write_text(STUDY.format(architectures=architectures))


def study_tasks(study: Path) -> dict[str, tuple[str, set[tuple[str, int, int]]]]:
    """Every task of every launch record: task id -> (job name, its cells)."""
    from hpc.scheduling.records import read_records
    from hpc.study.spec import load_study

    out = {}
    for record in read_records(load_study(study)):
        for array in record.arrays:
            many = len(array.tasks) > 1
            for i, task in enumerate(array.tasks):
                tid = f"{array.job_id}_{i}" if many else str(array.job_id)
                cells = {(array.dataset, a, s) for a, s in task.cells}
                out[tid] = (array.job_name, cells)
    return out


def active(study: Path) -> dict[str, str]:
    """This study's tasks in the queue: id -> state (others' jobs are left alone)."""
    from hpc.scheduling.records import job_prefix
    from hpc.study.spec import load_study

    prefix = job_prefix(load_study(study))
    rows = slurm("squeue", "-h", "-r", "-o", "%i|%T|%j").stdout.split()
    return {i: s for i, s, n in (r.split("|", 2) for r in rows) if n.startswith(prefix)}


def worker_pids(task: str) -> list[int]:
    """The worker processes of a running task (python, not slurmstepd), from listpids."""
    rows = slurm("scontrol", "listpids", task).stdout.splitlines()[1:]
    pids = []
    for row in rows:
        pid = int(row.split()[0])
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        program = Path(cmd.split(b" ", 1)[0].decode()).name
        if program.startswith("python") and b"hpc.worker" in cmd:  # not srun's own line
            pids.append(pid)
    return pids


def status_json(study: Path) -> dict:
    done = cli(study, "status", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _cluster_root() -> Path:
    """The folder of the cluster SLURM_CONF names (<root>/etc/slurm.conf)."""
    return Path(os.environ["SLURM_CONF"]).resolve().parents[1]


def inject(kind: str, study: Path, rng: random.Random) -> Fault | None:
    tasks = study_tasks(study)
    running = sorted(t for t, s in active(study).items() if s == "RUNNING")
    if kind in TASK_FAULTS:
        if not running:
            return None
        task = rng.choice(running)
        cells = tasks.get(task, ("", set()))[1]
        if kind.startswith("usr2"):
            extra = {"usr2": [], "usr2_full": ["--full"], "usr2_batch": ["--batch"]}[kind]
            done = slurm("scancel", "--signal=USR2", *extra, task)
        elif kind == "requeue":
            done = slurm("scontrol", "requeue", task)
        else:
            pids = worker_pids(task)
            if not pids:
                return None
            os.kill(rng.choice(pids), signal.SIGKILL)
            return Fault(kind, task, cells)
        return Fault(kind, task, cells, done.stderr.strip())
    every = set().union(*(c for _, c in tasks.values())) if tasks else set()
    if kind == "restart_slurmd":
        done = subprocess.run(
            [*PY, "-m", "hpc.localslurm", "--root", str(_cluster_root()), "restart-slurmd"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:  # a fault not injected must not count as one survived
            raise RuntimeError(f"restart-slurmd failed: {done.stderr.strip()[-200:]}")
        return Fault(kind, "slurmd", every, done.stderr.strip()[-200:])
    if kind == "truncate":
        from hpc.study.packs import stored

        files = sorted((study / "results").glob("*/*.pack"))
        if not files:
            return None
        victim = rng.choice(files)
        cells = {(victim.parent.name, s.result.arch_id, s.result.seed) for s in stored(victim)}
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        return Fault(kind, f"{victim.parent.name}/{victim.name}", cells)
    verbs = ("launch", "launch") if kind == "launch_pair" else ("collect", "launch")
    procs = [
        subprocess.Popen(
            [*PY, "-m", "hpc.cli", v, str(study)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in verbs
    ]
    errors = [p.communicate(timeout=300)[1].strip() for p in procs]
    codes = [p.returncode for p in procs]
    return Fault(kind, "study", every, f"exit {codes}" + (f": {errors}" if any(codes) else ""))


def finish(study: Path, rounds: int = 12) -> None:
    """Launch again until every cell is done (stopped and requeued cells resume), then collect."""
    for _ in range(rounds):
        while active(study):
            time.sleep(1.0)
        counts = status_json(study).get("counts", {})
        if counts and all(r["done"] == sum(r.values()) for r in counts.values()):
            break
        cli(study, "launch")
        time.sleep(2.0)
    cli(study, "collect")


def cells_of(results_h5: Path) -> tuple[dict, Counter]:
    from analysis.schema import read_results

    results = read_results(results_h5)
    rows, counts = {}, Counter()
    for name, table in results.datasets.items():
        for i in range(len(table)):
            key = (name, int(table.columns["arch_id"][i]), int(table.columns["seed"][i]))
            counts[key] += 1
            values = [float(table.columns[m][i]) for m in ("top1_err", "top5_err")]
            values += [table.curves[c][i].tolist() for c in COMPARED_CURVES if c in table.curves]
            rows[key] = (str(table.columns["status"][i]), values)
    return rows, counts


def same(a: list, b: list) -> bool:
    """Bit for bit (CPU training repeats exactly on the same machine and software)."""
    pairs = zip(a, b, strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the test suite's configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder to work in (kept)")
    args = parser.parse_args(argv)
    if not os.environ.get("SLURM_CONF"):
        parser.error("set SLURM_CONF to the local cluster's slurm.conf first")
    config = SHORT if args.short else LONG
    work = args.work or Path(tempfile.mkdtemp(prefix="anysweep-chaos-"))
    rng = random.Random(args.seed)
    started = time.monotonic()

    reference = make_study(work / "reference", config)
    done = cli(reference, "run", "--cluster", "local", "--no-analyze", timeout=900)
    assert done.returncode == 0, done.stderr
    study = work / "study"
    study.mkdir(parents=True)
    shutil.copytree(reference / "data", study / "data")
    shutil.copy(reference / "study.toml", study / "study.toml")
    size = config.grow or config.architectures
    write_size(study, size)
    shutil.copy(reference / "architectures.json", study / "architectures.json")
    done = cli(study, "launch")
    assert done.returncode == 0, done.stderr
    print(f"reference and launch ready after {time.monotonic() - started:.0f} s", flush=True)

    faults: list[Fault] = []
    ever_failed: set[tuple[str, int, int]] = set()
    kinds = [*TASK_FAULTS, *GLOBAL_FAULTS[:3]]
    restarts = 0
    while len(faults) < config.faults:
        time.sleep(rng.uniform(*config.gap_s))
        # Mostly faults that hit a running task; launches, collects and truncations now and then.
        kind = rng.choice(TASK_FAULTS) if rng.random() < 0.75 else rng.choice(kinds)
        if restarts < config.slurmd_restarts and rng.random() < 0.06:
            kind, restarts = "restart_slurmd", restarts + 1
        if not active(study) and kind in TASK_FAULTS:
            if "nothing to submit" in cli(study, "launch").stdout:
                if size >= config.architectures:
                    print("  the study finished before the faults ran out", flush=True)
                    break
                size = min(size + config.grow, config.architectures)
                write_size(study, size)  # a user raising `architectures`
                print(f"  grown to {size} architectures", flush=True)
            continue
        fault = inject(kind, study, rng)
        if fault is None:
            continue
        faults.append(fault)
        print(f"  fault {len(faults):>3} {fault.kind:<15} {fault.target} {fault.note}", flush=True)
        for failed in status_json(study).get("failed", []):
            dataset, _, rest = failed["cell"].partition("/")
            arch, seed = rest.split("-s")
            cell = (dataset, int(arch), int(seed))
            if cell not in ever_failed:
                ever_failed.add(cell)
                culprit(faults, cell).failed = True
                print(f"        {failed['cell']} failed: {failed['error'][-160:]!r}", flush=True)
    write_size(study, config.architectures)
    finish(study)

    want, _ = cells_of(reference / "results.h5")
    got, counts = cells_of(study / "results.h5")
    lost = {k for k in want if k not in got or got[k][0] != "done"}
    duplicated = {k for k, n in counts.items() if n > 1}
    changed = {k for k in want if k in got and not same(want[k][1], got[k][1])}
    bad = lost | duplicated | changed
    survived = [f for f in faults if not (f.failed or f.cells & bad)]
    by_kind = Counter(f.kind for f in faults)
    survived_kind = Counter(f.kind for f in survived)
    print(f"\nchaos ({'short' if args.short else 'long'}, seed {args.seed}, {len(want)} cells):")
    print("| fault | injected | survived |\n|---|---|---|")
    for kind in sorted(by_kind):
        print(f"| {kind} | {by_kind[kind]} | {survived_kind[kind]} |")
    print(f"| **all** | {len(faults)} | {len(survived)} |")
    print(
        f"cells lost {len(lost)}, duplicated {len(duplicated)}, changed {len(changed)}; "
        f"cells that showed a failed attempt {len(ever_failed)}: {sorted(ever_failed)[:6]}"
    )
    print(f"wall {time.monotonic() - started:.0f} s; work folder {work}")
    return 0 if not (lost or duplicated or changed) else 1


if __name__ == "__main__":
    sys.exit(main())
