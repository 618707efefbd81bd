"""``ownlm extract PATH... --out FILE.jsonl``: files, folders and zips -> documents and conversations.

Each file goes to the first reader in ``base.READERS`` whose ``sniff`` takes it (chat exports before
generic formats); a ``.zip`` that no reader claims is opened and its members read as
``archive.zip/inner/path``. Records are written as JSONL (atomically), documents as
``{"id", "text", "source", "meta"}`` and conversations as ``{"id", "source", "messages", "meta"}``;
ids are stable (sha1 of source name and record index). One unreadable file never stops the run: it is
reported in the summary printed at the end and written beside the output (``FILE.summary.json``);
``--strict`` makes it fatal. The exit code is non-zero only when nothing usable came out.

    ownlm extract notes/ books/ chats.zip --out docs.jsonl --redact
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sys
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from ownlm.config import opt
from ownlm.errors import UserError, machine_error
from ownlm.extract.base import (
    Conversation,
    Document,
    ExtractOptions,
    Problem,
    Reader,
    ReaderError,
    Source,
    load_readers,
    pick_reader,
)
from ownlm.extract.limits import LimitExceeded, Limits
from ownlm.extract.redact import redact, redact_names
from ownlm.extract.signal import export_copies
from ownlm.extract.slack import export_roots, read_export
from ownlm.extract.summary import Summary
from ownlm.io import atomic_write, prepare_output, write_json

MAX_ZIP_DEPTH = 3  # zips inside zips inside zips: deeper is refused


@dataclass
class ExtractConfig:
    """Extract text from files, folders and .zip archives into one JSONL file of documents and conversations."""

    out: str = opt(help="output JSONL file; a summary is written beside it as OUT.summary.json")
    inputs: list[str] = opt([], positional=True, help="files, folders or .zip archives to read")
    text_field: str | None = opt(
        None, help="JSON/JSONL/CSV: the field that holds the text (default: guess text/content/body/...)"
    )
    password: str | None = opt(None, help="password for encrypted PDFs and encrypted zip archives")
    redact: bool = opt(
        False, help="replace phone numbers, e-mail addresses and URLs with <PHONE>, <EMAIL>, <URL>"
    )
    drop_system: bool = opt(
        True, help="chat exports: drop system lines (encryption notice, joined, left, ...)"
    )
    keep_system: bool = opt(
        False,
        help="chat exports: keep deleted messages and system lines in meta['system'], each with its kind "
        "(the same as --no-drop-system)",
    )
    date_order: str = opt(
        "auto",
        choices=["auto", "day-first", "month-first", "year-first", "year-day-month"],
        help="WhatsApp: the date order when the file leaves it ambiguous (auto: read it from the whole file)",
    )
    html_engine: Literal["auto", "ownlm", "trafilatura"] = opt(
        "auto",
        help="web pages: whose main-text extraction (auto: trafilatura when installed, else ownlm's own)",
    )
    min_chars: int = opt(1, help="drop documents and conversations with fewer characters than this")
    max_file_mb: float = opt(
        0.0, help="largest file or zip member read, in MiB, decompressed (0: $OWNLM_MAX_FILE_MB, else 128)"
    )
    max_archive_mb: float = opt(
        0.0,
        help="most a zip may decompress to, nested zips included, in MiB (0: $OWNLM_MAX_ARCHIVE_MB, else 1024)",
    )
    strict: bool = opt(
        False, help="stop at the first unreadable file or record instead of reporting it at the end"
    )
    errors: str = opt(
        "replace",
        choices=["replace", "ignore", "strict"],
        help="invalid bytes in UTF-8 text files: replace (with U+FFFD), ignore (drop), strict (file is an error)",
    )


def _refuse_an_input_file(out: Path, side: Path, inputs: list[str]) -> None:
    """An ``--out`` inside an input folder is left out of the inputs only when an earlier extract wrote it (its
    summary beside it says so); a file of the user's there is an input, never overwritten."""
    if not out.is_file():
        return
    folders = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    if not any(f in out.resolve().parents for f in folders):
        return
    try:
        made = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        made = None
    if not (isinstance(made, dict) and made.get("format") == "ownlm-extract-summary"):
        raise UserError(
            f"--out {out}: is a file among the inputs that ownlm did not write (no {side.name} beside it); "
            "give another output file (nothing was changed)"
        )


