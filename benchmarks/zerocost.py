"""Time the "Ranking before training" analysis on one core: a synthetic study (the default
13 datasets, 2 seeds of training and of scores) with every score table, 1,000 bootstrap
resamples and 1,000 permutations, as `anysweep analyze` runs it.

    .venv/bin/python benchmarks/zerocost.py [--architectures 500]
"""

from __future__ import annotations

import os

# One core: set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.frame import open_results  # noqa: E402
from analysis.synthetic import synthetic_results  # noqa: E402
from analysis.synthetic_scores import synthetic_scores  # noqa: E402
from analysis.zerocost import analyze_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        truth = synthetic_results(
            Path(folder) / "results.h5", architectures=args.architectures, seeds=2, curves=False
        )
        synthetic_scores(folder, truth, seeds=2)
        study = open_results(folder)
        errors = study.errors()
        start = time.perf_counter()
        result = analyze_scores(
            study, errors, bootstrap=args.resamples, permutations=args.resamples
        )
        seconds = time.perf_counter() - start
    assert result is not None
    pairs = len(result.correlations)
    print(
        f"{args.architectures} architectures x {errors.shape[1]} datasets, {pairs} (dataset, "
        f"score) pairs, 2 seeds of scores, {args.resamples} resamples and permutations: "
        f"{seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
