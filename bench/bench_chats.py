"""Chat parsing accuracy on the shared chat fixtures, and reading throughput on a synthetic export.

For each chat fixture (WhatsApp, Signal text, Telegram, Instagram): messages present (from the
reference), messages parsed, and how many senders, timestamps and texts are exactly right, position by
position. References:
- chat-miner's ``target.json`` beside its files, in time order (texts compared with line breaks as
  spaces, as it joins them);
- the Ruby parser's spec for its mixed file (7 entries: 5 messages + 2 system lines);
- a hand-written list for the sodascience exports (the same 9 messages in 7 locales);
- the raw JSON fields for the Telegram full export.

    python bench/bench_chats.py                 # table on ../shared/data/chats
    python bench/bench_chats.py --markdown      # the same as a Markdown table
    python bench/bench_chats.py --throughput-mb 20

Also: the WhatsApp locale exports (../shared/data/chats/whatsapp_locales) against their English twins
(the same chat, so the same messages; times to the minute), one chat written as iPhones set to 10 other
languages and 2 calendars export it and a Czech Android export (``tests/chat_twins.py``), each against its
English twin with message and media counts, and a generated set of every WhatsApp header format (4 date
orders, 2- and 4-digit years, 12/24 h, with and without seconds, Android dashes and iOS brackets, date or
time first): 40 messages over four months each, every time must come back.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from ownlm.extract.base import ExtractOptions, ReaderError, Source, pick_reader
from ownlm.extract.instagram import InstagramReader
from ownlm.extract.telegram import TelegramReader
from ownlm.extract.whatsapp import WhatsAppReader

READERS = [WhatsAppReader(), TelegramReader(), InstagramReader()]
sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the twin fixtures live with the tests
SODA_NAMES = [f"person{i}" for i in "123214124"]
SODA_TIMES = ["16/03/2022 15:20:25", "16/03/2022 15:25:38", "16/03/2022 15:26:48", "16/03/2022 18:39:29",
              "16/03/2022 18:35:51", "20/03/2022 20:08:51", "24/03/2022 20:19:38", "26/03/2022 18:52:15",
              "14/07/2020 22:05:54"]  # fmt: skip
SODA_TEXTS = ["Hi shiva!", "Hi 👋", "Hoi!", "https://youtu.be/KBmUTY6mK_E",
              "<location>",
              "I’m about to generate some very random messages so that I can make some screenshots for the "
              "explanation to participants",
              "@user3 if you remove your Profile picture for a moment I will redo the screenshots 😁",
              "Well done Utrecht 😁", "👍Bedankt"]  # fmt: skip
RB = [("John Doe", "10:30:00"), ("Jane Smith", "10:31:00"), ("Alice", "10:32:03"), ("Bob", "10:33:00"),
      ("Charlie", "10:34:00"), (None, "10:35:00"), (None, "10:36:00")]  # fmt: skip


def references(chats: Path) -> dict[Path, list[tuple]]:
    """File -> expected (name, time, text-or-None) in file order."""
    refs: dict[Path, list[tuple]] = {}
    for folder in ("whatsapp", "signal", "telegram", "instagram"):
        target = chats / "chat-miner" / folder / "target.json"
        want = [(t["author"], t["timestamp"], t["message"]) for t in json.loads(target.read_text("utf-8"))]
        if folder != "telegram":  # chat-miner keeps these newest first; ownlm reads a chat forwards
            want = sorted(want, key=lambda w: w[1])
        for f in sorted(target.parent.iterdir()):
            if f.name.startswith("test_"):
                refs[f] = want
    for f in sorted((chats / "sodascience").glob("*.txt")):
        if f.name != "SOURCE.txt":
            no_seconds = f.name in ("_chat_file3.txt", "_chat_file4.txt")
            times = [datetime.strptime(t, "%d/%m/%Y %H:%M:%S") for t in SODA_TIMES]
            times = [t.replace(second=0) if no_seconds else t for t in times]
            texts = list(SODA_TEXTS)
            if f.name not in ("_chat.txt", "_chat_file1.txt"):
                texts[0] = "Hi \n\nshiva!"  # these exports have the message on three lines
            refs[f] = [(n, t.isoformat(), x) for n, t, x in zip(SODA_NAMES, times, texts)]
    rb = chats / "whatsapp-chat-parser-rb" / "sample_mixed_android12h_ios.txt"
    refs[rb] = [(n, f"2025-12-15T{t}", None) for n, t in RB]
    tg = chats / "telegram_misc" / "Mehrdad-esn_test_data_result.json"
    raw = json.loads(tg.read_text("utf-8"))
    refs[tg] = [(m["from"], m["date"], m["text"]) for c in raw["chats"]["list"] for m in c["messages"]]
    return refs


def parsed(path: Path) -> list[tuple]:
    src = Source(str(path), path.read_bytes())
    reader = pick_reader(src, READERS)
    if reader is None:
        return []
    out = []
    for conv in reader.read(src, ExtractOptions(drop_system=False)):
        rows = [(m.name, m.time, m.text, 0) for m in conv.messages]
        rows += [(None, s["time"], s["text"], s.get("line", 0)) for s in conv.meta.get("system", [])]
        out.extend(rows)
    return out


def score(path: Path, want: list[tuple]) -> dict:
    got = parsed(path)
    if any(n is None for n, *_ in want):  # the reference counts system lines: merge them back in
        got = sorted(got, key=lambda r: r[1])  # by time (that file's entries have distinct, rising times)
    else:
        got = [r for r in got if r[0] is not None]
    pairs = list(zip(got, want))
    return {
        "present": len(want),
        "parsed": len(got),
        "senders": sum(g[0] == w[0] for g, w in pairs),
        "times": sum(g[1] == w[1] for g, w in pairs),
        "texts": sum(w[2] is None or g[2].replace("\n", " ") == w[2].replace("\n", " ") for g, w in pairs),
    }


TWINS = [("german_ios.txt", "english_ios.txt"), ("russian_ios.txt", "english_ios.txt"),
         ("russian_android.txt", "english_android.txt"), ("english_ios_media.txt", "english_ios.txt")]  # fmt: skip


def _whatsapp(name: str, data: bytes) -> tuple[list[tuple], int]:
    """(messages as (name, time, text), media count) of one WhatsApp export; ([], 0) when unreadable."""
    try:
        items = list(WhatsAppReader().read(Source(name, data), ExtractOptions()))
    except ReaderError:
        return [], 0
    conv = items[-1]
    return [(m.name, m.time, m.text) for m in conv.messages], conv.meta.get("media", 0)


def _twin_row(got: tuple[list, int], want: tuple[list, int], minutes: bool) -> dict:
    """Counts of one export against its English twin: messages, media, and exact senders/times/texts."""
    (got, got_media), (want, want_media) = got, want
    pairs = list(zip(got, want))
    cut = 16 if minutes else 19
    return {
        "present": len(want), "parsed": len(got), "senders": sum(g[0] == w[0] for g, w in pairs),
        "times": sum(g[1][:cut] == w[1][:cut] for g, w in pairs), "texts": sum(g[2] == w[2] for g, w in pairs),
        "media": got_media, "media_want": want_media,
    }  # fmt: skip


def locale_twins(chats: Path) -> list[tuple[str, dict]]:
    """Each locale export scored against its English twin (senders, minutes, normalised texts, media)."""
    rows = []
    for name, twin in TWINS:
        got, want = (_whatsapp(n, (chats / "whatsapp_locales" / n).read_bytes()) for n in (name, twin))
        rows.append((f"whatsapp_locales/{name} vs {twin}", _twin_row(got, want, minutes=True)))
    return rows


def _parsed_text(name: str, data: str) -> tuple[list[tuple], int]:
    return _whatsapp(name, data.encode())


def written_twins() -> list[tuple[str, dict]]:
    """The chat of ``tests/chat_twins.py`` as iPhones in 10 languages and 2 calendars export it, and a Czech
    Android export, each against the English export of the same chat (times to the second)."""
    import chat_twins as tw

    rows = []
    want = _parsed_text("en.txt", tw.ios_chat("en"))
    for lang in [lang for lang in tw.IOS if lang != "en"]:
        got = _parsed_text(f"{lang}.txt", tw.ios_chat(lang))
        rows.append((f"written: iOS {lang} vs en", _twin_row(got, want, minutes=False)))
    got = _parsed_text("en-media.txt", tw.ios_chat("en", attached=True))
    rows.append(("written: iOS en with media files vs en", _twin_row(got, want, minutes=False)))
    want = _parsed_text("en-android.txt", tw.android_chat(tw.EN_ANDROID, czech_dates=False))
    got = _parsed_text("cs-android.txt", tw.android_chat(tw.CS_ANDROID, czech_dates=True))
    rows.append(("written: Android cs vs en", _twin_row(got, want, minutes=False)))
    return rows


def header_formats() -> list[tuple[str, callable]]:
    """Every header shape: (label, render(datetime) -> line start)."""

    def date(t: datetime, order: str, y4: bool, sep: str) -> str:
        y = f"{t.year}" if y4 else f"{t:%y}"
        d, m = f"{t.day:02d}", f"{t.month:02d}"
        parts = {"dmy": (d, m, y), "mdy": (m, d, y), "ymd": (y, m, d), "ydm": (y, d, m)}[order]
        return sep.join(parts)

    def clock(t: datetime, h12: bool, secs: bool) -> str:
        s = f":{t:%S}" if secs else ""
        if h12:
            return f"{t.hour % 12 or 12}:{t:%M}{s}\u202f{'PM' if t.hour >= 12 else 'AM'}"
        return f"{t:%H:%M}{s}"

    out = []
    for order in ("dmy", "mdy", "ymd", "ydm"):
        for y4 in (False, True):
            if y4 and order == "ydm":
                continue  # no locale writes a 4-digit year before day and month
            for h12 in (False, True):
                for secs in (False, True):
                    for shape in ("android", "ios", "ios-time-first"):
                        sep = (
                            "."
                            if shape == "android" and order == "dmy"
                            else "/"
                            if shape != "android"
                            else "-"
                        )

                        def render(t, order=order, y4=y4, h12=h12, secs=secs, shape=shape, sep=sep):
                            d, c = date(t, order, y4, sep), clock(t, h12, secs)
                            if shape == "android":
                                return f"{d}, {c} - "
                            return f"[{d}, {c}] " if shape == "ios" else f"[{c}, {d}] "

                        label = f"{order} {'yyyy' if y4 else 'yy'} {'12h' if h12 else '24h'} {'ss' if secs else 'no ss'} {shape}"
                        out.append((label, render, secs))
    return out


def generated_formats(seed: int = 0) -> dict:
    """Times exactly right across the generated header formats (one 40-message chat each)."""
    rng = random.Random(seed)
    total = dict.fromkeys(("formats", "present", "parsed", "times", "orders"), 0)
    failures = []
    for label, render, secs in header_formats():
        t = datetime(2021, 1, 3, 8, 0, 7)
        times = []
        for _ in range(40):
            t += timedelta(hours=rng.randint(1, 72), seconds=rng.randint(0, 59))
            times.append(t)
        data = "".join(f"{render(x)}P{i % 3}: message {i}\n" for i, x in enumerate(times))
        items = list(WhatsAppReader().read(Source("g.txt", data.encode()), ExtractOptions()))
        conv = items[-1]
        want = [(x if secs else x.replace(second=0)).isoformat() for x in times]
        got = [m.time for m in conv.messages]
        ok = sum(g == w for g, w in zip(got, want))
        total["formats"] += 1
        total["present"] += len(want)
        total["parsed"] += len(got)
        total["times"] += ok
        total["orders"] += ok == len(want)
        if ok != len(want):
            failures.append(label)
    total["failures"] = failures
    return total


def synthetic_export(mb: float, seed: int = 0) -> bytes:
    """About ``mb`` megabytes of iOS-style export: 10% multi-line messages, nine senders."""
    rng = random.Random(seed)
    words = "the a chat message hello ok see you tomorrow 😀 ja nein sí lunch at noon?".split()
    t, lines, size = datetime(2021, 1, 13), [], 0
    while size < mb * 1e6:
        t += timedelta(seconds=rng.randint(1, 3600))
        text = " ".join(rng.choices(words, k=rng.randint(1, 25)))
        if rng.random() < 0.1:
            text += "\n" + " ".join(rng.choices(words, k=5))
        line = f"[{t:%d/%m/%Y, %H:%M:%S}] Person {rng.randint(1, 9)}: {text}"
        lines.append(line)
        size += len(line.encode()) + 1
    return ("\n".join(lines) + "\n").encode()


def baseline_parse(data: bytes) -> int:
    """The peer: what a hand-written script does for ONE known format (one regex + strptime, no locales)."""
    pattern = re.compile(r"^\[(\d\d/\d\d/\d{4}, \d\d:\d\d:\d\d)\] ([^:]+): (.*)$")
    messages: list[list[str]] = []
    for line in data.decode("utf-8").split("\n"):
        m = pattern.match(line)
        if m:
            when = datetime.strptime(m[1], "%d/%m/%Y, %H:%M:%S").isoformat()
            messages.append([m[2], when, m[3]])
        elif messages:
            messages[-1][2] += "\n" + line
    return len(messages)


def throughput(mb: float) -> tuple[float, float, int]:
    """(ours MB/s, baseline MB/s, messages) on the same synthetic export."""
    data = synthetic_export(mb)
    start = time.perf_counter()
    (conv,) = WhatsAppReader().read(Source("big.txt", data), ExtractOptions())
    ours = time.perf_counter() - start
    start = time.perf_counter()
    n = baseline_parse(data)
    base = time.perf_counter() - start
    assert n == len(conv.messages), (n, len(conv.messages))
    return len(data) / 1e6 / ours, len(data) / 1e6 / base, n


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=here.parent / "shared" / "data" / "chats", help="chat fixtures"
    )
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument(
        "--throughput-mb", type=float, default=10.0, help="size of the synthetic export (0: skip)"
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.data.is_dir():
        raise SystemExit(f"chat fixtures not found at {args.data}")
    rows, total = [], dict.fromkeys(("present", "parsed", "senders", "times", "texts"), 0)
    for path, want in references(args.data).items():
        s = score(path, want)
        rows.append((path.relative_to(args.data).as_posix(), s))
        for k in total:
            total[k] += s[k]
    twins = locale_twins(args.data) + written_twins()
    rows.append(("TOTAL", total))
    rows.extend(twins)
    head = ("file", "present", "parsed", "senders exact", "times exact", "texts exact", "media (twin)")
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, s in rows:
        media = f"{s['media']} ({s['media_want']})" if "media" in s else ""
        cells = [name, s["present"], s["parsed"], s["senders"], s["times"], s["texts"], media]
        if args.markdown:
            print("| " + " | ".join(map(str, cells)) + " |")
        else:
            print(
                f"{name:<58} {s['present']:>7} {s['parsed']:>6} {s['senders']:>7} {s['times']:>6} {s['texts']:>6}"
                f" {media:>8}"
            )
    same = sum(s["parsed"] == s["present"] == s["texts"] == s["times"] and s["media"] == s["media_want"]
               for _, s in twins)  # fmt: skip
    print(
        f"\nexports parsing exactly like their English twin (messages, times, texts, media): {same}/{len(twins)}"
    )
    g = generated_formats()
    print(
        f"\ngenerated WhatsApp header formats: {g['formats']} formats, {g['orders']} read entirely right; "
        f"{g['times']}/{g['present']} times exact ({g['parsed']} parsed)"
        + (f"; wrong: {', '.join(g['failures'])}" if g["failures"] else "")
    )
    if args.throughput_mb > 0:
        ours, base, n = throughput(args.throughput_mb)
        print(
            f"\nthroughput on a {args.throughput_mb:g} MB export ({n:,} messages): ownlm {ours:.2f} MB/s, "
            f"single-format regex script {base:.2f} MB/s (ownlm/peer = {ours / base:.2f}x)"
        )


if __name__ == "__main__":
    main()
