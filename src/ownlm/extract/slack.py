"""Slack workspace exports (a folder or a .zip) -> one ``Conversation`` per channel and one per thread.

An export holds ``users.json`` (ids -> names), ``channels.json`` (and ``groups.json``, ``dms.json``,
``mpims.json`` for private channels and direct messages) and one folder per channel of daily files
``general/2024-01-15.json``, each a list of messages ``{"type": "message", "user", "text", "ts",
"thread_ts", "subtype", "edited", "files"}``. The whole export is read at once (``ownlm extract`` hands
it over as one bundle, see ``export_roots``); its index files never become documents.

Per message: ``name`` = the user's display name (``users.json``: display name, else real name, else
user name; the message's own ``user_profile`` when the user is missing), ``time`` = ``ts`` in UTC
(``meta["time_zone"]``), ``text`` = the text with Slack's markup resolved (``<@U1>`` -> ``@Ann``,
``<#C1|general>`` -> ``#general``, ``<https://x|label>`` -> ``label (https://x)``, ``&amp;`` -> ``&``); when
``text`` is empty, the text of its rich-text ``blocks``, else of a shared message (``attachments``), else
``<media>`` for files. Edited messages keep their final text (counted in ``meta["edited"]``).
Replies in a thread are taken out of the channel and make their own conversation (the parent first, when
the export has it); ``thread_broadcast`` replies stay in the channel too. Bot messages and system subtypes
(joins, topic, purpose, pins, ...) are system lines, dropped with ``drop_system``. A message with neither
text nor file is a ``Problem`` (counted in ``meta["empty"]``), never dropped silently. No ``users.json``:
a ``Problem``, and names fall back to the messages' profiles or user ids.

>>> roots = export_roots(["x/users.json", "x/channels.json", "x/general/2024-01-15.json", "notes.txt"])
>>> roots
['x']
"""

from __future__ import annotations

import html
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

INDEX_FILES = ("users.json", "channels.json", "groups.json", "dms.json", "mpims.json")
_DAY = re.compile(r"^(?P<channel>[^/]+)/(?P<day>\d{4}-\d\d-\d\d)\.json$")
_USER_SUBTYPES = {None, "thread_broadcast", "reply_broadcast", "file_share", "me_message", "file_comment"}
_BROADCASTS = {"thread_broadcast", "reply_broadcast"}  # a reply also shown in the channel
_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def export_roots(names: list[str]) -> list[str]:
    """The folders (as prefixes of ``names``, "" for the top) that are Slack exports: an index file
    beside at least one ``channel/YYYY-MM-DD.json``."""
    by_root: dict[str, set[str]] = {}
    for name in names:
        head, _, base = name.rpartition("/")
        by_root.setdefault(head, set()).add(base)
    roots = []
    for root, bases in by_root.items():
        if not bases & set(INDEX_FILES):
            continue
        prefix = f"{root}/" if root else ""
        if any(_DAY.match(n[len(prefix) :]) for n in names if n.startswith(prefix)):
            roots.append(root)
    return sorted(roots)


def _load(name: str, data: bytes) -> Any:
    return load_json(data, f"{name} is damaged: export the workspace again")


def _user_names(users: Any) -> dict[str, str]:
    names = {}
    for u in users if isinstance(users, list) else []:
        if not isinstance(u, dict) or "id" not in u:
            continue
        profile = u.get("profile") if isinstance(u.get("profile"), dict) else {}
        for candidate in (
            profile.get("display_name"),
            u.get("real_name"),
            profile.get("real_name"),
            u.get("name"),
        ):
            if isinstance(candidate, str) and candidate.strip():
                names[u["id"]] = candidate.strip()
                break
    return names


def resolve_markup(text: str, users: dict[str, str], channels: dict[str, str]) -> str:
    """Slack's ``<...>`` markup and HTML escapes as a person reads them.

    >>> resolve_markup("hi <@U1>, see <#C2> and <https://x.org|this> &amp; <!here>", {"U1": "Ann"}, {"C2": "general"})
    'hi @Ann, see #general and this (https://x.org) & @here'
    """

    def link(m: re.Match) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return "@" + (label or users.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or channels.get(target[1:], target[1:]))
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0])
        return f"{label} ({target})" if label and label != target else target

    return html.unescape(_LINK.sub(link, text))


def block_text(blocks: Any, users: dict[str, str], channels: dict[str, str]) -> str:
    """The text of Slack's rich-text blocks (what a message holds when its ``text`` is empty).

    >>> block_text([{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
    ...     {"type": "text", "text": "hi "}, {"type": "user", "user_id": "U1"}, {"type": "emoji", "name": "wave"},
    ...     {"type": "link", "url": "https://x.org", "text": "this"}]}]}], {"U1": "Ann"}, {})
    'hi @Ann:wave:this (https://x.org)'
    """
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "text":
            out.append(str(node.get("text") or ""))
        elif kind == "user":
            out.append("@" + users.get(str(node.get("user_id")), str(node.get("user_id"))))
        elif kind == "channel":
            out.append("#" + channels.get(str(node.get("channel_id")), str(node.get("channel_id"))))
        elif kind == "emoji":
            out.append(f":{node.get('name')}:")
        elif kind == "link":
            label, url = node.get("text"), str(node.get("url") or "")
            out.append(f"{label} ({url})" if label and label != url else url)
        elif kind == "broadcast":
            out.append("@" + str(node.get("range") or "here"))
        elif kind in ("rich_text_list", "rich_text_preformatted", "rich_text_quote") and out:
            out.append("\n")
        walk(node.get("elements"))

    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict) and block.get("type") == "rich_text":
            walk(block.get("elements"))
    return "".join(out).strip()


