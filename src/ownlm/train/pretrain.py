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

from ownlm.config import opt, to_dict
from ownlm.data.batches import WindowSampler
from ownlm.data.shards import check_tokenizer, open_split, read_tokens_manifest
from ownlm.errors import UserError
from ownlm.io import iter_jsonl, read_json, write_jsonl
from ownlm.model.checkpoint import load_model
from ownlm.runtime.decode import generate
from ownlm.runtime.sampling import SamplingConfig
from ownlm.tokenizer.bpe import Tokenizer
from ownlm.train.config import ModelShape, PretrainingConfig
from ownlm.train.driver import Prepared, Run, run_training
from ownlm.train.trainer import RunContext, Task

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
    stride: int | None = opt(None, help="sliding windows with this stride instead of random windows")
    samples: int = opt(1, help="text samples generated at each evaluation (0: none)")
    sample_tokens: int = opt(64, help="length of each sample in tokens")
    model: ModelShape = opt(ModelShape(), help="the model's size and block")
    train: PretrainingConfig = opt(
        PretrainingConfig(), help="budget, schedule, evaluation, checkpoints, machine"
    )


def model_config(cfg: ModelShape, vocab_size: int):
    """The ``GPTConfig`` for this run: preset or depth or defaults, individual flags on top."""
    from ownlm.model.gpt import GPTConfig, config_from_depth, config_from_preset

    names = ("n_layer", "n_head", "n_embd", "n_kv_head", "block_size", "bias", "pos", "norm", "mlp",
             "tie_embeddings")  # fmt: skip
    overrides = {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
    overrides["dropout"] = cfg.dropout
    cfg.check()
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


class PretrainTask(Task):
    """Next-token prediction on windows of a token split: the loss on every position, validation as loss and
    bits per byte on ``eval_iters`` random validation batches (the same batches at every evaluation)."""

    lockstep = True  # every process scores eval_iters batches

    def __init__(self, train_sampler, val_sampler=None, tokens_per_byte: float | None = None,
                 eval_iters: int = 20, sample_fn=None):  # fmt: skip
        self.train, self.val, self.tokens_per_byte = train_sampler, val_sampler, tokens_per_byte
        self.eval_iters, self.sample_fn = eval_iters, sample_fn

    def batch(self, index: int) -> dict:
        x, y = self.train.batch(index)
        return {"input_ids": x, "labels": y}

    def count(self, batch: dict) -> int:
        return int(batch["labels"].size)

    def loss(self, model, batch: dict):
        # scored_only: the loss alone, through the fused head (no fp32 logits of the whole vocabulary)
        return model(batch["input_ids"], batch["labels"], reduction="sum", scored_only=True)[1]

    def evaluate(self, model, ctx: RunContext) -> dict:
        import torch

        if self.val is None or not self.eval_iters:
            return {}
        sums = torch.zeros(2, device=ctx.device)  # (loss sum, tokens)
        with ctx.autocast():
            for i in range(self.eval_iters):  # each process scores its slice of the same batches
                x, y = self.val.batch(i)
                b = ctx.to_device({"x": x, "y": y})
                sums[0] += model(b["x"], b["y"], reduction="sum", scored_only=True)[1].float()
                sums[1] += y.size
        ctx.all_reduce(sums)
        val = (sums[0] / sums[1]).item()
        bpb = val * self.tokens_per_byte / math.log(2) if self.tokens_per_byte else None
        return {"val_loss": val, "val_bpb": bpb}

    def on_eval(self, model, step: int, record: dict) -> None:
        if self.sample_fn is not None:
            self.sample_fn(model, step)


def main(cfg: PretrainConfig) -> int:
    cfg.train.check()
    cfg.model.check()
    manifest = read_tokens_manifest(cfg.data)
    tok_file = Path(cfg.data) / "tokenizer.json"
    tokenizer = Tokenizer.load(tok_file) if tok_file.is_file() else None
    check_tokenizer(
        manifest, tokenizer.sha256() if tokenizer else None, f"{cfg.data}/tokenizer.json", cfg.data
    )
    return run_training(cfg, lambda run: make_task(cfg, run, manifest, tokenizer), inputs=[cfg.data])


def make_task(cfg: PretrainConfig, run: Run, manifest: dict, tokenizer) -> Prepared:
    """The model (new, or the checkpoint a resumed run continues), window samplers over the token splits and
    the samples written at each evaluation."""
    import torch  # torch and the model: imported when the run starts, not at `ownlm pretrain --help`

    from ownlm.model.gpt import GPT

    tc, rank, world = cfg.train, run.rank, run.world
    if run.resume:
        _check_resume_settings(cfg, run.state)
        model, ck_tok, mcfg = load_model(run.folder)
        if ck_tok is not None:
            check_tokenizer(manifest, ck_tok.sha256(), f"the checkpoint {run.folder}", cfg.data)
        model.train()
    else:
        torch.manual_seed(tc.seed)
        mcfg = model_config(cfg.model, manifest["vocab_size"])
        model = GPT(mcfg)
    if manifest["vocab_size"] > mcfg.vocab_size:
        raise UserError(
            f"{cfg.data}: token ids go up to {manifest['vocab_size'] - 1}, but the model's vocabulary has "
            f"{mcfg.vocab_size} entries; encode with the model's tokenizer"
        )
    if tc.batch_tokens:
        per = tc.batch_size * mcfg.block_size * world
        if tc.batch_tokens % per:
            raise UserError(f"--batch-tokens {tc.batch_tokens} is not a multiple of batch_size x "
                            f"block_size x processes = {per}")  # fmt: skip
        tc.grad_accum = tc.batch_tokens // per
    train_tokens = open_split(cfg.data, "train", manifest)
    sampler = WindowSampler(train_tokens, mcfg.block_size, tc.batch_size, seed=tc.seed,
                            stride=cfg.stride, rank=rank, world_size=world, split="train")  # fmt: skip
    val, tokens_per_byte = None, None
    val_info = manifest["splits"].get("val") or {}
    if val_info.get("tokens", 0) > mcfg.block_size:
        val_tokens = open_split(cfg.data, "val", manifest)
        val = WindowSampler(val_tokens, mcfg.block_size, tc.batch_size, seed=tc.seed + 1,
                            rank=rank, world_size=world, split="val")  # fmt: skip
        tokens_per_byte = val_info["tokens"] / max(1, val_info["bytes"])
    elif rank == 0:
        print(f"note: the val split of {cfg.data} has fewer than {mcfg.block_size + 1} tokens; no validation")
    per_step = tc.batch_size * mcfg.block_size * tc.grad_accum * world
    train_count = (manifest["splits"].get("train") or {}).get("tokens", 0)

    def announce() -> str:
        shape = f"{mcfg.n_layer} layers, {mcfg.n_head} heads, {mcfg.n_embd} wide, context {mcfg.block_size}"
        return (f"model: {model.num_params() / 1e6:.2f}M parameters ({shape}, vocab {mcfg.vocab_size}); "
                f"{per_step:,} tokens per step on {run.device} x {world}{_short_note(tc, per_step, manifest)}")  # fmt: skip

    sample_fn = (
        _sampler(cfg, tokenizer, run.out, manifest, run.resume)
        if tokenizer and cfg.samples and rank == 0
        else None
    )
    task = PretrainTask(sampler, val, tokens_per_byte, tc.eval_iters, sample_fn)
    # what state.json records: the run's config.json as first written (a resumed run keeps its own)
    config_file = run.out / "config.json"
    run_config = read_json(config_file) if rank == 0 and run.resume and config_file.is_file() else None
    return Prepared(model, task, tokenizer, steps_per_epoch=max(1, math.ceil(train_count / per_step)),
                    announce=announce, run_config=run_config, flops_seq_len=mcfg.block_size)  # fmt: skip


def _check_resume_settings(cfg: PretrainConfig, state) -> None:
    """``--resume`` continues the run as it was configured: a model flag that differs is an error, not
    silently ignored (the model comes from the checkpoint)."""
    saved = state.run_config.get("model")
    if not isinstance(saved, dict):
        return
    given = to_dict(cfg.model)
    changed = [
        k for k, v in given.items() if v is not None and k != "dropout" and k in saved and saved[k] != v
    ]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} {given[k]} (the run has {saved[k]})" for k in changed)
        raise UserError(f"--resume continues the saved model; these flags differ from it: {flags}. "
                        "Drop them, or start a new run in another --out")  # fmt: skip


