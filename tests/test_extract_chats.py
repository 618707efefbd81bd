"""Chat-export readers: parity with real parsers' expected results, hand-counted fixtures, locales,
system lines, invisible marks, bad input, and the CLI path (random chats: test_extract_chats_random.py)."""

from __future__ import annotations

import json

import pytest

from ownlm.extract.base import ExtractOptions, Message, Problem, ReaderError, Source, pick_reader
from ownlm.extract.instagram import InstagramReader
from ownlm.extract.telegram import TelegramReader
from ownlm.extract.whatsapp import WhatsAppReader

WA, TG = WhatsAppReader(), TelegramReader()
KEEP = ExtractOptions(drop_system=False)


def read_bytes(reader, data: bytes | str, name: str = "chat.txt", opts: ExtractOptions | None = None):
    data = data.encode() if isinstance(data, str) else data
    return list(reader.read(Source(name, data), opts or ExtractOptions()))


def read_file(path, opts: ExtractOptions | None = None):
    src = Source(str(path), path.read_bytes())
    reader = pick_reader(src, [WA, TG])
    assert reader is not None, f"{path} not recognised"
    return list(reader.read(src, opts or ExtractOptions()))


def triples(conv, newline=None):
    return [
        (m.name, m.time, m.text if newline is None else m.text.replace("\n", newline)) for m in conv.messages
    ]


def target_triples(path):
    return [(t["author"], t["timestamp"], t["message"]) for t in json.loads(path.read_text("utf-8"))]


# ---------------------------------------------------------------- parity with chat-miner's targets


@pytest.mark.parametrize(
    "name",
    ["ddmmyy_24hrs", "mmddyy_24hrs", "mmddyyyy_12hrs", "yyyymmdd_24hrs", "bracketed_mmddyy_24hrs"],
)
def test_whatsapp_matches_chat_miner_target(shared_data, name):
    folder = shared_data / "chats/chat-miner/whatsapp"
    (conv,) = read_file(folder / f"test_{name}.txt")
    # chat-miner lists newest first and joins continuation lines with a space; we keep the newline.
    assert triples(conv, newline=" ") == target_triples(folder / "target.json")[::-1]
    assert "\n" in conv.messages[1].text  # the multi-line message kept its line break


def test_signal_text_export_reads_like_whatsapp_and_matches_target(shared_data):
    folder = shared_data / "chats/chat-miner/signal"
    (conv,) = read_file(folder / "test_export.txt")
    assert triples(conv, newline=" ") == target_triples(folder / "target.json")[::-1]


@pytest.mark.parametrize("name", ["test_single_export.json", "test_batch_export.json"])
def test_telegram_matches_chat_miner_target(shared_data, name):
    folder = shared_data / "chats/chat-miner/telegram"
    (conv,) = read_file(folder / name)
    target = target_triples(folder / "target.json")
    assert [(n, t) for n, t, _ in triples(conv)] == [(n, t) for n, t, _ in target]
    # Entity lists are concatenated exactly (Telegram's semantics: plain text between entities comes as
    # strings); chat-miner joins them with spaces, so "Link:" + link differs from its target by one space.
    got, want = [m for _, _, m in triples(conv)], [m for _, _, m in target]
    assert got[0] == want[0]
    assert got[1] == "Link:https://telegram.org/" and want[1] == "Link: https://telegram.org/"


# ---------------------------------------------------------------- other fixtures, counted by hand

# sodascience: the same 10-line chat in 7 locales/platforms: 1 encryption notice + 9 messages.
SODA = ["_chat.txt"] + [f"_chat_file{i}.txt" for i in range(1, 7)]
SODA_NAMES = [f"person{i}" for i in "123214124"]


