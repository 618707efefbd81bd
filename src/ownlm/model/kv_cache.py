"""A key/value cache for fast generation: each layer's keys and values are kept, so a new token attends to
the past without recomputing it. Memory is allocated once, up front, for ``max_len`` positions; a decode step
writes one slot per layer and never re-allocates.

Works with grouped-query attention (it stores ``n_kv_head`` heads, not ``n_head``) and with RoPE (keys are
stored already rotated; ``GPT.forward`` numbers new tokens from ``cache.pos``).

>>> cache = KVCache.for_model(model, batch_size=1)  # doctest: +SKIP
>>> logits, _ = model(prompt, kv_cache=cache)  # prefill: cache.pos == len(prompt)  # doctest: +SKIP
>>> logits, _ = model(next_token, kv_cache=cache)  # one step: attends to every cached position  # doctest: +SKIP
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_size: int, max_len: int,
                 device=None, dtype=torch.float32):  # fmt: skip
        shape = (n_layer, batch_size, n_kv_head, max_len, head_size)  # (layers, B, nkv, L, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # how many positions are filled (the same for every layer between forward calls)

    @classmethod
    def for_model(cls, model, batch_size: int = 1, max_len: int | None = None, dtype=None) -> KVCache:
        """A cache sized for ``model`` (default: its whole context), on the model's device and dtype."""
        model = getattr(model, "_orig_mod", model)
        cfg = model.config
        weight = model.transformer.wte.weight  # not lm_head: a quantized head's weight is int8
        return cls(cfg.n_layer, batch_size, cfg.kv_heads, cfg.head_size, max_len or cfg.block_size,
                   device=weight.device, dtype=dtype or weight.dtype)  # fmt: skip

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (B, nkv, T, hs) at positions [pos, pos+T); return all keys/values so far,
        views of shape (B, nkv, pos+T, hs) into the preallocated buffers (no copy)."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called by the model after all layers have stored ``n`` new positions."""
        self.pos += n

    def reset(self) -> None:
        """Forget everything (the buffers are reused)."""
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.size(1)
