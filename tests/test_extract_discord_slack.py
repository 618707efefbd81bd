"""Discord (DiscordChatExporter JSON and CSV), Slack (a workspace export folder or zip) and Telegram's one
time convention per file: fixtures written here, each read through the reader and through ``ownlm extract``."""

from __future__ import annotations

import json
import zipfile

import pytest

from ownlm.extract.base import ExtractOptions, Problem, Source
from ownlm.extract.discord import DiscordReader
from ownlm.extract.slack import export_roots
from ownlm.extract.telegram import TelegramReader

DC = DiscordReader()


def triples(conv):
    return [(m.name, m.time, m.text) for m in conv.messages]


def discord_export(messages):
    return {"guild": {"id": "1", "name": "Guild"}, "channel": {"id": "2", "name": "general", "category": "Text"},
            "dateRange": {"after": None, "before": None}, "messages": messages, "messageCount": len(messages)}  # fmt: skip


def dmsg(i, name, content, t="2024-03-01T10:00:00.123+01:00", kind="Default", **extra):
    return {"id": str(i), "type": kind, "timestamp": t, "timestampEdited": None, "isPinned": False,
            "content": content, "author": {"id": "9", "name": name, "nickname": name.title(), "isBot": False},
            "attachments": [], "embeds": [], "stickers": [], "reactions": [], **extra}  # fmt: skip


def test_discord_json_messages_media_system_and_a_broken_message():
    msgs = [dmsg(1, "ann", "hi"), dmsg(2, "bob", "", t="2024-03-01T10:01:00+01:00", attachments=[{"url": "x"}]),
            dmsg(3, "bob", "Added ann", kind="RecipientAdd"), dmsg(4, "ann", "re: hi", kind="Reply"),
            {"id": "5", "type": "Default", "content": "no time", "author": {"name": "ann"}},
            dmsg(6, "bot", "beep", author={"name": "bot", "isBot": True})]  # fmt: skip
    data = json.dumps(discord_export(msgs), indent=2).encode()
    src = Source("Guild - general.json", data)
    assert DC.sniff(src)
    *problems, conv = DC.read(src, ExtractOptions(drop_system=False))
    (problem,) = problems
    line = data.decode().splitlines().index('      "id": "5",') + 1
    assert problem.where == f"Guild - general.json:{line}" and "timestamp" in problem.reason
    assert triples(conv) == [("ann", "2024-03-01T10:00:00", "hi"), ("bob", "2024-03-01T10:01:00", "<media>"),
                             ("ann", "2024-03-01T10:00:00", "re: hi")]  # fmt: skip
    assert [s["kind"] for s in conv.meta["system"]] == ["system", "bot"]
    assert conv.meta["utc_offsets"] == ["+01:00"] and conv.meta["chat"] == "general"


def dm_export(messages, group=False):
    """A direct-message export as the exporter writes it: the guild is "Direct Messages" (id 0)."""
    kind, name = ("DirectGroupTextChat", "Trip") if group else ("DirectTextChat", "bob")
    return {"guild": {"id": "0", "name": "Direct Messages", "iconUrl": "https://cdn/x.png"},
            "channel": {"id": "5", "type": kind, "categoryId": None, "category": "Private", "name": name,
                        "topic": None}, "dateRange": {"after": None, "before": None},
            "exportedAt": "2024-03-02T09:00:00+01:00", "messages": messages, "messageCount": len(messages)}  # fmt: skip


STICKER = {"id": "70", "name": "Wave", "format": "Apng", "sourceUrl": "https://cdn/7.png"}
PHOTO = {"id": "80", "url": "https://cdn/p.jpg", "fileName": "p.jpg", "fileSizeBytes": 1200}


