"""A score task on a worker: every training-free score (anynet.scores) of the rows it lists,
written into its block's score file. Each row's network is its cell's own initialisation
(`cell_seed`), scored on one minibatch of the dataset's training loader: the first batch of
epoch 0 with the row's seed, so every architecture of a dataset sees the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from analysis.schema import ScoreTable
from hpc.study.scores import ScoreTask, read_score_task, store_scores

Minibatch = tuple[torch.Tensor, torch.Tensor]


def score_task(path: Path | str) -> int:
    """Compute the rows of the score task at `path` and store them; returns how many."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from anynet.arch import Architecture
    from anynet.scores import SCORES, compute_scores
    from hpc.worker.train import cell_seed

    task = read_score_task(Path(path))
    torch.set_num_threads(task.threads)
    classes, batches = minibatches(task, sorted({s for _, s in task.rows}))
    values = np.empty((len(task.rows), len(SCORES)))
    for i, (arch_id, seed) in enumerate(
        tqdm(task.rows, desc=f"{task.dataset} scores", disable=None)
    ):
        arch = Architecture.from_dict(task.archs[arch_id])
        init = cell_seed(task.dataset, arch_id, seed)
        scores = compute_scores(arch, classes, 3, batches[seed], init)
        values[i] = [scores[name] for name in SCORES]
    sizes = {len(images) for images, _ in batches.values()}
    table = ScoreTable(
        dataset=task.dataset,
        arch_ids=np.array([a for a, _ in task.rows], dtype=np.int64),
        names=SCORES,
        values=values,
        minibatch_size=min(sizes),
        seeds=np.array([s for _, s in task.rows], dtype=np.int64),
    )
    store_scores(task, table)
    print(f"{task.dataset}: stored {len(task.rows)} scored networks in {task.target}", flush=True)
    return len(task.rows)


def minibatches(task: ScoreTask, seeds: list[int]) -> tuple[int, dict[int, Minibatch]]:
    """The dataset's number of classes and, per seed, the first training batch of epoch 0
    (`[scores] minibatch_size` images, or all of a smaller training set), on the CPU."""
    from loaders.pipelines import build_loaders
    from loaders.prepare import open_prepared
    from loaders.registry import DatasetSpec

    spec = DatasetSpec.from_dict(task.inputs["dataset"])
    prepared = open_prepared(spec, task.data_dir)
    recipe = task.inputs["recipe"]
    train, _ = build_loaders(
        prepared,
        batch_size=int(task.inputs["minibatch_size"]),
        resolution=int(recipe["resolution"]) or spec.resolution,
        device="cpu",
        num_workers=task.threads,
        augment=str(recipe["augment"]),
    )
    return prepared.num_classes, {seed: next(iter(train.epoch(seed, 0))) for seed in seeds}
