"""EPUB e-books: the chapters' text in reading order, one document per book.

An EPUB is a zip: ``META-INF/container.xml`` names the package file (``.opf``), whose ``<spine>``
lists the chapters in reading order by id, resolved through its ``<manifest>`` to XHTML files.
Read with zipfile + lxml (EbookLib is AGPL). The navigation document (table of contents) is skipped;
chapters are rendered with the HTML reader's text renderer (no boilerplate removal: a book has none).

>>> doc = next(EpubReader().read(Source("alice.epub", data), ExtractOptions()))  # doctest: +SKIP
>>> doc.meta["chapters"]  # doctest: +SKIP
12
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterator
from urllib.parse import unquote

from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source
from ownlm.extract.html import html_to_text

_DOC_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")
# Font obfuscation (IDPF, Adobe) is not DRM: anything else in encryption.xml locks the chapters.
_FONT_OBFUSCATION = ("http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC")


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml(data: bytes, what: str):
    import lxml.etree  # lazy, as in every reader: lxml loads only when a file of this type is read

    parser = lxml.etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
    root = lxml.etree.fromstring(data, parser)
    if root is None:
        raise ReaderError(f"broken EPUB: cannot parse {what}")
    return root


def _package_path(zf: zipfile.ZipFile) -> str:
    names = zf.namelist()
    if "META-INF/container.xml" in names:
        root = _xml(zf.read("META-INF/container.xml"), "META-INF/container.xml")
        for el in root.iter():
            if _local(el.tag) == "rootfile" and el.get("full-path"):
                return el.get("full-path")
    opfs = sorted(n for n in names if n.lower().endswith(".opf"))  # container.xml missing: look for it
    if not opfs:
        raise ReaderError("not an EPUB: no package file (.opf) inside")
    return opfs[0]


def _check_drm(zf: zipfile.ZipFile) -> None:
    if "META-INF/encryption.xml" not in zf.namelist():
        return
    root = _xml(zf.read("META-INF/encryption.xml"), "META-INF/encryption.xml")
    for el in root.iter():
        if _local(el.tag) == "EncryptionMethod" and el.get("Algorithm") not in _FONT_OBFUSCATION:
            raise ReaderError("DRM-protected EPUB: its chapters are encrypted and cannot be read")


def spine(zf: zipfile.ZipFile) -> tuple[list[str], dict]:
    """Chapter paths inside the zip in reading order, and the book's metadata (title, author, language)."""
    opf_path = _package_path(zf)
    try:
        opf = _xml(zf.read(opf_path), opf_path)
    except KeyError:
        raise ReaderError(f"broken EPUB: package file {opf_path} is missing") from None
    base = posixpath.dirname(opf_path)
    manifest, order, nav, meta = {}, [], set(), {}
    for el in opf.iter():
        name = _local(el.tag)
        if name == "item" and el.get("id") and el.get("href"):
            href = unquote(el.get("href").split("#")[0])
            manifest[el.get("id")] = (
                posixpath.normpath(posixpath.join(base, href)),
                el.get("media-type", ""),
            )
            if "nav" in (el.get("properties") or "").split():
                nav.add(el.get("id"))
        elif name == "itemref" and el.get("idref"):
            order.append(el.get("idref"))
        elif name in ("title", "creator", "language") and (el.text or "").strip() and name not in meta:
            meta[{"creator": "author"}.get(name, name)] = el.text.strip()
    chapters = []
    for idref in order:
        if idref in nav or idref not in manifest:
            continue
        path, media = manifest[idref]
        if media in _DOC_TYPES or path.lower().endswith((".xhtml", ".html", ".htm")):
            chapters.append(path)
    return chapters, meta


class EpubReader(Reader):
    """``.epub``: chapters in spine order joined by blank lines."""

    name = "epub"
    extensions = (".epub",)

    def sniff(self, src: Source) -> bool:
        # The EPUB spec puts an uncompressed "mimetype" member first, so its content sits at byte 38.
        return src.suffix == ".epub" or (
            src.head.startswith(b"PK") and b"application/epub+zip" in src.head[:100]
        )

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document]:
        try:
            zf = zipfile.ZipFile(io.BytesIO(src.data))
        except zipfile.BadZipFile as e:
            raise ReaderError(f"not a readable EPUB (broken or truncated zip: {e})") from None
        with zf:
            _check_drm(zf)
            chapters, meta = spine(zf)
            texts, missing = [], []
            for path in chapters:
                try:
                    data = zf.read(path)
                except KeyError:
                    missing.append(path)
                    continue
                except (zipfile.BadZipFile, OSError, EOFError) as e:  # a damaged member: keep the others
                    missing.append(f"{path} ({e})")
                    continue
                try:
                    text = html_to_text(data, main_only=False)[0]
                except ReaderError:
                    continue  # an empty chapter file (cover page, blank separator)
                if text:
                    texts.append(text)
        if missing:
            meta["missing_chapters"] = missing
        if not texts:
            extra = f" ({len(missing)} chapter files missing or damaged)" if missing else ""
            raise ReaderError(f"no text in any of its {len(chapters)} chapters{extra}")
        meta["chapters"] = len(texts)
        yield Document(text="\n\n".join(texts), source=src.name, meta=meta)
