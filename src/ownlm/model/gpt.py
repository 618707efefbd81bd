"""A decoder-only transformer (GPT), built from named parts, with GPT-2's parameter names.

    idx ─▶ wte (+ wpe) ─▶ drop ─▶ [ Block ] × n_layer ─▶ ln_f ─▶ lm_head ─▶ logits
                                     │
                  x + attn(ln_1(x)) ─┴─ x + mlp(ln_2(x))        (pre-norm residual blocks, GPT-2 style)

The parameter names (``transformer.wte``, ``transformer.h.0.attn.c_attn``, ``lm_head`` ...) follow GPT-2 so an
OpenAI/Hugging Face checkpoint maps onto this model with a key table and four transposes (see ``gpt2.py``).
Options beyond GPT-2: RoPE or sinusoidal positions, RMSNorm, SwiGLU or ReLU² MLPs, grouped-query attention,
bias off, untied embeddings. Shapes: B batch, T time, C channels (n_embd), nh heads, nkv key/value heads,
hs head size.

>>> cfg = config_from_preset("tiny", vocab_size=256)
>>> model = GPT(cfg)
>>> logits, loss = model(torch.zeros(1, 8, dtype=torch.long))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ownlm.errors import UserError
from ownlm.model.head_loss import head_loss_sum


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50,257 padded up to a multiple of 64 (faster matmuls)
    block_size: int = 1024  # longest context the model is trained on
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # grouped-query attention: n_head // n_kv_head queries share a k/v head
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: yes)
    pos: Literal["learned", "rope", "sinusoidal"] = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "swiglu", "relu2"] = "gelu"  # "gelu" is GPT-2's tanh approximation ("gelu_new")
    tie_embeddings: bool = True  # lm_head shares its weight with wte (GPT-2: yes)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    mlp_hidden: int | None = None  # None: 4 * n_embd, or 8/3 * n_embd rounded up to 64 for swiglu
    qkv_bias: bool = False  # biases on the q/k/v projection even when ``bias`` is off (Qwen2)
    rope_scaling: dict | None = None  # {"rope_type": "linear" | "llama3" | "factors", ...}; see rope_inv_freq

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check the shape fields fit together; a ``UserError`` names the field to change."""
        from ownlm.config import check_number

        # each number by the one rule (a config.json edited by hand: dropout "x", n_layer 1e400, ...)
        for name, bounds, integer in [(n, "[1, inf)", True) for n in _SIZES] + [
            (n, b, False) for n, b in _FLOATS.items()
        ]:
            if getattr(self, name) is not None:
                setattr(self, name, check_number(getattr(self, name), name, bounds, integer=integer))
        for name in ("bias", "tie_embeddings", "qkv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        kv = self.kv_heads
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd, kv) < 1:
            raise UserError(f"model sizes must be positive: {self}")
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_head % kv:
            raise UserError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({kv})")
        if self.pos == "rope" and self.head_size % 2:
            raise UserError(f"RoPE needs an even head size, got n_embd/n_head = {self.head_size}")
        if self.rope_scaling is not None:
            rope_inv_freq(self.head_size, self.rope_theta, self.rope_scaling)  # checks the section
        for name, allowed in (("pos", ("learned", "rope", "sinusoidal")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", ("gelu", "swiglu", "relu2"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_size(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":  # same parameter count as a 4x MLP with two matrices (Shazeer 2020)
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown model config keys {unknown} (known: {sorted(known)})")
        return cls(**d)


_SIZES = (
    "vocab_size",
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "n_kv_head",
    "mlp_hidden",
)  # integers >= 1
_FLOATS = {"dropout": "[0, 1)", "rope_theta": "(0, inf)", "norm_eps": "(0, 1)"}

# Shapes only; vocab_size comes from the tokenizer unless the preset is a real GPT-2 size.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),  # nanoGPT's CPU shakespeare shape
    "mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),  # nanoGPT's shakespeare-char shape
    "small": dict(n_layer=8, n_head=8, n_embd=512, block_size=512),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),  # 1558M
}


