"""The end-of-run summary of ``ownlm extract``: counts per reader, errors, skipped files, notes.

Written as ``FILE.summary.json`` beside the output and printed as a short table:

    reader   files  failed  documents  conversations  messages  characters
    pdf          3       1          2              0         0      45,120
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ownlm.extract.base import Conversation, Document

COUNTS = (
    "files",
    "failed",
    "documents",
    "conversations",
    "messages",
    "characters",
    "bytes",
    "dropped",
    "scanned_pages",
)
# Document meta keys that deserve a line in the summary: (key, how to say it).
NOTES = {
    "scanned_pages": "pages with no text layer (scanned images, not extracted): {}",
    "failed_pages": "pages that could not be read: {}",
    "missing_chapters": "chapters missing or damaged: {}",
    "invalid_bytes": "{} invalid UTF-8 bytes replaced",
    "decoded_as": "not UTF-8: decoded as {} (a guess; convert the file to UTF-8 if the text looks wrong)",
}
SHOW = 20  # problems listed on the terminal; the JSON has all of them


def _list(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


class Summary:
    def __init__(self) -> None:
        self.readers: dict[str, Counter] = {}
        self.errors: list[dict] = []
        self.notes: list[dict] = []
        self.skipped: list[str] = []
        self.skipped_ext: Counter = Counter()
        self.scanned_pages = 0

    def _r(self, reader: str) -> Counter:
        return self.readers.setdefault(reader, Counter({k: 0 for k in COUNTS}))

    @property
    def records(self) -> int:
        return sum(c["documents"] + c["conversations"] for c in self.readers.values())

    def error(self, where: str, reason: str) -> None:
        self.errors.append({"file": where, "reason": reason})

    def note(self, where: str, note: str) -> None:
        self.notes.append({"file": where, "note": note})

    def skip(self, name: str, suffix: str) -> None:
        self.skipped.append(name)
        self.skipped_ext[suffix or "(none)"] += 1

    def file(self, reader: str, size: int, failed: bool) -> None:
        c = self._r(reader)
        c["files"] += 1
        c["bytes"] += size
        c["failed"] += int(failed)

    def dropped(self, reader: str) -> None:
        self._r(reader)["dropped"] += 1

    def add(self, reader: str, source: str, item: Document | Conversation, record: dict) -> None:
        c = self._r(reader)
        if isinstance(item, Document):
            c["documents"] += 1
            c["characters"] += len(record["text"])
            for key, template in NOTES.items():
                if item.meta.get(key):
                    self.note(source, template.format(_list(item.meta[key])))
            scanned = len(item.meta.get("scanned_pages") or [])
            c["scanned_pages"] += scanned
            self.scanned_pages += scanned
        else:
            c["conversations"] += 1
            c["messages"] += len(record["messages"])
            c["characters"] += sum(len(m["text"]) for m in record["messages"])

    def total(self, key: str) -> int:
        return sum(c[key] for c in self.readers.values())

    def to_dict(self, **head) -> dict:
        return {
            "format": "ownlm-extract-summary",
            "version": 1,
            **head,
            "documents": self.total("documents"),
            "conversations": self.total("conversations"),
            "messages": self.total("messages"),
            "characters": self.total("characters"),
            "dropped_short": self.total("dropped"),
            "scanned_pages": self.scanned_pages,
            "readers": {name: dict(c) for name, c in sorted(self.readers.items())},
            "errors": self.errors,
            "skipped": {
                "count": len(self.skipped),
                "by_extension": dict(self.skipped_ext),
                "files": self.skipped,
            },
            "notes": self.notes,
        }

    def _skipped_line(self) -> str:
        kinds = ", ".join(f"{ext} ({n})" for ext, n in self.skipped_ext.most_common())
        return f"skipped {_count(len(self.skipped), 'file')} no reader takes: {kinds}"

    def report(self, d: dict, side: Path) -> str:
        """The terminal summary: totals, a table per reader, then problems, skips and notes."""
        lines = [
            f"extracted {_count(d['files'], 'file')} in {d['seconds']:.1f} s -> {d['output']}: "
            f"{_count(d['documents'], 'document')}, {_count(d['conversations'], 'conversation')} "
            f"({_count(d['messages'], 'message')}), {_count(d['characters'], 'character')}"
        ]
        cols = ("files", "failed", "documents", "conversations", "messages", "characters")
        widths = [max(len(c), 9) + 2 for c in cols]
        lines.append(f"  {'reader':<10}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
        for name, c in sorted(self.readers.items()):
            lines.append(f"  {name:<10}" + "".join(f"{c[k]:>{w},}" for k, w in zip(cols, widths)))
        if d["dropped_short"]:
            lines.append(f"dropped {d['dropped_short']:,} records shorter than --min-chars")
        if self.skipped:
            lines.append(self._skipped_line())
        for title, items, key in (("problem", self.errors, "reason"), ("note", self.notes, "note")):
            if items:
                lines.append(f"{len(items)} {title}{'s' if len(items) > 1 else ''}:")
                lines.extend(f"  {it['file']}: {it[key]}" for it in items[:SHOW])
                if len(items) > SHOW:
                    lines.append(f"  ... and {len(items) - SHOW} more in {side}")
        lines.append(f"summary: {side}")
        return "\n".join(lines)

    def nothing_message(self, files: int) -> str:
        """The error when no record came out: why, file by file (the first few); one line for one problem."""
        if len(self.errors) == 1 and not self.skipped and not self.total("dropped"):
            e = self.errors[0]
            return f"{e['file']}: {e['reason']}; nothing extracted, no output written"
        lines = [f"nothing extracted from {_count(files, 'file')}; no output written"]
        lines.extend(f"  {e['file']}: {e['reason']}" for e in self.errors[:SHOW])
        if len(self.errors) > SHOW:
            lines.append(f"  ... and {len(self.errors) - SHOW} more problems")
        if self.skipped:
            lines.append(
                "  "
                + self._skipped_line()
                + " (supported: txt, md, html, pdf, epub, docx, json, jsonl, csv, "
                "tsv, zip, WhatsApp and Telegram exports)"
            )
        if self.total("dropped"):
            lines.append(f"  {self.total('dropped')} records were shorter than --min-chars")
        return "\n".join(lines)


def _count(n: int, word: str) -> str:
    """``_count(1, "file")`` -> ``'1 file'``; ``_count(1200, "file")`` -> ``'1,200 files'``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"
