"""The training loop, checkpoints, resume, ``ownlm pretrain`` and ``ownlm eval``."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ownlm.cli import main
from ownlm.data.batches import WindowSampler
from ownlm.data.encode import EncodeConfig, encode_corpus
from ownlm.errors import UserError
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.tokenizer import Tokenizer
from ownlm.train.config import TrainingConfig
from ownlm.train.device import choose_dtype
from ownlm.train.evaluate import bits_per_byte, evaluate_split
from ownlm.train.optim import lr_at, make_optimizer, param_groups
from ownlm.train.pretrain import PretrainTask
from ownlm.train.trainer import Trainer

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--threads", "1", "--dtype", "fp32", "--no-progress", "--samples", "0", "--eval-iters", "2"]  # fmt: skip
RESUME_RUN = [*TINY, "--max-iters", "200", "--eval-interval", "50", "--checkpoint-interval", "25",
              "--dropout", "0.1", "--warmup-iters", "10", "--keep-checkpoints", "0"]  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def _text(n_words=6000, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "far", "away", "home", "."]
    return " ".join(rng.choice(words, n_words))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A byte-level tokenizer (256 bytes + <|endoftext|>) and ~30k tokens encoded with it."""
    d = tmp_path_factory.mktemp("data")
    Tokenizer(special_tokens={"<|endoftext|>": 256}).save(d / "tok")
    (d / "text.txt").write_text(_text())
    encode_corpus(EncodeConfig(corpus=[str(d / "text.txt")], tokenizer=str(d / "tok"), out=str(d / "tokens"),
                               progress=False))  # fmt: skip
    return d / "tokens"


