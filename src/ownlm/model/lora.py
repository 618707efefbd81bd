"""LoRA adapters (Hu et al. 2021) and partial fine-tuning for the GPT.

LoRA keeps a pretrained weight W (out, in) frozen and learns a low-rank update beside it:

    y = x W^T + b  +  dropout(x) A^T B^T * (alpha / rank)        A: (rank, in), B: (out, rank)

B starts at zero, so an adapted model starts out computing exactly what the base model computes; only A and B
(a few percent of the parameters, or less) get gradients and optimiser state. ``merge_lora`` folds B A * scale
into W afterwards, which gives a plain GPT again with no extra cost at inference.

``LoRALinear`` subclasses ``nn.Linear`` and keeps its ``weight``/``bias`` names, so an adapted model's state dict
is the base model's keys plus ``...lora_A``/``...lora_B``: a base checkpoint loads into it unchanged, and the
adapter is saved on its own (``adapter.safetensors`` + ``adapter.json``, a few MB instead of the whole model).

Partial fine-tuning (``freeze_for_train_layers``) is the other cheap option, as in Raschka's *Build a Large
Language Model (From Scratch)*: train only the last few blocks, the final norm and the output head.

>>> cfg = LoRAConfig(rank=8, targets=["attn"])
>>> names = apply_lora(model, cfg)  # in place; everything else is frozen  # doctest: +SKIP
>>> trainable_summary(model)        # doctest: +SKIP
'trainable 0.29M of 10.4M parameters (2.8%)'
>>> save_adapter("out/adapter", model, cfg)  # doctest: +SKIP
>>> merge_lora(model)                        # a plain GPT again  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ownlm.errors import UserError
from ownlm.io import read_json, write_bytes, write_json
from ownlm.model.adapt import AdaptConfig
from ownlm.model.kinds import unwrap
from ownlm.model.quantize import dequantize_rows, int8_linear

FORMAT = "ownlm-lora"
VERSION = 1
WEIGHTS = "adapter.safetensors"
CONFIG = "adapter.json"

# Target groups for --lora-targets; anything else is taken as a layer-name suffix ("c_attn", "mlp.c_proj").
# The original paper adapts the query and value projections; ours are fused in c_attn, so "attn" adapts the
# whole qkv projection and the attention output projection.
TARGETS = {"attn": ("attn.c_attn", "attn.c_proj"), "mlp": ("mlp.c_fc", "mlp.c_proj")}
TARGETS_HELP = "attn, mlp, all, or layer names such as c_attn, attn.c_proj, mlp.c_fc"
EXCLUDED = ("lm_head", "wte")  # the output head (the token embedding, when tied) is never adapted
_DEFAULTS = AdaptConfig()  # the one declaration of the LoRA settings' defaults


@dataclass
class LoRAConfig:
    rank: int  # r: width of the low-rank update (no default: `--lora-rank 0`, the default, means no adapters)
    alpha: float = _DEFAULTS.lora_alpha  # the update is scaled by alpha / rank: a new rank needs no new rate
    targets: list[str] = field(
        default_factory=lambda: list(_DEFAULTS.lora_targets)
    )  # see TARGETS; "a,b" split
    dropout: float = _DEFAULTS.lora_dropout  # on the adapter's input only

    def __post_init__(self):
        if isinstance(self.targets, str):
            self.targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        else:
            self.targets = [str(t) for t in self.targets]
        self.validate()

    def validate(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise UserError(f"--lora-rank must be a whole number >= 1, got {self.rank!r}")
        if not isinstance(self.alpha, int | float) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise UserError(f"--lora-alpha must be a number > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--lora-dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets:
            raise UserError(f"--lora-targets is empty; give {TARGETS_HELP}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoRAConfig:
        """The inverse of ``to_dict``; unknown keys are a ``UserError`` (a newer or damaged file)."""
        if not isinstance(d, dict):
            raise UserError(f"LoRA config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown LoRA config keys {unknown} (known: {sorted(known)})")
        return cls(**d)


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a trainable low-rank update; ``weight`` and ``bias`` keep their names and roles.

    >>> layer = LoRALinear(32, 96, rank=4, alpha=8.0)
    >>> layer.lora_A.shape, layer.lora_B.shape  # B is zero: the layer starts as the plain Linear
    (torch.Size([4, 32]), torch.Size([96, 4]))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int,
                 alpha: float = _DEFAULTS.lora_alpha, dropout: float = 0.0, device=None, dtype=None):  # fmt: skip
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.config: LoRAConfig | None = None  # the adapter set this layer belongs to (``lora_config``)
        self._new_lora_parameters()

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, rank: int, alpha: float = _DEFAULTS.lora_alpha, dropout: float = 0.0
    ) -> LoRALinear:
        """Wrap ``linear``'s own weight and bias (the same Parameter objects, no copy) with a fresh adapter."""
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, rank=rank,
                  alpha=alpha, dropout=dropout, device="meta",
                  dtype=w.dtype if w.is_floating_point() else None)  # fmt: skip
        new.weight, new.bias = linear.weight, linear.bias
        if (
            getattr(linear, "weight_scale", None) is not None
        ):  # an int8 base (``quantize.quantize_frozen_linear``)
            new.register_buffer("weight_scale", linear.weight_scale)
        new._new_lora_parameters()  # on the base weight's device now
        if hasattr(linear, "residual_scale"):  # GPT.init_weights reads it
            new.residual_scale = linear.residual_scale
        new.train(linear.training)
        return new

    def _new_lora_parameters(self) -> None:
        # fp32 over a bf16 (or int8) frozen base, as QLoRA keeps its adapters over a 4-bit one
        dtype = self.weight.dtype if self.weight.dtype in (torch.float32, torch.float64) else torch.float32
        kw = dict(device=self.weight.device, dtype=dtype)
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.empty(self.out_features, self.rank, **kw))  # (out, r)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A as ``nn.Linear`` initialises its weights (Kaiming-uniform, as peft does), B zero."""
        if self.lora_A.is_meta:
            return
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == torch.int8:  # the frozen base stored as int8 (--base-dtype int8)
            y = int8_linear(x, self.weight, self.weight_scale, self.bias)
        else:
            y = F.linear(x, self.weight, self.bias)  # (..., out): the frozen base
        h = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        return y + F.linear(h, self.lora_B) * self.scale  # (..., out)

    def delta_weight(self) -> torch.Tensor:
        """B A * scale, (out, in), in float32: what ``merge`` adds to the weight."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding this layer's weight (updated in place) with the adapter folded in."""
        with torch.no_grad():
            if self.weight.dtype == torch.int8:  # an int8 base: the merged layer is float32
                self.weight = nn.Parameter(dequantize_rows(self.weight, self.weight_scale) + self.delta_weight(),
                                           requires_grad=False)  # fmt: skip
                del self.weight_scale
            else:
                self.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight, plain.bias = self.weight, self.bias
        if hasattr(self, "residual_scale"):
            plain.residual_scale = self.residual_scale
        plain.train(self.training)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


