"""One tensor map per architecture: ownlm name <-> Hugging Face name <-> GGUF name, with the transforms.

ownlm's ``GPT`` fuses q, k and v into one projection (``attn.c_attn``) and SwiGLU's gate and up into one
(``mlp.c_fc``); Hugging Face's Llama/Qwen2 and GGUF store them apart. Each ``Entry`` names one outside tensor
and where it lives in ours:

    part   a row block of our fused tensor: "q", "k", "v" of c_attn (sizes n_head*hs, n_kv_head*hs, n_kv_head*hs)
           or "gate", "up" of c_fc (hidden rows each, gate first)
    conv1d Hugging Face GPT-2 stores this weight transposed, (in, out), as its Conv1D layers do
    rope   "q" or "k": GGUF's "llama" architecture rotates adjacent pairs (2i, 2i+1) where ours rotates halves
           (i, i + hs/2), so the rows of each head are interleaved [0, h, 1, h+1, ...] on the way out and put
           back on the way in; every q.k score is unchanged. GGUF's "qwen2" rotates halves, as we do.

    >>> [e.hf for e in entries(GPTConfig(n_layer=1, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    ...                        "llama") if e.part == "k"]
    ['model.layers.0.self_attn.k_proj.weight']

``to_outside(state, cfg, arch, "hf" | "gguf")`` splits and transforms our state dict; ``from_outside`` reads
outside tensors (any mapping name -> tensor, read lazily one at a time) back into our names. The round trip
``from_outside(to_outside(s)) == s`` is tested for every architecture and option mix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ownlm.errors import UserError
from ownlm.model.gpt import GPTConfig

ARCHS = ("gpt2", "llama", "qwen2")
HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
GPT2_BLOCK = {"pos": "learned", "norm": "layernorm", "mlp": "gelu"}
LLAMA_BLOCK = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu"}


@dataclass(frozen=True)
class Entry:
    ours: str  # our state-dict key (the fused tensor when ``part`` is set)
    hf: str
    gguf: str
    part: str | None = None
    conv1d: bool = False
    rope: str | None = None


def arch_of(cfg: GPTConfig, target: str = "Hugging Face") -> str:
    """``"gpt2"``, ``"llama"`` or ``"qwen2"`` for a config; a ``UserError`` names the option ``target`` lacks.

    The position kind picks the block (learned -> GPT-2, rope -> Llama); the other options must then match.
    A rope model with biases on q/k/v only is Qwen2's block.
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
    if kind == "llama" and cfg.qkv_bias and not cfg.bias:
        return "qwen2"
    if cfg.rope_scaling and target == "GGUF":
        raise UserError(f"model option rope_scaling={cfg.rope_scaling} cannot be exported to GGUF yet")
    return kind


