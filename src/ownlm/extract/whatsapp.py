"""WhatsApp chat exports (``.txt``, Android and iOS, any locale) -> one ``Conversation`` per file.

An export is a list of message lines, each starting with a timestamp, plus continuation lines for
multi-line messages. Locales differ in everything around the timestamp (``whatsapp_dates``):

    12/15/25, 10:30 AM - John Doe: Hello               Android, US, 12h (narrow no-break space before AM)
    16.03.22, 15:10 - Anna: Hallo                       Android, German
    [16/03/2022, 15:20:25] person1: Hi                  iOS, bracketed, seconds
    [21:41:35, 3/27/22] Dmitry: Hi                      iOS, time before the date
    2022. 3. 16. 오후 3:10 - 민수: 안녕                   Korean (year first, marker before the time)

The date order is read from the whole file (the reading that gives valid dates in time order); a tie
between day-first and month-first is reported and ``--date-order`` settles it. Buddhist and Japanese-era
years become Gregorian. ``time`` is ``YYYY-MM-DDTHH:MM:SS`` local time as the export shows it (``:00``
when the export has no seconds); ``name`` is the sender as spelled, without the invisible direction marks
iOS wraps around phone numbers.

What WhatsApp wrote itself is told by the export's structure first, by words (``whatsapp_phrases``, 21
languages) only where structure is silent, and normalised to one vocabulary: media, stickers, GIFs,
documents and contact cards become ``<media>``; a shared location or place ``<location>``; a caption sent
with a file is kept as the message's text; "<This message was edited>" is stripped; deleted messages,
missed calls and events (encryption notice, joined, left, security code, ...) are dropped with
``drop_system`` and kept in ``meta["system"]`` (each with its ``kind``) otherwise.

A line that looks like a message line but has an impossible date (30/02) is yielded as a ``Problem``
("file:line", what was expected) and kept as text of the message before it; nothing is lost.

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

from ownlm.extract.base import (
    Conversation,
    ExtractOptions,
    Message,
    Problem,
    Reader,
    ReaderError,
    Source,
    system_meta,
)
from ownlm.extract.whatsapp_dates import (
    INVISIBLE,
    SOLAR_HIJRI_YEARS,
    STRIP_INVISIBLE,
    infer_order,
    iso,
    match_header,
    plausible,
    style,
)
from ownlm.extract.whatsapp_phrases import DELETED, EDITED, FILE_ATTACHED, OMITTED, SYSTEM, nfc

__all__ = ["WhatsAppReader", "classify", "match_header", "parse_lines"]

# iOS opens the line of an attachment with a direction mark before its "[" (left-to-right, or right-to-left
# in Arabic and Hebrew) and marks the placeholder inside the text, in every language:
#   \u200e[27/03/2022, 21:41:55] Ann: \u200eimage omitted           \u200e[...] Ann: \u200e<attached: 00000035-PHOTO-...jpg>
#   \u200e[...] Ann: Report.pdf \u200edocument omitted                \u200f[...] Ann: \u200fلم يتم إدراج الصورة
# Texts, deleted messages, locations and events have no mark before the "[".
_LINE_MARKS = "\u200e\u200f"
_MARKS = re.compile("[\u200e\u200f]")
# An edit marker closes a text: a mark, then a bracketed phrase without digits or a colon (an attachment
# "\u200e<attached: 00000035-...>" has both): "Hi \u200e<This message was edited>", in any language.
_EDIT_MARK = re.compile(r"\s*[\u200e\u200f]<[^<>:\d\n]{2,60}>\s*\Z")
# Android media: one bracketed line in the phone's language ("<Media omitted>", "<Без медиафайлов>").
_BRACKETED = re.compile(r"^<[^\W\d_][^<>\n]{1,80}>$")
# Android attachment: "\u200eIMG-20220323-WA0002.jpg (file attached)", brackets in the local language.
_ATTACHED = re.compile(
    r"^(?P<lrm>\u200e)?(?P<file>[^\n]{1,200}\.[A-Za-z0-9]{1,5}) \((?P<words>[^()\d\n]{2,40})\)$"
)
_WA_FILE = re.compile(r"^(?:IMG|VID|AUD|PTT|STK|DOC)-\d{8}-WA\d{4}")
# iOS attachment: "<attached: 00000012-PHOTO-2024-02-13.jpg>", the word in the local language.
_IOS_ATTACHED = re.compile(r"^<[^<>:]{1,30}:\s?\d{8}-[^<>]+>$")
# A shared location "location: https://maps.google.com/?q=51.5,-0.12" (any language's word) or a place
# (Foursquare venue: "Name (Address): URL" on iOS, "Name\nAddress\nURL" on Android).
_LOCATION = re.compile(r"^[^:\n]{1,40}:\s?https?://maps\.google\.[a-z.]+/\?q=-?[\d.]+,\s?-?[\d.]+$")
_PLACE = re.compile(r"^[^\n]{1,200}(?:\n[^\n]{1,200})?[\n:] ?https?://foursquare\.com/v/\w+$")
_FILE_NAME = re.compile(r"^[^\n/\\]{1,120}\.[A-Za-z0-9]{2,5}$")  # a caption that is only the file's name
# Texts WhatsApp writes in a sender's name that structure marks (iOS): events, in English for the tests
# of old exports without marks; "Ann changed the subject to "Trip: Paris"" is no sender either.
_SYSTEM_EN = re.compile(
    r"end-to-end encrypted|created group|created this group|changed the subject|changed this group's"
    r"|changed the group|changed their phone number|security code|\badded\b|\bremoved\b|\bleft\b"
    r"|joined using|now an admin|no longer an admin|disappearing messages|pinned a message"
    r"|deleted this group's|You were added|message timer|blocked this contact|unblocked this contact",
    re.I,
)
# "WhatsApp Chat with Ann.txt" (Android), "WhatsApp Chat - Ann.zip/_chat.txt" (iOS): the chat's name.
_CHAT_NAME = re.compile(r"^WhatsApp[ -]Chat (?:with|mit|con|avec|met|com|-) (.+?)\.(?:txt|zip)$", re.I)
# A line that looks like a chat line even when no timestamp pattern reads it: digits, a time, a name.
_LOOSE = re.compile(
    r"^[\u200e\[]*\S{0,4}\d{1,4}\W{1,2}\d{1,2}\W{1,2}\d{1,4}\D{1,12}\d{1,2}[:.]\d\d.{0,30}?[\]-] [^:]{1,60}: "
)

_QUOTES = '"“”«„'

EXPECTED = "'31/12/23, 23:59 - Name: text' (Android) or '[31/12/23, 23:59:59] Name: text' (iOS)"


@dataclass
class _Entry:
    """One message line and its continuation lines, before classification."""

    line: int
    time: str
    rest: str
    more: list[str] = field(default_factory=list)
    marked: bool = False  # an iOS line opened by a direction mark before its "[": an attachment


@dataclass
class Dates:
    """How a file's dates were read: the orders used, Buddhist years, and what stayed ambiguous."""

    orders: list[str] = field(default_factory=list)
    buddhist: bool = False
    era: bool = False
    solar_hijri: bool = False
    ambiguous: list[tuple[int, str]] = field(default_factory=list)  # (first line, order taken)