def test_discord_direct_messages_keep_replies_attachments_stickers_and_forwards():
    # every kind of message a person sends in a DM: text, a reply carrying only a photo, a sticker, a forward
    msgs = [dmsg(1, "ann", "hi"),
            dmsg(2, "bob", "", kind="Reply", attachments=[PHOTO],
                 reference={"type": "Default", "messageId": "1", "channelId": "5", "guildId": None}),
            dmsg(3, "ann", "", stickers=[STICKER]),
            dmsg(4, "bob", "", forwardedMessage={"timestamp": "2024-02-01T10:00:00+01:00", "content": "look at this",
                                                 "attachments": [], "embeds": [], "stickers": []}),
            dmsg(5, "ann", "", forwardedMessage={"content": "", "attachments": [PHOTO], "embeds": [], "stickers": []}),
            dmsg(6, "ann", "Started a call that lasted 3 minutes.", kind="Call")]  # fmt: skip
    src = Source("Direct Messages - bob.json", json.dumps(dm_export(msgs)).encode())
    (conv,) = DC.read(src, ExtractOptions())  # no problem reported
    assert [m.text for m in conv.messages] == ["hi", "<media>", "<media>", "look at this", "<media>"]
    assert conv.meta["system_dropped"] == 1 and "empty" not in conv.meta


def test_discord_group_chat_reports_a_message_with_nothing_to_keep():
    msgs = [dmsg(1, "ann", "Added cem to the group.", kind="RecipientAdd"), dmsg(2, "ann", "welcome"),
            dmsg(3, "cem", "thanks", kind="Reply"), dmsg(4, "bob", "", attachments=[PHOTO]),
            dmsg(5, "cem", "", stickers=[STICKER]), dmsg(6, "bob", "Changed the channel name: Trip", kind="ChannelNameChange"),
            dmsg(7, "ann", "", poll={"question": {"text": "When?"}}),  # a poll: no text, file or sticker
            dmsg(8, "bob", "see you", kind="20"),  # a kind the exporter has no name for, not a notification
            dmsg(9, "ann", "", kind="12")]  # a numbered notification (a follow): a system line  # fmt: skip
    data = json.dumps(dm_export(msgs, group=True), indent=2).encode()
    *problems, conv = DC.read(Source("Direct Messages - Trip.json", data), ExtractOptions())
    assert [m.text for m in conv.messages] == ["welcome", "thanks", "<media>", "<media>", "see you"]
    (problem,) = problems
    line = data.decode().splitlines().index('      "id": "7",') + 1
    assert (
        problem.where == f"Direct Messages - Trip.json:{line}"
        and "1 message(s) with neither" in problem.reason
    )
    assert conv.meta["empty"] == 1 and conv.meta["system_dropped"] == 3 and conv.meta["chat"] == "Trip"


def test_discord_csv_and_json_of_one_channel_agree():
    msgs = [dmsg(1, "ann", "hi, you"), dmsg(2, "bob", "line one\nline two", t="2024-03-01T10:05:00+01:00")]
    rows = ['"AuthorID","Author","Date","Content","Attachments","Reactions"'] + [
        f'"9","{m["author"]["name"]}","{m["timestamp"]}","{m["content"]}","",""' for m in msgs
    ]
    csv_src = Source("general.csv", ("\n".join(rows) + "\n").encode())
    json_src = Source("general.json", json.dumps(discord_export(msgs)).encode())
    assert DC.sniff(csv_src) and DC.sniff(json_src)
    (a,), (b,) = list(DC.read(csv_src, ExtractOptions())), list(DC.read(json_src, ExtractOptions()))
    assert triples(a) == triples(b) and len(a.messages) == 2
    empty = Source("e.csv", (rows[0] + '\n"9","ann","2024-03-01T10:00:00+01:00","","",""\n').encode())
    problem, conv = DC.read(empty, ExtractOptions())  # neither text nor attachment: reported, not kept
    assert problem.where == "e.csv:2" and "neither" in problem.reason and conv.meta["empty"] == 1
    bad = Source("bad.csv", (rows[0] + '\n"9","ann","yesterday","x","",""\n').encode())
    problem, conv = DC.read(bad, ExtractOptions())
    assert isinstance(problem, Problem) and problem.where == "bad.csv:2" and conv.messages == []


def test_sniff_leaves_other_json_and_csv_alone():
    for name, data in [
        ("data.json", '{"messages": []}'),
        ("t.csv", "a,b\n1,2\n"),
        ("g.json", '{"guild": 1}'),
    ]:
        assert not DC.sniff(Source(name, data.encode()))


# ---------------------------------------------------------------- Slack


