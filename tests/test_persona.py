"""``ownlm persona``: properties of the examples on random chats (roles, turns, sessions, time split, group
names), cleaning, and the command end to end on a real WhatsApp export, including bad input."""

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.cli import main as cli
from ownlm.errors import UserError
from ownlm.finetune.persona import build_persona, clean_text, read_conversations

T0 = datetime(2024, 3, 1, 9, 0)
GAPS = [0, 1, 5, 10, 11, 45, 200, 359, 360, 2000]  # minutes; turn gap 10, session gap 6 h = 360


@st.composite
def chats(draw):
    """Conversations with unique texts ``c{k}m{i}`` so every line can be traced back to its message."""
    convs = []
    for k in range(draw(st.integers(1, 3))):
        senders = draw(st.sampled_from([["Ann", "Bob"], ["ann", "Bob", "Cy", "Di"], ["ANN", "Bob", "Cy"]]))
        t = T0 + timedelta(days=draw(st.integers(0, 5)))
        msgs = []
        for i in range(draw(st.integers(1, 25))):
            t += timedelta(minutes=draw(st.sampled_from(GAPS)))
            msgs.append({"name": draw(st.sampled_from(senders)), "time": t.isoformat(), "text": f"c{k}m{i}"})
        convs.append({"id": f"c{k}", "source": "x", "messages": msgs})
    return convs


def is_ann(name):
    return name.lower() == "ann"


def session_and_turn_ids(msgs):
    """Reference: per message, its session index and turn index (turn = maximal same-side run within 10 min)."""
    out, session, turn = [], 0, 0
    for i, m in enumerate(msgs):
        if i:
            gap = abs(datetime.fromisoformat(m["time"]) - datetime.fromisoformat(msgs[i - 1]["time"]))
            if gap >= timedelta(hours=6):
                session, turn = session + 1, turn + 1
            elif is_ann(m["name"]) != is_ann(msgs[i - 1]["name"]) or gap > timedelta(minutes=10):
                turn += 1
        out.append((session, turn))
    return out


def strip_name(line):
    return line.split(": ", 1)[1] if ": " in line else line


@settings(derandomize=True, deadline=None, max_examples=120)
@given(convs=chats(), k=st.integers(1, 4), frac=st.sampled_from([0.0, 0.2, 0.5]))
def test_examples_follow_the_rules(convs, k, frac):
    try:
        train, val, stats = build_persona(convs, ["Ann"], context_turns=k, val_fraction=frac)
    except UserError as e:  # legitimate only when Ann never writes, or never answers anyone within a session
        assert any(s in str(e) for s in ("no examples", "has a message from", "no sender called"))
        train, val, stats = [], [], None
    by_text = {m["text"]: (c, i) for c in convs for i, m in enumerate(c["messages"])}
    ids = {c["id"]: session_and_turn_ids(c["messages"]) for c in convs}
    replied = set()
    for ex in train + val:
        msgs = ex["messages"]
        assert msgs[0]["role"] == "user" and msgs[-1]["role"] == "assistant"
        assert len(msgs) - 1 <= k
        places = []
        for m in msgs:
            lines = m["content"].split("\n")
            for line in lines:
                conv, i = by_text[strip_name(line)]
                sender = conv["messages"][i]["name"]
                # The person is always the assistant, everyone else always the user.
                assert is_ann(sender) == (m["role"] == "assistant")
                others = {x["name"] for x in conv["messages"] if not is_ann(x["name"])}
                if m["role"] == "user":  # name prefixes exactly in group chats
                    assert (line == f"{sender}: {conv['messages'][i]['text']}") == (len(others) > 1)
                places.append((conv["id"], i, m is msgs[-1]))
            # one message = one turn: all its lines come from the same turn
            assert len({ids[places[-1][0]][i][1] for c_, i, _ in places[-len(lines) :]}) == 1
        conv_id = places[0][0]
        assert {p[0] for p in places} == {conv_id}
        positions = [i for _, i, _ in places]
        assert positions == sorted(positions)
        # All of it in one session; the reply is a whole turn.
        assert len({ids[conv_id][i][0] for i in positions}) == 1
        reply = [i for _, i, last in places if last]
        turn = ids[conv_id][reply[0]][1]
        assert reply == [j for j, (_, t) in enumerate(ids[conv_id]) if t == turn]
        # The context is the whole turns right before the reply, with nothing left out in between.
        first = ids[conv_id][positions[0]][1]
        assert positions == [j for j, (_, t) in enumerate(ids[conv_id]) if first <= t <= turn]
        replied.update((conv_id, i) for i in reply)
    # Completeness: every message of Ann with a turn of someone else among the k turns before it (in its
    # session) is part of a reply.
    for c in convs:
        other_turns = {st_ for m, st_ in zip(c["messages"], ids[c["id"]]) if not is_ann(m["name"])}
        for i, (m, (s, t)) in enumerate(zip(c["messages"], ids[c["id"]])):
            if is_ann(m["name"]) and any((s, u) in other_turns for u in range(t - k, t)):
                assert (c["id"], i) in replied
    # Validation replies are later in time than every training reply.
    if train and val:
        assert min(e["time"] for e in val) > max(e["time"] for e in train)
        assert stats["val_from"] == min(e["time"] for e in val)
    if stats:
        assert stats["examples"] == {"train": len(train), "val": len(val)}
        assert stats["person_messages"] == sum(is_ann(m["name"]) for c in convs for m in c["messages"])


