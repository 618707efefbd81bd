"""Building the imported model: outside tensors, one at a time, into a ``GPT`` made without memory of its own."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ownlm.errors import UserError
from ownlm.formats import tensor_map
from ownlm.model.gpt import GPT, GPTConfig


def build_model(cfg: GPTConfig, arch: str, fmt: str, get: Callable, names: set[str], where: str,
                described_by: str) -> GPT:  # fmt: skip
    """A ``GPT`` of ``cfg`` whose parameters are the outside tensors (``get(name)``, read one at a time by the
    tensor map), each checked against the shape ``described_by`` (the metadata, config.json) gives."""
    extra = [n for n in tensor_map.unused(names, cfg, arch, fmt) if n != "rope_freqs.weight"]
    if extra:
        raise UserError(f"{where}: tensors this {arch} model does not use: {extra[:5]} (a variant ownlm does "
                        "not know; nothing was imported)")  # fmt: skip
    with torch.device("meta"):
        model = GPT(cfg)  # no memory, no random init: the weights come from the file
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    for key, w in tensor_map.from_outside(get, names, cfg, arch, fmt, where):
        if tuple(w.shape) != expected[key]:
            raise UserError(f"{where}: tensor for {key} has shape {list(w.shape)}, {described_by} describes "
                            f"{list(expected[key])}")  # fmt: skip
        state[key] = w
    model.load_state_dict(state, assign=True, strict=False)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    model.reset_buffers()
    return model.eval()
