"""A trained model in other people's formats: a Hugging Face folder and a GGUF file for llama.cpp.

Both targets know two blocks, and every ownlm model is one of them or is refused with the option that does
not fit:

    GPT-2 block   learned positions, LayerNorm, GELU (tanh)    -> GPT2LMHeadModel  / GGUF arch "gpt2"
    modern block  RoPE, RMSNorm, SwiGLU (bias on/off, GQA)     -> LlamaForCausalLM / GGUF arch "llama"

    ownlm export runs/mymodel --to hf --out export/mymodel-hf
    ownlm export runs/mymodel --to gguf --out export/mymodel.gguf --dtype f16

``hf.py`` writes the folder, ``gguf.py`` the file, ``cli.py`` is the command (checks, out folder, dispatch).

>>> block_kind(GPTConfig(pos="rope", norm="rmsnorm", mlp="swiglu"))  # doctest: +SKIP
'llama'
"""

from __future__ import annotations

from ownlm.errors import UserError

GPT2_BLOCK = {"pos": "learned", "norm": "layernorm", "mlp": "gelu"}
LLAMA_BLOCK = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu"}


def block_kind(cfg, target: str = "hf") -> str:
    """``"gpt2"`` or ``"llama"`` for a ``GPTConfig``; a ``UserError`` names the option ``target`` cannot express.

    The position kind picks the block (learned -> GPT-2, rope -> Llama); the other options must then match it.
    GPT-2's block has no grouped-query attention; a GPT-2 model without biases is exported with zero biases.
    """
    if cfg.pos == "learned":
        kind, block = "gpt2", GPT2_BLOCK
    elif cfg.pos == "rope":
        kind, block = "llama", LLAMA_BLOCK
    else:
        raise UserError(f"model option pos={cfg.pos!r} cannot be exported to {target}: only learned positions "
                        "(GPT-2 block) or rope (Llama block) can")  # fmt: skip
    for name, want in block.items():
        if getattr(cfg, name) != want:
            other = ", ".join(f"{k}={v}" for k, v in block.items())
            raise UserError(f"model option {name}={getattr(cfg, name)!r} cannot be exported to {target} with "
                            f"pos={cfg.pos!r}: the {kind} block needs {other}")  # fmt: skip
    if kind == "gpt2" and cfg.kv_heads != cfg.n_head:
        raise UserError(f"model option n_kv_head={cfg.n_kv_head} cannot be exported to {target}: the GPT-2 block "
                        "has no grouped-query attention (only the rope/rmsnorm/swiglu block has)")  # fmt: skip
    return kind
