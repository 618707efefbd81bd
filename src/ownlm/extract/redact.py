"""``--redact``: phone numbers, e-mail addresses and URLs -> ``<PHONE>``, ``<EMAIL>``, ``<URL>``.

Order matters: URLs first (they may contain ``@`` and digits), then e-mail addresses, then phone
numbers. Phone numbers are the fuzzy part: a run of 7-15 digits with the usual separators (space,
dot, hyphen, brackets), optionally ``+country``. Dates (2024-01-31, 31.01.2024), year ranges
(1999-2001), times and ordinary numbers (1,000,000; 3.14159) are left alone. When in doubt a digit run
is redacted: for privacy a false positive costs less than a leaked number.

>>> redact("Mail ann@example.org or call +44 20 7946 0958, see https://example.org/x.")
'Mail <EMAIL> or call <PHONE>, see <URL>.'
"""

from __future__ import annotations

import re

URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
EMAIL = re.compile(r"\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(
    r"(?<![\w+/])"  # not inside a word, an identifier or a path
    r"(?:\+|00)?(?:\(?\d{1,4}\)?[ \u00a0.\-]?){1,6}\d{1,4}"
    r"(?![\w/])"
)
_DATE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
_YEARS = re.compile(r"^(?:1[5-9]|20)\d\d ?[-/] ?(?:1[5-9]|20)\d\d$")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_TRAILING = ".,;:!?)]}'\""


def _url(m: re.Match) -> str:
    # Sentence punctuation after a URL is not part of it ("see https://x.org.").
    url = m.group(0)
    stripped = url.rstrip(_TRAILING)
    return "<URL>" + url[len(stripped) :]


def _phone(m: re.Match) -> str:
    s = m.group(0)
    digits = sum(ch.isdigit() for ch in s)
    if not 7 <= digits <= 15:
        return s
    plain = s.strip()
    if not plain.startswith(("+", "00", "(")) and (
        _DATE.match(plain) or _YEARS.match(plain) or _DECIMAL.match(plain)
    ):
        return s
    return "<PHONE>"


def redact(text: str) -> str:
    """Replace URLs, e-mail addresses and phone numbers in ``text`` with placeholders."""
    text = URL.sub(_url, text)
    text = EMAIL.sub("<EMAIL>", text)
    return PHONE.sub(_phone, text)


def redact_names(names: list[str]) -> dict[str, str]:
    """Map sender names that are phone numbers or e-mail addresses to ``<PHONE_1>``, ``<EMAIL_2>``, ...

    Chat exports name unsaved contacts by their number; numbering keeps different senders apart.

    >>> redact_names(["Ann", "+1 555 123 4567", "Ann"])
    {'+1 555 123 4567': '<PHONE_1>'}
    """
    mapping: dict[str, str] = {}
    for name in names:
        if name in mapping:
            continue
        red = redact(name)
        if red != name:
            kind = "EMAIL" if "<EMAIL>" in red else "PHONE" if "<PHONE>" in red else "URL"
            mapping[name] = (
                red if red not in ("<PHONE>", "<EMAIL>", "<URL>") else f"<{kind}_{len(mapping) + 1}>"
            )
    return mapping
