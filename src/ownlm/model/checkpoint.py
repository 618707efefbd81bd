"""A model folder: ``model.safetensors`` (weights) + ``config.json`` (format, version, model config) and,
when there is one, the tokenizer (``tokenizer.json``). No pickle anywhere.

    step_000500/
      model.safetensors   raw module weights; a tied output head is stored once (as transformer.wte.weight)
      config.json         {"format": "ownlm-model", "version": 1, "kind": "lm", "model": {...GPTConfig...},
                           "extra": {...}}
      tokenizer.json
      adapter.safetensors + adapter.json   LoRA adapters, alone (kind "lm+lora"; model.safetensors is the base)
      chat_template.json  the template a chat fine-tune was trained with (see ``ownlm.tokenizer.chat``)

``kind`` says what the folder holds: ``lm`` (a language model), ``lm+lora`` (a base language model plus LoRA
adapters, merged on loading unless asked not to), or a kind a task package registered (``ownlm.model.kinds``:
``classifier``, a language model with a classification head). Folders written before kinds existed are ``lm``.

A run folder (``ownlm.model.run``) holds step folders and a ``latest`` file naming the one to use;
``resolve_checkpoint`` accepts either.

>>> save_model("out/model", model, tokenizer)  # doctest: +SKIP
>>> model, tokenizer, cfg = load_model("out/run")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import read_json, read_safetensors, safetensors_header, write_json, write_safetensors
from ownlm.model.kinds import get as get_kind
from ownlm.model.kinds import kind_of, unwrap
from ownlm.model.run import WEIGHTS, RunFolder
from ownlm.tokenizer.bpe import Tokenizer

# torch, safetensors and the modules built on them (gpt.py, lora.py) are imported inside the functions that
# use them: the commands' config modules import this file, and `ownlm CMD --help` must not load torch.

__all__ = ["load_model", "read_checkpoint_config", "resolve_checkpoint", "save_model", "unwrap"]

FORMAT = "ownlm-model"
VERSION = 1
CONFIG = "config.json"
BUILD_RUNS = ("sft", "run")  # run folders inside an `ownlm build` folder, the one to use first


def save_model(directory, model, tokenizer=None, extra: dict | None = None, state=None) -> Path:
    """Write the model (and tokenizer) to ``directory``, each file atomically; return the folder.
    The kind comes from the module (``ownlm.model.kinds.kind_of``); a model with LoRA adapters is written as its
    base weights plus ``adapter.safetensors`` (an ``lm`` becomes kind ``lm+lora``). ``state``: the model's full state
    dict when the module holds only shards of it (FSDP)."""
    from ownlm.model.lora import base_state_dict, has_lora, save_adapter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    kind = kind_of(model)
    name = kind.name
    state = model.state_dict() if state is None else dict(state)
    if has_lora(model):
        save_adapter(directory, model)
        state = base_state_dict(model)
        name = "lm+lora" if name == "lm" else name
    if model.config.tie_embeddings:
        state.pop(kind.prefix() + "lm_head.weight", None)  # the same tensor as transformer.wte.weight
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_safetensors(directory / WEIGHTS, state, metadata={"format": FORMAT})
    if tokenizer is not None:
        tokenizer.save(directory)
    meta = {"format": FORMAT, "version": VERSION, "kind": name, "model": model.config.to_dict(),
            "extra": extra or {}}  # fmt: skip
    if kind.describe is not None:
        meta[kind.name] = kind.describe(model)
    write_json(directory / CONFIG, meta)
    return directory


def resolve_checkpoint(path) -> Path:
    """A model folder itself, or a run folder's step that ``latest`` names."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found (give a run folder or a folder with {WEIGHTS})")
    if not path.is_dir():
        raise UserError(f"{path}: expected a run folder or a checkpoint folder, found a file")
    if (path / WEIGHTS).is_file():
        return path
    if (
        path / "pipeline.json"
    ).is_file():  # an `ownlm build` folder: its newest model (fine-tuned, else pretrained)
        for name in BUILD_RUNS:
            if RunFolder(path / name).has_checkpoint():
                return resolve_checkpoint(path / name)
    return RunFolder(path).checkpoint()


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


_BLOCK_KEY = re.compile(r"\.h\.(\d+)\.")


def check_depth(weights: Path, n_layer: int) -> None:
    """The number of blocks in a safetensors file's header must be ``config.json``'s ``n_layer``: checked
    before the model is built, since building a config edited to ``n_layer: 1000000`` alone takes minutes."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(weights, "pt") as f:
            blocks = {int(m.group(1)) for k in f.keys() if (m := _BLOCK_KEY.search(k))}
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights}: cannot read weights ({e})") from None
    if blocks and len(blocks) != n_layer:
        raise UserError(f"{weights}: holds {len(blocks)} blocks, but config.json says n_layer {n_layer}: the "
                        "config and the weights do not match (was config.json edited?)")  # fmt: skip


def check_shapes(weights: Path, expected: dict[str, tuple]) -> None:
    """Compare the tensor shapes in a safetensors file's header with those ``config.json`` describes, before
    anything is allocated: a config edited to another shape (or to absurd sizes) is one clear error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(weights, "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights}: cannot read weights ({e})") from None
    for name, shape in found.items():
        if name in expected and expected[name] != shape:
            raise UserError(f"{weights}: {name} has shape {list(shape)}, but config.json describes "
                            f"{list(expected[name])}; the config and the weights do not belong together "
                            "(was config.json edited?)")  # fmt: skip


