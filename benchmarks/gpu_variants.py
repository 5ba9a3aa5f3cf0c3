"""Ways to make a cohort's members overlap on CUDA, measured by benchmarks/gpu_cohort.py
without changing hpc: cohort members (subclasses of `hpc.worker.train.CellRun`, stepped by hpc's
own driver `hpc.worker.cohort.train_cohort`) that step differently.

- "streams": each member steps on its own CUDA stream, from the one driver thread. The batch
  is made on the default stream, which each member's stream waits for; the loader's blocking
  host-to-device copies then no longer wait for the members' work either.
- "graphs": each member's forward and backward pass is captured once in a CUDA graph (after
  3 warm-up passes on a side stream: cuDNN autotuning, lazy allocations) and replayed on
  every batch, so its ~10^3 kernel launches cost one; the optimiser and the learning-rate
  schedule stay eager, so the training is the same (the warm-up passes add 3 updates of the
  BatchNorm running statistics). The members' graphs share one memory pool: they replay in
  turn on one stream.
- "graphs+streams": both; each graph has its own pool, since they may run at once.
On the CPU (--smoke) every variant steps as hpc does: there is no stream or graph to use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from hpc.worker.train import DIVERGENCE_CHECK_STEPS, CellRun

WARMUP_PASSES = 3


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream | None, *tensors: torch.Tensor) -> Iterator[None]:
    """Run the block on `stream` (None: where it is) after the work queued so far on the
    current stream, which made `tensors`; their memory is kept until `stream` is done."""
    if stream is None:
        yield
        return
    stream.wait_stream(torch.cuda.current_stream(stream.device))
    for t in tensors:
        t.record_stream(stream)
    with torch.cuda.stream(stream):
        yield


class StreamRun(CellRun):
    """A member whose steps run on a CUDA stream of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        with on_stream(self.stream, inputs, labels):
            return super().step(inputs, labels, step)

    def end_training(self, data_seconds: float) -> bool:
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return super().end_training(data_seconds)


class GraphRun(StreamRun):
    """A member whose forward and backward pass is a CUDA graph, replayed on each batch."""

    use_stream = False
    shared_pool: Any = None  # one pool for the members of a cohort that replay in turn

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.use_stream:
            self.stream = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.bf16 = self.recipe.precision in ("bf16", "auto")
        self.capture_seconds = 0.0

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        if self.device.type != "cuda":
            return CellRun.step(self, inputs, labels, step)
        start = time.perf_counter()
        with on_stream(self.stream, inputs, labels):
            if self.graph is None:
                self._capture(inputs, labels)
            self.static_x.copy_(inputs)
            self.static_y.copy_(labels)
            self.graph.replay()  # type: ignore[union-attr]
            self.optimizer.step()
            self.scheduler.step()
            count = labels.shape[0]
            self.loss_sum += self.static_loss.detach() * count
            self.wrong += (self.static_logits.detach().argmax(dim=1) != self.static_y).sum()
            self.images += count
            if step % DIVERGENCE_CHECK_STEPS == 0 and not self._check(step):
                return False
        self.compute_seconds += time.perf_counter() - start
        return True

    def _forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        # A graph replays the weights' casts to bf16 too: autocast must not cache them.
        with torch.autocast("cuda", torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            logits = self.model(self.static_x)
            loss = self.criterion(logits, self.static_y)
        loss.backward()
        return logits, loss

    def _capture(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        start = time.perf_counter()
        self.static_x, self.static_y = inputs.detach().clone(), labels.detach().clone()
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                self.optimizer.zero_grad(set_to_none=True)
                self._forward_backward()
        current.wait_stream(side)
        # Gradients made inside the capture live in its pool: every replay writes them anew.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        pool = None if self.use_stream else type(self).shared_pool
        with torch.cuda.graph(graph, pool=pool):
            self.static_logits, self.static_loss = self._forward_backward()
        self.graph = graph
        self.capture_seconds = time.perf_counter() - start


class GraphStreamRun(GraphRun):
    use_stream = True


def member_class(variant: str) -> type[CellRun]:
    """The cohort member of a variant; a fresh GraphRun class per cohort (its shared pool)."""
    if variant == "eager":
        return CellRun
    if variant == "streams":
        return StreamRun
    if variant == "graphs+streams":
        return GraphStreamRun
    if variant == "graphs":
        pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
        return type("SharedPoolGraphRun", (GraphRun,), {"shared_pool": pool})
    raise ValueError(f"unknown variant {variant!r}; valid: eager, streams, graphs, graphs+streams")


VARIANTS = ("streams", "graphs", "graphs+streams")