def slack_export(folder, users=True):
    folder.mkdir(parents=True)
    if users:
        (folder / "users.json").write_text(json.dumps([
            {"id": "U1", "name": "ann", "real_name": "Ann Lee", "profile": {"display_name": "Ann"}},
            {"id": "U2", "name": "bob", "real_name": "Bob", "profile": {"display_name": ""}}]))  # fmt: skip
    (folder / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general"}]))
    (folder / "general").mkdir()
    day1 = [
        {"type": "message", "subtype": "channel_join", "user": "U2", "text": "<@U2> has joined the channel", "ts": "1704103200.000100"},
        {"type": "message", "user": "U1", "text": "Hi <@U2>, see <#C1> &amp; <https://x.org|this>", "ts": "1704103260.000200",
         "thread_ts": "1704103260.000200", "reply_count": 1},
        {"type": "message", "user": "U2", "text": "in thread", "ts": "1704103320.000300", "thread_ts": "1704103260.000200"},
        {"type": "message", "user": "U2", "text": "fixed", "ts": "1704103380.000400", "edited": {"user": "U2", "ts": "1"}},
        {"type": "message", "subtype": "bot_message", "bot_id": "B1", "username": "ci", "text": "build ok", "ts": "1704103400.0"},
    ]  # fmt: skip
    day2 = [{"type": "message", "user": "U1", "text": "", "files": [{"name": "a.png"}], "ts": "1704189600.0",
             "user_profile": {"display_name": "Ann"}}]  # fmt: skip
    (folder / "general" / "2024-01-01.json").write_text(json.dumps(day1))
    (folder / "general" / "2024-01-02.json").write_text(json.dumps(day2))


def _records(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.mark.parametrize("as_zip", [False, True])
def test_slack_export_folder_or_zip_becomes_channel_and_thread_conversations(tmp_path, as_zip):
    from ownlm.cli import main

    slack_export(tmp_path / "in" / "acme")
    (tmp_path / "in" / "notes.txt").write_text("a plain note beside the export")
    src = tmp_path / "in"
    if as_zip:
        src = tmp_path / "acme.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for p in sorted((tmp_path / "in" / "acme").rglob("*.json")):
                zf.write(p, p.relative_to(tmp_path / "in").as_posix())
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(src), "--out", str(out)]) == 0
    recs = _records(out)
    convs = [r for r in recs if "messages" in r]
    docs = [r for r in recs if "text" in r]
    assert [d["text"] for d in docs] == (
        [] if as_zip else ["a plain note beside the export"]
    )  # no index file
    channel, thread = convs
    assert [(m["name"], m["time"], m["text"]) for m in channel["messages"]] == [
        ("Ann", "2024-01-01T10:01:00", "Hi @Bob, see #general & this (https://x.org)"),
        ("Bob", "2024-01-01T10:03:00", "fixed"),
        ("Ann", "2024-01-02T10:00:00", "<media>"),
    ]
    assert [m["text"] for m in thread["messages"]][1:] == ["in thread"]
    assert channel["meta"]["system_dropped"] == 2 and channel["meta"]["edited"] == 1
    assert channel["meta"]["time_zone"] == "UTC" and thread["meta"]["thread_ts"] == "1704103260.000200"


def test_slack_without_users_json_is_a_reported_problem_and_the_rest_is_kept(tmp_path):
    from ownlm.cli import main

    slack_export(tmp_path / "acme", users=False)
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(tmp_path / "acme"), "--out", str(out)]) == 0
    summary = json.loads((tmp_path / "out.summary.json").read_text("utf-8"))
    assert [e["file"] for e in summary["errors"]] == [f"{(tmp_path / 'acme').as_posix()}/users.json"]
    channel = _records(out)[0]
    assert [m["name"] for m in channel["messages"]] == ["U1", "U2", "Ann"]  # ids, or the message's profile


