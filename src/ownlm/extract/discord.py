"""Discord channel exports made with DiscordChatExporter (JSON or CSV) -> one ``Conversation`` per file.

JSON: ``{"guild": {...}, "channel": {...}, "messages": [{"id", "type", "timestamp", "content",
"author": {"name", "nickname", "isBot"}, "attachments", "embeds", "stickers"}, ...]}``. CSV: the columns
``AuthorID, Author, Date, Content, Attachments, Reactions``. Per message: ``name`` = the author's user
name, ``time`` = the timestamp's local wall time as the export shows it (the exporter writes the
exporting machine's offset; ``meta["utc_offsets"]`` lists the offsets seen), ``text`` = the content, or
``<media>`` when only attachments, stickers or embeds were sent; a forwarded message (empty content, a
``forwardedMessage``) gives the forwarded text or ``<media>``. System notifications are the exporter's
own (``RecipientAdd``, ``Call``, ``ChannelPinnedMessage``, ``GuildMemberJoin``, ``ThreadCreated``, ... and
the numbers 1-18 it writes for kinds it has no name for); every other kind is a message (``Default``,
``Reply``, slash-command replies "20", ...). System lines and messages of bots are dropped with
``drop_system``, kept in ``meta["system"]`` otherwise. A message with neither text, attachment, sticker
nor embed (a poll, buttons only) is a ``Problem`` (counted in ``meta["empty"]``), never dropped silently;
one with a missing or broken field is a ``Problem`` naming the file and line; the rest is kept.

>>> from ownlm.extract.base import ExtractOptions, Source
>>> data = b'{"guild": {"name": "G"}, "channel": {"name": "general"}, "messages": [{"id": "1", "type": "Default", "timestamp": "2024-01-15T10:30:00.123+01:00", "content": "hi", "author": {"name": "ann"}}]}'
>>> next(DiscordReader().read(Source("general.json", data), ExtractOptions())).messages
[Message(name='ann', time='2024-01-15T10:30:00', text='hi')]
"""

from __future__ import annotations

import csv
import io
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
    load_json,
    system_meta,
)

_JSON_HEAD = re.compile(r'^\s*\{\s*"guild"\s*:\s*\{')
_CSV_HEAD = re.compile(r'^\ufeff?"?AuthorID"?,"?Author"?,"?Date"?,"?Content"?', re.I)
# The exporter's system notifications: its names for Discord's message types 1-7 and 18, and the bare
# numbers it writes for the types 8-17 it has no name for (boosts, follows, discovery notices).
_SYSTEM_TYPES = {"RecipientAdd", "RecipientRemove", "Call", "ChannelNameChange", "ChannelIconChange",
                 "ChannelPinnedMessage", "GuildMemberJoin", "ThreadCreated", *map(str, range(1, 19))}  # fmt: skip
_MEDIA_FIELDS = ("attachments", "stickers", "embeds")
_OLD_CSV_DATES = ("%d-%b-%y %I:%M %p", "%d/%m/%Y %H:%M", "%m/%d/%Y %I:%M %p")  # exporter versions before ISO


def parse_time(value: str) -> tuple[str, str | None]:
    """``(local ISO time to the second, UTC offset or None)``; ``ValueError`` when unreadable.

    >>> parse_time("2020-06-23T17:10:20.335+02:00")
    ('2020-06-23T17:10:20', '+02:00')
    """
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        for fmt in _OLD_CSV_DATES:
            try:
                return datetime.strptime(value.strip(), fmt).isoformat(), None
            except ValueError:
                continue
        raise ValueError(f"unreadable date {value!r}") from None
    offset = t.strftime("%z") or None
    if offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    return t.replace(tzinfo=None, microsecond=0).isoformat(), offset


def _content(msg: dict) -> str:
    """A message's text, or ``<media>`` when it has only attachments, stickers or embeds."""
    content = msg.get("content") if isinstance(msg.get("content"), str) else ""
    if not content.strip() and any(msg.get(k) for k in _MEDIA_FIELDS):
        return "<media>"
    return content


