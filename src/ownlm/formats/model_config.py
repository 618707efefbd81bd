"""Model settings in other people's formats: a Hugging Face ``config.json`` or GGUF metadata <-> ``GPTConfig``.

    GPT2LMHeadModel                        <-> learned positions, LayerNorm, GELU (tanh), biases
    LlamaForCausalLM / MistralForCausalLM  <-> RoPE, RMSNorm, SwiGLU, GQA, bias on/off, rope scaling
    Qwen2ForCausalLM                       <-> the Llama block with biases on q/k/v only (``qkv_bias``)

A setting ownlm's GPT cannot reproduce is one ``UserError`` naming the key, never a silently different model.
"""

from __future__ import annotations

import sys

from ownlm.errors import UserError
from ownlm.model.gpt import ROPE_SCALINGS, GPTConfig

HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # tanh-approximated GELU variants: our "gelu"
MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


def _int(d: dict, key: str, where: str, default=None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or v < 1:
        raise UserError(f"{where}: {key} must be a positive integer, found {v!r}")
    return int(v)


def _float(d: dict, key: str, where: str, default=None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v == float("inf"):
        raise UserError(f"{where}: {key} must be a positive number, found {v!r}")
    return float(v)


def arch_from_hf(hf: dict, where: str) -> str:
    mt = hf.get("model_type")
    if mt not in MODEL_TYPES:
        archs = hf.get("architectures")
        raise UserError(f"{where}: model_type {mt!r} ({archs}) is not supported; ownlm imports "
                        f"{', '.join(sorted(MODEL_TYPES))}")  # fmt: skip
    return MODEL_TYPES[mt]


def hf_rope_scaling(hf: dict, where: str) -> dict | None:
    """The ``rope_scaling`` section of a Llama-family config, checked; None when it changes nothing."""
    rs = hf.get("rope_scaling") or None
    params = hf.get("rope_parameters")  # transformers >= 5 puts theta and scaling together here
    if rs is None and isinstance(params, dict) and params.get("rope_type", "default") != "default":
        rs = params
    if rs is None:
        return None
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise UserError(f"{where}: rope_scaling type {kind!r} is not supported (supported: linear, llama3); "
                        "the model would attend differently at long range")  # fmt: skip
    return {k: v for k, v in rs.items() if k != "type"} | {"rope_type": kind}


def config_from_hf(hf: dict, where: str = "config.json") -> tuple[GPTConfig, str]:
    """``(GPTConfig, arch)`` from a transformers ``config.json`` (gpt2, llama, mistral, qwen2)."""
    if not isinstance(hf, dict):
        raise UserError(f"{where}: expected a JSON object")
    arch = arch_from_hf(hf, where)
    if arch == "gpt2":
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
        return GPTConfig(
            vocab_size=_int(hf, "vocab_size", where), block_size=_int(hf, "n_positions", where, hf.get("n_ctx", 1024)),
            n_layer=_int(hf, "n_layer", where), n_head=_int(hf, "n_head", where), n_embd=_int(hf, "n_embd", where),
            mlp_hidden=hf.get("n_inner"), norm_eps=_float(hf, "layer_norm_epsilon", where, 1e-5),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        ), arch  # fmt: skip
    act = hf.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise UserError(f"{where}: hidden_act {act!r} is not supported (the SwiGLU block uses silu)")
    n_embd, n_head = _int(hf, "hidden_size", where), _int(hf, "num_attention_heads", where)
    if n_embd % n_head:
        raise UserError(f"{where}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != n_embd // n_head:
        raise UserError(f"{where}: head_dim {head_dim} differs from hidden_size / num_attention_heads "
                        f"({n_embd // n_head}); ownlm's attention needs them equal")  # fmt: skip
    block = _int(hf, "max_position_embeddings", where, 2048)
    window = hf.get("sliding_window")
    if arch == "qwen2" and not hf.get("use_sliding_window", False):
        window = None
    if isinstance(window, int) and 0 < window < block:
        print(f"ownlm: note: {where} uses a {window}-token sliding attention window; the imported model's "
              f"context is {window} tokens (exactly the original within it)", file=sys.stderr)  # fmt: skip
        block = window
    params = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
    theta = _float(hf, "rope_theta", where, params.get("rope_theta", 10000.0))
    bias = bool(hf.get("attention_bias", False))
    if arch == "qwen2":
        qkv_bias, bias = True, False
    else:
        qkv_bias = False
        if bias != bool(hf.get("mlp_bias", False)):
            raise UserError(f"{where}: attention_bias={bias} with mlp_bias={hf.get('mlp_bias')} is not supported "
                            "(ownlm has biases everywhere or nowhere, or on q/k/v only)")  # fmt: skip
    return GPTConfig(
        vocab_size=_int(hf, "vocab_size", where), block_size=block, n_layer=_int(hf, "num_hidden_layers", where),
        n_head=n_head, n_embd=n_embd, n_kv_head=_int(hf, "num_key_value_heads", where, n_head),
        bias=bias, qkv_bias=qkv_bias, pos="rope", norm="rmsnorm", mlp="swiglu",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_theta=theta,
        norm_eps=_float(hf, "rms_norm_eps", where, 1e-6), mlp_hidden=_int(hf, "intermediate_size", where),
        rope_scaling=hf_rope_scaling(hf, where),
    ), arch  # fmt: skip


def hf_config(cfg: GPTConfig, arch: str, bos: int | None, eos, dtype: str = "f32") -> dict:
    """transformers ``config.json`` for a ``GPTConfig`` of architecture ``arch``."""
    common = {"vocab_size": cfg.vocab_size, "bos_token_id": bos, "eos_token_id": eos,
              "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": 0.02, "use_cache": True,
              "torch_dtype": HF_DTYPES[dtype]}  # fmt: skip
    if arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common,
                "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd,
                "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.hidden_size,
                "activation_function": "gelu_new", "layer_norm_epsilon": cfg.norm_eps,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True}  # fmt: skip
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        if cfg.rope_scaling.get("rope_type") not in ("linear", "llama3"):
            raise UserError(f"rope_scaling {cfg.rope_scaling.get('rope_type')!r} has no Hugging Face form")
        rope = {**cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    out = {"architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
           "model_type": arch, **common,
           "hidden_size": cfg.n_embd, "intermediate_size": cfg.hidden_size, "num_hidden_layers": cfg.n_layer,
           "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size,
           "hidden_act": "silu", "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
           # transformers < 5 reads rope_theta and rope_scaling, >= 5 rope_parameters; both say the same
           "rope_theta": cfg.rope_theta, "rope_parameters": rope, "attention_dropout": 0.0}  # fmt: skip
    if cfg.rope_scaling:
        out["rope_scaling"] = dict(cfg.rope_scaling)
    if arch == "qwen2":
        out |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.n_layer}
    else:
        out |= {"attention_bias": cfg.bias, "mlp_bias": cfg.bias, "pretraining_tp": 1}
    return out


# ------------------------------------------------------------------------------------------------ GGUF

GGUF_ARCHS = ("llama", "qwen2", "gpt2")


def config_from_gguf(meta: dict, tensor_shapes: dict[str, tuple], where: str) -> tuple[GPTConfig, str]:
    """``(GPTConfig, arch)`` from GGUF metadata (``key -> value``) and tensor shapes (PyTorch order)."""
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHS:
        raise UserError(f"{where}: architecture {arch!r} is not supported; ownlm imports {', '.join(GGUF_ARCHS)} "
                        "(Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2, GPT-2)")  # fmt: skip
    a = arch

    def get(key, default=None, kind=int):
        full = f"{a}.{key}"
        v = meta.get(full, default)
        if v is None:
            raise UserError(f"{where}: metadata key {full} is missing")
        return (_int if kind is int else _float)({full: v}, full, where)

    embd = tensor_shapes.get("token_embd.weight")
    if embd is None:
        raise UserError(f"{where}: no token_embd.weight tensor")
    vocab = int(meta.get(f"{a}.vocab_size", embd[0]))
    n_embd, n_head = get("embedding_length"), get("attention.head_count")
    tied = "output.weight" not in tensor_shapes
    common = dict(vocab_size=vocab, block_size=get("context_length"), n_layer=get("block_count"), n_head=n_head,
                  n_embd=n_embd, mlp_hidden=get("feed_forward_length"), tie_embeddings=tied)  # fmt: skip
    if n_embd % n_head:
        raise UserError(f"{where}: embedding_length {n_embd} is not a multiple of head_count {n_head}")
    hs = n_embd // n_head
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        v = meta.get(f"{a}.{key}")
        if v is not None and int(v) != hs:
            raise UserError(f"{where}: {a}.{key} = {v}, but ownlm needs it equal to the head size {hs} "
                            "(embedding_length / head_count)")  # fmt: skip
    if arch == "gpt2":
        return GPTConfig(**common, norm_eps=get("attention.layer_norm_epsilon", 1e-5, float)), arch
    kind = meta.get(f"{a}.rope.scaling.type", "none")
    scaling = None
    if kind == "linear":
        scaling = {"rope_type": "linear", "factor": get("rope.scaling.factor", kind=float)}
    elif kind not in ("none", None):
        raise UserError(f"{where}: {a}.rope.scaling.type = {kind!r} is not supported (supported: none, linear, "
                        f"and the rope_freqs table); ownlm knows {', '.join(ROPE_SCALINGS)}")  # fmt: skip
    qkv_bias = "blk.0.attn_q.bias" in tensor_shapes
    bias = "blk.0.attn_output.bias" in tensor_shapes
    if bias and not qkv_bias:
        raise UserError(f"{where}: an output-projection bias without q/k/v biases is not supported")
    return GPTConfig(
        **common, n_kv_head=get("attention.head_count_kv", n_head), pos="rope", norm="rmsnorm", mlp="swiglu",
        bias=bias, qkv_bias=qkv_bias and not bias, rope_theta=get("rope.freq_base", 10000.0, float),
        norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5, float), rope_scaling=scaling,
    ), arch  # fmt: skip
