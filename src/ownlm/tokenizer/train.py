"""Learning BPE merges: pre-tokenize and count chunks once, then merge the most frequent pair, repeatedly.

Both trainers work on the *unique* chunks of the corpus with their counts (the 52 MB Gutenberg test corpus has
127,000), and both follow the same rules, so they learn identical merges (tests prove it):

- The pair to merge next is the one with the highest count; ties go to the smallest ``(a, b)`` id pair.
  A pair's count is the number of places it occurs (``aaa`` holds ``(a, a)`` twice), weighted by chunk count.
- Merging replaces occurrences left to right without overlap (``aaa`` -> ``aa a``).
- A pair whose bytes already exist as a token (the same bytes reached by another split, e.g. ``"a"+"bc"``
  when ``"ab"+"c"`` was merged before) is skipped for good: every id keeps distinct bytes, which is what lets
  tiktoken encode our vocabulary exactly.
- When no pair is left (tiny corpus), training stops early with a warning; the vocabulary is smaller.

``train_reference`` recounts every pair after every merge: slow, obviously right. ``ownlm.tokenizer.fastbpe``
updates counts only where a merge applies, with a heap of candidate pairs; that is the one used by default.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence

import regex
from tqdm.auto import tqdm

from ownlm.errors import UserError
from ownlm.tokenizer.pretokenize import clean_surrogates

# A short one-line str ending like a file name or a folder: probably meant as a path. Judged by its shape alone
# (never by what is on disk), so a str's meaning cannot change with the state of the filesystem.
_LOOKS_LIKE_FILE = regex.compile(r"\S+(?:\.(?:txt|md|rst|jsonl|json|csv|tsv)|/)", regex.IGNORECASE)


def iter_texts(inputs: Iterable[str | os.PathLike], errors: str = "strict") -> Iterator[str]:
    """Texts from ``inputs``: a ``str`` is always a text; a ``pathlib.Path`` (any ``os.PathLike``) is read by
    ``ownlm.textsource.iter_documents`` (text files, folders of them, documents JSONL; ``errors="replace"``
    for bad UTF-8). A str shaped like a file name (``"corpus.txt"``) is still trained on as text, with a
    warning that ``Path("corpus.txt")`` reads the file.

    >>> list(iter_texts(["/"]))  # a text, not the filesystem root
    ['/']
    """
    from ownlm.textsource import iter_documents

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, os.PathLike):
            for _source, text in iter_documents([item], errors=errors):
                yield text
        elif isinstance(item, str):
            if len(item) < 4096 and _LOOKS_LIKE_FILE.fullmatch(item):
                warnings.warn(
                    f"training on the text {item!r}; to read the file, pass pathlib.Path({item!r})",
                    stacklevel=4,
                )
            yield item
        else:
            raise UserError(f"training input must be a str text or a pathlib.Path, got {type(item).__name__}")


def _count_batch(texts: list[str], pattern: str, specials: Sequence[str]) -> Counter:
    """Chunk counts of some texts (runs in a worker process). Special-token strings never join a chunk."""
    split = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    rx = regex.compile(pattern)
    counts: Counter = Counter()
    for text in texts:
        text = clean_surrogates(text)
        for piece in split.split(text) if split else (text,):
            counts.update(rx.findall(piece))
    return counts


def count_chunks(
    texts: Iterable[str],
    pattern: str,
    specials: Sequence[str] = (),
    workers: int | None = None,
    batch_chars: int = 1 << 21,
    progress: bool = False,
) -> dict[bytes, int]:
    """``{chunk bytes: count}`` over all texts, split by ``pattern``; big inputs are spread over processes.

    Documents are never cut (cutting could change how the regex splits), so one huge document is read by
    one process. At most two batches per worker are in flight, so the corpus is never all in memory.

    >>> count_chunks(["the cat the"], r" ?\\w+")
    {b'the': 1, b' cat': 1, b' the': 1}
    """
    workers = workers or os.cpu_count() or 1
    total: Counter = Counter()
    batches = text_batches(texts, batch_chars)
    first = next(batches, None)
    if first is None:
        return {}
    batches = itertools.chain([first], batches)
    bar = tqdm(desc="pre-tokenizing", unit="char", unit_scale=True, disable=None if progress else True)
    with bar:
        if workers <= 1 or sum(map(len, first)) < batch_chars:  # small input: no processes to start
            for batch in batches:
                total.update(_count_batch(batch, pattern, specials))
                bar.update(sum(map(len, batch)))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                pending: deque = deque()
                for batch in batches:
                    pending.append(
                        (sum(map(len, batch)), pool.apply_async(_count_batch, (batch, pattern, specials)))
                    )
                    if len(pending) >= 2 * workers:
                        size, result = pending.popleft()
                        total.update(result.get())
                        bar.update(size)
                while pending:
                    size, result = pending.popleft()
                    total.update(result.get())
                    bar.update(size)
    return {chunk.encode("utf-8"): n for chunk, n in total.items()}


def text_batches(texts: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    """Group texts into lists of about ``batch_chars`` characters (one unit of work for a process or a
    tiktoken batch call); a text is never cut.

    >>> list(text_batches(["ab", "cd", "e"], 3))
    [['ab', 'cd'], ['e']]
    """
    batch, size = [], 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def train_reference(chunks: dict[bytes, int], n_merges: int, progress: bool = False) -> list[tuple[int, int]]:
    """The readable trainer (minbpe-like, on unique chunks with counts). Ids 0..255 are the bytes.

    >>> train_reference({b"aaab": 2, b"ab": 1}, 2)
    [(97, 97), (97, 98)]
    """
    words = [list(c) for c in chunks]
    counts = list(chunks.values())
    vocab = [bytes([i]) for i in range(256)]
    existing = set(vocab)
    skipped: set[tuple[int, int]] = set()
    merges: list[tuple[int, int]] = []
    bar = tqdm(
        total=n_merges, desc="bpe merges (reference)", unit="merge", disable=None if progress else True
    )
    while len(merges) < n_merges:
        stats: Counter = Counter()
        for w, n in zip(words, counts):
            for pair in zip(w, w[1:]):
                stats[pair] += n
        candidates = [(-n, pair) for pair, n in stats.items() if pair not in skipped]
        if not candidates:
            break
        _, pair = min(candidates)  # highest count, then smallest (a, b)
        new_bytes = vocab[pair[0]] + vocab[pair[1]]
        if new_bytes in existing:
            skipped.add(pair)
            continue
        new = len(vocab)
        vocab.append(new_bytes)
        existing.add(new_bytes)
        merges.append(pair)
        bar.update()
        for k, w in enumerate(words):
            words[k] = _merge(w, pair, new)
    bar.close()
    return merges


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# Training tables per merge (fast trainer: token, merge, scratch and hash-table rows of int64) with headroom.
BYTES_PER_MERGE = 256


def check_vocab_memory(vocab_size: int, available: int | None = None) -> None:
    """Refuse, before reading any text, a vocabulary whose training tables cannot fit in memory.

    >>> check_vocab_memory(10**9, available=16 << 30)
    Traceback (most recent call last):
    ownlm.errors.UserError: vocab size 1,000,000,000 needs about 238.4 GiB for training tables, more than the 16.0 GiB of memory here; ask for fewer tokens (32,000-100,000 is typical)
    """
    from ownlm.textsource import memory_bytes

    available = memory_bytes() if available is None else available
    need = vocab_size * BYTES_PER_MERGE
    if available and need > available // 2:
        raise UserError(
            f"vocab size {vocab_size:,} needs about {need / 2**30:.1f} GiB for training tables, more than the "
            f"{available / 2**30:.1f} GiB of memory here; ask for fewer tokens (32,000-100,000 is typical)"
        )


def train_merges(
    inputs: Iterable[str | os.PathLike],
    vocab_size: int,
    pattern: str,
    specials: Sequence[str] = (),
    workers: int | None = None,
    progress: bool = True,
    errors: str = "strict",
    trainer: str = "fast",
) -> list[tuple[int, int]]:
    """Count chunks of ``inputs`` and learn up to ``vocab_size - 256`` merges (see the module docstring)."""
    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise UserError(f"vocab size must be at least 256 (the byte tokens), got {vocab_size}")
    if trainer not in ("fast", "reference"):
        raise UserError(f"unknown trainer {trainer!r}: use 'fast' or 'reference'")
    if not all(isinstance(s, str) and s for s in specials):
        raise UserError(f"special tokens must be non-empty strings, got {list(specials)}")
    check_vocab_memory(vocab_size)
    chunks = count_chunks(iter_texts(inputs, errors), pattern, specials, workers, progress=progress)
    if not chunks:
        raise UserError("the training corpus is empty: no text found in the inputs")
    # Every merge shortens at least one unique chunk by one symbol, so the data bounds the merges it can give;
    # tables are sized by that bound, not by an over-large request.
    n_merges = min(vocab_size - 256, sum(len(c) - 1 for c in chunks))
    asked = vocab_size - 256
    if trainer == "reference":
        merges = train_reference(chunks, n_merges, progress)
    else:
        from ownlm.tokenizer.fastbpe import train_fast

        merges = train_fast(chunks, n_merges, progress)
    if len(merges) < asked:
        warnings.warn(
            f"the corpus ran out of pairs to merge after {len(merges)} merges: "
            f"vocabulary is {256 + len(merges)} (asked for {vocab_size})",
            stacklevel=3,
        )
    return merges
