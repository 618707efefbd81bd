"""Signal Desktop chats exported as text by signal-export or sigtop -> one ``Conversation`` per file.

Signal has no export of its own; two tools read Signal Desktop's database and write text:

signal-export (github.com/carderne/signal-export, ``sigexport/models.py`` ``Message.to_md``,
``sigexport/create.py``) writes ``NAME/chat.md``, one message per line, messages separated by a blank line::

    [2024-01-15 10:30:05] Me: Hello                         v2+: seconds; v1 "[2024-01-15 10:30]"
    [2024-01-15 10:31:00] Ann:                              a reply: the quoted text after a blank line,

    > Hello                                                 each line "> ", then a blank line and the text

    Hi!
    (- Me: 👍 -)![IMG_1.jpg](./media/IMG_1.jpg)  [a.pdf](./media/a.pdf)  reactions, then attachments

``time`` = the local time written (``meta["time_zone"]`` = ``"local"``), ``name`` as written ("Me" is the
exporting user). Attachments, stickers and "(media not exported)" become ``<media>`` (text sent with them is
kept), the quote of a reply is dropped (``meta["replies"]``); reactions, deleted messages and calls are system
lines.

sigtop (github.com/tbvdm/sigtop, ``cmd/sigtop/fmt_text.go``, ``sigtop export-messages``, format ``text``, the
default) writes ``Conversation: NAME`` and a blank line, then per message header fields, an optional quote
(lines starting with ``>``), a blank line and the text::

    From: Ann (+15551234567)                                "From: You" for the exporting user
    Type: incoming                                          not incoming/outgoing: a system line
    Sent: Mon, 15 Jan 2024 10:31:00 +0100                   wall time + offset (``meta["utc_offsets"]``)
    Received: Mon, 15 Jan 2024 10:31:02 +0100
    Attachment: IMG_1.jpg (image/jpeg, 1234 bytes)
    Reaction: 👍 from You

    Hi!

An edited message ("Edited: 2 versions", then versions prefixed ``| ``) keeps its newest version
(``meta["edited"]``). ``name`` is the sender without the phone number, user name or id sigtop adds in
parentheses. sigtop's ``text-short`` and ``json`` formats and signal-export's ``data.json`` are not read here.

A line that starts a message but has an impossible time is a ``Problem`` ("file:line"); that message is skipped.

>>> from ownlm.extract.base import ExtractOptions, Source
>>> data = "[2024-01-15 10:30:05] Me: Hello  \\n\\n".encode()
>>> next(SignalReader().read(Source("Ann/chat.md", data), ExtractOptions())).messages
[Message(name='Me', time='2024-01-15T10:30:05', text='Hello')]
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

# signal-export's message line (its own merge step reads lines the same way, sigexport/merge.py).
MD_LINE = re.compile(
    r"^\[(?P<time>\d{4}-\d\d-\d\d,? \d\d:\d\d(?::\d\d)?)\] (?P<name>[^\n]+?): ?(?P<rest>.*)$"
)


COMPANIONS = ("data.json", "index.html", "chat.html")  # signal-export writes the chat again in these


def export_copies(names: list[str], first_line) -> set[str]:
    """The files among ``names`` (``folder/file`` paths) that signal-export wrote beside a ``chat.md``: the same
    chat again, as JSON lines and as a web page. ``first_line(name)`` gives a file's first line, to check that
    the ``chat.md`` is signal-export's."""

    def split(name: str) -> tuple[str, str]:
        folder, _, file = name.rpartition("/")
        return folder, file

    chats = {split(n)[0] for n in names if split(n)[1] == "chat.md" and MD_LINE.match(first_line(n))}
    return {n for n in names if split(n)[1] in COMPANIONS and split(n)[0] in chats}


_MD_REACTIONS = re.compile(r"^\(- (?P<list>.*?) -\)(?P<rest>.*)$")
_MD_FILES = re.compile(  # attachments and stickers appended to the last line, each followed by two spaces
    r"(?:!?\[[^\n]*?\]\(\./media/\S*?\)|\[[^\n]*?\]\(\.\./exported_stickers/\S*?\)"
    r"|\((?:media|attachment) not exported\))  $"
)
_MD_STICKER = re.compile(r"^\(\( .* \)\)$")
_CALL = re.compile(r"^(?:Incoming|Outgoing|Missed)(?: (?:voice|video))? call(?: \([^()\n]*\))?$")
MD_DELETED = "(This message was deleted)"

_TOP_FIELD = re.compile(r"^(?P<field>From|Type|Sent|Received|Attachment|Reaction|Edited): (?P<value>.*)$")
_TOP_TIME = "%a, %d %b %Y %H:%M:%S %z"
_DETAIL = re.compile(r" \([^()\n]+\)$")  # sigtop's " (+15551234567)" / " (user.01)" / " (aci)" after a name

