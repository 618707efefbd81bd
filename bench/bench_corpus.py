"""Corpus benchmark: the embedded corpus' collection time, and ``ownlm corpus`` throughput with and without
near-duplicate detection, against the floor peer "read the JSONL, NFC-normalise, write it back" in the same run.

    python bench/bench_corpus.py                     # ../shared/data/gutenberg, all 58 books (~52 MB)
    python bench/bench_corpus.py --books 10 --repeat 3

Prints seconds and MB/s for each, the ratio to the floor peer, and the largest estimated Jaccard similarity
between two different books (how far below the 0.8 threshold distinct texts stay).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
import unicodedata
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gutenberg"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import numpy as np

    from ownlm.corpus import CorpusConfig, build_corpus
    from ownlm.minhash import MinHasher, shingles
    from ownlm.pydocs import collect_documents

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="folder of .txt books")
    ap.add_argument("--books", type=int, default=0, help="use only the first N books (0: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is reported")
    args = ap.parse_args()

    t = _best(lambda: collect_documents(), args.repeat)
    docs = collect_documents()
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"python-docs: {len(docs)} documents, {mb:.2f} MB collected in {t:.2f} s")

    books = sorted(Path(args.data).glob("*.txt"))[: args.books or None]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "books.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for p in books:
                f.write(
                    json.dumps({"id": p.name, "text": p.read_text(encoding="utf-8")}, ensure_ascii=False)
                    + "\n"
                )
        size = src.stat().st_size / 1e6

        def floor_peer() -> None:
            with (
                open(src, encoding="utf-8") as fin,
                open(Path(tmp) / "peer.jsonl", "w", encoding="utf-8") as fout,
            ):
                for line in fin:
                    rec = json.loads(line)
                    rec["text"] = unicodedata.normalize("NFC", rec["text"])
                    fout.write(json.dumps(rec, ensure_ascii=False) + "\n")

        peer = _best(floor_peer, args.repeat)
        print(f"\n{len(books)} books, {size:.1f} MB of JSONL")
        print(f"  floor peer (read, NFC, write)       {peer:7.2f} s  {size / peer:6.1f} MB/s")
        for near in (False, True):
            cfg = CorpusConfig(out=str(Path(tmp) / f"c{near}"), inputs=[str(src)], near_dup=near)
            t = _best(lambda cfg=cfg: build_corpus(cfg), args.repeat)
            label = "ownlm corpus" + (" (exact + near dedup)" if near else " (exact dedup only)  ")
            print(f"  {label:<36} {t:7.2f} s  {size / t:6.1f} MB/s  ({t / peer:.1f}x the floor peer's time)")

        hasher = MinHasher(128)
        sigs = [hasher.signature(shingles(p.read_text(encoding="utf-8"), 7)) for p in books]
        best = max(
            ((float(np.mean(sigs[i] == sigs[j])), books[i].name, books[j].name)
             for i, j in itertools.combinations(range(len(books)), 2)),
            default=(0.0, "", ""),
        )  # fmt: skip
        print(
            f"  most similar pair of different books: estimated Jaccard {best[0]:.2f} ({best[1]}, {best[2]})"
        )


if __name__ == "__main__":
    main()
