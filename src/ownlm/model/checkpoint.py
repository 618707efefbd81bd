"""A model folder: ``model.safetensors`` (weights) + ``config.json`` (format, version, model config) and,
when there is one, the tokenizer (``tokenizer.json``). No pickle anywhere.

    step_000500/
      model.safetensors   raw module weights; a tied output head is stored once (as transformer.wte.weight)
      config.json         {"format": "ownlm-model", "version": 1, "model": {...GPTConfig...}, "extra": {...}}
      tokenizer.json

A run folder holds step folders and a ``latest`` text file naming the newest one; ``resolve_checkpoint``
accepts either.

>>> save_model("out/model", model, tokenizer)  # doctest: +SKIP
>>> model, tokenizer, cfg = load_model("out/run")
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import read_json, write_json

FORMAT = "ownlm-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def unwrap(model):
    """The raw module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def save_model(directory, model, tokenizer=None, extra: dict | None = None) -> Path:
    """Write the model (and tokenizer) to ``directory``, each file atomically; return the folder."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as transformer.wte.weight
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FORMAT})
        os.replace(tmp, directory / WEIGHTS)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if tokenizer is not None:
        tokenizer.save(directory)
    write_json(directory / CONFIG, {"format": FORMAT, "version": VERSION, "model": model.config.to_dict(),
                                    "extra": extra or {}})  # fmt: skip
    return directory


def resolve_checkpoint(path) -> Path:
    """A model folder itself, or a run folder's newest step (named by its ``latest`` file)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found (give a run folder or a folder with {WEIGHTS})")
    if not path.is_dir():
        raise UserError(f"{path}: expected a run folder or a checkpoint folder, found a file")
    if (path / WEIGHTS).is_file():
        return path
    latest = path / "latest"
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        step = path / name
        if not name or not (step / WEIGHTS).is_file():
            raise UserError(f"{latest} names '{name}', but {step / WEIGHTS} does not exist")
        return step
    raise UserError(f"{path}: neither a checkpoint ({WEIGHTS}) nor a run folder (a 'latest' file) — "
                    "was training started with --out here?")  # fmt: skip


def read_checkpoint_config(path) -> dict:
    """``config.json`` of a checkpoint, with its format and version checked."""
    folder = resolve_checkpoint(path)
    meta = read_json(folder / CONFIG, what="checkpoint config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise UserError(f"{folder / CONFIG}: not an ownlm model config (expected format '{FORMAT}')")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{folder / CONFIG}: checkpoint format version {version} is newer than this ownlm "
                        f"understands (<= {VERSION}); upgrade ownlm")  # fmt: skip
    return meta


def load_model(path, device="cpu", dtype=None):
    """``(model, tokenizer or None, GPTConfig)`` from a checkpoint or run folder, in eval mode."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ownlm.model.gpt import GPT, GPTConfig

    folder = resolve_checkpoint(path)
    meta = read_checkpoint_config(folder)
    cfg = GPTConfig.from_dict(meta["model"])
    try:
        state = load_file(folder / WEIGHTS, device=str(device))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{folder / WEIGHTS}: cannot read weights ({e})") from None
    with torch.device("meta"):
        model = GPT(cfg)  # no memory, no random init: the weights come from the file
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight  # to_empty un-ties; tie again
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise UserError(f"{folder / WEIGHTS}: weights do not match config.json "
                        f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})")  # fmt: skip
    model.reset_buffers()
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        from ownlm.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(folder)
    return model, tokenizer, cfg
