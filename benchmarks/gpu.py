"""GPU paths of the trainer and the in-memory loader: speed, model FLOP utilisation, checks.

Data are synthetic uint8 images made on the device (a colour per class plus noise, so the
loss falls): 50,000 at 32 px for an AnyNetX network of the study's population, 8,192 at
224 px for RegNetX-200MF. One run measures:
1. the environment: torch, CUDA, device, compute capability, bf16 support;
2. images/s of the in-memory training loader (crop/flip and normalisation on the device)
   against plain indexing of the same uint8 tensor (random order, to float, normalised);
3. images/s of `hpc.worker.train.train_cell` against a hand-written loop (same model, batches,
   SGD with momentum, bf16 autocast where the recipe asks for it), for fp32/bf16,
   channels_last on/off and torch.compile off/on: steady state is the last epoch, and the
   first epoch's extra seconds (compilation, mostly) are reported apart;
4. model FLOP utilisation: 3 x 2 x forward multiply-adds x images/s against the device's
   bf16 dense peak (spec) and against a large bf16 matmul measured in the same run;
5. images/s of FFCV from a JPEG .beton (random-resized crop 224 to the device) against the
   in-memory loader on the same images (benchmarks/gpu_ffcv.py; skipped without ffcv);
6. checks: bf16's final loss is finite and near fp32's, channels_last and contiguous give
   the same logits, and two CPU trainings with one seed give identical numbers.
Compiled configurations run last, each only while --budget-s leaves time for it. The tables
go to stdout, and with a JSON of every figure to $OUT (else a temporary folder); the exit
status is 1 when a check fails or a configuration raised.

Run: bash benchmarks/gpu.sh                      (CUDA; extra arguments are passed on)
     .venv/bin/python benchmarks/gpu.py --device cpu --smoke      (tiny sizes, CPU)
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, and benchmarks/analysis.py would
# shadow the analysis package: put the repository root there instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = _ROOT

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from torch import nn  # noqa: E402

from anynet.arch import Architecture  # noqa: E402
from anynet.complexity import complexity  # noqa: E402
from anynet.model import build_model  # noqa: E402
from benchmarks import gpu_ffcv  # noqa: E402
from hpc.study.recipe import Recipe  # noqa: E402
from hpc.worker.train import train_cell  # noqa: E402
from loaders.memory import MemoryTrainLoader  # noqa: E402

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
NUM_CLASSES = 10
MEAN, STD = np.array([125.3, 123.0, 113.9]), np.array([63.0, 62.1, 66.7])
SPEC_BF16_DENSE = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}  # FLOP/s
COMPILE_RESERVE_S = 180.0  # a compiled configuration is skipped with less budget left
CL, CONTIG = torch.channels_last, torch.contiguous_format
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(
    n: int, res: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 N,H,W,C images and int64 labels: a colour per class plus Gaussian noise."""
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen, device=device)
    colours = torch.randint(80, 176, (NUM_CLASSES, 1, 1, 3), generator=gen, device=device)
    images = torch.empty(n, res, res, 3, dtype=torch.uint8, device=device)
    for s in range(0, n, 2048):
        noise = torch.randn(min(2048, n - s), res, res, 3, generator=gen, device=device)
        pixels = colours[labels[s : s + 2048]] + 64 * noise
        images[s : s + 2048] = pixels.clamp_(0, 255).to(torch.uint8)
    return images, labels


def memory_loader(
    n: int, res: int, batch_size: int, device: torch.device, augment: str, tmp: Path
) -> MemoryTrainLoader:
    """The memory backend's training loader over a synthetic split (one .npy, as prepared)."""
    images, labels = synthetic(n, res, device)
    path = tmp / f"train-{device.type}-{res}px-{n}.npy"
    np.save(path, images.cpu().numpy())
    del images
    return MemoryTrainLoader(
        path,
        labels=labels.cpu().numpy(),
        indices=None,
        label_map=None,
        batch_size=batch_size,
        resolution=res,
        device=str(device),
        augment=augment,
        mean=MEAN,
        std=STD,
        normalize=True,
    )


