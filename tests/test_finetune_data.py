"""Instruction/chat data loading: Alpaca JSON and JSONL, chat JSONL, persona folders, file:line errors, skip mode,
and the content-hash split."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.finetune.data import load_examples, load_persona_split, split_examples

ALPACA = [
    {"instruction": "Add", "input": "1 2", "output": "3"},
    {"instruction": "Say hi", "input": "", "output": "Hi"},
    {"instruction": "Say bye", "output": "Bye"},
]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A", "extra": 1},
        ]
    },  # fmt: skip
    {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    },  # fmt: skip
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_alpaca_json_list_becomes_user_and_assistant(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(ALPACA, indent=4))
    examples, counts = load_examples([p])
    assert counts == {"examples": 3, "skipped": {}, "problems": []}
    assert [e["messages"] for e in examples] == [
        [{"role": "user", "content": "Add", "input": "1 2"}, {"role": "assistant", "content": "3"}],
        [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi"}],
        [{"role": "user", "content": "Say bye"}, {"role": "assistant", "content": "Bye"}],
    ]
    # "where" is the line each record starts on in the pretty-printed file.
    lines = p.read_text().split("\n")
    for e in examples:
        line = int(e["where"].rsplit(":", 1)[1])
        assert lines[line - 1].strip() == "{" and e["where"].startswith(str(p))
    assert [int(e["where"].rsplit(":", 1)[1]) for e in examples] == [2, 7, 12]


def test_alpaca_jsonl_chat_jsonl_and_persona_folder_together(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    c = write_jsonl(tmp_path / "c.jsonl", CHAT)
    persona = tmp_path / "persona"
    persona.mkdir()
    write_jsonl(persona / "train.jsonl", [{**CHAT[1], "time": "2024-01-01T00:00:00", "conversation": "x"}])
    write_jsonl(persona / "val.jsonl", [CHAT[0]])
    examples, counts = load_examples([a, str(c), persona])
    assert counts["examples"] == 6 == len(examples)
    assert [e["where"] for e in examples] == [
        f"{a}:1", f"{a}:2", f"{a}:3", f"{c}:1", f"{c}:2", f"{persona / 'train.jsonl'}:1",
    ]  # fmt: skip
    assert examples[3]["messages"][2] == {"role": "assistant", "content": "A"}  # unknown keys are dropped
    val, _ = load_persona_split(persona, "val")
    assert [e["messages"] for e in val] == [load_examples([c])[0][0]["messages"]]


def test_the_real_instruction_data(shared_data):
    examples, counts = load_examples([shared_data / "instructions/instruction-data.json"])
    assert counts["examples"] == len(examples) == 1100
    with_input = [e for e in examples if "input" in e["messages"][0]]
    assert 0 < len(with_input) < len(examples)


@pytest.mark.parametrize(
    "line, match, reason",
    [
        ({"instruction": "x"}, "'output' is missing", "missing field"),
        ({"output": "x"}, "'instruction' is missing", "missing field"),
        ({"instruction": "x", "output": ""}, "empty 'output'", "empty response"),
        ({"instruction": "x", "output": 5}, "'output' is a int", "missing field"),
        ({"instruction": "x", "input": [], "output": "y"}, "'input' must be a string", "missing field"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'", "unknown role"),
        ({"messages": [{"role": "user"}]}, "'content' is missing", "missing"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
            "empty assistant",
            "empty assistant",
        ),  # fmt: skip
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant message", "no assistant message"),
        ({"messages": "hi"}, "non-empty list", "bad message"),
        ({"text": "a document"}, "found keys: text", "unknown format"),
        ([1, 2], "expected a JSON object", "not an object"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path, line, match, reason):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ALPACA[0]) + "\n\n" + json.dumps(line) + "\n" + json.dumps(ALPACA[1]) + "\n")
    with pytest.raises(UserError, match=match) as e:
        load_examples([p])
    assert str(e.value).startswith(f"{p}:3: ") and "\n" not in str(e.value)
    examples, counts = load_examples([p], errors="skip")
    assert len(examples) == 2 and counts["examples"] == 2
    assert counts["skipped"] == {reason: 1} and counts["problems"] == [str(e.value)]


def test_broken_json(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ALPACA[0]) + "\n{oops\n")
    with pytest.raises(UserError, match=rf"^{p}:2: broken JSON"):
        load_examples([p])
    examples, counts = load_examples([p], errors="skip")
    assert len(examples) == 1 and counts["skipped"] == {"broken JSON": 1}
    j = tmp_path / "d.json"
    j.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a" "output": "b"}\n]')
    with pytest.raises(UserError, match=rf"^{j}:3: broken JSON"):
        load_examples([j])
    j.write_text('{"instruction": "a", "output": "b"}')
    with pytest.raises(UserError, match=rf"^{j}:1: expected a JSON list"):
        load_examples([j])


def test_skip_keeps_only_the_first_few_problems_and_nothing_usable_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "x"}] * 8)
    with pytest.raises(UserError, match=r"no usable examples .*\(skipped: 8 missing field\)"):
        load_examples([p], errors="skip")
    p2 = write_jsonl(tmp_path / "e.jsonl", [{"instruction": "x"}] * 8 + ALPACA)
    _, counts = load_examples([p2], errors="skip")
    assert counts["skipped"] == {"missing field": 8} and len(counts["problems"]) == 5


def test_missing_inputs(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_examples([tmp_path / "nope.jsonl"])
    with pytest.raises(UserError, match="no train.jsonl"):
        load_examples([tmp_path])
    with pytest.raises(UserError, match="no val.jsonl"):
        load_persona_split(tmp_path, "val")
    with pytest.raises(UserError, match="no instruction data"):
        load_examples([])


def _examples(n):
    return [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(n)
    ]


@settings(derandomize=True, deadline=None, max_examples=40)
@given(n=st.integers(0, 60), frac=st.sampled_from([0.0, 0.05, 0.1, 0.5]), seed=st.integers(0, 3))
def test_split_is_by_content_not_position(n, frac, seed):
    ex = _examples(n)
    train, val = split_examples(ex, frac, seed)
    assert sorted(map(id, train + val)) == sorted(map(id, ex)) and not {id(e) for e in train} & {
        id(e) for e in val
    }
    if frac == 0:
        assert val == []
    elif n >= 2:
        assert val and train
    # Shuffled and with extra copies, every example lands on the same side.
    side = {e["messages"][0]["content"]: "val" for e in val} | {
        e["messages"][0]["content"]: "train" for e in train
    }
    shuffled = ex[::-1] + [json.loads(json.dumps(e)) for e in ex[: n // 2]]
    t2, v2 = split_examples(shuffled, frac, seed)
    if n >= 2 or frac == 0:
        assert all(side[e["messages"][0]["content"]] == "val" for e in v2)
        assert all(side[e["messages"][0]["content"]] == "train" for e in t2)


def test_split_fraction_is_about_right_and_seeded():
    ex = _examples(2000)
    train, val = split_examples(ex, 0.1, seed=0)
    assert 150 < len(val) < 250
    assert split_examples(ex, 0.1, seed=1)[1] != val
    with pytest.raises(UserError, match="val_fraction"):
        split_examples(ex, 1.0)
