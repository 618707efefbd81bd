"""Token shards on disk: flat little-endian uint16/uint32 ``.bin`` files read back with ``np.memmap``.

Layout written by ``ownlm encode`` (see DESIGN.md)::

    TOKENS/manifest.json          {"format": "ownlm-tokens", "version": 1, "dtype", "vocab_size", "eot_id",
                                   "tokenizer_sha256", "splits": {"train": {...}, "val": {...}}}
    TOKENS/tokenizer.json         the tokenizer that produced the ids
    TOKENS/train/shard_00000.bin  token ids, no header
    TOKENS/val/shard_00000.bin

A shard is written to a hidden temp file and renamed when complete; the manifest is written last, so a folder
without a manifest (an interrupted run) is never mistaken for a finished one.

>>> tokens = open_split("tokens", "train")  # doctest: +SKIP
>>> tokens[:8]                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ownlm.errors import UserError
from ownlm.io import read_manifest, sha256_file

FORMAT = "ownlm-tokens"
VERSION = 1
SPLITS = ("train", "val")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65,536 ids, else uint32.

    >>> dtype_for_vocab(50257), dtype_for_vocab(100277)
    (dtype('uint16'), dtype('uint32'))
    """
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    """Append token ids to ``DIR/SPLIT/shard_NNNNN.bin`` files of at most ``shard_tokens`` ids each.

    >>> w = ShardWriter("tokens", "train", np.uint16)  # doctest: +SKIP
    >>> w.write([1, 2, 3]); info = w.close()            # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, split: str, dtype, shard_tokens: int = 1 << 28):
        self.dir = Path(directory) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.shard_tokens = int(shard_tokens)
        self.shards: list[dict[str, Any]] = []
        self._file = None
        self._tmp: Path | None = None
        self._count = 0
        self._hash = None

    def _open(self) -> None:
        name = f"shard_{len(self.shards):05d}.bin"
        self._tmp = self.dir / f".{name}.tmp"
        self._file = open(self._tmp, "wb")
        self._count = 0
        self._hash = hashlib.sha256()

    def _finish(self) -> None:
        name = f"shard_{len(self.shards):05d}.bin"
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.dir / name)
        self.shards.append(
            {"file": f"{self.split}/{name}", "tokens": self._count, "sha256": self._hash.hexdigest()}
        )
        self._file = None

    def write(self, ids) -> None:
        """Append ids (any int sequence or array), starting new shards as they fill."""
        arr = np.asarray(ids, dtype=self.dtype)
        while arr.size:
            if self._file is None:
                self._open()
            take = min(arr.size, self.shard_tokens - self._count)
            chunk = arr[:take].tobytes()
            self._file.write(chunk)
            self._hash.update(chunk)
            self._count += take
            arr = arr[take:]
            if self._count == self.shard_tokens:
                self._finish()

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard and return the list of ``{"file", "tokens", "sha256"}``."""
        if self._file is not None and self._count:
            self._finish()
        elif self._file is not None:  # opened but empty: drop it
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = None
        return self.shards

    def abort(self) -> None:
        """Delete the unfinished shard (on error or Ctrl-C)."""
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = None


def read_tokens_manifest(directory: str | os.PathLike) -> dict:
    """Read and check ``TOKENS/manifest.json``; a folder that is not a token folder is a ``UserError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: token folder not found (write one with `ownlm encode`)")
    if not (directory / "manifest.json").is_file():
        raise UserError(
            f"{directory}: no manifest.json — not a finished token folder (re-run `ownlm encode ... --out {directory}`)"
        )
    m = read_manifest(directory, FORMAT, VERSION)
    for key in ("dtype", "vocab_size", "splits"):
        if key not in m:
            raise UserError(f"{directory / 'manifest.json'}: missing '{key}'")
    if m["dtype"] not in ("uint16", "uint32"):
        raise UserError(
            f"{directory / 'manifest.json'}: unknown dtype {m['dtype']!r} (expected uint16 or uint32)"
        )
    _check_splits(directory / "manifest.json", m)
    return m


def _inside_folder(name: str) -> bool:
    """A shard's file name is a relative path that stays inside the token folder (``train/shard_00000.bin``)."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def _check_splits(path: Path, m: dict) -> None:
    """The manifest's shape, checked once: a hand-edited ``splits`` (a string, a shard without a file name or a
    token count) is a ``UserError`` naming the manifest, never an ``AttributeError`` in a later stage."""
    damaged = f"{path}: the manifest is damaged"
    if type(m["vocab_size"]) is not int or m["vocab_size"] < 1:
        raise UserError(
            f"{damaged}: vocab_size must be a positive integer, got {m['vocab_size']!r}; re-run `ownlm encode`"
        )
    if not isinstance(m["splits"], dict):
        raise UserError(f"{damaged}: 'splits' must map split names to their shards, got {m['splits']!r}; "
                        "re-run `ownlm encode`")  # fmt: skip
    for name, info in m["splits"].items():
        shards = info.get("shards") if isinstance(info, dict) else None
        ok = isinstance(shards, list) and all(
            isinstance(sh, dict) and isinstance(sh.get("file"), str) and _inside_folder(sh["file"])
            and type(sh.get("tokens")) is int and sh["tokens"] >= 0 for sh in shards
        )  # fmt: skip
        if not ok:
            raise UserError(f"{damaged}: split '{name}' must hold 'shards': [{{'file': NAME, 'tokens': N}}, ...]; "
                            "re-run `ownlm encode`")  # fmt: skip


