"""CUDA-graph stepping (`[cluster] cuda_graphs`, hpc.worker.graphs) is speed only: on the CPU
the option does nothing and says so; the graph members' bookkeeping (the replayed step, a
batch of another shape, the warm-up undone, a failed capture falling back to eager) gives
the very numbers of eager stepping. The CPU cannot capture a CUDA graph: `CpuGraph` stands in
for one by replaying the captured pass eagerly, as a graph replays its kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anynet.arch import Architecture
from hpc.scheduling.manifest import read_manifest, write_manifest
from hpc.study.packs import stored
from hpc.study.recipe import Recipe
from hpc.worker import run_chunk
from hpc.worker.cohort import train_cohort
from hpc.worker.graphs import GraphStreamRun, member_class
from hpc.worker.train import CellInterrupted, CellRun, cell_seed
from loaders.pipelines import build_loaders
from loaders.prepare import prepare
from loaders.registry import get_dataset

SPEC = get_dataset("digits", resolution=8, backend="memory")
RECIPE = Recipe(epochs=2, batch_size=64, base_lr=1.0, test_batch_size=512)
MEASURED = ("train_loss", "train_top1_err", "test_top1_err", "test_top5_err")
ARCHS = [
    Architecture(
        depths=(d1, 1),
        widths=(w, 16),
        bottleneck_ratios=(1.0, 1.0),
        group_widths=(8, 8),
        stem_width=8,
        stem="small",
    )
    for d1, w in [(1, 8), (2, 16), (1, 24)]
]


class CpuGraph:
    """Stands in for a captured CUDA graph on the CPU: `replay` runs the captured forward and
    backward pass again on the static batch and writes the gradients into the tensors the
    capture made, whatever `.grad` holds by then, as a graph's kernels do."""

    def __init__(self, run: GraphStreamRun) -> None:
        self.run = run
        self.params = list(run.model.parameters())
        self.grads = [p.grad for p in self.params]  # the capture's gradient tensors

    def replay(self) -> None:
        held = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        self.run.static_logits, self.run.static_loss = self.run._forward_backward()
        for p, static, kept in zip(self.params, self.grads, held, strict=True):
            static.copy_(p.grad)
            p.grad = kept


class CpuGraphRun(GraphStreamRun):
    """A graph member that captures on the CPU (with `CpuGraph`); `fail` makes the capture
    (or its warm-up) raise, as a capture refused on a GPU does."""

    fail: str = ""  # "", "record" or "warm-up"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eager = False
        self.warm_ups, self.warming = 0, False

    def _warm_up(self) -> None:
        self.warming = True
        try:
            super()._warm_up()
        finally:
            self.warming = False

    def _forward_backward(self):
        if self.warming:
            self.warm_ups += 1
            if self.fail == "warm-up" and self.warm_ups == 3:
                raise RuntimeError("operation not permitted when stream is capturing (injected)")
        return super()._forward_backward()

    def _record(self):
        if self.fail == "record":
            raise RuntimeError("CUDA graph capture refused (injected)")
        self.static_logits, self.static_loss = self._forward_backward()
        return CpuGraph(self)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    torch.set_num_threads(1)
    prepared = prepare(SPEC, tmp_path_factory.mktemp("data"), progress=False)
    train, test = build_loaders(
        prepared, batch_size=64, test_batch_size=512, device="cpu", num_workers=1
    )
    return train, test, prepared.num_classes


def _runs(digits, cls, n=3, **kwargs):
    train, _, classes = digits
    return [
        cls(
            a,
            RECIPE,
            seed=0,
            num_classes=classes,
            steps_per_epoch=len(train),
            init_seed=cell_seed("digits", i, 0),
            **kwargs.get("each", lambda i: {})(i),
        )
        for i, a in enumerate(ARCHS[:n])
    ]


def _train(digits, runs, **kwargs):
    train, test, _ = digits
    train_cohort(runs, kwargs.pop("train", train), test, seed=0, **kwargs)
    return [r.outcome() for r in runs]


@pytest.fixture(scope="module")
def eager(digits):
    return _train(digits, _runs(digits, CellRun))


def _same(a, b) -> None:
    for name in MEASURED:
        np.testing.assert_array_equal(a.curves[name], b.curves[name], err_msg=name)
    assert (a.status, a.top1_err, a.top5_err, a.epochs) == (
        b.status,
        b.top1_err,
        b.top5_err,
        b.epochs,
    )


def test_the_option_does_nothing_on_a_cpu_and_says_so() -> None:
    assert member_class(False, "cpu") == (CellRun, "")
    assert member_class(False, "cuda") == (CellRun, "")
    cls, said = member_class(True, "cpu")
    assert cls is CellRun
    assert said == "cuda_graphs is on but the device is cpu: steps eagerly, as always there"
    assert member_class(True, "cuda:1")[0] is GraphStreamRun


def test_a_graph_member_on_a_cpu_steps_as_an_eager_one(digits, eager) -> None:
    runs = _runs(digits, GraphStreamRun)
    assert all(r.eager and r.stream is None for r in runs)
    for ours, theirs in zip(_train(digits, runs), eager, strict=True):
        _same(ours, theirs)


