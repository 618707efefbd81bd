"""Supervised fine-tuning: masks, packing, batches, the command end to end, LoRA runs, resume, chat, errors."""

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
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from ownlm.cli import main
from ownlm.finetune.sft import Encoded, SFTBatches, encode_examples, example_row, rouge_l
from ownlm.model.checkpoint import load_model, save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.chat import add_special_tokens, get_template

REPO = Path(__file__).resolve().parents[1]
WORDS = "cat dog sun moon red blue tree fish".split()
FAST = ["--threads", "1", "--dtype", "fp32", "--no-progress"]


def _examples(n=120, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = " ".join(rng.choice(WORDS, 3))
        out.append({"instruction": "Repeat the words.", "input": w, "output": w})
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random GPT with a byte-level tokenizer, saved as a model folder."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=192, n_layer=2, n_head=2, n_embd=48, pos="rope",
                          norm="rmsnorm", mlp="swiglu"))  # fmt: skip
    save_model(d / "model", model, Tokenizer(special_tokens={"<|endoftext|>": 256}))
    (d / "data.json").write_text(json.dumps(_examples()))
    return d


def _chat_tok():
    return add_special_tokens(
        Tokenizer(special_tokens={"<|endoftext|>": 256}), ["<|im_start|>", "<|im_end|>"]
    )


def _conversations(n=12, seed=0):
    rng = np.random.default_rng(seed)
    convs = []
    for _ in range(n):
        msgs = [{"role": "system", "content": "Be brief."}] if rng.random() < 0.5 else []
        for _ in range(int(rng.integers(1, 3))):
            msgs.append({"role": "user", "content": " ".join(rng.choice(WORDS, int(rng.integers(1, 5))))})
            msgs.append(
                {"role": "assistant", "content": " ".join(rng.choice(WORDS, int(rng.integers(1, 5))))}
            )
        convs.append({"messages": msgs, "where": "test"})
    return convs


def test_labels_are_exactly_the_assistant_replies_and_end_markers():
    tok, template = _chat_tok(), get_template("chatml")
    convs = _conversations()
    enc = encode_examples(convs, template, tok, max_len=10_000, overlong="truncate")
    batches = SFTBatches(enc, batch_size=4, block_size=512, pad_id=256, seed=0)
    seen = set()
    for i in range(3):
        b = batches.batch(i)
        for row in range(4):
            labels = b["labels"][row]
            taught = labels[labels != -100].tolist()
            seen.add(tuple(taught))
            assert tok.decode(taught).count("<|im_end|>") == taught.count(tok.special_tokens["<|im_end|>"])
    expected = set()
    for c in convs:
        want = "".join(m["content"] + "<|im_end|>" for m in c["messages"] if m["role"] == "assistant")
        ids = tok.encode(want, allowed_special="all")
        expected.add(tuple(ids))
    assert seen <= expected and len(seen) >= 4  # every row teaches exactly one conversation's replies


@pytest.mark.parametrize("pos", ["rope", "learned", "sinusoidal"])
def test_packed_examples_see_only_themselves(pos):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=64, n_layer=2, n_head=2, n_embd=32, pos=pos)).eval()
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 300, size=n) for n in (7, 12, 5)]
    row = torch.tensor(np.concatenate(parts))[None]
    seg = torch.tensor(np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)]))[None]
    packed = model(row, segments=seg)[0][0]
    start = 0
    for p in parts:
        alone = model(torch.tensor(p)[None])[0][0]
        torch.testing.assert_close(packed[start : start + len(p)], alone, atol=1e-5, rtol=1e-5)
        start += len(p)