def conv(*rows, id="c"):
    """rows: (minutes after T0, name, text)."""
    msgs = [{"name": n, "time": (T0 + timedelta(minutes=t)).isoformat(), "text": x} for t, n, x in rows]
    return {"id": id, "source": "chat.txt", "messages": msgs}


def test_worked_example():
    c = conv(
        (0, "Bob", "Hi Ann"),
        (1, "Bob", "<media>"),
        (2, "Ann", "Hey!"),
        (3, "Ann", "<Media omitted>\nLook"),
        (30, "Ann", "This message was deleted"),
        (31, "Bob", "Nice"),
        (32, "Ann", "Thanks"),
        (1000, "Ann", "Morning"),  # a new session that starts with Ann: no example
        (1001, "Bob", "Call me on +44 20 7946 0958"),
        (1002, "ann", "ok"),
    )
    train, val, stats = build_persona([c], ["ANN"], val_fraction=0.3, redact=True, system="Be Ann.")
    assert [e["messages"] for e in train] == [
        [{"role": "system", "content": "Be Ann."}, {"role": "user", "content": "Hi Ann"},
         {"role": "assistant", "content": "Hey!\nLook"}],
        [{"role": "system", "content": "Be Ann."}, {"role": "user", "content": "Hi Ann"},
         {"role": "assistant", "content": "Hey!\nLook"}, {"role": "user", "content": "Nice"},
         {"role": "assistant", "content": "Thanks"}],
    ]  # fmt: skip
    assert [e["messages"][1:] for e in val] == [
        [{"role": "user", "content": "Call me on <PHONE>"}, {"role": "assistant", "content": "ok"}]
    ]
    assert stats["person"] == ["Ann", "ann"] and stats["person_messages"] == 5
    assert stats["dropped_messages"] == {"media or empty": 1, "deleted": 1}
    assert stats["mean_context_turns"] == pytest.approx((1 + 3 + 1) / 3, abs=1e-3)
    assert stats["skipped_replies"] == {"replies with no user turn before them": 1}
    # min_reply_chars and the context bound
    train, _, _ = build_persona([c], ["Ann"], val_fraction=0, min_reply_chars=3, context_turns=1)
    assert [e["messages"] for e in train] == [
        [{"role": "user", "content": "Hi Ann"}, {"role": "assistant", "content": "Hey!\nLook"}],
        [{"role": "user", "content": "Nice"}, {"role": "assistant", "content": "Thanks"}],
    ]


def test_clean_text():
    assert clean_text("IMG-20220323-WA0002.jpg (file attached)\nTitle") == "Title"
    assert clean_text("<attached: 00000012-PHOTO.jpg>") == ""
    assert clean_text("You deleted this message.") == ""
    assert clean_text("a <media> b") == "a <media> b"  # only whole lines are placeholders
    assert clean_text("  spaced  \n") == "spaced"
    assert clean_text("<location>") == ""  # extract's placeholder for a shared location