# ---------------------------------------------------------------------------------------------- adapters


def _is_lora_key(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def _resolve_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules the targets select, in model order; each target must match one."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    candidates = [n for n in linears if not any(n == e or n.endswith("." + e) for e in EXCLUDED)]
    chosen: set[str] = set()
    for target in targets:
        if target in EXCLUDED:
            raise UserError(f"--lora-targets {target}: the output head and token embedding take no adapter; "
                            f"give {TARGETS_HELP}")  # fmt: skip
        suffixes = (
            [s for group in TARGETS.values() for s in group] if target == "all"
            else TARGETS.get(target, (target,))
        )  # fmt: skip
        hits = [n for n in candidates if any(n == s or n.endswith("." + s) for s in suffixes)]
        if not hits:
            raise UserError(
                f"--lora-targets {target}: matches no linear layer of this model; give {TARGETS_HELP}"
            )
        chosen.update(hits)
    return [n for n in candidates if n in chosen]


def _check_rank(model: nn.Module, names: list[str], rank: int) -> None:
    for name in names:
        m = model.get_submodule(name)
        if rank > min(m.in_features, m.out_features):
            raise UserError(f"--lora-rank {rank} is larger than layer {name} ({m.in_features} x "
                            f"{m.out_features}); give a rank <= {min(m.in_features, m.out_features)}")  # fmt: skip


def _replace(model: nn.Module, names: list[str], cfg: LoRAConfig) -> None:
    """Swap each named ``nn.Linear`` for a ``LoRALinear`` over the same weights; freeze all but the adapters."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = LoRALinear.from_linear(getattr(parent, child), cfg.rank, cfg.alpha, cfg.dropout)
        layer.config = cfg
        setattr(parent, child, layer)
    for pname, p in model.named_parameters():
        p.requires_grad_(_is_lora_key(pname))


def lora_modules(model: nn.Module) -> list[str]:
    """Names of the ``LoRALinear`` modules in ``model``, in model order."""
    return [n for n, m in unwrap(model).named_modules() if isinstance(m, LoRALinear)]


def has_lora(model: nn.Module) -> bool:
    """Whether ``model``'s module tree holds LoRA adapters (the one test for it; no parameter-name matching)."""
    return any(isinstance(m, LoRALinear) for m in unwrap(model).modules())


def lora_config(model: nn.Module) -> LoRAConfig | None:
    """The ``LoRAConfig`` the model's adapters were made with (stored on each ``LoRALinear``), or None."""
    for m in unwrap(model).modules():
        if isinstance(m, LoRALinear):
            return m.config or LoRAConfig(rank=m.rank, alpha=m.alpha, dropout=m.lora_dropout.p,
                                          targets=lora_modules(model))  # fmt: skip
    return None


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Put an adapter on every linear layer ``cfg.targets`` selects (never the output head or embedding), in
    place, and freeze every other parameter; each adapter layer keeps ``cfg`` (``lora_config`` reads it).
    Returns the adapted module names. Call before ``torch.compile`` and before building the optimiser (which
    should take only ``requires_grad`` parameters).

    >>> apply_lora(model, LoRAConfig(rank=4, targets=["c_attn"]))  # doctest: +SKIP
    ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']
    """
    cfg.validate()
    model = unwrap(model)
    if lora_modules(model):
        raise UserError("this model already has LoRA adapters; merge them (ownlm finetune merge) or start "
                        "from the base model")  # fmt: skip
    names = _resolve_targets(model, cfg.targets)
    _check_rank(model, names, cfg.rank)
    _replace(model, names, cfg)
    return names


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, keyed by full parameter name (``transformer.h.0.attn.c_attn.lora_A``)."""
    return {k: v for k, v in unwrap(model).state_dict().items() if _is_lora_key(k)}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the adapter tensors: the keys of the model before ``apply_lora``."""
    return {k: v for k, v in unwrap(model).state_dict().items() if not _is_lora_key(k)}


def save_adapter(directory, model: nn.Module, cfg: LoRAConfig | None = None) -> Path:
    """Write ``adapter.safetensors`` and ``adapter.json`` into ``directory``, each atomically; return the folder.
    ``cfg`` defaults to the one the adapters carry.

    >>> save_adapter("out/run/step_000500", model)  # doctest: +SKIP
    """
    model = unwrap(model)
    modules = lora_modules(model)
    if not modules:
        raise ValueError("save_adapter: the model has no LoRA adapters (call apply_lora first)")
    cfg = cfg or lora_config(model)
    ranks = {model.get_submodule(n).rank for n in modules}
    if ranks != {cfg.rank}:
        raise ValueError(
            f"save_adapter: the model's adapters have rank {sorted(ranks)}, the config says {cfg.rank}"
        )
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model).items()}
    write_bytes(directory / WEIGHTS, save(state, metadata={"format": FORMAT}))
    write_json(directory / CONFIG, {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
                                    "modules": modules})  # fmt: skip
    return directory


def read_adapter_config(directory) -> tuple[LoRAConfig, list[str]]:
    """``(LoRAConfig, module names)`` from ``directory/adapter.json``, with format and version checked."""
    path = Path(directory) / CONFIG
    meta = read_json(path, what="LoRA adapter config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not an ownlm LoRA adapter (expected format '{FORMAT}')")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{path}: adapter format version {version} is newer than this ownlm understands "
                        f"(<= {VERSION}); upgrade ownlm")  # fmt: skip
    modules = meta.get("modules")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) for m in modules):
        raise UserError(f"{path}: 'modules' must be a non-empty list of layer names")
    try:
        cfg = LoRAConfig.from_dict(meta.get("config"))
    except (UserError, TypeError) as e:
        raise UserError(f"{path}: bad LoRA config: {e}") from None
    return cfg, modules


def load_adapter(directory, model: nn.Module) -> LoRAConfig:
    """Adapt a plain GPT as ``directory/adapter.json`` says and load ``adapter.safetensors`` into it (in place;
    non-adapter parameters frozen; each adapter layer keeps the config). Everything is checked before the model
    is touched.

    >>> cfg = load_adapter("out/run/step_000500", model)  # doctest: +SKIP
    """
    directory = Path(directory)
    cfg, names = read_adapter_config(directory)
    path = directory / WEIGHTS
    if not path.is_file():
        raise UserError(f"{path}: LoRA adapter weights not found")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: cannot read adapter weights ({e})") from None
    model = unwrap(model)
    if lora_modules(model):
        raise UserError(
            f"{directory}: the model already has LoRA adapters; load the adapter onto the base model"
        )
    linears = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
    missing = [n for n in names if n not in linears]
    if missing:
        raise UserError(f"{directory / CONFIG}: layers {missing[:3]} are not linear layers of this model "
                        "(was the adapter trained on another base model?)")  # fmt: skip
    expected = {}
    for n in names:
        m = linears[n]
        expected[f"{n}.lora_A"] = (cfg.rank, m.in_features)
        expected[f"{n}.lora_B"] = (m.out_features, cfg.rank)
    if set(state) != set(expected):
        absent, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise UserError(
            f"{path}: tensors do not match {CONFIG} (missing {absent[:3]}, unexpected {extra[:3]})"
        )
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise UserError(f"{path}: {k} has shape {tuple(state[k].shape)}, but rank {cfg.rank} in {CONFIG} "
                            f"and this model need {shape} (an adapter for another base model, or files from "
                            "different runs?)")  # fmt: skip
    _check_rank(model, names, cfg.rank)
    _replace(model, names, cfg)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
    return cfg


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W += B A * scale) and turn each ``LoRALinear`` back into a plain
    ``nn.Linear``, in place; returns ``model``. ``requires_grad`` flags of the remaining parameters are left
    as they were (``apply_lora`` froze them).

    >>> merge_lora(model).state_dict().keys() == plain_gpt.state_dict().keys()  # doctest: +SKIP
    True
    """
    inner = unwrap(model)
    for name in lora_modules(inner):
        parent_name, _, child = name.rpartition(".")
        parent = inner.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return model


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    if n >= 1e5:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}K"
    return str(n)


