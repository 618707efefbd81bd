"""WhatsApp chat exports (``.txt``, Android and iOS, any locale) -> one ``Conversation`` per file.

An export is a list of message lines, each starting with a timestamp, plus continuation lines for
multi-line messages. Locales differ in everything around the timestamp, so one pattern covers them all:

    12/15/25, 10:30 AM - John Doe: Hello               Android, US, 12h (narrow no-break space before AM)
    16.03.22, 15:10 - Anna: Hallo                       Android, German
    [16/03/2022, 15:20:25] person1: Hi                  iOS, bracketed, seconds
    2022. 3. 16. 오후 3:10 - 민수: 안녕                   Korean (year first, marker before the time)

The date order (day-first or month-first) is decided from the WHOLE file, separately for each line
style (a file can mix Android and iOS lines): a first field above 12 means day-first, a second field
above 12 means month-first (if lines contradict, the order more lines prove wins); if no line of that
style decides, the rest of the file does, then the order that keeps the timestamps in time order, and
day-first (the world's majority) breaks a tie. ``time`` is ``YYYY-MM-DDTHH:MM:SS`` local time as the
export shows it (``:00`` when the export has no seconds); ``name`` is the sender as spelled, without the
invisible direction marks iOS wraps around phone numbers.

Placeholders: media ("<Media omitted>", "image omitted", "<attached: x.jpg>") become the message text
``<media>`` (the turn is kept, the file name is not); "<This message was edited>" is stripped; "This
message was deleted" and system lines (encryption notice, joined, left, subject changed, ...) are
dropped with ``drop_system`` and kept in ``meta["system"]`` otherwise.

A line that looks like a message line but has an impossible date (30/02) is yielded as a ``Problem``
("file:line", what was expected) and kept as text of the message before it; nothing is lost.
Dates are given as the export writes them: Thai (Buddhist) and Persian (Solar Hijri) years are not converted.

>>> from ownlm.extract.base import ExtractOptions, Source
>>> src = Source("chat.txt", "20/01/24, 09:05 - Ann: Hi\\nthere\\n".encode())
>>> conv = next(WhatsAppReader().read(src, ExtractOptions()))
>>> conv.messages[0]
Message(name='Ann', time='2024-01-20T09:05:00', text='Hi\\nthere')
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ownlm.extract.base import Conversation, ExtractOptions, Message, Problem, Reader, ReaderError, Source

# Invisible marks exports put at line starts, before special texts and around phone numbers.
INVISIBLE = "\ufeff\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_STRIP_INVISIBLE = str.maketrans("", "", INVISIBLE)

# AM/PM markers as locales spell them after (or, in CJK locales, before) the time; dots and spaces are
# optional ("a. m.", "a.m.", "am"). English, Spanish, German, Greek, Swedish, Afrikaans, Finnish,
# Hungarian, Vietnamese, Turkish, Arabic, Korean, Chinese, Japanese, Thai, Hindi.
_AM = r"a\.?\s?m\.? vorm\.? π\.?\s?μ\.? f\.?\s?m\.? vm\.? ap\.? de\. sa öö ص 오전 上午 午前 ก่อนเที่ยง पूर्वाह्न".split()
_PM = r"p\.?\s?m\.? nachm\.? μ\.?\s?μ\.? e\.?\s?m\.? nm\.? ip\.? du\. ch ös م 오후 下午 午後 หลังเที่ยง अपराह्न".split()
_MARK = "|".join(_AM + _PM)
_AM_RE = re.compile("(?:" + "|".join(_AM) + r")\Z", re.I)

HEADER = re.compile(
    rf"""^(?P<open>\[)?
    (?P<d1>\d{{1,4}})(?P<sep>[./-])\s?(?P<d2>\d{{1,2}})(?P=sep)\s?(?P<d3>\d{{1,4}})\.?  # date, any order
    (?:[,،]\s?|\s)(?:(?:à|kl\.|klo)\s)?                                       # "à" (fr), "klo" (fi)
    (?:(?P<pre>{_MARK})\s?)?                                                   # 오후 3:10
    (?P<hh>\d{{1,2}})[:.](?P<mm>\d{{2}})(?:[:.](?P<ss>\d{{2}}))?                # 15:10[:17]
    (?:\s?(?P<post>{_MARK}))?                                                  # 3:10 PM
    (?(open)\]\s?|(?P<tail>\s[-–~]\s|(?(ss)(?::\s|\s)|(?!))))                 # ] or -; with seconds : or space
    (?P<rest>.*)$""",
    re.X | re.I,
)

_MEDIA = re.compile(
    r"^(?:<[^<>]*(?:omitted|omitido|omis|omessi|oculta|ausgeschlossen|weggelaten|attached|adjunto)[^<>]*>"
    r"|(?:image|video|audio|sticker|GIF|document|Contact card|imagen|vídeo|Bild|afbeelding)\s+"
    r"(?:omitted|omitida|omitido|weggelassen|weggelaten|omise?)"
    r"|.*\s(?:document|documento|Dokument)\s+(?:omitted|omitido|weggelassen)|null)$",
    re.I,
)
# Texts WhatsApp writes in a sender's name: not what they wrote, so system lines.
_GENERATED = re.compile(
    r"^(?:This message was deleted\.?|You deleted this message\.?|Waiting for this message\..*|Diese Nachricht wurde gelöscht\.?"
    r"|Du hast diese Nachricht gelöscht\.?|Se eliminó este mensaje\.?|Eliminaste este mensaje\.?"
    r"|Ce message a été supprimé\.?|Dit bericht is verwijderd\.?|Questo messaggio è stato eliminato\.?"
    r"|Esta mensagem foi apagada\.?|Это сообщение удалено\.?)$",
    re.I,
)
_EDITED = re.compile(
    r"\s*<(?:This message was edited|Diese Nachricht wurde bearbeitet|Se editó este mensaje\.?"
    r"|Ce message a été modifié|Dit bericht is bewerkt|Questo messaggio è stato modificato"
    r"|Mensagem editada)>\s*\Z",
    re.I,
)
# System events. Lines with no "sender: " are system lines anyway; this list catches the ones that do
# have a colon: iOS writes "Group name: \u200eYou created group ..." and subjects can contain ": ".
_SYSTEM = re.compile(
    r"end-to-end encrypted|cifrad[oa]s de extremo|Ende-zu-Ende|chiffrés de bout en bout|end-to-end versleuteld"
    r"|crittografia end-to-end|criptografia de ponta|created group|created this group|changed the subject"
    r"|changed this group's|changed the group|changed their phone number|security code|\badded\b"
    r"|\bremoved\b|\bleft\b|joined using|now an admin|no longer an admin|disappearing messages"
    r"|pinned a message|deleted this group's|Missed (?:voice|video|group) call|You were added"
    r"|Waiting for this message|message timer|blocked this contact|unblocked this contact",
    re.I,
)
# "WhatsApp Chat with Ann.txt" (Android), "WhatsApp Chat - Ann.zip/_chat.txt" (iOS): the chat's name.
_CHAT_NAME = re.compile(r"^WhatsApp[ -]Chat (?:with|mit|con|avec|met|com|-) (.+?)\.(?:txt|zip)$", re.I)

_QUOTES = '"“”«„'
_HEADER_START = set("0123456789[٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹" + INVISIBLE)  # cheap test first: most lines are text
_HAS_INVISIBLE = re.compile(f"[{INVISIBLE}]")

EXPECTED = "'31/12/23, 23:59 - Name: text' (Android) or '[31/12/23, 23:59:59] Name: text' (iOS)"


@dataclass
class _Entry:
    """One message line and its continuation lines, before classification."""

    line: int
    time: str
    rest: str
    more: list[str] = field(default_factory=list)


def match_header(line: str) -> re.Match | None:
    """The timestamp pattern's match if ``line`` starts a message (invisible marks allowed), else None."""
    if line[:1] not in _HEADER_START:
        return None
    m = HEADER.match(line.lstrip(INVISIBLE))
    if m is None and _HAS_INVISIBLE.search(line, 0, 40):
        m = HEADER.match(line.translate(_STRIP_INVISIBLE))  # Arabic: "١٣\u200f/٢\u200f/٢٠٢٤"
    return m


