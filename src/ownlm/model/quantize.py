"""Weight-only int8 quantization for faster generation on CPU (``ownlm generate --quantize int8``).

Generating one token reads every weight once, so batch-1 decoding is limited by memory traffic, not arithmetic.
Storing each Linear weight as int8 with one scale per output row (symmetric, ``w ≈ q * scale``) reads a quarter of
the bytes of fp32; activations stay in floating point (bf16 inside the matmul), as do norms, attention and the KV
cache. The logits are close to, not equal to, the fp32 model's (about 1% relative error per matmul); the
approach is the one of gpt-fast and LLM.int8's weight-only mode.

>>> quantize_int8(model)  # in place; the token embedding stays fp32 for lookups  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Int8Linear(nn.Module):
    """A ``nn.Linear`` whose weight is int8 (out, in) with a bf16 scale per output row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,): the largest weight of a row -> 127
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer(
            "weight", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        )
        self.register_buffer("scales", scale.to(torch.bfloat16))
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        # PyTorch's CPU int8 kernel (a private op) crashes or errs when `in` is not a multiple of 16 (torch 2.13);
        # the widths of real models are multiples of 64, smaller odd ones take the plain path
        self.fused = hasattr(torch, "_weight_int8pack_mm") and self.in_features % 64 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (N, in)
        if self.fused and x.device.type == "cpu":
            y = torch._weight_int8pack_mm(x2, self.weight, self.scales)  # fused int8 GEMM kernel, (N, out)
        else:  # other devices: dequantize on the fly (correct, not faster)
            y = (x2 @ self.weight.to(x2.dtype).t()) * self.scales
        y = y.to(x.dtype).view(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by an ``Int8Linear``, in place; returns ``model``. Inference only.
    A tied output head gets its own int8 copy; the token embedding it was tied to stays as it is."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model


# ---------------------------------------------------------------------------------------------- a frozen int8 base
# Training LoRA over an int8 base (``--base-dtype int8``): a frozen ``nn.Linear`` keeps its ``weight`` as an int8
# Parameter (out, in) and a float32 ``weight_scale`` buffer (out,), one absmax scale per output row, the names
# under which checkpoints store them (``load_model`` reads such a pair back into any dtype). The forward pass
# dequantizes one layer's weight at a time to the activations' dtype; the backward pass keeps only the int8 weight
# and dequantizes it again, so no float copy of the base is ever held. Adapters and their optimizer stay fp32.


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: ``w`` (out, in) as int8 with one float32 scale per row, ``w ≈ q * scale[:, None]`` (the
    largest weight of a row becomes ±127). Works on the meta device too (shapes and dtypes only)."""
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``q * scale[:, None]`` in ``dtype``: the weight an int8 pair stands for."""
    return q.to(dtype) * scale.to(dtype)[:, None]


class _Int8Matmul(torch.autograd.Function):
    """x (N, in) @ dequantized(q, scale).T; the gradient flows to x only (the weight is frozen)."""

    @staticmethod
    def forward(ctx, x, q, scale):
        ctx.save_for_backward(q, scale)
        return x @ dequantize_rows(q, scale, x.dtype).t()  # (N, out); the float weight lives for this matmul

    @staticmethod
    def backward(ctx, grad):
        q, scale = ctx.saved_tensors
        return grad @ dequantize_rows(q, scale, grad.dtype), None, None  # (N, in)


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.linear`` over an int8 weight with per-row scales; under autocast the matmul runs in its dtype (bf16)."""
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    with torch.autocast(x.device.type, enabled=False):
        y = _Int8Matmul.apply(x.reshape(-1, x.shape[-1]).to(dtype), q, scale).view(*x.shape[:-1], q.shape[0])
        return y if bias is None else y + bias.to(y.dtype)


class FrozenInt8Linear(nn.Linear):
    """A frozen ``nn.Linear`` whose ``weight`` is int8 with a ``weight_scale`` per output row (same state-dict
    names as the layer it replaces, plus the scale). ``store_frozen(model, "int8")`` makes them."""

    @classmethod
    def of(cls, linear: nn.Linear) -> FrozenInt8Linear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight, new.bias = linear.weight, linear.bias
        new.register_buffer("weight_scale", linear.weight_scale)
        if hasattr(linear, "residual_scale"):
            new.residual_scale = linear.residual_scale
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.weight, self.weight_scale, self.bias)


def quantize_frozen_linear(m: nn.Linear) -> int:
    """Store a frozen linear layer's weight as int8 + per-row scale, in place; returns the bytes saved."""
    w = m.weight
    if w.dtype == torch.int8:
        return 0
    q, scale = quantize_rows(w.detach())
    m.weight = nn.Parameter(q, requires_grad=False)
    m.register_buffer("weight_scale", scale)
    return w.numel() * (w.element_size() - 1) - scale.numel() * 4
