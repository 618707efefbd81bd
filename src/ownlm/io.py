"""Files between stages: atomic writes, JSON/JSONL with line numbers in errors, manifests, sha256.

Nothing is ever half-written: every output goes to a temp file in the same folder, is fsynced,
then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ownlm.errors import UserError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file beside ``path``; on success fsync and rename it to ``path``, on error delete it.

    >>> with atomic_write("out.txt") as f:  # doctest: +SKIP
    ...     f.write("hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or broken file into a clear ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: {what} is not valid JSON: {e.msg}") from None


def iter_jsonl(path: str | os.PathLike, errors: str = "raise") -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    ``errors="raise"`` stops at the first broken line with ``file:line`` in the message;
    ``errors="skip"`` yields ``(line_number, UserError)`` for broken lines so callers can report and go on.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                err = UserError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason})")
                if errors == "raise":
                    raise err from None
                yield lineno + 1, err
                return
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                err = UserError(f"{path}:{lineno}: broken JSON line: {e.msg} (column {e.colno})")
                if errors == "raise":
                    raise err from None
                yield lineno, err


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records as JSONL atomically; return how many were written."""
    n = 0
    with atomic_write(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(directory: str | os.PathLike, format: str, version: int, **fields: Any) -> Path:
    """Write ``directory/manifest.json`` with the format name and version first."""
    path = Path(directory) / "manifest.json"
    write_json(path, {"format": format, "version": version, **fields})
    return path


def read_manifest(directory: str | os.PathLike, format: str, max_version: int) -> dict:
    """Read ``directory/manifest.json`` and check its format name and version."""
    path = Path(directory) / "manifest.json"
    m = read_json(path, what=f"{format} manifest")
    if not isinstance(m, dict) or m.get("format") != format:
        found = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise UserError(f"{path}: expected a '{format}' manifest, found '{found}'")
    if not isinstance(m.get("version"), int) or m["version"] > max_version:
        raise UserError(
            f"{path}: {format} version {m.get('version')} is newer than this ownlm understands "
            f"(<= {max_version}); upgrade ownlm or re-run the stage"
        )
    return m


def check_out(path: str | os.PathLike, folder: bool) -> None:
    """Refuse an ``--out`` that cannot be written as asked (a file where a folder is wanted, or the other
    way round, or a file standing where a parent folder must be), before any work is done.

    >>> check_out("/tmp", folder=False)
    Traceback (most recent call last):
    ownlm.errors.UserError: --out /tmp: is a folder; give a file name
    """
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"--out {p}: is a file; give a folder name")
    if not folder and p.is_dir():
        raise UserError(f"--out {p}: is a folder; give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {p}: {parent} is a file, not a folder")
            break
