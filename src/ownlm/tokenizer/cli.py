"""``ownlm tokenizer train | encode | decode | inspect | export | compare``: configs and entry functions.

Each config is a dataclass whose fields are the command's flags (see ``ownlm.config``); each entry function
takes the parsed config and returns an exit code. Mistakes a user can fix raise ``UserError`` (one line,
exit 2) before anything is written, and every file is written atomically, so a failed command leaves nothing.

    ownlm tokenizer train corpus/ --vocab-size 4096 --out tok
    ownlm tokenizer encode tok "Hello world"
    ownlm tokenizer export tok --to hf --out tok-hf
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.io import mark_output, prepare_output

Errors = Literal["strict", "replace"]
ERRORS_HELP = "what to do with bytes that are not UTF-8: strict (stop and say where) or replace (with U+FFFD)"


def _load(path: str):
    from ownlm.tokenizer import Tokenizer

    return Tokenizer.load(path)


def _tokenizer_file(path: str) -> Path:
    """The file a tokenizer argument names (a folder means its ``tokenizer.json``): an input never written."""
    p = Path(path)
    return p / "tokenizer.json" if p.is_dir() else p


def _check_file_out(out: str | None, *inputs: str | None) -> None:
    """The output rule for a file ``--out``, before any work: never one of ``inputs``, never a device."""
    if out:
        prepare_output(out, kind="file", folder=False, inputs=[i for i in inputs if i and i != "-"])


def _emit(text: str, out: str | None) -> None:
    """Print ``text`` or write it atomically to ``out`` (checked first by ``_check_file_out``)."""
    if out:
        from ownlm.io import write_text

        write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _read_input(path: str, errors: str) -> str:
    if path == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8", errors=errors)
        except UnicodeDecodeError as e:
            raise UserError(
                f"standard input is not UTF-8 (byte {e.start}); re-run with --errors replace"
            ) from None
    from ownlm.textsource import read_text_file

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    return read_text_file(p, errors=errors)


# ---------------------------------------------------------------------------------------------- train


@dataclass(kw_only=True)
class BPEConfig:
    """bpe: the tokenizer's size and pre-tokenization (``ownlm tokenizer train`` and ``ownlm build`` nest this
    section; flags stay flat: ``--vocab-size``, ``--pattern``)"""

    vocab_size: int = opt(
        4096,
        help="tokens learned: 256 bytes + merges (256 = bytes only); specials come on top",
        bounds="[256, inf)",
    )
    pattern: str = opt("gpt4", help="pre-tokenization regex: gpt4 (cl100k), gpt2, or your own regex")


@dataclass
class TrainConfig:
    """Train a byte-level BPE tokenizer; writes OUT/tokenizer.json, OUT/vocab.txt and OUT/config.json."""

    out: str = opt(help="output folder for tokenizer.json, vocab.txt and config.json")
    inputs: list[str] = opt([], positional=True, help="text files, folders of them, or documents JSONL")
    bpe: BPEConfig = opt(BPEConfig(), help="vocabulary size and pre-tokenization")
    special_tokens: list[str] = opt(["<|endoftext|>"], help="special tokens, given ids after the last merge")
    errors: Errors = opt("strict", help=ERRORS_HELP)
    workers: int | None = opt(None, help="processes for counting (default: all cores)")
    progress: bool = opt(True, help="show a progress bar")
    force: bool = opt(False, help="replace an --out folder that ownlm made for another kind of output")


def train_main(cfg: TrainConfig) -> int:
    from ownlm.textsource import expand_inputs

    if cfg.bpe.vocab_size < 256:
        raise UserError(f"--vocab-size must be at least 256 (the 256 byte tokens), got {cfg.bpe.vocab_size}")
    bad = [s for s in cfg.special_tokens if not s.strip()]
    if bad or len(set(cfg.special_tokens)) != len(cfg.special_tokens):
        raise UserError(f"--special-tokens must be distinct non-empty strings, got {cfg.special_tokens}")
    from ownlm.io import RunLock, mark_output, prepare_output
    from ownlm.tokenizer.bpe import FORMAT
    from ownlm.tokenizer.train import check_vocab_memory

    files = expand_inputs(cfg.inputs)  # fails early, before any work, on a missing input
    check_vocab_memory(cfg.bpe.vocab_size)
    out = prepare_output(cfg.out, kind=FORMAT, folder=True, force=cfg.force, inputs=files)
    with RunLock(out):
        _train_into(cfg, files, out)
        mark_output(out, FORMAT)
    return 0


def _train_into(cfg: TrainConfig, files: list[Path], out: Path) -> None:
    from ownlm.config import save_config
    from ownlm.tokenizer import Tokenizer

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = Tokenizer.train(
            files,
            vocab_size=cfg.bpe.vocab_size,
            pattern=cfg.bpe.pattern,
            special_tokens=cfg.special_tokens,
            workers=cfg.workers,
            progress=cfg.progress,
            errors=cfg.errors,
        )
    for w in caught:
        print(f"ownlm: note: {w.message}", file=sys.stderr)
    tok.save(out)
    save_config(cfg, out / "config.json")
    print(
        f"trained {256 + len(tok.merges):,} tokens ({len(tok.merges):,} merges) + {len(tok.special_tokens)} special "
        f"in {time.perf_counter() - start:.1f} s -> {out / 'tokenizer.json'}"
    )


# ------------------------------------------------------------------------------------ encode / decode


@dataclass
class EncodeConfig:
    """Encode text to token ids (space-separated on stdout, or a file)."""

    tokenizer: str = opt(positional=True, help="tokenizer folder (or its tokenizer.json)")
    text: str | None = opt(None, positional=True, help="the text to encode (or give --input)")
    input: str | None = opt(None, help="read the text from this file ('-' = standard input)")
    out: str | None = opt(None, help="write to this file instead of standard output")
    format: Literal["ids", "json", "tokens"] = opt(
        "ids", help="ids: space-separated; json: a list; tokens: a|b|c"
    )
    allowed_special: list[str] = opt(
        [],
        help="special tokens written in the text that become special ids ('all' = every one); "
        "others are ordinary text, the same rule as `ownlm generate --allow-special`",
    )
    specials_as_text: bool = opt(
        False, help="kept for old scripts: special-token strings are ordinary text unless --allowed-special"
    )
    errors: Errors = opt("strict", help=ERRORS_HELP)


def encode_main(cfg: EncodeConfig) -> int:
    from ownlm.tokenizer.compare import show_piece

    if (cfg.text is None) == (cfg.input is None):
        raise UserError("give the text to encode either as an argument or with --input FILE (one of them)")
    _check_file_out(cfg.out, cfg.input, str(_tokenizer_file(cfg.tokenizer)))
    tok = _load(cfg.tokenizer)
    text = cfg.text if cfg.text is not None else _read_input(cfg.input, cfg.errors)
    allowed = "all" if cfg.allowed_special == ["all"] else set(cfg.allowed_special)
    # one rule for user text everywhere: special-token strings are ordinary text unless allowed
    ids = tok.encode(text, allowed_special=allowed, disallowed_special=())
    if cfg.format == "json":
        result = json.dumps(ids)
    elif cfg.format == "tokens":
        result = "|".join(tok.special_ids.get(i) or show_piece(tok.id_to_bytes(i)) for i in ids)
    else:
        result = " ".join(map(str, ids))
    _emit(result + "\n", cfg.out)
    return 0


@dataclass
class DecodeConfig:
    """Decode token ids back to text."""

    tokenizer: str = opt(positional=True, help="tokenizer folder (or its tokenizer.json)")
    ids: list[str] = opt([], positional=True, help="token ids (or give --input)")
    input: str | None = opt(
        None, help="file of ids: whitespace/comma separated, or a JSON list ('-' = stdin)"
    )
    out: str | None = opt(None, help="write the text to this file instead of standard output")
    errors: Errors = opt(
        "replace", help="ids that end mid-character: replace (with U+FFFD) or strict (error)"
    )


def parse_ids(words: list[str], n_vocab: int, where: str = "ids") -> list[int]:
    """``["15496", "995,"]`` -> ``[15496, 995]``; a non-number or an id out of range is a ``UserError``."""
    ids = []
    for k, w in enumerate(t for word in words for t in word.replace(",", " ").strip("[] \n").split()):
        w = w.strip("[]")
        if not w.isdigit() or int(w) >= n_vocab:
            raise UserError(
                f"{where}: item {k + 1} ({w!r}) is not a token id of this tokenizer (0..{n_vocab - 1})"
            )
        ids.append(int(w))
    return ids


def decode_main(cfg: DecodeConfig) -> int:
    _check_file_out(cfg.out, cfg.input, str(_tokenizer_file(cfg.tokenizer)))
    tok = _load(cfg.tokenizer)
    if bool(cfg.ids) == (cfg.input is not None):
        raise UserError("give the ids either as arguments or with --input FILE (one of them)")
    words = cfg.ids if cfg.ids else [_read_input(cfg.input, "strict")]
    ids = parse_ids(words, tok.n_vocab, cfg.input or "ids")
    for i in ids:
        if i not in tok.vocab and i not in tok.special_ids:
            raise UserError(f"id {i} is not used by this tokenizer")
    try:
        text = tok.decode(ids, errors=cfg.errors)
    except UnicodeDecodeError as e:
        raise UserError(f"the ids' bytes are not UTF-8 at byte {e.start}; use --errors replace") from None
    _emit(text if cfg.out else text + "\n", cfg.out)
    return 0


# -------------------------------------------------------------------------------------------- inspect


@dataclass
class InspectConfig:
    """Show a tokenizer's size, pattern, special tokens and sample merges."""

    tokenizer: str = opt(positional=True, help="tokenizer folder (or its tokenizer.json)")
    top: int = opt(
        10, help="how many of the first and last merges and of the longest tokens to show", bounds="[1, inf)"
    )
    text: str | None = opt(None, help="also show how this text is split into tokens")


