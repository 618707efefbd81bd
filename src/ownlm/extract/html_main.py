"""Which part of an HTML page is its main text: boilerplate pruning and the choice of a content block.

Works on an lxml tree in place (``main_text_root`` runs the steps):

1. prune what the markup calls boilerplate: ``nav``/``aside``/``footer``/``form``/``figcaption``, ARIA
   landmarks, elements whose class or id names a menu, byline, comment, share, related-links, newsletter,
   donation, copyright, ... block, and link lists (blocks that are mostly link text: the shape of a menu) —
   but never an element holding more than half the page's text or a third of its prose;
2. weigh the prose: every paragraph of 25+ characters weighs ``1 + commas + min(length / 100, 3)``, scaled
   down by its share of link text (the paragraph score of Arc90's Readability), text written straight into
   a ``div`` likewise; the main block is the deepest element that still holds 80 % of the page's weight;
3. climb up to four parents from there, keeping the siblings that hold prose (a lead paragraph outside the
   article's body, a second text block) or headings, dropping the others (teasers, widgets, bylines);
   prune again inside, now relative to the main text;
4. tidy: a block repeated word for word is kept once; a heading left with an empty section goes.

Pages with too little prose to weigh (a table, a list, a short note) keep ``<main>``/``<article>`` when
one holds a fair share of the text, else the pruned body. The constants were set on the "dev" part of
trafilatura's evaluation set and checked on its held-out part (``bench/bench_html.py``).

>>> import lxml.html
>>> page = lxml.html.fromstring("<body><div class=menu><a href=/>Home</a></div><p>Hi, you.</p></body>")
>>> main_text_root(page).text_content()
'Hi, you.'
"""

from __future__ import annotations

import re

BOILERPLATE_TAGS = {"nav", "aside", "footer", "menu", "dialog", "form", "figcaption", "label", "fieldset"}
BOILERPLATE_ROLES = {
    "navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog", "form",
}  # fmt: skip
# Words in class/id that mark boilerplate, chosen by counting on the dev part of trafilatura's evaluation
# set (bench/bench_html.py) which words sit around must-not strings and hardly ever around must-have ones.
BOILERPLATE_NAME = re.compile(
    r"(?:^|[-_])(?:nav|navbar|navigation|menu|footer|foot|colophon|sidebar|textwidget|"
    r"breadcrumbs?|cookies?|consent|gdpr|privacy|share|sharing|sharedaddy|social|jetpack|related\w*|"
    r"recommend\w*|comments?|commentform|respond|reply|disqus|advert\w*|ads?|sponsor\w*|promo|masthead|"
    r"skip|subscribe|subscription|signup|login|register|newsletter|paywall|donat\w*|spende\w*|popup|"
    r"modal|toolbar|pagination|pager|noprint|nocontent|author|authors|byline|bio|credits?|"
    r"copyright|caption|tags|tagcloud|taxonomy|categories|rating|feedback|linklist|backlink|"
    r"more|most|recent|popular|trending|meta|postmeta|entry-meta|post-meta|dateline|contact|siteinfo|"
    r"cta|banner|breaking|flair|notice)(?:$|[-_])",
    re.IGNORECASE,
)
PROSE = ("p", "pre", "blockquote", "td", "dd", "li")  # blocks whose text is weighed as prose
LOOSE_TEXT = ("div", "section", "article", "td", "font", "center", "span")
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
GUARD = 0.35  # pruning never drops an element with more than this share of the prose
SHARE = 0.8  # the main block: the deepest element holding this share of the prose ...
LEVELS = 4  # ... then up to this many parents, keeping siblings that weigh at least SIBLING_MASS
SIBLING_MASS = 1.0
_COMMAS = re.compile(r"[,،、，;]")
_WS = re.compile(r"\s+")


def text_sizes(root) -> dict:
    """Per element: (characters of text inside it, characters of it inside links). One post-order pass."""
    import lxml.etree  # lazy, as in every reader: lxml loads only when an HTML file is read

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


def _drop(el) -> None:
    if el.getparent() is not None:
        el.drop_tree()  # keeps the element's tail text


def is_boilerplate(el, inside_article: bool) -> bool:
    """Whether the element's tag, role, class or id says it is not main text."""
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in BOILERPLATE_TAGS or (tag == "header" and not inside_article):
        return True
    if (el.get("role") or "").lower() in BOILERPLATE_ROLES:
        return True
    names = f"{el.get('class') or ''} {el.get('id') or ''}".split()
    return any(BOILERPLATE_NAME.search(n) for n in names)