@pytest.mark.parametrize("name", SODA)
def test_sodascience_exports_parse_without_loss(shared_data, name):
    (conv,) = read_file(shared_data / "chats/sodascience" / name)
    assert [m.name for m in conv.messages] == SODA_NAMES
    assert conv.meta["system_dropped"] == 1
    seconds = name not in ("_chat_file3.txt", "_chat_file4.txt")  # Android exports have no seconds
    assert conv.messages[0].time == ("2022-03-16T15:20:25" if seconds else "2022-03-16T15:20:00")
    assert conv.messages[5].time == ("2022-03-20T20:08:51" if seconds else "2022-03-20T20:08:00")  # LRM line
    assert conv.messages[-1].time.startswith("2020-07-14T22:05")
    assert conv.messages[4].text == "<location>"  # "Location: https://maps.google.com/?q=...", any language
    assert conv.messages[-1].text == "👍Bedankt"
    hi = "Hi shiva!" if name in ("_chat.txt", "_chat_file1.txt") else "Hi \n\nshiva!"
    assert conv.messages[0].text == hi  # blank line inside a multi-line message kept


def test_sodascience_system_line_kept_as_meta(shared_data):
    (conv,) = read_file(shared_data / "chats/sodascience/_chat_file5.txt", KEEP)
    (sys_line,) = conv.meta["system"]
    assert sys_line["time"] == "2022-03-16T15:10:17" and sys_line["text"].startswith(
        "Messages and calls are end-to-end"
    )
    assert len(conv.messages) == 9


def test_mixed_android_and_ios_lines_each_get_their_own_date_order(shared_data):
    path = shared_data / "chats/whatsapp-chat-parser-rb/sample_mixed_android12h_ios.txt"
    (conv,) = read_file(path, KEEP)
    # The Ruby parser's spec: 7 entries, the last 2 system lines; 12/15/25 (US) and 15/12/2025 (iOS) are both 15 Dec.
    assert [m.name for m in conv.messages] == ["John Doe", "Jane Smith", "Alice", "Bob", "Charlie"]
    assert [s["text"] for s in conv.meta["system"]] == [
        "Note System message on Android.",
        "Note System message on iOS.",
    ]
    assert [m.time for m in conv.messages] == [
        f"2025-12-15T10:3{i}:{s}" for i, s in enumerate("00 00 03 00 00".split())
    ]
    assert (
        conv.messages[1].text
        == "Hi John! This is another Android message.\nIt has multiple lines\nto test grouping."
    )
    assert sorted(conv.meta["date_order"]) == ["day-first", "month-first"]


def test_telegram_full_export_with_two_chats(shared_data):
    convs = read_file(shared_data / "chats/telegram_misc/Mehrdad-esn_test_data_result.json")
    assert [c.meta["chat"] for c in convs] == ["Test Chat", "دوستان"]
    assert [len(c.messages) for c in convs] == [5, 2]
    assert convs[0].messages[1] == Message("محمد", "2024-01-15T10:31:00", "سلام! چطور می\u200cتونم کمکت کنم؟")
    assert convs[0].meta["time_zone"] == "local"  # Telegram's own local "date" is used as is


def test_sniffing_is_precise_on_every_shared_file(shared_data):
    readers = [WA, TG, InstagramReader()]
    taken = {}
    for p in shared_data.rglob("*"):
        if p.is_file() and (r := pick_reader(Source(str(p), p.read_bytes()), readers)):
            taken[p.relative_to(shared_data / "chats").as_posix()] = r.name
    assert taken == {
        **{f"chat-miner/whatsapp/test_{n}.txt": "whatsapp" for n in ("ddmmyy_24hrs", "mmddyy_24hrs",
           "mmddyyyy_12hrs", "yyyymmdd_24hrs", "bracketed_mmddyy_24hrs")},
        **{f"sodascience/{n}": "whatsapp" for n in SODA},
        "whatsapp-chat-parser-rb/sample_mixed_android12h_ios.txt": "whatsapp",
        "chat-miner/signal/test_export.txt": "whatsapp",  # Signal's text export has WhatsApp's shape
        "chat-miner/telegram/test_single_export.json": "telegram",
        "chat-miner/telegram/test_batch_export.json": "telegram",
        "telegram_misc/Mehrdad-esn_test_data_result.json": "telegram",
        "chat-miner/instagram/test_export.json": "instagram",
        **{f"whatsapp_locales/{n}_{p}.txt": "whatsapp" for n, p in [("english", "android"), ("english", "ios"),
           ("english", "android_media"), ("english", "ios_media"), ("german", "ios"), ("dutch", "android_media"),
           ("russian", "android"), ("russian", "ios")]},
    }  # fmt: skip