def _short_note(tc: PretrainingConfig, tokens_per_step: int, manifest: dict) -> str:
    """A note when the budget cannot get through the data even once (step and token budgets only)."""
    train_tokens = (manifest.get("splits", {}).get("train") or {}).get("tokens", 0)
    steps = tc.max_iters or (math.ceil(tc.max_tokens / tokens_per_step) if tc.max_tokens else 0)
    if steps and train_tokens and steps * tokens_per_step < train_tokens:
        share = steps * tokens_per_step / train_tokens
        return (f"\nnote: this budget reads {share:.0%} of the training tokens once; the model will not have "
                "seen all of its data")  # fmt: skip
    return ""


def _sampler(cfg: PretrainConfig, tokenizer, out: Path, manifest: dict, resume):
    """A function writing ``cfg.samples`` generated texts to ``samples.jsonl`` (and the log) at each eval."""
    from tqdm import tqdm

    path = out / "samples.jsonl"
    records = []
    if resume and path.is_file():
        records = [r for _, r in iter_jsonl(path, errors="skip") if isinstance(r, dict)]
        records = [r for r in records if r.get("step", 0) <= resume[1].step]
    eot = manifest.get("eot_id")

    def sample(model, step: int) -> None:

        start = [eot if eot is not None else 0]
        outs = generate(model, start, cfg.sample_tokens, **SamplingConfig().knobs(), seed=cfg.train.seed + step,
                        num_samples=cfg.samples, vocab_limit=tokenizer.n_vocab)  # fmt: skip
        for i, ids in enumerate(outs):
            text = tokenizer.decode(ids)
            records.append({"step": step, "sample": i, "text": text})
            if i == 0:
                tqdm.write("  sample: " + " ".join(text.split())[:200])
        write_jsonl(path, records)

    return sample
