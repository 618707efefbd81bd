"""Damaged files and machines that are not there are one clear line (exit 2), never an internal error: a
hand-edited config.json, tokenizer.json or token manifest, a device that is missing, a file name that is not
UTF-8. Each test injects the fault and runs the command that used to fail with a traceback."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ownlm import cli
from ownlm.data.encode import EncodeConfig, encode_corpus
from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.tokenizer import Tokenizer

BYTES_TOK = Tokenizer(special_tokens={"<|endoftext|>": 256})
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    return save_model(tmp_path_factory.mktemp("m") / "model", m, BYTES_TOK)


def one_line(capsys, argv, *words):
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "internal error" not in err, err
    for w in words:
        assert w in err, err
    return err


def edited(model: Path, tmp_path: Path, name: str, edit) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(model, copy)
    d = json.loads((copy / name).read_text())
    edit(d)
    (copy / name).write_text(json.dumps(d))
    return copy


@pytest.mark.parametrize(
    "field, value",
    [
        ("dropout", "x"),
        ("n_embd", 1e400),
        ("norm_eps", -1.0),
        ("bias", "yes"),
        ("n_layer", 2.5),
    ],
)
def test_a_damaged_model_config_is_one_line_naming_it(model, tmp_path, capsys, field, value):
    copy = edited(model, tmp_path, "config.json", lambda d: d["model"].__setitem__(field, value))
    one_line(capsys, ["generate", copy, "--max-new-tokens", "1", "--device", "cpu"], "config.json", field)


def test_a_config_edited_to_a_million_layers_is_refused_before_building(model, tmp_path):
    """Building a million blocks took minutes and GBs; the weights' header says 2 blocks. (A subprocess with a
    timeout: a hang guard, not a timing assertion.)"""
    copy = edited(model, tmp_path, "config.json", lambda d: d["model"].__setitem__("n_layer", 1_000_000))
    proc = subprocess.run([sys.executable, "-m", "ownlm", "generate", str(copy), "--max-new-tokens", "1",
                           "--device", "cpu"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert proc.returncode == 2 and "n_layer 1000000" in proc.stderr and "2 blocks" in proc.stderr


def test_a_tokenizer_special_id_of_a_trillion_is_one_line(model, tmp_path, capsys):
    copy = edited(
        model, tmp_path, "tokenizer.json", lambda d: d["special_tokens"].__setitem__("<|endoftext|>", 10**12)
    )
    one_line(
        capsys, ["generate", copy, "--max-new-tokens", "1", "--device", "cpu"], "tokenizer.json", "2**31"
    )


def test_a_tokenizer_larger_than_the_model_is_one_line(model, tmp_path, capsys):
    copy = edited(model, tmp_path, "tokenizer.json", lambda d: d["special_tokens"].__setitem__("<|x|>", 300))
    one_line(capsys, ["generate", copy, "--max-new-tokens", "1", "--device", "cpu", "--prompt", "<|x|>",
                      "--allow-special"], "do not belong together")  # fmt: skip


@pytest.mark.parametrize("splits", ["train", {"train": "x"}, {"train": {"shards": [{"file": "../../etc/passwd", "tokens": 1}]}},
                                    {"train": {"shards": [{"file": "a.bin", "tokens": "9"}]}}])  # fmt: skip
def test_a_damaged_token_manifest_is_one_line(tmp_path, capsys, splits):
    BYTES_TOK.save(tmp_path / "tok")
    (tmp_path / "text.txt").write_text("the cat sat on the mat. " * 200)
    encode_corpus(EncodeConfig(corpus=[str(tmp_path / "text.txt")], tokenizer=str(tmp_path / "tok"),
                               out=str(tmp_path / "tokens"), progress=False))  # fmt: skip
    path = tmp_path / "tokens" / "manifest.json"
    m = json.loads(path.read_text())
    m["splits"] = splits
    path.write_text(json.dumps(m))
    one_line(capsys, ["pretrain", "--data", tmp_path / "tokens", "--out", tmp_path / "run", "--max-iters", "1"],
             "manifest", "damaged")  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "tpu"])
def test_a_device_that_is_not_there_is_one_line(model, capsys, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has the device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has the device")
    one_line(capsys, ["generate", model, "--max-new-tokens", "1", "--device", device], f"--device {device}")


def test_a_file_name_that_is_not_utf8_keeps_its_text(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9-\xff.txt"), "w") as f:
            f.write("the text survives\n")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "docs.jsonl"
    assert cli.main(["extract", str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
    (rec,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rec["text"] == "the text survives\n" and rec["source"].endswith("caf\\xe9-\\xff.txt")
