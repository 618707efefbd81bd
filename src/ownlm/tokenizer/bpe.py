"""Byte-level BPE: the ``Tokenizer`` class (data model, encode/decode, save/load).

A tokenizer is a pre-tokenization regex, a list of merges and a few special tokens. Text is split by the
regex into chunks; each chunk's UTF-8 bytes start as byte tokens and merges are applied in the order they
were learned (merge ``i`` makes token ``256 + i`` from the pair ``(a, b)``). Everything else (the vocabulary,
merge ranks, the compiled regex, the tiktoken engine) is derived from those three in ``_build()``.

An imported vocabulary keeps its own ids: ``byte_ids`` says which id each byte has (``None`` for a byte the
vocabulary lacks: it is dropped before merging, as Hugging Face's byte-level BPE without an unknown token
does), ``merge_ids`` which id each merge makes, and special tokens may sit anywhere, below the bytes too.
The pattern may be a list of regexes applied in stages (``ownlm.tokenizer.pretokenize``). The fast engine
then runs on ranks in merge order and a table maps them to the file's ids.

Two encoders give identical ids (proven by tests): ``encode_reference`` is plain Python you can read in one
sitting; ``encode`` hands the same vocabulary to tiktoken's Rust core as ``mergeable_ranks``. That is exact
because no two ids share the same bytes (checked in ``_build``, guaranteed by the trainer), so tiktoken's
"merge the adjacent pair whose bytes have the lowest rank" picks the same merge as "the lowest merge id".

Lone surrogates (``"\\ud800"``, which Python strings can hold but UTF-8 cannot encode) are replaced by
U+FFFD before encoding, exactly as tiktoken does; a surrogate *pair* written as two code points becomes the
one character it stands for. So ``decode(encode(s)) == s`` for every string without lone surrogates.

>>> tok = Tokenizer(merges=[(104, 105)], pattern="gpt4", special_tokens={"<|endoftext|>": 257})
>>> tok.encode("hi<|endoftext|>", allowed_special="all")
[256, 257]
>>> tok.decode([256, 257])
'hi<|endoftext|>'
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import regex

from ownlm.errors import UserError
from ownlm.tokenizer.pretokenize import FUSED, STAGES, clean_surrogates, split_stages
from ownlm.tokenizer.train import train_merges

FORMAT = "ownlm-bpe"
VERSION = 2  # 2: byte_ids, merge_ids, ignore_merges, normalizer, pattern stages (written only when used)
EOT = "<|endoftext|>"
NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")  # unicodedata's normal forms, for a vocabulary's normalizer

# The exact pattern strings tiktoken uses (r50k_base/gpt2 and cl100k_base); the `regex` module reads them
# the same way as tiktoken's fancy-regex (possessive quantifiers included), which the parity tests check.
PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
PATTERNS["cl100k"] = PATTERNS["gpt4"]
_PROBE = "Hello, World! It's 12345 o'clock;\n\n  \tcaf\u00e9 na\u00efve \u4f60\u597d \U0001f600 e\u0301 x=1+2 \r\n end  "


def resolve_pattern(name_or_regex: str | Sequence[str]) -> str | list[str]:
    r"""A named pattern ("gpt2", "gpt4"/"cl100k") or a custom regex, checked to compile and to split a sample
    text into pieces that cover every character (a pattern that drops text would lose it in encoding);
    or a list of regexes applied in stages (``ownlm.tokenizer.pretokenize``), each checked to compile.

    >>> resolve_pattern("gpt2") == PATTERNS["gpt2"]
    True
    >>> resolve_pattern("(a+)+$")
    Traceback (most recent call last):
    ownlm.errors.UserError: pre-tokenization pattern '(a+)+$' keeps only 0 of 71 characters of a sample text (it must match every character, e.g. end it with |\s+|.)
    """
    if isinstance(name_or_regex, (list, tuple)):  # stages: each must compile; gaps are kept, none is lost
        for stage in name_or_regex:
            try:
                regex.compile(stage)
            except (regex.error, TypeError) as e:
                raise UserError(f"pre-tokenization stage {stage!r} is not a valid regex: {e}") from None
        if not name_or_regex:
            raise UserError("a pre-tokenization pattern list needs at least one regex")
        return [str(x) for x in name_or_regex]
    pattern = PATTERNS.get(name_or_regex, name_or_regex)
    if pattern in PATTERNS.values() or pattern in FUSED.values():
        return pattern
    try:
        rx = regex.compile(pattern)
        kept = sum(map(len, rx.findall(_PROBE, timeout=2.0)))
    except regex.error as e:
        raise UserError(f"pre-tokenization pattern {name_or_regex!r} is not a valid regex: {e}") from None
    except TimeoutError:
        raise UserError(
            f"pre-tokenization pattern {name_or_regex!r} takes over 2 s on a 71-character sample text "
            "(catastrophic backtracking?); simplify it"
        ) from None
    if kept != len(_PROBE):
        raise UserError(
            f"pre-tokenization pattern {name_or_regex!r} keeps only {kept} of {len(_PROBE)} characters "
            "of a sample text (it must match every character, e.g. end it with |\\s+|.)"
        )
    return pattern


def _missing_bytes_regex(missing: list[int]) -> regex.Pattern | None:
    """A regex matching every character whose UTF-8 form holds one of the ``missing`` byte values."""
    if not missing:
        return None
    ranges = []
    for b in missing:
        if b < 0x80:
            lo = hi = b
        elif b < 0xC0:  # a continuation byte: any character beyond ASCII may hold it
            lo, hi = 0x80, 0x10FFFF
        elif b < 0xC2:
            continue  # 0xc0, 0xc1: never in UTF-8 (they would start an overlong form)
        elif b < 0xE0:  # the lead byte of 2-, 3- or 4-byte forms: the code points it starts
            lo, hi = (b & 0x1F) << 6, ((b & 0x1F) << 6) | 0x3F
        elif b < 0xF0:
            lo, hi = max((b & 0x0F) << 12, 0x800), ((b & 0x0F) << 12) | 0xFFF
        elif b < 0xF8:
            lo, hi = max((b & 0x07) << 18, 0x10000), ((b & 0x07) << 18) | 0x3FFFF
        else:
            continue  # never in UTF-8
        hi = min(hi, 0x10FFFF)
        if lo <= hi:
            ranges.append(f"\\U{lo:08x}-\\U{hi:08x}")
    return regex.compile("[" + "".join(ranges) + "]") if ranges else None


def _show(b: bytes) -> str:
    """Token bytes for humans: UTF-8 where possible, escapes for control and broken bytes."""
    s = b.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in s)


class Tokenizer:
    """A byte-level BPE tokenizer. Build one with ``train``, ``load``, from merges, or from GPT-2's files (``ownlm.tokenizer.export.from_gpt2``).

    >>> tok = Tokenizer(merges=[(97, 98)])  # one merge: "a" + "b" -> token 256
    >>> tok.encode_ordinary("abc")
    [256, 99]
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        pattern: str | Sequence[str] = "gpt4",
        special_tokens: dict[str, int] | None = None,
        byte_order: Sequence[int] | None = None,
        *,
        byte_ids: Sequence[int | None] | None = None,
        merge_ids: Sequence[int] | None = None,
        ignore_merges: bool = False,
        normalizer: str | None = None,
    ):
        self.pattern = resolve_pattern(pattern)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        if byte_order is not None and byte_ids is not None:
            raise UserError("give byte_order or byte_ids, not both")
        if byte_order is not None:
            order = [int(x) for x in byte_order]
            if sorted(order) != list(range(256)):
                raise UserError("byte_order must be a permutation of the 256 byte values")
            byte_ids = [0] * 256
            for i, b in enumerate(order):
                byte_ids[b] = i
        self.byte_ids: list[int | None] = (
            list(range(256)) if byte_ids is None else [None if i is None else int(i) for i in byte_ids]
        )
        self.merge_ids = (
            [256 + k for k in range(len(self.merges))] if merge_ids is None else [int(i) for i in merge_ids]
        )
        self.ignore_merges = bool(ignore_merges)
        self.normalizer = normalizer  # a Unicode normal form applied to text before encoding (Qwen2: NFC)
        self._build()

    # ---------------------------------------------------------------- derived state, built in one place
    def _build(self) -> None:
        """Check the data model and derive vocab, ranks, regexes. Called by ``__init__`` and ``load``."""
        if len(self.byte_ids) != 256:
            raise UserError(
                f"byte_ids must list 256 ids (None for a missing byte), found {len(self.byte_ids)}"
            )
        if len(self.merge_ids) != len(self.merges):
            raise UserError(f"merge_ids has {len(self.merge_ids)} ids for {len(self.merges)} merges")
        # byte_order (id -> byte) when the bytes are exactly ids 0..255 in some order: GPT-2's files
        present = [i for i in self.byte_ids if i is not None]
        self.byte_order = None
        if sorted(present) == list(range(256)) and present != list(range(256)):
            self.byte_order = [0] * 256
            for b, i in enumerate(self.byte_ids):
                self.byte_order[i] = b
        vocab: dict[int, bytes] = {}
        for b, i in enumerate(self.byte_ids):
            if i is not None:
                if i < 0 or i in vocab:
                    raise UserError(f"byte 0x{b:02x} has id {i}, which is negative or another byte's id")
                vocab[i] = bytes([b])
        self.byte_to_id = {b: i for b, i in enumerate(self.byte_ids) if i is not None}  # byte value -> id
        byte_set = set(present)
        self.merge_ranks: dict[tuple[int, int], int] = {}  # (a, b) -> id of the merged token
        self._pair_rank: dict[tuple[int, int], int] = {}  # (a, b) -> merge index (lower merges first)
        for k, ((a, b), new) in enumerate(zip(self.merges, self.merge_ids)):
            if a not in vocab or b not in vocab:
                raise UserError(f"merge {k} ({a}, {b}) uses an id that does not exist yet")
            if (a, b) in self._pair_rank:
                raise UserError(f"merge {k} ({a}, {b}) repeats merge {self._pair_rank[(a, b)]}")
            if new in vocab and vocab[new] == vocab[a] + vocab[b] and new not in byte_set:
                pass  # another way to the same token (vocabularies converted from tiktoken list every split)
            elif new < 0 or new in vocab:
                raise UserError(f"merge {k} ({a}, {b}) makes id {new}, which another token has")
            self.merge_ranks[(a, b)] = new
            self._pair_rank[(a, b)] = k
            vocab[new] = vocab[a] + vocab[b]
        self.vocab: dict[int, bytes] = vocab
        self.bytes_to_id = {b: i for i, b in vocab.items()}
        if len(self.bytes_to_id) != len(vocab):  # the invariant that makes tiktoken exact
            seen: dict[bytes, int] = {}
            for i, b in vocab.items():
                if b in seen:
                    raise UserError(f"token ids {seen[b]} and {i} have the same bytes {_show(b)!r}")
                seen[b] = i
        ids = set()
        for name, i in self.special_tokens.items():
            if not isinstance(name, str) or not name or not isinstance(i, int) or isinstance(i, bool):
                raise UserError(f"special token {name!r}: {i!r} must be a non-empty string -> int id")
            if i >= 1 << 31:  # a hand-edited id: no embedding table has that many rows
                raise UserError(
                    f"special token {name!r} has id {i:,}, over the largest id ownlm takes (2**31 - 1)"
                )
            if i < 0 or i in vocab or i in ids:
                raise UserError(f"special token {name!r} has id {i}, which collides with another token")
            ids.add(i)
        self.special_ids = {i: s for s, i in self.special_tokens.items()}
        self.n_vocab = max([-1, *vocab, *ids]) + 1
        self.eot_id = self.special_tokens.get(EOT)
        # Pre-tokenization: the regex for findall, or the stages (and a fused regex proven equal, if any).
        staged = isinstance(self.pattern, list)
        self._stages = [regex.compile(p) for p in self.pattern] if staged else None
        fused = next((FUSED[n] for n, st in STAGES.items() if n in FUSED and st == self.pattern), None)
        self._fast_pattern = fused if staged else self.pattern  # what tiktoken splits with (None: Python)
        self._regex = regex.compile(self._fast_pattern or r"[\s\S]+")
        # Ranks: ids themselves when they are in merge order with all 256 bytes below 256 (ownlm, GPT-2);
        # else byte b has rank b, merge k rank 256 + k, and _rank_to_id maps ranks back to ids.
        self._ranks_are_ids = sorted(present) == list(range(256)) and self.merge_ids == [
            256 + k for k in range(len(self.merges))
        ]
        self._rank_to_id = None
        if not self._ranks_are_ids:
            n_ranks = 256 + len(self.merges)
            table = np.full(n_ranks + len(ids), -1, np.int64)
            table[[b for b in range(256) if self.byte_ids[b] is not None]] = present
            table[256:n_ranks] = self.merge_ids
            table[n_ranks:] = list(self.special_tokens.values())
            self._rank_to_id = table
        # Characters whose UTF-8 holds a byte the vocabulary lacks: text with one goes the Python way,
        # which drops those bytes before merging (tiktoken needs every byte).
        self._missing_rx = _missing_bytes_regex([b for b in range(256) if self.byte_ids[b] is None])
        if self.normalizer not in (None, *NORMAL_FORMS):
            raise UserError(f"normalizer {self.normalizer!r} is not one of {', '.join(NORMAL_FORMS)}")
        self._engine = None  # the tiktoken Encoding, made on first use
        self._piece_cache: dict[bytes, list[int]] = {}

    def to_dict(self) -> dict:
        """The canonical content of ``tokenizer.json`` (version 1 unless a version-2 field is needed)."""
        d = {"format": FORMAT, "version": 1, "pattern": self.pattern}
        d["merges"] = [list(m) for m in self.merges]
        d["special_tokens"] = dict(self.special_tokens)
        if self.byte_order is not None:
            d["byte_order"] = list(self.byte_order)
        elif self.byte_ids != list(range(256)):
            d["byte_ids"] = list(self.byte_ids)
        if self.merge_ids != [256 + k for k in range(len(self.merges))]:
            d["merge_ids"] = list(self.merge_ids)
        if self.ignore_merges:
            d["ignore_merges"] = True
        if self.normalizer:
            d["normalizer"] = self.normalizer
        new_fields = ("byte_ids", "merge_ids", "ignore_merges", "normalizer")
        if any(k in d for k in new_fields) or isinstance(self.pattern, list):
            d["version"] = 2
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        """The tokenizer ``to_dict`` describes (fields checked by the constructor)."""
        return cls(
            d["merges"],
            d["pattern"],
            d.get("special_tokens", {}),
            d.get("byte_order"),
            byte_ids=d.get("byte_ids"),
            merge_ids=d.get("merge_ids"),
            ignore_merges=d.get("ignore_merges", False),
            normalizer=d.get("normalizer"),
        )

    def with_special_tokens(self, special_tokens: dict[str, int]) -> Tokenizer:
        """The same vocabulary with these special tokens instead."""
        return Tokenizer.from_dict({**self.to_dict(), "special_tokens": dict(special_tokens)})

    def __getstate__(self) -> dict:  # pickle (multiprocessing) carries the data, not the engine
        return self.to_dict()

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(Tokenizer.from_dict(d).__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, specials={len(self.special_tokens)})"

    def extends(self, other: Tokenizer) -> bool:
        """True when this tokenizer encodes every text exactly as ``other`` does and only adds special tokens
        (a chat fine-tune's ``<|im_start|>``, ``<|im_end|>``): ids made by ``other`` mean the same here.

        >>> Tokenizer(special_tokens={"<|endoftext|>": 256, "<|im_end|>": 257}).extends(Tokenizer(special_tokens={"<|endoftext|>": 256}))
        True
        """
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("special_tokens"), theirs.pop("special_tokens")
        mine.pop("version"), theirs.pop("version")
        return mine == theirs and all(
            self.special_tokens.get(k) == v for k, v in other.special_tokens.items()
        )

    def sha256(self) -> str:
        """Hash of the canonical tokenizer.json content (token shards record it)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # ---------------------------------------------------------------- training and other constructors
    @classmethod
    def train(
        cls,
        inputs: Iterable[str | os.PathLike],
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] | dict[str, int] = (EOT,),
        workers: int | None = None,
        progress: bool = True,
        errors: str = "strict",
        trainer: str = "fast",
    ) -> Tokenizer:
        """Learn ``vocab_size - 256`` merges from ``inputs`` (special tokens come on top).

        ``inputs``: texts (``str``, always read as text) and paths (``pathlib.Path``: text files,
        folders of them or documents JSONL). Special tokens given as names get the ids right after the
        last merge; a dict gives explicit ids. If the corpus runs out of pairs the tokenizer is smaller
        (a warning says so). ``trainer="reference"`` uses the slow, readable trainer (same merges).

        >>> Tokenizer.train(["aaab aaab"], vocab_size=258, progress=False).merges
        [(97, 97), (97, 98)]
        """
        pattern = resolve_pattern(pattern)
        specials = list(special_tokens) if not isinstance(special_tokens, dict) else list(special_tokens)
        merges = train_merges(inputs, vocab_size, pattern, specials, workers, progress, errors, trainer)
        if isinstance(special_tokens, dict):
            ids = dict(special_tokens)
        else:
            ids = {s: 256 + len(merges) + k for k, s in enumerate(dict.fromkeys(specials))}
        return cls(merges, pattern, ids)

    # ---------------------------------------------------------------- encoding
    def _check_specials(self, text: str, allowed_special, disallowed_special) -> set[str]:
        """tiktoken's rules: the set of specials to encode; a disallowed one in ``text`` is a ValueError."""
        names = set(self.special_tokens)
        allowed = names if allowed_special == "all" else set(allowed_special)
        disallowed = names - allowed if disallowed_special == "all" else set(disallowed_special)
        unknown = (allowed | disallowed) - names
        if unknown:
            raise UserError(f"unknown special token(s) {sorted(unknown)}; this tokenizer has {sorted(names)}")
        for s in disallowed:
            if s in text:
                raise ValueError(
                    f"text contains the special token {s!r}; pass allowed_special={{{s!r}}} to encode it as "
                    f"a special token, or disallowed_special=() to encode it as ordinary text"
                )
        return allowed

    def normalize(self, text: str) -> str:
        """``text`` in the vocabulary's Unicode normal form (unchanged when it has none)."""
        return unicodedata.normalize(self.normalizer, text) if self.normalizer else text

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces BPE sees: the pattern's matches, or the stages' pieces (``pretokenize.split_stages``).

        >>> Tokenizer(pattern="gpt2").pre_tokenize("Hi  there")
        ['Hi', ' ', ' there']
        """
        if self._stages is not None:
            return split_stages(text, self._stages)
        return self._regex.findall(text)

    def _bpe_chunk(self, chunk: bytes) -> list[int]:
        """Merge-order BPE on one chunk: repeatedly merge the adjacent pair that was merged first in training.

        A byte the vocabulary lacks is dropped first; with ``ignore_merges`` a chunk that is a token is that
        token.
        """
        if self.ignore_merges and chunk in self.bytes_to_id:
            return [self.bytes_to_id[chunk]]
        ids = [self.byte_to_id[b] for b in chunk if b in self.byte_to_id]
        rank = self._pair_rank
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, 1 << 62))
            new = self.merge_ranks.get(pair)
            if new is None:
                break
            out, i = [], 0
            while i < len(ids):  # replace every occurrence, left to right
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def _split_specials(self, text: str, allowed: set[str]) -> list[str]:
        """``text`` cut around the allowed special tokens' strings (longest first); they sit at odd positions."""
        if not allowed:
            return [text]
        return regex.split(
            "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")", text
        )

    def encode_reference(self, text: str, allowed_special=(), disallowed_special="all") -> list[int]:
        """The readable pure-Python encoder; ``encode`` gives the same ids, faster."""
        text = self.normalize(text)
        allowed = self._check_specials(text, allowed_special, disallowed_special)
        ids: list[int] = []
        for k, piece in enumerate(self._split_specials(clean_surrogates(text), allowed)):
            if k % 2 == 1:  # regex.split puts the captured special tokens at odd positions
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self.pre_tokenize(piece):
                ids.extend(self._bpe_chunk(chunk.encode("utf-8")))
        return ids

    def _encode_python(self, text: str, allowed: set[str]) -> list[int]:
        """``encode_reference`` with each chunk's ids remembered: for staged patterns and missing bytes."""
        cache = self._piece_cache
        if len(cache) > 200_000:
            cache.clear()
        ids: list[int] = []
        for k, piece in enumerate(self._split_specials(clean_surrogates(text), allowed)):
            if k % 2 == 1:
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self.pre_tokenize(piece):
                b = chunk.encode("utf-8")
                got = cache.get(b)
                if got is None:
                    got = cache[b] = self._bpe_chunk(b)
                ids.extend(got)
        return ids

    def _tiktoken(self):
        """tiktoken's Encoding for our vocabulary, made once; None if it cannot be (or the pattern is staged).

        Ranks are the ids when ``_ranks_are_ids``, else merge order (``_rank_to_id`` maps them back).
        A custom pattern must mean the same in tiktoken's regex engine as in ``regex``: checked on a probe
        text, else we keep the reference encoder (with a warning).
        """
        if self._engine is None:
            self._engine = False
            if self._fast_pattern is None:
                return None
            try:
                import tiktoken

                if self._ranks_are_ids:
                    ranks, specials = self.bytes_to_id, self.special_tokens
                else:
                    ranks = {bytes([b]): b for b in range(256)}
                    for k, i in enumerate(self.merge_ids):
                        ranks.setdefault(self.vocab[i], 256 + k)  # a token's rank: its first merge
                    n = len(ranks)
                    specials = {s: n + k for k, s in enumerate(self.special_tokens)}
                engine = tiktoken.Encoding(
                    name=f"ownlm-{self.sha256()[:12]}",
                    pat_str=self._fast_pattern,
                    mergeable_ranks=ranks,
                    special_tokens=specials,
                )
                self._engine = engine
                known = self._fast_pattern in PATTERNS.values() or self._fast_pattern in FUSED.values()
                if not known and self._to_ids(
                    engine.encode_ordinary(self.normalize(_PROBE))
                ) != self.encode_reference(_PROBE, disallowed_special=()):
                    self._engine = False
                    warnings.warn(
                        "tiktoken reads this pattern differently: using the slower Python encoder",
                        stacklevel=3,
                    )
            except (ImportError, ValueError):  # no tiktoken, or a pattern its regex engine cannot read
                self._engine = False
        return self._engine or None

    def _to_ids(self, ranks: list[int]) -> list[int]:
        """Engine ranks -> this vocabulary's ids."""
        if self._rank_to_id is None:
            return ranks
        return self._rank_to_id[np.asarray(ranks, dtype=np.int64)].tolist() if ranks else []

    def _needs_python(self, text: str) -> bool:
        return self._missing_rx is not None and self._missing_rx.search(text) is not None

    def encode(self, text: str, allowed_special=(), disallowed_special="all") -> list[int]:
        """Text -> ids. A special token's string in ``text`` raises ``ValueError`` unless allowed.

        ``allowed_special``: "all" or a set of names encoded as their special ids. ``disallowed_special``:
        "all" (every special not allowed) or a set; specials in neither are encoded as ordinary text.
        Lone surrogates are encoded as U+FFFD, like tiktoken does.

        >>> tok = Tokenizer(special_tokens={"<|endoftext|>": 256})
        >>> tok.encode("a<|endoftext|>", allowed_special={"<|endoftext|>"})
        [97, 256]
        """
        text = self.normalize(text)
        allowed = self._check_specials(text, allowed_special, disallowed_special)
        engine = self._tiktoken()
        if engine is None or self._needs_python(text):
            return self._encode_python(text, allowed)
        return self._to_ids(engine.encode(text, allowed_special=allowed, disallowed_special=()))

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, special token strings treated as plain text."""
        text = self.normalize(text)
        engine = self._tiktoken()
        if engine is None or self._needs_python(text):
            return self._encode_python(text, set())
        return self._to_ids(engine.encode_ordinary(text))

    def encode_batch(
        self, texts: Sequence[str], num_threads: int = 2, allowed_special=(), disallowed_special="all"
    ):
        """Many texts -> lists of ids, in parallel threads (tiktoken releases the GIL)."""
        texts = [self.normalize(t) for t in texts] if self.normalizer else texts
        engine = self._tiktoken()
        if engine is None or any(self._needs_python(t) for t in texts):
            return [self.encode(t, allowed_special, disallowed_special) for t in texts]
        allowed = {a for t in texts for a in self._check_specials(t, allowed_special, disallowed_special)}
        out = engine.encode_batch(
            list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=()
        )
        return out if self._rank_to_id is None else [self._to_ids(x) for x in out]

    # ---------------------------------------------------------------- decoding
    def id_to_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for (a special token's UTF-8 string)."""
        if i in self.vocab:
            return self.vocab[i]
        if i in self.special_ids:
            return self.special_ids[i].encode("utf-8")
        raise ValueError(f"token id {i} is not in this tokenizer (n_vocab={self.n_vocab})")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the bytes they stand for."""
        vocab = self.vocab
        try:
            return b"".join([vocab[i] for i in ids])
        except KeyError:
            return b"".join(self.id_to_bytes(int(i)) for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a cut-off character) become U+FFFD by default.

        >>> Tokenizer().decode([104, 105])
        'hi'
        """
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ---------------------------------------------------------------- files
    def vocab_lines(self) -> list[str]:
        """Human-readable lines for ``vocab.txt``: id, bytes, and the pair it was merged from."""
        lines = [
            f"# ownlm byte-level BPE: {self.n_vocab} ids, {len(self.merges)} merges; id<TAB>token<TAB>from"
        ]
        for i in sorted(i for i in self.byte_ids if i is not None):
            lines.append(f"{i}\t{_show(self.vocab[i])}")
        for i, (a, b) in zip(self.merge_ids, self.merges):
            lines.append(f"{i}\t{_show(self.vocab[i])}\t{a} + {b}")
        for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1]):
            lines.append(f"{i}\t{s}\tspecial")
        return lines

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/tokenizer.json`` and ``directory/vocab.txt`` atomically; return the json path."""
        from ownlm.io import write_text

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise UserError(f"{directory}: is a file; save a tokenizer to a folder")
        write_text(directory / "vocab.txt", "\n".join(self.vocab_lines()) + "\n")
        # one field per line and one merge per line: diff-able, readable by eye, still plain JSON
        d = self.to_dict()
        merges = d.pop("merges")
        fields = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in d.items()]
        fields.append('  "merges": [' + ",".join(f"\n    [{a}, {b}]" for a, b in merges) + "\n  ]")
        path = directory / "tokenizer.json"
        write_text(path, "{\n" + ",\n".join(fields) + "\n}\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer from a directory holding ``tokenizer.json`` or from the file itself."""
        from ownlm.io import read_json

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        d = read_json(path, what="tokenizer file")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            hint = (
                " (a Hugging Face tokenizer.json? import it with `ownlm tokenizer` tools)"
                if found is None
                else ""
            )
            raise UserError(f"{path}: expected an '{FORMAT}' tokenizer file, found format {found!r}{hint}")
        v = d.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v > VERSION:
            raise UserError(
                f"{path}: tokenizer format version {v!r} is not one this ownlm understands (<= {VERSION}); "
                "upgrade ownlm or re-train the tokenizer"
            )
        try:
            merges, pattern, specials = d["merges"], d["pattern"], d.get("special_tokens", {})
            stages = isinstance(pattern, list) and all(isinstance(p, str) for p in pattern)
            if not (isinstance(pattern, str) or stages) or not isinstance(specials, dict):
                raise TypeError
            if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
            ):
                raise TypeError
            for key, none_ok in (("byte_ids", True), ("merge_ids", False), ("byte_order", False)):
                v = d.get(key)
                if v is not None and not (
                    isinstance(v, list) and all(type(x) is int or (none_ok and x is None) for x in v)
                ):
                    raise TypeError
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{path}: tokenizer file is damaged (needs 'pattern' str or [str, ...], 'merges' [[a, b], ...], "
                "'special_tokens' {name: id}; optional 'byte_ids', 'merge_ids' lists of ids)"
            ) from None
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
