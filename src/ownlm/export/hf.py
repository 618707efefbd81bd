"""An ownlm model as a Hugging Face folder that ``transformers`` loads with no ownlm code.

    export/mymodel-hf/
      config.json               GPT2LMHeadModel or LlamaForCausalLM settings
      model.safetensors         weights under transformers' names (a tied head stored once)
      generation_config.json    bos/eos ids
      tokenizer.json            our byte-level BPE (``ownlm.tokenizer.export.to_hf_json``)
      tokenizer_config.json     + special_tokens_map.json; the chat template when the checkpoint has one

Names and layouts come from ``ownlm.formats.tensor_map`` (the table import reads too): the GPT-2 block needs four
Conv1D transposes; the modern block maps onto Llama (or Qwen2, with q/k/v-only biases): ``c_attn`` splits into
q/k/v and SwiGLU's ``c_fc`` into gate (first half) and up. Our RoPE is the rotate-half layout, which is exactly
what transformers' Llama applies, so q and k need no permutation.
The vocabulary keeps the model's padded size (a multiple of 64); the tokenizer's ids are ours and simply never
reach the padding rows.

>>> files = write_hf(model, tokenizer, Path("export/hf"))  # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained("export/hf")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch

from ownlm.errors import UserError
from ownlm.formats import model_config, tensor_map
from ownlm.formats.model_config import HF_DTYPES
from ownlm.formats.tensor_map import arch_of
from ownlm.io import write_json, write_safetensors
from ownlm.tokenizer.export import save_hf

HF_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json")  # fmt: skip


def hf_config(cfg, tokenizer=None, dtype: str = "f32") -> dict:
    """transformers ``config.json`` for a ``GPTConfig`` (GPT-2, Llama or Qwen2, see ``arch_of``)."""
    eot = tokenizer.eot_id if tokenizer is not None else None
    return model_config.hf_config(cfg, arch_of(cfg, "Hugging Face"), eot, eot, dtype)


def hf_state_dict(model) -> dict:
    """ownlm ``GPT`` -> transformers state dict (fresh contiguous float tensors, a tied head left out), by the
    architecture's tensor map."""
    cfg = model.config
    arch = arch_of(cfg, "Hugging Face")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    out = tensor_map.to_outside(state, cfg, arch, "hf")
    if arch == "gpt2":  # GPT2LMHeadModel always has biases: zeros say "none"
        out = tensor_map.zero_biases(out, cfg, "hf", torch.zeros)
    return {k: v.contiguous().clone() for k, v in out.items()}


def tokenizer_config(tokenizer, cfg, template=None) -> tuple[dict, dict]:
    """``(tokenizer_config.json, special_tokens_map.json)``: eot as bos/eos, no token added on encode, the
    chat template (a Jinja string) and its special tokens when there is one."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.block_size,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}  # fmt: skip
    specials: dict = {}
    if tokenizer.eot_id is not None:
        eot = tokenizer.special_ids[tokenizer.eot_id]
        specials |= {"bos_token": eot, "eos_token": eot}
    if template is not None:
        config["chat_template"] = template.to_jinja()
        extra = [s for s in template.special_tokens() if s in tokenizer.special_tokens]
        missing = [s for s in template.special_tokens() if s not in tokenizer.special_tokens]
        if missing:
            raise UserError(
                f"the chat template uses special tokens {missing} that the tokenizer does not have"
            )
        if extra:
            specials["additional_special_tokens"] = extra
    return config | specials, specials


def generation_config(tokenizer, template=None) -> dict:
    """bos/eos ids; with a chat template every id that ends a reply (its end marker and eot) stops generation."""
    eot = tokenizer.eot_id
    stops = template.stop_ids(tokenizer) if template is not None else [eot] if eot is not None else []
    return {"bos_token_id": eot, "eos_token_id": stops[0] if len(stops) == 1 else stops or None}


def write_hf(model, tokenizer, out: Path, template=None, dtype: str = "f32") -> list[str]:
    """Write the Hugging Face folder into ``out`` (which must exist); return the file names written."""
    if dtype not in HF_DTYPES:
        raise UserError(
            f"--dtype {dtype} is not available for --to hf (choose one of {', '.join(HF_DTYPES)})"
        )
    cfg = model.config
    config = hf_config(cfg, tokenizer, dtype)
    tok_config, special_map = tokenizer_config(tokenizer, cfg, template)
    state = {k: v.to(getattr(torch, HF_DTYPES[dtype])) for k, v in hf_state_dict(model).items()}
    write_safetensors(out / "model.safetensors", state, metadata={"format": "pt"})
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", generation_config(tokenizer, template))
    save_hf(tokenizer, out / "tokenizer.json")  # checked against our encoder before it is written
    write_json(out / "tokenizer_config.json", tok_config)
    write_json(out / "special_tokens_map.json", special_map)
    return list(HF_FILES)