@pytest.fixture(scope="module")
def straight_run(tokens, tmp_path_factory):
    """The uninterrupted reference run that resumed runs must match exactly."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(["pretrain", "--data", str(tokens), "--out", str(out), *RESUME_RUN]) == 0
    return out


def _weights(run):
    return load_file(Path(run) / (Path(run) / "latest").read_text().strip() / "model.safetensors")


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _start(tokens, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "ownlm", "pretrain", "--data", str(tokens), "--out", str(out), *RESUME_RUN]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, out, timeout=120):
    t0 = time.time()
    while not (out / "latest").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def test_resume_after_kill_9_gives_the_same_weights(tokens, straight_run, tmp_path):
    out = tmp_path / "run"
    proc = _start(tokens, out)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = (out / "latest").read_text().strip()
    assert killed_at < "step_000200", "the run finished before it could be killed"
    assert main(["pretrain", "--data", str(tokens), "--out", str(out), *RESUME_RUN, "--resume"]) == 0
    _assert_same_weights(straight_run, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [50, 100, 150, 200]
    straight = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(records, straight):  # the loss columns too, not only the weights
        for key in ("train_loss", "val_loss", "lr", "tokens"):
            assert a[key] == b[key], (a["step"], key)


def _tiny_model(vocab=320, dropout=0.0):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=dropout))


def _settings(**kw):
    return TrainingConfig(threads=1, dtype="fp32", progress=False, eval_iters=2, **kw)


class _LossTask(PretrainTask):
    """A pretraining task whose loss goes through ``loss_fn(model, x, y)`` (to inject faults)."""

    def __init__(self, sampler, loss_fn):
        super().__init__(sampler)
        self.loss_fn = loss_fn

    def loss(self, model, batch):
        return self.loss_fn(model, batch["input_ids"], batch["labels"])


def test_ctrl_c_saves_and_resume_gives_the_same_weights(tokens, tmp_path):
    from ownlm.data.shards import open_split
    from ownlm.model.checkpoint import load_model
    from ownlm.model.run import RunFolder

    def run(out, sample_fn=None, resume=None):
        sampler = WindowSampler(open_split(tokens, "train"), 16, 4, seed=5)
        cfg = _settings(max_iters=40, eval_interval=10, warmup_iters=5)
        model = load_model(resume[0])[0].train() if resume else _tiny_model(dropout=0.1)
        return Trainer(model, cfg, PretrainTask(sampler, sample_fn=sample_fn), out, resume=resume).fit()

    def press_ctrl_c(model, step):  # called at each evaluation: the user presses Ctrl-C during step 10's
        if step == 10:
            os.kill(os.getpid(), signal.SIGINT)

    assert run(tmp_path / "a")["status"] == "done"
    summary = run(tmp_path / "b", sample_fn=press_ctrl_c)
    assert summary["status"] == "interrupted" and summary["step"] == 11  # finished its step, then saved
    assert (tmp_path / "b" / "latest").read_text().strip() == "step_000011"
    assert run(tmp_path / "b", resume=RunFolder(tmp_path / "b").read_state())["status"] == "done"
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tokens, tmp_path):
    from ownlm.data.shards import open_split

    calls = {"n": 0}

    def loss_fn(model, x, y):
        calls["n"] += 1
        loss = model(x, y, reduction="sum")[1]
        return loss * float("nan") if calls["n"] > 12 else loss

    sampler = WindowSampler(open_split(tokens, "train"), 16, 4)
    run = tmp_path / "run"
    cfg = _settings(max_iters=50, eval_interval=5)
    with pytest.raises(UserError, match=r"loss became nan at step 13.*last good checkpoint is .*step_000010"):
        Trainer(_tiny_model(), cfg, _LossTask(sampler, loss_fn), run).fit()
    assert (run / "latest").read_text().strip() == "step_000010"
    assert not (run / "step_000015").exists()


def test_out_of_memory_names_the_setting_to_lower(tokens, tmp_path):
    from ownlm.data.shards import open_split

    def loss_fn(model, x, y):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    sampler = WindowSampler(open_split(tokens, "train"), 16, 4)
    with pytest.raises(UserError, match="out of memory.*--batch-size"):
        Trainer(_tiny_model(), _settings(max_iters=5), _LossTask(sampler, loss_fn), tmp_path / "run").fit()


def test_time_budget_ends_the_run_with_a_decayed_lr(tokens, tmp_path, trainer_clock):
    out = tmp_path / "run"
    args = [*TINY, "--max-minutes", "0.1", "--eval-interval", "20", "--warmup-iters", "0", "--samples", "2",
            "--sample-tokens", "8"]  # fmt: skip
    assert main(["pretrain", "--data", str(tokens), "--out", str(out), *args]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and (out / "latest").is_file() and (out / "loss.png").is_file()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * len(records) and all(isinstance(r["text"], str) for r in samples)
    assert records[-1]["step"] >= 10  # the clock advances per reading: the same steps on every machine
    assert records[-1]["lr"] < 0.9 * 2e-3  # the schedule ran (mostly) down with the clock
    for key in ("step", "train_loss", "val_loss", "val_bpb", "tokens_per_s", "elapsed_s", "lr", "mfu"):
        assert key in records[-1]


def test_weight_decay_only_on_matrices_and_fused_adamw():
    model = _tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # tied weights once, nothing missed
    assert no_decay["weight_decay"] == 0.0
    make_optimizer(model, 1e-3, 0.1)  # builds on this machine (fused where supported)


def test_schedules():
    lrs = [lr_at(s, s / 1000, 1e-3, 1e-4, 100, warmup_progress=0.1) for s in range(1001)]
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:101]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))  # then decays
    assert math.isclose(lrs[-1], 1e-4) and max(lrs) <= 1e-3
    wsd = [lr_at(s, s / 1000, 1e-3, 1e-4, 10, "wsd", decay_frac=0.2) for s in range(1001)]
    assert wsd[500] == wsd[800] == 1e-3 and math.isclose(wsd[1000], 1e-4) and wsd[900] < 1e-3


@pytest.mark.parametrize("flag, expected", [("amx_bf16", "bf16"), ("avx512_bf16", "bf16"), (None, "fp32")])
def test_dtype_auto_chooses_by_the_cpus_bf16_instructions(monkeypatch, flag, expected):
    from ownlm.train import device

    monkeypatch.setattr(device, "cpu_bf16_flag", lambda: flag)
    said = []
    cpu = torch.device("cpu")
    assert choose_dtype("auto", cpu, log=said.append) == expected
    assert said == [f"dtype auto -> {expected} ({flag or 'this CPU has no AMX or AVX512-BF16'})"]
    assert (
        choose_dtype("bf16", cpu) == "bf16" and choose_dtype("fp32", cpu) == "fp32"
    )  # an explicit name stays
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        choose_dtype("fp16", cpu)


def test_cpu_bf16_flag_reads_this_machines_cpu():
    from ownlm.train.device import CPU_BF16_FLAGS, cpu_bf16_flag

    flag = cpu_bf16_flag()
    assert flag is None or flag in CPU_BF16_FLAGS
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    assert flag == next((f for f in CPU_BF16_FLAGS if f in flags), None)


def test_eval_bits_per_byte(tokens, straight_run, capsys):
    assert main(["eval", str(straight_run), "--data", str(tokens), "--json", "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    m = json.loads((tokens / "manifest.json").read_text())["splits"]["val"]
    assert math.isclose(r["bits_per_byte"], r["loss"] * m["tokens"] / (m["bytes"] * math.log(2)))
    assert math.isclose(r["perplexity"], math.exp(r["loss"]))

    # a model that knows nothing (uniform over 256 bytes) scores exactly 8 bits per byte on byte tokens
    def uniform(x, y):
        return None, torch.nn.functional.cross_entropy(torch.zeros(y.numel(), 256), y.reshape(-1))

    uniform.eval = lambda: None
    loss, n = evaluate_split(uniform, np.arange(200) % 256, 16, 4, torch.device("cpu"))
    assert math.isclose(bits_per_byte(loss, n, n), 8.0, rel_tol=1e-6)


def test_pretrain_bad_inputs_exit_2(tokens, straight_run, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["pretrain", "--data", str(tmp_path / "none"), "--out", out, *TINY]) == 2
    assert "token folder not found" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tokens), "--out", str(straight_run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tokens), "--out", out, *TINY, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tokens), "--out", out, *TINY, "--block-size", "100000"]) == 2
    assert "needs block_size + 1 = 100,001" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tokens), "--out", out, *TINY, "--dtype", "fp16"]) == 2
    assert main(["pretrain", "--data", str(tokens), "--out", out, *TINY, "--batch-size", "0"]) == 2
    assert not (tmp_path / "run" / "latest").exists()


def test_tokenizer_mismatch_is_refused(tokens, straight_run, tmp_path, capsys):
    other = tmp_path / "other"
    Tokenizer.train([_text(seed=1)], vocab_size=270, progress=False).save(other / "tok")
    (other / "t.txt").write_text(_text(seed=2))
    encode_corpus(EncodeConfig(corpus=[str(other / "t.txt")], tokenizer=str(other / "tok"), out=str(other / "tokens"),
                               progress=False))  # fmt: skip
    assert main(["eval", str(straight_run), "--data", str(other / "tokens")]) == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert (
        main(
            ["pretrain", "--data", str(other / "tokens"), "--out", str(straight_run), *RESUME_RUN, "--resume"]
        )
        == 2
    )
    assert "another tokenizer" in capsys.readouterr().err


def test_stride_batch_tokens_wsd_and_bf16_run(tokens, tmp_path):
    out = tmp_path / "run"
    args = [*TINY[:10], "--threads", "1", "--samples", "0", "--stride", "8", "--batch-tokens", "128", "--schedule", "wsd", "--dtype", "bf16",
            "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "1", "--no-progress"]  # fmt: skip
    assert main(["pretrain", "--data", str(tokens), "--out", str(out), *args]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in records] == [3 * 128, 6 * 128]  # batch 4 x 16 tokens, accumulated twice
    state = json.loads((out / "step_000006" / "state.json").read_text())
    assert state["dtype"] == "bf16" and state["data_position"] == 12


def test_pretrain_with_checkpointed_activations_follows_the_plain_run(tokens, tmp_path):
    """--checkpoint-activations trades time for memory only: the same losses as a plain run (dropout included:
    the recomputed blocks draw the same masks)."""
    args = [*TINY, "--max-iters", "12", "--eval-interval", "6", "--dropout", "0.1", "--warmup-iters", "2"]
    curves = []
    for extra in ([], ["--checkpoint-activations"]):
        out = tmp_path / f"run{len(extra)}"
        assert main(["pretrain", "--data", str(tokens), "--out", str(out), *args, *extra]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        curves.append([(r["train_loss"], r["val_loss"]) for r in records])
    assert len(curves[0]) == 2
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)


@pytest.mark.parametrize(
    "checkpointing, mode, chosen",
    [(False, "auto", "keep"), (True, "auto", "return"), (True, "fast", "keep"), (False, "lean", "return")],
)
def test_cpu_training_chooses_glibcs_memory_mode(tokens, tmp_path, monkeypatch, checkpointing, mode, chosen):
    """CPU training keeps freed blocks for the next step (speed); --checkpoint-activations gives them back (memory)
    unless --memory-mode says otherwise, and --memory-mode lean gives them back without checkpointing."""
    from ownlm.train import device

    calls = []
    monkeypatch.setattr(device, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(device, "return_freed_memory", lambda: calls.append("return"))
    args = [*TINY, "--max-iters", "1", "--eval-iters", "1", "--memory-mode", mode] + (
        ["--checkpoint-activations"] if checkpointing else []
    )
    assert main(["pretrain", "--data", str(tokens), "--out", str(tmp_path / "run"), *args]) == 0
    assert calls == [chosen]


def test_glibc_memory_modes_apply_here():
    import sys

    from ownlm.train.device import keep_freed_memory, return_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    try:
        assert keep_freed_memory()
    finally:
        assert return_freed_memory()  # the suite goes on with memory given back (the stricter mode)