# ---------------------------------------------------------------- locales and markers


@pytest.mark.parametrize(
    "line, time",
    [
        ("1/13/24, 9:05\u202fPM - Ann: hi", "2024-01-13T21:05:00"),  # narrow no-break space (new Android US)
        ("\u200e[13/02/2024, 9:05:07\u202fAM] Ann: hi", "2024-02-13T09:05:07"),  # LRM before the bracket
        ("13/2/24, 12:05 a. m. - Ann: hi", "2024-02-13T00:05:00"),  # Spanish, 12 a. m. is midnight
        ("13/2/24, 12:05 p. m. - Ann: hi", "2024-02-13T12:05:00"),
        ("13.02.24, 18:30 - Ann: hi", "2024-02-13T18:30:00"),  # German
        ("2024-02-13 18:30 - Ann: hi", "2024-02-13T18:30:00"),  # Swedish
        ("2024/02/13, 18:30 - Ann: hi", "2024-02-13T18:30:00"),
        ("2024. 2. 13. 오후 6:30 - Ann: hi", "2024-02-13T18:30:00"),  # Korean, marker before the time
        ("[13/02/2024 18:30:00] Ann: hi", "2024-02-13T18:30:00"),
        ("13/02/2024 18.30 - Ann: hi", "2024-02-13T18:30:00"),  # Finnish dot in the time
        ("2/13/24, 6:30:00 PM: Ann: hi", "2024-02-13T18:30:00"),  # old iOS, colon after the time
        ("13/02/2024 à 18:30 - Ann: hi", "2024-02-13T18:30:00"),  # French Android
        ("[13.2.2024 klo 18.30.05] Ann: hi", "2024-02-13T18:30:05"),  # Finnish iOS
        ("١٣\u200f/٢\u200f/٢٠٢٤، ٦:٣٠ م - Ann: hi", "2024-02-13T18:30:00"),  # Arabic digits, RLM, PM
        ("2024/2/13 下午6:30 - Ann: hi", "2024-02-13T18:30:00"),  # Chinese
        ("13-02-2024 18:30 - Ann: hi", "2024-02-13T18:30:00"),  # Dutch
    ],
)
def test_locale_lines(line, time):
    assert WA.sniff(Source("chat.txt", (line + "\n").encode()))
    (conv,) = read_bytes(WA, line + "\n")
    assert triples(conv) == [("Ann", time, "hi")]


def test_placeholders_edits_deletions_and_ios_system_lines():
    chat = "\n".join(
        [
            "[13/02/2024, 10:00:00] Group: \u200eMessages and calls are end-to-end encrypted.",
            "[13/02/2024, 10:00:01] Group: \u200eAnn created group \u201cGroup: weekend\u201d",
            "[13/02/2024, 10:00:02] Ann: \u200eimage omitted",
            "[13/02/2024, 10:00:03] Ann: \u200e<attached: 00000012-PHOTO-2024-02-13.jpg>",
            "[13/02/2024, 10:00:04] Bob: fixed it \u200e<This message was edited>",
            "[13/02/2024, 10:00:05] Bob: \u200eThis message was deleted.",
            "[13/02/2024, 10:00:06] \u202a+49 151 2345678\u202c: who is this?",
            "[13/02/2024, 10:00:07] Bob: <Media omitted>",
        ]
    )
    (conv,) = read_bytes(WA, chat, opts=KEEP)
    assert triples(conv) == [
        ("Ann", "2024-02-13T10:00:02", "<media>"),
        ("Ann", "2024-02-13T10:00:03", "<media>"),
        ("Bob", "2024-02-13T10:00:04", "fixed it"),
        ("+49 151 2345678", "2024-02-13T10:00:06", "who is this?"),
        ("Bob", "2024-02-13T10:00:07", "<media>"),
    ]
    assert [s["line"] for s in conv.meta["system"]] == [1, 2, 6]
    assert conv.meta["media"] == 3
    (dropped,) = read_bytes(WA, chat)
    assert dropped.meta["system_dropped"] == 3 and "system" not in dropped.meta