def trainable_summary(model: nn.Module) -> str:
    """One line for the log: ``"trainable 0.29M of 10.4M parameters (2.8%)"`` (tied weights counted once)."""
    params = list(unwrap(model).parameters())  # .parameters() yields a shared (tied) tensor once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    pct = 100.0 * trainable / max(total, 1)
    share = f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"
    return f"trainable {_count(trainable)} of {_count(total)} parameters ({share})"


# ---------------------------------------------------------------------------------------------- the adapt section


def lora_config_of(adapt: AdaptConfig) -> LoRAConfig | None:
    """The ``LoRAConfig`` an ``adapt`` section asks for, or None (``--lora-rank 0``: no adapters)."""
    if not adapt.lora_rank:
        return None
    return LoRAConfig(rank=adapt.lora_rank, alpha=adapt.lora_alpha, targets=list(adapt.lora_targets),
                      dropout=adapt.lora_dropout)  # fmt: skip


def adapt_model(model: nn.Module, adapt: AdaptConfig, resume: bool = False) -> None:
    """LoRA adapters, or freezing all but the last blocks, as the ``adapt`` section asks (in place). A resumed
    run's adapters come with its checkpoint (and freeze the base as they load); its partial training is frozen
    again here."""
    adapt.check()
    if adapt.lora_rank:
        if not resume:
            apply_lora(model, lora_config_of(adapt))
    elif adapt.train_layers != "all":
        freeze_for_train_layers(model, adapt.train_layers)


