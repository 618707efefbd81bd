"""One JSON reader everywhere (``io.load_json_text``): depth and number limits, a byte-order mark accepted,
nothing silently dropped after a value, and in JSONL a bad line is that line's problem while the good lines
are kept. Fault injection through the files a user gives: fine-tuning data, extraction inputs."""

import json

import pytest

from ownlm import cli
from ownlm.errors import UserError
from ownlm.finetune.data import load_examples
from ownlm.io import iter_json_list, iter_jsonl, load_json_text, read_json

GOOD = {"instruction": "Add", "input": "1 2", "output": "3"}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" + DEEP + "]", ["nested deeper than 256"]),
        ("[" + "9" * 5000 + "]", ["digits"]),
        (json.dumps([GOOD]) + json.dumps([GOOD]), ["Extra data"]),
        (json.dumps([GOOD]) + "\ngarbage", ["Extra data", ":2:"]),
        (json.dumps({"data": [GOOD]}), ["expected a JSON list of records", "an object"]),
        ("", ["Expecting value"]),
    ],
)
def test_a_broken_json_data_file_is_one_line_naming_it(tmp_path, text, words):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_examples([path])
    msg = str(e.value)
    assert msg.startswith(f"{path}:") and "\n" not in msg
    for w in words:
        assert w in msg


def test_a_broken_json_data_file_through_the_cli_is_exit_2(tmp_path, capsys):
    (tmp_path / "x.json").write_text("[" + DEEP + "]")
    code = cli.main(["finetune", "sft", str(tmp_path / "missing-base"), "--data", str(tmp_path / "x.json"),
                     "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "internal error" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_byte_order_mark_is_accepted(tmp_path, suffix):
    path = tmp_path / ("x" + suffix)
    body = json.dumps([GOOD, GOOD]) if suffix == ".json" else f"{json.dumps(GOOD)}\n{json.dumps(GOOD)}\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    examples, counts = load_examples([path])
    second = 1 if suffix == ".json" else 2  # the list is on one line; JSONL has a record a line
    assert counts["examples"] == 2 and [e["where"] for e in examples] == [f"{path}:1", f"{path}:{second}"]
    (tmp_path / "m.json").write_bytes(b"\xef\xbb\xbf" + b'{"format": "x"}')
    assert read_json(tmp_path / "m.json") == {"format": "x"}


def test_json_list_items_carry_their_line():
    text = '[\n  {"a": 1},\n\n  {"a": 2}, {"a": 3}\n]'
    assert list(iter_json_list(text, "x")) == [(2, {"a": 1}), (4, {"a": 2}), (4, {"a": 3})]
    assert [obj for _, obj in iter_json_list(text, "x")] == json.loads(text)


def test_jsonl_keeps_good_lines_around_bad_ones(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(f"{json.dumps(GOOD)}\n{DEEP}\n{{broken\n{json.dumps(GOOD)}\n" + "[" + "1" * 5000 + "]\n")
    got = list(iter_jsonl(path, errors="skip"))
    assert [(n, isinstance(o, UserError)) for n, o in got] == [(1, False), (2, True), (3, True), (4, False),
                                                               (5, True)]  # fmt: skip
    assert str(got[1][1]).startswith(f"{path}:2: ")


def test_extract_reports_a_deep_jsonl_line_and_keeps_the_others(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    lines = [json.dumps({"text": "first good line"}), DEEP, json.dumps({"text": "xxxxx"}),
             json.dumps({"text": "last good line"})]  # fmt: skip
    (src / "notes.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "docs.jsonl"
    code = cli.main(["extract", str(src), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert "first good line" in texts and "last good line" in texts and "xxxxx" in texts
    assert "notes.jsonl:2" in captured.out + captured.err


def test_load_json_text_refuses_what_follows_the_value():
    for text in ("[1][2]", "{} {}", "1 2", '"a" x'):
        with pytest.raises(UserError, match="Extra data"):
            load_json_text(text, "x")