def test_subject_with_colon_is_a_system_line():
    (conv,) = read_bytes(
        WA, '13/02/24, 10:00 - Ann changed the subject from "a: b" to "c"\n13/02/24, 10:01 - Ann: ok\n'
    )
    assert triples(conv) == [("Ann", "2024-02-13T10:01:00", "ok")]


def test_ambiguous_dates_take_the_order_that_keeps_time_running_forward():
    day_first = "12/01/24, 10:00 - A: x\n01/02/24, 10:00 - B: y\n"  # 12 Jan, 1 Feb (as month-first: Dec, Jan)
    assert [m.time[:10] for m in read_bytes(WA, day_first)[0].messages] == ["2024-01-12", "2024-02-01"]
    month_first = "01/12/24, 10:00 - A: x\n02/01/24, 10:00 - B: y\n"
    assert [m.time[:10] for m in read_bytes(WA, month_first)[0].messages] == ["2024-01-12", "2024-02-01"]


def test_date_order_decided_by_any_line_in_the_file():
    chat = "".join(f"0{i}/0{i}/24, 10:00 - A: {i}\n" for i in range(1, 9)) + "09/25/24, 10:00 - A: late\n"
    conv = read_bytes(WA, chat)[0]
    assert conv.messages[0].time == "2024-01-01T10:00:00" and conv.messages[-1].time == "2024-09-25T10:00:00"
    assert conv.meta["date_order"] == "month-first"


@pytest.mark.parametrize(
    "chat, line, why",
    [
        ("13/01/24, 10:00 - A: x\n14/01/24, 10:00 - A: z\n01/13/24, 10:00 - B: y\n", 3, "not a valid date"),
        ("31/01/24, 10:00 - A: x\n30/02/24, 10:00 - B: y\n", 2, "day is out of range"),  # 30 February
        ("31/01/24, 10:00 - A: x\n31/01/24, 27:00 - B: y\n", 2, "impossible date or time"),  # hour 27
    ],
)
def test_unparseable_lines_are_reported_and_kept_as_text(chat, line, why):
    *problems, conv = read_bytes(WA, chat)
    (problem,) = problems
    assert isinstance(problem, Problem) and problem.where == f"chat.txt:{line}" and why in problem.reason
    assert "expected" in problem.reason
    assert conv.messages[0].time == "2024-01-31T10:00:00" or conv.messages[0].time == "2024-01-13T10:00:00"
    bad = chat.split("\n")[line - 1]
    assert conv.messages[-1].text.endswith("\n" + bad)  # the line is not lost: it stays text


def test_invalid_utf8_is_replaced_or_reported():
    data = b"31/01/24, 10:00 - A: caf\xe9\n"
    (conv,) = read_bytes(WA, data)
    assert conv.messages[0].text == "caf\ufffd"
    with pytest.raises(ReaderError, match="invalid UTF-8 at byte 24"):
        read_bytes(WA, data, opts=ExtractOptions(encoding_errors="strict"))


def test_text_before_the_first_message_is_reported():
    problem, conv = read_bytes(WA, "hello\nworld\n31/01/24, 10:00 - A: x\n")
    assert problem.where == "chat.txt:1" and "2 line(s) of text before the first message" in problem.reason
    assert triples(conv) == [("A", "2024-01-31T10:00:00", "x")]
    with pytest.raises(ReaderError, match="no WhatsApp message lines"):
        read_bytes(WA, "hello\n")