def prune(root, keep_share: float = 0.5) -> None:
    """Drop boilerplate under ``root``, but never an element holding more than ``keep_share`` of its text
    or ``GUARD`` of its prose (a wrapper whose class name happens to say "sidebar" or "widget")."""
    sizes = text_sizes(root)
    mass = prose_mass(root, sizes)
    page = max(sizes.get(root, (0, 0))[0], 1)
    prose = max(mass.get(root, 0.0), 1.0)
    doomed = []
    for el in root.iter():
        if el is root or not isinstance(el.tag, str) or el.tag in ("main", "article", "body"):
            continue
        total, linked = sizes.get(el, (0, 0))
        if total > page * keep_share or mass.get(el, 0.0) > prose * GUARD:
            continue  # never throw away most of the page on a class name
        inside_article = any(a.tag in ("article", "main") for a in el.iterancestors())
        # A block that is mostly link text with several links is a menu, whatever it is called.
        link_list = el.tag in ("ul", "ol", "div", "p", "section", "table") and total and linked / total > 0.7
        if link_list and len(el.findall(".//a")) >= 3 or is_boilerplate(el, inside_article):
            doomed.append(el)
    for el in doomed:
        _drop(el)


def prose_mass(root, sizes: dict) -> dict:
    """Per element: the weight of the prose inside it (step 2 of the module docstring)."""
    import lxml.etree

    mass: dict = {}
    for _, el in lxml.etree.iterwalk(root, events=("end",)):
        m = sum(mass.get(child, 0.0) for child in el)
        total, linked = sizes.get(el, (0, 0))
        if el.tag in PROSE and total >= 25:
            m += (1 + len(_COMMAS.findall(el.text_content())) + min(total / 100, 3)) * (1 - linked / total)
        elif el.tag in LOOSE_TEXT:  # text written straight into a div, lines split by <br>
            own = len((el.text or "").strip()) + sum(len((c.tail or "").strip()) for c in el)
            if own >= 50:
                m += 1 + len(_COMMAS.findall(el.text or "")) + min(own / 100, 3)
        mass[el] = m
    return mass


def content_root(body, mass: dict, share: float = 0.8):
    """The deepest element that still holds ``share`` of the page's prose."""
    need = mass.get(body, 0.0) * share
    root = body
    while True:
        best = max((c for c in root if isinstance(c.tag, str)), key=lambda c: mass.get(c, 0.0), default=None)
        if best is None or mass.get(best, 0.0) < need:
            return root
        root = best


def _fallback_root(body, sizes: dict):
    """``<main>``/``<article>`` when the page marks exactly one that holds a quarter of the text, else body."""
    page = max(sizes.get(body, (0, 0))[0], 1)
    for path in ("//main | //*[@role='main']", "//article"):
        found = body.xpath(path)
        if len(found) == 1 and sizes.get(found[0], (0, 0))[0] >= page // 4:
            return found[0]
    return body


def _tidy(root) -> None:
    """Drop blocks repeated word for word (kept once) and headings whose section is empty."""
    seen: dict = {}  # text -> the first block that has it
    for el in list(root.iter("p", "ul", "ol", "table", "div", "section", "blockquote")):
        if el is root or el.getparent() is None:
            continue
        text = _WS.sub(" ", el.text_content()).strip()
        if len(text) < 40:
            continue
        first = seen.setdefault(text, el)
        if first is not el and not _is_inside(el, first):
            _drop(el)
    # A heading followed directly by another heading of the same or a higher rank, or by nothing, heads
    # nothing: what it introduced was pruned ("Related articles", "More on this").
    blocks = [el for el in root.iter() if isinstance(el.tag, str) and (el.tag in HEADINGS or el.tag in PROSE
              or el.tag in ("li", "ul", "ol", "table", "img", "pre"))]  # fmt: skip
    for i, el in enumerate(blocks):
        if el.tag not in HEADINGS or el.getparent() is None:
            continue
        nxt = next((b for b in blocks[i + 1 :] if not _is_inside(b, el)), None)
        if nxt is None or nxt.tag in HEADINGS and nxt.tag <= el.tag:
            _drop(el)


def _is_inside(el, ancestor) -> bool:
    return any(a is ancestor for a in el.iterancestors())


def _with_siblings(root, mass: dict, sizes: dict, levels: int):
    """Climb ``levels`` parents, keeping at each the siblings that hold prose (a lead paragraph, a second
    text block) or a heading, and dropping the others."""
    for _ in range(levels):
        parent = root.getparent()
        if parent is None or parent.tag in ("html", "body"):
            return root
        for sib in list(parent):
            if sib is root or not isinstance(sib.tag, str):
                continue
            total, linked = sizes.get(sib, (0, 0))
            if sib.tag in HEADINGS or mass.get(sib, 0.0) >= SIBLING_MASS and linked < 0.3 * total:
                continue
            _drop(sib)
        root = parent
    return root


def main_text_root(body):
    """The element whose text is the page's main text, after pruning boilerplate in place (see module doc)."""
    prune(body)
    sizes = text_sizes(body)
    mass = prose_mass(body, sizes)
    if mass.get(body, 0.0) >= 5:
        root = _with_siblings(content_root(body, mass, SHARE), mass, sizes, LEVELS)
        prune(root, keep_share=0.3)
    else:
        root = _fallback_root(body, sizes)
    _tidy(root)
    return root
