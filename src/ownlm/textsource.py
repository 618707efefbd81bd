"""Text from the user's inputs: text files, folders of them, documents JSONL, or a corpus folder.

Used by every stage that reads raw text (tokenizer training, ``tokenizer compare``, ``encode``).
Bad input fails here, once, with a message that names the file and says what to do.

>>> for source, text in iter_documents(["notes/"]):  # doctest: +SKIP
...     print(source, len(text))
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import iter_jsonl

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text", ""}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named by ``inputs``: files as given, folders walked (sorted) for text and JSONL files.

    A corpus folder (one with ``train.jsonl``) stands for its training split.
    """
    if not inputs:
        raise UserError("no input given: name text files, folders or documents JSONL")
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            if (p / "train.jsonl").is_file():
                files.append(p / "train.jsonl")
                continue
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES
            )
            if not found:
                raise UserError(
                    f"{p}: folder has no text files (.txt, .md, .rst, .jsonl); "
                    "for PDF, HTML, EPUB, DOCX or chat exports run `ownlm extract` first"
                )
            files.extend(found)
        else:
            raise UserError(f"{p}: no such file or folder")
    return files


# Reading a text file whole holds its bytes and its str at once (a str of ASCII is 1 byte a character, of
# other scripts 2-4), and callers then copy it once or twice: about 4x the file at peak.
READ_WHOLE_FACTOR = 4


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(path: Path, size: int, available: int | None = None) -> None:
    """Refuse, before reading, a file too large to hold in memory, with the figures.

    >>> check_fits(Path("huge.log"), 3 << 30, available=8 << 30)
    Traceback (most recent call last):
    ownlm.errors.UserError: huge.log: 3.0 GiB; reading it needs about 12.0 GiB of memory, more than the 8.0 GiB here; split it into smaller files (e.g. `split -C 500M huge.log part-`)
    """
    available = memory_bytes() if available is None else available
    need = size * READ_WHOLE_FACTOR
    if available and need > available:
        raise UserError(
            f"{path}: {size / 2**30:.1f} GiB; reading it needs about {need / 2**30:.1f} GiB of memory, more than "
            f"the {available / 2**30:.1f} GiB here; split it into smaller files (e.g. `split -C 500M {path} part-`)"
        )


def read_text_file(path: Path, errors: str = "strict") -> str:
    """A whole text file as str. Binary or non-UTF-8 content is a ``UserError`` naming the byte offset;
    a file too large for this machine's memory is refused up front (``check_fits``)."""
    check_fits(path, path.stat().st_size)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data[:8192] and errors == "strict":
        raise UserError(
            f"{path}: looks like a binary file (NUL byte at offset {data.index(0)}); "
            "give text files, or run `ownlm extract` on it first"
        )
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it to UTF-8, or re-run with --errors replace"
        ) from None


def _record_text(rec: object, path: Path, lineno: int, text_field: str) -> str:
    if isinstance(rec, dict):
        if isinstance(rec.get(text_field), str):
            return rec[text_field]
        if isinstance(rec.get("messages"), list):  # a conversation record
            return "\n".join(
                f"{m.get('name', '')}: {m.get('text', '')}" for m in rec["messages"] if isinstance(m, dict)
            )
    raise UserError(f"{path}:{lineno}: expected a JSON object with a '{text_field}' string field")


def iter_documents(
    inputs: Sequence[str | os.PathLike], errors: str = "strict", text_field: str = "text"
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, text)`` for every document in ``inputs`` (a text file is one document)."""
    for path in expand_inputs(inputs):
        if path.suffix.lower() in JSONL_SUFFIXES:
            for lineno, rec in iter_jsonl(path):
                yield f"{path}:{lineno}", _record_text(rec, path, lineno, text_field)
        else:
            yield str(path), read_text_file(path, errors=errors)