def test_slack_keeps_every_message_with_text_or_a_file_and_reports_the_rest():
    from ownlm.extract.slack import read_export

    def m(ts, user, text, **extra):
        return {"type": "message", "user": user, "text": text, "ts": f"17041032{ts:02d}.000100", **extra}

    parent = "1704103202.000100"
    blocks = [{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
        {"type": "text", "text": "Blocks only, "}, {"type": "user", "user_id": "U1"}]}]}]  # fmt: skip
    day1 = [
        m(0, "U1", "Morning all"),
        m(1, "U2", "", subtype="file_share", files=[{"name": "map.png"}]),
        m(2, "U1", "Plan for Friday?", thread_ts=parent, reply_count=3),
        m(3, "U2", "Pizza", thread_ts=parent, parent_user_id="U1"),
        m(4, "U1", "Deal", thread_ts=parent, parent_user_id="U1"),
        m(5, "U2", "Late answer", thread_ts="1703000000.000100"),  # its parent is older than the export
        m(6, "U1", "Also in the channel", subtype="thread_broadcast", thread_ts=parent),
        m(7, "U2", "", blocks=blocks),
        m(8, "U1", "waves", subtype="me_message"),
        m(
            9,
            "U2",
            "",
            attachments=[{"is_share": True, "text": "Original words", "fallback": "[x] Original"}],
        ),
        {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "B1",
            "text": "build ok",
            "ts": "1704103210.0",
        },
        m(11, "U2", "<@U2> has joined the channel", subtype="channel_join"),
        m(12, "U1", ""),  # neither text nor file
        m(13, "U2", "Old-style broadcast", subtype="reply_broadcast", thread_ts=parent),
    ]
    day2 = [m(14, "U1", "See you"), m(15, "U2", "", files=[{"name": "sticker.gif"}])]
    users = [{"id": "U1", "name": "ann", "profile": {"display_name": "Ann"}}, {"id": "U2", "name": "bob"}]
    files = {"users.json": json.dumps(users).encode(), "channels.json": b'[{"id": "C1", "name": "general"}]',
             "general/2024-01-01.json": json.dumps(day1).encode(), "general/2024-01-02.json": json.dumps(day2).encode()}  # fmt: skip
    items = list(read_export("acme", files, ExtractOptions()))
    (problem,) = [i for i in items if isinstance(i, Problem)]
    assert problem.where == "acme/general/2024-01-01.json: message 12" and "1 message(s)" in problem.reason
    channel, old_thread, thread = [i for i in items if not isinstance(i, Problem)]
    assert [x.text for x in channel.messages] == [
        "Morning all", "<media>", "Plan for Friday?", "Also in the channel", "Blocks only, @Ann", "waves",
        "Original words", "Old-style broadcast", "See you", "<media>"]  # fmt: skip
    assert [x.text for x in thread.messages] == ["Plan for Friday?", "Pizza", "Deal", "Also in the channel",
                                                 "Old-style broadcast"]  # fmt: skip
    assert [x.text for x in old_thread.messages] == ["Late answer"]
    assert channel.meta["empty"] == 1 and channel.meta["system_dropped"] == 2
    kept = {(x.time, x.text) for conv in (channel, old_thread, thread) for x in conv.messages}
    assert len(kept) == 13  # the 16 lines: 13 people's messages, each kept; 2 system lines; 1 reported


def test_export_roots_need_an_index_file_beside_daily_files():
    assert export_roots(["a/users.json", "a/c/2024-01-01.json", "b/c/2024-01-01.json", "c/users.json"]) == [
        "a"
    ]


# ---------------------------------------------------------------- Telegram: one time convention per file


def test_telegram_unix_only_messages_take_the_files_local_offset():
    chat = {"name": "c", "type": "personal_chat", "messages": [
        {"id": 1, "type": "message", "date": "2024-01-15T12:30:00", "date_unixtime": "1705318200", "from": "A", "text": "x"},
        {"id": 2, "type": "message", "date_unixtime": "1705318260", "from": "B", "text": "y"}]}  # fmt: skip
    (conv,) = TelegramReader().read(Source("result.json", json.dumps(chat).encode()), ExtractOptions())
    # 1705318200 is 11:30 UTC; the file's local time is UTC+1, so the second message is 12:31 local.
    assert triples(conv) == [("A", "2024-01-15T12:30:00", "x"), ("B", "2024-01-15T12:31:00", "y")]
    assert conv.meta["time_zone"] == "local"
    for m in chat["messages"]:
        m.pop("date", None)
    (conv,) = TelegramReader().read(Source("result.json", json.dumps(chat).encode()), ExtractOptions())
    assert [m.time for m in conv.messages] == ["2024-01-15T11:30:00", "2024-01-15T11:31:00"]
    assert conv.meta["time_zone"] == "UTC"