@pytest.mark.parametrize(
    "name, data",
    [
        ("notes.txt", "It was the best of times, it was the worst of times.\n"),
        ("app.txt", "2021-03-04 12:00:01,123 INFO started\n"),
        ("dates.txt", "31/01/24 was a Wednesday.\n31/01/24, 10:00 - A: x\n"),
        ("chat.md", "31/01/24, 10:00 - A: x\n"),  # right content, wrong extension
        ("diary.txt", "01.02.2020 10:00 Meeting with Bob\n02.02.2020 09:30 Call: budget\n"),
        ("system.txt", "13/02/24, 10:00 - You were added\n"),  # only system lines: nothing to read
        ("empty.txt", ""),
        ("data.json", '{"messages": [{"role": "user", "content": "hi"}]}'),  # instruction data, not Telegram
        ("list.json", '[{"type": "message", "date": "2024-01-15T10:30:00", "from": "A"}]'),
        ("result.txt", '{"about": "x", "personal_information": {}}'),
    ],
)
def test_sniff_rejects_files_that_are_not_chat_exports(name, data):
    src = Source(name, data.encode())
    assert not WA.sniff(src) and not TG.sniff(src)


def test_sniff_accepts_a_chat_inside_a_zip_and_crlf_bom():
    assert WA.sniff(Source("WhatsApp Chat - Ann.zip/_chat.txt", "\ufeff31/01/24, 10:00 - A: x\r\n".encode()))
    (conv,) = read_bytes(WA, "\ufeff31/01/24, 10:00 - A: x\r\ny\r\n", name="x/WhatsApp Chat with Ann.txt")
    assert triples(conv) == [("A", "2024-01-31T10:00:00", "x\ny")] and conv.meta["chat"] == "Ann"


# ---------------------------------------------------------------- Telegram specifics


def test_telegram_service_media_and_entities():
    export = {
        "name": "Pals",
        "type": "private_group",
        "id": 7,
        "messages": [
            {
                "id": 1,
                "type": "service",
                "date": "2024-01-01T09:00:00",
                "actor": "Ann",
                "action": "create_group",
                "title": "Pals",
                "members": ["Ann", "Bob"],
            },
            {
                "id": 2,
                "type": "message",
                "date": "2024-01-01T09:01:00",
                "from": "Ann",
                "text": [
                    "See ",
                    {"type": "bold", "text": "this"},
                    ": ",
                    {"type": "link", "text": "https://x.org"},
                ],
            },
            {
                "id": 3,
                "type": "message",
                "date": "2024-01-01T09:02:00",
                "from": "Bob",
                "text": "",
                "photo": "photos/p.jpg",
            },
            {
                "id": 4,
                "type": "message",
                "date": "2024-01-01T09:03:00",
                "from": None,
                "from_id": "user42",
                "text": "hi",
            },
            {
                "id": 5,
                "type": "message",
                "date": "2024-01-01T09:04:00",
                "from": "Bob",
                "text": "",
                "poll": {"question": "?"},
            },
        ],
    }
    (conv,) = read_bytes(TG, json.dumps(export), name="result.json", opts=KEEP)
    assert triples(conv) == [
        ("Ann", "2024-01-01T09:01:00", "See this: https://x.org"),
        ("Bob", "2024-01-01T09:02:00", "<media>"),
        ("user42", "2024-01-01T09:03:00", "hi"),
    ]
    assert conv.meta["system"] == [{"time": "2024-01-01T09:00:00", "text": "Ann create_group Ann, Bob Pals"}]
    assert conv.meta["chat"] == "Pals" and conv.meta["chat_type"] == "private_group"


def test_telegram_message_without_a_date_is_a_problem_and_the_rest_is_kept():
    chat = {"name": "c", "type": "personal_chat", "messages": [
        {"id": 1, "type": "message", "from": "A", "text": "lost"},
        {"id": 2, "type": "message", "date": "2024-01-01T09:00:00", "from": "A", "text": "kept"},
    ]}  # fmt: skip
    problem, conv = read_bytes(TG, json.dumps(chat), name="result.json")
    assert problem.where == "result.json: chat 'c', message 1" and "date" in problem.reason
    assert triples(conv) == [("A", "2024-01-01T09:00:00", "kept")]