def test_batches_are_deterministic_and_processes_split_the_global_batch():
    tok, template = _chat_tok(), get_template("chatml")
    enc = encode_examples(_conversations(40), template, tok, 10_000, "truncate")
    one = SFTBatches(enc, batch_size=4, block_size=512, pad_id=256, seed=3)
    again = SFTBatches(enc, batch_size=4, block_size=512, pad_id=256, seed=3)
    halves = [
        SFTBatches(enc, batch_size=2, block_size=512, pad_id=256, seed=3, rank=r, world=2) for r in (0, 1)
    ]
    for i in (0, 5, 17):  # 17: a later epoch
        a, b = one.batch(i), again.batch(i)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        rows = [r for h in halves for r in h.batch(i)["labels"].tolist()]
        strip = lambda r: [t for t in r if t != -100]  # noqa: E731
        assert [strip(r) for r in rows] == [strip(r) for r in a["labels"].tolist()]


def test_packing_fills_rows_without_splitting_examples():
    tok, template = _chat_tok(), get_template("chatml")
    enc = encode_examples(_conversations(30), template, tok, 10_000, "truncate")
    b = SFTBatches(enc, batch_size=2, block_size=256, pad_id=256, seed=0, pack=True).batch(0)
    assert b["input_ids"].shape == (2, 256)
    for seg, lab in zip(b["segments"], b["labels"]):
        ids = [s for s in seg.tolist() if s >= 0]
        assert ids == sorted(ids) and len(set(ids)) >= 2  # several whole examples, in order
        assert all(lab[k] == -100 for k in range(len(seg)) if seg[k] < 0)


def test_overlong_examples_are_truncated_or_dropped_by_the_rule():
    tok, template = _chat_tok(), get_template("chatml")
    long = {"messages": [{"role": "user", "content": "x " * 50}, {"role": "assistant", "content": "y " * 50}]}
    short = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    all_user = {"messages": [{"role": "user", "content": "x " * 200}, {"role": "assistant", "content": "b"}]}
    enc = encode_examples([long, short, all_user], template, tok, max_len=120, overlong="truncate")
    assert enc.truncated == 2 and enc.dropped == 0 and len(enc.ids) == 3
    assert all(len(x) <= 120 for x in enc.ids)
    # the reply starts inside the window: the start is kept; it starts after it: the end is kept (context cut)
    full_long, _ = template.encode(tok, long["messages"])
    full_user, user_mask = template.encode(tok, all_user["messages"])
    assert enc.ids[0].tolist() == full_long[:120]
    assert enc.ids[2].tolist() == full_user[-120:] and enc.mask[2].tolist() == user_mask[-120:]
    assert tok.decode([t for t, m in zip(full_user[-120:], user_mask[-120:]) if m]).startswith("b")
    enc = encode_examples([long, short], template, tok, max_len=120, overlong="drop")
    assert enc.dropped == 1 and enc.truncated == 0 and len(enc.ids) == 1


def _lcs(a, b):
    if not a or not b:
        return 0
    if a[0] == b[0]:
        return 1 + _lcs(a[1:], b[1:])
    return max(_lcs(a[1:], b), _lcs(a, b[1:]))


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.lists(st.sampled_from("abcd"), max_size=6), st.lists(st.sampled_from("abcd"), max_size=6))
def test_rouge_l_matches_a_brute_force_lcs(a, b):
    lcs = _lcs(a, b)
    want = 0.0 if lcs == 0 else 2 * (lcs / len(a)) * (lcs / len(b)) / (lcs / len(a) + lcs / len(b))
    assert rouge_l(" ".join(a), " ".join(b)) == pytest.approx(want)


