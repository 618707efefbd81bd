"""HTML pages: the main text, without menus, scripts, cookie banners, bylines and footers.

On lxml's HTML parser (no extra dependency):
1. decode (BOM, ``<meta charset>``, then detection) and parse; drop what is never text (script, style,
   forms' controls, svg, hidden elements);
2. find the main text: ``ownlm.extract.html_main`` prunes boilerplate (menus, bylines, related links,
   donation boxes, footers, repeated blocks) and picks the block that holds the page's prose;
3. render blocks as paragraphs, list items as ``- item`` lines, table rows as tab-separated lines.

``engine="trafilatura"`` (or ``"auto"``: trafilatura when installed) hands step 2-3 to trafilatura, which
removes more boilerplate on its evaluation set (see docs/benchmarks.md, "HTML main text").

>>> html_to_text(b"<nav><a href=/>Home</a></nav><p>Hello <b>you</b>.</p>")[0]
'Hello you.'
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from ownlm.errors import UserError
from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source
from ownlm.extract.html_main import main_text_root
from ownlm.extract.text import decode_text

NEVER_TEXT = (
    "script", "style", "noscript", "template", "iframe", "svg", "math", "canvas", "object", "embed",
    "button", "select", "input", "textarea", "head", "map",
)  # fmt: skip
PARAGRAPH = {
    "p", "div", "section", "article", "main", "header", "footer", "blockquote", "pre", "table", "ul", "ol",
    "dl", "figure", "figcaption", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "address", "details", "summary",
    "fieldset", "center", "body",
}  # fmt: skip
LINE = {"li", "tr", "br", "dt", "dd", "caption", "option"}
CELL = {"td", "th"}
_WS = re.compile(r"\s+")
_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def decode_html(data: bytes) -> str:
    """The page as str: BOM, then the ``<meta charset>`` it declares, then UTF-8 / a guessed encoding."""
    if not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        m = _CHARSET.search(data[:8192])
        if m:
            try:
                return data.decode(m.group(1).decode("ascii"), errors="replace")
            except LookupError:
                pass  # an unknown charset name: fall back to detection
    return decode_text(data, "replace")[0]


def parse_html(data: bytes | str):
    """lxml document for ``data``; ``ReaderError`` when there is nothing to parse."""
    import lxml.etree  # lazy, as in every reader: lxml loads only when a file of this type is read
    import lxml.html

    text = decode_html(data) if isinstance(data, bytes) else data
    text = _XML_DECL.sub("", text, count=1)  # lxml refuses str input that declares an encoding
    if not text.strip():
        raise ReaderError("empty HTML file")
    try:
        doc = lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError) as e:
        raise ReaderError(f"cannot parse HTML: {e}") from None
    # Comments and processing instructions go, their tail text stays.
    lxml.etree.strip_elements(doc, lxml.etree.Comment, lxml.etree.ProcessingInstruction, with_tail=False)
    return doc


def _strip_never_text(doc) -> None:
    for el in list(doc.iter(*NEVER_TEXT)):
        if el.getparent() is not None:
            el.drop_tree()  # keeps the element's tail text
    for el in doc.xpath(
        "//*[@hidden or @aria-hidden='true' or contains(translate(@style,' ',''),'display:none')]"
    ):
        if el.tag not in ("html", "body"):
            el.drop_tree()  # keeps the element's tail text


def render(root) -> str:
    """Text of an lxml element: blocks as paragraphs, ``li``/``tr``/``br`` as lines, cells tab-separated."""
    import lxml.etree

    out: list[str] = []
    pending = 0  # newlines owed before the next text
    pre = 0  # depth inside <pre>, where whitespace is kept

    def emit(s: str | None, keep: bool = False) -> None:
        nonlocal pending
        if not s:
            return
        if not (pre or keep):
            s = _WS.sub(" ", s)
            if s == " ":
                if out and not pending and not out[-1].endswith((" ", "\n", "\t")):
                    out.append(" ")
                return
        if pending:
            if out:
                out[-1] = out[-1].rstrip(" \t")
                out.append("\n" * pending)
            pending = 0
            if not pre:
                s = s.lstrip(" ")
        elif out and out[-1].endswith((" ", "\n", "\t")) and not pre:
            s = s.lstrip(" ")
        out.append(s)

    for event, el in lxml.etree.iterwalk(root, events=("start", "end")):
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in PARAGRAPH:
                pending = max(pending, 2)
            elif tag in LINE:
                pending = max(pending, 1)
            if tag == "pre":
                pre += 1
            if tag == "li":
                emit("- ", keep=True)
            emit(el.text)
        else:
            if tag == "pre":
                pre -= 1
            if tag in PARAGRAPH:
                pending = max(pending, 2)
            elif tag in LINE and tag != "br":
                pending = max(pending, 1)
            elif tag in CELL:
                emit("\t", keep=True)
            if el is not root:
                emit(el.tail)
    text = re.sub(r"[ \t]+\n", "\n", "".join(out).strip())
    text = re.sub(r"(?m)^-$\n?", "", text)  # list items whose content was dropped
    return re.sub(r"\n{3,}", "\n\n", text).strip()


ENGINES = ("ownlm", "trafilatura", "auto")
DEFAULT_ENGINE = "ownlm"


def trafilatura_text(data: bytes | str) -> str | None:
    """trafilatura's main text of a page (``None`` when it finds none), with the settings of its own
    evaluation: tables kept, comments left out. Raises ``ImportError`` when trafilatura is not installed."""
    import trafilatura  # optional: ownlm[html]

    return trafilatura.extract(data, include_comments=False, include_tables=True)


def html_to_text(data: bytes | str, main_only: bool = True, engine: str = "ownlm") -> tuple[str, dict]:
    """``(text, meta)`` of an HTML page; ``main_only`` keeps the main text only, found by ``engine``:
    ``"ownlm"`` (``html_main``'s heuristic), ``"trafilatura"`` (needs the package) or ``"auto"``
    (trafilatura when installed, ownlm's heuristic when it is not or finds nothing).

    >>> html_to_text("<title>T</title><ul><li>a</li><li>b</li></ul>", main_only=False)
    ('- a\\n- b', {'title': 'T'})
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown HTML engine {engine!r}: use one of {', '.join(ENGINES)}")
    doc = parse_html(data)
    meta = {}
    title = doc.findtext(".//title")
    if title and title.strip():
        meta["title"] = _WS.sub(" ", title).strip()
    if doc.get("lang"):
        meta["lang"] = doc.get("lang")
    if main_only and engine != "ownlm":
        try:
            text = trafilatura_text(data)
        except ImportError:
            if engine == "trafilatura":
                raise UserError(
                    "HTML engine 'trafilatura' is not installed: pip install trafilatura, or use 'ownlm'"
                ) from None
            text = None
        except Exception:  # trafilatura failing on one page: ownlm's reader takes that page
            text = None
        if text and text.strip():
            return text.strip(), meta
    _strip_never_text(doc)
    body = doc.find("body")
    if body is None:
        body = doc
    if main_only:
        body = main_text_root(body)
    return render(body), meta


class HtmlReader(Reader):
    """``.html``/``.htm``/``.xhtml`` (and extensionless files that start like HTML): one document per page."""

    name = "html"
    extensions = (".html", ".htm", ".xhtml", ".shtml")

    def sniff(self, src: Source) -> bool:
        if src.suffix in self.extensions:
            return True
        start = src.head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        return src.suffix == "" and start.startswith((b"<!doctype html", b"<html"))

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document]:
        engine = getattr(opts, "html_engine", DEFAULT_ENGINE)  # an ExtractOptions field, where it has one
        text, meta = html_to_text(src.data, main_only=True, engine=engine)
        if text:
            yield Document(text=text, source=src.name, meta=meta)
