"""The local cluster's files: ports, slurm.conf/gres.conf/slurmdbd.conf from the *.conf.in
templates, the munge key and the fake GPU devices, all under one root folder."""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent
GPU_MAJOR = 195  # the NVIDIA character-device major number; Slurm only checks the file exists


@dataclass(frozen=True)
class Ports:
    """The four loopback ports of one local cluster."""

    slurmctld: int
    slurmd: int
    slurmdbd: int
    mysql: int


def choose_ports(root: Path) -> Ports:
    """Four free loopback ports, starting from a base derived from the root folder.

    Deriving the base from the root keeps one folder on the same ports across restarts and
    lets two clusters in two folders share a machine.
    """
    start = zlib.crc32(str(root).encode()) % 1000
    for step in range(1000):
        base = 20000 + ((start + step) % 1000) * 8
        ports = Ports(base, base + 1, base + 2, base + 3)
        if all(
            _port_is_free(p) for p in (ports.slurmctld, ports.slurmd, ports.slurmdbd, ports.mysql)
        ):
            return ports
    raise RuntimeError("no four free loopback ports between 20000 and 28000")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the daemons do: a port left in TIME_WAIT by a stopped cluster is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_hardware() -> tuple[str, int]:
    """The node's CPU layout (as `slurmd -C` prints it) and its memory in MB, less 5 %."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    layout = " ".join(f"{k}={fields[k]}" for k in keys if k in fields)
    return layout, int(int(fields["RealMemory"]) * 0.95)


def write_configs(
    root: Path, ports: Ports, max_array_size: int, gpus: int, layout: str, real_memory: int
) -> Path:
    """Write slurm.conf, gres.conf and slurmdbd.conf into root/etc; return slurm.conf's path."""
    values = {
        "root": str(root),
        "ctld_port": ports.slurmctld,
        "slurmd_port": ports.slurmd,
        "dbd_port": ports.slurmdbd,
        "mysql_port": ports.mysql,
        "max_array_size": max_array_size,
        "node_hardware": layout,
        "real_memory": real_memory,
        "gpus": gpus,
        "last_gpu": gpus - 1,
        "db_password": secrets.token_hex(16),
    }
    etc = root / "etc"
    for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
        text = Template((TEMPLATES / f"{name}.in").read_text()).substitute(values)
        target = etc / name
        target.write_text(text)
    # slurmdbd refuses a config that others can read (it holds the database password).
    os.chmod(etc / "slurmdbd.conf", 0o600)
    return etc / "slurm.conf"


def db_password(root: Path) -> str:
    """The accounting database password written into slurmdbd.conf."""
    text = (root / "etc" / "slurmdbd.conf").read_text()
    match = re.search(r"^StoragePass=(\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no StoragePass in {root / 'etc' / 'slurmdbd.conf'}")
    return match.group(1)


def write_munge_key(root: Path) -> Path:
    """A fresh random munge key readable by its owner only (munged refuses anything else)."""
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o400)
    return key


def make_fake_gpus(root: Path, gpus: int) -> None:
    """Character devices root/dev/fakegpu0..N-1: gres.conf needs real device files."""
    for index in range(gpus):
        device = root / "dev" / f"fakegpu{index}"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(GPU_MAJOR, index))
