"""Encoding throughput: ownlm's ``Tokenizer.encode`` against tiktoken with the SAME vocabulary.

Two vocabularies: one trained by ownlm on the corpus, and GPT-2 (imported from encoder.json + vocab.bpe).
For each, the whole corpus is encoded document by document in one thread (``encode``), then with the batch
API over ``--threads`` threads (``encode_batch``; tiktoken's Rust core releases the GIL, so both cores work).
The peer is measured in the same run, alternating with ours over 12 slices of the corpus (best of
``--repeat`` per slice), so load from other jobs on the machine hits both sides alike.
Both sides produce the same ids (checked), so the ratio is pure overhead of ownlm's wrapper.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_tokenizer_encode.py
    .venv/bin/python bench/bench_tokenizer_encode.py --mb 10 --repeat 1      # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def groups_of(texts: list[str], n: int) -> list[list[str]]:
    """``texts`` cut into about ``n`` groups of similar size (in bytes), order kept."""
    total = sum(map(len, texts))
    out, cur, size = [], [], 0
    for t in texts:
        cur.append(t)
        size += len(t)
        if size >= total / n:
            out.append(cur)
            cur, size = [], 0
    return out + ([cur] if cur else [])


def race(ours, peer, groups: list[list[str]], repeat: int) -> tuple[float, float]:
    """Total seconds of ``ours(group)`` and ``peer(group)`` over all groups, best of ``repeat`` per group.

    The two sides alternate group by group (and swap who goes first), so a busy spell on a shared machine
    slows both sides instead of deciding the ratio.
    """
    t_ours = t_peer = 0.0
    for k, group in enumerate(groups):
        best = [float("inf"), float("inf")]
        for r in range(repeat):
            order = [(0, ours), (1, peer)] if (k + r) % 2 == 0 else [(1, peer), (0, ours)]
            results = {}
            for side, fn in order:
                t = time.perf_counter()
                results[side] = fn(group)
                best[side] = min(best[side], time.perf_counter() - t)
            assert results[0] == results[1], "ownlm and tiktoken gave different ids"
        t_ours += best[0]
        t_peer += best[1]
    return t_ours, t_peer


def bench_pair(name: str, tok, enc, texts: list[str], threads: int, repeat: int) -> list[tuple]:
    """Rows (vocabulary, mode, ownlm MB/s, tiktoken MB/s, ratio) for one vocabulary."""
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    assert tok.encode(texts[0][:10_000]) == enc.encode(texts[0][:10_000])  # warm-up: builds ownlm's engine
    groups = groups_of(texts, 12)
    modes = {
        "1 thread (encode)": (
            lambda g: [tok.encode(t) for t in g],
            lambda g: [enc.encode(t) for t in g],
        ),
        f"{threads} threads (encode_batch)": (
            lambda g: tok.encode_batch(g, num_threads=threads),
            lambda g: enc.encode_batch(g, num_threads=threads),
        ),
    }
    rows = []
    for mode, (ours, peer) in modes.items():
        t_ours, t_peer = race(ours, peer, groups, repeat)
        rows.append((name, mode, mb / t_ours, mb / t_peer, t_peer / t_ours))
        print(f"  {name:<28} {mode:<28} ownlm {mb / t_ours:7.2f} MB/s   tiktoken {mb / t_peer:7.2f} MB/s   "
              f"ratio {t_peer / t_ours:.3f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/gutenberg"), help="folder of .txt files")
    p.add_argument(
        "--gpt2-dir", default=str(ROOT.parent / "shared/data/gpt2_tokenizer"), help="encoder.json + vocab.bpe"
    )
    p.add_argument("--vocab-size", type=int, default=16384, help="vocabulary of the ownlm-trained tokenizer")
    p.add_argument(
        "--train-mb", type=float, default=8.0, help="train that tokenizer on this many MB of the corpus"
    )
    p.add_argument("--tokenizer", help="use this trained ownlm tokenizer (folder) instead of training one")
    p.add_argument(
        "--mb", type=float, default=0, help="encode only the first MB of the corpus (0 = all of it)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the batch mode")
    p.add_argument("--repeat", type=int, default=2, help="measurements per figure; the best is kept")
    args = p.parse_args()

    from ownlm.tokenizer import Tokenizer
    from ownlm.tokenizer.compare import sample_documents
    from ownlm.tokenizer.export import from_gpt2, to_tiktoken

    files = sorted(f for f in Path(args.data).glob("*.txt") if f.name != "SOURCE.txt")
    if not files:
        raise SystemExit(f"no .txt files in {args.data}")
    texts = [f.read_text(encoding="utf-8") for f in files]
    if args.mb:
        texts = sample_documents(texts, sum(len(t.encode()) for t in texts), int(args.mb * 1e6))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {len(texts)} documents, {mb:.1f} MB; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; tiktoken {__import__('tiktoken').__version__}")  # fmt: skip

    if args.tokenizer:
        ours = Tokenizer.load(args.tokenizer)
    else:
        t = time.perf_counter()
        sample = sample_documents(texts, int(mb * 1e6), int(args.train_mb * 1e6))
        ours = Tokenizer.train(sample, vocab_size=args.vocab_size, progress=False)
        print(
            f"trained ownlm tokenizer: {ours.n_vocab} ids on {args.train_mb} MB in {time.perf_counter() - t:.1f} s"
        )
    gpt2 = Path(args.gpt2_dir)
    pairs = [(f"ownlm-trained {ours.n_vocab}", ours)]
    if (gpt2 / "encoder.json").is_file():
        pairs.append(("GPT-2 (imported)", from_gpt2(gpt2 / "encoder.json", gpt2 / "vocab.bpe")))
    rows = []
    for name, tok in pairs:
        rows += bench_pair(name, tok, to_tiktoken(tok), texts, args.threads, args.repeat)

    print("\n| vocabulary | mode | ownlm MB/s | tiktoken MB/s | ownlm / tiktoken |")
    print("|---|---|--:|--:|--:|")
    for name, mode, a, b, r in rows:
        print(f"| {name} | {mode} | {a:.2f} | {b:.2f} | {r:.3f} |")
    worst = min(r for *_, r in rows)
    print(f"\nworst ratio {worst:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
