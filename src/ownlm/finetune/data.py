"""Instruction and chat data -> checked conversations, and a deterministic train/val split.

Three inputs, told apart by shape, one record per JSON value:

- Alpaca: ``{"instruction", "input" (optional), "output"}``, as a JSON list (``.json``) or JSONL. It becomes a
  user message (``content`` = instruction, ``input`` kept when non-empty) and an assistant message (output).
- chat: ``{"messages": [{"role", "content"}, ...]}`` (JSONL or a JSON list), the ecosystem's format.
- a folder written by ``ownlm persona``: its ``train.jsonl`` (``load_persona_split`` reads ``val.jsonl``).

Every example is ``{"messages": [...], "where": "file:line"}``. A record that is not usable (a missing field,
an unknown role, an empty response) is a ``UserError`` naming its file and line; with ``errors="skip"`` it is
counted by reason instead and the first few messages are kept for the summary.

>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> _ = p.write_text(json.dumps([{"instruction": "Add", "input": "1 2", "output": "3"}]))
>>> examples, counts = load_examples([p])
>>> examples[0]["messages"]
[{'role': 'user', 'content': 'Add', 'input': '1 2'}, {'role': 'assistant', 'content': '3'}]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ownlm.errors import UserError
from ownlm.tokenizer.chat import check_messages

MAX_PROBLEMS = 5  # how many skipped records' messages the counts keep


class _Bad(Exception):
    """A record that cannot be used: ``reason`` is the counter key, ``str()`` the message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, item)`` for each item of a file holding one JSON list (the line where the item starts), read by
    the one JSON reader (depth and number limits, a byte-order mark, nothing after the list)."""
    from ownlm.io import iter_json_list

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    yield from iter_json_list(text, str(path))


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, record or UserError)`` of a ``.json`` list or a JSONL file."""
    from ownlm.io import iter_jsonl

    if path.suffix.lower() == ".json":
        yield from _json_array(path)
    else:
        yield from iter_jsonl(path, errors="skip")


def to_messages(record: Any) -> list[dict]:
    """One Alpaca or chat record -> checked messages; raises ``_Bad`` with a reason and a message."""
    if not isinstance(record, dict):
        raise _Bad("not an object", f"expected a JSON object, found {type(record).__name__}")
    if "messages" in record:
        raw = record["messages"]
        if isinstance(raw, list):
            raw = [
                {k: m[k] for k in ("role", "content", "input") if k in m} if isinstance(m, dict) else m
                for m in raw
            ]
        try:
            messages = check_messages(raw)
        except UserError as e:
            msg = str(e)
            reason = next(
                (r for r in ("unknown role", "empty assistant", "missing") if r in msg), "bad message"
            )
            raise _Bad(reason, msg) from None
        if not any(m["role"] == "assistant" for m in messages):
            raise _Bad("no assistant message", "the conversation has no assistant message to learn from")
        return messages
    if "instruction" in record or "output" in record:
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                what = "missing" if key not in record else f"a {type(record[key]).__name__}, not a string"
                raise _Bad("missing field", f"'{key}' is {what}")
        inp = record.get("input")
        if inp is not None and not isinstance(inp, str):
            raise _Bad("missing field", f"'input' must be a string, found {type(inp).__name__}")
        if not record["output"].strip():
            raise _Bad("empty response", "empty 'output'")
        user = {"role": "user", "content": record["instruction"]}
        if inp:
            user["input"] = inp
        return [user, {"role": "assistant", "content": record["output"]}]
    keys = ", ".join(sorted(record)[:6]) or "none"
    raise _Bad(
        "unknown format",
        f"expected Alpaca {{instruction, input, output}} or chat {{messages: [...]}}, found keys: {keys}",
    )


def _new_counts() -> dict:
    return {"examples": 0, "skipped": {}, "problems": []}


def _read_file(path: Path, errors: str, counts: dict) -> list[dict]:
    examples = []
    skipped = Counter(counts["skipped"])
    for line, record in _records(path):
        where = f"{path}:{line}"
        try:
            if isinstance(record, UserError):  # a broken JSONL line (iter_jsonl puts file:line in it)
                raise _Bad("broken JSON", str(record).removeprefix(f"{where}: "))
            messages = to_messages(record)
        except _Bad as e:
            if errors != "skip":
                raise UserError(f"{where}: {e}") from None
            skipped[e.reason] += 1
            if len(counts["problems"]) < MAX_PROBLEMS:
                counts["problems"].append(f"{where}: {e}")
            continue
        examples.append({"messages": messages, "where": where})
    counts["skipped"] = dict(skipped)
    counts["examples"] += len(examples)
    return examples


def load_examples(paths: list[str | os.PathLike], errors: str = "strict") -> tuple[list[dict], dict]:
    """Read instruction/chat files and persona folders -> ``(examples, counts)``.

    ``counts``: ``{"examples": n, "skipped": {reason: n}, "problems": ["file:line: what", ...]}``.
    ``errors="skip"`` counts and skips unusable records instead of raising.
    """
    if errors not in ("strict", "skip"):
        raise ValueError(f"errors must be 'strict' or 'skip', got {errors!r}")
    if not paths:
        raise UserError(
            "no instruction data given: pass JSON/JSONL files or a folder written by `ownlm persona`"
        )
    counts = _new_counts()
    examples: list[dict] = []
    for p in map(Path, paths):
        if p.is_dir():
            p = _persona_file(p, "train")
        elif not p.is_file():
            raise UserError(f"{p}: file not found")
        examples += _read_file(p, errors, counts)
    if not examples:
        raise UserError(f"no usable examples in {', '.join(map(str, paths))} ({_skipped_text(counts)})")
    return examples, counts


def _skipped_text(counts: dict) -> str:
    skipped = counts["skipped"]
    if not skipped:
        return "the files hold no records"
    return "skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))


def _persona_file(folder: Path, split: str) -> Path:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"{folder}: no {split}.jsonl here; give a folder written by `ownlm persona`, or data files"
        )
    return path


def load_persona_split(folder: str | os.PathLike, split: str = "val", errors: str = "strict"):
    """One split (``"train"`` or ``"val"``) of a folder written by ``ownlm persona`` -> ``(examples, counts)``.

    A persona's validation split is the latest part of the timeline; use it rather than a random split.
    An empty split gives no examples (not an error).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    counts = _new_counts()
    return _read_file(_persona_file(Path(folder), split), errors, counts), counts


def _unit(example: dict, seed: int) -> float:
    """A number in [0, 1) fixed by the example's content and the seed."""
    blob = json.dumps([seed, example["messages"]], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big") / 2**64


def split_examples(examples: list[dict], val_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split into ``(train, val)`` by a hash of each example's messages: the same example always lands on the
    same side whatever its position, and duplicates never straddle the split. With ``val_fraction > 0`` and at
    least two examples, validation gets at least one.

    >>> ex = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(100)]
    >>> train, val = split_examples(ex, 0.1)
    >>> len(train) + len(val), 0 < len(val) < 25
    (100, True)
    """
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = [_unit(e, seed) for e in examples]
    train = [e for e, k in zip(examples, keys) if k >= val_fraction]
    val = [e for e, k in zip(examples, keys) if k < val_fraction]
    if val_fraction > 0 and not val and len(train) >= 2:
        lowest = min(keys)  # the example closest to the line crosses it (and its duplicates with it)
        val = [e for e, k in zip(examples, keys) if k == lowest]
        train = [e for e, k in zip(examples, keys) if k != lowest]
    return train, val
