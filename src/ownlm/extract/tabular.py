"""Records: JSON, JSONL and CSV/TSV files, one document per record, text from one chosen field.

The field is ``--text-field`` when given; otherwise the first of ``text, content, body, ...`` that the
records have, else the field with the longest strings. A broken JSONL line or a CSV row without the
field is reported as ``file:line`` and the good records are kept. Records in ``ownlm extract``'s own
conversation form (``{"messages": [{"name", "time", "text"}]}``) are read back as conversations.

>>> [d.text for d in TabularReader().read(Source("a.jsonl", b'{"text": "hi"}\\n'), ExtractOptions())]
['hi']
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from ownlm.extract.base import (
    Conversation,
    Document,
    ExtractOptions,
    Message,
    Problem,
    Reader,
    ReaderError,
    Source,
)

TEXT_FIELDS = ("text", "content", "body", "message", "document", "article", "story", "description", "review")
# Where a JSON file keeps its list of records when the top level is an object.
LIST_KEYS = ("data", "records", "items", "documents", "docs", "rows", "entries", "messages", "results")


def guess_field(records: Iterable[dict]) -> str | None:
    """The text field of ``records`` (a sample): a well-known name, else the longest strings on average.

    >>> guess_field([{"id": 1, "summary": "a long piece of text", "lang": "en"}])
    'summary'
    """
    sample = [r for r in records if isinstance(r, dict)]
    if not sample:
        return None
    counts: dict[str, int] = {}
    lengths: dict[str, int] = {}
    for rec in sample:
        for key, value in rec.items():
            if isinstance(value, str):
                counts[key] = counts.get(key, 0) + 1
                lengths[key] = lengths.get(key, 0) + len(value)
    lowered = {k.lower(): k for k in counts}
    for name in TEXT_FIELDS:
        if name in lowered:
            return lowered[name]
    # Only fields present in at least half the records, so one odd record cannot choose.
    common = [k for k in counts if counts[k] * 2 >= len(sample)]
    return max(common, key=lambda k: lengths[k] / counts[k], default=None)


def _record_text(rec, field: str | None):
    if isinstance(rec, str):
        return rec
    if isinstance(rec, dict) and field is not None:
        value = rec.get(field)
        if isinstance(value, str):
            return value
        if value is not None and not isinstance(value, dict | list):
            return str(value)
    return None


class TabularReader(Reader):
    """``.json``/``.jsonl``/``.ndjson``/``.csv``/``.tsv``."""

    name = "tabular"
    extensions = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".tab")

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document | Conversation | Problem]:
        from ownlm.extract.text import decode_text

        text, _, _ = decode_text(src.data, opts.encoding_errors)
        if src.suffix in (".jsonl", ".ndjson"):
            rows = self._jsonl(src.name, text)
        elif src.suffix == ".json":
            rows = self._json(text)
        else:
            rows = self._csv(src, text)
        yield from self._documents(src.name, rows, opts.text_field)

    def _documents(self, name: str, rows: Iterator, text_field: str | None) -> Iterator:
        # rows: (line, record) pairs or Problems; the field is guessed on the first 100 records.
        head: list = []
        for item in rows:
            head.append(item)
            if len(head) >= 100:
                break
        records = [r for _, r in (x for x in head if not isinstance(x, Problem))]
        field = text_field or guess_field(records)
        if text_field and records and not any(isinstance(r, dict) and text_field in r for r in records):
            known = ", ".join(sorted({k for r in records if isinstance(r, dict) for k in r})[:20])
            raise ReaderError(f"no field '{text_field}' in its records (fields: {known})")
        if field is None and not any(isinstance(r, str) for r in records):
            raise ReaderError("no text field found in its records; name one with --text-field")
        missing = 0
        for item in _chain(head, rows):
            if isinstance(item, Problem):
                yield item
                continue
            line, rec = item
            conversation = None if text_field else _conversation(rec, f"{name}:{line}")
            if conversation is not None:
                yield conversation
                continue
            value = _record_text(rec, field)
            if value is None:
                missing += 1
                if missing <= 20:  # a whole file of them says the same thing: report the first few
                    yield Problem(f"{name}:{line}", f"record has no text in field '{field}'")
                continue
            if value.strip():
                yield Document(text=value, source=f"{name}:{line}", meta={"line": line, "field": field})
        if missing > 20:
            yield Problem(name, f"{missing} records in all have no text in field '{field}'")

    def _jsonl(self, name: str, text: str) -> Iterator:
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as e:
                yield Problem(f"{name}:{line}", f"broken JSON line: {e.msg} (column {e.colno})")

    def _json(self, text: str) -> Iterator:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ReaderError(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
        if isinstance(obj, dict):
            lists = [k for k in LIST_KEYS if isinstance(obj.get(k), list)]
            if lists:
                obj = obj[lists[0]]
            else:
                yield 1, obj  # one record: the object itself
                return
        if not isinstance(obj, list):
            raise ReaderError(f"expected a list of records or an object, found {type(obj).__name__}")
        # JSON has no line numbers per record once parsed: use the 1-based record index instead.
        yield from enumerate(obj, start=1)

    def _csv(self, src: Source, text: str) -> Iterator:
        delimiter = "\t" if src.suffix in (".tsv", ".tab") else ","
        if delimiter == ",":
            try:  # European spreadsheets write ';'
                delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
            except csv.Error:
                pass
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        old_limit = csv.field_size_limit()
        csv.field_size_limit(1 << 30)  # long texts in one cell are the point here; restored below
        try:
            if not reader.fieldnames:
                return
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if isinstance(k, str)}
        except csv.Error as e:
            yield Problem(f"{src.name}:{reader.line_num}", f"broken CSV: {e}")
        finally:
            csv.field_size_limit(old_limit)


def _conversation(rec, source: str) -> Conversation | None:
    """A record in ``ownlm extract``'s own conversation form (``{"messages": [{"name", "time", "text"}]}``)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list) or not rec["messages"]:
        return None
    messages = rec["messages"]
    if not all(isinstance(m, dict) and isinstance(m.get("text"), str) and "name" in m for m in messages):
        return None
    return Conversation(
        source=rec.get("source") if isinstance(rec.get("source"), str) else source,
        messages=[Message(str(m["name"]), str(m.get("time", "")), m["text"]) for m in messages],
        meta=rec.get("meta") if isinstance(rec.get("meta"), dict) else {},
    )


def _chain(head: list, rest: Iterator) -> Iterator:
    yield from head
    yield from rest
