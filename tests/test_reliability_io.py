"""Reliability of the file layer: one JSON loader with a depth limit, the output rule, the run lock, special
files never replaced, a full disk cleaned up after, stale temp files removed (see docs/reliability.md)."""

import errno
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.io import (
    LOCK_FILE,
    MAX_JSON_DEPTH,
    OUTPUT_MARKER,
    RunLock,
    atomic_write,
    clean_stale_temps,
    iter_jsonl,
    load_json_text,
    mark_output,
    prepare_output,
    read_json,
    write_json,
)

# ---------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 100_000])
def test_deep_json_is_a_user_error_with_file_and_line(tmp_path, depth):
    p = tmp_path / "deep.json"
    p.write_text('{"a":\n' + "[" * depth + "]" * depth + "}")
    with pytest.raises(UserError, match=rf"deep\.json:2: .*nested deeper than {MAX_JSON_DEPTH} levels"):
        read_json(p)


def test_json_at_the_depth_limit_still_loads():
    text = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json_text(text, "x.json") == json.loads(text)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"text": "[" * 10_000, "more": '{\\"' * 500})
    assert load_json_text(text, "x.json") == json.loads(text)


def test_jsonl_deep_line_is_skippable_and_good_lines_kept(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n' + "[" * 10_000 + "]" * 10_000 + '\n{"text": "b"}\n')
    got = list(iter_jsonl(p, errors="skip"))
    assert [n for n, _ in got] == [1, 2, 3]
    assert isinstance(got[1][1], UserError) and "d.jsonl:2" in str(got[1][1])
    assert got[0][1] == {"text": "a"} and got[2][1] == {"text": "b"}
    with pytest.raises(UserError, match=r"d\.jsonl:2: broken JSON line: nested deeper"):
        list(iter_jsonl(p))


def test_huge_integer_is_a_user_error():
    with pytest.raises(UserError, match="x.json:1"):
        load_json_text("1" * 5000, "x.json")


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5), lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c), max_leaves=20))  # fmt: skip
def test_load_json_text_agrees_with_json(obj):
    text = json.dumps(obj)
    assert load_json_text(text, "x") == json.loads(text)


# ---------------------------------------------------------------------------------------------- output rule


def test_fresh_and_empty_folders_are_fine(tmp_path):
    assert prepare_output(tmp_path / "new", kind="ownlm-x", folder=True) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert prepare_output(tmp_path / "empty", kind="ownlm-x", folder=True) == tmp_path / "empty"


def test_a_users_folder_is_refused_even_with_force(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for force in (False, True):
        with pytest.raises(UserError, match="ownlm did not make it"):
            prepare_output(mine, kind="ownlm-tokens", folder=True, force=force)
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_own_folder_is_reused_and_another_kind_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"x")
    mark_output(out, "ownlm-tokens")
    prepare_output(out, kind="ownlm-tokens", folder=True)  # this command's own output: fine
    assert (out / "a.bin").exists()
    with pytest.raises(UserError, match="--force"):
        prepare_output(out, kind="ownlm-corpus", folder=True)
    prepare_output(out, kind="ownlm-corpus", folder=True, force=True)
    assert list(out.iterdir()) == []


def test_manifest_alone_recognises_an_older_output(tmp_path):
    out = tmp_path / "tokens"
    out.mkdir()
    write_json(out / "manifest.json", {"format": "ownlm-tokens", "version": 1})
    assert (
        prepare_output(out, kind="ownlm-tokens", folder=True) == out
    )  # no marker file: the manifest says it
    assert (out / "manifest.json").is_file()
    with pytest.raises(UserError, match="another ownlm output"):  # and what it says is read: not a corpus
        prepare_output(out, kind="ownlm-corpus", folder=True)


