"""Cohort rows of benchmarks/gpu.py: K = 1, 4, 8, 16 distinct architectures trained in lockstep
from one loader through hpc's cohort path (`hpc.train.train_cells`), bf16 and channels_last.

Two architecture sets, each the first 16 of a preset's population (its [design], seed 0):
"paper-224" (hpc/presets/paper.toml: AnyNetX_A, 340-400 MF at 224 px, 1,000 classes) trained
at 224 px, and "demo-32" (hpc/presets/demo.toml: three stages, 0.3-1.5 MF at 28 px) trained at
32 px. Every architecture of a set is also trained alone (K = 1) in the same run: a cohort
row's "vs solos" is the seconds those members took one after another over its seconds.
Timing: each cohort trains 2 epochs; the second (steady state) is timed from its first batch
to its last step with the device synchronised (EpochClock), so the first epoch's cuDNN
autotuning, allocations and compilation are reported apart, and evaluation is left out.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from anynet.arch import Architecture
from anynet.complexity import complexity
from anynet.sampler import sample
from anynet.spaces import get_space
from benchmarks.gpu_common import Budget, EpochClock, num, say, sync
from benchmarks.gpu_variants import VARIANTS, member_class
from hpc.cohort import train_cohort
from hpc.recipe import Recipe
from hpc.train import train_cells

KS = (1, 4, 8, 16)
PRESETS = Path(__file__).resolve().parent.parent / "hpc" / "presets"
_CONSTRAINTS = ("seed", "resolution", "num_classes", "flops", "params", "acts")


def preset_archs(preset: str, n: int) -> tuple[list[Architecture], dict[str, Any]]:
    """The first `n` architectures of a preset's population, and its [design] table."""
    design = tomllib.loads((PRESETS / f"{preset}.toml").read_text())["design"]
    options = {k: v for k, v in design.items() if k not in (*_CONSTRAINTS, "space")}
    samples = sample(
        get_space(design["space"], **options),
        n,
        seed=design.get("seed", 0),
        resolution=design.get("resolution", 224),
        num_classes=design.get("num_classes", 1000),
        flops=tuple(design["flops"]) if "flops" in design else None,
    )
    return [s.arch for s in samples], design


@dataclass
class ArchSet:
    """One set of architectures, its training data and what its rows estimate to cost."""

    kind: str  # "paper-224" | "demo-32"
    archs: list[Architecture]
    resolution: int
    classes: int
    loader: Any  # MemoryTrainLoader on the device
    test: list[tuple[torch.Tensor, torch.Tensor]]
    member_epoch_s: float  # estimate of one member's epoch, refined by every row
    build_s: float  # estimate of one member's build and first-use autotuning
    compile_s: float  # estimate of one member's compilation (train and eval graphs)
    solo_s: dict[int, float] = field(default_factory=dict)  # arch -> steady s per image

    def flops(self, k: int) -> list[int]:
        return [complexity(a, self.resolution, self.classes).flops for a in self.archs[:k]]

    def estimate(self, k: int, epochs: int = 2, compiled: bool = False) -> float:
        per = self.build_s + epochs * self.member_epoch_s + (self.compile_s if compiled else 0)
        return k * per

    def learn(self, row: dict[str, Any]) -> None:
        """Refine the estimates from a finished row."""
        k, steady = row["k"], row["steady_s"]
        clean = not row["failed"] and not row["diverged"] and math.isfinite(steady)
        if row["loader"] != "MemoryTrainLoader" or not clean:
            return
        if row["variant"] == "eager" and not row["compile"]:
            self.member_epoch_s = steady / k
            self.build_s = max(0.1, (row["wall_s"] - sum(row["epoch_s"])) / k)
        elif row["compile"]:
            self.compile_s = max(5.0, (row["first_extra_s"] + row["eval_s"]) / k)


def recipe_for(compiled: bool = False, epochs: int = 2, batch_size: int = 128) -> Recipe:
    return Recipe(
        epochs=epochs,
        batch_size=batch_size,
        precision="bf16",
        channels_last=True,
        compile=compiled,
    )


def _train(
    archs: list[Architecture],
    clock: EpochClock,
    s: ArchSet,
    recipe: Recipe,
    variant: str,
    device: torch.device,
) -> list[Any]:
    """Train a cohort through hpc: `train_cells` as a study does, or hpc's driver with a
    variant's members; each member's outcome or the error that took it out."""
    seeds = list(range(len(archs)))
    if variant == "eager":
        return train_cells(
            archs,
            clock,
            s.test,
            recipe,
            seed=0,
            num_classes=s.classes,
            init_seeds=seeds,
            device=str(device),
        )
    cls = member_class(variant)
    steps = len(clock)
    runs = [
        cls(
            a,
            recipe,
            seed=0,
            num_classes=s.classes,
            steps_per_epoch=steps,
            device=str(device),
            init_seed=i,
        )
        for i, a in zip(seeds, archs, strict=True)
    ]
    train_cohort(runs, clock, s.test, seed=0)
    return [r.error if r.error is not None else r.outcome() for r in runs]


