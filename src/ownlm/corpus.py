"""``ownlm corpus``: clean, filter, deduplicate and split documents into ``corpus/{train,val}.jsonl``.

One pass over the input records, in order:

1. clean — control characters out (newlines and tabs stay), line endings to ``\\n``, Unicode NFC, trailing
   spaces off every line, at most one blank line between paragraphs (indentation is kept: code stays code);
2. filter — ``--min-chars`` / ``--max-chars`` on the cleaned text;
3. exact duplicates — sha256 of the text with case and whitespace runs ignored; the first copy is kept;
4. near-duplicates — MinHash + LSH over character shingles (``ownlm.minhash``), language-agnostic;
5. split — a document goes to val when the hash of its id falls below ``--val-fraction`` (deterministic, and a
   document's split never changes when others are added); a conversation is split by time instead: its latest
   messages go to val, the earlier ones to train, so no message is in both and val never leaks into train.

Both files and the manifest are written atomically; a bad input line stops the run with ``file:line`` and
leaves nothing behind.

    ownlm corpus docs.jsonl --out corpus
    ownlm corpus stats corpus
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import config_hash, opt, save_config, to_dict
from ownlm.errors import UserError

FORMAT, VERSION = "ownlm-corpus", 1
MAX_PROBLEMS = 100  # problems listed by name in manifest.json (all are counted)

# C0/C1 control characters except \t and \n (\r is turned into \n first), lone surrogates (cannot be written
# as UTF-8), the byte-order mark and the Unicode non-characters U+FFFE/U+FFFF.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85]")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)  # whitespace other than \n at the end of a line
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Clean one text: newlines normalised, control characters removed, NFC, trailing spaces and extra blank
    lines removed. Idempotent: ``clean_text(clean_text(s)) == clean_text(s)``.

    >>> clean_text("Cafe\\u0301\\r\\n\\r\\n\\r\\n\\x00next  ")
    'Café\\n\\nnext'
    """
    text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING.sub("", text)
    text = _BLANKS.sub("\n\n", text)
    return text.strip("\n").rstrip()


