"""``ownlm eval``: a checkpoint's loss on a token split, as perplexity and bits per byte.

Bits per byte divide by the text's size, not its token count, so models with different tokenizers compare
fairly: ``bpb = loss_nats * tokens / (bytes * ln 2)`` (tokens and UTF-8 bytes of the split, from the manifest).
The split is read as consecutive non-overlapping windows of the model's context length.

    ownlm eval run/ --data tokens/
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.runtime.device import PRECISION


@dataclass(kw_only=True)
class EvalConfig:
    """Evaluate a checkpoint on a token split."""

    run: str = opt(help="run folder (its latest checkpoint) or a checkpoint folder", positional=True)
    data: str = opt(
        help="token folder written by `ownlm encode`, or chat/instruction JSON(L) or a persona folder (the loss of "
        "each example's last reply)"
    )
    split: Literal["val", "train"] = opt("val", help="which split to evaluate")
    batch_size: int = opt(8, help="windows per forward pass", bounds="[1, inf)")
    max_tokens: int = opt(0, help="evaluate at most this many tokens (0: the whole split)")
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", help="where to run")
    dtype: PRECISION = opt("fp32", help="precision of the forward pass")
    json: bool = opt(False, help="print one JSON object instead of text")
    out: str = opt("", help="chat data: write each example's loss and token count to this JSONL file")


def bits_per_byte(loss_nats: float, tokens: int, nbytes: int) -> float:
    """Mean loss per token (nats) -> bits per UTF-8 byte of the text.

    >>> round(bits_per_byte(math.log(2), tokens=100, nbytes=100), 6)
    1.0
    """
    return loss_nats * tokens / (nbytes * math.log(2))


def evaluate_split(model, tokens, block_size: int, batch_size: int, device, dtype: str = "fp32",
                   max_tokens: int | None = None) -> tuple[float, int]:  # fmt: skip
    """Mean cross-entropy (nats/token) over non-overlapping windows; returns ``(loss, tokens scored)``."""
    import torch

    from ownlm.data.batches import sequential_batches
    from ownlm.train.device import autocast

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), autocast(device, dtype):
        for x, y in sequential_batches(tokens, block_size, batch_size, max_tokens or None):
            _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
            total += loss.float().item() * y.size
            count += y.size
    return total / count, count


def main(cfg: EvalConfig) -> int:
    from pathlib import Path

    from ownlm.data.shards import check_tokenizer, open_split, read_tokens_manifest
    from ownlm.model.checkpoint import load_model
    from ownlm.tokenizer import Tokenizer
    from ownlm.train.device import check_dtype, pick_device

    manifest = read_tokens_manifest(cfg.data)
    info = manifest["splits"].get(cfg.split)
    if not info or not info.get("tokens"):
        raise UserError(f"{cfg.data}: the {cfg.split} split is empty")
    device = pick_device(cfg.device)
    check_dtype(cfg.dtype, device)
    model, tok, mcfg = load_model(cfg.run, device=device)
    data_tok = Path(cfg.data) / "tokenizer.json"
    if tok is not None and not (data_tok.is_file() and tok.extends(Tokenizer.load(data_tok))):
        # a chat fine-tune's tokenizer only adds special tokens: the pretraining tokens still mean the same
        check_tokenizer(manifest, tok.sha256(), f"the checkpoint {cfg.run}", cfg.data)
    if manifest["vocab_size"] > mcfg.vocab_size:
        raise UserError(
            f"{cfg.data}: token ids go up to {manifest['vocab_size'] - 1}, beyond the model's vocabulary "
            f"({mcfg.vocab_size}); encode with the model's tokenizer"
        )
    tokens = open_split(Path(cfg.data), cfg.split, manifest)
    loss, n = evaluate_split(
        model, tokens, mcfg.block_size, cfg.batch_size, device, cfg.dtype, cfg.max_tokens
    )
    bpb = bits_per_byte(loss, info["tokens"], info["bytes"]) if info.get("bytes") else None
    result = {"split": cfg.split, "loss": loss, "perplexity": math.exp(min(loss, 50)), "bits_per_byte": bpb,
              "tokens": n}  # fmt: skip
    if cfg.json:
        print(json.dumps(result))
    else:
        bpb_text = f"{bpb:.4f}" if bpb is not None else "n/a"
        print(f"{cfg.split} loss {loss:.4f} nats/token, perplexity {result['perplexity']:.2f}, "
              f"{bpb_text} bits/byte ({n:,} tokens)")  # fmt: skip
    return 0
