"""The one Trainer: pretraining and every fine-tuning task hand it a model and a *task*.

A task says what is particular to it; the Trainer owns everything else, once::

    task.batch(i)            -> dict of numpy arrays: this process' part of micro-batch i (a pure function of
                                (seed, i), so a resumed run sees exactly the batches an unbroken one would)
    task.count(batch)        -> how many tokens carry loss in it
    task.tokens(batch)       -> how many tokens it feeds the model (for tokens/s)
    task.loss(model, batch)  -> the SUM of the per-token losses (a 0-d tensor)
    task.evaluate(model, ctx)-> {"val_loss": ..., other metrics}  ({} when there is nothing to evaluate)
    task.on_eval(model, step, record)   optional: samples, logs (process 0 only)
    task.save_extra(folder)  optional: files a checkpoint carries for this task (chat template, labels, ...)
    task.should_stop()       optional: True to end the run after this evaluation (early stopping); decide from
                                what ``evaluate`` returned, which is the same on every process (``--patience``
                                needs none of this: the Trainer counts evaluations without improvement itself)

The run's state is one ``RunState`` (``ownlm.model.run``), ``trainer.state``: step, tokens seen, the best
validation losses, the patience counter, warm-up, the evaluation cadence, the metrics window, the dtype, the
time spent and the random generators. A checkpoint writes it whole as ``state.json`` and ``--resume`` reads it
back whole, so a field added there is saved and restored without another line here.

One optimiser step is ``grad_accum`` micro-batches per process. The loss is normalised by the tokens that carry
loss in the *whole* step (all micro-batches, all processes), so examples of different lengths weigh by their
tokens and ``grad_accum`` x 2 processes computes what 1 process does with a 2x larger batch. Then: unscale
(fp16), clip, AdamW with the scheduled learning rate. Around it: evaluation, checkpoints, ``metrics.jsonl``,
``loss.png``, a progress bar (or a line every ``log_seconds`` when output is not a terminal), and the ways a
run ends —

- the step, token or time budget is spent (an evaluation and a checkpoint always close the run);
- the loss is NaN/inf: stop before the bad step is saved, name the last good checkpoint;
- out of memory: say which setting to lower;
- Ctrl-C / SIGTERM: finish the current step, save, exit 130 (a second Ctrl-C aborts at once).

Budgets and the schedule. Progress is the share of the budget spent: ``step / max_iters``, ``tokens /
max_tokens`` or elapsed time over ``max_minutes`` (whichever is furthest along). Warm-up lasts ``warmup_iters``
steps, or the first ``warmup_frac`` of the run (for a time budget the step count is estimated from the speed of
the steps so far); the decay runs on progress; without ``eval_interval`` there are ``evals`` evaluations at
even shares of progress. Step and token budgets resume exactly (bit-identical weights and ``metrics.jsonl``);
a time budget resumes with the time that was left, so the schedule continues but cannot repeat the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ownlm.errors import UserError
from ownlm.model.run import RunFolder, RunState


class Stop(Exception):
    """Internal: a run that must end now (NaN loss)."""


@dataclass
class RunContext:
    """What a task needs to know about the run when it evaluates: device, precision, processes."""

    device: object
    dtype: str
    rank: int = 0
    world: int = 1
    lockstep: bool = False  # FSDP: every process must run as many forward passes as the others

    def share(self, items: list) -> list:
        """This process' share of ``items`` (every ``world``-th); in lockstep, padded with None to the longest
        share, so each process runs as many passes (a task runs a None item on any batch and discards it)."""
        mine = items[self.rank :: self.world]
        if self.lockstep:
            mine += [None] * (-(-len(items) // self.world) - len(mine))
        return mine

    def to_device(self, batch: dict) -> dict:
        import torch

        out = {}
        for k, v in batch.items():
            t = torch.from_numpy(v) if not torch.is_tensor(v) else v
            if self.device.type == "cuda":
                t = t.pin_memory().to(self.device, non_blocking=True)
            else:
                t = t.to(self.device)
            out[k] = t
        return out

    def autocast(self):
        from ownlm.train.device import autocast

        return autocast(self.device, self.dtype)

    @property
    def sum_dtype(self):
        """The dtype for evaluation sums: float64, except on Apple's MPS, which has none."""
        import torch

        return torch.float32 if self.device.type == "mps" else torch.float64

    def all_reduce(self, tensor):
        """Sum ``tensor`` over processes, in place (nothing with one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor


class Task:
    """The base every task extends; see the module docstring for the protocol."""

    lockstep = (
        False  # True: evaluate() runs as many forward passes on every process (--strategy fsdp needs it)
    )

    # True: val_loss is a mean negative log-likelihood per token, and metrics carry its exp as val_ppl
    loss_per_token = True

    def batch(self, index: int) -> dict:
        raise NotImplementedError

    def count(self, batch: dict) -> int:
        raise NotImplementedError

    def tokens(self, batch: dict) -> int:
        return int(batch["input_ids"].size)

    def loss(self, model, batch: dict):
        raise NotImplementedError

    def evaluate(self, model, ctx: RunContext) -> dict:
        return {}

    def on_eval(self, model, step: int, record: dict) -> None:
        pass

    def save_extra(self, folder: Path) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def checkpoint_activations(model) -> None:
    """``--checkpoint-activations``: every GPT inside ``model`` (a classifier's trunk too) recomputes its blocks'
    activations in the backward pass."""
    from ownlm.model.gpt import GPT

    for m in model.modules():
        if isinstance(m, GPT):
            m.checkpoint_activations = True


def set_memory_mode(cfg) -> None:
    """``--memory-mode`` for CPU training: lean (glibc gives freed memory back at once) or fast (freed blocks stay
    for the next step); auto is lean with ``--checkpoint-activations``, whose point is memory. SmolLM2-135M LoRA at
    8 x 512 with checkpointing: lean 1.2 GB at ~250 tokens/s, fast 2.1 GB at ~500 (docs/benchmarks.md)."""
    from ownlm.train.device import keep_freed_memory, return_freed_memory

    (return_freed_memory if cfg.lean_memory else keep_freed_memory)()


class Trainer:
    """Train ``model`` on ``task`` with the settings of a ``TrainingConfig``; ``fit()`` returns a summary
    ``{"status": "done"|"interrupted", "step", "val_loss", "checkpoint", "dtype"}``.

    >>> Trainer(model, cfg.train, PretrainTask(...), "runs/x", tokenizer=tok).fit()  # doctest: +SKIP
    """

    def __init__(self, model, cfg, task: Task, run_dir, *, tokenizer=None, resume=None, run_config=None,
                 log=None, eval_at_start: bool = False, flops_seq_len: int | None = None,
                 patience: int = 0):  # fmt: skip
        self.model, self.cfg, self.task, self.run_dir = model, cfg, task, Path(run_dir)
        self.tokenizer, self.resume, self.run_config = tokenizer, resume, run_config
        self.eval_at_start, self.flops_seq_len, self.patience = eval_at_start, flops_seq_len, patience
        self._log = log

    # ------------------------------------------------------------------ set-up
    def fit(self) -> dict:
        import torch
        from tqdm import tqdm

        from ownlm.model.checkpoint import unwrap
        from ownlm.train import checkpoint as ckpt
        from ownlm.train.device import choose_dtype, ddp_info, peak_flops, pick_device
        from ownlm.train.metrics import MetricsLog
        from ownlm.train.optim import make_optimizer

        cfg, task = self.cfg, self.task
        self.t_begin = time.perf_counter()  # a time budget counts from here: set-up included
        self.rank, _, self.world = ddp_info()
        self.master = self.rank == 0
        self.log = self._log or (tqdm.write if self.master else (lambda *a, **k: None))
        device = pick_device(cfg.device)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        # the one state a checkpoint saves and a resumed run continues: the RunState of its step folder, or a new one
        self.state = state = dataclasses.replace(self.resume[1]) if self.resume else RunState()
        if self.run_config is not None:
            state.run_config = self.run_config
        state.window = dict(state.window or self._empty_window(0.0))
        self.start_step = state.step
        self.raw = unwrap(self.model).to(device)
        if cfg.checkpoint_activations:
            checkpoint_activations(self.raw)
        if device.type == "cpu":  # lean: memory back at once; fast: freed blocks reused (see the functions)
            set_memory_mode(cfg)

        dtype = state.dtype or choose_dtype(cfg.dtype, device, self.log if self.master else (lambda s: None))
        if self.world > 1:  # machines of a multi-node run may differ: all use process 0's choice
            import torch.distributed as dist

            choice = [dtype]
            dist.broadcast_object_list(choice, src=0)
            dtype = choice[0]
        self.ctx = RunContext(
            device, dtype, self.rank, self.world, lockstep=self.world > 1 and cfg.strategy == "fsdp"
        )
        state.dtype, self.device = dtype, device
        if not any(p.requires_grad for p in self.raw.parameters()):
            raise UserError("nothing to train: every parameter of the model is frozen")
        self.fsdp = self.world > 1 and cfg.strategy == "fsdp"
        if self.fsdp:
            from ownlm.train import fsdp

            if not all(p.requires_grad for p in self.raw.parameters()):
                raise UserError("--strategy fsdp shards a model trained whole; for LoRA or frozen layers (a few "
                                "weights to train) use --strategy ddp")  # fmt: skip
            if not task.lockstep:
                raise UserError(f"--strategy fsdp is not available for this command yet ({type(task).__name__}); "
                                "use --strategy ddp")  # fmt: skip
            fsdp.shard(self.raw, dtype)  # before the optimiser: it must hold the sharded parameters
        self.optimizer = make_optimizer(self.raw, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        device=device)  # fmt: skip
        # what checkpoints save and load: the optimiser itself, or a sharded one seen whole
        self.opt_view = fsdp.FullOptimizer(self.raw, self.optimizer) if self.fsdp else self.optimizer
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
        if self.resume:
            ckpt.load_optimizer(self.resume[0], self.opt_view, self.scaler)
        model = self.raw
        if cfg.compile:
            model = torch.compile(self.raw)
        if self.world > 1 and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.wrapped = model

        self.budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
        self.max_iters = cfg.max_iters
        if not (cfg.max_iters or cfg.max_tokens or cfg.max_minutes):  # `run_training` resolves the default
            raise ValueError("the Trainer needs a budget: max_iters, max_tokens or max_minutes")
        seq = self.flops_seq_len
        self.flops_per_token = (
            self.raw.flops_per_token(seq)
            if hasattr(self.raw, "flops_per_token")
            else 6 * self.raw.num_params()
        )
        self.peak = peak_flops(device) if self.master else 0.0
        self.metrics = (
            MetricsLog(self.run_dir, resume_step=self.state.step if self.resume else None)
            if self.master
            else None
        )
        return self._run()

    def _best_checkpoint(self) -> str | None:
        """The saved step folder with the lowest validation loss (named by the run's ``best`` file), if any."""
        best = RunFolder(self.run_dir).best()
        return str(best) if best is not None else None

    @staticmethod
    def _empty_window(lr: float) -> dict:
        return {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "lr": lr}

    # ------------------------------------------------------------------ budget and schedule
    def progress(self, elapsed: float) -> float:
        """Share of the budget spent, in [0, 1] (the furthest along of steps, tokens and time)."""
        cfg, p = self.cfg, 0.0
        if self.max_iters:
            p = max(p, self.state.step / self.max_iters)
        if cfg.max_tokens:
            p = max(p, self.state.tokens_seen / cfg.max_tokens)
        if self.budget_s:
            p = max(p, (elapsed - self.state.setup_s) / max(self.budget_s - self.state.setup_s, 1e-9))
        return min(1.0, p)

    def estimated_steps(self, elapsed: float) -> int | None:
        """The run's length in steps: exact for a step budget, estimated from progress so far otherwise."""
        if self.max_iters and not (self.cfg.max_tokens or self.budget_s):
            return self.max_iters
        p = self.progress(elapsed)
        if self.state.step < 1 or p <= 0:
            return self.max_iters or None
        est = math.ceil(self.state.step / p)
        return min(est, self.max_iters) if self.max_iters else est

    def lr_at(self, elapsed: float) -> float:
        from ownlm.train.optim import lr_at

        cfg = self.cfg
        if self.state.warmup_steps is None:
            if cfg.warmup_iters >= 0:
                self.state.warmup_steps = cfg.warmup_iters
            else:
                est = self.estimated_steps(elapsed)
                if est is not None and (self.state.step >= 2 or est == self.max_iters):
                    self.state.warmup_steps = (
                        max(1, round(cfg.warmup_frac * est)) if cfg.warmup_frac > 0 else 0
                    )
        warmup = (
            self.state.warmup_steps if self.state.warmup_steps is not None else max(self.state.step + 2, 10)
        )  # until the speed is known
        p = self.progress(elapsed)
        if (
            self.state.warmup_progress is None
            and self.state.warmup_steps is not None
            and self.state.step >= self.state.warmup_steps
        ):
            self.state.warmup_progress = p
        return lr_at(self.state.step, p, cfg.lr, cfg.min_lr, warmup, cfg.schedule, cfg.decay_frac,
                     self.state.warmup_progress or 0.0)  # fmt: skip

    def eval_due(self, at_end: bool, elapsed: float) -> bool:
        if at_end:
            return True
        if self.cfg.eval_interval:
            return self.state.step % self.cfg.eval_interval == 0
        p = self.progress(elapsed)
        if p >= self.state.next_eval / self.cfg.evals and self.state.next_eval < self.cfg.evals:
            while self.state.next_eval < self.cfg.evals and p >= self.state.next_eval / self.cfg.evals:
                self.state.next_eval += 1
            return True
        return False

    # ------------------------------------------------------------------ evaluation and checkpoints
    def evaluate(self) -> dict:
        import torch

        self.wrapped.eval()
        with torch.no_grad():
            result = self.task.evaluate(self.raw, self.ctx)
        self.wrapped.train()
        return result

    def save(self, at_step: int, elapsed: float, is_best: bool = False) -> Path | None:
        from ownlm.train import checkpoint as ckpt

        path, model_state = None, None
        if self.fsdp:  # every process sends its shards; process 0 writes one consolidated checkpoint
            from ownlm.train.fsdp import full_model_state

            model_state = full_model_state(self.raw)
            self.opt_view.gather()
        rngs = None
        if self.world > 1:  # each process draws its own dropout masks: keep every process' generators
            import torch.distributed as dist

            rngs = [None] * self.world
            dist.all_gather_object(rngs, ckpt.rng_state())
        if self.master:
            state = dataclasses.replace(self.state, data_position=at_step * self.cfg.grad_accum, elapsed_s=elapsed,
                                        world_size=self.world, rng_ranks=rngs)  # fmt: skip
            path = ckpt.save_checkpoint(RunFolder(self.run_dir), at_step, self.raw, self.opt_view, state,
                                        tokenizer=self.tokenizer, scaler=self.scaler,
                                        keep=self.cfg.keep_checkpoints,
                                        extra_files=self.task.save_extra, best=is_best,
                                        model_state=model_state)  # fmt: skip
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return path

    def eval_and_save(self, checkpoint: bool, final: bool = False) -> None:
        t_eval = time.perf_counter()
        result = self.evaluate()
        val = result.get("val_loss")
        if val is not None and not math.isfinite(val):
            raise Stop(f"{val} on the validation split")
        if val is not None:
            best = self.state.best_val_loss
            improved = best is None or val < best - 1e-6
            self.state.best_val_loss = val if best is None else min(best, val)
            self.state.evals_since_best = 0 if improved else self.state.evals_since_best + 1
        self.val_loss = val
        w = self.state.window
        tok_s = w["tokens"] / max(w["time"], 1e-9)
        mfu = self.flops_per_token * tok_s / self.world / self.peak if self.peak else 0.0
        train_loss = w["loss"] / w["steps"] if w["steps"] else None
        record = {"step": self.state.step, "train_loss": train_loss, "val_loss": val,
                  "val_ppl": math.exp(min(val, 50)) if val is not None and self.task.loss_per_token else None,
                  **{k: v for k, v in result.items() if k != "val_loss"}, "lr": w["lr"],
                  "tokens": self.state.tokens_seen, "tokens_per_s": tok_s, "mfu": mfu,
                  "elapsed_s": time.perf_counter() - self.t_start}  # fmt: skip
        self.state.window = self._empty_window(w["lr"])
        if self.master:
            self.metrics.add(record)
            if final or time.perf_counter() - self.last_plot > 60:  # plotting costs ~0.2 s: once a minute
                self.metrics.plot()
                self.last_plot = time.perf_counter()
            tl = f"train {train_loss:.4f}" if train_loss is not None else "train -"
            bpb = f" ({result['val_bpb']:.3f} bits/byte)" if result.get("val_bpb") is not None else ""
            vl = f", val {val:.4f}{bpb}" if val is not None else ""
            if w["steps"]:
                self.log(f"step {self.state.step}: {tl}{vl}, {tok_s:,.0f} tok/s, mfu {100 * mfu:.1f}%")
            else:
                self.log(
                    f"step {self.state.step} (before training): val {val:.4f}"
                    if val is not None
                    else "step 0"
                )
            if not self.fsdp:  # a sharded model runs only with every process: no samples from process 0 alone
                self.raw.eval()
                self.task.on_eval(self.raw, self.state.step, record)
                self.raw.train()
        if checkpoint:
            # the `best` file names the saved checkpoint with the lowest validation loss
            saved = self.state.best_saved_val_loss
            is_best = val is not None and val < (saved if saved is not None else math.inf)
            if is_best:
                self.state.best_saved_val_loss = val
            self.last_ckpt = self.save(self.state.step, time.perf_counter() - self.t_start, is_best=is_best)
        self.overhead = time.perf_counter() - t_eval

    # ------------------------------------------------------------------ the loop
    def _micro_batches(self):
        import torch

        cfg = self.cfg
        batches = [self.task.batch(self.state.step * cfg.grad_accum + m) for m in range(cfg.grad_accum)]
        counts = torch.tensor([float(sum(self.task.count(b) for b in batches)),
                               float(sum(self.task.tokens(b) for b in batches))], device=self.device)  # fmt: skip
        self.ctx.all_reduce(counts)  # on the run's device: NCCL reduces only GPU tensors
        return batches, counts[0].item(), int(counts[1].item())

    def _train_step(self) -> tuple[float, bool, bool, int, float]:
        """One optimiser step; returns (mean loss per loss-token, interrupted, time up, tokens, seconds)."""
        import torch

        from ownlm.train.device import is_oom

        cfg, model = self.cfg, self.wrapped
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        try:
            batches, n_loss, n_tokens = self._micro_batches()
            scale = self.world / max(n_loss, 1.0)  # DDP averages gradients over processes: undo that
            for m, b in enumerate(batches):
                b = self.ctx.to_device(b)
                last = m == len(batches) - 1
                ddp = self.world > 1 and not self.fsdp
                no_sync = model.no_sync() if ddp and not last else contextlib.nullcontext()
                if self.fsdp:  # reduce-scatter the gradients once, after the step's last micro-batch
                    self.raw.set_requires_gradient_sync(last)
                with no_sync, self.ctx.autocast():
                    loss = self.task.loss(model, b)
                loss_sum += loss.detach().float()
                with no_sync:
                    self.scaler.scale(loss * scale).backward()
        except Exception as e:
            if is_oom(e):
                raise UserError(
                    f"out of memory on {self.device} (micro-batch of {cfg.batch_size}): lower --batch-size (raise "
                    "--grad-accum to keep the tokens per step), lower the context length, or use a smaller model"
                ) from None
            raise
        # One collective per step, so every process takes the same decisions: loss, Ctrl-C, time up.
        now = time.perf_counter()
        time_up = bool(self.budget_s) and now - self.t_start + (now - t0) + self.overhead >= self.budget_s
        flags = torch.tensor([0.0, float(self.stop_flag["n"] > 0), float(time_up)], device=self.device)
        flags[0] = loss_sum
        self.ctx.all_reduce(flags)
        step_loss = flags[0].item() / max(n_loss, 1.0)
        if not math.isfinite(step_loss):
            raise Stop(step_loss)
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.raw.parameters() if p.requires_grad], cfg.grad_clip
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return step_loss, flags[1].item() > 0, flags[2].item() > 0, n_tokens, time.perf_counter() - t0

    def _run(self) -> dict:
        import torch
        from tqdm import tqdm

        from ownlm.train import checkpoint as ckpt

        cfg = self.cfg
        self.stop_flag = {"n": 0}

        def on_signal(signum, frame):
            self.stop_flag["n"] += 1
            if self.stop_flag["n"] > 1:
                raise KeyboardInterrupt
            self.log(
                "stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)"
            )

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, on_signal)
        # Seed (or restore) the generators last, so that nothing in the set-up above shifts them.
        if self.resume:
            ranks = self.state.rng_ranks or []
            ckpt.set_rng_state(ranks[self.rank] if len(ranks) == self.world else self.state.rng)
        else:
            torch.manual_seed(cfg.seed + self.rank)
        self.t_start = time.perf_counter() - self.state.elapsed_s if self.resume else self.t_begin
        self.state.setup_s = self.state.setup_s or time.perf_counter() - self.t_start
        tty = sys.stderr.isatty()
        show_bar = cfg.progress and self.master and tty
        bar = tqdm(total=self.estimated_steps(0.0), initial=self.state.step, unit="step", desc="train",
                   disable=not show_bar, dynamic_ncols=True)  # fmt: skip
        line_every = cfg.log_seconds if cfg.progress and self.master and not tty else None
        self.wrapped.train()
        self.last_ckpt = self.resume[0] if self.resume else None
        self.overhead, self.last_plot, self.val_loss = 0.0, -math.inf, None
        last_line = time.perf_counter()
        status, self.stopped_early = "done", False
        try:
            if self.eval_at_start and not self.resume:
                self.eval_and_save(checkpoint=False)
            stop = False
            while not stop:
                elapsed = time.perf_counter() - self.t_start
                if self._budget_spent(elapsed):
                    break
                lr = self.lr_at(elapsed)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                step_loss, interrupted, time_up, n_tokens, seconds = self._train_step()
                if self.fsdp and self.state.step == self.start_step:  # the shards, once AdamW holds state
                    from ownlm.train.fsdp import shard_report

                    line = shard_report(self.raw, self.optimizer)
                    if self.master:
                        self.log(line)
                self.state.step += 1
                self.state.tokens_seen += n_tokens
                w = self.state.window
                w["loss"] += step_loss
                w["steps"] += 1
                w["tokens"] += n_tokens
                w["time"] += seconds
                w["lr"] = lr
                tok_s = w["tokens"] / max(w["time"], 1e-9)
                elapsed = time.perf_counter() - self.t_start
                total = self.estimated_steps(elapsed)
                if total:
                    bar.total = max(total, self.state.step)
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if line_every is not None and time.perf_counter() - last_line >= line_every:
                    last_line = time.perf_counter()
                    self.log(self._progress_line(step_loss, tok_s, elapsed, total))
                stop = interrupted or time_up
                if interrupted:
                    status = "interrupted"
                at_end = stop or self._budget_spent(elapsed)
                ck_every = cfg.checkpoint_interval
                if self.eval_due(at_end, elapsed):
                    saved = at_end or not ck_every or self.state.step % ck_every == 0
                    self.eval_and_save(saved, final=at_end)
                    why = self._stop_reason()
                    if not at_end and why:  # early stopping: end here, with a checkpoint
                        if not saved:
                            self.last_ckpt = self.save(self.state.step, time.perf_counter() - self.t_start)
                        if self.master:
                            self.metrics.plot()
                            self.log(f"stopping early at step {self.state.step}: {why}")
                        at_end = self.stopped_early = True
                elif ck_every and self.state.step % ck_every == 0:
                    self.last_ckpt = self.save(self.state.step, time.perf_counter() - self.t_start)
                stop = stop or at_end
        except Stop as e:
            where = (
                f"the last good checkpoint is {self.last_ckpt}"
                if self.last_ckpt
                else "no checkpoint had been saved yet"
            )
            raise UserError(
                f"loss became {e.args[0]} at step {self.state.step + 1}: training stopped without saving the bad step; "
                f"{where}. Lower --lr, keep --grad-clip on, or try --dtype fp32"
            ) from None
        finally:
            bar.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
        if status == "interrupted" and self.master:
            self.log(f"interrupted at step {self.state.step}: saved {self.last_ckpt}; continue with --resume")
        return {"status": status, "step": self.state.step, "val_loss": self.val_loss, "best_val_loss":
                self.state.best_val_loss, "checkpoint": str(self.last_ckpt),
                "best_checkpoint": self._best_checkpoint(), "best_saved_val_loss": self.state.best_saved_val_loss, "dtype": self.state.dtype, "stopped_early": self.stopped_early}  # fmt: skip

    def _stop_reason(self) -> str | None:
        """Why the run ends early after this evaluation (``patience``, or the task's own rule), or None."""
        if self.patience and self.state.evals_since_best >= self.patience:
            return f"the validation loss has not improved for {self.patience} evaluations"
        return "the task asked to stop" if self.task.should_stop() else None

    def _budget_spent(self, elapsed: float) -> bool:
        if self.max_iters and self.state.step >= self.max_iters:
            return True
        if self.cfg.max_tokens and self.state.tokens_seen >= self.cfg.max_tokens:
            return True
        return (
            False  # a time budget ends through the per-step collective (time_up), the same on every process
        )

    def _progress_line(self, loss: float, tok_s: float, elapsed: float, total: int | None) -> str:
        p = self.progress(elapsed)
        eta = ""
        if p > 0:
            left = (elapsed - self.state.setup_s) * (1 - p) / p
            eta = f", eta {int(left // 60)}m{int(left % 60):02d}s"
        of = f"/~{total}" if total else ""
        return f"step {self.state.step}{of} ({100 * p:.0f}%): loss {loss:.4f}, {tok_s:,.0f} tok/s{eta}"
