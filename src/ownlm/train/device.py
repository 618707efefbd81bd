"""Where and in what precision to train: DDP set-up, mixed precision, ``--dtype auto`` and the matmul
peak that MFU is measured against. Device and dtype names (``pick_device``, ``torch_dtype``) are
``ownlm.runtime.device``'s, the one table for training and inference.

Mixed precision: bf16 autocast (CUDA with bf16, and CPU — AMX/AVX512-BF16 CPUs multiply bf16 several times
faster than fp32), fp16 autocast + ``GradScaler`` on CUDA without bf16. ``--dtype auto`` decides by what the
hardware can do, never by a timing race (which made the choice, and the run, depend on the machine's load):
bf16 on a GPU with bf16, fp16 on one without, bf16 on a CPU with bf16 matmul instructions (AMX or
AVX512-BF16, read from the CPU's flags), fp32 on other CPUs and on Apple's MPS.
"""

from __future__ import annotations

import contextlib
import os
import time
from functools import cache
from typing import get_args

from ownlm.errors import UserError
from ownlm.runtime.device import DTYPE, pick_device, torch_dtype  # noqa: F401 - the one device picker and dtype table

DTYPES = get_args(DTYPE)  # ("auto", "fp32", "bf16", "fp16"): the --dtype names, from the one table


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


def ddp_cleanup(barrier: bool = False) -> None:
    """Leave the process group. ``barrier``: first wait until every process gets here (after a run that ended
    well), so that none tears its connections down while another is still in a collective or about to finish
    one (gloo aborts such a process: "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        if barrier:
            dist.barrier()
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


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of the bf16 matmul instructions


@cache
def cpu_bf16_flag() -> str | None:
    """The CPU's bf16 matmul instruction set (``amx_bf16`` or ``avx512_bf16``), or None when it has none.

    Read from ``/proc/cpuinfo``'s flags (Linux); elsewhere from what PyTorch's own CPU probe reports (None where
    it reports nothing). Tests replace this function to choose a CPU.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is not None:
        return next((name for name in CPU_BF16_FLAGS if name in flags), None)
    import torch

    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    for name, attr in probes.items():  # private but stable probes inductor uses; absent ones count as no
        probe = getattr(getattr(torch._C, "_cpu", None), attr, None)
        if probe is not None and probe():
            return name
    return None


def auto_dtype(device) -> tuple[str, str]:
    """``--dtype auto``'s choice for ``device`` and the reason, from the hardware's capabilities alone.

    >>> auto_dtype(torch.device("mps"))  # doctest: +SKIP
    ('fp32', 'MPS')
    """
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} has bf16"
        return "fp16", f"{torch.cuda.get_device_name(device)} has no bf16; fp16 with loss scaling"
    if device.type == "cpu":
        flag = cpu_bf16_flag()
        return ("bf16", flag) if flag else ("fp32", "this CPU has no AMX or AVX512-BF16")
    return "fp32", device.type.upper()


def choose_dtype(requested: str, device, log=print) -> str:
    """Resolve ``--dtype``: an explicit name is checked against the device; ``auto`` is ``auto_dtype``'s
    choice, said in the log as ``dtype auto -> bf16 (avx512_bf16)``."""
    if requested != "auto":
        check_dtype(requested, device)
        return requested
    choice, reason = auto_dtype(device)
    log(f"dtype auto -> {choice} ({reason})")
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


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt`` for each (parameter, value); False where there is no glibc (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(bool(libc.mallopt(param, value)) for param, value in settings)
    except (OSError, AttributeError):
        return False


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # from glibc's malloc.h


def return_freed_memory() -> bool:
    """Ask glibc to give freed memory back to the system at once: allocations of 64 KiB and more get their own
    mapping, unmapped when freed, and the heap is trimmed on every free. Training with activation checkpointing
    frees and reallocates the same large tensors each block; with glibc's defaults the freed blocks stay in the
    process (SmolLM2-135M LoRA at 8 x 512: 2.1 GB resident instead of 1.2 GB). The price is speed: every large
    tensor is then a fresh mapping whose pages the kernel faults in and zeroes, about half the step's time in that
    run (~250 against ~500 tokens/s). Returns False where there is no glibc (macOS, Windows, musl): nothing changes
    there."""
    return _mallopt((M_MMAP_THRESHOLD, 65536), (M_MMAP_MAX, 65536), (M_TRIM_THRESHOLD, 0))


def keep_freed_memory() -> bool:
    """The opposite, for speed: large blocks come from the heap and freed ones stay for the next step.

    With glibc's defaults every allocation over 32 MiB (the logits, the embedding's gradient, attention's
    buffers on the 124M shape) is a fresh mapping, so each step pays the kernel to fault in and zero ~1 GB of
    new pages, then to unmap them: ~270,000 page faults and a seventh of the step's CPU time at batch 4 x 256
    (``bench/ab_train_step.py malloc``). A training step allocates the same sizes every time, so the heap settles
    at the peak after the first steps; peak memory grows by a few percent. CPU training only (CUDA has its own
    caching allocator); False where there is no glibc."""
    return _mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**30))
