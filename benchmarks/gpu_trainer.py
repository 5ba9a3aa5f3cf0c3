"""The single-model rows of benchmarks/gpu.py: the in-memory loader against plain indexing,
`hpc.train.train_cell` against a hand-written loop (fp32/bf16 x contiguous/channels_last), and
the checks (channels_last against contiguous logits, CPU determinism)."""

from __future__ import annotations

import copy
import math
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anynet.arch import Architecture
from anynet.complexity import complexity
from anynet.model import build_model
from benchmarks.gpu_common import CL, CONTIG, ListLoader, memory_loader, num, say, sync
from hpc.recipe import Recipe
from hpc.train import train_cell
from loaders.memory import MemoryTrainLoader

# An AnyNetX_A network of the study's population (379 MF at 224 px, 1,000 classes).
STUDY_ARCH = Architecture(
    depths=(1, 2, 5, 2),
    widths=(48, 96, 256, 512),
    bottleneck_ratios=(1.0,) * 4,
    group_widths=(16,) * 4,
)
REGNETX_200MF = Architecture(
    depths=(1, 1, 4, 7),
    widths=(24, 56, 152, 368),
    bottleneck_ratios=(1.0,) * 4,
    group_widths=(8,) * 4,
)


def loader_rates(
    loader: MemoryTrainLoader, device: torch.device, repeats: int = 3
) -> dict[str, Any]:
    """Median images/s over `repeats` epochs (after one warm-up) of the loader and of plain
    indexing of its uint8 tensor: random order, float, normalised, same memory format."""
    mean, std = loader.mean.view(1, 3, 1, 1), loader.std.view(1, 3, 1, 1)
    fmt, bs, n = CL if loader.channels_last else CONTIG, loader.batch_size, loader.num_images

    def plain() -> int:
        order = torch.randperm(n, device=device)
        for b in range(len(loader)):
            index = order[b * bs : (b + 1) * bs]
            x = loader.images.index_select(0, index).to(torch.float32).sub_(mean).div_(std)
            x, _ = x.contiguous(memory_format=fmt), loader.labels.index_select(0, index)
        return len(loader) * bs

    def ours() -> int:
        return sum(len(y) for _, y in loader.epoch(0, len(rates["loader"])))

    rates: dict[str, list[float]] = {"loader": [], "plain": []}
    for r in range(repeats + 1):
        for name, run in (("loader", ours), ("plain", plain)):
            sync(device)
            start = time.perf_counter()
            count = run()
            sync(device)
            if r:
                rates[name].append(count / (time.perf_counter() - start))
    a, b = statistics.median(rates["loader"]), statistics.median(rates["plain"])
    row = {"images": n, "resolution": loader.resolution, "augment": loader.augment}
    return row | {"batch_size": bs, "loader": a, "plain": b, "ratio": a / b}


def hand_loop(
    arch: Architecture,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
    device: torch.device,
    classes: int,
    warm_steps: int,
) -> tuple[float, float]:
    """The plainest loop: (images/s of one timed epoch, extra seconds of the warm-up steps
    before it over the same steps at the timed rate, i.e. autotuning)."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=classes).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=CL)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    criterion = nn.CrossEntropyLoss()
    model.train()
    timed = []
    for part in (batches[:warm_steps], batches):
        sync(device)
        start = time.perf_counter()
        for images, labels in part:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=recipe.precision == "bf16"):
                loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        sync(device)
        timed.append(time.perf_counter() - start)
    rate = sum(len(y) for _, y in batches) / timed[1]
    return rate, timed[0] - sum(len(y) for _, y in batches[:warm_steps]) / rate


def _cell_row(
    name: str,
    arch: Architecture,
    train: Any,
    test: list[tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
    device: torch.device,
    classes: int,
    peak: dict[str, Any],
) -> dict[str, Any]:
    """train_cell for 2 epochs; figures of the second (steady-state) epoch."""
    out = train_cell(arch, train, test, recipe, seed=0, num_classes=classes, device=str(device))
    secs = out.curves["epoch_seconds"]
    if out.status != "done" or len(secs) < 2:
        raise RuntimeError(f"{name}: the cell {out.status} after {len(secs)} epoch(s)")
    rate = len(train) * recipe.batch_size / secs[-1]
    # Training FLOP per image: 3 (forward, backward) x 2 (FLOP per multiply-add) x the
    # forward multiply-adds as pycls counts them.
    flops = 6 * complexity(arch, recipe.resolution, classes).flops * rate
    return {
        "train_cell_images_per_s": rate,
        "train_cell_first_epoch_extra_s": secs[0] - secs[-1],
        "final_train_loss": float(out.curves["train_loss"][-1]),
        "train_cell_wall_s": out.wall_seconds,
        "peak_mem_bytes": out.peak_mem_bytes,
        "train_cell_flop_per_s": flops,
        "mfu_spec": flops / peak["spec"] if peak["spec"] else None,
        "mfu_matmul": flops / peak["matmul"],
    }


def train_rows(
    label: str,
    arch: Architecture,
    loader: MemoryTrainLoader,
    classes: int,
    configs: list[tuple[str, bool]],
    warm_steps: int,
    device: torch.device,
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """One row per (precision, channels_last): the hand loop, then train_cell on the same
    batches (and, for bf16 channels_last, on the memory loader itself); a configuration that
    raises is recorded in results["errors"] and the next one runs; saved after each."""
    base = list(loader.epoch(0, 0))
    for precision, cl in configs:
        name = f"{label} {precision} {'channels_last' if cl else 'contiguous'}"
        batches = [(x.contiguous(memory_format=CL if cl else CONTIG), y) for x, y in base]
        recipe = Recipe(
            epochs=2,
            batch_size=loader.batch_size,
            precision=precision,
            channels_last=cl,
            resolution=loader.resolution,
        )
        try:
            say(f"{name}: hand-written loop, {warm_steps} warm-up + {len(batches)} steps")
            hand, extra = hand_loop(arch, batches, recipe, device, classes, warm_steps)
            sources = [(ListLoader(batches), "batch list")]
            if (precision, cl) == ("bf16", True):
                sources.append((loader, "memory loader"))
            for train, source in sources:
                cell = _cell_row(
                    name, arch, train, batches[:2], recipe, device, classes, results["peak"]
                )
                row = {
                    "model": arch.name,
                    "label": label,
                    "resolution": loader.resolution,
                    "loader": source,
                    "precision": precision,
                    "channels_last": cl,
                    "batch_size": loader.batch_size,
                    "steps_per_epoch": len(train),
                    "hand_images_per_s": hand,
                    "hand_warmup_extra_s": extra,
                }
                row |= cell
                row["ratio"] = cell["train_cell_images_per_s"] / hand
                results["train"].append(row)
                say(
                    f"{name}, {source}: hand {hand:,.0f} images/s, train_cell "
                    f"{cell['train_cell_images_per_s']:,.0f} images/s, ratio {row['ratio']:.3f}"
                )
        except Exception as exc:  # one failed configuration must not end the run
            traceback.print_exc()
            results["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        save()


def layout_check(arch: Architecture, images: torch.Tensor, device: torch.device) -> float:
    """Largest |logit difference|, channels_last against contiguous, over the largest |logit|."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10).to(device)
    twin = copy.deepcopy(model).to(memory_format=CL)
    with torch.no_grad():
        a = model(images.contiguous())
        b = twin(images.contiguous(memory_format=CL))
    return float((a - b).abs().max() / a.abs().max())


