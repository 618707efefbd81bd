"""Pretraining batches: windows of ``block_size + 1`` tokens cut from a split, inputs ``x`` and targets ``y = x``
shifted by one.

Two ways to choose windows:

- random windows (default, as nanoGPT): each batch draws its start positions from a generator seeded with
  ``(seed, batch index)``;
- sliding window with a stride (``stride=...``, as in Raschka's GPTDatasetV1): the window starts
  ``0, stride, 2*stride, ...`` are visited once per epoch, in an order shuffled per epoch (or in order).

Either way batch ``i`` is a pure function of ``(seed, i)``: a resumed run asks for batch ``i`` and gets exactly
the batch the interrupted run would have seen. Under DDP every process draws the same *global* batch of
``batch_size * world_size`` rows and keeps its own slice, so N processes see what one process would see with an
N times larger batch.

>>> sampler = WindowSampler(open_split("tokens", "train"), block_size=64, batch_size=12)  # doctest: +SKIP
>>> x, y = sampler.batch(0)   # int64 arrays of shape (12, 64)                            # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ownlm.errors import UserError


class WindowSampler:
    """Deterministic batches of windows from a 1-D token array (a memmap or anything with slices and ``len``)."""

    def __init__(
        self,
        tokens,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        stride: int | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
    ):
        n = len(tokens)
        if block_size < 1 or batch_size < 1:
            raise UserError(f"block size and batch size must be >= 1, got {block_size} and {batch_size}")
        if n < block_size + 1:
            raise UserError(
                f"the {split} split has {n:,} tokens, but one training window needs block_size + 1 = "
                f"{block_size + 1:,}: lower --block-size or give more text"
            )
        if stride is not None and stride < 1:
            raise UserError(f"--stride must be >= 1, got {stride}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.stride, self.shuffle = seed, stride, shuffle
        self.rank, self.world_size = rank, world_size
        self.n_starts = n - block_size  # valid starts: 0 .. n - block_size - 1
        if stride is not None:
            self.n_starts = (n - block_size - 1) // stride + 1
        self._perm_epoch, self._perm = -1, None

    @property
    def rows_per_batch(self) -> int:
        """Rows in one global batch (all processes together)."""
        return self.batch_size * self.world_size

    def windows_per_epoch(self) -> int:
        return self.n_starts

    def starts(self, index: int) -> np.ndarray:
        """Start positions of this process' rows of global batch ``index``."""
        rows = self.rows_per_batch
        if self.stride is None:
            rng = np.random.default_rng([self.seed, index])
            starts = rng.integers(0, self.n_starts, size=rows)
        else:
            k = np.arange(index * rows, (index + 1) * rows, dtype=np.int64)  # global window counters
            starts = np.array([self._window(int(j)) for j in k], dtype=np.int64) * self.stride
        return starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def _window(self, k: int) -> int:
        epoch, i = divmod(k, self.n_starts)
        if not self.shuffle:
            return i
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 1 << 20, epoch]).permutation(self.n_starts)
            self._perm_epoch = epoch
        return int(self._perm[i])

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` int64 arrays of shape (batch_size, block_size); ``y`` is ``x`` shifted by one token."""
        T = self.block_size
        rows = np.stack([np.asarray(self.tokens[s : s + T + 1]) for s in self.starts(index)])  # (B, T+1)
        rows = rows.astype(np.int64)
        return rows[:, :-1], rows[:, 1:]


def sequential_batches(tokens, block_size: int, batch_size: int, max_tokens: int | None = None):
    """Non-overlapping windows in order (for evaluation): yields ``(x, y)`` until the split (or ``max_tokens``)
    is used up; the last batch may have fewer rows.

    >>> sum(x.size for x, _ in sequential_batches(np.arange(100), 10, 4))
    90
    """
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
    if n < block_size + 1:
        raise UserError(
            f"the split has {n:,} tokens, but one window needs block_size + 1 = {block_size + 1:,}: "
            "lower --block-size or give more text"
        )
    starts = np.arange(0, n - block_size, block_size)
    for i in range(0, len(starts), batch_size):
        rows = np.stack([np.asarray(tokens[s : s + block_size + 1]) for s in starts[i : i + batch_size]])
        rows = rows.astype(np.int64)
        yield rows[:, :-1], rows[:, 1:]
