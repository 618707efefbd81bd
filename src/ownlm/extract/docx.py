"""Word documents (.docx): paragraphs, list items, tables and text boxes in body order.

A .docx is a zip whose main part (found through ``_rels/.rels``) is WordprocessingML. We walk it with
zipfile + lxml by *local* element names, so the same code reads transitional files (what python-docx
opens) and strict OOXML files (another namespace, which python-docx cannot open). The tests check
parity with python-docx on the paragraphs it reads. Deleted text (tracked changes), field codes and
the VML fallback copy of each text box are skipped; list items become ``- item`` lines and table rows
tab-separated lines.

>>> doc = next(DocxReader().read(Source("a.docx", data), ExtractOptions()))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterator

from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml(data: bytes):
    import lxml.etree  # lazy, as in every reader: lxml loads only when a file of this type is read

    parser = lxml.etree.XMLParser(recover=True, resolve_entities=False, no_network=True, huge_tree=True)
    return lxml.etree.fromstring(data, parser)


def main_part(zf: zipfile.ZipFile) -> str:
    """Path of the main document part, from the package relationships (``word/document.xml`` usually)."""
    names = set(zf.namelist())
    if "_rels/.rels" in names:
        rels = _xml(zf.read("_rels/.rels"))
        for el in rels if rels is not None else []:
            if (el.get("Type") or "").endswith("/officeDocument") and el.get("Target"):
                path = posixpath.normpath(el.get("Target").lstrip("/"))
                if path in names:
                    return path
    if "word/document.xml" in names:
        return "word/document.xml"
    raise ReaderError("not a Word document: no main document part (word/document.xml) inside")


class _Walker:
    """Collects ``(kind, text)`` blocks; kind is "p", "li" or "row" (joined differently)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str]] = []

    def block(self, el) -> None:
        name = _local(el.tag)
        if name == "p":
            self.paragraph(el)
        elif name == "tbl":
            for row in self.table_rows(el):
                self.blocks.append(("row", row))
        elif name in ("sdt", "sdtContent", "customXml", "ins", "smartTag", "body", "txbxContent"):
            for child in el:
                self.block(child)

    def paragraph(self, p) -> None:
        parts: list[str] = []
        boxes: list = []
        self.inline(p, parts, boxes)
        text = "".join(parts).strip()
        if text:
            props = next((c for c in p if _local(c.tag) == "pPr"), None)
            is_item = props is not None and any(
                _local(c.tag) == "numPr"
                or (_local(c.tag) == "pStyle" and (_attr(c, "val") or "").lower().startswith("list"))
                for c in props
            )
            self.blocks.append(("li", "- " + text) if is_item else ("p", text))
        for box in boxes:  # text boxes anchored in this paragraph come after it
            self.block(box)

    def inline(self, el, parts: list[str], boxes: list) -> None:
        for child in el:
            name = _local(child.tag)
            if name == "t":
                parts.append(child.text or "")
            elif name == "tab":
                parts.append("\t")
            elif name in ("br", "cr"):
                parts.append("\n")
            elif name == "noBreakHyphen":
                parts.append("-")
            elif name == "txbxContent":
                boxes.append(child)
            elif name in ("Fallback", "delText", "instrText", "pPr", "rPr", "del", "moveFrom"):
                continue  # the VML copy of a text box, deleted text, field codes, formatting
            else:
                self.inline(child, parts, boxes)

    def table_rows(self, tbl) -> list[str]:
        rows = []
        for tr in tbl:
            if _local(tr.tag) != "tr":
                continue
            cells, nested = [], []
            for tc in tr:
                if _local(tc.tag) != "tc":
                    continue
                inner = _Walker()
                for child in tc:
                    inner.block(child)
                cells.append(" ".join(t for k, t in inner.blocks if k != "row"))
                nested.extend(t for k, t in inner.blocks if k == "row")
            if any(cells):
                rows.append("\t".join(cells).rstrip("\t"))
            rows.extend(nested)  # a table inside a cell: its rows follow the row that holds it
        return rows


def _attr(el, name: str) -> str | None:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return None


def join_blocks(blocks: list[tuple[str, str]]) -> str:
    """Paragraphs separated by a blank line; consecutive list items and table rows by a newline."""
    out: list[str] = []
    prev = ""
    for kind, text in blocks:
        if out:
            out.append("\n" if kind == prev and kind in ("li", "row") else "\n\n")
        out.append(text)
        prev = kind
    return "".join(out)


def docx_text(data: bytes) -> tuple[str, dict]:
    """``(text, meta)`` of a .docx file's bytes."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ReaderError(f"not a readable Word document (broken or truncated zip: {e})") from None
    with zf:
        part = main_part(zf)
        try:
            root = _xml(zf.read(part))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ReaderError(f"damaged Word document: cannot read {part} ({e})") from None
    if root is None:
        raise ReaderError(f"damaged Word document: {part} is not XML")
    body = next((el for el in root.iter() if _local(el.tag) == "body"), None)
    if body is None:
        raise ReaderError(f"damaged Word document: {part} has no body")
    walker = _Walker()
    walker.block(body)
    strict = root.tag.startswith("{http://purl.oclc.org/ooxml/")
    return join_blocks(walker.blocks), ({"ooxml": "strict"} if strict else {})


class DocxReader(Reader):
    """``.docx`` (and macro-enabled ``.docm``, templates ``.dotx``/``.dotm``): one document per file."""

    name = "docx"
    extensions = (".docx", ".docm", ".dotx", ".dotm")

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document]:
        text, meta = docx_text(src.data)
        if text.strip():
            yield Document(text=text, source=src.name, meta=meta)
