"""Training checkpoints: what a step folder adds to a model folder so a run continues exactly, in safetensors +
JSON (no pickle). The folder itself, its pointers and ``state.json`` belong to ``ownlm.model.run.RunFolder``.

    RUN/step_000500/
      model.safetensors, config.json, tokenizer.json   the model folder (``ownlm.model.checkpoint.save_model``)
      optimizer.safetensors                             AdamW moments, keyed "<param index>.<name>"
      optimizer.json                                    param groups, non-tensor state, loss-scaler state
      state.json                                        ``RunState``: step, tokens seen, data position, RNG
                                                        states, best val loss, the run's config
    RUN/latest                                          "step_000500", written last
"""

from __future__ import annotations

import base64
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import read_json, write_json
from ownlm.model.checkpoint import save_model
from ownlm.model.run import RunFolder, RunState


def _optimizer_files(optimizer) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-safe metadata."""
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> dict:
    """The generators a training step draws from (dropout), as base64 strings."""
    import torch

    enc = lambda t: base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")  # noqa: E731
    out = {"torch": enc(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [enc(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(states: dict) -> None:
    import numpy as np
    import torch

    dec = lambda s: torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())  # noqa: E731
    if "torch" in states:
        torch.set_rng_state(dec(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([dec(s) for s in states["cuda"]])


def save_checkpoint(run: RunFolder, step: int, model, optimizer, state: RunState, tokenizer=None,
                    scaler=None, keep: int = 2, extra_files=None, best: bool = False,
                    model_state=None) -> Path:  # fmt: skip
    """Write step folder ``step`` of ``run`` (model, optimiser, ``state`` with the RNG states added) and point
    ``latest`` at it (``RunFolder.write_step``: atomic, pruned to ``keep``). ``best=True`` marks this step as
    the lowest validation loss so far. ``extra_files(folder)`` adds a task's own files (chat template,
    labels) before the folder is renamed into place. ``model_state``: the full state dict of a sharded model
    (``ownlm.train.fsdp``). Returns the step folder."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        save_model(tmp, model, tokenizer=tokenizer, extra={"step": step}, state=model_state)
        if extra_files is not None:
            extra_files(tmp)
        tensors, meta = _optimizer_files(optimizer)
        if scaler is not None and scaler.is_enabled():
            meta["scaler"] = scaler.state_dict()
        save_file(tensors, tmp / "optimizer.safetensors", metadata={"format": "ownlm-optimizer"})
        write_json(tmp / "optimizer.json", meta)
        state.step, state.rng = step, rng_state()
        run.write_state(tmp, state)

    return run.write_step(step, fill, best=best, keep=keep)


def load_optimizer(folder, optimizer, scaler=None) -> None:
    """Restore optimizer (and loss scaler) state saved by ``save_checkpoint`` in ``folder``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        tensors = load_file(folder / "optimizer.safetensors")
    except (OSError, Exception) as e:  # safetensors raises its own error type for damaged files
        raise UserError(f"{folder / 'optimizer.safetensors'}: cannot read optimizer state ({e})") from None
    meta = read_json(folder / "optimizer.json", what="optimizer state")
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, meta))
    except (ValueError, KeyError) as e:
        raise UserError(f"{folder}: optimizer state does not fit this model ({e})") from None
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(meta["scaler"])
