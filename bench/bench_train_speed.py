"""Benchmark 2 — training speed: ownlm against transformers' GPT2LMHeadModel of identical shape.

For each shape (GPT-2 124M at batch 4 x 256 and, as ``124M-8x512``, at 8 x 512; the tiny nanoGPT CPU shape at
batch 12 x 64) and each setting, one full training step (forward, backward, clip, AdamW step) is timed in a fresh
subprocess, so peak memory (max RSS on CPU, max allocated on CUDA) belongs to that setting alone:

- transformers fp32 (its default: SDPA attention, foreach AdamW) — the baseline;
- transformers with bf16 autocast (its best setting where bf16 helps);
- ownlm fp32 (like for like) and ownlm at ``--dtype auto`` (what ``ownlm pretrain`` picks from the hardware's
  capabilities), each with what the Trainer does on a CPU (``keep_freed_memory``: glibc keeps freed blocks);
- ownlm ``--compile`` (the auto dtype, then ``torch.compile``).

Two MFU columns. ``MFU`` is against the machine's square-matmul peak (``ownlm.train.device.peak_flops``: 1024 x
1024 on CPU, the faster of bf16 and fp32). ``roof`` is against what this machine does on THIS model's own matmuls
(``model_roof``): the forward and both backward products of every linear layer at the run's rows (batch x block)
— (N, 768) @ (768, 2304), (768, 768), (768, 3072), (3072, 768) per block and (768, vocab) for the head on the
124M shape — timed in the setting's dtype and weighted by how often a step runs them, so ``roof`` reads as "the
share of what this CPU can do on this model" (attention's own products and everything else are the rest).

    python bench/bench_train_speed.py                  # 124M + tiny, a few steps each
    python bench/bench_train_speed.py --steps 20 --threads 2 --shapes tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = {
    "124M": dict(n_layer=12, n_head=12, n_embd=768, block=256, batch=4, vocab=50304),
    "124M-8x512": dict(n_layer=12, n_head=12, n_embd=768, block=512, batch=8, vocab=50304),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block=64, batch=12, vocab=320),
}
SETTINGS = ["hf-fp32", "hf-bf16", "ownlm-fp32", "ownlm-auto", "ownlm-compile"]


def one(shape: str, setting: str, steps: int, warmup: int, threads: int) -> dict:
    """Time ``steps`` training steps of one (shape, setting); runs inside its own process."""
    import resource

    import torch

    from ownlm.train.device import autocast, choose_dtype

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SHAPES[shape]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("hf"):
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=s["vocab"], n_positions=s["block"], n_embd=s["n_embd"], n_layer=s["n_layer"],
                         n_head=s["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         bos_token_id=0, eos_token_id=0)  # fmt: skip
        model = GPT2LMHeadModel(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

        def loss_of(x, y):
            logits = model(input_ids=x).logits
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    else:
        from ownlm.model.gpt import GPT, GPTConfig
        from ownlm.train.device import keep_freed_memory
        from ownlm.train.optim import make_optimizer

        if device.type == "cpu":  # as the Trainer does for CPU training
            keep_freed_memory()

        model = GPT(GPTConfig(vocab_size=s["vocab"], block_size=s["block"], n_layer=s["n_layer"],
                              n_head=s["n_head"], n_embd=s["n_embd"])).to(device)  # fmt: skip
        opt = make_optimizer(model, 1e-4, 0.1, device=device)

        def loss_of(x, y):  # as `ownlm pretrain` scores a batch: the loss alone, through the fused head
            return model(x, y, reduction="sum", scored_only=True)[1] / y.numel()

    x = torch.randint(0, 256, (s["batch"], s["block"]), device=device)
    y = torch.randint(0, 256, (s["batch"], s["block"]), device=device)
    dtype = {"hf-fp32": "fp32", "ownlm-fp32": "fp32", "hf-bf16": "bf16"}.get(setting)
    if dtype is None:  # what `ownlm pretrain --dtype auto` picks on this machine
        dtype = choose_dtype("auto", device, log=lambda m: None)
    if (
        setting == "ownlm-compile"
    ):  # what `ownlm pretrain --compile` does: the dtype chosen above, then compile
        compiled = torch.compile(model)

        def loss_of(x, y):
            return compiled(x, y, reduction="sum", scored_only=True)[1] / y.numel()

        warmup = max(warmup, 3)  # the first steps compile
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with autocast(device, dtype):
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    if device.type == "cuda":
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    n = sum(p.numel() for p in model.parameters())
    return {"shape": shape, "setting": setting, "dtype": dtype, "tokens_per_s": s["batch"] * s["block"] / dt,
            "step_ms": dt * 1e3, "peak_mem_mib": mem, "params": n, "device": str(device)}  # fmt: skip


def model_roof(s: dict, dtype: str, device, seconds: float = 0.2) -> float:
    """FLOP/s of this machine on the shape ``s``'s linear-layer matmuls in ``dtype`` (forward x @ W.T, backward
    dY @ W and dY.T @ x), weighted by how many of each a training step runs."""
    import torch

    from ownlm.runtime.device import torch_dtype

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, c, layers = s["batch"] * s["block"], s["n_embd"], s["n_layer"]
    shapes = [(c, 3 * c, layers), (c, c, layers), (c, 4 * c, layers), (4 * c, c, layers), (c, s["vocab"], 1)]
    gen = torch.Generator(device=device).manual_seed(0)
    t = torch_dtype(dtype)
    flops = seconds_total = 0.0
    for d_in, d_out, count in shapes:
        x = torch.rand(n, d_in, device=device, generator=gen).to(t)
        w = torch.rand(d_out, d_in, device=device, generator=gen).to(t)
        dy = torch.rand(n, d_out, device=device, generator=gen).to(t)

        def three(x=x, w=w, dy=dy):
            x @ w.t()
            dy @ w
            dy.t() @ x

        three()  # warm-up
        sync()
        reps, t0 = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - t0 < seconds / len(shapes):
            three()
            reps += 1
        sync()
        per = (time.perf_counter() - t0) / reps
        flops += 3 * 2 * n * d_in * d_out * count
        seconds_total += per * count
    return flops / seconds_total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=["124M", "tiny"], choices=list(SHAPES))
    ap.add_argument("--settings", nargs="*", default=SETTINGS, choices=SETTINGS)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: 5 for 124M, 30 for tiny)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--one", nargs=2, metavar=("SHAPE", "SETTING"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        steps = a.steps or (5 if a.one[0].startswith("124M") else 30)
        print(json.dumps(one(a.one[0], a.one[1], steps, a.warmup, a.threads)))
        return
    import torch

    from ownlm.model.gpt import GPT, GPTConfig
    from ownlm.train.device import peak_flops

    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(device)
    print(
        f"device {device}, {a.threads} threads; measured matmul peak (bf16 where faster) {peak / 1e12:.2f} TFLOP/s"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    rows, roofs = [], {}  # (shape, dtype) -> this machine's FLOP/s on the shape's own matmuls
    for shape in a.shapes:
        s = SHAPES[shape]
        with torch.device("meta"):
            ref = GPT(GPTConfig(vocab_size=s["vocab"], block_size=s["block"], n_layer=s["n_layer"],
                                n_head=s["n_head"], n_embd=s["n_embd"]))  # fmt: skip
        fpt = ref.flops_per_token(s["block"])
        base = None
        for setting in a.settings:
            cmd = [sys.executable, __file__, "--one", shape, setting, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), "--threads", str(a.threads)]  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{shape} {setting}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["mfu"] = fpt * r["tokens_per_s"] / peak
            key = (shape, r["dtype"])
            if key not in roofs:
                roofs[key] = model_roof(s, r["dtype"], device)
            r["roof_flops"] = roofs[key]
            r["mfu_roof"] = fpt * r["tokens_per_s"] / roofs[key]
            if setting == "hf-fp32":
                base = r["tokens_per_s"]
            r["vs_hf_fp32"] = r["tokens_per_s"] / base if base else None
            rows.append(r)
            ratio = f"{r['vs_hf_fp32']:.2f}x" if r["vs_hf_fp32"] else "-"
            print(f"{shape:>5} {setting:<11} {r['dtype']:<5} {r['tokens_per_s']:>10,.0f} tok/s "
                  f"{r['step_ms']:>9.1f} ms/step  peak mem {r['peak_mem_mib']:>7,.0f} MiB  "
                  f"MFU {100 * r['mfu']:5.1f}%  roof {100 * r['mfu_roof']:5.1f}% of "
                  f"{r['roof_flops'] / 1e12:.2f} TFLOP/s  vs transformers fp32 {ratio}")  # fmt: skip
    for shape in a.shapes:
        got = {r["setting"]: r for r in rows if r["shape"] == shape}
        ours = [k for k in got if k.startswith("ownlm")]
        if "hf-fp32" in got and ours:
            best_hf = max(got[k]["tokens_per_s"] for k in ("hf-fp32", "hf-bf16") if k in got)
            best = max(ours, key=lambda k: got[k]["tokens_per_s"])
            print(f"{shape}: ownlm best ({best}) / transformers default = "
                  f"{got[best]['tokens_per_s'] / got['hf-fp32']['tokens_per_s']:.2f}x (target >= 2x); "
                  f"ownlm best / transformers best = {got[best]['tokens_per_s'] / best_hf:.2f}x")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
