"""Files between stages: atomic writes, JSON/JSONL with line numbers in errors, manifests, sha256.

Nothing is ever half-written: every output goes to a temp file in the same folder, is fsynced,
then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ownlm.errors import UserError, disk_full


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temp file's path beside ``path``, for a writer that opens files itself (the ``gguf`` package's); on
    success the file is fsynced and renamed to ``path``, on error deleted (a full disk named by ``path``, not
    by the temp file). ``atomic_write`` is built on it.

    >>> with atomic_path("model.gguf") as tmp:  # doctest: +SKIP
    ...     writer.write_to(tmp)
    """
    path = Path(path)
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets clean_stale_temps() tell a dead writer's leftover from a live one's file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        refuse_special(path)  # something may have appeared there meanwhile
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if (
            isinstance(e, OSError) and disk_full(e) and e.filename != str(path)
        ):  # name the output, not the temp
            raise OSError(e.errno or errno.ENOSPC, e.strerror or "No space left on device", str(path)) from e
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file beside ``path``; on success fsync and rename it to ``path``, on error delete it.

    >>> with atomic_write("out.txt") as f:  # doctest: +SKIP
    ...     f.write("hello")
    """
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


@contextlib.contextmanager
def removed_on_failure(path: str | os.PathLike):
    """Remove ``path`` (a folder or a file) when the block fails and ``path`` did not exist before it, so a
    command that stops half-way (a full disk, an interrupt) leaves nothing behind.

    >>> with removed_on_failure("exported"):  # doctest: +SKIP
    ...     write_all_files("exported")
    """
    path = Path(path)
    existed = path.exists() or path.is_symlink()
    try:
        yield path
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise


def refuse_special(path: str | os.PathLike) -> None:
    """Refuse to write where something other than a regular file, a folder or a symlink stands (a device
    such as ``/dev/full``, a pipe, a socket): renaming a file over it would replace it.

    >>> refuse_special("/dev/null")
    Traceback (most recent call last):
    ownlm.errors.UserError: /dev/null: is a character device, not a regular file; ownlm writes only regular files (give another --out)
    """
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return
    kinds = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
             (stat.S_ISSOCK, "a socket")]  # fmt: skip
    what = next((name for test, name in kinds if test(mode)), "a special file")
    raise UserError(
        f"{path}: is {what}, not a regular file; ownlm writes only regular files (give another --out)"
    )


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


SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}  # fmt: skip


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write torch tensors as a ``.safetensors`` file, atomically, one tensor at a time: unlike
    ``safetensors.torch.save_file`` no second copy of the whole model is made in memory.

    The format: 8 bytes (little-endian header length), a JSON header ``{name: {dtype, shape, data_offsets}}``
    padded with spaces to a multiple of 8, then the tensors' bytes back to back.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    names, offset = sorted(tensors), 0
    for name in names:
        t = tensors[name]
        kind = SAFETENSORS_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if kind is None:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    import torch  # here, not at the top: io serves commands that never load torch

    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with atomic_write(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name in names:
            t = tensors[name].detach().cpu().contiguous()
            if t.numel():
                f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))


def read_safetensors(
    path: str | os.PathLike, names: Iterable[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` for each tensor of a ``.safetensors`` file (or those in ``names``), read one at a time
    with ordinary file reads into a fresh tensor of the stored dtype. Unlike a memory-mapped read, the file's
    pages never count in the process's memory, and only the tensor being read exists besides the caller's copy.
    A damaged file (header, dtype, offsets) is a ``UserError`` naming it."""
    import torch  # here, not at the top: io serves commands that never load torch

    path = Path(path)
    header, start, size = safetensors_header(path)
    by_kind = {v: getattr(torch, k) for k, v in SAFETENSORS_DTYPES.items()}
    with open(path, "rb") as f:
        for name in sorted(set(header) - {"__metadata__"}) if names is None else names:
            entry = header.get(name)
            if name == "__metadata__" or not isinstance(entry, dict):
                raise UserError(f"{path}: no tensor {name!r} in the file")
            try:
                dtype, shape, (a, b) = (
                    by_kind[entry["dtype"]],
                    [int(n) for n in entry["shape"]],
                    entry["data_offsets"],
                )
                t = torch.empty(shape, dtype=dtype)
                ok = 0 <= a <= b <= size - start and b - a == t.numel() * t.element_size()
            except (KeyError, TypeError, ValueError, RuntimeError):
                ok = False
            if not ok:
                raise UserError(f"{path}: tensor {name!r} has a damaged entry in the header ({entry}); "
                                "the file is damaged, write it again")  # fmt: skip
            if t.numel():
                f.seek(start + a)
                if f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy())) != b - a:
                    raise UserError(f"{path}: the file ends inside tensor {name!r}; it is truncated")
            yield name, t


