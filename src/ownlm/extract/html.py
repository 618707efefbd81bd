"""HTML pages: the main text, without menus, scripts, cookie banners and footers.

A small readability heuristic on lxml's HTML parser (no extra dependency):
1. drop what is never text (script, style, forms' controls, svg, hidden elements);
2. drop boilerplate: ``nav``/``aside``/``footer`` (and ``header`` outside the article), ARIA landmarks for
   navigation, elements whose class or id says menu/sidebar/cookie/share/..., and link lists (blocks
   whose text is mostly link text, the shape of a menu) — but never a block that holds most of the page;
3. keep ``<main>``/``<article>`` when the page marks one that holds a fair share of the text;
4. render blocks as paragraphs, list items as ``- item`` lines, table rows as tab-separated lines.

>>> html_to_text(b"<nav><a href=/>Home</a></nav><p>Hello <b>you</b>.</p>")[0]
'Hello you.'
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

from ownlm.extract.base import Document, ExtractOptions, Reader, ReaderError, Source

NEVER_TEXT = (
    "script", "style", "noscript", "template", "iframe", "svg", "math", "canvas", "object", "embed",
    "button", "select", "input", "textarea", "head", "map",
)  # fmt: skip
BOILERPLATE_TAGS = {"nav", "aside", "footer", "menu", "dialog"}
BOILERPLATE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
BOILERPLATE_NAME = re.compile(
    r"(?:^|[-_])(?:nav|navbar|navigation|menu|footer|sidebar|breadcrumbs?|cookies?|consent|share|sharing|"
    r"social|related|comments?|advert\w*|ads?|promo|masthead|skip|subscribe|newsletter|popup|modal|"
    r"toolbar|pagination|print)(?:$|[-_])",
    re.IGNORECASE,
)
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
    from ownlm.extract.text import decode_text

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
    import lxml.etree
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


def _drop(el) -> None:
    if el.getparent() is not None:
        el.drop_tree()  # keeps the element's tail text


def _strip_never_text(doc) -> None:
    for el in list(doc.iter(*NEVER_TEXT)):
        _drop(el)
    for el in doc.xpath(
        "//*[@hidden or @aria-hidden='true' or contains(translate(@style,' ',''),'display:none')]"
    ):
        if el.tag not in ("html", "body"):
            _drop(el)


def _text_lengths(root) -> dict:
    """Per element: (characters of text inside it, characters of it inside links). One post-order pass."""
    import lxml.etree

    sizes: dict = {}
    for _, el in lxml.etree.iterwalk(root, events=("end",)):
        total = len((el.text or "").strip())
        linked = 0
        for child in el:
            t, k = sizes.get(child, (0, 0))
            total += t + len((child.tail or "").strip())
            linked += k
        sizes[el] = (total, total if el.tag == "a" else linked)
    return sizes


def _is_boilerplate(el, inside_article: bool) -> bool:
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in BOILERPLATE_TAGS or (tag == "header" and not inside_article):
        return True
    if (el.get("role") or "").lower() in BOILERPLATE_ROLES:
        return True
    names = f"{el.get('class') or ''} {el.get('id') or ''}".split()
    return any(BOILERPLATE_NAME.search(n) for n in names)


def _strip_boilerplate(body) -> None:
    sizes = _text_lengths(body)
    page = max(sizes.get(body, (0, 0))[0], 1)
    doomed = []
    for el in body.iter():
        if el is body or not isinstance(el.tag, str) or el.tag in ("main", "article"):
            continue
        total, linked = sizes.get(el, (0, 0))
        if total > page // 2:
            continue  # never throw away most of the page on a class name
        inside_article = any(a.tag in ("article", "main") for a in el.iterancestors())
        # A block that is mostly link text with several links is a menu, whatever it is called.
        link_list = el.tag in ("ul", "ol", "div", "p", "section") and total and linked / total > 0.7
        if link_list and len(el.findall(".//a")) >= 3 or _is_boilerplate(el, inside_article):
            doomed.append(el)
    for el in doomed:
        _drop(el)


def _main_root(body):
    sizes = _text_lengths(body)
    page = max(sizes.get(body, (0, 0))[0], 1)
    for path in ("//main | //*[@role='main']", "//article"):
        found = body.xpath(path)
        if len(found) == 1 and sizes.get(found[0], (0, 0))[0] >= page // 4:
            return found[0]
    return body


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


def html_to_text(data: bytes | str, main_only: bool = True) -> tuple[str, dict]:
    """``(text, meta)`` of an HTML page; ``main_only`` applies the boilerplate heuristic.

    >>> html_to_text("<title>T</title><ul><li>a</li><li>b</li></ul>", main_only=False)
    ('- a\\n- b', {'title': 'T'})
    """
    doc = parse_html(data)
    meta = {}
    title = doc.findtext(".//title")
    if title and title.strip():
        meta["title"] = _WS.sub(" ", title).strip()
    if doc.get("lang"):
        meta["lang"] = doc.get("lang")
    _strip_never_text(doc)
    body = doc.find("body")
    if body is None:
        body = doc
    if main_only:
        _strip_boilerplate(body)
        body = _main_root(body)
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
        text, meta = html_to_text(src.data, main_only=True)
        if text:
            yield Document(text=text, source=src.name, meta=meta)
