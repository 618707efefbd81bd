"""Classification benchmark: SMS spam with the book's protocol, ownlm (pretrained base, random base) against
TF-IDF + logistic regression, then the full unbalanced collection with ``--balance weights``.

    .venv/bin/python bench/bench_classify.py                      # everything (about 30-40 minutes on 2 cores)
    .venv/bin/python bench/bench_classify.py --only baseline      # the classical baselines alone (a minute)
    .venv/bin/python bench/bench_classify.py --base smol/ --seeds 1 2 --work /tmp/cls-smol   # an imported model

Protocol (Raschka, *Build a Large Language Model (From Scratch)*, ch. 6): down-sample ham to the 747 spam
messages, shuffle with a fixed seed, split 70/10/20. ``ownlm finetune classify --balance downsample`` does exactly
that, and the baselines are fitted on the very same rows (``prepare_splits`` with the same flags). Each ownlm run
gets at most ``--minutes`` of fine-tuning (``--max-minutes``, set-up included) and ``--epochs`` passes.

With ``--base DIR`` (an ``ownlm import`` folder) that model is fine-tuned instead, with the adapter settings
``ownlm build --base`` gives its fine-tuning stages (``_pretrained.base_flags``: LoRA rank 8; the head trains in
full), on the balanced protocol only. Otherwise the pretrained base is ownlm's own: ``bench/_pretrained.py`` runs extract -> corpus -> tokenizer train -> encode
-> pretrain on the 58 Gutenberg books and caches the result under /tmp/ownlm-bench (shared with the other
fine-tuning benchmarks). The random base has the same shape and tokenizer, freshly initialised.

Baselines (scikit-learn, a test/benchmark-only dependency): TF-IDF of word 1-2-grams (the classic) and of
character 2-5-grams, each with logistic regression whose C in {1, 10, 100} is chosen on the validation split.
Results go to /tmp/ownlm-bench/classify/results.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "src"))

SMS = REPO.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection"
WORK = Path("/tmp/ownlm-bench/classify")
SEED = 1337  # ownlm's default --seed: the split, the down-sampling, the head's start and the batch order


def _splits(balance: str, seed: int):
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.classify_data import prepare_splits

    cfg = ClassifyConfig(base="-", data=str(SMS), out="-", text_field="2", label_field="1", balance=balance)
    cfg.train.seed = seed
    return prepare_splits(cfg)


def baselines(balance: str, seed: int = SEED) -> dict:
    """Test accuracy and macro-F1 of TF-IDF + logistic regression on the split ownlm uses for ``balance``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, val, test, _, _ = _splits(balance, seed)
    text = lambda rows: [r["text"] for r in rows]  # noqa: E731
    gold = lambda rows: [r["label"] for r in rows]  # noqa: E731
    out = {}
    for name, kw in (
        ("tfidf-word", dict(ngram_range=(1, 2))),
        ("tfidf-char", dict(ngram_range=(2, 5), analyzer="char_wb")),
    ):
        t0 = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True, **kw)
        X = vec.fit_transform(text(train))
        best = None
        for C in (1.0, 10.0, 100.0):
            model = LogisticRegression(C=C, max_iter=5000).fit(X, gold(train))
            val_f1 = f1_score(gold(val), model.predict(vec.transform(text(val))), average="macro")
            if best is None or val_f1 > best[0]:
                best = (val_f1, C, model)
        _, C, model = best
        pred = model.predict(vec.transform(text(test)))
        out[name] = {"test_accuracy": accuracy_score(gold(test), pred),
                     "test_macro_f1": f1_score(gold(test), pred, average="macro"), "C": C,
                     "seconds": time.perf_counter() - t0, "rows": [len(train), len(val), len(test)]}  # fmt: skip
    return out


def random_base(pretrained: Path, seed: int = 1337) -> Path:
    """A folder with the pretrained base's shape and tokenizer and fresh random weights."""
    import torch

    from ownlm.model.checkpoint import load_model, save_model
    from ownlm.model.gpt import GPT

    folder = WORK / "random-base"
    if (folder / "config.json").is_file():
        return folder
    _, tok, cfg = load_model(pretrained)
    torch.manual_seed(seed)
    save_model(
        folder, GPT(cfg), tok, extra={"note": "random initialisation, same shape as " + str(pretrained)}
    )
    return folder


