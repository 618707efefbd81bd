"""Preference tuning (DPO): the loss against trl's DPOTrainer on the same models and batch, the data formats,
the reference (step 0 = reward accuracy 0.5 and margin 0; LoRA's is the adapters switched off), gradients on the
policy only, the command end to end with LoRA, exact resume after kill -9, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from model_samples import make_run
from safetensors.torch import load_file

from ownlm.cli import main
from ownlm.finetune.dpo import (
    adapters_off,
    dpo_loss,
    pair_logps,
    preference_metrics,
    sequence_logps,
)
from ownlm.finetune.dpo_data import encode_pairs, load_pairs, pair_batch
from ownlm.model.checkpoint import load_model, save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.lora import LoRAConfig, apply_lora
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.chat import add_special_tokens, get_template
from ownlm.train.trainer import RunContext

REPO = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--dtype", "fp32", "--no-progress"]
WORDS = "cat dog sun moon red blue tree fish".split()


def _pairs(n=48, seed=0):
    """Polite chosen replies, curt rejected ones, in the book's format."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = " ".join(rng.choice(WORDS, 3))
        out.append(
            {"instruction": "Say the words.", "input": w, "chosen": f"Sure: {w}", "rejected": f"No. {w}"}
        )
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random GPT with a byte-level tokenizer, saved as a model folder, and preference data."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=96, n_layer=2, n_head=2, n_embd=48, pos="rope",
                          norm="rmsnorm", mlp="swiglu"))  # fmt: skip
    save_model(d / "model", model, Tokenizer(special_tokens={"<|endoftext|>": 256}))
    (d / "pairs.json").write_text(json.dumps(_pairs()))
    return d


def _tok():
    return add_special_tokens(
        Tokenizer(special_tokens={"<|endoftext|>": 256}), ["<|im_start|>", "<|im_end|>"]
    )


# ---------------------------------------------------------------------------------------------- the loss


def _trl_trainer(tmp_path, policy, ref, hf_tok, beta, loss_type, label_smoothing=0.0):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    ds = Dataset.from_list(
        [{"prompt": "the cat", "chosen": " sat", "rejected": " mat"}]
    )  # unused: a batch is given
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to=[],
                     label_smoothing=label_smoothing, use_cpu=True, bf16=False, max_length=None, save_strategy="no")  # fmt: skip
    return DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=hf_tok)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_matches_trl_dpo_trainer_on_the_same_models_and_batch(tmp_path, loss_type):
    """Two tiny models exported to Hugging Face: trl's DPOTrainer.compute_loss on its collated batch equals
    ownlm's loss on the same pairs within 1e-5, and so do the summed log-probabilities it logs."""
    pytest.importorskip("trl")
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.train(["the cat sat on the mat, politely. " * 5], vocab_size=270, progress=False)
    arch = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    ours_policy, ours_ref = (
        make_run(tmp_path / "p", tok, seed=1, **arch),
        make_run(tmp_path / "r", tok, seed=2, **arch),
    )
    for name in ("p", "r"):
        assert (
            main(["export", str(tmp_path / name), "--to", "hf", "--out", str(tmp_path / f"hf_{name}")]) == 0
        )
    policy = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf_p", dtype=torch.float32)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf_r", dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf_p")
    rng = np.random.default_rng(0)
    examples = [{"prompt_ids": rng.integers(0, 300, int(rng.integers(2, 8))).tolist(),
                 "chosen_ids": rng.integers(0, 300, int(rng.integers(1, 9))).tolist(),
                 "rejected_ids": rng.integers(0, 300, int(rng.integers(1, 9))).tolist()} for _ in range(5)]  # fmt: skip
    beta = 0.3
    trainer = _trl_trainer(tmp_path, policy, ref, hf_tok, beta, loss_type)
    batch = trainer.data_collator(examples)
    policy.train()  # no dropout in these models; train mode is what compute_loss sees in training
    theirs = trainer.compute_loss(policy, batch).item()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if v}

    # ownlm: the same pairs as rows [chosen..., rejected...] with labels on the completions only
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in examples
    ]
    T = max(len(p) + len(c) for p, c in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), -100)
    for i, (p, c) in enumerate(rows):
        ids = p + c
        x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, len(p) - 1 : len(ids) - 1] = torch.tensor(c)
    with torch.no_grad():
        lp, n = sequence_logps(ours_policy, x, y)
        lr, _ = sequence_logps(ours_ref, x, y)
    B = len(examples)
    ours = dpo_loss(lp[:B], lp[B:], lr[:B], lr[B:], beta, loss_type, 0.0, n[:B], n[B:]).mean().item()
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert lp[:B].mean().item() == pytest.approx(logged["logps/chosen"], abs=1e-4)
    assert lp[B:].mean().item() == pytest.approx(logged["logps/rejected"], abs=1e-4)
    margin = beta * ((lp[:B] - lr[:B]) - (lp[B:] - lr[B:]))
    assert margin.mean().item() == pytest.approx(logged["rewards/margins"], abs=1e-5)


