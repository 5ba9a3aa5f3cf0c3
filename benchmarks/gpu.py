"""GPU figures for the study's planning: cohorts, the FFCV loader, one model's trainer, checks.

One run, in this order (the most valuable first; each row is saved to $OUT as JSON and markdown
as soon as it ends, and a row starts only while --budget-s leaves room for its estimate):
1. paper-224 cohorts: K = 1, 4, 8, 16 of the paper preset's first 16 architectures (340-400 MF
   at 224 px, 1,000 classes) through `hpc.train.train_cells` on the in-memory loader, eager,
   with every architecture also trained alone (benchmarks/gpu_cohort.py);
2. FFCV: anysweep's JPEG loader, random-resized crop 224, every CPU core a worker
   (benchmarks/gpu_ffcv.py): the planner's h200 "ffcv-jpeg-224" row;
3. paper-224 cohorts fed by that FFCV loader, K = 1 and 8: does loading overlap training?
4. paper-224 at K = 8 with the members overlapped: own CUDA streams, CUDA graphs, both
   (benchmarks/gpu_variants.py);
5. demo-32 cohorts: K = 1, 4, 8, 16 of the demo preset's first 16 architectures at 32 px,
   then its K = 8 variants;
6. FFCV with half the cores, and bare FFCV's pipeline on the same file;
7. one model: the in-memory loader against plain indexing, train_cell against a hand-written
   loop (fp32/bf16 x layouts), and the checks (benchmarks/gpu_trainer.py);
8. compiled cohorts (torch.compile per member): K = 1, then K = 4, while the budget lasts.
`python -m benchmarks.gpu_throughput $OUT/gpu_results.json` prints hpc/throughput.toml rows.

Estimates on an H200 from first principles (790 TFLOP/s bf16 matmul; 10-15 % model FLOP
utilisation is the planner's assumption). A training step of one of the paper's AnyNets (7-44
blocks, 20 on average) dispatches ~300 forward ops from Python (~10 us each) and ~700 backward
kernels from autograd's C++ (~4 us each), ~6 ms at batch 128, about what its 128 x 2.2 GFLOP
take at 5-10 % utilisation: eager steps are as likely bound by the CPU as by the GPU.
- paper-224: 2 x 370 M x 3 = 2.2 GFLOP per image-step: 10,000-25,000 images/s per member, an
  epoch of 4,096 images 0.16-0.4 s; an architecture's first use ~1-2 s (cuDNN autotuning of
  ~30 conv shapes x 3 passes). 16 solos x (1.5 + 2 x 0.3 s) ~35 s; K = 4, 8, 16: 28 members x
  (0.3 + 2 x 0.3 s) ~25 s. Section ~65 s.
- FFCV, 16 workers: 8,192 JPEGs of 500x375 (~85 KB; ~1 ms to encode, measured on CPU-2)
  written in ~5 s with the writer's start, the pipeline compiled in ~8 s, 3 epochs at
  6,000-13,000 images/s (400-800 per core; CPU-2 spent 2.4 ms of CPU per image, normalising
  on the CPU) ~3 s: ~20 s. Fed cohorts, 8,192 images per epoch: 2 x max(0.8 s, K x 0.4 s) +
  builds: ~15 s.
- paper-224 variants at K = 8: 8 x (0.3 + 2 x 0.3 s) + capture ~1 s: ~8 s each, ~25 s.
- demo-32: 6 x 1 M = 6 MFLOP per image-step, nothing for the GPU: ~100 forward ops and ~250
  backward kernels, launch-bound at ~2 ms per step of 128, ~60,000 images/s per member, an
  epoch of 20,000 images ~0.3 s; 16 solos ~15 s, K rows ~20 s, 3 variants ~18 s. Section ~55 s.
- FFCV with 8 workers and bare FFCV: ~10 s each. One-model rows and checks: ~25 s.
- Compiled (guesses: inductor compiles forward and backward, then the evaluation graph, per
  member): a paper-224 member ~90 s, a demo-32 member ~40 s; K = 1 of both may fit, K = 4 not.
Sum before the compiled rows ~230 s, after ~20 s of start-up: --budget-s 300 by default, and
benchmarks/gpu.sh stops the run (SIGINT, the report is still written) 45 s past it.

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
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from benchmarks import gpu_cohort, gpu_ffcv, gpu_throughput, gpu_trainer  # noqa: E402
from benchmarks.gpu_common import Budget, memory_loader, say, sync  # noqa: E402
from benchmarks.gpu_common import save as save_results  # noqa: E402

SPEC_BF16_DENSE = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}  # FLOP/s


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


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        props = torch.cuda.get_device_properties(device)
        return env | {
            "device": torch.cuda.get_device_name(device),
            "capability": f"{major}.{minor}",
            "memory_gib": props.total_memory / 2**30,
            "bf16": torch.cuda.is_bf16_supported(),
        }
    return env | {"device": platform.processor() or platform.machine(), "capability": None}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check every row runs")
    p.add_argument("--paper-images", type=int, default=4096, help="224 px images per epoch")
    p.add_argument("--demo-images", type=int, default=20_000, help="32 px images per epoch")
    p.add_argument("--ffcv-images", type=int, default=8192, help="JPEGs in the FFCV .beton")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated beginnings of the sections to run (paper-cohorts, ffcv, ffcv-fed, "
        "paper-variants, demo-cohorts, demo-variants, ffcv-more, one-model, compiled), e.g. "
        "'paper,ffcv'; default: all, in this order",
    )
    p.add_argument(
        "--budget-s", type=float, default=300.0, help="a row starts only if its estimate fits"
    )
    args = p.parse_args()
    if args.smoke and "--budget-s" not in " ".join(sys.argv):
        args.budget_s = 3600.0  # the smoke run checks that every row runs, whatever its speed
    args.paper_px, args.demo_px, args.stored, args.ffcv_px = 224, 32, gpu_ffcv.STORED, 224
    args.warm_steps, args.matmul, args.workers = 8, (8192, 50), len(os.sched_getaffinity(0))
    if args.smoke:
        args.paper_images, args.demo_images, args.ffcv_images, args.batch_size = 8, 8, 32, 4
        args.paper_px, args.demo_px, args.stored, args.ffcv_px = 32, 32, (75, 100), 32
        args.warm_steps, args.matmul, args.workers = 1, (256, 5), 2
    return args


class Run:
    """The state every section shares: device, arguments, results, budget, temporary folder."""

    def __init__(self, args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
        self.args, self.device, self.tmp = args, device, tmp
        out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="anysweep-gpu-"))
        out.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {
            "env": environment(device),
            "args": {k: v for k, v in vars(args).items()},
            "out": str(out),
            "cohort": [],
            "ffcv": [],
            "loader": [],
            "train": [],
            "checks": [],
            "sections": [],
            "skipped": [],
            "errors": [],
        }
        self.budget = Budget(args.budget_s, self.results)
        self.sets: dict[str, gpu_cohort.ArchSet] = {}
        self.beton: gpu_ffcv.Beton | None = None
        self.ffcv_loader: Any = None

    def save(self) -> None:
        save_results(self.results, report)

    def check(self, name: str, value: str, ok: bool) -> None:
        self.results["checks"].append({"check": name, "value": value, "pass": bool(ok)})
        say(f"check {name}: {value} -> {'pass' if ok else 'FAIL'}")
        self.save()


def arch_set(run: Run, kind: str) -> gpu_cohort.ArchSet:
    """The set's architectures, memory loader and test batch, made at first use."""
    if kind in run.sets:
        return run.sets[kind]
    a = run.args
    paper = kind == "paper-224"
    archs, design = gpu_cohort.preset_archs("paper" if paper else "demo", 16)
    res, n = (a.paper_px, a.paper_images) if paper else (a.demo_px, a.demo_images)
    classes = design["num_classes"]
    say(f"{kind}: {len(archs)} architectures; {n:,} synthetic {res} px images on the device")
    loader = memory_loader(
        n, res, a.batch_size, run.device, "rrc" if paper else "pad_crop", run.tmp, classes
    )
    test = [(x.clone(), y.clone()) for x, y in list(loader.epoch(1, 0))[:1]]
    # First-principles guesses (module docstring), replaced by measurements row by row.
    guess = (0.4, 1.5, 90.0) if paper else (0.3, 0.5, 40.0)
    run.sets[kind] = gpu_cohort.ArchSet(kind, archs, res, classes, loader, test, *guess)
    return run.sets[kind]


