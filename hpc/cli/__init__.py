"""`anysweep`: the command line. Each verb lives in the module that owns it, imported only
when that verb runs, so `anysweep status` and `anysweep analyze` never import torch or ffcv."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# verb -> (module, function that adds its arguments, function that runs it, one-line help)
VERBS: dict[str, tuple[str, str, str, str]] = {
    "init": ("hpc.cli.study", "add_init", "run_init", "write a commented study.toml from a preset"),
    "sample": ("hpc.cli.study", "add_sample", "run_sample", "sample the study's architectures"),
    "prepare": ("hpc.cli.study", "add_prepare", "run_prepare", "build every dataset of the study"),
    "score": (
        "hpc.cli.study",
        "add_score",
        "run_score",
        "training-free scores of every architecture on every dataset",
    ),
    "launch": (
        "hpc.cli.study",
        "add_launch",
        "run_launch",
        "submit the missing cells as array jobs",
    ),
    "sbatch": (
        "hpc.cli.study",
        "add_sbatch",
        "run_sbatch",
        "render the plan as sbatch array scripts",
    ),
    "status": ("hpc.cli.study", "add_status", "run_status", "show the study's matrix of cells"),
    "collect": (
        "hpc.cli.study",
        "add_collect",
        "run_collect",
        "merge the cells' results into results.h5",
    ),
    "analyze": ("analysis.cli", "add_arguments", "run", "correlations, figures and the report"),
    "run": (
        "hpc.cli.study",
        "add_run",
        "run_run",
        "sample, prepare, launch, wait, collect, analyze",
    ),
    "demo": (
        "hpc.cli.demo",
        "add_arguments",
        "run",
        "the study in miniature on real data, on this machine",
    ),
    "cancel": (
        "hpc.cli.study",
        "add_cancel",
        "run_cancel",
        "cancel the study's queued and running jobs",
    ),
    "clean": ("hpc.cli.study", "add_clean", "run_clean", "delete checkpoints of finished cells"),
    "logs": ("hpc.cli.study", "add_logs", "run_logs", "show the log of one cell"),
    "arch": ("anynet.cli", "add_arguments", "run", "describe or sample architectures"),
}


def _top_parser() -> argparse.ArgumentParser:
    verbs = "\n".join(f"  {verb:<9} {entry[3]}" for verb, entry in VERBS.items())
    return argparse.ArgumentParser(
        prog="anysweep",
        description="Does an architecture ranking transfer beyond ImageNet? Sample, train, compare.",
        epilog=f"commands:\n{verbs}\n\n'anysweep COMMAND --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not args or args[0] in ("-h", "--help"):
        top.print_help()
        return 0 if args else 2
    verb = args[0]
    if verb not in VERBS:
        top.print_usage(sys.stderr)
        print(f"anysweep: unknown command {verb!r}; valid: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    module_name, add_name, run_name, help_text = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"anysweep {verb}", description=help_text)
    getattr(module, add_name)(parser)
    parsed = parser.parse_args(args[1:])
    try:
        return int(getattr(module, run_name)(parsed) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        # Bad input: every package raises these with a message that names the problem and
        # the valid choices. ANYSWEEP_DEBUG=1 shows the traceback instead.
        if os.environ.get("ANYSWEEP_DEBUG"):
            raise
        print(f"anysweep {verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nanysweep: interrupted; run the same command again to continue.", file=sys.stderr)
        return 130