def test_label_smoothing_is_conservative_dpo_and_zero_smoothing_is_plain_dpo():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g) * 5 for _ in range(4))
    d = 0.2 * ((pc - rc) - (pr - rr))
    plain = dpo_loss(pc, pr, rc, rr, 0.2)
    assert torch.allclose(plain, -torch.nn.functional.logsigmoid(d))
    smooth = dpo_loss(pc, pr, rc, rr, 0.2, label_smoothing=0.1)
    expected = -0.9 * torch.nn.functional.logsigmoid(d) - 0.1 * torch.nn.functional.logsigmoid(-d)
    assert torch.allclose(smooth, expected)
    # the smoothed loss is smallest at a finite margin; the plain one keeps falling
    m = torch.linspace(0, 200, 2001)
    z = torch.zeros_like(m)
    assert dpo_loss(m, z, z, z, 0.2, label_smoothing=0.1).argmin() < len(m) - 1
    assert dpo_loss(m, z, z, z, 0.2).argmin() == len(m) - 1


def test_gradient_reaches_the_policy_only():
    """The reference is a constant: no gradient reaches it; the policy's is beta * sigmoid(-beta d) per pair."""
    g = torch.Generator().manual_seed(0)
    pc, pr = (torch.randn(8, generator=g).requires_grad_() for _ in range(2))
    rc, rr = (torch.randn(8, generator=g).requires_grad_() for _ in range(2))
    dpo_loss(pc, pr, rc, rr, 0.5).sum().backward()
    assert rc.grad is None and rr.grad is None
    d = 0.5 * ((pc - rc) - (pr - rr)).detach()
    assert torch.allclose(pc.grad, -0.5 * torch.sigmoid(-d))
    assert torch.allclose(pr.grad, 0.5 * torch.sigmoid(-d))


def test_ties_count_one_half():
    z = np.zeros(4)
    m = preference_metrics(z, z, z, z, beta=0.1)
    assert (
        m["reward_accuracy"] == 0.5
        and m["reward_margin"] == 0.0
        and m["val_loss"] == pytest.approx(np.log(2))
    )


# ---------------------------------------------------------------------------------------------- data


def test_data_formats_book_chat_string_and_implicit_prompt(tmp_path):
    book = tmp_path / "book.json"
    book.write_text(json.dumps([{"instruction": "Fix", "input": "teh", "output": "the", "chosen": "the",
                                 "rejected": "the, obviously"}]))  # fmt: skip
    chat = tmp_path / "chat.jsonl"
    rows = [
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
         "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "What."}]},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "What."},
        {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "What."}]},
    ]  # fmt: skip
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_pairs([book, chat])
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Fix", "input": "teh"}]
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("the", "the, obviously")
    assert pairs[1]["prompt"][0]["role"] == "system" and pairs[1]["chosen"] == "Hello!"
    assert pairs[2]["prompt"] == pairs[3]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert pairs[3]["rejected"] == "What." and pairs[3]["where"] == f"{chat}:3"


