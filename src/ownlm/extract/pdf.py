"""PDF files with pypdf: the text layer of every page, one document per file.

Encrypted files are opened with ``--password`` (or the empty password many "protected" PDFs use);
a missing or wrong password is a clear per-file error. A page with images but no text layer is a
scanned page: it is listed in ``meta["scanned_pages"]`` (1-based) and counted in the summary; a file
made only of scanned pages is an error, since there is no text to extract without OCR.

>>> doc = next(PdfReader().read(Source("a.pdf", open("a.pdf", "rb").read()), ExtractOptions()))  # doctest: +SKIP
>>> doc.meta["pages"]  # doctest: +SKIP
3
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source


@contextlib.contextmanager
def _quiet_pypdf():
    # pypdf logs every repairable oddity ("Ignoring wrong pointing object") as a warning; the
    # summary reports what matters, so keep the terminal clean while a file is read.
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open(data: bytes, password: str | None):
    import pypdf  # lazy, as in every reader: pypdf loads only when a PDF is read
    from pypdf.errors import DependencyError, PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise ReaderError(f"not a readable PDF (broken or truncated?): {e}") from None
    if reader.is_encrypted:
        try:
            # The empty password first: many PDFs are encrypted only to restrict printing/copying.
            ok = reader.decrypt("") or (password is not None and reader.decrypt(password))
        except DependencyError as e:
            raise ReaderError(f"encrypted PDF needs an extra package to decrypt: {e}") from None
        if not ok:
            if password is None:
                raise ReaderError("encrypted PDF: give its password with --password")
            raise ReaderError("encrypted PDF: the password given with --password is wrong")
    return reader


def _info(reader) -> dict:
    meta = {}
    with contextlib.suppress(Exception):  # broken info dictionaries are common and never fatal
        info = reader.metadata or {}
        for key in ("title", "author"):
            value = getattr(info, key, None)
            if isinstance(value, str) and value.strip():
                meta[key] = value.strip()
    return meta


def _has_images(page) -> bool:
    try:
        resources = page.get("/Resources") or {}
        xobjects = resources.get("/XObject") or {}
        return any(xobj.get_object().get("/Subtype") == "/Image" for xobj in xobjects.values())
    except Exception:  # a malformed resource dictionary: treat as no images
        return False


class PdfReader(Reader):
    """``.pdf`` (or any file starting with ``%PDF-``)."""

    name = "pdf"
    extensions = (".pdf",)

    def sniff(self, src: Source) -> bool:
        return src.suffix == ".pdf" or (src.suffix == "" and src.head[:1024].lstrip().startswith(b"%PDF-"))

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document]:
        with _quiet_pypdf():
            reader = _open(src.data, opts.password)
            try:
                pages = list(reader.pages)
            except Exception as e:
                raise ReaderError(f"cannot read the PDF's page tree: {e}") from None
            texts, scanned, failed = [], [], []
            for number, page in enumerate(pages, start=1):
                try:
                    text = page.extract_text() or ""
                except Exception as e:  # one bad page (odd font, broken stream) must not lose the others
                    failed.append(f"page {number}: {type(e).__name__}: {e}")
                    continue
                text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
                if text:
                    texts.append(text)
                elif _has_images(page):
                    scanned.append(number)
            meta = {"pages": len(pages), **_info(reader)}
        if scanned:
            meta["scanned_pages"] = scanned
        if failed:
            meta["failed_pages"] = failed
        if not texts:
            if scanned:
                raise ReaderError(
                    f"no text layer: {len(scanned)} of {len(pages)} pages are scanned images "
                    "(run OCR first, e.g. ocrmypdf, then extract again)"
                )
            if failed:
                raise ReaderError(f"no page could be read ({failed[0]})")
            raise ReaderError(f"no text in any of its {len(pages)} pages")
        yield Document(text="\n\n".join(texts), source=src.name, meta=meta)
