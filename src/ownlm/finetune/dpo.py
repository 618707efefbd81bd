"""``ownlm finetune dpo``: preference tuning (DPO), so a model learns which of two replies people prefer.

    ownlm finetune sft runs/base --data instruction-data-with-preference.json --out runs/sft
    ownlm finetune dpo runs/sft --data instruction-data-with-preference.json --out runs/dpo --beta 0.1

Direct Preference Optimisation (Rafailov et al. 2023) trains the policy on pairs (prompt, chosen reply,
rejected reply) against a frozen *reference*, the starting weights. With ``log pi`` a reply's summed token
log-probability under the policy and ``log ref`` under the reference, a reply's implicit reward is
``beta * (log pi - log ref)`` and the loss of a pair is ``-log sigmoid(reward_chosen - reward_rejected)``:
the policy gains where it raises the chosen reply more (or lowers it less) than the rejected one, and ``beta``
says how far it may drift from the reference. ``--label-smoothing eps`` assumes a share ``eps`` of the labels
are flipped (conservative DPO); ``--loss ipo`` is IPO's squared loss on per-token log-ratios, which does not
push the margin without bound.

The reference costs no second model: its log-probabilities of every training and held-out reply are computed
once, before the first step, by the starting weights (for a LoRA run: the same network with its adapters
switched off) under the run's precision, and kept in ``DIR/reference.safetensors``, so ``--resume`` continues
with exactly the same numbers.

Both replies of a pair are rendered with the run's chat template (``ownlm.tokenizer.chat``) and only their
tokens (and end marker) are scored. Every evaluation scores the held-out pairs: ``val_loss`` (the DPO loss),
``reward_accuracy`` (the share of pairs whose chosen reply earns the higher reward; a tie counts one half, so a
policy equal to its reference scores exactly 0.5), ``reward_margin``, the mean rewards and the mean summed
log-probabilities of the chosen and the rejected replies. ``DIR/responses.jsonl`` holds the greedy answers to
held-out prompts before and after, and ``DIR/report.md`` the before/after table.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ownlm.config import opt, validate
from ownlm.errors import UserError
from ownlm.finetune.common import frozen_layout, load_base, match_vocab, store_frozen
from ownlm.finetune.dpo_data import (
    EncodedPairs,
    conversations,
    encode_pairs,
    load_pairs,
    pair_batch,
    split_pairs,
)
from ownlm.finetune.sft import ChatConfig, _excerpt, answer, choose_template, rouge_l, write_before_after
from ownlm.io import iter_jsonl, write_bytes, write_text
from ownlm.model.adapt import AdaptConfig
from ownlm.model.checkpoint import unwrap
from ownlm.tokenizer.chat import add_special_tokens, save_template
from ownlm.train.config import TrainingConfig, fine_tuning_defaults
from ownlm.train.device import choose_dtype
from ownlm.train.driver import Prepared, Run, run_training
from ownlm.train.trainer import RunContext, Task

REFERENCE_FILE = "reference.safetensors"
METRICS = (
    "reward_accuracy",
    "reward_margin",
    "chosen_reward",
    "rejected_reward",
    "chosen_logp",
    "rejected_logp",
)


# preference tuning moves a fine-tuned model a little: a low peak rate, a 10 % warm-up, no weight decay
DPO_TRAINING = dict(lr=5e-6, min_lr=5e-7, warmup_frac=0.1, weight_decay=0.0)


@dataclass(kw_only=True)
class DPOConfig:
    """Preference-tune a model on pairs of replies, one preferred (DPO against the frozen starting weights)."""

    base: str = opt(help="an ownlm run or checkpoint folder (usually an SFT run)", positional=True)
    data: list[str] = opt(
        [], help="preference JSON/JSONL: {instruction, input, chosen, rejected} or {prompt, chosen, rejected}"
    )
    out: str = opt(help="run folder for checkpoints, metrics.jsonl, responses.jsonl and report.md")
    val_data: list[str] = opt([], help="held-out pairs (default: --val-fraction of --data)")
    val_fraction: float = opt(0.1, help="share of --data held out when --val-data is not given")
    beta: float = opt(0.1, help="how far the policy may move from the reference (the reward scale)")
    loss: Literal["sigmoid", "ipo"] = opt("sigmoid", help="sigmoid: DPO's loss; ipo: IPO's squared loss")
    label_smoothing: float = opt(
        0.0, help="sigmoid loss: the share of pairs assumed to be labelled the wrong way round (0 to 0.5)"
    )
    resume: bool = opt(False, help="continue the run in --out from its latest checkpoint")
    chat: ChatConfig = opt(ChatConfig(), help="template, length limit and held-out answers")
    adapt: AdaptConfig = opt(AdaptConfig(), help="LoRA adapters or partial fine-tuning")
    train: TrainingConfig = opt(
        fine_tuning_defaults(**DPO_TRAINING), help="budget, schedule, evaluation, machine"
    )


# ---------------------------------------------------------------------------------------------- the loss


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1, loss: str = "sigmoid",
             label_smoothing: float = 0.0, chosen_tokens=None, rejected_tokens=None):  # fmt: skip
    """Per-pair losses (B,) from summed reply log-probabilities (B,) under the policy and the reference.

    sigmoid: ``-(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)`` with ``d`` the difference of the
    chosen and rejected log-ratios; ipo: ``(d' - 1 / (2 beta))^2`` with ``d'`` that difference on per-token
    log-ratios (``chosen_tokens``/``rejected_tokens`` reply lengths). The reference is a constant: no gradient
    flows into it.

    >>> import torch
    >>> float(dpo_loss(torch.tensor([-5.]), torch.tensor([-5.]), torch.tensor([-5.]), torch.tensor([-5.]))[0])
    0.6931471824645996
    """
    import torch.nn.functional as F

    chosen_ratio = policy_chosen - ref_chosen.detach()
    rejected_ratio = policy_rejected - ref_rejected.detach()
    if loss == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the replies' token counts")
        d = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (d - 1 / (2 * beta)) ** 2
    if loss != "sigmoid":
        raise ValueError(f"unknown DPO loss {loss!r}")
    logits = beta * (chosen_ratio - rejected_ratio)
    out = -F.logsigmoid(logits)
    if label_smoothing:
        out = (1 - label_smoothing) * out - label_smoothing * F.logsigmoid(-logits)
    return out


def sequence_logps(model, input_ids, labels):
    """Summed log-probability of each row's scored tokens (labels != -100) -> (rows,) float32, and the count of
    scored tokens per row. The output head runs only at the scored positions (``GPT.forward(scored_only)``)."""
    import torch

    keep = labels != -100
    losses = model(input_ids, labels, reduction="none", scored_only=True)[1]  # (N,) in row-major order
    rows = keep.nonzero(as_tuple=True)[0]
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    return sums.index_add(0, rows, -losses.float()), keep.sum(1)


@contextlib.contextmanager
def adapters_off(model):
    """The model with its LoRA adapters switched off (each adds exactly zero): the base network, no copy."""
    from ownlm.model.lora import LoRALinear

    layers = [m for m in unwrap(model).modules() if isinstance(m, LoRALinear)]
    scales = [m.scale for m in layers]
    for m in layers:
        m.scale = 0.0
    try:
        yield model
    finally:
        for m, s in zip(layers, scales):
            m.scale = s


def pair_logps(model, enc: EncodedPairs, ctx: RunContext, batch_size: int, pad_id: int, max_batches: int = 0):
    """Summed log-probabilities of the chosen and rejected reply of each pair (float32 numpy arrays, NaN for the
    pairs beyond ``max_batches`` batches), in batches of pairs of similar length: always the same batches for
    the same ``enc``, so the reference and an unchanged policy get bit-identical numbers. Each process scores
    its share of the batches; the results are added over processes."""
    import torch

    order = sorted(range(len(enc)), key=enc.length)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if max_batches:
        batches = batches[:max_batches]
    out = torch.zeros(2, len(enc), dtype=torch.float32, device=ctx.device)
    seen = torch.zeros(len(enc), dtype=torch.float32, device=ctx.device)
    with torch.no_grad(), ctx.autocast():
        for b in batches[ctx.rank :: ctx.world]:
            batch = ctx.to_device(pair_batch(enc, b, pad_id))
            logps, _ = sequence_logps(model, batch["input_ids"], batch["labels"])
            idx = batch["pair"]
            out[0, idx], out[1, idx] = logps[: len(b)], logps[len(b) :]
            seen[idx] = 1
    ctx.all_reduce(out)
    ctx.all_reduce(seen)
    out[:, seen == 0] = float("nan")
    arr = out.cpu().numpy()
    return arr[0], arr[1]


def preference_metrics(pc, pr, rc, rr, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0,
                       chosen_tokens=None, rejected_tokens=None) -> dict:  # fmt: skip
    """The held-out numbers from the summed log-probabilities of the policy (pc, pr) and reference (rc, rr).

    >>> import numpy as np
    >>> m = preference_metrics(np.array([-3.0, -4.0]), np.array([-5.0, -4.0]), np.array([-4.0, -4.0]),
    ...                        np.array([-4.0, -4.0]), beta=0.5)
    >>> m["reward_accuracy"], m["reward_margin"]  # a win and a tie
    (0.75, 0.5)
    """
    import torch

    t = {
        k: torch.as_tensor(np.asarray(v, dtype=np.float64))
        for k, v in dict(pc=pc, pr=pr, rc=rc, rr=rr).items()
    }
    ct = torch.as_tensor(chosen_tokens) if chosen_tokens is not None else None
    rt = torch.as_tensor(rejected_tokens) if rejected_tokens is not None else None
    losses = dpo_loss(t["pc"], t["pr"], t["rc"], t["rr"], beta, loss, label_smoothing, ct, rt)
    chosen_reward, rejected_reward = beta * (t["pc"] - t["rc"]), beta * (t["pr"] - t["rr"])
    margin = chosen_reward - rejected_reward
    accuracy = (margin > 0).double() + 0.5 * (margin == 0).double()
    return {"val_loss": losses.mean().item(), "reward_accuracy": accuracy.mean().item(),
            "reward_margin": margin.mean().item(), "chosen_reward": chosen_reward.mean().item(),
            "rejected_reward": rejected_reward.mean().item(), "chosen_logp": t["pc"].mean().item(),
            "rejected_logp": t["pr"].mean().item(), "val_pairs": len(margin)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the task


class PairBatches:
    """Deterministic training batches of pairs: global batch ``i`` is a pure function of ``(seed, i)``; pairs of
    similar length are batched together; each process keeps its slice of the global batch's pairs."""

    def __init__(self, enc: EncodedPairs, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if not len(enc):
            raise UserError("no training pairs fit the model's context; raise --max-length or shorten them")
        self.enc, self.B, self.seed, self.rank, self.world = enc, batch_size, seed, rank, world
        self.rows = batch_size * world
        self.n = math.ceil(len(enc) / self.rows)  # batches per epoch
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, 7, epoch]).permutation(len(self.enc))
        chunk = self.rows * 50
        flat = []
        for c in range(0, len(order), chunk):
            flat += sorted((int(k) for k in order[c : c + chunk]), key=self.enc.length)
        batches = [flat[i : i + self.rows] for i in range(0, len(flat), self.rows)]
        while len(batches[-1]) < self.rows:  # fill the last batch by wrapping around
            batches[-1].append(flat[len(batches[-1]) % len(flat)])
        perm = np.random.default_rng([self.seed, 8, epoch]).permutation(len(batches))
        return [batches[j] for j in perm]

    def pairs(self, index: int) -> list[int]:
        epoch, j = divmod(index, self.n)
        if epoch != self._epoch:
            self._batches, self._epoch = self._epoch_batches(epoch), epoch
        return self._batches[j][self.rank * self.B : (self.rank + 1) * self.B]


