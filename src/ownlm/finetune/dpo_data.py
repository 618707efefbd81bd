"""Preference data -> checked pairs (a prompt, a chosen and a rejected reply), encoded with a chat template.

Two inputs, told apart by shape, one record per JSON value (a ``.json`` list or JSONL):

- the book's: ``{"instruction", "input" (optional), "chosen", "rejected"}`` (other keys, such as ``output``, are
  ignored), as in "Build a Large Language Model (From Scratch)"'s ``instruction-data-with-preference.json``;
- chat: ``{"prompt": [messages], "chosen": [assistant message] | str, "rejected": [assistant message] | str}``,
  the convention trl's preference datasets use; a string ``prompt`` is one user message, and a record with no
  ``prompt`` whose ``chosen`` and ``rejected`` are whole conversations takes their shared beginning as the prompt.

Every pair is ``{"prompt": [messages], "chosen": str, "rejected": str, "where": "file:line"}``: the prompt ends
with a user message and both replies are one assistant message each. A record that cannot be used is a
``UserError`` naming its file and line.

>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> _ = p.write_text(json.dumps([{"instruction": "Greet", "input": "", "chosen": "Hello!", "rejected": "What?"}]))
>>> pairs = load_pairs([p])
>>> pairs[0]["prompt"], pairs[0]["chosen"], pairs[0]["rejected"]
([{'role': 'user', 'content': 'Greet'}], 'Hello!', 'What?')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ownlm.errors import UserError
from ownlm.tokenizer.chat import check_messages


def _reply(value: Any, key: str) -> str:
    """A reply given as a string or as a list holding one assistant message."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        m = value[0]
        if m.get("role") != "assistant":
            raise UserError(f"'{key}' must be an assistant message, found role {m.get('role')!r}")
        text = m.get("content")
        if not isinstance(text, str):
            raise UserError(f"'{key}': the message's 'content' must be a string")
    else:
        raise UserError(f"'{key}' must be a string or a list with one assistant message")
    if not text.strip():
        raise UserError(f"'{key}' is empty")
    return text


def _messages(raw: Any, key: str) -> list[dict]:
    if not isinstance(raw, list):
        raise UserError(f"'{key}' must be a list of {{role, content}} messages")
    try:
        return check_messages([{k: m[k] for k in ("role", "content") if k in m} if isinstance(m, dict) else m
                               for m in raw])  # fmt: skip
    except UserError as e:
        raise UserError(f"'{key}': {e}") from None


def to_pair(record: Any) -> dict:
    """One record -> ``{"prompt", "chosen", "rejected"}``; a ``UserError`` says what is wrong with it."""
    if not isinstance(record, dict):
        raise UserError(f"expected a JSON object, found {type(record).__name__}")
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        keys = ", ".join(sorted(record)[:6]) or "none"
        raise UserError(f"no {' or '.join(repr(k) for k in missing)}: expected {{instruction, input, chosen, "
                        f"rejected}} or {{prompt, chosen, rejected}}, found keys: {keys}")  # fmt: skip
    if "instruction" in record and "prompt" not in record:
        inst, inp = record["instruction"], record.get("input")
        if not isinstance(inst, str) or not inst.strip():
            raise UserError("'instruction' must be a non-empty string")
        if inp is not None and not isinstance(inp, str):
            raise UserError(f"'input' must be a string, found {type(inp).__name__}")
        user = {"role": "user", "content": inst}
        if inp:
            user["input"] = inp
        prompt = [user]
    elif "prompt" in record:
        raw = record["prompt"]
        prompt = [{"role": "user", "content": raw}] if isinstance(raw, str) else _messages(raw, "prompt")
    else:  # implicit prompt: two whole conversations that differ in their last assistant message
        chosen, rejected = _messages(record["chosen"], "chosen"), _messages(record["rejected"], "rejected")
        if len(chosen) < 2 or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant" \
                or rejected[-1]["role"] != "assistant":  # fmt: skip
            raise UserError("with no 'prompt', 'chosen' and 'rejected' must be conversations that differ only "
                            "in their last (assistant) message")  # fmt: skip
        return {"prompt": chosen[:-1], "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}
    if not prompt or prompt[-1]["role"] != "user":
        raise UserError("the prompt must end with a user message")
    return {"prompt": prompt, "chosen": _reply(record["chosen"], "chosen"),
            "rejected": _reply(record["rejected"], "rejected")}  # fmt: skip


def load_pairs(paths: list[str | os.PathLike]) -> list[dict]:
    """Read preference files -> pairs, in file order (each with ``where`` = ``file:line``)."""
    from ownlm.finetune.data import _records

    if not paths:
        raise UserError("no preference data given: pass JSON/JSONL files with chosen and rejected replies")
    pairs = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"{p}: file not found")
        for line, record in _records(p):
            where = f"{p}:{line}"
            if isinstance(record, UserError):  # a broken JSONL line (its message names file:line)
                raise record
            try:
                pair = to_pair(record)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
            pairs.append({**pair, "where": where})
    if not pairs:
        raise UserError(f"no preference pairs in {', '.join(map(str, paths))}")
    return pairs