def dedup_key(text: str) -> bytes:
    """The digest exact-duplicate removal compares: case and runs of whitespace do not count."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode("utf-8")).digest()[:16]


def id_fraction(doc_id: str) -> float:
    """A number in [0, 1) fixed by the id alone: ``< val_fraction`` means val. Stable across runs and machines.

    >>> 0 <= id_fraction("doc-1") < 1
    True
    """
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2**64


@dataclass
class CorpusConfig:
    """Clean, deduplicate and split documents (JSONL from `ownlm extract`, or text files) into a corpus folder."""

    out: str = opt(help="output folder: train.jsonl, val.jsonl, manifest.json")
    inputs: list[str] = opt(
        [], help="documents/conversations JSONL files, text files, or folders", positional=True
    )
    val_fraction: float = opt(
        0.1, help="share of documents (and of each conversation's latest messages) for val", bounds="[0, 1)"
    )
    min_chars: int = opt(1, help="drop documents shorter than this many characters after cleaning")
    max_chars: int = opt(0, help="drop documents longer than this (0 = no limit)")
    near_dup: bool = opt(True, help="remove near-duplicates (MinHash + LSH over character shingles)")
    near_dup_threshold: float = opt(
        0.8, help="estimated Jaccard similarity at which a document is a near-duplicate", bounds="[0, 1]"
    )
    shingle_chars: int = opt(7, help="characters per shingle for near-duplicate detection", bounds="[1, inf)")
    num_perm: int = opt(128, help="MinHash signature length (more = more exact, slower)", bounds="[1, inf)")
    text_field: str = opt("text", help="JSON field holding a document's text")
    force: bool = opt(False, help="replace an --out folder that ownlm made for another kind of output")


@dataclass
class Record:
    """One input record, cleaned: a document (``text``) or a conversation (``messages``)."""

    rec: dict
    where: str  # file:line, for messages

    @property
    def is_conversation(self) -> bool:
        return "messages" in self.rec

    def text(self) -> str:
        """The text filters and deduplication look at (a conversation as ``name: text`` lines)."""
        if self.is_conversation:
            return "\n".join(f"{m.get('name', '')}: {m['text']}" for m in self.rec["messages"])
        return self.rec["text"]


def _parse(obj: object, where: str, text_field: str) -> Record:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if isinstance(obj.get("messages"), list):
        messages = []
        for i, m in enumerate(obj["messages"]):
            if not isinstance(m, dict) or not isinstance(m.get("text"), str):
                raise UserError(f"{where}: message {i} needs a 'text' string (format: {{name, time, text}})")
            text = clean_text(m["text"])
            if text:
                messages.append({**m, "text": text})
        return Record({"id": None, **obj, "messages": messages}, where)
    if not isinstance(obj.get(text_field), str):
        raise UserError(
            f"{where}: expected a '{text_field}' string (a document) or a 'messages' list (a chat)"
        )
    rec = {k: v for k, v in obj.items() if k != text_field}
    return Record({"id": None, **rec, "text": clean_text(obj[text_field])}, where)


def iter_records(inputs: list[str], text_field: str = "text"):
    """Yield cleaned ``Record``s from JSONL files, text files (one document each) and folders of them."""
    from ownlm.io import iter_jsonl
    from ownlm.textsource import JSONL_SUFFIXES, expand_inputs, read_text_file

    for path in expand_inputs(inputs):
        if path.suffix.lower() in JSONL_SUFFIXES:
            for lineno, obj in iter_jsonl(path):
                yield _parse(obj, f"{path}:{lineno}", text_field)
        else:
            yield Record(
                {"id": str(path), "text": clean_text(read_text_file(path)), "source": str(path)}, str(path)
            )


def split_conversation(rec: dict, val_fraction: float) -> tuple[dict | None, dict | None]:
    """(train part, val part) of a conversation: its latest ``val_fraction`` of messages go to val.

    Messages are taken in the export's order, which is the order they were sent. A conversation too short to
    give val one message goes whole to one side, chosen by its id like a document.

    >>> rec = {"id": "c", "messages": [{"text": str(i)} for i in range(10)]}
    >>> [len(p["messages"]) for p in split_conversation(rec, 0.2)]
    [8, 2]
    """
    messages = rec["messages"]
    n_val = int(len(messages) * val_fraction)
    if n_val == 0:
        whole_to_val = val_fraction > 0 and id_fraction(str(rec.get("id"))) < val_fraction
        return (None, rec) if whole_to_val else (rec, None)
    cut = len(messages) - n_val
    return {**rec, "messages": messages[:cut]}, {**rec, "messages": messages[cut:]}


class _SplitWriter:
    """One output split: an atomic JSONL file plus running counts and a sha256 of what was written."""

    def __init__(self, stack: contextlib.ExitStack, path: Path):
        from ownlm.io import atomic_write

        self.f = stack.enter_context(atomic_write(path))
        self.h = hashlib.sha256()
        self.counts = {"documents": 0, "conversations": 0, "messages": 0, "chars": 0, "bytes": 0}

    def write(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        data = line.encode("utf-8")
        self.f.write(line)
        self.h.update(data)
        self.counts["bytes"] += len(data)
        if "messages" in rec:
            self.counts["conversations"] += 1
            self.counts["messages"] += len(rec["messages"])
            self.counts["chars"] += sum(len(m["text"]) for m in rec["messages"])
        else:
            self.counts["documents"] += 1
            self.counts["chars"] += len(rec["text"])


def _log_duplicate(f, r: Record, kept: str, similarity: float, kind: str) -> None:
    """One line of ``duplicates.jsonl``: which record was dropped, and which kept record it copies."""
    entry = {"kind": kind, "dropped": r.where, "id": r.rec.get("id"), "kept": kept, "similarity": similarity}
    f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _settle_tiny_corpus(train, val, first_val, lowest_train, val_fraction: float) -> bool:
    """Write the two held-back documents. Normally they go where their hash says; but a corpus with nothing
    else for training keeps its one val document for training, and one with nothing for validation gets its
    lowest-hash train document moved there. Returns whether that move happened."""
    n = lambda w: w.counts["documents"] + w.counts["conversations"]  # noqa: E731
    if first_val is not None:
        (val if n(train) or lowest_train else train).write(first_val)
    if lowest_train is not None:
        if val_fraction > 0 and n(val) == 0 and n(train) > 0:
            val.write(lowest_train[1])  # one document for val beats no validation at all
            return True
        train.write(lowest_train[1])
    return False


def build_corpus(cfg: CorpusConfig) -> dict:
    """Run the corpus stage; return the manifest it wrote. See the module docstring for the steps."""
    from ownlm.io import RunLock, prepare_output
    from ownlm.textsource import expand_inputs

    if not 0.0 <= cfg.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    if not 0.0 < cfg.near_dup_threshold <= 1.0:
        raise UserError(f"--near-dup-threshold must be in (0, 1], got {cfg.near_dup_threshold}")
    if cfg.shingle_chars < 1 or cfg.num_perm < 1:
        raise UserError("--shingle-chars and --num-perm must be at least 1")
    files = expand_inputs(cfg.inputs)
    out = prepare_output(cfg.out, kind=FORMAT, folder=True, force=cfg.force, inputs=files)
    with RunLock(out):  # a failed run leaves no folder behind that it created
        return _build_into(cfg, files, out)


def _build_into(cfg: CorpusConfig, files: list[Path], out: Path) -> dict:
    from tqdm import tqdm

    from ownlm.io import atomic_write, mark_output, sha256_file, write_manifest
    from ownlm.minhash import NearDupIndex

    removed = {"too_short": 0, "too_long": 0, "exact_duplicates": 0, "near_duplicates": 0}
    seen: dict[bytes, str] = {}  # dedup key -> where the kept copy came from
    kept_where: list[str] = []  # near-dup index position -> where that document came from
    near = NearDupIndex(cfg.near_dup_threshold, cfg.num_perm, cfg.shingle_chars) if cfg.near_dup else None
    read = 0
    problems: list[str] = []  # inputs (files or file:line) that held no text
    first_val, lowest_train = None, None  # see _settle_tiny_corpus
    with contextlib.ExitStack() as stack:
        train = _SplitWriter(stack, out / "train.jsonl")
        val = _SplitWriter(stack, out / "val.jsonl")
        dup_log = stack.enter_context(atomic_write(out / "duplicates.jsonl"))
        bar = stack.enter_context(tqdm(desc="corpus", unit=" docs", disable=None, file=sys.stderr))
        for r in iter_records([str(f) for f in files], cfg.text_field):
            read += 1
            bar.update(1)
            text = r.text()
            if not text.strip() or (r.is_conversation and not r.rec["messages"]):
                problems.append(r.where)  # an empty file or record: say so, it may be a failed extraction
            if len(text) < max(cfg.min_chars, 1) or (r.is_conversation and not r.rec["messages"]):
                removed["too_short"] += 1
                continue
            if cfg.max_chars and len(text) > cfg.max_chars:
                removed["too_long"] += 1
                continue
            key = dedup_key(text)
            if key in seen:
                removed["exact_duplicates"] += 1
                _log_duplicate(dup_log, r, seen[key], 1.0, "exact")
                continue
            seen[key] = r.where
            if near is not None:
                match, similarity, sig = near.find(text)
                if match is not None:
                    removed["near_duplicates"] += 1
                    _log_duplicate(dup_log, r, kept_where[match], similarity, "near")
                    continue
                near.add(sig)
                kept_where.append(r.where)
            rec = r.rec
            if rec.get("id") is None:
                rec["id"] = key.hex()  # no id given: the content names the record
            if r.is_conversation:
                tr, va = split_conversation(rec, cfg.val_fraction)
                if tr:
                    train.write(tr)
                if va:
                    val.write(va)
                continue
            frac = id_fraction(str(rec["id"]))
            if frac < cfg.val_fraction and first_val is None:
                first_val = rec  # held back in case it is the only document: then it is needed for training
            elif frac < cfg.val_fraction:
                val.write(rec)
            elif lowest_train is None or frac < lowest_train[0]:
                # Held back in case val stays empty: then the lowest-hash train document moves there.
                if lowest_train is not None:
                    train.write(lowest_train[1])
                lowest_train = (frac, rec)
            else:
                train.write(rec)
        moved_to_val = _settle_tiny_corpus(train, val, first_val, lowest_train, cfg.val_fraction)
        if train.counts["bytes"] == 0:
            raise UserError(
                f"no documents left for training: {read} read, removed {removed}; "
                "check the inputs or lower --min-chars"
            )
    splits = {name: {**w.counts, "sha256": w.h.hexdigest()} for name, w in (("train", train), ("val", val))}
    save_config(cfg, out / "config.json")
    mark_output(out, FORMAT)
    manifest = dict(
        records_read=read,
        removed=removed,
        kept=read - sum(removed.values()),
        splits=splits,
        val_fallback=moved_to_val,
        problems=[{"where": w, "reason": "no text"} for w in problems[:MAX_PROBLEMS]],
        problems_total=len(problems),
        inputs=[{"path": str(f), "sha256": sha256_file(f)} for f in files],
        config=to_dict(cfg),
        config_sha256=config_hash(cfg),
    )
    write_manifest(out, FORMAT, VERSION, **manifest)
    return {"format": FORMAT, "version": VERSION, **manifest}


def main(cfg: CorpusConfig) -> int:
    m = build_corpus(cfg)
    s, r = m["splits"], m["removed"]
    print(
        f"corpus {cfg.out}: {m['records_read']:,} records read, {m['kept']:,} kept "
        f"(removed {r['exact_duplicates']:,} exact and {r['near_duplicates']:,} near duplicates, "
        f"{r['too_short']:,} too short, {r['too_long']:,} too long)"
    )
    for name in ("train", "val"):
        c = s[name]
        print(
            f"  {name + '.jsonl':<11} {c['documents']:>7,} documents {c['conversations']:>6,} conversations "
            f"{c['chars']:>13,} characters"
        )
    if m.get("problems_total"):
        shown = ", ".join(p["where"] for p in m["problems"][:5])
        more = f" and {m['problems_total'] - 5:,} more" if m["problems_total"] > 5 else ""
        print(f"  problems: {m['problems_total']:,} input(s) held no text: {shown}{more} (see manifest.json)")
    if m["val_fallback"]:
        print("  (no document hashed into val: the corpus is tiny, so one document was moved there)")
    return 0