def _int8_scales(keys: set[str], dtypes: dict[str, str]) -> dict[str, str]:
    """``{weight: its scale}`` for the int8 weights stored with per-row scales (``NAME.weight`` of dtype int8
    beside ``NAME.weight_scale``: a frozen int8 base, ``ownlm.model.quantize``)."""
    return {k: k + "_scale" for k in keys if dtypes.get(k) == "I8" and k + "_scale" in keys}


def load_model(
    path, device="cpu", dtype=None, merge_lora: bool = True, kinds=("lm", "lm+lora"), prepare=None
):
    """``(model, tokenizer or None, GPTConfig)`` from a checkpoint or run folder, in eval mode.

    LoRA adapters are merged into the weights (``merge_lora=False`` keeps them separate, to train on).
    ``kinds``: what the caller can use; another kind is a ``UserError`` naming what the folder holds. A kind
    that a task package registered (``classifier``) is built by that package's ``build`` hook (import the
    package first); its config is the trunk's.

    The weights are read one tensor at a time into the model's own tensors, each cast on the way: the process
    holds the model once plus one tensor of the file, not the file's whole state dict beside the model.
    ``prepare(model)`` runs on the model while it is still on the meta device, before anything is allocated: it
    may give parameters another dtype (``ownlm.finetune.common.frozen_layout`` keeps a frozen base in bf16), and
    the file's tensors are read straight into it."""
    import torch

    from ownlm.model.gpt import GPT, GPTConfig
    from ownlm.model.lora import load_adapter
    from ownlm.model.lora import merge_lora as merge
    from ownlm.model.quantize import dequantize_rows, quantize_rows

    folder = resolve_checkpoint(path)
    meta = read_checkpoint_config(folder)
    name = meta.get("kind", "lm")
    if name not in kinds:
        raise UserError(
            f"{folder}: holds a model of kind '{name}', but this command needs {' or '.join(kinds)}"
        )
    kind = get_kind(name, folder)
    try:
        cfg = GPTConfig.from_dict(meta["model"])
    except (TypeError, ValueError, UserError) as e:
        raise UserError(f"{folder / CONFIG}: the model config is damaged ({e})") from None
    check_depth(folder / WEIGHTS, cfg.n_layer)  # before building: a million blocks would take minutes and GBs
    with torch.device("meta"):
        model = GPT(cfg)  # no memory, no random init: the weights come from the file
        if kind.build is not None:
            model = kind.build(model, meta, folder)
    gpt, head_key = kind.gpt(model), kind.prefix() + "lm_head.weight"
    check_shapes(folder / WEIGHTS, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    header, _, _ = safetensors_header(folder / WEIGHTS)
    stored = set(header) - {"__metadata__"} - ({head_key} if cfg.tie_embeddings else set())
    file_scales = _int8_scales(stored, {k: v.get("dtype") for k, v in header.items() if isinstance(v, dict)})
    if prepare is not None:
        prepare(model)
    model_state = model.state_dict()
    model_scales = _int8_scales(
        set(model_state), {k: "I8" if v.dtype == torch.int8 else "" for k, v in model_state.items()}
    )
    wanted = set(model_state) - set(model_scales.values()) - ({head_key} if cfg.tie_embeddings else set())
    missing, unexpected = sorted(wanted - stored), sorted(stored - set(file_scales.values()) - wanted)
    if missing or unexpected:
        raise UserError(f"{folder / WEIGHTS}: weights do not match config.json "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]})")  # fmt: skip
    model.to_empty(device=device)
    if cfg.tie_embeddings:
        gpt.lm_head.weight = gpt.transformer.wte.weight  # to_empty un-ties; tie again
    targets = model.state_dict(keep_vars=True)  # the model's own tensors, by name
    scales = dict(read_safetensors(folder / WEIGHTS, sorted(file_scales.values())))
    with torch.no_grad():
        for key, tensor in read_safetensors(folder / WEIGHTS, sorted(wanted)):
            if key in file_scales:  # stored as int8 with per-row scales (a run over an int8 base)
                tensor = dequantize_rows(tensor, scales[file_scales[key]])
            # kept as int8 (``prepare`` planned an int8 base): quantized on the way in
            if key in model_scales:
                q, scale = quantize_rows(tensor)
                targets[key].copy_(q)
                targets[model_scales[key]].copy_(scale)
            else:
                targets[key].copy_(tensor)  # one tensor at a time, cast into the model's dtype
    gpt.reset_buffers()
    if (folder / "adapter.json").is_file():
        load_adapter(folder, model)
        if merge_lora:
            merge(model)
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    tokenizer = Tokenizer.load(folder) if (folder / "tokenizer.json").is_file() else None
    return model, tokenizer, cfg
