"""Tiny sample files built in memory for the extraction tests: PDF, EPUB, DOCX, zips.

Building them here keeps the tests hermetic (the shared fixtures are used on top, when present).
"""

from __future__ import annotations

import io
import zipfile


def make_pdf(pages: list[str | None]) -> bytes:
    """A valid PDF with one page per item: a string is that text (lines split on \\n), None an image-only page."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the page object numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Length 1 >>\nstream\n\xff\nendstream",
    ]
    kids = []
    for text in pages:
        if text is None:
            content = b"q 100 0 0 100 72 600 cm /Im1 Do Q"
        else:
            lines = [
                ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in text.split("\n")
            ]
            shown = b" T* ".join(b"(" + ln.encode("latin-1") + b") Tj" for ln in lines)
            content = b"BT /F1 12 Tf 14 TL 72 720 Td " + shown + b" ET"
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        content_no = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>" % content_no
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % len(kids)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypt_pdf(data: bytes, password: str) -> bytes:
    """``data`` re-written with a user password (RC4, which pypdf handles without extra packages)."""
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(password, algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_epub(
    chapters: list[tuple[str, str]], spine: list[str] | None = None, title: str = "A Book"
) -> bytes:
    """An EPUB 3 with ``chapters`` = [(id, xhtml body)], read in ``spine`` order (default: as given)."""
    spine = spine or [cid for cid, _ in chapters]
    items = "".join(
        f'<item id="{cid}" href="text/{cid}.xhtml" media-type="application/xhtml+xml"/>'
        for cid, _ in chapters
    )
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{title}</dc:title><dc:creator>Ann Author</dc:creator><dc:language>en</dc:language></metadata>"
        f'<manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>{items}'
        '</manifest><spine><itemref idref="nav"/>'
        + "".join(f'<itemref idref="{cid}"/>' for cid in spine)
        + "</spine></package>"
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", container)
        zf.writestr("OEBPS/content.opf", opf)
        zf.writestr("OEBPS/nav.xhtml", _xhtml("<nav><ol><li>Table of contents entry</li></ol></nav>"))
        for cid, body in chapters:
            zf.writestr(f"OEBPS/text/{cid}.xhtml", _xhtml(body))
    return buf.getvalue()


def _xhtml(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>t</title></head><body>{body}</body></html>"
    )


def make_docx() -> bytes:
    """A .docx made with python-docx: heading, paragraph, two bullets, a 2x2 table, a closing paragraph."""
    import docx

    d = docx.Document()
    d.add_heading("Report title", level=1)
    d.add_paragraph("First paragraph with some text.")
    d.add_paragraph("first bullet", style="List Bullet")
    d.add_paragraph("second bullet", style="List Bullet")
    table = d.add_table(rows=2, cols=2)
    for r in range(2):
        for c in range(2):
            table.cell(r, c).text = f"cell {r}{c}"
    d.add_paragraph("Closing paragraph.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
