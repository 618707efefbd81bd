"""``ownlm pretrain``: train a GPT from scratch on token shards (or continue a run with ``--resume``).

    ownlm pretrain --data tokens/ --out run/ --max-minutes 10
    ownlm pretrain --data tokens/ --out run/ --resume            # continue where it stopped
    torchrun --nproc_per_node 2 -m ownlm pretrain --data tokens/ --out run/   # DDP

The model's size comes from ``--preset``, ``--depth`` (one dial: width and heads follow) or the individual
``--n-layer/--n-head/--n-embd`` flags (those win); its vocabulary from the token folder's manifest.
Writes ``RUN/config.json``, ``RUN/metrics.jsonl``, ``RUN/samples.jsonl``, ``RUN/loss.png`` and checkpoints
``RUN/step_NNNNNN/`` (see ``ownlm.train.checkpoint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ownlm.config import opt, save_config, to_dict
from ownlm.errors import UserError

# Without --preset/--depth/--n-*: a model that learns a lot in minutes on a laptop CPU.
DEFAULT_MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
# Without --preset (whose shapes are GPT-2's, so its weights fit): the modern block — rotary positions (RoFormer),
# RMSNorm and a SwiGLU MLP (as in Llama). On tinyshakespeare in a 2.4-minute CPU budget this reached val loss
# 1.65 against 1.90 for GPT-2's learned positions + LayerNorm + GELU (docs/benchmarks.md).
MODERN_BLOCK = dict(pos="rope", norm="rmsnorm", mlp="swiglu")


@dataclass(kw_only=True)
class PretrainConfig:
    """Pretrain a GPT on token shards written by `ownlm encode`."""

    data: str = opt(help="token folder written by `ownlm encode`")
    out: str = opt(help="run folder: checkpoints, metrics.jsonl, samples, loss.png")
    resume: bool = opt(False, help="continue the run in --out from its latest checkpoint")
    # model
    preset: str | None = opt(None, help="model size preset: tiny, mini, small, gpt2, gpt2-medium, ...")
    depth: int | None = opt(None, help="one size dial: n_layer = depth, n_embd = 64 * depth, 64-wide heads")
    n_layer: int | None = opt(None, help="transformer blocks")
    n_head: int | None = opt(None, help="attention heads")
    n_embd: int | None = opt(None, help="width of the residual stream")
    n_kv_head: int | None = opt(None, help="key/value heads for grouped-query attention (default: n_head)")
    block_size: int | None = opt(None, help="context length in tokens")
    dropout: float = opt(0.0, help="dropout probability (0 for short runs on plenty of data)")
    bias: bool | None = opt(None, help="biases in linear layers and norms")
    pos: Literal["learned", "rope", "sinusoidal"] | None = opt(
        None, help="position encoding (default: the preset's, else rope)"
    )
    norm: Literal["layernorm", "rmsnorm"] | None = opt(
        None, help="normalisation (default: the preset's, else rmsnorm)"
    )
    mlp: Literal["gelu", "swiglu", "relu2"] | None = opt(
        None, help="MLP type (default: the preset's, else swiglu)"
    )
    tie_embeddings: bool | None = opt(None, help="share the token embedding with the output head")
    # batches
    batch_size: int = opt(16, help="sequences per micro-batch per process")
    grad_accum: int = opt(1, help="micro-batches per optimiser step")
    batch_tokens: int = opt(0, help="tokens per optimiser step; sets --grad-accum (0: use --grad-accum)")
    stride: int | None = opt(None, help="sliding windows with this stride instead of random windows")
    # budget
    max_iters: int = opt(0, help="optimiser steps (0: none; default 2000 when no other budget is given)")
    max_tokens: int = opt(0, help="stop after this many training tokens (0: no limit)")
    max_minutes: float = opt(0.0, help="time budget in minutes; the learning-rate schedule is fitted to it")
    # optimiser and schedule
    lr: float = opt(2e-3, help="peak learning rate")
    min_lr: float = opt(2e-4, help="learning rate at the end of the decay")
    warmup_iters: int = opt(100, help="linear warm-up steps")
    schedule: Literal["cosine", "wsd", "constant"] = opt("cosine", help="decay after warm-up: cosine, "
                                                         "warm-up-stable-decay, or none")  # fmt: skip
    decay_frac: float = opt(0.2, help="wsd: fraction of the run spent decaying")
    weight_decay: float = opt(0.1, help="AdamW weight decay (matrices only)")
    beta1: float = opt(0.9, help="AdamW beta1")
    beta2: float = opt(0.99, help="AdamW beta2")
    grad_clip: float = opt(1.0, help="clip the gradient norm to this (0: off)")
    # evaluation and checkpoints
    eval_interval: int = opt(250, help="evaluate every N steps (and at the end)")
    eval_iters: int = opt(20, help="validation batches per evaluation")
    checkpoint_interval: int = opt(0, help="checkpoint every N steps (0: at every evaluation)")
    keep_checkpoints: int = opt(2, help="step folders to keep (0: all)")
    samples: int = opt(1, help="text samples generated at each evaluation (0: none)")
    sample_tokens: int = opt(64, help="length of each sample in tokens")
    # machine
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", help="where to train")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", help="precision: auto measures fp32 vs bf16 on CPU, picks bf16 (fp16) on GPUs"
    )
    compile: bool = opt(False, help="torch.compile the model (faster steps after a slow first one)")
    threads: int = opt(0, help="CPU threads for PyTorch (0: PyTorch's default)")
    seed: int = opt(1337, help="random seed (weights and batches)")
    progress: bool = opt(True, help="show a progress bar")


def model_config(cfg: PretrainConfig, vocab_size: int):
    """The ``GPTConfig`` for this run: preset or depth or defaults, individual flags on top."""
    from ownlm.model.gpt import GPTConfig, config_from_depth, config_from_preset

    names = ("n_layer", "n_head", "n_embd", "n_kv_head", "block_size", "bias", "pos", "norm", "mlp",
             "tie_embeddings")  # fmt: skip
    overrides = {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
    overrides["dropout"] = cfg.dropout
    if cfg.preset and cfg.depth:
        raise UserError("give either --preset or --depth, not both")
    if cfg.preset:
        base = config_from_preset(cfg.preset).to_dict()
    elif cfg.depth:
        base = {
            **config_from_depth(cfg.depth).to_dict(),
            "block_size": DEFAULT_MODEL["block_size"],
            **MODERN_BLOCK,
        }
    else:
        base = {**GPTConfig().to_dict(), **DEFAULT_MODEL, **MODERN_BLOCK}
    merged = {**base, **overrides}
    # The tokenizer's vocabulary padded to a multiple of 64 (faster matmuls); the extra ids never occur.
    merged["vocab_size"] = 64 * math.ceil(vocab_size / 64)
    try:
        return GPTConfig.from_dict(merged)
    except (ValueError, TypeError) as e:
        raise UserError(f"model settings do not fit together: {e}") from None


def _check_settings(cfg: PretrainConfig) -> None:
    for name in ("batch_size", "grad_accum", "eval_interval"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    non_negative = ("max_iters", "max_tokens", "max_minutes", "eval_iters", "warmup_iters", "batch_tokens", "lr",
                    "min_lr", "weight_decay", "grad_clip", "keep_checkpoints", "samples", "threads")  # fmt: skip
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")


def main(cfg: PretrainConfig) -> int:
    import torch

    from ownlm.data.batches import WindowSampler
    from ownlm.data.shards import check_tokenizer, open_split, read_tokens_manifest
    from ownlm.io import read_json
    from ownlm.tokenizer import Tokenizer
    from ownlm.train.checkpoint import read_state
    from ownlm.train.device import ddp_cleanup, ddp_info, ddp_setup, pick_device
    from ownlm.train.loop import TrainData, train

    _check_settings(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    manifest = read_tokens_manifest(cfg.data)
    tokenizer = (
        Tokenizer.load(Path(cfg.data) / "tokenizer.json")
        if (Path(cfg.data) / "tokenizer.json").is_file()
        else None
    )
    check_tokenizer(
        manifest, tokenizer.sha256() if tokenizer else None, f"{cfg.data}/tokenizer.json", cfg.data
    )

    resume = None
    if cfg.resume:
        if not (out / "latest").is_file():
            raise UserError(f"--resume: {out} has no checkpoint to resume from (no {out / 'latest'})")
        resume = read_state(out)
    elif (out / "latest").is_file():
        raise UserError(f"{out} already holds a run: add --resume to continue it, or choose another --out")

    rank, _, world = ddp_info()
    device = pick_device(cfg.device)
    if world > 1:
        ddp_setup(device)
    try:
        if resume:
            from ownlm.model.checkpoint import load_model

            folder, _ = resume
            model, ck_tok, mcfg = load_model(folder)
            if ck_tok is not None:
                check_tokenizer(manifest, ck_tok.sha256(), f"the checkpoint {folder}", cfg.data)
            model.train()
        else:
            torch.manual_seed(cfg.seed)
            mcfg = model_config(cfg, manifest["vocab_size"])
            from ownlm.model.gpt import GPT

            model = GPT(mcfg)
        if manifest["vocab_size"] > mcfg.vocab_size:
            raise UserError(
                f"{cfg.data}: token ids go up to {manifest['vocab_size'] - 1}, but the model's vocabulary has "
                f"{mcfg.vocab_size} entries; encode with the model's tokenizer"
            )
        grad_accum = cfg.grad_accum
        if cfg.batch_tokens:
            per = cfg.batch_size * mcfg.block_size * world
            if cfg.batch_tokens % per:
                raise UserError(f"--batch-tokens {cfg.batch_tokens} is not a multiple of batch_size x "
                                f"block_size x processes = {per}")  # fmt: skip
            grad_accum = cfg.batch_tokens // per
        train_tokens = open_split(cfg.data, "train", manifest)
        sampler = WindowSampler(train_tokens, mcfg.block_size, cfg.batch_size, seed=cfg.seed,
                                stride=cfg.stride, rank=rank, world_size=world, split="train")  # fmt: skip
        val, tokens_per_byte = None, None
        val_info = manifest["splits"].get("val") or {}
        if val_info.get("tokens", 0) > mcfg.block_size:
            val_tokens = open_split(cfg.data, "val", manifest)
            val = WindowSampler(val_tokens, mcfg.block_size, cfg.batch_size, seed=cfg.seed + 1,
                                rank=rank, world_size=world, split="val")  # fmt: skip
            tokens_per_byte = val_info["tokens"] / max(1, val_info["bytes"])
        elif rank == 0:
            print(
                f"note: the val split of {cfg.data} has fewer than {mcfg.block_size + 1} tokens; no validation"
            )
        run = _RunSettings(cfg, grad_accum)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.json")
            n = model.num_params()
            shape = (
                f"{mcfg.n_layer} layers, {mcfg.n_head} heads, {mcfg.n_embd} wide, context {mcfg.block_size}"
            )
            per_step = cfg.batch_size * mcfg.block_size * grad_accum * world
            print(f"model: {n / 1e6:.2f}M parameters ({shape}, vocab {mcfg.vocab_size}); "
                  f"{per_step:,} tokens per step on {device} x {world}")  # fmt: skip
        sample_fn = (
            _sampler(cfg, tokenizer, out, manifest, resume)
            if tokenizer and cfg.samples and rank == 0
            else None
        )
        data = TrainData(sampler, val, tokens_per_byte)
        summary = train(model, run, data, out, tokenizer=tokenizer, resume=resume,
                        run_config=read_json(out / "config.json") if rank == 0 else to_dict(cfg),
                        sample_fn=sample_fn)  # fmt: skip
    finally:
        if world > 1:
            ddp_cleanup()
    if rank == 0 and summary["status"] == "done":
        vl = f", val loss {summary['val_loss']:.4f}" if summary["val_loss"] is not None else ""
        print(f"done: step {summary['step']}{vl}; checkpoint {summary['checkpoint']}")
    return 130 if summary["status"] == "interrupted" else 0


class _RunSettings:
    """The config as the loop reads it, with derived values filled in (grad_accum, default budget)."""

    def __init__(self, cfg: PretrainConfig, grad_accum: int):
        self.__dict__.update(to_dict(cfg))
        self.grad_accum = grad_accum
        if not (cfg.max_iters or cfg.max_tokens or cfg.max_minutes):
            self.max_iters = 2000
        self.checkpoint_interval = cfg.checkpoint_interval or cfg.eval_interval


def _sampler(cfg: PretrainConfig, tokenizer, out: Path, manifest: dict, resume):
    """A function writing ``cfg.samples`` generated texts to ``samples.jsonl`` (and the log) at each eval."""
    from tqdm import tqdm

    from ownlm.io import iter_jsonl, write_jsonl

    path = out / "samples.jsonl"
    records = []
    if resume and path.is_file():
        records = [r for _, r in iter_jsonl(path, errors="skip") if isinstance(r, dict)]
        records = [r for r in records if r.get("step", 0) <= resume[1]["step"]]
    eot = manifest.get("eot_id")

    def sample(model, step: int) -> None:
        from ownlm.generate import generate

        start = [eot if eot is not None else 0]
        outs = generate(model, start, cfg.sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed + step,
                        num_samples=cfg.samples, vocab_limit=tokenizer.n_vocab)  # fmt: skip
        for i, ids in enumerate(outs):
            text = tokenizer.decode(ids)
            records.append({"step": step, "sample": i, "text": text})
            if i == 0:
                tqdm.write("  sample: " + " ".join(text.split())[:200])
        write_jsonl(path, records)

    return sample