def finetune(name: str, base: Path, balance: str, a, seed: int = SEED, extra: list[str] = ()) -> dict:
    """Run ``ownlm finetune classify`` (cached: a finished run is read back) and return its metrics."""
    out = WORK / (name if seed == SEED else f"{name}-seed{seed}")
    if not (out / "metrics.json").is_file():
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "ownlm", "finetune", "classify", str(base), "--data", str(SMS),
               "--text-field", "2", "--label-field", "1", "--balance", balance, "--out", str(out),
               "--max-minutes", str(a.minutes), "--epochs", str(a.epochs), "--threads", str(a.threads),
               "--lr", str(a.lr), "--batch-size", str(a.batch_size), "--evals", str(a.evals), "--eval-iters", str(a.eval_iters),
               "--seed", str(seed), "--no-progress", "--log-seconds", "60", *extra]  # fmt: skip
        print("$", " ".join(cmd[2:]), flush=True)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, text=True, capture_output=True)
        print(r.stdout[-1500:] + r.stderr[-1500:], flush=True)
        if r.returncode != 0:
            raise SystemExit(f"{name}: ownlm finetune classify failed ({r.returncode})")
        (out / "bench_wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    m = json.loads((out / "metrics.json").read_text())
    return {"test_accuracy": m["test_accuracy"], "test_macro_f1": m["test_macro_f1"], "steps": m["steps"],
            "train_seconds": m["train_seconds"], "stopped_early": m["stopped_early"],
            "rows": [m["data"]["train"], m["data"]["val"], m["data"]["test"]]}  # fmt: skip


def _wait_for_another_build(work: Path, hours: float = 1.0) -> None:
    """Another benchmark may be building the same cached base right now: wait for its ``base.json`` rather
    than write into the same folder (a folder untouched for 10 minutes is taken as abandoned)."""
    t0 = time.time()
    while work.is_dir() and not (work / "base.json").is_file() and time.time() - t0 < hours * 3600:
        newest = max((p.stat().st_mtime for p in work.rglob("*")), default=0.0)
        if time.time() - newest > 600:
            return
        print(f"waiting for another process building {work} ...", flush=True)
        time.sleep(30)


def main() -> None:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["baseline", "balanced", "all"], default="all")
    ap.add_argument(
        "--base-minutes", type=float, default=8.0, help="pretraining budget of the Gutenberg base"
    )
    ap.add_argument("--preset", default="tiny", help="model size of the pretrained base")
    ap.add_argument(
        "--minutes", type=float, default=10.0, help="fine-tuning budget per run (set-up included)"
    )
    ap.add_argument("--epochs", type=float, default=5.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--evals", type=int, default=10)
    ap.add_argument(
        "--eval-iters", type=int, default=10, help="training batches scored for the train accuracy"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="*", default=[], help="more seeds for the balanced comparison")
    from _pretrained import add_memory_mode  # bench/ is on the path (above)

    add_memory_mode(ap)
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="fine-tune this imported model (`ownlm import`) with the LoRA settings `ownlm build --base` "
        "uses, on the balanced protocol, instead of ownlm's own pretrained and random bases",
    )
    ap.add_argument("--work", type=Path, default=WORK, help="where the runs and results.json go")
    a = ap.parse_args()
    WORK = a.work
    if not SMS.is_file():
        raise SystemExit(f"{SMS} not found (the shared SMS Spam Collection)")
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": vars(a)}
    results["baseline_balanced"] = baselines("downsample")
    results["baseline_unbalanced"] = baselines("none")
    if a.only != "baseline" and a.base is not None:
        from _pretrained import base_flags, describe_imported

        from ownlm.finetune.classify import ClassifyConfig

        extra = base_flags(a.base, ClassifyConfig, a.memory_mode)
        results["base"] = {"run": str(a.base), "description": describe_imported(a.base), "flags": extra}
        print(results["base"]["description"] + "; " + " ".join(extra), flush=True)
        results["ownlm_pretrained"] = finetune("imported-balanced", a.base, "downsample", a, extra=extra)
        for seed in a.seeds:
            results[f"seed_{seed}"] = {"baseline": baselines("downsample", seed),
                                       "pretrained": finetune("imported-balanced", a.base, "downsample", a, seed,
                                                              extra)}  # fmt: skip
    elif a.only != "baseline":
        from _pretrained import describe, pretrained_base

        t0 = time.perf_counter()
        _wait_for_another_build(Path("/tmp/ownlm-bench") / f"gutenberg-{a.preset}-{a.base_minutes:g}min")
        base = pretrained_base("gutenberg", minutes=a.base_minutes, threads=a.threads, preset=a.preset)
        results["base"] = {
            "run": str(base),
            "description": describe(base),
            "ready_s": time.perf_counter() - t0,
        }
        rand = random_base(base)
        results["ownlm_pretrained"] = finetune("pretrained-balanced", base, "downsample", a)
        results["ownlm_random"] = finetune("random-balanced", rand, "downsample", a)
        if a.only == "all":
            results["ownlm_pretrained_unbalanced"] = finetune(
                "pretrained-unbalanced-weights", base, "weights", a
            )
        for seed in a.seeds:  # the balanced comparison again: another shuffle, split, head start, batch order
            results[f"seed_{seed}"] = {"baseline": baselines("downsample", seed),
                                       "pretrained": finetune("pretrained-balanced", base, "downsample", a, seed),
                                       "random": finetune("random-balanced", rand, "downsample", a, seed)}  # fmt: skip
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))
    _print_tables(results, a)


