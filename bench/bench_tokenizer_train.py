"""Tokenizer training speed and memory: ownlm's BPE trainer against Hugging Face ``tokenizers``' BpeTrainer.

Both get the same documents (whole books, as str), the same pre-tokenization (the GPT-4 regex, then
byte-level: HF runs ``Sequence([Split(Regex(pattern), "isolated"), ByteLevel(use_regex=False)])``, checked
below to split a sample exactly like ours), the same number of merges, and two workers (ownlm: processes,
HF: ``RAYON_NUM_THREADS``). Each trainer runs in its own subprocess; the parent samples the proportional set
size (PSS, so pages shared by forked workers count once) of the child's whole process tree every 20 ms.

    python bench/bench_tokenizer_train.py                      # all of ../shared/data/gutenberg, 16k and 32k
    python bench/bench_tokenizer_train.py --mb 8 --vocab 16384 # a quick run on the first 8 MB
    python bench/bench_tokenizer_train.py --hf-native          # GPT-2 pattern; HF's own built-in ByteLevel regex
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gutenberg"
EOT = "<|endoftext|>"


def load_texts(data: Path, mb: float | None) -> list[str]:
    """The books in name order, up to ``mb`` megabytes of UTF-8 (the last one cut)."""
    texts, left = [], int(mb * 1e6) if mb else None
    for f in sorted(data.glob("*.txt")):
        t = f.read_text(encoding="utf-8")
        if left is not None:
            b = t.encode("utf-8")[:left]
            t = b.decode("utf-8", "ignore")
            left -= len(b)
        texts.append(t)
        if left is not None and left <= 0:
            break
    return texts


def hf_tokenizer(pattern: str, native: bool = False):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    if native:  # HF at its fastest: ByteLevel's built-in regex, which is GPT-2's pattern
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        return tok

    # Oniguruma reads "{1,3}+" as "({1,3})+" (any number of digits), not as possessive: drop the "+",
    # which means the same here because nothing follows it in that alternative.
    pattern = pattern.replace("{1,3}+", "{1,3}")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tok


def child(which: str, vocab: int, mb: float | None, workers: int, native: bool) -> None:
    """Runs in the subprocess: train once, print a JSON line with the timings."""
    from ownlm.tokenizer.bpe import PATTERNS

    pattern = "gpt2" if native else "gpt4"

    texts = load_texts(DATA, mb)
    out: dict = {"which": which, "vocab": vocab, "bytes": sum(len(t.encode("utf-8")) for t in texts)}
    if which == "ownlm":
        from ownlm.tokenizer import Tokenizer

        t0 = (
            time.perf_counter()
        )  # load (or compile) the numba kernels on a toy corpus: not part of the timing
        Tokenizer.train(["warm up the jit kernels"], 260, progress=False)
        out["jit_warmup_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = Tokenizer.train(
            texts, vocab, pattern=pattern, special_tokens=[EOT], workers=workers, progress=False
        )
        out["train_s"] = time.perf_counter() - t0
        out["merges"] = [list(m) for m in tok.merges[:200]]
        out["n_merges"] = len(tok.merges)
    else:
        from tokenizers import pre_tokenizers, trainers

        tok = hf_tokenizer(PATTERNS[pattern], native)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab + 1,  # + the special token: the same number of merges as ours
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[EOT],
        )
        t0 = time.perf_counter()
        tok.train_from_iterator(texts, trainer, length=len(texts))
        out["train_s"] = time.perf_counter() - t0
        out["n_merges"] = len(json.loads(tok.to_str())["model"]["merges"])
    print("RESULT " + json.dumps(out), flush=True)


def _tree_pss_kb(pid: int) -> int:
    """PSS (kB) of ``pid`` and all its descendants, from /proc (Linux); RSS where smaps_rollup is missing."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run_child(which: str, vocab: int, mb: float | None, workers: int, native: bool) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers), OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", which, "--vocab", str(vocab), "--workers", str(workers)]
    if native:
        cmd.append("--hf-native")
    if mb:
        cmd += ["--mb", str(mb)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and its worker processes
    stdout = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"{which} child failed with exit code {proc.returncode}")
    res = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    res["process_wall_s"] = wall
    res["peak_pss_mb"] = peak / 1024
    res["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what HF's ByteLevel writes)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), 256),
    ]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(extra)}}


def check_same_split(texts: list[str], native: bool, chars: int = 400_000) -> int:
    """HF's pre-tokenizer and our regex must cut the same chunks; returns how many chunks were compared."""
    import regex

    from ownlm.tokenizer.bpe import PATTERNS

    pattern = PATTERNS["gpt2" if native else "gpt4"]
    hf = hf_tokenizer(pattern, native).pre_tokenizer
    table = bytes_to_unicode()
    n = 0
    for text in texts:
        sample = text[:chars]
        ours = ["".join(table[b] for b in c.encode("utf-8")) for c in regex.findall(pattern, sample)]
        theirs = [piece for piece, _ in hf.pre_tokenize_str(sample)]
        if ours != theirs:
            k = next(i for i, (a, b) in enumerate(zip(ours + [None], theirs + [None])) if a != b)
            sys.exit(
                f"pre-tokenization differs at chunk {k}: ours {ours[k : k + 3]} vs HF {theirs[k : k + 3]}"
            )
        n += len(ours)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=None, help="use only the first MB megabytes (default: all)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[16384, 32768], help="vocabulary sizes")
    ap.add_argument("--workers", type=int, default=2, help="processes (ours) / threads (HF)")
    ap.add_argument(
        "--hf-native",
        action="store_true",
        help="GPT-2 pattern for both; HF uses its built-in ByteLevel regex (its fastest pre-tokenizer)",
    )
    ap.add_argument("--child", choices=["ownlm", "hf"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"benchmark data not found at {DATA}")
    if args.child:
        child(args.child, args.vocab[0], args.mb, args.workers, args.hf_native)
        return
    texts = load_texts(DATA, args.mb)
    size = sum(len(t.encode("utf-8")) for t in texts)
    n = check_same_split(texts[:6], args.hf_native)
    print(f"pre-tokenization: ours and HF cut the same {n:,} chunks on a sample")
    print(
        f"corpus: {len(texts)} books, {size / 1e6:.1f} MB; {args.workers} workers; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}"
    )
    print(
        f"{'vocab':>6} {'trainer':>7} {'train s':>8} {'process s':>9} {'CPU s':>7} {'peak MB':>8} {'merges':>7}"
    )
    for vocab in args.vocab:
        r = {w: run_child(w, vocab, args.mb, args.workers, args.hf_native) for w in ("ownlm", "hf")}
        for w, x in r.items():
            print(
                f"{vocab:>6} {w:>7} {x['train_s']:>8.2f} {x['process_wall_s']:>9.2f} {x['cpu_s']:>7.1f} "
                f"{x['peak_pss_mb']:>8.0f} {x['n_merges']:>7}"
            )
        o, h = r["ownlm"], r["hf"]
        print(
            f"{vocab:>6}  ours/HF: time {o['train_s'] / h['train_s']:.2f}x, "
            f"memory {o['peak_pss_mb'] / h['peak_pss_mb']:.2f}x (jit warm-up {o['jit_warmup_s']:.1f} s not counted)"
        )


if __name__ == "__main__":
    main()