def _style(m: re.Match) -> tuple:
    """Lines of one style share one date order; a file may mix styles (Android and iOS lines)."""
    tail = "]" if m["open"] else m["tail"].strip() or " "
    return (tail, m["sep"], len(m["d1"]), len(m["d3"]))


def _plausible(m: re.Match) -> bool:
    """The skeleton matched; the fields must also be able to form some date and time."""
    s1, s2, s3, hh, mm, ss = m.group("d1", "d2", "d3", "hh", "mm", "ss")
    year_first = len(s1) == 4
    if (len(s3) > 2) if year_first else (len(s1) > 2 or len(s3) not in (2, 4)):
        return False
    small = (int(s2), int(s3)) if year_first else (int(s1), int(s2))
    return 1 <= min(small) and max(small) <= 31 and int(hh) <= 24 and int(mm) <= 59 and int(ss or 0) <= 59


def _ymd(m: re.Match, order: str) -> tuple[int, int, int]:
    s1, s2, s3 = m.group("d1", "d2", "d3")
    d1, d2, d3 = int(s1), int(s2), int(s3)
    if order == "year-first":
        return d1, d2, d3
    year = d3 + 2000 if len(s3) == 2 else d3  # WhatsApp exists since 2009: "24" is 2024
    return (year, d2, d1) if order == "day-first" else (year, d1, d2)


