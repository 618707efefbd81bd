"""Telegram Desktop JSON exports (``result.json``) -> one ``Conversation`` per chat.

Two shapes: a single chat (``{"name", "type", "id", "messages": [...]}``) and the full account export
(``{"about", "personal_information", ..., "chats": {"list": [...]}, "left_chats": {"list": [...]}}``).
Per message: ``name`` = ``from`` (the sender as Telegram shows it; ``from_id`` when the account is
deleted), ``time`` = ``date`` (local time, as the export writes it), ``text`` = ``text`` whether it
is a string or a list of strings and entities (``{"type": "bold", "text": "..."}``), which are
concatenated exactly as Telegram's own ``text_entities`` define it. A message with no text but a photo,
file or sticker becomes ``<media>`` (as in the WhatsApp reader); service messages (``"type":
"service"``: joined, pinned, calls, ...) are system lines, dropped with ``drop_system`` and kept in
``meta["system"]`` otherwise.

One time convention per file, stated in ``meta["time_zone"]``: ``"local"`` when every message has its
local ``date``; a message that carries only ``date_unixtime`` is shifted to local time by the offset
its nearest neighbour shows (``date`` minus ``date_unixtime``); when no message shows an offset, every
time is UTC (``"UTC"``).

>>> from ownlm.extract.base import ExtractOptions, Source
>>> data = b'{"name": "A", "type": "personal_chat", "messages": [{"type": "message", "date": "2024-01-15T10:30:00", "from": "Ann", "text": ["Hi ", {"type": "bold", "text": "you"}]}]}'
>>> next(TelegramReader().read(Source("result.json", data), ExtractOptions())).messages
[Message(name='Ann', time='2024-01-15T10:30:00', text='Hi you')]
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from datetime import UTC, datetime
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

# A Telegram export names its messages' fields in the first few hundred bytes of each chat; a full
# export starts with "about" + "personal_information" (its chats may lie megabytes further on).
_SINGLE = re.compile(r'"messages"\s*:\s*\[\s*(?:\]|\{[^{}]*"type"\s*:\s*"(?:message|service)")')
_FIELDS = re.compile(r'"(?:date_unixtime|from_id|actor_id)"\s*:|"date"\s*:\s*"\d{4}-\d\d-\d\dT')
_FULL = re.compile(r'^\s*\{\s*"about"\s*:\s*"[^"]*"\s*,\s*"(?:personal_information|chats)"\s*:')
_MEDIA_KEYS = ("photo", "file", "media_type", "sticker_emoji", "location_information", "contact_information")


def flatten_text(text: Any) -> str:
    """Telegram's ``text``: a string, or a list of strings and ``{"type", "text"}`` entities.

    >>> flatten_text(["See ", {"type": "link", "text": "https://t.me"}, "!"])
    'See https://t.me!'
    >>> flatten_text(["a", {"type": "mention", "text": None}, "b"])  # an entity without text adds nothing
    'ab'
    """
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(
            part
            if isinstance(part, str)
            else flatten_text(part.get("text"))
            if isinstance(part, dict)
            else ""
            for part in text
        )
    return ""


def _unix(msg: dict) -> int | None:
    try:
        return int(msg["date_unixtime"])
    except (KeyError, ValueError, TypeError):
        return None


def _local(msg: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(msg["date"]) if isinstance(msg.get("date"), str) else None
    except ValueError:
        return None


class Clock:
    """The file's one time convention: local time, from ``date`` or from ``date_unixtime`` + the offset
    that messages carrying both show (the nearest one in time, so daylight saving changes follow)."""

    def __init__(self, messages: list[dict]) -> None:
        self.offsets: list[tuple[int, int]] = []  # (unix time, seconds local time is ahead of UTC)
        self.needed = False
        for msg in messages:
            local, unix = _local(msg), _unix(msg)
            if local is not None and unix is not None:
                utc = datetime.fromtimestamp(unix, UTC).replace(tzinfo=None)
                self.offsets.append((unix, round((local - utc).total_seconds() / 60) * 60))
            self.needed |= local is None and unix is not None
        self.offsets.sort()
        self.zone = (
            "UTC" if self.needed and not self.offsets and not any(_local(m) for m in messages) else "local"
        )

    def time(self, msg: dict) -> str:
        """ISO time of ``msg`` in the file's convention; ``ValueError`` when it has no usable time."""
        local = _local(msg)
        if local is not None:
            return local.isoformat()
        unix = _unix(msg)
        if unix is None:
            raise ValueError("no date")
        offset = 0
        if self.zone == "local":
            if not self.offsets:
                raise ValueError("only date_unixtime, and no message shows the local offset")
            i = bisect.bisect_left(self.offsets, (unix,))
            near = [self.offsets[j] for j in (i - 1, i) if 0 <= j < len(self.offsets)]
            offset = min(near, key=lambda o: abs(o[0] - unix))[1]
        return datetime.fromtimestamp(unix + offset, UTC).replace(tzinfo=None).isoformat()


