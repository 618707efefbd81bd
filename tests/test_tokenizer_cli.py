"""``ownlm tokenizer ...`` end to end in tmp_path, and every bad input: exit 2, one line, nothing written."""

from __future__ import annotations

import json

import pytest

from ownlm.cli import main
from ownlm.tokenizer import Tokenizer

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom. "
    "Ünïcödé, emoji 🙂 and 日本語 are welcome too.\n"
) * 40


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ownlm: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A tokenizer trained through the CLI (module-wide: training is the slow step)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text(TEXT, encoding="utf-8")
    docs = [{"id": str(k), "text": f"Document {k}: {TEXT[:200]}"} for k in range(5)]
    (root / "corpus" / "b.jsonl").write_text("\n".join(json.dumps(d) for d in docs), encoding="utf-8")
    out = root / "tok"
    argv = [
        "tokenizer",
        "train",
        str(root / "corpus"),
        "--vocab-size",
        "300",
        "--out",
        str(out),
        "--no-progress",
    ]
    argv += ["--special-tokens", "<|endoftext|>", "<|pad|>"]
    assert main(argv) == 0
    return out


def test_train_writes_tokenizer_vocab_and_config(tok_dir):
    tok = Tokenizer.load(tok_dir)
    assert len(tok.merges) == 300 - 256 and tok.special_tokens == {"<|endoftext|>": 300, "<|pad|>": 301}
    config = json.loads((tok_dir / "config.json").read_text())
    assert config["bpe"] == {"vocab_size": 300, "pattern": "gpt4"}
    assert (tok_dir / "vocab.txt").read_text(encoding="utf-8").count("\n") >= 300


def test_encode_decode_round_trip(tok_dir, tmp_path, capsys):
    text = "It was the age of 🙂 wisdom.<|endoftext|>"
    code, out, _ = run(capsys, "tokenizer", "encode", str(tok_dir), text, "--allowed-special", "all")
    assert code == 0
    ids = [int(x) for x in out.split()]
    assert ids == Tokenizer.load(tok_dir).encode(text, allowed_special="all") and ids[-1] == 300
    code, out, _ = run(capsys, "tokenizer", "decode", str(tok_dir), *map(str, ids))
    assert code == 0 and out == text + "\n"
    # the same through files, with a JSON list of ids
    (tmp_path / "in.txt").write_text(TEXT, encoding="utf-8")
    argv = ["tokenizer", "encode", str(tok_dir), "--input", str(tmp_path / "in.txt"), "--format", "json"]
    assert main([*argv, "--out", str(tmp_path / "ids.json")]) == 0
    assert main(["tokenizer", "decode", str(tok_dir), "--input", str(tmp_path / "ids.json"), "--out", str(tmp_path / "back.txt")]) == 0  # fmt: skip
    assert (tmp_path / "back.txt").read_text(encoding="utf-8") == TEXT


def test_encode_tokens_format_and_specials_as_text(tok_dir, capsys):
    code, out, _ = run(capsys, "tokenizer", "encode", str(tok_dir), "the best<|pad|>", "--format", "tokens", "--allowed-special", "all")  # fmt: skip
    assert code == 0 and out.strip().endswith("|<|pad|>") and "▁best" in out
    code, out, _ = run(capsys, "tokenizer", "encode", str(tok_dir), "<|pad|>", "--specials-as-text")
    assert code == 0 and "301" not in out.split()


def test_inspect(tok_dir, capsys):
    code, out, _ = run(
        capsys, "tokenizer", "inspect", str(tok_dir), "--top", "3", "--text", "the best of times"
    )
    assert code == 0
    assert "256 bytes + 44 merges + 2 special" in out and "<|pad|>=301" in out and "gpt4" in out
    assert "text (" in out and "first merges:" in out


def test_export_tiktoken_and_hf(tok_dir, tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    from ownlm.tokenizer.export import load_tiktoken_export

    tok = Tokenizer.load(tok_dir)
    assert run(capsys, "tokenizer", "export", str(tok_dir), "--to", "tiktoken", "--out", str(tmp_path / "t.tiktoken"))[0] == 0  # fmt: skip
    assert run(capsys, "tokenizer", "export", str(tok_dir / "tokenizer.json"), "--to", "hf", "--out", str(tmp_path / "hf"))[0] == 0  # fmt: skip
    enc = load_tiktoken_export(tmp_path / "t.tiktoken")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    text = TEXT + "<|pad|>"
    ids = tok.encode(text, allowed_special="all")
    assert enc.encode(text, allowed_special="all") == ids == hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "{corpus}", "--vocab-size", "260", "--out", "{file}", "--no-progress"], "is a file"),
        (
            ["train", "{corpus}", "--vocab-size", "260", "--out", "{file}/sub", "--no-progress"],
            "is a file, not a folder",
        ),
        (["export", "{tok}", "--to", "hf", "--out", "{file}"], "is a file"),
        (["compare", "{corpus}", "--vocab-sizes", "256", "--out", "{file}", "--no-progress"], "is a file"),
        (["encode", "{tok}", "hi", "--out", "{dir}"], "is a folder"),
        (["decode", "{tok}", "104", "--out", "{file}/ids.txt"], "is a file, not a folder"),
    ],
)
def test_out_of_the_wrong_kind_is_a_user_error(tok_dir, tmp_path, capsys, argv, fragment):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    (tmp_path / "d").mkdir()
    names = {"corpus": corpus, "file": corpus, "dir": tmp_path / "d", "tok": tok_dir}
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run(capsys, "tokenizer", *[a.format(**names) for a in argv])
    assert_user_error(code, err, fragment)
    assert sorted(tmp_path.rglob("*")) == before and corpus.read_text(encoding="utf-8") == TEXT


