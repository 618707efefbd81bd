"""Characters vs words vs BPE on your own corpus: how vocabulary size trades against sequence length.

A model's cost grows with the sequence length (attention, and the number of steps per document), while
its embedding table grows with the vocabulary. This module measures both for one corpus:

- characters: every distinct Unicode character is a token (tiny vocabulary, long sequences);
- words: ``\\w+`` runs and single punctuation marks (huge vocabulary; an unseen word has no id at all);
- BPE: our byte-level BPE at several sizes; 256 is pure UTF-8 bytes. BPE is trained once, at the largest
  size, on a sample; each smaller size is the same tokenizer cut after its first merges, because
  training only ever appends merges (a vocabulary of N is exactly the first N - 256 merges).

Token counts always cover the whole corpus, not the sample.

>>> docs = ["The cat sat on the mat. The dog sat too.", "Another document."]
>>> result = compare_corpus(lambda: iter(docs), 60, vocab_sizes=[256, 260], progress=False)  # doctest: +SKIP
>>> print(format_report(result, markdown=False))  # doctest: +SKIP

From the command line: ``ownlm tokenizer compare INPUT... [--out DIR]`` (``ownlm.tokenizer.cli``).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ownlm.errors import UserError

WORD_RE = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! ? or … (possibly followed by closing quotes/brackets) before whitespace or the end.
SENTENCE_END_RE = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")
BATCH_BYTES = 4 << 20  # documents are counted in batches of about this many bytes (tiktoken batch calls)


@dataclass
class Row:
    level: str  # "characters", "words", "BPE 4k", ...
    vocab_size: int
    tokens: int = 0
    tokens_per_doc: float = 0.0
    tokens_per_sentence: float = 0.0
    bytes_per_token: float = 0.0
    example: list[str] = field(default_factory=list)  # the example sentence, one string per token


@dataclass
class CompareResult:
    rows: list[Row]
    documents: int
    sentences: int
    bytes: int
    characters: int
    example: str
    sample_bytes: int
    pattern: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": "ownlm-tokenizer-compare", "version": 1, **asdict(self)}


def count_sentences(text: str) -> int:
    """Sentence ends in ``text``, plus one for unterminated trailing text; at least 1 for non-empty text.

    >>> count_sentences("One. Two! Three")
    3
    """
    ends = list(SENTENCE_END_RE.finditer(text))
    tail = text[ends[-1].end() :] if ends else text
    return len(ends) + (1 if tail.strip() else 0)


def pick_example(text: str, min_words: int = 8, max_words: int = 25) -> str:
    """A typical sentence from ``text``: the first of ``min_words``..``max_words`` words without odd layout."""
    start = 0
    for m in SENTENCE_END_RE.finditer(text):
        sentence = " ".join(text[start : m.end()].split())
        start = m.end()
        plain = not any(c in sentence for c in '"“”:;()[]_*#<>|')  # dialogue and markup make poor examples
        if min_words <= len(sentence.split()) <= max_words and sentence[:1].isupper() and plain:
            return sentence
    return " ".join(text.split()[:max_words])


def show_piece(piece: bytes) -> str:
    """One token for display: spaces as ``▁``, newlines as ``↵``, bytes that are not whole characters as hex.

    >>> show_piece(b" cat"), show_piece("é".encode()[:1])
    ('▁cat', '<c3>')
    """
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + " ".join(f"{b:02x}" for b in piece) + ">"
    return text.replace(" ", "▁").replace("\n", "↵").replace("\t", "→").replace("|", "¦")


def bpe_label(vocab_size: int) -> str:
    if vocab_size == 256:
        return "BPE 256 (bytes)"
    if vocab_size % 1024 == 0:
        return f"BPE {vocab_size // 1024}k"
    return f"BPE {vocab_size}"


def sample_documents(docs: Iterable[str], total_bytes: int, sample_bytes: int) -> list[str]:
    """About ``sample_bytes`` of text spread evenly over the corpus: a share of every document, cut at a line end.

    >>> sample_documents(["a\\nb\\n", "c\\nd\\n"], total_bytes=8, sample_bytes=4)
    ['a\\n', 'c\\n']
    """
    share = min(1.0, sample_bytes / max(1, total_bytes))
    sample, seen, kept = [], 0, 0
    for text in docs:
        seen += len(text.encode("utf-8"))
        allowance = int(share * seen) - kept
        if allowance <= 0:
            continue
        if len(text) > allowance:
            cut = text.rfind("\n", 0, allowance) + 1
            text = text[: cut or allowance]
        sample.append(text)
        kept += len(text.encode("utf-8"))
    return sample


def compare_corpus(
    docs: Callable[[], Iterable[str]],
    total_bytes: int,
    vocab_sizes: Sequence[int] = (256, 1024, 4096, 16384),
    pattern: str = "gpt4",
    sample_mb: float = 8.0,
    example: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CompareResult:
    """Measure every level over the documents that ``docs()`` yields (it is called twice: sample, then count).

    ``total_bytes`` is the corpus size (file sizes are fine), used to spread the training sample.

    >>> r = compare_corpus(lambda: ["The cat sat. The dog ran."], 30, [256, 260], progress=False)  # doctest: +SKIP
    """
    from tqdm import tqdm

    from ownlm.tokenizer import Tokenizer, resolve_pattern
    from ownlm.tokenizer.bpe import clean_surrogates
    from ownlm.tokenizer.train import text_batches

    def texts() -> Iterable[str]:  # JSON can carry lone surrogates ("\\ud800"): U+FFFD, as encode does
        return (clean_surrogates(t) for t in docs())

    sizes = sorted(set(vocab_sizes))
    if not sizes or sizes[0] < 256:
        raise UserError(
            f"--vocab-sizes must all be at least 256 (the 256 byte tokens), got {list(vocab_sizes)}"
        )
    pattern = resolve_pattern(pattern)
    notes: list[str] = []
    sample = sample_documents(texts(), total_bytes, int(sample_mb * 1e6))
    sample_bytes = sum(len(t.encode("utf-8")) for t in sample)
    if not any(t.strip() for t in sample):
        raise UserError("the corpus has no text to compare")
    merges: list = []
    if sizes[-1] > 256:
        with warnings.catch_warnings():  # running out of pairs is reported below, as a note
            warnings.simplefilter("ignore")
            full = Tokenizer.train(
                sample,
                vocab_size=sizes[-1],
                pattern=pattern,
                special_tokens=(),
                workers=workers,
                progress=progress,
            )
        merges = list(full.merges)
    if 256 + len(merges) < sizes[-1]:
        notes.append(
            f"the {sample_bytes:,}-byte training sample only has room for {256 + len(merges):,} tokens; "
            "larger sizes are shown at that size"
        )
        sizes = sorted({min(s, 256 + len(merges)) for s in sizes})
    # A smaller vocabulary is a prefix of the merges: no retraining (see the module docstring).
    # A smaller vocabulary is a prefix of the merges: no retraining (see the module docstring).
    bpe = [Tokenizer(pattern=pattern, merges=merges[: s - 256], special_tokens={}) for s in sizes]
    largest = bpe[-1]
    example = pick_example(sample[0] if sample else "") if example is None else clean_surrogates(example)

    chars: set[str] = set()
    words: set[str] = set()
    n_chars = n_words = n_docs = n_sentences = n_bytes = 0
    id_counts = np.zeros(largest.n_vocab, dtype=np.int64)  # how often each id of the largest BPE occurs
    threads = workers or os.cpu_count() or 1
    bar = tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="counting", disable=None if progress else True
    )
    for batch in text_batches(texts(), BATCH_BYTES):
        size = sum(len(t.encode("utf-8")) for t in batch)
        n_docs += len(batch)
        n_bytes += size
        for text in batch:
            chars.update(text)
            found = WORD_RE.findall(text)
            words.update(found)
            n_words += len(found)
            n_chars += len(text)
            n_sentences += count_sentences(text)
        for ids in largest.encode_batch(batch, num_threads=threads):
            id_counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=largest.n_vocab)
        bar.update(size)
    bar.close()
    if n_bytes == 0:
        raise UserError("the corpus has no text to compare")

    def row(level: str, vocab: int, tokens: int, pieces: list[str]) -> Row:
        return Row(
            level,
            vocab,
            tokens,
            tokens / n_docs,
            tokens / max(1, n_sentences),
            n_bytes / max(1, tokens),
            pieces,
        )

    rows = [
        row("characters", len(chars), n_chars, [show_piece(c.encode()) for c in example]),
        row("words", len(words), n_words, [show_piece(w.encode()) for w in WORD_RE.findall(example)]),
    ]
    for s, tok in zip(sizes, bpe):
        pieces = [show_piece(tok.decode_bytes([i])) for i in tok.encode_ordinary(example)]
        rows.append(row(bpe_label(s), s, int(id_counts @ split_sizes(merges, s)), pieces))
    rows.sort(key=lambda r: r.vocab_size)
    return CompareResult(rows, n_docs, n_sentences, n_bytes, n_chars, example, sample_bytes, pattern, notes)


def split_sizes(merges: Sequence[tuple[int, int]], vocab_size: int) -> np.ndarray:
    """For every id of the full merge list: how many tokens it is in the tokenizer cut at ``vocab_size``.

    Merge-order BPE applies merges in increasing id order (a merge that uses token ``t`` comes after the
    merge that made ``t``), so cutting the merge list just stops the process earlier: each token of the
    full tokenizer falls apart into its two halves, recursively, until every piece is below ``vocab_size``.
    Counting the largest tokenizer's ids once therefore gives every smaller size's count (tests check
    this against encoding with each size).

    >>> split_sizes([(97, 97), (256, 256)], 257)[-2:].tolist()
    [1, 2]
    """
    size = np.ones(256 + len(merges), dtype=np.int64)
    for i in range(max(vocab_size, 256), len(size)):
        a, b = merges[i - 256]
        size[i] = size[a] + size[b]
    return size


HEADERS = (
    "level",
    "vocabulary",
    "tokens",
    "tokens/doc",
    "tokens/sentence",
    "bytes/token",
    "example sentence",
)


def _cells(r: Row) -> list[str]:
    return [
        r.level,
        f"{r.vocab_size:,}",
        f"{r.tokens:,}",
        f"{r.tokens_per_doc:,.1f}",
        f"{r.tokens_per_sentence:,.1f}",
        f"{r.bytes_per_token:.2f}",
        f"({len(r.example)}) " + "|".join(r.example),
    ]


def format_table(result: CompareResult, markdown: bool = True, example_width: int | None = None) -> str:
    """The comparison as a Markdown table, or as aligned columns for a terminal.

    The example column shows the token count, then the tokens separated by ``|`` (spaces as ``▁``);
    ``example_width`` cuts it to fit a terminal.
    """
    rows = [_cells(r) for r in result.rows]
    for cells in rows:
        if example_width and len(cells[-1]) > example_width:
            cells[-1] = cells[-1][: example_width - 1] + "…"
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|---|--:|--:|--:|--:|--:|---|"]
        for cells in rows:
            cells[-1] = "`" + cells[-1].replace("|", "\\|") + "`"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    widths = [max(len(c[k]) for c in [list(HEADERS), *rows]) for k in range(len(HEADERS))]
    fmt = lambda cells: "  ".join(  # noqa: E731  numbers right-aligned, text left-aligned
        c.ljust(w) if k in (0, 6) else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    return "\n".join([fmt(list(HEADERS)), *(fmt(c) for c in rows)])


def format_report(result: CompareResult, markdown: bool = True, example_width: int | None = None) -> str:
    """Table plus the corpus figures it was measured on."""
    mb = result.bytes / 1e6
    lines = [
        f"Corpus: {result.documents:,} documents, {result.sentences:,} sentences, {mb:,.1f} MB "
        f"({result.characters:,} characters); BPE trained on a {result.sample_bytes / 1e6:,.1f} MB sample.",
        "",
        f"Example sentence: {result.example}",
        "",
        format_table(result, markdown, example_width),
    ]
    lines += [f"\nNote: {n}" for n in result.notes]
    return "\n".join(lines)


def plot_png(result: CompareResult, title: str = "") -> bytes:
    """Vocabulary size (log x) against mean tokens per sentence, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must come before pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    bpe = [r for r in result.rows if r.level.startswith("BPE")]
    ax.plot([r.vocab_size for r in bpe], [r.tokens_per_sentence for r in bpe], "o-", label="byte-level BPE")
    for r in result.rows:
        if not r.level.startswith("BPE"):
            ax.plot([r.vocab_size], [r.tokens_per_sentence], "s", label=r.level)
        ax.annotate(r.level, (r.vocab_size, r.tokens_per_sentence), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("vocabulary size (log scale)")
    ax.set_ylabel("mean tokens per sentence")
    ax.set_title(title or "Vocabulary size against sequence length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: CompareResult, out: str | Path) -> list[Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` in ``out`` (each written atomically)."""
    from ownlm.io import write_bytes, write_json, write_text

    out = Path(out)
    paths = [out / "compare.md", out / "compare.json", out / "compare.png"]
    png = plot_png(result)  # before writing anything: a plotting failure leaves no partial set
    write_text(paths[0], "# Tokenization compared\n\n" + format_report(result) + "\n\n![plot](compare.png)\n")
    write_json(paths[1], result.to_json())
    write_bytes(paths[2], png)
    return paths
