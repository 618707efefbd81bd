"""Plain text and Markdown: bytes -> str with the encoding found, line endings made ``\\n``.

UTF-8 is tried first (with or without BOM; UTF-16/32 need their BOM). A file that is UTF-8 except for a
few bad bytes stays UTF-8 (the bad bytes follow ``--errors``); anything else goes to charset-normalizer,
which guesses legacy encodings (cp1252, latin-1, Shift-JIS, ...). Binary content is refused, whatever
the extension says.

>>> decode_text("café\\r\\n".encode("cp1252"))  # doctest: +SKIP
('café\\n', 'cp1252', 0)
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source

# Checked longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
# C0/C1 control characters other than the ones real text contains (\t \n \v \f \r, ESC): in bulk they
# mean binary content.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def _control_fraction(text: str) -> float:
    sample = text[:65536]
    return len(_CONTROL.findall(sample)) / len(sample) if sample else 0.0


def _binary_error(data: bytes) -> ReaderError:
    where = f" (NUL byte at offset {data.index(0)})" if b"\x00" in data[:65536] else ""
    return ReaderError(f"binary content, not text{where}; is the extension wrong?")


def decode_text(data: bytes, errors: str = "replace") -> tuple[str, str, int]:
    """Decode file bytes to text; return ``(text, encoding, bad_bytes)``. Line endings become ``\\n``.

    ``errors`` (replace/ignore/strict) applies to invalid bytes in an otherwise UTF-8 file.
    Raises ``ReaderError`` for binary content or invalid UTF-8 under ``errors="strict"``.

    >>> decode_text(b"\\xef\\xbb\\xbfa\\r\\nb")
    ('a\\nb', 'utf-8', 0)
    """
    text, encoding, bad = _decode(data, errors)
    if "\x00" in text[:65536] or _control_fraction(text) > 0.01:
        raise _binary_error(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, encoding, bad


def _decode(data: bytes, errors: str) -> tuple[str, str, int]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace"), encoding, 0
    try:
        return data.decode("utf-8"), "utf-8", 0
    except UnicodeDecodeError as e:
        first_bad = e.start
    if b"\x00" in data[:65536]:
        raise _binary_error(data)
    # Mostly valid UTF-8 with a few broken bytes (a truncated write, one pasted latin-1 word):
    # keep UTF-8 rather than re-reading the whole file in a guessed legacy encoding.
    replaced = data.decode("utf-8", errors="replace")
    bad = replaced.count("\ufffd")
    non_ascii = sum(1 for ch in replaced if ord(ch) > 127) - bad
    if non_ascii > 2 * bad and bad <= max(3, len(replaced) // 1000):
        if errors == "strict":
            raise ReaderError(
                f"not valid UTF-8 (invalid byte 0x{data[first_bad]:02x} at offset {first_bad}); "
                "fix the file, or run with --errors replace"
            )
        return data.decode("utf-8", errors=errors), "utf-8", bad
    western = _as_cp1252(data)
    if western is not None:
        return western, "cp1252", 0
    from charset_normalizer import from_bytes  # lazy: needed (and loaded) only for text that is not UTF-8

    best = from_bytes(data[: 1 << 20]).best()
    if best is not None and best.encoding is not None:
        return data.decode(best.encoding, errors="replace"), best.encoding, 0
    # No encoding fits: UTF-8 with replacement characters (refused under --errors strict); the
    # control-character check that follows still refuses real binary content.
    if errors == "strict":
        raise ReaderError(
            f"not valid UTF-8 and no other encoding fits ({bad:,} invalid bytes, the first 0x{data[first_bad]:02x} "
            f"at offset {first_bad}); fix the file, or run with --errors replace"
        )
    return replaced, "utf-8", bad


# What Western European text in cp1252 decodes to outside ASCII: accented letters and typographic marks.
_WESTERN = set("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœŒšŠžŽŸ’‘“”–—…€«»°§©®±·¡¿\u00a0")


def _as_cp1252(data: bytes) -> str | None:
    """``data`` as cp1252 when it reads like Western European text, else None.

    charset-normalizer often names a Baltic or Central European code page for short French or German
    files; cp1252 is by far the likeliest legacy encoding, so it is checked first. Accents are then a
    minority among letters, and (nearly) all non-ASCII characters are accented Latin letters or
    typographic marks: Cyrillic or Greek in their own code pages fail the first test, Polish or Czech
    (ł, ś, ą become ³, œ, ¹) the second.
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = sum(ch.isalpha() for ch in text[:65536])
    high = [ch for ch in text[:65536] if ord(ch) > 127]
    if not high or len(high) > 0.3 * max(letters, 1):
        return None
    return text if sum(ch in _WESTERN for ch in high) >= 0.95 * len(high) else None


def looks_like_text(head: bytes) -> bool:
    """A cheap check on a file's first bytes: no NUL byte, decodes (nearly) as UTF-8."""
    if any(head.startswith(bom) for bom, _ in _BOMS[:3]):
        return True
    if b"\x00" in head:
        return False
    return head[:4000].decode("utf-8", errors="replace").count("\ufffd") <= 2


class TextReader(Reader):
    """``.txt``/``.md`` (and extensionless text files such as ``README``): one document per file."""

    name = "text"
    extensions = (".txt", ".text", ".md", ".markdown", ".rst", ".org", ".log")

    def sniff(self, src: Source) -> bool:
        if src.suffix in self.extensions:
            return True
        return src.suffix == "" and bool(src.data) and looks_like_text(src.head)

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document]:
        text, encoding, bad = decode_text(src.data, opts.encoding_errors)
        meta: dict = {"encoding": encoding}
        if bad:
            meta["invalid_bytes"] = bad
        elif encoding not in ("utf-8", "ascii") and not encoding.startswith(("utf_", "utf-")):
            meta["decoded_as"] = encoding  # not UTF-8: a guess, said in the summary
        if src.suffix in (".md", ".markdown"):
            meta["format"] = "markdown"
        if text.strip():
            yield Document(text=text, source=src.name, meta=meta)
