"""A GPT turned classifier: the pretrained trunk, and a new linear head over one summary vector per text.

    logits = score(pool(ln_f(blocks(embed(ids)))))        (B, T) ids -> (B, T, C) -> (B, C) -> (B, n_labels)

``pool="last"`` takes the hidden state of each row's last *real* token: under causal attention it is the only
position that has read the whole text (Radford et al. 2018 classify from the last token; Raschka's *Build a
Large Language Model (From Scratch)* ch. 6 does the same). ``pool="mean"`` averages the real tokens. Rows are
padded on the right and every real token attends only to earlier ones, so padding never reaches a real token:
a prediction does not depend on how much padding its batch had.

The checkpoint is an ordinary model folder of kind ``classifier``: the trunk's weights under ``gpt.*`` (LoRA
adapters beside them, as for a language model), the head under ``score.*``, ``config.json`` with a
``classifier`` section (``n_labels``, ``pool``) and ``labels.json`` (the label names, in head order, and how
texts are cut to the context). The trunk's unused output head is kept, so the folder stays loadable as it was.

>>> clf = Classifier.load("runs/spam")  # doctest: +SKIP
>>> clf.predict(["WINNER!! Claim your prize now", "see you at eight"])  # doctest: +SKIP
['spam', 'ham']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ownlm.errors import UserError
from ownlm.io import read_json, write_json
from ownlm.model.checkpoint import CONFIG, load_model, resolve_checkpoint
from ownlm.model.kinds import Kind, register

POOLS = ("last", "mean")
LABELS = "labels.json"
FORMAT = "ownlm-labels"
VERSION = 1


class GPTClassifier(nn.Module):
    """``.gpt`` (the trunk; its ``lm_head`` is not used) and ``.score`` (Linear n_embd -> n_labels).

    ``forward(idx, lengths, labels=None, weight=None) -> (logits (B, n_labels), loss)``; the loss is the
    SUM of the rows' cross-entropies (each scaled by ``weight[label]`` when class weights are given).
    """

    def __init__(self, gpt: nn.Module, n_labels: int, pool: str = "last"):
        super().__init__()
        if pool not in POOLS:
            raise UserError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if n_labels < 2:
            raise UserError(f"a classifier needs at least 2 labels, got {n_labels}")
        self.gpt, self.pool = gpt, pool
        self.score = nn.Linear(gpt.config.n_embd, n_labels)
        if not self.score.weight.is_meta:
            nn.init.normal_(self.score.weight, std=0.02)
            nn.init.zeros_(self.score.bias)

    @property
    def config(self):
        """The trunk's ``GPTConfig`` (what a checkpoint records as the model)."""
        return self.gpt.config

    @property
    def n_labels(self) -> int:
        return self.score.out_features

    def head_config(self) -> dict:
        """The ``classifier`` section of ``config.json``."""
        return {"n_labels": self.n_labels, "pool": self.pool}

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) final-norm hidden states: ``GPT.forward`` without its output head (with the
        trunk's activation checkpointing when that is on)."""
        return self.gpt.transformer.ln_f(self.gpt.trunk(idx))  # (B, T, C)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None, labels=None, weight=None):
        B, T = idx.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=idx.device)
        h = self.features(idx)  # (B, T, C)
        if self.pool == "last":
            pooled = h[torch.arange(B, device=idx.device), lengths - 1]  # (B, C)
        else:
            real = (torch.arange(T, device=idx.device)[None, :] < lengths[:, None]).to(h.dtype)  # (B, T)
            pooled = (h * real[:, :, None]).sum(1) / lengths[:, None].to(h.dtype)  # (B, C)
        logits = self.score(pooled)  # (B, n_labels)
        loss = None
        if labels is not None:
            # reduction "none" then sum: each row's loss times its class weight, not renormalised by them
            loss = F.cross_entropy(logits.float(), labels, weight=weight, reduction="none").sum()
        return logits, loss

    def num_params(self, non_embedding: bool = True) -> int:
        return self.gpt.num_params(non_embedding) + sum(p.numel() for p in self.score.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """The trunk's training FLOPs per token without its language-model head (vocab x n_embd, not run here);
        the new head runs once per text, not per token, and is left out."""
        cfg = self.gpt.config
        return self.gpt.flops_per_token(seq_len) - 6 * cfg.vocab_size * cfg.n_embd

    def reset_buffers(self) -> None:
        self.gpt.reset_buffers()


def _build(gpt, meta: dict, folder: Path) -> GPTClassifier:
    """The ``GPTClassifier`` around ``gpt`` that ``config.json``'s ``classifier`` section describes."""
    head = meta.get("classifier")
    if not isinstance(head, dict) or not isinstance(head.get("n_labels"), int):
        raise UserError(
            f"{folder / CONFIG}: a classifier's config needs a 'classifier' section with n_labels"
        )
    return GPTClassifier(gpt, head["n_labels"], head.get("pool", "last"))


KIND = register(Kind("classifier", module=GPTClassifier, trunk="gpt", build=_build,
                     describe=GPTClassifier.head_config))  # fmt: skip


def encode_text(tokenizer, text: str, max_length: int, truncate: str = "right") -> tuple[list[int], bool]:
    """``(ids, truncated)``: the text's tokens, cut to ``max_length`` — ``truncate="right"`` keeps the start,
    ``"left"`` the end. Special-token strings in the text are plain text.

    >>> class Bytes:
    ...     def encode_ordinary(self, t): return list(t.encode())
    >>> encode_text(Bytes(), "abcdef", 4), encode_text(Bytes(), "abcdef", 4, "left")
    (([97, 98, 99, 100], True), ([99, 100, 101, 102], True))
    """
    ids = tokenizer.encode_ordinary(text)
    if len(ids) <= max_length:
        return ids, False
    return (ids[:max_length] if truncate == "right" else ids[-max_length:]), True


def pad_batch(rows: list[list[int]], pad_id: int) -> dict:
    """Token rows -> ``{"input_ids": (B, T) int64 padded on the right, "lengths": (B,)}``.

    >>> pad_batch([[5, 6, 7], [8]], 0)["input_ids"].tolist()
    [[5, 6, 7], [8, 0, 0]]
    """
    T = max(len(r) for r in rows)
    x = np.full((len(rows), T), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    return {"input_ids": x, "lengths": np.array([len(r) for r in rows], dtype=np.int64)}


def save_labels(folder, labels: list[str], max_length: int, truncate: str) -> None:
    """``labels.json``: the label names in the head's order and how texts are cut to the context."""
    write_json(Path(folder) / LABELS, {"format": FORMAT, "version": VERSION, "labels": list(labels),
                                       "max_length": max_length, "truncate": truncate})  # fmt: skip


def read_labels(folder) -> dict:
    """``labels.json`` of a classifier checkpoint, checked."""
    path = Path(folder) / LABELS
    if not path.is_file():
        raise UserError(f"{folder}: no {LABELS} here; is it a classifier (ownlm finetune classify)?")
    meta = read_json(path, what="classifier labels")
    ok = isinstance(meta, dict) and meta.get("format") == FORMAT and isinstance(meta.get("labels"), list)
    if not ok or not all(isinstance(x, str) for x in meta["labels"]):
        raise UserError(f"{path}: not an ownlm labels file (expected format '{FORMAT}' and a list of labels)")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise UserError(f"{path}: labels format version {meta.get('version')} is newer than this ownlm "
                        f"understands (<= {VERSION}); upgrade ownlm")  # fmt: skip
    return meta


class Classifier:
    """A trained classifier from Python: ``Classifier.load(dir).predict(texts)``.

    >>> clf = Classifier.load("runs/spam")  # doctest: +SKIP
    >>> clf.labels, clf.predict_proba(["free entry!"]).round(2)  # doctest: +SKIP
    (['ham', 'spam'], array([[0.03, 0.97]], dtype=float32))
    """

    def __init__(self, model: GPTClassifier, tokenizer, labels: list[str], max_length: int, truncate: str,
                 device="cpu"):  # fmt: skip
        if len(labels) != model.n_labels:
            raise UserError(f"{len(labels)} labels in {LABELS}, but the model's head has {model.n_labels}")
        self.model, self.tokenizer, self.labels = model.eval(), tokenizer, list(labels)
        self.max_length, self.truncate, self.device = max_length, truncate, torch.device(device)
        self.pad_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0

    @classmethod
    def load(cls, path, device="cpu") -> Classifier:
        """A run folder (its latest checkpoint) or a checkpoint folder of kind ``classifier``."""
        folder = resolve_checkpoint(path)
        model, tok, _ = load_model(folder, device=device, kinds=("classifier",))
        if tok is None:
            raise UserError(f"{folder}: the classifier has no tokenizer.json")
        meta = read_labels(folder)
        max_length = min(int(meta.get("max_length") or model.config.block_size), model.config.block_size)
        return cls(model, tok, meta["labels"], max_length, meta.get("truncate", "right"), device)

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(N, n_labels) probabilities, columns in the order of ``labels``."""
        if isinstance(texts, str):
            raise TypeError("predict_proba takes a list of texts; wrap one text as [text]")
        rows = [
            encode_text(self.tokenizer, t, self.max_length, self.truncate)[0] or [self.pad_id] for t in texts
        ]
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths: little padding
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                b = pad_batch([rows[i] for i in idx], self.pad_id)
                logits, _ = self.model(torch.from_numpy(b["input_ids"]).to(self.device),
                                       torch.from_numpy(b["lengths"]).to(self.device))  # fmt: skip
                out[idx] = F.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        """The most probable label of each text."""
        p = self.predict_proba(texts, batch_size)
        return [self.labels[i] for i in p.argmax(axis=1)]