def config_from_preset(name: str, **overrides) -> GPTConfig:
    """A named size; ``overrides`` win. ``config_from_preset("gpt2").n_embd == 768``."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset '{name}' (known: {', '.join(PRESETS)})")
    return GPTConfig(**{**PRESETS[name], **overrides})


def config_from_depth(depth: int, **overrides) -> GPTConfig:
    """The one size dial (after nanochat): width = 64 * depth, one 64-wide head per 64 channels.

    depth 12 is GPT-2 small's shape; ``config_from_depth(4).n_embd == 256``.
    """
    if depth < 1:
        raise UserError(f"depth must be >= 1, got {depth}")
    n_embd = 64 * depth
    return GPTConfig(**{"n_layer": depth, "n_embd": n_embd, "n_head": n_embd // 64, **overrides})


# ---------------------------------------------------------------------------------------------- parts


class TokenEmbedding(nn.Embedding):
    """Token id -> vector (``transformer.wte``); with tied embeddings also the output head's weight."""


class LearnedPositions(nn.Embedding):
    """A trained vector per position (GPT-2's ``transformer.wpe``), added to the token embedding."""

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return super().forward(pos)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos position vectors ("Attention Is All You Need" §3.5); no parameters."""

    def __init__(self, block_size: int, n_embd: int):
        super().__init__()
        self.block_size, self.n_embd = block_size, n_embd
        self.register_buffer("table", self._table(), persistent=False)

    def _table(self) -> torch.Tensor:
        pos = torch.arange(self.block_size, dtype=torch.float32)[:, None]  # (T, 1)
        freq = torch.exp(torch.arange(0, self.n_embd, 2) * (-math.log(10000.0) / self.n_embd))  # (C/2,)
        table = torch.zeros(self.block_size, self.n_embd)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: self.n_embd // 2])
        return table  # (T, C)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return self.table[pos]


ROPE_SCALINGS = ("linear", "llama3", "factors")


def rope_inv_freq(head_size: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """RoPE's angle per position for each of the hs/2 rotated pairs: theta^(-2i/hs), then rescaled.

    ``scaling`` (what long-context models carry): ``linear`` divides every frequency by ``factor``; ``llama3``
    (Llama 3.1/3.2) divides the low frequencies by ``factor``, keeps the high ones and blends between by
    wavelength (``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``); ``factors``
    divides frequency i by ``factors[i]`` (the table GGUF files store as ``rope_freqs.weight``).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    try:
        if kind == "linear":
            return inv_freq / float(scaling["factor"])
        if kind == "factors":
            factors = torch.tensor(scaling["factors"], dtype=torch.float32)
            if factors.shape != inv_freq.shape:
                raise UserError(
                    f"rope_scaling factors: {factors.numel()} values for {inv_freq.numel()} frequencies"
                )
            return inv_freq / factors
        if kind == "llama3":
            factor, lo, hi = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
            old = float(scaling["original_max_position_embeddings"])
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > old / lo, inv_freq / factor, inv_freq)  # long waves slowed down
            smooth = (old / wavelen - lo) / (hi - lo)
            blended = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wavelen >= old / hi) & (wavelen <= old / lo)
            return torch.where(medium, blended, scaled)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"rope_scaling {kind!r} needs numeric {e} ({scaling})") from None
    raise UserError(f"rope_scaling type {kind!r} is not supported (supported: {', '.join(ROPE_SCALINGS)})")


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer): rotates q and k by a position-dependent angle,
    so attention scores depend on relative offsets. Rotate-half layout, as in GPT-NeoX/Llama."""

    def __init__(self, block_size: int, head_size: int, theta: float, scaling: dict | None = None):
        super().__init__()
        self.block_size, self.head_size, self.theta, self.scaling = block_size, head_size, theta, scaling
        cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = rope_inv_freq(self.head_size, self.theta, self.scaling)  # (hs/2,)
        angles = torch.outer(torch.arange(self.block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
        return angles.cos(), angles.sin()

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[pos], self.sin[pos]  # each (T, hs/2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, hs); cos/sin: (T, hs/2), or (B, T, hs/2) when each row has its own positions."""
    x1, x2 = x.chunk(2, dim=-1)  # each (B, heads, T, hs/2)
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hs/2): broadcast over heads
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def make_norm(cfg: GPTConfig) -> nn.Module:
    """LayerNorm (GPT-2) or RMSNorm (Zhang & Sennrich 2019: no mean, no bias; cheaper)."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention through PyTorch's fused SDPA kernel."""

    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_size = cfg.n_head, cfg.kv_heads, cfg.head_size
        # one fused projection for q, k and v: a single matmul instead of three
        qkv_size = (self.n_head + 2 * self.n_kv_head) * self.head_size
        self.c_attn = nn.Linear(cfg.n_embd, qkv_size, bias=cfg.bias or cfg.qkv_bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scale = True  # see GPT.init_weights
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def qkv(self, x: torch.Tensor, rope=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, nh, T, hs), keys and values (B, nkv, T, hs) of ``x`` (B, T, C), rotated when ``rope`` is
        given; the serving engine's batched cache uses it too."""
        B, T, C = x.shape
        hs, nh, nkv = self.head_size, self.n_head, self.n_kv_head
        q, k, v = self.c_attn(x).split([nh * hs, nkv * hs, nkv * hs], dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        return q, k, v

    def forward(self, x: torch.Tensor, rope=None, kv_cache=None, attn_mask=None) -> torch.Tensor:
        B, T, C = x.shape
        nh, nkv = self.n_head, self.n_kv_head
        q, k, v = self.qkv(x, rope)
        mask, causal = None, True
        if kv_cache is not None:  # the cache knows each row's past: it says what every query may see
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nkv, L, hs), L = cached + T
            mask, causal = kv_cache.mask, kv_cache.is_causal
        elif attn_mask is not None:  # (B, 1, T, T): packed examples, causal within each
            mask, causal = attn_mask, False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, **({"enable_gqa": True} if nkv != nh else {}),
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh*hs): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: GELU (GPT-2), SwiGLU (Shazeer 2020, gate and up fused in c_fc) or ReLU²
    (So et al. 2021, Primer)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind, hidden = cfg.mlp, cfg.hidden_size
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden if self.kind == "swiglu" else hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scale = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)  # each (B, T, hidden)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """One transformer layer: pre-norm attention and MLP, each added back onto the residual stream."""

    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope=None, kv_cache=None, attn_mask=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


