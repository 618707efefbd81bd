"""Extraction benchmark: throughput (MB/s) and text fidelity, ours against a plain peer in the same run.

    python bench/bench_extract.py                       # ../shared/data/{gutenberg,docs}
    python bench/bench_extract.py --repeat 3 --books 20

1. ``ownlm extract`` end to end (walk, decode, JSONL write) on the Gutenberg folder, against the floor
   peer "read every file, decode UTF-8, write the same JSONL".
2. Every document fixture: our reader's MB/s, and the MB/s of a peer that uses the same library the
   plain way (HTML: BeautifulSoup ``get_text``; DOCX: python-docx paragraphs + table cells; PDF:
   pypdf ``extract_text``; EPUB: BeautifulSoup over every XHTML file in zip order, no spine).
   Where an expected ``.txt`` lies beside the fixture, the character-level similarity of both outputs
   to it (``ownlm.extract.fidelity.similarity``: whitespace-normalised, 1.0 = identical), and the
   share of the expected words our text holds in any order (word recall: reading order aside).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


# --- peers: the same libraries used the plain way -----------------------------------------------------


def peer_html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    return BeautifulSoup(data, "lxml").get_text("\n")


def peer_docx(data: bytes) -> str:
    import docx

    d = docx.Document(io.BytesIO(data))
    parts = [p.text for p in d.paragraphs]
    parts += [c.text for t in d.tables for row in t.rows for c in row.cells]
    return "\n".join(parts)


def peer_pdf(data: bytes) -> str:
    import pypdf

    r = pypdf.PdfReader(io.BytesIO(data))
    if r.is_encrypted:
        r.decrypt("")
    return "\n".join(p.extract_text() or "" for p in r.pages)


def peer_epub(data: bytes) -> str:
    from bs4 import BeautifulSoup

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [n for n in zf.namelist() if n.lower().endswith((".xhtml", ".html", ".htm"))]
        return "\n".join(BeautifulSoup(zf.read(n), "lxml").get_text("\n") for n in names)


def word_recall(got: str, expected: str) -> float:
    """Share of the expected words (with multiplicity) present in ``got``, in any order."""
    from collections import Counter

    from ownlm.extract.fidelity import normalise_space

    want = Counter(normalise_space(expected).split())  # layout-only tokens (| --- -) do not count
    return sum((Counter(normalise_space(got).split()) & want).values()) / max(sum(want.values()), 1)


PEERS = {"html": peer_html, "docx": peer_docx, "pdf": peer_pdf, "epub": peer_epub}


# --- 1. a folder of books through the CLI ------------------------------------------------------------


def bench_books(folder: Path, limit: int, repeat: int) -> None:
    from ownlm.cli import main

    books = sorted(folder.glob("*.txt"))[:limit] if limit else sorted(folder.glob("*.txt"))
    size = sum(p.stat().st_size for p in books) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "books"
        src.mkdir()
        for p in books:  # symlinks: the run reads the shared files, without copying 50 MB
            (src / p.name).symlink_to(p)
        out = Path(tmp) / "books.jsonl"

        def ours():
            with open(os.devnull, "w") as devnull:
                stdout, sys.stdout = sys.stdout, devnull
                try:
                    assert main(["extract", str(src), "--out", str(out)]) == 0
                finally:
                    sys.stdout = stdout

        def floor():
            with open(Path(tmp) / "floor.jsonl", "w", encoding="utf-8") as f:
                for p in sorted(src.iterdir()):
                    text = p.read_bytes().decode("utf-8")
                    f.write(json.dumps({"text": text, "source": str(p)}, ensure_ascii=False) + "\n")

        t_ours, _ = best_time(ours, repeat)
        t_floor, _ = best_time(floor, repeat)
    print(f"\n## ownlm extract on {len(books)} Gutenberg books ({size:.1f} MB)\n")
    print("| run | seconds | MB/s |")
    print("|---|---:|---:|")
    print(f"| ownlm extract (CLI, end to end) | {t_ours:.2f} | {size / t_ours:.1f} |")
    print(f"| floor peer: read + decode + json write | {t_floor:.2f} | {size / t_floor:.1f} |")
    print(f"\nratio ours/floor throughput: {t_floor / t_ours:.2f}")


# --- 2. document fixtures ----------------------------------------------------------------------------


def bench_docs(folder: Path, repeat: int) -> None:
    from ownlm.extract.base import ExtractOptions, ReaderError, Source, load_readers, pick_reader
    from ownlm.extract.fidelity import similarity

    readers = load_readers()
    rows = []
    per_reader: dict[str, list[float]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix == ".txt":
            continue
        data = path.read_bytes()
        src = Source(path.name, data)
        reader = pick_reader(src, readers)
        if reader is None:
            rows.append((path, "-", len(data), None, None, None, None, None, "no reader"))
            continue

        def ours(reader=reader, src=src):
            docs = list(reader.read(src, ExtractOptions()))
            return "\n\n".join(getattr(d, "text", "") for d in docs)

        try:
            t_ours, text = best_time(ours, repeat)
        except ReaderError as e:
            rows.append((path, reader.name, len(data), None, None, None, None, None, str(e)[:50]))
            continue
        acc = per_reader.setdefault(reader.name, [0.0, 0.0, 0.0])
        acc[0] += len(data)
        acc[1] += t_ours
        t_peer, peer_text = None, None
        if reader.name in PEERS:
            try:
                t_peer, peer_text = best_time(lambda r=reader, d=data: PEERS[r.name](d), repeat)
                acc[2] += t_peer
            except Exception as e:  # the peer fails where ours does not: say so in the table
                peer_text = None
                rows.append(
                    (
                        path,
                        reader.name + " (peer)",
                        len(data),
                        None,
                        None,
                        None,
                        None,
                        None,
                        f"peer: {e}"[:50],
                    )
                )
        expected = path.with_suffix(".txt")
        fid = fid_peer = recall = None
        if expected.is_file():
            want = expected.read_text(encoding="utf-8", errors="replace")
            fid, recall = similarity(text, want), word_recall(text, want)
            fid_peer = similarity(peer_text, want) if peer_text is not None else None
        rows.append((path, reader.name, len(data), t_ours, t_peer, fid, fid_peer, recall, ""))

    def f(x, fmt):
        return "" if x is None else format(x, fmt)

    print(f"\n## document fixtures ({folder})\n")
    print(
        "| file | reader | KB | ours MB/s | peer MB/s | fidelity ours | fidelity peer | word recall ours | note |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for path, name, size, t_o, t_p, fid, fid_p, recall, note in rows:
        mbps_o = size / 1e6 / t_o if t_o else None
        mbps_p = size / 1e6 / t_p if t_p else None
        print(
            f"| {path.relative_to(folder)} | {name} | {size / 1e3:.0f} | {f(mbps_o, '.2f')} | {f(mbps_p, '.2f')} "
            f"| {f(fid, '.3f')} | {f(fid_p, '.3f')} | {f(recall, '.3f')} | {note} |"
        )
    print("\n| reader | MB | ours MB/s | peer MB/s | ratio ours/peer |")
    print("|---|---:|---:|---:|---:|")
    for name, (size, t_o, t_p) in sorted(per_reader.items()):
        peer = f"{size / 1e6 / t_p:.2f}" if t_p else ""
        ratio = f"{t_p / t_o:.2f}" if t_p else ""
        print(f"| {name} | {size / 1e6:.2f} | {size / 1e6 / t_o:.2f} | {peer} | {ratio} |")


def main() -> None:
    # The peers' libraries warn about things the table already shows (XHTML parsed as HTML, repaired PDFs).
    warnings.filterwarnings("ignore", message=".*XML document.*")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gutenberg", type=Path, default=DATA / "gutenberg", help="folder of .txt books")
    ap.add_argument("--docs", type=Path, default=DATA / "docs", help="document fixtures folder")
    ap.add_argument("--books", type=int, default=0, help="use only the first N books (0: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest counts")
    ap.add_argument("--skip-books", action="store_true", help="only the document fixtures")
    args = ap.parse_args()
    print(
        f"# extraction benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs"
    )
    if not args.skip_books:
        if not args.gutenberg.is_dir():
            sys.exit(f"{args.gutenberg}: not found (give --gutenberg DIR or --skip-books)")
        bench_books(args.gutenberg, args.books, args.repeat)
    if not args.docs.is_dir():
        sys.exit(f"{args.docs}: not found (give --docs DIR)")
    bench_docs(args.docs, args.repeat)


if __name__ == "__main__":
    main()
