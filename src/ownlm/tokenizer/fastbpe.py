"""The fast BPE trainer: incremental pair counts, a heap of candidates, a pair -> words index.

Same rules as ``train.train_reference`` (tests prove identical merges), different bookkeeping
(the algorithm of sentencepiece / HF tokenizers' BPE trainers):

- every unique chunk ("word") is an int32 slice of one flat array, merged in place; its count is its weight;
- ``S[slot]`` holds one pair's count and the head of a linked list of words that contain (or once contained)
  it; the pair table ``PT`` (open addressing) maps the pair key ``a << 32 | b`` to its slot;
- merging ``(a, b) -> t`` visits only the words on that list and changes only the pairs next to each
  occurrence: ``(p, a) -> (p, t)`` and ``(b, n) -> (t, n)``;
- a max-heap on ``(count, then smallest key)`` with lazy invalidation: a popped entry whose count went down
  since it was pushed is pushed again with its current count. Counts only fall, except for pairs with the
  new token, which are pushed once after the merge, so the first valid pop is the true best pair;
- token bytes live in a byte pool with a hash table (linear probing on exact bytes) to skip pairs whose
  bytes already exist as a token.

The kernel runs compiled by numba when it is installed (``pip install ownlm[fast]``) and as plain Python
otherwise (same code, much slower).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # the same code runs as Python, slowly

    def njit(*args, **kwargs):
        return (lambda f: f) if not args or not callable(args[0]) else args[0]


# S columns: pair count, a, b, head of its word list, banned (its bytes are a token already)
CNT, PA, PB, HEAD, BANNED = range(5)
FNV_OFFSET, FNV_PRIME = np.int64(-3750763034362895579), np.int64(1099511628211)


@njit(cache=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty((max(need, 2 * a.shape[0]),) + a.shape[1:], a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def _heap_push(H, n, negc, key):
    """Push (negc, key) into the min-heap H[:n]; returns the heap (maybe regrown)."""
    H = _grow(H, n + 1)
    i = n
    while i > 0:
        parent = (i - 1) >> 1
        if H[parent, 0] < negc or (H[parent, 0] == negc and H[parent, 1] < key):
            break
        H[i] = H[parent]
        i = parent
    H[i, 0] = negc
    H[i, 1] = key
    return H


@njit(cache=True)
def _heap_pop(H, n):
    """Remove the smallest entry of H[:n] (the caller has read H[0]); the heap has n - 1 entries after."""
    n -= 1
    negc, key = H[n, 0], H[n, 1]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (H[c + 1, 0] < H[c, 0] or (H[c + 1, 0] == H[c, 0] and H[c + 1, 1] < H[c, 1])):
            c += 1
        if negc < H[c, 0] or (negc == H[c, 0] and key < H[c, 1]):
            break
        H[i] = H[c]
        i = c
    H[i, 0] = negc
    H[i, 1] = key


@njit(cache=True)
def _hash(pool, s1, l1, s2, l2):
    h = FNV_OFFSET
    for k in range(l1):
        h = (h ^ pool[s1 + k]) * FNV_PRIME
    for k in range(l2):
        h = (h ^ pool[s2 + k]) * FNV_PRIME
    return h


@njit(cache=True)
def _mix(key, mask):
    """Table index for an int64 key (Fibonacci hashing: multiply by 2^64 / golden ratio, keep high bits)."""
    return ((key * np.int64(-7046029254386353131)) >> 24) & mask


@njit(cache=True)
def _pt_index(PT, key):
    """Row of ``key`` in the pair table PT = [key, slot] (linear probing), or the empty row where it would go."""
    mask = PT.shape[0] - 1
    i = _mix(key, mask)
    while PT[i, 1] >= 0 and PT[i, 0] != key:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def _find_token(pool, tok, TT, a, b):
    """(id of the token whose bytes are bytes(a) + bytes(b) or -1, empty row of TT to file it under)."""
    return _find_bytes(pool, tok, TT, tok[a, 0], tok[a, 1], tok[b, 0], tok[b, 1])


@njit(cache=True)
def _find_bytes(pool, tok, TT, s1, l1, s2, l2):
    """Look up the bytes pool[s1:s1+l1] + pool[s2:s2+l2] in the token table TT = [unused, token id]."""
    mask = TT.shape[0] - 1
    i = _mix(_hash(pool, s1, l1, s2, l2), mask)
    while TT[i, 1] >= 0:
        t = TT[i, 1]
        if tok[t, 1] == l1 + l2:  # same hash bucket: compare the bytes themselves
            same = True
            for k in range(l1 + l2):
                x = pool[s1 + k] if k < l1 else pool[s2 + k - l1]
                if pool[tok[t, 0] + k] != x:
                    same = False
                    break
            if same:
                return t, i
        i = (i + 1) & mask
    return -1, i


@njit(cache=True)
def _new_slot(PT, S, meta, x, y, count):
    """A slot for the new pair (x, y) with ``count``; returns (slot, PT and S maybe regrown)."""
    s = meta[0]
    meta[0] += 1
    S = _grow(S, s + 1)
    S[s, CNT], S[s, PA], S[s, PB], S[s, HEAD], S[s, BANNED] = count, x, y, -1, 0
    if 2 * meta[0] > PT.shape[0]:  # keep the table at most half full
        PT = _pair_table(S, meta[0], 4 * PT.shape[0])
    key = (np.int64(x) << 32) | y
    i = _pt_index(PT, key)
    PT[i, 0], PT[i, 1] = key, s
    return s, PT, S


@njit(cache=True)
def _pair_table(S, n_slots, cap):
    """The pair table for slots 0..n_slots-1 of S, with ``cap`` (a power of two) rows."""
    PT = np.full((cap, 2), -1, np.int64)
    for s in range(n_slots):
        key = (S[s, PA] << 32) | S[s, PB]
        i = _pt_index(PT, key)
        PT[i, 0], PT[i, 1] = key, s
    return PT


def init_state(sym, wstart, wlen, wcount):
    """Count every pair once and index it (numpy: sort the pair keys of all positions, then group)."""
    word = np.repeat(np.arange(len(wlen), dtype=np.int64), wlen)  # the word of every position
    inner = np.ones(len(sym), bool)
    inner[np.cumsum(wlen) - 1] = False  # a word's last symbol starts no pair
    pos = np.flatnonzero(inner[: len(sym) - 1]) if len(sym) > 1 else np.zeros(0, np.int64)
    keys = (sym[pos].astype(np.int64) << 32) | sym[pos + 1]
    order = np.lexsort((word[pos], keys))  # by pair, then by word
    keys, words = keys[order], word[pos][order]
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    uniq = keys[first]
    slot = np.cumsum(first) - 1  # the slot of every position
    counts = np.zeros(len(uniq), np.int64)
    np.add.at(counts, slot, wcount[words])
    # one node per (pair, word), linked to the next word of the same pair
    node = np.r_[True, (keys[1:] != keys[:-1]) | (words[1:] != words[:-1])] if len(keys) else first
    nslot, nword = slot[node], words[node]
    N = np.empty((max(16, len(nword)), 2), np.int32)
    N[: len(nword), 0] = nword
    nxt = np.arange(1, len(nword) + 1, dtype=np.int32)
    last = np.r_[nslot[1:] != nslot[:-1], True] if len(nslot) else np.zeros(0, bool)
    nxt[last] = -1
    N[: len(nword), 1] = nxt
    S = np.zeros((max(16, len(uniq)), 5), np.int64)
    S[: len(uniq), CNT] = counts
    S[: len(uniq), PA] = uniq >> 32
    S[: len(uniq), PB] = uniq & 0xFFFFFFFF
    S[: len(uniq), HEAD] = np.flatnonzero(np.r_[True, nslot[1:] != nslot[:-1]]) if len(nslot) else 0
    H = np.zeros((max(16, len(uniq)), 2), np.int64)
    by_rank = np.lexsort((uniq, -counts))  # a sorted array is a valid heap
    H[: len(uniq), 0], H[: len(uniq), 1] = -counts[by_rank], uniq[by_rank]
    meta = np.array([len(uniq), len(nword), len(uniq), 0], np.int64)  # slots, nodes, heap size, merges
    cap = 1 << (2 * max(16, len(uniq)) - 1).bit_length()
    return _pair_table(S, len(uniq), cap), meta, S, N, H


@njit(cache=True)
def run_merges(sym, wstart, wlen, wcount, wseen, PT, meta, S, N, H, pool, tok, TT, M, scratch, stop):
    """Merge until ``meta[3] == stop`` or no pair is left. Returns the arrays that may have been regrown.

    ``scratch`` (n_tokens x 6, zero) accumulates one merge's changes per neighbour symbol, so the pair table
    is touched once per distinct neighbour instead of once per occurrence: for merge (a, b) -> t,
    columns 0/1 count (p, t) made / (p, a) lost for a left neighbour p, 2/3 count (t, n) made / (b, n) lost
    for a right neighbour n, 4/5 remember the last word seen with p / n (to list each word once).
    """
    n_tok = scratch.shape[0]
    touched = np.empty(2 * n_tok, np.int64)  # neighbour symbols touched, left side at p, right at n_tok + n
    app = np.empty((64, 2), np.int64)  # (side * n_tok + neighbour, word) to list under the new pairs
    while meta[3] < stop and meta[2] > 0:
        negc, key = H[0, 0], H[0, 1]
        _heap_pop(H, meta[2])
        meta[2] -= 1
        slot = PT[_pt_index(PT, key), 1]
        cur = S[slot, CNT]
        if S[slot, BANNED] or cur <= 0:
            continue
        if -negc != cur:  # stale: its count fell since this entry was pushed
            H = _heap_push(H, meta[2], -cur, key)
            meta[2] += 1
            continue
        a, b = S[slot, PA], S[slot, PB]
        t, row = _find_token(pool, tok, TT, a, b)
        if t >= 0:  # these bytes are a token already: never merge this pair (keeps ids' bytes distinct)
            S[slot, BANNED] = 1
            continue
        step = meta[3]
        t = 256 + step
        M[step, 0], M[step, 1] = a, b
        meta[3] += 1
        la, lb = tok[a, 1], tok[b, 1]
        start = tok[t - 1, 0] + tok[t - 1, 1]
        pool = _grow(pool, start + la + lb)
        pool[start : start + la] = pool[tok[a, 0] : tok[a, 0] + la]
        pool[start + la : start + la + lb] = pool[tok[b, 0] : tok[b, 0] + lb]
        tok[t, 0], tok[t, 1] = start, la + lb
        TT[row, 0], TT[row, 1] = 0, t
        n_touched = 0
        n_app = 0
        node = S[slot, HEAD]
        while node >= 0:
            w = N[node, 0]
            node = N[node, 1]
            if wseen[w] == step:
                continue
            wseen[w] = step
            s0, L, c = wstart[w], wlen[w], wcount[w]
            i = 0
            j = 0
            while i < L:
                if i + 1 < L and sym[s0 + i] == a and sym[s0 + i + 1] == b:
                    if j > 0:  # left neighbour p: (p, a) -> (p, t)
                        p = sym[s0 + j - 1]
                        if p == t:  # (t, a) made by the occurrence just before is now (t, t)
                            scratch[a, 2] -= c
                        else:
                            scratch[p, 1] += c
                        scratch[p, 0] += c
                        if scratch[p, 4] != w + 1:
                            if scratch[p, 4] == 0:
                                touched[n_touched] = p
                                n_touched += 1
                            scratch[p, 4] = w + 1
                            app = _grow(app, n_app + 1)
                            app[n_app, 0], app[n_app, 1] = p, w
                            n_app += 1
                    if i + 2 < L:  # right neighbour n: (b, n) -> (t, n)
                        n = sym[s0 + i + 2]
                        scratch[n, 3] += c
                        scratch[n, 2] += c
                        if scratch[n, 5] != w + 1:
                            if scratch[n, 5] == 0:
                                touched[n_touched] = n_tok + n
                                n_touched += 1
                            scratch[n, 5] = w + 1
                            app = _grow(app, n_app + 1)
                            app[n_app, 0], app[n_app, 1] = n_tok + n, w
                            n_app += 1
                    sym[s0 + j] = t
                    i += 2
                else:
                    sym[s0 + j] = sym[s0 + i]
                    i += 1
                j += 1
            wlen[w] = j
        # apply the changes once per neighbour; new pairs get a slot only if they still occur
        first_new = meta[0]
        for k in range(n_touched):
            x = touched[k]
            left = x < n_tok
            nb = x if left else x - n_tok
            lost = scratch[nb, 1] if left else scratch[nb, 3]
            if lost:
                old = (np.int64(nb) << 32) | a if left else (np.int64(b) << 32) | nb
                S[PT[_pt_index(PT, old), 1], CNT] -= lost
            made = scratch[nb, 0] if left else scratch[nb, 2]
            if made > 0:
                s_new, PT, S = _new_slot(PT, S, meta, nb if left else t, t if left else nb, made)
                scratch[nb, 4 if left else 5] = -(s_new + 1)  # now: which slot the pair got
            else:
                scratch[nb, 4 if left else 5] = 0
            if left:
                scratch[nb, 0] = 0
                scratch[nb, 1] = 0
            else:
                scratch[nb, 2] = 0
                scratch[nb, 3] = 0
        for k in range(n_app):  # list each word under its new pairs
            x, w = app[k, 0], app[k, 1]
            left = x < n_tok
            nb = x if left else x - n_tok
            code = scratch[nb, 4 if left else 5]
            if code < 0:
                s_new = -code - 1
                N = _grow(N, meta[1] + 1)
                N[meta[1], 0] = w
                N[meta[1], 1] = S[s_new, HEAD]
                S[s_new, HEAD] = meta[1]
                meta[1] += 1
        for k in range(n_touched):
            x = touched[k]
            if x < n_tok:
                scratch[x, 4] = 0
            else:
                scratch[x - n_tok, 5] = 0
        S[slot, CNT] = 0
        for s in range(first_new, meta[0]):  # the new pairs: the only counts that grew
            H = _heap_push(H, meta[2], -S[s, CNT], (S[s, PA] << 32) | S[s, PB])
            meta[2] += 1
    return PT, S, N, H, pool


def train_fast(chunks: dict[bytes, int], n_merges: int, progress: bool = False) -> list[tuple[int, int]]:
    """Learn up to ``n_merges`` merges from ``{chunk bytes: count}`` (same result as ``train_reference``).

    >>> train_fast({b"aaab": 2, b"ab": 1}, 2)
    [(97, 97), (97, 98)]
    """
    from tqdm.auto import tqdm

    if not chunks or n_merges <= 0:
        return []
    lens = np.fromiter((len(c) for c in chunks), np.int64, len(chunks))
    sym = np.frombuffer(b"".join(chunks), np.uint8).astype(np.int32)
    wstart = np.zeros(len(chunks), np.int64)
    np.cumsum(lens[:-1], out=wstart[1:])
    wlen = lens.astype(np.int32)
    wcount = np.fromiter(chunks.values(), np.int64, len(chunks))
    wseen = np.full(len(chunks), -1, np.int64)
    PT, meta, S, N, H = init_state(sym, wstart, wlen, wcount)
    pool = np.arange(256, dtype=np.uint8)
    tok = np.zeros((256 + n_merges, 2), np.int64)
    tok[:256, 0], tok[:256, 1] = np.arange(256), 1
    M = np.zeros((max(n_merges, 1), 2), np.int64)
    scratch = np.zeros((256 + n_merges, 6), np.int64)
    bar = tqdm(total=n_merges, desc="bpe merges", unit="merge", disable=None if progress else True)
    with bar, np.errstate(over="ignore"):  # hashes wrap around on purpose (matters only without numba)
        TT = _token_table(pool, tok)
        while meta[3] < n_merges:
            done = int(meta[3])
            stop = min(n_merges, done + 256)
            PT, S, N, H, pool = run_merges(
                sym, wstart, wlen, wcount, wseen, PT, meta, S, N, H, pool, tok, TT, M, scratch, stop
            )
            bar.update(int(meta[3]) - done)
            if meta[3] < stop:  # out of pairs
                break
    return [(int(a), int(b)) for a, b in M[: int(meta[3])]]


def _token_table(pool, tok):
    """Hash table of the byte tokens, sized (power of two, at most half full) for every token to come."""
    TT = np.full((1 << (2 * tok.shape[0] - 1).bit_length(), 2), -1, np.int64)
    for t in range(256):
        _, row = _find_bytes(pool, tok, TT, t, 1, 0, 0)
        TT[row, 1] = t
    return TT
