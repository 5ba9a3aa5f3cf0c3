"""Whether a failure left this process's CUDA device unusable.

Some CUDA errors are sticky: after an illegal memory access (seen in cuDNN on an H200), a
device-side assert or a launch failure, every later CUDA call of the process fails with the
same error until the process ends. The cell that hit one is failed (one attempt); the chunk
then stops instead of charging each following cell a failed attempt, and the next launch
retries them in a fresh process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# CUDA's errors that leave the process's context unusable (cudaErrorIllegalAddress,
# LaunchFailure, Assert, HardwareStackError, IllegalInstruction, MisalignedAddress,
# InvalidAddressSpace, InvalidPc, ECCUncorrectable, LaunchTimeout), as their messages read.
STICKY_MESSAGES = (
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "device-side assert triggered",
    "hardware stack error",
    "an illegal instruction was encountered",
    "misaligned address",
    "operation not supported on global/shared address space",
    "invalid program counter",
    "uncorrectable ECC error encountered",
    "the launch timed out and was terminated",
)
# What marks an error as one of CUDA's (or of its libraries) rather than of the code.
CUDA_MARKERS = ("CUDA error", "CUDNN_STATUS_", "cuDNN error", "CUBLAS_STATUS_", "AcceleratorError")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and those it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def is_cuda_error(exc: BaseException) -> bool:
    """An error that CUDA or one of its libraries raised (torch.AcceleratorError, or a
    RuntimeError naming a CUDA, cuDNN or cuBLAS status)."""
    return any(marker in _text(e) for e in _chain(exc) for marker in CUDA_MARKERS)


def is_sticky(exc: BaseException) -> bool:
    """An error whose message is one of CUDA's sticky errors."""
    return any(m in _text(e) for e in _chain(exc) for m in STICKY_MESSAGES)


def probe(device: str) -> BaseException | None:
    """A tiny CUDA operation, synchronised: None when the device still works, else the error."""
    import torch

    try:
        value = torch.ones(1, device=device).add_(1).item()
        torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any error means the device is gone
        return exc
    return None if value == 2.0 else RuntimeError(f"{device}: 1 + 1 gave {value}")


def device_lost(
    device: str,
    exc: BaseException,
    check: Callable[[str], BaseException | None] = probe,
) -> bool:
    """Whether `exc`, raised on `device`, left the device unusable for this process: a
    sticky CUDA error by its message, or any failure after which `check` (the probe) fails.
    A CPU never is; an out-of-memory error is not (the probe passes)."""
    if not device.startswith("cuda"):
        return False
    return is_sticky(exc) or check(device) is not None


class DeviceLost(RuntimeError):
    """The chunk stops: a cell's error left the device unusable for this process. That cell
    is failed (one attempt); the cells after it are retried by the next launch, in a fresh
    process."""
