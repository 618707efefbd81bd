"""iMessage (imessage-exporter TXT) and Signal (signal-export chat.md, sigtop text) readers: chats rendered by
each exporter's own rules and read back, damaged files, and which reader takes which file."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.extract.base import ExtractOptions, Problem, ReaderError, Source, load_readers, pick_reader
from ownlm.extract.imessage import IMessageReader
from ownlm.extract.signal import SignalReader

IM, SIG = IMessageReader(), SignalReader()
KEEP = ExtractOptions(drop_system=False)
T0 = datetime(2022, 5, 17, 17, 29, 42)


def triples(conv):
    return [(m.name, m.time, m.text) for m in conv.messages]


def read(reader, name, text, opts=None):
    return list(reader.read(Source(name, text.encode()), opts or ExtractOptions()))


# ---------------------------------------------------------------- iMessage: imessage-exporter TXT
#
# Rendered as imessage-exporter writes it. The layout follows exporters/txt.rs (commit c580c9a6, the last
# before the template rewrite): format_message (time line with get_time's "(Read by ... after ...)", sender
# from Config::who, "This message was deleted from the conversation!", each part via add_line, "Sent with
# ...", "Tapbacks:" + the tapbacks + a blank line, replies via format_message(reply, 4) + a blank line, "This
# message responded to an earlier message.", a blank line), format_edited ("<time> v1", "Edited <diff> later:
# v2"), format_announcement ("<time> <who> renamed the conversation to X"), util/dates.rs format()
# ("%b %d, %Y %l:%M:%S %p"). Style "templates" is exporters/txt/mod.rs + its tests (commit 71c788b9):
# tapbacks indented 4 spaces with no blank line after, every line of a reply indented by push_indented,
# "named the conversation". Style "reactions" is the 1.x header "Reactions:" (txt.rs of Feb 2024).


def im_time(t: datetime) -> str:
    return f"{t:%b %d, %Y} {t.hour % 12 or 12:>2}:{t:%M:%S} {'PM' if t.hour >= 12 else 'AM'}"


def im_message(m: dict, style: str, indent: str = "") -> str:
    def add(out: list[str], part: str) -> None:  # add_line: the indent before the part's first line only
        if part:
            lines = part.split("\n")
            if style == "templates" and indent:
                lines = [indent + ln if ln else ln for ln in lines]
            else:
                lines[0] = indent + lines[0]
            out.append("\n".join(lines) + "\n")

    out: list[str] = []
    add(out, im_time(m["time"]) + (f" (Read by {m['read']})" if m.get("read") else ""))
    add(out, m["name"])
    if m.get("deleted"):
        add(out, "This message was deleted from the conversation!")
    for i, part in enumerate(m.get("parts", [])):
        add(out, part)
        if m.get("effect"):
            add(out, f"Sent with {m['effect']}")
        if i == 0 and m.get("tapbacks"):
            if style == "templates":
                add(out, "Tapbacks:\n" + "\n".join("    " + t for t in m["tapbacks"]))
            else:
                add(out, "Reactions:" if style == "reactions" else "Tapbacks:")
                add(out, "".join(t + "\n" for t in m["tapbacks"]))
        if i == 0:
            for reply in m.get("replies", []):
                add(out, im_message(reply, style, "    "))
    if m.get("reply") and not indent:
        add(out, "This message responded to an earlier message.")
    return "".join(out) + ("" if indent else "\n")


def im_edited(t: datetime, versions: list[str]) -> str:
    rows = [f"{im_time(t)} {versions[0]}"] + [
        f"Edited {5 * i} seconds later: {v}" for i, v in enumerate(versions[1:], 1)
    ]
    return "\n".join(rows) + "\n"  # format_edited ends with add_line's newline


def im_announcement(t: datetime, text: str) -> str:
    return f"{im_time(t)} {text}\n\n"


def im_chat(style: str) -> tuple[str, list[tuple[str, str, str]], list[str]]:
    """A chat with every kind of block, its expected messages and its expected system kinds."""
    t = [T0 + timedelta(minutes=i) for i in range(14)]
    rename = "named the conversation Trip" if style == "templates" else "renamed the conversation to Trip"
    reply = {
        "time": t[3],
        "name": "Ann",
        "parts": ["sure,\nsee you\n\nat noon"],
        "reply": True,
    }  # 2 paragraphs
    blocks = [
        im_announcement(t[0], f"You {rename}"),
        im_message({"time": t[1], "name": "Me", "read": "them after 1 hour, 49 seconds",
                    "parts": ["Hello world\n\nsecond paragraph"], "effect": "Confetti",
                    "tapbacks": ["Loved by Ann", "☕️ by Bob"]}, style),  # fmt: skip
        im_message({"time": t[2], "name": "Bob", "parts": ["Lunch?", "the usual place"], "replies": [reply]}, style),
        im_message(reply, style),
        im_message({"time": t[4], "name": "Ann", "parts": [
            "/Users/me/Library/Messages/Attachments/ab/11/F00D/IMG_1234.HEIC", "look at this"]}, style),  # fmt: skip
        im_message({"time": t[5], "name": "Me", "parts": ["attachments/12/0B6E1F2A.heic"]}, style),
        im_message({"time": t[6], "name": "+15551234567", "parts": ["Sticker from +15551234567: IMG_2.heic"]}, style),
        im_message({"time": t[7], "name": "Me", "parts": [im_edited(t[7], ["teh plan", "the plan"])]}, style),
        im_message({"time": t[8], "name": "Me", "parts": ["You unsent this message part 5 seconds after sending!"]}, style),
        im_message({"time": t[9], "name": "Bob", "parts": ["https://example.com/a\nExample\nA page"]}, style),
        im_message({"time": t[10], "name": "Bob", "parts": ["GamePigeon message:\n8 Ball"]}, style),
        im_message({"time": t[11], "name": "Ann", "parts": ["Started sharing location!"]}, style),
        im_message({"time": t[12], "name": "Ann", "parts": ["Audio Message.caf\nTranscription: on my way"]}, style),
        im_message({"time": t[13], "name": "Me", "deleted": True, "parts": ["kept anyway"]}, style),
    ]  # fmt: skip
    iso = [x.isoformat() for x in t]
    expected = [
        ("Me", iso[1], "Hello world\n\nsecond paragraph"),
        ("Bob", iso[2], "Lunch?\nthe usual place"),  # the nested copy of the reply skipped whole
        ("Ann", iso[3], "sure,\nsee you\n\nat noon"),
        ("Ann", iso[4], "look at this"),
        ("Me", iso[5], "<media>"),
        ("+15551234567", iso[6], "<media>"),
        ("Me", iso[7], "the plan"),
        ("Bob", iso[9], "https://example.com/a"),
        ("Bob", iso[10], "<media>"),
        ("Ann", iso[12], "<media>"),
        ("Me", iso[13], "kept anyway"),
    ]
    kinds = ["announcement", "tapback", "tapback", "unsent", "location"]
    return "".join(blocks), expected, kinds


def test_imessage_chat_of_every_block_kind_parses_back_in_each_exporter_style():
    for style in ("tapbacks", "templates", "reactions"):
        text, expected, kinds = im_chat(style)
        src = Source("Trip - 12.txt", text.encode())
        assert IM.sniff(src), style
        (conv,) = IM.read(src, KEEP)
        assert triples(conv) == expected, style
        assert sorted(s["kind"] for s in conv.meta["system"]) == sorted(kinds), style
        meta = conv.meta
        assert (meta["self"], meta["chat"], meta["edited"], meta["replies"], meta["link_previews"]) == (
            "Me", "Trip - 12", 1, 1, 1)  # fmt: skip
        (dropped,) = IM.read(src, ExtractOptions())
        assert triples(dropped) == expected and dropped.meta["system_dropped"] == len(kinds)


_PLAIN = (
    st.text(st.sampled_from("abcdefghij XYZ.,!?'é😀0123"), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
_TEXT = st.lists(_PLAIN, min_size=1, max_size=3).map("\n".join)
_NAMES = st.sampled_from(["Me", "Ann Lee", "+15551234567", "bob@example.com"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.integers(0, 10**7), _TEXT), min_size=1, max_size=8), st.sampled_from(
    ["tapbacks", "templates", "reactions"]))  # fmt: skip
def test_imessage_any_chat_rendered_by_the_exporter_reads_back_the_same(rows, style):
    times = sorted(T0 + timedelta(seconds=s) for _, s, _ in rows)
    msgs = [{"time": t, "name": n, "parts": [x]} for t, (n, _, x) in zip(times, rows, strict=True)]
    (conv,) = read(IM, "chat.txt", "".join(im_message(m, style) for m in msgs))
    assert triples(conv) == [(m["name"], m["time"].isoformat(), m["parts"][0]) for m in msgs]


# ---------------------------------------------------------------- Signal: signal-export chat.md
#
# Rendered as signal-export writes it: sigexport/create.py create_message (backticks removed, two spaces
# after the body, quote "\n\n> q\n\n", attachments as "media/NAME" with whitespace as %20, "(media not
# exported)"), sigexport/models.py Message.to_md ("[%Y-%m-%d %H:%M:%S] Sender: {quote}{body}", reactions
# "\n(- Name: emoji -)", stickers, "![name](./path)  " for images, "(This message was deleted)"), and
# sigexport/main.py printing each with print() (a blank line between messages). v1.x wrote "%Y-%m-%d %H:%M".


def md_message(t, name, body="", quote="", reactions=(), files=(), sticker=None, deleted=False, v1=False):
    stamp = f"{t:%Y-%m-%d %H:%M}" if v1 else f"{t:%Y-%m-%d %H:%M:%S}"
    if deleted:
        return f"[{stamp}] {name}: (This message was deleted)\n\n"
    body = body.replace("`", "") + "  "
    if reactions:
        body += "\n(- " + ", ".join(f"{n}: {e}" for n, e in reactions) + " -)"
    if sticker:
        body += f"[{sticker}](../exported_stickers/pack1/7.webp)  "
    for f in files:
        path = "media/" + f.replace(" ", "%20")
        body += ("!" if f.endswith(".jpg") else "") + f"[{f}](./{path})  "
    q = "\n\n> " + quote.replace("\n", "\n> ") + "\n\n" if quote else ""
    return f"[{stamp}] {name}: {q}{body}\n\n"


def test_signal_export_markdown_parses_back_with_replies_reactions_media_and_system_lines():
    t = [datetime(2024, 1, 15, 10, 30, 5) + timedelta(minutes=i) for i in range(7)]
    text = "".join([
        md_message(t[0], "Me", "Hello\nsecond line", reactions=[("Ann", "👍"), ("Me", "❤️")]),
        md_message(t[1], "Ann", "Hi!", quote="Hello\nsecond line"),
        md_message(t[2], "Ann", "", files=["IMG 1.jpg", "notes.pdf"]),
        md_message(t[3], "Me", "look", files=["IMG_2.jpg"], reactions=[("Ann", "😂")]),
        md_message(t[4], "Ann", "", sticker="😀"),
        md_message(t[5], "Me", deleted=True),
        md_message(t[6], "Me", "Missed voice call"),
    ])  # fmt: skip
    src = Source("signal-chats/Ann/chat.md", text.encode())
    assert SIG.sniff(src)
    (conv,) = SIG.read(src, KEEP)
    iso = [x.isoformat() for x in t]
    assert triples(conv) == [("Me", iso[0], "Hello\nsecond line"), ("Ann", iso[1], "Hi!"), ("Ann", iso[2], "<media>"),
                             ("Me", iso[3], "look"), ("Ann", iso[4], "<media>")]  # fmt: skip
    assert [s["kind"] for s in conv.meta["system"]] == ["reaction", "reaction", "reaction", "deleted", "call"]
    assert (conv.meta["chat"], conv.meta["self"], conv.meta["replies"], conv.meta["media"]) == (
        "Ann",
        "Me",
        1,
        3,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.integers(0, 10**7), _TEXT), min_size=1, max_size=8), st.booleans())
def test_signal_export_any_chat_reads_back_the_same(rows, v1):
    times = sorted(T0.replace(second=0) + timedelta(minutes=m) for _, m, _ in rows)
    text = "".join(md_message(t, n, x, v1=v1) for t, (n, _, x) in zip(times, rows, strict=True))
    (conv,) = read(SIG, "Ann/chat.md", text)
    assert triples(conv) == [(n, t.isoformat(), x) for t, (n, _, x) in zip(times, rows, strict=True)]


# ---------------------------------------------------------------- Signal: sigtop text
#
# Rendered as sigtop writes it, cmd/sigtop/fmt_text.go: textWriteMessages ("Conversation: " + the detailed
# name, a blank line), textWriteMessage (From/Type/Sent/Received/Attachment/Reaction fields, the quote as a
# blank line + "> "-prefixed fields and body, the body as a blank line + its lines, "Edited: N versions" + the
# versions "| "-prefixed and parted by "|", a blank line after each message), times as
# "Mon, 2 Jan 2006 15:04:05 -0700".


def top_time(t: datetime) -> str:
    return f"{t:%a}, {t.day} {t:%b %Y %H:%M:%S} +0100"


def top_body(prefix: str, text: str) -> list[str]:
    if not text:
        return []
    sep = prefix + " " if prefix else ""
    return [prefix] + [sep + line for line in text.split("\n")]


def top_message(t, name, text="", kind=None, files=(), reactions=(), quote=None, versions=None):
    outgoing = name == "You"
    out = [
        "From: You" if outgoing else f"From: {name} (+15551234567)",
        f"Type: {kind or ('outgoing' if outgoing else 'incoming')}",
    ]
    out.append(f"Sent: {top_time(t)}")
    if not outgoing:
        out.append(f"Received: {top_time(t + timedelta(seconds=2))}")
    out += [f"Attachment: {f} (image/jpeg, 1234 bytes)" for f in files]
    out += [f"Reaction: {e} from {who}" for e, who in reactions]
    if versions:
        out += [f"Edited: {len(versions)} versions", ""]
        for i, v in enumerate(versions):
            out += [f"| Version: {len(versions) - i}", f"| Sent: {top_time(t)}", *top_body("|", v)]
            out += ["|"] if i + 1 < len(versions) else []
    else:
        if quote:
            out += ["", "> From: You", f"> Sent: {top_time(t)}", *top_body(">", quote)]
        out += top_body("", text)
    return "\n".join(out) + "\n\n"


def test_sigtop_text_parses_back_with_edits_quotes_reactions_and_system_messages():
    t = [datetime(2024, 1, 15, 10, 30, 5) + timedelta(minutes=i) for i in range(6)]
    text = "Conversation: Ann Lee (+15551234567)\n\n" + "".join([
        top_message(t[0], "You", "Hello\n\nthere", reactions=[("👍", "Ann Lee (+15551234567)")]),
        top_message(t[1], "Ann Lee", "Hi!", quote="Hello\n\nthere"),
        top_message(t[2], "Ann Lee", files=["IMG_1.jpg"]),
        top_message(t[3], "You", versions=["the plan", "teh plan"]),
        top_message(t[4], "Ann Lee", kind="group-v2-change"),
        top_message(t[5], "Ann Lee", "caption", files=["IMG_2.jpg"]),
    ])  # fmt: skip
    src = Source("sigtop/Ann Lee.txt", text.encode())
    assert SIG.sniff(src)
    (conv,) = SIG.read(src, KEEP)
    iso = [x.isoformat() for x in t]
    assert triples(conv) == [("You", iso[0], "Hello\n\nthere"), ("Ann Lee", iso[1], "Hi!"),
                             ("Ann Lee", iso[2], "<media>"), ("You", iso[3], "the plan"),
                             ("Ann Lee", iso[5], "caption")]  # fmt: skip
    assert [s["kind"] for s in conv.meta["system"]] == ["reaction", "group-v2-change"]
    meta = conv.meta
    assert (meta["chat"], meta["self"], meta["utc_offsets"], meta["edited"], meta["replies"]) == (
        "Ann Lee", "You", ["+01:00"], 1, 1)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["You", "Ann Lee", "Bob"]), st.integers(0, 10**7), _TEXT), min_size=1,
                max_size=8))  # fmt: skip
def test_sigtop_any_chat_reads_back_the_same(rows):
    times = sorted(T0 + timedelta(seconds=s) for _, s, _ in rows)
    text = "Conversation: Group\n\n" + "".join(
        top_message(t, n, x) for t, (n, _, x) in zip(times, rows, strict=True)
    )
    (conv,) = read(SIG, "Group.txt", text)
    assert triples(conv) == [(n, t.isoformat(), x) for t, (n, _, x) in zip(times, rows, strict=True)]


# ---------------------------------------------------------------- damaged files, sniffing


def test_damaged_blocks_are_problems_naming_file_and_line_and_the_rest_is_kept():
    good = im_message({"time": T0, "name": "Ann", "parts": ["hi"]}, "tapbacks")
    bad = good.replace("May 17, 2022", "Feb 30, 2022")
    problem, conv = read(IM, "a.txt", good + bad + good)
    assert problem.where == "a.txt:5" and "Feb 30, 2022" in problem.reason and len(conv.messages) == 2
    md = md_message(T0, "Ann", "hi")
    problem, conv = read(SIG, "Ann/chat.md", md + md.replace("2022-05-17", "2022-02-30") + "stray\n" + md)
    assert (
        problem.where == "Ann/chat.md:3" and len(conv.messages) == 2
    )  # the stray line stays with its message
    top = top_message(T0, "Ann", "hi")
    problem, conv = read(
        SIG, "g.txt", "Conversation: Ann\n\n" + top + top.replace("May 2022", "Mai 2022") + top
    )
    assert problem.where == "g.txt:10" and len(conv.messages) == 2
    (problem, conv) = read(IM, "only.txt", im_announcement(T0, "You left the conversation."))
    assert problem.where == "only.txt:1" and "no messages" in problem.reason and conv.messages == []


def test_a_batch_with_a_damaged_file_keeps_the_others(tmp_path):
    from ownlm.cli import main

    (tmp_path / "in" / "Ann").mkdir(parents=True)
    text, expected, _ = im_chat("tapbacks")
    (tmp_path / "in" / "Trip - 12.txt").write_text(text)
    (tmp_path / "in" / "Ann" / "chat.md").write_text(md_message(T0, "Ann", "hi") + md_message(T0, "Me", "yo"))
    # signal-export's copies of the same chat beside chat.md: JSON lines and a web page
    (tmp_path / "in" / "Ann" / "data.json").write_text('{"body": "hi"}\n{"body": "yo"}\n')
    (tmp_path / "in" / "Ann" / "index.html").write_text(
        "<html><body><p>Ann: hi</p><p>Me: yo</p></body></html>"
    )
    (tmp_path / "in" / "Bob.txt").write_text(
        im_time(T0) + "\nBob\nhi\n\n" + "Feb 31, 2022  1:00:00 PM\nBob\nx\n\n"
    )
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(tmp_path / "in"), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert sorted((r["meta"]["format"], len(r["messages"])) for r in records) == [
        ("imessage", 1), ("imessage", len(expected)), ("signal-export", 2)]  # fmt: skip
    summary = json.loads((tmp_path / "out.summary.json").read_text("utf-8"))
    assert [e["file"] for e in summary["errors"]] == [f"{(tmp_path / 'in' / 'Bob.txt').as_posix()}:5"]
    copies = [n for n in summary["notes"] if "signal-export's copy" in n["note"]]
    assert {Path(n["file"]).name for n in copies} == {"data.json", "index.html"} and not summary["skipped"][
        "files"
    ]
    # the same export zipped: the copies are left out of the archive too
    import zipfile

    with zipfile.ZipFile(tmp_path / "signal.zip", "w") as zf:
        for f in ("chat.md", "data.json", "index.html"):
            zf.write(tmp_path / "in" / "Ann" / f, f"Ann/{f}")
    zipped = tmp_path / "zipped.jsonl"
    assert main(["extract", str(tmp_path / "signal.zip"), "--out", str(zipped)]) == 0
    records = [json.loads(line) for line in zipped.read_text("utf-8").splitlines()]
    assert [(r["meta"]["format"], len(r["messages"])) for r in records] == [("signal-export", 2)]
    notes = json.loads((tmp_path / "zipped.summary.json").read_text("utf-8"))["notes"]
    assert sorted(n["file"].rpartition("/")[2] for n in notes if "signal-export's copy" in n["note"]) == [
        "data.json", "index.html"]  # fmt: skip


def test_each_export_goes_to_its_own_reader_and_others_are_left_alone():
    readers = load_readers()
    top = "Conversation: Ann\n\n" + top_message(T0, "Ann", "hi")
    cases = {
        "Trip.txt": (im_chat("templates")[0], "imessage"),
        "Ann/chat.md": (md_message(T0, "Ann", "hi"), "signal"),
        "Ann.txt": (top, "signal"),
        "WhatsApp Chat with Ann.txt": ("20/01/24, 09:05 - Ann: Hi\n", "whatsapp"),
        "_chat.txt": ("[16/03/2022, 15:20:25] Ann: Hi\n", "whatsapp"),
        "notes.md": ("# Notes\n\n[2024-01-15 10:30] was a meeting\n", "text"),
        "notes.txt": ("May 17, 2022  5:29:42 PM\n\nthe day we met\n", "text"),
        "log.txt": ("Conversation: with the landlord\n\nFrom: me\nabout the rent\n", "text"),
        "readme.md": ("[2024-01-15 10:30:05] Me: written by hand?\n", "text"),  # one line, not chat.md
        "log.md": ("[2024-01-15 10:30] Ann: hi\n\n[2024-01-15 10:31] Me: yo\n", "signal"),  # two: a chat
        "diary.txt": ("Jan 05, 2023  9:03:07 AM\nWoke up early today.\nThen coffee.\n", "text"),
        "one.txt": ("Jan 05, 2023  9:03:07 AM\n+15551234567\nhi\n", "imessage"),
    }
    for name, (text, reader) in cases.items():
        assert pick_reader(Source(name, text.encode()), readers).name == reader, name


def test_a_file_that_looks_like_an_export_but_holds_no_blocks_is_a_reader_error():
    for reader, name, text in [
        (IM, "x.txt", "hello\n"),
        (SIG, "x.md", "hello\n"),
        (SIG, "x.txt", "Conversation: A\n\nhi\n"),
    ]:
        try:
            list(reader.read(Source(name, text.encode()), ExtractOptions()))
        except ReaderError as e:
            assert "expected" in str(e)
        else:
            raise AssertionError(name)
    assert not any(isinstance(r, Problem) for r in read(SIG, "Ann/chat.md", md_message(T0, "Ann", "`code`")))