def _print_tables(results: dict, a) -> None:
    w = 48
    print(f"\n{'balanced (747 + 747), test split':<{w}} {'accuracy':>9} {'macro-F1':>9}  notes")
    rows = [("TF-IDF words + LR", results["baseline_balanced"]["tfidf-word"]),
            ("TF-IDF char n-grams + LR", results["baseline_balanced"]["tfidf-char"]),
            (f"ownlm, {'imported' if a.base else 'Gutenberg-pretrained'} base", results.get("ownlm_pretrained")),
            ("ownlm, random initialisation", results.get("ownlm_random")),
            ("unbalanced (4,827 + 747): TF-IDF words + LR", results["baseline_unbalanced"]["tfidf-word"]),
            ("unbalanced: TF-IDF char n-grams + LR", results["baseline_unbalanced"]["tfidf-char"]),
            ("unbalanced: ownlm pretrained, --balance weights", results.get("ownlm_pretrained_unbalanced"))]  # fmt: skip
    for name, r in rows:
        if r:
            note = f"{r['steps']} steps, {r['train_seconds']:.0f} s" if "steps" in r else f"C={r['C']:g}"
            print(f"{name:<{w}} {100 * r['test_accuracy']:>8.2f}% {100 * r['test_macro_f1']:>8.2f}%  {note}")
    if a.seeds and "ownlm_pretrained" in results:
        print(
            "\nbalanced, test accuracy by seed (each seed: its own split, down-sampling, head start, batch order)"
        )
        ours = "imported" if a.base else "pretrained"
        print(f"{'seed':>6} {'TF-IDF words':>13} {'TF-IDF chars':>13} {ours:>11} {'random':>8}")
        first = {"baseline": results["baseline_balanced"], "pretrained": results["ownlm_pretrained"],
                 "random": results.get("ownlm_random")}  # fmt: skip
        for seed in [SEED, *a.seeds]:
            r = first if seed == SEED else results[f"seed_{seed}"]
            acc = [r["baseline"]["tfidf-word"], r["baseline"]["tfidf-char"], r["pretrained"], r.get("random")]
            print(f"{seed:>6} " + " ".join(f"{100 * x['test_accuracy']:>{n}.2f}%" if x else f"{'-':>{n + 1}}"
                                            for x, n in zip(acc, (12, 12, 10, 7))))  # fmt: skip
    print(f"results: {WORK / 'results.json'}")


if __name__ == "__main__":
    main()
