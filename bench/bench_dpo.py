"""Preference tuning: held-out reward accuracy and margin before and after ``ownlm finetune dpo``, and its speed
and memory against trl's ``DPOTrainer`` on the same model, pairs and settings.

The data and split are those of "Build a Large Language Model (From Scratch)", chapter 7's preference-tuning
notebook: the 1,100 entries of ``instruction-data-with-preference.json`` in file order, the first 85 % (935) for
training, the next 10 % (110) for testing, the last 5 % (55) for validation. The recipe is the book's: instruction
fine-tuning first (``ownlm finetune sft`` on the entries' ``output``), then DPO on their ``chosen`` (polite) and
``rejected`` (rude) replies. Held-out numbers are on the 110 test entries. ``--pairs N`` trains on the first N
training entries only (a smaller scale for a busy CPU; say so when reporting).

The base is either a model folder (``--base``, e.g. an imported SmolLM2-135M-Instruct) or ownlm's tiny model
pretrained on the Gutenberg books (``bench/_pretrained.py``, reused when present). With ``--trl-steps N`` the SFT
model is exported to a Hugging Face folder and trl's ``DPOTrainer`` runs N steps on the same rendered pairs
(same batch size, learning rate, beta, precision), each side in its own process: tokens/s (prompt + both replies,
padding excluded) and peak resident memory.

    python bench/bench_dpo.py --base-minutes 4 --pairs 200 --sft-epochs 1 --trl-steps 10
    python bench/bench_dpo.py --base runs/smollm2 --sft-epochs 0 --pairs 400 --lora-rank 16 --lr 1e-4
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
from _pretrained import DATA, ROOT, pretrained_base  # noqa: E402

PREFS = DATA / "instructions" / "instruction-data-with-preference.json"


def book_split(data: list) -> tuple[list, list, list]:
    """(train, test, val) in file order: 85 %, 10 %, the rest.

    >>> [len(x) for x in book_split(list(range(1100)))]
    [935, 110, 55]
    """
    n_train, n_test = int(len(data) * 0.85), int(len(data) * 0.1)
    return data[:n_train], data[n_train : n_train + n_test], data[n_train + n_test :]


def run(cmd: list[str], what: str) -> tuple[str, float, float]:
    """Run ``cmd`` in its own process: (stdout, seconds, peak resident MiB of that process)."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{what} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-4000:]}")
    peak_kib = int(res.stderr.strip().splitlines()[-1])
    return res.stdout, wall, peak_kib / 1024


def metrics(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------------------------------------- trl side


def trl_worker(spec_path: str) -> None:
    """In its own process: trl's DPOTrainer for ``steps`` steps on the rendered pairs; prints one JSON line."""
    import torch
    import transformers
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["hf"], dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(spec["hf"])
    ds = Dataset.from_list(spec["pairs"])
    peft_config = None
    if spec["lora_rank"]:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=spec["lora_rank"], lora_alpha=spec["lora_alpha"], target_modules="all-linear"
        )
    args = DPOConfig(output_dir=spec["out"], beta=spec["beta"], learning_rate=spec["lr"], max_steps=spec["steps"],
                     per_device_train_batch_size=spec["batch_size"], bf16=spec["dtype"] == "bf16", use_cpu=True,
                     report_to=[], save_strategy="no", logging_steps=10**6, max_length=spec["max_length"],
                     lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, seed=1337,
                     dataloader_num_workers=0)  # fmt: skip
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config
    )
    tokens = sum(len(x["prompt_ids"]) * 2 + len(x["chosen_ids"]) + len(x["rejected_ids"])
                 for x in trainer.train_dataset)  # fmt: skip
    per_pair = tokens / len(trainer.train_dataset)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    pairs = spec["steps"] * spec["batch_size"]
    print(json.dumps({"seconds": wall, "pairs": pairs, "tokens_per_s": per_pair * pairs / wall}))


