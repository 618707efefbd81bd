"""``ownlm import hf SOURCE --out DIR``: a Hugging Face model folder (or hub id) as an ownlm model.

Architectures: ``GPT2LMHeadModel``, ``LlamaForCausalLM`` (Llama 2/3.x, SmolLM, TinyLlama), ``MistralForCausalLM``
and ``Qwen2ForCausalLM``. Weights from ``model.safetensors`` or sharded ``model-0000N-of-0000M.safetensors``
with their ``model.safetensors.index.json`` (read one tensor at a time; ``pytorch_model.bin`` only for GPT-2,
loaded with ``weights_only``), the tokenizer from ``tokenizer.json`` (byte-level BPE) or GPT-2's
``vocab.json`` + ``merges.txt``, and the chat template from ``tokenizer_config.json``.

    ownlm import hf ./SmolLM2-135M-Instruct --out models/smol
    ownlm import hf HuggingFaceTB/SmolLM2-135M-Instruct --out models/smol     # downloads with huggingface_hub
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.formats import tensor_map
from ownlm.formats.model_config import config_from_hf
from ownlm.importers.build import build_model
from ownlm.io import read_json
from ownlm.tokenizer import vocab_import
from ownlm.tokenizer.export import from_gpt2, from_hf_vocab

HUB_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "vocab.json", "vocab.bpe", "encoder.json"]
INDEX = "model.safetensors.index.json"


@dataclass
class ImportHFConfig:
    source: str = opt(positional=True, help="a Hugging Face model folder, or a hub id such as "
                      "HuggingFaceTB/SmolLM2-135M-Instruct (downloaded with huggingface_hub)")  # fmt: skip
    out: str = opt(
        help="output model folder (model.safetensors + config.json + tokenizer.json + chat template)"
    )
    revision: str | None = opt(None, help="hub revision (branch, tag or commit) when SOURCE is a hub id")
    context: int | None = opt(
        None, help="shorten the model's context to this many tokens (default: the model's)"
    )


@dataclass
class ImportGPT2Config:
    source: str = opt(
        positional=True, help="a Hugging Face GPT-2 folder or a hub name such as gpt2, gpt2-medium"
    )
    out: str = opt(help="output model folder (model.safetensors + config.json + tokenizer.json)")
    revision: str | None = opt(None, help="hub revision (branch, tag or commit) when SOURCE is a model name")


def find_source(source: str, revision: str | None = None) -> Path:
    """A local folder as is; a hub id ("gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct") downloaded and cached."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(
            f"{source}: expected a model folder with config.json and safetensors weights, found a file"
        )
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source) or source.endswith((".json", ".bin")):
        raise UserError(f"{source}: folder not found")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"'{source}' is not a folder here; to download it, install huggingface_hub "
                        "(pip install 'ownlm[hub]')") from None  # fmt: skip
    try:
        return Path(snapshot_download(repo_id=source, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated model ... all end the same way for the user
        raise UserError(f"'{source}' is not a folder here, and downloading it from the Hugging Face Hub failed "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check the name and "
                        "your connection, or pass a local folder with config.json + model.safetensors") from None  # fmt: skip


class Weights:
    """The folder's tensors by name, read one at a time (single file, shards with an index, or GPT-2's .bin)."""

    def __init__(self, folder: Path, allow_bin: bool):
        from safetensors import safe_open

        self.folder, self.files, self.where = folder, {}, {}
        index = folder / INDEX
        if index.is_file():
            data = read_json(index, what="safetensors index")
            wmap = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
                raise UserError(f"{index}: expected a 'weight_map' of tensor name -> file name")
            names = sorted(set(wmap.values()))
        elif (folder / "model.safetensors").is_file():
            names = ["model.safetensors"]
        elif allow_bin and (folder / "pytorch_model.bin").is_file():
            import torch

            self.state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
            self.where = dict.fromkeys(self.state, "pytorch_model.bin")
            return
        else:
            bin_ = " or pytorch_model.bin" if allow_bin else ""
            raise UserError(f"{folder}: no model.safetensors, {INDEX}{bin_} (is this a model folder?)")
        self.state = None
        for name in names:
            path = folder / name
            if Path(name).name != name or not path.is_file():
                raise UserError(f"{folder}: weight file {name!r} (named in {INDEX}) is missing")
            try:
                f = safe_open(path, "pt")
                keys = list(f.keys())
            except Exception as e:  # a truncated or damaged file
                raise UserError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
            self.files[name] = f
            for k in keys:
                self.where[k] = name

    def names(self) -> set[str]:
        return set(self.where)

    def get(self, name: str):
        if self.state is not None:
            return self.state[name].float()
        return self.files[self.where[name]].get_tensor(name).float()


def load_hf(folder, context: int | None = None, only: str | None = None):
    """``(GPT, tokenizer or None, chat template or None, info)`` from a Hugging Face model folder."""

    folder = Path(folder)
    hf = read_json(folder / "config.json", what="model config")
    cfg, arch = config_from_hf(hf, str(folder / "config.json"))
    if only is not None and arch != only:
        raise UserError(f"{folder}: holds a {hf.get('model_type')} model, not {only}; use `ownlm import hf`")
    if context is not None:
        if not 1 <= context <= cfg.block_size:
            raise UserError(f"--context {context} must be between 1 and the model's {cfg.block_size}")
        cfg.block_size = context
    weights = Weights(folder, allow_bin=arch == "gpt2")
    stored = tensor_map.hf_stored_names(weights.names(), arch)
    if cfg.tie_embeddings:
        stored.pop("lm_head.weight", None)  # some tied checkpoints store the head anyway
    model = build_model(
        cfg, arch, "hf", lambda n: weights.get(stored[n]), set(stored), str(folder), "config.json"
    )
    tokenizer, template, ids = read_tokenizer(folder)
    info = {"architecture": arch, "name": hf.get("_name_or_path") or folder.name, **ids}
    return model, tokenizer, template, info


def read_tokenizer(folder: Path):
    """``(Tokenizer or None, chat template or None, special ids)``: tokenizer.json, else GPT-2's two files."""
    if (folder / "tokenizer.json").is_file():
        return vocab_import.hf_vocabulary(folder)
    for vocab, merges, reader in (("vocab.json", "merges.txt", from_hf_vocab),
                                  ("encoder.json", "vocab.bpe", from_gpt2)):  # fmt: skip
        if (folder / vocab).is_file() and (folder / merges).is_file():
            try:
                return reader(folder / vocab, folder / merges), None, {}
            except UserError as e:
                print(f"ownlm: warning: tokenizer not imported: {e}", file=sys.stderr)
                return None, None, {}
    print(f"ownlm: warning: {folder} has no tokenizer.json (nor vocab.json + merges.txt); the model is "
          "imported without a tokenizer", file=sys.stderr)  # fmt: skip
    return None, None, {}


def main(cfg: ImportHFConfig) -> int:
    from ownlm.importers.save import check_out, save_import

    check_out(cfg.out, cfg.source)  # before any download
    folder = find_source(cfg.source, cfg.revision)
    model, tokenizer, template, info = load_hf(folder, cfg.context)
    return save_import(cfg.out, model, tokenizer, template, info, source=str(folder))


def main_gpt2(cfg: ImportGPT2Config) -> int:
    from ownlm.importers.save import check_out, save_import

    check_out(cfg.out, cfg.source)  # before any download
    folder = find_source(cfg.source, cfg.revision)
    model, tokenizer, template, info = load_hf(folder, only="gpt2")
    return save_import(cfg.out, model, tokenizer, template, info, source=str(folder))