def _hms(m: re.Match) -> tuple[int, int, int]:
    hh, mm, ss, pre, post = m.group("hh", "mm", "ss", "pre", "post")
    h, mi, s = int(hh), int(mm), int(ss or 0)
    marker = pre or post
    if marker:
        am = bool(_AM_RE.match(marker))
        if am and h == 12:
            h = 0
        elif not am and h < 12:
            h += 12
    return h, mi, s


def _decide_orders(headers: list[tuple[int, re.Match, tuple]]) -> dict[tuple, str]:
    """Date order per line style, from every line of that style (then the whole file, then time order).

    When lines of one style contradict each other (one has a first field above 12, another a second
    field above 12), the order more lines prove wins and the others become problems in ``_iso``.
    """
    evidence: dict[tuple, Counter] = {}  # style -> order -> how many lines prove it
    for _, m, style in headers:
        ev = evidence.setdefault(style, Counter())
        s1, s2 = m.group("d1", "d2")
        if len(s1) == 4:
            ev["year-first"] += 1
        elif int(s1) > 12:
            ev["day-first"] += 1
        elif int(s2) > 12:
            ev["month-first"] += 1
    file_wide = sum(evidence.values(), Counter())
    del file_wide["year-first"]
    orders = {}
    for style, ev in evidence.items():
        if ev:  # "year-first" styles only ever collect that one key: their first field has 4 digits
            orders[style] = ev.most_common(1)[0][0]
        elif len(file_wide) == 1:
            orders[style] = next(iter(file_wide))
        else:
            same = [m for _, m, s in headers if s == style]
            orders[style] = min(("day-first", "month-first"), key=lambda o: _disorder(same, o))
    return orders


def _disorder(matches: list[re.Match], order: str) -> int:
    """How often time goes backwards when the dates are read in ``order`` (a chat is in time order)."""
    keys = [(*_ymd(m, order), *_hms(m)) for m in matches]
    return sum(b < a for a, b in zip(keys, keys[1:]))


