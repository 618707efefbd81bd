"""The decoding loop of ``generate`` and ``chat`` (and of the samples training prints): a prompt, one KV cache, one
forward pass per new token — the same ``GPT.forward`` and ``KVCache`` the serving engine batches over.

>>> new = generate(model, tok.encode("Hello"), 50, temperature=0.8, top_k=50, seed=0)  # doctest: +SKIP
>>> tok.decode(new[0])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ownlm.errors import UserError


def _prompt_tensor(idx, device):
    import torch

    t = torch.as_tensor(idx, dtype=torch.long, device=device)
    if t.dim() == 2 and t.size(0) == 1:
        t = t[0]
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(
            f"the prompt must be a non-empty 1-D sequence of token ids, got shape {tuple(t.shape)}"
        )
    return t


def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, stop_token_ids: Sequence[int] = (),
             stop_strings: Sequence[str] = (), tokenizer=None, seed: int | None = None, num_samples: int = 1,
             stream: Callable[[int, int], None] | None = None, vocab_limit: int | None = None) -> list[list[int]]:  # fmt: skip
    """Continue the prompt ``idx`` (token ids); return the new tokens of each of ``num_samples`` samples.

    A sample ends at a token of ``stop_token_ids`` (not included) or once its text contains one of
    ``stop_strings`` (decoded with ``tokenizer``; the tokens up to that point are returned — cut the text with
    ``cut_at_stop``). ``stream(sample, token)`` is called for every new token. ``vocab_limit`` keeps ids at
    or above it (padding rows of the embedding) from being sampled. Beyond the model's block_size the context
    slides: the newest 3/4 of a window are re-read and the cache refilled, so long outputs stay cheap.

    >>> generate(model, [50256], 20, temperature=0, stop_token_ids=[50256])  # doctest: +SKIP
    [[464, 3290, ...]]
    """
    import torch

    from ownlm.model.checkpoint import unwrap
    from ownlm.runtime.kv_cache import KVCache
    from ownlm.runtime.sampling import apply_repetition_penalty, sample_next

    model = unwrap(model)
    was_training = model.training
    model.eval()
    device = model.transformer.wte.weight.device
    prompt = _prompt_tensor(idx, device)
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer to read the text")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    B, T0, block = num_samples, prompt.numel(), model.config.block_size
    seq = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # (B, T0 + new): every token
    seq[:, :T0] = prompt
    cache = KVCache.for_model(model, batch_size=B, max_len=min(block, T0 + max_new_tokens))
    stops = torch.tensor(sorted(set(stop_token_ids)), dtype=torch.long, device=device)
    stop_bytes = [s.encode("utf-8") for s in stop_strings if s]
    stop_window = max((len(s) for s in stop_bytes), default=0)
    done = [False] * B
    out: list[list[int]] = [[] for _ in range(B)]

    def refill(n: int):  # (re)read the last tokens of the context into an empty cache; logits of the last
        cache.reset()
        window = seq[:, max(0, n - (block if n <= block else block * 3 // 4)) : n]  # (B, <= block)
        return model(window, kv_cache=cache, last_only=True)[0][:, -1, :]  # (B, V)

    try:
        with torch.inference_mode():
            logits = refill(T0)
            for step in range(max_new_tokens):
                n = T0 + step
                logits = logits.float()
                if vocab_limit is not None and vocab_limit < logits.size(-1):
                    logits[:, vocab_limit:] = float("-inf")
                apply_repetition_penalty(logits, seq[:, :n], repetition_penalty)
                nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
                seq[:, n : n + 1] = nxt
                is_stop = torch.isin(nxt[:, 0], stops).tolist() if stops.numel() else [False] * B
                for b, token in enumerate(nxt[:, 0].tolist()):
                    if done[b]:
                        continue
                    if is_stop[b]:
                        done[b] = True
                        continue
                    out[b].append(token)
                    if stream is not None:
                        stream(b, token)
                    if stop_bytes:  # a stop string this token completes lies in its last len(stop) tokens
                        tail = tokenizer.decode_bytes(out[b][-stop_window:])
                        done[b] = any(s in tail for s in stop_bytes)
                if all(done) or step == max_new_tokens - 1:
                    break
                if cache.pos >= cache.max_len:
                    logits = refill(n + 1)
                else:
                    logits = model(nxt, kv_cache=cache)[0][:, -1, :]
    finally:
        model.train(was_training)
    return out


def check_first_logits(model, ids: list[int], where: str) -> None:
    """One forward pass on the prompt: NaN or infinite logits (damaged weights) are a ``UserError`` naming
    the checkpoint, instead of garbage text with exit code 0."""
    import torch

    from ownlm.model.checkpoint import unwrap

    raw = unwrap(model)
    window = ids[-raw.config.block_size :]
    x = torch.tensor([window], dtype=torch.long, device=raw.transformer.wte.weight.device)
    with torch.inference_mode():
        logits = raw(x, last_only=True)[0][:, -1, :]  # (1, V)
    if not torch.isfinite(logits.float()).all():
        raise UserError(
            f"{where}: the model gives NaN or infinite scores for the first token: its weights are damaged "
            "(a diverged run?); use an earlier checkpoint"
        )