EXPECTED_MD = "'[2024-01-15 10:30:05] Name: text' (signal-export chat.md)"
EXPECTED_TOP = "'From: Name', 'Type: incoming', 'Sent: Mon, 15 Jan 2024 10:31:00 +0100' blocks (sigtop text)"


def _iso(value: str) -> str:
    """signal-export's time as ISO local time; ``ValueError`` when impossible.

    >>> _iso("2019-05-29, 15:04"), _iso("2024-01-15 10:30:05")
    ('2019-05-29T15:04:00', '2024-01-15T10:30:05')
    """
    value = value.replace(",", "")
    return datetime.strptime(
        value, "%Y-%m-%d %H:%M:%S" if value.count(":") == 2 else "%Y-%m-%d %H:%M"
    ).isoformat()


def _md_text(lines: list[str], found: dict[str, Any]) -> str:
    """One chat.md message (the rest of its first line + its other lines) -> its text; reactions and the
    quote are taken out (into ``found``), attachments and stickers noted as media."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if len(lines) > 2 and not lines[0] and not lines[1] and lines[2].startswith(">"):  # a reply's quote
        end = 2
        while end < len(lines) and lines[end].startswith(">"):
            end += 1
        lines = lines[end + 1 :] if end < len(lines) and not lines[end] else lines[end:]
        found["reply"] = True
    if lines and (m := _MD_REACTIONS.match(lines[-1])):
        found["reactions"] = m["list"].split(", ")
        lines = [*lines[:-1], m["rest"]] if m["rest"] else lines[:-1]
    if lines:
        last = lines[-1]
        while m := _MD_FILES.search(last):
            last = last[: m.start()]
            found["media"] = True
        if _MD_STICKER.match(last):
            last, found["media"] = "", True
        lines = [*lines[:-1], last]
    return "\n".join(lines).strip()


def _name(value: str) -> str:
    """A sigtop sender without the detail in parentheses.

    >>> _name("Ann Lee (+15551234567)"), _name("You")
    ('Ann Lee', 'You')
    """
    return _DETAIL.sub("", value) or value


class SignalReader(Reader):
    """Reads signal-export ``chat.md`` and sigtop text exports of Signal Desktop chats."""

    name = "signal"
    extensions = (".md", ".txt")

    def sniff(self, src: Source) -> bool:
        """Yes for a ``.md`` that opens with signal-export message lines, or a ``.txt`` that starts with
        sigtop's ``Conversation:`` line followed by a message's ``From:``/``Type:`` fields."""
        if not super().sniff(src):
            return False
        lines = [ln.rstrip("\r") for ln in src.head_text.split("\n")[:12]]
        if src.suffix == ".md":  # signal-export names it chat.md; another name needs a second message line
            if not MD_LINE.match(lines[0]):
                return False
            return (
                src.name.rpartition("/")[2] == "chat.md" or sum(bool(MD_LINE.match(ln)) for ln in lines) >= 2
            )
        return (
            lines[0].startswith("Conversation: ")
            and len(lines) > 3
            and not lines[1]
            and bool(re.match(r"^(?:From: .+\nType: |Type: )", "\n".join(lines[2:4])))
        )

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        lines = text_lines(src, opts)
        sigtop = lines[0].startswith("Conversation: ")
        rows = self._sigtop(lines, src) if sigtop else self._markdown(lines, src)
        messages, system, offsets = [], [], set()
        counts = {"media": 0, "replies": 0, "edited": 0}
        for row in rows:
            if isinstance(row, Problem):
                yield row
                continue
            kind, entry, found = row
            for reaction in found.get("reactions", []):
                system.append(
                    {"line": entry["line"], "time": entry["time"], "text": reaction, "kind": "reaction"}
                )
            offsets.update(found.get("offsets", ()))
            if kind != "message":
                system.append({**entry, "kind": kind})
                continue
            if not entry["text"]:
                if not found.get("media"):
                    continue  # nothing the person wrote (a group update without text, a timer change)
                entry["text"] = "<media>"
            counts["media"] += bool(found.get("media"))
            counts["replies"] += bool(found.get("reply"))
            counts["edited"] += bool(found.get("edited"))
            messages.append(Message(name=entry["name"], time=entry["time"], text=entry["text"]))
        if not messages:
            yield Problem(
                f"{src.name}:1", f"a Signal export with no messages: only {len(system)} system line(s)"
            )
        meta: dict[str, Any] = {
            "format": "signal-sigtop" if sigtop else "signal-export",
            "time_zone": "local",
        }
        if sigtop:
            meta["chat"] = _name(lines[0].removeprefix("Conversation: "))
        elif "/" in src.name:
            meta["chat"] = src.name.rsplit("/", 2)[-2]  # signal-export: NAME/chat.md
        if offsets:
            meta["utc_offsets"] = sorted(offsets)
        names = {m.name for m in messages}
        if "Me" in names or "You" in names:
            meta["self"] = "You" if sigtop else "Me"
        meta.update(counts)
        meta.update(system_meta(system, opts))
        yield Conversation(source=src.name, messages=messages, meta=meta)

    def _markdown(self, lines: list[str], src: Source) -> Iterator[tuple | Problem]:
        """signal-export ``chat.md``: ``(kind, entry, found)`` per message line and its continuation lines."""
        starts = [i for i, line in enumerate(lines) if MD_LINE.match(line)]
        if not starts:
            raise ReaderError(f"no signal-export message lines found; expected {EXPECTED_MD}")
        if any(line.strip() for line in lines[: starts[0]]):
            yield Problem(
                f"{src.name}:1", f"text before the first message line; skipped (expected {EXPECTED_MD})"
            )
        for n, start in enumerate(starts):
            m = MD_LINE.match(lines[start])
            try:
                time = _iso(m["time"])
            except ValueError as e:
                yield Problem(
                    f"{src.name}:{start + 1}", f"impossible time {m['time']!r} ({e}); message skipped"
                )
                continue
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            found: dict[str, Any] = {}
            text = _md_text([m["rest"], *lines[start + 1 : end]], found)
            entry = {"line": start + 1, "time": time, "name": m["name"], "text": text}
            kind = "deleted" if text == MD_DELETED else "call" if _CALL.match(text) else "message"
            yield kind, entry, found

    def _sigtop(self, lines: list[str], src: Source) -> Iterator[tuple | Problem]:
        """sigtop ``text``: ``(kind, entry, found)`` per message block."""

        def opens(i: int) -> bool:  # after a blank line: "Type: ..." or "From: ..." then "Type: ..."
            after = lines[i + 1] if i + 1 < len(lines) else ""
            return not lines[i - 1] and (
                lines[i][:6] == "Type: " or lines[i][:6] == "From: " and after[:6] == "Type: "
            )

        starts = [i for i in range(2, len(lines)) if opens(i)]
        if not starts:
            raise ReaderError(f"no sigtop message blocks found; expected {EXPECTED_TOP}")
        for n, start in enumerate(starts):
            end = starts[n + 1] - 1 if n + 1 < len(starts) else len(lines)
            fields: dict[str, list[str]] = {}
            i = start
            while i < end and (f := _TOP_FIELD.match(lines[i])):
                fields.setdefault(f["field"], []).append(f["value"])
                i += 1
            found: dict[str, Any] = {"media": "Attachment" in fields, "edited": "Edited" in fields}
            found["reactions"] = fields.get("Reaction", [])
            rest = lines[i:end]
            while rest and not rest[-1]:
                rest.pop()
            if found["edited"]:
                rest, newest = rest[1:], []  # "| Version: N" blocks, the newest first, parted by "|"
                for line in rest[1:]:
                    if line.startswith("| Version: "):
                        break
                    newest.append(line.removeprefix("|").removeprefix(" "))
                rest = newest
                while rest and _TOP_FIELD.match(rest[0]):
                    found["media"] |= rest[0].startswith("Attachment: ")
                    rest = rest[1:]
            if len(rest) > 1 and not rest[0] and rest[1].startswith(">"):  # the quote of a reply
                found["reply"] = True
                rest = rest[1:]
                while rest and rest[0].startswith(">"):
                    rest = rest[1:]
            text = "\n".join(rest[1:] if rest and not rest[0] else rest).strip("\n")
            try:
                stamp = next(v for key in ("Sent", "Received") for v in fields.get(key, []) if v != "unknown")
                when = datetime.strptime(stamp, _TOP_TIME)
            except (StopIteration, ValueError) as e:
                why = "no Sent or Received time" if isinstance(e, StopIteration) else str(e)
                yield Problem(f"{src.name}:{start + 1}", f"{why}; message skipped (expected {EXPECTED_TOP})")
                continue
            offset = when.strftime("%z")
            found["offsets"] = [f"{offset[:3]}:{offset[3:]}"]
            name = _name(fields["From"][0]) if "From" in fields else "Unknown"
            entry = {
                "line": start + 1,
                "time": when.replace(tzinfo=None).isoformat(),
                "name": name,
                "text": text,
            }
            kind = fields.get("Type", ["unknown"])[0]
            yield ("message" if kind in ("incoming", "outgoing") else kind), entry, found
