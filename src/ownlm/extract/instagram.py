"""Instagram and Facebook Messenger JSON exports (``message_1.json``) -> one ``Conversation`` per file.

Meta's "Download your information" export (format JSON) writes each chat as
``{"participants": [...], "messages": [{"sender_name", "timestamp_ms", "content"}, ...], "title"}``,
newest message first, with text encoded the Meta way: UTF-8 bytes written as ``\\u00XX`` escapes, so
"é" arrives as "Ã©". This reader repairs that, puts the messages in time order, and gives ``time`` in
UTC (the export has only a Unix time; ``meta["time_zone"]`` says so). Photos, videos, shares and
stickers without text become ``<media>``; reactions ("Liked a message") are system lines.

>>> from ownlm.extract.base import ExtractOptions, Source
>>> data = b'{"messages": [{"sender_name": "Ann", "timestamp_ms": 1579294140000, "content": "caf\\\\u00c3\\\\u00a9"}]}'
>>> next(InstagramReader().read(Source("message_1.json", data), ExtractOptions())).messages
[Message(name='Ann', time='2020-01-17T20:49:00', text='café')]
"""

from __future__ import annotations

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

_HEAD = re.compile(r'"messages"\s*:\s*\[\s*\{[^{}]*"sender_name"\s*:')
_MEDIA_KEYS = ("photos", "videos", "audio_files", "gifs", "files", "sticker", "share")
_REACTION = re.compile(r"^(?:Liked a message|Reacted .* to your message|.* to your message\s*)$")


def fix_meta_text(text: str) -> str:
    """Undo Meta's export encoding (UTF-8 bytes as Latin-1 characters); other text is returned as is.

    >>> fix_meta_text("Caf\\u00c3\\u00a9 \\u00f0\\u009f\\u0098\\u0081"), fix_meta_text("café")
    ('Café 😁', 'café')
    """
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _message(msg: dict) -> tuple[str, str, str] | None:
    """``(kind, name, text)`` or None for an entry with nothing in it."""
    text = fix_meta_text(msg["content"]) if isinstance(msg.get("content"), str) else ""
    name = fix_meta_text(str(msg.get("sender_name", "")))
    if text and _REACTION.match(text):
        return "system", name, text
    if text:
        return "message", name, text
    if any(k in msg for k in _MEDIA_KEYS):
        return "message", name, "<media>"
    return None


class InstagramReader(Reader):
    """Reads Instagram / Facebook Messenger ``message_*.json`` chat exports."""

    name = "instagram"
    extensions = (".json",)

    def sniff(self, src: Source) -> bool:
        """Yes for a ``.json`` whose messages carry Meta's ``sender_name`` field."""
        if not super().sniff(src):  # the extension first
            return False
        head = src.head_text
        return bool(_HEAD.search(head)) and "timestamp_ms" in head

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation | Problem]:
        data: Any = load_json(src.data, "download the chat again (format JSON)")
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ReaderError("expected a JSON object with a 'messages' list (an Instagram/Messenger export)")
        rows, system = [], []
        for i, msg in enumerate(data["messages"]):
            if not isinstance(msg, dict):
                continue
            try:
                when = datetime.fromtimestamp(int(msg["timestamp_ms"]) / 1000, UTC).replace(tzinfo=None)
            except (KeyError, ValueError, TypeError, OverflowError, OSError):
                yield Problem(f"{src.name}: message {i}", "no valid 'timestamp_ms'; message skipped")
                continue
            found = _message(msg)
            if found is None:
                continue
            kind, name, text = found
            entry = (when.isoformat(timespec="seconds"), name, text)
            (system if kind == "system" else rows).append(entry)
        rows.sort(key=lambda r: r[0])  # the export lists newest first; a conversation reads forwards
        meta: dict[str, Any] = {"format": "instagram", "time_zone": "UTC"}
        if isinstance(data.get("title"), str):
            meta["chat"] = fix_meta_text(data["title"])
        meta.update(system_meta([{"time": t, "name": n, "text": x} for t, n, x in sorted(system)], opts))
        yield Conversation(src.name, [Message(name=n, time=t, text=x) for t, n, x in rows], meta)