def test_replayed_steps_give_the_numbers_of_eager_steps(digits, eager) -> None:
    runs = _runs(digits, CpuGraphRun)
    outcomes = _train(digits, runs)
    assert all(isinstance(r.graph, CpuGraph) and not r.grads_to_none for r in runs)
    assert [r.warm_ups for r in runs] == [3, 3, 3]  # the warm-up ran, and was undone
    for ours, theirs in zip(outcomes, eager, strict=True):
        _same(ours, theirs)


class Uneven:
    """The digits batches with the last one of each epoch cut short: another shape than the
    captured batch."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed, epoch):
        batches = list(self.loader.epoch(seed, epoch))
        inputs, labels = batches[-1]
        return iter([*batches[:-1], (inputs[:40], labels[:40])])


def test_a_batch_of_another_shape_steps_eagerly_into_the_graphs_gradients(digits) -> None:
    train = Uneven(digits[0])
    theirs = _train(digits, _runs(digits, CellRun, n=2), train=train)
    runs = _runs(digits, CpuGraphRun, n=2)
    for ours, eager in zip(_train(digits, runs, train=train), theirs, strict=True):
        _same(ours, eager)
    assert all(r.static_x.shape[0] == 64 for r in runs)


@pytest.mark.parametrize("where", ["record", "warm-up"])
def test_a_failed_capture_leaves_that_member_eager_with_the_reason_logged(digits, eager, where):
    said: list[str] = []
    runs = _runs(digits, CpuGraphRun, each=lambda i: {"log": said.append} if i == 1 else {})
    runs[1].fail = where
    outcomes = _train(digits, runs)
    assert runs[1].eager and runs[1].graph is None and runs[1].grads_to_none
    assert [r.eager for r in (runs[0], runs[2])] == [False, False]
    reason = "capture refused" if where == "record" else "not permitted when stream is capturing"
    failed = [line for line in said if line.startswith("CUDA graph capture failed at step 1")]
    assert (
        len(failed) == 1 and reason in failed[0] and failed[0].endswith("steps eagerly from here")
    )
    for ours, theirs in zip(outcomes, eager, strict=True):
        _same(ours, theirs)


def test_a_diverging_graph_member_leaves_at_the_step_an_eager_one_would(digits, eager) -> None:
    runs = _runs(digits, CpuGraphRun)
    with torch.no_grad():
        next(runs[1].model.parameters()).fill_(float("nan"))
    outcomes = _train(digits, runs)
    assert (outcomes[1].status, outcomes[1].diverged_epoch, outcomes[1].epochs) == (
        "diverged",
        0,
        0,
    )
    _same(outcomes[0], eager[0])
    _same(outcomes[2], eager[2])


def test_an_interrupted_graph_cohort_resumes_from_its_checkpoints_to_eager_numbers(
    digits, eager, tmp_path
) -> None:
    paths = [tmp_path / f"{i}.pt" for i in range(3)]
    polls: list[int] = []
    steps = len(digits[0])

    def stop_in_second_epoch() -> bool:
        polls.append(1)
        return len(polls) == steps + 1 + 5

    runs = _runs(digits, CpuGraphRun, each=lambda i: {"checkpoint_path": paths[i]})
    with pytest.raises(CellInterrupted, match=f"epoch 2/2 at step 5/{steps}"):
        _train(digits, runs, stop_flag=stop_in_second_epoch)
    resumed = _runs(digits, CpuGraphRun, each=lambda i: {"checkpoint_path": paths[i]})
    outcomes = _train(digits, resumed)
    assert [o.resumed_epoch for o in outcomes] == [1, 1, 1]
    for ours, theirs in zip(outcomes, eager, strict=True):
        _same(ours, theirs)


def test_a_chunk_with_cuda_graphs_on_a_cpu_gives_the_eager_numbers_and_logs_why(tmp_path):
    torch.set_num_threads(1)
    results = {}
    for graphs in (False, True):
        root = tmp_path / str(graphs)
        prepare(SPEC, root / "data", progress=False)
        path = root / "jobs" / "0.json"
        cells = [(i, 0, a) for i, a in enumerate(ARCHS[:2])]
        write_manifest(
            path,
            study_dir=root,
            dataset=SPEC,
            recipe=RECIPE,
            cells=cells,
            device="cpu",
            cohort=2,
            cuda_graphs=graphs,
        )
        assert read_manifest(path).cuda_graphs is graphs
        results[graphs] = run_chunk(path)
        packs = sorted((root / "results" / "digits").glob("*.pack"))
        log = [s.log for p in packs for s in stored(p) if s.result.arch_id == 1][-1]
        assert ("cuda_graphs is on but the device is cpu: steps eagerly" in log) is graphs
    for ours, theirs in zip(results[True], results[False], strict=True):
        assert ours.status == theirs.status == "done"
        for name in MEASURED:
            np.testing.assert_array_equal(ours.curves[name], theirs.curves[name])