def test_sft_end_to_end_then_generate_eval_and_chat(base, tmp_path, capsys):
    out = tmp_path / "sft"
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(out),
            "--max-iters", "40", "--lr", "3e-3", "--responses", "3", "--max-new-tokens", "12", *FAST]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["step"] == 40
    assert records[-1]["val_loss"] < records[0]["val_loss"] - 1.0  # it learned the responses
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(
        {"reference", "response", "rouge_l", "rouge_l_before"} <= r.keys() for r in rows
    )
    report = (out / "report.md").read_text()
    assert "before (step 0)" in report and "ROUGE-L" in report
    data = json.loads((out / "data.json").read_text())
    assert data["template"] == "alpaca" and data["train"]["examples"] + data["val"]["examples"] == 120
    step = out / (out / "latest").read_text().strip()
    assert json.loads((step / "chat_template.json").read_text())["name"] == "alpaca"
    assert main(["generate", str(out), "--prompt", "cat", "--max-new-tokens", "4", "--seed", "0"]) == 0
    capsys.readouterr()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "ownlm", "chat", str(out), "--max-new-tokens", "6", "--seed", "1",
                           "--temperature", "0"], input="Repeat the words.\n/reset\nRepeat again.\n",
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) >= 2 and "reset" in proc.stderr  # a reply per turn
    assert proc.stdout.count("-" * 40 + "\n") == 1  # one separator between the two replies


