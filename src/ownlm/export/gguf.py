"""An ownlm model as one GGUF file for llama.cpp (and the apps built on it), through the ``gguf`` package.

    GPT-2 block  -> arch "gpt2":  token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm,
                                  ffn_up, ffn_down} (weights + biases), output_norm, output (when untied)
    modern block -> arch "llama": token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
                                  ffn_gate, ffn_up, ffn_down} (+ biases when the model has them), output_norm, output

Weights keep PyTorch's (out, in) layout; the writer stores ggml's reversed shape. A tied head is not written:
llama.cpp reuses token_embd when ``output`` is absent.

An imported Qwen2 (q/k/v-only biases) goes out as arch "qwen2", whose RoPE rotates halves as ours does.

RoPE: llama.cpp's "llama" architecture rotates adjacent pairs (dims 2i, 2i+1) of each head, while our RoPE
rotates the two halves (dims i and i + hs/2), as Hugging Face's Llama does. Rows of the q and k projections are
therefore reordered per head to [0, hs/2, 1, hs/2 + 1, ...]: then the pair rotation of the reordered vector is
the half rotation of the original one, reordered the same way for q and k, so every q·k score is unchanged
(llama.cpp's own converter does the same to Hugging Face Llama checkpoints).

The tokenizer goes in as llama.cpp's "gpt2" (byte-level BPE) model: every token spelled in GPT-2's byte-to-
character table, merges as "LEFT RIGHT", special tokens as control tokens, padding ids up to the model's vocab
size as unused ones. llama.cpp splits text with a built-in pre-tokenizer picked by name; ours map onto the nearest
(gpt2 -> "gpt-2", gpt4 -> "llama-bpe"), so token ids can differ from ownlm's on rare whitespace runs.

>>> write_gguf(model, tokenizer, Path("export/model-f16.gguf"), dtype="f16")  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ownlm.errors import UserError
from ownlm.formats import tensor_map
from ownlm.formats.tensor_map import arch_of
from ownlm.io import atomic_path
from ownlm.tokenizer.bpe import PATTERNS
from ownlm.tokenizer.export import _spell
from ownlm.tokenizer.pretokenize import name_of

# `gguf` (llama.cpp's writer) is the optional extra ownlm[export]: imported inside the functions that write

DTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # q8_0 quantizes rows in blocks of 32 values, one f16 scale per block


def pre_tokenizer(pattern) -> str:
    """The llama.cpp pre-tokenizer name nearest to our split ``pattern`` (a warning when none matches)."""
    if pattern == PATTERNS["gpt2"]:
        return "gpt-2"
    if pattern == PATTERNS["gpt4"]:
        return "llama-bpe"  # Llama 3's split rule: cl100k's, which our "gpt4" pattern follows
    if name_of(pattern):  # an imported vocabulary's own split
        return name_of(pattern)
    print("ownlm: warning: the tokenizer's split pattern is not one llama.cpp knows; the GGUF uses GPT-2's, "
          "so llama.cpp may tokenize some text differently (the model's ids are unaffected)", file=sys.stderr)  # fmt: skip
    return "gpt-2"


def vocab_entries(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """``(tokens, token_types, merges)`` for GGUF's tokenizer keys, ``vocab_size`` tokens long."""
    from gguf import TokenType

    if tokenizer.n_vocab > vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        if i in tokenizer.vocab:
            tokens.append(_spell(tokenizer.vocab[i]))
            types.append(TokenType.NORMAL)
        elif i in tokenizer.special_ids:
            tokens.append(tokenizer.special_ids[i])
            types.append(TokenType.CONTROL)
        else:  # the model's padding rows (vocab rounded up to a multiple of 64): never produced by the tokenizer
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    if len(set(tokens)) != len(tokens):
        raise UserError("two tokens have the same spelling in GGUF (a special token or [PADn] equals a "
                        "text token); rename the special token")  # fmt: skip
    merges = [f"{_spell(tokenizer.vocab[a])} {_spell(tokenizer.vocab[b])}" for a, b in tokenizer.merges]
    return tokens, [int(t) for t in types], merges


def gguf_tensors(model) -> dict:
    """GGUF tensor name -> float32 numpy array, in llama.cpp's names and layouts (``ownlm.formats.tensor_map``)."""
    cfg = model.config
    arch = arch_of(cfg, "GGUF")
    s = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out = tensor_map.to_outside(s, cfg, arch, "gguf")
    if arch == "gpt2":  # llama.cpp's GPT-2 requires every bias: zeros say "none"
        out = tensor_map.zero_biases(out, cfg, "gguf", lambda n: np.zeros(n, np.float32))
    return {
        k: np.ascontiguousarray(v).copy() for k, v in out.items()
    }  # own arrays, not views of split tensors


def _encode(x, dtype: str):
    """``(array, raw_dtype)`` to store: 1-D tensors (norms, biases) stay f32, as llama.cpp expects; q8_0 needs
    rows that are a whole number of 32-value blocks, other rows fall back to f16."""
    from gguf import GGMLQuantizationType, quants

    if dtype == "f32" or x.ndim == 1:
        return x.astype(np.float32), None
    if dtype == "q8_0" and x.shape[-1] % Q8_BLOCK == 0:
        return quants.quantize(x.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return x.astype(np.float16), None


def add_model_keys(w, cfg, kind: str) -> None:
    """The model's shape as GGUF metadata (``{arch}.context_length`` ...), what ``formats.model_config`` reads back."""
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.hidden_size)
    w.add_head_count(cfg.n_head)
    w.add_vocab_size(cfg.vocab_size)
    if kind == "gpt2":
        w.add_layer_norm_eps(cfg.norm_eps)
    else:
        w.add_head_count_kv(cfg.kv_heads)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_rope_dimension_count(cfg.head_size)
        w.add_rope_freq_base(cfg.rope_theta)


def write_gguf(model, tokenizer, path: Path, template=None, dtype: str = "f16", name: str = "ownlm") -> Path:
    """Write the model, its tokenizer (and chat template) to ``path``, atomically; return ``path``."""
    try:
        import gguf
    except ImportError:
        raise UserError("export --to gguf needs the gguf package: pip install 'ownlm[export]'") from None
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype} is not available for --to gguf (choose one of {', '.join(DTYPES)})")
    cfg = model.config
    kind = arch_of(cfg, "GGUF")
    tokens, types, merges = vocab_entries(tokenizer, cfg.vocab_size)
    tensors = gguf_tensors(model)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, kind)
        w.add_name(name)
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])  # fmt: skip
        add_model_keys(w, cfg, kind)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre_tokenizer(tokenizer.pattern))
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        if tokenizer.eot_id is not None:
            w.add_bos_token_id(tokenizer.eot_id)
            w.add_eos_token_id(tokenizer.eot_id)
        w.add_add_bos_token(False)  # ownlm never prepends a token to a prompt
        if template is not None:
            w.add_chat_template(template.to_jinja())
            end = tokenizer.special_tokens.get(template.end_marker)
            if end is not None:  # llama.cpp ends a chat reply at the end-of-turn token
                w.add_eot_token_id(end)
        for tname, x in tensors.items():
            data, raw = _encode(x, dtype)
            w.add_tensor(tname, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
