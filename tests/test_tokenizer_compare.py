"""``ownlm tokenizer compare``: the counts are right, smaller vocabularies really are merge prefixes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.cli import main
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.compare import (
    WORD_RE,
    compare_corpus,
    count_sentences,
    format_report,
    pick_example,
    plot_png,
    sample_documents,
    show_piece,
    split_sizes,
)

DOCS = [
    "The cat sat on the mat. The dog sat on the log! Did the cat see the dog?\n" * 20,
    "Naïve café owners serve crème brûlée. Ünïcödé is fine — 日本語もある。\n" * 10,
    "Numbers like 12345 and 3.14 appear. So do emoji 🙂👍🏽 and tabs\tand  double spaces.\n" * 10,
    "A short document without an ending",
]


@pytest.fixture(scope="module")
def result():
    return compare_corpus(
        lambda: iter(DOCS), sum(len(d.encode()) for d in DOCS), [256, 300, 400], progress=False
    )


def test_levels_count_what_they_say(result):
    rows = {r.level: r for r in result.rows}
    n_bytes = sum(len(d.encode()) for d in DOCS)
    assert rows["BPE 256 (bytes)"].tokens == n_bytes == result.bytes
    assert rows["characters"].tokens == sum(map(len, DOCS)) and rows["characters"].vocab_size == len(
        set("".join(DOCS))
    )
    assert rows["words"].tokens == sum(len(WORD_RE.findall(d)) for d in DOCS)
    assert result.documents == len(DOCS) and result.sentences == sum(map(count_sentences, DOCS))
    for r in result.rows:
        assert r.tokens_per_doc == pytest.approx(r.tokens / len(DOCS))
        assert r.bytes_per_token == pytest.approx(n_bytes / r.tokens)
        assert r.example  # every level shows the example sentence split


def test_bpe_counts_equal_encoding_with_each_size(result):
    """The counts derived from the largest tokenizer (split_sizes) equal encoding with each cut tokenizer."""
    full = Tokenizer.train(DOCS, vocab_size=400, special_tokens=(), progress=False)
    for r in result.rows:
        if r.level.startswith("BPE"):
            cut = Tokenizer(merges=full.merges[: r.vocab_size - 256])
            assert r.tokens == sum(len(cut.encode_ordinary(d)) for d in DOCS), r.level
            assert "|".join(r.example) == "|".join(
                show_piece(cut.id_to_bytes(i)) for i in cut.encode(result.example)
            )
    bpe = [r.tokens for r in result.rows if r.level.startswith("BPE")]
    assert bpe == sorted(bpe, reverse=True)  # more merges, fewer tokens


def test_smaller_vocabulary_is_a_prefix_of_the_merges():
    """What compare relies on: training to a smaller size learns exactly the first merges of a larger one."""
    big = Tokenizer.train(DOCS, vocab_size=410, special_tokens=(), progress=False)
    small = Tokenizer.train(DOCS, vocab_size=300, special_tokens=(), progress=False)
    assert small.merges == big.merges[:44]


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="ab c", max_size=40), cut=st.integers(256, 264))
def test_split_sizes_equals_cut_encoding(text, cut):
    tok = Tokenizer.train(["aab abc abab cab " * 3], vocab_size=264, special_tokens=(), progress=False)
    counts = np.bincount(np.asarray(tok.encode_ordinary(text), dtype=np.int64), minlength=tok.n_vocab)
    expected = len(Tokenizer(merges=tok.merges[: cut - 256]).encode_ordinary(text))
    assert int(counts @ split_sizes(tok.merges, cut)) == expected


@given(docs=st.lists(st.text(min_size=1, max_size=50), min_size=1, max_size=10), mb=st.integers(1, 200))
def test_sample_takes_a_share_of_every_document(docs, mb):
    total = sum(len(d.encode()) for d in docs)
    sample = sample_documents(docs, total, mb)
    assert sum(len(s.encode()) for s in sample) <= max(mb, 0) + max(len(d.encode()) for d in docs)
    it = iter(docs)
    assert all(any(d.startswith(s) for d in it) for s in sample)  # in order, each a prefix of a document


def test_sentences_and_example():
    assert count_sentences("One. Two! Three? Four") == 4
    assert count_sentences("“Quoted.” Then more.") == 2
    assert count_sentences("") == 0
    text = "Hi. " + "This sentence has exactly the right number of words in it. " + "Tail"
    assert pick_example(text) == "This sentence has exactly the right number of words in it."


def test_show_piece():
    assert show_piece(b" cat\n") == "▁cat↵"
    assert show_piece("é".encode()[:1]) == "<c3>" and show_piece("é".encode()) == "é"


def test_report_and_plot(result):
    text = format_report(result)
    assert "| BPE 256 (bytes) |" in text and result.example in text
    assert plot_png(result)[:8] == b"\x89PNG\r\n\x1a\n"


def test_vocab_sizes_below_256_are_refused():
    from ownlm.errors import UserError

    with pytest.raises(UserError, match="at least 256"):
        compare_corpus(lambda: iter(DOCS), 100, [100, 1000], progress=False)


def test_cli_compare_writes_table_json_and_plot(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, d in enumerate(DOCS):
        (corpus / f"{k}.txt").write_text(d, encoding="utf-8")
    out = tmp_path / "out"
    argv = [
        "tokenizer",
        "compare",
        str(corpus),
        "--vocab-sizes",
        "256",
        "300",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "BPE 256 (bytes)" in printed and "characters" in printed and "words" in printed
    data = json.loads((out / "compare.json").read_text())
    assert [r["vocab_size"] for r in data["rows"] if r["level"].startswith("BPE")] == [256, 300]
    assert (out / "compare.md").read_text().startswith("# Tokenization compared")
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["vocab_sizes"] == [256, 300]


def test_cli_compare_on_a_real_book(shared_data, tmp_path, capsys):
    book = shared_data / "gutenberg" / "pg42.txt"
    assert main(["tokenizer", "compare", str(book), "--vocab-sizes", "256", "1024", "--no-progress"]) == 0
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("BPE", "words", "char"))
    ]
    assert len(rows) == 4
