"""How close extracted text is to an expected text: a character-level similarity in [0, 1].

Layout is normalised first: every whitespace run becomes one space, and tokens made only of
table-drawing or bullet characters (``|``, ``+``, ``---``, ``=``, ``•``, a lone ``-``) are dropped.
Extractors legitimately differ there (one draws tables as ASCII grids, another separates cells with
tabs; one marks list items with "- ", another not), and what we measure is whether the words of the
document come out, spelled right, in the right order.

The score is difflib's ratio ``2 * M / (len(a) + len(b))`` with ``M`` matched characters. A plain
character-level ``SequenceMatcher`` is quadratic on book-sized texts, so matching is done in two
levels: words first, then characters inside each differing stretch. M can only be smaller than an
optimal character alignment would give, so the score is a conservative estimate.

>>> round(similarity("Hello,  world\\n", "Hello world"), 3)
0.957
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_CHAR_LEVEL_LIMIT = 20_000  # longest differing stretch compared character by character


_LAYOUT_TOKEN = re.compile(r"^[-|+=_*•·─│┌┐└┘├┤┬┴┼]+$")


def normalise_space(text: str) -> str:
    """Whitespace runs -> one space; layout-only tokens dropped."""
    return " ".join(w for w in text.split() if not _LAYOUT_TOKEN.match(w))


def similarity(got: str, expected: str) -> float:
    """Character-level similarity of two texts after whitespace normalisation (1.0 = identical)."""
    a, b = normalise_space(got), normalise_space(expected)
    if not a and not b:
        return 1.0
    wa, wb = a.split(" "), b.split(" ")
    matched = 0
    for op, i1, i2, j1, j2 in SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op == "equal":
            # Each equal word brings its characters and the space after it (minus the very last).
            matched += sum(len(w) + 1 for w in wa[i1:i2])
        elif op == "replace":
            sa, sb = " ".join(wa[i1:i2]), " ".join(wb[j1:j2])
            if len(sa) <= _CHAR_LEVEL_LIMIT and len(sb) <= _CHAR_LEVEL_LIMIT:
                sm = SequenceMatcher(None, sa, sb, autojunk=False)
                matched += sum(block.size for block in sm.get_matching_blocks())
    matched = min(matched, len(a), len(b))
    return 2 * matched / (len(a) + len(b))
