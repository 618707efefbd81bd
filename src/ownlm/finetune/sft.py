"""``ownlm finetune sft``: supervised fine-tuning on instructions or conversations, loss on the responses only.

    ownlm finetune sft runs/base --data instruction-data.json --out runs/sft --max-iters 300
    ownlm finetune sft runs/base --data persona/ --out runs/me --lora-rank 8      # a model that writes like you
    ownlm finetune merge runs/me --out runs/me-merged                             # fold LoRA into the weights

BASE is an ``ownlm`` run or checkpoint, or a folder written by ``ownlm import gpt2``. Each example is rendered
by a chat template (``ownlm.tokenizer.chat``) into token ids and a loss mask: only the assistant's words and
its end marker carry loss. The template's special tokens are added to the tokenizer when it lacks them (the
model's embedding grows to match, new rows starting at the mean of the old ones), and the template travels with
every checkpoint, so ``ownlm chat``, serving and export render prompts exactly as training did.

Batches. By default examples of similar length are batched together (length bucketing) and padded to the
longest in their batch; ``--pack`` instead fills each row of ``block_size`` tokens with several examples, each
attending only to itself and with its positions restarting at 0 (``GPT.forward(segments=...)``). Either way
batch ``i`` is a pure function of ``(seed, i)``, so ``--resume`` continues exactly.

Examples longer than the context: ``--overlong truncate`` (default) keeps the first ``block_size + 1`` tokens
when a response token is among them, otherwise the last ones (the latest context and the reply: a long chat
history is cut from its oldest end); ``--overlong drop`` drops every one. Both are counted in ``DIR/data.json``.

At the end, the held-out prompts are answered greedily by the model before and after fine-tuning:
``DIR/responses.jsonl`` holds both answers and their ROUGE-L F1 against the reference answers, and
``DIR/report.md`` the before/after loss, perplexity and ROUGE-L.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ownlm.config import opt, to_dict, validate
from ownlm.errors import UserError
from ownlm.finetune.common import frozen_autocast, frozen_layout, load_base, match_vocab, store_frozen
from ownlm.finetune.data import load_examples, load_persona_split, split_examples
from ownlm.io import iter_jsonl, removed_on_failure, write_jsonl, write_text
from ownlm.model.adapt import AdaptConfig
from ownlm.model.checkpoint import load_model, resolve_checkpoint, save_model
from ownlm.model.run import RunFolder
from ownlm.runtime.decode import generate
from ownlm.tokenizer.chat import add_special_tokens, get_template, load_template, save_template
from ownlm.train.config import TrainingConfig, fine_tuning_defaults
from ownlm.train.device import return_freed_memory
from ownlm.train.driver import Prepared, Run, run_training
from ownlm.train.trainer import RunContext, Task

IGNORE = -100


# fine-tuning starts from trained weights: a peak rate 20 times below pretraining's (the rest: fine_tuning_defaults)
SFT_TRAINING = dict(lr=1e-4, min_lr=1e-5)


@dataclass(kw_only=True)
class ChatConfig:
    """chat: how examples are rendered and cut to the context, and the held-out prompts answered before and after
    training (``finetune sft`` and ``finetune dpo`` nest this section; flags stay flat: ``--template``)"""

    template: Literal["auto", "chatml", "alpaca"] = opt(
        "auto", help="chat template (auto: the base's own, else alpaca for single-turn prompts, else chatml)"
    )
    max_length: int = opt(
        0,
        help="longest example, prompt and reply, in tokens (0: the model's context length)",
        bounds="[0, inf)",
    )
    overlong: Literal["truncate", "drop"] = opt(
        "truncate",
        help="examples longer than --max-length: keep the start, or the end when the reply starts later; or drop",
    )
    responses: int = opt(
        20, help="held-out prompts answered before and after training (0: none)", bounds="[0, inf)"
    )
    max_new_tokens: int = opt(128, help="longest answer generated for responses.jsonl", bounds="[1, inf)")

    def max_len(self, block_size: int) -> int:
        """Tokens kept of an example (inputs + 1): ``--max-length``, at most the context."""
        return min(self.max_length or block_size, block_size) + 1


@dataclass(kw_only=True)
class SFTConfig:
    """Fine-tune a model on instructions or conversations (loss on the responses only)."""

    base: str = opt(
        help="an ownlm run or checkpoint folder, or a folder from `ownlm import gpt2`", positional=True
    )
    data: list[str] = opt(
        [], help="Alpaca JSON/JSONL, chat JSONL ({'messages': [...]}) or `ownlm persona` folders"
    )
    out: str = opt(help="run folder for checkpoints, metrics.jsonl, responses.jsonl and report.md")
    val_data: list[str] = opt(
        [], help="held-out examples (default: --val-fraction of --data; a persona folder's val)"
    )
    val_fraction: float = opt(
        0.1, help="share of --data held out when --val-data is not given", bounds="[0, 1)"
    )
    pack: bool = opt(
        False, help="pack several examples per row (attention and loss kept within each example)"
    )
    patience: int = opt(0, help="stop when the held-out loss has not improved for N evaluations (0: never)")
    restore_best: bool = opt(
        True, help="end on the checkpoint with the lowest held-out loss (else: the last step's)"
    )
    resume: bool = opt(False, help="continue the run in --out from its latest checkpoint")
    chat: ChatConfig = opt(ChatConfig(), help="template, length limit and held-out answers")
    adapt: AdaptConfig = opt(AdaptConfig(), help="LoRA adapters or partial fine-tuning")
    train: TrainingConfig = opt(
        fine_tuning_defaults(**SFT_TRAINING), help="budget, schedule, evaluation, machine"
    )


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Encoded:
    """Token ids and loss masks of the examples that fit, and what happened to the others."""

    ids: list[np.ndarray] = field(default_factory=list)  # int64, one array per example
    mask: list[np.ndarray] = field(default_factory=list)  # uint8, 1 where the token carries loss
    examples: list[dict] = field(default_factory=list)  # the source examples kept, in the same order
    truncated: int = 0
    dropped: int = 0

    def counts(self) -> dict:
        return {"examples": len(self.ids), "truncated": self.truncated, "dropped": self.dropped,
                "tokens": int(sum(len(x) for x in self.ids)),
                "loss_tokens": int(sum(int(m[1:].sum()) for m in self.mask))}  # fmt: skip


def encode_examples(examples: list[dict], template, tokenizer, max_len: int, overlong: str) -> Encoded:
    """Render and encode each example; ``max_len`` tokens at most (inputs + 1), by the rule of ``overlong``."""
    enc = Encoded()
    for ex in examples:
        try:
            ids, mask = template.encode(tokenizer, ex["messages"])
        except UserError as e:
            raise UserError(f"{ex.get('where', 'example')}: {e}") from None
        if len(ids) > max_len:
            if overlong == "drop":
                enc.dropped += 1
                continue
            if any(mask[1:max_len]):  # the reply starts inside the window: keep the start
                ids, mask = ids[:max_len], mask[:max_len]
            else:  # a long context (a busy group chat) pushes the reply out: keep the latest context and the reply
                ids, mask = ids[-max_len:], mask[-max_len:]
            enc.truncated += 1
        if len(ids) < 2 or not any(mask[1:]):
            enc.dropped += 1
            continue
        enc.ids.append(np.asarray(ids, dtype=np.int64))
        enc.mask.append(np.asarray(mask, dtype=np.uint8))
        enc.examples.append(ex)
    return enc


def final_reply_only(enc: Encoded) -> Encoded:
    """``enc`` with only each example's last scored span kept in its mask: the final reply and its end-of-turn
    token. Held-out examples are scored on it alone — the earlier assistant turns of a persona example's context are
    the person's older messages, which training saw (and a chat's earlier replies are context, not the answer).

    >>> final_reply_only(Encoded(ids=[np.arange(6)], mask=[np.array([0, 1, 1, 0, 1, 1], np.uint8)])).mask[0]
    array([0, 0, 0, 0, 1, 1], dtype=uint8)
    """
    masks = []
    for m in enc.mask:
        m = m.copy()
        ones = np.flatnonzero(m)
        if len(ones):
            gaps = np.flatnonzero(np.diff(ones) > 1)  # where one run of scored tokens ends and another starts
            start = ones[gaps[-1] + 1] if len(gaps) else ones[0]
            m[:start] = 0
        masks.append(m)
    return Encoded(enc.ids, masks, enc.examples, enc.truncated, enc.dropped)


def _pad_rows(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], pad_id: int, width: int | None = None):
    """(inputs, labels, segments) rows -> a batch dict padded on the right to the longest row (or ``width``)."""
    T = width or max(len(r[0]) for r in rows)
    x = np.full((len(rows), T), pad_id, dtype=np.int64)
    y = np.full((len(rows), T), IGNORE, dtype=np.int64)
    seg = np.full((len(rows), T), -1, dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, (a, b, s) in enumerate(rows):
        x[i, : len(a)], y[i, : len(b)], seg[i, : len(s)] = a, b, s
        lengths[i] = len(a)
    return {"input_ids": x, "labels": y, "segments": seg, "lengths": lengths}


def example_row(ids: np.ndarray, mask: np.ndarray, segment: int = 0):
    """One example as (inputs, labels, segments): targets are the next tokens, -100 where the mask is 0."""
    labels = ids[1:].copy()
    labels[mask[1:] == 0] = IGNORE
    return ids[:-1], labels, np.full(len(ids) - 1, segment, dtype=np.int64)


class SFTBatches:
    """Deterministic training batches: global batch ``i`` is a pure function of ``(seed, i)``; each process
    keeps its slice of the global batch's rows (as ``WindowSampler`` does for pretraining)."""

    def __init__(self, enc: Encoded, batch_size: int, block_size: int, pad_id: int, seed: int, pack: bool = False,
                 rank: int = 0, world: int = 1):  # fmt: skip
        if not enc.ids:
            raise UserError(
                "no training examples fit the model's context; raise --max-length or shorten them"
            )
        self.enc, self.B, self.T, self.pad_id, self.seed = enc, batch_size, block_size, pad_id, seed
        self.pack, self.rank, self.world = pack, rank, world
        self._epoch, self._batches = -1, []

    @property
    def rows_per_batch(self) -> int:
        return self.B * self.world

    def _epoch_batches(self, epoch: int) -> list[list]:
        """The global batches of one epoch: lists of rows, each row a list of example indices."""
        n = len(self.enc.ids)
        order = np.random.default_rng([self.seed, 7, epoch]).permutation(n)
        if self.pack:
            rows, row, used = [], [], 0
            for k in order:
                need = len(self.enc.ids[k]) - 1
                if row and used + need > self.T:
                    rows.append(row)
                    row, used = [], 0
                row.append(int(k))
                used += need
            rows.append(row)
        else:  # length bucketing: sort within chunks of 50 batches, so batches hold similar lengths
            chunk = self.rows_per_batch * 50
            rows = []
            for c in range(0, n, chunk):
                part = sorted(order[c : c + chunk], key=lambda k: len(self.enc.ids[k]))
                rows += [[int(k)] for k in part]
        batches = [rows[i : i + self.rows_per_batch] for i in range(0, len(rows), self.rows_per_batch)]
        while len(batches[-1]) < self.rows_per_batch:  # fill the last batch by wrapping around
            batches[-1].append(rows[(len(batches[-1])) % len(rows)])
        if not self.pack:
            batches = [
                batches[j] for j in np.random.default_rng([self.seed, 8, epoch]).permutation(len(batches))
            ]
        return batches

    def batches_per_epoch(self) -> int:
        """Batches in every epoch (packing fills rows differently each epoch: epoch 0's count is used)."""
        if not hasattr(self, "_n"):
            self._n = len(self._epoch_batches(0))
        return self._n

    def batch(self, index: int) -> dict:
        n = self.batches_per_epoch()
        epoch, j = divmod(index, n)
        if epoch != self._epoch:
            batches = self._epoch_batches(epoch)
            self._batches, self._epoch = (batches * (n // len(batches) + 1))[:n], epoch
        rows = self._batches[j][self.rank * self.B : (self.rank + 1) * self.B]
        out = []
        for row in rows:
            parts = [example_row(self.enc.ids[k], self.enc.mask[k], s) for s, k in enumerate(row)]
            out.append(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)))
        return _pad_rows(out, self.pad_id, self.T if self.pack else None)


