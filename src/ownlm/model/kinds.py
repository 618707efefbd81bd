"""Checkpoint kinds: what a model folder holds, and how to build the module that loads it.

``config.json`` names its kind (``lm``, ``lm+lora``, ``classifier``, ...). The model layer knows only the
language model itself; a task package that wraps the GPT in something else (a classifier head) registers a
``Kind`` here when it is imported, so ``model/`` never imports the tasks above it::

    register(Kind("classifier", module=GPTClassifier, trunk="gpt", build=..., describe=...))

``lm+lora`` is not a kind of its own module: it is an ``lm`` whose module tree holds LoRA adapters
(``ownlm.model.lora``), written as base weights plus an adapter file. Another kind with adapters keeps its
own name (a classifier with LoRA adapters is a ``classifier``).

>>> get("lm").name, get("lm+lora").trunk
('lm', '')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ownlm.errors import UserError


def unwrap(model):
    """The raw module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@dataclass(frozen=True)
class Kind:
    """One kind of checkpoint.

    ``module``: the class a model of this kind is (None: the plain GPT). ``trunk``: the attribute holding the
    GPT inside it ("" for the GPT itself; its parameter names start with ``trunk + "."``).
    ``build(gpt, meta, folder)``: the module around an (empty, meta-device) GPT that ``config.json``'s ``meta``
    describes. ``describe(model)``: the section this kind adds to ``config.json`` (stored under ``name``).
    """

    name: str
    module: type | None = None
    trunk: str = ""
    build: Callable | None = None
    describe: Callable | None = None

    def gpt(self, model):
        """The GPT inside ``model``."""
        return getattr(model, self.trunk) if self.trunk else model

    def prefix(self) -> str:
        return f"{self.trunk}." if self.trunk else ""


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add ``kind`` (a task package calls this when imported); registering the same kind again is harmless."""
    old = _KINDS.get(kind.name)
    if old is not None and old.module is not kind.module:
        raise ValueError(f"checkpoint kind {kind.name!r} is already registered for {old.module}")
    _KINDS[kind.name] = kind
    return kind


def get(name: str, where: Path | str = "") -> Kind:
    """The registered kind ``name``; an unknown one is a ``UserError`` naming the kinds this ownlm knows."""
    kind = _KINDS.get(name)
    if kind is None:
        at = f"{where}: " if where else ""
        raise UserError(f"{at}a model of kind '{name}', which this command cannot load "
                        f"(known here: {', '.join(sorted(_KINDS))})")  # fmt: skip
    return kind


def kind_of(model) -> Kind:
    """The kind ``model`` (unwrapped) is: the registered kind whose module class it is, else ``lm``."""
    model = unwrap(model)
    for kind in _KINDS.values():
        if kind.module is not None and isinstance(model, kind.module):
            return kind
    return _KINDS["lm"]


register(Kind("lm"))
register(Kind("lm+lora"))  # an lm saved as base weights + adapter.safetensors; loads as an lm