def cohorts(kind: str) -> Callable[[Run], None]:
    def section(run: Run) -> None:
        s = arch_set(run, kind)
        gpu_cohort.eager_rows(s, run.device, run.results, run.budget, run.save)

    return section


def variants(kind: str) -> Callable[[Run], None]:
    def section(run: Run) -> None:
        s = arch_set(run, kind)
        gpu_cohort.variant_rows(s, run.device, run.results, run.budget, run.save)

    return section


def ffcv_rows(configs: list[tuple[str, bool]]) -> Callable[[Run], None]:
    """Loader rows for (loader kind, half the workers?) on the .beton, written at first use."""

    def section(run: Run) -> None:
        try:
            import ffcv  # noqa: F401
        except ImportError as exc:
            run.results["skipped"].append(f"ffcv rows: ffcv does not import ({exc})")
            return
        a = run.args
        if run.beton is None:
            if not run.budget.allows("ffcv .beton", 20.0):
                return
            say(f"ffcv: writing {a.ffcv_images:,} JPEGs of {a.stored[1]}x{a.stored[0]}")
            run.beton = gpu_ffcv.write(
                a.ffcv_images, run.device, run.tmp, a.workers, a.stored, a.ffcv_px
            )
        for kind, half in configs:
            workers = max(1, a.workers // 2) if half else a.workers
            if not run.budget.allows(f"{kind} {workers} workers", 15.0):
                continue
            try:
                row, loader = gpu_ffcv.loader_row(
                    run.beton, kind, workers, a.batch_size, run.device, 1 if a.smoke else 3
                )
            except Exception as exc:  # a failed row is reported, the others still run
                run.results["errors"].append(f"{kind} {workers} workers: {exc!r}"[:300])
                continue
            run.results["ffcv"].append(row)
            if kind == "anysweep" and not half:
                run.ffcv_loader = loader
            run.save()

    return section


def ffcv_fed(run: Run) -> None:
    """paper-224 cohorts of K = 1 and 8 fed by anysweep's FFCV loader with every core."""
    if run.ffcv_loader is None:
        run.results["skipped"].append("FFCV-fed cohorts: no FFCV loader row ran")
        return
    s = arch_set(run, "paper-224")
    loader_s = run.beton.images / run.results["ffcv"][0]["images_per_s"]  # type: ignore[union-attr]
    for k in (1, 8):
        member_s = s.member_epoch_s * run.beton.images / run.args.paper_images  # type: ignore[union-attr]
        estimate = k * s.build_s + 2 * max(loader_s, k * member_s)
        gpu_cohort.attempt(
            s, k, run.device, run.results, run.budget, run.save, estimate, loader=run.ffcv_loader
        )


def one_model(run: Run) -> None:
    """The in-memory loader's rates, train_cell against the hand loop, and the checks."""
    if not run.budget.allows("one-model rows", 25.0):
        return
    small, big = arch_set(run, "demo-32"), arch_set(run, "paper-224")
    for s in (small, big):
        run.results["loader"].append(gpu_trainer.loader_rates(s.loader, run.device))
    configs = [("fp32", False), ("fp32", True), ("bf16", True)]
    if run.device.type == "cuda":  # CPU bf16 convolutions in NCHW are 10-30x slower
        configs.insert(2, ("bf16", False))
    a, r = run.args, run.results
    for label, arch, s, arch_configs in (
        ("AnyNetX", gpu_trainer.STUDY_ARCH, small, configs),
        ("RegNetX-200MF", gpu_trainer.REGNETX_200MF, big, [("bf16", True)]),
    ):
        gpu_trainer.train_rows(
            label, arch, s.loader, s.classes, arch_configs, a.warm_steps, run.device, r, run.save
        )
    for name, value, ok in gpu_trainer.checks(run.results, small.test[0][0], run.tmp, run.device):
        run.check(name, value, ok)


def compiled(run: Run) -> None:
    if run.args.no_compile or (run.device.type != "cuda" and not run.args.smoke):
        run.results["skipped"].append("compiled rows: --no-compile or no CUDA device")
        return
    sets = [arch_set(run, "paper-224"), arch_set(run, "demo-32")]
    gpu_cohort.compiled_rows(sets, (1, 4), run.device, run.results, run.budget, run.save)


SECTIONS: list[tuple[str, Callable[[Run], None]]] = [
    ("paper-cohorts", cohorts("paper-224")),
    ("ffcv", ffcv_rows([("anysweep", False)])),
    ("ffcv-fed", ffcv_fed),  # needs the "ffcv" section's loader
    ("paper-variants", variants("paper-224")),
    ("demo-cohorts", cohorts("demo-32")),
    ("demo-variants", variants("demo-32")),
    ("ffcv-more", ffcv_rows([("anysweep", True), ("bare ffcv", False)])),
    ("one-model", one_model),
    ("compiled", compiled),
]


def report(results: dict[str, Any]) -> str:
    env, peak = results["env"], results.get("peak") or {"n": 0, "matmul": math.nan, "spec": None}
    lines = [
        f"# anysweep GPU benchmark, {env['date']}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python "
        f"{env['python']}; {env['device']}, capability {env['capability']}, {env['cpus']} CPUs",
        f"bf16 matmul {peak['n']}^3: {peak['matmul'] / 1e12:.4g} TFLOP/s measured; spec bf16 "
        f"dense peak: {peak['spec'] / 1e12 if peak['spec'] else 'n/a'} TFLOP/s",
    ]
    lines += gpu_cohort.report_lines(results)
    lines += gpu_ffcv.report_lines(results)
    lines += gpu_trainer.report_lines(results)
    if results.get("cohort") or results.get("ffcv"):
        lines += ["", "## Rows for hpc/throughput.toml", "", "```toml"]
        lines += [gpu_throughput.toml_rows(results), "```"]
    for key, title in (("skipped", "Skipped"), ("errors", "Errors")):
        if results[key]:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in results[key]]
    lines += ["", "## Checks", "", "| check | value | pass |", "|---|---|---|"]
    lines += [
        f"| {c['check']} | {c['value']} | {'yes' if c['pass'] else 'NO'} |"
        for c in results["checks"]
    ]
    return "\n".join(lines) + "\n"


