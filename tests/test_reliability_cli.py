"""Reliability of the command line: the top-level guard, help that lists choices and one default for every
flag of every command, sampling arguments validated, one rule for special tokens in user text."""

import dataclasses
import math
import re
import typing

import pytest
import torch

from ownlm import cli
from ownlm.cli import COMMANDS, _load, explain
from ownlm.config import build_parser
from ownlm.generate import GenerateConfig
from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.runtime.sampling import SamplingConfig
from ownlm.tokenizer import Tokenizer

BYTES_TOK = Tokenizer(special_tokens={"<|endoftext|>": 256})

# ---------------------------------------------------------------------------------------------- the guard


def _boom(argv):
    raise ZeroDivisionError("division by zero in a stage")


def test_unexpected_error_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(cli, "run", _boom)
    monkeypatch.delenv("OWNLM_DEBUG", raising=False)
    assert cli.main(["extract"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ZeroDivisionError" in err and "--debug" in err
    assert err.count("\n") == 2  # the error line and the hint


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    monkeypatch.setattr(cli, "run", _boom)
    argv = ["extract", "--debug"] if how == "flag" else ["extract"]
    if how == "env":
        monkeypatch.setenv("OWNLM_DEBUG", "1")
    assert cli.main(argv) == 1
    assert "Traceback" in capsys.readouterr().err


def test_debug_flag_is_removed_before_parsing(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run", lambda argv: seen.append(argv) or 0)
    assert cli.main(["--debug", "corpus", "x", "--debug"]) == 0 and seen == [["corpus", "x"]]


@pytest.mark.parametrize(
    "exc, words",
    [
        (MemoryError(), ["out of memory"]),
        (RuntimeError("CUDA out of memory. Tried to allocate 44.70 GiB"), ["out of memory"]),
        (RuntimeError("[enforce fail] DefaultCPUAllocator: not enough memory"), ["out of memory"]),
        (
            OSError(28, "No space left on device", "run/step_1/model.safetensors"),
            ["disk full", "model.safetensors"],
        ),
        (
            PermissionError(13, "Permission denied", "/proc/out.jsonl"),
            ["/proc/out.jsonl", "Permission denied"],
        ),
        (OSError(30, "Read-only file system", "/sys/x"), ["/sys/x", "Read-only"]),
    ],
)
def test_machine_errors_get_their_own_line_and_exit_2(monkeypatch, capsys, exc, words):
    def fail(argv):
        raise exc

    monkeypatch.setattr(cli, "run", fail)
    assert cli.main(["x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(w in err for w in words)


def test_explain_leaves_bugs_alone():
    assert explain(KeyError("x")) is None and explain(RuntimeError("shape mismatch")) is None


def test_real_unwritable_output_through_the_cli(tmp_path, capsys):
    if not __import__("os").path.isdir("/proc/self"):
        pytest.skip("no /proc")
    src = tmp_path / "a.txt"
    src.write_text("hello there, some text")
    code = cli.main(["extract", str(src), "--out", "/proc/self/docs.jsonl"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1


def test_group_help_exits_0_and_lists_subcommands(capsys):
    assert cli.main(["tokenizer", "--help"]) == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        if c.words[0] == "tokenizer":
            assert " ".join(c.words) in out


# ---------------------------------------------------------------------------------------------- help text


def _has_default(cls, prefix="") -> dict[str, bool]:
    """``{dest: whether the field has a default}`` for a config class, sections included."""
    out = {}
    for f in dataclasses.fields(cls):
        has = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        tp = typing.get_type_hints(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(_has_default(tp, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = has
    return out


def _actions():
    for c in COMMANDS:
        cls = _load(c.config)
        defaults = _has_default(cls)
        parser = build_parser(cls, "ownlm " + " ".join(c.words))
        for a in parser._actions:
            if a.help and a.dest not in ("help", "config"):
                yield " ".join(c.words), a, defaults.get(a.dest, False)


@pytest.mark.parametrize("words", sorted({" ".join(c.words) for c in COMMANDS}))
def test_every_flag_lists_its_choices_and_one_default(words):
    checked = 0
    for cmd, a, has_default in _actions():
        if cmd != words:
            continue
        checked += 1
        text = a.help.replace("%%", "%")
        where = f"ownlm {cmd} {a.option_strings or a.dest}: {text!r}"
        for choice in a.choices or ():
            assert re.search(rf"(?<![\w-]){re.escape(str(choice))}(?![\w-])", text), where
        assert text.lower().count("default") <= 1, where
        if a.option_strings and has_default:  # a flag (not a positional) with a default: shown, once
            assert "default" in text.lower(), where
        if a.metavar in ("N",):
            raise AssertionError(f"{where}: metavar N says nothing; INT or FLOAT")
    assert checked


def test_metavars_name_the_type():
    parser = build_parser(GenerateConfig, "ownlm generate")
    metavars = {a.dest: a.metavar for a in parser._actions}
    assert metavars["sampling.temperature"] == "FLOAT" and metavars["sampling.max_new_tokens"] == "INT"


# ---------------------------------------------------------------------------------------------- generate


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", -1.0),
        ("top_p", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("repetition_penalty", math.inf),
        ("repetition_penalty", 0.0),
        ("top_k", -1),
        ("max_new_tokens", 0),
    ],
)
def test_sampling_arguments_are_validated(field, value):
    with pytest.raises(Exception, match="--" + field.replace("_", "-")):
        SamplingConfig(**{field: value}).check()


def _tiny_checkpoint(tmp_path, nan=False):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    return save_model(tmp_path / ("nan" if nan else "ok"), model, BYTES_TOK)


@pytest.mark.parametrize("flag", [["--temperature", "nan"], ["--temperature", "inf"], ["--top-p", "nan"]])
def test_cli_refuses_non_finite_sampling(tmp_path, capsys, flag):
    ckpt = _tiny_checkpoint(tmp_path)
    assert cli.main(["generate", str(ckpt), "--max-new-tokens", "2", *flag]) == 2
    assert "finite" in capsys.readouterr().err


def test_nan_weights_are_an_error_naming_the_checkpoint(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path, nan=True)
    code = cli.main(["generate", str(ckpt), "--prompt", "hi", "--max-new-tokens", "3", "--seed", "1"])
    err = capsys.readouterr().err
    assert code == 2 and str(ckpt) in err and "NaN" in err and "Traceback" not in err


def test_special_tokens_in_user_text_follow_one_rule(tmp_path, capsys):
    """A prompt's <|endoftext|> is ordinary text unless --allow-special, in generate and tokenizer encode."""
    ckpt = _tiny_checkpoint(tmp_path)
    base = [
        "generate",
        str(ckpt),
        "--max-new-tokens",
        "1",
        "--seed",
        "3",
        "--no-stream",
        "--temperature",
        "0",
    ]
    assert cli.main([*base, "--prompt", "a<|endoftext|>"]) == 0
    assert "ordinary text" in capsys.readouterr().err
    assert cli.main([*base, "--prompt", "a<|endoftext|>", "--allow-special"]) == 0
    assert "ordinary text" not in capsys.readouterr().err
    BYTES_TOK.save(tmp_path / "tok")
    assert cli.main(["tokenizer", "encode", str(tmp_path / "tok"), "a<|endoftext|>"]) == 0
    plain = capsys.readouterr().out.split()
    assert (
        cli.main(["tokenizer", "encode", str(tmp_path / "tok"), "a<|endoftext|>", "--allowed-special", "all"])
        == 0
    )
    special = capsys.readouterr().out.split()
    assert plain == [str(b) for b in b"a<|endoftext|>"] and special == ["97", "256"]
