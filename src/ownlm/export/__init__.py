"""A trained model in other people's formats: a Hugging Face folder and a GGUF file for llama.cpp.

Both targets know three blocks, and every ownlm model is one of them or is refused with the option that does
not fit (the names and layouts live in ``ownlm.formats``, shared with import):

    GPT-2 block   learned positions, LayerNorm, GELU (tanh)    -> GPT2LMHeadModel  / GGUF arch "gpt2"
    modern block  RoPE, RMSNorm, SwiGLU (bias on/off, GQA)     -> LlamaForCausalLM / GGUF arch "llama"
    ... with biases on q/k/v only (an imported Qwen2)          -> Qwen2ForCausalLM / GGUF arch "qwen2"

    ownlm export runs/mymodel --to hf --out export/mymodel-hf
    ownlm export runs/mymodel --to gguf --out export/mymodel.gguf --dtype f16

``hf.py`` writes the folder, ``gguf.py`` the file, ``cli.py`` is the command (checks, out folder, dispatch).

>>> block_kind(GPTConfig(pos="rope", norm="rmsnorm", mlp="swiglu"))  # doctest: +SKIP
'llama'
"""

from __future__ import annotations

from ownlm.formats.tensor_map import arch_of as block_kind  # noqa: F401  (the block -> architecture rule)