def summary_path(out: Path) -> Path:
    """``docs.jsonl`` -> ``docs.summary.json`` (beside the output)."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".summary.json")


def record_id(source: str, index: int) -> str:
    """Stable id of the ``index``-th record read from ``source``: the same inputs give the same ids.

    >>> record_id("notes/a.txt", 0) == record_id("notes/a.txt", 0) != record_id("notes/a.txt", 1)
    True
    """
    return hashlib.sha1(f"{source}\0{index}".encode()).hexdigest()[:16]


def _hidden(relative_parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative_parts)


def printable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (Python keeps them as lone surrogates) written as
    ``\\xff``, so the name can go into the UTF-8 output and the file's text is not lost.

    >>> printable_name(b"caf\\xe9.txt".decode("utf-8", "surrogateescape"))
    'caf\\\\xe9.txt'
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def collect_files(inputs: list[str], exclude: set[Path] = frozenset()) -> list[tuple[Path, str, bool]]:
    """``(path, name, named_by_user)`` for every file under ``inputs``, folders walked in sorted order.

    Hidden files and folders are skipped; a missing path or a folder without files is a ``UserError``.
    """
    if not inputs:
        raise UserError("no input given: name files, folders or .zip archives to extract")
    files: list[tuple[Path, str, bool]] = []
    seen: set[Path] = set()

    def add(path: Path, named: bool) -> None:
        key = path.resolve()
        if key not in seen and key not in exclude:
            seen.add(key)
            files.append((path, printable_name(path.as_posix()), named))

    for item in inputs:
        p = Path(item)
        if p.is_file():
            add(p, True)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p).parts))
            if not found:
                raise UserError(
                    f"{p}: the folder is empty: nothing to extract (hidden files and folders are skipped)"
                )
            for f in found:
                add(f, False)
        else:
            raise UserError(f"{p}: no such file or folder")
    return files


class Extraction:
    """One run: reads sources, writes records to ``sink``, keeps the counts and problems for the summary."""

    def __init__(self, cfg: ExtractConfig, readers: list[Reader], sink) -> None:
        self.cfg = cfg
        self.readers = readers
        self.sink = sink
        self.opts = ExtractOptions(
            text_field=cfg.text_field,
            password=cfg.password,
            encoding_errors=cfg.errors,
            drop_system=cfg.drop_system and not cfg.keep_system,
            date_order=None if cfg.date_order == "auto" else cfg.date_order,
            html_engine=cfg.html_engine,
        )
        self.summary = Summary()
        self.limits = Limits.from_env(
            cfg.max_file_mb, cfg.max_archive_mb
        )  # bounded reads: ownlm.extract.limits

    def fail(self, where: str, reason: str) -> None:
        if self.cfg.strict:
            raise UserError(f"{where}: {reason}; --strict stopped at this first problem, nothing was written")
        self.summary.error(where, reason)

    def file(self, path: Path, name: str, named: bool) -> None:
        try:
            zipped = name.lower().endswith(".zip")
            data = self.limits.read_file(path, archive=zipped)
            self.limits.start_archive()
        except LimitExceeded as e:
            self.fail(name, str(e))
            return
        except OSError as e:
            if machine_error(e):
                raise
            self.fail(name, f"cannot read the file: {e.strerror or e}")
            return
        self.source(Source(name, data), named, depth=0)

    def source(self, src: Source, named: bool, depth: int) -> None:
        reader = pick_reader(src, self.readers)
        if reader is None and src.suffix == ".zip":
            self.archive(src, depth)
        elif reader is None and named:
            what = src.suffix or "no extension"
            self.fail(src.name, f"no reader for this kind of file ({what}); see `ownlm extract --help`")
        elif reader is None:
            self.summary.skip(src.name, src.suffix)
        else:
            self.read(reader, src)

    def archive(self, src: Source, depth: int) -> None:
        if depth >= MAX_ZIP_DEPTH:
            self.fail(src.name, f"zip nested more than {MAX_ZIP_DEPTH} deep; unpack it first")
            return
        try:
            zf = zipfile.ZipFile(io.BytesIO(src.data))
        except (zipfile.BadZipFile, OSError) as e:
            self.fail(src.name, f"broken or truncated zip archive ({e})")
            return
        if self.cfg.password:
            zf.setpassword(self.cfg.password.encode())
        with zf:
            members = sorted(
                (i for i in zf.infolist() if not i.is_dir() and not _hidden(tuple(i.filename.split("/")))),
                key=lambda i: i.filename,
            )
            if not members:
                self.summary.note(src.name, "empty zip archive")
            members = self.slack_members(src.name, zf, members)
            members = self.signal_members(src.name, zf, members)
            for info in members:
                name = f"{src.name}/{info.filename}"
                try:
                    data = self.member_bytes(zf, info)
                except LimitExceeded as e:
                    self.fail(name, str(e))
                    if self.limits.archive_full():
                        return
                    continue
                except RuntimeError as e:  # zipfile says "encrypted, password required" this way
                    hint = "wrong --password" if self.cfg.password else "give the password with --password"
                    self.fail(name, f"encrypted zip member ({hint}): {e}")
                    continue
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
                    self.fail(name, f"damaged zip member ({e})")
                    continue
                self.source(Source(name, data), named=False, depth=depth + 1)

    def member_bytes(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        """A zip member's bytes within the caps: refused by the size its header claims, then counted as it is
        decompressed (headers can lie) against one file's limit and the archive's."""
        self.limits.check_size(info.file_size)
        with zf.open(info) as f:
            data = self.limits.read(f)
        self.limits.take(len(data))
        return data

    def signal_members(self, name: str, zf: zipfile.ZipFile, members: list) -> list:
        """The members left once signal-export's copies of each ``chat.md`` are noted and left out."""

        def first_line(member: str) -> str:
            try:
                with zf.open(member) as f:
                    return f.readline(4096).decode("utf-8", errors="replace").rstrip("\r\n")
            except (RuntimeError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError):
                return ""  # read (and reported) with the other members

        copies = export_copies([i.filename for i in members], first_line)
        for member in sorted(copies):
            self.summary.note(f"{name}/{member}", COPY_NOTE)
        return [i for i in members if i.filename not in copies]

    def slack_members(self, name: str, zf: zipfile.ZipFile, members: list) -> list:
        """Read the Slack exports inside a zip as bundles; the members left for the other readers."""
        taken = set()
        for root in export_roots([i.filename for i in members]):
            prefix = f"{root}/" if root else ""
            mine = [i for i in members if i.filename.startswith(prefix) and i.filename not in taken]
            files = {}
            for info in mine:
                try:
                    files[info.filename[len(prefix) :]] = self.member_bytes(zf, info)
                except LimitExceeded as e:
                    self.fail(f"{name}/{info.filename}", str(e))
                except (
                    RuntimeError,
                    zipfile.BadZipFile,
                    zlib.error,
                    EOFError,
                    OSError,
                    NotImplementedError,
                ) as e:
                    self.fail(f"{name}/{info.filename}", f"damaged or encrypted zip member ({e})")
            taken.update(i.filename for i in mine)
            self.bundle(f"{name}/{root}" if root else name, files)
        return [i for i in members if i.filename not in taken]

    def read(self, reader: Reader, src: Source) -> None:
        self.consume(reader.name, src.name, len(src.data), lambda: reader.read(src, self.opts))

    def bundle(self, root: str, files: dict[str, bytes]) -> None:
        """A Slack export (``root``: its folder or ``archive.zip/folder``), read as one whole."""
        size = sum(len(b) for b in files.values())
        self.consume("slack", root or ".", size, lambda: read_export(root, files, self.opts))

    def consume(self, reader_name: str, name: str, size: int, items) -> None:
        """Write the records ``items()`` yields; problems and a failing reader go to the summary."""
        index, problems = 0, 0
        try:
            for item in items():
                if isinstance(item, Problem):
                    self.fail(item.where, item.reason)
                    problems += 1
                    continue
                record = self.record(item, item.source if reader_name == "slack" else name, index)
                index += 1
                if record is None:
                    self.summary.dropped(reader_name)
                else:
                    self.sink.write(json.dumps(record, ensure_ascii=False))
                    self.sink.write("\n")
                    self.summary.add(reader_name, name, item, record)
        except ReaderError as e:
            self.fail(name, str(e))
            self.summary.file(reader_name, size, failed=True)
            return
        except UserError:
            raise
        except Exception as e:  # a reader's library choking on a malformed file must not stop the run
            if machine_error(e):  # a full disk (writing the output) or no memory: not this file's fault
                raise
            self.fail(name, f"{reader_name} reader failed: {type(e).__name__}: {e}")
            self.summary.file(reader_name, size, failed=True)
            return
        if index == 0 and problems == 0:  # nothing came out, and nothing said why: say so
            self.fail(name, "no text in this file (empty, or only whitespace or markup)")
            self.summary.file(reader_name, size, failed=True)
            return
        self.summary.file(reader_name, size, failed=False)

    def record(self, item: Document | Conversation, name: str, index: int) -> dict | None:
        """The JSONL record for a reader's item, redacted and length-filtered; ``None`` when dropped."""
        rid = record_id(name, index)
        if isinstance(item, Document):
            text = item.text
            if self.cfg.redact:
                text = redact(text)
            if len(text.strip()) < max(self.cfg.min_chars, 1):
                return None
            return {"id": rid, "text": text, "source": item.source, "meta": item.meta}
        messages = [{"name": m.name, "time": m.time, "text": m.text} for m in item.messages]
        if self.cfg.redact:
            names = redact_names([m["name"] for m in messages])
            for m in messages:
                m["name"] = names.get(m["name"], m["name"])
                m["text"] = redact(m["text"])
        if not messages or sum(len(m["text"]) for m in messages) < self.cfg.min_chars:
            return None
        return {"id": rid, "source": item.source, "messages": messages, "meta": item.meta}


