"""What every fine-tuning command shares: loading the base model and the cheap ways to train (LoRA adapters
or the last blocks only).

    model, tok, folder = load_base("runs/base", None)
    adapt(model, cfg)       # cfg has lora_rank, lora_alpha, lora_targets, lora_dropout, train_layers

``ownlm finetune sft`` and ``ownlm finetune classify`` both use these, so a flag means the same thing in each.
"""

from __future__ import annotations

from pathlib import Path

from ownlm.errors import UserError


def load_base(base: str, resume_folder: Path | None, kinds=("lm", "lm+lora")):
    """(model, tokenizer, folder) of the base (or of the checkpoint a resumed run continues). A fresh run merges
    LoRA adapters the base may carry; a resumed one keeps its own adapters separate, to train on."""
    from ownlm.model.checkpoint import load_model, resolve_checkpoint

    folder = resolve_checkpoint(resume_folder or base)
    model, tok, _ = load_model(folder, merge_lora=resume_folder is None, kinds=kinds)
    if tok is None:
        raise UserError(
            f"{folder}: the model has no tokenizer.json; fine-tuning needs the tokenizer it was trained with"
        )
    return model, tok, folder


def check_adapt(cfg) -> None:
    """The LoRA and partial-training flags: a ``UserError`` for values no run can use."""
    if cfg.lora_rank < 0:
        raise UserError(f"--lora-rank must be >= 0, got {cfg.lora_rank}")
    if cfg.lora_rank and cfg.train_layers != "all":
        raise UserError(
            "give either --lora-rank (adapters) or --train-layers (partial fine-tuning), not both"
        )


def adapt(model, cfg, resume: bool = False) -> None:
    """LoRA adapters, or freezing all but the last blocks, as the flags ask. A resumed run's adapters come with
    its checkpoint (and freeze the base as they load); its partial training is frozen again here."""
    if cfg.lora_rank and resume:
        return
    if cfg.lora_rank:
        from ownlm.finetune.lora import LoRAConfig, apply_lora

        apply_lora(model, LoRAConfig(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=list(cfg.lora_targets),
                                     dropout=cfg.lora_dropout))  # fmt: skip
    elif cfg.train_layers != "all":
        from ownlm.finetune.lora import freeze_for_train_layers

        freeze_for_train_layers(model, cfg.train_layers)