def test_train_bytes_only_and_help(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    code, out, _ = run(capsys, "tokenizer", "train", str(tmp_path / "a.txt"), "--vocab-size", "256", "--out", str(tmp_path / "t"), "--no-progress")  # fmt: skip
    assert code == 0 and Tokenizer.load(tmp_path / "t").merges == []
    with pytest.raises(SystemExit) as e:
        main(["tokenizer", "train", "--help"])
    assert e.value.code == 0 and "--vocab-size" in capsys.readouterr().out


def test_non_utf8_says_where_and_replace_works(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"hello world " * 3 + b"caf\xe9 au lait")
    out = tmp_path / "tok"
    code, _, err = run(capsys, "tokenizer", "train", str(bad), "--vocab-size", "260", "--out", str(out), "--no-progress")  # fmt: skip
    assert_user_error(code, err, str(bad), "offset 39", "--errors replace")
    assert not out.exists()
    code, _, err = run(capsys, "tokenizer", "train", str(bad), "--vocab-size", "260", "--out", str(out), "--no-progress", "--errors", "replace")  # fmt: skip
    assert code == 0 and (out / "tokenizer.json").is_file()


def _corrupt(path):
    path.mkdir()
    (path / "tokenizer.json").write_text('{"format": "ownlm-bpe", "version": 1, "pattern": "gpt4", "merges": [[1, ', encoding="utf-8")  # fmt: skip


def _future(path):
    path.mkdir()
    Tokenizer().save(path)
    d = json.loads((path / "tokenizer.json").read_text())
    (path / "tokenizer.json").write_text(json.dumps(d | {"version": 99}), encoding="utf-8")


def _hf_file(path):
    path.mkdir()
    (path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}', encoding="utf-8")


@pytest.mark.parametrize(
    "make, fragment",
    [(_corrupt, "not valid JSON"), (_future, "version 99"), (_hf_file, "expected an 'ownlm-bpe' tokenizer")],
)
@pytest.mark.parametrize("command", ["encode", "export", "inspect"])
def test_bad_tokenizer_files(tmp_path, capsys, make, fragment, command):
    make(tmp_path / "tok")
    out = tmp_path / "out.txt"
    argv = {
        "encode": ["hello", "--out", str(out)],
        "export": ["--to", "hf", "--out", str(out)],
        "inspect": [],
    }[command]
    code, _, err = run(capsys, "tokenizer", command, str(tmp_path / "tok"), *argv)
    assert_user_error(code, err, fragment)
    assert not out.exists()


def _files(tmp_path, content: bytes | None):
    if content is not None:
        (tmp_path / "in.txt").write_bytes(content)
    return str(tmp_path / "in.txt")


@pytest.mark.parametrize(
    "content, flags, fragments",
    [
        (b"", [], ["empty"]),
        (b"PK\x03\x04\x00\x00binary", [], ["binary", "offset 4"]),
        (b"some text", ["--vocab-size", "100"], [">= 256"]),
        (b"some text", ["--special-tokens", ""], ["special"]),
        (b"some text", ["--special-tokens", "<|a|>", "<|a|>"], ["distinct"]),
        (b"some text", ["--pattern", "(unclosed"], ["not a valid regex"]),
        (None, [], ["no such file"]),
    ],
)
def test_train_bad_inputs(tmp_path, capsys, content, flags, fragments):
    path = _files(tmp_path, content)
    out = tmp_path / "tok"
    code, _, err = run(capsys, "tokenizer", "train", path, "--out", str(out), "--no-progress", *flags)
    assert_user_error(code, err, *fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["encode", "hello", "--allowed-special", "<|nope|>"], ["unknown special token", "<|nope|>"]),
        (["encode"], ["either as an argument or with --input"]),
        (["encode", "--input", "/nonexistent/file.txt"], ["no such file"]),
        (["decode", "72", "99999"], ["99999", "not a token id"]),
        (["decode", "72", "x1"], ["'x1'"]),
        (["decode", "195", "--errors", "strict"], ["not UTF-8", "--errors replace"]),
    ],
)
def test_encode_decode_bad_inputs(tok_dir, tmp_path, capsys, argv, fragments):
    out = tmp_path / "out.txt"
    code, _, err = run(capsys, "tokenizer", argv[0], str(tok_dir), *argv[1:], "--out", str(out))
    assert_user_error(code, err, *fragments)
    assert not out.exists()


def test_compare_jsonl_with_a_lone_surrogate(tmp_path, capsys):
    docs = [{"text": "A broken \ud800 escape. " + TEXT[:300]}, {"text": TEXT[300:900]}]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs), encoding="utf-8")
    assert "\\ud800" in (tmp_path / "docs.jsonl").read_text()
    code, out, _ = run(capsys, "tokenizer", "compare", str(tmp_path / "docs.jsonl"), "--vocab-sizes", "256", "270", "--no-progress")  # fmt: skip
    assert code == 0 and "BPE 256 (bytes)" in out


def test_compare_bad_inputs(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    code, _, err = run(capsys, "tokenizer", "compare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert_user_error(code, err, "no text")
    code, _, err = run(capsys, "tokenizer", "compare", str(tmp_path / "empty.txt"), "--vocab-sizes", "10", "--no-progress")  # fmt: skip
    assert_user_error(code, err, ">= 256")
    assert not (tmp_path / "o").exists()
