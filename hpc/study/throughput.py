"""The throughput table: device kinds and what was measured (or assumed) on each, as rows of
images per second (hpc/study/throughput.toml). A study names its kind with `[cluster] gpu`;
hpc.scheduling.cost prices cells from the rows.

Pure data: reading, checking and finding rows. Which row stands for a dataset's loading or an
architecture's steps, and how an estimate is made where none does, is said here once.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("throughput.toml")
SOURCES = ("measured", "assumed")
KINDS = ("loader", "model")
BOUNDS = ("launch", "compute")
# How far outside a model row's flops band an architecture may be and still match it: the
# classifier's size (the band is counted with the design's classes) moves flops a little.
BAND_SLACK = 0.05


@dataclass(frozen=True)
class Device:
    name: str
    gpu: bool
    overlap: bool  # loading runs beside compute, else in turn
    bound: str  # "launch" or "compute" (see throughput.toml)
    memory_gb: float
    member_overhead: float  # extra compute per extra member of a cohort
    note: str = ""


@dataclass(frozen=True)
class Row:
    device: str
    kind: str  # "loader" or "model"
    name: str
    images_per_s: float
    source: str  # "measured" or "assumed"
    date: str
    by: str = ""
    resolution: int = 0
    # loader rows
    backend: str = ""
    encoding: str = ""
    inline: bool = False  # its time is inside the device's model rows
    # model rows
    flops: tuple[float, float] = (0.0, 0.0)  # multiply-adds per image at `resolution`
    cohort: int = 1  # the K it was measured at
    memory_gb: float = 0.0  # per member at that K; 0: estimate from activations
    cuda_graphs: bool = False

    @property
    def key(self) -> str:
        return f"{self.device}/{self.kind}/{self.name}"

    @property
    def measured(self) -> bool:
        return self.source == "measured"

    def holds(self, flops: Any) -> Any:
        """Whether architectures of `flops` multiply-adds (a number or an array) at this row's
        resolution are among those it stands for."""
        lo, hi = self.flops
        return (lo * (1 - BAND_SLACK) <= flops) & (flops <= hi * (1 + BAND_SLACK))

    @property
    def mid_flops(self) -> float:
        return math.sqrt(max(self.flops[0], 1.0) * max(self.flops[1], 1.0))


@dataclass(frozen=True)
class Table:
    devices: dict[str, Device]
    rows: tuple[Row, ...]
    default_gpu: str
    default_cpu: str

    def device(self, name: str) -> Device:
        if name not in self.devices:
            raise ValueError(
                f"gpu {name!r} is not a device kind of the throughput table; kinds: "
                f"{', '.join(self.devices)}"
            )
        return self.devices[name]

    def of(self, device: str, kind: str) -> list[Row]:
        return [r for r in self.rows if r.device == device and r.kind == kind]

    def row(self, device: str, kind: str, name: str) -> Row:
        for r in self.rows:
            if (r.device, r.kind, r.name) == (device, kind, name):
                return r
        valid = ", ".join(r.key for r in self.rows)
        raise ValueError(f"no throughput row {device}/{kind}/{name}; rows: {valid}")

    def default_kind(self, gpus: int, device: str) -> str:
        """The kind of a study that names none: its CPU kind when it trains on CPUs."""
        return self.default_cpu if gpus == 0 or device == "cpu" else self.default_gpu


_ROW_KEYS = set(Row.__dataclass_fields__)
_DEVICE_KEYS = set(Device.__dataclass_fields__) - {"name"}


def _device(name: str, raw: Mapping[str, Any]) -> Device:
    unknown = sorted(set(raw) - _DEVICE_KEYS)
    if unknown:
        raise ValueError(f"throughput device {name}: unknown keys {unknown}")
    device = Device(name=name, **raw)
    if device.bound not in BOUNDS or not device.memory_gb > 0 or device.member_overhead < 0:
        raise ValueError(
            f"throughput device {name}: bound must be one of {BOUNDS}, memory_gb > 0 and "
            "member_overhead >= 0"
        )
    return device


def _row(i: int, raw: Mapping[str, Any], devices: Mapping[str, Device]) -> Row:
    unknown = sorted(set(raw) - _ROW_KEYS)
    if unknown:
        raise ValueError(f"throughput row {i}: unknown keys {unknown}")
    values = dict(raw)
    if "flops" in values:
        values["flops"] = tuple(float(v) for v in values["flops"])
    values.setdefault("images_per_s", 0.0)
    row = Row(**values)
    if row.source not in SOURCES or row.kind not in KINDS:
        raise ValueError(
            f"throughput row {i} ({row.name}): source must be one of {SOURCES}, kind one of {KINDS}"
        )
    if row.device not in devices:
        raise ValueError(f"throughput row {i} ({row.name}): unknown device {row.device!r}")
    if not (row.images_per_s > 0 or row.inline) or row.resolution < 1 or row.cohort < 1:
        raise ValueError(
            f"throughput row {i} ({row.name}): needs images_per_s > 0 (unless inline), "
            "resolution >= 1 and cohort >= 1"
        )
    if row.kind == "model" and not 0 < row.flops[0] <= row.flops[1]:
        raise ValueError(f"throughput row {i} ({row.name}): a model row needs flops = [lo, hi]")
    if row.kind == "loader" and not row.backend:
        raise ValueError(f"throughput row {i} ({row.name}): a loader row needs a backend")
    return row


def parse_table(data: Mapping[str, Any]) -> Table:
    """A throughput table from its TOML content; a bad row names itself and the problem."""
    devices = {name: _device(name, raw) for name, raw in data.get("devices", {}).items()}
    rows = tuple(_row(i, raw, devices) for i, raw in enumerate(data.get("rows", [])))
    default_gpu = data.get("default_gpu", "")
    default_cpu = data.get("default_cpu", "")
    for default in (default_gpu, default_cpu):
        if default not in devices:
            raise ValueError(f"throughput table: default kind {default!r} is not a device")
    return Table(devices, rows, default_gpu, default_cpu)


@functools.cache
def load_table(path: Path = TABLE) -> Table:
    return parse_table(tomllib.loads(Path(path).read_text()))


def device_kinds() -> tuple[str, ...]:
    """The device kinds `[cluster] gpu` may name."""
    return tuple(load_table().devices)