def run_sections(run: Run) -> None:
    wanted = [w.strip() for w in run.args.only.split(",") if w.strip()]
    for name, section in SECTIONS:
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        say(f"== {name} ({run.budget.left():.0f} s of the budget left)")
        start = time.perf_counter()
        try:
            section(run)
        except Exception as exc:  # one failed section must not end the run
            traceback.print_exc()
            run.results["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        run.results["sections"].append({"section": name, "s": time.perf_counter() - start})
        run.save()
    for name, value, ok in gpu_cohort.variant_checks(run.results["cohort"]):
        run.check(name, value, ok)


def setup_device(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True  # as train_cell sets it
    else:
        torch.set_num_threads(1)  # on shared cores, more threads than free cores run slower
    return device


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    args = parse_args()
    names = [name for name, _ in SECTIONS]
    for w in (w.strip() for w in args.only.split(",") if w.strip()):
        if not any(name.startswith(w) for name in names):
            sys.exit(f"--only: no section begins with {w!r}; sections: {', '.join(names)}")
    device = setup_device(args)
    for sig in (signal.SIGINT, signal.SIGTERM):  # benchmarks/gpu.sh's time limit
        signal.signal(sig, _interrupt)
    with tempfile.TemporaryDirectory(prefix="anysweep-gpu-") as tmp:
        run = Run(args, device, Path(tmp))
        r = run.results
        say("environment: " + ", ".join(f"{k} {v}" for k, v in r["env"].items()))
        spec = next((v for k, v in SPEC_BF16_DENSE.items() if k in r["env"]["device"]), None)
        n, reps = args.matmul
        r["peak"] = {"n": n, "matmul": matmul_flops(n, device, reps), "spec": spec}
        say(f"bf16 matmul {n}^3: {r['peak']['matmul'] / 1e12:.4g} TFLOP/s")
        run.save()
        try:
            run_sections(run)
        except KeyboardInterrupt as exc:
            r["errors"].append(f"interrupted by {exc}: the rows before it are complete")
            say(f"interrupted ({exc}); writing what was measured")
        ran = "; ".join(r["errors"]) or "yes"
        run.check("every row ran", ran, not r["errors"])
        print("\n" + report(r), flush=True)
        say(f"wrote gpu_results.md and gpu_results.json to {r['out']}")
    return 0 if all(c["pass"] for c in r["checks"]) else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # an ffcv thread left waiting by a watchdog must not keep the process