def parse_lines(
    lines: list[str], date_order: str | None = None
) -> tuple[list[_Entry], Dates, list[tuple[int, str]]]:
    """Group lines into entries (a message line + its continuation lines).

    Returns the entries, how the dates were read, and problems as ``(line number, reason)``: a line
    that looks like a message line but has an impossible date or time is reported and kept as text of
    the message before it (nothing is lost); text before the first message line is reported and skipped.

    >>> entries, dates, problems = parse_lines(["[21:41:35, 3/27/22] A: hi", "more"])
    >>> entries[0].time, entries[0].rest, entries[0].more, dates.orders, problems
    ('2022-03-27T21:41:35', 'A: hi', ['more'], ['month-first'], [])
    """
    by_style: dict[tuple, list[tuple[int, re.Match]]] = {}  # line style -> (line number, match)
    problems: list[tuple[int, str]] = []
    for i, line in enumerate(lines, 1):
        m = match_header(line)
        if m and plausible(m):
            by_style.setdefault(style(m), []).append((i, m))
        elif m:
            problems.append((i, f"{line[:60]!r} has an impossible date or time; expected {EXPECTED}"))
    dates = Dates()
    starts: dict[int, tuple[re.Match, str, bool]] = {}
    for group in by_style.values():
        order, buddhist, ambiguous = infer_order([m for _, m in group], date_order)
        dates.orders.append(order)
        year = group[0][1]["d1" if order.startswith("year") else "d3"]
        dates.buddhist |= buddhist or len(year) == 4 and int(year) >= 2400
        era = bool(group[0][1]["era"] or group[0][1]["era3"])
        dates.era |= era
        dates.solar_hijri |= len(year) == 4 and int(year) in SOLAR_HIJRI_YEARS and not era
        if ambiguous:
            dates.ambiguous.append((group[0][0], order))
        starts.update((i, (m, order, buddhist)) for i, m in group)
    entries: list[_Entry] = []
    orphans: list[int] = []
    for i, line in enumerate(lines, 1):
        if i in starts:
            m, order, buddhist = starts[i]
            try:
                marked = bool(m["open"]) and line[:1] in _LINE_MARKS
                entries.append(_Entry(i, iso(m, order, buddhist), m["rest"], marked=marked))
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
    dates.orders = sorted(set(dates.orders))
    return entries, dates, sorted(problems)


