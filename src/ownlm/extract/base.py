"""What every reader shares: the records it yields and the small interface it implements.

A reader is one small class in one file. It says which files it takes (``sniff``: by extension and/or
the first bytes) and turns one file's bytes into documents or conversations. The registry below lists
the readers in the order they are asked; the first whose ``sniff`` says yes reads the file.
Adding a format = one new file with one ``Reader`` subclass + one line in ``READERS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ownlm.errors import UserError
from ownlm.io import load_json_text


@dataclass
class Source:
    """One input file: ``name`` is its path as the user knows it (``export.zip/_chat.txt`` inside a zip)."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        dot = self.name.rfind(".")
        slash = self.name.rfind("/")
        return self.name[dot:].lower() if dot > slash else ""

    @property
    def head(self) -> bytes:
        return self.data[:4096]

    @property
    def head_text(self) -> str:
        """The first 4 KB as text (BOM dropped, bad bytes replaced): what content sniffing looks at."""
        return self.head.decode("utf-8-sig", errors="replace")


@dataclass
class Document:
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    name: str  # the sender exactly as the export spells it
    time: str  # ISO 8601 local time as the export shows it, no time zone invented
    text: str


@dataclass
class Conversation:
    source: str
    messages: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Problem:
    """Part of a file that could not be read (a broken line, a damaged member); the rest was kept.

    Readers may yield these between records; ``ownlm extract`` lists them in its summary (``--strict``
    makes them fatal). ``where`` names the place, e.g. ``notes.jsonl:17``.
    """

    where: str
    reason: str


@dataclass
class ExtractOptions:
    """Reader options that come from the ``ownlm extract`` flags."""

    text_field: str | None = None  # JSON/JSONL/CSV: which field holds the text (None: guess)
    password: str | None = None  # PDF password
    encoding_errors: str = "replace"  # how to treat undecodable bytes in text files
    drop_system: bool = True  # chat exports: drop system lines (encryption notice, joined, ...)
    date_order: str | None = (
        None  # WhatsApp: day-first, month-first, year-first, year-day-month (None: infer)
    )
    html_engine: str = "auto"  # HTML: ownlm, trafilatura, or auto (trafilatura when installed, else ownlm)


class ReaderError(Exception):
    """A file this reader recognised but cannot read; the message says why (and what to do)."""


def load_json(data: bytes | str, what_to_do: str) -> Any:
    """JSON from a chat export's bytes, through the one loader (``ownlm.io.load_json_text``: a depth limit,
    line numbers); a problem is a ``ReaderError`` ending with ``what_to_do``."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        return load_json_text(text, "line")
    except UnicodeDecodeError as e:
        raise ReaderError(f"not UTF-8 JSON ({e.reason} at byte {e.start}); {what_to_do}") from None
    except UserError as e:  # "line:3: not valid JSON: ..." -> "line 3: not valid JSON: ..."
        raise ReaderError(f"line {str(e).removeprefix('line:')}; {what_to_do}") from None


def system_meta(system: list, opts: ExtractOptions) -> dict:
    """What a chat's ``meta`` says of its system lines: their count when they are dropped (the default), or the
    lines themselves with ``--keep-system``."""
    return {"system_dropped": len(system)} if opts.drop_system else {"system": system}


def text_lines(src: Source, opts: ExtractOptions) -> list[str]:
    """A text chat export's lines (UTF-8, a BOM dropped, CR line ends undone); undecodable bytes follow
    ``--errors``, and under ``strict`` they are a ``ReaderError`` naming the byte."""
    try:
        decoded = src.data.decode("utf-8-sig", errors=opts.encoding_errors)
    except UnicodeDecodeError as e:
        raise ReaderError(
            f"invalid UTF-8 at byte {e.start} (--errors {opts.encoding_errors}); use --errors replace"
        ) from None
    return [ln.rstrip("\r") for ln in decoded.split("\n")]


class Reader:
    """Base class. Subclasses set ``name`` and ``extensions`` and implement ``read``."""

    name: str = "reader"
    extensions: tuple[str, ...] = ()

    def sniff(self, src: Source) -> bool:
        """True if this reader should read ``src``. Default: by extension."""
        return src.suffix in self.extensions

    def read(self, src: Source, opts: ExtractOptions) -> Iterator[Document | Conversation | Problem]:
        """Yield the file's records; raise ``ReaderError`` if the file cannot be read at all."""
        raise NotImplementedError


# Asked in this order: specific formats (chat exports) before generic ones (plain text, JSON).
READERS: list[str] = [
    "ownlm.extract.whatsapp:WhatsAppReader",
    "ownlm.extract.telegram:TelegramReader",
    "ownlm.extract.instagram:InstagramReader",
    "ownlm.extract.discord:DiscordReader",
    "ownlm.extract.slack:SlackReader",
    "ownlm.extract.imessage:IMessageReader",
    "ownlm.extract.signal:SignalReader",
    "ownlm.extract.pdf:PdfReader",
    "ownlm.extract.epub:EpubReader",
    "ownlm.extract.docx:DocxReader",
    "ownlm.extract.html:HtmlReader",
    "ownlm.extract.tabular:TabularReader",
    "ownlm.extract.text:TextReader",
]


def load_readers() -> list[Reader]:
    readers = []
    for ref in READERS:
        module, name = ref.split(":")
        readers.append(getattr(importlib.import_module(module), name)())
    return readers


def pick_reader(src: Source, readers: list[Reader]) -> Reader | None:
    for r in readers:
        if r.sniff(src):
            return r
    return None
