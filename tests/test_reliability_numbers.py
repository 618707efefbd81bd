"""One validation of numbers: every numeric setting of every command, whether from a flag, a TOML file, the
environment or an HTTP request, must be finite, whole where an integer is due, and inside its declared range,
named in the message (``config.check_number``)."""

import dataclasses
import http.client
import json
import math
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ownlm import cli
from ownlm.cli import COMMANDS, _load
from ownlm.config import INT_MAX, _coerce, _flag, _unwrap, check_number, parse_bounds, sections, validate
from ownlm.errors import UserError
from ownlm.train.config import TrainingConfig


def _one_line_exit_2(capsys, argv, *words):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["pretrain", "--data", "tok", "--out", "r", "--lr", "nan"], ["--lr", ">= 0", "nan"]),
        (["pretrain", "--data", "tok", "--out", "r", "--max-minutes", "nan"], ["--max-minutes", ">= 0"]),
        (["pretrain", "--data", "tok", "--out", "r", "--max-minutes", "inf"], ["--max-minutes"]),
        (["pretrain", "--data", "tok", "--out", "r", "--beta1", "1.5"], ["--beta1", "[0, 1)", "1.5"]),
        (["pretrain", "--data", "tok", "--out", "r", "--seed", "-1"], ["--seed", ">= 0"]),
        (["pretrain", "--data", "tok", "--out", "r", "--seed", str(2**70)], ["--seed", "2**63 - 1"]),
        (["pretrain", "--data", "tok", "--out", "r", "--dropout", "1"], ["--dropout", "[0, 1)"]),
        (["pretrain", "--data", "tok", "--out", "r", "--warmup-iters", "-2"], ["--warmup-iters", ">= -1"]),
        (["serve", "run", "--timeout-s", "nan"], ["--timeout-s", "> 0"]),
        (["serve", "run", "--port", "70000"], ["--port", "[1, 65535]"]),
        (["chat", "run", "--temperature", "nan"], ["--temperature", "[0, 100]"]),
        (["generate", "run", "--temperature", "1e308"], ["--temperature", "[0, 100]"]),
        (["generate", "run", "--top-p", "0"], ["--top-p", "(0, 1]"]),
        (["generate", "run", "--seed", str(2**70)], ["--seed"]),
        (["persona", "x.json", "--person", "A", "--out", "o", "--turn-gap-minutes", "nan"], ["--turn-gap-minutes"]),
        (["persona", "x.json", "--person", "A", "--out", "o", "--session-gap-hours", "-1"], ["--session-gap-hours"]),
        (["corpus", "d.jsonl", "--out", "c", "--val-fraction", "1"], ["--val-fraction", "[0, 1)"]),
        (["tokenizer", "compare", "x.txt", "--vocab-sizes", "256", "-5"], ["--vocab-sizes", ">= 256"]),
    ],
)  # fmt: skip
def test_a_number_out_of_range_is_one_line_naming_the_range(capsys, argv, words):
    _one_line_exit_2(capsys, argv, *words)


@pytest.mark.parametrize(
    "toml, words",
    [
        ("max_iters = 1e400\n", ["--max-iters", "integer", "inf"]),
        ("max_iters = 2.5\n", ["--max-iters", "whole"]),
        ("lr = nan\n", ["--lr", "nan"]),
        ('lr = "nan"\n', ["--lr", "nan"]),
        ("[train]\nbeta2 = 1.0\n", ["--beta2", "[0, 1)"]),
        ("seed = true\n", ["--seed"]),
    ],
)
def test_toml_numbers_follow_the_same_rule(tmp_path, capsys, toml, words):
    (tmp_path / "c.toml").write_text(toml)
    _one_line_exit_2(
        capsys, ["pretrain", "--data", "tok", "--out", "r", "--config", str(tmp_path / "c.toml")], *words
    )


def test_a_whole_float_in_toml_is_an_integer(tmp_path):
    from ownlm.config import parse_args
    from ownlm.train.pretrain import PretrainConfig

    (tmp_path / "c.toml").write_text("max_iters = 20.0\n")
    cfg = parse_args(
        PretrainConfig, ["--data", "tok", "--out", "r", "--config", str(tmp_path / "c.toml")], "p"
    )
    assert cfg.train.max_iters == 20 and isinstance(cfg.train.max_iters, int)


