"""``ownlm persona CONVERSATIONS.jsonl... --person NAME --out DIR``: chats -> fine-tuning data for one person.

The conversations ``ownlm extract`` wrote (WhatsApp, Telegram, Instagram, ...) become chat examples in which the
chosen person is the ``assistant`` and everyone else the ``user``, so a model fine-tuned on them answers the way
that person does. How a conversation is cut up:

1. Cleaning. Messages that say nothing the sender wrote are dropped: media placeholders (a line that is only
   ``<media>``, ``<location>``, ``<Media omitted>``, ``<attached: x.jpg>``, ``IMG-1.jpg (file attached)``; other lines of such a
   message, a caption, are kept) and notices WhatsApp writes in a sender's name ("This message was deleted",
   "You deleted this message", "Missed voice call").
   ``--redact`` replaces phone numbers, e-mail addresses and URLs as ``ownlm extract --redact`` does.
2. Sessions. A silence of ``--session-gap-hours`` or more starts a new session; context never reaches back
   across it. Exports' clocks are not always monotonic, so a jump back in time counts by its size too.
3. Turns. Within a session, consecutive messages of the same side (the person, or anyone else) at most
   ``--turn-gap-minutes`` apart form one turn, one message per line. Messages from several other senders can
   share a user turn; when the chat has more than one other sender, each line starts with its sender's name
   (``Ann: ...``) so the model can tell who said what.
4. Examples. Each of the person's turns with at least ``--min-reply-chars`` characters is a reply; its example
   is up to ``--context-turns`` turns before it in the same session (leading turns of the person dropped, so the
   example starts with a user turn; a reply with no user turn before it is skipped) + the reply.
5. Split. Validation is the latest ``--val-fraction`` of the replies by time, across all conversations: the
   model is judged on how the person writes later, never on a random sample of the same days.

Writes ``DIR/train.jsonl``, ``DIR/val.jsonl`` (``{"messages": [...], "time", "conversation"}``) and
``DIR/stats.json``. ``--list-people`` prints the senders and their message counts.

    ownlm extract "WhatsApp Chat with Ann.txt" --out chats.jsonl
    ownlm persona chats.jsonl --list-people
    ownlm persona chats.jsonl --person Ann "Ann B." --out persona/
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ownlm.config import opt
from ownlm.errors import UserError

FORMAT = "ownlm-persona"
VERSION = 1

# A line that only stands for an attachment (what ownlm's chat readers and raw exports write).
_PLACEHOLDER = re.compile(
    r"^(?:<media>|<location>|<[^<>\n]*\b(?:omitted|attached)\b[^<>\n]*>|[^\s<>]+\.\w{2,5} \(file attached\)"
    r"|(?:image|video|audio|sticker|GIF|document) omitted)$",
    re.I,
)
# A whole message WhatsApp wrote in the sender's place.
_DELETED = re.compile(
    r"^(?:This message was deleted|You deleted this message|Waiting for this message.*"
    r"|Missed (?:voice|video|group) call)\.?$",
    re.I | re.S,
)


@dataclass(kw_only=True)
class TurnsConfig:
    """turns: how a chat's messages become turns, sessions and each reply's context (``ownlm persona`` and
    ``ownlm build --person`` nest this section; flags stay flat: ``--context-turns``)"""

    context_turns: int = opt(6, help="turns of conversation before each reply kept as its context")
    turn_gap_minutes: float = opt(
        10.0, help="messages of one side at most this many minutes apart form one turn"
    )
    session_gap_hours: float = opt(
        6.0, help="a silence this long starts a new session; context does not reach back across it"
    )


@dataclass
class PersonaConfig:
    """Turn chat conversations into chat fine-tuning examples in which one person is the assistant."""

    inputs: list[str] = opt([], positional=True, help="conversations JSONL files written by `ownlm extract`")
    person: list[str] = opt(
        [],
        help="the sender to imitate, as the chat spells it (case-insensitive); more names after it are "
        "aliases of the same person: --person Ann 'Ann B.'",
    )
    out: str | None = opt(None, help="output folder: train.jsonl, val.jsonl, stats.json")
    list_people: bool = opt(False, help="print every sender with their message count, then stop")
    turns: TurnsConfig = opt(TurnsConfig(), help="how messages become turns, sessions and context")
    val_fraction: float = opt(
        0.1, help="the latest part of the replies, by time, kept for validation", bounds="[0, 1)"
    )
    redact: bool = opt(
        False, help="replace phone numbers, e-mail addresses and URLs with <PHONE>, <EMAIL>, <URL>"
    )
    min_reply_chars: int = opt(1, help="shorter replies of the person are kept as context only")
    system: str | None = opt(None, help="a system prompt put first in every example (default: none)")
    others: bool = opt(
        False,
        help="also write others.jsonl: every other sender's replies as the assistant, from before the validation "
        "replies (a first fine-tuning stage; `ownlm build --person` uses it)",
    )


# ---------------------------------------------------------------------------------------------- reading


def _parse_time(value) -> datetime | None:
    """ISO 8601 -> a naive datetime (aware times converted to UTC); ``None`` for a missing time."""
    if value is None or value == "":
        return None
    t = datetime.fromisoformat(value)  # ValueError for a malformed string
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def read_conversations(paths: list[str | os.PathLike]) -> list[dict]:
    """Conversation records (``{"id", "source", "messages": [{"name", "time", "text"}]}``) from JSONL files.

    Document records (``{"text", ...}``) in the same files are passed over; a broken line is a ``UserError``
    naming its file and line.
    """
    from ownlm.io import iter_jsonl

    if not paths:
        raise UserError("no input given: pass the conversations JSONL that `ownlm extract` wrote")
    conversations = []
    for path in map(Path, paths):
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give the JSONL file `ownlm extract` wrote")
        n_before = len(conversations)
        for line, rec in iter_jsonl(path):
            where = f"{path}:{line}"
            if not isinstance(rec, dict):
                raise UserError(f"{where}: expected a JSON object, found {type(rec).__name__}")
            if "messages" not in rec:
                if isinstance(rec.get("text"), str):
                    continue  # a document, not a conversation
                raise UserError(f"{where}: expected a conversation {{id, source, messages: [...]}}")
            msgs = rec["messages"]
            if not isinstance(msgs, list):
                raise UserError(f"{where}: 'messages' must be a list, found {type(msgs).__name__}")
            for k, m in enumerate(msgs, 1):
                if not (
                    isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("text"), str)
                ):
                    raise UserError(
                        f"{where}: message {k} needs a string 'name' and 'text' (and an ISO 'time')"
                    )
                try:
                    _parse_time(m.get("time"))
                except (TypeError, ValueError):
                    raise UserError(
                        f"{where}: message {k} has time {m.get('time')!r}; expected ISO 8601 like 2024-01-31T09:05:00"
                    ) from None
            conversations.append({**rec, "id": str(rec.get("id", where)), "where": where})
        if len(conversations) == n_before:
            raise UserError(f"{path}: holds no conversations; run `ownlm extract` on chat exports first")
    return conversations


def sender_counts(conversations: list[dict]) -> Counter:
    """Messages per sender across all conversations."""
    return Counter(m["name"] for c in conversations for m in c["messages"])


def people_lines(counts: Counter) -> list[str]:
    """``--list-people``: one line per sender, most messages first."""
    width = len(f"{max(counts.values(), default=0):,}")
    return [f"{n:>{width},}  {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# ---------------------------------------------------------------------------------------------- building


def clean_text(text: str) -> str:
    """A message's text without attachment placeholder lines; ``""`` when nothing the sender wrote is left.

    >>> clean_text("<Media omitted>\\nLook at this")
    'Look at this'
    >>> clean_text("This message was deleted")
    ''
    """
    if _DELETED.match(text.strip()):
        return ""
    lines = [line for line in text.split("\n") if not _PLACEHOLDER.match(line.strip())]
    return "\n".join(lines).strip()


@dataclass
class _Turn:
    person: bool
    lines: list[str]
    start: datetime | None
    end: datetime | None


def _gap(a: datetime | None, b: datetime | None) -> timedelta:
    """Time between two messages (its size: clocks in exports can step back); zero when one is unknown."""
    return abs(b - a) if a is not None and b is not None else timedelta(0)


def _name_key(name: str) -> str:
    """How names are compared: spaces at the ends, case and Unicode normalisation do not count ("Zoë" typed
    as one code point finds "Zoë" exported as "o" + combining diaeresis).

    >>> _name_key("Zo\u00eb ") == _name_key("ZOE\u0308")
    True
    """
    return unicodedata.normalize("NFC", name.strip()).casefold()


def _sessions(messages: list[dict], is_person, names: dict[str, str], group: bool, turn_gap, session_gap):
    """Cleaned messages -> sessions, each a list of ``_Turn``."""
    sessions: list[list[_Turn]] = []
    last_time = None
    for m in messages:
        t = m["time"]
        if not sessions or _gap(last_time, t) >= session_gap:
            sessions.append([])
        turns = sessions[-1]
        mine = is_person(m["name"])
        line = m["text"] if mine or not group else f"{names.get(m['name'], m['name'])}: {m['text']}"
        if turns and turns[-1].person == mine and _gap(turns[-1].end, t) <= turn_gap:
            turns[-1].lines.append(line)
            turns[-1].end = t if t is not None else turns[-1].end
        else:
            turns.append(_Turn(mine, [line], t, t))
        last_time = t if t is not None else last_time
    return sessions


def _examples(turns: list[_Turn], context_turns: int, min_reply_chars: int, skipped: Counter):
    """``(turn index, messages)`` for each of the person's turns in one session that makes an example."""
    for ti, turn in enumerate(turns):
        if not turn.person:
            continue
        if len("\n".join(turn.lines)) < min_reply_chars:
            skipped["replies shorter than --min-reply-chars"] += 1
            continue
        context = turns[max(0, ti - context_turns) : ti]
        while context and context[0].person:  # an example starts with a user turn
            context = context[1:]
        if not context:
            skipped["replies with no user turn before them"] += 1
            continue
        messages = [
            {"role": "assistant" if t.person else "user", "content": "\n".join(t.lines)} for t in context
        ]
        yield ti, [*messages, {"role": "assistant", "content": "\n".join(turn.lines)}]