class SFTTask(Task):
    """Masked next-token loss on the responses; validation is the masked loss on held-out examples."""

    lockstep = True  # masked_loss pads each process' share of the held-out batches to the same length

    def __init__(self, train: SFTBatches, val: Encoded | None, eval_batches: int, template, pad_id: int):
        self.train, self.val, self.eval_batches = train, val, eval_batches
        self.template, self.pad_id = template, pad_id

    def batch(self, index: int) -> dict:
        return self.train.batch(index)

    def count(self, batch: dict) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def tokens(self, batch: dict) -> int:
        return int(batch["lengths"].sum())

    def loss(self, model, batch: dict):
        segments = batch["segments"] if self.train.pack else None
        ids, labels = batch["input_ids"], batch["labels"]
        return model(ids, labels, segments=segments, reduction="sum", scored_only=True)[1]

    def evaluate(self, model, ctx: RunContext) -> dict:
        if self.val is None or not self.val.ids:
            return {}
        total, count = masked_loss(model, self.val, ctx, self.train.B, self.pad_id, self.eval_batches)
        return {"val_loss": total / max(count, 1), "val_tokens": count}

    def save_extra(self, folder: Path) -> None:
        from ownlm.tokenizer.chat import save_template

        save_template(folder, self.template)


def masked_loss(model, enc: Encoded, ctx: RunContext, batch_size: int, pad_id: int, max_batches: int = 0):
    """(sum of the response tokens' losses, their count) over ``enc``, in length order; each process scores its
    share of the batches and the sums are added over processes."""
    import torch

    order = sorted(range(len(enc.ids)), key=lambda k: len(enc.ids[k]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if max_batches:
        batches = batches[:max_batches]
    sums = torch.zeros(2, dtype=ctx.sum_dtype, device=ctx.device)
    with torch.no_grad(), ctx.autocast():
        for b in ctx.share(batches):
            rows = [example_row(enc.ids[k], enc.mask[k]) for k in (b or batches[0])]
            batch = ctx.to_device(_pad_rows(rows, pad_id))
            loss = model(batch["input_ids"], batch["labels"], reduction="sum", scored_only=True)[1]
            if b is not None:  # None: a pass only to keep step with the other processes (FSDP)
                sums[0] += loss.to(sums.dtype)
                sums[1] += (batch["labels"] != IGNORE).sum()
    ctx.all_reduce(sums)
    return sums[0].item(), int(sums[1].item())


# ---------------------------------------------------------------------------------------------- quality


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004) on lower-cased word tokens: the longest common subsequence, as a harmonic mean of
    its share of the candidate and of the reference.

    >>> rouge_l("the cat sat", "the cat sat")
    1.0
    >>> round(rouge_l("the cat", "the big cat"), 3)
    0.8
    >>> rouge_l("", "anything")
    0.0
    """
    a, b = _words(candidate)[:1000], _words(reference)[:1000]
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def answer(model, tokenizer, template, messages: list[dict], max_new_tokens: int) -> str:
    """The model's greedy reply to a conversation (everything before its last assistant turn)."""

    ids = template.encode_prompt(tokenizer, messages)
    block = model.config.block_size
    if len(ids) >= block:
        ids = ids[-(block - 1) :]
    with frozen_autocast(model):
        out = generate(model, ids, max_new_tokens, temperature=0.0, stop_token_ids=template.stop_ids(tokenizer),
                       vocab_limit=tokenizer.n_vocab)[0]  # fmt: skip
    return tokenizer.decode(out).strip()


clock = time.perf_counter  # the time the answers' deadline is read on (tests set their own)


def held_out_answers(model, tokenizer, template, examples: list[dict], max_new_tokens: int,
                     deadline: float | None = None) -> list[dict]:  # fmt: skip
    """For each example: its prompt (up to the last assistant turn), the reference reply, the model's reply and
    their ROUGE-L. With a ``deadline`` (a ``clock()`` time), no new answer starts after it (one always does)."""
    rows = []
    for ex in examples:
        if rows and deadline is not None and clock() >= deadline:
            break
        msgs = ex["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        reply = answer(model, tokenizer, template, msgs[:last], max_new_tokens)
        ref = msgs[last]["content"]
        rows.append({"where": ex.get("where"), "prompt": msgs[:last], "reference": ref, "response": reply,
                     "rouge_l": rouge_l(reply, ref)})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- the command


def choose_template(name: str, base_folder: Path, examples: list[dict], persona: bool):
    """The template for this run: the one given, the base's own (a model fine-tuned before), alpaca for
    single-turn instruction data, chatml for conversations."""

    if name != "auto":
        return get_template(name)
    own = load_template(base_folder)
    if own is not None:
        return own
    single = all(len(e["messages"]) == 2 and e["messages"][0]["role"] == "user" for e in examples)
    return get_template("alpaca" if single and not persona else "chatml")


def prepare(cfg: SFTConfig, tokenizer, base_folder: Path, template_name: str | None = None):
    """Read, split, template and encode the data: (template, tokenizer with its specials, train, val, counts)."""

    persona = any(Path(p).is_dir() for p in cfg.data)
    examples, counts = load_examples(cfg.data)
    if cfg.val_data:
        val_ex, _ = load_examples(cfg.val_data)
        train_ex = examples
    elif persona:  # a persona's validation split is the latest part of the timeline, not a random share
        train_ex = examples
        val_ex = [e for p in cfg.data if Path(p).is_dir() for e in load_persona_split(p, "val")[0]]
    else:
        train_ex, val_ex = split_examples(examples, cfg.val_fraction, cfg.train.seed)
    template = choose_template(template_name or cfg.chat.template, base_folder, train_ex, persona)
    tokenizer = add_special_tokens(tokenizer, template.special_tokens())
    return template, tokenizer, train_ex, val_ex, counts


def main(cfg: SFTConfig) -> int:
    cfg.train.check()
    _check(cfg)
    return run_training(cfg, lambda run: make_task(cfg, run), inputs=[cfg.base, *cfg.data, *cfg.val_data])


# What a fine-tuning run is: --resume with another value would mix two runs in one model.
RESUME_FIXED = ("base", "template", "lora_rank", "lora_alpha", "lora_targets", "lora_dropout", "train_layers")


def _leaves(d: dict) -> dict:
    """A config dict's fields by name, sections flattened (the fields keep their names in any section)."""
    out = {}
    for k, v in d.items():
        out.update(_leaves(v) if isinstance(v, dict) else {k: v})
    return out


def check_resume_settings(cfg, state) -> None:
    """``--resume`` continues the run as it was started: a different BASE, ``--template``, LoRA setting or
    ``--train-layers`` is an error (as ``pretrain --resume`` refuses a changed model flag), not a silent mix."""
    saved = state.run_config  # the RunState of the checkpoint resumed
    if not isinstance(saved, dict):
        return
    saved, given = _leaves(saved), _leaves(to_dict(cfg))
    changed = []
    for k in RESUME_FIXED:
        if k not in saved or k not in given:
            continue
        a, b = saved[k], given[k]
        if k == "base" and isinstance(a, str) and isinstance(b, str):
            a, b = os.path.realpath(a), os.path.realpath(b)
        if a != b:
            changed.append(
                f"{k.upper() if k == 'base' else '--' + k.replace('_', '-')} {given[k]} (the run has {saved[k]})"
            )
    if changed:
        raise UserError(f"--resume continues the run in --out as it was started; these differ from it: "
                        f"{'; '.join(changed)}. Drop them, or start a new run in another --out")  # fmt: skip


def make_task(cfg: SFTConfig, run: Run) -> Prepared:
    """The base (or the resumed checkpoint) with its adapters, the examples encoded with the chat template, and
    the held-out answers before training (for the report)."""

    import torch  # torch and LoRA: imported when the run starts, not at `ownlm finetune sft --help`

    from ownlm.model.lora import adapt_model

    t0 = clock()  # --max-minutes bounds the whole command: loading and answers included
    tc, resume, rank, world = cfg.train, run.resume, run.rank, run.world
    if resume:
        check_resume_settings(cfg, run.state)
    if tc.lean_memory:
        return_freed_memory()  # the lean mode gives freed memory back from the start (loading too)
    model, tok, folder = load_base(cfg.base, run.folder, prepare=frozen_layout(cfg.adapt))
    base_n_vocab = tok.n_vocab
    template, tok, train_ex, val_ex, counts = prepare(cfg, tok, folder)
    match_vocab(model, base_n_vocab, tok, run.folder)
    block = model.config.block_size
    max_len = cfg.chat.max_len(block)
    train_enc = encode_examples(train_ex, template, tok, max_len, cfg.chat.overlong)
    val_enc = (
        final_reply_only(encode_examples(val_ex, template, tok, max_len, cfg.chat.overlong))
        if val_ex
        else None
    )
    pad_id = tok.eot_id if tok.eot_id is not None else 0
    if not train_enc.ids:
        raise UserError(f"none of the {len(train_ex):,} training examples fits the model's context of {block} tokens "
                        f"with a response token left ({train_enc.dropped:,} dropped); shorten them or use a model "
                        "with a longer context")  # fmt: skip
    torch.manual_seed(tc.seed)  # LoRA's random start: the same in every process and every run
    adapt_model(model, cfg.adapt, resume=bool(resume))
    store_frozen(model, cfg.adapt.base_dtype)
    model.train()
    # packed rows are --max-length wide (a model with an 8k context packs 512-token rows when asked to)
    batches = SFTBatches(train_enc, tc.batch_size, max_len - 1, pad_id, tc.seed, cfg.pack, rank, world)
    per_epoch = math.ceil(batches.batches_per_epoch() / tc.grad_accum)
    before = []
    # the answers after training stop at the end of the budget; those before at a quarter of it
    deadline = t0 + 60 * tc.max_minutes if tc.max_minutes else None
    if rank == 0 and cfg.chat.responses and val_enc and not resume:
        t_answers = clock()
        before = held_out_answers(model.to(run.device).eval(), tok, template,
                                  val_enc.examples[: cfg.chat.responses], cfg.chat.max_new_tokens,
                                  deadline=t0 + 15 * tc.max_minutes if tc.max_minutes else None)  # fmt: skip
        model.train()
        if tc.max_minutes:  # the budget covers the answers: these, and as long again for those after
            spent = clock() - t0 + (clock() - t_answers)
            tc.max_minutes = max(tc.max_minutes - spent / 60, tc.max_minutes / 10)
    data = {"template": template.name, "train": train_enc.counts(), "val": val_enc.counts() if val_enc else None,
            "read": counts, "steps_per_epoch": per_epoch}  # fmt: skip
    return Prepared(
        model, SFTTask(batches, val_enc, tc.eval_iters, template, pad_id), tok, patience=cfg.patience,
        steps_per_epoch=per_epoch, data=data,
        announce=lambda: _summary_line(model, template, train_enc, val_enc, per_epoch, tc),
        finish=lambda summary: _finish(cfg, run.out, model, tok, template, val_enc, before,
                                       {**summary, "needed_steps": min(50, per_epoch)}, run.device, deadline),
        eval_at_start=True, flops_seq_len=block, time_keeps_epochs=True,
    )  # fmt: skip


def _check(cfg: SFTConfig) -> None:
    if not cfg.data:
        raise UserError(
            "give the training data: --data FILE... (Alpaca JSON/JSONL, chat JSONL or a persona folder)"
        )
    cfg.adapt.check()
    cfg.train.dtype = cfg.adapt.training_dtype(cfg.train.dtype)
    validate(cfg.chat)


def _summary_line(model, template, train_enc: Encoded, val_enc: Encoded | None, per_epoch: int, tc) -> str:
    from ownlm.model.lora import trainable_summary

    tr = train_enc.counts()
    budget = " or ".join(x for x in (f"{tc.max_iters:,} steps" if tc.max_iters else "",
                                     f"{tc.max_minutes:g} minutes" if tc.max_minutes else "",
                                     f"{tc.max_tokens:,} tokens" if tc.max_tokens else "") if x)  # fmt: skip
    val = f", {len(val_enc.ids):,} held out" if val_enc else ", none held out"
    skipped = ""
    if tr["truncated"] or tr["dropped"]:
        skipped = f" ({tr['truncated']} truncated, {tr['dropped']} dropped as longer than the context)"
    return (f"sft: {tr['examples']:,} training examples{skipped}{val}; template {template.name}; "
            f"{per_epoch} steps per epoch; budget {budget}; {trainable_summary(model)}")  # fmt: skip


def _finish(cfg, out: Path, model, tok, template, val_enc, before: list[dict], summary: dict, device,
            deadline: float | None = None) -> None:  # fmt: skip

    best = summary.get("best_checkpoint")
    if cfg.restore_best and best and Path(best) != Path(summary["checkpoint"]):
        model = restore_best(out, Path(best), device)
        print(f"restore-best: {out / 'latest'} now names {Path(best).name}, the checkpoint with the lowest held-out "
              f"loss ({summary['best_saved_val_loss']:.4f}); the last step's stays in {summary['checkpoint']} "
              "(--resume continues from it)")  # fmt: skip
        summary = {**summary, "checkpoint": best, "val_loss": summary["best_saved_val_loss"]}
    after = []
    if cfg.chat.responses and val_enc:
        planned = min(cfg.chat.responses, len(before) or cfg.chat.responses, len(val_enc.examples))
        after = held_out_answers(model.to(device).eval(), tok, template, val_enc.examples[:planned],
                                 cfg.chat.max_new_tokens, deadline=deadline)  # fmt: skip
        if len(after) < planned:
            print(f"answers: {len(after)} of {planned} held-out prompts answered within the time budget")
        write_before_after(out / "responses.jsonl", after, before, ("response", "rouge_l"))
    metrics = [r for _, r in iter_jsonl(out / "metrics.jsonl", errors="skip") if isinstance(r, dict)]
    kept = int(Path(summary["checkpoint"]).name.removeprefix("step_"))
    warning = short_run_warning(
        summary["step"], summary.get("needed_steps", 0), sum(p.numel() for p in model.parameters())
    )
    if warning:
        print("warning: " + warning)
    write_sft_report(out, cfg, metrics, before, after, template, kept_step=kept, warning=warning)
    vl = f", val loss {summary['val_loss']:.4f}" if summary.get("val_loss") is not None else ""
    print(f"done: step {summary['step']}{vl}; checkpoint {summary['checkpoint']}; report {out / 'report.md'}")


def short_run_warning(steps: int, needed: int, parameters: int = 0) -> str:
    """What to say when a run took fewer optimiser steps than one pass over its data (or 50): ``""`` otherwise.
    A base of 50M parameters or more is taken to be a real one already (no advice to start from one).

    >>> short_run_warning(22, 50)
    'only 22 steps: expect noise; give it --max-minutes N (build: --sft-minutes N), or start from a real base with --base'
    >>> short_run_warning(1, 50, parameters=134_515_008)
    'only 1 steps: expect noise; give it --max-minutes N (build: --sft-minutes N)'
    """
    if steps >= needed:
        return ""
    advice = "" if parameters >= 50_000_000 else ", or start from a real base with --base"
    return f"only {steps} steps: expect noise; give it --max-minutes N (build: --sft-minutes N){advice}"


def restore_best(out: Path, folder: Path, device):
    """Point the run's ``latest`` at ``folder`` (its best step) and return that model, adapters folded in; the
    newest step is named in ``last``, so ``--resume`` continues the run from where it stopped."""

    model, _, _ = load_model(folder, device=device, merge_lora=True)
    RunFolder(out).point_latest_at(folder)
    return model


def _excerpt(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters for the report (line breaks and runs of spaces collapsed)."""
    flat = " ".join(text.split())
    return (flat[:limit] + " …" if len(flat) > limit else flat) or "(nothing)"


def write_before_after(path: Path, after: list[dict], before: list[dict], keys: tuple[str, ...]) -> None:
    """``responses.jsonl``: each held-out answer after training, with ``keys`` of the same prompt's answer before
    training beside it as ``KEY_before`` (``finetune sft`` and ``dpo``)."""
    rows = [
        {**a, **({f"{k}_before": before[i][k] for k in keys} if i < len(before) else {})}
        for i, a in enumerate(after)
    ]
    write_jsonl(path, rows)


def write_sft_report(
    out: Path,
    cfg,
    metrics: list[dict],
    before: list[dict],
    after: list[dict],
    template,
    kept_step=None,
    warning: str = "",
) -> Path:
    """``DIR/report.md``: loss, perplexity and ROUGE-L before and after (at the step kept), and a few exchanges."""

    scored = [m for m in metrics if isinstance(m.get("val_loss"), int | float)]
    first, last = (scored[0], scored[-1]) if scored else ({}, {})
    if kept_step is not None:
        last = next((m for m in scored if m.get("step") == kept_step), last)
    steps = max((m.get("step", 0) for m in metrics), default=0)
    kept = ""
    if last.get("step", steps) != steps:
        kept = f", the checkpoint of step {last['step']:,} kept (the lowest held-out loss)"

    def f(x, spec=".3f"):
        return format(x, spec) if isinstance(x, int | float) else "–"

    def mean(rows):
        return sum(r["rouge_l"] for r in rows) / len(rows) if rows else None

    lines = [f"# {out.name}: fine-tuned from `{cfg.base}`", "",
             f"Template `{template.name}`; {steps:,} steps{kept}; "
             f"{'LoRA rank ' + str(cfg.adapt.lora_rank) if cfg.adapt.lora_rank else 'train layers: ' + cfg.adapt.train_layers}.", "",
             "| held-out examples | before (step 0) | after |", "|---|---|---|",
             f"| loss per token of the final reply | {f(first.get('val_loss'))} | {f(last.get('val_loss'))} |",
             f"| perplexity | {f(first.get('val_ppl'), '.2f')} | {f(last.get('val_ppl'), '.2f')} |",
             f"| ROUGE-L F1 of greedy answers ({len(after)} prompts) | {f(mean(before))} | {f(mean(after))} |",
             ""]  # fmt: skip
    if warning:
        lines[2:2] = [f"**Warning:** {warning}.", ""]
    if after:
        lines += ["## Some held-out exchanges", ""]
        for i, row in enumerate(after[:5]):
            turn = row["prompt"][-1] if row["prompt"] else {}
            prompt = turn.get("content", "") + (f" {turn['input']}" if turn.get("input") else "")
            lines += [
                f"**Prompt:** {_excerpt(prompt)}",
                "",
                f"**Reference:** {_excerpt(row['reference'])}",
                "",
            ]
            if i < len(before):
                lines += [f"**Before:** {_excerpt(before[i]['response'])}", ""]
            lines += [f"**After:** {_excerpt(row['response'])}", ""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"


# ---------------------------------------------------------------------------------------------- merge


@dataclass(kw_only=True)
class MergeConfig:
    """Fold a LoRA run's adapters into full weights: a plain model folder that needs no adapter."""

    run: str = opt(help="a LoRA fine-tuning run or checkpoint folder", positional=True)
    out: str = opt(help="folder for the merged model")


def merge_main(cfg: MergeConfig) -> int:

    folder = resolve_checkpoint(cfg.run)
    if not (folder / "adapter.json").is_file():
        raise UserError(f"{folder}: no LoRA adapters here (adapter.json); nothing to merge")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: the folder is not empty; choose a new one")
    model, tok, _ = load_model(folder, merge_lora=True)
    with removed_on_failure(out):  # a full disk half-way leaves no partial model behind
        save_model(out, model, tokenizer=tok, extra={"merged_from": str(folder)})
        template = load_template(folder)
        if template is not None:
            save_template(out, template)
    print(f"merged {folder} -> {out}")
    return 0
