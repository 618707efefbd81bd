"""Tokenizers in other people's formats: tiktoken and Hugging Face out, GPT-2's files in.

Our vocabulary is merge-ordered (merge ``i`` makes id ``256 + i``) and no two ids share bytes, so it is
exactly what tiktoken calls ``mergeable_ranks`` (bytes -> rank), and what a Hugging Face byte-level BPE
``tokenizer.json`` holds once every byte is spelled as a printable character.

GPT-2's ``encoder.json``/``vocab.json`` spell each byte through ``bytes_to_unicode`` (a printable stand-in
per byte, so that ``" the"`` is stored as ``"Ġthe"``) and number its 256 byte tokens in that table's order,
not by byte value; ``Tokenizer.byte_order`` records that numbering so imported ids stay GPT-2's ids.

>>> tok = from_gpt2("encoder.json", "vocab.bpe")  # doctest: +SKIP
>>> tok.encode("Hello world")  # doctest: +SKIP
[15496, 995]
>>> save_tiktoken(tok, "gpt2.tiktoken"); enc = load_tiktoken_export("gpt2.tiktoken")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ownlm.errors import UserError
from ownlm.io import atomic_write, read_json, sha256_bytes, write_json
from ownlm.tokenizer.bpe import PATTERNS, Tokenizer

if TYPE_CHECKING:
    import tiktoken

TIKTOKEN_FORMAT = "ownlm-tiktoken"
TIKTOKEN_VERSION = 1

# Text that exercises every branch of the usual split patterns; an export is checked on it before writing.
PROBE_TEXT = (
    "Hello world! It's 2024: we'll see, they've said... 12345678 apples\n\n  indented\tTab\r\n"
    "Ünïcödé naïve café — «quotes» 日本語のテキスト 🙂👍🏽 e\u0301 x\u200dy   \n end  "
)


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte -> printable character (openai/gpt-2 ``encoder.py``).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes get code points 256, 257, ...
    in byte order. The table's order is also the order of GPT-2's 256 byte token ids.

    >>> bytes_to_unicode()[ord(" ")]
    'Ġ'
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    # Dict order: kept bytes first, then the remapped ones; GPT-2's byte token ids follow this order.
    return dict(sorted(table.items(), key=lambda kv: (kv[0] not in keep, kv[0])))


def _spell(data: bytes) -> str:
    """Bytes as GPT-2/HF byte-level characters: ``b" the"`` -> ``"Ġthe"``."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in data)


# ---------------------------------------------------------------------------------------------- import