class TokenArray:
    """Several shards seen as one 1-D array (``len``, int index and step-1 slices, like a memmap)."""

    def __init__(self, parts: list[np.ndarray], dtype):
        self.parts = parts
        self.dtype = np.dtype(dtype)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])  # offsets[i] = first index of part i

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return np.asarray(self[start:stop])[::step]
            if stop <= start:
                return np.empty(0, dtype=self.dtype)
            out = []
            i = int(np.searchsorted(self.offsets, start, side="right")) - 1
            pos = start
            while pos < stop:
                lo = pos - self.offsets[i]
                hi = min(stop, self.offsets[i + 1]) - self.offsets[i]
                out.append(self.parts[i][lo:hi])
                pos = self.offsets[i] + hi
                i += 1
            return out[0] if len(out) == 1 else np.concatenate(out)
        idx = int(key)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(key)
        i = int(np.searchsorted(self.offsets, idx, side="right")) - 1
        return self.parts[i][idx - self.offsets[i]]

    def __array__(self, dtype=None, copy=None):
        arr = self[:]
        return arr.astype(dtype) if dtype is not None else arr


def open_split(
    tokens_dir: str | os.PathLike, split: str, manifest: dict | None = None, verify: bool | str = True
):
    """The ids of one split as a read-only 1-D array (a memmap, or a :class:`TokenArray` over several shards).

    ``verify``: each shard's size must match the manifest (always); ``True`` also checks every id is below
    the manifest's vocabulary size (a streaming max, about a second per GB); ``"full"`` also checks each
    shard's sha256. A damaged shard is a ``UserError`` naming it, never an ``IndexError`` mid-training.

    >>> val = open_split("tokens", "val")  # doctest: +SKIP
    >>> len(val), val[100:164].shape        # doctest: +SKIP
    """
    tokens_dir = Path(tokens_dir)
    m = manifest or read_tokens_manifest(tokens_dir)
    info = m["splits"].get(split)
    if info is None:
        raise UserError(
            f"{tokens_dir}: no '{split}' split in manifest.json (splits: {', '.join(m['splits'])})"
        )
    dtype = np.dtype("<u2" if m["dtype"] == "uint16" else "<u4")
    vocab = m.get("vocab_size")
    if verify and isinstance(vocab, int) and vocab > np.iinfo(dtype).max + 1:
        raise UserError(
            f"{tokens_dir / 'manifest.json'}: vocab_size {vocab:,} does not fit in {m['dtype']}; re-run `ownlm encode`"
        )
    parts = []
    for shard in info["shards"]:
        path = tokens_dir / shard["file"]
        if not path.is_file():
            raise UserError(f"{path}: shard listed in manifest.json is missing (re-run `ownlm encode`)")
        size = path.stat().st_size
        if size != shard["tokens"] * dtype.itemsize:
            raise UserError(
                f"{path}: {size} bytes, but manifest.json says {shard['tokens']} {m['dtype']} tokens "
                f"({shard['tokens'] * dtype.itemsize} bytes); the folder is damaged — re-run `ownlm encode`"
            )
        if verify == "full" and shard.get("sha256") and sha256_file(path) != shard["sha256"]:
            raise UserError(
                f"{path}: contents differ from the sha256 in manifest.json; the shard is damaged — re-run `ownlm encode`"
            )
        if shard["tokens"]:
            arr = np.memmap(path, dtype=dtype, mode="r")
            if verify and isinstance(vocab, int):
                check_ids(arr, vocab, path)
            parts.append(arr)
    if not parts:
        return np.empty(0, dtype=dtype)
    if len(parts) == 1:
        return parts[0]
    return TokenArray(parts, dtype)


def check_ids(ids: np.ndarray, vocab_size: int, where: str | os.PathLike, chunk: int = 1 << 24) -> None:
    """Raise a ``UserError`` naming ``where`` if an id is ``>= vocab_size``; reads ``ids`` in chunks, so a
    memmap is streamed, never loaded whole.

    >>> check_ids(np.array([1, 2, 9], np.uint16), 5, "x.bin")
    Traceback (most recent call last):
    ownlm.errors.UserError: x.bin: token id 9 at position 2 is not below the vocabulary size 5; the shard is damaged — re-run `ownlm encode`
    """
    for start in range(0, len(ids), chunk):
        part = np.asarray(ids[start : start + chunk])
        top = int(part.max())
        if top >= vocab_size:
            pos = start + int(np.argmax(part >= vocab_size))
            raise UserError(
                f"{where}: token id {int(part[pos - start])} at position {pos:,} is not below the vocabulary size "
                f"{vocab_size:,}; the shard is damaged — re-run `ownlm encode`"
            )


def check_tokenizer(manifest: dict, tokenizer_sha256: str | None, where: str, tokens_dir: str | os.PathLike):
    """Raise a ``UserError`` when the ids in ``tokens_dir`` came from another tokenizer than ``where``'s."""
    have = manifest.get("tokenizer_sha256")
    if tokenizer_sha256 and have and have != tokenizer_sha256:
        raise UserError(
            f"{tokens_dir}: these tokens were encoded with another tokenizer (sha256 {have[:12]}…) than {where} "
            f"(sha256 {tokenizer_sha256[:12]}…); re-encode the corpus with `ownlm encode ... --tokenizer` "
            "pointing at the same tokenizer"
        )
