"""Token shards, ``ownlm encode`` and training batches."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.cli import main
from ownlm.data.batches import WindowSampler, sequential_batches
from ownlm.data.encode import EncodeConfig, encode_corpus, split_points
from ownlm.data.shards import ShardWriter, TokenArray, check_tokenizer, dtype_for_vocab, open_split
from ownlm.errors import UserError
from ownlm.tokenizer import Tokenizer

EOT = "<|endoftext|>"
DOCS = [
    "First document.\nIt has two lines.",
    "Zweites Dokument: äöü ß — «ok» 你好",
    "third\n\n  spaced   out\t\n",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    text = " ".join(DOCS) * 20 + " the quick brown fox jumps over the lazy dog" * 20
    Tokenizer.train([text], vocab_size=300, progress=False).save(d)
    return d


def _decode_split(out, split):
    tok = Tokenizer.load(out)
    return tok.decode(np.asarray(open_split(out, split)).tolist())


def test_encode_round_trip_jsonl_and_text_files(tmp_path, tok_dir):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(DOCS * 4)))
    book = tmp_path / "book.txt"
    book_text = "Once upon a time.\n" * 50
    book.write_text(book_text)
    out = tmp_path / "tokens"
    assert (
        main(
            ["encode", str(docs), str(book), "--tokenizer", str(tok_dir), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    # JSONL: the last 10% of its 12 documents (1) go to val; a text file: its last 10% of characters.
    cut = int(len(book_text) * 0.9)
    train_docs = (DOCS * 4)[:11] + [book_text[:cut]]
    assert _decode_split(out, "train") == "".join(d + EOT for d in train_docs)
    assert _decode_split(out, "val") == "".join(d + EOT for d in [(DOCS * 4)[11], book_text[cut:]])
    m = json.loads((out / "manifest.json").read_text())
    assert (
        m["format"] == "ownlm-tokens"
        and m["dtype"] == "uint16"
        and m["eot_id"] == Tokenizer.load(tok_dir).eot_id
    )
    assert m["tokenizer_sha256"] == Tokenizer.load(tok_dir).sha256()
    assert m["splits"]["train"]["bytes"] == sum(len(d.encode()) for d in train_docs)
    assert m["splits"]["train"]["documents"] == 12
    assert (out / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_encode_corpus_folder_keeps_its_split(tmp_path, tok_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS))
    (corpus / "val.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    out = tmp_path / "tokens"
    encode_corpus(EncodeConfig(corpus=[str(corpus)], tokenizer=str(tok_dir), out=str(out), progress=False))
    assert _decode_split(out, "train") == "".join(d + EOT for d in DOCS)
    assert _decode_split(out, "val") == "held out" + EOT


def test_long_text_encoded_in_pieces_equals_whole(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()[:300_000]
    for pattern in ("gpt2", "gpt4"):
        tok = Tokenizer.train([text[:50_000]], vocab_size=400, pattern=pattern, progress=False)
        cuts = split_points(text, piece_chars=5_000)
        assert len(cuts) > 10
        bounds = [0, *cuts, len(text)]
        pieces = [tok.encode_ordinary(text[a:b]) for a, b in zip(bounds, bounds[1:])]
        assert sum(pieces, []) == tok.encode_ordinary(text)


def test_dtype_choice_and_uint32_shards(tmp_path):
    assert dtype_for_vocab(65536) == np.uint16 and dtype_for_vocab(65537) == np.uint32
    ids = np.arange(70_000, 70_000 + 1000, dtype=np.uint32)
    w = ShardWriter(tmp_path, "train", np.uint32, shard_tokens=300)
    w.write(ids[:500])
    w.write(ids[500:])
    shards = w.close()
    assert [s["tokens"] for s in shards] == [300, 300, 300, 100]
    manifest = {"dtype": "uint32", "vocab_size": 70_000 + 1000, "splits": {"train": {"shards": shards}}}
    arr = open_split(tmp_path, "train", manifest)
    assert isinstance(arr, TokenArray) and len(arr) == 1000
    assert np.array_equal(np.asarray(arr), ids)
    assert arr[299] == ids[299] and arr[-1] == ids[-1]
    assert np.array_equal(arr[250:650], ids[250:650])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=6), st.integers(-30, 90), st.integers(-30, 90))
def test_token_array_slices_like_numpy(sizes, a, b):
    parts = [np.arange(sum(sizes[:i]), sum(sizes[: i + 1]), dtype=np.uint16) for i in range(len(sizes))]
    whole = np.concatenate(parts)
    arr = TokenArray(parts, np.uint16)
    assert np.array_equal(arr[a:b], whole[a:b])


def test_manifest_mismatch_is_a_clear_error(tmp_path, tok_dir):
    with pytest.raises(UserError, match="another tokenizer"):
        check_tokenizer({"tokenizer_sha256": "a" * 64}, "b" * 64, "the checkpoint", tmp_path)
    check_tokenizer({"tokenizer_sha256": "a" * 64}, "a" * 64, "the checkpoint", tmp_path)  # same: fine


def test_damaged_shard_is_reported(tmp_path, tok_dir):
    src = tmp_path / "a.txt"
    src.write_text("hello world\n" * 100)
    out = tmp_path / "tokens"
    assert main(["encode", str(src), "--tokenizer", str(tok_dir), "--out", str(out), "--no-progress"]) == 0
    shard = out / "train" / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UserError, match="damaged"):
        open_split(out, "train")


def test_encode_bad_inputs_exit_2_and_leave_no_output(tmp_path, tok_dir, capsys):
    out = tmp_path / "tokens"
    base = ["--tokenizer", str(tok_dir), "--out", str(out), "--no-progress"]
    assert main(["encode", str(tmp_path / "missing.txt"), *base]) == 2
    assert "no such file" in capsys.readouterr().err
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"ok text\n" * 10 + b"\x00\x01\x02")
    assert main(["encode", str(binary), *base]) == 2
    assert "binary" in capsys.readouterr().err
    assert main(["encode", str(binary), "--tokenizer", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokens")]  # no temp folders left
    # a good earlier output survives a failed re-run
    good = tmp_path / "good.txt"
    good.write_text("fine text\n" * 20)
    assert main(["encode", str(good), *base]) == 0
    before = (out / "manifest.json").read_text()
    assert main(["encode", str(binary), *base]) == 2
    assert (out / "manifest.json").read_text() == before


# ------------------------------------------------------------------------------------------ batches


def test_random_windows_in_range_shifted_and_deterministic():
    tokens = np.arange(1000, dtype=np.uint16)
    s = WindowSampler(tokens, block_size=16, batch_size=8, seed=3)
    for i in range(20):
        x, y = s.batch(i)
        assert x.shape == y.shape == (8, 16) and x.dtype == np.int64
        assert (x >= 0).all() and (y <= 999).all()
        assert np.array_equal(y, x + 1)  # targets are the next tokens
    assert np.array_equal(s.batch(5)[0], WindowSampler(tokens, 16, 8, seed=3).batch(5)[0])
    assert not np.array_equal(s.batch(5)[0], s.batch(6)[0])
    assert not np.array_equal(s.batch(5)[0], WindowSampler(tokens, 16, 8, seed=4).batch(5)[0])


@pytest.mark.parametrize("stride", [None, 5])
def test_ranks_split_the_global_batch(stride):
    tokens = np.arange(500, dtype=np.uint16)
    one = WindowSampler(tokens, 10, 6, seed=1, stride=stride)
    two = [WindowSampler(tokens, 10, 3, seed=1, stride=stride, rank=r, world_size=2) for r in range(2)]
    for i in range(5):
        assert np.array_equal(one.batch(i)[0], np.concatenate([t.batch(i)[0] for t in two]))


@pytest.mark.parametrize("stride,block", [(4, 4), (3, 8), (8, 8)])
def test_stride_covers_every_window_once_per_epoch(stride, block):
    n = 203
    tokens = np.arange(n, dtype=np.uint16)
    s = WindowSampler(tokens, block, batch_size=1, seed=0, stride=stride)
    starts = [int(s.starts(i)[0]) for i in range(s.windows_per_epoch())]
    assert sorted(starts) == list(range(0, n - block, stride))  # each start exactly once
    covered = set()
    for a in starts:
        covered.update(range(a, a + block + 1))
    assert covered >= set(range(0, starts and max(starts) + block + 1))
    assert max(starts) + block + 1 > n - stride - 1  # the tail left out is shorter than one stride


def test_too_short_corpus_says_how_many_tokens():
    with pytest.raises(UserError, match=r"has 10 tokens.*needs block_size \+ 1 = 17"):
        WindowSampler(np.arange(10), block_size=16, batch_size=2)
    WindowSampler(np.arange(17), block_size=16, batch_size=2).batch(0)  # exactly one window: fine


def test_sequential_batches_cover_the_split_once():
    tokens = np.arange(95)
    xs = np.concatenate([x.ravel() for x, _ in sequential_batches(tokens, 10, 4)])
    assert np.array_equal(xs, np.arange(90))
