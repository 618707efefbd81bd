"""``ownlm corpus stats``: a corpus folder in numbers, and a histogram of its record lengths (PNG).

``ownlm corpus stats corpus/`` prints the sizes and duplicates removed and writes ``corpus/lengths.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt


@dataclass
class StatsConfig:
    """Print a corpus folder's sizes, documents, duplicates removed, and write a length histogram (PNG)."""

    corpus: str = opt(help="corpus folder written by `ownlm corpus`", positional=True)
    png: str = opt("", help="where to write the histogram (default: CORPUS/lengths.png)")


def record_lengths(path: Path) -> list[int]:
    """Characters per record of a corpus split file (a conversation counts all its messages)."""
    from ownlm.io import iter_jsonl

    lengths = []
    for _, rec in iter_jsonl(path):
        msgs = rec.get("messages")
        lengths.append(sum(len(m["text"]) for m in msgs) if isinstance(msgs, list) else len(rec["text"]))
    return lengths


def plot_lengths(lengths: dict[str, list[int]], path: Path, title: str) -> None:
    """A histogram of record lengths per split on a log axis (lengths span several orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ownlm.io import atomic_write

    everything = [n for v in lengths.values() for n in v] or [1]
    bins = np.logspace(0, np.log10(max(everything) + 1), 40)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, v in lengths.items():
        if v:
            ax.hist(np.maximum(v, 1), bins=bins, alpha=0.6, label=f"{name} ({len(v):,})")
    ax.set_xscale("log")
    ax.set_xlabel("characters per record")
    ax.set_ylabel("records")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def stats_main(cfg: StatsConfig) -> int:
    import numpy as np

    from ownlm.corpus import FORMAT, VERSION
    from ownlm.io import read_manifest

    folder = Path(cfg.corpus or ".")
    m = read_manifest(folder, FORMAT, VERSION)
    lengths = {name: record_lengths(folder / f"{name}.jsonl") for name in ("train", "val")}
    r = m["removed"]
    print(f"corpus {folder}: {m['records_read']:,} records read, {m['kept']:,} kept")
    print(
        f"removed: {r['exact_duplicates']:,} exact duplicates, {r['near_duplicates']:,} near duplicates, "
        f"{r['too_short']:,} too short, {r['too_long']:,} too long"
    )
    print(f"{'split':<6} {'documents':>10} {'convers.':>9} {'messages':>9} {'characters':>13} {'MB':>8}")
    for name in ("train", "val"):
        c = m["splits"][name]
        print(
            f"{name:<6} {c['documents']:>10,} {c['conversations']:>9,} {c['messages']:>9,} {c['chars']:>13,} "
            f"{c['bytes'] / 1e6:>8.2f}"
        )
    for name, v in lengths.items():
        if v:
            q = np.percentile(v, [0, 10, 50, 90, 100]).astype(int)
            print(
                f"{name} characters per record: min {q[0]:,}  p10 {q[1]:,}  median {q[2]:,}  p90 {q[3]:,}  max {q[4]:,}"
            )
    png = Path(cfg.png) if cfg.png else folder / "lengths.png"
    plot_lengths(lengths, png, f"record lengths in {folder.name or folder}")
    print(f"length histogram: {png}")
    return 0
