"""FSDP2 under torchrun on CPU (gloo): ``--strategy fsdp`` follows one process' loss curve, each of two processes
holds half the weights and half the AdamW moments, checkpoints are one consolidated model that every other
command reads, and a run killed with SIGKILL resumes to the same weights as an uninterrupted one."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_ddp import curve, run_torchrun, say_it_twice

from ownlm.cli import main
from ownlm.data.encode import EncodeConfig, encode_corpus
from ownlm.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--threads", "1",
        "--dtype", "fp32", "--no-progress", "--samples", "0", "--eval-iters", "4", "--max-iters", "30",
        "--eval-interval", "10", "--warmup-iters", "5", "--device", "cpu"]  # fmt: skip

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="this PyTorch has no gloo")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("fsdp-data")
    Tokenizer(special_tokens={"<|endoftext|>": 256}).save(d / "tok")
    (d / "t.txt").write_text(" ".join(["the cat sat on the mat and ran far away home ."] * 600))
    encode_corpus(EncodeConfig(corpus=[str(d / "t.txt")], tokenizer=str(d / "tok"), out=str(d / "tokens"),
                               progress=False))  # fmt: skip
    return d / "tokens"


def torchrun(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ownlm",
           *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[
        -6000:
    ]  # torchrun's traceback last, the failing process' own output above
    return out + err


def kill_9(pid: int) -> None:
    """SIGKILL the launcher and every process under it (torchrun starts its workers in their own sessions)."""
    tree, parents = [pid], {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    for p in tree:
        tree.extend(parents.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def weights(run) -> dict:
    return load_file(run / (run / "latest").read_text().strip() / "model.safetensors")


def test_fsdp_two_processes_match_one_and_hold_half_each(tokens, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"  # the same global batch: 2 micro-batches of 4 rows a step
    assert main(["pretrain", "--data", str(tokens), *ARGS, "--out", str(one), "--batch-size", "4",
                 "--grad-accum", "2"]) == 0  # fmt: skip
    log = run_torchrun(["pretrain", "--data", str(tokens), *ARGS, "--out", str(two), "--batch-size", "2",
                        "--grad-accum", "2", "--strategy", "fsdp"])  # fmt: skip
    # each process holds about half of the weights and of the optimiser's moments (measured, then logged)
    m = re.search(r"fsdp: weights per process ([\d,]+) \+ ([\d,]+) of ([\d,]+); "
                  r"AdamW state per process ([\d,]+) \+ ([\d,]+) of ([\d,]+)", log)  # fmt: skip
    assert m, log[-3000:]
    w0, w1, w, o0, o1, o = (int(g.replace(",", "")) for g in m.groups())
    assert w0 + w1 == w and o0 + o1 == o and o == 2 * w  # exp_avg + exp_avg_sq of every weight
    assert abs(w0 - w / 2) <= 0.02 * w and abs(o0 - o / 2) <= 0.02 * o
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20, 30]
    assert a[-1]["tokens"] == b[-1]["tokens"]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
    wa, wb = weights(one), weights(two)
    assert wa.keys() == wb.keys()  # one consolidated model, the same tensors as an unsharded run
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    # every other command reads the checkpoint as it is
    assert main(["eval", str(two), "--data", str(tokens), "--json", "--device", "cpu"]) == 0


RESUME = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--threads", "1",
          "--dtype", "fp32", "--no-progress", "--samples", "0", "--eval-iters", "2", "--max-iters", "200",
          "--eval-interval", "50", "--checkpoint-interval", "25", "--warmup-iters", "10", "--dropout", "0.1",
          "--keep-checkpoints", "0", "--device", "cpu", "--batch-size", "2", "--strategy", "fsdp"]  # fmt: skip


@pytest.mark.slow
def test_fsdp_resume_after_kill_9_gives_the_same_weights(tokens, tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "run"
    finish(torchrun(["pretrain", "--data", str(tokens), *RESUME, "--out", str(straight)]))
    proc = torchrun(["pretrain", "--data", str(tokens), *RESUME, "--out", str(out)])
    t0 = time.time()
    while not (out / "latest").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 300
        time.sleep(0.01)
    kill_9(proc.pid)
    proc.wait()
    time.sleep(1)  # the workers' exit is reaped by init
    assert (out / "latest").read_text().strip() < "step_000200", "the run finished before it could be killed"
    finish(torchrun(["pretrain", "--data", str(tokens), *RESUME, "--out", str(out), "--resume"]))
    wa, wb = weights(straight), weights(out)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for a, b in zip(curve(straight), curve(out)):
        for key in ("train_loss", "val_loss", "lr", "tokens"):
            assert a[key] == b[key], (a["step"], key)


def test_fsdp_sft_matches_one_process(tmp_path):
    """Full fine-tuning under --strategy fsdp: the held-out batches split unevenly over the processes (3 batches,
    2 processes), so the one with fewer runs an extra pass to keep step with the other; with activation
    checkpointing (recomputed blocks gather their shards again) the curve is still one process' curve."""
    say_it_twice(tmp_path)
    args = ["finetune", "sft", str(tmp_path / "base"), "--data", str(tmp_path / "d.json"), "--max-iters", "6",
            "--eval-interval", "3", "--responses", "0", "--threads", "1", "--dtype", "fp32", "--no-progress",
            "--device", "cpu", "--lr", "1e-3"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one), "--batch-size", "4"]) == 0
    run_torchrun(
        [*args, "--out", str(two), "--batch-size", "2", "--strategy", "fsdp", "--checkpoint-activations"]
    )
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 3, 6]
    for ra, rb in zip(a, b):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
        if ra["train_loss"] is not None:
            assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
