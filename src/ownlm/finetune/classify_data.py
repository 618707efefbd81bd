"""Labelled rows for ``ownlm finetune classify``: reading them (CSV/TSV through the one table reader, JSONL,
JSON), telling the text and label columns apart, and the seeded split into train/validation/test, down-sampled
when asked.

>>> train, val, test = split_rows([{"text": str(i), "label": "a"} for i in range(10)], 0.1, 0.2, seed=0)
>>> len(train), len(val), len(test)
(7, 1, 2)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ownlm.errors import UserError

LABEL_FIELDS = ("label", "labels", "class", "category", "target", "sentiment", "y", "v1", "tag", "topic")


# ---------------------------------------------------------------------------------------------- reading


def parse_delimiter(name: str) -> str | None:
    if name == "auto":
        return None
    if name.lower() in ("tab", "\\t", "\t"):
        return "\t"
    if len(name) != 1:
        raise UserError(f"--delimiter must be auto, tab or one character, got {name!r}")
    return name


def open_records(path, header: str = "auto", delimiter: str = "auto", min_columns: int = 2):
    """``(fields or None, records)`` of a CSV/TSV/JSONL/JSON file: records are ``(line, dict)`` pairs, read
    lazily from tables and JSONL. A broken row is a ``UserError`` naming ``file:line``; so is a table whose
    rows split into fewer than ``min_columns`` cells (the wrong delimiter)."""
    from ownlm.extract.base import Problem
    from ownlm.extract.tabular import Table, sniff_delimiter, sniff_quoting
    from ownlm.io import iter_jsonl, read_json

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return None, iter_jsonl(path)
    if suffix == ".json":
        data = read_json(path, what="records")
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
        return None, enumerate(data, start=1)
    # newline="\n": a line ends at a line feed only, so a stray carriage return inside a message stays in it
    f = open(path, encoding="utf-8-sig", errors="replace", newline="\n")  # noqa: SIM115 (closed by rows())
    sample = f.read(65536)
    f.seek(0)
    delim = parse_delimiter(delimiter) or sniff_delimiter(sample, suffix)
    want = None if header == "auto" else header == "yes"
    table = Table(f, str(path), delim, want, quoting=sniff_quoting(sample, delim))
    if table.width < min_columns and table.fields:
        f.close()
        shown = "a tab" if delim == "\t" else f"'{delim}'"
        raise UserError(f"{path}: every row has one column when split on {shown}; a text and a label need two — "
                        "is the delimiter right? (give --delimiter)")  # fmt: skip

    def rows():
        with f:
            for item in table:
                if isinstance(item, Problem):
                    raise UserError(f"{item.where}: {item.message}")
                line, rec = item
                # cells beyond the header's names: an error, not a column named "3"
                if table.header and len(rec) > table.header_width:
                    raise UserError(f"{path}:{line}: {len(rec)} fields, but the header names {table.header_width}; "
                                    "quote the text if it contains the delimiter, or add the missing names to the "
                                    "header")  # fmt: skip
                yield item

    return table.fields, rows()


def guess_columns(fields: list[str] | None, sample: list[dict], text_field, label_field) -> tuple[str, str]:
    """The text and label fields: the ones given (names or numbers), else a label-like name or the column
    with the fewest distinct values, and the text the longest strings among the rest."""
    from ownlm.extract.tabular import guess_field, resolve_field

    keys = fields or sorted({k for r in sample if isinstance(r, dict) for k in r})

    def resolve(name, what):
        found = resolve_field(keys, name) if fields else (name if name in keys else None)
        if found is None:
            raise UserError(f"no {what} field '{name}' (fields: {', '.join(keys[:20])})")
        return found

    label = resolve(label_field, "label") if label_field else None
    text = resolve(text_field, "text") if text_field else None
    if label is None:
        named = [k for k in keys if k.lower() in LABEL_FIELDS and k != text]
        if named:
            label = named[0]
        else:
            distinct = {
                k: len({str(r.get(k)) for r in sample if r.get(k) is not None}) for k in keys if k != text
            }
            label = min(distinct, key=lambda k: (distinct[k], keys.index(k)), default=None)
    if text is None:
        text = guess_field(
            [{k: v for k, v in r.items() if k != label} for r in sample if isinstance(r, dict)]
        )
    if label is None or text is None or label == text:
        raise UserError(f"cannot tell the text and label fields apart (fields: {', '.join(keys[:20])}); "
                        "give --text-field and --label-field")  # fmt: skip
    return text, label


def cell(rec, key):
    value = rec.get(key) if isinstance(rec, dict) else None
    if value is None or isinstance(value, dict | list):
        return None
    value = str(value) if not isinstance(value, str) else value
    return value if value.strip() else None


def read_labelled(path, cfg, columns: tuple[str, str] | None = None):
    """``(rows, (text field, label field))``: every row of ``path`` as ``{"text", "label", "where"}``; a row
    without a text or a label is a ``UserError`` naming its line."""
    fields, records = open_records(path, cfg.header, cfg.delimiter)
    head = []
    for item in records:
        head.append(item)
        if len(head) >= 200:
            break
    if not head:
        raise UserError(f"{path}: no rows")
    text, label = columns or guess_columns(fields, [r for _, r in head], cfg.text_field, cfg.label_field)
    if fields is not None and columns is not None and (text not in fields or label not in fields):
        raise UserError(
            f"{path}: no columns '{text}' and '{label}' as in --data (fields: {', '.join(fields)})"
        )
    rows = []
    for line, rec in chain(head, records):
        t, lab = cell(rec, text), cell(rec, label)
        if t is None or lab is None:
            what = "text" if t is None else "label"
            raise UserError(f"{path}:{line}: no {what} in field '{text if t is None else label}' (every row needs a "
                            "text and a label; fix or remove the row)")  # fmt: skip
        rows.append({"text": t, "label": lab.strip(), "where": f"{path}:{line}"})
    return rows, (text, label)


def chain(head, rest):
    yield from head
    yield from rest


# ---------------------------------------------------------------------------------------------- splits


def downsample(rows: list[dict], seed: int) -> list[dict]:
    """As many rows of each label as the rarest label has, chosen at random by ``seed`` (order kept)."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["label"], []).append(i)
    n = min(len(v) for v in by.values())
    rng = np.random.default_rng([seed, 21])
    keep = sorted(int(i) for v in by.values() for i in rng.choice(v, size=n, replace=False))
    return [rows[i] for i in keep]


