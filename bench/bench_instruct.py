"""Instruction quality: held-out masked loss and ROUGE-L before and after ``ownlm finetune sft``.

The data and split are those of "Build a Large Language Model (From Scratch)", chapter 7: the 1,100 entries of
``instruction-data.json`` in file order, the first ``int(0.85 * n)`` = 935 for training, the next
``int(0.10 * n)`` = 110 for testing, the remaining 55 for validation (the book's ``train_portion``,
``test_portion``, ``val_portion``). The base is pretrained by ownlm on the 58 Gutenberg books
(``bench/_pretrained.py``; reused when present). Fine-tuning uses the Alpaca template (the book's prompt) and is
scored on the 110 test entries: the masked loss on the responses (+ their ``<|endoftext|>``) at step 0 and at
the end, and the ROUGE-L F1 of greedy answers against the reference responses before and after, as
``ownlm finetune sft`` writes them in ``responses.jsonl``. The 55 validation entries are not used.

    python bench/bench_instruct.py                      # 8-minute Gutenberg base, 2 epochs of fine-tuning
    python bench/bench_instruct.py --epochs 1 --responses 40
    python bench/bench_instruct.py --base smol/ --epochs 1 --responses 40 --work /tmp/instruct-smol

With ``--base DIR`` (an ``ownlm import`` folder, e.g. SmolLM2-135M-Instruct) that model is fine-tuned instead of the
Gutenberg base, in its own chat template (``--template auto``) and with the settings ``ownlm build --base`` gives
its fine-tuning stages (``_pretrained.base_flags``: LoRA rank 8 on a frozen bf16 base, activation checkpointing,
packing into rows of 512 tokens). ``--responses N`` answers the first N test entries only (the loss is still
scored on all 110).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pretrained import DATA, ROOT, add_memory_mode, base_flags, describe_imported, pretrained_base  # noqa: E402

INSTRUCTIONS = DATA / "instructions" / "instruction-data.json"


def book_split(data: list) -> tuple[list, list, list]:
    """(train, test, val) in file order: 85 %, 10 %, the rest (the book's chapter 7 rule).

    >>> [len(x) for x in book_split(list(range(1100)))]
    [935, 110, 55]
    """
    n_train, n_test = int(len(data) * 0.85), int(len(data) * 0.1)
    return data[:n_train], data[n_train : n_train + n_test], data[n_train + n_test :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-minutes", type=float, default=8.0, help="pretraining budget of the base")
    ap.add_argument("--epochs", type=float, default=2.0, help="fine-tuning passes over the 935 entries")
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak learning rate")
    ap.add_argument("--responses", type=int, default=110, help="test prompts answered before and after")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-iters", type=int, default=0, help="fine-tuning steps at most (0: --epochs alone)")
    ap.add_argument("--evals", type=int, default=2, help="held-out evaluations after the one at step 0")
    add_memory_mode(ap)
    ap.add_argument(
        "--base", type=Path, default=None, help="fine-tune this imported model instead (see above)"
    )
    ap.add_argument("--work", type=Path, default=ROOT / "instruct", help="where the data and the run go")
    a = ap.parse_args()

    if a.base is not None:
        from ownlm.finetune.sft import SFTConfig

        base, template, extra = a.base, "auto", base_flags(a.base, SFTConfig, a.memory_mode)
        print(describe_imported(a.base) + "; " + " ".join(extra))
    else:
        base, template, extra = pretrained_base("gutenberg", a.base_minutes, a.threads), "alpaca", []
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    train, test, val = book_split(json.loads(INSTRUCTIONS.read_text(encoding="utf-8")))
    for name, part in (("train", train), ("test", test), ("val", val)):
        (work / f"{name}.json").write_text(json.dumps(part, indent=1), encoding="utf-8")
    print(f"instruction-data.json: {len(train)} train / {len(test)} test / {len(val)} val (book order); "
          f"{a.epochs:g} epochs, lr {a.lr:g}, {a.responses} test prompts answered greedily "
          f"(<= {a.max_new_tokens} tokens), {a.threads} threads")  # fmt: skip
    out = work / "ft"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "ownlm", "finetune", "sft", str(base), "--data", str(work / "train.json"),
           "--val-data", str(work / "test.json"), "--out", str(out), "--template", template,
           "--epochs", str(a.epochs), "--max-iters", str(a.max_iters), "--lr", str(a.lr), "--min-lr", str(a.lr / 10), "--batch-size", str(a.batch_size),
           "--responses", str(a.responses), "--max-new-tokens", str(a.max_new_tokens), "--eval-iters", "100000",
           "--evals", str(a.evals), "--no-restore-best", "--threads", str(a.threads), "--seed", "1337", "--no-progress",
           "--keep-checkpoints", "1", *extra]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"ownlm finetune sft failed ({res.returncode}):\n{res.stderr[-3000:]}")
    print(res.stdout.strip().splitlines()[0])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scored = [r for r in rows if r.get("val_loss") is not None]
    answers = [
        json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines() if line.strip()
    ]
    before = sum(r["rouge_l_before"] for r in answers) / len(answers)
    after = sum(r["rouge_l"] for r in answers) / len(answers)
    first, last = scored[0], scored[-1]
    print(f"test set ({len(test)} entries, {first.get('val_tokens')} response tokens), {last['step']} steps in "
          f"{wall:.0f} s (generation included):")  # fmt: skip
    print(f"  masked loss   before {first['val_loss']:.4f}   after {last['val_loss']:.4f}   "
          f"({first['val_loss'] - last['val_loss']:+.4f})")  # fmt: skip
    print(f"  perplexity    before {first['val_ppl']:.1f}   after {last['val_ppl']:.1f}")
    print(f"  ROUGE-L F1    before {before:.4f}   after {after:.4f}   ({len(answers)} greedy answers)")
    for r in answers[:3]:
        print(
            f"  - {r['prompt'][-1]['content'][:70]!r}\n    ref {r['reference'][:70]!r}\n    got {r['response'][:70]!r}"
        )
    print(json.dumps({"train": len(train), "test": len(test), "val": len(val), "steps": last["step"],
                      "loss_before": first["val_loss"], "loss_after": last["val_loss"], "rouge_before": before,
                      "rouge_after": after, "wall_s": wall}))  # fmt: skip


if __name__ == "__main__":
    main()