def test_lora_run_saves_adapters_alone_and_merges(base, tmp_path):
    out = tmp_path / "lora"
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(out),
            "--max-iters", "6", "--lr", "1e-2", "--lora-rank", "4", "--lora-targets", "all", "--responses", "0",
            *FAST]  # fmt: skip
    assert main(args) == 0
    step = out / (out / "latest").read_text().strip()
    assert json.loads((step / "config.json").read_text())["kind"] == "lm+lora"
    adapter = load_file(step / "adapter.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    base_weights = load_file(step / "model.safetensors")
    original = load_file(base / "model" / "model.safetensors")
    for k, v in original.items():  # the base stayed frozen
        assert torch.equal(base_weights[k], v), k
    assert main(["finetune", "merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    merged = load_model(tmp_path / "merged")[0]
    unmerged = load_model(out, merge_lora=False)[0]
    x = torch.randint(0, 256, (2, 20))
    torch.testing.assert_close(merged(x)[0], unmerged(x)[0], atol=1e-5, rtol=1e-5)
    assert (tmp_path / "merged" / "chat_template.json").is_file()


def test_resume_with_lora_after_kill_9_is_exact(base, tmp_path):
    common = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--max-iters", "30",
              "--lr", "1e-2", "--lora-rank", "4", "--responses", "0", "--checkpoint-interval", "3",
              "--keep-checkpoints", "0", *FAST]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "ownlm", *common, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    t0 = time.time()
    while not (out / "latest").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "latest").read_text().strip() < "step_000030", "the run finished before it could be killed"
    assert main([*common, "--out", str(out), "--resume"]) == 0
    a = load_file(tmp_path / "straight" / "step_000030" / "adapter.safetensors")
    b = load_file(out / "step_000030" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_one_line_and_exit_2(base, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_examples(1)[0]) + "\n" + json.dumps({"instruction": "x"}) + "\n")
    cases = [
        (["--data", str(bad)], f"{bad}:2"),
        (["--data", str(base / "data.json"), "--lora-rank", "999"], "larger than layer"),
        (["--data", str(tmp_path / "missing.json")], "not found"),
    ]
    for extra, message in cases:
        out = tmp_path / "o"
        assert main(["finetune", "sft", str(base / "model"), "--out", str(out), *extra, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()  # nothing half-written
    (tmp_path / "notamodel").mkdir()
    assert main(["finetune", "sft", str(tmp_path / "notamodel"), "--data", str(base / "data.json"), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "checkpoint" in capsys.readouterr().err


def test_new_chat_tokens_get_mean_rows_and_old_logits_stay(base):
    from ownlm.model.resize import fit_vocab

    model, tok, _ = load_model(base / "model")
    x = torch.randint(0, 256, (1, 10))
    before = model(x)[0][..., : tok.n_vocab].clone()
    new = add_special_tokens(tok, get_template("chatml").special_tokens())
    fit_vocab(model, tok.n_vocab, new.n_vocab)
    torch.testing.assert_close(model(x)[0][..., : tok.n_vocab], before)
    w = model.transformer.wte.weight
    torch.testing.assert_close(w[tok.n_vocab], w[: tok.n_vocab].mean(0))


def test_encoded_counts_report_truncation():
    enc = Encoded(ids=[np.arange(5)], mask=[np.array([0, 0, 1, 1, 1], np.uint8)], truncated=2, dropped=1)
    assert enc.counts() == {"examples": 1, "truncated": 2, "dropped": 1, "tokens": 5, "loss_tokens": 3}
    x, y, s = example_row(enc.ids[0], enc.mask[0])
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == [-100, 2, 3, 4] and s.tolist() == [0, 0, 0, 0]


def test_resume_keeps_partial_training_frozen(base, tmp_path):
    common = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(tmp_path / "r"),
              "--train-layers", "1", "--responses", "0", "--checkpoint-interval", "2", *FAST]  # fmt: skip
    assert main([*common, "--max-iters", "2"]) == 0
    first = load_file(tmp_path / "r" / "step_000002" / "model.safetensors")
    assert main([*common, "--max-iters", "4", "--resume"]) == 0
    last = load_file(tmp_path / "r" / "step_000004" / "model.safetensors")
    assert torch.equal(
        first["transformer.h.0.attn.c_attn.weight"], last["transformer.h.0.attn.c_attn.weight"]
    )
    assert not torch.equal(
        first["transformer.h.1.attn.c_attn.weight"], last["transformer.h.1.attn.c_attn.weight"]
    )


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, pos="rope"))
    x, y = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.checkpoint_activations, model.head_chunk = recompute, 5  # several chunks of the scored head
        loss = (
            model(x, y)[1] + model(x, y.masked_fill(y % 3 == 0, -100), reduction="sum", scored_only=True)[1]
        )
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


def lora_run_on_a_frozen_base(base, out, base_dtype: str):
    """12 LoRA steps over a frozen base stored in ``base_dtype``; the held-out loss must fall. Returns the last
    step's folder and the command's arguments."""
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(out),
            "--max-iters", "12", "--lr", "1e-2", "--lora-rank", "4", "--lora-targets", "all", "--responses", "1",
            "--max-new-tokens", "4", "--base-dtype", base_dtype, "--checkpoint-activations", "--pack",
            "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    return out / (out / "latest").read_text().strip(), args


def test_lora_on_a_bf16_base_trains_fp32_adapters(base, tmp_path):
    out = tmp_path / "bf16"
    step, args = lora_run_on_a_frozen_base(base, out, "bf16")
    adapter = load_file(step / "adapter.safetensors")
    assert all(v.dtype == torch.float32 for v in adapter.values())
    saved, original = load_file(step / "model.safetensors"), load_file(base / "model" / "model.safetensors")
    for k, v in original.items():  # frozen: the base's weights, rounded to bf16 where they were stored so
        assert torch.equal(saved[k].float(), v.to(saved[k].dtype).float()), k
    assert any(v.dtype == torch.bfloat16 for v in saved.values())
    assert load_model(out)[0](torch.randint(0, 256, (1, 8)))[0].isfinite().all()


def test_a_frozen_base_is_read_straight_into_bf16_and_partial_training_keeps_fp32(base):
    from ownlm.finetune.common import frozen_layout, store_frozen
    from ownlm.model.adapt import AdaptConfig
    from ownlm.model.lora import adapt_model

    original = load_file(base / "model" / "model.safetensors")
    for adapt in (AdaptConfig(lora_rank=4, lora_targets=["all"], base_dtype="bf16"),
                  AdaptConfig(train_layers="1", base_dtype="bf16"), AdaptConfig(lora_rank=4, base_dtype="int8"),
                  AdaptConfig(train_layers="1", base_dtype="int8")):  # fmt: skip
        direct, _, _ = load_model(base / "model", merge_lora=False, prepare=frozen_layout(adapt))
        cast, _, _ = load_model(base / "model", merge_lora=False)  # the old way: fp32, then cast
        for m in (direct, cast):
            adapt_model(m, adapt)
            store_frozen(m, adapt.base_dtype)
        a, b = direct.state_dict(), cast.state_dict()
        assert a.keys() == b.keys(), (adapt, sorted(set(a) ^ set(b)))
        for k in original:  # the same dtype and the same values as loading in fp32 and casting
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (adapt, k)
        assert {a[k].dtype for k in original} == {{"bf16": torch.bfloat16, "int8": torch.int8}[adapt.base_dtype],
                                                  torch.float32}  # fmt: skip
        assert type(direct.transformer.h[0].mlp.c_fc) is type(cast.transformer.h[0].mlp.c_fc)
        assert a["transformer.wte.weight"].dtype == torch.float32  # the tied head stays fp32
    assert frozen_layout(AdaptConfig(lora_rank=4)) is None  # fp32: nothing to plan


def test_an_int8_base_forward_is_close_to_fp32_and_its_gradients_are_exact(base):
    from ownlm.finetune.common import store_frozen
    from ownlm.model.adapt import AdaptConfig
    from ownlm.model.lora import adapt_model
    from ownlm.model.quantize import FrozenInt8Linear, dequantize_rows

    x = torch.randint(0, 256, (2, 24))
    models = {}
    for dtype in ("fp32", "bf16", "int8"):
        torch.manual_seed(0)
        models[dtype] = load_model(base / "model")[0]
        adapt_model(models[dtype], AdaptConfig(lora_rank=4))
        store_frozen(models[dtype], dtype)
    int8 = models["int8"]
    assert isinstance(int8.transformer.h[0].mlp.c_fc, FrozenInt8Linear)  # layers without adapters too
    assert int8.transformer.h[0].attn.c_attn.weight.dtype == torch.int8
    with torch.no_grad():
        ref = models["fp32"](x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = {d: models[d](x)[0].float() for d in ("bf16", "int8")}

    def rel(a):
        return ((a - ref).norm() / ref.norm()).item()

    # stated tolerance: int8 weights with per-row absmax scales, under bf16 autocast, are within 2 % (relative L2)
    # of the fp32 logits, and no more than 3x as far as the bf16 base is
    assert rel(got["int8"]) < 0.02 and rel(got["int8"]) < 3 * max(rel(got["bf16"]), 1e-3), (
        rel(got["int8"]),
        rel(got["bf16"]),
    )
    # the backward pass: the same adapter gradients as a float model holding the dequantized weights exactly
    twin = load_model(base / "model")[0]
    torch.manual_seed(0)
    adapt_model(twin, AdaptConfig(lora_rank=4))
    twin.load_state_dict(
        {k: v for k, v in int8.state_dict().items() if not k.endswith("weight_scale")}, strict=False
    )
    with torch.no_grad():
        for name, m in int8.named_modules():
            if getattr(m, "weight_scale", None) is not None:
                twin.get_submodule(name).weight.copy_(dequantize_rows(m.weight, m.weight_scale))
                twin.get_submodule(name).lora_B.normal_() if hasattr(m, "lora_B") else None
                if hasattr(m, "lora_B"):
                    m.lora_B.copy_(twin.get_submodule(name).lora_B)
    for m in (int8, twin):
        m.zero_grad()
        m(x, x)[1].backward()
    for (n, a), b in zip(int8.named_parameters(), twin.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_lora_on_an_int8_base_trains_saves_and_every_command_reads_it(base, tmp_path):
    out = tmp_path / "int8"
    step, args = lora_run_on_a_frozen_base(base, out, "int8")
    saved = load_file(step / "model.safetensors")
    assert saved["transformer.h.0.mlp.c_fc.weight"].dtype == torch.int8
    assert saved["transformer.h.0.mlp.c_fc.weight_scale"].shape == (
        saved["transformer.h.0.mlp.c_fc.weight"].shape[0],
    )
    merged = load_model(out)[0]  # a plain float model: the int8 base dequantized, the adapters folded in
    assert merged.transformer.h[0].mlp.c_fc.weight.dtype == torch.float32
    assert merged(torch.randint(0, 256, (1, 8)))[0].isfinite().all()
    assert main(["finetune", "merge", str(out), "--out", str(tmp_path / "merged")]) == 0
    assert main(["generate", str(tmp_path / "merged"), "--prompt", "cat", "--max-new-tokens", "3"]) == 0
    assert (
        main([*args[:-1], "--resume", "--max-iters", "14", "--no-progress"]) == 0
    )  # resumes over the int8 base


def test_base_dtype_needs_frozen_weights(base, tmp_path, capsys):
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(tmp_path / "x"),
            "--base-dtype", "bf16", *FAST[:2], "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "--lora-rank" in capsys.readouterr().err


def test_held_out_loss_scores_the_final_reply_and_the_best_checkpoint_is_kept(base, tmp_path):
    """Multi-turn held-out examples are scored on their last reply alone; with a rate that overfits, `latest` ends
    on the evaluation with the lowest held-out loss and `last` names the newest step."""
    from ownlm.finetune.sft import final_reply_only

    tok, template = _chat_tok(), get_template("chatml")
    enc = encode_examples(_conversations(), template, tok, max_len=10_000, overlong="truncate")
    last = final_reply_only(enc)
    for ids, m, full in zip(last.ids, last.mask, enc.mask):
        reply = np.flatnonzero(m)
        assert len(reply) and np.all(np.diff(reply) == 1) and reply[-1] == np.flatnonzero(full)[-1]
        assert tok.decode(ids[reply].tolist()).endswith("<|im_end|>")
    rng = np.random.default_rng(0)
    rows = [{"messages": [{"role": "user", "content": "say"}, {"role": "assistant", "content": " ".join(rng.choice(WORDS, 4))}]}
            for _ in range(40)]  # fmt: skip
    (tmp_path / "noise.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "over"
    args = ["finetune", "sft", str(base / "model"), "--data", str(tmp_path / "noise.jsonl"), "--out", str(out),
            "--max-iters", "60", "--lr", "3e-2", "--evals", "12", "--responses", "0", "--keep-checkpoints", "0",
            "--batch-size", "4", *FAST]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if r["step"] > 0]
    best = min(scored, key=lambda r: r["val_loss"])
    assert (out / "latest").read_text().strip() == f"step_{best['step']:06d}"
    if best["step"] != 60:
        assert (out / "last").read_text().strip() == "step_000060"
    assert f"step {best['step']}" in (out / "report.md").read_text() or best["step"] == 60


def test_patience_stops_a_run_whose_held_out_loss_stops_improving(base, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": f"{i} {i * 7 % 13}"}]}
            for i in range(40)]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "p"
    args = ["finetune", "sft", str(base / "model"), "--data", str(tmp_path / "d.jsonl"), "--out", str(out),
            "--max-iters", "200", "--lr", "5e-2", "--eval-interval", "2", "--patience", "2", "--responses", "0",
            "--batch-size", "4", *FAST]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] < 200
    losses = [r["val_loss"] for r in records]
    assert min(losses[-2:]) >= min(losses[:-2]) - 1e-6  # the last two evaluations did not improve on the best


def test_eval_scores_each_last_reply_and_chat_replays_contexts(base, tmp_path, capsys):
    """`ownlm eval RUN --data chat.jsonl --out` gives each example's mean loss over its last reply (+ end token), equal
    to scoring that example alone; `ownlm chat RUN --replay` answers every context, reproducibly with --seed."""
    out = tmp_path / "sft"
    convs = _conversations(n=30, seed=3)
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps({"messages": c["messages"]}) for c in convs))
    args = ["finetune", "sft", str(base / "model"), "--data", str(data), "--out", str(out), "--max-iters", "4",
            "--responses", "0", *FAST]  # fmt: skip
    assert main(args) == 0
    scores = tmp_path / "scores.jsonl"
    capsys.readouterr()
    assert (
        main(["eval", str(out), "--data", str(data), "--out", str(scores), "--json", "--batch-size", "4"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 30 == result["examples"] and all(r["tokens"] >= 2 for r in rows)
    pooled = sum(r["loss"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
    assert abs(pooled - result["loss"]) < 1e-6
    # one example alone, scored by hand: the last reply's content and its <|im_end|>
    model, tok, _ = load_model(out)
    from ownlm.model.checkpoint import resolve_checkpoint
    from ownlm.tokenizer.chat import load_template

    template = load_template(resolve_checkpoint(out))
    ids, mask = template.encode(tok, convs[5]["messages"])
    reply = tok.encode(convs[5]["messages"][-1]["content"])
    n = len(reply) + 1
    scored = np.flatnonzero(mask)[-n:]  # the reply and <|im_end|>, wherever the template puts them
    assert tok.decode([ids[k] for k in scored]) == convs[5]["messages"][-1]["content"] + "<|im_end|>"
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0, scored - 1]  # the position before predicts each token
    expected = torch.nn.functional.cross_entropy(
        logits.float(), torch.tensor([ids[k] for k in scored])
    ).item()
    assert rows[5]["tokens"] == n and abs(rows[5]["loss"] - expected) < 1e-4
    # replay: one reply per conversation, the same twice with the same seed
    for name in ("a.jsonl", "b.jsonl"):
        assert main(["chat", str(out), "--replay", str(data), "--out", str(tmp_path / name), "--seed", "3",
                     "--max-new-tokens", "5"]) == 0  # fmt: skip
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(a) == 30 and all(isinstance(r["reply"], str) for r in a)
    assert (
        a[0]["messages"] == convs[0]["messages"][:-1]
        and a[0]["reference"] == convs[0]["messages"][-1]["content"]
    )
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert main(["chat", str(out), "--replay", str(data)]) == 2  # no --out


def test_a_time_budget_keeps_the_epoch_cap_and_a_short_run_says_so(base, tmp_path, capsys):
    out = tmp_path / "capped"
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(out),
            "--max-minutes", "30", "--responses", "0", "--evals", "1", *FAST]  # fmt: skip
    assert main(args) == 0
    per_epoch = json.loads((out / "data.json").read_text())["steps_per_epoch"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 * per_epoch  # 2 epochs, not 30 minutes of them
    assert "Warning" not in (out / "report.md").read_text()
    short = tmp_path / "short"
    args = ["finetune", "sft", str(base / "model"), "--data", str(base / "data.json"), "--out", str(short),
            "--max-iters", "3", "--responses", "0", *FAST]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    assert "only 3 steps: expect noise" in capsys.readouterr().out
    assert "**Warning:** only 3 steps" in (short / "report.md").read_text()


def test_held_out_answers_start_no_new_answer_after_the_deadline(monkeypatch):
    """The answers before and after training are part of --max-minutes: none starts once the deadline has passed
    (a clock that moves 20 s per answer, a deadline at 50 s: answers start at 0, 20 and 40 s), one always does."""
    import ownlm.finetune.sft as sft

    now = [0.0]

    def slow_answer(*args, **kwargs):
        now[0] += 20
        return "an answer"

    monkeypatch.setattr(sft, "clock", lambda: now[0])
    monkeypatch.setattr(sft, "answer", slow_answer)
    examples = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 10
    assert len(sft.held_out_answers(None, None, None, examples, 8, deadline=50.0)) == 3
    assert now[0] == 60
    assert len(sft.held_out_answers(None, None, None, examples, 8, deadline=50.0)) == 1
    assert len(sft.held_out_answers(None, None, None, examples, 8)) == 10
