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