def from_gpt2(encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
    """GPT-2's tokenizer from OpenAI's ``encoder.json`` + ``vocab.bpe``; ids are GPT-2's ids.

    >>> tok = from_gpt2("gpt2/encoder.json", "gpt2/vocab.bpe")  # doctest: +SKIP
    >>> tok.eot_id  # doctest: +SKIP
    50256
    """
    vocab = read_json(encoder_json, what="GPT-2 encoder.json")
    return _from_vocab_and_merges(vocab, _read_merges(vocab_bpe), f"{encoder_json} + {vocab_bpe}")


def from_hf_vocab(vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> Tokenizer:
    """A byte-level BPE from Hugging Face ``vocab.json`` + ``merges.txt`` (e.g. the ``gpt2`` model folder).

    The ids must be in merge order (256 byte tokens, then merge ``i`` -> ``256 + i``, then special tokens),
    as they are for GPT-2; any other numbering is refused with a message rather than silently renumbered.

    >>> tok = from_hf_vocab("gpt2/vocab.json", "gpt2/merges.txt")  # doctest: +SKIP
    """
    vocab = read_json(vocab_json, what="Hugging Face vocab.json")
    return _from_vocab_and_merges(vocab, _read_merges(merges_txt), f"{vocab_json} + {merges_txt}")


def _read_merges(path: str | os.PathLike) -> list[tuple[str, str, int]]:
    """``(left, right, line_number)`` for every merge line; the ``#version`` header and blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: merges file not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: merges file is not UTF-8 text (byte {e.start})") from None
    merges = []
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{path}:{lineno}: expected a merge 'LEFT RIGHT', found {line[:60]!r}")
        merges.append((parts[0], parts[1], lineno))
    return merges


def _from_vocab_and_merges(vocab: object, merges: list[tuple[str, str, int]], where: str) -> Tokenizer:
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise UserError(f"{where}: the vocabulary must be a JSON object of token -> integer id")
    if len(set(vocab.values())) != len(vocab):
        raise UserError(f"{where}: two tokens share one id")
    # The 256 byte tokens: ids 0..255 in any order, each the spelling of one byte.
    byte_order = [-1] * 256
    for b, ch in bytes_to_unicode().items():
        i = vocab.get(ch)
        if i is None or not 0 <= i < 256:
            raise UserError(
                f"{where}: byte 0x{b:02x} (spelled {ch!r}) must have an id below 256, found {i}; "
                "only byte-level BPE vocabularies whose first 256 ids are the bytes can be imported"
            )
        byte_order[i] = b
    # Merge i must create id 256 + i: then our merge-ordered model keeps the file's ids unchanged.
    pairs = []
    for i, (left, right, lineno) in enumerate(merges):
        ids = vocab.get(left), vocab.get(right), vocab.get(left + right)
        if None in ids:
            raise UserError(
                f"{where}: merge line {lineno} ({left} {right}) uses a token missing from the vocabulary"
            )
        if ids[2] != 256 + i:
            raise UserError(
                f"{where}: merge line {lineno} ({left} {right}) makes id {ids[2]}, expected {256 + i}; "
                "ownlm needs ids in merge order (bytes, then one id per merge)"
            )
        pairs.append((ids[0], ids[1]))
    # Whatever is left (GPT-2: "<|endoftext|>" = 50256) is a special token with its own id.
    n_ordinary = 256 + len(pairs)
    special = {tok: i for tok, i in vocab.items() if i >= n_ordinary}
    if len(special) + n_ordinary != len(vocab):
        raise UserError(f"{where}: some tokens are neither bytes, merges nor ids above the merges")
    return Tokenizer(
        pattern=PATTERNS["gpt2"],
        merges=pairs,
        special_tokens=dict(sorted(special.items(), key=lambda kv: kv[1])),
        byte_order=None if byte_order == list(range(256)) else byte_order,
    )


# -------------------------------------------------------------------------------------------- tiktoken


def tiktoken_ranks(tok: Tokenizer) -> dict[bytes, int]:
    """The vocabulary as tiktoken ``mergeable_ranks``: token bytes -> id (specials excluded).

    >>> tiktoken_ranks(tok)[b" the"]  # doctest: +SKIP
    262
    """
    if not tok._ranks_are_ids:
        raise UserError(
            "this tokenizer's ids are not in merge order (an imported vocabulary): tiktoken's ranks cannot "
            "hold it; export it as a Hugging Face tokenizer.json instead"
        )
    if not isinstance(tok.pattern, str):
        raise UserError("this tokenizer splits text in stages; tiktoken takes one pattern")
    ranks = {tok.vocab[i]: i for i in sorted(tok.vocab)}
    if len(ranks) != len(tok.vocab):
        raise UserError(
            "this tokenizer has two ids with the same bytes; it cannot be expressed as tiktoken ranks"
        )
    return ranks


def to_tiktoken(tok: Tokenizer, name: str = "ownlm") -> tiktoken.Encoding:
    """A ``tiktoken.Encoding`` that encodes exactly like ``tok`` (same ids, same special tokens).

    >>> enc = to_tiktoken(tok); enc.encode("hello") == tok.encode("hello")  # doctest: +SKIP
    True
    """
    import tiktoken

    return tiktoken.Encoding(
        name,
        pat_str=tok.pattern,
        mergeable_ranks=tiktoken_ranks(tok),
        special_tokens=dict(tok.special_tokens),
    )


def tiktoken_sidecar(path: str | os.PathLike) -> Path:
    """Where the JSON sidecar of a ``.tiktoken`` ranks file lives: ``name.tiktoken`` -> ``name.tiktoken.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_tiktoken(tok: Tokenizer, path: str | os.PathLike, name: str | None = None) -> tuple[Path, Path]:
    """Write ``path`` (tiktoken's format: ``base64(token bytes) id`` per line) and its JSON sidecar.

    The sidecar holds what the ranks file cannot: the split pattern and the special tokens.
    Returns ``(ranks_path, sidecar_path)``.

    >>> save_tiktoken(tok, "out/mytok.tiktoken")  # doctest: +SKIP
    (PosixPath('out/mytok.tiktoken'), PosixPath('out/mytok.tiktoken.json'))
    """
    path = Path(path)
    ranks = tiktoken_ranks(tok)
    data = b"".join(base64.b64encode(t) + b" " + str(i).encode() + b"\n" for t, i in ranks.items())
    sidecar = {
        "format": TIKTOKEN_FORMAT,
        "version": TIKTOKEN_VERSION,
        "name": name or path.name.removesuffix(".tiktoken"),
        "pat_str": tok.pattern,
        "special_tokens": dict(tok.special_tokens),
        "n_vocab": tok.n_vocab,
        "ranks_file": path.name,
        "ranks_sha256": sha256_bytes(data),
    }
    with atomic_write(path, "wb") as f:
        f.write(data)
    write_json(tiktoken_sidecar(path), sidecar)
    return path, tiktoken_sidecar(path)


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file. Unlike ``tiktoken.load.load_tiktoken_bpe`` this never caches by path
    (its cache would hand back a stale file after a re-export to the same place)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tiktoken ranks file not found")
    ranks = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise UserError(f"{path}:{lineno}: expected 'BASE64 RANK', found {line[:60]!r}") from None
    return ranks


def load_tiktoken_export(path: str | os.PathLike) -> tiktoken.Encoding:
    """The ``tiktoken.Encoding`` saved by :func:`save_tiktoken` (give the ``.tiktoken`` file or its sidecar).

    >>> enc = load_tiktoken_export("out/mytok.tiktoken"); enc.encode("hello")  # doctest: +SKIP
    """
    import tiktoken

    path = Path(path)
    if path.name.endswith(".tiktoken.json"):
        path = path.with_name(path.name.removesuffix(".json"))
    meta = read_json(tiktoken_sidecar(path), what="tiktoken sidecar")
    if not isinstance(meta, dict) or meta.get("format") != TIKTOKEN_FORMAT:
        raise UserError(
            f"{tiktoken_sidecar(path)}: not an ownlm tiktoken sidecar (format {TIKTOKEN_FORMAT!r})"
        )
    if not isinstance(meta.get("version"), int) or meta["version"] > TIKTOKEN_VERSION:
        raise UserError(
            f"{tiktoken_sidecar(path)}: version {meta.get('version')} is newer than this ownlm reads"
        )
    if meta.get("ranks_sha256") and sha256_bytes(path.read_bytes()) != meta["ranks_sha256"]:
        raise UserError(f"{path}: sha256 differs from the one in its sidecar; the ranks file was changed")
    return tiktoken.Encoding(
        meta.get("name", "ownlm"),
        pat_str=meta["pat_str"],
        mergeable_ranks=read_tiktoken_ranks(path),
        special_tokens=meta.get("special_tokens", {}),
    )


# -------------------------------------------------------------------------------------- Hugging Face


def hf_pattern(pattern: str) -> str:
    """``pattern`` rewritten for HF tokenizers' regex engine (Oniguruma, Ruby syntax).

    Oniguruma reads ``X{1,3}+`` as "``X{1,3}``, one or more times", not as a possessive interval like
    Python's ``regex`` and tiktoken do (cl100k's ``\\p{N}{1,3}+`` would swallow any run of digits), so each
    such interval becomes the atomic group ``(?>X{1,3})``, which means the same in both engines.

    >>> hf_pattern(r"\\p{N}{1,3}+| ?\\p{L}+")
    '(?>\\\\p{N}{1,3})| ?\\\\p{L}+'
    """
    import regex

    out = pattern
    while m := regex.search(r"(?<!\\)\{\d+(?:,\d*)?\}\+", out):  # left to right, so nesting works
        start = _atom_start(out, m.start())
        out = out[:start] + "(?>" + out[start : m.end() - 1] + ")" + out[m.end() :]
    return out


def _atom_start(p: str, end: int) -> int:
    """Index where the regex atom ending just before ``end`` starts: ``[...]``, ``(...)``, ``\\p{..}``, ``\\x``, ``c``."""
    last = end - 1
    if p[last] == "]":
        i = last - 1
        while i >= 0 and not (p[i] == "[" and (i == 0 or p[i - 1] != "\\")):
            i -= 1
        return i
    if p[last] == ")":
        depth, i = 0, last
        while i >= 0:
            if p[i] in "()" and (i == 0 or p[i - 1] != "\\"):
                depth += 1 if p[i] == ")" else -1
                if depth == 0:
                    return i
            i -= 1
        return 0
    if p[last] == "}" and "\\" in p[:last]:
        i = p.rfind("\\", 0, last)
        if p[i + 1 : i + 3] in ("p{", "P{"):
            return i
    if last >= 1 and p[last - 1] == "\\":
        return last - 1
    return last


def to_hf_json(tok: Tokenizer) -> dict:
    """A Hugging Face ``tokenizer.json`` (as a dict) that encodes exactly like ``tok``.

    Split(regex) isolates the same pieces as our pattern, ByteLevel(use_regex=False) spells their bytes,
    the BPE model applies our merges by rank, and special tokens are ``added_tokens`` (and in the model's vocabulary, at their own ids).

    >>> import tokenizers, json  # doctest: +SKIP
    >>> hf = tokenizers.Tokenizer.from_str(json.dumps(to_hf_json(tok)))  # doctest: +SKIP
    """
    vocab = {_spell(b): i for i, b in sorted(tok.vocab.items())}
    # Special tokens are in the model's vocabulary too: HF places an added token that the model lacks after
    # the model's last id, whatever id it is given (an imported vocabulary has its specials at 0, 1, 2...).
    vocab |= {s: i for s, i in tok.special_tokens.items() if s not in vocab}
    merges = [f"{_spell(tok.vocab[a])} {_spell(tok.vocab[b])}" for a, b in tok.merges]
    added = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                *(
                    {
                        "type": "Split",
                        "pattern": {"Regex": hf_pattern(p)},
                        "behavior": "Isolated",
                        "invert": False,
                    }
                    for p in ([tok.pattern] if isinstance(tok.pattern, str) else tok.pattern)
                ),
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },  # fmt: skip
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": tok.ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }


def save_hf(tok: Tokenizer, path: str | os.PathLike, check: bool = True) -> Path:
    """Write a Hugging Face ``tokenizer.json``; ``path`` is the file (``*.json``) or a folder for it.

    A folder also gets ``tokenizer_config.json`` so ``transformers.AutoTokenizer.from_pretrained(folder)``
    works. With ``check`` (and ``tokenizers`` installed) the export is first compared with ``tok`` on a
    probe text, so a pattern that HF's regex engine reads differently is refused instead of written.

    >>> save_hf(tok, "out/hf")  # doctest: +SKIP
    PosixPath('out/hf/tokenizer.json')
    """
    path = Path(path)
    folder = path.suffix.lower() != ".json"
    file = path / "tokenizer.json" if folder else path
    text = json.dumps(to_hf_json(tok), ensure_ascii=False, indent=2)
    if check:
        _check_hf(tok, text)
    with atomic_write(file) as f:
        f.write(text + "\n")
    if folder:
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000_000}
        if tok.eot_id is not None:
            eot = next(s for s, i in tok.special_tokens.items() if i == tok.eot_id)
            config |= {"bos_token": eot, "eos_token": eot, "unk_token": eot}
        write_json(path / "tokenizer_config.json", config)
    return file


def _check_hf(tok: Tokenizer, text: str) -> None:
    try:
        import tokenizers
    except ImportError:
        return
    hf = tokenizers.Tokenizer.from_str(text)
    probe = PROBE_TEXT + "".join(tok.special_tokens)
    ours = tok.encode(probe, allowed_special="all")
    theirs = hf.encode(probe, add_special_tokens=False).ids
    if ours != theirs:
        raise UserError(
            "the exported Hugging Face tokenizer splits text differently from this tokenizer "
            f"(its pattern {tok.pattern!r} means something else in HF's Oniguruma regex engine); "
            "nothing was written"
        )
