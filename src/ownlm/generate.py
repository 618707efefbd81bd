"""``ownlm generate``: continue a prompt — sampling, stop tokens and strings, several samples at once, streaming
to the terminal. A thin command over the runtime: ``runtime.decode.generate`` (the KV-cache loop),
``runtime.sampling.SamplingConfig`` (the flags and defaults shared with ``chat`` and ``serve``) and
``runtime.text`` (stop ids — ``<|endoftext|>`` and a chat model's end-of-turn token — and the streamer).

    ownlm generate runs/shakespeare --prompt "ROMEO:" --max-new-tokens 200 --num-samples 3 --seed 1
    ownlm generate models/smol --chat --prompt "What is the capital of France?"    # the model's chat template
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Literal

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.runtime.decode import check_first_logits, generate
from ownlm.runtime.device import DTYPE, inference_dtype, inference_layout, pick_device
from ownlm.runtime.sampling import SamplingConfig
from ownlm.runtime.text import TextStreamer, chat_template_for, cut_at_stop, stop_ids


@dataclass
class GenerateConfig:
    run: str = opt(help="a run folder (uses its latest checkpoint) or a checkpoint folder", positional=True)
    prompt: str = opt("", help="text to continue (empty: start from <|endoftext|>, i.e. unconditioned)")
    allow_special: bool = opt(
        False,
        help="read special-token strings in --prompt (<|endoftext|>, ...) as special tokens, not as text",
    )
    chat: bool = opt(False, help="--prompt is a user message: laid out by the model's chat template (with "
                     "--system), the reply printed alone")  # fmt: skip
    system: str = opt("", help="with --chat: a system message before the user's")
    sampling: SamplingConfig = opt(SamplingConfig(), help="how tokens are chosen")
    stop: list[str] = opt([], help=r"stop a sample when one of these strings appears (\n and \t understood)")
    stop_at_eot: bool = opt(
        True, help="stop a sample at <|endoftext|> and at a chat model's end-of-turn token"
    )
    num_samples: int = opt(
        1, help="how many samples to draw (generated together, as one batch)", bounds="[1, inf)"
    )
    device: str = opt("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: DTYPE = opt("auto", help="weights dtype (auto: fp32 on CPU, bf16 or fp16 on GPUs)")
    quantize: Literal["none", "int8"] = opt("none", help="int8: weight-only int8 matmuls, faster on CPU, "
                                            "logits slightly off the exact ones (~1-2%)")  # fmt: skip
    stream: bool = opt(True, help="print tokens as they come (with one sample)")


def _unescape(s: str) -> str:
    return s.replace("\\n", "\n").replace("\\t", "\t")


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


def main(cfg: GenerateConfig) -> int:
    # lazy: numpy, regex and the tokenizer load when the command runs, not at `--help`
    from ownlm.model.checkpoint import load_model, resolve_checkpoint

    cfg.sampling.check()
    if cfg.num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {cfg.num_samples}")
    device = pick_device(cfg.device)
    folder = resolve_checkpoint(cfg.run)
    model, tok, mcfg = load_model(folder, device=device, dtype=inference_dtype(cfg.dtype, device))
    if cfg.quantize == "int8":
        from ownlm.model.quantize import quantize_int8  # lazy: torch, not at `--help`

        quantize_int8(model)
    elif device.type == "cpu":
        inference_layout(model)
    if tok is None:
        raise UserError(f"{cfg.run}: the checkpoint has no tokenizer.json, so text cannot be encoded")
    template, why = chat_template_for(folder, tok)
    shown = cfg.prompt  # what is printed before the continuation
    if cfg.chat:
        if template is None:
            raise UserError(f"--chat: {why}")
        if not cfg.prompt:
            raise UserError("--chat needs the user's message in --prompt")
        messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
            {"role": "user", "content": cfg.prompt}
        ]
        ids, shown = template.encode_prompt(tok, messages), ""
    elif cfg.system:
        raise UserError("--system goes with --chat")
    elif cfg.prompt:
        ids = encode_prompt(tok, cfg.prompt, cfg.allow_special)
    elif tok.eot_id is not None:
        ids = [tok.eot_id]
    else:
        raise UserError("this tokenizer has no <|endoftext|> token to start from: give --prompt TEXT")
    if max(ids) >= model.config.vocab_size:  # a tokenizer.json edited (or copied) past the model's rows
        raise UserError(f"{cfg.run}: the prompt has token id {max(ids):,}, but the model has "
                        f"{model.config.vocab_size:,} rows; its tokenizer.json and model do not belong together")  # fmt: skip
    check_first_logits(model, ids, cfg.run)
    s = cfg.sampling
    seed = s.seed if s.seed is not None else random.randrange(2**31)
    stops = [_unescape(x) for x in cfg.stop]
    stream_one = cfg.stream and cfg.num_samples == 1
    streamer = TextStreamer(tok, stops) if stream_one else None
    if stream_one:
        sys.stdout.write(shown)
    t0 = time.perf_counter()
    samples = generate(
        model, ids, s.max_new(model.config.block_size), **s.knobs(),
        stop_token_ids=stop_ids(tok, template) if cfg.stop_at_eot else [],
        stop_strings=stops, tokenizer=tok, seed=seed, num_samples=cfg.num_samples,
        stream=streamer, vocab_limit=tok.n_vocab,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if streamer is not None:
        streamer.finish()
        sys.stdout.write("\n")
    else:
        for i, sample in enumerate(samples):
            if cfg.num_samples > 1:
                print(f"---------- sample {i + 1} of {cfg.num_samples}")
            print(shown + cut_at_stop(tok.decode(sample), stops))
    sys.stdout.flush()
    n = sum(len(x) for x in samples)
    print(
        f"[{n} tokens in {seconds:.2f} s, {n / max(seconds, 1e-9):.1f} tokens/s, seed {seed}]",
        file=sys.stderr,
    )
    return 0
