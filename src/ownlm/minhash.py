"""Near-duplicate detection with MinHash signatures and locality-sensitive hashing (LSH), in numpy.

A document becomes the set of its character n-grams ("shingles") — characters, not words, so it works the
same for English, Chinese or Thai. Two documents are near-duplicates when the Jaccard similarity of their
shingle sets, |A ∩ B| / |A ∪ B|, is at least a threshold. MinHash (Broder, 1997) estimates it cheaply: under a
random hash function h, P[min h(A) = min h(B)] = J(A, B), so the fraction of equal minima over ``num_perm``
hash functions estimates J. LSH (Indyk & Motwani, 1998; chapter 3 of *Mining of Massive Datasets*) finds the
candidates without comparing every pair: the signature is cut into ``bands`` of ``rows`` values, and two
documents are candidates when any whole band matches — likely for J above ~(1/bands)^(1/rows), rare below.
Candidates are then confirmed with the estimated J, so the threshold is what decides.

>>> index = NearDupIndex(threshold=0.8)
>>> text = " ".join(f"word{i}" for i in range(500))
>>> index.add_if_new(text)
True
>>> index.add_if_new(text.replace("word250", "edited"))  # a light edit
False
>>> index.add_if_new(" ".join(f"other{i}" for i in range(500)))  # a different text
True
"""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingles(text: str, n: int = 5) -> np.ndarray:
    """The set of hashed character ``n``-grams of ``text`` as sorted unique uint64 values.

    Case and runs of whitespace are ignored. A text shorter than ``n`` is one shingle.

    >>> len(shingles("abcabc", n=3))  # abc, bca, cab
    3
    """
    key = " ".join(text.casefold().split())
    codes = np.frombuffer(key.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)  # (L,)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint64)
    n = min(n, len(codes))
    m = len(codes) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # polynomial hash of each window, all windows at once
            h = h * np.uint64(0x100000001B3) + codes[k : k + m]
        h = np.sort(_mix64(h))
    # Unique by sorting: numpy 2.x's hash-based np.unique is ~30x slower than this on uint64.
    return h[np.concatenate(([True], h[1:] != h[:-1]))]


class MinHasher:
    """``num_perm`` hash functions h_j(x) = (a_j·x + b_j) >> 32 (multiply-shift, Dietzfelbinger et al. 1997)."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, shingle_set: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
        """The MinHash signature (num_perm,) uint32 of a shingle set; an empty set gives all ones."""
        sig = np.full(self.num_perm, _MASK64, dtype=np.uint64)
        buf = np.empty((self.num_perm, chunk), dtype=np.uint64)  # reused: no allocation per chunk
        with np.errstate(over="ignore"):
            for start in range(0, len(shingle_set), chunk):  # chunks keep the (P, chunk) matrix small
                x = shingle_set[start : start + chunk]  # (C,)
                h = buf[:, : len(x)]  # (P, C)
                np.multiply(self.a[:, None], x[None, :], out=h)
                h += self.b[:, None]
                # >> 32 is monotonic, so shifting the row minima equals taking minima of shifted values
                np.minimum(sig, h.min(axis=1) >> np.uint64(32), out=sig)
        return np.minimum(sig, np.uint64(0xFFFFFFFF)).astype(np.uint32)


def lsh_params(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands·rows = num_perm whose S-curve midpoint (1/b)^(1/r) sits a little below
    ``threshold``, so documents at the threshold are found with high probability (few false negatives);
    the estimated Jaccard check afterwards removes the extra candidates.

    >>> lsh_params(128, 0.8)
    (16, 8)
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if (1 / bands) ** (1 / rows) <= threshold - 0.05:
            best = (bands, rows)  # more rows = fewer spurious candidates; keep the largest that fits
    return best


class NearDupIndex:
    """Documents seen so far; ``add_if_new`` keeps a document unless it near-duplicates one kept before."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_chars: int = 7, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.shingle_chars = shingle_chars
        self.hasher = MinHasher(num_perm, seed)
        self.bands, self.rows = lsh_params(num_perm, threshold)
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.signatures: list[np.ndarray] = []

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def find(self, text: str) -> tuple[int | None, float, np.ndarray]:
        """(index of the most similar kept document or None, its estimated Jaccard, this text's signature)."""
        sig = self.hasher.signature(shingles(text, self.shingle_chars))
        candidates = {j for t, key in zip(self.tables, self._band_keys(sig)) for j in t.get(key, ())}
        best, best_j = None, 0.0
        for j in sorted(candidates):
            est = float(np.mean(self.signatures[j] == sig))
            if est > best_j:
                best, best_j = j, est
        if best_j < self.threshold:
            best = None
        return best, best_j, sig

    def add_if_new(self, text: str) -> bool:
        """Keep ``text`` (and return True) unless it is a near-duplicate of a document kept before."""
        match, _, sig = self.find(text)
        if match is not None:
            return False
        self.add(sig)
        return True

    def add(self, sig: np.ndarray) -> int:
        """Index a signature (from ``find``) as a kept document; return its position."""
        idx = len(self.signatures)
        self.signatures.append(sig)
        for t, key in zip(self.tables, self._band_keys(sig)):
            t.setdefault(key, []).append(idx)
        return idx