def _text(msg: dict, users: dict[str, str], channels: dict[str, str]) -> str:
    """A message's text: ``text``, else its rich-text blocks, else a shared message's text, else ``<media>``
    for files or attachments; "" when it holds none of these."""
    text = resolve_markup(str(msg.get("text") or ""), users, channels).strip()
    text = text or block_text(msg.get("blocks"), users, channels)
    shared = [a for a in msg.get("attachments") or [] if isinstance(a, dict)]
    for a in shared if not text else []:
        text = resolve_markup(str(a.get("text") or a.get("fallback") or ""), users, channels).strip()
        if text:
            break
    if not text and (msg.get("files") or shared):
        text = "<media>"
    return text


def _utc(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), UTC).replace(tzinfo=None, microsecond=0).isoformat()


def read_export(root: str, files: dict[str, bytes], opts: ExtractOptions) -> Iterator[Conversation | Problem]:
    """Conversations of a Slack export whose files (relative path -> bytes) lie under ``root``."""
    where = root or "."
    users_raw = files.get("users.json")
    if users_raw is None:
        yield Problem(
            f"{where}/users.json", "Slack export without users.json: names are taken from messages or ids"
        )
        users: dict[str, str] = {}
    else:
        users = _user_names(_load(f"{where}/users.json", users_raw))
    channels: dict[str, str] = {}
    for index in INDEX_FILES[1:]:
        if index in files:
            for c in _load(f"{where}/{index}", files[index]) or []:
                if isinstance(c, dict) and "id" in c:
                    channels[c["id"]] = str(c.get("name") or c["id"])
    days: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(files):
        if m := _DAY.match(name):
            days.setdefault(m["channel"], []).append((name, m["day"]))
    for channel, day_files in sorted(days.items()):
        rows = []
        for name, _ in day_files:
            try:
                items = _load(f"{where}/{name}", files[name])
            except ReaderError as e:
                yield Problem(f"{where}/{name}", str(e))
                continue
            for i, msg in enumerate(items if isinstance(items, list) else []):
                if isinstance(msg, dict):
                    rows.append((f"{where}/{name}", i, msg))
        yield from _channel(root, channel, rows, users, channels, opts)


def _channel(root, channel, rows, users, channels, opts) -> Iterator[Conversation | Problem]:
    main: list[tuple[float, Message]] = []
    parents: set[str] = set()  # threads whose parent the export holds
    threads: dict[str, list[tuple[float, Message]]] = {}
    system, edited, empty = [], 0, []
    for where, i, msg in rows:
        try:
            ts = float(msg["ts"])
            time = _utc(ts)
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            yield Problem(f"{where}: message {i}", "no valid 'ts'; message skipped")
            continue
        profile = msg.get("user_profile") if isinstance(msg.get("user_profile"), dict) else {}
        uid = str(msg.get("user") or msg.get("bot_id") or "")
        name = (
            users.get(uid)
            or profile.get("display_name")
            or profile.get("real_name")
            or msg.get("username")
            or uid
        )
        text = _text(msg, users, channels)
        subtype = msg.get("subtype")
        if subtype not in _USER_SUBTYPES or msg.get("bot_id") and subtype is None and uid not in users:
            system.append({"time": time, "name": name, "text": text, "kind": subtype or "bot"})
            continue
        if not text:
            empty.append(f"{where}: message {i}")
            continue
        edited += bool(msg.get("edited"))
        message = Message(name=name, time=time, text=text)
        thread = msg.get("thread_ts")
        if thread and str(thread) != str(msg.get("ts")):  # a reply
            threads.setdefault(str(thread), []).append((ts, message))
            if subtype not in _BROADCASTS:
                continue
        elif thread:  # the parent of a thread: first message of the thread too
            threads.setdefault(str(thread), []).append((ts, message))
            parents.add(str(thread))
        main.append((ts, message))
    if empty:
        yield Problem(empty[0], f"{len(empty)} message(s) with neither text nor file: skipped")
    meta: dict[str, Any] = {"format": "slack", "chat": channel, "time_zone": "UTC", "edited": edited}
    if empty:
        meta["empty"] = len(empty)
    meta.update(system_meta(system, opts))
    source = f"{root}/{channel}" if root else channel
    yield Conversation(source, [m for _, m in sorted(main, key=lambda x: x[0])], meta)
    for thread, replies in sorted(threads.items()):
        # a thread with replies, even one whose parent lies outside the export (a reply kept nowhere else)
        if len(replies) > 1 or thread not in parents:
            meta = {"format": "slack", "chat": channel, "thread_ts": thread, "time_zone": "UTC"}
            yield Conversation(source, [m for _, m in sorted(replies, key=lambda x: x[0])], meta)


class SlackReader(Reader):
    """A Slack index file given on its own: say how to read the export instead of making it a document."""

    name = "slack"
    extensions = (".json",)

    def sniff(self, src: Source) -> bool:
        return src.name.rpartition("/")[2] in INDEX_FILES and src.head_text.lstrip().startswith("[")

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Conversation]:
        raise ReaderError(
            "part of a Slack export; give the whole export folder or .zip (users.json, channels.json "
            "and the channel folders) to read its conversations"
        )