def entries(cfg: GPTConfig, arch: str) -> list[Entry]:
    """Every outside tensor of a model with config ``cfg`` in architecture ``arch``, in file order."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    out = [Entry("transformer.wte.weight", _top(arch, "embed"), "token_embd.weight")]
    if arch == "gpt2":
        out.append(Entry("transformer.wpe.weight", "transformer.wpe.weight", "position_embd.weight"))
    for i in range(cfg.n_layer):
        out += _gpt2_layer(cfg, i) if arch == "gpt2" else _llama_layer(cfg, i, arch)
    out.append(Entry("transformer.ln_f.weight", _top(arch, "norm"), "output_norm.weight"))
    if arch == "gpt2":  # RMSNorm has no bias
        out.append(
            Entry("transformer.ln_f.bias", _top(arch, "norm").replace("weight", "bias"), "output_norm.bias")
        )
    if not cfg.tie_embeddings:
        out.append(Entry("lm_head.weight", "lm_head.weight", "output.weight"))
    return out


def _top(arch: str, what: str) -> str:
    if arch == "gpt2":
        return {"embed": "transformer.wte.weight", "norm": "transformer.ln_f.weight"}[what]
    return {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight"}[what]


def _gpt2_layer(cfg: GPTConfig, i: int) -> list[Entry]:
    # GPT-2 always has biases outside (zeros stand for "none"; see ``zero_biases``)
    names = {"ln_1": ("attn_norm", False), "attn.c_attn": ("attn_qkv", True), "attn.c_proj": ("attn_output", True),
             "ln_2": ("ffn_norm", False), "mlp.c_fc": ("ffn_up", True), "mlp.c_proj": ("ffn_down", True)}  # fmt: skip
    out = []
    for ours, (gguf, conv) in names.items():
        for s in ("weight", "bias"):
            key = f"transformer.h.{i}.{ours}.{s}"
            out.append(Entry(key, key, f"blk.{i}.{gguf}.{s}", conv1d=conv and s == "weight"))
    return out


def _llama_layer(cfg: GPTConfig, i: int, arch: str) -> list[Entry]:
    src, dst, blk = f"transformer.h.{i}.", f"model.layers.{i}.", f"blk.{i}."
    permute = arch == "llama"  # GGUF "llama" rotates adjacent pairs; "qwen2" rotates halves, as we do
    out = [Entry(src + "ln_1.weight", dst + "input_layernorm.weight", blk + "attn_norm.weight"),
           Entry(src + "ln_2.weight", dst + "post_attention_layernorm.weight", blk + "ffn_norm.weight")]  # fmt: skip
    for s in ("weight", "bias"):
        if s == "bias" and not (cfg.bias or cfg.qkv_bias):
            continue
        for part, hf, gguf in (
            ("q", "q_proj", "attn_q"),
            ("k", "k_proj", "attn_k"),
            ("v", "v_proj", "attn_v"),
        ):
            out.append(Entry(src + f"attn.c_attn.{s}", dst + f"self_attn.{hf}.{s}", blk + f"{gguf}.{s}", part=part,
                             rope=part if permute and part != "v" else None))  # fmt: skip
        if s == "bias" and not cfg.bias:
            continue
        out += [Entry(src + f"attn.c_proj.{s}", dst + f"self_attn.o_proj.{s}", blk + f"attn_output.{s}"),
                Entry(src + f"mlp.c_fc.{s}", dst + f"mlp.gate_proj.{s}", blk + f"ffn_gate.{s}", part="gate"),
                Entry(src + f"mlp.c_fc.{s}", dst + f"mlp.up_proj.{s}", blk + f"ffn_up.{s}", part="up"),
                Entry(src + f"mlp.c_proj.{s}", dst + f"mlp.down_proj.{s}", blk + f"ffn_down.{s}")]  # fmt: skip
    return out


def part_rows(cfg: GPTConfig, part: str) -> tuple[int, int]:
    """``(first row, number of rows)`` of a part inside its fused tensor."""
    hs, nh, nkv, hidden = cfg.head_size, cfg.n_head, cfg.kv_heads, cfg.hidden_size
    return {"q": (0, nh * hs), "k": (nh * hs, nkv * hs), "v": ((nh + nkv) * hs, nkv * hs),
            "gate": (0, hidden), "up": (hidden, hidden)}[part]  # fmt: skip


def interleave_rope_rows(w, n_heads: int):
    """Each head's rows from rotate-half order to adjacent pairs: [0, h, 1, h+1, ...] with h = hs/2.
    ``w``: (n_heads * hs, ...) weight or bias of a q or k projection (numpy or torch)."""
    hs = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hs // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def halve_rope_rows(w, n_heads: int):
    """The inverse of ``interleave_rope_rows``: adjacent pairs back to rotate-half order."""
    hs = w.shape[0] // n_heads
    return w.reshape(n_heads, hs // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _heads(cfg: GPTConfig, rope: str) -> int:
    return cfg.n_head if rope == "q" else cfg.kv_heads


def to_outside(state: Mapping, cfg: GPTConfig, arch: str, fmt: str) -> dict:
    """Our state dict -> ``{outside name: tensor}`` for ``fmt`` "hf" or "gguf" (views; copy before writing)."""
    out = {}
    for e in entries(cfg, arch):
        if e.ours not in state:
            if arch == "gpt2" and (e.ours.endswith(".bias")):
                continue  # filled with zeros by zero_biases
            raise KeyError(e.ours)
        w = state[e.ours]
        if e.part is not None:
            first, n = part_rows(cfg, e.part)
            w = w[first : first + n]
        if fmt == "hf" and e.conv1d:
            w = w.T
        if fmt == "gguf" and e.rope:
            w = interleave_rope_rows(w, _heads(cfg, e.rope))
        out[_name(e, fmt)] = w
    return out


def zero_biases(out: dict, cfg: GPTConfig, fmt: str, zeros: Callable) -> dict:
    """GPT-2's block always has biases outside (transformers' and llama.cpp's GPT-2 require them): a model
    without biases gets zeros, which mean "none". ``zeros(n)`` makes a vector of n zeros."""
    table = entries(cfg, "gpt2")
    transposed = {_name(e, fmt) for e in table if e.conv1d and fmt == "hf"}  # stored (in, out)
    for e in table:
        name = _name(e, fmt)
        if name.endswith(".bias") and name not in out:
            wname = name.removesuffix("bias") + "weight"
            out[name] = zeros(out[wname].shape[1 if wname in transposed else 0])
    return out


def from_outside(get: Callable[[str], object], names: set[str], cfg: GPTConfig, arch: str, fmt: str,
                 where: str = "model"):  # fmt: skip
    """Outside tensors -> ``(our name, tensor)`` pairs, one fused tensor at a time (so an import holds at most one
    layer's pieces besides the model). ``get(name)`` returns one torch tensor, read when asked; ``names`` are
    the names present. Missing tensors are one ``UserError`` naming them; parts are concatenated back into
    our fused tensors; GPT-2's biases are kept as they are (zeros mean "none")."""
    import torch

    want = entries(cfg, arch)
    missing = [_name(e, fmt) for e in want if _name(e, fmt) not in names]
    if missing:
        raise UserError(f"{where}: tensors missing for a {arch} model with this config: {missing[:5]}"
                        f"{' ...' if len(missing) > 5 else ''}")  # fmt: skip
    groups: dict[str, list[Entry]] = {}
    for e in want:
        groups.setdefault(e.ours, []).append(e)
    for key, group in groups.items():
        pieces = []
        for e in group:
            w = get(_name(e, fmt))
            if fmt == "hf" and e.conv1d:
                w = w.T
            if fmt == "gguf" and e.rope:
                w = halve_rope_rows(w, _heads(cfg, e.rope))
            pieces.append((part_rows(cfg, e.part)[0] if e.part else 0, w))
        if len(pieces) == 1:
            yield key, pieces[0][1].contiguous()
        else:
            yield key, torch.cat([w for _, w in sorted(pieces, key=lambda p: p[0])], dim=0)


def _name(e: Entry, fmt: str) -> str:
    return e.hf if fmt == "hf" else e.gguf


def hf_stored_names(names, arch: str) -> dict[str, str]:
    """Map-name -> stored name for a Hugging Face state dict. GPT2Model stores ``h.0...`` where GPT2LMHeadModel
    stores ``transformer.h.0...``; old GPT-2 checkpoints keep the causal mask as a buffer (skipped)."""
    if arch != "gpt2":
        return {n: n for n in names if not n.endswith("rotary_emb.inv_freq")}
    out = {}
    for n in names:
        if n.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        out[n if n.startswith(("transformer.", "lm_head.")) else "transformer." + n] = n
    return out


def from_hf_state(hf_state: Mapping, cfg: GPTConfig, arch: str) -> dict:
    """A transformers state dict (in memory) -> our state dict."""
    stored = hf_stored_names(hf_state, arch)
    if cfg.tie_embeddings:
        stored.pop("lm_head.weight", None)
    return dict(from_outside(lambda n: hf_state[stored[n]], set(stored), cfg, arch, "hf"))


def unused(names: set[str], cfg: GPTConfig, arch: str, fmt: str) -> list[str]:
    """Outside tensors the map does not read (a rotary frequency table is read separately)."""
    known = {_name(e, fmt) for e in entries(cfg, arch)}
    return sorted(n for n in names if n not in known)


def as_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float32)
