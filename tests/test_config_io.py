"""The shared plumbing: dataclass configs -> flags, TOML, atomic writes, JSONL errors, the command table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

import pytest

from ownlm import cli
from ownlm.config import build_parser, config_hash, opt, parse_args, save_config
from ownlm.errors import UserError
from ownlm.io import atomic_write, iter_jsonl, read_json, read_manifest, write_jsonl, write_manifest
from ownlm.textsource import expand_inputs, iter_documents, read_text_file


@dataclass
class Demo:
    inputs: list[str] = opt([], help="input files", positional=True)
    vocab_size: int = opt(512, help="vocabulary size")
    lr: float = opt(1e-3, help="learning rate")
    pattern: Literal["gpt2", "gpt4"] = opt("gpt4", help="split pattern")
    compile: bool = opt(False, help="use torch.compile")
    out: str | None = opt(None, help="output folder")


def test_flags_follow_fields_and_help_text():
    text = build_parser(Demo, "prog").format_help()
    for flag in ("--vocab-size", "--lr", "--pattern", "--compile", "--no-compile", "--out", "--config"):
        assert flag in text
    assert "vocabulary size" in text and "learning rate" in text


def test_defaults_then_toml_then_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('vocab-size = 1024\nlr = 3\npattern = "gpt2"\n')
    cfg = parse_args(Demo, ["a.txt", "b.txt", "--config", str(toml), "--lr", "0.5", "--compile"], "prog")
    assert cfg.inputs == ["a.txt", "b.txt"]
    assert cfg.vocab_size == 1024  # from TOML
    assert cfg.lr == 0.5 and isinstance(cfg.lr, float)  # flag beats TOML
    assert cfg.pattern == "gpt2" and cfg.compile is True and cfg.out is None
    assert parse_args(Demo, [], "prog") == Demo()


def test_config_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense = 1\n")
    with pytest.raises(UserError, match="unknown setting 'nonsense'"):
        parse_args(Demo, ["--config", str(bad)], "prog")
    bad.write_text('vocab-size = "big"\n')
    with pytest.raises(UserError, match="vocab-size"):
        parse_args(Demo, ["--config", str(bad)], "prog")
    bad.write_text("vocab-size = [\n")
    with pytest.raises(UserError, match="not valid TOML"):
        parse_args(Demo, ["--config", str(bad)], "prog")


def test_saved_config_round_trips_and_hash_tracks_values(tmp_path):
    cfg = Demo(inputs=["x"], vocab_size=300)
    save_config(cfg, tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == 300
    assert config_hash(cfg) == config_hash(Demo(inputs=["x"], vocab_size=300))
    assert config_hash(cfg) != config_hash(Demo(inputs=["x"], vocab_size=301))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n\n{"text": \n{"text": "c"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:3: broken JSON"):
        list(iter_jsonl(p))
    got = list(iter_jsonl(p, errors="skip"))
    assert [n for n, _ in got] == [1, 3, 4]
    assert isinstance(got[1][1], UserError) and got[2][1] == {"text": "c"}
    assert write_jsonl(tmp_path / "w.jsonl", [{"a": 1}, {"b": "é"}]) == 2
    assert [r for _, r in iter_jsonl(tmp_path / "w.jsonl")] == [{"a": 1}, {"b": "é"}]


def test_manifest_version_checks(tmp_path):
    write_manifest(tmp_path, "ownlm-x", 1, n=3)
    assert read_manifest(tmp_path, "ownlm-x", 1)["n"] == 3
    with pytest.raises(UserError, match="expected a 'ownlm-y' manifest"):
        read_manifest(tmp_path, "ownlm-y", 1)
    write_manifest(tmp_path, "ownlm-x", 9)
    with pytest.raises(UserError, match="newer than this ownlm"):
        read_manifest(tmp_path, "ownlm-x", 1)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "manifest.json")


def test_textsource_reads_files_folders_and_jsonl(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("\ufeffhello")
    (tmp_path / "a" / "two.md").write_text("world")
    (tmp_path / "a" / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / "d.jsonl").write_text('{"text": "doc"}\n{"messages": [{"name": "Ann", "text": "hi"}]}\n')
    texts = [t for _, t in iter_documents([tmp_path / "a", tmp_path / "d.jsonl"])]
    assert texts == ["hello", "world", "doc", "Ann: hi"]
    with pytest.raises(UserError, match="no such file"):
        expand_inputs([tmp_path / "missing"])


def test_textsource_bad_bytes_say_where_and_what_to_do(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"caf" + b"\xe9 ok")
    with pytest.raises(UserError, match=r"offset 3.*--errors replace"):
        read_text_file(p)
    assert read_text_file(p, errors="replace") == "caf\ufffd ok"
    b = tmp_path / "bin.txt"
    b.write_bytes(b"ab\x00cd")
    with pytest.raises(UserError, match="binary"):
        read_text_file(b)


def test_cli_table_resolves_longest_command_and_reports_errors(capsys):
    cmd, rest = cli.find_command(["corpus", "stats", "DIR"])
    assert cmd.words == ("corpus", "stats") and rest == ["DIR"]
    cmd, rest = cli.find_command(["corpus", "a.jsonl"])
    assert cmd.words == ("corpus",) and rest == ["a.jsonl"]
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["tokenizer"]) == 2
    assert "needs a subcommand" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out


def test_every_command_row_points_at_real_code():
    import dataclasses
    import importlib

    for c in cli.COMMANDS:
        for ref in (c.config, c.entry):
            module, name = ref.split(":")
            obj = getattr(importlib.import_module(module), name, None)
            assert obj is not None, f"{' '.join(c.words)}: {ref} is missing"
        assert dataclasses.is_dataclass(cli._load(c.config))


def test_help_is_fast_and_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from ownlm.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# Config modules that still load torch when a command's flags are read, with the reason. Each one makes that
# command's `--help` slow; the fix is to import torch inside the functions that use it.
TORCH_AT_HELP = {
    "ownlm.importers.gguf": "formats/tensor_map.py imports model.gpt (torch) for GPTConfig at module level",
    "ownlm.importers.hf": "formats/tensor_map.py imports model.gpt (torch) for GPTConfig at module level",
    "ownlm.export.cli": "formats/tensor_map.py imports model.gpt (torch) for GPTConfig at module level",
}


def test_a_commands_help_imports_no_torch():
    """Every command's config module (what `ownlm CMD --help` imports) loads without torch: torch loads when a
    command runs, in the functions that need it."""
    import subprocess
    import sys

    from ownlm.cli import COMMANDS

    names = sorted({c.config.split(":")[0] for c in COMMANDS} - set(TORCH_AT_HELP))
    code = "import importlib, sys; importlib.import_module(sys.argv[1]); print('torch' in sys.modules)"
    heavy = [n for n in names
             if subprocess.run([sys.executable, "-c", code, n], capture_output=True, text=True).stdout.strip() != "False"]  # fmt: skip
    assert heavy == []


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
