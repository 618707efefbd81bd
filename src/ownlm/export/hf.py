"""An ownlm model as a Hugging Face folder that ``transformers`` loads with no ownlm code.

    export/mymodel-hf/
      config.json               GPT2LMHeadModel or LlamaForCausalLM settings
      model.safetensors         weights under transformers' names (a tied head stored once)
      generation_config.json    bos/eos ids
      tokenizer.json            our byte-level BPE (``ownlm.tokenizer.export.to_hf_json``)
      tokenizer_config.json     + special_tokens_map.json; the chat template when the checkpoint has one

The GPT-2 block maps by ``ownlm.model.gpt2``'s key table in reverse (four Conv1D transposes). The modern block
maps onto Llama: ``c_attn`` splits into q/k/v and SwiGLU's ``c_fc`` into gate (first half) and up. Our RoPE is
the rotate-half layout, which is exactly what transformers' Llama applies, so q and k need no permutation.
The vocabulary keeps the model's padded size (a multiple of 64); the tokenizer's ids are ours and simply never
reach the padding rows.

>>> files = write_hf(model, tokenizer, Path("export/hf"))  # doctest: +SKIP
>>> AutoModelForCausalLM.from_pretrained("export/hf")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ownlm.errors import UserError
from ownlm.export import block_kind
from ownlm.io import write_json
from ownlm.model.gpt2 import CONV1D  # GPT-2's Conv1D weights, stored (in, out)

HF_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json")  # fmt: skip
HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def hf_config(cfg, tokenizer=None, dtype: str = "f32") -> dict:
    """transformers ``config.json`` for a ``GPTConfig`` (GPT-2 or Llama, see ``block_kind``)."""
    kind = block_kind(cfg, "Hugging Face")
    eot = tokenizer.eot_id if tokenizer is not None else None
    common = {"vocab_size": cfg.vocab_size, "bos_token_id": eot, "eos_token_id": eot,
              "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": 0.02, "use_cache": True,
              "torch_dtype": HF_DTYPES[dtype]}  # fmt: skip
    if kind == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common,
                "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd,
                "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.hidden_size,
                "activation_function": "gelu_new", "layer_norm_epsilon": cfg.norm_eps,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True}  # fmt: skip
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
            "hidden_size": cfg.n_embd, "intermediate_size": cfg.hidden_size, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size,
            "hidden_act": "silu", "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
            # transformers < 5 reads rope_theta, >= 5 rope_parameters; both say the same
            "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": 0.0, "pretraining_tp": 1}  # fmt: skip


def hf_state_dict(model) -> dict:
    """ownlm ``GPT`` -> transformers state dict (fresh contiguous float tensors, a tied head left out)."""
    cfg = model.config
    kind = block_kind(cfg, "Hugging Face")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    out = _gpt2_state(state, cfg) if kind == "gpt2" else _llama_state(state, cfg)
    return {k: v.contiguous().clone() for k, v in out.items()}


def _gpt2_state(state: dict, cfg) -> dict:
    import torch

    out = {k: v.t() if k.endswith(CONV1D) else v for k, v in state.items()}
    if not cfg.bias:  # GPT2LMHeadModel always has biases: zeros say "none"
        C, H = cfg.n_embd, cfg.hidden_size
        sizes = {"ln_1": C, "attn.c_attn": 3 * C, "attn.c_proj": C, "ln_2": C, "mlp.c_fc": H, "mlp.c_proj": C}
        zeros = {f"transformer.h.{i}.{name}.bias": torch.zeros(n) for i in range(cfg.n_layer)
                 for name, n in sizes.items()}  # fmt: skip
        out |= zeros | {"transformer.ln_f.bias": torch.zeros(C)}
    return out


def _llama_state(state: dict, cfg) -> dict:
    hs, nh, nkv, hidden = cfg.head_size, cfg.n_head, cfg.kv_heads, cfg.hidden_size
    out = {"model.embed_tokens.weight": state["transformer.wte.weight"],
           "model.norm.weight": state["transformer.ln_f.weight"]}  # fmt: skip
    if "lm_head.weight" in state:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(cfg.n_layer):
        src, dst = f"transformer.h.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = state[src + "ln_1.weight"]
        out[dst + "post_attention_layernorm.weight"] = state[src + "ln_2.weight"]
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = state[src + f"attn.c_attn.{kind}"].split([nh * hs, nkv * hs, nkv * hs], dim=0)
            gate, up = state[src + f"mlp.c_fc.{kind}"].split([hidden, hidden], dim=0)  # gate first, as in MLP
            out |= {dst + f"self_attn.q_proj.{kind}": q, dst + f"self_attn.k_proj.{kind}": k,
                    dst + f"self_attn.v_proj.{kind}": v, dst + f"self_attn.o_proj.{kind}": state[src + f"attn.c_proj.{kind}"],
                    dst + f"mlp.gate_proj.{kind}": gate, dst + f"mlp.up_proj.{kind}": up,
                    dst + f"mlp.down_proj.{kind}": state[src + f"mlp.c_proj.{kind}"]}  # fmt: skip
    return out


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


def save_safetensors(state: dict, path: Path) -> None:
    """``safetensors`` file written atomically (temp file beside it, then rename)."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_hf(model, tokenizer, out: Path, template=None, dtype: str = "f32") -> list[str]:
    """Write the Hugging Face folder into ``out`` (which must exist); return the file names written."""
    import torch

    from ownlm.tokenizer.export import save_hf

    if dtype not in HF_DTYPES:
        raise UserError(
            f"--dtype {dtype} is not available for --to hf (choose one of {', '.join(HF_DTYPES)})"
        )
    cfg = model.config
    config = hf_config(cfg, tokenizer, dtype)
    tok_config, special_map = tokenizer_config(tokenizer, cfg, template)
    state = {k: v.to(getattr(torch, HF_DTYPES[dtype])) for k, v in hf_state_dict(model).items()}
    save_safetensors(state, out / "model.safetensors")
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", generation_config(tokenizer, template))
    save_hf(tokenizer, out / "tokenizer.json")  # checked against our encoder before it is written
    write_json(out / "tokenizer_config.json", tok_config)
    write_json(out / "special_tokens_map.json", special_map)
    return list(HF_FILES)
