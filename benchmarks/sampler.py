"""Sampler speed: 500 AnyNetX_A architectures in 360-400 MF at 224 px on one thread, the
vectorised sampler against a plain-Python, pycls-style per-architecture loop.

Run: .venv/bin/python benchmarks/sampler.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import contextlib  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from anynet.arch import Architecture  # noqa: E402
from anynet.complexity import complexity  # noqa: E402
from anynet.sampler import sample  # noqa: E402
from anynet.spaces import get_space  # noqa: E402

N, FLOPS, RES = 500, (360e6, 400e6), 224
BS, GS = (1.0, 2.0, 4.0), (1, 2, 4, 8, 16, 32)


# ---- baseline: one draw at a time, counted layer by layer as pycls does --------------- #


def _log_uniform(rng: np.random.Generator, low: float, high: float, q: float) -> float:
    f = math.exp(-rng.uniform(-math.log(high), -math.log(low - min(q, low / 2))))
    return math.ceil(f / q) * q


def _conv(
    cx: dict, w_in: int, w_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False
) -> dict:
    h = (cx["h"] - 1) // stride + 1
    flops = cx["flops"] + k * k * w_in * w_out * h * h // groups + (w_out if bias else 0)
    params = cx["params"] + k * k * w_in * w_out // groups + (w_out if bias else 0)
    return {"h": h, "flops": flops, "params": params, "acts": cx["acts"] + w_out * h * h}


def _bn(cx: dict, w: int) -> dict:
    return {**cx, "params": cx["params"] + 2 * w}


def reference_complexity(ds, ws, bs, gs, res=RES, nc=1000, stem="imagenet", stem_w=32, se_r=0.0):
    """pycls's AnyNet.complexity, layer by layer, in plain Python."""
    cx = {"h": res, "flops": 0, "params": 0, "acts": 0}
    cx = _bn(_conv(cx, 3, stem_w, 3, 2 if stem == "imagenet" else 1), stem_w)
    w_in = stem_w
    for d, w, b, g in zip(ds, ws, bs, gs, strict=True):
        for i in range(d):
            stride, wi = (2, w_in) if i == 0 else (1, w)
            if wi != w or stride != 1:
                h = cx["h"]
                cx = _bn(_conv(cx, wi, w, 1, stride), w)
                cx["h"] = h
            wb = int(round(w * (1 / b)))
            cx = _bn(_conv(cx, wi, wb, 1), wb)
            cx = _bn(_conv(cx, wb, wb, 3, stride, wb // g), wb)
            if se_r:
                h, se = cx["h"], int(round(wi * se_r))
                cx["h"] = 1
                cx = _conv(_conv(cx, wb, se, 1, bias=True), se, wb, 1, bias=True)
                cx["h"] = h
            cx = _bn(_conv(cx, wb, w, 1), w)
        w_in = w
    cx["flops"] += w_in * nc + nc
    cx["params"] += w_in * nc + nc
    cx["acts"] += nc
    return cx


def _reference_cx(arch: Architecture) -> dict:
    return reference_complexity(
        arch.depths,
        arch.widths,
        arch.bottleneck_ratios,
        arch.group_widths,
        stem=arch.stem,
        stem_w=arch.stem_width,
        se_r=arch.se_ratio,
    )


def _adjust(ws, bs, gs):
    """pycls's adjust_block_compatibility with bottleneck multipliers 1/b."""
    bms = [1 / b for b in bs]
    vs = [int(max(1, w * bm)) for w, bm in zip(ws, bms, strict=True)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs, strict=True)]
    ms = [int(np.lcm(g, int(bm))) if bm > 1 else g for g, bm in zip(gs, bms, strict=True)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms, strict=True)]
    return [int(v / bm) for v, bm in zip(vs, bms, strict=True)], gs


def reference_sample(n: int, seed: int = 0) -> tuple[list[Architecture], int]:
    rng = np.random.default_rng(seed)
    found: dict[Architecture, None] = {}
    draws = 0
    while len(found) < n:
        draws += 1
        ds = [int(_log_uniform(rng, 1, 16, 1)) for _ in range(4)]
        ws = [int(_log_uniform(rng, 8, 1024, 8)) for _ in range(4)]
        bs = [BS[i] for i in rng.integers(0, len(BS), 4).tolist()]
        gs = [GS[i] for i in rng.integers(0, len(GS), 4).tolist()]
        ws, gs = _adjust(ws, bs, gs)
        if FLOPS[0] <= reference_complexity(ds, ws, bs, gs)["flops"] <= FLOPS[1]:
            found.setdefault(Architecture(tuple(ds), tuple(ws), tuple(bs), tuple(gs)), None)
    return list(found), draws


# ---- measurements -------------------------------------------------------------------- #


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    space = get_space("anynetx_a")
    sample(space, 10, flops=FLOPS)  # warm the probability tables

    t_fast, samples = _best(lambda: sample(space, N, flops=FLOPS), 5)
    draws_fast = samples[-1].draw + 1
    t_raw, _ = _best(lambda: _exhaust(space, 500_000), 3)
    t_ref, (ref_archs, draws_ref) = _best(lambda: reference_sample(N), 1)

    mismatches = sum(
        tuple(_reference_cx(s.arch)[k] for k in ("flops", "params", "acts"))
        != tuple(vars(complexity(s.arch)).values())
        for s in samples
    )
    print(
        f"task: {N} distinct AnyNetX_A architectures in {FLOPS[0] / 1e6:.0f}-"
        f"{FLOPS[1] / 1e6:.0f} MF at {RES} px, one thread"
    )
    print(
        f"vectorised : {t_fast:.3f} s for {N} ({draws_fast:,} draws, "
        f"{N / draws_fast:.1%} accepted): {draws_fast / t_fast:,.0f} draws/s end to end, "
        f"{N / t_fast:,.0f} accepted/s"
    )
    print(
        f"             {500_000 / t_raw:,.0f} draws/s drawn, adjusted and counted with no "
        "acceptance"
    )
    print(
        f"reference  : {t_ref:.3f} s for {N} ({draws_ref:,} draws, {N / draws_ref:.1%} "
        f"accepted): {draws_ref / t_ref:,.0f} draws/s, {N / t_ref:,.0f} accepted/s"
    )
    print(
        f"speed-up   : {t_ref / t_fast:.1f}x on the task; target {N} in < 0.25 s: "
        f"{'met' if t_fast < 0.25 else 'MISSED'}"
    )
    print(
        f"counts     : reference and vectorised counters differ on {mismatches} of "
        f"{len(samples)} architectures"
    )


def _exhaust(space, draws: int) -> None:
    with contextlib.suppress(ValueError):  # the range is empty on purpose
        sample(space, 1, flops=(0, 0), max_draws=draws)


if __name__ == "__main__":
    main()
