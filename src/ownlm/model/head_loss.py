"""The output head and its cross-entropy in one step, a few rows at a time: the training loss of a 50k vocabulary
without the fp32 logits.

The usual path, ``F.cross_entropy(lm_head(h).float(), targets)``, walks (N, vocab) tensors through memory many
times: bf16 logits, their fp32 copy, log-softmax's output (saved for backward), the zeroed NLL gradient, the
log-softmax gradient and its bf16 copy — on GPT-2's shape at batch 4 x 256 each is 50 M numbers, and on a CPU
those passes cost more than the head's matmul (``bench/profile_train_step.py``). The gradient of a summed
cross-entropy with respect to the logits is known as soon as the loss is, ``softmax(logits) - onehot(target)``,
so ``head_loss_sum`` computes it in the forward pass, ``chunk`` rows at a time while those rows are in cache, and
writes it over the logits: one (N, vocab) tensor in the head's dtype is all that lives until backward, which is
then two matmuls (the same trick as Liger Kernel's fused linear cross-entropy, Hsu et al. 2024).

>>> loss = head_loss_sum(h, model.lm_head.weight, targets)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # targets that carry no loss (F.cross_entropy's ignore_index)


class _HeadCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W.T, t_i) over targets != -100; the logits' gradient is computed in the forward pass."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int):
        # h (N, C), weight (V, C), targets (N,): all in the dtype the head runs in (autocast is off in here)
        logits = h @ weight.t()  # (N, V)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, len(targets), chunk):
            part, t = logits[i : i + chunk], targets[i : i + chunk]  # (n, V), (n,)
            valid = t != IGNORE
            t = t.clamp_min(0)[:, None]  # (n, 1): ignored rows score class 0, then count for nothing
            logp = torch.log_softmax(part, dim=-1, dtype=torch.float32)  # (n, V) fp32, in cache
            total -= logp.gather(1, t).squeeze(1).masked_fill(~valid, 0.0).sum()
            if need_grad:  # d(sum CE)/d logits = softmax - onehot(target); zero for ignored rows
                grad = logp.exp_()
                grad.scatter_add_(1, t, torch.full_like(t, -1.0, dtype=grad.dtype))
                grad.mul_(valid[:, None])
                part.copy_(grad)  # over the logits: the only (N, V) tensor kept for backward
        if need_grad:
            ctx.save_for_backward(h, weight, logits)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, grad_logits = ctx.saved_tensors  # grad_logits (N, V) of the summed loss
        scale = grad_out.to(h.dtype)
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = (grad_logits @ weight).mul_(scale)  # (N, C)
        if ctx.needs_input_grad[1]:
            grad_w = (grad_logits.t() @ h).mul_(scale)  # (V, C)
        return grad_h, grad_w, None, None


# fp32 log-probabilities held at a time: 32 rows of a 50k vocabulary; a small vocabulary takes more rows at once
# (a byte vocabulary's whole batch), so its loss is not a Python loop of tiny pieces
CHUNK_VALUES = 32 * 50_304


def head_loss_sum(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """The summed cross-entropy of ``h @ weight.T`` (hidden states h (N, C), head weight (V, C)) against
    ``targets`` (N,), -100 ignored; a 0-d fp32 tensor. Under autocast the head runs in autocast's dtype, as
    ``F.linear`` would; ``chunk`` rows of fp32 log-probabilities exist at a time (0: ``CHUNK_VALUES`` / V).

    >>> h, w, t = torch.randn(5, 8), torch.randn(11, 8), torch.tensor([1, 2, -100, 4, 0])
    >>> bool(torch.isclose(head_loss_sum(h, w, t), F.cross_entropy(h @ w.t(), t, reduction="sum")))
    True
    """
    chunk = chunk or max(32, CHUNK_VALUES // weight.shape[0])
    kind = h.device.type
    if torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        h, weight = h.to(dtype), weight.to(dtype)  # differentiable casts: their gradients come back in fp32
    elif h.dtype != weight.dtype:
        h = h.to(weight.dtype)
    with torch.autocast(kind, enabled=False):
        return _HeadCrossEntropy.apply(h, weight, targets, chunk)


def reference_loss_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What ``head_loss_sum`` computes, the plain way (the tests' reference)."""
    return F.cross_entropy(F.linear(h, weight).float(), targets, ignore_index=IGNORE, reduction="sum")