def trl_pairs(rows: list[dict], template) -> list[dict]:
    """The pairs as trl's text format, rendered exactly as ownlm renders them (prompt with the reply header,
    replies with their end marker)."""
    from ownlm.finetune.dpo_data import to_pair

    out = []
    for r in rows:
        p = to_pair(r)
        end = template.end_marker
        out.append({"prompt": template.render(p["prompt"], add_generation_prompt=True),
                    "chosen": p["chosen"] + end, "rejected": p["rejected"] + end})  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="a model folder to start from (default: ownlm's tiny Gutenberg base)")
    ap.add_argument("--base-minutes", type=float, default=8.0, help="pretraining budget of the tiny base")
    ap.add_argument("--pairs", type=int, default=0, help="train on the first N training entries (0: all 935)")
    ap.add_argument("--sft-epochs", type=float, default=2.0, help="instruction fine-tuning first (0: skip)")
    ap.add_argument("--sft-lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=float, default=1.0, help="DPO passes over the training pairs")
    ap.add_argument("--lr", type=float, default=5e-6, help="DPO peak learning rate")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--template", default="alpaca", help="chat template (auto: the base's own)")
    ap.add_argument("--responses", type=int, default=10, help="test prompts answered before and after")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--trl-steps", type=int, default=0, help="trl DPOTrainer steps for speed and memory (0: none)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(ROOT / "dpo"))
    ap.add_argument(
        "--speed-only", action="store_true", help="only the speed comparison (reuses the DPO run in --work)"
    )
    ap.add_argument("--trl-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_worker:
        return trl_worker(a.trl_worker)

    base = Path(a.base) if a.base else pretrained_base("gutenberg", a.base_minutes, a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test, val = book_split(json.loads(PREFS.read_text(encoding="utf-8")))
    if a.pairs:
        train = train[: a.pairs]
    for name, part in (("train", train), ("test", test), ("val", val)):
        (work / f"{name}.json").write_text(json.dumps(part, indent=1), encoding="utf-8")
    common = ["--threads", str(a.threads), "--seed", "1337", "--no-progress", "--keep-checkpoints", "1",
              "--dtype", a.dtype]  # fmt: skip
    print(f"{PREFS.name}: {len(train)} train / {len(test)} test / {len(val)} val (book order); base {base}; "
          f"{a.threads} threads, {a.dtype}")  # fmt: skip
    start = base
    if a.sft_epochs and a.speed_only:
        start = work / "sft"
    elif a.sft_epochs:
        sft = work / "sft"
        shutil.rmtree(sft, ignore_errors=True)
        _, wall, peak = run([sys.executable, "-m", "ownlm", "finetune", "sft", str(base), "--data", str(work / "train.json"),
                             "--val-data", str(work / "test.json"), "--out", str(sft), "--template", a.template,
                             "--epochs", str(a.sft_epochs), "--lr", str(a.sft_lr), "--min-lr", str(a.sft_lr / 10),
                             "--batch-size", "8", "--responses", "0", "--eval-iters", "100000", "--evals", "2",
                             *common], "ownlm finetune sft")  # fmt: skip
        m = [r for r in metrics(sft) if r.get("val_loss") is not None]
        print(f"sft: {a.sft_epochs:g} epochs in {wall:.0f} s; held-out loss {m[0]['val_loss']:.3f} -> "
              f"{m[-1]['val_loss']:.3f}")  # fmt: skip
        start = sft
    out = work / "dpo"
    lora = ["--lora-rank", str(a.lora_rank), "--lora-targets", "all"] if a.lora_rank else []
    if not a.speed_only:
        quality(a, start, out, work, lora, common)
    if a.trl_steps:
        speed(a, start, out, work, train, lora, common)


def quality(a, start: Path, out: Path, work: Path, lora: list[str], common: list[str]) -> None:
    """The DPO run: held-out reward accuracy and margin before and after, and some answers."""
    shutil.rmtree(out, ignore_errors=True)
    stdout, wall, peak = run([sys.executable, "-m", "ownlm", "finetune", "dpo", str(start), "--data",
                              str(work / "train.json"), "--val-data", str(work / "test.json"), "--out", str(out),
                              "--epochs", str(a.epochs), "--lr", str(a.lr), "--beta", str(a.beta), "--template", a.template,
                              "--batch-size", str(a.batch_size), "--responses", str(a.responses),
                              "--max-new-tokens", str(a.max_new_tokens), "--eval-iters", "100000", "--evals", "4",
                              *lora, *common], "ownlm finetune dpo")  # fmt: skip
    print(stdout.strip().splitlines()[0])
    m = [r for r in metrics(out) if r.get("reward_accuracy") is not None]
    first, last = m[0], m[-1]
    trained = [r for r in metrics(out) if r.get("tokens_per_s")]
    tok_s = sum(r["tokens_per_s"] for r in trained) / len(trained)
    print(f"dpo: {last['step']} steps in {wall:.0f} s (reference, evaluations and answers included); "
          f"{tok_s:,.0f} tok/s in training steps; peak RSS {peak:,.0f} MiB")  # fmt: skip
    print("| held-out (110 test pairs) | before DPO | after |\n|---|---|---|")
    for k in ("val_loss", "reward_accuracy", "reward_margin", "chosen_logp", "rejected_logp"):
        print(f"| {k} | {first[k]:.4f} | {last[k]:.4f} |")
    rows = [json.loads(x) for x in (out / "responses.jsonl").read_text().splitlines() if x.strip()]
    for r in rows[:4]:
        turn = r["prompt"][-1]
        print(f"\nprompt: {turn['content']} {turn.get('input', '')}\n  chosen: {r['chosen']}\n  "
              f"rejected: {r['rejected']}\n  before: {r.get('response_before')}\n  after: {r['response']}")  # fmt: skip


def speed(a, start: Path, out: Path, work: Path, train: list, lora: list[str], common: list[str]) -> None:
    """trl's DPOTrainer and ownlm for ``a.trl_steps`` steps each, in their own processes."""
    from ownlm.model.checkpoint import resolve_checkpoint
    from ownlm.tokenizer.chat import load_template

    hf = work / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    run([sys.executable, "-m", "ownlm", "export", str(start), "--to", "hf", "--out", str(hf)], "export")
    template = load_template(resolve_checkpoint(out))
    spec = {"hf": str(hf), "pairs": trl_pairs(train, template), "beta": a.beta, "lr": a.lr,
            "steps": a.trl_steps, "batch_size": a.batch_size, "dtype": a.dtype, "threads": a.threads,
            "lora_rank": a.lora_rank, "lora_alpha": 16.0, "out": str(work / "trl"),
            "max_length": json.loads((resolve_checkpoint(out) / "config.json").read_text())["model"]["block_size"]}  # fmt: skip
    (work / "trl_spec.json").write_text(json.dumps(spec))
    stdout, _, trl_peak = run([sys.executable, __file__, "--trl-worker", str(work / "trl_spec.json")], "trl")
    got = json.loads(stdout.strip().splitlines()[-1])
    # ownlm for as many steps, in its own process, for a like-for-like peak memory
    speed_run = work / "dpo-speed"
    shutil.rmtree(speed_run, ignore_errors=True)
    _, _, own_peak = run([sys.executable, "-m", "ownlm", "finetune", "dpo", str(start), "--data",
                          str(work / "train.json"), "--val-data", str(work / "test.json"), "--out", str(speed_run),
                          "--max-iters", str(a.trl_steps), "--lr", str(a.lr), "--beta", str(a.beta), "--template", a.template,
                          "--batch-size", str(a.batch_size), "--responses", "0", "--eval-iters", "1",
                          "--evals", "1", *lora, *common], "ownlm finetune dpo (speed)")  # fmt: skip
    own = [r for r in metrics(speed_run) if r.get("tokens_per_s")]
    own_tok_s = own[-1]["tokens_per_s"]
    print(f"\nspeed, {a.trl_steps} steps of {a.batch_size} pairs, {a.dtype}, {a.threads} threads: ownlm "
          f"{own_tok_s:,.0f} tok/s, peak RSS {own_peak:,.0f} MiB; trl {got['tokens_per_s']:,.0f} tok/s, "
          f"peak RSS {trl_peak:,.0f} MiB; ratio {own_tok_s / got['tokens_per_s']:.2f}x, memory "
          f"{own_peak / trl_peak:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
