"""Turn a run of benchmarks/gpu.py (gpu_results.json) into measured rows for hpc/study/throughput.toml.

Rows printed (TOML, to paste into hpc/study/throughput.toml):
- model "paper-224": the member image-steps per second of the fastest eager paper-224 cohort
  trained through `hpc.worker.train.train_cells`; hpc.scheduling.cost charges each member
  `images / images_per_s`, so a cohort of K costs K x images / this rate, its measured epoch.
- model "paper-224-graphs": the same for the graphs+streams variant, which is hpc's stepping
  with `[cluster] cuda_graphs` (hpc.worker.graphs). The rates of every K, of the other
  variants and of compiled cohorts follow as comments.
- loader "ffcv-jpeg-224": anysweep's FFCV training loader with every CPU core as a worker.
Comments also say whether loading overlapped training in the FFCV-fed cohorts (`overlap`).

Run: python -m benchmarks.gpu_throughput OUT/gpu_results.json [--device-key h200]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any


def device_key(env: dict[str, Any]) -> str:
    """The throughput table's device name: "h200" for an H200, else the name lowercased."""
    name = str(env.get("device", "unknown"))
    for key in ("H200", "H100", "A100"):
        if key in name:
            return key.lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


# The paper preset's band (multiply-adds at 224 px): which architectures a paper-224 row is for.
PAPER_FLOPS = "[340_000_000, 400_000_000]"


def _row(device: str, kind: str, name: str, rate: float, date: str, by: str, **fields: str) -> str:
    """One [[rows]] entry; `fields` are further keys, their values as TOML text."""
    return "\n".join(
        [
            "[[rows]]",
            f'device = "{device}"',
            f'kind = "{kind}"',
            f'name = "{name}"',
            *(f"{key} = {value}" for key, value in fields.items()),
            f"images_per_s = {rate:.1f}",
            'source = "measured"',
            f'date = "{date}"',
            f"by = {json.dumps(by)}",
        ]
    )


def _model_row(device: str, name: str, r: dict[str, Any], date: str, by: str, **extra: str) -> str:
    fields = dict(resolution=str(r.get("resolution", 224)), flops=PAPER_FLOPS, cohort=str(r["k"]))
    return _row(device, "model", name, r["sum_images_per_s"], date, by, **fields, **extra)


def _clean(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if all(r.get(k) == v for k, v in match.items()) and not r["failed"] and not r["diverged"]
    ]


def model_rows(results: dict[str, Any], device: str) -> list[str]:
    env, rows = results["env"], results.get("cohort", [])
    eager = _clean(rows, kind="paper-224", variant="eager", compile=False)
    eager = [r for r in eager if r["loader"] == "MemoryTrainLoader"]
    cohorts = [r for r in eager if r["k"] > 1 or r["first"] == 0]
    if not cohorts:
        return ["# no clean eager paper-224 cohort row: no model row"]
    best = max(cohorts, key=lambda r: r["sum_images_per_s"])
    by = (
        f"benchmarks/gpu.py on {env['device']}: eager cohort of K = {best['k']} (paper preset "
        f"architectures 0-{best['k'] - 1}), {best['images_per_epoch']:,} images at "
        f"{best.get('resolution', 224)} px per "
        f"epoch, bf16, channels_last, batch {results['args']['batch_size']}, "
        f"MFU {best['mfu_matmul']:.1%} of the measured matmul"
    )
    memory = f"{best['mem_per_member_bytes'] / 2**30:.3f}" if "mem_per_member_bytes" in best else ""
    extra = {"memory_gb": memory} if memory else {}
    out = [_model_row(device, "paper-224", best, env["date"], by, **extra)]
    out += _graph_rows(results, device)
    out.append("# paper-224 member image-steps/s by configuration:")
    paper = _clean(rows, kind="paper-224")
    for r in sorted(paper, key=_order):
        if r["k"] > 1 or r["first"] == 0:
            ratio = f" (vs solos {r['vs_solos']:.2f}x)" if "vs_solos" in r else ""
            out.append(f"#   {_describe(r)}: {r['sum_images_per_s']:,.0f}{ratio}")
    return out


def _order(r: dict[str, Any]) -> tuple:
    return (r["loader"] != "MemoryTrainLoader", r["variant"] != "eager", r["compile"], r["k"])


