"""``ownlm encode``: a corpus' train/val splits -> token shards (``TOKENS/{train,val}/*.bin`` + manifest).

Inputs, each handled by kind:

- a corpus folder from ``ownlm corpus``: ``train.jsonl`` -> train, ``val.jsonl`` -> val;
- documents JSONL: the last ``--val-fraction`` of its documents -> val;
- a text file (or a folder of them): the last ``--val-fraction`` of its characters -> val (as nanoGPT does).

Every document is followed by the end-of-text token, so ``decode(train ids)`` is the documents joined with
``<|endoftext|>``. Encoding streams: one input file is in memory at a time; texts are encoded in parallel
threads (tiktoken releases the GIL), long texts cut at line starts where the built-in split patterns always
have a boundary, so the ids equal those of encoding the whole text. Everything is written to a temp folder
beside ``--out`` and moved into place at the end: an interrupted run leaves nothing half-written.

    ownlm encode corpus/ --tokenizer tok/ --out tokens/
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ownlm.config import opt, save_config
from ownlm.errors import UserError

# Cut long texts into pieces of about this many characters, so both cores have work within one file.
PIECE_CHARS = 1 << 18
# Encode this many characters per parallel batch (bounded memory, steady progress bar).
BATCH_CHARS = 1 << 22
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


@dataclass(kw_only=True)
class EncodeConfig:
    """Encode a corpus into token shards for pretraining."""

    corpus: list[str] = opt(
        [],
        positional=True,
        help="a corpus folder (train.jsonl/val.jsonl from `ownlm corpus`), documents JSONL, text files or folders",
    )
    tokenizer: str = opt(help="tokenizer folder (or its tokenizer.json) from `ownlm tokenizer train`")
    out: str = opt(help="output folder for the token shards and manifest.json")
    val_fraction: float = opt(
        0.1,
        help="for text files and documents JSONL: the last fraction of each file that becomes validation data",
        bounds="[0, 1)",
    )
    workers: int = opt(0, help="encoding threads (0: one per CPU core)")
    shard_tokens: int = opt(1 << 28, help="maximum tokens per shard file", bounds="[1, inf)")
    errors: Literal["strict", "replace"] = opt(
        "strict", help="text files that are not UTF-8: stop with an error, or replace bad bytes"
    )
    text_field: str = opt("text", help="the JSON field holding a document's text in JSONL inputs")
    progress: bool = opt(True, help="show a progress bar")
    force: bool = opt(False, help="replace an --out folder that ownlm made for another kind of output")


def split_points(text: str, piece_chars: int = PIECE_CHARS) -> list[int]:
    """Cut positions in ``text`` (line starts before a non-space character) about ``piece_chars`` apart.

    No pre-token of the gpt2/gpt4 split patterns spans such a cut, so encoding the pieces separately gives
    the same ids as encoding ``text`` whole.

    >>> split_points("ab\\ncd\\nef", piece_chars=2)
    [3, 6]
    """
    cuts = []
    pos = piece_chars
    while pos < len(text):
        m = _SAFE_CUT.search(text, pos)
        if m is None:
            break
        cuts.append(m.start() + 1)
        pos = m.start() + 1 + piece_chars
    return cuts


def _pieces(text: str) -> list[str]:
    bounds = [0, *split_points(text), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _count_records(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def iter_split_documents(cfg: EncodeConfig) -> Iterator[tuple[str, str]]:
    """Yield ``(split, text)`` for every document of the inputs, in order."""
    from ownlm.textsource import JSONL_SUFFIXES, expand_inputs, iter_documents

    if not cfg.corpus:
        raise UserError("no input given: name a corpus folder, documents JSONL or text files")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    for item in cfg.corpus:
        p = Path(item)
        if p.is_dir() and (p / "train.jsonl").is_file():  # a corpus folder: its own split
            for split in ("train", "val"):
                if (p / f"{split}.jsonl").is_file():
                    for _, text in iter_documents([p / f"{split}.jsonl"], text_field=cfg.text_field):
                        yield split, text
            continue
        for path in expand_inputs([p]):
            if path.suffix.lower() in JSONL_SUFFIXES:
                n = _count_records(path)
                n_val = max(1, round(n * cfg.val_fraction)) if n >= 2 and cfg.val_fraction > 0 else 0
                for i, (_, text) in enumerate(iter_documents([path], text_field=cfg.text_field)):
                    if n == 1 and cfg.val_fraction > 0:  # one document: split it like a text file
                        yield from _split_text(text, cfg.val_fraction)
                    else:
                        yield ("val" if i >= n - n_val else "train"), text
            else:
                _, text = next(iter_documents([path], errors=cfg.errors))
                yield from _split_text(text, cfg.val_fraction)


def _split_text(text: str, val_fraction: float) -> Iterator[tuple[str, str]]:
    cut = int(len(text) * (1.0 - val_fraction))  # nanoGPT: train = data[:int(n * 0.9)]
    if text[:cut]:
        yield "train", text[:cut]
    if text[cut:]:
        yield "val", text[cut:]


def _input_bytes(inputs: list[str]) -> int:
    total = 0
    for item in inputs:
        p = Path(item)
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def encode_corpus(cfg: EncodeConfig) -> dict:
    """Encode the inputs of ``cfg`` into ``cfg.out``; return the manifest written."""
    from ownlm.data.shards import FORMAT, dtype_for_vocab
    from ownlm.io import RunLock, clean_stale_temps, prepare_output
    from ownlm.tokenizer import Tokenizer

    tok = Tokenizer.load(cfg.tokenizer)
    if tok.eot_id is None:
        raise UserError(
            f"{cfg.tokenizer}: the tokenizer has no <|endoftext|> token to separate documents; "
            "train it with that special token (the default)"
        )
    tok_file = Path(cfg.tokenizer)
    tok_file = tok_file / "tokenizer.json" if tok_file.is_dir() else tok_file
    dtype = dtype_for_vocab(tok.n_vocab)
    out = prepare_output(
        cfg.out, kind=FORMAT, folder=True, force=cfg.force, inputs=[*cfg.corpus, cfg.tokenizer]
    )
    with RunLock(out):
        clean_stale_temps(out.parent, prefix=f".{out.name}.")  # left by killed encode runs
        return _encode_into(cfg, tok, tok_file, dtype, out)


def _encode_into(cfg: EncodeConfig, tok, tok_file: Path, dtype, out: Path) -> dict:
    import numpy as np
    from tqdm import tqdm

    from ownlm.data.shards import FORMAT, VERSION, ShardWriter
    from ownlm.io import mark_output, write_bytes, write_manifest

    tmp = out.parent / f".{out.name}.encoding-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    writers = {s: ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
    stats = {s: {"tokens": 0, "bytes": 0, "documents": 0} for s in ("train", "val")}
    workers = cfg.workers or os.cpu_count() or 1
    bar = tqdm(
        total=_input_bytes(cfg.corpus),
        unit="B",
        unit_scale=True,
        desc="encode",
        disable=None if cfg.progress else True,
    )
    eot = np.array([tok.eot_id], dtype=dtype)

    def flush(batch: list[tuple[str, str, bool]], pool: ThreadPoolExecutor) -> None:
        # batch: (split, piece, ends_document); pieces of one document are consecutive.
        for (split, piece, last), ids in zip(batch, pool.map(tok.encode_ordinary, [b[1] for b in batch])):
            writers[split].write(np.asarray(ids, dtype=dtype))
            nbytes = len(piece.encode("utf-8"))
            stats[split]["bytes"] += nbytes
            bar.update(nbytes)
            if last:
                writers[split].write(eot)
                stats[split]["documents"] += 1
        batch.clear()

    try:
        with ThreadPoolExecutor(workers) as pool:
            batch: list[tuple[str, str, bool]] = []
            size = 0
            for split, text in iter_split_documents(cfg):
                pieces = _pieces(text) or [""]
                for i, piece in enumerate(pieces):
                    batch.append((split, piece, i == len(pieces) - 1))
                    size += len(piece)
                if size >= BATCH_CHARS:
                    flush(batch, pool)
                    size = 0
            flush(batch, pool)
        splits = {}
        for s, w in writers.items():
            shards = w.close()
            splits[s] = {**stats[s], "shards": shards, "tokens": sum(x["tokens"] for x in shards)}
        if splits["train"]["tokens"] == 0:
            raise UserError(f"no text found in {', '.join(cfg.corpus)}: nothing to encode")
        write_bytes(tmp / "tokenizer.json", tok_file.read_bytes())
        save_config(cfg, tmp / "config.json")
        mark_output(tmp, FORMAT)
        fields = {
            "dtype": dtype.name,
            "vocab_size": tok.n_vocab,
            "eot_id": tok.eot_id,
            "tokenizer_sha256": tok.sha256(),
            "splits": splits,
        }
        write_manifest(tmp, FORMAT, VERSION, **fields)  # last: a folder without it is unfinished
        _replace_dir(tmp, out)
    except BaseException:
        for w in writers.values():
            w.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return {"format": FORMAT, "version": VERSION, **fields}


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an older output there (rename, then delete the old one).
    ``prepare_output`` has checked that ``target`` is empty or an output ownlm made."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(cfg: EncodeConfig) -> int:
    m = encode_corpus(cfg)
    for s in ("train", "val"):
        info = m["splits"][s]
        ratio = info["bytes"] / max(1, info["tokens"])
        print(
            f"{s}: {info['documents']:,} documents, {info['tokens']:,} tokens ({m['dtype']}), "
            f"{info['bytes']:,} bytes ({ratio:.2f} bytes/token)"
        )
    print(f"wrote {cfg.out}/manifest.json")
    return 0
