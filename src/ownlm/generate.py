"""Text generation: sampling (temperature, top-k, top-p, repetition penalty), stop tokens and strings,
several samples at once, streaming to the terminal — all on top of the KV cache.

    ownlm generate runs/shakespeare --prompt "ROMEO:" --max-new-tokens 200 --num-samples 3 --seed 1

>>> new = generate(model, tok.encode("Hello"), 50, temperature=0.8, top_k=200, seed=0)  # doctest: +SKIP
>>> tok.decode(new[0])  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ownlm.config import opt
from ownlm.errors import UserError


@dataclass
class GenerateConfig:
    run: str = opt(help="a run folder (uses its latest checkpoint) or a checkpoint folder", positional=True)
    prompt: str = opt("", help="text to continue (empty: start from <|endoftext|>, i.e. unconditioned)")
    allow_special: bool = opt(
        False,
        help="read special-token strings in --prompt (<|endoftext|>, ...) as special tokens, not as text",
    )
    max_new_tokens: int = opt(200, help="how many tokens to generate per sample (at most)", bounds="[1, inf)")
    temperature: float = opt(
        0.8, help="sampling temperature; lower is more conservative, 0 is greedy", bounds="[0, 100]"
    )
    top_k: int = opt(200, help="sample only among the k most likely tokens (0: no limit)")
    top_p: float = opt(
        1.0, help="nucleus sampling: the smallest set of tokens with this total probability", bounds="(0, 1]"
    )
    repetition_penalty: float = opt(
        1.0, help="> 1 discourages tokens already in the text (CTRL, 1.2 is mild)", bounds="(0, 100]"
    )
    stop: list[str] = opt([], help=r"stop a sample when one of these strings appears (\n and \t understood)")
    stop_at_eot: bool = opt(True, help="stop a sample at the <|endoftext|> token")
    num_samples: int = opt(
        1, help="how many samples to draw (generated together, as one batch)", bounds="[1, inf)"
    )
    seed: int | None = opt(None, help="random seed for reproducible samples (default: a fresh one, printed)")
    device: str = opt("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt("auto", help="weights dtype for inference")
    quantize: Literal["none", "int8"] = opt("none", help="int8: weight-only int8 matmuls, faster on CPU, "
                                            "logits slightly off the exact ones (~1-2%)")  # fmt: skip
    stream: bool = opt(True, help="print tokens as they come (with one sample)")


# ---------------------------------------------------------------------------------------------- sampling


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
    """Pick one token per row of ``logits`` (B, V) -> (B, 1). ``temperature == 0`` is greedy (argmax)."""
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


def decode_layout(model):
    """Store the weights of widening projections (c_attn, c_fc, the output head) as (in, out) in memory, for
    faster batch-1 decoding on CPU; returns ``model``. Same values and shapes, only the memory order changes.

    A decode step multiplies one row vector by every weight matrix. With the weight (out, in) that is one dot
    product per output; with it stored (in, out) it is a sum of rows scaled by x (GPT-2's own Conv1D layout),
    which streams memory and vectorises across outputs: on a 2-core AVX-512 CPU the 768->50257 head took
    ~1.3x and 768->3072 ~1.4x less time (narrowing projections got slower, so they stay as they are).
    Meant for a model that is only used for inference: training on it would work, just more slowly.
    """
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features > module.in_features:
            w = (
                module.weight
            )  # (out, in); a tied head shares this Parameter with wte, which gathers rows fine
            w.data = w.data.t().contiguous().t()  # still (out, in), with strides (1, out)
    return model


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


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to (not including) the first stop string in it."""
    cut = min((i for s in stop_strings if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class TextStreamer:
    """Prints tokens as text while they come: whole UTF-8 characters only, and holding back a tail that could
    still turn into a stop string (so the stop string itself is never printed)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str] = (), file=None):
        self.tokenizer, self.stops, self.file = tokenizer, [s for s in stop_strings if s], file or sys.stdout
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.printed = "", 0
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def __call__(self, sample: int, token: int) -> None:
        self.text += self.decoder.decode(self.tokenizer.id_to_bytes(token))
        self._flush(len(self.text) - self.hold)

    def finish(self) -> str:
        self.text += self.decoder.decode(b"", final=True)
        self.text = cut_at_stop(self.text, self.stops)
        self._flush(len(self.text))
        return self.text

    def _flush(self, upto: int) -> None:
        upto = min(upto, len(cut_at_stop(self.text, self.stops)))
        if upto > self.printed:
            self.file.write(self.text[self.printed : upto])
            self.file.flush()
            self.printed = upto


# ---------------------------------------------------------------------------------------------- CLI


def pick_device(name: str) -> str:
    """ "auto" -> cuda, mps or cpu, whichever is there."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(name: str, device: str):
    import torch

    if name == "auto":  # half precision where the hardware has it; fp32 on CPU (exact, and fast enough)
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def _unescape(s: str) -> str:
    return s.replace("\\n", "\n").replace("\\t", "\t")


def check_sampling(cfg: GenerateConfig) -> None:
    """Refuse sampling settings that are out of range or not finite (``nan`` and ``inf`` parse as floats).

    >>> check_sampling(GenerateConfig(run="r", temperature=float("nan")))
    Traceback (most recent call last):
    ownlm.errors.UserError: --temperature must be a finite number >= 0 (0 is greedy), got nan
    """
    import math

    if cfg.max_new_tokens < 1 or cfg.num_samples < 1:
        raise UserError("--max-new-tokens and --num-samples must be at least 1")
    checks = [
        ("--temperature", cfg.temperature, lambda v: v >= 0, ">= 0 (0 is greedy)"),
        ("--top-p", cfg.top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("--repetition-penalty", cfg.repetition_penalty, lambda v: v > 0, "> 0 (1 is none)"),
    ]
    for flag, value, ok, want in checks:
        if not math.isfinite(value) or not ok(value):
            raise UserError(f"{flag} must be a finite number {want}, got {value}")
    if cfg.top_k < 0:
        raise UserError(f"--top-k must be >= 0 (0: no limit), got {cfg.top_k}")


def encode_prompt(tok, prompt: str, allow_special: bool) -> list[int]:
    """The one rule for text from users (``generate --prompt``, ``tokenizer encode``): special-token strings
    are ordinary text, unless ``allow_special`` reads them as the special tokens.

    >>> from ownlm.tokenizer import Tokenizer
    >>> tok = Tokenizer(special_tokens={"<|endoftext|>": 256})
    >>> len(encode_prompt(tok, "<|endoftext|>", False)), encode_prompt(tok, "<|endoftext|>", True)
    (13, [256])
    """
    if allow_special:
        return tok.encode(prompt, allowed_special="all")
    found = [s for s in tok.special_tokens if s in prompt]
    if found:
        print(
            f"ownlm: note: {', '.join(found)} in the prompt is read as ordinary text; "
            "--allow-special reads it as the special token",
            file=sys.stderr,
        )
    return tok.encode(prompt, disallowed_special=())


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


def main(cfg: GenerateConfig) -> int:
    from ownlm.model.checkpoint import load_model

    check_sampling(cfg)
    device = pick_device(cfg.device)
    model, tok, mcfg = load_model(cfg.run, device=device, dtype=pick_dtype(cfg.dtype, device))
    if cfg.quantize == "int8":
        from ownlm.model.quantize import quantize_int8

        quantize_int8(model)
    elif device == "cpu":
        decode_layout(model)
    if tok is None:
        raise UserError(f"{cfg.run}: the checkpoint has no tokenizer.json, so text cannot be encoded")
    if cfg.prompt:
        ids = encode_prompt(tok, cfg.prompt, cfg.allow_special)
    elif tok.eot_id is not None:
        ids = [tok.eot_id]
    else:
        raise UserError("this tokenizer has no <|endoftext|> token to start from: give --prompt TEXT")
    check_first_logits(model, ids, cfg.run)
    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    stops = [_unescape(s) for s in cfg.stop]
    stream_one = cfg.stream and cfg.num_samples == 1
    streamer = TextStreamer(tok, stops) if stream_one else None
    if stream_one:
        sys.stdout.write(cfg.prompt)
    t0 = time.perf_counter()
    samples = generate(
        model, ids, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
        top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
        stop_token_ids=[tok.eot_id] if cfg.stop_at_eot and tok.eot_id is not None else [],
        stop_strings=stops, tokenizer=tok, seed=seed, num_samples=cfg.num_samples,
        stream=streamer, vocab_limit=tok.n_vocab,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if streamer is not None:
        streamer.finish()
        sys.stdout.write("\n")
    else:
        for i, s in enumerate(samples):
            if cfg.num_samples > 1:
                print(f"---------- sample {i + 1} of {cfg.num_samples}")
            print(cfg.prompt + cut_at_stop(tok.decode(s), stops))
    sys.stdout.flush()
    n = sum(len(s) for s in samples)
    print(
        f"[{n} tokens in {seconds:.2f} s, {n / max(seconds, 1e-9):.1f} tokens/s, seed {seed}]",
        file=sys.stderr,
    )
    return 0
