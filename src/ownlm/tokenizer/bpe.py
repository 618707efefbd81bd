"""Byte-level BPE: the ``Tokenizer`` class (data model, encode/decode, save/load).

A tokenizer is a pre-tokenization regex, a list of merges and a few special tokens. Text is split by the
regex into chunks; each chunk's UTF-8 bytes start as byte tokens and merges are applied in the order they
were learned (merge ``i`` makes token ``256 + i`` from the pair ``(a, b)``). Everything else (the vocabulary,
merge ranks, the compiled regex, the tiktoken engine) is derived from those three in ``_build()``.

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
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex

from ownlm.errors import UserError

FORMAT = "ownlm-bpe"
VERSION = 1
EOT = "<|endoftext|>"

# The exact pattern strings tiktoken uses (r50k_base/gpt2 and cl100k_base); the `regex` module reads them
# the same way as tiktoken's fancy-regex (possessive quantifiers included), which the parity tests check.
PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
PATTERNS["cl100k"] = PATTERNS["gpt4"]
_PROBE = "Hello, World! It's 12345 o'clock;\n\n  \tcaf\u00e9 na\u00efve \u4f60\u597d \U0001f600 e\u0301 x=1+2 \r\n end  "


def resolve_pattern(name_or_regex: str) -> str:
    r"""A named pattern ("gpt2", "gpt4"/"cl100k") or a custom regex, checked to compile and to split a sample
    text into pieces that cover every character (a pattern that drops text would lose it in encoding).

    >>> resolve_pattern("gpt2") == PATTERNS["gpt2"]
    True
    >>> resolve_pattern("(a+)+$")
    Traceback (most recent call last):
    ownlm.errors.UserError: pre-tokenization pattern '(a+)+$' keeps only 0 of 71 characters of a sample text (it must match every character, e.g. end it with |\s+|.)
    """
    pattern = PATTERNS.get(name_or_regex, name_or_regex)
    if pattern in PATTERNS.values():
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


def clean_surrogates(text: str) -> str:
    """Replace lone surrogates by U+FFFD (and join surrogate pairs), the way tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _show(b: bytes) -> str:
    """Token bytes for humans: UTF-8 where possible, escapes for control and broken bytes."""
    s = b.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in s)