class DPOTask(Task):
    """The DPO loss summed over a batch's pairs (the Trainer divides by the pairs in the step); evaluation scores
    the held-out pairs against their reference log-probabilities."""

    loss_per_token = False  # a loss per pair, not per token: no perplexity

    def __init__(self, train: PairBatches, val: EncodedPairs | None, reference: dict, cfg: DPOConfig, template,
                 pad_id: int, eval_batches: int = 0):  # fmt: skip
        self.train, self.val, self.ref, self.cfg = train, val, reference, cfg
        self.template, self.pad_id, self.eval_batches = template, pad_id, eval_batches

    def batch(self, index: int) -> dict:
        pairs = self.train.pairs(index)
        b = pair_batch(self.train.enc, pairs, self.pad_id)
        b["ref_chosen"] = self.ref["train_chosen"][pairs]
        b["ref_rejected"] = self.ref["train_rejected"][pairs]
        return b

    def count(self, batch: dict) -> int:
        return len(batch["pair"])

    def tokens(self, batch: dict) -> int:
        return int(batch["lengths"].sum())

    def loss(self, model, batch: dict):
        logps, n = sequence_logps(model, batch["input_ids"], batch["labels"])
        B = len(batch["pair"])
        losses = dpo_loss(logps[:B], logps[B:], batch["ref_chosen"], batch["ref_rejected"], self.cfg.beta,
                          self.cfg.loss, self.cfg.label_smoothing, n[:B], n[B:])  # fmt: skip
        return losses.sum()

    def evaluate(self, model, ctx: RunContext) -> dict:
        if self.val is None or not len(self.val):
            return {}
        pc, pr = pair_logps(model, self.val, ctx, self.train.B, self.pad_id, self.eval_batches)
        return val_metrics(self.val, pc, pr, self.ref, self.cfg)

    def on_eval(self, model, step: int, record: dict) -> None:
        if record.get("reward_accuracy") is not None:
            from tqdm import tqdm

            tqdm.write(f"  held-out pairs: reward accuracy {record['reward_accuracy']:.3f}, margin "
                       f"{record['reward_margin']:.4f}, log p chosen {record['chosen_logp']:.2f}, "
                       f"rejected {record['rejected_logp']:.2f}")  # fmt: skip

    def save_extra(self, folder: Path) -> None:

        save_template(folder, self.template)