def split_rows(rows: list[dict], val_fraction: float, test_fraction: float, seed: int):
    """Shuffle with ``seed``, then cut: the first ``1 - val - test`` share trains, the next ``val`` validates,
    the rest tests (shares rounded down, as the book's protocol does)."""
    order = np.random.default_rng([seed, 22]).permutation(len(rows))
    n_train = int(len(rows) * (1 - val_fraction - test_fraction))
    n_val = int(len(rows) * val_fraction)
    pick = lambda ix: [rows[int(i)] for i in ix]  # noqa: E731
    return pick(order[:n_train]), pick(order[n_train : n_train + n_val]), pick(order[n_train + n_val :])


def prepare_splits(cfg):
    """``(train, val, test, labels, info)`` from the files and flags of a ``ClassifyConfig``, checked."""
    rows, columns = read_labelled(cfg.data, cfg)
    labels = sorted({r["label"] for r in rows})
    if len(labels) < 2:
        raise UserError(f"{cfg.data}: every row has the label '{labels[0]}'; a classifier needs two labels or more "
                        "(is --label-field the right column?)")  # fmt: skip
    info = {"read": len(rows), "columns": {"text": columns[0], "label": columns[1]}}
    seed = cfg.train.seed
    given_val = read_labelled(cfg.val_data, cfg, columns)[0] if cfg.val_data else None
    given_test = read_labelled(cfg.test_data, cfg, columns)[0] if cfg.test_data else None
    if cfg.balance == "downsample":
        rows = downsample(rows, seed)
    val_frac = 0.0 if given_val is not None else cfg.val_fraction
    test_frac = 0.0 if given_test is not None else cfg.test_fraction
    train, val, test = split_rows(rows, val_frac, test_frac, seed)
    val = given_val if given_val is not None else val
    test = given_test if given_test is not None else test
    # a held-out row whose exact text is also a training row measures memory, not generalisation: counted, said
    info["held_out_copies"] = copies_of_training(train, {"validation": val, "test": test})
    if any(info["held_out_copies"].values()):
        c = info["held_out_copies"]
        print(f"classify: warning: {c['validation']} validation and {c['test']} test rows are exact copies of "
              "training texts (duplicates in the data), so their accuracy is not held-out accuracy; remove the "
              "duplicates for a clean test (data.json: held_out_copies)", file=sys.stderr)  # fmt: skip
    info["split"] = (
        f"shuffled with seed {seed}, {1 - val_frac - test_frac:.0%}/{val_frac:.0%}/{test_frac:.0%}"
        if given_val is None or given_test is None
        else "given files"
    )
    seen = {r["label"] for r in train}
    for name, part in (("validation", val), ("test", test)):
        for r in part:
            if r["label"] not in seen:
                raise UserError(f"{r['where']}: the label '{r['label']}' is in the {name} split but never in the "
                                "training split; add training rows with it or remove it")  # fmt: skip
    if not val or not test:
        raise UserError(f"{cfg.data}: {len(rows)} rows leave the {'validation' if not val else 'test'} split empty; "
                        "give more rows, larger --val-fraction/--test-fraction, or --val-data/--test-data")  # fmt: skip
    labels = sorted(seen)
    if len(labels) < 2:
        raise UserError(f"{cfg.data}: the training split has only the label '{labels[0]}'; give more rows")
    for same in same_numbers(labels):
        print(f"classify: warning: the labels {', '.join(repr(x) for x in same)} are one number written differently, "
              "and are kept as different classes; write them the same way if they are one", file=sys.stderr)  # fmt: skip
    return train, val, test, labels, info


def copies_of_training(train: list[dict], held: dict[str, list[dict]]) -> dict[str, int]:
    """How many rows of each held-out split have a text (spaces at the ends aside) that is also a training text.

    >>> copies_of_training([{"text": "a"}], {"test": [{"text": "a "}, {"text": "b"}]})
    {'test': 1}
    """
    seen = {r["text"].strip() for r in train}
    return {name: sum(r["text"].strip() in seen for r in rows) for name, rows in held.items()}


def same_numbers(labels: list[str]) -> list[list[str]]:
    """Groups of labels that are one number written differently ("1", "1.0", "01").

    >>> same_numbers(["1", "1.0", "2", "spam"])
    [['1', '1.0']]
    """
    groups: dict[float, list[str]] = {}
    for label in labels:
        try:
            groups.setdefault(float(label), []).append(label)
        except ValueError:
            continue
    return [g for g in groups.values() if len(g) > 1]
