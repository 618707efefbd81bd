"""One process against two under torchrun (gloo, CPU): ``--strategy ddp`` and ``--strategy fsdp`` on the same
pretraining run, for tokens/s, peak resident memory per process and the loss curve.

Every side trains the same model on tinyshakespeare (byte vocabulary) for the same optimiser steps with the same
global batch: one process takes ``--batch-size 2B``, two processes ``B`` each. Threads: each of the two processes
gets ``--threads / 2`` (a 2-core machine gives one core to each), the single process all of them. Peak memory is
the largest resident set of any one process (``/usr/bin/time``'s maximum over the launcher's children); the shares
of weights and AdamW state are the run's own ``fsdp:`` log line. tokens/s is the mean over the evaluation windows
after the first (which carries the start-up).

    python bench/bench_strategies.py                   # depth-6 model (27M), 30 steps of 8 x 256 tokens
    python bench/bench_strategies.py --depth 8 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def run(cmd: list[str], threads: int) -> tuple[str, float, float]:
    """(output, seconds, peak resident MiB of the largest process) of ``cmd``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
        )
    return res.stdout + res.stderr, wall, int(res.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=6, help="model size dial (ownlm pretrain --depth)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument(
        "--batch-size", type=int, default=4, help="sequences per process per step (two processes)"
    )
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all")
    ap.add_argument("--dtype", default="fp32")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ownlm-strategies-"))
    py = [sys.executable, "-m", "ownlm"]
    subprocess.run([*py, "tokenizer", "train", str(DATA), "--out", str(work / "tok"), "--vocab-size", "256",
                    "--no-progress"], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*py, "encode", str(DATA), "--tokenizer", str(work / "tok"), "--out", str(work / "tokens"),
                    "--no-progress"], check=True, capture_output=True)  # fmt: skip
    common = ["pretrain", "--data", str(work / "tokens"), "--depth", str(a.depth), "--block-size",
              str(a.block_size), "--max-iters", str(a.steps), "--eval-interval", str(a.steps // 3), "--eval-iters", "4",
              "--samples", "0", "--no-progress", "--dtype", a.dtype, "--seed", "1", "--device", "cpu"]  # fmt: skip
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ownlm",
    ]
    half = max(1, a.threads // 2)
    sides = {
        "one process": ([*py, *common, "--batch-size", str(2 * a.batch_size), "--threads", str(a.threads)],
                        a.threads),
        "ddp, 2 processes": ([*two, *common, "--batch-size", str(a.batch_size), "--strategy", "ddp",
                              "--threads", str(half)], half),
        "fsdp, 2 processes": ([*two, *common, "--batch-size", str(a.batch_size), "--strategy", "fsdp",
                               "--threads", str(half)], half),
    }  # fmt: skip
    print(f"depth {a.depth}, {a.steps} steps of {2 * a.batch_size} x {a.block_size} tokens (global), {a.dtype}, "
          f"{a.threads} threads in all; tinyshakespeare, byte vocabulary")  # fmt: skip
    rows = {}
    for name, (cmd, threads) in sides.items():
        out_dir = work / name.split(",")[0].replace(" ", "-")
        log, wall, peak = run([*cmd, "--out", str(out_dir)], threads)
        recs = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        trained = [r for r in recs if r.get("tokens_per_s")]
        shares = re.search(r"fsdp: .*", log)
        steady = trained[1:] or trained  # the first window carries the start-up
        rows[name] = {"tokens_per_s": sum(r["tokens_per_s"] for r in steady) / len(steady), "wall_s": wall,
                      "peak_mib": peak, "curve": [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss")],
                      "shares": shares.group(0) if shares else ""}  # fmt: skip
    base = rows["one process"]
    print("\n| side | tokens/s | vs one process | peak RSS per process | wall s | val loss by step |")
    print("|---|--:|--:|--:|--:|---|")
    for name, r in rows.items():
        curve = ", ".join(f"{s}: {v:.4f}" for s, v in r["curve"])
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
              f"{r['peak_mib']:,.0f} MiB | {r['wall_s']:.0f} | {curve} |")  # fmt: skip
    for r in rows.values():
        if r["shares"]:
            print(r["shares"])
    print(json.dumps({k: {x: v for x, v in r.items() if x != "shares"} for k, r in rows.items()}))


if __name__ == "__main__":
    main()