def _describe(r: dict[str, Any]) -> str:
    extra = "" if r["variant"] == "eager" else f" {r['variant']}"
    extra += " compiled" if r["compile"] else ""
    extra += f" on {r['loader']}" if r["loader"] != "MemoryTrainLoader" else ""
    return f"K={r['k']}{extra}"


def _graph_rows(results: dict[str, Any], device: str) -> list[str]:
    """The row of hpc's CUDA-graph stepping (the graphs+streams variant), when it ran; its
    memory is left to the estimate (graph pools keep their activations reserved, which
    `max_memory_allocated` does not count)."""
    rows = _clean(results.get("cohort", []), kind="paper-224", variant="graphs+streams")
    rows = [r for r in rows if r["loader"] == "MemoryTrainLoader" and not r["compile"]]
    if not rows:
        return []
    best = max(rows, key=lambda r: r["sum_images_per_s"])
    by = (
        f"benchmarks/gpu.py variant graphs+streams on {results['env']['device']}: K = "
        f"{best['k']}, each member's forward+backward a CUDA graph on a stream of its own "
        "(hpc.worker.graphs), bf16, channels_last"
    )
    return [
        _model_row(device, "paper-224-graphs", best, results["env"]["date"], by, cuda_graphs="true")
    ]


def loader_rows(results: dict[str, Any], device: str) -> list[str]:
    env = results["env"]
    full = [
        r
        for r in results.get("ffcv", [])
        if r["loader"] == "anysweep" and r["workers"] == r["cpus"]
    ]
    if not full:
        return ["# no row of anysweep's FFCV loader with every CPU core: no loader row"]
    r = full[0]
    by = (
        f"benchmarks/gpu.py on {env['device']}: anysweep's FFCV loader, {r['workers']} workers, "
        f"{r['images']:,} synthetic photos {r['width']}x{r['height']} (JPEG q90, "
        f"{r['kb_per_image']:.0f} KB each) -> rrc {r['resolution']} + flip, to the device"
    )
    name = f"ffcv-jpeg-{r['resolution']}"
    fields = dict(backend='"ffcv"', encoding='"jpg"', resolution=str(r["resolution"]))
    out = [_row(device, "loader", name, r["images_per_s"], env["date"], by, **fields)]
    for other in results.get("ffcv", []):
        if other is not r:
            out.append(
                f"#   {other['loader']}, {other['workers']} workers: "
                f"{other['images_per_s']:,.0f} images/s ({other['per_worker']:,.0f} per worker)"
            )
    return out + overlap_lines(results, r["images_per_s"])


def overlap_lines(results: dict[str, Any], loader_rate: float) -> list[str]:
    """Did the FFCV-fed cohorts run at min(loading, training) (overlap) or slower?"""
    rows = results.get("cohort", [])
    out = []
    for fed in _clean(rows, kind="paper-224", variant="eager", compile=False):
        if fed["loader"] == "MemoryTrainLoader":
            continue
        same = [
            r
            for r in _clean(
                rows,
                kind="paper-224",
                variant="eager",
                compile=False,
                k=fed["k"],
                first=fed["first"],
                loader="MemoryTrainLoader",
            )
        ]
        if not same:
            continue
        bound = min(loader_rate, same[0]["member_images_per_s"])
        out.append(
            f"# FFCV-fed paper-224 K={fed['k']}: {fed['member_images_per_s']:,.0f} images/s per "
            f"member against min(loader {loader_rate:,.0f}, training "
            f"{same[0]['member_images_per_s']:,.0f}) = {bound:,.0f}: "
            f"{fed['member_images_per_s'] / bound:.0%} of full overlap"
        )
    return out


def toml_rows(results: dict[str, Any], device: str | None = None) -> str:
    key = device or device_key(results["env"])
    return "\n\n".join(["\n".join(model_rows(results, key)), "\n".join(loader_rows(results, key))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="gpu_results.json of a run")
    p.add_argument("--device-key", help="the device's name in the table (default: from the run)")
    args = p.parse_args(argv)
    if not args.results.is_file():
        p.error(f"{args.results}: no such file (gpu.py writes gpu_results.json to $OUT)")
    print(toml_rows(json.loads(args.results.read_text()), args.device_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