def val_metrics(val: EncodedPairs, pc, pr, ref: dict, cfg) -> dict:
    """``preference_metrics`` over the held-out pairs that were scored (all, unless evaluation is capped)."""
    scored = ~np.isnan(pc)
    ct = np.array([int(m[1:].sum()) for _, m in val.chosen])[scored]
    rt = np.array([int(m[1:].sum()) for _, m in val.rejected])[scored]
    return preference_metrics(pc[scored], pr[scored], ref["val_chosen"][scored], ref["val_rejected"][scored],
                              cfg.beta, cfg.loss, cfg.label_smoothing, ct, rt)  # fmt: skip


# ---------------------------------------------------------------------------------------------- reference


def compute_reference(model, train: EncodedPairs, val: EncodedPairs | None, ctx: RunContext, batch_size: int,
                      pad_id: int, eval_batches: int = 0) -> dict:  # fmt: skip
    """The reference's summed log-probabilities of every reply: the model as it is now, LoRA adapters off."""
    was_training = model.training
    model.eval()
    with adapters_off(model):
        ref = dict(zip(("train_chosen", "train_rejected"), pair_logps(model, train, ctx, batch_size, pad_id)))
        if val is not None and len(val):
            vc, vr = pair_logps(model, val, ctx, batch_size, pad_id, eval_batches)
            ref.update(val_chosen=vc, val_rejected=vr)
    model.train(was_training)
    return ref


