"""A/B of one training-step lever on the 124M shape, both sides in the same process, steps interleaved.

A shared machine slows whatever runs while it is busy; alternating A, B, A, B ... and taking each side's median
makes the load fall on both alike, so the ratio means something where absolute timings do not. Both sides start
from the same weights and see the same batch.

Levers (A is what ownlm does today, B the alternative):

- ``head-loss``: the fused head + cross-entropy (``ownlm.model.head_loss``) against ``F.cross_entropy`` over
  fp32 logits;
- ``adamw``: fused AdamW against foreach AdamW;
- ``master``: bf16 autocast over fp32 weights against bf16 weights with an fp32 master copy (no autocast; the
  optimiser steps the fp32 copy, which is cast back into the bf16 weights);
- ``checkpoint``: no activation checkpointing against ``--checkpoint-activations`` (its cost);
- ``compile``: eager against ``torch.compile`` (the first steps compile, untimed);
- ``malloc``: glibc's defaults against ``keep_freed_memory`` (what the Trainer sets for CPU training). A process
  holds one malloc setting, so here the sides alternate as processes (each: one untimed step, then two timed).

Each step's CPU time (user + system, of the whole process) is reported next to its wall time: with one thread it
is the work done, nearly independent of the machine's load.

    python bench/ab_train_step.py head-loss                 # 124M, batch 4 x 256, --dtype auto, 1 thread
    python bench/ab_train_step.py adamw --dtype fp32 --pairs 6 --batch 8 --block 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

LEVERS = ("head-loss", "adamw", "master", "checkpoint", "compile", "malloc")


def make_step(side: str, lever: str, dtype: str, a):
    """A model, its optimiser and a ``step()`` for one side ("A" or "B") of ``lever``."""
    import torch

    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.train.device import autocast
    from ownlm.train.optim import make_optimizer, param_groups

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = GPT(config_from_preset("gpt2", vocab_size=50304, block_size=a.block))
    model.train()
    b = side == "B"
    model.fused_head_loss = not (lever == "head-loss" and b)
    model.checkpoint_activations = lever == "checkpoint" and b
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50304, (a.batch, a.block), generator=gen)
    y = torch.randint(0, 50304, (a.batch, a.block), generator=gen)
    n = y.numel()
    if lever == "master" and b and dtype == "bf16":
        model.to(torch.bfloat16)
        params = [p for p in model.parameters()]
        master = [p.detach().float().requires_grad_() for p in params]
        groups = [{"params": [m for m in master if m.dim() >= 2], "weight_decay": 0.1},
                  {"params": [m for m in master if m.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.99), fused=True)

        def step():
            loss = model(x, y, reduction="sum", scored_only=True)[1]
            (loss / n).backward()
            for p, m in zip(params, master, strict=True):
                m.grad = p.grad.float()
                p.grad = None
            torch.nn.utils.clip_grad_norm_(master, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for p, m in zip(params, master, strict=True):
                    p.copy_(m)
            return loss.item() / n

        return step
    if lever == "adamw" and b:
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.99), foreach=True)
    else:
        opt = make_optimizer(model, 1e-4, 0.1, (0.9, 0.99), device=device)
    run = torch.compile(model) if lever == "compile" and b else model

    def step():
        with autocast(device, dtype):
            loss = run(x, y, reduction="sum", scored_only=True)[1]
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item() / n

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lever", choices=LEVERS)
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5, help="timed A, B pairs")
    ap.add_argument("--side", choices=["A", "B"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--warmup", type=int, default=1, help="untimed steps of each side first (compile: 3 or more)"
    )
    a = ap.parse_args()
    import torch

    from ownlm.train.device import choose_dtype

    torch.set_num_threads(a.threads)
    dtype = choose_dtype(a.dtype, torch.device("cpu"), log=print)
    times, cpus, losses = ({side: [] for side in "AB"} for _ in range(3))
    if a.side:  # one side of the malloc lever, in its own process
        if a.side == "B":
            from ownlm.train.device import keep_freed_memory

            assert keep_freed_memory(), "no glibc here"
        step = make_step("A", a.lever, dtype, a)
        losses["A"].append(step())
        for _ in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            losses["A"].append(step())
            times["A"].append(time.perf_counter() - wall)
            cpus["A"].append(time.process_time() - cpu)
        print(json.dumps({"times": times["A"], "cpus": cpus["A"], "losses": losses["A"]}))
        return
    if a.lever == "malloc":
        for _ in range(a.pairs):
            for side in "AB":
                cmd = [sys.executable, __file__, "malloc", "--side", side, "--dtype", dtype, "--batch", str(a.batch),
                       "--block", str(a.block), "--threads", str(a.threads)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                times[side] += got["times"]
                cpus[side] += got["cpus"]
                losses[side] += got["losses"]
    else:
        steps = {side: make_step(side, a.lever, dtype, a) for side in "AB"}
        for _ in range(max(a.warmup, 3 if a.lever == "compile" else 0)):
            for side in "AB":
                losses[side].append(steps[side]())
        for _ in range(a.pairs):
            for side in "AB":
                wall, cpu = time.perf_counter(), time.process_time()
                losses[side].append(steps[side]())
                times[side].append(time.perf_counter() - wall)
                cpus[side].append(time.process_time() - cpu)
    med = {side: statistics.median(times[side]) for side in "AB"}
    cpu = {side: statistics.median(cpus[side]) for side in "AB"}
    tokens = a.batch * a.block
    print(
        f"{a.lever}, 124M shape, batch {a.batch} x {a.block}, {dtype}, {a.threads} thread(s), {a.pairs} pairs"
    )
    for side in "AB":
        print(f"  {side}: median {med[side] * 1e3:,.0f} ms/step ({tokens / med[side]:,.0f} tokens/s), CPU "
              f"{cpu[side] * 1e3:,.0f} ms/step; steps {[round(t * 1e3) for t in times[side]]} ms, "
              f"CPU {[round(t * 1e3) for t in cpus[side]]} ms, losses {[round(v, 4) for v in losses[side]]}")  # fmt: skip
    print(f"  B/A speed: {med['A'] / med['B']:.3f}x wall, {cpu['A'] / cpu['B']:.3f}x CPU time")


if __name__ == "__main__":
    main()
