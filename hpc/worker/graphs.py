"""Cohort members that overlap on CUDA: each member's forward and backward pass a CUDA graph,
replayed on a stream of its own (`[cluster] cuda_graphs`, a speed-only option). Measured on
an H200 by benchmarks/gpu.py (its variants import these classes): K = 8 paper-band members
summed 9,742 image-steps/s this way against 4,854 stepped eagerly (docs/benchmarks.md, GPU).

- `StreamRun`: a member that steps on its own CUDA stream, from the one driver thread. The
  batch is copied on the current stream, where a loader that reuses its buffers (FFCV) knows
  of the read, and the member's stream waits for that copy.
- `GraphRun`: the member's forward and backward pass is captured once in a CUDA graph (after
  3 warm-up passes on a side stream: cuDNN autotuning, lazy allocations) and replayed on every
  batch, so its ~10^3 kernel launches cost one; the optimiser and the learning-rate schedule
  stay eager. The warm-up's updates of BatchNorm's running statistics are undone, so the
  training is eager's. A batch of another shape than the captured one steps eagerly.
- `GraphStreamRun`: both, each graph with its own memory pool (they may run at once).

Guards: a capture that fails leaves that member stepping eagerly from the batch it failed on
(state as before the warm-up), with the reason in its log; divergence checks, evaluation,
checkpoints, preemption and members leaving the cohort go through `CellRun` as in eager
stepping. On a CPU every class steps exactly as `CellRun` does.
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

    def owned(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The batch copied on the current stream when this member reads it on another: a
        loader's reused buffer is then free when the current stream says so."""
        if self.stream is None:
            return inputs, labels
        return inputs.clone(), labels.clone()

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        inputs, labels = self.owned(inputs, labels)
        with on_stream(self.stream, inputs, labels):
            return super().step(inputs, labels, step)

    def begin_eval(self) -> None:
        # Evaluation runs on the current stream and reads what this member's stream wrote.
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        super().begin_eval()


class GraphRun(StreamRun):
    """A member whose forward and backward pass is a CUDA graph, replayed on each batch."""

    use_stream = False
    shared_pool: Any = None  # one pool for the members of a cohort that replay in turn

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.use_stream:
            self.stream = None
        self.graph: torch.cuda.CUDAGraph | None = None
        # Stepping as CellRun does: no CUDA here, or the capture failed.
        self.eager = self.device.type != "cuda"
        self.bf16 = self.autocast is not contextlib.nullcontext  # as CellRun's autocast
        self.capture_seconds = 0.0

    def step(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        if self.eager or (self.graph is None and not self._try_capture(inputs, labels, step)):
            return super().step(inputs, labels, step)
        if inputs.shape != self.static_x.shape or labels.shape != self.static_y.shape:
            return super().step(inputs, labels, step)  # into the graph's gradients
        start = time.perf_counter()
        inputs, labels = self.owned(inputs, labels)
        with on_stream(self.stream, inputs, labels):
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
        with torch.autocast(
            self.device.type, torch.bfloat16, enabled=self.bf16, cache_enabled=False
        ):
            logits = self.model(self.static_x)
            loss = self.criterion(logits, self.static_y)
        loss.backward()
        return logits, loss

    def _try_capture(self, inputs: torch.Tensor, labels: torch.Tensor, step: int) -> bool:
        """Capture on this batch; on failure put the member back as it was (weights,
        gradients, BatchNorm statistics) and step eagerly from here, saying why."""
        saved = [b.detach().clone() for b in self.model.buffers()]
        try:
            inputs, labels = self.owned(inputs, labels)
            with on_stream(self.stream, inputs, labels):
                self._capture(inputs, labels)
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
            self.graph, self.eager = None, True
            self.optimizer.zero_grad(set_to_none=True)
            self.say(
                f"CUDA graph capture failed at step {step} ({type(exc).__name__}: {exc}); "
                "this cell steps eagerly from here"
            )
            return False
        finally:
            self._restore(saved)  # the warm-up passes updated BatchNorm's statistics
        # Gradients now live in the graph's pool: an eager step must zero them in place.
        self.grads_to_none = False
        return True

    @torch.no_grad()
    def _restore(self, saved: list[torch.Tensor]) -> None:
        """The model's buffers as they were, written in place (a graph replays into them)."""
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        for buffer, value in zip(self.model.buffers(), saved, strict=True):
            buffer.copy_(value)

    def _capture(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        start = time.perf_counter()
        self.static_x, self.static_y = inputs.detach().clone(), labels.detach().clone()
        self._warm_up()
        # Gradients made inside the capture live in its pool: every replay writes them anew.
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = self._record()
        self.capture_seconds = time.perf_counter() - start

    def _warm_up(self) -> None:
        cuda = self.device.type == "cuda"
        side = torch.cuda.Stream(self.device) if cuda else None
        with on_stream(side):
            for _ in range(WARMUP_PASSES):
                self.optimizer.zero_grad(set_to_none=True)
                self._forward_backward()
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)

    def _record(self) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        pool = None if self.use_stream else type(self).shared_pool
        with torch.cuda.graph(graph, pool=pool):
            self.static_logits, self.static_loss = self._forward_backward()
        return graph


class GraphStreamRun(GraphRun):
    use_stream = True


def member_class(cuda_graphs: bool, device: str) -> tuple[type[CellRun], str]:
    """The class a chunk's cells train with, and what the cell's log says of it ("": nothing
    to say): CUDA graphs on streams where asked for and CUDA is here, else eager stepping."""
    if not cuda_graphs:
        return CellRun, ""
    if not device.startswith("cuda"):
        return (
            CellRun,
            f"cuda_graphs is on but the device is {device}: steps eagerly, as always there",
        )
    return GraphStreamRun, "cuda_graphs: steps as a CUDA graph on a stream of its own"
