"""The one key/value cache of generation, chat and serving: each layer's keys and values are kept, so a new token
attends to the past without recomputing it. ``GPT.forward(idx, kv_cache=cache)`` consumes it directly.

The cache is a set of *slots* (rows), each with its own length, allocated once for ``max_len`` positions:

    slots  ┌─ row 0: 37 positions ──────────┐      k, v: (layers, slots, nkv, max_len, hs)
           ├─ row 1: 12 positions ─┐        │      a forward pass writes each row's new keys at that
           └─ row 2: 80 positions ─┴────────┘      row's own length and attends over its own past only

When every row has the same length (``generate``: one prompt, n samples) a forward pass is the plain case:
positions ``pos .. pos+T-1``, a causal mask only while prefilling. When lengths differ (``serve``: sequences that
joined at different times) each row gets its own positions — RoPE angles, learned or sinusoidal position vectors
— and a mask hiding the unused tail of shorter rows. ``rows(first, n)`` is a view of some slots (the same memory),
so the serving engine prefills one slot and decodes the first n together; ``copy`` moves a row between slots.

Works with grouped-query attention (it stores ``n_kv_head`` heads, not ``n_head``) and with RoPE (keys are
stored already rotated).

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
        self.lengths = torch.zeros(batch_size, dtype=torch.long)  # positions filled in each row (on the host)
        self.max_len = max_len
        self._clear_step()

    def _clear_step(self) -> None:
        # set by begin() for one forward pass: where the new keys go, how far attention reads, which mask
        self.end, self.mask, self.is_causal, self._write, self._rows = 0, None, True, 0, None

    @classmethod
    def for_model(cls, model, batch_size: int = 1, max_len: int | None = None, dtype=None) -> KVCache:
        """A cache sized for ``model`` (default: its whole context), on the model's device and dtype."""
        model = getattr(model, "_orig_mod", model)
        cfg = model.config
        weight = model.transformer.wte.weight  # not lm_head: a quantized head's weight is int8
        return cls(cfg.n_layer, batch_size, cfg.kv_heads, cfg.head_size, max_len or cfg.block_size,
                   device=weight.device, dtype=dtype or weight.dtype)  # fmt: skip

    # ------------------------------------------------------------------------------------ slots

    def rows(self, first: int, n: int) -> KVCache:
        """Slots ``first .. first+n-1`` as a cache of their own, sharing this one's memory and lengths: a
        forward pass through it reads and writes those slots only."""
        view = object.__new__(KVCache)
        view.k, view.v = self.k[:, first : first + n], self.v[:, first : first + n]
        view.lengths = self.lengths[first : first + n]  # a view: advancing it advances these slots here
        view.max_len = self.max_len
        view._clear_step()
        return view

    def copy(self, src: int, dst: int, n: int | None = None) -> None:
        """Slot ``dst`` becomes the first ``n`` (default: all) positions of slot ``src`` (a shared prompt read
        once, or a sequence moving to a freed slot)."""
        n = int(self.lengths[src]) if n is None else n
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n

    def reset(self, row: int | None = None) -> None:
        """Forget every row, or one (the buffers are reused)."""
        if row is None:
            self.lengths.zero_()
        else:
            self.lengths[row] = 0

    @property
    def pos(self) -> int:
        """The length every row shares (generation's case); an error when rows differ."""
        lo, hi = int(self.lengths.min()), int(self.lengths.max())
        if lo != hi:
            raise ValueError(f"the rows of this cache have different lengths ({lo} to {hi})")
        return lo

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    # ------------------------------------------------------------------------------------ one forward pass

    def begin(self, T: int, device) -> torch.Tensor:
        """Called by ``GPT.forward`` before the layers: the positions of the ``T`` new tokens of each row,
        (T,) when all rows have the same length, else (B, T); prepares the writes and the attention mask."""
        starts = self.lengths.tolist()
        s0, longest = starts[0], max(starts)
        self.end = longest + T
        if self.end > self.max_len:
            raise ValueError(f"KV cache full: {self.end} positions needed, {self.max_len} allocated")
        if min(starts) == longest:  # every row at the same place: one slice write, the plain causal pattern
            self._write, self._rows = s0, None
            self.is_causal, self.mask = s0 == 0, None
            if s0 > 0 and T > 1:  # queries are the last T of L positions: causal alignment is bottom-right
                self.mask = torch.ones(T, self.end, dtype=torch.bool, device=device).tril(diagonal=s0)
            return torch.arange(s0, s0 + T, device=device)  # (T,)
        start = torch.tensor(starts, device=device)
        pos = start[:, None] + torch.arange(T, device=device)  # (B, T): each row's own positions
        self._write, self._rows = pos, torch.arange(len(starts), device=device)[:, None]  # (B, T), (B, 1)
        # row b's query at position p sees keys 0..p: its own past and itself, not another row's longer tail
        self.mask = (torch.arange(self.end, device=device) <= pos[:, :, None])[:, None]  # (B, 1, T, L)
        self.is_causal = False
        return pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` (B, nkv, T, hs) at each row's new positions; return the keys/values attention
        reads, views (B, nkv, L, hs) into the preallocated buffers (no copy). Rows shorter than L are masked."""
        kc, vc = self.k[layer], self.v[layer]  # (B, nkv, max_len, hs)
        if self._rows is None:
            s = self._write
            kc[:, :, s : s + k.size(2)] = k
            vc[:, :, s : s + v.size(2)] = v
        else:  # advanced indices (B, 1) and (B, T) around a slice: the indexed shape is (B, T, nkv, hs)
            kc[self._rows, :, self._write] = k.transpose(1, 2)
            vc[self._rows, :, self._write] = v.transpose(1, 2)
        return kc[:, :, : self.end], vc[:, :, : self.end]

    def advance(self, n: int) -> None:
        """Called by the model after all layers have stored ``n`` new positions."""
        self.lengths += n
        self._clear_step()
