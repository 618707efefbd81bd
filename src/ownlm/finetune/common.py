"""What every fine-tuning command shares: loading the base model and the cheap ways to train (LoRA adapters
or the last blocks only).

    model, tok, folder = load_base("runs/base", None)
    adapt_model(model, cfg.adapt)   # ownlm.model.lora: the `adapt` section (LoRA or the last blocks)
    store_frozen(model, "bf16")   # the frozen weights at half the memory (training runs under bf16 autocast)

``ownlm finetune sft`` and ``ownlm finetune classify`` both use these, so a flag means the same thing in each.
"""

from __future__ import annotations

from pathlib import Path

from ownlm.errors import UserError
from ownlm.model.checkpoint import load_model, resolve_checkpoint
from ownlm.model.resize import fit_vocab


def load_base(base: str, resume_folder: Path | None, kinds=("lm", "lm+lora"), prepare=None):
    """(model, tokenizer, folder) of the base (or of the checkpoint a resumed run continues). A fresh run merges
    LoRA adapters the base may carry; a resumed one keeps its own adapters separate, to train on. ``prepare``:
    see ``load_model`` (``frozen_layout`` reads a frozen base straight into bf16)."""
    folder = resolve_checkpoint(resume_folder or base)
    model, tok, _ = load_model(folder, merge_lora=resume_folder is None, kinds=kinds, prepare=prepare)
    if tok is None:
        raise UserError(
            f"{folder}: the model has no tokenizer.json; fine-tuning needs the tokenizer it was trained with"
        )
    return model, tok, folder


def match_vocab(model, base_n_vocab: int, tokenizer, resume_folder: Path | None) -> None:
    """The embedding and the tokenizer agree: a fresh run grows the base's rows for the special tokens its chat
    template added (``model.resize.fit_vocab``); a resumed checkpoint must already have them."""
    if resume_folder is None:
        fit_vocab(model, base_n_vocab, tokenizer.n_vocab)
    elif tokenizer.n_vocab > model.config.vocab_size:
        raise UserError(f"{resume_folder}: the checkpoint's tokenizer does not match its model")


def store_frozen(model, dtype: str) -> int:
    """Keep the frozen ``nn.Linear`` weights of ``model`` in ``dtype`` ("bf16", "int8"; "fp32" does nothing);
    return the bytes saved. bf16 casts weights and biases; int8 stores each weight as int8 with one absmax scale per
    output row (``model.quantize``; biases stay as they are), dequantized a layer at a time in the forward and
    backward passes. Trainable tensors — LoRA adapters, the last blocks of partial training — stay fp32, and so do
    their optimizer moments, as QLoRA keeps its adapters in full precision over a 4-bit base (Dettmers et al. 2023).
    The matmuls need bf16 autocast (``--dtype bf16``); a tied output head shares the token embedding's weight and
    stays fp32 with it. Checkpoints store these weights as they are (int8 with ``NAME.weight_scale``); loading
    turns them back into the model's dtype."""
    import torch
    import torch.nn as nn

    from ownlm.model.quantize import FrozenInt8Linear, quantize_frozen_linear

    if dtype == "fp32":
        return 0
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    frozen = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and id(m.weight) not in embeddings and not m.weight.requires_grad]  # fmt: skip
    saved = 0
    if dtype == "int8":
        for name, m in frozen:
            saved += quantize_frozen_linear(m)
            if type(m) is nn.Linear:  # a layer without adapters: one whose forward reads the int8 weight
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, FrozenInt8Linear.of(m))
        return saved
    target = {"bf16": torch.bfloat16}[dtype]
    for _, m in frozen:
        for name in ("weight", "bias"):
            p = getattr(m, name)
            if p is None or p.requires_grad or p.dtype == target:
                continue
            saved += p.numel() * (p.element_size() - torch.empty((), dtype=target).element_size())
            p.data = p.data.to(target)
    return saved


def frozen_layout(adapt):
    """A ``prepare`` hook for ``load_model``: give the still-empty (meta) model the dtypes (and int8 scales) that
    ``adapt_model`` then ``store_frozen(model, adapt.base_dtype)`` would leave its weights in, so each frozen weight
    is read from the file straight into bf16 or int8 — the base never exists in fp32 beside its smaller copy. None
    for ``--base-dtype fp32``."""
    dtype = adapt.base_dtype
    if dtype == "fp32":
        return None

    def prepare(model) -> None:
        import copy

        import torch

        from ownlm.model.lora import adapt_model

        probe = copy.deepcopy(model)  # on the meta device: no memory, and the real model stays unadapted
        adapt_model(probe, adapt)
        store_frozen(probe, dtype)
        planned = probe.state_dict(keep_vars=True)
        params = dict(model.named_parameters())
        for name, t in planned.items():
            # int8 cannot require gradients: a new, frozen tensor
            if name in params and t.dtype == torch.int8:
                owner, _, attr = name.rpartition(".")
                setattr(model.get_submodule(owner), attr, torch.nn.Parameter(t.detach(), requires_grad=False))
            elif name in params and params[name].dtype != t.dtype:
                params[name].data = params[name].data.to(t.dtype)
            elif name.endswith(".weight_scale") and name not in params:  # an int8 weight's scales
                owner = model.get_submodule(name.rpartition(".")[0])
                owner.register_buffer("weight_scale", t)  # still on the meta device: load_model allocates it

    return prepare


def frozen_autocast(model):
    """The autocast that a model with bf16 or int8 frozen weights (``store_frozen``) needs outside training (answers,
    evaluation); nothing for an fp32 model."""
    import contextlib

    import torch

    if not any(p.dtype in (torch.bfloat16, torch.int8) for p in model.parameters()):
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
