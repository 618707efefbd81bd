"""Benchmark 1 — training quality against nanoGPT's published CPU result, with transformers as the peer.

nanoGPT's README trains a tiny GPT on tinyshakespeare at the character level on a laptop CPU and reaches a
validation loss of about 1.88 (4 layers, 4 heads, 128 wide, context 64, batch 12, 2,000 iterations, lr 1e-3
cosine-decayed to 1e-4 over 2,000 steps, 100 warm-up steps, dropout 0). Here the vocabulary is byte-level
(256 bytes + <|endoftext|>; for this ASCII text one token per character) and the same recipe is run

  1. on Hugging Face ``transformers.GPT2LMHeadModel`` (the peer), with nanoGPT's training loop in plain PyTorch;
  2. with ``ownlm pretrain`` at exactly that config;
  3. with ``ownlm pretrain``'s own defaults and ``--max-minutes`` = the peer's wall time.

All three train on the same token files and are scored on the whole validation split (non-overlapping
windows of 64 tokens, ``ownlm.train.evaluate.evaluate_split``). Targets: (2) <= 1.88, (3) <= 1.70.

    python bench/bench_train_quality.py                      # the full recipe (~minutes per run)
    python bench/bench_train_quality.py --iters 300          # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def prepare(work: Path, text_file: Path) -> Path:
    from ownlm.data.encode import EncodeConfig, encode_corpus
    from ownlm.tokenizer import Tokenizer

    Tokenizer(special_tokens={"<|endoftext|>": 256}).save(work / "tok")  # bytes only, no merges
    out = work / "tokens"
    encode_corpus(
        EncodeConfig(corpus=[str(text_file)], tokenizer=str(work / "tok"), out=str(out), progress=False)
    )
    return out


def val_loss(model, tokens_dir: Path, block: int) -> float:
    import torch

    from ownlm.data.shards import open_split
    from ownlm.train.evaluate import evaluate_split

    class Wrap(torch.nn.Module):  # HF returns an object; evaluate_split wants (logits, loss)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, y):
            out = self.m(input_ids=x, labels=None)
            logits = out.logits
            return logits, torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    m = model if hasattr(model, "flops_per_token") else Wrap(model)
    return evaluate_split(m, open_split(tokens_dir, "val"), block, 32, torch.device("cpu"))[0]


def run_peer(tokens_dir: Path, iters: int, seed: int) -> tuple[float, float]:
    """nanoGPT's recipe on transformers.GPT2LMHeadModel: returns (val loss, wall seconds)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from ownlm.data.batches import WindowSampler
    from ownlm.data.shards import open_split
    from ownlm.train.optim import lr_at

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=257, n_positions=64, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=256, eos_token_id=256)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))  # fmt: skip
    sampler = WindowSampler(open_split(tokens_dir, "train"), 64, 12, seed=seed)
    t0 = time.perf_counter()
    for step in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, step / iters, 1e-3, 1e-4, 100, warmup_progress=100 / iters)
        x, y = (torch.from_numpy(a) for a in sampler.batch(step))
        loss = _hf_loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    wall = time.perf_counter() - t0
    model.eval()
    return val_loss(model, tokens_dir, 64), wall


def _hf_loss(model, x, y):
    import torch

    logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


def run_ownlm(tokens_dir: Path, out: Path, args: list[str]) -> tuple[float, float, dict]:
    from ownlm.cli import main
    from ownlm.model.checkpoint import load_model

    t0 = time.perf_counter()
    rc = main(
        ["pretrain", "--data", str(tokens_dir), "--out", str(out), "--no-progress", "--samples", "0", *args]
    )
    wall = time.perf_counter() - t0
    assert rc == 0, f"ownlm pretrain exited {rc}"
    model, _, cfg = load_model(out)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return val_loss(model, tokens_dir, cfg.block_size), wall, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="tinyshakespeare input.txt")
    ap.add_argument("--iters", type=int, default=2000, help="iterations of the nanoGPT recipe")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every run")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--budget-minutes", type=float, default=0.0,
                    help="time for run 3 (0: the peer's wall time)")  # fmt: skip
    ap.add_argument("--skip", nargs="*", default=[], choices=["peer", "recipe", "defaults"])
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="ownlm-bench-quality-"))
    tokens = prepare(work, Path(a.data))
    res = {}
    print(f"tinyshakespeare, byte vocabulary, {a.iters} iterations, {a.threads} threads; work dir {work}")
    peer_wall = None
    if "peer" not in a.skip:
        loss, peer_wall = run_peer(tokens, a.iters, a.seed)
        res["peer"] = (loss, peer_wall)
        print(f"transformers GPT2LMHeadModel, nanoGPT recipe: val loss {loss:.4f}, {peer_wall:.1f} s")
    # GPT-2's block (learned positions, LayerNorm, GELU): the same maths as the peer's GPT2LMHeadModel
    recipe = ["--pos", "learned", "--norm", "layernorm", "--mlp", "gelu",
              "--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
              "--max-iters", str(a.iters), "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-iters", "100",
              "--dropout", "0", "--beta2", "0.99", "--weight-decay", "0.1", "--eval-interval", str(a.iters),
              "--eval-iters", "20", "--threads", str(a.threads), "--seed", str(a.seed)]  # fmt: skip
    if "recipe" not in a.skip:
        loss, wall, last = run_ownlm(tokens, work / "recipe", recipe)
        res["recipe"] = (loss, wall)
        print(f"ownlm, same recipe:   val loss {loss:.4f} (target <= 1.88), {wall:.1f} s "
              f"({last['tokens_per_s']:,.0f} tok/s)")  # fmt: skip
    minutes = (
        a.budget_minutes or (peer_wall / 60 if peer_wall else 0.0) or (res.get("recipe", (0, 60))[1] / 60)
    )
    if "defaults" not in a.skip:
        args = ["--max-minutes", f"{minutes:.3f}", "--threads", str(a.threads), "--seed", str(a.seed)]
        loss, wall, last = run_ownlm(tokens, work / "defaults", args)
        res["defaults"] = (loss, wall)
        print(f"ownlm defaults, --max-minutes {minutes:.2f}: val loss {loss:.4f} (target <= 1.70), {wall:.1f} s, "
              f"{last['step']} steps")  # fmt: skip
    if "peer" in res and "recipe" in res:
        print(f"ratio (peer val loss / ownlm val loss at the recipe): {res['peer'][0] / res['recipe'][0]:.3f}; "
              f"wall time ratio (peer / ownlm): {res['peer'][1] / res['recipe'][1]:.2f}x")  # fmt: skip
    print(
        json.dumps({k: {"val_loss": v[0], "wall_s": v[1], "bpb": v[0] / math.log(2)} for k, v in res.items()})
    )


if __name__ == "__main__":
    main()