def determinism_check(tmp: Path) -> bool:
    """Two 2-epoch CPU trainings with one seed, memory loader included: identical curves?"""
    loader = memory_loader(128, 32, 64, torch.device("cpu"), "pad_crop", tmp)
    test = list(loader.epoch(1, 0))[:1]
    recipe = Recipe(epochs=2, batch_size=64, precision="fp32")
    outs = [train_cell(STUDY_ARCH, loader, test, recipe, seed=3, num_classes=10) for _ in range(2)]
    keys = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")
    return all(np.array_equal(outs[0].curves[k], outs[1].curves[k]) for k in keys)


def checks(
    results: dict[str, Any], images: torch.Tensor, tmp: Path, device: torch.device
) -> list[tuple[str, str, bool]]:
    """(check, value, pass): layouts agree, CPU training is deterministic, bf16 trains as fp32
    does (the AnyNetX rows' final losses)."""
    err = layout_check(STUDY_ARCH, images, device)
    tol = 1e-2 if device.type == "cuda" else 1e-4  # cuDNN convolutions use TF32 in fp32
    out = [
        (
            "channels_last vs contiguous logits, fp32 (rel. max err)",
            f"{err:.2e} (tol {tol:.0e})",
            err <= tol,
        )
    ]
    say("determinism: two CPU trainings with one seed")
    same = determinism_check(tmp)
    out.append(("CPU: two trainings, same seed, identical curves", str(same), same))
    loss = {
        (r["precision"], r["channels_last"]): r["final_train_loss"]
        for r in results["train"]
        if r["label"] == "AnyNetX" and r["loader"] == "batch list"
    }
    fp32, bf16 = loss.get(("fp32", True), math.nan), loss.get(("bf16", True), math.nan)
    ok = math.isfinite(bf16) and abs(bf16 - fp32) <= 0.1 + 0.1 * abs(fp32)
    name = "bf16 final train loss finite, within 0.1 + 10% of fp32's"
    return [*out, (name, f"bf16 {bf16:.4f}, fp32 {fp32:.4f}", ok)]


def report_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if results["loader"]:
        lines += [
            "",
            "## In-memory training loader (median of 3 epochs)",
            "",
            "| data | augment | batch | loader img/s | plain indexing img/s | ratio |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['images']:,} x {r['resolution']} px | {r['augment']} | {r['batch_size']} | "
            f"{r['loader']:,.0f} | {r['plain']:,.0f} | {r['ratio']:.3f} |"
            for r in results["loader"]
        ]
    if not results["train"]:
        return lines
    lines += [
        "",
        "## One model: train_cell against a hand-written loop (steady-state epoch)",
        "",
        "| model | px | precision | layout | data | hand img/s | train_cell img/s | ratio "
        "| first epoch +s (hand/cell) | TFLOP/s | MFU spec | MFU matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["train"]:
        lines.append(
            f"| {r['label']} | {r['resolution']} | {r['precision']} | "
            f"{'CL' if r['channels_last'] else 'NCHW'} | {r['loader']} | "
            f"{r['hand_images_per_s']:,.0f} | {r['train_cell_images_per_s']:,.0f} | "
            f"{r['ratio']:.3f} | {r['hand_warmup_extra_s']:+.1f}/"
            f"{r['train_cell_first_epoch_extra_s']:+.1f} | "
            f"{r['train_cell_flop_per_s'] / 1e12:.3f} | {num(r['mfu_spec'], '.2%')} | "
            f"{num(r['mfu_matmul'], '.2%')} |"
        )
    return lines