def save_reference(path: Path, ref: dict, dtype: str) -> None:
    import torch
    from safetensors.torch import save

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ref.items()}
    write_bytes(
        path, save(tensors, metadata={"format": "ownlm-dpo-reference", "version": "1", "dtype": dtype})
    )


def load_reference(path: Path, train: EncodedPairs, val: EncodedPairs | None) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise UserError(f"{path}: the reference log-probabilities are missing; the run cannot be resumed "
                        "exactly (start a new run)")  # fmt: skip
    try:
        ref = load_file(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: cannot read the reference log-probabilities ({e})") from None
    expect = {"train_chosen": len(train), "train_rejected": len(train)}
    if val is not None and len(val):
        expect.update(val_chosen=len(val), val_rejected=len(val))
    for k, n in expect.items():
        if k not in ref or ref[k].shape != (n,):
            raise UserError(f"{path}: the reference does not match the data ({k}); was --data changed? Resume "
                            "with the same data, or start a new run")  # fmt: skip
    return ref


# ---------------------------------------------------------------------------------------------- the command


def main(cfg: DPOConfig) -> int:
    cfg.train.check()
    _check(cfg)
    return run_training(cfg, lambda run: make_task(cfg, run), inputs=[cfg.base, *cfg.data, *cfg.val_data])


def _check(cfg: DPOConfig) -> None:
    if not cfg.data:
        raise UserError(
            "give the preference data: --data FILE... (JSON/JSONL with chosen and rejected replies)"
        )
    cfg.adapt.check()
    if not (cfg.beta > 0 and math.isfinite(cfg.beta)):
        raise UserError(f"--beta must be a number > 0, got {cfg.beta}")
    if not 0 <= cfg.label_smoothing < 0.5:
        raise UserError(f"--label-smoothing must be in [0, 0.5), got {cfg.label_smoothing}")
    if cfg.label_smoothing and cfg.loss != "sigmoid":
        raise UserError("--label-smoothing applies to --loss sigmoid only")
    cfg.train.dtype = cfg.adapt.training_dtype(cfg.train.dtype)
    validate(cfg.chat)


def prepare(cfg: DPOConfig, tokenizer, base_folder: Path):
    """Read and split the pairs, choose the template: (template, tokenizer with its specials, train, val)."""

    pairs = load_pairs(cfg.data)
    if cfg.val_data:
        train, val = pairs, load_pairs(cfg.val_data)
    else:
        train, val = split_pairs(pairs, cfg.val_fraction, cfg.train.seed)
    template = choose_template(
        cfg.chat.template, base_folder, [{"messages": conversations(p)[0]} for p in train], False
    )
    return template, add_special_tokens(tokenizer, template.special_tokens()), train, val


def make_task(cfg: DPOConfig, run: Run) -> Prepared:
    """The policy (the base with its adapters, or the resumed checkpoint), the pairs encoded, and the reference's
    log-probabilities (computed once under the run's precision, or read back on ``--resume``)."""
    import torch  # torch and LoRA: imported when the run starts, not at `ownlm finetune dpo --help`

    from ownlm.model.lora import adapt_model

    tc, resume, rank, world, device, out = cfg.train, run.resume, run.rank, run.world, run.device, run.out
    model, tok, folder = load_base(cfg.base, run.folder, prepare=frozen_layout(cfg.adapt))
    base_n_vocab = tok.n_vocab
    template, tok, train_pairs, val_pairs = prepare(cfg, tok, folder)
    match_vocab(model, base_n_vocab, tok, run.folder)
    block = model.config.block_size
    max_len = cfg.chat.max_len(block)
    train = encode_pairs(train_pairs, template, tok, max_len, cfg.chat.overlong)
    val = encode_pairs(val_pairs, template, tok, max_len, cfg.chat.overlong) if val_pairs else None
    pad_id = tok.eot_id if tok.eot_id is not None else 0
    if not len(train):
        raise UserError(f"none of the {len(train_pairs):,} training pairs fits the model's context of {block} "
                        f"tokens with a reply token left ({train.dropped:,} dropped); shorten them or raise "
                        "--max-length")  # fmt: skip
    torch.manual_seed(tc.seed)  # LoRA's random start: the same in every process and every run
    adapt_model(model, cfg.adapt, resume=bool(resume))
    store_frozen(model, cfg.adapt.base_dtype)
    model.to(device).train()
    batches = PairBatches(train, tc.batch_size, tc.seed, rank, world)
    per_epoch = math.ceil(batches.n / tc.grad_accum)
    ref_path = out / REFERENCE_FILE
    if resume:
        tc.dtype = run.state.dtype or tc.dtype
        reference = load_reference(ref_path, train, val)
    else:  # the run's precision first (the Trainer keeps it), so the reference is computed as training runs
        tc.dtype = choose_dtype(tc.dtype, device, print if rank == 0 else (lambda s: None))
        ctx = RunContext(device, tc.dtype, rank, world)
        reference = compute_reference(model, train, val, ctx, tc.batch_size, pad_id, tc.eval_iters)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            save_reference(ref_path, reference, tc.dtype)
    before = []
    if rank == 0 and cfg.chat.responses and val and not resume:
        before = held_out_answers(
            model.eval(), tok, template, val.pairs[: cfg.chat.responses], cfg.chat.max_new_tokens
        )
        model.train()
    data = {"template": template.name, "train": train.counts(), "val": val.counts() if val else None,
            "steps_per_epoch": per_epoch}  # fmt: skip
    return Prepared(
        model, DPOTask(batches, val, reference, cfg, template, pad_id, tc.eval_iters), tok,
        steps_per_epoch=per_epoch, data=data,
        announce=lambda: _summary_line(model, template, train, val, per_epoch, tc),
        finish=lambda summary: _finish(cfg, out, model, tok, template, val, before, summary, device),
        eval_at_start=True, flops_seq_len=block,
    )  # fmt: skip


def _summary_line(model, template, train: EncodedPairs, val: EncodedPairs | None, per_epoch: int, tc) -> str:
    from ownlm.model.lora import trainable_summary

    c = train.counts()
    skipped = (
        f" ({c['truncated']} truncated, {c['dropped']} dropped as too long)"
        if c["truncated"] or c["dropped"]
        else ""
    )
    held = f", {len(val):,} held out" if val else ", none held out"
    return (f"dpo: {c['pairs']:,} training pairs{skipped}{held}; template {template.name}; {per_epoch} steps "
            f"per epoch; budget {tc.max_iters or '-'} steps; dtype {tc.dtype}; {trainable_summary(model)}")  # fmt: skip


def held_out_answers(model, tokenizer, template, pairs: list[dict], max_new_tokens: int) -> list[dict]:
    """The model's greedy answer to each pair's prompt, with its ROUGE-L against the chosen and the rejected
    reply."""

    rows = []
    for p in pairs:
        reply = answer(model, tokenizer, template, p["prompt"], max_new_tokens)
        rows.append({"where": p.get("where"), "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
                     "response": reply, "rouge_l_chosen": rouge_l(reply, p["chosen"]),
                     "rouge_l_rejected": rouge_l(reply, p["rejected"])})  # fmt: skip
    return rows


def _finish(cfg, out: Path, model, tok, template, val, before: list[dict], summary: dict, device) -> None:

    after = []
    if cfg.chat.responses and val:
        after = held_out_answers(model.to(device).eval(), tok, template, val.pairs[: cfg.chat.responses],
                                 cfg.chat.max_new_tokens)  # fmt: skip
        write_before_after(
            out / "responses.jsonl", after, before, ("response", "rouge_l_chosen", "rouge_l_rejected")
        )
    metrics = [r for _, r in iter_jsonl(out / "metrics.jsonl", errors="skip") if isinstance(r, dict)]
    write_dpo_report(out, cfg, metrics, before, after, template)
    last = next((m for m in reversed(metrics) if m.get("reward_accuracy") is not None), {})
    acc = f", held-out reward accuracy {last['reward_accuracy']:.3f}" if last else ""
    print(
        f"done: step {summary['step']}{acc}; checkpoint {summary['checkpoint']}; report {out / 'report.md'}"
    )


def write_dpo_report(
    out: Path, cfg, metrics: list[dict], before: list[dict], after: list[dict], template
) -> Path:
    """``DIR/report.md``: the held-out preference numbers before and after, and a few answers."""

    scored = [m for m in metrics if isinstance(m.get("reward_accuracy"), int | float)]
    first, last = (scored[0], scored[-1]) if scored else ({}, {})

    def f(x, spec=".3f"):
        return format(x, spec) if isinstance(x, int | float) else "–"

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows) if rows else None

    how = (
        f"LoRA rank {cfg.adapt.lora_rank}"
        if cfg.adapt.lora_rank
        else f"train layers: {cfg.adapt.train_layers}"
    )
    smooth = f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else ""
    lines = [f"# {out.name}: preference-tuned from `{cfg.base}`", "",
             f"DPO ({cfg.loss}, beta {cfg.beta:g}{smooth}); "
             f"template `{template.name}`; {last.get('step', 0):,} steps; {how}.", "",
             "| held-out pairs | before (step 0) | after |", "|---|---|---|",
             f"| DPO loss | {f(first.get('val_loss'), '.4f')} | {f(last.get('val_loss'), '.4f')} |",
             f"| reward accuracy (chosen > rejected; a tie counts 1/2) | {f(first.get('reward_accuracy'))} | "
             f"{f(last.get('reward_accuracy'))} |",
             f"| reward margin | {f(first.get('reward_margin'), '.4f')} | {f(last.get('reward_margin'), '.4f')} |",
             f"| log p(chosen), summed | {f(first.get('chosen_logp'), '.2f')} | {f(last.get('chosen_logp'), '.2f')} |",
             f"| log p(rejected), summed | {f(first.get('rejected_logp'), '.2f')} | "
             f"{f(last.get('rejected_logp'), '.2f')} |",
             f"| ROUGE-L of greedy answers vs chosen ({len(after)} prompts) | {f(mean(before, 'rouge_l_chosen'))} | "
             f"{f(mean(after, 'rouge_l_chosen'))} |",
             f"| ROUGE-L of greedy answers vs rejected | {f(mean(before, 'rouge_l_rejected'))} | "
             f"{f(mean(after, 'rouge_l_rejected'))} |", ""]  # fmt: skip
    if after:
        lines += ["## Some held-out prompts", ""]
        for i, row in enumerate(after[:5]):
            turn = row["prompt"][-1] if row["prompt"] else {}
            prompt = turn.get("content", "") + (f" {turn['input']}" if turn.get("input") else "")
            lines += [f"**Prompt:** {_excerpt(prompt)}", "", f"**Chosen:** {_excerpt(row['chosen'])}", "",
                      f"**Rejected:** {_excerpt(row['rejected'])}", ""]  # fmt: skip
            if i < len(before):
                lines += [f"**Before:** {_excerpt(before[i]['response'])}", ""]
            lines += [f"**After:** {_excerpt(row['response'])}", ""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