def conversations(pair: dict) -> tuple[list[dict], list[dict]]:
    """The pair as two conversations: the prompt + the chosen reply, the prompt + the rejected one."""
    return ([*pair["prompt"], {"role": "assistant", "content": pair["chosen"]}],
            [*pair["prompt"], {"role": "assistant", "content": pair["rejected"]}])  # fmt: skip


def split_pairs(pairs: list[dict], val_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, val)`` by a hash of each pair's content (as ``split_examples`` does for SFT data): a pair always
    lands on the same side, whatever its position in the file."""
    from ownlm.finetune.data import split_examples

    wrapped = [{"messages": [*p["prompt"], {"role": "assistant", "content": p["chosen"]},
                             {"role": "assistant", "content": p["rejected"]}], "pair": p} for p in pairs]  # fmt: skip
    train, val = split_examples(wrapped, val_fraction, seed)
    return [w["pair"] for w in train], [w["pair"] for w in val]


# ---------------------------------------------------------------------------------------------- encoding


@dataclass
class EncodedPairs:
    """Token ids and loss masks of both replies of each pair that fits, and what happened to the others."""

    chosen: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (ids int64, mask uint8)
    rejected: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)  # the source pairs kept, in the same order
    truncated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def length(self, k: int) -> int:
        """Tokens pair ``k`` feeds the model (both replies, inputs only)."""
        return len(self.chosen[k][0]) + len(self.rejected[k][0]) - 2

    def counts(self) -> dict:
        return {"pairs": len(self.pairs), "truncated": self.truncated, "dropped": self.dropped,
                "tokens": int(sum(self.length(k) for k in range(len(self)))),
                "identical_replies": sum(p["chosen"] == p["rejected"] for p in self.pairs)}  # fmt: skip


def _fit(ids: list[int], mask: list[int], max_len: int, overlong: str):
    """``(ids, mask, truncated)`` within ``max_len`` tokens by SFT's rule, or None (dropped)."""
    if len(ids) <= max_len:
        return ids, mask, False
    if overlong == "drop":
        return None
    if any(mask[1:max_len]):  # the reply starts inside the window: keep the start
        return ids[:max_len], mask[:max_len], True
    return ids[-max_len:], mask[-max_len:], True  # a long prompt: keep its latest part and the reply


def encode_pairs(pairs: list[dict], template, tokenizer, max_len: int, overlong: str) -> EncodedPairs:
    """Render both conversations of each pair with ``template``; a pair is dropped when either reply has no
    loss token left within ``max_len`` tokens (inputs + 1)."""
    enc = EncodedPairs()
    for pair in pairs:
        sides = []
        for conv in conversations(pair):
            try:
                ids, mask = template.encode(tokenizer, conv)
            except UserError as e:
                raise UserError(f"{pair.get('where', 'pair')}: {e}") from None
            sides.append(_fit(ids, mask, max_len, overlong))
        if any(s is None or len(s[0]) < 2 or not any(s[1][1:]) for s in sides):
            enc.dropped += 1
            continue
        enc.truncated += any(s[2] for s in sides)
        for target, (ids, mask, _) in zip((enc.chosen, enc.rejected), sides):
            target.append((np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.uint8)))
        enc.pairs.append(pair)
    return enc


def pair_batch(enc: EncodedPairs, index: list[int], pad_id: int) -> dict:
    """Pairs ``index`` as one batch of ``2 B`` rows, the chosen replies first, then the rejected ones, padded on
    the right: ``input_ids``, ``labels`` (-100 off the replies), ``lengths`` and ``pair`` (the pairs' indices)."""
    from ownlm.finetune.sft import IGNORE

    seqs = [enc.chosen[k] for k in index] + [enc.rejected[k] for k in index]
    T = max(len(ids) - 1 for ids, _ in seqs)
    x = np.full((len(seqs), T), pad_id, dtype=np.int64)
    y = np.full((len(seqs), T), IGNORE, dtype=np.int64)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for i, (ids, mask) in enumerate(seqs):
        n = len(ids) - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = np.where(mask[1:] != 0, ids[1:], IGNORE)
        lengths[i] = n
    return {"input_ids": x, "labels": y, "lengths": lengths, "pair": np.asarray(index, dtype=np.int64)}
