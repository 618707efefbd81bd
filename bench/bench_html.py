"""HTML main-text benchmark: must-have and must-not strings per page, ownlm's reader against trafilatura.

    python bench/bench_html.py --eval /tmp/trafilatura_eval/tests           # every page, both readers
    python bench/bench_html.py --eval DIR --readers ours --misses 20        # what ours still lets through

Test data (not stored here): trafilatura's evaluation set, repository github.com/adbar/trafilatura, commit
e90b0ef51ab026fdb905fb6c5b3c84dd3d784fd5, files ``tests/evaldata.json`` (990 pages: per page 1-6 strings
that the main text must hold, "with", and 1-6 it must not, "without": menus, bylines, footers, related
links, comments) and the pages under ``tests/cache/`` and ``tests/eval/`` (145 MB). The repository is
Apache-2.0; the pages themselves remain their publishers' work, so they are read from a checkout and not
copied into ownlm. Get them with::

    git clone https://github.com/adbar/trafilatura && git -C trafilatura checkout e90b0ef5
    python bench/bench_html.py --eval trafilatura/tests

Without ``--eval`` (or with a folder that lacks the files) the script says so and exits without a table.

Scoring: a string counts as present when it occurs in the output after every whitespace run on both sides
became one space (a crash or an empty result holds nothing). Per reader: must-have found (recall), must-not
absent (the boilerplate score of the issue), precision, F1 and accuracy over all strings, and ms per page.
The pages are split once, by a hash of the file name, into a *dev* part (about 3/4, used while tuning
ownlm's heuristic) and a *held-out* part (about 1/4, never looked at while tuning); both are reported.
trafilatura runs with the settings its own evaluation uses (``include_comments=False,
include_tables=True``; ``fast=False``, i.e. with its fallback extractors, unless ``--fast``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

# sha256 of tests/evaldata.json at the commit above: the run says when it scores other expectations.
EVALDATA_SHA256 = "6179b235b77918840552e9b166adcfc411e56a3342fc4873cc0d35944cc30b52"
_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_of(file: str) -> str:
    """``"held-out"`` for about a quarter of the pages (by CRC-32 of the file name), ``"dev"`` otherwise."""
    return "held-out" if zlib.crc32(file.encode()) % 4 == 0 else "dev"


@dataclass
class Score:
    pages: int = 0
    with_found: int = 0
    with_total: int = 0
    without_present: int = 0
    without_total: int = 0
    crashes: int = 0
    seconds: float = 0.0
    misses: list = field(default_factory=list)  # (file, must-not string found)
    losses: list = field(default_factory=list)  # (file, must-have string missing)

    def add(self, file: str, item: dict, text: str | None, seconds: float) -> None:
        got = norm(text or "")
        self.pages += 1
        self.seconds += seconds
        for s in item["with"]:
            self.with_total += 1
            if norm(s) in got:
                self.with_found += 1
            else:
                self.losses.append((file, s))
        for s in item["without"]:
            self.without_total += 1
            if norm(s) in got:
                self.without_present += 1
                self.misses.append((file, s))

    def row(self, name: str) -> str:
        tp, fn = self.with_found, self.with_total - self.with_found
        fp, tn = self.without_present, self.without_total - self.without_present
        recall = tp / max(tp + fn, 1)
        precision = tp / max(tp + fp, 1)
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        accuracy = (tp + tn) / max(tp + fn + fp + tn, 1)
        return (
            f"| {name} | {self.pages} | {100 * recall:.1f} % | {100 * tn / max(fp + tn, 1):.1f} % "
            f"| {precision:.3f} | {f1:.3f} | {accuracy:.3f} | {1000 * self.seconds / max(self.pages, 1):.1f} "
            f"| {self.crashes} |"
        )


# --- readers ----------------------------------------------------------------------------------------


def reader_ours():
    from ownlm.extract.html import html_to_text

    return lambda data: html_to_text(data)[0]


def reader_module(path: str):
    """An older copy of ``ownlm/extract/html.py`` (e.g. from ``git show``), to measure before/after."""
    spec = importlib.util.spec_from_file_location("html_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return lambda data: mod.html_to_text(data)[0]


def reader_trafilatura(fast: bool):
    import trafilatura

    return lambda data: trafilatura.extract(data, include_comments=False, include_tables=True, fast=fast)


def version_of(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


# --- run --------------------------------------------------------------------------------------------


def load_eval(folder: Path) -> dict:
    """``{url: item}`` with ``item["path"]`` resolved (``cache/`` first, then ``eval/``, as upstream does)."""
    data = json.loads((folder / "evaldata.json").read_text(encoding="utf-8"))
    for url, item in data.items():
        for sub in ("cache", "eval"):
            if (folder / sub / item["file"]).is_file():
                item["path"] = folder / sub / item["file"]
                break
        else:
            raise SystemExit(f"{folder}: page {item['file']} (for {url}) not found under cache/ or eval/")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--eval", type=Path, default=os.environ.get("OWNLM_HTML_EVAL"), help="trafilatura's tests/"
    )
    ap.add_argument("--readers", default="ours,trafilatura", help="comma list: ours, trafilatura")
    ap.add_argument("--before", help="also score this older copy of ownlm/extract/html.py")
    ap.add_argument("--fast", action="store_true", help="trafilatura without its fallback extractors")
    ap.add_argument("--split", choices=("all", "dev", "held-out"), default="all")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pages (0: all)")
    ap.add_argument("--misses", type=int, default=0, help="print N must-not strings ours let through")
    args = ap.parse_args()
    if args.eval is None or not (args.eval / "evaldata.json").is_file():
        print(
            "bench_html: trafilatura's evaluation set is not here (give --eval PATH/TO/trafilatura/tests, "
            "see this script's docstring for the commit); skipped."
        )
        return
    digest = hashlib.sha256((args.eval / "evaldata.json").read_bytes()).hexdigest()
    data = load_eval(args.eval)
    pages = sorted(data.items(), key=lambda kv: kv[1]["file"])
    if args.split != "all":
        pages = [(u, it) for u, it in pages if split_of(it["file"]) == args.split]
    if args.limit:
        pages = pages[: args.limit]

    readers = {}
    for name in args.readers.split(","):
        if name == "ours":
            readers["ownlm " + version_of("ownlm")] = reader_ours()
        elif name == "trafilatura":
            try:
                readers[f"trafilatura {version_of('trafilatura')}" + (" fast" if args.fast else "")] = (
                    reader_trafilatura(args.fast)
                )
            except ImportError:
                print("trafilatura is not installed: its rows are left out")
        else:
            sys.exit(f"--readers: unknown reader {name!r} (ours, trafilatura)")
    if args.before:
        readers[f"ownlm before ({Path(args.before).name})"] = reader_module(args.before)

    scores = {(r, s): Score() for r in readers for s in ("dev", "held-out", "all")}
    for _url, item in pages:
        html = item["path"].read_bytes()
        for name, fn in readers.items():
            t = time.perf_counter()
            try:
                text = fn(html)
                crashed = False
            except Exception:  # a reader that fails on a page loses that page's must-have strings
                text, crashed = None, True
            dt = time.perf_counter() - t
            for s in (split_of(item["file"]), "all"):
                scores[name, s].add(item["file"], item, text, dt)
                scores[name, s].crashes += crashed

    print(f"# HTML main text, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {len(pages)} pages")
    same = "the pinned expectations" if digest == EVALDATA_SHA256 else "NOT the pinned expectations"
    print(f"evaldata.json sha256 {digest[:16]}... ({same}), {args.eval}")
    for s in ("all", "dev", "held-out"):
        if not scores[next(iter(readers)), s].pages:
            continue
        print(f"\n### {s} ({scores[next(iter(readers)), s].pages} pages)\n")
        print(
            "| reader | pages | must-have found | must-not absent | precision | F1 | accuracy | ms/page "
            "| crashes |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in readers:
            print(scores[name, s].row(name))
    if args.misses:
        first = next(iter(readers))
        print(f"\n## {first}: must-not strings let through (first {args.misses})\n")
        for file, s in scores[first, "dev"].misses[: args.misses]:
            print(f"- {file}: {s[:100]!r}")
        print(f"\n## {first}: must-have strings lost (first {args.misses})\n")
        for file, s in scores[first, "dev"].losses[: args.misses]:
            print(f"- {file}: {s[:100]!r}")


if __name__ == "__main__":
    main()