class ListLoader:
    """The same batches every epoch, behind the TrainLoader interface."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.num_images = sum(len(y) for _, y in batches)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


def loader_rates(
    loader: MemoryTrainLoader, device: torch.device, repeats: int = 3
) -> tuple[float, float]:
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
    return statistics.median(rates["loader"]), statistics.median(rates["plain"])


def hand_loop(
    arch: Architecture,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
    device: torch.device,
    warm_steps: int,
) -> tuple[float, float]:
    """The plainest loop: (images/s of one timed epoch, extra seconds of the warm-up steps
    before it over the same steps at the timed rate, i.e. compilation and autotuning)."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=NUM_CLASSES).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=CL)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    step_model = torch.compile(model) if recipe.compile else model
    criterion = nn.CrossEntropyLoss()
    model.train()
    timed = []
    for part in (batches[:warm_steps], batches):
        sync(device)
        start = time.perf_counter()
        for images, labels in part:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=recipe.precision == "bf16"):
                loss = criterion(step_model(images), labels)
            loss.backward()
            optimizer.step()
        sync(device)
        timed.append(time.perf_counter() - start)
    rate = sum(len(y) for _, y in batches) / timed[1]
    return rate, timed[0] - sum(len(y) for _, y in batches[:warm_steps]) / rate


