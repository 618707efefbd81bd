"""Where and in what precision to train: DDP set-up, mixed precision, the ``--dtype auto`` probe and the matmul
peak that MFU is measured against. Device and dtype names (``pick_device``, ``torch_dtype``) are
``ownlm.runtime.device``'s, the one table for training and inference.

Mixed precision: bf16 autocast (CUDA with bf16, and CPU — AMX/AVX512-BF16 CPUs multiply bf16 several times
faster than fp32), fp16 autocast + ``GradScaler`` on CUDA without bf16. ``--dtype auto`` on CPU *measures*:
bf16 pays off for wide matrices and loses to fp32 on small ones (casts cost more than the matmuls save), so a
few timed forward/backward passes of the actual model and batch decide.
"""

from __future__ import annotations

import contextlib
import os
import time

from ownlm.errors import UserError
from ownlm.runtime.device import pick_device, torch_dtype  # noqa: F401 - the one device picker and dtype table

DTYPES = ("auto", "fp32", "bf16", "fp16")  # the names of ownlm.runtime.device.DTYPE


def ddp_info() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; (0, 0, 1) when not under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world


def ddp_setup(device) -> None:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)


def ddp_cleanup() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def check_dtype(name: str, device) -> None:
    import torch

    if name == "fp16" and device.type != "cuda":
        raise UserError(f"--dtype fp16 needs a CUDA GPU (this run is on {device.type}); use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--dtype bf16: this GPU has no bf16 support; use fp16 (with loss scaling) or fp32")


def autocast(device, dtype: str):
    """A context manager running the forward pass in ``dtype`` (nothing for fp32)."""
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch_dtype(dtype))


def choose_dtype(requested: str, device, step_fn=None, log=print) -> str:
    """Resolve ``--dtype``. ``auto``: bf16 (else fp16) on CUDA, fp32 on MPS; on CPU the faster of fp32 and
    bf16 for this model, timed with ``step_fn(dtype)`` (one forward+backward pass; it must not change state).
    """
    import torch

    if requested != "auto":
        check_dtype(requested, device)
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu" or step_fn is None:
        return "fp32"
    times = {}
    for name in ("fp32", "bf16"):
        try:
            t = time.perf_counter()
            step_fn(name)  # warm-up: first call pays for allocations and kernel selection
            reps = 2 if time.perf_counter() - t < 1.0 else 1  # big models: one timed pass is enough
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                step_fn(name)
                best = min(best, time.perf_counter() - t)
            times[name] = best
        except RuntimeError:  # e.g. no bf16 kernels on this CPU
            continue
    choice = min(times, key=times.get)
    log("dtype auto: " + ", ".join(f"{k} {v * 1e3:.0f} ms/step" for k, v in times.items()) + f" -> {choice}")
    return choice


_PEAK: dict[str, float] = {}


def matmul_peak_flops(device, dtype: str = "bf16", seconds: float = 0.3) -> float:
    """Measured matmul throughput (FLOP/s) of ``device`` in ``dtype``: the denominator of MFU.

    >>> matmul_peak_flops(torch.device("cpu"), "bf16") > 1e9  # doctest: +SKIP
    True
    """
    import torch

    key = f"{device}:{dtype}:{torch.get_num_threads()}"
    if key in _PEAK:
        return _PEAK[key]
    n = 4096 if device.type == "cuda" else 1024
    gen = torch.Generator(device=device).manual_seed(0)  # a private generator: training's RNG stays untouched
    a = torch.rand(n, n, device=device, generator=gen).to(torch_dtype(dtype))
    b = torch.rand(n, n, device=device, generator=gen).to(torch_dtype(dtype))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    (a @ b).sum().item()
    reps, t0 = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        sync()
        if time.perf_counter() - t0 >= seconds:
            break
    _PEAK[key] = 2 * n**3 * reps / (time.perf_counter() - t0)
    return _PEAK[key]


def peak_flops(device) -> float:
    """The MFU denominator: the faster of the measured bf16 and fp32 matmul peaks (bf16 where it has kernels)."""
    import torch

    best = 0.0
    for dtype in ("bf16", "fp32"):
        if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        try:
            best = max(best, matmul_peak_flops(device, dtype))
        except RuntimeError:
            continue
    return best


def is_oom(err: BaseException) -> bool:
    """Out of memory, on any device (CUDA raises OutOfMemoryError, CPU a RuntimeError or MemoryError)."""
    if isinstance(err, MemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)
