"""How the next token is chosen: the one ``SamplingConfig`` (flags of ``generate``, ``chat`` and ``serve``, and the
defaults of a server's requests), temperature, top-k, top-p and the repetition penalty.

The defaults, once for every command (a request to ``ownlm serve`` that leaves a field out gets the server's
value of that flag):

- ``temperature`` 0.8: a little sharper than the model's own distribution — fewer odd words than 1.0, less
  repetition than greedy decoding; what nanoGPT's sampler uses.
- ``top_k`` 50 and ``top_p`` 0.95: both cut the long tail of unlikely tokens, where a small model's mistakes
  live (Holtzman et al. 2019: nucleus sampling); top-k bounds the work on a large vocabulary, top-p adapts to
  how sure the model is. 50 is Hugging Face's default.
- ``repetition_penalty`` 1.0 (off): it changes the distribution even where repeating is right (code, names,
  a chat's own words); turn it on (1.1-1.3) for a small model that loops.
- ``max_new_tokens`` None: min(256, half the context), so a conversation keeps room for its history (a
  128-token model must not reserve 256 tokens for every reply).

>>> SamplingConfig().max_new(block_size=128)
64
"""

from __future__ import annotations

from dataclasses import dataclass

from ownlm.config import opt, validate


@dataclass
class SamplingConfig:
    """Sampling (shared by generate, chat and serve)"""

    max_new_tokens: int | None = opt(
        None, help="longest output in tokens (default: min(256, half the context))", bounds="[1, inf)"
    )
    temperature: float = opt(
        0.8, help="sampling temperature; lower is more conservative, 0 is greedy", bounds="[0, 100]"
    )
    top_k: int = opt(50, help="sample only among the k most likely tokens (0: no limit)")
    top_p: float = opt(
        0.95, help="nucleus sampling: the smallest set of tokens with this total probability", bounds="(0, 1]"
    )
    repetition_penalty: float = opt(
        1.0, help="> 1 discourages tokens already in the text (CTRL; 1 is off)", bounds="(0, 100]"
    )
    seed: int | None = opt(None, help="random seed for reproducible output (default: a fresh one)")

    def check(self) -> None:
        """Refuse settings out of their bounds or not finite, by the rule every flag follows
        (``config.validate``); the ``UserError`` names the flag. Flags and TOML are checked when parsed; this is
        for settings built in code.

        >>> SamplingConfig(temperature=float("nan")).check()
        Traceback (most recent call last):
        ownlm.errors.UserError: --temperature must be a finite number in [0, 100], got nan
        """
        validate(self)

    def knobs(self) -> dict:
        """The keyword arguments of ``runtime.decode.generate`` that choose each token: temperature, top-k, top-p
        and the repetition penalty. ``SamplingConfig().knobs()`` are the defaults, for samples no flag sets
        (pretraining's samples at each evaluation).

        >>> SamplingConfig().knobs()
        {'temperature': 0.8, 'top_k': 50, 'top_p': 0.95, 'repetition_penalty': 1.0}
        """
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty}  # fmt: skip

    def max_new(self, block_size: int) -> int:
        """``max_new_tokens``, or its default for a model with this context: min(256, block_size // 2)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(1, min(256, block_size // 2))


def apply_repetition_penalty(logits, context, penalty: float):
    """CTRL's penalty (Keskar et al. 2019): for tokens already in ``context`` (B, L), divide a positive logit
    by ``penalty`` and multiply a negative one, so the token always becomes less likely. In place."""
    if penalty == 1.0 or context.size(1) == 0:
        return logits
    seen = logits.gather(1, context)  # (B, L)
    logits.scatter_(1, context, seen.where(seen < 0, seen / penalty).where(seen >= 0, seen * penalty))
    return logits


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator=None):  # fmt: skip
    """Pick one token per row of ``logits`` (B, V) -> (B, 1). ``temperature == 0`` is greedy (argmax);
    ``top_k`` 0 or None and ``top_p`` 1 or None are no limit."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    ids = None  # when set, column j of logits stands for token ids[:, j]
    if top_k and top_k < logits.size(-1):
        logits, ids = torch.topk(logits, top_k, dim=-1)  # (B, k), largest first
    if top_p is not None and top_p < 1.0:
        if ids is None:
            logits, ids = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = logits.softmax(dim=-1)
        # drop a token when the tokens before it already hold top_p of the mass (the first one always stays)
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs > top_p, float("-inf"))
    probs = logits.softmax(dim=-1)
    # argmax(p / E) with E ~ Exp(1) draws from p (the "exponential race", equivalent to Gumbel-max); it is
    # several times faster than torch.multinomial over a 50k vocabulary
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    choice = (probs / noise).argmax(dim=-1, keepdim=True)  # (B, 1)
    return choice if ids is None else ids.gather(-1, choice)