def _iso(m: re.Match, order: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS``; raises ``ValueError`` for an impossible date such as 30/02."""
    return datetime(*_ymd(m, order), *_hms(m)).isoformat()


def parse_lines(lines: list[str]) -> tuple[list[_Entry], list[str], list[tuple[int, str]]]:
    """Group lines into entries (a message line + its continuation lines).

    Returns the entries, the date orders used, and problems as ``(line number, reason)``: a line that
    looks like a message line but has an impossible date or time is reported and kept as text of the
    message before it (nothing is lost); text before the first message line is reported and skipped.

    >>> entries, orders, problems = parse_lines(["[01/02/24, 10:00:00] A: hi", "more"])
    >>> entries[0].time, entries[0].rest, entries[0].more, orders, problems
    ('2024-02-01T10:00:00', 'A: hi', ['more'], ['day-first'], [])
    """
    headers: list[tuple[int, re.Match, tuple]] = []  # (line number, match, style)
    problems: list[tuple[int, str]] = []
    for i, line in enumerate(lines, 1):
        m = match_header(line)
        if m and _plausible(m):
            headers.append((i, m, _style(m)))
        elif m:
            problems.append((i, f"{line[:60]!r} has an impossible date or time; expected {EXPECTED}"))
    orders = _decide_orders(headers)
    starts = {i: (m, orders[style]) for i, m, style in headers}
    entries: list[_Entry] = []
    orphans: list[int] = []
    for i, line in enumerate(lines, 1):
        if i in starts:
            m, order = starts[i]
            try:
                entries.append(_Entry(i, _iso(m, order), m["rest"]))
                continue
            except ValueError as e:
                problems.append(
                    (i, f"{line[:60]!r} is not a valid date read {order} ({e}); expected {EXPECTED}")
                )
        if entries:
            entries[-1].more.append(line)
        elif line.strip(INVISIBLE + " \t"):
            orphans.append(i)
    if orphans:
        problems.append(
            (orphans[0], f"{len(orphans)} line(s) of text before the first message line; expected {EXPECTED}")
        )
    return entries, sorted({orders[style] for _, _, style in headers}), sorted(problems)


def classify(rest: str, more: list[str]) -> tuple[str, str | None, str]:
    """``(kind, name, text)`` for one entry; kind is "message", "media" or "system".

    >>> classify("Ann: \\u200eimage omitted", [])
    ('media', 'Ann', '<media>')
    >>> classify("You were added", [])
    ('system', None, 'You were added')
    """
    name, sep, text = rest.partition(": ")
    if not sep and rest.endswith(":"):  # "Name:" with the text on the next lines
        name, sep, text = rest[:-1], ":", ""
    text = "\n".join([text, *more]).strip()
    name = name.translate(_STRIP_INVISIBLE).strip()
    if not sep or not name:
        return "system", None, "\n".join([rest, *more]).strip().lstrip(INVISIBLE)
    marked = text[:1] in INVISIBLE  # iOS marks texts it wrote itself (events, media) with a U+200E
    if text.endswith(">"):
        text = _EDITED.sub("", text)
    text = text.strip(INVISIBLE + " ")
    short = len(text) < 300  # placeholders are short; long texts skip the placeholder patterns
    if short and _MEDIA.match(text):
        return "media", name, "<media>"
    quoted = any(q in name for q in _QUOTES)  # 'Ann changed the subject to "Trip: Paris"' is no sender
    if short and _GENERATED.match(text) or (marked and _SYSTEM.search(text)) or quoted:
        return "system", name, text
    return "message", name, text


def _decode(src: Source, errors: str) -> list[str]:
    try:
        text = src.data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as e:
        raise ReaderError(
            f"invalid UTF-8 at byte {e.start} (--errors {errors}); use --errors replace"
        ) from None
    # Split on LF only (CR stripped below): messages may contain U+2028 and other characters that
    # str.splitlines() would treat as line breaks.
    return [line.rstrip("\r") for line in text.split("\n")]


class WhatsAppReader(Reader):
    """Reads WhatsApp ``.txt`` exports (inside a zip too: the stage hands each zip member over)."""

    name = "whatsapp"
    extensions = (".txt",)

    def sniff(self, src: Source) -> bool:
        """Yes when a ``.txt`` starts with a WhatsApp message line and its first 4 KB hold a "sender: text"."""
        if not super().sniff(src):  # the extension first
            return False
        head = src.head_text.split("\n")
        first = True
        for line in head[:-1] if len(src.data) > len(src.head) else head:
            line = line.rstrip("\r")
            if not line.strip(INVISIBLE + " \t"):
                continue
            m = match_header(line)
            if first:  # an export starts with a message line
                if not (m and _plausible(m) and m["rest"].strip()):
                    return False
                first = False
            if m and ": " in m["rest"]:  # ... and has a "sender: text" line (not only system lines)
                return True
        return False

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        entries, orders, problems = parse_lines(_decode(src, opts.encoding_errors))
        if not entries:
            raise ReaderError(f"no WhatsApp message lines found; expected lines like {EXPECTED}")
        for line, reason in problems:
            yield Problem(f"{src.name}:{line}", reason)
        messages, system = [], []
        media = 0
        for e in entries:
            kind, name, text = classify(e.rest, e.more)
            if kind == "system":
                entry = {"line": e.line, "time": e.time, "text": text}
                system.append(entry if name is None else {**entry, "name": name})
                continue
            media += kind == "media"
            messages.append(Message(name=name, time=e.time, text=text))
        meta: dict = {"format": "whatsapp", "date_order": orders[0] if len(orders) == 1 else orders}
        for part in reversed(src.name.split("/")):
            if chat := _CHAT_NAME.match(part):
                meta["chat"] = chat.group(1)
                break
        meta["media"] = media
        if opts.drop_system:
            meta["system_dropped"] = len(system)
        else:
            meta["system"] = system
        yield Conversation(source=src.name, messages=messages, meta=meta)
