"""A real one-machine SLURM cluster for tests and CI: munged, MariaDB, slurmdbd, slurmctld and
slurmd on loopback with two fake GPUs, every file under one root folder."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from hpc.localslurm import config, processes

__all__ = [
    "DEFAULT_MAX_ARRAY_SIZE",
    "Cluster",
    "LocalSlurmError",
    "cluster_at",
    "conf_path",
    "daemon_states",
    "default_root",
    "is_up",
    "read_cluster",
    "start",
    "stop",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_ARRAY_SIZE = 100001
MAX_MAX_ARRAY_SIZE = 4000001
GPUS = 2
# In start order; they stop in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
REQUIRED_PROGRAMS = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sinfo",
    "squeue",
    "scancel",
    "sacct",
    "sbatch",
)
# Everything start creates under the root; a fresh start removes exactly these.
SUBDIRS = ("etc", "run", "pids", "log", "state", "spool", "mysql", "munge", "dev")
MARKER = "cluster.json"
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


class LocalSlurmError(RuntimeError):
    """The local cluster cannot be started, stopped or asked."""


@dataclass(frozen=True)
class Cluster:
    """A started local cluster: where its config lives and what it offers."""

    root: Path
    conf: Path
    max_array_size: int
    gpus: int
    cpus: int
    ports: config.Ports

    def env(self) -> dict[str, str]:
        """The environment a Slurm client needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def client(self, *argv: str, timeout_s: float = 30.0) -> str:
        """Run a Slurm client (`sinfo`, `sbatch`, ...) against this cluster; return its stdout."""
        try:
            done = subprocess.run(
                list(argv),
                env={**os.environ, **self.env()},
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as err:
            raise LocalSlurmError(f"{' '.join(argv)} took over {timeout_s} s") from err
        if done.returncode != 0:
            raise LocalSlurmError(
                f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def wait(self, job_id: str | int, timeout_s: float = 60.0) -> str:
        """Poll sacct until a job (or one array task, '12_3') ends; return its final state."""
        deadline = time.monotonic() + timeout_s
        state = "not yet in sacct"
        while time.monotonic() < deadline:
            rows = self.client("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State")
            for row in rows.splitlines():
                row_id, _, row_state = row.partition("|")
                if row_id == str(job_id):
                    # "CANCELLED by 0" -> "CANCELLED"
                    state = row_state.split()[0] if row_state else state
            if state in FINAL_STATES:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {state} after {timeout_s} s")


def default_root() -> Path:
    """The folder a cluster lives in when none is given: anysweep-slurm in the temp directory."""
    return Path(tempfile.gettempdir()).resolve() / "anysweep-slurm"


def conf_path(root: Path | str | None = None) -> Path:
    """Where the slurm.conf of the cluster under `root` is (whether it is up or not)."""
    return _root(root) / "etc" / "slurm.conf"


def read_cluster(root: Path | str | None = None) -> Cluster | None:
    """The cluster last started under `root` (up or not), or None if none was."""
    try:
        data = json.loads((_root(root) / MARKER).read_text())
        return Cluster(
            root=Path(data["root"]),
            conf=Path(data["conf"]),
            max_array_size=int(data["max_array_size"]),
            gpus=int(data["gpus"]),
            cpus=int(data["cpus"]),
            ports=config.Ports(**data["ports"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cluster_at(conf: Path | str) -> Cluster | None:
    """The running local cluster whose slurm.conf is `conf`, or None if `conf` is not one."""
    conf = Path(conf).resolve()
    cluster = read_cluster(conf.parent.parent)
    if cluster is None or cluster.conf != conf or not is_up(cluster.root):
        return None
    return cluster


def daemon_states(root: Path | str | None = None) -> dict[str, int | None]:
    """Each daemon's pid if it runs, else None (from the pid files start wrote)."""
    pids = _root(root) / "pids"
    states: dict[str, int | None] = {}
    for name in DAEMONS:
        record = processes.read_pid_file(pids / f"{name}.pid")
        states[name] = record.pid if record is not None and processes.is_alive(record) else None
    return states


def is_up(root: Path | str | None = None) -> bool:
    """Whether every daemon of the cluster under `root` runs (no Slurm client is called)."""
    root = _root(root)
    return (root / MARKER).exists() and all(daemon_states(root).values())


def start(
    root: Path | str | None = None, max_array_size: int | None = None, timeout_s: float = 60.0
) -> Cluster:
    """Start the cluster under `root` from wiped state and wait until its node is idle.

    A cluster already up is left alone, unless `max_array_size` asks for another value:
    then it is restarted (wiping its jobs). None means "as running", or the default.
    """
    if max_array_size is not None and not 1 <= max_array_size <= MAX_MAX_ARRAY_SIZE:
        raise ValueError(
            f"max_array_size must be between 1 and {MAX_MAX_ARRAY_SIZE} (Slurm's limit), "
            f"got {max_array_size}"
        )
    root = _root(root)
    with _locked(root):
        running = read_cluster(root) if is_up(root) else None
        if running is not None and max_array_size in (None, running.max_array_size):
            log.info("already up: %s", running.conf)
            return running
        if running is not None:
            log.info(
                "restarting for MaxArraySize=%d (was %d)", max_array_size, running.max_array_size
            )
        _stop(root)
        cluster = _prepare(root, max_array_size or DEFAULT_MAX_ARRAY_SIZE)
        try:
            _launch(cluster, timeout_s)
        except BaseException:
            _stop(root)
            raise
        log.info("up: SLURM_CONF=%s", cluster.conf)
        return cluster


def stop(root: Path | str | None = None) -> bool:
    """Cancel all jobs and stop the daemons started under `root`; False if none was running."""
    root = _root(root)
    with _locked(root):
        return _stop(root)


def restart_slurmd(root: Path | str | None = None, timeout_s: float = 30.0) -> int:
    """Stop the node daemon and start it again, as a node's reboot of slurmd does; munge,
    the database and slurmctld are left alone, and running job steps live on (slurmstepd
    outlives slurmd; only slurmd itself is signalled). Returns the new slurmd's pid."""
    root = _root(root)
    with _locked(root):
        cluster = read_cluster(root) if is_up(root) else None
        if cluster is None:
            raise LocalSlurmError(
                f"the cluster under {root} is not up; start it with `python -m hpc.localslurm start`"
            )
        old = processes.read_pid_file(root / "pids" / "slurmd.pid")
        assert old is not None  # is_up read it
        os.kill(old.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while processes.is_alive(old):
            if time.monotonic() > deadline:
                raise LocalSlurmError(
                    f"slurmd (pid {old.pid}) still runs {timeout_s} s after SIGTERM"
                )
            time.sleep(0.05)
        record = _start_slurmd(cluster, timeout_s, ready=lambda: _listening(cluster.ports.slurmd))
        log.info("slurmd restarted: pid %d (was %d)", record.pid, old.pid)
        return record.pid


def _root(root: Path | str | None) -> Path:
    return Path(root).resolve() if root is not None else default_root()


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One start or stop at a time per root (the lock sits beside it: start wipes the root)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_machine() -> None:
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        raise LocalSlurmError(
            f"missing programs: {', '.join(missing)}; run `make setup` (as root) to install them"
        )
    if os.geteuid() != 0:
        raise LocalSlurmError(
            "the local cluster must be started as root (slurmd runs jobs as root)"
        )


def _prepare(root: Path, max_array_size: int) -> Cluster:
    """Wipe the root (Slurm state and accounting database together) and write every file."""
    foreign = (
        sorted(e.name for e in root.iterdir() if e.name not in (*SUBDIRS, MARKER))
        if root.exists()
        else []
    )
    if foreign:
        raise LocalSlurmError(
            f"{root} holds files that are not the local cluster's ({', '.join(foreign[:5])}); "
            "choose an empty or new --root"
        )
    _check_machine()
    for name in SUBDIRS:
        shutil.rmtree(root / name, ignore_errors=True)
        (root / name).mkdir(parents=True)
    (root / MARKER).unlink(missing_ok=True)
    ports = config.choose_ports(root)
    layout, real_memory = config.node_hardware()
    conf = config.write_configs(root, ports, max_array_size, GPUS, layout, real_memory)
    config.write_munge_key(root)
    config.make_fake_gpus(root, GPUS)
    cpus = int(layout.split()[0].removeprefix("CPUs="))
    cluster = Cluster(root, conf, max_array_size, GPUS, cpus, ports)
    marker = {**asdict(cluster), "root": str(root), "conf": str(conf)}
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return cluster


def _spawn(cluster: Cluster, name: str, argv: list[str]) -> processes.PidRecord:
    root = cluster.root
    env = {**os.environ, **cluster.env()}
    return processes.spawn(argv, root / "pids" / f"{name}.pid", root / "log" / f"{name}.out", env)


def _wait_ready(
    root: Path, what: str, record: processes.PidRecord, ready: Callable[[], bool], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not processes.is_alive(record):
            raise LocalSlurmError(f"{what} exited while starting:\n{_log_tail(root, what)}")
        if time.monotonic() > deadline:
            raise LocalSlurmError(f"{what} not ready after {timeout_s} s:\n{_log_tail(root, what)}")
        time.sleep(0.1)


def _start_slurmd(
    cluster: Cluster, timeout_s: float, ready: Callable[[], bool] | None = None
) -> processes.PidRecord:
    """Start the node daemon; ready by default when the node is idle."""
    argv = ["slurmd", "-D", "-N", "localhost", "-f", str(cluster.conf)]
    record = _spawn(cluster, "slurmd", argv)
    check = ready or (lambda: "idle" in _node_states(cluster))
    _wait_ready(cluster.root, "slurmd", record, check, timeout_s)
    return record


def _launch(cluster: Cluster, timeout_s: float) -> None:
    """Start every daemon in order, each once the one before answers."""
    _start_munge(cluster, timeout_s)
    _start_database(cluster, timeout_s)
    ports = cluster.ports
    record = _spawn(cluster, "slurmdbd", ["slurmdbd", "-D"])
    _wait_ready(cluster.root, "slurmdbd", record, lambda: _listening(ports.slurmdbd), timeout_s)
    record = _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(cluster.conf)])
    _wait_ready(cluster.root, "slurmctld", record, lambda: _listening(ports.slurmctld), timeout_s)
    _start_slurmd(cluster, timeout_s)


def _start_munge(cluster: Cluster, timeout_s: float) -> None:
    root = cluster.root
    munge_socket = root / "run" / "munge.socket"
    record = _spawn(
        cluster,
        "munged",
        [
            "munged",
            "-F",
            f"--key-file={root}/munge/munge.key",
            f"--socket={munge_socket}",
            f"--pid-file={root}/run/munged.pid",
            f"--log-file={root}/log/munged.log",
            f"--seed-file={root}/munge/munged.seed",
        ],
    )
    _wait_ready(root, "munged", record, munge_socket.exists, timeout_s)


def _start_database(cluster: Cluster, timeout_s: float) -> None:
    """MariaDB with the accounting database slurmdbd writes to (so that sacct works)."""
    root = cluster.root
    install = ["mariadb-install-db", "--no-defaults", f"--datadir={root}/mysql", "--user=root"]
    install += ["--auth-root-authentication-method=socket", "--skip-test-db"]
    _run_logged(root, "mariadbd", install)
    record = _spawn(
        cluster,
        "mariadbd",
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={root}/mysql",
            f"--socket={root}/run/mysqld.sock",
            f"--port={cluster.ports.mysql}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--user=root",
            f"--pid-file={root}/run/mariadbd.pid",
            f"--log-error={root}/log/mariadbd.log",
        ],
    )
    _wait_ready(root, "mariadbd", record, lambda: _sql(root, "SELECT 1"), timeout_s)
    password = config.db_password(root)
    created = _sql(
        root,
        (
            "CREATE DATABASE slurm_acct_db; "
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        ),
    )
    if not created:
        raise LocalSlurmError(
            f"could not create the accounting database:\n{_log_tail(root, 'mariadbd')}"
        )


def _stop(root: Path) -> bool:
    records = {n: processes.read_pid_file(root / "pids" / f"{n}.pid") for n in DAEMONS}
    live = {n: r for n, r in records.items() if r is not None and processes.is_alive(r)}
    if live and "slurmctld" in live and (cluster := read_cluster(root)) is not None:
        _cancel_all_jobs(cluster)
    # Slurm daemons first (slurmctld reports to slurmdbd while it shuts down), munge last.
    for group in (("slurmd", "slurmctld"), ("slurmdbd",), ("mariadbd", "munged")):
        processes.terminate([live[n] for n in group if n in live])
    for name in DAEMONS:
        (root / "pids" / f"{name}.pid").unlink(missing_ok=True)
    if live:
        log.info("stopped: %s", ", ".join(live))
    return bool(live)


def _cancel_all_jobs(cluster: Cluster, timeout_s: float = 15.0) -> None:
    """Cancel every job, so no job step outlives slurmd; best effort, the daemons stop anyway."""
    try:
        jobs = set(cluster.client("squeue", "-h", "-o", "%A").split())
        if not jobs:
            return
        cluster.client("scancel", "--signal=KILL", "--full", *sorted(jobs))
        deadline = time.monotonic() + timeout_s
        while cluster.client("squeue", "-h", "-t", "R,CG,S", "-o", "%A").strip():
            if time.monotonic() > deadline:
                log.warning("jobs still running after %.0f s; stopping anyway", timeout_s)
                return
            time.sleep(0.2)
    except LocalSlurmError as err:
        log.warning("could not cancel the jobs: %s", err)


def _node_states(cluster: Cluster) -> list[str]:
    try:
        return cluster.client("sinfo", "-h", "-o", "%T", timeout_s=10).split()
    except LocalSlurmError:
        return []


def _sql(root: Path, statement: str) -> bool:
    """Run SQL as MariaDB's root through the local socket; whether it succeeded."""
    argv = ["mariadb", "--no-defaults", f"--socket={root}/run/mysqld.sock", "-u", "root"]
    try:
        done = subprocess.run([*argv, "-e", statement], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run_logged(root: Path, name: str, argv: list[str]) -> None:
    with open(root / "log" / f"{name}.out", "ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise LocalSlurmError(f"{argv[0]} failed ({done.returncode}):\n{_log_tail(root, name)}")


def _log_tail(root: Path, name: str, lines: int = 15) -> str:
    """The last lines of a daemon's logs, for errors that say why it did not come up."""
    tails = []
    for path in sorted((root / "log").glob(f"{name}[.-]*")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(tails) or f"(no log of {name} in {root / 'log'})"
