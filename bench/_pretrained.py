"""A small base model pretrained by ownlm's own stages, shared by the fine-tuning benchmarks.

``pretrained_base("shakespeare", minutes=8)`` runs ``ownlm tokenizer train`` -> ``ownlm encode`` ->
``ownlm pretrain`` on the first 90 % of tinyshakespeare (the last 10 % is what the persona benchmark holds out,
so the base never sees it); ``pretrained_base("gutenberg", minutes=8)`` runs ``ownlm extract`` -> ``ownlm corpus``
-> ``ownlm tokenizer train`` -> ``ownlm encode`` -> ``ownlm pretrain`` on the 58 Gutenberg books. Everything goes
to ``/tmp/ownlm-bench/<name>``; a finished base (``base.json`` written last) is reused, so reruns are cheap.

    >>> run = pretrained_base("shakespeare", minutes=8, threads=2)  # doctest: +SKIP
    >>> describe(run)  # doctest: +SKIP
    'shakespeare base: tinyshakespeare (first 90 %), 2,048-token BPE, 297,102 train tokens, ...'
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path("/tmp/ownlm-bench")
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
GUTENBERG = DATA / "gutenberg"
# corpus -> (vocabulary size, dropout). The model is ownlm's "tiny" preset (4 layers, 4 heads, 128 wide, context
# 256): on a shared 2-core CPU a few minutes train it over millions of tokens, where "mini" sees a few hundred
# thousand.
RECIPES = {"shakespeare": (2048, 0.1), "gutenberg": (8192, 0.0)}


def ownlm(*args: str) -> None:
    """Run one ``ownlm`` stage in a subprocess (its own threads and memory); stop on failure."""
    cmd = [sys.executable, "-m", "ownlm", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        )


def shakespeare_split(text: str, fraction: float = 0.9) -> tuple[str, str]:
    """Cut the play text at the blank line nearest ``fraction`` of its length: (first part, rest)."""
    cut = text.rfind("\n\n", 0, int(len(text) * fraction))
    return text[: cut + 1], text[cut + 2 :]


def pretrained_base(corpus: str = "shakespeare", minutes: float = 8.0, threads: int = 2, preset: str = "tiny",
                    root: Path = ROOT) -> Path:  # fmt: skip
    """The run folder of a base pretrained on ``corpus`` for ``minutes`` (built now, or reused)."""
    if corpus not in RECIPES:
        raise SystemExit(f"unknown corpus {corpus!r} (known: {', '.join(RECIPES)})")
    vocab, dropout = RECIPES[corpus]
    work = root / f"{corpus}-{preset}-{minutes:g}min"
    if (work / "base.json").is_file():
        print(describe(work / "run"))
        return work / "run"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    quiet = ["--no-progress", "--force"]
    if corpus == "shakespeare":
        text = work / "shakespeare-first90.txt"
        text.write_text(shakespeare_split(SHAKESPEARE.read_text(encoding="utf-8"))[0], encoding="utf-8")
        sources = [str(text)]
        what = "tinyshakespeare, first 90 % of the text (encode keeps its last 10 % for validation)"
    else:
        ownlm("extract", str(GUTENBERG), "--out", str(work / "docs.jsonl"))
        ownlm("corpus", str(work / "docs.jsonl"), "--out", str(work / "corpus"), "--force")
        sources = [str(work / "corpus")]
        what = "58 Gutenberg books (ownlm extract + corpus: 10 % of the books for validation)"
    train_text = [str(work / "corpus" / "train.jsonl")] if corpus == "gutenberg" else sources
    ownlm(
        "tokenizer",
        "train",
        *train_text,
        "--out",
        str(work / "tokenizer"),
        "--vocab-size",
        str(vocab),
        *quiet,
    )
    ownlm("encode", *sources, "--tokenizer", str(work / "tokenizer"), "--out", str(work / "tokens"), *quiet)
    prep_s = time.perf_counter() - t0
    ownlm("pretrain", "--data", str(work / "tokens"), "--out", str(work / "run"), "--preset", preset,
           "--dropout", str(dropout), "--max-minutes", str(minutes), "--threads", str(threads), "--samples", "0",
           "--evals", "4", "--eval-iters", "10", "--no-progress", "--seed", "1337")  # fmt: skip
    manifest = json.loads((work / "tokens" / "manifest.json").read_text())
    metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines() if line]
    config = json.loads(_latest_config(work / "run"))
    info = {"corpus": corpus, "what": what, "vocab": vocab, "preset": preset, "dropout": dropout,
            "minutes": minutes, "threads": threads, "prep_s": round(prep_s, 1),
            "tokens": _split_tokens(manifest), "model": config,
            "steps": metrics[-1]["step"], "val_loss": metrics[-1]["val_loss"],
            "tokens_seen": metrics[-1]["tokens"]}  # fmt: skip
    (work / "base.json").write_text(json.dumps(info, indent=1))
    print(describe(work / "run"))
    return work / "run"


def _latest_config(run: Path) -> str:
    """The model config of a run's latest checkpoint, as JSON text."""
    from ownlm.model.checkpoint import resolve_checkpoint

    cfg = json.loads((resolve_checkpoint(run) / "config.json").read_text())
    model = cfg.get("model", cfg)
    keys = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "pos", "norm", "mlp")
    return json.dumps({k: model[k] for k in keys if k in model})


