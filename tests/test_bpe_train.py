"""BPE training: fast trainer == reference trainer, tie-breaking, running out of pairs, inputs, bad input."""

import json
import random
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.tokenizer import PATTERNS, Tokenizer
from ownlm.tokenizer.fastbpe import train_fast
from ownlm.tokenizer.train import count_chunks, train_reference

CHUNKS = st.dictionaries(st.binary(min_size=1, max_size=12), st.integers(1, 5), min_size=1, max_size=20)
SMALL_ALPHABET = st.dictionaries(
    st.lists(st.sampled_from(b"aab c"), min_size=1, max_size=16).map(bytes), st.integers(1, 4), max_size=25
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(CHUNKS, SMALL_ALPHABET), st.integers(0, 60))
def test_fast_equals_reference_on_generated_chunks(chunks, n_merges):
    # small alphabets make many ties and overlapping pairs ("aaa"), where bookkeeping bugs hide
    assert train_fast(chunks, n_merges) == train_reference(chunks, n_merges)


def test_fast_equals_reference_on_text():
    rnd = random.Random(0)
    words = ["the", "then", "there", "these", "hat", "that", "aaaa", "banana", "\u00e9t\u00e9", "\U0001f600"]
    text = " ".join(rnd.choice(words) for _ in range(3000))
    for pattern in ("gpt2", "gpt4"):
        chunks = count_chunks([text], PATTERNS[pattern])
        assert train_fast(chunks, 150) == train_reference(chunks, 150)


def test_fast_equals_reference_on_gutenberg(shared_data):
    book = sorted((shared_data / "gutenberg").glob("*.txt"))[3].read_text(encoding="utf-8")[:60_000]
    chunks = count_chunks([book], PATTERNS["gpt4"])
    assert train_fast(chunks, 200) == train_reference(chunks, 200)


def test_tie_breaking_is_smallest_pair():
    # (a, b), (c, d) and (b, c) all occur twice: the smallest id pair (97, 98) goes first, then (99, 100)
    assert train_reference({b"ab": 1, b"cd": 1, b"bc": 1, b"abcd": 1}, 2) == [(97, 98), (99, 100)]
    assert train_fast({b"ab": 1, b"cd": 1, b"bc": 1, b"abcd": 1}, 2) == [(97, 98), (99, 100)]
    # the count of "aaa" is 2 for (a, a), but merging leaves "aa a"
    assert train_fast({b"aaa": 1, b"bc": 1}, 3) == [(97, 97), (98, 99), (256, 97)]


@pytest.mark.filterwarnings("ignore:the corpus ran out of pairs")
def test_training_is_deterministic_and_order_free():
    texts = ["one two three two one", "three three two", "four"]
    a = Tokenizer.train(texts, 280, progress=False)
    b = Tokenizer.train(list(reversed(texts)), 280, progress=False, trainer="reference")
    assert a == b


def test_parallel_counting_equals_serial():
    rnd = random.Random(1)
    texts = ["".join(rnd.choice("ab \n\u00e9") for _ in range(rnd.randint(0, 3000))) for _ in range(40)]
    serial = count_chunks(texts, PATTERNS["gpt4"], workers=1)
    assert count_chunks(texts, PATTERNS["gpt4"], workers=2, batch_chars=5000) == serial


def test_runs_out_of_pairs_cleanly():
    with pytest.warns(UserWarning, match="ran out of pairs to merge after 3 merges: vocabulary is 259"):
        tok = Tokenizer.train(["abc abc"], 1000, pattern="gpt2", progress=False)
    assert tok.merges == [(97, 98), (256, 99), (32, 257)]  # chunks "abc" and " abc"
    assert tok.special_tokens == {"<|endoftext|>": 259} and tok.n_vocab == 260


def test_vocab_256_is_bytes_plus_specials():
    tok = Tokenizer.train(["hello"], 256, special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)
    assert tok.merges == [] and tok.special_tokens == {"<|endoftext|>": 256, "<|pad|>": 257}
    assert tok.encode("hello") == list(b"hello")


def test_special_token_strings_never_merge():
    tok = Tokenizer.train(["x<|endoftext|>y" * 50], 300, pattern="gpt4", progress=False)
    pieces = {tok.vocab[i] for i in range(256, 256 + len(tok.merges))}
    assert not any(b"|" in p or b"<" in p for p in pieces)


def test_no_two_ids_share_bytes():
    rnd = random.Random(2)
    text = "".join(rnd.choice(["a", "b", "ab", "ba", " ", "aab"]) for _ in range(20000))
    tok = Tokenizer.train([text], 600, pattern=r"\S+|\s+", progress=False)
    assert len(set(tok.vocab.values())) == len(tok.vocab)


@pytest.mark.filterwarnings("ignore:the corpus ran out of pairs")
def test_paths_and_texts_give_the_same_tokenizer(tmp_path):
    texts = ["first document, about cats.", "second document about dogs and cats"]
    (tmp_path / "a.txt").write_text(texts[0], encoding="utf-8")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": texts[1]}) + "\n", encoding="utf-8")
    from_texts = Tokenizer.train(texts, 290, progress=False)
    assert Tokenizer.train([tmp_path], 290, progress=False) == from_texts
    assert Tokenizer.train([tmp_path / "a.txt", tmp_path / "docs.jsonl"], 290, progress=False) == from_texts
    # a str is always a text, even one naming an existing file (the warning says how to read the file)
    with pytest.warns(UserWarning, match="pathlib.Path"):
        as_str = Tokenizer.train([str(tmp_path / "a.txt")], 290, progress=False)
    learned = [as_str.vocab[256 + i] for i in range(len(as_str.merges))]
    assert learned and all(b in str(tmp_path / "a.txt").encode() for b in learned)


@pytest.mark.parametrize(
    "inputs, vocab_size, message",
    [
        (["text"], 255, "at least 256"),
        ([], 300, "empty"),
        (["", ""], 300, "empty"),
        ([Path("/nonexistent/corpus.txt")], 300, "no such file"),
        ([b"bytes"], 300, "must be a str"),
    ],
)
def test_bad_input(inputs, vocab_size, message):
    with pytest.raises(UserError, match=message):
        Tokenizer.train(inputs, vocab_size, progress=False)


def test_empty_special_token_is_refused():
    with pytest.raises(UserError, match="non-empty"):
        Tokenizer.train(["abc"], 300, special_tokens=["<|endoftext|>", ""], progress=False)


def test_non_utf8_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(UserError, match="offset 3"):
        Tokenizer.train([bad], 300, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = Tokenizer.train([bad], 300, progress=False, errors="replace")
    assert "\ufffd" in tok.decode(tok.encode("caf\ufffd"))


def test_unknown_trainer():
    with pytest.raises(UserError, match="unknown trainer"):
        Tokenizer.train(["ab"], 300, trainer="magic", progress=False)


def test_fast_trainer_without_numba():
    """The kernel is plain Python when numba is missing: same code, same merges (NUMBA_DISABLE_JIT runs it so)."""
    import os
    import subprocess
    import sys

    code = (
        "from ownlm.tokenizer.fastbpe import train_fast; from ownlm.tokenizer.train import train_reference; "
        "c = {b'the cat': 3, b'the hat': 2, b'aaaa': 2, b'abab': 1, b'\\xe4\\xbd\\xa0': 2}; "
        "assert train_fast(c, 14) == train_reference(c, 14), 'differs'; print('same')"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stderr[-2000:]
