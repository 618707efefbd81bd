"""Caps on what extraction holds in memory: per file, per archive, read in bounded chunks.

A reader gets a file's bytes whole (parsers for PDF, EPUB, DOCX and zips need random access), so the only way
to bound memory is to bound what is read. Files and zip members are read in ``chunk_bytes`` pieces and counted
as they come (a zip's own size headers can lie), and refused with a clear problem past:

- ``max_file_bytes`` (default 128 MiB; ``--max-file-mb`` or ``OWNLM_MAX_FILE_MB``): one file, or one zip member once decompressed;
- ``max_archive_bytes`` (default 1 GiB; ``--max-archive-mb`` or ``OWNLM_MAX_ARCHIVE_MB``): a zip on disk, and everything decompressed
  from it, nested zips included.

Memory bound: the archive being read (at most ``max_archive_bytes``), plus a nested zip per level (at most 3,
each at most ``max_file_bytes``), plus the member being read and its reader's working copies (text decoded to
str and cleaned: about 4x the member) — about ``max_archive_bytes + 8 * max_file_bytes``, 2 GiB with the
defaults, whatever the input size. A 1 MB zip holding 1 GB of text stops at the first 128 MiB of it.

>>> Limits(max_file_bytes=10).check_size(11)
Traceback (most recent call last):
ownlm.extract.limits.LimitExceeded: 11 bytes, over the limit for one file or zip member (--max-file-mb): 10 bytes; split it or raise the limit
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ownlm.config import check_number

MiB = 1 << 20


class LimitExceeded(Exception):
    """A file or archive is larger than the limit; the message gives the figure and what to do (the caller
    says which file)."""


def _env_mb(name: str, default_mb: int) -> int:
    """A limit in MiB from the environment, checked like a flag: ``OWNLM_MAX_FILE_MB=abc`` is an error, not
    silently the default."""
    value = os.environ.get(name, "").strip()
    mb = check_number(value, f"the environment variable {name}", "(0, 1e9]") if value else default_mb
    return max(1, int(mb * MiB))


def _figure(n: int) -> str:
    return f"{n:,} bytes" if n < MiB else f"{n / MiB:,.0f} MiB"


@dataclass
class Limits:
    """How much extraction may read: per file (or zip member), per archive, and per read call."""

    max_file_bytes: int = 128 * MiB
    max_archive_bytes: int = 1024 * MiB
    chunk_bytes: int = MiB
    _archive_used: int = field(default=0, repr=False)

    @classmethod
    def from_env(cls, file_mb: float = 0, archive_mb: float = 0) -> Limits:
        """The given figures in MiB (the command's ``--max-file-mb`` / ``--max-archive-mb``), else
        ``OWNLM_MAX_FILE_MB`` / ``OWNLM_MAX_ARCHIVE_MB`` when set, else the defaults."""
        return cls(
            int(file_mb * MiB) if file_mb > 0 else _env_mb("OWNLM_MAX_FILE_MB", 128),
            int(archive_mb * MiB) if archive_mb > 0 else _env_mb("OWNLM_MAX_ARCHIVE_MB", 1024),
        )

    def _cap(self, archive: bool) -> tuple[int, str]:
        """The limit in bytes and what it caps, with the flag that raises it."""
        if archive:
            return self.max_archive_bytes, "the limit for one archive (--max-archive-mb)"
        return self.max_file_bytes, "the limit for one file or zip member (--max-file-mb)"

    def check_size(self, size: int, archive: bool = False) -> None:
        """Refuse up front a file (or, with ``archive``, a zip) whose size on disk is already over its limit."""
        limit, what = self._cap(archive)
        if size > limit:
            raise LimitExceeded(f"{size:,} bytes, over {what}: {_figure(limit)}; split it or raise the limit")

    def read(self, f: BinaryIO, archive: bool = False) -> bytes:
        """Read ``f`` to the end in ``chunk_bytes`` pieces, stopping past its limit (one file's, or an archive's)."""
        limit, what = self._cap(archive)
        chunks, total = [], 0
        while block := f.read(min(self.chunk_bytes, limit + 1 - total)):
            total += len(block)
            if total > limit:
                raise LimitExceeded(
                    f"more than {_figure(limit)} once read, over {what}; unpack or split it, or raise the limit"
                )
            chunks.append(block)
        return b"".join(chunks)

    def read_file(self, path: Path, archive: bool = False) -> bytes:
        """A file's bytes, refused up front by its size and again while reading (it may grow)."""
        self.check_size(path.stat().st_size, archive)
        with open(path, "rb") as f:
            return self.read(f, archive)

    def start_archive(self) -> None:
        """A new top-level archive: its decompressed bytes are counted from zero."""
        self._archive_used = 0

    def archive_full(self) -> bool:
        """Whether the current archive has used up ``max_archive_bytes`` (stop reading it)."""
        return self._archive_used > self.max_archive_bytes

    def take(self, n: int) -> None:
        """Count ``n`` decompressed bytes against the current archive; refuse past ``max_archive_bytes``."""
        self._archive_used += n
        if self._archive_used > self.max_archive_bytes:
            raise LimitExceeded(
                f"the archive decompresses past {_figure(self.max_archive_bytes)}; the rest of it was not read — "
                "unpack it, or raise the limit (--max-archive-mb)"
            )
