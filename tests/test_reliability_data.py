"""Reliability of the data stages: encode/corpus/tokenizer never delete a user's files, shards are verified on
load, the tokenizer's traps are closed, extraction reads with caps (see docs/reliability.md)."""

import io
import json
import warnings
import zipfile

import numpy as np
import pytest

from ownlm.cli import main as cli
from ownlm.data.shards import open_split
from ownlm.errors import UserError
from ownlm.extract.limits import LimitExceeded, Limits
from ownlm.io import LOCK_FILE, sha256_file
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.train import check_vocab_memory, iter_texts

TEXT = "The cat sat on the mat. The dog sat on the log.\n" * 40


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text(TEXT)
    tok = tmp_path / "tok"
    Tokenizer.train([TEXT], 270, progress=False).save(tok)
    return src, tok


LAST_OUT = []


def _run(capsys, *argv):
    """Run ``ownlm ARGV``; return (exit code, stderr); stdout goes to LAST_OUT[-1]."""
    code = cli([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    LAST_OUT.append(out.out)
    return code, out.err


# ---------------------------------------------------------------------------------------------- no lost file


def test_encode_never_deletes_a_users_folder(tmp_path, corpus, capsys):
    src, tok = corpus
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, err = _run(capsys, "encode", src, "--tokenizer", tok, "--out", mine, "--no-progress")
    assert code == 2 and "ownlm did not make it" in err
    code, err = _run(capsys, "encode", src, "--tokenizer", tok, "--out", mine, "--no-progress", "--force")
    assert code == 2 and (mine / "notes.txt").read_text() == "precious"


def test_encode_never_writes_over_its_input(tmp_path, corpus, capsys):
    src, tok = corpus
    assert _run(capsys, "corpus", src, "--out", tmp_path / "corpus")[0] == 0
    before = sha256_file(tmp_path / "corpus" / "train.jsonl")
    code, err = _run(
        capsys, "encode", tmp_path / "corpus", "--tokenizer", tok, "--out", tmp_path / "corpus", "--force"
    )
    assert code == 2 and "would write over the input" in err
    assert sha256_file(tmp_path / "corpus" / "train.jsonl") == before
    code, err = _run(capsys, "encode", src, "--tokenizer", tok, "--out", tok, "--force")
    assert code == 2 and (tok / "tokenizer.json").exists()


def test_encode_reruns_into_its_own_output(tmp_path, corpus, capsys):
    src, tok = corpus
    out = tmp_path / "tokens"
    for _ in range(2):
        assert _run(capsys, "encode", src, "--tokenizer", tok, "--out", out, "--no-progress")[0] == 0
    assert (out / "manifest.json").exists() and not (out / LOCK_FILE).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_corpus_run_leaves_no_folder_and_empty_files_are_problems(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    code, err = _run(capsys, "corpus", empty, "--out", tmp_path / "c")
    assert code == 2 and not (tmp_path / "c").exists()
    good = tmp_path / "good.txt"
    good.write_text(TEXT)
    assert _run(capsys, "corpus", empty, good, "--out", tmp_path / "c2")[0] == 0
    m = json.loads((tmp_path / "c2" / "manifest.json").read_text())
    assert m["problems_total"] == 1 and m["problems"][0]["where"].endswith("empty.txt")
    assert "held no text: " in LAST_OUT[-1] and "empty.txt" in LAST_OUT[-1]


def test_tokenizer_train_keeps_a_users_folder(tmp_path, corpus, capsys):
    src, _ = corpus
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("mine")
    code, err = _run(capsys, "tokenizer", "train", src, "--out", mine, "--vocab-size", "270", "--no-progress")
    assert code == 2 and (mine / "a.txt").read_text() == "mine"
    out = tmp_path / "tok2"
    for _ in range(2):  # its own output may be trained again
        assert (
            _run(capsys, "tokenizer", "train", src, "--out", out, "--vocab-size", "270", "--no-progress")[0]
            == 0
        )


# ---------------------------------------------------------------------------------------------- shards


@pytest.fixture
def tokens(tmp_path, corpus, capsys):
    src, tok = corpus
    out = tmp_path / "tokens"
    assert _run(capsys, "encode", src, "--tokenizer", tok, "--out", out, "--no-progress")[0] == 0
    return out


def test_out_of_range_id_of_the_right_size_is_caught(tokens):
    shard = tokens / "train" / "shard_00000.bin"
    ids = np.fromfile(shard, dtype="<u2")
    assert open_split(tokens, "train")[:].tolist() == ids.tolist()
    ids[len(ids) // 2] = 60_000  # same size, impossible id
    ids.tofile(shard)
    with pytest.raises(UserError, match=r"shard_00000\.bin: token id 60000 at position"):
        open_split(tokens, "train")
    assert len(open_split(tokens, "train", verify=False)) == len(ids)


def test_full_verify_checks_sha256(tokens):
    shard = tokens / "train" / "shard_00000.bin"
    ids = np.fromfile(shard, dtype="<u2")
    ids[0], ids[1] = ids[1], ids[0] + (ids[0] == ids[1])  # still in range, different bytes
    ids.tofile(shard)
    open_split(tokens, "train")  # in range: the quick check passes
    with pytest.raises(UserError, match="sha256"):
        open_split(tokens, "train", verify="full")


def test_truncated_shard_is_caught(tokens):
    shard = tokens / "train" / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UserError, match="shard_00000.bin: .* bytes, but manifest.json says"):
        open_split(tokens, "train")


# ---------------------------------------------------------------------------------------------- tokenizer traps


@pytest.mark.parametrize("text", ["/", ".", "/proc", "~", "src"])
def test_a_str_is_always_text_never_a_path(text):
    assert list(iter_texts([text])) == [text]


def test_a_str_shaped_like_a_file_name_warns():
    with pytest.warns(UserWarning, match=r"pathlib\.Path\('corpus\.txt'\)"):
        assert list(iter_texts(["corpus.txt"])) == ["corpus.txt"]


def test_a_path_is_read(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    from pathlib import Path

    assert list(iter_texts([Path(tmp_path / "a.txt")])) == ["hello"]


def test_huge_vocab_is_refused_up_front(tmp_path, capsys):
    with pytest.raises(UserError, match=r"1,000,000,000 needs about .* GiB"):
        check_vocab_memory(10**9, available=64 << 30)
    check_vocab_memory(50_000, available=8 << 30)
    (tmp_path / "a.txt").write_text("abc")
    code, err = _run(
        capsys,
        "tokenizer",
        "train",
        tmp_path / "a.txt",
        "--out",
        tmp_path / "t",
        "--vocab-size",
        "1000000000000",
    )
    assert code == 2 and "GiB" in err and not (tmp_path / "t").exists()


def test_vocab_larger_than_the_data_allows_sizes_tables_by_the_data():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = Tokenizer.train(["abab"], 5_000_000, progress=False)
    assert len(tok.merges) <= 3


@pytest.mark.parametrize("pattern", ["(a+)+$", r"\w+", r"\s+", "x"])
def test_a_pattern_that_drops_text_is_refused(pattern, tmp_path):
    with pytest.raises(UserError, match="keeps only"):
        Tokenizer(pattern=pattern)
    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text(json.dumps({"format": "ownlm-bpe", "version": 1, "pattern": pattern, "merges": []}))
    with pytest.raises(UserError, match="keeps only"):
        Tokenizer.load(tok_file)


def test_inspect_output_has_no_long_lines(tmp_path, capsys):
    long = "abcdefghij" * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Tokenizer.train([long] * 3, 256 + 1200, pattern=r"\S+|\s+", progress=False).save(tmp_path / "t")
    assert cli(["tokenizer", "inspect", str(tmp_path / "t"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "…(" in out and long not in out and max(map(len, out.splitlines())) < 400


# ---------------------------------------------------------------------------------------------- memory caps


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_limits_read_in_chunks_and_stop_past_the_cap():
    lim = Limits(max_file_bytes=1000, chunk_bytes=64)
    assert lim.read(io.BytesIO(b"x" * 1000)) == b"x" * 1000
    with pytest.raises(LimitExceeded, match="more than 1,000 bytes once read, over the limit for one file"):
        lim.read(io.BytesIO(b"x" * 1001))


def test_a_small_zip_of_a_huge_member_is_a_problem_not_a_memory_blowup(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OWNLM_MAX_FILE_MB", "1")
    monkeypatch.setenv("OWNLM_MAX_ARCHIVE_MB", "3")
    bomb = _zip({"good.txt": b"some good text here\n" * 10, "huge.txt": b"a" * (8 << 20)})
    assert len(bomb) < 100_000
    (tmp_path / "in.zip").write_bytes(bomb)
    code, _ = _run(capsys, "extract", tmp_path / "in.zip", "--out", tmp_path / "docs.jsonl")
    assert code == 0
    summary = json.loads((tmp_path / "docs.summary.json").read_text())
    text = json.dumps(summary)
    assert "huge.txt" in text and "limit" in text
    assert "some good text" in (tmp_path / "docs.jsonl").read_text()


def test_archive_total_is_capped_even_when_headers_lie(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OWNLM_MAX_ARCHIVE_MB", "500")  # the flags win over the environment
    members = {f"part{i}.txt": (f"part {i} " * 100_000)[:900_000].encode() for i in range(5)}
    (tmp_path / "in.zip").write_bytes(_zip(members))
    code, _ = _run(capsys, "extract", tmp_path / "in.zip", "--out", tmp_path / "docs.jsonl", "--max-file-mb", "1",
                   "--max-archive-mb", "2")  # fmt: skip
    assert code == 0
    text = (tmp_path / "docs.summary.json").read_text()
    assert "--max-archive-mb" in text
    kept = [json.loads(line)["source"] for line in (tmp_path / "docs.jsonl").read_text().splitlines()]
    assert 1 <= len(kept) <= 2  # 2 MiB of 0.9 MB members: the rest was not read


def test_a_file_over_the_limit_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OWNLM_MAX_FILE_MB", "0.5")
    (tmp_path / "big.txt").write_bytes(b"line of a log\n" * 50_000)
    (tmp_path / "ok.txt").write_text("a small file with text")
    code, _ = _run(capsys, "extract", tmp_path, "--out", tmp_path / "out" / "docs.jsonl")
    assert code == 0
    assert "big.txt" in (tmp_path / "out" / "docs.summary.json").read_text()
    code, _ = _run(
        capsys, "extract", tmp_path / "big.txt", "--out", tmp_path / "o2" / "docs.jsonl", "--max-file-mb", "2"
    )
    assert code == 0 and "line of a log" in (tmp_path / "o2" / "docs.jsonl").read_text()
    code, err = _run(
        capsys, "extract", tmp_path / "ok.txt", "--out", tmp_path / "o3.jsonl", "--max-file-mb", "-1"
    )
    assert code == 2 and "--max-file-mb must be a finite number >= 0" in err


def test_text_too_big_for_memory_is_refused_with_the_figure(tmp_path):
    from ownlm.textsource import check_fits

    with pytest.raises(UserError, match=r"3\.0 GiB; reading it needs about 12\.0 GiB"):
        check_fits(tmp_path / "huge.log", 3 << 30, available=8 << 30)
    check_fits(tmp_path / "small.log", 1 << 20, available=8 << 30)