def _split_tokens(manifest: dict) -> dict:
    """{"train": n, "val": n} token counts from an ``ownlm encode`` manifest (whatever its exact layout)."""
    out = {}
    for split in ("train", "val"):
        part = manifest.get(split) or manifest.get("splits", {}).get(split) or {}
        if isinstance(part, dict):
            out[split] = part.get("tokens") or sum(s.get("tokens", 0) for s in part.get("shards", []))
    return out


def describe(run: Path) -> str:
    """One line: corpus, tokens, model shape, minutes, final validation loss."""
    info = json.loads((Path(run).parent / "base.json").read_text())
    m, t = info["model"], info["tokens"]
    shape = f"{m.get('n_layer')} layers x {m.get('n_head')} heads x {m.get('n_embd')} wide, context {m.get('block_size')}"
    return (f"{info['corpus']} base: {info['what']}; {info['vocab']:,}-token BPE; {t.get('train', 0):,} train / "
            f"{t.get('val', 0):,} val tokens; model {info['preset']} ({shape}, {m.get('pos')}/{m.get('norm')}/"
            f"{m.get('mlp')}, dropout {info['dropout']}); pretrained {info['minutes']:g} min on {info['threads']} "
            f"threads = {info['steps']:,} steps, {info['tokens_seen']:,} tokens; final val loss "
            f"{info['val_loss']:.3f}")  # fmt: skip


MEMORY_MODES = ("auto", "lean", "fast")


def add_memory_mode(ap) -> None:
    """The benchmarks' ``--memory-mode``: ownlm's (``TrainingConfig.memory_mode``) for their fine-tuning runs."""
    ap.add_argument("--memory-mode", default="auto", choices=MEMORY_MODES,
                    help="ownlm's --memory-mode for the fine-tuning runs (auto: lean with the activation "
                    "checkpointing a real base gets; fast: about twice the speed, more memory)")  # fmt: skip


def base_flags(base: Path, config: type, memory_mode: str = "auto") -> list[str]:
    """The flags ``ownlm build --base`` gives its fine-tuning stages (LoRA rank 8 on a frozen bf16 base, packing
    into rows of 512 tokens: ``pipeline._adapt_values``; activation checkpointing: ``pipeline._sft_train``), as
    command-line flags of the command whose config class is ``config`` (``SFTConfig``, ``ClassifyConfig``),
    keeping those it takes (its own fields and those of its sections). ``memory_mode`` as ``build --memory-mode``
    (a flag only when not "auto").

    >>> from ownlm.finetune.sft import SFTConfig
    >>> flags = base_flags(Path("smol"), SFTConfig)
    >>> [f for f in flags if f in ("--lora-rank", "--base-dtype", "--pack", "--checkpoint-activations", "--max-length")]
    ['--lora-rank', '--base-dtype', '--pack', '--max-length', '--checkpoint-activations']
    """
    import dataclasses

    from ownlm.pipeline import BuildConfig, _adapt_values, _sft_train

    def names(cls: type) -> set[str]:
        out = set()
        for f in dataclasses.fields(cls):
            out.add(f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(
                default
            ):  # a section (chat, adapt, train): its flags are the command's
                out |= names(type(default))
        return out

    known = names(config)
    cfg = BuildConfig(out="-", base=str(base))
    cfg.train.memory_mode = memory_mode
    keep = ("checkpoint_activations", "memory_mode") if memory_mode != "auto" else ("checkpoint_activations",)
    values = {**_adapt_values(cfg), **{k: v for k, v in _sft_train(cfg).items() if k in keep}}
    flags: list[str] = []
    for key, value in values.items():
        if key not in known:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def describe_imported(base: Path) -> str:
    """One line about an imported base: its folder, parameters, shape and vocabulary."""
    from ownlm.model.checkpoint import resolve_checkpoint

    cfg = json.loads((resolve_checkpoint(base) / "config.json").read_text())
    m = cfg.get("model", cfg)
    return (f"imported base {base}: {m.get('n_layer')} layers x {m.get('n_head')} heads x {m.get('n_embd')} wide, "
            f"context {m.get('block_size')}, vocabulary {m.get('vocab_size'):,}")  # fmt: skip


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", choices=list(RECIPES))
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    pretrained_base(a.corpus, a.minutes, a.threads)
