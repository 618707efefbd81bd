"""Device and dtype names, in one place for training, generation, chat and serving.

One table maps every name a flag or a file may use for a floating-point type (``fp32``/``float32``/``f32``,
``bf16``/``bfloat16``, ``fp16``/``float16``/``f16``) to the torch dtype; the flags themselves take the short names
(``DTYPE``). Export's storage types (``f32``, ``f16``, ``q8_0``) are a separate concept — how tensors are written
to a file — but where one names a torch dtype it is the same entry of this table.

>>> torch_dtype("bf16") == torch_dtype("bfloat16")  # doctest: +SKIP
True
>>> pick_device("cpu")  # doctest: +SKIP
device(type='cpu')
"""

from __future__ import annotations

import os
from typing import Literal

from ownlm.errors import UserError

# every accepted name -> the short name; the short name -> torch's attribute name
DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "f32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
                 "fp16": "fp16", "float16": "fp16", "f16": "fp16"}  # fmt: skip
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
PRECISION = Literal[tuple(TORCH_NAMES)]  # the short names ("fp32", "bf16", "fp16"), one per torch dtype
DTYPE = Literal[
    "auto", PRECISION
]  # the --dtype flag of every command that runs the model (auto: by the machine)


def dtype_name(name: str) -> str:
    """The short name of any accepted dtype name: ``dtype_name("bfloat16") == "bf16"``."""
    if name not in DTYPE_ALIASES:
        raise UserError(f"unknown dtype {name!r} (known: {', '.join(DTYPE_ALIASES)})")
    return DTYPE_ALIASES[name]


def torch_dtype(name: str):
    """The torch dtype of any accepted name (``fp32``, ``float32``, ``f32`` ...)."""
    import torch

    return getattr(torch, TORCH_NAMES[dtype_name(name)])


def pick_device(name: str = "auto"):
    """``auto``: CUDA, else Apple MPS, else CPU; under torchrun each process takes ``cuda:LOCAL_RANK``. A device
    that is not there is a ``UserError``.

    >>> pick_device("cpu")  # doctest: +SKIP
    device(type='cpu')
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if name.startswith("cuda:") and not (name[5:].isdigit() and int(name[5:]) < torch.cuda.device_count()):
        raise UserError(
            f"--device {name}: {torch.cuda.device_count()} CUDA GPU(s) visible to PyTorch (cuda:0 ...)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple MPS is not available (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, mps)") from None


def inference_dtype(name: str, device):
    """The weights' dtype for generation and serving. ``auto``: bf16 (else fp16) on CUDA — half the memory
    traffic per token; fp32 elsewhere (exact, and on CPUs small models decode fastest in fp32)."""
    import torch

    if name != "auto":
        return torch_dtype(name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def inference_layout(model, batched: bool = False):
    """Store Linear weights as (in, out) in memory for faster CPU decoding; returns ``model``. Same values and
    shapes (still (out, in), with strides (1, out)), only the memory order changes; meant for a model that is
    only used for inference (training on it works, more slowly).

    A decode step multiplies a few row vectors by every weight matrix. With the weight (out, in) that is one dot
    product per output; stored (in, out) it is a sum of rows scaled by x (GPT-2's own Conv1D layout), which
    streams memory and vectorises across outputs. One row (``generate``, ``chat``): the widening projections
    (c_attn, c_fc, the output head) gain — on a 2-core AVX-512 CPU the 768->50257 head took ~1.3x and 768->3072
    ~1.4x less time — while narrowing ones got slower, so they stay. ``batched`` (``serve``, 8-16 rows): every
    projection of the ``mini`` shape and its head ran 1.5-2x faster, so all of them change.
    """
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.Linear) and (batched or module.out_features > module.in_features):
            w = module.weight  # (out, in); a tied head shares it with wte, whose row gathers do not mind
            w.data = w.data.t().contiguous().t()  # still (out, in), with strides (1, out)
    return model
