"""``ownlm extract`` end to end through ``ownlm.cli.main``: folders, zips, the summary, bad input, flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from extract_samples import make_docx, make_epub, make_pdf, make_zip

from ownlm.cli import main
from ownlm.extract.stage import record_id, summary_path


def extract(*argv: str) -> int:
    return main(["extract", *argv])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def summary_of(out: Path) -> dict:
    return json.loads(summary_path(out).read_text(encoding="utf-8"))


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A messy folder: one file per reader, a broken JSONL line, a binary .txt, an image, a hidden file."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("Plain notes.\r\nSecond line.\r\n", encoding="utf-8")
    (d / "readme.md").write_text("# Title\n\nSome *markdown*.\n", encoding="utf-8")
    (d / "page.html").write_text("<nav><a href=/>Home</a></nav><p>Web page text.</p>", encoding="utf-8")
    (d / "sub" / "report.pdf").write_bytes(make_pdf(["PDF page one", None]))
    (d / "sub" / "book.epub").write_bytes(make_epub([("c1", "<p>Chapter text.</p>")]))
    (d / "sub" / "letter.docx").write_bytes(make_docx())
    (d / "data.jsonl").write_text('{"text": "record one"}\n{"text": broken\n{"text": "record two"}\n')
    (d / "table.csv").write_text("id,content\n1,csv row text\n", encoding="utf-8")
    (d / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (d / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / ".hidden.txt").write_text("never read")
    return d


def test_mixed_folder(mixed: Path, tmp_path: Path, capsys):
    out = tmp_path / "out" / "docs.jsonl"
    assert extract(str(mixed), "--out", str(out)) == 0
    recs = records(out)
    texts = {Path(r["source"].split(":")[0]).name: r["text"] for r in recs}
    assert texts["notes.txt"] == "Plain notes.\nSecond line.\n"
    assert texts["page.html"] == "Web page text."
    assert texts["report.pdf"] == "PDF page one"
    assert texts["book.epub"] == "Chapter text."
    assert "- first bullet" in texts["letter.docx"]
    assert texts["table.csv"] == "csv row text"
    assert sorted(r["text"] for r in recs if r["source"].startswith(str(mixed / "data.jsonl"))) == [
        "record one",
        "record two",
    ]
    assert all(set(r) == {"id", "text", "source", "meta"} for r in recs)
    assert len({r["id"] for r in recs}) == len(recs)
    assert not any("never read" in r["text"] for r in recs)

    s = summary_of(out)
    assert s["documents"] == len(recs) == 9
    assert s["characters"] == sum(len(r["text"]) for r in recs)
    assert s["readers"]["text"]["files"] == 3 and s["readers"]["text"]["failed"] == 1
    assert s["readers"]["tabular"]["documents"] == 3
    assert s["scanned_pages"] == 1 and s["readers"]["pdf"]["scanned_pages"] == 1
    problems = {Path(e["file"]).name: e["reason"] for e in s["errors"]}
    assert "binary" in problems["binary.txt"]
    assert "broken JSON line" in problems["data.jsonl:2"]
    assert s["skipped"]["by_extension"] == {".jpg": 1}
    assert any("no text layer" in n["note"] for n in s["notes"])
    printed = capsys.readouterr().out
    assert "binary.txt" in printed and "data.jsonl:2" in printed and "summary:" in printed


def test_ids_are_stable_and_output_is_deterministic(mixed: Path, tmp_path: Path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert extract(str(mixed), "--out", str(a)) == 0
    assert extract(str(mixed), "--out", str(b)) == 0
    assert a.read_bytes() == b.read_bytes()
    first = records(a)[0]
    assert first["id"] == record_id(first["source"].split(":")[0], 0)


def test_zip_members_read_like_the_folder(mixed: Path, tmp_path: Path):
    members = {
        p.relative_to(mixed).as_posix(): p.read_bytes() for p in sorted(mixed.rglob("*")) if p.is_file()
    }
    members["nested.zip"] = make_zip({"deep.txt": b"deep text"})
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(make_zip(members))
    folder_out, zip_out = tmp_path / "f.jsonl", tmp_path / "z.jsonl"
    assert extract(str(mixed), "--out", str(folder_out)) == 0
    assert extract(str(archive), "--out", str(zip_out)) == 0
    from_zip = records(zip_out)
    by_source = {r["source"]: r["text"] for r in from_zip}
    assert by_source[f"{archive.as_posix()}/notes.txt"] == "Plain notes.\nSecond line.\n"
    assert by_source[f"{archive.as_posix()}/nested.zip/deep.txt"] == "deep text"
    assert sorted(r["text"] for r in records(folder_out)) == sorted(
        t for t in by_source.values() if t != "deep text"
    )


def test_whatsapp_export_zip_becomes_a_conversation(shared_data, tmp_path: Path):
    chat = shared_data / "chats" / "sodascience" / "_chat.txt"
    archive = tmp_path / "WhatsApp Chat with Ann.zip"
    archive.write_bytes(make_zip({"_chat.txt": chat.read_bytes(), "IMG-0001.jpg": b"\xff\xd8"}))
    out = tmp_path / "chats.jsonl"
    assert extract(str(archive), "--out", str(out)) == 0
    (conv,) = records(out)
    assert set(conv) == {"id", "source", "messages", "meta"}
    assert conv["source"].endswith("/_chat.txt")
    assert conv["messages"][0] == {"name": "person1", "time": "2022-03-16T15:20:25", "text": "Hi shiva!"}
    s = summary_of(out)
    assert s["conversations"] == 1 and s["messages"] == len(conv["messages"])
    assert s["readers"]["whatsapp"]["messages"] == len(conv["messages"])


def test_truncated_zip_is_reported_and_the_rest_kept(tmp_path: Path):
    good = tmp_path / "good.txt"
    good.write_text("good text")
    bad = tmp_path / "bad.zip"
    data = make_zip({"a.txt": b"a" * 5000, "b.txt": b"b" * 5000})
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.jsonl"
    assert extract(str(good), str(bad), "--out", str(out)) == 0
    assert [r["text"] for r in records(out)] == ["good text"]
    (err,) = summary_of(out)["errors"]
    assert err["file"] == bad.as_posix() and "truncated" in err["reason"]


def test_nothing_usable_exits_2_and_writes_nothing(tmp_path: Path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "o.jsonl"
    assert extract(str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "nothing extracted" in err and "bad.zip" in err and "truncated" in err
    assert err.startswith("ownlm: error: ") and err.count("\n") == 1  # one problem: one line
    assert not out.exists() and not summary_path(out).exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temp files left behind


def test_empty_folder_and_missing_path(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_text("x")
    assert extract(str(empty), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "folder is empty" in capsys.readouterr().err
    assert extract(str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert extract("--out", str(tmp_path / "o.jsonl")) == 2
    assert "no input given" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_out_that_cannot_be_written_is_a_user_error(tmp_path: Path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("good text")
    assert extract(str(good), "--out", str(tmp_path)) == 2
    assert "is a folder" in capsys.readouterr().err
    assert extract(str(good), "--out", str(good / "o.jsonl")) == 2  # a file where a folder must be
    err = capsys.readouterr().err
    assert err.startswith("ownlm: error: ") and "is a file, not a folder" in err and err.count("\n") == 1
    assert sorted(tmp_path.iterdir()) == [good] and good.read_text() == "good text"


def test_named_unsupported_file_is_an_error(tmp_path: Path, capsys):
    (tmp_path / "a.txt").write_text("fine")
    (tmp_path / "b.xyz").write_bytes(b"\x00\x01")
    out = tmp_path / "o.jsonl"
    assert extract(str(tmp_path / "a.txt"), str(tmp_path / "b.xyz"), "--out", str(out)) == 0
    (err,) = summary_of(out)["errors"]
    assert err["file"].endswith("b.xyz") and "no reader" in err["reason"]


def test_strict_stops_at_the_first_problem(mixed: Path, tmp_path: Path, capsys):
    out = tmp_path / "o.jsonl"
    assert extract(str(mixed), "--out", str(out), "--strict") == 2
    err = capsys.readouterr().err
    assert "--strict" in err and "binary.txt" in err and err.count("\n") == 1
    assert not out.exists()
    (mixed / "binary.txt").unlink()
    assert extract(str(mixed), "--out", str(out), "--strict") == 2
    assert "data.jsonl:2" in capsys.readouterr().err  # a broken line is a problem too
    assert not out.exists()


def test_redact_and_min_chars(tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(
        "Write to ann@example.org or call +1 (555) 123-4567, https://x.org/p"
    )
    (tmp_path / "in" / "short.txt").write_text("tiny")
    out = tmp_path / "o.jsonl"
    assert extract(str(tmp_path / "in"), "--out", str(out), "--redact", "--min-chars", "10") == 0
    (rec,) = records(out)
    assert rec["text"] == "Write to <EMAIL> or call <PHONE>, <URL>"
    s = summary_of(out)
    assert s["dropped_short"] == 1 and s["config"]["redact"] is True


def test_pdf_password_flag_is_not_written_to_disk(tmp_path: Path):
    from extract_samples import encrypt_pdf

    pdf = tmp_path / "locked.pdf"
    pdf.write_bytes(encrypt_pdf(make_pdf(["Unlocked text"]), "pw123"))
    out = tmp_path / "o.jsonl"
    assert extract(str(pdf), "--out", str(out)) == 2  # the only file cannot be read: nothing usable
    assert extract(str(pdf), "--out", str(out), "--password", "pw123") == 0
    assert records(out)[0]["text"] == "Unlocked text"
    assert "pw123" not in summary_path(out).read_text()


def test_output_inside_the_input_folder_is_not_read_back(tmp_path: Path):
    (tmp_path / "a.txt").write_text("alpha")
    out = tmp_path / "docs.jsonl"
    assert extract(str(tmp_path), "--out", str(out)) == 0
    assert extract(str(tmp_path), "--out", str(out)) == 0  # second run sees docs.jsonl and its summary
    assert [r["text"] for r in records(out)] == ["alpha"]


def test_shared_docs_folder(shared_data, tmp_path: Path):
    # A few real fixtures of every kind, including the failure paths (encrypted, scanned, strict OOXML).
    pick = [
        "pdf/encrypted-file.pdf",
        "pdf/git.pdf",
        "pdf/textract_raw_text.pdf",
        "epub/textract_raw_text.epub",
        "docx/mammoth_strict-format.docx",
        "docx/textract_paragraphs_and_tables.docx",
        "html/trafilatura_wiki.python.org.Download.html",
        "other/textract_raw_text.rtf",
    ]
    folder = tmp_path / "docs"
    for name in pick:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "docs" / name, folder / name)
    out = tmp_path / "o.jsonl"
    assert extract(str(folder), "--out", str(out), "--password", "test") == 0
    s = summary_of(out)
    assert s["documents"] == 6
    (err,) = s["errors"]
    assert err["file"].endswith("git.pdf") and "scanned" in err["reason"]
    assert s["skipped"]["by_extension"] == {".rtf": 1}
