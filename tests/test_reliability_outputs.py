"""The output rule in every command that writes (``io.prepare_output``): a fresh path, or one this command made
before; never an input nor the folder holding one; never a folder of the user's. Each case is the data-loss
scenario it guards against: the command must exit 2 with one line and leave every file as it was. A full disk
is one line naming the output, with nothing half-written left behind."""

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from test_reliability_errors import one_line as refused

from ownlm import cli
from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.tokenizer import Tokenizer

BYTES_TOK = Tokenizer(special_tokens={"<|endoftext|>": 256})
FAST = ["--threads", "1", "--dtype", "fp32", "--no-progress"]


def snapshot(*roots: Path) -> dict:
    """Every file under ``roots`` with its sha256: what must not change."""
    out = {}
    for root in roots:
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[str(p)] = "dir"
    return out


@pytest.fixture
def tok(tmp_path):
    BYTES_TOK.save(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.fixture
def user_dir(tmp_path):
    """A folder of the user's: files ownlm would also write, and a run/ + run.old/ pair."""
    d = tmp_path / "mine"
    for name in ("config.json", "tokenizer.json", "docs.jsonl", "run/notes.txt", "run.old/notes.txt"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(f"the user's own {name}\n")
    return d


# ------------------------------------------------------------------------------------ never over an input


@pytest.mark.parametrize(
    "args",
    [
        ["--to", "hf", "--out", "{tok}"],
        ["--to", "hf", "--out", "{tok}/tokenizer.json"],
        ["--to", "tiktoken", "--out", "{tok}/tokenizer.json"],
    ],
)
def test_tokenizer_export_never_replaces_its_own_input(tok, capsys, args):
    before = snapshot(tok)
    refused(capsys, ["tokenizer", "export", tok, *[a.format(tok=tok) for a in args]], "input")
    assert snapshot(tok) == before and Tokenizer.load(tok).n_vocab == BYTES_TOK.n_vocab


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_tokenizer_encode_and_decode_never_write_over_their_input(tok, tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes" if command == "encode" else "104 105")
    refused(capsys, ["tokenizer", command, tok, "--input", notes, "--out", notes], "input")
    assert notes.read_text() == ("my notes" if command == "encode" else "104 105")
    refused(capsys, ["tokenizer", command, tok, "--input", notes, "--out", tok / "tokenizer.json"], "input")
    assert Tokenizer.load(tok).n_vocab == BYTES_TOK.n_vocab


# ------------------------------------------------------------------------------------ never a user's folder


def test_commands_writing_folders_refuse_a_users_folder(tok, tmp_path, user_dir, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some text to learn from\n" * 20)
    before = snapshot(user_dir)
    cases = [
        ["corpus", "python-docs", "--out", user_dir],
        ["import", "gpt2", "gpt2", "--out", user_dir],  # refused before any download
        ["tokenizer", "compare", src / "a.txt", "--out", user_dir, "--no-progress"],
        ["tokenizer", "export", tok, "--to", "hf", "--out", user_dir],
        ["build", src, "--out", user_dir],
        ["demo", "--out", user_dir],
    ]
    for argv in cases:
        refused(capsys, argv, "did not make it")
        assert snapshot(user_dir) == before, argv


def test_build_never_writes_into_or_inside_its_source(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some text\n")
    before = snapshot(src)
    refused(capsys, ["build", src, "--out", src], "input")
    refused(capsys, ["build", src, "--out", src / "out"], "inside the source folder")
    assert snapshot(src) == before


def test_extract_never_overwrites_a_users_file_among_its_inputs(tmp_path, capsys):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "a.txt").write_text("hello there\n")
    (src / "docs.jsonl").write_text('{"my": "own data"}\n')
    before = snapshot(src)
    refused(capsys, ["extract", src, "--out", src / "docs.jsonl"], "among the inputs")
    assert snapshot(src) == before
    # an output an earlier extract wrote there is replaced (its summary beside it says so)
    (src / "docs.jsonl").unlink()
    assert cli.main(["extract", str(src), "--out", str(src / "docs.jsonl")]) == 0
    assert cli.main(["extract", str(src), "--out", str(src / "docs.jsonl")]) == 0
    assert [json.loads(line)["text"] for line in (src / "docs.jsonl").read_text().splitlines()] == [
        "hello there\n"
    ]


def test_reruns_into_an_own_output_still_work(tok, tmp_path, capsys):
    out = tmp_path / "hf"
    for _ in range(2):
        assert cli.main(["tokenizer", "export", str(tok), "--to", "hf", "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()


# ------------------------------------------------------------------------------------ a full disk


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=257, block_size=128, n_layer=2, n_head=2, n_embd=32))
    return save_model(tmp_path_factory.mktemp("m") / "model", m, BYTES_TOK)


def _no_space(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_export_and_merge_is_one_line_naming_the_output_and_leaves_nothing(
    model, tmp_path, capsys, monkeypatch
):
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps([{"instruction": "say", "input": f"x{i}", "output": f"the cat {i}"} for i in range(40)])
    )
    lora = tmp_path / "lora"
    assert cli.main(["finetune", "sft", str(model), "--data", str(data), "--out", str(lora), "--max-iters", "1",
                     "--lora-rank", "2", "--responses", "0", *FAST]) == 0  # fmt: skip
    monkeypatch.setattr(os, "fsync", _no_space)  # every atomic write ends with an fsync
    out = tmp_path / "hf"
    refused(capsys, ["export", model, "--to", "hf", "--out", out], f"disk full while writing {out}")
    assert not out.exists()
    merged = tmp_path / "merged"
    refused(capsys, ["finetune", "merge", lora, "--out", merged], f"disk full while writing {merged}")
    assert not merged.exists()


def test_disk_full_in_an_atomic_write_names_the_file_not_its_temp(tmp_path, monkeypatch):
    from ownlm.io import write_json

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        write_json(tmp_path / "x.json", {"a": 1})
    assert e.value.filename == str(tmp_path / "x.json") and list(tmp_path.iterdir()) == []
    assert cli.explain(e.value)[0].startswith(f"disk full while writing {tmp_path / 'x.json'}")


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                     "to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
    ],
)  # fmt: skip
def test_out_of_memory_in_every_wording_is_one_line(exc):
    msg, code = cli.explain(exc)
    assert code == 2 and msg.startswith("out of memory:")
    assert cli.explain(exc, "runs/mine")[0].startswith("out of memory making runs/mine:")


def test_extract_blames_the_disk_not_the_input(tmp_path, capsys, monkeypatch):
    from ownlm.extract import stage

    (tmp_path / "a.txt").write_text("hello\n")
    real = stage.Extraction.record

    def record(self, *a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stage.Extraction, "record", record)
    out = tmp_path / "docs.jsonl"
    err = refused(capsys, ["extract", tmp_path / "a.txt", "--out", out], "disk full")
    assert "a.txt" not in err.replace(str(out), "") and not out.exists()
    monkeypatch.setattr(stage.Extraction, "record", real)


def _can_mount() -> bool:
    return (
        os.geteuid() == 0
        and Path("/proc/filesystems").is_file()
        and "tmpfs" in Path("/proc/filesystems").read_text()
    )


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB tmpfs (needs root; skipped elsewhere)."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield d
    subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("to, name", [("hf", "hf"), ("gguf", "m.gguf")])
def test_real_full_disk_export_is_one_line_and_leaves_nothing(model, tiny_disk, capsys, to, name):
    if to == "gguf":
        pytest.importorskip("gguf")
    out = tiny_disk / name
    refused(capsys, ["export", model, "--to", to, "--out", out], f"disk full while writing {out}")
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.parametrize("command", ["pretrain", "sft"])
def test_real_full_disk_training_is_one_line_naming_the_run(model, tiny_disk, tmp_path, capsys, command):
    from ownlm.data.encode import EncodeConfig, encode_corpus

    out = tiny_disk / "run"
    if command == "pretrain":
        BYTES_TOK.save(tmp_path / "tok")
        (tmp_path / "text.txt").write_text("the cat sat on the mat. " * 2000)
        encode_corpus(EncodeConfig(corpus=[str(tmp_path / "text.txt")], tokenizer=str(tmp_path / "tok"),
                                   out=str(tmp_path / "tokens"), progress=False))  # fmt: skip
        argv = ["pretrain", "--data", tmp_path / "tokens", "--out", out, "--max-iters", "3", "--batch-size", "2",
                "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", *FAST]  # fmt: skip
    else:
        data = tmp_path / "data.json"
        data.write_text(
            json.dumps([{"instruction": "say", "input": f"x{i}", "output": f"cat {i}"} for i in range(40)])
        )
        argv = [
            "finetune",
            "sft",
            model,
            "--data",
            data,
            "--out",
            out,
            "--max-iters",
            "2",
            "--responses",
            "0",
            *FAST,
        ]
    refused(capsys, argv, f"disk full while writing {out}")


def test_a_comparison_folder_from_before_the_marker_is_still_rewritten(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("some text to learn from\n" * 20)
    old = tmp_path / "compare"
    old.mkdir()
    for name in ("compare.md", "compare.json", "config.json"):
        (old / name).write_text("{}")
    argv = ["tokenizer", "compare", str(tmp_path / "a.txt"), "--vocab-sizes", "256", "260", "--out", str(old),
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((old / "compare.json").read_text()) != {}
    (old / "compare.json").unlink()  # a config.json alone is the user's: refused
    for p in old.iterdir():
        p.unlink()
    (old / "config.json").write_text("{}")
    refused(capsys, argv, "did not make it")
    assert (old / "config.json").read_text() == "{}"
