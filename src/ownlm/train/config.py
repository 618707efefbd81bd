"""The settings sections shared by every command that trains: ``TrainingConfig`` (budget, batches, optimiser,
schedule, evaluation, checkpoints, machine) and ``ModelShape`` (the size and block of a new model).

``ownlm pretrain``, ``ownlm finetune sft|classify`` and ``ownlm build`` each hold a ``train`` section (and
``pretrain``/``build`` a ``model`` section) instead of copying these fields, so a flag means the same thing
everywhere. Flags stay flat (``--max-iters``); ``config.json`` nests them; a TOML file may use ``[train]``.

Budgets mean what they say. Give one of ``--max-iters``, ``--max-tokens`` or ``--max-minutes``; warm-up,
decay and the evaluation cadence follow it: by default warm-up is the first ``warmup_frac`` of the run and
there are ``evals`` evaluations spread over it (the last one closes the run), whether the run is measured in
steps or in minutes (a time budget's step count is estimated from the first steps' speed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ownlm.config import opt, validate
from ownlm.errors import UserError
from ownlm.runtime.device import DTYPE


@dataclass(kw_only=True)
class TrainingConfig:
    """training: budget, batches, optimiser, schedule, evaluation, checkpoints, machine"""

    # budget
    max_iters: int = opt(0, help="optimiser steps (0: no step limit)")
    epochs: float = opt(
        0.0, help="passes over the training data (0: no limit; 2 when no budget is given at all)"
    )
    max_tokens: int = opt(0, help="stop after this many training tokens (0: no limit)")
    max_minutes: float = opt(
        0.0, help="time budget in minutes, set-up included; the schedule is fitted to it"
    )
    # batches
    batch_size: int = opt(16, help="sequences per micro-batch per process", bounds="[1, inf)")
    grad_accum: int = opt(1, help="micro-batches per optimiser step", bounds="[1, inf)")
    # optimiser and schedule
    lr: float = opt(2e-3, help="peak learning rate")
    min_lr: float = opt(2e-4, help="learning rate at the end of the decay")
    warmup_iters: int = opt(
        -1, help="linear warm-up steps (-1: the first --warmup-frac of the run)", bounds="[-1, inf)"
    )
    warmup_frac: float = opt(
        0.05, help="share of the run spent warming up when --warmup-iters is -1", bounds="[0, 1)"
    )
    schedule: Literal["cosine", "wsd", "constant"] = opt(
        "cosine", help="after warm-up: cosine decay, wsd (hold, then decay linearly at the end), or constant"
    )
    decay_frac: float = opt(0.2, help="wsd: share of the run spent decaying", bounds="[0, 1)")
    weight_decay: float = opt(0.1, help="AdamW weight decay (matrices only)")
    beta1: float = opt(0.9, help="AdamW beta1", bounds="[0, 1)")
    beta2: float = opt(0.99, help="AdamW beta2", bounds="[0, 1)")
    grad_clip: float = opt(1.0, help="clip the gradient norm to this (0: off)")
    # evaluation and checkpoints
    eval_interval: int = opt(0, help="evaluate every N steps (0: --evals times, spread over the budget)")
    evals: int = opt(
        10,
        help="evaluations per run when --eval-interval is 0 (the last one closes the run)",
        bounds="[1, inf)",
    )
    eval_iters: int = opt(20, help="validation batches per evaluation")
    checkpoint_interval: int = opt(0, help="checkpoint every N steps (0: at every evaluation)")
    keep_checkpoints: int = opt(
        2,
        help="newest step folders to keep (0: all); the lowest-validation-loss one (the run's `best` file) stays too",
    )
    # machine
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", help="where to train")
    dtype: DTYPE = opt(
        "auto",
        help="precision: auto is bf16 on GPUs with bf16 (else fp16) and on CPUs with AMX/AVX512-BF16, else fp32",
    )
    strategy: Literal["ddp", "fsdp"] = opt(
        "ddp",
        help="with several processes (torchrun): ddp keeps a whole model in each; fsdp shards weights, gradients "
        "and optimizer state over them (FSDP2, one block at a time)",
    )
    compile: bool = opt(False, help="torch.compile the model (faster steps after a slow first one)")
    checkpoint_activations: bool = opt(
        False, help="recompute each block's activations in the backward pass: less memory, ~30% more compute"
    )
    memory_mode: Literal["auto", "lean", "fast"] = opt(
        "auto",
        help="CPU allocator (glibc): lean gives freed memory back at once (least memory; every large tensor is then "
        "fresh pages, about half the speed), fast keeps freed blocks for the next step; auto: lean with "
        "--checkpoint-activations, else fast",
    )
    threads: int = opt(0, help="CPU threads for PyTorch (0: PyTorch's default)")
    seed: int = opt(1337, help="random seed (weights and batches)")
    progress: bool = opt(True, help="show a progress bar (a line every --log-seconds when not a terminal)")
    log_seconds: float = opt(
        30.0, help="when output is not a terminal: a progress line this often", bounds="(0, inf)"
    )

    @property
    def lean_memory(self) -> bool:
        """Whether CPU training gives freed memory back at once (``--memory-mode``)."""
        return self.memory_mode == "lean" or (self.memory_mode == "auto" and self.checkpoint_activations)

    def start(self) -> None:
        """What every training command does first: check the settings, then give PyTorch its thread count."""
        self.check()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

    def check(self) -> None:
        """A ``UserError`` naming the flag for values no run can use (each field's bounds)."""
        validate(self)


def fine_tuning_defaults(**values) -> TrainingConfig:
    """The ``train`` section of a command that starts from trained weights: small batches (8), a short warm-up
    (5 %), five evaluations of 20 batches; each command gives its own peak and final rate (lower than
    pretraining's) and what else it does differently.

    >>> fine_tuning_defaults(lr=1e-4, min_lr=1e-5).batch_size
    8
    """
    return TrainingConfig(**{**FINE_TUNING, **values})


FINE_TUNING = dict(batch_size=8, warmup_frac=0.05, weight_decay=0.1, evals=5, eval_iters=20)


@dataclass(kw_only=True)
class PretrainingConfig(TrainingConfig):
    """training: budget, batches, optimiser, schedule, evaluation, checkpoints, machine"""

    # Only pretraining's windows have a fixed length, so only there does a token count per step make sense
    # (fine-tuning rows vary): `finetune sft --help` does not offer it.
    batch_tokens: int = opt(0, help="tokens per optimiser step; sets --grad-accum (0: use --grad-accum)")


@dataclass(kw_only=True)
class ModelShape:
    """model: size and block of a new model (fine-tuning and --resume take the saved model)"""

    preset: str | None = opt(None, help="model size preset: tiny, mini, small, gpt2, gpt2-medium, ...")
    depth: int | None = opt(
        None, help="one size dial: n_layer = depth, n_embd = 64 * depth, 64-wide heads", bounds="[1, inf)"
    )
    n_layer: int | None = opt(None, help="transformer blocks", bounds="[1, inf)")
    n_head: int | None = opt(None, help="attention heads", bounds="[1, inf)")
    n_embd: int | None = opt(None, help="width of the residual stream", bounds="[1, inf)")
    n_kv_head: int | None = opt(
        None, help="key/value heads for grouped-query attention (default: n_head)", bounds="[1, inf)"
    )
    block_size: int | None = opt(None, help="context length in tokens", bounds="[1, inf)")
    dropout: float = opt(
        0.0, help="dropout probability (0 for short runs on plenty of data)", bounds="[0, 1)"
    )
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

    def check(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.preset and self.depth:
            raise UserError("give either --preset or --depth, not both")
