"""Where a training step's time goes: torch.profiler over ownlm's step on the 124M shape, grouped by part.

One step as ``ownlm pretrain`` runs it (forward under ``--dtype``'s autocast, the summed loss through the fused
head, backward, gradient clipping, AdamW, with the Trainer's ``keep_freed_memory``; ``--plain-loss`` for
cross-entropy over fp32 logits, ``--glibc-defaults`` for malloc's own settings), profiled for a few steps after a
warm-up. Each operator's *self* time goes to one part:

- ``matmul``: the linear layers and the output head (``addmm``, ``mm``, ``bmm``, ``linear``'s products);
- ``attention``: ``scaled_dot_product_attention``'s fused kernel, forward and backward;
- ``norm``: LayerNorm / RMSNorm, forward and backward;
- ``loss``: log-softmax and NLL over the vocabulary, forward and backward (the fused head's own chunk work,
  exp, scatter, included);
- ``cast``: dtype conversions (``_to_copy``, ``copy_``: autocast's weight casts, the fp32 logits, gradients
  going back to fp32);
- ``optimizer``: AdamW (fused or not) and zeroing; ``clip``: the gradient norm and its scaling;
- ``activation``: GELU / SiLU; ``elementwise``: adds, multiplies, dropout; ``embedding``; ``other``.

Shares within one profile are meaningful on a busy machine (load slows every part alike); absolute times are not.

    python bench/profile_train_step.py                         # 124M, batch 4 x 256, --dtype auto, 2 threads
    python bench/profile_train_step.py --dtype fp32 --batch 8 --block 512 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

PARTS = [  # (part, substrings of aten operator names), first match wins
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("norm", ("layer_norm", "rms_norm")),
    (
        "loss",
        ("log_softmax", "nll_loss", "cross_entropy", "logsumexp", "exp", "scatter", "gather", "HeadCross"),
    ),
    ("optimizer", ("adam", "_foreach_", "zero_")),
    ("clip", ("linalg_vector_norm", "norm", "clamp", "stack")),
    ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
    ("cast", ("_to_copy", "copy_", "aten::to")),
    ("activation", ("gelu", "silu", "relu")),
    ("embedding", ("embedding",)),
    ("elementwise", ("add", "mul", "sub", "div", "dropout", "sum", "fill_", "where", "masked")),
]


def part_of(name: str) -> str:
    for part, keys in PARTS:
        if any(k in name for k in keys):
            return part
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="profiled steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--top", type=int, default=15, help="operators to list")
    ap.add_argument(
        "--plain-loss", action="store_true", help="F.cross_entropy over fp32 logits, not the fused head"
    )
    ap.add_argument("--glibc-defaults", action="store_true", help="malloc as it is (no keep_freed_memory)")
    a = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.train.device import autocast, choose_dtype, keep_freed_memory
    from ownlm.train.optim import make_optimizer

    torch.set_num_threads(a.threads)
    if not a.glibc_defaults:  # as the Trainer does for CPU training
        keep_freed_memory()
    torch.manual_seed(0)
    device = torch.device("cpu")
    dtype = choose_dtype(a.dtype, device, log=print)
    model = GPT(config_from_preset("gpt2", vocab_size=50304, block_size=a.block))
    model.train()
    model.fused_head_loss = not a.plain_loss
    opt = make_optimizer(model, 1e-4, 0.1, device=device)
    x = torch.randint(0, 50304, (a.batch, a.block))
    y = torch.randint(0, 50304, (a.batch, a.block))

    def step():
        with record_function("## forward"):
            with autocast(device, dtype):
                loss = model(x, y, reduction="sum", scored_only=True)[1]  # as `ownlm pretrain` scores
        with record_function("## backward"):
            (loss / y.numel()).backward()
        with record_function("## clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with record_function("## optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    wall = (time.perf_counter() - t0) / a.steps
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total for e in events if e.key.startswith("## ")}
    parts, ops = defaultdict(float), []
    for e in events:
        if e.key.startswith("## "):
            continue
        parts[part_of(e.key)] += e.self_cpu_time_total
        ops.append((e.self_cpu_time_total, e.key, e.count))
    total = sum(parts.values())
    print(f"124M shape, batch {a.batch} x {a.block}, dtype {dtype}, {a.threads} threads: "
          f"{wall * 1e3:,.0f} ms/step under the profiler, {a.batch * a.block / wall:,.0f} tokens/s")  # fmt: skip
    print("phase      share of the step")
    step_total = sum(phases.values())
    for k in ("## forward", "## backward", "## clip", "## optimizer"):
        print(f"  {k[3:]:<10} {100 * phases.get(k, 0) / step_total:5.1f}%")
    print("part       share of operator self time")
    for part, t in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {part:<12} {100 * t / total:5.1f}%")
    print(f"top {a.top} operators by self time")
    for t, name, n in sorted(ops, reverse=True)[: a.top]:
        print(f"  {100 * t / total:5.1f}%  {name} x{n // a.steps}/step  [{part_of(name)}]")


if __name__ == "__main__":
    main()
