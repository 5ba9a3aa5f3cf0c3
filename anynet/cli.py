"""`anysweep arch describe|sample`: the complexity of one architecture, and a sampled list of
architectures written as CSV or JSON. Imports no torch."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from anynet.arch import STEMS, Architecture
from anynet.complexity import complexity
from anynet.spaces import SPACE_NAMES, get_space

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``describe`` and ``sample`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="arch_command", metavar="{describe,sample}")
    sub.required = True

    d = sub.add_parser("describe", help="flops, params and acts of one architecture")
    d.add_argument("--depths", type=int, nargs="+", required=True, help="blocks per stage")
    d.add_argument("--widths", type=int, nargs="+", required=True, help="width per stage")
    d.add_argument(
        "--bottleneck-ratios",
        type=float,
        nargs="+",
        required=True,
        help="b per stage: bottleneck width = width / b",
    )
    d.add_argument(
        "--group-widths",
        type=int,
        nargs="+",
        required=True,
        help="channels per group of the 3x3 conv, per stage",
    )
    d.add_argument("--stem-width", type=int, default=32)
    d.add_argument(
        "--stem",
        choices=STEMS,
        default="imagenet",
        help="imagenet: 3x3 conv stride 2; small: stride 1, for images <= 64 px",
    )
    d.add_argument("--se-ratio", type=float, default=0.0, help="0 turns SE off")
    _common(d)
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = sub.add_parser("sample", help="sample architectures under complexity constraints")
    s.add_argument("--space", choices=SPACE_NAMES, default="anynetx_a")
    s.add_argument("-n", type=int, default=500, help="number of distinct architectures")
    s.add_argument("--seed", type=int, default=0)
    _common(s)
    for key in ("flops", "params", "acts"):
        s.add_argument(
            f"--{key}",
            type=_range,
            metavar="LO:HI",
            help=f"inclusive range of {key}, e.g. 340M:400M (suffixes K, M, G)",
        )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a range of the design space, e.g. max_depth=3 or "
        "group_widths=8,16 (repeatable)",
    )
    s.add_argument(
        "--max-draws",
        type=int,
        help="give up after this many draws (default: max(2,000,000, 1,000 n))",
    )
    s.add_argument("--out", type=Path, help="write FILE.csv or FILE.json instead of stdout CSV")


def run(args: argparse.Namespace) -> int:
    """Runs ``anysweep arch describe|sample``; returns the exit code (2 for bad input)."""
    try:
        if args.arch_command == "describe":
            return _describe(args)
        return _sample(args)
    except ValueError as err:
        print(f"anysweep arch {args.arch_command}: error: {err}", file=sys.stderr)
        return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels")
    p.add_argument("--classes", type=int, default=1000, help="number of classes")


def _range(text: str) -> tuple[float, float]:
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LO:HI, e.g. 340M:400M, got {text!r}")
    lo, hi = (_count(p) for p in parts)
    if lo > hi:
        raise argparse.ArgumentTypeError(f"LO must not exceed HI, got {text!r}")
    return lo, hi


def _count(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative number with an optional K, M or G suffix, got {text!r}"
        )
    return float(m.group(1)) * _SUFFIX[m.group(2).upper()]


def _describe(args: argparse.Namespace) -> int:
    _positive(args, "resolution", "classes")
    raw = Architecture.raw(
        depths=args.depths,
        widths=args.widths,
        bottleneck_ratios=args.bottleneck_ratios,
        group_widths=args.group_widths,
        stem_width=args.stem_width,
        stem=args.stem,
        se_ratio=args.se_ratio,
    )
    arch = raw.adjusted()
    cx = complexity(arch, args.resolution, args.classes)
    if args.json:
        out = {
            "arch": arch.to_dict(),
            "name": arch.name,
            "adjusted": arch != raw,
            "requested": raw.to_dict(),
            "resolution": args.resolution,
            "classes": args.classes,
            "flops": cx.flops,
            "params": cx.params,
            "acts": cx.acts,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"architecture  {arch.name}")
    if arch != raw:
        print(f"adjusted from {raw.name} (group widths must divide bottleneck widths)")
    print(f"stem          {arch.stem}, width {arch.stem_width}; se_ratio {arch.se_ratio:g}")
    print("stage  depth  width  bottleneck_ratio  group_width")
    for i, row in enumerate(
        zip(arch.depths, arch.widths, arch.bottleneck_ratios, arch.group_widths, strict=True)
    ):
        print(f"{i + 1:>5}  {row[0]:>5}  {row[1]:>5}  {row[2]:>16g}  {row[3]:>11}")
    print(f"at {args.resolution} px, {args.classes} classes:")
    print(f"flops   {cx.flops / 1e6:.2f} MF  ({cx.flops:,} multiply-adds)")
    print(f"params  {cx.params / 1e6:.2f} M  ({cx.params:,})")
    print(f"acts    {cx.acts / 1e6:.2f} M  ({cx.acts:,})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from anynet.sampler import sample

    _positive(args, "resolution", "classes")
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    if args.max_draws is not None and args.max_draws < 1:
        raise ValueError(f"--max-draws must be >= 1, got {args.max_draws}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {str(args.out)!r}")
    space = get_space(args.space, **_overrides(args.overrides))
    samples = sample(
        space,
        args.n,
        seed=args.seed,
        resolution=args.resolution,
        num_classes=args.classes,
        flops=args.flops,
        params=args.params,
        acts=args.acts,
        max_draws=args.max_draws,
        progress=sys.stderr.isatty(),
    )
    archs = [s.arch for s in samples]
    if args.out is not None and args.out.suffix.lower() == ".json":
        text = json.dumps([a.to_dict() for a in archs], indent=1) + "\n"
    else:
        text = _csv(archs, args.resolution, args.classes)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {len(archs)} architectures to {args.out}", file=sys.stderr)
    return 0


def _csv(archs: list[Architecture], resolution: int, classes: int) -> str:
    stages = max(a.num_stages for a in archs)
    header = ["id", "name"]
    for key in ("depth", "width", "bottleneck_ratio", "group_width"):
        header += [f"{key}_{i + 1}" for i in range(stages)]
    header += ["stem", "stem_width", "se_ratio", "flops", "params", "acts"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, a in enumerate(archs):
        cx = complexity(a, resolution, classes)
        row: list[Any] = [i, a.name]
        for values in (a.depths, a.widths, a.bottleneck_ratios, a.group_widths):
            row += [f"{v:g}" for v in values] + [""] * (stages - len(values))
        row += [a.stem, a.stem_width, f"{a.se_ratio:g}", cx.flops, cx.params, cx.acts]
        writer.writerow(row)
    return buf.getvalue()


def _overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values = [_literal(v) for v in value.split(",")]
        # A single value given to a tuple-valued option becomes a 1-tuple in get_space.
        out[key.strip()] = tuple(values) if len(values) > 1 else values[0]
    return out


def _literal(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _positive(args: argparse.Namespace, *keys: str) -> None:
    for key in keys:
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be >= 1, got {getattr(args, key)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anysweep arch", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
