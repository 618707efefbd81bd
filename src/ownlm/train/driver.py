"""The one training driver: what every training command does around the Trainer, once.

    def main(cfg):                                       # ownlm pretrain / finetune sft|classify|dpo
        check(cfg)                                       # bad flags and bad data stop before anything is written
        return run_training(cfg, lambda run: prepare(cfg, run), inputs=[cfg.base, *cfg.data])

``run_training`` claims the run folder (``--resume`` or a fresh one, locked), sets up DDP, calls the task's
``prepare(run)`` (model, task, what to print and keep), resolves the budget (epochs -> steps, and the one
default when none is given), writes ``config.json`` and ``data.json``, runs the Trainer, lets the task finish
(its report) and returns the exit code: 0 done, 130 interrupted (``--resume`` continues it).

The budget. ``--max-iters``, ``--max-tokens``, ``--max-minutes`` and ``--epochs`` (passes over the training
data; the task says how many steps one pass takes) may be combined, the first reached ends the run. A run
given none of them trains ``DEFAULT_EPOCHS`` passes, whatever the command.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ownlm.config import save_config, to_dict
from ownlm.io import write_json
from ownlm.model.run import RunFolder, RunState
from ownlm.train.device import ddp_cleanup, ddp_info, ddp_setup, pick_device
from ownlm.train.trainer import Task, Trainer

DEFAULT_EPOCHS = 2.0  # the budget of a run given none: two passes over its training data, for every command


@dataclass
class Run:
    """What a task's ``prepare`` is told: where the run is, whether it resumes, which process this is."""

    cfg: object  # the command's config (with its ``train`` section)
    out: Path
    resume: tuple[Path, RunState] | None
    rank: int
    world: int
    device: object

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def folder(self) -> Path | None:
        """The step folder a resumed run continues from."""
        return self.resume[0] if self.resume else None

    @property
    def state(self) -> RunState | None:
        return self.resume[1] if self.resume else None


@dataclass
class Prepared:
    """What a task's ``prepare`` returns to the driver."""

    model: object
    task: Task
    tokenizer: object = None
    steps_per_epoch: int | None = None  # optimiser steps in one pass over the training data
    data: dict | None = None  # written to RUN/data.json (process 0)
    announce: Callable[[], str] | None = None  # one line printed once the budget is known (process 0)
    finish: Callable[[dict], None] | None = None  # process 0, after a run that is done: reports, samples
    run_config: dict | None = None  # what state.json records as the run's config (default: the config)
    eval_at_start: bool = False  # an evaluation before the first step (fine-tuning: the starting point)
    time_keeps_epochs: bool = False  # a time budget alone still ends the run after the default epochs
    flops_seq_len: int | None = None
    patience: int = 0  # stop when validation loss has not improved for this many evaluations (0: never)
    extra: dict = field(default_factory=dict)


def resolve_budget(tc, steps_per_epoch: int | None, time_keeps_epochs: bool = False) -> None:
    """Turn ``--epochs`` into a step limit (the lower of it and ``--max-iters``) and give a run without any
    budget ``DEFAULT_EPOCHS`` passes, in place. ``time_keeps_epochs``: a ``--max-minutes`` budget alone keeps
    that default as a cap (fine-tuning: more passes over a small set only overfit).

    >>> from ownlm.train.config import TrainingConfig
    >>> tc = TrainingConfig(); resolve_budget(tc, 30); tc.max_iters
    60
    >>> tc = TrainingConfig(epochs=1.5, max_iters=20); resolve_budget(tc, 30); tc.max_iters
    20
    >>> tc = TrainingConfig(max_minutes=5.0); resolve_budget(tc, 30); tc.max_iters
    0
    """
    timed = tc.max_minutes and not time_keeps_epochs
    epochs = tc.epochs or (0.0 if (tc.max_iters or tc.max_tokens or timed) else DEFAULT_EPOCHS)
    if not epochs:
        return
    steps = max(1, math.ceil(epochs * max(1, steps_per_epoch or 1)))
    tc.max_iters = min(tc.max_iters, steps) if tc.max_iters else steps


def run_training(cfg, prepare: Callable[[Run], Prepared], inputs=()) -> int:
    """Run one training command (see the module docstring); returns its exit code."""
    tc = cfg.train
    tc.start()
    out = Path(cfg.out)
    rank, _, world = ddp_info()
    with RunFolder(out).claim(cfg.resume, master=rank == 0, inputs=list(inputs)) as resume:
        device = pick_device(tc.device)
        if world > 1:
            ddp_setup(device)
        ended_well = False
        try:
            run = Run(cfg, out, resume, rank, world, device)
            job = prepare(run)
            resolve_budget(tc, job.steps_per_epoch, job.time_keeps_epochs)
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                if not resume:
                    save_config(cfg, out / "config.json")
                if job.data is not None:
                    write_json(out / "data.json", job.data)
                if job.announce is not None:
                    print(job.announce())
            t0 = time.perf_counter()
            summary = Trainer(job.model, tc, job.task, out, tokenizer=job.tokenizer, resume=resume,
                              run_config=job.run_config if job.run_config is not None else to_dict(cfg),
                              eval_at_start=job.eval_at_start, flops_seq_len=job.flops_seq_len,
                              patience=job.patience).fit()  # fmt: skip
            summary["seconds"] = time.perf_counter() - t0  # this command's training time (set-up included)
            ended_well = True
        finally:
            if world > 1:
                ddp_cleanup(barrier=ended_well)
        if rank == 0 and summary["status"] == "done":  # still holding the run's lock: reports may write there
            if job.finish is not None:
                job.finish(summary)
            else:
                vl = f", val loss {summary['val_loss']:.4f}" if summary["val_loss"] is not None else ""
                print(f"done: step {summary['step']}{vl}; checkpoint {summary['checkpoint']}")
    return 130 if summary["status"] == "interrupted" else 0
