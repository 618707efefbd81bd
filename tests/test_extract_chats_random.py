"""Chat-export readers on random input: chats rendered into each export format and read back (WhatsApp
in eight locale styles, Telegram in both export shapes), and fuzzing: nothing but ``ReaderError`` escapes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ownlm.extract.base import ExtractOptions, Problem, ReaderError, Source
from ownlm.extract.telegram import TelegramReader, flatten_text
from ownlm.extract.whatsapp import WhatsAppReader, match_header

WA, TG = WhatsAppReader(), TelegramReader()
KEEP = ExtractOptions(drop_system=False)


def read_bytes(reader, data: str, name: str = "chat.txt", opts: ExtractOptions | None = None):
    return list(reader.read(Source(name, data.encode("utf-8", "surrogatepass")), opts or ExtractOptions()))


def triples(conv):
    return [(m.name, m.time, m.text) for m in conv.messages]


def _h12(t: datetime) -> tuple[int, bool]:
    return (t.hour % 12 or 12), t.hour >= 12


FORMATS = {  # name -> (render header, shows seconds)
    "android_dmy_24": (lambda t: f"{t:%d/%m/%y, %H:%M} - ", False),
    "android_us_12": (
        lambda t: f"{t.month}/{t.day}/{t:%y}, {_h12(t)[0]}:{t:%M}\u202f{'PM' if _h12(t)[1] else 'AM'} - ",
        False,
    ),
    "ios_dmy_24": (lambda t: f"\u200e[{t:%d/%m/%Y, %H:%M:%S}] ", True),
    "ios_us_12": (
        lambda t: f"[{t.month}/{t.day}/{t:%y}, {_h12(t)[0]}:{t:%M:%S}\u202f{'PM' if _h12(t)[1] else 'AM'}] ",
        True,
    ),
    "german": (lambda t: f"{t:%d.%m.%y, %H:%M} - ", False),
    "spanish_12": (
        lambda t: f"{t.day}/{t.month}/{t:%y}, {_h12(t)[0]}:{t:%M} {'p. m.' if _h12(t)[1] else 'a. m.'} - ",
        False,
    ),
    "swedish": (lambda t: f"{t:%Y-%m-%d %H:%M} - ", False),
    "korean": (
        lambda t: f"{t.year}. {t.month}. {t.day}. {'오후' if _h12(t)[1] else '오전'} {_h12(t)[0]}:{t:%M} - ",
        False,
    ),
}

_name = st.text(st.sampled_from(list("AaBbZz019 ._-'()+~éßøЖж李😀")), min_size=1, max_size=16).filter(
    lambda s: s == s.strip() and not s.endswith(":")
)
_line = st.text(st.sampled_from(list("abcXYZ 0189.,!?:-/()éж李😀\t")), min_size=0, max_size=30)
_text = (
    st.lists(_line, min_size=1, max_size=3).map("\n".join).filter(lambda s: s.strip() and s.strip() != "null")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    start=st.datetimes(datetime(2010, 1, 13), datetime(2030, 12, 13)).map(lambda t: t.replace(microsecond=0)),
    steps=st.lists(st.integers(0, 40 * 86400), min_size=1, max_size=12),
    people=st.lists(_name, min_size=1, max_size=3, unique=True),
    texts=st.lists(_text, min_size=12, max_size=12),
    data=st.data(),
)
def test_random_chats_round_trip_in_every_format(fmt, start, steps, people, texts, data):
    render, seconds = FORMATS[fmt]
    start = start.replace(day=13 + start.day % 16)  # one day > 12: the whole file decides the date order
    times = [start]
    for s in steps[1:]:
        times.append(times[-1] + timedelta(seconds=s))
    lines, want = [], []
    for i, t in enumerate(times):
        name = data.draw(st.sampled_from(people))
        text = texts[i].strip()
        assume(not any(match_header(part) for part in text.split("\n")[1:]))
        lines.append(f"{render(t)}{name}: {text}")
        shown = t if seconds else t.replace(second=0)
        want.append((name, shown.isoformat(), text))
    (conv,) = read_bytes(WA, "\n".join(lines) + "\n")
    assert triples(conv) == want


@settings(max_examples=40, deadline=None)
@given(
    msgs=st.lists(st.tuples(_name, _text, st.integers(0, 2)), min_size=1, max_size=8),
    full=st.booleans(),
)
def test_random_telegram_exports_round_trip(msgs, full):
    out, want = [], []
    for i, (name, text, split) in enumerate(msgs):
        t = (datetime(2023, 5, 1) + timedelta(minutes=7 * i)).isoformat()
        cut = len(text) // 2
        body = (
            text
            if split == 0
            else [text[:cut], {"type": "bold" if split == 1 else "link", "text": text[cut:]}]
        )
        out.append({"id": i, "type": "message", "date": t, "date_unixtime": "0", "from": name, "text": body})
        want.append((name, t, text))
    chat = {"name": "c", "type": "personal_chat", "id": 1, "messages": out}
    export = {
        "about": "Here is the data you requested.",
        "personal_information": {},
        "chats": {"list": [chat]},
    }
    data = json.dumps(export if full else chat, ensure_ascii=False, indent=1).encode()
    src = Source("result.json", data)
    assert TG.sniff(src)
    (conv,) = TG.read(src, ExtractOptions())
    assert triples(conv) == want
    assert flatten_text(out[0]["text"]) == want[0][2]


_junk_line = st.one_of(
    st.sampled_from(["31/01/24, 10:00 - A: x", "[1/2/24, 9:05:00\u202fPM] B: y", "13.13.13, 99:99 - C: z",
                     "2024/02/30, 10:00 - D: w", "\u200e", "", "A: b", "12/31/24, 10:00 - E: v"]),
    st.text(max_size=20),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(_junk_line, min_size=1, max_size=8))
def test_whatsapp_never_fails_other_than_with_a_reader_error(lines):
    src = Source("chat.txt", "\n".join(lines).encode("utf-8", "surrogatepass"))
    WA.sniff(src)
    try:
        items = list(WA.read(src, KEEP))
    except ReaderError:
        return
    *problems, conv = items
    assert all(isinstance(p, Problem) for p in problems) and conv.meta["format"] == "whatsapp"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["messages", "chats", "list", "type", "date", "date_unixtime", "from", "text", "photo"]),
        inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(doc=_json)
def test_telegram_never_fails_other_than_with_a_reader_error(doc):
    try:
        items = read_bytes(TG, json.dumps(doc), name="result.json")
    except ReaderError:
        return
    assert all(isinstance(i, Problem) or i.meta["format"] == "telegram" for i in items)