def test_telegram_broken_json_is_a_reader_error():
    with pytest.raises(ReaderError, match="not valid JSON"):
        read_bytes(TG, '{"messages": [{"type": "message",', name="result.json")


# ---------------------------------------------------------------- through the CLI


def _records(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_cli_extracts_chats_from_files_and_a_zip(tmp_path):
    import zipfile

    from ownlm.cli import main

    (tmp_path / "in").mkdir()
    chat = "\u200e[13/02/2024, 10:00:00] Ann: hi\n[13/02/2024, 10:01:00] Bob: hello\nthere\n"
    (tmp_path / "in" / "_chat.txt").write_text(chat, "utf-8")
    with zipfile.ZipFile(tmp_path / "in" / "WhatsApp Chat - Ann.zip", "w") as zf:
        zf.writestr("_chat.txt", "13/02/24, 10:00 - Ann: Messages and calls are end-to-end encrypted.\n"
                                 "13/02/24, 10:00 - Messages and calls are end-to-end encrypted.\n"
                                 "13/02/24, 10:02 - Ann: from the zip\n")  # fmt: skip
        zf.writestr("IMG-20240213-WA0001.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    tg = {"name": "T", "type": "personal_chat", "id": 1, "messages": [
        {"id": 1, "type": "message", "date": "2024-02-13T11:00:00", "from": "Cy", "text": "via telegram"}]}  # fmt: skip
    (tmp_path / "in" / "result.json").write_text(json.dumps(tg), "utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(tmp_path / "in"), "--out", str(out)]) == 0
    recs = {r["source"].rsplit("in/", 1)[-1]: r for r in _records(out)}
    assert set(recs) == {"_chat.txt", "WhatsApp Chat - Ann.zip/_chat.txt", "result.json"}
    assert recs["_chat.txt"]["messages"][1] == {
        "name": "Bob",
        "time": "2024-02-13T10:01:00",
        "text": "hello\nthere",
    }
    zipped = recs["WhatsApp Chat - Ann.zip/_chat.txt"]["messages"]
    assert [m["text"] for m in zipped] == ["Messages and calls are end-to-end encrypted.", "from the zip"]
    assert recs["result.json"]["messages"] == [
        {"name": "Cy", "time": "2024-02-13T11:00:00", "text": "via telegram"}
    ]
    assert all(set(r) == {"id", "source", "messages", "meta"} for r in recs.values())

    kept = tmp_path / "kept.jsonl"
    assert (
        main(
            [
                "extract",
                str(tmp_path / "in" / "WhatsApp Chat - Ann.zip"),
                "--out",
                str(kept),
                "--no-drop-system",
            ]
        )
        == 0
    )
    (rec,) = _records(kept)
    assert [s["line"] for s in rec["meta"]["system"]] == [2]
    assert rec["meta"]["chat"] == "Ann"


def test_cli_reports_a_bad_chat_line_and_keeps_the_rest_or_stops_with_strict(tmp_path, capsys):
    from ownlm.cli import main

    src = tmp_path / "chat.txt"
    src.write_text("31/01/24, 10:00 - A: x\n30/02/24, 10:00 - B: y\n31/01/24, 10:05 - B: z\n", "utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(src), "--out", str(out)]) == 0
    (rec,) = _records(out)
    assert [m["text"] for m in rec["messages"]] == ["x\n30/02/24, 10:00 - B: y", "z"]
    summary = json.loads((tmp_path / "out.summary.json").read_text("utf-8"))
    assert [e["file"] for e in summary["errors"]] == [f"{src.as_posix()}:2"]

    strict = tmp_path / "strict.jsonl"
    assert main(["extract", str(src), "--out", str(strict), "--strict"]) == 2
    assert "chat.txt:2" in capsys.readouterr().err
    assert not strict.exists()
