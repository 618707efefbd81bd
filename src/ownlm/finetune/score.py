"""``ownlm eval RUN --data FILE.jsonl``: how well a model predicts the last reply of each conversation.

    ownlm eval runs/ann --data persona/val.jsonl --out per-example.jsonl
    ownlm eval runs/ann --data persona/             # a persona folder: its val.jsonl (--split train: train.jsonl)
    ownlm eval runs/base --data tokens/             # a token folder: perplexity and bits per byte (train.evaluate)

Chat, instruction or persona data is rendered with the model's own chat template (a model without one gets the
template fine-tuning would give it, its new tokens starting at the mean embedding: the loss of fine-tuning's step
0). Each example is scored on its *final* assistant turn and that turn's end-of-turn token, the tokens a fine-tune's
held-out loss counts (``sft.final_reply_only``); an example longer than the context keeps its end. The command prints
the mean loss per token over all examples; ``--out`` writes one line per example: ``{"where", "loss", "tokens"}``
(``loss`` the mean per token of that reply), the numbers a paired comparison of two models needs.
"""

from __future__ import annotations

import math
from pathlib import Path

from ownlm.errors import UserError


def is_token_folder(path: str) -> bool:
    """A folder written by ``ownlm encode`` (its manifest names the format)."""
    manifest = Path(path) / "manifest.json"
    return (
        manifest.is_file() and "ownlm-tokens" in manifest.read_text(encoding="utf-8", errors="replace")[:400]
    )


def load_scoring_examples(path: str, split: str) -> list[dict]:
    """Chat/Alpaca JSON(L) records, or a persona folder's ``split``; every one must have an assistant turn."""
    from ownlm.finetune.data import load_examples, load_persona_split

    if Path(path).is_dir():
        examples, _ = load_persona_split(path, split)
        if not examples:
            raise UserError(f"{path}: its {split}.jsonl holds no examples")
        return examples
    return load_examples([path])[0]


def per_example_losses(
    model, enc, batch_size: int, pad_id: int, device, dtype: str = "fp32"
) -> list[tuple[float, int]]:
    """``(sum of the scored tokens' losses, their count)`` of each example of ``enc``, in its order."""
    import numpy as np
    import torch

    from ownlm.finetune.sft import IGNORE, _pad_rows, example_row
    from ownlm.train.device import autocast

    order = sorted(range(len(enc.ids)), key=lambda k: len(enc.ids[k]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(enc.ids)
    model.eval()
    with torch.no_grad(), autocast(device, dtype):
        for i in range(0, len(order), batch_size):
            b = order[i : i + batch_size]
            batch = _pad_rows([example_row(enc.ids[k], enc.mask[k]) for k in b], pad_id)
            labels = torch.from_numpy(batch["labels"]).to(device)
            x = torch.from_numpy(batch["input_ids"]).to(device)
            losses = model(x, labels, reduction="none", scored_only=True)[1].double().cpu().numpy()  # (N,)
            counts = (batch["labels"] != IGNORE).sum(axis=1)  # scored tokens per row, in row-major order
            ends = np.cumsum(counts)
            for k, n, end in zip(b, counts, ends):
                out[k] = (float(losses[end - n : end].sum()), int(n))
    return out


def score_examples(run: str, examples: list[dict], persona: bool, batch_size: int = 8, device="cpu",
                   dtype: str = "fp32") -> tuple[list[dict], str, int]:  # fmt: skip
    """``(rows, template name, examples dropped)``: each example's ``{"where", "loss", "tokens"}`` under the model
    of ``run``, scored on its last reply and end-of-turn token."""
    from ownlm.finetune.sft import choose_template, encode_examples, final_reply_only
    from ownlm.model.checkpoint import load_model, resolve_checkpoint
    from ownlm.model.resize import fit_vocab
    from ownlm.tokenizer.chat import add_special_tokens

    folder = resolve_checkpoint(run)
    model, tok, mcfg = load_model(folder, device=device)
    if tok is None:
        raise UserError(f"{folder}: the model has no tokenizer.json; scoring chat data needs its tokenizer")
    template = choose_template("auto", folder, examples, persona)
    n_vocab = tok.n_vocab
    tok = add_special_tokens(tok, template.special_tokens())
    fit_vocab(model, n_vocab, tok.n_vocab)  # no-op when the template's tokens are there
    model.to(device)
    block = mcfg.block_size
    enc = final_reply_only(encode_examples(examples, template, tok, block + 1, "truncate"))
    if not enc.ids:
        raise UserError(f"no example has a reply that fits the model's context of {block} tokens")
    pad_id = tok.eot_id if tok.eot_id is not None else 0
    scores = per_example_losses(model, enc, batch_size, pad_id, device, dtype)
    rows = [
        {"where": ex.get("where"), "loss": s / n, "tokens": n} for ex, (s, n) in zip(enc.examples, scores)
    ]
    return rows, template.name, enc.dropped


def pooled_loss(rows: list[dict]) -> float:
    """Mean loss per token over all examples' scored tokens."""
    return sum(r["loss"] * r["tokens"] for r in rows) / max(sum(r["tokens"] for r in rows), 1)


def chat_eval(cfg) -> int:
    """``ownlm eval`` on chat, instruction or persona data (``cfg`` is ``train.evaluate.EvalConfig``)."""
    import json

    from ownlm.io import prepare_output, write_jsonl
    from ownlm.runtime.device import pick_device
    from ownlm.train.device import check_dtype

    if cfg.out:
        prepare_output(cfg.out, kind="ownlm-scores", folder=False, inputs=[cfg.data])
    examples = load_scoring_examples(cfg.data, cfg.split)
    device = pick_device(cfg.device)
    check_dtype(cfg.dtype, device)
    rows, template, dropped = score_examples(cfg.run, examples, Path(cfg.data).is_dir(), cfg.batch_size, device,
                                             cfg.dtype)  # fmt: skip
    loss, count = pooled_loss(rows), sum(r["tokens"] for r in rows)
    if cfg.out:
        write_jsonl(cfg.out, rows)
    skipped = f", {dropped} without a reply that fits" if dropped else ""
    result = {"data": str(cfg.data), "template": template, "examples": len(rows), "loss": loss,
              "perplexity": math.exp(min(loss, 50)), "tokens": count,
              "mean_example_loss": sum(r["loss"] for r in rows) / len(rows)}  # fmt: skip
    if cfg.json:
        print(json.dumps(result))
    else:
        print(f"last replies of {len(rows):,} examples{skipped} (template {template}): loss {loss:.4f} "
              f"nats/token, perplexity {result['perplexity']:.2f} ({count:,} tokens)"
              + (f"; per example: {cfg.out}" if cfg.out else ""))  # fmt: skip
    return 0


def main(cfg) -> int:
    """``ownlm eval``: a token folder's split (perplexity, bits per byte) or chat data's last replies."""
    from ownlm.train.evaluate import main as eval_tokens

    if is_token_folder(cfg.data):
        if cfg.out:
            raise UserError("--out writes per-example scores of chat data; a token folder has no examples")
        return eval_tokens(cfg)
    if not Path(cfg.data).exists():
        raise UserError(f"--data {cfg.data}: no such file or folder")
    return chat_eval(cfg)