def _slack_bundles(files: list[tuple[Path, str, bool]], run: Extraction) -> list[tuple[Path, str, bool]]:
    """Read the Slack export folders among ``files`` as wholes; the files left for the other readers."""
    taken: set[str] = set()
    for root in export_roots([name for _, name, _ in files]):
        prefix = f"{root}/" if root else ""
        mine = [(p, n) for p, n, _ in files if n.startswith(prefix) and n not in taken]
        data = {}
        for path, name in mine:
            try:
                data[name[len(prefix) :]] = run.limits.read_file(path)
            except LimitExceeded as e:
                run.fail(name, str(e))
            except OSError as e:
                run.fail(name, f"cannot read the file: {e.strerror or e}")
        taken.update(n for _, n in mine)
        run.bundle(root, data)
    return [f for f in files if f[1] not in taken]


COPY_NOTE = "signal-export's copy of the chat.md beside it: skipped (the chat is read once, from chat.md)"


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline(4096).rstrip("\r\n")
    except OSError:
        return ""


def _signal_copies(files: list[tuple[Path, str, bool]], run: Extraction) -> list[tuple[Path, str, bool]]:
    """Leave out the copies signal-export writes beside each ``chat.md`` (noted in the summary)."""
    paths = {name: path for path, name, named in files if not named}
    copies = export_copies(list(paths), lambda name: _first_line(paths[name]))
    for name in sorted(copies):
        run.summary.note(name, COPY_NOTE)
    return [f for f in files if f[1] not in copies]