def segment_positions(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For packed rows: each token's position within its segment (B, T) and the attention mask (B, 1, T, T),
    True where a query may attend: an earlier-or-same position of the same segment.

    >>> segment_positions(torch.tensor([[0, 0, 1, 1, 1]]))[0].tolist()
    [[0, 1, 0, 1, 2]]
    """
    B, T = segments.shape
    ar = torch.arange(T, device=segments.device).expand(B, T)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.cummax(torch.where(starts, ar, torch.zeros_like(ar)), dim=1).values  # segment start of each
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ar - first, (same & causal)[:, None]


# ---------------------------------------------------------------------------------------------- model


class GPT(nn.Module):
    """The language model. ``forward(idx, targets=None, kv_cache=None, loss_mask=None) -> (logits, loss)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        parts = dict(wte=TokenEmbedding(cfg.vocab_size, cfg.n_embd))
        if cfg.pos == "learned":
            parts["wpe"] = LearnedPositions(cfg.block_size, cfg.n_embd)
        elif cfg.pos == "sinusoidal":
            parts["wpe"] = SinusoidalPositions(cfg.block_size, cfg.n_embd)
        parts.update(
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            ln_f=make_norm(cfg),
        )
        self.transformer = nn.ModuleDict(parts)
        self.rope = (
            Rotary(cfg.block_size, cfg.head_size, cfg.rope_theta, cfg.rope_scaling)
            if cfg.pos == "rope"
            else None
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # activation checkpointing (Chen et al. 2016): training keeps one tensor per block, not every
        # intermediate, and recomputes a block's forward during backward — ~30 % more compute, far less memory
        self.checkpoint_activations = False
        # positions whose logits exist at once when checkpointing activations: about 8M logits (32 MB in fp32;
        # the cross-entropy's forward and backward hold a few such tensors), 170 positions of a 49k vocabulary
        self.head_chunk = max(64, (1 << 23) // cfg.vocab_size)
        # scored_only's loss through head_loss_sum (gradient of the logits computed in the forward pass, no fp32
        # logits); False: the plain F.cross_entropy path (the same loss, for comparison)
        self.fused_head_loss = True
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, and residual projections scaled by
        1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth (GPT-2 paper §2.3)."""
        std = 0.02
        for m in self.modules():
            if isinstance(m, nn.Linear):
                s = std / math.sqrt(2 * self.config.n_layer) if getattr(m, "residual_scale", False) else std
                nn.init.normal_(m.weight, mean=0.0, std=s)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, nn.LayerNorm | nn.RMSNorm):
                m.reset_parameters()

    @property
    def _wpe(self) -> nn.Module | None:
        return self.transformer["wpe"] if "wpe" in self.transformer else None

    def reset_buffers(self) -> None:
        """Recompute the fixed position tables (after ``to_empty`` or a block-size change)."""
        wpe = self._wpe
        device = self.transformer.wte.weight.device
        if isinstance(wpe, SinusoidalPositions):
            wpe.table = wpe._table().to(device, wpe.table.dtype)  # keep the dtype the model was cast to
        if self.rope is not None:
            self.rope.cos, self.rope.sin = (t.to(device, self.rope.cos.dtype) for t in self.rope._tables())

    def forward(
        self, idx: torch.Tensor, targets=None, kv_cache=None, loss_mask=None, last_only: bool = False,
        segments=None, reduction: str = "mean", scored_only: bool = False,
    ):  # fmt: skip
        """idx (B, T) token ids -> logits (B, T, vocab); loss = cross-entropy over targets != -100 (and
        loss_mask != 0 when given), the mean or (``reduction="sum"``) the sum. With a ``KVCache`` the T tokens
        continue the cached ones. ``last_only`` computes logits for the last position only, (B, 1, vocab):
        generation needs no more, and the output head is the largest matmul for a long prompt. The cache's rows
        may hold different lengths (the serving engine's sequences): each row then continues at its own
        position.
        ``segments`` (B, T): several examples packed in one row — a token attends only to earlier tokens of its
        own segment, and positions restart at 0 where a segment starts. ``scored_only`` (with targets): the
        output head runs only where a target counts and logits come back as ``None`` — the same loss, cheaper
        when most targets are -100 (fine-tuning on responses)."""
        B, T = idx.shape
        x = self.trunk(idx, kv_cache, segments)  # (B, T, C)
        recompute = self._recompute(kv_cache)
        if last_only and targets is None:
            x = x[:, -1:, :]  # (B, 1, C)
        if targets is not None and scored_only:
            # Fine-tuning scores only the responses: run the output head (the largest matmul with a 50k
            # vocabulary) at the positions whose target counts, not at prompt and padding positions.
            if loss_mask is not None:
                targets = targets.masked_fill(loss_mask == 0, -100)
            keep = targets != -100  # (B, T)
            if recompute and reduction in ("sum", "mean"):
                # the logits of a 50k vocabulary are the largest activation (N x vocab floats): score head_chunk
                # positions at a time and recompute each chunk's logits in the backward pass
                h, t, n = x[keep], targets[keep], self.head_chunk  # (N, C), (N,)
                total = sum(torch.utils.checkpoint.checkpoint(self._head_loss_sum, h[i : i + n], t[i : i + n],
                                                              use_reentrant=False)
                            for i in range(0, len(t), n))  # fmt: skip
                total = total if torch.is_tensor(total) else h.sum() * 0.0  # no scored position
                return None, total / max(len(t), 1) if reduction == "mean" else total
            h, t = self.transformer.ln_f(x[keep]), targets[keep]  # (N, C), (N,), N = scored positions
            if self.fused_head_loss and reduction in ("sum", "mean") and type(self.lm_head) is nn.Linear:
                total = head_loss_sum(h, self.lm_head.weight, t)
                return None, total / max(len(t), 1) if reduction == "mean" else total
            return None, F.cross_entropy(self.lm_head(h).float(), t, reduction=reduction)  # (N, vocab) logits
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            if loss_mask is not None:
                targets = targets.masked_fill(loss_mask == 0, -100)
            loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=-100,
                                   reduction=reduction)  # fmt: skip
        return logits, loss

    def trunk(self, idx: torch.Tensor, kv_cache=None, segments=None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) the residual stream after the last block, before the final norm: the
        part of ``forward`` that every head reads (the language-model head here, a classifier's head in
        ``finetune.classifier``). ``kv_cache`` and ``segments`` as in ``forward``."""
        T = idx.shape[1]
        attn_mask = None
        if kv_cache is not None:  # (T,), or (B, T) when the cache's rows have different lengths
            pos, end = kv_cache.begin(T, idx.device), kv_cache.end
        elif segments is not None:
            (pos, attn_mask), end = segment_positions(segments), T  # (B, T), (B, 1, T, T)
        else:
            pos, end = torch.arange(T, device=idx.device), T  # (T,)
        if end > self.config.block_size:
            raise ValueError(f"{end} positions exceed the model's block_size {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(pos)  # (T, C) broadcast over B, or (B, T, C)
        rope = self.rope(pos) if self.rope is not None else None
        x = self.transformer.drop(x)
        recompute = self._recompute(kv_cache)
        for block in self.transformer.h:
            if recompute:  # keep only each block's input; its inside is recomputed in the backward pass
                x = torch.utils.checkpoint.checkpoint(block, x, rope, None, attn_mask, use_reentrant=False)
            else:
                x = block(x, rope, kv_cache, attn_mask)
        if kv_cache is not None:
            kv_cache.advance(T)
        return x

    def _recompute(self, kv_cache) -> bool:
        """Whether this forward pass checkpoints activations: only when training with gradients, never decoding."""
        return self.checkpoint_activations and self.training and torch.is_grad_enabled() and kv_cache is None

    def _head_loss_sum(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of hidden states h (N, C) against targets (N,) through the final norm and head."""
        return F.cross_entropy(self.lm_head(self.transformer.ln_f(h)).float(), targets, reduction="sum")

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (tied weights once). ``non_embedding`` leaves out position embeddings (as nanoGPT
        does; the token embedding stays in because it is also the output head when tied)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self._wpe, nn.Embedding):
            n -= self._wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N for the matmuls (forward + backward) plus the attention scores,
        12 * n_layer * n_head * head_size * T (PaLM paper, appendix B)."""
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context (e.g. to fine-tune a GPT-2 import on short sequences)."""
        if block_size > self.config.block_size:
            raise ValueError(f"block_size can only shrink ({self.config.block_size} -> {block_size})")
        self.config.block_size = block_size
        wpe = self._wpe
        if isinstance(wpe, LearnedPositions):
            wpe.weight = nn.Parameter(wpe.weight[:block_size].detach().clone())
            wpe.num_embeddings = block_size
        elif isinstance(wpe, SinusoidalPositions):
            wpe.block_size = block_size
        if self.rope is not None:
            self.rope.block_size = block_size
        self.reset_buffers()
