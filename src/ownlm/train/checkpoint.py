"""Training checkpoints: everything needed to continue a run exactly, in safetensors + JSON (no pickle).

    RUN/step_000500/
      model.safetensors, config.json, tokenizer.json   the model folder (``ownlm.model.checkpoint.save_model``)
      optimizer.safetensors                             AdamW moments, keyed "<param index>.<name>"
      optimizer.json                                    param groups, non-tensor state, loss-scaler state
      state.json                                        step, tokens seen, data position, RNG states, best val
                                                        loss, the run's config
    RUN/latest                                          "step_000500", written last

A step folder is assembled under a temp name and renamed into place; ``latest`` is replaced only after that, so
a run killed at any instant (even ``kill -9``) resumes from a complete checkpoint.

>>> save_checkpoint("run", 500, model, optimizer, {"tokens_seen": 1_000_000})  # doctest: +SKIP
>>> state = load_checkpoint("run", model, optimizer)                           # doctest: +SKIP
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import read_json, write_json, write_text

STATE = "state.json"


def step_name(step: int) -> str:
    return f"step_{step:06d}"


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


def save_checkpoint(
    run_dir,
    step: int,
    model,
    optimizer,
    state: dict,
    tokenizer=None,
    scaler=None,
    keep: int = 2,
    kind: str = "lm",
    extra_files=None,
    best: bool = False,
    model_state=None,
) -> Path:
    """Write ``run_dir/step_NNNNNN`` and then ``run_dir/latest``; keep the newest ``keep`` step folders
    (0 keeps all) and the one the ``best`` file names. ``best=True`` marks this step as the lowest validation loss so
    far (``run_dir/best`` names it). ``kind`` says what the model is (see ``ownlm.model.checkpoint``); ``extra_files(folder)``
    adds a task's own files (chat template, labels) before the folder is renamed into place. ``model_state``: the
    full state dict of a sharded model (``ownlm.train.fsdp``). Returns the step folder."""
    from safetensors.torch import save_file

    from ownlm.model.checkpoint import save_model

    run_dir = Path(run_dir)
    final = run_dir / step_name(step)
    tmp = run_dir / f".{step_name(step)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(tmp, model, tokenizer=tokenizer, extra={"step": step}, kind=kind, state=model_state)
        if extra_files is not None:
            extra_files(tmp)
        tensors, meta = _optimizer_files(optimizer)
        if scaler is not None and scaler.is_enabled():
            meta["scaler"] = scaler.state_dict()
        save_file(tensors, tmp / "optimizer.safetensors", metadata={"format": "ownlm-optimizer"})
        write_json(tmp / "optimizer.json", meta)
        write_json(tmp / STATE, {"format": "ownlm-train-state", "version": 1, "step": step, **state,
                                 "rng": rng_state()})  # fmt: skip
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (after a resume): move the old one aside first
            old = run_dir / f".{step_name(step)}.old-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (
        best
    ):  # before `latest`: a kill between the two leaves the state.json's best loss and its folder in step
        write_text(run_dir / "best", step_name(step) + "\n")
    if (run_dir / "last").is_file():  # `latest` was pointed at the best model; this step is the newest now
        write_text(run_dir / "last", step_name(step) + "\n")
    write_text(run_dir / "latest", step_name(step) + "\n")
    (run_dir / "last").unlink(missing_ok=True)
    kept = {final, run_dir / read_pointer(run_dir / "best")} if (run_dir / "best").is_file() else {final}
    if keep > 0:
        steps = sorted(p for p in run_dir.glob("step_*") if p.is_dir() and p not in kept)
        for p in steps[: max(0, len(steps) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def read_pointer(path: Path) -> str:
    """The step folder's name a ``latest`` or ``best`` file holds."""
    return path.read_text(encoding="utf-8").strip()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_state(path) -> tuple[Path, dict]:
    """``(step folder, state.json)`` of a run folder's newest checkpoint or of a step folder. A run whose
    ``latest`` was pointed back at its best model (``finetune classify --restore-best``) names its newest step
    in a ``last`` file: training continues from there."""
    from ownlm.model.checkpoint import resolve_checkpoint

    last = Path(path) / "last"
    folder = Path(path) / read_pointer(last) if last.is_file() else resolve_checkpoint(path)
    if not (folder / STATE).is_file():
        raise UserError(f"{folder}: a model without training state ({STATE}); it cannot be resumed")
    state = read_json(folder / STATE, what="training state")
    if state.get("format") != "ownlm-train-state" or not isinstance(state.get("version"), int):
        raise UserError(f"{folder / STATE}: not an ownlm training state")
    if state["version"] > 1:
        raise UserError(
            f"{folder / STATE}: training state version {state['version']} is newer than this ownlm"
        )
    return folder, state


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
