"""A sticky CUDA error (every later CUDA call of the process fails) fails the cell that hit it
once and stops the chunk, so the cells after it keep their attempts. No GPU here: the
decision is tested on injected errors, and the chunk on CPU with a device that 'breaks'."""

from __future__ import annotations

import shutil

import pytest
import torch

import hpc.worker.cell as cell_module
import hpc.worker.chunk as chunk_module
from anynet.arch import Architecture
from hpc.scheduling.manifest import write_manifest
from hpc.study.layout import PACK_SUFFIX, cell_paths
from hpc.study.packs import stored
from hpc.study.recipe import Recipe
from hpc.worker import main, run_chunk
from hpc.worker.device import DeviceLost, device_lost, is_cuda_error
from hpc.worker.train import CellRun
from loaders.prepare import prepare
from loaders.registry import get_dataset

SPEC = get_dataset("digits", resolution=8)
RECIPE = Recipe(epochs=1, batch_size=64, base_lr=1.0, test_batch_size=512)
ARCH = Architecture(
    depths=(1, 1),
    widths=(8, 16),
    bottleneck_ratios=(1.0, 1.0),
    group_widths=(8, 8),
    stem_width=8,
    stem="small",
)
ILLEGAL = "CUDA error: an illegal memory access was encountered"


def _works(device: str) -> None:
    return None


def _broken(device: str) -> BaseException:
    return torch.AcceleratorError(ILLEGAL)


def test_a_sticky_cuda_error_loses_the_device_by_its_message_alone():
    assert device_lost("cuda", torch.AcceleratorError(ILLEGAL), check=_works)
    assert device_lost(
        "cuda:1", RuntimeError(f"{ILLEGAL}\nCompile with TORCH_USE_CUDA_DSA"), _works
    )
    assert device_lost("cuda", RuntimeError("CUDA error: device-side assert triggered"), _works)


def test_any_failure_after_which_the_probe_fails_loses_the_device():
    cudnn = RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
    assert device_lost("cuda", cudnn, check=_broken)
    assert device_lost("cuda", ValueError("the loss is a tensor of the wrong shape"), _broken)
    assert not device_lost("cuda", cudnn, check=_works)


def test_errors_the_device_survives_do_not_lose_it():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert not device_lost("cuda", oom, check=_works)
    assert not device_lost("cuda", ValueError("group width 3 does not divide 8"), _works)
    # On the CPU nothing is sticky, whatever the message says.
    assert not device_lost("cpu", torch.AcceleratorError(ILLEGAL), check=_broken)


def test_a_cuda_error_is_found_through_the_errors_it_caused():
    try:
        try:
            raise torch.AcceleratorError(ILLEGAL)
        except RuntimeError as inner:
            raise ValueError("evaluation failed") from inner
    except ValueError as outer:
        assert is_cuda_error(outer) and device_lost("cuda", outer, check=_works)
    assert not is_cuda_error(ValueError("a plain bug"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    prepare(SPEC, path, progress=False)
    return path


def _manifest(root, data_dir, cohort=1):
    shutil.copytree(data_dir, root / "data")
    path = root / "jobs" / "0.json"
    cells = [(0, 0, ARCH), (1, 0, ARCH), (2, 0, ARCH)]
    write_manifest(
        path, study_dir=root, dataset=SPEC, recipe=RECIPE, cells=cells, device="cpu", cohort=cohort
    )
    return path


@pytest.fixture
def breaking(monkeypatch):
    """The 'device' breaks at step 3 of the training that reaches it first: that step and
    every later one of this process raise CUDA's illegal memory access; the worker decides as
    it would on CUDA, with a probe that fails once the device broke."""
    state = {"steps": 0, "broken": False}
    real_step = CellRun.step

    def step(self, inputs, labels, number):
        state["steps"] += 1
        if state["broken"] or state["steps"] == 3:
            state["broken"] = True
            raise torch.AcceleratorError(ILLEGAL)
        return real_step(self, inputs, labels, number)

    def probe(device):
        return torch.AcceleratorError(ILLEGAL) if state["broken"] else None

    monkeypatch.setattr(CellRun, "step", step)
    monkeypatch.setattr(cell_module, "device_lost", lambda d, exc: device_lost("cuda", exc, probe))
    return monkeypatch


def _result(root, arch_id):
    """The cell's latest record in the chunk's pack, None when it has none."""
    found = [
        s.result
        for pack in sorted((root / "results" / "digits").glob(f"*{PACK_SUFFIX}"))
        for s in stored(pack)
        if s.result.arch_id == arch_id
    ]
    return found[-1] if found else None


def test_a_sticky_error_fails_its_cell_once_and_stops_the_chunk(tmp_path, data_dir, breaking):
    manifest = _manifest(tmp_path, data_dir)
    with pytest.raises(DeviceLost, match="unusable after cell digits/0-s0 failed"):
        run_chunk(manifest)
    failed = _result(tmp_path, 0)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "AcceleratorError: CUDA error: an illegal memory access" in failed.error
    assert _result(tmp_path, 1) is None and _result(tmp_path, 2) is None
    assert not cell_paths(tmp_path, "digits", 1, 0).log.exists()  # never started
    breaking.undo()  # the next launch: a fresh process with a working device
    again = run_chunk(manifest)
    assert [(r.arch_id, r.status, r.attempts) for r in again] == [
        (0, "done", 2),
        (1, "done", 1),
        (2, "done", 1),
    ]


def test_the_worker_exits_1_naming_the_cell_that_lost_the_device(
    tmp_path, data_dir, breaking, capsys
):
    assert main([str(_manifest(tmp_path, data_dir))]) == chunk_module.EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert "cpu is unusable after cell digits/0-s0 failed (AcceleratorError" in err
    assert "the next launch retries its other cells in a fresh process" in err


def test_in_a_cohort_only_the_member_that_broke_the_device_is_charged(tmp_path, data_dir, breaking):
    # Step 3 is member 2's first step of batch 1 (members 0, 1, 2 step in turn): member 2
    # breaks the device; in the next batch members 0 and 1 meet the broken device.
    manifest = _manifest(tmp_path, data_dir, cohort=3)
    with pytest.raises(DeviceLost, match="after cell digits/2-s0 failed"):
        run_chunk(manifest)
    assert (_result(tmp_path, 2).status, _result(tmp_path, 2).attempts) == ("failed", 1)
    assert _result(tmp_path, 0) is None and _result(tmp_path, 1) is None
    for arch_id in (0, 1):
        log = cell_paths(tmp_path, "digits", arch_id, 0).log.read_text()
        assert "stopped (DeviceLost)" in log and "failed (attempt" not in log
