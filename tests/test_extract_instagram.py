"""Instagram / Messenger JSON reader: parity with chat-miner's target, Meta's text encoding, order, media."""

from __future__ import annotations

import json

import pytest

from ownlm.extract.base import ExtractOptions, Problem, ReaderError, Source
from ownlm.extract.instagram import InstagramReader, fix_meta_text

IG = InstagramReader()


def read(doc, opts: ExtractOptions | None = None, name: str = "message_1.json"):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return list(IG.read(Source(name, data), opts or ExtractOptions()))


def test_matches_chat_miner_target(shared_data):
    folder = shared_data / "chats/chat-miner/instagram"
    src = Source("test_export.json", (folder / "test_export.json").read_bytes())
    assert IG.sniff(src)
    (conv,) = IG.read(src, ExtractOptions())
    target = json.loads((folder / "target.json").read_text("utf-8"))
    want = sorted((t["timestamp"], t["author"], t["message"]) for t in target)  # we read oldest first
    assert [(m.time, m.name, m.text) for m in conv.messages] == want
    assert conv.meta["time_zone"] == "UTC"


def test_meta_encoding_order_media_reactions():
    moj = "Caf\u00c3\u00a9 \u00f0\u009f\u0098\u0081"  # how Meta writes "Café 😁"
    doc = {
        "participants": [{"name": "Ann"}, {"name": "Bj\u00c3\u00b6rn"}],
        "title": "Bj\u00c3\u00b6rn",
        "messages": [
            {"sender_name": "Bj\u00c3\u00b6rn", "timestamp_ms": 1700000300000, "content": "Liked a message"},
            {"sender_name": "Ann", "timestamp_ms": 1700000200000, "photos": [{"uri": "p.jpg"}]},
            {"sender_name": "Bj\u00c3\u00b6rn", "timestamp_ms": 1700000100000, "content": moj},
            {"sender_name": "Ann", "timestamp_ms": 1700000000000, "content": "caf\u00e9 typed right"},
            {"sender_name": "Ann", "timestamp_ms": "soon", "content": "no time"},
        ],
    }
    problem, conv = read(doc, ExtractOptions(drop_system=False))
    assert isinstance(problem, Problem) and problem.where == "message_1.json: message 4"
    assert [(m.name, m.time, m.text) for m in conv.messages] == [
        ("Ann", "2023-11-14T22:13:20", "café typed right"),
        ("Björn", "2023-11-14T22:15:00", "Café 😁"),
        ("Ann", "2023-11-14T22:16:40", "<media>"),
    ]
    assert conv.meta["chat"] == "Björn" and conv.meta["system"][0]["text"] == "Liked a message"
    assert fix_meta_text("plain ascii") == "plain ascii"


@pytest.mark.parametrize(
    "name, data",
    [
        ("result.json", '{"messages": [{"type": "message", "date": "2024-01-01T00:00:00", "from": "A"}]}'),
        ("chat.json", '{"messages": [{"role": "user", "content": "hi"}]}'),
        ("message_1.txt", '{"messages": [{"sender_name": "A", "timestamp_ms": 1}]}'),
    ],
)
def test_sniff_rejects_other_json(name, data):
    assert not IG.sniff(Source(name, data.encode()))


def test_broken_file_is_a_reader_error():
    with pytest.raises(ReaderError, match="not valid JSON"):
        read(b'{"messages": [{"sender_name": ')
    with pytest.raises(ReaderError, match="'messages' list"):
        read({"messages": {}})