# ---------------------------------------------------------------------------------------------- partial


def freeze_for_train_layers(model: nn.Module, n: int | str) -> None:
    """Partial fine-tuning: train only the last ``n`` transformer blocks, the final norm (``ln_f``) and the
    output head; freeze the rest. ``"all"`` (or ``n >= n_layer``) trains everything; ``0`` only ``ln_f`` and
    the head. With tied embeddings the head's weight *is* the token embedding (``wte``), so ``wte`` stays
    trainable too; with untied embeddings ``wte`` (and learned positions) are frozen.

    >>> freeze_for_train_layers(model, 2)  # last 2 blocks + ln_f + lm_head  # doctest: +SKIP
    """
    if isinstance(n, str):
        text = n.strip().lower()
        if text == "all":
            n = None
        elif text.isdigit():
            n = int(text)
        else:
            raise UserError(f"--train-layers must be 'all' or a whole number >= 0, got {n!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise UserError(f"--train-layers must be 'all' or a whole number >= 0, got {n!r}")
    model = unwrap(model)
    blocks = model.transformer.h
    if n is None or n >= len(blocks):
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    for block in blocks[len(blocks) - n :]:
        block.requires_grad_(True)
    model.transformer.ln_f.requires_grad_(True)
    model.lm_head.requires_grad_(True)  # tied: this is transformer.wte.weight as well