def _line_of(text: str, msg_id: Any) -> int | None:
    """The line where message ``msg_id`` starts in the raw JSON (for problems that name a line)."""
    pos = text.find(f'"id": "{msg_id}"') if msg_id is not None else -1
    if pos < 0:
        pos = text.find(f'"id":"{msg_id}"') if msg_id is not None else -1
    return text.count("\n", 0, pos) + 1 if pos >= 0 else None


class DiscordReader(Reader):
    """Reads DiscordChatExporter ``.json`` and ``.csv`` channel exports."""

    name = "discord"
    extensions = (".json", ".csv")

    def sniff(self, src: Source) -> bool:
        """Yes for a JSON export (starts with ``"guild"``, has ``"channel"``) or a CSV with its header."""
        if not super().sniff(src):
            return False
        head = src.head_text
        if src.suffix == ".csv":
            return bool(_CSV_HEAD.match(head))
        return bool(_JSON_HEAD.match(head)) and '"channel"' in head

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        try:
            text = src.data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ReaderError(f"invalid UTF-8 at byte {e.start}; re-export the channel") from None
        rows = self._csv(text, src) if src.suffix == ".csv" else self._json(text, src)
        messages, system, offsets, empty = [], [], set(), []
        for row in rows:
            if isinstance(row, Problem):
                yield row
                continue
            kind, name, time, offset, content, line = row
            if offset:
                offsets.add(offset)
            if kind == "message" and not content.strip():
                empty.append(line)
            elif kind == "message":
                messages.append(Message(name=name, time=time, text=content))
            else:
                system.append({"line": line, "time": time, "name": name, "text": content, "kind": kind})
        if empty:
            where = f"{src.name}:{empty[0]}" if empty[0] else src.name
            yield Problem(
                where,
                f"{len(empty)} message(s) with neither text, attachment, sticker nor embed (a poll, buttons): "
                "skipped",
            )
        meta: dict[str, Any] = {"format": "discord", "time_zone": "local"}
        if offsets:
            meta["utc_offsets"] = sorted(offsets)
        meta.update(self.channel)
        if empty:
            meta["empty"] = len(empty)
        meta.update(system_meta(system, opts))
        yield Conversation(source=src.name, messages=messages, meta=meta)

    def _json(self, text: str, src: Source) -> Iterator[tuple | Problem]:
        data = load_json(text, "re-export the channel")
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ReaderError("expected a DiscordChatExporter JSON object with a 'messages' list")
        guild, channel = data.get("guild") or {}, data.get("channel") or {}
        self.channel = {
            k: v
            for k, v in (
                ("guild", guild.get("name")),
                ("chat", channel.get("name")),
                ("category", channel.get("category")),
            )
            if isinstance(v, str)
        }
        for i, msg in enumerate(data["messages"]):
            if not isinstance(msg, dict):
                continue
            author = msg.get("author")
            try:
                time, offset = parse_time(msg["timestamp"])
                name = str(author["name"])
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                line = _line_of(text, msg.get("id"))
                where = f"{src.name}:{line}" if line else f"{src.name}: message {i}"
                missing = e.args[0] if isinstance(e, KeyError) else e
                yield Problem(
                    where, f"message {msg.get('id', i)}: missing or broken field {missing!r}; skipped"
                )
                continue
            content = _content(msg)
            forwarded = msg.get("forwardedMessage")
            if not content.strip() and isinstance(forwarded, dict):
                content = _content(forwarded)
            kind = "system" if str(msg.get("type", "Default")) in _SYSTEM_TYPES else "message"
            if isinstance(author, dict) and author.get("isBot"):
                kind = "bot"
            yield kind, name, time, offset, content, _line_of(text, msg.get("id"))

    def _csv(self, text: str, src: Source) -> Iterator[tuple | Problem]:
        self.channel = {}
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            line = reader.line_num
            try:
                time, offset = parse_time(row["Date"] or "")
                name = row["Author"]
                if name is None:
                    raise KeyError("Author")
            except (KeyError, ValueError, TypeError) as e:
                yield Problem(f"{src.name}:{line}", f"missing or broken field ({e}); row skipped")
                continue
            content = row.get("Content") or ""
            if not content.strip() and (row.get("Attachments") or "").strip():
                content = "<media>"
            yield "message", name, time, offset, content, line