def safetensors_header(path: str | os.PathLike) -> tuple[dict, int, int]:
    """``(header, where the data starts, file size)`` of a ``.safetensors`` file; a ``UserError`` if it has none."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > min(size - 8, 100 << 20):
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a safetensors file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read weights ({e.strerror or e})") from None
    return header, 8 + n, size


# Deeper JSON is refused: no format of ours nests past a dozen levels, and Python's parser (and every
# recursive walk of its result) would hit the interpreter's recursion limit near 1,000.
MAX_JSON_DEPTH = 256
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string (skipped) or a bracket


def _too_deep_at(text: str, limit: int) -> int | None:
    """The offset where ``text`` first nests deeper than ``limit`` levels, or None. Cheap when it cannot."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return m.start()
        elif c in "]}":
            depth -= 1
    return None


class JSONError(UserError):
    """Broken JSON: ``line`` (1-based, in the file) and ``detail`` (what is wrong, without the place), for a
    caller that reports it its own way (a JSONL line as one problem, the rest of the file kept)."""

    def __init__(self, where: str, line: int, what: str, detail: str):
        super().__init__(f"{where}:{line}: {what}: {detail}")
        self.line, self.detail = line, f"{what}: {detail}"


def load_json_text(text: str, where: str, what: str = "not valid JSON", first_line: int = 1) -> Any:
    """Parse JSON ``text`` read from ``where`` (a file name); any problem is a one-line ``JSONError`` (a
    ``UserError``) naming ``where:line`` (``first_line`` is the line ``text`` starts on: a JSONL record's).

    Refused: broken JSON, anything after the value (``[1][2]``: the second list is not silently dropped),
    nesting deeper than ``MAX_JSON_DEPTH`` levels, numbers Python will not read. A UTF-8 byte-order mark at
    the start is skipped (Windows editors write one).

    >>> load_json_text('\\ufeff{"a": [1, 2]}', "x.json")
    {'a': [1, 2]}
    >>> load_json_text("[" * 300 + "]" * 300, "x.json")
    Traceback (most recent call last):
    ownlm.io.JSONError: x.json:1: not valid JSON: nested deeper than 256 levels (column 257)
    >>> load_json_text("[1]\\n[2]", "x.json")
    Traceback (most recent call last):
    ownlm.io.JSONError: x.json:2: not valid JSON: Extra data (column 1)
    """
    text = text.removeprefix("\ufeff")
    pos = _too_deep_at(text, MAX_JSON_DEPTH)
    if pos is not None:
        line = first_line + text.count("\n", 0, pos)
        col = pos - text.rfind("\n", 0, pos)
        raise JSONError(where, line, what, f"nested deeper than {MAX_JSON_DEPTH} levels (column {col})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONError(where, first_line + e.lineno - 1, what, f"{e.msg} (column {e.colno})") from None
    except RecursionError:  # a stack already deep when parsing started
        raise JSONError(where, first_line, what, "nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise JSONError(where, first_line, what, str(e)) from None


def iter_json_list(text: str, where: str) -> Iterator[tuple[int, Any]]:
    """``(line, item)`` for each item of ``text`` holding one JSON list, the line being where the item starts
    (for messages such as ``data.json:12: ...``). The whole text is checked first by ``load_json_text`` (depth,
    huge numbers, a byte-order mark, anything after the list), so a broken file yields nothing.

    >>> list(iter_json_list('[{"a": 1},\\n {"a": 2}]', "x.json"))
    [(1, {'a': 1}), (2, {'a': 2})]
    >>> list(iter_json_list('[1] [2]', "x.json"))
    Traceback (most recent call last):
    ownlm.io.JSONError: x.json:1: broken JSON: Extra data (column 5)
    """
    whole = load_json_text(text, where, "broken JSON")
    if not isinstance(whole, list):
        found = {dict: "an object", str: "a string"}.get(type(whole), type(whole).__name__)
        raise JSONError(where, 1, "expected a JSON list of records",
                        f"found {found} (or use .jsonl: one record a line)")  # fmt: skip
    text = text.removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    line, counted = 1, 0
    for _ in whole:  # the text parsed whole above, so each item decodes again in order
        while text[i].isspace() or text[i] == ",":
            i += 1
        item, end = decoder.raw_decode(text, i)
        line, counted = line + text.count("\n", counted, i), i
        yield line, item
        i = end


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing, broken or too deeply nested file into a clear ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    return load_json_text(text, str(path), what=f"{what} is not valid JSON")


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
                obj = load_json_text(line.rstrip("\r\n"), str(path), "broken JSON line", first_line=lineno)
            except UserError as err:
                if errors == "raise":
                    raise
                yield lineno, err
                continue
            yield lineno, obj


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
    refuse_special(p)
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"--out {p}: is a file; give a folder name")
    if not folder and p.is_dir():
        raise UserError(f"--out {p}: is a folder; give a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {p}: {parent} is a file, not a folder")
            break


# ---------------------------------------------------------------------------------------------- outputs

OUTPUT_MARKER = ".ownlm-output.json"  # in every output folder: which kind of output ownlm made there


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _made_by_ownlm(folder: Path) -> str | None:
    """The kind of output ownlm wrote in ``folder`` (its marker, else its manifest's format), or None."""
    for name, key in ((OUTPUT_MARKER, "kind"), ("manifest.json", "format"), ("tokenizer.json", "format"),
                      ("pipeline.json", "format")):  # fmt: skip
        try:
            d = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(d, dict) and isinstance(d.get(key), str) and d[key].startswith("ownlm"):
            return d[key]
    return None


def prepare_output(path: str | os.PathLike, *, kind: str, folder: bool, force: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> Path:  # fmt: skip
    """Check an ``--out`` before any work, by the one rule every command follows:

    - write into a fresh folder, an empty one, or one this kind of command made before (recognised by its
      ``.ownlm-output.json`` marker or its ``manifest.json`` format, ``kind``: e.g. ``"ownlm-tokens"``);
    - refuse a folder holding other files; ``force=True`` empties a folder ownlm made for another kind of
      output (never a folder ownlm did not make);
    - never write over an input (``inputs``), inside a folder holding one, nor onto a device, pipe or socket;
    - a file output (``folder=False``) that exists as a regular file is replaced whole, as ``cp`` would.

    Returns the path. Call ``mark_output(folder, kind)`` once the folder is written.

    >>> prepare_output("/dev/null", kind="ownlm-docs", folder=False)
    Traceback (most recent call last):
    ownlm.errors.UserError: /dev/null: is a character device, not a regular file; ownlm writes only regular files (give another --out)
    """
    out = Path(path)
    check_out(out, folder=folder)
    target = out.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if _inside(src, target) if folder else src == target:
            raise UserError(
                f"--out {out}: would write over the input {item}; give another output "
                f"{'folder' if folder else 'file'}"
            )
    if not folder or not out.is_dir():
        return out
    try:
        entries = [e.name for e in os.scandir(out)]
    except OSError as e:
        raise UserError(f"--out {out}: cannot read the folder ({e.strerror})") from None
    entries = [e for e in entries if e != LOCK_FILE]
    if not entries:
        return out
    made = _made_by_ownlm(out)
    if made == kind:
        return out
    if made is None:
        raise UserError(
            f"--out {out}: the folder holds other files ({', '.join(sorted(entries)[:3])}"
            f"{', ...' if len(entries) > 3 else ''}) and ownlm did not make it; give a new or empty folder "
            "(nothing was changed)"
        )
    if not force:
        raise UserError(
            f"--out {out}: holds another ownlm output ({made}, not {kind}); give another folder, or --force "
            "to replace it"
        )
    for name in entries:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return out


def mark_output(folder: str | os.PathLike, kind: str, **details) -> None:
    """Record in ``folder`` that ownlm wrote an output of ``kind`` there (see ``prepare_output``); ``details``
    go into the marker beside it (``ownlm export`` lists the files it writes)."""
    from ownlm import __version__

    write_json(Path(folder) / OUTPUT_MARKER, {"kind": kind, "ownlm": __version__, **details})


def output_marker(folder: str | os.PathLike) -> dict:
    """What ``mark_output`` recorded in ``folder`` ({} when nothing readable is there)."""
    try:
        d = json.loads((Path(folder) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


# ---------------------------------------------------------------------------------------------- run lock

LOCK_FILE = ".ownlm-lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


class RunLock:
    """An advisory lock on an output folder, so two commands never write the same run at once.

    ``FOLDER/.ownlm-lock`` holds the owner's pid, host and start time, and is ``flock``-ed while held (the
    kernel lets go when the process dies, even by kill -9). A lock left by a dead process is taken over
    with a note on stderr; a live one is a ``UserError`` naming its pid and host. The folder is created if
    needed and removed again on release if the run left it empty.

    >>> with RunLock("runs/mine"):  # doctest: +SKIP
    ...     train()
    """

    def __init__(self, folder: str | os.PathLike, note=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.note = note or (lambda msg: print(f"ownlm: note: {msg}", file=sys.stderr))
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        refuse_special(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder}: is a file; give a folder name")
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._try_flock(fd):
                owner = self._read_owner(fd)
                os.close(fd)
                self._busy(owner or (0, "?", 0.0))
            try:  # the file we locked is still the lock (not one a releasing owner just unlinked)?
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise UserError(f"{self.path}: could not take the lock (it keeps changing); try again")
        previous = self._read_owner(fd)
        if previous is not None:
            pid, host, _ = previous
            if not _flock_available() and (host != socket.gethostname() or _pid_alive(pid)):
                os.close(fd)  # without flock only a dead pid on this host proves the lock stale
                self._busy(previous)
            self.note(
                f"{self.folder}: taking over the lock of a run that ended without releasing it (pid {pid} on {host})"
            )
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # unlink before unlocking: a waiter then re-checks the inode and retries
        os.close(self._fd)
        self._fd = None
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only succeeds when the run left the folder empty

    @staticmethod
    def _try_flock(fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: the pid check alone
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    @staticmethod
    def _read_owner(fd: int) -> tuple[int, str, float] | None:
        try:
            d = json.loads(os.pread(fd, 4096, 0) or b"null")
            return int(d["pid"]), str(d["host"]), float(d.get("started", 0))
        except (ValueError, TypeError, KeyError, OSError):
            return None

    def _busy(self, owner: tuple[int, str, float]) -> None:
        pid, host, started = owner
        since = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if isinstance(started, float) else "?"
        )
        raise UserError(
            f"{self.folder}: another ownlm run is writing here (pid {pid} on {host}, since {since}); "
            f"wait for it to finish or give another --out (if it is gone, delete {self.path})"
        )


def _flock_available() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- temp files

# Hidden leftovers of an interrupted writer, with its pid: checkpoint folders (.step_000500.tmp-1234), atomic
# writes (.config.json.1234.k3j2.tmp), encode's folders (.tokens.encoding-1234, .tokens.old-1234).
_STALE = [
    re.compile(r"\..+\.tmp-(\d+)"),
    re.compile(r"\..+\.(\d+)\.\w+\.tmp"),
    re.compile(r"\..+\.(?:encoding|old)-(\d+)"),
]
_NO_PID = re.compile(r"\..+\.tmp")  # older names without a pid: removed once they are this old
NO_PID_MAX_AGE_S = 3600.0


def clean_stale_temps(
    folder: str | os.PathLike, max_age_s: float = NO_PID_MAX_AGE_S, prefix: str = "."
) -> list[Path]:
    """Delete hidden temp files and folders in ``folder`` left by writers that are gone (their pid is dead;
    names without a pid once older than ``max_age_s``); return what was deleted. Only names starting with
    ``prefix`` are looked at. Call it holding the folder's ``RunLock``, so no live writer is mid-write there.

    >>> clean_stale_temps("runs/mine")  # doctest: +SKIP
    [PosixPath('runs/mine/.step_000500.tmp-41234')]
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not e.name.startswith(prefix) or not e.name.startswith("."):
            continue
        m = next((m for rx in _STALE if (m := rx.fullmatch(e.name))), None)
        if m is not None:
            stale = int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))
        else:
            stale = (
                bool(_NO_PID.fullmatch(e.name)) and now - e.stat(follow_symlinks=False).st_mtime > max_age_s
            )
        if not stale:
            continue
        p = Path(e.path)
        with contextlib.suppress(FileNotFoundError):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
        removed.append(p)
    return removed
