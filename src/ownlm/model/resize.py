"""Give a trained GPT room for new tokens (chat markers added to its tokenizer).

New embedding rows start at the mean of the trained rows rather than at random: a new token then looks like
an average token to the network, its logit starts near the average logit instead of at an arbitrary value, and
the first fine-tuning steps do not spend themselves undoing a random vector (J. Hewitt, "Initializing New Word
Embeddings for Pretrained Language Models", 2021). Old rows are copied unchanged, so the model computes exactly
what it did for every old id.

Checkpoints pad the vocabulary to a multiple of 64, so a token added to the tokenizer often already has a row:
one that training never used. ``init_new_rows`` gives such rows the same mean start; ``fit_vocab`` does both.

>>> from ownlm.model.gpt import GPT, GPTConfig
>>> model = fit_vocab(GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=1, n_embd=8)), 60, 66)
>>> model.config.vocab_size, model.transformer.wte.weight.shape[0]
(128, 128)
"""

from __future__ import annotations

import math


def _grown(weight, n_rows: int):
    """A copy of ``weight`` (V, C) with ``n_rows - V`` rows of its mean appended: (n_rows, C)."""
    import torch

    with torch.no_grad():
        extra = weight.mean(dim=0, keepdim=True).expand(n_rows - weight.shape[0], -1)  # (n_new, C)
        data = torch.cat([weight, extra], dim=0)
    return torch.nn.Parameter(data, requires_grad=weight.requires_grad)


def grow_vocab(model, n_vocab: int):
    """Make ``model`` accept token ids below ``n_vocab``; return it (changed in place).

    Nothing happens if ``model.config.vocab_size >= n_vocab``. Otherwise the token embedding (and an untied
    output head) grow to ``64 * ceil(n_vocab / 64)`` rows, new rows set to the mean of the old ones; a tied head
    stays tied. Call it before building the optimizer: it replaces the weight tensors.
    """
    cfg = model.config
    if cfg.vocab_size >= n_vocab:
        return model
    size = 64 * math.ceil(n_vocab / 64)
    wte, head = model.transformer.wte, model.lm_head
    tied = head.weight is wte.weight
    wte.weight = _grown(wte.weight, size)
    wte.num_embeddings = size
    head.weight = wte.weight if tied else _grown(head.weight, size)
    head.out_features = size
    cfg.vocab_size = size
    return model


def init_new_rows(model, old_n_vocab: int, new_n_vocab: int) -> None:
    """Set rows ``[old_n_vocab, new_n_vocab)`` of the embedding (and an untied head) to the mean of rows
    ``[0, old_n_vocab)``: for tokens added inside the padding, whose rows exist but were never trained."""
    import torch

    if not 0 < old_n_vocab <= new_n_vocab <= model.config.vocab_size:
        raise ValueError(
            f"need 0 < old ({old_n_vocab}) <= new ({new_n_vocab}) <= vocab_size ({model.config.vocab_size})"
        )
    weights = [model.transformer.wte.weight]
    if model.lm_head.weight is not model.transformer.wte.weight:
        weights.append(model.lm_head.weight)
    with torch.no_grad():
        for w in weights:
            w[old_n_vocab:new_n_vocab] = w[:old_n_vocab].mean(dim=0)


def fit_vocab(model, old_n_vocab: int, new_n_vocab: int):
    """Grow ``model`` for a tokenizer that went from ``old_n_vocab`` to ``new_n_vocab`` ids, and start every
    new token's row at the mean of the trained tokens' rows (whether it was padding or newly made); return it."""
    grow_vocab(model, new_n_vocab)
    if new_n_vocab > old_n_vocab:
        init_new_rows(model, old_n_vocab, new_n_vocab)
    return model