def _public_config(cfg: ExtractConfig) -> dict:
    values = asdict(cfg)
    if values.get("password"):
        values["password"] = "***"  # never write a password to disk
    return values


def main(cfg: ExtractConfig) -> int:
    """Run ``ownlm extract``; returns 0, or raises ``UserError`` when nothing usable was produced."""
    if cfg.min_chars < 0:
        raise UserError(f"--min-chars must be >= 0, got {cfg.min_chars}")
    for name in ("max_file_mb", "max_archive_mb"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(
                f"--{name.replace('_', '-')} must be a size in MiB >= 0 (0: the default), got {value}"
            )
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file name such as {out / 'docs.jsonl'}")
    prepare_output(out, kind="ownlm-docs", folder=False, inputs=cfg.inputs)  # not an input, nor a device
    side = summary_path(out)
    _refuse_an_input_file(out, side, cfg.inputs)
    files = collect_files(cfg.inputs, exclude={out.resolve(), side.resolve()})
    readers = load_readers()
    start = time.perf_counter()
    with atomic_write(out) as sink:
        run = Extraction(cfg, readers, sink)
        files = _signal_copies(_slack_bundles(files, run), run)
        for path, name, named in tqdm(files, desc="extract", unit="file", disable=None, file=sys.stderr):
            run.file(path, name, named)
        if run.summary.records == 0:
            raise UserError(run.summary.nothing_message(len(files)))  # leaves no output behind
    summary = run.summary.to_dict(
        output=str(out),
        inputs=list(cfg.inputs),
        files=len(files),
        seconds=round(time.perf_counter() - start, 3),
    )
    summary["config"] = _public_config(cfg)
    write_json(side, summary)
    print(run.summary.report(summary, side))
    return 0