def _media(first: str, caption: str) -> tuple[str, str] | None:
    """``("media", text)`` when the first line is a media placeholder or attachment, else None."""
    bare = first.strip(INVISIBLE + " ")
    android = _BRACKETED.match(bare) or bare == "null"  # "null": a view-once photo
    if not android and (a := _ATTACHED.match(first.strip(" "))):
        words = nfc(a["words"].strip())
        android = bool(a["lrm"] or _WA_FILE.match(a["file"]) or FILE_ATTACHED.fullmatch(words))
    if not android and (marks := _MARKS.split(first))[1:]:  # iOS: the last marked part is the placeholder
        last = marks[-1].strip(INVISIBLE + " ")
        android = bool(_IOS_ATTACHED.match(last) or OMITTED.search(nfc(last)))
    if not android:
        return None
    if _FILE_NAME.match(caption):  # a document's name, not something the person wrote
        caption = ""
    return "media", caption or "<media>"


def classify(rest: str, more: list[str], attachment: bool | None = None) -> tuple[str, str | None, str]:
    """``(kind, name, text)`` for one entry; kind is message, media, location, deleted or system.

    ``attachment``: whether the line has the iOS attachment shape (a mark before its "["), None where the
    export does not tell. An attachment's marked part is its placeholder, whatever its words; a marked
    text on another line is an event or a deleted message, never media.

    >>> classify("Ann: \\u200eimage omitted", [])
    ('media', 'Ann', '<media>')
    >>> classify("Ann: <Media omitted>", ["Look!"])
    ('media', 'Ann', 'Look!')
    >>> classify("Ann: Dit bericht is verwijderd", [])
    ('deleted', 'Ann', 'Dit bericht is verwijderd')
    >>> classify("You were added", [])
    ('system', None, 'You were added')
    >>> classify("Ann: \\u200eđã bỏ qua hình ảnh", [], attachment=True)
    ('media', 'Ann', '<media>')
    """
    name, sep, first = rest.partition(": ")
    if not sep and rest.endswith(":"):  # "Name:" with the text on the next lines
        name, sep, first = rest[:-1], ":", ""
    name = name.translate(STRIP_INVISIBLE).strip()
    if not sep or not name:
        return "system", None, "\n".join([rest, *more]).strip().lstrip(INVISIBLE)
    text = "\n".join([first, *more]).strip(" \t\n")
    marked = text[:1] in INVISIBLE  # iOS marks texts it wrote itself (events, media) with a U+200E
    if text.endswith(">"):
        text = EDITED.sub("", _EDIT_MARK.sub("", text))
    if attachment and any(c in _EDIT_MARK.sub("", first) for c in _LINE_MARKS):
        caption = "\n".join(more).strip()
        return "media", name, ("" if _FILE_NAME.match(caption) else caption) or "<media>"
    short = len(text) < 400  # placeholders are short; long texts skip the placeholder patterns
    if short and DELETED.match(nfc(text.strip(INVISIBLE + " "))):  # before media: "ข้อความนี้ถูกลบ", "วิดีโอถูกลบ"
        return "deleted", name, text.strip(INVISIBLE + " ")
    if short and (media := _media(first, "\n".join(more).strip())):
        return media[0], name, media[1]
    text = text.strip(INVISIBLE + " ")
    if short and (_LOCATION.match(text) or _PLACE.match(text)):
        return "location", name, "<location>"
    event = short and SYSTEM.match(nfc(text)) or marked and _SYSTEM_EN.search(text)
    if event or any(q in name for q in _QUOTES):
        return "system", name, text
    if marked and short:  # marked, but not in the phrase tables: a short label is media, a sentence an event
        label = len(text) <= 32 and len(text.split()) <= 3  # characters count where words have no spaces
        if attachment is None and "\n" not in text and label and not re.search(r"[\d.!?。]$", text):
            return "media", name, "<media>"
        return "system", name, text
    return "message", name, text


