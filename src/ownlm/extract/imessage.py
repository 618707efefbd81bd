"""iMessage chats exported as text by imessage-exporter (``--format txt``) -> one ``Conversation`` per file.

imessage-exporter (github.com/ReagentX/imessage-exporter, ``exporters/txt.rs``, later ``exporters/txt/mod.rs``
and its templates) writes one ``.txt`` per chat; each message is a block ended by a blank line::

    May 17, 2022  5:29:42 PM (Read by them after 1 hour, 49 seconds)     time (+ optional read receipt)
    Me                                                                   sender: "Me" is the exporting user
    Hello world                                                          body: text lines, attachment paths,
    Tapbacks:                                                            tapbacks ("Reactions:" before 2.0),
        Loved by Sample Contact                                          replies nested 4 spaces in, ...
    This message responded to an earlier message.

    May 17, 2022  5:30:00 PM You named the conversation Hello world      announcement: one line

The time is ``%b %d, %Y %l:%M:%S %p`` (English month, space-padded hour) in the exporting machine's local
time; ``time`` is that wall time (``meta["time_zone"]`` = ``"local"``). ``name`` is the sender line as spelled
(``meta["self"]`` names the exporting user). What the exporter wrote itself is normalised:
attachments (file paths, "Attachment missing!") and stickers become ``<media>`` (a caption is kept), app
messages ("GamePigeon message:", Digital Touch, handwriting) ``<media>``, a link preview keeps only its URL,
an edited message keeps its last version (``meta["edited"]``), "Sent with Confetti" and the reply note are
removed. Replies nested under their parent are copies (the exporter writes each reply again in time order)
and are skipped. Tapbacks, unsent parts, location sharing, SharePlay and announcements (renames, members
added or removed, group photo) are system lines: dropped with ``drop_system``, kept in ``meta["system"]``.

A block that starts like a message but has an unreadable time is a ``Problem`` ("file:line") and skipped.

>>> from ownlm.extract.base import ExtractOptions, Source
>>> data = "May 17, 2022  5:29:42 PM\\nMe\\nHello\\nworld\\n\\n".encode()
>>> next(IMessageReader().read(Source("Ann.txt", data), ExtractOptions())).messages
[Message(name='Me', time='2022-05-17T17:29:42', text='Hello\\nworld')]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ownlm.extract.base import (
    Conversation,
    ExtractOptions,
    Message,
    Problem,
    Reader,
    ReaderError,
    Source,
    system_meta,
    text_lines,
)

_TIME = r"(?P<time>[A-Z][a-z]{2} \d\d, \d{4} [ \d]\d:\d\d:\d\d [AP]M)"
_TIME_FORMAT = "%b %d, %Y %I:%M:%S %p"
HEADER = re.compile(rf"^{_TIME}(?: \(Read by .+ after .+\))?$")
ANNOUNCEMENT = re.compile(rf"^{_TIME} (?!\(Read by )(?P<text>\S.*)$")
EDIT_FIRST = re.compile(rf"^{_TIME} (?P<text>.*)$")
EDIT_NEXT = re.compile(r"^Edited [\w ,]+? later: (?P<text>.*)$")
# "You unsent this message part 5 seconds after sending!"; "They deleted a message." before 2.0
UNSENT = re.compile(r"^\S.* (?:unsent this message part(?: .+ after sending)?!|deleted a message\.)$")
TAPBACK = re.compile(r"^(?: {4})?(?:\S.* by \S.*|.*Sticker from .+)$")
EXPRESSIVE = re.compile(
    r"^Sent with (?:Confetti|Echo|Fireworks|Balloons|Heart|Lasers|Shooting Star|Sparkles|Spotlight|Slam|Loud"
    r"|Gentle|Invisible Ink)$"
)
# Attachment lines: a path under Messages' own folders, a file copied into the export ("attachments/12/x.heic"),
# an iOS backup's hashed file, or only the file's name when the file is gone; stickers and app balloons.
_MEDIA = re.compile(
    r"^(?:Attachment missing!|Attachment missing name metadata!|Unable to format app message: .*"
    r"|.*/Library/(?:Messages|SMS)/Attachments/.+|attachments/[^/]+/[^/]+\.\w{2,5}|.*/[0-9a-f]{2}/[0-9a-f]{40}"
    r"|[\w\-().]+(?: [\w\-().]+)?\.(?i:heic|heif|jpe?g|png|gif|webp|tiff?|mov|mp4|m4v|3gp|caf|m4a|mp3|aac|amr|wav|pdf|vcf"
    r"|pluginPayloadAttachment|pkpass|usdz|gpx)"
    r"|(?:\S+ )?Sticker from .+: .+|Digital Touch Message: .*|Handwritten messages are not yet supported!"
    r"|Photo album: .*)$"
)
_APP = re.compile(r"^\S.{0,60} message:$")  # "GamePigeon message:" + the balloon's captions
_URL = re.compile(r"^https?://\S+$")
_SYSTEM_BODY = {
    "Started sharing location!": "location",
    "Stopped sharing location!": "location",
    "Shared location!": "location",
    "SharePlay Message": "shareplay",
}
DELETED = "This message was deleted from the conversation!"
REPLY_NOTE = "This message responded to an earlier message."
UNFORMATTED = "Unable to format announcement!"  # written without a time, so it trails the block before it
EXPECTED = "'May 17, 2022  5:29:42 PM' on its own line, then the sender, then the text"


def parse_time(value: str) -> str:
    """ISO local time of an exporter timestamp; ``ValueError`` when it is no valid date.

    >>> parse_time("Jan 05, 2023  9:03:07 AM")
    '2023-01-05T09:03:07'
    """
    return datetime.strptime(value.replace("  ", " "), _TIME_FORMAT).isoformat()


def _starts(lines: list[str]) -> list[tuple[int, str]]:
    """``(index, "message" | "announcement")`` of each block: a line after a blank line (or the first) that is
    a timestamp followed by a sender line, or a timestamp + text followed by a blank line."""
    starts = []
    for i, line in enumerate(lines):
        if i and lines[i - 1].strip():
            continue
        after = lines[i + 1] if i + 1 < len(lines) else ""
        if HEADER.match(line) and after.strip():
            starts.append((i, "message"))
        elif ANNOUNCEMENT.match(line) and not after.strip():
            starts.append((i, "announcement"))
    return starts


def _skip_nested(body: list[str], i: int, sizes: dict[tuple[str, str], int]) -> int:
    """Index past a reply nested 4 spaces in: a copy of a block the exporter writes again in time order, so it
    spans as many lines as that block (``sizes``, by timestamp and sender line), blank lines inside it included.
    A reply whose own block is missing runs to its first blank line."""
    n = sizes.get((body[i].strip(), body[i + 1].strip()))
    if n is not None:  # and the blank line the exporter's add_line leaves after the copy
        return i + n + (i + n < len(body) and not body[i + n].strip())
    while i < len(body) and body[i].strip():
        i += 1
    return i + 1


def _block_sizes(lines: list[str], starts: list[tuple[int, str]]) -> dict[tuple[str, str], int]:
    """(timestamp line, sender line) -> the lines of that message block as a nested copy writes it: without
    the blank lines that end it and without the reply note, which only the block in time order carries."""
    sizes = {}
    for n, (start, kind) in enumerate(starts):
        if kind != "message":
            continue
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        while end > start and (not lines[end - 1].strip() or lines[end - 1] == REPLY_NOTE):
            end -= 1
        sizes[(lines[start].strip(), lines[start + 1].strip())] = end - start
    return sizes


def _tapbacks(body: list[str], i: int, found: list[str]) -> int:
    """Collect the tapback lines after a "Tapbacks:" line at ``i``; the index past them.

    Versions before the template rewrite write them unindented and end them with a blank line; later ones
    indent each by 4 spaces."""
    i += 1
    indented = i < len(body) and body[i].startswith("    ")
    while i < len(body) and body[i].strip() and (body[i].startswith("    ") or not indented):
        found.append(body[i].strip())
        i += 1
    if not indented and i < len(body) and not body[i].strip():
        i += 1
    return i


def _body(body: list[str], sizes: dict[tuple[str, str], int]) -> dict[str, Any]:
    """One message's body lines -> ``lines`` (its text), ``media``, ``tapbacks``, ``unsent`` and flags for what
    was normalised (``edited``, ``reply``, ``preview``)."""
    out: dict[str, Any] = {"lines": [], "tapbacks": [], "unsent": [], "media": False, "edited": False}
    out["reply"] = out["preview"] = False
    versions: list[list[str]] = []  # an edit history: "<time> first version", "Edited 5 seconds later: ..."
    i = 0
    while i < len(body):
        line = body[i]
        if (
            line.startswith("    ")
            and HEADER.match(line.strip())
            and i + 1 < len(body)
            and body[i + 1].strip()
        ):
            i = _skip_nested(body, i, sizes)
            continue
        if line in ("Tapbacks:", "Reactions:") and i + 1 < len(body) and TAPBACK.match(body[i + 1]):
            i = _tapbacks(body, i, out["tapbacks"])
            continue
        i += 1
        if line in (DELETED, UNFORMATTED) or EXPRESSIVE.match(line):
            continue
        if line == REPLY_NOTE:
            out["reply"] = True
        elif UNSENT.match(line):
            out["unsent"].append(line)
        elif _MEDIA.match(line):
            out["media"] = True
            if i < len(body) and body[i].startswith("Transcription: "):
                i += 1  # an audio message's transcription belongs to the attachment
        elif edit := (EDIT_NEXT if versions else EDIT_FIRST).match(line):
            versions.append([edit["text"]])
            out["edited"] = True
        else:
            (versions[-1] if versions else out["lines"]).append(line)
    lines = out["lines"] + (versions[-1] if versions else [])
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and _APP.match(lines[0]) and len(lines) > 1:  # an app balloon: its name, then its captions
        out["media"], lines = True, []
    elif lines and _URL.match(lines[0]) and 1 < len(lines) <= 3:  # a link preview: URL, title, summary
        out["preview"], lines = True, lines[:1]
    out["lines"] = lines
    return out


class IMessageReader(Reader):
    """Reads imessage-exporter ``.txt`` chats."""

    name = "imessage"
    extensions = (".txt",)

    def sniff(self, src: Source) -> bool:
        """Yes when a ``.txt`` starts with an exporter block (a timestamp line, alone or with a read receipt,
        then a sender line; or an announcement line and a blank line) and either a second block follows in the
        first 4 KB or the first sender line reads like a name, not a sentence (a diary entry under a date)."""
        if not super().sniff(src):
            return False
        lines = [ln.rstrip("\r") for ln in src.head_text.split("\n")]
        starts = _starts(lines)
        if not starts or starts[0][0] != 0:
            return False
        if len(starts) > 1:
            return True
        sender = lines[1].strip() if starts[0][1] == "message" else ""
        return bool(sender) and len(sender) <= 80 and sender[-1] not in ".!?,;:"

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        lines = text_lines(src, opts)
        starts = _starts(lines)
        if not starts:
            raise ReaderError(f"no imessage-exporter message blocks found; expected {EXPECTED}")
        if any(ln.strip() for ln in lines[: starts[0][0]]):
            yield Problem(
                f"{src.name}:1", f"text before the first message block; skipped (expected {EXPECTED})"
            )
        messages, system = [], []
        sizes = _block_sizes(lines, starts)
        counts = {"edited": 0, "media": 0, "replies": 0, "link_previews": 0}
        me = None
        for n, (start, kind) in enumerate(starts):
            end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
            head = (HEADER.match(lines[start]) or ANNOUNCEMENT.match(lines[start])).groupdict()
            try:
                time = parse_time(head["time"])
            except ValueError as e:
                yield Problem(
                    f"{src.name}:{start + 1}", f"unreadable time {head['time']!r} ({e}); block skipped"
                )
                continue
            where = {"line": start + 1, "time": time}
            if kind == "announcement":
                system.append({**where, "text": head["text"], "kind": "announcement"})
                continue
            name = lines[start + 1].strip()
            me = me or (name if name == "Me" else None)
            body = _body(lines[start + 2 : end], sizes)
            system += [{**where, "text": t, "kind": "tapback"} for t in body["tapbacks"]]
            system += [{**where, "name": name, "text": t, "kind": "unsent"} for t in body["unsent"]]
            text = "\n".join(body["lines"])
            if text in _SYSTEM_BODY or text == "SharePlay Message\nEnded":
                system.append(
                    {**where, "name": name, "text": text, "kind": _SYSTEM_BODY.get(text, "shareplay")}
                )
                continue
            if not text.strip():
                if not body["media"]:
                    continue  # only an unsent part, or nothing at all
                text = "<media>"
            for key, flag in (
                ("media", "media"),
                ("edited", "edited"),
                ("replies", "reply"),
                ("link_previews", "preview"),
            ):
                counts[key] += body[flag]
            messages.append(Message(name=name, time=time, text=text))
        if not messages:
            yield Problem(
                f"{src.name}:{starts[0][0] + 1}",
                f"an iMessage export with no messages: only {len(system)} system line(s)",
            )
        meta: dict[str, Any] = {"format": "imessage", "time_zone": "local", "chat": _chat_name(src.name)}
        if me:
            meta["self"] = me
        meta.update(counts)
        meta.update(system_meta(system, opts))
        yield Conversation(source=src.name, messages=messages, meta=meta)


def _chat_name(name: str) -> str:
    """The chat as the exporter names its file: the participants, or "Group name - 12".

    >>> _chat_name("export/Ann, +15551234567.txt")
    'Ann, +15551234567'
    """
    return name.rpartition("/")[2].removesuffix(".txt")
