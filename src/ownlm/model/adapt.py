"""How a fine-tuning run trains an existing model: LoRA adapters, the last blocks only, or everything.

``AdaptConfig`` is the one declaration of these settings: ``ownlm finetune sft``, ``classify`` and ``dpo`` and
``ownlm build`` nest it as their ``adapt`` section (flat flags: ``--lora-rank``, ``--train-layers``,
``--base-dtype``), and ``LoRAConfig`` (``lora.py``, the adapter file's schema) takes its defaults from it;
``lora.adapt_model`` applies it to a model and ``finetune.common.store_frozen`` stores the frozen weights in
``--base-dtype``. The default is full fine-tuning: ``--lora-rank 0`` (no adapters) and ``--train-layers all``.

>>> AdaptConfig().lora_rank  # full fine-tuning
0
>>> AdaptConfig(lora_rank=4, lora_targets=["attn", "mlp"]).check()
>>> AdaptConfig(lora_rank=4, train_layers="2").check()
Traceback (most recent call last):
ownlm.errors.UserError: give either --lora-rank (adapters) or --train-layers (partial fine-tuning), not both
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ownlm.config import opt, validate
from ownlm.errors import UserError

# --base-dtype: how the frozen weights are stored (what is trained stays fp32). The one table of choices: every
# one but fp32 runs under bf16 autocast; `finetune.common.store_frozen` says how each is stored.
BaseDtype = Literal["fp32", "bf16", "int8"]
BASE_DTYPES = get_args(BaseDtype)


@dataclass(kw_only=True)
class AdaptConfig:
    """adapt: LoRA adapters or partial fine-tuning (default: the whole model trains)"""

    lora_rank: int = opt(
        0,
        help="train LoRA adapters of this rank instead of the full model (0: no adapters)",
        bounds="[-1, inf)",
    )  # -1 (automatic) only as `ownlm build`'s default: rank 8 with --base, else none
    lora_alpha: float = opt(
        16.0, help="LoRA scale numerator: updates are scaled by alpha / rank", bounds="(0, inf)"
    )
    lora_targets: list[str] = opt(
        ["attn"], help="layers that get adapters: attn, mlp, all, or names like c_fc"
    )
    lora_dropout: float = opt(0.0, help="dropout on the adapters' input", bounds="[0, 1)")
    train_layers: str = opt(
        "all",
        help="partial fine-tuning: 'all', or N = the last N blocks + final norm + head (0: only those two)",
    )
    base_dtype: BaseDtype = opt(
        "fp32",
        help="with --lora-rank or --train-layers: keep the frozen weights in bf16 (half the memory) or int8 (a "
        "quarter, one scale per output row); runs under --dtype bf16; what is trained stays fp32",
    )

    def check(self) -> None:
        """A ``UserError`` for values no run can use: each number's bounds, and adapters with partial training."""
        validate(self)
        if self.lora_rank < 0:
            raise UserError(
                f"--lora-rank must be >= 0, got {self.lora_rank} (-1, automatic, is ownlm build's)"
            )
        if self.lora_rank and self.train_layers != "all":
            raise UserError(
                "give either --lora-rank (adapters) or --train-layers (partial fine-tuning), not both"
            )

    def training_dtype(self, dtype: str) -> str:
        """The run's ``--dtype`` given ``--base-dtype``: a frozen base stored in bf16 needs some weights frozen and
        the run under bf16 autocast (``auto`` becomes ``bf16``); a ``UserError`` otherwise. One rule for every
        command that offers the flag (sft, classify, dpo).

        >>> AdaptConfig(lora_rank=4, base_dtype="bf16").training_dtype("auto")
        'bf16'
        >>> AdaptConfig(base_dtype="bf16").training_dtype("auto")
        Traceback (most recent call last):
        ownlm.errors.UserError: --base-dtype bf16 stores the frozen weights: give --lora-rank R (or --train-layers N) so that some are frozen
        """
        if self.base_dtype == "fp32":
            return dtype
        if not self.lora_rank and self.train_layers == "all":
            raise UserError(f"--base-dtype {self.base_dtype} stores the frozen weights: give --lora-rank R (or "
                            "--train-layers N) so that some are frozen")  # fmt: skip
        if dtype not in ("auto", "bf16"):
            raise UserError(f"--base-dtype {self.base_dtype} runs under bf16 autocast: use --dtype bf16 (or auto), "
                            f"not {dtype}")  # fmt: skip
        return "bf16"