def run_cohort(
    s: ArchSet,
    k: int,
    device: torch.device,
    peak: dict[str, Any],
    *,
    variant: str = "eager",
    compiled: bool = False,
    first: int = 0,
    loader: Any = None,
) -> dict[str, Any]:
    """One row: architectures first..first+k-1 of `s` trained as one cohort for 2 epochs."""
    archs = s.archs[first : first + k]
    clock = EpochClock(loader or s.loader, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    sync(device)
    base = 0
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    recipe = recipe_for(compiled, batch_size=clock.loader.batch_size)  # the lr scales with it
    outcomes = _train(archs, clock, s, recipe, variant, device)
    wall = time.perf_counter() - start
    mem = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    done = [o for o in outcomes if not isinstance(o, Exception)]
    steady = statistics.mean(clock.seconds[1:]) if len(clock.seconds) > 1 else float("nan")
    images = clock.images[-1] if clock.images else 0
    flops = 6 * sum(s.flops(first + k)[first:]) * images / steady
    return {
        "kind": s.kind,
        "k": k,
        "first": first,
        "variant": variant,
        "compile": compiled,
        "loader": type(clock.loader).__name__,
        "resolution": s.resolution,
        "archs": [a.name for a in archs],
        "images_per_epoch": images,
        "epoch_s": clock.seconds,
        "steady_s": steady,
        "first_extra_s": clock.seconds[0] - steady if clock.seconds else float("nan"),
        "wall_s": wall,
        "eval_s": sum(o.eval_seconds for o in done),
        "sum_images_per_s": k * images / steady,
        "member_images_per_s": images / steady,
        "flop_per_s": flops,
        "mfu_spec": flops / peak["spec"] if peak["spec"] else None,
        "mfu_matmul": flops / peak["matmul"],
        "peak_mem_bytes": mem,
        "mem_per_member_bytes": mem / k if mem is not None else None,
        "final_loss": [float(o.curves["train_loss"][-1]) for o in done if o.epochs],
        "failed": [f"{type(o).__name__}: {o}"[:200] for o in outcomes if isinstance(o, Exception)],
        "diverged": sum(1 for o in done if o.status != "done"),
    }


def _finish_row(s: ArchSet, row: dict[str, Any], results: dict[str, Any]) -> None:
    """Add the ratio to the members trained alone, record, print, learn."""
    solos = [s.solo_s.get(row["first"] + i) for i in range(row["k"])]
    memory = row["loader"] == "MemoryTrainLoader"
    if all(v is not None for v in solos) and row["k"] > 1 and memory:
        row["solo_sequential_s"] = sum(solos) * row["images_per_epoch"]  # type: ignore[arg-type]
        row["vs_solos"] = row["solo_sequential_s"] / row["steady_s"]
    if row["failed"] or row["diverged"]:
        results["errors"].append(
            f"{describe(row)}: {len(row['failed'])} failed, {row['diverged']} diverged "
            f"{row['failed'][:1]}"
        )
    results["cohort"].append(row)
    s.learn(row)
    mem = row["mem_per_member_bytes"]
    say(
        f"{describe(row)}: {row['sum_images_per_s']:,.0f} images/s summed, "
        f"{row['member_images_per_s']:,.0f} per member, "
        + (f"vs solos {row['vs_solos']:.2f}x, " if "vs_solos" in row else "")
        + f"MFU {row['mfu_matmul']:.1%} of matmul, "
        + (f"{mem / 2**30:.2f} GiB per member, " if mem is not None else "")
        + f"first epoch {row['first_extra_s']:+.1f} s, wall {row['wall_s']:.1f} s"
    )


def describe(row: dict[str, Any]) -> str:
    extra = "" if row["variant"] == "eager" else f" {row['variant']}"
    extra += " compiled" if row["compile"] else ""
    extra += f" on {row['loader']}" if row["loader"] != "MemoryTrainLoader" else ""
    extra += f" (architecture {row['first']})" if row.get("first") else ""
    return f"{row['kind']} K={row['k']}{extra}"


def attempt(
    s: ArchSet,
    k: int,
    device: torch.device,
    results: dict[str, Any],
    budget: Budget,
    save: Any,
    estimate: float | None = None,
    **options: Any,
) -> dict[str, Any] | None:
    """Run one row (run_cohort's `options`) if its estimate (default: an eager row's) fits
    the budget; an error is recorded and the run goes on; the results are saved after it."""
    loader = options.get("loader") or s.loader
    name = describe(
        {
            "kind": s.kind,
            "k": k,
            "variant": options.get("variant", "eager"),
            "compile": options.get("compiled", False),
            "loader": type(loader).__name__,
            "first": options.get("first", 0),
        }
    )
    estimate = estimate or s.estimate(k)
    if not budget.allows(name, estimate):
        return None
    say(f"{name}: training {k} member(s), 2 epochs of {len(loader)} steps")
    try:
        row = run_cohort(s, k, device, results["peak"], **options)
    except Exception as exc:  # one failed row must not end the run
        results["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        say(f"{name}: {type(exc).__name__}: {exc}")
        row = None
    else:
        row["estimate_s"] = estimate  # beside wall_s: how good the estimates were
        _finish_row(s, row, results)
    save()
    return row


def eager_rows(
    s: ArchSet, device: torch.device, results: dict[str, Any], budget: Budget, save: Any
) -> None:
    """Solo runs of every architecture, each cohort row as soon as its members' solos exist:
    K=1 (architecture 0), solos 1-3, K=4, solos 4-7, K=8, solos 8-15, K=16."""
    done = 0
    for k in KS:
        for i in range(done, k):
            row = attempt(s, 1, device, results, budget, save, first=i)
            if row is not None and not row["failed"] and not row["diverged"]:
                s.solo_s[i] = row["steady_s"] / row["images_per_epoch"]
        done = k
        if k > 1:
            attempt(s, k, device, results, budget, save)


def variant_rows(
    s: ArchSet, device: torch.device, results: dict[str, Any], budget: Budget, save: Any
) -> None:
    for variant in VARIANTS:
        attempt(s, 8, device, results, budget, save, variant=variant)


def compiled_rows(
    sets: list[ArchSet],
    ks: tuple[int, ...],
    device: torch.device,
    results: dict[str, Any],
    budget: Budget,
    save: Any,
) -> None:
    """torch.compile'd cohorts as the recipe's `compile` makes them, each member compiled on
    its own (train and eval graphs). Dynamo's defaults would recompile every member of a
    cohort of distinct architectures against one code object (AnyNet.forward): its recompile
    limit (8) would send the later ones back to eager, and automatic dynamic shapes would
    compile them for symbolic sizes. Both are set aside here, and recorded."""
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.recompile_limit = 64
    results["dynamo"] = {"automatic_dynamic_shapes": False, "recompile_limit": 64}
    for k in ks:
        for s in sets:
            torch._dynamo.reset()
            estimate = s.estimate(k, compiled=True)
            attempt(s, k, device, results, budget, save, estimate, compiled=True)


def variant_checks(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(check, value, pass): each variant's members learn as the eager cohort's of the same
    architectures do (same seeds, same batches; the loss is the members' mean)."""
    out = []
    for r in [r for r in rows if (r["variant"] != "eager" or r["compile"]) and r["final_loss"]]:
        same = [
            e
            for e in rows
            if (e["variant"], e["compile"], e["kind"], e["k"], e["first"], e["loader"])
            == ("eager", False, r["kind"], r["k"], r["first"], r["loader"])
            and e["final_loss"]
        ]
        if same:
            a, b = statistics.mean(r["final_loss"]), statistics.mean(same[0]["final_loss"])
            ok = math.isfinite(a) and abs(a - b) <= 0.1 + 0.1 * abs(b)
            out.append((f"{describe(r)}: mean final loss near eager's", f"{a:.4f} vs {b:.4f}", ok))
    return out


def report_lines(results: dict[str, Any]) -> list[str]:
    """The cohort table of gpu.py's report."""
    rows = results.get("cohort", [])
    if not rows:
        return []
    lines = [
        "",
        "## Cohorts: K distinct architectures from one loader (bf16, channels_last, batch 128)",
        "",
        "Steady-state epoch (the second of 2). img/s summed: member image-steps per second; "
        "vs solos: the members' solo epochs one after another over the cohort's epoch; MFU: "
        "6 x forward multiply-adds x img/s over the bf16 dense peak (spec) and the measured "
        "matmul; memory: peak allocated above what was allocated before the row.",
        "",
        "| set | K | first arch | variant | compiled | loader | img/s summed | img/s per member "
        "| vs solos | MFU spec | MFU matmul | peak GiB | GiB per member | first epoch +s "
        "| eval s | mean final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem, per = r["peak_mem_bytes"], r["mem_per_member_bytes"]
        loss = statistics.mean(r["final_loss"]) if r["final_loss"] else float("nan")
        lines.append(
            f"| {r['kind']} | {r['k']} | {r['first']} | {r['variant']} | "
            f"{'yes' if r['compile'] else 'no'} | {r['loader']} | "
            f"{r['sum_images_per_s']:,.0f} | {r['member_images_per_s']:,.0f} | "
            f"{num(r.get('vs_solos'), '.2f')} | {num(r['mfu_spec'], '.2%')} | "
            f"{num(r['mfu_matmul'], '.2%')} | {num(mem and mem / 2**30, '.2f')} | "
            f"{num(per and per / 2**30, '.3f')} | {r['first_extra_s']:+.1f} | "
            f"{r['eval_s']:.1f} | {num(loss, '.3f')} |"
        )
    return lines