@pytest.mark.parametrize("value", ["abc", "nan", "-3", "inf"])
def test_a_bad_limit_in_the_environment_is_an_error_not_the_default(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("OWNLM_MAX_FILE_MB", value)
    (tmp_path / "a.txt").write_text("hello")
    _one_line_exit_2(capsys, ["extract", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d.jsonl")],
                     "OWNLM_MAX_FILE_MB")  # fmt: skip
    assert not (tmp_path / "d.jsonl").exists()


def _numeric_fields(cls, seen=None):
    """(class, field, scalar type) of every int/float field of a config and its sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in sections(cls):
            yield from _numeric_fields(hints[f.name])
            continue
        tp, _ = _unwrap(hints[f.name])
        if typing.get_origin(tp) is list:
            (tp,) = typing.get_args(tp) or (str,)
        if tp in (int, float):
            yield cls, f, tp


CONFIGS = sorted({c.config for c in COMMANDS})


@pytest.mark.parametrize("ref", CONFIGS)
def test_every_default_lies_within_its_bounds_and_nan_is_refused_everywhere(ref):
    """The defaults pass the rule (else a command could not start), and NaN, inf, a bool (and 2**70 for an
    integer) are refused by every numeric field of every command: no field escapes the one check."""
    cls = _load(ref)
    for owner, f, tp in _numeric_fields(cls):
        bounds = f.metadata.get("bounds")
        default = f.default if f.default is not dataclasses.MISSING else None
        for d in default if isinstance(default, list) else [default]:
            if d is not None:
                check_number(d, f.name, bounds, integer=tp is int)
        for bad in (math.nan, math.inf, -math.inf, True, *([2**70] if tp is int else [])):
            with pytest.raises(UserError, match="--" + f.name.replace("_", "-")):
                _coerce(bad, typing.get_type_hints(owner)[f.name], "x", _flag(f))


def test_validate_checks_configs_built_in_code():
    validate(TrainingConfig())
    with pytest.raises(UserError, match=r"--lr must be a finite number >= 0, got nan"):
        TrainingConfig(lr=math.nan).check()
    with pytest.raises(UserError, match="--batch-size"):
        TrainingConfig(batch_size=0).check()


@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["[0, 1)", "(0, inf)", "[-1, 5]"]))
def test_check_number_accepts_exactly_the_finite_values_inside(value, bounds):
    b = parse_bounds(bounds)
    inside = math.isfinite(value) and b.holds(value)
    try:
        assert check_number(value, "--x", bounds) == value and inside
    except UserError as e:
        assert not inside and "--x" in str(e) and b.text in str(e) + bounds


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_integers_are_bounded_by_int64(value):
    ok = 0 <= value <= INT_MAX
    try:
        assert check_number(value, "--seed", integer=True) == value and ok
    except UserError:
        assert not ok


# ---------------------------------------------------------------------------------------------- HTTP

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from ownlm.model.checkpoint import save_model
    from ownlm.model.gpt import GPT, GPTConfig
    from ownlm.serve.cli import ServeConfig, build_app, serve_in_thread
    from ownlm.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    folder = save_model(
        tmp_path_factory.mktemp("numbers") / "m", model, Tokenizer(special_tokens={"<|endoftext|>": 256})
    )
    with serve_in_thread(build_app(ServeConfig(run=str(folder), device="cpu", max_tokens_cap=8))) as url:
        yield url


def post(url: str, data: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json"})
    res = conn.getresponse()
    payload = res.read()
    conn.close()
    return res.status, json.loads(payload)


@pytest.mark.parametrize(
    "field, text",
    [("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "NaN"), ("top_p", "-Infinity"),
     ("repetition_penalty", "NaN"), ("repetition_penalty", "Infinity"), ("seed", str(2**70)), ("seed", "-1"),
     ("max_tokens", "1e400"), ("top_k", "2.5")],
)  # fmt: skip
def test_http_numbers_follow_the_same_rule(server, field, text):
    status, body = post(server, f'{{"prompt": "a", "max_tokens": 2, "{field}": {text}}}'.encode())
    assert status == 400, body
    assert body["error"]["param"] == field and "must be" in body["error"]["message"]
    status, body = post(server, b'{"prompt": "a", "max_tokens": 2}')
    assert status == 200 and body["choices"][0]["text"] is not None


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                  b"\xff\xfe{}", b'{"prompt": "a"} trailing'])  # fmt: skip
def test_http_body_goes_through_the_one_json_reader(server, data):
    status, body = post(server, data)
    assert status == 400, body
    assert body["error"]["message"]