def train_rows(
    label: str,
    arch: Architecture,
    res: int,
    loader: MemoryTrainLoader,
    configs: list[tuple[str, bool, bool]],
    args: argparse.Namespace,
    device: torch.device,
    results: dict[str, Any],
) -> None:
    """One row per (precision, channels_last, compile): hand loop and train_cell, 2 epochs;
    a configuration that raises is recorded in results["errors"] and the next one runs."""
    base = list(loader.epoch(0, 0))
    for precision, cl, comp in configs:
        name = f"{label} {precision} {'channels_last' if cl else 'contiguous'}" + (
            " compiled" if comp else ""
        )
        if comp and time.perf_counter() - T0 > args.budget_s - COMPILE_RESERVE_S:
            say(f"{name}: skipped, under {COMPILE_RESERVE_S:.0f} s of the budget left")
            results["skipped"].append(name)
            continue
        batches = [(x.contiguous(memory_format=CL if cl else CONTIG), y) for x, y in base]
        recipe = Recipe(
            epochs=2,
            batch_size=loader.batch_size,
            precision=precision,
            channels_last=cl,
            compile=comp,
        )
        if comp:  # each compilation starts afresh: another model's shapes would make it dynamic
            torch._dynamo.reset()
        try:
            say(f"{name}: hand-written loop, {args.warm_steps} warm-up + {len(batches)} steps")
            hand, hand_extra = hand_loop(arch, batches, recipe, device, args.warm_steps)
            sources = [(ListLoader(batches), "batch list")]
            if (precision, cl, comp) == ("bf16", True, False):  # the same with the real loader
                sources.append((loader, "memory loader"))
            for train, source in sources:
                say(f"{name}: train_cell on the {source}, 2 epochs of {len(train)} steps")
                if comp:
                    torch._dynamo.reset()
                out = train_cell(
                    arch,
                    train,
                    batches[:2],
                    recipe,
                    seed=0,
                    num_classes=NUM_CLASSES,
                    device=str(device),
                )
                secs = out.curves["epoch_seconds"]
                cell = len(train) * loader.batch_size / secs[-1]
                # Training FLOP per image: 3 (forward, backward) x 2 (FLOP per multiply-add)
                # x the forward multiply-adds as pycls counts them.
                flops = 6 * complexity(arch, res, NUM_CLASSES).flops * cell
                spec = results["peak"]["spec"]
                results["train"].append(
                    {
                        "model": arch.name,
                        "label": label,
                        "resolution": res,
                        "loader": source,
                        "precision": precision,
                        "channels_last": cl,
                        "compile": comp,
                        "batch_size": loader.batch_size,
                        "steps_per_epoch": len(train),
                        "hand_images_per_s": hand,
                        "train_cell_images_per_s": cell,
                        "ratio": cell / hand,
                        "hand_warmup_extra_s": hand_extra,
                        "train_cell_first_epoch_extra_s": secs[0] - secs[-1],
                        "final_train_loss": float(out.curves["train_loss"][-1]),
                        "train_cell_wall_s": out.wall_seconds,
                        "eval_s": out.eval_seconds,
                        "peak_mem_bytes": out.peak_mem_bytes,
                        "train_cell_flop_per_s": flops,
                        "mfu_spec": flops / spec if spec else None,
                        "mfu_matmul": flops / results["peak"]["matmul"],
                    }
                )
                say(
                    f"{name}, {source}: hand {hand:,.0f} images/s, train_cell {cell:,.0f} "
                    f"images/s, ratio {cell / hand:.3f}, first epoch {secs[0] - secs[-1]:+.1f} s, "
                    f"loss {out.curves['train_loss'][-1]:.4f}"
                )
        except Exception as exc:  # one failed configuration must not end the run
            traceback.print_exc()
            results["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        save(results)


def matmul_flops(n: int, device: torch.device, reps: int) -> float:
    """FLOP/s of an n x n x n bf16 matmul (2 n^3 FLOP each), after 3 warm-up products."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def layout_check(arch: Architecture, images: torch.Tensor, device: torch.device) -> float:
    """Largest |logit difference|, channels_last against contiguous, over the largest |logit|."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=NUM_CLASSES).to(device)
    twin = copy.deepcopy(model).to(memory_format=CL)
    with torch.no_grad():
        a = model(images.contiguous())
        b = twin(images.contiguous(memory_format=CL))
    return float((a - b).abs().max() / a.abs().max())


def determinism_check(tmp: Path) -> bool:
    """Two 2-epoch CPU trainings with one seed, memory loader included: identical curves?"""
    loader = memory_loader(128, 16, 64, torch.device("cpu"), "pad_crop", tmp)
    test = list(loader.epoch(1, 0))[:1]
    recipe = Recipe(epochs=2, batch_size=64, precision="fp32")
    outs = [
        train_cell(STUDY_ARCH, loader, test, recipe, seed=3, num_classes=NUM_CLASSES)
        for _ in range(2)
    ]
    keys = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")
    return all(np.array_equal(outs[0].curves[k], outs[1].curves[k]) for k in keys)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        env |= {
            "device": torch.cuda.get_device_name(device),
            "capability": f"{major}.{minor}",
            "bf16": torch.cuda.is_bf16_supported(),
        }
    else:
        env |= {
            "device": platform.processor() or platform.machine(),
            "capability": None,
            "bf16": True,
            "threads": torch.get_num_threads(),
        }
    return env


def save(results: dict[str, Any], text: str = "") -> None:
    """Every figure so far as JSON (after each row, so a run cut short leaves its figures)."""
    out = Path(results["out"])
    (out / "gpu_results.json").write_text(json.dumps(results, indent=2, default=str))
    if text:
        (out / "gpu_results.md").write_text(text)


def check(results: dict[str, Any], name: str, value: str, ok: bool) -> None:
    results["checks"].append({"check": name, "value": value, "pass": bool(ok)})
    say(f"check {name}: {value} -> {'pass' if ok else 'FAIL'}")


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def report(results: dict[str, Any]) -> str:
    env, peak = results["env"], results["peak"]
    spec = _num(peak["spec"] and peak["spec"] / 1e12, ".1f")
    lines = [
        "## Environment",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python "
        f"{env['python']}; {env['device']}, capability {env['capability']}, "
        f"bf16 {env['bf16']}",
        f"bf16 matmul {peak['n']}^3: {peak['matmul'] / 1e12:.4g} TFLOP/s measured; "
        f"spec bf16 dense peak: {spec} TFLOP/s",
        "",
        "## In-memory training loader (median of 3 epochs)",
        "",
        "| data | augment | batch | loader img/s | plain indexing img/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["loader"]:
        lines.append(
            f"| {r['images']:,} x {r['resolution']} px | {r['augment']} | "
            f"{r['batch_size']} | {r['loader']:,.0f} | {r['plain']:,.0f} | "
            f"{r['ratio']:.3f} |"
        )
    lines += [
        "",
        "## Trainer: train_cell against a hand-written loop (steady-state epoch)",
        "",
        "Training FLOP = 3 x 2 x forward multiply-adds (pycls count) per image; MFU = "
        "train_cell's FLOP/s over the bf16 dense peak (spec) or the measured matmul. "
        "Warm-up/compile: the first epoch's (hand: warm-up steps') extra seconds; "
        "train_cell's compilation reuses what the hand loop's left in inductor's cache.",
        "",
        "| model | px | precision | layout | compile | data | hand img/s | train_cell img/s "
        "| ratio | warm-up/compile s (hand/cell) | TFLOP/s | MFU spec | MFU matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["train"]:
        lines.append(
            f"| {r['label']} | {r['resolution']} | {r['precision']} | "
            f"{'CL' if r['channels_last'] else 'NCHW'} | {'yes' if r['compile'] else 'no'} | "
            f"{r['loader']} | {r['hand_images_per_s']:,.0f} | "
            f"{r['train_cell_images_per_s']:,.0f} | {r['ratio']:.3f} | "
            f"{r['hand_warmup_extra_s']:+.1f}/{r['train_cell_first_epoch_extra_s']:+.1f} | "
            f"{r['train_cell_flop_per_s'] / 1e12:.3f} | {_num(r['mfu_spec'], '.2%')} | "
            f"{_num(r['mfu_matmul'], '.2%')} |"
        )
    lines += gpu_ffcv.report_lines(results)
    if results["skipped"]:
        lines += ["", "Skipped for the time budget: " + "; ".join(results["skipped"])]
    lines += ["", "## Checks", "", "| check | value | pass |", "|---|---|---|"]
    lines += [
        f"| {c['check']} | {c['value']} | {'yes' if c['pass'] else 'NO'} |"
        for c in results["checks"]
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--images", type=int, default=50_000, help="small-image training set size")
    p.add_argument("--resolution", type=int, default=32, help="small-image side (px)")
    p.add_argument("--big-images", type=int, default=8192, help="224 px training set size")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warm-steps", type=int, default=8, help="hand loop steps before timing")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help=f"a compiled row starts only with {COMPILE_RESERVE_S:.0f} s of this left",
    )
    args = p.parse_args()
    big_res, matmul_n, reps = 224, 8192, 50
    if args.smoke:
        args.images, args.resolution, args.big_images, args.batch_size = 128, 16, 32, 32
        args.warm_steps, big_res, matmul_n, reps = 1, 32, 256, 5
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # on shared cores, more threads than free cores run slower
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True  # as train_cell sets it
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="anysweep-gpu-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "env": environment(device),
        "args": vars(args),
        "out": str(out),
        "loader": [],
        "train": [],
        "checks": [],
        "skipped": [],
        "errors": [],
    }
    say("environment: " + ", ".join(f"{k} {v}" for k, v in results["env"].items()))
    name = results["env"]["device"]
    spec = next((v for k, v in SPEC_BF16_DENSE.items() if k in name), None)
    results["peak"] = {"n": matmul_n, "matmul": matmul_flops(matmul_n, device, reps), "spec": spec}
    say(f"bf16 matmul {matmul_n}^3: {results['peak']['matmul'] / 1e12:.4g} TFLOP/s")
    compiled = [] if args.no_compile or device.type != "cuda" else [("bf16", True, True)]
    eager_small = [("fp32", False, False), ("fp32", True, False), ("bf16", True, False)]
    if device.type == "cuda":  # CPU bf16 convolutions in NCHW are 10-30x slower: skipped there
        eager_small.insert(2, ("bf16", False, False))
    with tempfile.TemporaryDirectory(prefix="anysweep-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        sections = []
        for label, arch, n, res, augment in (
            ("AnyNetX", STUDY_ARCH, args.images, args.resolution, "pad_crop"),
            ("RegNetX-200MF", REGNETX_200MF, args.big_images, big_res, "rrc"),
        ):
            say(f"making {n:,} synthetic {res} px images and the memory loader ({augment})")
            loader = memory_loader(n, res, args.batch_size, device, augment, tmp)
            ours, plain = loader_rates(loader, device)
            results["loader"].append(
                {
                    "images": n,
                    "resolution": res,
                    "augment": augment,
                    "batch_size": args.batch_size,
                    "loader": ours,
                    "plain": plain,
                    "ratio": ours / plain,
                }
            )
            say(f"loader {res} px {augment}: {ours:,.0f} images/s, plain indexing {plain:,.0f}")
            sections.append((label, arch, res, loader))
        err = layout_check(STUDY_ARCH, next(iter(sections[0][3].epoch(0, 0)))[0], device)
        tol = 1e-2 if device.type == "cuda" else 1e-4  # cuDNN convolutions use TF32 in fp32
        check(
            results,
            "channels_last vs contiguous logits, fp32 (rel. max err)",
            f"{err:.2e} (tol {tol:.0e})",
            err <= tol,
        )
        say("determinism: two CPU trainings with one seed")
        same = determinism_check(tmp)
        check(results, "CPU: two trainings, same seed, identical curves", str(same), same)
        gpu_ffcv.ffcv_row(args, device, results, tmp, sys.modules[__name__])
        for section, eager in zip(sections, (eager_small, [("bf16", True, False)]), strict=True):
            train_rows(*section, eager, args, device, results)
        for section in sections:  # compiled rows last, while the time budget allows
            train_rows(*section, compiled, args, device, results)
    loss = {
        (r["precision"], r["channels_last"]): r["final_train_loss"]
        for r in results["train"]
        if r["label"] == "AnyNetX" and not r["compile"] and r["loader"] == "batch list"
    }
    fp32, bf16 = loss.get(("fp32", True), math.nan), loss.get(("bf16", True), math.nan)
    check(
        results,
        "bf16 final train loss finite, within 0.1 + 10% of fp32's",
        f"bf16 {bf16:.4f}, fp32 {fp32:.4f}",
        math.isfinite(bf16) and abs(bf16 - fp32) <= 0.1 + 0.1 * abs(fp32),
    )
    check(
        results,
        "every configuration ran",
        "; ".join(results["errors"]) or "yes",
        not results["errors"],
    )
    text = report(results)
    print("\n" + text, flush=True)
    save(results, text)
    say(f"wrote gpu_results.md and gpu_results.json to {results['out']}")
    return 0 if all(c["pass"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