def _event(name: str, senders: Counter) -> bool:
    """Whether a would-be sender is an event with a colon in it ("Ann změnila název skupiny na: Výlet"):
    seen once, it opens with a person who writes elsewhere, then at least two words, the first lowercase.

    >>> _event("Ann změnila název skupiny na", Counter({"Ann": 5, "Ann změnila název skupiny na": 1}))
    True
    >>> _event("Ann Marie", Counter({"Ann": 5, "Ann Marie": 1}))
    False
    """
    if senders[name] != 1:
        return False
    for sender, count in senders.items():
        rest = name[len(sender) + 1 :].split() if name.startswith(sender + " ") and count > 1 else []
        if len(rest) >= 2 and rest[0][:1].islower():
            return True
    return False


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
        """Yes when a ``.txt`` starts with a WhatsApp message line and its first 4 KB hold a "sender: text".

        Also yes when most of the first lines merely look like chat lines ("date time - Name: text") that
        no known timestamp reads: reading then fails with a reported problem instead of the file turning
        into a plain document without a word.
        """
        if not super().sniff(src):  # the extension first
            return False
        head = src.head_text.split("\n")
        lines = [ln.rstrip("\r") for ln in (head[:-1] if len(src.data) > len(src.head) else head)]
        lines = [ln for ln in lines if ln.strip(INVISIBLE + " \t")]
        if not lines:
            return False
        m = match_header(lines[0])
        if m and plausible(m) and m["rest"].strip():  # an export starts with a message line ...
            for line in lines:
                if (m := match_header(line)) and ": " in m["rest"]:  # ... and has a "sender: text" line
                    return True
            return False
        sample = lines[:10]
        return len(sample) >= 2 and sum(bool(_LOOSE.match(ln)) for ln in sample) * 2 > len(sample)

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        entries, dates, problems = parse_lines(_decode(src, opts.encoding_errors), opts.date_order)
        for line, reason in problems[:50]:
            yield Problem(f"{src.name}:{line}", reason)
        if len(problems) > 50:
            yield Problem(src.name, f"{len(problems) - 50} more line(s) like the above")
        if not entries:
            raise ReaderError(
                f"no WhatsApp message lines found in what looks like a chat export; expected lines like {EXPECTED}"
                " (if the dates are in an unusual order, try --date-order)"
            )
        for line, order in dates.ambiguous:
            yield Problem(
                f"{src.name}:{line}",
                f"dates fit both day-first and month-first; read {order}: check the dates, or choose with "
                "--date-order day-first|month-first",
            )
        messages, system = [], []
        counts = {"media": 0, "location": 0}
        # the attachment shape tells only where some iOS lines have it and others not
        structural = any(e.marked for e in entries) and not all(e.marked for e in entries)
        classified = [classify(e.rest, e.more, attachment=e.marked if structural else None) for e in entries]
        senders = Counter(name for kind, name, _ in classified if kind != "system")
        for e, (kind, name, text) in zip(entries, classified):
            if kind != "system" and _event(name, senders):
                kind, name, text = "system", None, "\n".join([e.rest, *e.more]).strip()
            if kind in ("system", "deleted"):
                entry = {"line": e.line, "time": e.time, "text": text, "kind": kind}
                system.append(entry if name is None else {**entry, "name": name})
                continue
            if kind in counts:
                counts[kind] += 1
            messages.append(Message(name=name, time=e.time, text=text))
        if not messages:
            yield Problem(src.name, f"a chat export with no messages: only {len(system)} system line(s)")
        orders = dates.orders
        meta: dict = {"format": "whatsapp", "date_order": orders[0] if len(orders) == 1 else orders}
        calendar = [c for c, used in (("buddhist", dates.buddhist), ("japanese-era", dates.era),
                                      ("solar-hijri", dates.solar_hijri)) if used]  # fmt: skip
        if calendar:  # converted to Gregorian; the export showed these years
            meta["calendar"] = calendar[0] if len(calendar) == 1 else calendar
        for part in reversed(src.name.split("/")):
            if chat := _CHAT_NAME.match(part):
                meta["chat"] = chat.group(1)
                break
        meta.update(counts)
        meta.update(system_meta(system, opts))
        yield Conversation(source=src.name, messages=messages, meta=meta)