def test_labels_are_exactly_the_replies_and_the_batch_is_chosen_then_rejected():
    tok, template = _tok(), get_template("chatml")
    pairs = [{"prompt": [{"role": "user", "content": "hi " * k}], "chosen": "yes" * k, "rejected": "no"}
             for k in range(1, 4)]  # fmt: skip
    enc = encode_pairs(pairs, template, tok, 10_000, "truncate")
    b = pair_batch(enc, [2, 0], pad_id=256)
    assert b["input_ids"].shape[0] == 4
    for row, text in enumerate(["yesyesyes<|im_end|>", "yes<|im_end|>", "no<|im_end|>", "no<|im_end|>"]):
        assert tok.decode([int(t) for t in b["labels"][row] if t != -100]) == text


@pytest.mark.parametrize(
    "record, message",
    [
        ({"instruction": "x", "chosen": "a"}, "no 'rejected'"),
        ({"prompt": "x", "chosen": "a", "rejected": ""}, "'rejected' is empty"),
        ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "end with a user"),
        ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
          "rejected": [{"role": "user", "content": "OTHER"}, {"role": "assistant", "content": "c"}]}, "differ only"),
    ],
)  # fmt: skip
def test_bad_records_are_one_line_with_file_and_line(tmp_path, capsys, base, record, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(record) + "\n"
    )
    rc = main(
        ["finetune", "dpo", str(base / "model"), "--data", str(data), "--out", str(tmp_path / "o"), *FAST]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"{data}:2:" in err and message in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- the reference


def test_lora_reference_is_the_network_with_adapters_off(base):
    model, tok, _ = load_model(base / "model")
    plain = load_model(base / "model")[0]
    tok = add_special_tokens(tok, ["<|im_start|>", "<|im_end|>"])
    enc = encode_pairs([{"prompt": [{"role": "user", "content": "hi"}], "chosen": "yes", "rejected": "no"}] * 3,
                       get_template("alpaca"), tok, 96, "truncate")  # fmt: skip
    apply_lora(model, LoRAConfig(rank=4, targets=["all"]))
    with torch.no_grad():  # a trained adapter: the policy now differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ctx = RunContext(torch.device("cpu"), "fp32")
    policy = pair_logps(model.eval(), enc, ctx, 2, 256)
    with adapters_off(model):
        off = pair_logps(model, enc, ctx, 2, 256)
    want = pair_logps(plain.eval(), enc, ctx, 2, 256)
    assert not np.allclose(policy[0], want[0])
    np.testing.assert_array_equal(off[0], want[0])
    np.testing.assert_array_equal(off[1], want[1])
    assert not np.allclose(pair_logps(model, enc, ctx, 2, 256)[0], want[0])  # switched back on afterwards


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_zero_steps_score_one_half_and_a_run_learns_the_preference(base, tmp_path):
    """Step 0 (policy = reference): every reward is exactly 0, accuracy 0.5, margin 0, loss log 2. A short LoRA
    run then prefers the chosen replies on held-out pairs, and writes its report and answers."""
    out = tmp_path / "run"
    args = ["finetune", "dpo", str(base / "model"), "--data", str(base / "pairs.json"), "--out", str(out),
            "--lora-rank", "4", "--lora-targets", "all", "--max-iters", "12", "--lr", "3e-3", "--batch-size", "4",
            "--responses", "2", "--max-new-tokens", "6", "--evals", "2", *FAST]  # fmt: skip
    assert main(args) == 0
    recs = _records(out)
    first, last = recs[0], recs[-1]
    assert first["step"] == 0 and first["reward_accuracy"] == 0.5 and first["reward_margin"] == 0.0
    assert first["chosen_reward"] == first["rejected_reward"] == 0.0
    assert first["val_loss"] == pytest.approx(np.log(2), abs=1e-12)
    assert first["val_ppl"] is None, "a DPO loss is per pair: its exp is no perplexity"
    assert last["step"] == 12 and last["reward_accuracy"] > 0.9 and last["reward_margin"] > 0
    ref = load_file(out / "reference.safetensors")
    assert set(ref) == {"train_chosen", "train_rejected", "val_chosen", "val_rejected"}
    ck = out / (out / "latest").read_text().strip()
    assert (ck / "adapter.safetensors").is_file() and (ck / "chat_template.json").is_file()
    rows = [json.loads(x) for x in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"response", "response_before", "chosen", "rejected"} <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "reward accuracy" in report and "0.500" in report


def test_resume_after_kill_9_is_exact(base, tmp_path):
    """A run killed with SIGKILL and resumed ends with the weights and metrics.jsonl of an unbroken run."""
    common = ["finetune", "dpo", str(base / "model"), "--data", str(base / "pairs.json"), "--max-iters", "40",
              "--lr", "1e-3", "--batch-size", "4", "--responses", "0", "--checkpoint-interval", "2",
              "--eval-interval", "10", "--keep-checkpoints", "0", "--seed", "3", *FAST]  # fmt: skip
    whole = tmp_path / "whole"
    assert main([*common, "--out", str(whole)]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ownlm", *common, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "step_000012").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "latest").read_text().strip() < "step_000040", "the run finished before it could be killed"
    assert main([*common, "--out", str(out), "--resume"]) == 0
    a = load_file(whole / "step_000040" / "model.safetensors")
    b = load_file(out / "step_000040" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def strip(recs):
        return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s", "mfu")} for r in recs]

    assert strip(_records(out)) == strip(_records(whole))


def test_two_processes_match_one_with_the_same_global_batch(base, tmp_path):
    """DDP (two gloo processes under torchrun, half the pairs each) follows one process' curves and weights."""
    from test_ddp import curve, one_and_two_processes

    if not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch has no gloo backend")
    args = ["finetune", "dpo", str(base / "model"), "--data", str(base / "pairs.json"), "--max-iters", "6",
            "--lr", "1e-3", "--responses", "0", "--eval-interval", "3", "--device", "cpu", *FAST]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    one_and_two_processes(args, one, two, batch=4)
    a, b = curve(one), curve(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 3, 6]
    assert b[0]["reward_accuracy"] == 0.5 and b[0]["reward_margin"] == 0.0
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss", "reward_margin", "chosen_logp"):
            if ra[k] is not None:
                assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), k
    wa, wb = (
        load_file(one / "step_000006" / "model.safetensors"),
        load_file(two / "step_000006" / "model.safetensors"),
    )
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_lora_over_bf16_frozen_weights_with_recomputed_activations(base, tmp_path, capsys):
    """--base-dtype bf16 keeps the frozen weights in bf16 (bf16 autocast); step 0 is still exactly 0.5 / 0, and
    the adapters learn. Without LoRA or partial training the flag is refused in one line."""
    out = tmp_path / "run"
    args = ["finetune", "dpo", str(base / "model"), "--data", str(base / "pairs.json"), "--lora-rank", "4",
            "--lora-targets", "all", "--max-iters", "6", "--lr", "3e-3", "--batch-size", "4", "--responses", "0",
            "--evals", "1", "--base-dtype", "bf16", "--checkpoint-activations", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    recs = _records(out)
    assert recs[0]["reward_accuracy"] == 0.5 and recs[0]["reward_margin"] == 0.0
    assert recs[-1]["step"] == 6 and recs[-1]["reward_margin"] > 0
    assert json.loads((out / "config.json").read_text())["train"]["dtype"] == "bf16"
    i = args.index("--lora-rank")
    bad = args[:i] + args[i + 4 :]  # no --lora-rank 4 --lora-targets all
    assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
    assert "--base-dtype bf16 stores the frozen weights" in capsys.readouterr().err
