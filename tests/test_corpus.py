"""ownlm corpus: cleaning, exact and near-duplicate removal, the train/val split, the manifest, the CLI."""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.cli import main as cli
from ownlm.corpus import CorpusConfig, build_corpus, clean_text, id_fraction, split_conversation
from ownlm.minhash import NearDupIndex, shingles

WORDS = [f"w{i}{c}" for i in range(300) for c in "ab"]


def _salad(seed: int, n_words: int = 400) -> str:
    """A deterministic random 'document': different seeds give unrelated texts."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _edit(text: str, seed: int, rate: float = 0.01) -> str:
    """A lightly edited copy: about ``rate`` of the words replaced."""
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * rate))):
        words[i] = "edited"
    return " ".join(words)


def _write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(tmp_path: Path, docs: list[dict], name: str = "corpus", **kw) -> tuple[dict, list[dict], list[dict]]:
    src = _write_docs(tmp_path / f"{name}.jsonl", docs)
    m = build_corpus(CorpusConfig(out=str(tmp_path / name), inputs=[str(src)], **kw))
    return m, _read(tmp_path / name / "train.jsonl"), _read(tmp_path / name / "val.jsonl")


# ---------------------------------------------------------------- cleaning

any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=200)


@given(any_text)
@settings(max_examples=300, deadline=None)
def test_clean_text_is_idempotent_and_clean(s):
    once = clean_text(s)
    assert clean_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    once.encode("utf-8")  # no lone surrogates left
    assert "\r" not in once and "\n\n\n" not in once
    assert all(not line or not line[-1].isspace() for line in once.split("\n"))
    assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in once)


def test_clean_text_keeps_paragraphs_and_indentation():
    text = "def f():\r\n    return 1   \r\n\r\n\r\n\r\nNext para\u2028line"
    assert clean_text(text) == "def f():\n    return 1\n\nNext para\nline"
    assert clean_text("e\u0301") == "\u00e9"  # NFC composes


# ---------------------------------------------------------------- duplicates


def test_exact_duplicates_removed_first_copy_kept(tmp_path):
    base = [{"id": f"d{i}", "text": _salad(i)} for i in range(20)]
    copies = [
        {"id": "copy0", "text": base[0]["text"]},
        {"id": "copy1", "text": base[1]["text"].upper()},  # case does not count
        {"id": "copy2", "text": "  " + base[2]["text"].replace(" ", "\n\n ")},  # nor whitespace
        {"id": "copy0b", "text": base[0]["text"] + "\n"},
    ]
    m, train, val = _run(tmp_path, base[:10] + copies + base[10:], near_dup=False)
    kept = {d["id"] for d in train + val}
    assert kept == {d["id"] for d in base}
    assert m["removed"]["exact_duplicates"] == len(copies)
    log = _read(tmp_path / "corpus" / "duplicates.jsonl")
    assert sorted(e["id"] for e in log) == sorted(c["id"] for c in copies)


def test_near_duplicates_removed_distinct_kept(tmp_path):
    base = [{"id": f"d{i}", "text": _salad(i)} for i in range(40)]
    edits = [{"id": f"e{i}", "text": _edit(base[i]["text"], seed=100 + i)} for i in range(0, 40, 4)]
    m, train, val = _run(tmp_path, base + edits)
    assert {d["id"] for d in train + val} == {d["id"] for d in base}
    assert m["removed"]["near_duplicates"] == len(edits)
    assert m["removed"]["exact_duplicates"] == 0


def test_near_dup_index_estimates_jaccard():
    # MinHash's estimate is within a few standard errors of the true Jaccard similarity.
    a, b = _salad(1, 2000), _edit(_salad(1, 2000), seed=2, rate=0.1)
    sa, sb = shingles(a, 7), shingles(b, 7)
    true_j = len(set(sa.tolist()) & set(sb.tolist())) / len(set(sa.tolist()) | set(sb.tolist()))
    index = NearDupIndex(threshold=0.3, num_perm=256)
    index.add_if_new(a)
    _, est, _ = index.find(b)
    assert abs(est - true_j) < 4 * (true_j * (1 - true_j) / 256) ** 0.5 + 0.01


def test_near_dup_works_without_spaces():
    # Character shingles: a language written without spaces deduplicates too.
    rng = random.Random(0)
    han = [chr(0x4E00 + rng.randrange(2000)) for _ in range(3000)]
    text = "".join(han)
    edited = text[:1000] + "的" + text[1001:2000] + "了" + text[2001:]
    index = NearDupIndex()
    assert index.add_if_new(text)
    assert not index.add_if_new(edited)
    assert index.add_if_new("".join(reversed(han)))


def test_distinct_books_never_merged_but_edited_copies_are(shared_data, tmp_path):
    books = sorted((shared_data / "gutenberg").glob("*.txt"))
    docs = [{"id": p.name, "text": p.read_text(encoding="utf-8")[:60_000]} for p in books]
    edits = [{"id": "edit-" + d["id"], "text": _edit(d["text"], seed=i)} for i, d in enumerate(docs[:5])]
    m, train, val = _run(tmp_path, docs + edits)
    assert {d["id"] for d in train + val} == {d["id"] for d in docs}
    assert m["removed"]["near_duplicates"] == len(edits)


@pytest.mark.slow
def test_whole_distinct_books_never_merged(shared_data, tmp_path):
    books = sorted((shared_data / "gutenberg").glob("*.txt"))
    docs = [{"id": p.name, "text": p.read_text(encoding="utf-8")} for p in books]
    m, train, val = _run(tmp_path, docs)
    assert m["removed"]["near_duplicates"] == 0 and m["kept"] == len(docs)


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_stable_when_documents_are_added(tmp_path):
    first = [{"id": f"a{i}", "text": _salad(i, 50)} for i in range(200)]
    more = [{"id": f"b{i}", "text": _salad(1000 + i, 50)} for i in range(200)]
    _, train1, val1 = _run(tmp_path, first, name="one")
    _, train1b, val1b = _run(tmp_path, first, name="again")
    assert (train1, val1) == (train1b, val1b)
    _, train2, val2 = _run(tmp_path, first + more, name="two")
    val_ids2 = {d["id"] for d in val2}
    assert {d["id"] for d in val1} <= val_ids2
    assert not {d["id"] for d in train1} & val_ids2
    assert 0.05 < len(val2) / 400 < 0.15  # about --val-fraction 0.1


def _conversation(cid: str, n: int) -> dict:
    return {
        "id": cid,
        "source": "chat.txt",
        "messages": [
            {"name": "ann" if i % 2 else "bob", "time": f"2024-01-01T00:{i:02d}", "text": f"{cid} m{i}"}
            for i in range(n)
        ],
    }


def test_conversations_split_by_time_without_leakage(tmp_path):
    convs = [_conversation(f"c{i}", n) for i, n in enumerate([1, 2, 5, 10, 37, 60])]
    m, train, val = _run(tmp_path, convs, val_fraction=0.2)
    for c in convs:
        tr = [r for r in train if r["id"] == c["id"]]
        va = [r for r in val if r["id"] == c["id"]]
        tr_msgs = [x["text"] for r in tr for x in r["messages"]]
        va_msgs = [x["text"] for r in va for x in r["messages"]]
        assert not set(tr_msgs) & set(va_msgs)
        assert tr_msgs + va_msgs == [x["text"] for x in c["messages"]]  # nothing lost, val = the latest
        if tr and va:
            assert max(x["time"] for x in tr[0]["messages"]) < min(x["time"] for x in va[0]["messages"])
    assert len([r for r in val if r["id"] == "c5"][0]["messages"]) == 12
    assert m["splits"]["train"]["messages"] + m["splits"]["val"]["messages"] == sum(
        len(c["messages"]) for c in convs
    )


def test_split_conversation_fraction_zero_keeps_all_in_train():
    c = _conversation("x", 10)
    assert split_conversation(c, 0.0) == (c, None)


def test_tiny_corpus_still_gets_a_val_document(tmp_path):
    m, train, val = _run(tmp_path, [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}])
    assert len(train) == 1 and len(val) == 1 and m["val_fallback"]


def test_a_single_document_is_for_training_even_if_it_hashes_to_val(tmp_path):
    doc_id = next(f"x{i}" for i in range(1000) if id_fraction(f"x{i}") < 0.1)
    m, train, val = _run(tmp_path, [{"id": doc_id, "text": "the only one"}])
    assert [d["id"] for d in train] == [doc_id] and val == [] and not m["val_fallback"]


# ---------------------------------------------------------------- manifest and files


def test_manifest_counts_match_files(tmp_path):
    docs = [{"id": f"d{i}", "text": _salad(i, 60)} for i in range(50)]
    docs += [
        {"id": "dup", "text": docs[3]["text"]},
        {"id": "short", "text": "hi"},
        {"id": "long", "text": "x" * 5000},
    ]
    docs += [_conversation("c", 20)]
    m, train, val = _run(tmp_path, docs, min_chars=10, max_chars=4000)
    folder = tmp_path / "corpus"
    assert m == json.loads((folder / "manifest.json").read_text())
    assert m["records_read"] == len(docs) == m["kept"] + sum(m["removed"].values())
    assert m["removed"] == {"too_short": 1, "too_long": 1, "exact_duplicates": 1, "near_duplicates": 0}
    for name, recs in (("train", train), ("val", val)):
        s = m["splits"][name]
        assert s["documents"] == sum("text" in r for r in recs)
        assert s["conversations"] == sum("messages" in r for r in recs)
        assert s["sha256"] == hashlib.sha256((folder / f"{name}.jsonl").read_bytes()).hexdigest()
        assert s["bytes"] == (folder / f"{name}.jsonl").stat().st_size
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == m["kept"] - 1
    assert json.loads((folder / "config.json").read_text())["min_chars"] == 10


def test_text_files_and_folders_are_documents(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(5):
        (tmp_path / "in" / f"{i}.txt").write_text(_salad(i, 30) + "\r\n", encoding="utf-8")
    assert cli(["corpus", str(tmp_path / "in"), "--out", str(tmp_path / "c")]) == 0
    recs = _read(tmp_path / "c" / "train.jsonl") + _read(tmp_path / "c" / "val.jsonl")
    assert len(recs) == 5 and all("\r" not in r["text"] for r in recs)


# ---------------------------------------------------------------- CLI and bad input


def test_cli_and_stats(tmp_path, capsys):
    src = _write_docs(tmp_path / "d.jsonl", [{"id": f"d{i}", "text": _salad(i, 40)} for i in range(30)])
    assert cli(["corpus", str(src), "--out", str(tmp_path / "c"), "--val-fraction", "0.2"]) == 0
    assert cli(["corpus", "stats", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "duplicates" in out and "train" in out
    assert (tmp_path / "c" / "lengths.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n', "d.jsonl:2"),
        ('{"id": "a", "body": "no text field"}\n', "'text'"),
        ('{"id": "a", "messages": [{"name": "x"}]}\n', "message 0"),
        ("[1, 2]\n", "JSON object"),
        ('{"text": ""}\n', "no documents left"),
    ],
)
def test_bad_input_is_one_clear_error_and_no_output(tmp_path, capsys, content, message):
    (tmp_path / "d.jsonl").write_text(content, encoding="utf-8")
    assert cli(["corpus", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ownlm: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_bad_flags_and_missing_inputs(tmp_path, capsys):
    assert cli(["corpus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert cli(["corpus", "--out", str(tmp_path / "c")]) == 2
    src = _write_docs(tmp_path / "d.jsonl", [{"text": "x"}])
    assert cli(["corpus", str(src), "--out", str(tmp_path / "c"), "--val-fraction", "1.5"]) == 2
    assert cli(["corpus", "stats", str(tmp_path / "nothing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
