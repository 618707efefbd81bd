"""Records: JSON, JSONL and CSV/TSV files, one document per record, text from one chosen field.

The field is ``--text-field`` when given (a name, or a column number counted from 1); otherwise the first of
``text, content, body, ...`` that the records have, else the field with the longest strings. A broken JSONL
line or a CSV row without the field is reported as ``file:line`` and the good records are kept. Records in
``ownlm extract``'s own conversation form (``{"messages": [{"name", "time", "text"}]}``) are read back as
conversations.

CSV/TSV files are read by ``Table``, the one table reader (``ownlm finetune classify`` and ``ownlm classify``
use it too): the delimiter is the extension's (``.tsv``) or sniffed, and whether the first row is a header is
decided by ``has_header`` from the rows themselves; a headerless table's columns are named ``"1"``, ``"2"``, ...

>>> [d.text for d in TabularReader().read(Source("a.jsonl", b'{"text": "hi"}\\n'), ExtractOptions())]
['hi']
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import statistics
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
from ownlm.extract.text import decode_text
from ownlm.io import JSONError, load_json_text

TEXT_FIELDS = ("text", "content", "body", "message", "document", "article", "story", "description", "review")
# Where a JSON file keeps its list of records when the top level is an object.
LIST_KEYS = ("data", "records", "items", "documents", "docs", "rows", "entries", "messages", "results")
# Column names that settle the header question at once.
HEADER_NAMES = frozenset(TEXT_FIELDS) | {"label", "labels", "class", "category", "target", "id", "title",
                                         "sentiment", "tag", "topic", "name", "date", "author", "sms", "v1"}  # fmt: skip
SAMPLE_ROWS = 50  # rows that has_header and the delimiter check look at


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


def has_header(rows: list[list[str]]) -> bool:
    """Whether the first of ``rows`` (the first rows of a table) names the columns rather than holding data.

    A header's cells are short, distinct names, unlike the values below them. Each column votes: a known name
    (``text``, ``label``, ...) settles it; a number above numbers, or a value that reappears below, is data;
    a name above numbers, above a few repeated values (labels), or above much longer text is a header. Ties
    are data, so a headerless file never loses its first row to a guess.

    >>> has_header([["label", "text"], ["ham", "see you at eight"], ["spam", "WIN a prize now"]])
    True
    >>> has_header([["ham", "see you at eight"], ["spam", "WIN a prize now"], ["ham", "ok"]])
    False
    """
    if not rows:
        return False
    first = [c.strip() for c in rows[0]]
    named = [c for c in first if c]
    if not named or any(len(c) > 64 or "\n" in c for c in named) or len(set(named)) < len(named):
        return False
    if any(c.lower() in HEADER_NAMES for c in named):
        return True
    body = rows[1:]
    votes = 0
    for j, head in enumerate(first):
        column = [r[j].strip() for r in body if j < len(r) and r[j].strip()]
        if not head or not column:
            continue
        values = set(column)
        if _is_number(head) or head in values:
            votes -= 1
        elif all(_is_number(v) for v in column):
            votes += 1
        elif len(column) >= 4 and len(values) <= max(2, len(column) // 4):  # a label column
            votes += 1
        elif statistics.fmean(len(v) for v in column) > max(20, 3 * len(head)):  # a name above long text
            votes += 1
    return votes > 0


def resolve_field(fields: list[str], name: str | None) -> str | None:
    """``name`` as one of ``fields``: itself, or a column number counted from 1; None if neither.

    >>> resolve_field(["label", "text"], "2"), resolve_field(["1", "2"], "2"), resolve_field(["a"], "b")
    ('text', '2', None)
    """
    if name is None or name in fields:
        return name
    if name.strip().isdigit() and 1 <= int(name) <= len(fields):
        return fields[int(name) - 1]
    return None


def sniff_delimiter(sample: str, suffix: str) -> str:
    """Tab for ``.tsv``/``.tab``; otherwise the one of ``, ; TAB |`` the sample's rows agree on (``,`` if none).

    >>> sniff_delimiter("a;b\\n1;2\\n", ".csv"), sniff_delimiter("x", ".tsv")
    (';', '\\t')
    """
    if suffix in (".tsv", ".tab"):
        return "\t"
    try:  # European spreadsheets write ';'; files with no extension may be anything
        return csv.Sniffer().sniff(sample[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


_QUOTED_CELL = re.compile(r'(?:^|\t)"((?:[^"]|"")*)"(?=\t|\r?\n|$)', re.MULTILINE)


def sniff_quoting(sample: str, delimiter: str) -> int:
    """``csv.QUOTE_MINIMAL`` (quotes wrap cells), except for tab-separated files whose sample shows no quoted cell
    that needs its quotes (one holding a tab, a line break or a doubled quote): tab-separated files are mostly
    written without quoting, and a message that merely starts with a quote must not swallow the lines after it.

    >>> sniff_quoting('ham\\t"Hi" he said\\n', "\\t") == csv.QUOTE_NONE, sniff_quoting('a,"b"\\n', ",")
    (True, 0)
    """
    if delimiter != "\t":
        return csv.QUOTE_MINIMAL
    needed = any(("\t" in c or "\n" in c or '""' in c) for c in _QUOTED_CELL.findall(sample[:65536]))
    return csv.QUOTE_MINIMAL if needed else csv.QUOTE_NONE


@contextlib.contextmanager
def _long_fields():
    old = csv.field_size_limit()
    csv.field_size_limit(1 << 30)  # long texts in one cell are the point here
    try:
        yield
    finally:
        csv.field_size_limit(old)


class Table:
    """A CSV/TSV table read lazily from ``lines`` (a string's lines or an open file): ``fields`` (the header's
    names, or ``"1"``, ``"2"``, ... without one), ``header`` (whether the first row was one), ``width`` (the
    most cells in a sampled row) and, iterated, ``(line, {field: value})`` pairs — a ``Problem`` for a broken
    row, after which reading stops. ``header=None`` decides by ``has_header``.

    >>> t = Table(["ham\\tsee you\\n", "spam\\tWIN\\n"], "sms.tsv", "\\t")
    >>> t.fields, list(t)
    (['1', '2'], [(1, {'1': 'ham', '2': 'see you'}), (2, {'1': 'spam', '2': 'WIN'})])
    """

    def __init__(self, lines: Iterable[str], name: str, delimiter: str, header: bool | None = None,
                 quoting: int = csv.QUOTE_MINIMAL):  # fmt: skip
        self.name, self.delimiter = name, delimiter
        self._reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
        self._head: list[tuple[int, list[str]]] = []
        self._error: Problem | None = None
        with _long_fields():
            try:
                for row in self._reader:
                    if row:
                        self._head.append((self._reader.line_num, row))
                    if len(self._head) >= SAMPLE_ROWS:
                        break
            except csv.Error as e:
                self._error = Problem(f"{name}:{self._reader.line_num}", f"broken CSV: {e}")
        rows = [r for _, r in self._head]
        self.width = max((len(r) for r in rows), default=0)
        self.header = has_header(rows) if header is None else bool(header and rows)
        names = [c.strip() for c in rows[0]] if self.header else []
        self.header_width = len(names)  # 0 without a header
        self.fields = [n if n and n not in names[:j] else str(j + 1) for j, n in enumerate(names)]
        self.fields += [str(j + 1) for j in range(len(self.fields), self.width)]
        if self.header:
            self._head = self._head[1:]

    def __iter__(self) -> Iterator[tuple[int, dict] | Problem]:
        yield from ((line, self._record(row)) for line, row in self._head)
        if self._error is not None:
            yield self._error
            return
        with _long_fields():
            try:
                for row in self._reader:
                    if row:
                        yield self._reader.line_num, self._record(row)
            except csv.Error as e:
                yield Problem(f"{self.name}:{self._reader.line_num}", f"broken CSV: {e}")

    def _record(self, row: list[str]) -> dict:
        fields = self.fields
        if len(row) > len(fields):
            fields = fields + [str(j + 1) for j in range(len(fields), len(row))]
        return dict(zip(fields, row))


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
        text, _, _ = decode_text(src.data, opts.encoding_errors)
        text_field = opts.text_field
        if src.suffix in (".jsonl", ".ndjson"):
            rows = self._jsonl(src.name, text)
        elif src.suffix == ".json":
            rows = self._json(text)
        else:
            table = self._csv(src, text)
            text_field = resolve_field(table.fields, text_field) or text_field  # a column number names one
            rows = iter(table)
        yield from self._documents(src.name, rows, text_field)

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
            try:  # one bad line (broken, nested 100k deep) is that line's problem; the others are kept
                yield line, load_json_text(raw, name, "broken JSON line", first_line=line)
            except JSONError as e:
                yield Problem(f"{name}:{line}", e.detail)

    def _json(self, text: str) -> Iterator:
        try:
            obj = load_json_text(text, "", "not valid JSON")
        except JSONError as e:
            raise ReaderError(f"{e.detail} at line {e.line}") from None
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

    def _csv(self, src: Source, text: str) -> Table:
        delimiter = sniff_delimiter(text, src.suffix)
        return Table(io.StringIO(text), src.name, delimiter, quoting=sniff_quoting(text, delimiter))


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
