"""OpenAI GPT-2 weights in and out: a Hugging Face GPT-2 folder <-> an ownlm model folder.

ownlm's GPT uses GPT-2's parameter names, so the mapping is a key table plus four transposes: GPT-2 stores its
projections as ``Conv1D`` with weights (in, out), while ``nn.Linear`` keeps (out, in). Both HF key layouts are
read: ``transformer.h.0.attn.c_attn.weight`` (GPT2LMHeadModel) and ``h.0.attn.c_attn.weight`` (GPT2Model).

    ownlm import gpt2 ./gpt2-folder --out models/gpt2     # config.json + model.safetensors (or pytorch_model.bin)
    ownlm import gpt2 gpt2 --out models/gpt2              # a Hub name: downloads with huggingface_hub
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.io import read_json

# GPT-2's Conv1D layers: weight stored (in, out); ours are nn.Linear (out, in).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# tanh-approximated GELU variants, all equal to our "gelu"
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
HUB_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt", "encoder.json", "vocab.bpe"]


@dataclass
class ImportConfig:
    source: str = opt(help="a Hugging Face GPT-2 folder (config.json + model.safetensors or pytorch_model.bin "
                      "+ vocab.json/merges.txt) or a Hub model name such as gpt2, gpt2-medium", positional=True)  # fmt: skip
    out: str = opt(help="output model folder (model.safetensors + config.json + tokenizer.json)")
    revision: str | None = opt(None, help="Hub revision (branch, tag or commit) when SOURCE is a model name")


def config_from_hf(hf: dict, where: str = "config.json"):
    """A ``GPTConfig`` from a Hugging Face GPT-2 ``config.json`` dict; unsupported variants are a UserError."""
    from ownlm.model.gpt import GPTConfig

    if hf.get("model_type", "gpt2") != "gpt2":
        raise UserError(f"{where}: model_type is '{hf.get('model_type')}', expected 'gpt2'")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise UserError(f"{where}: '{flag}: true' is not supported by ownlm's GPT")
    if hf.get("scale_attn_weights", True) is False:
        raise UserError(f"{where}: 'scale_attn_weights: false' is not supported by ownlm's GPT")
    act = hf.get("activation_function", "gelu_new")
    if act not in GELU_TANH:
        raise UserError(
            f"{where}: activation_function '{act}' is not supported (expected one of {GELU_TANH})"
        )
    try:
        return GPTConfig(
            vocab_size=int(hf["vocab_size"]),
            block_size=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
            n_layer=int(hf["n_layer"]),
            n_head=int(hf["n_head"]),
            n_embd=int(hf["n_embd"]),
            mlp_hidden=hf.get("n_inner"),
            norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        )
    except KeyError as e:
        raise UserError(f"{where}: missing GPT-2 setting {e}") from None


def read_hf_state_dict(folder: Path) -> dict:
    """The weights of a HF folder: model.safetensors, else pytorch_model.bin (no pickle code is run)."""
    import torch

    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(st)
        if pt.is_file():
            return torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as e:  # a broken or truncated file, whatever the reader's error type
        raise UserError(
            f"{st if st.is_file() else pt}: cannot read GPT-2 weights ({type(e).__name__}: {e})"
        ) from None
    raise UserError(f"{folder}: no model.safetensors or pytorch_model.bin (is this a GPT-2 model folder?)")


def import_state_dict(hf_state: dict, cfg, where: str = "weights") -> dict:
    """HF GPT-2 tensors -> ownlm ``GPT`` state dict (prefix stripped, Conv1D transposed, buffers dropped)."""
    out = {}
    for key, value in hf_state.items():
        name = key.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints store the causal mask as a buffer; SDPA needs none
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # the same matrix as wte
        if name.endswith(CONV1D):
            value = value.t()
        out[name if name == "lm_head.weight" else "transformer." + name] = value.contiguous()
    return out


def export_hf_state_dict(model) -> dict:
    """ownlm ``GPT`` (GPT-2 options only) -> HF ``GPT2LMHeadModel`` state dict, loadable by
    ``GPT2LMHeadModel.load_state_dict``."""
    cfg = model.config
    if (cfg.pos, cfg.norm, cfg.mlp, cfg.bias, cfg.kv_heads) != (
        "learned",
        "layernorm",
        "gelu",
        True,
        cfg.n_head,
    ):
        raise UserError("only a GPT-2-shaped model (learned positions, LayerNorm, GELU, biases, no GQA) "
                        "can be exported to the GPT-2 layout")  # fmt: skip
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith(CONV1D):
            value = value.t()
        out[key] = value.detach().contiguous()
    out.setdefault("lm_head.weight", out["transformer.wte.weight"])
    return out


def load_hf_gpt2(folder) -> tuple:
    """``(GPT, tokenizer or None)`` from a HF GPT-2 folder."""
    import torch

    from ownlm.model.gpt import GPT

    folder = Path(folder)
    cfg = config_from_hf(read_json(folder / "config.json", what="GPT-2 config"), str(folder / "config.json"))
    state = import_state_dict(read_hf_state_dict(folder), cfg)
    with torch.device("meta"):
        model = GPT(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items()
             if k in state and state[k].shape != s]  # fmt: skip
    if missing or unexpected or wrong:
        raise UserError(f"{folder}: weights do not match config.json — missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}, wrong shape {wrong[:4]}")  # fmt: skip
    state = {k: v.float() for k, v in state.items()}
    model.load_state_dict(state, assign=True, strict=False)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    model.reset_buffers()  # the (empty) position tables are built on the meta device; none for GPT-2, kept safe
    return model.eval(), load_hf_tokenizer(folder)


def load_hf_tokenizer(folder: Path):
    """The GPT-2 BPE tokenizer in the folder (vocab.json + merges.txt, or encoder.json + vocab.bpe), or None."""
    from ownlm.tokenizer import Tokenizer

    pairs = [
        ("vocab.json", "merges.txt", Tokenizer.from_hf_vocab),
        ("encoder.json", "vocab.bpe", Tokenizer.from_gpt2),
    ]
    for vocab, merges, reader in pairs:
        if (folder / vocab).is_file() and (folder / merges).is_file():
            try:
                return reader(folder / vocab, folder / merges)
            except UserError as e:
                print(f"ownlm: warning: tokenizer not imported: {e}", file=sys.stderr)
                return None
    print(f"ownlm: warning: {folder} has no GPT-2 tokenizer files (vocab.json + merges.txt); "
          "the model is imported without a tokenizer", file=sys.stderr)  # fmt: skip
    return None


def find_source(source: str, revision: str | None = None) -> Path:
    """A local folder as is; a Hub model name ("gpt2", "openai-community/gpt2") downloaded and cached."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"{source}: expected a folder with config.json and model.safetensors, found a file")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source) or source.endswith((".json", ".bin")):
        raise UserError(f"{source}: folder not found")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"'{source}' is not a folder here; to download it, install huggingface_hub "
                        "(pip install 'ownlm[hub]')") from None  # fmt: skip
    try:
        return Path(snapshot_download(repo_id=source, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated model ... all end the same way for the user
        raise UserError(f"'{source}' is not a folder here, and downloading it from the Hugging Face Hub failed "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check the name and "
                        "your connection, or pass a local folder with config.json + model.safetensors") from None  # fmt: skip


def main(cfg: ImportConfig) -> int:
    from ownlm.model.checkpoint import save_model

    folder = find_source(cfg.source, cfg.revision)
    model, tokenizer = load_hf_gpt2(folder)
    out = save_model(cfg.out, model, tokenizer, extra={"imported_from": str(cfg.source)})
    n = model.num_params(non_embedding=False)
    print(f"imported GPT-2 ({n / 1e6:.1f}M parameters, {model.config.n_layer} layers, vocab "
          f"{model.config.vocab_size}{'' if tokenizer else ', no tokenizer'}) -> {out}")  # fmt: skip
    return 0
