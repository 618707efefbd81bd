"""DDP under torchrun on CPU (gloo): two processes with half the batch each follow one process' loss curve."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ownlm.cli import main
from ownlm.data.encode import EncodeConfig, encode_corpus
from ownlm.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--threads", "1",
        "--dtype", "fp32", "--no-progress", "--samples", "0", "--eval-iters", "4", "--max-iters", "30",
        "--eval-interval", "10", "--warmup-iters", "5", "--device", "cpu"]  # fmt: skip


def run_torchrun(args: list[str]) -> str:
    """``ownlm ARGS`` (with ``--out DIR``, a new run) under torchrun as two gloo processes; its output. A worker
    aborted by SIGABRT (exit -6: "terminate called without an active exception", a rare crash in PyTorch's gloo
    backend, about once in 40 runs on a 2-core machine) is run once more into a fresh folder; any other failure,
    or a second abort, fails the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ownlm",
           *args]  # fmt: skip
    for attempt in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or attempt or "exitcode: -6" not in proc.stderr:
            break
        shutil.rmtree(args[args.index("--out") + 1], ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def one_and_two_processes(args: list[str], one, two, batch: int) -> None:
    """``ownlm ARGS`` in this process with ``batch`` rows a step into ``one``, then under torchrun as two gloo
    processes with half the rows each into ``two``: the same global batch."""
    assert main([*args, "--out", str(one), "--batch-size", str(batch)]) == 0
    run_torchrun([*args, "--out", str(two), "--batch-size", str(batch // 2)])


def say_it_twice(folder) -> None:
    """A small random model in ``folder/base`` and 60 instruction rows in ``folder/d.json`` (repeat the input)."""
    from ownlm.model.checkpoint import save_model
    from ownlm.model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=320, block_size=192, n_layer=2, n_head=2, n_embd=32, pos="rope", bias=False)
    save_model(folder / "base", GPT(cfg), Tokenizer(special_tokens={"<|endoftext|>": 256}))
    rows = [{"instruction": "Say it twice.", "input": w * (1 + i % 4), "output": (w * (1 + i % 4) + " ") * 2}
            for i, w in enumerate(["cat", "dog", "sun", "moon", "tree"] * 12)]  # fmt: skip
    (folder / "d.json").write_text(json.dumps(rows))


def curve(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch has no gloo backend")
    Tokenizer(special_tokens={"<|endoftext|>": 256}).save(tmp_path / "tok")
    (tmp_path / "t.txt").write_text(" ".join(["the cat sat on the mat and ran far away home ."] * 600))
    tokens = tmp_path / "tokens"
    encode_corpus(EncodeConfig(corpus=[str(tmp_path / "t.txt")], tokenizer=str(tmp_path / "tok"), out=str(tokens),
                               progress=False))  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    one_and_two_processes(["pretrain", "--data", str(tokens), *ARGS], one, two, batch=4)
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20, 30]
    assert a[-1]["tokens"] == b[-1]["tokens"]  # the same global batch
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
    wa = load_file(one / "step_000030" / "model.safetensors")
    wb = load_file(two / "step_000030" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_sft_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """Fine-tuning under torchrun: each process takes its rows of the global batch (padded to its own longest),
    and the loss is normalised by the response tokens of the whole step, so the curves agree."""
    if not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch has no gloo backend")
    say_it_twice(tmp_path)
    args = ["finetune", "sft", str(tmp_path / "base"), "--data", str(tmp_path / "d.json"), "--max-iters", "10",
            "--eval-interval", "5", "--responses", "0", "--threads", "1", "--dtype", "fp32", "--no-progress",
            "--device", "cpu", "--lr", "1e-3"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    one_and_two_processes(args, one, two, batch=4)
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 5, 10]
    for ra, rb in zip(a, b):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
        if ra["train_loss"] is not None:
            assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)


def test_classify_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """Classification under torchrun: each process scores its share of the rows, the losses, counts and
    confusion matrices are summed over processes, so curves, checkpoints and test scores agree with one process."""
    if not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch has no gloo backend")
    import csv

    from ownlm.model.checkpoint import save_model
    from ownlm.model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=320, block_size=64, n_layer=2, n_head=2, n_embd=32, pos="rope")
    save_model(tmp_path / "base", GPT(cfg), Tokenizer(special_tokens={"<|endoftext|>": 256}))
    words = ["the", "a", "film", "was", "long", "plot"]
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        rows = [(" ".join(words[(i * k) % 6] for k in range(1 + i % 5)) + (" good" if i % 3 else " bad"),
                 "pos" if i % 3 else "neg") for i in range(90)]  # fmt: skip
        csv.writer(f).writerows([("text", "label"), *rows])
    args = ["finetune", "classify", str(tmp_path / "base"), "--data", str(tmp_path / "d.csv"), "--max-iters", "12",
            "--eval-interval", "4", "--threads", "1", "--dtype", "fp32", "--no-progress", "--device", "cpu",
            "--lr", "3e-3", "--balance", "weights"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    one_and_two_processes(args, one, two, batch=8)
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8, 12]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
    ma, mb = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert (
        ma["test"]["confusion"] == mb["test"]["confusion"] and ma["checkpoint_step"] == mb["checkpoint_step"]
    )
    wa, wb = (
        load_file(run / f"step_{ma['checkpoint_step']:06d}" / "model.safetensors") for run in (one, two)
    )
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