def _service_text(msg: dict) -> str:
    words = [str(msg.get("actor") or ""), str(msg.get("action") or "")]
    members = msg.get("members")
    if isinstance(members, list):
        words.append(", ".join(str(m) for m in members))
    if msg.get("title"):
        words.append(str(msg["title"]))
    return " ".join(w for w in words if w)


def _conversation(
    chat: dict, src: Source, opts: ExtractOptions, problems: list[Problem], clock: Clock
) -> Conversation:
    messages, system = [], []
    for msg in chat.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        try:
            time = clock.time(msg)
        except (KeyError, ValueError, TypeError, OverflowError, OSError) as e:
            where = f"{src.name}: chat {chat.get('name', '?')!r}, message {msg.get('id', '?')}"
            problems.append(Problem(where, f"no valid 'date' or 'date_unixtime' ({e}); message skipped"))
            continue
        if msg.get("type") == "service":
            system.append({"time": time, "text": _service_text(msg)})
            continue
        text = flatten_text(msg.get("text"))
        if not text.strip():
            if not any(k in msg for k in _MEDIA_KEYS):
                continue  # polls, games, empty messages: nothing a person wrote
            text = "<media>"
        name = msg.get("from") if isinstance(msg.get("from"), str) else str(msg.get("from_id") or "")
        messages.append(Message(name=name, time=time, text=text))
    meta: dict[str, Any] = {"format": "telegram"}
    for key in ("name", "type", "id"):
        if key in chat:
            meta["chat" if key == "name" else f"chat_{key}"] = chat[key]
    meta["time_zone"] = clock.zone
    meta.update(system_meta(system, opts))
    return Conversation(source=src.name, messages=messages, meta=meta)


def _list(section: Any) -> list:
    """``{"list": [...]}`` -> the list; anything else -> []."""
    items = section.get("list") if isinstance(section, dict) else None
    return items if isinstance(items, list) else []


class TelegramReader(Reader):
    """Reads Telegram Desktop ``result.json`` exports (single chat or full account export)."""

    name = "telegram"
    extensions = (".json",)

    def sniff(self, src: Source) -> bool:
        """Yes for a ``.json`` whose first 4 KB look like a Telegram export, not any JSON with messages."""
        if not super().sniff(src):  # the extension first
            return False
        head = src.head_text
        return bool(_FULL.match(head) or (_SINGLE.search(head) and _FIELDS.search(head)))

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        data = load_json(src.data, "re-export the chat from Telegram Desktop")
        if not isinstance(data, dict):
            raise ReaderError("expected a JSON object with 'messages' or 'chats' (a Telegram Desktop export)")
        if isinstance(data.get("messages"), list):
            chats = [data]
        else:
            chats = [
                chat
                for key in ("chats", "left_chats")
                for chat in _list(data.get(key))
                if isinstance(chat, dict)
            ]
            if not chats:
                raise ReaderError(
                    "no chats in this file; export them with Telegram Desktop "
                    "(Settings > Advanced > Export Telegram data, tick the chats, format JSON)"
                )
        clock = Clock([m for chat in chats for m in chat.get("messages") or [] if isinstance(m, dict)])
        for chat in chats:
            problems: list[Problem] = []
            conv = _conversation(chat, src, opts, problems, clock)
            yield from problems
            if conv.messages or conv.meta.get("system"):
                yield conv