class Tokenizer:
    """A byte-level BPE tokenizer. Build one with ``train``, ``load``, ``from_gpt2`` or from merges.

    >>> tok = Tokenizer(merges=[(97, 98)])  # one merge: "a" + "b" -> token 256
    >>> tok.encode_ordinary("abc")
    [256, 99]
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | None = None,
        byte_order: Sequence[int] | None = None,
    ):
        self.pattern = resolve_pattern(pattern)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        self.byte_order = None if byte_order is None else [int(x) for x in byte_order]
        self._build()

    # ---------------------------------------------------------------- derived state, built in one place
    def _build(self) -> None:
        """Check the data model and derive vocab, ranks, regexes. Called by ``__init__`` and ``load``."""
        if self.byte_order is not None:
            if sorted(self.byte_order) != list(range(256)):
                raise UserError("byte_order must be a permutation of the 256 byte values")
            if self.byte_order == list(range(256)):
                self.byte_order = None
        order = self.byte_order or range(256)
        vocab = {i: bytes([b]) for i, b in enumerate(order)}
        self.byte_to_id = {b: i for i, b in enumerate(order)}  # byte value -> its token id
        self.merge_ranks: dict[tuple[int, int], int] = {}  # (a, b) -> id of the merged token
        for i, (a, b) in enumerate(self.merges):
            new = 256 + i
            if not (0 <= a < new and 0 <= b < new):
                raise UserError(f"merge {i} ({a}, {b}) uses an id that does not exist yet (< {new})")
            if (a, b) in self.merge_ranks:
                raise UserError(f"merge {i} ({a}, {b}) repeats merge {self.merge_ranks[(a, b)] - 256}")
            self.merge_ranks[(a, b)] = new
            vocab[new] = vocab[a] + vocab[b]
        self.vocab: dict[int, bytes] = vocab
        self.bytes_to_id = {b: i for i, b in vocab.items()}
        if len(self.bytes_to_id) != len(vocab):  # the invariant that makes tiktoken exact
            seen: dict[bytes, int] = {}
            for i, b in vocab.items():
                if b in seen:
                    raise UserError(f"token ids {seen[b]} and {i} have the same bytes {_show(b)!r}")
                seen[b] = i
        n_base = 256 + len(self.merges)
        ids = set()
        for name, i in self.special_tokens.items():
            if not isinstance(name, str) or not name or not isinstance(i, int) or isinstance(i, bool):
                raise UserError(f"special token {name!r}: {i!r} must be a non-empty string -> int id")
            if i < n_base or i in ids:
                raise UserError(f"special token {name!r} has id {i}, which collides with another token")
            ids.add(i)
        self.special_ids = {i: s for s, i in self.special_tokens.items()}
        self.n_vocab = max([n_base - 1, *ids]) + 1
        self.eot_id = self.special_tokens.get(EOT)
        self._regex = regex.compile(self.pattern)
        self._engine = None  # the tiktoken Encoding, made on first use

    def to_dict(self) -> dict:
        """The canonical content of ``tokenizer.json``."""
        d = {"format": FORMAT, "version": VERSION, "pattern": self.pattern}
        d["merges"] = [list(m) for m in self.merges]
        d["special_tokens"] = dict(self.special_tokens)
        if self.byte_order is not None:
            d["byte_order"] = list(self.byte_order)
        return d

    def __getstate__(self) -> dict:  # pickle (multiprocessing) carries the data, not the engine
        return self.to_dict()

    def __setstate__(self, d: dict) -> None:
        self.__init__(d["merges"], d["pattern"], d["special_tokens"], d.get("byte_order"))

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
        same = (self.pattern, self.merges, self.byte_order) == (other.pattern, other.merges, other.byte_order)
        return same and all(self.special_tokens.get(k) == v for k, v in other.special_tokens.items())

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
        from ownlm.tokenizer.train import train_merges

        pattern = resolve_pattern(pattern)
        specials = list(special_tokens) if not isinstance(special_tokens, dict) else list(special_tokens)
        merges = train_merges(inputs, vocab_size, pattern, specials, workers, progress, errors, trainer)
        if isinstance(special_tokens, dict):
            ids = dict(special_tokens)
        else:
            ids = {s: 256 + len(merges) + k for k, s in enumerate(dict.fromkeys(specials))}
        return cls(merges, pattern, ids)

    @classmethod
    def from_gpt2(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """GPT-2's tokenizer from OpenAI's ``encoder.json`` + ``vocab.bpe`` (see ``ownlm.tokenizer.export``)."""
        from ownlm.tokenizer.export import from_gpt2

        return from_gpt2(encoder_json, vocab_bpe)

    @classmethod
    def from_hf_vocab(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> Tokenizer:
        """A GPT-2-style tokenizer from HF ``vocab.json`` + ``merges.txt`` (see ``ownlm.tokenizer.export``)."""
        from ownlm.tokenizer.export import from_hf_vocab

        return from_hf_vocab(vocab_json, merges_txt)

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

    def _bpe_chunk(self, chunk: bytes) -> list[int]:
        """Merge-order BPE on one chunk: repeatedly merge the adjacent pair with the lowest merge id."""
        ids = [self.byte_to_id[b] for b in chunk]
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merge_ranks.get(p, 1 << 62))
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

    def encode_reference(self, text: str, allowed_special=(), disallowed_special="all") -> list[int]:
        """The readable pure-Python encoder; ``encode`` gives the same ids, faster."""
        allowed = self._check_specials(text, allowed_special, disallowed_special)
        text = clean_surrogates(text)
        pieces = [text]
        if allowed:
            pieces = regex.split(
                "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")", text
            )
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 1:  # regex.split puts the captured special tokens at odd positions
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self._regex.findall(piece):
                ids.extend(self._bpe_chunk(chunk.encode("utf-8")))
        return ids

    def _tiktoken(self):
        """tiktoken's Encoding for our vocabulary (ranks = ids), made once; None if it cannot be.

        A custom pattern must mean the same in tiktoken's regex engine as in ``regex``: checked on a probe
        text, else we keep the reference encoder (with a warning).
        """
        if self._engine is None:
            self._engine = False
            try:
                import tiktoken

                engine = tiktoken.Encoding(
                    name=f"ownlm-{self.sha256()[:12]}",
                    pat_str=self.pattern,
                    mergeable_ranks=self.bytes_to_id,
                    special_tokens=self.special_tokens,
                )
                if self.pattern in PATTERNS.values() or engine.encode_ordinary(
                    _PROBE
                ) == self.encode_reference(_PROBE, disallowed_special=()):
                    self._engine = engine
                else:
                    warnings.warn(
                        "tiktoken reads this pattern differently: using the slower Python encoder",
                        stacklevel=3,
                    )
            except (ImportError, ValueError):  # no tiktoken, or a pattern its regex engine cannot read
                pass
        return self._engine or None

    def encode(self, text: str, allowed_special=(), disallowed_special="all") -> list[int]:
        """Text -> ids. A special token's string in ``text`` raises ``ValueError`` unless allowed.

        ``allowed_special``: "all" or a set of names encoded as their special ids. ``disallowed_special``:
        "all" (every special not allowed) or a set; specials in neither are encoded as ordinary text.
        Lone surrogates are encoded as U+FFFD, like tiktoken does.

        >>> tok = Tokenizer(special_tokens={"<|endoftext|>": 256})
        >>> tok.encode("a<|endoftext|>", allowed_special={"<|endoftext|>"})
        [97, 256]
        """
        allowed = self._check_specials(text, allowed_special, disallowed_special)
        engine = self._tiktoken()
        if engine is None:
            return self.encode_reference(text, allowed, ())
        return engine.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, special token strings treated as plain text."""
        engine = self._tiktoken()
        return engine.encode_ordinary(text) if engine else self.encode_reference(text, (), ())

    def encode_batch(
        self, texts: Sequence[str], num_threads: int = 2, allowed_special=(), disallowed_special="all"
    ):
        """Many texts -> lists of ids, in parallel threads (tiktoken releases the GIL)."""
        engine = self._tiktoken()
        if engine is None:
            return [self.encode(t, allowed_special, disallowed_special) for t in texts]
        allowed = {a for t in texts for a in self._check_specials(t, allowed_special, disallowed_special)}
        return engine.encode_batch(
            list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=()
        )

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
        for i in range(256):
            lines.append(f"{i}\t{_show(self.vocab[i])}")
        for i, (a, b) in enumerate(self.merges):
            lines.append(f"{256 + i}\t{_show(self.vocab[256 + i])}\t{a} + {b}")
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
            if not isinstance(pattern, str) or not isinstance(specials, dict):
                raise TypeError
            if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
            ):
                raise TypeError
            return cls(merges, pattern, specials, d.get("byte_order"))
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{path}: tokenizer file is damaged (needs 'pattern' str, 'merges' [[a, b], ...], "
                "'special_tokens' {name: id})"
            ) from None
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