SHOW_CHARS = 40  # `tokenizer inspect` shows at most this many characters of a token


def clip(text: str, limit: int = SHOW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was.

    >>> clip("a" * 50, 10)
    'aaaaaaaaaa…(50 chars)'
    """
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def inspect_main(cfg: InspectConfig) -> int:
    from ownlm.tokenizer.bpe import PATTERNS
    from ownlm.tokenizer.compare import show_piece
    from ownlm.tokenizer.pretokenize import name_of

    tok = _load(cfg.tokenizer)
    names = [n for n, p in PATTERNS.items() if p == tok.pattern]
    names = names or [f"llama.cpp {n}" for n in [name_of(tok.pattern)] if n]
    show = lambda i: tok.special_ids.get(i) or clip(show_piece(tok.id_to_bytes(i)))  # noqa: E731
    lines = [
        f"tokenizer: {cfg.tokenizer}  (sha256 {tok.sha256()[:16]}…)",
        f"ids:       {tok.n_vocab:,} = {len(tok.byte_to_id)} bytes + {len(tok.merges):,} merges "
        f"+ {len(tok.special_tokens)} special",
        "bytes:     "
        + (
            "GPT-2 order (byte_order)"
            if tok.byte_order
            else "id = byte value"
            if tok.byte_ids == list(range(256))
            else "the vocabulary's own ids"
        ),
        f"pattern:   {' / '.join(names) if names else 'custom'}: {tok.pattern}",
        "special:   " + (", ".join(f"{s}={i}" for s, i in tok.special_tokens.items()) or "none"),
    ]
    n = max(0, cfg.top)
    merges = list(zip(tok.merge_ids, tok.merges))
    for title, part in (("first merges", merges[:n]), ("last merges", merges[-n:] if n else [])):
        if part:
            lines.append(f"{title}:")
            lines += [f"  {k:>7}  {show(a)} + {show(b)} -> {show(k)}" for k, (a, b) in part]
    longest = sorted(tok.vocab, key=lambda i: (-len(tok.vocab[i]), i))[:n]
    if longest and tok.merges:
        lines.append("longest tokens: " + "  ".join(f"{i}:{show(i)}" for i in longest))
    if cfg.text is not None:
        ids = tok.encode(cfg.text, disallowed_special=())
        lines.append(f"text ({len(ids)} tokens): " + "|".join(show(i) for i in ids))
        lines.append(f"ids: {' '.join(map(str, ids))}")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------- export


HF_KIND = "ownlm-hf-tokenizer"  # an --out folder holding an exported Hugging Face tokenizer.json
COMPARE_KIND = "ownlm-tokenizer-compare"
COMPARE_FILES = {"compare.md", "compare.json", "compare.png", "config.json", ".ownlm-lock"}


@dataclass
class ExportConfig:
    """Export a tokenizer for tiktoken (.tiktoken + .tiktoken.json) or Hugging Face (tokenizer.json)."""

    tokenizer: str = opt(positional=True, help="tokenizer folder (or its tokenizer.json)")
    to: Literal["tiktoken", "hf"] = opt(
        help="tiktoken: NAME.tiktoken + NAME.tiktoken.json; hf: tokenizer.json"
    )
    out: str = opt(help="tiktoken: the .tiktoken file; hf: a folder, or a file name ending in .json")


def export_main(cfg: ExportConfig) -> int:
    from ownlm.tokenizer.export import save_hf, save_tiktoken, tiktoken_sidecar

    tok = _load(cfg.tokenizer)
    source = [str(_tokenizer_file(cfg.tokenizer))]  # never written over, nor the folder holding it
    if cfg.to == "tiktoken":
        out = Path(cfg.out)
        ranks = out / "tokenizer.tiktoken" if out.is_dir() else out
        for path in (ranks, tiktoken_sidecar(ranks)):
            prepare_output(path, kind="file", folder=False, inputs=source)
        paths = save_tiktoken(tok, ranks)
        print(f"wrote {paths[0]} and {paths[1]}")
        print(f"load with: ownlm.tokenizer.export.load_tiktoken_export({str(paths[0])!r})")
    else:
        folder = Path(cfg.out).suffix.lower() != ".json"  # as save_hf reads it
        prepare_output(cfg.out, kind=HF_KIND, folder=folder, inputs=source)
        path = save_hf(tok, cfg.out)
        if folder:
            mark_output(cfg.out, HF_KIND)
        print(f"wrote {path}")
        print(f"load with: tokenizers.Tokenizer.from_file({str(path)!r})")
    return 0


# -------------------------------------------------------------------------------------------- compare


@dataclass
class CompareConfig:
    """Characters vs words vs BPE at several vocabulary sizes on your corpus: a table and a plot."""

    inputs: list[str] = opt([], positional=True, help="text files, folders of them, or documents JSONL")
    vocab_sizes: list[int] = opt(
        [256, 1024, 4096, 16384], help="BPE vocabulary sizes to compare (256 = bytes)", bounds="[256, inf)"
    )
    pattern: str = opt("gpt4", help="pre-tokenization regex for BPE: gpt4 (cl100k), gpt2, or your own regex")
    sample_mb: float = opt(
        8.0, help="train BPE on about this many MB spread over the corpus (counts use all)", bounds="(0, inf)"
    )
    example: str | None = opt(None, help="the example sentence to show split (default: one from the corpus)")
    out: str | None = opt(None, help="folder for compare.md, compare.json, compare.png and config.json")
    errors: Errors = opt("strict", help=ERRORS_HELP)
    workers: int | None = opt(None, help="processes/threads for training and counting (default: all cores)")
    progress: bool = opt(True, help="show progress bars")


def compare_main(cfg: CompareConfig) -> int:
    from ownlm.textsource import expand_inputs, iter_documents
    from ownlm.tokenizer.compare import compare_corpus, format_report, write_outputs

    if cfg.sample_mb <= 0:
        raise UserError(f"--sample-mb must be positive, got {cfg.sample_mb}")
    files = expand_inputs(cfg.inputs)
    if cfg.out:
        out = Path(cfg.out)
        if (
            out.is_dir()
            and (out / "compare.json").is_file()
            and {e.name for e in out.iterdir()} <= COMPARE_FILES
        ):
            mark_output(out, COMPARE_KIND)  # written by an ownlm from before the marker: known by its files
        prepare_output(cfg.out, kind=COMPARE_KIND, folder=True, inputs=files)
    total = sum(f.stat().st_size for f in files)
    result = compare_corpus(
        lambda: (text for _, text in iter_documents(cfg.inputs, errors=cfg.errors)),
        total,
        vocab_sizes=cfg.vocab_sizes,
        pattern=cfg.pattern,
        sample_mb=cfg.sample_mb,
        example=cfg.example,
        workers=cfg.workers,
        progress=cfg.progress,
    )
    print(format_report(result, markdown=False, example_width=70))
    if cfg.out:
        from ownlm.config import save_config

        paths = write_outputs(result, cfg.out)
        save_config(cfg, Path(cfg.out) / "config.json")
        mark_output(cfg.out, COMPARE_KIND)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