def test_never_over_an_input(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("{}\n")
    mark_output(corpus, "ownlm-corpus")
    with pytest.raises(UserError, match="would write over the input"):
        prepare_output(corpus, kind="ownlm-corpus", folder=True, inputs=[corpus / "train.jsonl"])
    with pytest.raises(UserError, match="would write over the input"):
        prepare_output(corpus, kind="ownlm-tokens", folder=True, force=True, inputs=[corpus])
    with pytest.raises(UserError, match="would write over the input"):
        prepare_output(
            corpus / "train.jsonl", kind="ownlm-docs", folder=False, inputs=[corpus / "train.jsonl"]
        )
    assert (corpus / "train.jsonl").exists()


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_special_files_are_never_replaced(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    for folder in (False, True):
        with pytest.raises(UserError, match="not a regular file"):
            prepare_output(device, kind="ownlm-docs", folder=folder)
    with pytest.raises(UserError, match="not a regular file"), atomic_write(device) as f:
        f.write("x")
    assert not os.path.isfile(device)


def test_fifo_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="a pipe"), atomic_write(fifo) as f:
        f.write("x")
    assert fifo.is_fifo() and [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_disk_full_leaves_nothing_and_the_cli_says_so(tmp_path, monkeypatch, capsys):
    """A full disk (ENOSPC from fsync, as a real full disk reports it) leaves the old file and no temp."""
    target = tmp_path / "out.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError), atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]

    from ownlm.cli import main

    monkeypatch.setattr("ownlm.cli.run", lambda argv: write_json(target, {"a": 1}))
    assert main(["x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk full" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- run lock


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(UserError, match=rf"pid {os.getpid()} on "):
            RunLock(out).acquire()
        code = f"from ownlm.io import RunLock; RunLock({str(out)!r}).acquire()"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and "another ownlm run is writing here" in other.stderr
    assert not out.exists()  # created for the run, left empty: removed


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "run"
    code = f"import os; from ownlm.io import RunLock; RunLock({str(out)!r}).acquire(); os._exit(9)"
    subprocess.run([sys.executable, "-c", code], check=False)
    stale = json.loads((out / LOCK_FILE).read_text())
    notes = []
    with RunLock(out, note=notes.append):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {stale['pid']}" in notes[0]
    assert not (out / LOCK_FILE).exists()


def test_lock_keeps_a_folder_with_content(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        (out / "model.bin").write_bytes(b"w")
    assert (out / "model.bin").exists() and not (out / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------------- temp files


def test_clean_stale_temps_removes_dead_writers_leftovers_only(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f".step_000500.tmp-{dead_pid}").mkdir()
    (tmp_path / f".step_000500.tmp-{dead_pid}" / "model.safetensors").write_bytes(b"half")
    (tmp_path / f".config.json.{dead_pid}.ab12cd.tmp").write_text("{")
    (tmp_path / f".tokens.encoding-{dead_pid}").mkdir()
    live = [f".step_000600.tmp-{os.getpid()}", f".x.json.{os.getpid()}.zz.tmp", "step_000500", "notes.tmp"]
    for name in live:
        (tmp_path / name).mkdir()
    (tmp_path / ".old-style.tmp").write_text("recent, no pid")
    removed = sorted(p.name for p in clean_stale_temps(tmp_path))
    assert removed == sorted(
        [
            f".step_000500.tmp-{dead_pid}",
            f".config.json.{dead_pid}.ab12cd.tmp",
            f".tokens.encoding-{dead_pid}",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*live, ".old-style.tmp"])
    assert [p.name for p in clean_stale_temps(tmp_path, max_age_s=-1)] == [".old-style.tmp"]


def test_marker_names_the_kind(tmp_path):
    mark_output(tmp_path, "ownlm-corpus")
    assert json.loads((tmp_path / OUTPUT_MARKER).read_text())["kind"] == "ownlm-corpus"


# ---------------------------------------------------------------------------------------------- safetensors


def test_safetensors_written_and_read_one_tensor_at_a_time_round_trip_with_the_reference_library(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from ownlm.io import read_safetensors, write_safetensors

    torch.manual_seed(0)
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(4),
               "empty": torch.zeros(0, 3), "flag": torch.tensor([True, False])}  # fmt: skip
    write_safetensors(tmp_path / "ours.safetensors", tensors, metadata={"format": "x"})
    save_file(tensors, tmp_path / "theirs.safetensors")
    for name in ("ours", "theirs"):  # each reader reads each writer's file
        path = tmp_path / f"{name}.safetensors"
        for read in (dict(read_safetensors(path)), load_file(path)):
            assert read.keys() == tensors.keys()
            for k, v in tensors.items():
                assert read[k].dtype == v.dtype and torch.equal(read[k], v), (name, k)
    assert [k for k, _ in read_safetensors(tmp_path / "ours.safetensors", ["c", "a"])] == ["c", "a"]


def test_a_damaged_safetensors_file_is_a_user_error_naming_it(tmp_path):
    import torch

    from ownlm.io import read_safetensors, write_safetensors

    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"w": torch.ones(64, 64)})
    data = path.read_bytes()
    cases = {"truncated": data[:-100], "no header": b"\xff" * 16, "empty": b"",
             "offsets": data.replace(b"[0,16384]", b"[0,99999]")}  # fmt: skip
    for blob in cases.values():
        path.write_bytes(blob)
        with pytest.raises(UserError, match="m.safetensors"):
            dict(read_safetensors(path))
    path.write_bytes(data)
    with pytest.raises(UserError, match="no tensor 'x'"):
        dict(read_safetensors(path, ["x"]))