def test_cli_never_writes_into_a_users_folder(whatsapp_jsonl, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.jsonl").write_text("my notes")
    code, _, err = run(capsys, "persona", whatsapp_jsonl, "--person", "person2", "--out", mine)
    assert code == 2 and "ownlm did not make it" in err
    assert (mine / "train.jsonl").read_text() == "my notes"
    again = tmp_path / "again"
    for _ in range(2):  # its own output folder is reused
        assert run(capsys, "persona", whatsapp_jsonl, "--person", "person2", "--out", again)[0] == 0


def test_unknown_person_lists_senders_by_count():
    c = conv((0, "Bob", "a"), (1, "Cy", "b"), (2, "Cy", "c"))
    with pytest.raises(
        UserError, match=r"no sender called 'Ann'; senders \(messages\): Cy \(2\), Bob \(1\)$"
    ):
        build_persona([c], ["Ann"])
    only_media = conv((0, "Ann", "<media>"), (1, "Bob", "x"), id="d")  # Ann is a sender, but says nothing
    with pytest.raises(UserError, match="none of the 2 conversation.* has a message from 'Ann'"):
        build_persona([c, only_media], ["Ann"])
    with pytest.raises(UserError, match="'Ann' never replies"):
        build_persona([conv((0, "Ann", "first"), (1, "Bob", "x"))], ["Ann"])


# ---------------------------------------------------------------------------------------------- command


def run(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def whatsapp_jsonl(shared_data, tmp_path, capsys):
    out = tmp_path / "chats.jsonl"
    code, _, err = run(capsys, "extract", shared_data / "chats/sodascience", "--out", out)
    assert code == 0, err
    return out


def test_cli_end_to_end_on_a_whatsapp_export(whatsapp_jsonl, tmp_path, capsys):
    code, out, _ = run(capsys, "persona", whatsapp_jsonl, "--list-people")
    assert code == 0 and out.splitlines()[1].split() == ["21", "person1"]
    folder = tmp_path / "persona"
    # person2 (person1's only replies in this chat are shared locations, which are not words to learn)
    code, out, err = run(capsys, "persona", whatsapp_jsonl, "--person", "PERSON2", "--out", folder)
    assert code == 0, err
    stats = json.loads((folder / "stats.json").read_text())
    train = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (folder / "val.jsonl").read_text().splitlines()]
    assert stats["examples"] == {"train": len(train), "val": len(val)} and train and val
    assert stats["person"] == ["person2"] and stats["senders"]["person2"] == 21
    for e in train + val:
        assert e["messages"][-1]["role"] == "assistant" and e["messages"][0]["role"] == "user"
        for m in e["messages"]:
            if (
                m["role"] == "user"
            ):  # a group chat: a user turn starts with its sender's name, never person2's
                assert m["content"].split(": ")[0] in {"person1", "person3", "person4"}
                assert not any(line.startswith("person2: ") for line in m["content"].split("\n"))
    assert max(e["time"] for e in train) < min(e["time"] for e in val)
    # The files load as instruction data, and the chat template can encode them.
    from ownlm.finetune.data import load_examples, load_persona_split

    examples, counts = load_examples([folder])
    assert counts["examples"] == len(train)
    assert len(load_persona_split(folder, "val")[0]) == len(val)


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--person", "nobody", "--out", "OUT"],
            "no sender called 'nobody'; senders (messages): person1 (21)",
        ),
        (["--person", "person1"], "give the output folder with --out"),
        (["--out", "OUT"], "give the person to imitate with --person"),
        (
            ["--person", "person1", "--out", "OUT", "--context-turns", "0"],
            "--context-turns must be at least 1",
        ),
    ],
)
def test_cli_bad_flags(whatsapp_jsonl, tmp_path, capsys, args, match):
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    code, out, err = run(capsys, "persona", whatsapp_jsonl, *args)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (
            '{"id": "a", "messages": [{"name": "A", "time": "2024-01-01T00:00:00", "text": "x"}]}\n{oops\n',
            ":2: broken JSON",
        ),
        (
            '{"id": "a", "messages": [{"name": "A", "time": "yesterday", "text": "x"}]}\n',
            ":1: message 1 has time 'yesterday'",
        ),
        (
            '{"id": "a", "messages": [{"name": "A", "time": "2024-01-01T00:00:00"}]}\n',
            ":1: message 1 needs a string",
        ),
        ('{"id": "a", "messages": {}}\n', ":1: 'messages' must be a list"),
        ('{"id": "a", "text": "just a document"}\n', "holds no conversations"),
        ("[1]\n", ":1: expected a JSON object"),
    ],
)
def test_cli_bad_input_files(tmp_path, capsys, content, match):
    p = tmp_path / "in.jsonl"
    p.write_text(content)
    code, out, err = run(capsys, "persona", p, "--person", "A", "--out", tmp_path / "o")
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_read_conversations_skips_documents(tmp_path):
    p = tmp_path / "mixed.jsonl"
    c = conv((0, "Bob", "hi"))
    p.write_text(json.dumps({"id": "d", "text": "doc", "source": "x"}) + "\n" + json.dumps(c) + "\n")
    (got,) = read_conversations([p])
    assert got["messages"] == c["messages"] and got["where"] == f"{p}:2"


def test_an_unknown_person_suggests_the_closest_names():
    from ownlm.errors import UserError
    from ownlm.finetune.persona import build_persona

    conv = {"id": "c", "messages": [{"name": "Bob", "time": "2024-01-01T10:00:00", "text": "Hi"},
                                    {"name": "Annabel Lee", "time": "2024-01-01T10:01:00", "text": "Hey!"}]}  # fmt: skip
    try:
        build_persona([conv], ["annabel le"])
    except UserError as e:
        assert "did you mean 'Annabel Lee'?" in str(e)
    else:
        raise AssertionError("an unknown person must be an error")
