"""Tiny random models saved as runs, for tests that need a checkpoint on disk (export, serving)."""

import torch

from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig


def make_run(folder, tok, seed=0, n_embd=32, **kw):
    """A random tiny model (random biases and norm weights too, so a missed tensor shows) saved as a run."""
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=64 * -(-tok.n_vocab // 64), block_size=32, n_layer=2, n_head=4, n_embd=n_embd, **kw
    )
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
                p.add_(torch.randn_like(p) * 0.2)
    save_model(folder, model, tok)
    return model
