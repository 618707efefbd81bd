"""The optimiser and the learning-rate schedule.

AdamW with weight decay on matrices only (embeddings and linear weights, ``dim >= 2``); biases and norm gains
are not decayed (as GPT-2/nanoGPT). The fused kernel is used where PyTorch has one for the device.

Schedules (``lr_at``): linear warm-up, then either cosine decay to ``min_lr`` (nanoGPT) or
warm-up-stable-decay (WSD: hold the peak, decay linearly to ``min_lr`` over the last ``decay_frac`` of
training; Hu et al. 2024, "MiniCPM"). Progress is a fraction in [0, 1], so the same schedule serves a run
measured in steps and one fitted to a time budget.
"""

from __future__ import annotations

import math


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and everything else (not decayed). Tied weights appear once.

    >>> groups = param_groups(torch.nn.Linear(4, 4), 0.1)  # doctest: +SKIP
    >>> [len(g["params"]) for g in groups]                 # doctest: +SKIP
    [1, 1]
    """
    decay, no_decay = [], []
    for p in model.parameters():  # .parameters() yields a shared (tied) tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8, device=None):
    """AdamW over ``param_groups``; fused on CUDA and CPU when this PyTorch supports it.

    >>> opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)  # doctest: +SKIP
    """
    import torch

    groups = param_groups(model, weight_decay)
    device_type = torch.device(device).type if device is not None else next(model.parameters()).device.type
    kwargs = {"lr": lr, "betas": tuple(betas), "eps": eps}
    if device_type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # older PyTorch: no fused kernel for this device
            pass
    return torch.optim.AdamW(groups, **kwargs)


def lr_at(
    step: int,
    progress: float,
    lr: float,
    min_lr: float,
    warmup_iters: int,
    schedule: str = "cosine",
    decay_frac: float = 0.2,
    warmup_progress: float = 0.0,
) -> float:
    """The learning rate at optimiser step ``step`` with ``progress`` in [0, 1] of the run done.

    ``warmup_progress`` is the progress at which warm-up ended (so the decay spans what is left).

    >>> lr_at(0, 0.0, 1e-3, 1e-4, warmup_iters=100) < 1e-4
    True
    >>> round(lr_at(2000, 1.0, 1e-3, 1e-4, warmup_iters=100), 6)
    0.0001
    """
    if step < warmup_iters:
        return lr * (step + 1) / (warmup_iters + 1)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        span = max(1e-12, 1.0 - warmup_progress)
        ratio = min(max((progress - warmup_progress) / span, 0.0), 1.0)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
    if schedule == "wsd":
        start = 1.0 - decay_frac
        if progress <= start:
            return lr
        return lr + (min_lr - lr) * min(1.0, (progress - start) / max(1e-12, decay_frac))
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}")