def build_persona(
    conversations: list[dict],
    persons: list[str],
    context_turns: int = 6,
    turn_gap_minutes: float = 10.0,
    session_gap_hours: float = 6.0,
    val_fraction: float = 0.1,
    min_reply_chars: int = 1,
    system: str | None = None,
    redact: bool = False,
) -> tuple[list[dict], list[dict], dict]:
    """Conversations -> ``(train, val, stats)``; ``persons`` are one person's names (case-insensitive aliases).

    >>> conv = {"id": "c", "messages": [{"name": "Bob", "time": "2024-01-01T10:00:00", "text": "Hi"},
    ...                                 {"name": "ann", "time": "2024-01-01T10:01:00", "text": "Hey!"}]}
    >>> train, val, stats = build_persona([conv], ["Ann"], val_fraction=0)
    >>> train[0]["messages"]
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hey!'}]
    """
    if context_turns < 1:
        raise UserError(f"--context-turns must be at least 1, got {context_turns}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if turn_gap_minutes < 0 or session_gap_hours <= 0:
        raise UserError("--turn-gap-minutes must be >= 0 and --session-gap-hours > 0")
    wanted = {_name_key(p) for p in persons if p.strip()}
    if not wanted:
        raise UserError("give the person to imitate with --person NAME (see --list-people)")
    counts = sender_counts(conversations)
    matched = sorted(n for n in counts if _name_key(n) in wanted)
    if not matched:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        listing = ", ".join(f"{name} ({n:,})" for name, n in ranked[:20]) or "none"
        more = f", ... and {len(ranked) - 20} more (--list-people)" if len(ranked) > 20 else ""
        import difflib

        folded = {n.strip().casefold(): n for n in counts}
        close = dict.fromkeys(
            folded[m] for p in wanted for m in difflib.get_close_matches(p, folded, n=3, cutoff=0.6)
        )
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UserError(
            f"no sender called {' / '.join(map(repr, persons))}; {hint}senders (messages): {listing}{more}"
        )

    def is_person(name: str) -> bool:
        return _name_key(name) in wanted

    from ownlm.extract.redact import redact as redact_text
    from ownlm.extract.redact import redact_names

    names = redact_names(list(counts)) if redact else {}
    turn_gap, session_gap = timedelta(minutes=turn_gap_minutes), timedelta(hours=session_gap_hours)
    dropped = Counter()
    skipped = Counter()
    examples: list[tuple[tuple, dict]] = []  # (sort key, example)
    person_messages = person_words = no_person = 0
    for ci, conv in enumerate(conversations):
        messages = []
        for m in conv["messages"]:
            text = clean_text(m["text"])
            if not text:
                dropped["deleted" if _DELETED.match(m["text"].strip()) else "media or empty"] += 1
                continue
            messages.append({"name": m["name"], "time": _parse_time(m.get("time")), "text": text})
        if not any(is_person(m["name"]) for m in messages):
            no_person += 1
            continue
        others = {m["name"] for m in messages if not is_person(m["name"])}
        for m in messages:
            if redact:
                m["text"] = redact_text(m["text"])
            if is_person(m["name"]):
                person_messages += 1
                person_words += len(m["text"].split())
        sessions = _sessions(messages, is_person, names, len(others) > 1, turn_gap, session_gap)
        for si, turns in enumerate(sessions):
            for ti, msgs in _examples(turns, context_turns, min_reply_chars, skipped):
                start = turns[ti].start
                head = [{"role": "system", "content": system}] if system else []
                ex = {
                    "messages": head + msgs,
                    "time": start.isoformat() if start else None,
                    "conversation": conv["id"],
                }
                examples.append(((start or datetime.min, ci, si, ti), ex))
    if not examples:
        if no_person == len(conversations):
            raise UserError(
                f"none of the {len(conversations)} conversation(s) has a message from {matched[0]!r}"
            )
        reasons = ", ".join(f"{n} {r}" for r, n in skipped.items()) or "no replies"
        raise UserError(f"no examples: {matched[0]!r} never replies to anyone ({reasons})")

    examples.sort(key=lambda kv: kv[0])
    train, val = _split_by_time(examples, val_fraction)
    n_context = [sum(m["role"] != "system" for m in ex["messages"]) - 1 for ex in train + val]
    stats = {
        "format": FORMAT,
        "version": VERSION,
        "person": matched,
        "examples": {"train": len(train), "val": len(val)},
        "val_from": val[0]["time"] if val else None,
        "person_messages": person_messages,
        "person_words": person_words,
        "mean_context_turns": round(sum(n_context) / len(n_context), 3),
        "conversations": {"read": len(conversations), "without the person": no_person},
        "skipped_replies": dict(skipped),
        "dropped_messages": dict(dropped),
        "senders": {names.get(n, n): c for n, c in counts.most_common()},
    }
    return train, val, stats


def others_examples(
    conversations: list[dict], persons: list[str], before: str | None, **options
) -> list[dict]:
    """Every other sender in turn as the assistant: their replies, with context, from before ``before`` (the
    person's first validation reply, so nothing of that period leaks in), oldest first. Fine-tuned on first, they
    teach the chats' back-and-forth; the person's own replies then teach the voice (``ownlm build --person``).
    ``options`` are ``build_persona``'s (context turns, gaps, system prompt, redaction).

    >>> conv = {"id": "c", "messages": [{"name": "Bob", "time": "2024-01-01T10:00:00", "text": "Hi"},
    ...                                 {"name": "Ann", "time": "2024-01-01T10:01:00", "text": "Hey!"},
    ...                                 {"name": "Bob", "time": "2024-01-01T10:02:00", "text": "Lunch?"}]}
    >>> [ex["messages"][-1]["content"] for ex in others_examples([conv], ["ann"], None)]
    ['Lunch?']
    """
    wanted = {p.strip().casefold() for p in persons}
    out = []
    for name in sender_counts(conversations):
        if name.strip().casefold() in wanted:
            continue
        try:
            train, _, _ = build_persona(conversations, [name], val_fraction=0.0, **options)
        except UserError:  # a sender who never answers anyone
            continue
        out += [ex for ex in train if before is None or (ex["time"] is not None and ex["time"] < before)]
    return sorted(out, key=lambda ex: ex["time"] or "")


def _split_by_time(examples: list[tuple[tuple, dict]], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """Sorted ``(key, example)`` -> ``(train, val)``: val is the latest ``val_fraction``, cut where the time
    changes so that every validation reply is strictly later than every training reply."""
    n_val = math.ceil(val_fraction * len(examples)) if len(examples) > 1 else 0
    if n_val == 0:
        return [ex for _, ex in examples], []
    cut = len(examples) - n_val
    first_val_time = examples[cut][0][0]
    while cut > 0 and examples[cut - 1][0][0] == first_val_time:
        cut -= 1  # replies at the same moment stay together...
    if cut == 0:  # ... unless they are all at one moment: then the later replies in the order of the chats
        cut = len(examples) - n_val
    train = [ex for _, ex in examples[:cut]]
    val = [ex for _, ex in examples[cut:]]
    return train, val


# ---------------------------------------------------------------------------------------------- command


def main(cfg: PersonaConfig) -> int:
    """Run ``ownlm persona``."""
    from ownlm.io import RunLock, mark_output, prepare_output, write_json, write_jsonl

    if not cfg.list_people:
        if not cfg.person:
            raise UserError(
                "give the person to imitate with --person NAME (see --list-people for the senders)"
            )
        if not cfg.out:
            raise UserError("give the output folder with --out DIR")
        prepare_output(cfg.out, kind="ownlm-persona", folder=True, inputs=cfg.inputs)  # never a user's folder
    conversations = read_conversations(cfg.inputs)
    if cfg.list_people:
        counts = sender_counts(conversations)
        print(f"{len(counts)} sender(s) in {len(conversations)} conversation(s); messages per sender:")
        for line in people_lines(counts):
            print("  " + line)
        return 0
    options = dict(
        **asdict(cfg.turns), min_reply_chars=cfg.min_reply_chars, system=cfg.system, redact=cfg.redact
    )
    train, val, stats = build_persona(conversations, cfg.person, val_fraction=cfg.val_fraction, **options)
    others = None
    if cfg.others:
        others = others_examples(conversations, cfg.person, stats["val_from"], **options)
        stats["examples"]["others"] = len(others)
    out = Path(cfg.out)
    with RunLock(out):
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "val.jsonl", val)
        if others is not None:
            write_jsonl(out / "others.jsonl", others)
        write_json(out / "stats.json", {**stats, "config": asdict(cfg)})
        mark_output(out, "ownlm-persona")
    extra = f", {len(others):,} replies of the others" if others is not None else ""
    print(
        f"persona {' / '.join(stats['person'])}: {len(train):,} train + {len(val):,} val examples{extra} "
        f"(mean {stats['mean_context_turns']:.1f} turns of context) -> {out}"
    )
    return 0
