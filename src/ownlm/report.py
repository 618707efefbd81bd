"""``OUT/report.md``: what ``ownlm build`` / ``ownlm demo`` made, in one page a newcomer can read.

Everything comes from the files the stages wrote (manifests, ``metrics.jsonl``, ``samples.md``, the
comparison table), so the report can be rewritten at any time without running anything again.

>>> write_report(Path("runs/demo"), state)  # doctest: +SKIP
PosixPath('runs/demo/report.md')
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ownlm.model.run import RunFolder

STAGE_WHAT = {
    "python-docs": "Python's documentation -> python-docs/docs.jsonl",
    "extract": "your files -> docs.jsonl",
    "corpus": "clean, deduplicate, split -> corpus/",
    "tokenizer": "byte-level BPE -> tokenizer/",
    "compare": "characters vs words vs BPE -> compare/",
    "encode": "text -> token shards -> tokens/",
    "pretrain": "train the GPT -> run/",
    "samples": "generate text -> samples.md",
    "persona": "the person's replies and the others' -> persona/",
    "sft-others": "fine-tune on everyone else's replies -> sft-others/",
    "sft": "fine-tune on the person's replies or instructions -> sft/",
    "persona-score": "held-out reply loss and style score -> persona-score/",
    "export": "the persona model for llama.cpp and Ollama -> export/model.gguf, export/Modelfile",
}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def count_parameters(weights: Path) -> int:
    """Parameters in a ``.safetensors`` file, from its JSON header alone (no torch needed)."""
    try:
        with open(weights, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return 0
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def _fmt(x, spec: str = ".3f") -> str:
    return format(x, spec) if isinstance(x, int | float) else "–"


def _stages_table(state) -> list[str]:
    rows = ["| stage | what | this run | time |", "|---|---|---|---|"]
    for name, info in state.stages.items():
        ran = state.last_run.get(name, "")
        secs = info.get("seconds")
        t = f"{secs:.0f} s" if isinstance(secs, int | float) and ran == "ran" else ""
        rows.append(f"| {name} | {STAGE_WHAT.get(name, '')} | {ran or '–'} | {t} |")
    return rows


def _headline(out: Path) -> str:
    """One sentence: how big a model, trained how long on how much text, and how good it got."""
    metrics = _jsonl(out / "run" / "metrics.jsonl")
    corpus = _json(out / "corpus" / "manifest.json")
    latest = RunFolder(out / "run").latest()
    params = count_parameters(latest / "model.safetensors") if latest else 0
    if not metrics or not corpus:
        return "The pipeline has not finished yet: the sections below show what is there so far."
    last = metrics[-1]
    tokens = _json(out / "tokens" / "manifest.json").get("splits", {}).get("train", {})
    mb = tokens.get("bytes", corpus["splits"]["train"]["chars"]) / 1e6  # bytes of text, not of JSON
    val = f", reaching a validation loss of {last['val_loss']:.2f}" if _number(last.get("val_loss")) else ""
    bpb = f" ({last['val_bpb']:.2f} bits per byte)" if _number(last.get("val_bpb")) else ""
    minutes = last.get("elapsed_s", 0) / 60
    return (
        f"A GPT with {params / 1e6:.1f} M parameters, trained from random weights for {minutes:.1f} minutes "
        f"on {mb:.1f} MB of text{val}{bpb}."
    )


# What a validation score in bits per byte of text means for the samples, from the best score down. The
# wording is deliberately modest: bits per byte measures prediction, and a reader judges the samples.
BPB_WORDS = (
    (1.3, "The validation score says it predicts the text well: expect correctly spelled words and local grammar, "
          "with meaning that wanders over longer stretches."),
    (2.0, "The validation score says it has learned the spelling of frequent words and the layout of the text, "
          "but not yet meaning: expect real words in plausible order and made-up ones among them."),
    (3.0, "The validation score says it has learned which letters, short words and symbols are common and little "
          "more: expect word-like strings and the text's punctuation, not sentences."),
    (float("inf"), "The validation score is close to where training started: the model has learned little beyond "
                   "which characters are frequent, and the samples will look like noise."),
)  # fmt: skip


def verdict(metrics: list[dict], tokens_manifest: dict) -> str:
    """What the samples can be expected to show, from the measured validation bits per byte, with a warning when
    training was too short for the data or the loss did not go down."""
    scored = [m for m in metrics if _number(m.get("val_bpb"))]
    if not scored:
        return "There is no validation score for this run (no validation split), so judge the samples alone."
    last, first = scored[-1], scored[0]
    text = next(words for limit, words in BPB_WORDS if last["val_bpb"] < limit)
    notes = []
    if len(scored) > 1 and last["val_bpb"] >= first["val_bpb"] - 0.01:
        notes.append(
            "the validation loss did not go down during training — lower the learning rate or check the data"
        )
    steps = max((m.get("step") or 0 for m in metrics), default=0)
    if steps < 100:
        notes.append(f"only {steps} pretraining steps: expect noise; give it --max-minutes N, or start from a real "
                     "base with --base (an imported model: `ownlm import gguf`)")  # fmt: skip
    train_tokens = (tokens_manifest.get("splits", {}).get("train") or {}).get("tokens", 0)
    seen = last.get("tokens") or 0
    if train_tokens and seen < train_tokens:
        notes.append(f"training was too short for this data: the model read {seen / train_tokens:.0%} of the training "
                     "text once; a longer budget (`--max-minutes`) will help more than anything else")  # fmt: skip
    elif train_tokens:
        notes.append(f"the model read the training text {seen / train_tokens:.1f} times")
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text


def _number(x) -> bool:
    return isinstance(x, int | float)


def _model_section(out: Path) -> list[str]:
    run = out / "run"
    metrics = _jsonl(run / "metrics.jsonl")
    if not metrics:
        return ["No training metrics found (the pretrain stage has not finished yet)."]
    latest = RunFolder(run).latest()
    model = _json(latest / "config.json").get("model", {}) if latest else {}
    params = count_parameters(latest / "model.safetensors") if latest else 0
    last, first = metrics[-1], metrics[0]
    best = min(
        (m for m in metrics if isinstance(m.get("val_loss"), int | float)),
        key=lambda m: m["val_loss"],
        default={},
    )
    lines = [
        f"A GPT with **{params / 1e6:.2f} M parameters**: {model.get('n_layer', '?')} layers, "
        f"{model.get('n_head', '?')} attention heads, {model.get('n_embd', '?')} wide, a context of "
        f"{model.get('block_size', '?')} tokens, {model.get('pos', 'learned')} positions, "
        f"an output layer of {model.get('vocab_size', '?')} tokens (the tokenizer's vocabulary, padded to a "
        "multiple of 64 for faster matrix products).",
        "",
        f"Trained for **{last.get('step', 0):,} steps** ({_fmt(last.get('tokens'), ',')} tokens, "
        f"{_fmt(last.get('elapsed_s', 0) / 60, '.1f')} minutes, {_fmt(last.get('tokens_per_s'), ',.0f')} tokens/s).",
        "",
        f"| | first evaluation (step {first.get('step', 0):,}) | last (step {last.get('step', 0):,}) | best |",
        "|---|---|---|---|",
        f"| train loss | {_fmt(first.get('train_loss'))} | {_fmt(last.get('train_loss'))} | |",
        f"| validation loss | {_fmt(first.get('val_loss'))} | {_fmt(last.get('val_loss'))} | "
        f"{_fmt(best.get('val_loss'))} |",
        f"| validation bits per byte | {_fmt(first.get('val_bpb'))} | {_fmt(last.get('val_bpb'))} | "
        f"{_fmt(best.get('val_bpb'))} |",
        "",
        "Loss is the average surprise per token in nats (a model guessing uniformly among V tokens scores ln V); "
        "bits per byte divides it by the bytes each token covers, so models with different tokenizers can be "
        "compared (lower is better; plain gzip gets about 2–3 bits per byte on English text).",
    ]
    plot = _loss_plot(run, metrics)
    if plot:
        lines += ["", f"![train and validation loss]({plot.relative_to(out).as_posix()})"]
    return lines


def _finetune_section(out: Path) -> list[str]:
    """The fine-tuning stage's own report (``sft/report.md``), its headings one level down; [] without one."""
    path = out / "sft" / "report.md"
    if not path.is_file():
        return []
    body = path.read_text(encoding="utf-8").split("\n", 1)[1].strip()
    body = body.replace("\n## ", "\n### ")
    lines = ["## Fine-tuning", "", f"`ownlm chat {(out / 'sft').as_posix()}` talks to the fine-tuned model.", "",
             body, ""]  # fmt: skip
    score = out / "persona-score" / "report.md"
    if score.is_file():  # build --person: how much like the person the model sounds, first
        text = score.read_text(encoding="utf-8").split("\n", 1)[1].strip().replace("\n## ", "\n### ")
        lines = ["## How much like them does the model sound?", "", text, "", *lines]
    return lines


def _loss_plot(run: Path, metrics: list[dict]) -> Path | None:
    if (run / "loss.png").is_file():
        return run / "loss.png"
    try:
        from ownlm.train.metrics import MetricsLog
    except ImportError:
        return None
    log = MetricsLog(run)
    log.records = metrics
    return log.plot()


def _data_section(out: Path) -> list[str]:
    corpus, tokens = _json(out / "corpus" / "manifest.json"), _json(out / "tokens" / "manifest.json")
    tok = _json(out / "tokenizer" / "tokenizer.json")
    lines = []
    if corpus:
        r, s = corpus["removed"], corpus["splits"]
        lines.append(
            f"- **Corpus**: {corpus['records_read']:,} documents read, {corpus['kept']:,} kept — "
            f"{r['exact_duplicates']:,} exact and {r['near_duplicates']:,} near-duplicates removed "
            f"(`corpus/duplicates.jsonl` says which), {r['too_short'] + r['too_long']:,} outside the length limits. "
            f"Train: {s['train']['chars']:,} characters; validation: {s['val']['chars']:,}."
        )
    if tok:
        n = 256 + len(tok.get("merges", [])) + len(tok.get("special_tokens", {}))
        lines.append(
            f"- **Tokenizer**: byte-level BPE, {n:,} tokens (256 bytes + {len(tok.get('merges', [])):,} merges + "
            f"{len(tok.get('special_tokens', {}))} special), `tokenizer/vocab.txt` lists them."
        )
    if tokens:
        sp = tokens.get("splits", {})
        tr, va = sp.get("train", {}), sp.get("val", {})
        bpt = tr.get("bytes", 0) / max(1, tr.get("tokens", 0))
        lines.append(
            f"- **Tokens**: {tr.get('tokens', 0):,} for training, {va.get('tokens', 0):,} for validation — "
            f"{bpt:.2f} bytes of text per token."
        )
    return lines


def compare_table(out: Path, example_tokens: int = 12) -> list[str]:
    """The tokenizer comparison (``compare/compare.json``) as a compact Markdown table; [] if absent."""
    data = _json(out / "compare" / "compare.json")
    if not data.get("rows"):
        return []
    lines = [
        f'Example sentence: "{data.get("example", "")}"',
        "",
        "| tokens are | vocabulary | tokens in the corpus | per sentence | bytes per token | the example sentence, first tokens |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for r in data["rows"]:
        shown = " ".join(f"`{t}`" for t in r["example"][:example_tokens])
        more = (
            f" … ({len(r['example'])})" if len(r["example"]) > example_tokens else f" ({len(r['example'])})"
        )
        lines.append(
            f"| {r['level']} | {r['vocab_size']:,} | {r['tokens']:,} | {r['tokens_per_sentence']:.1f} | "
            f"{r['bytes_per_token']:.2f} | {shown.replace('|', '¦')}{more} |"
        )
    return lines


def write_report(out: Path, state, samples_path: Path | None = None, base: str | None = None) -> Path:
    """Write ``out/report.md`` from the stage outputs and the pipeline state; return its path. With ``base`` (a
    model given to ``build --base``) the report is about the fine-tuned model alone."""
    from ownlm.io import write_text

    if base is not None:
        return _write_finetune_report(out, state, base)
    lines = [
        f"# {out.name}: a language model trained from scratch",
        "",
        _headline(out),
        "",
        "Every file in this folder was written by one stage of the `ownlm` pipeline, and each stage can be run "
        "again on its own (the commands are at the end).",
        "",
        "## Samples",
        "",
    ]
    samples = samples_path.read_text(encoding="utf-8") if samples_path and samples_path.is_file() else ""
    body = samples.split("\n", 1)[1].strip() if samples.startswith("# ") else samples.strip()
    lines += [
        verdict(_jsonl(out / "run" / "metrics.jsonl"), _json(out / "tokens" / "manifest.json")),
        "",
        body.replace("\n## ", "\n### ") if body else "No samples yet.",
        "",
    ]
    lines += ["## The model", "", *_model_section(out), "", *_finetune_section(out)]
    lines += ["## The data", "", *_data_section(out), ""]
    table = compare_table(out)
    if table:
        lines += [
            "## Characters, words or BPE?",
            "",
            "The same training text cut into tokens in different ways. Fewer tokens means shorter sequences: "
            "cheaper attention and more text in one context window. A bigger vocabulary means a bigger "
            "embedding table and rarer tokens, each seen fewer times in training. BPE sits between characters "
            "and words, and its vocabulary size is the dial (`compare/compare.md` has the full table).",
            "",
            *table,
            "",
        ]
        if (out / "compare" / "compare.png").is_file():
            lines += ["![vocabulary size against sequence length](compare/compare.png)", ""]
    lines += ["## The stages", "", *_stages_table(state), ""]
    run = (out / "run").as_posix()
    lines += [
        "## What next",
        "",
        "```bash",
        "# more text from this model",
        f'ownlm generate {run} --prompt "The " --max-new-tokens 200',
        "# its validation loss, perplexity and bits per byte",
        f"ownlm eval {run} --data {(out / 'tokens').as_posix()}",
        "# the corpus in numbers, with a histogram of document lengths",
        f"ownlm corpus stats {(out / 'corpus').as_posix()}",
        "# the same pipeline on your own files",
        "ownlm build ~/my-texts --out runs/mine --max-minutes 30",
        "```",
        "",
        "Run the same command again and every finished stage is skipped; change one setting and only the "
        "stages after it run again (`pipeline.json` records what ran and with which settings).",
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _write_finetune_report(out: Path, state, base: str) -> Path:
    """``out/report.md`` of a build that fine-tuned a given model (``--base``): no pretraining to describe."""
    from ownlm.io import write_text

    sft = (out / "sft").as_posix()
    lines = [f"# {out.name}: `{base}` fine-tuned on your data", "",
             f"No tokenizer was trained and nothing was pretrained: the model and its tokenizer are `{base}`'s.", "",
             *_finetune_section(out), "## The stages", "", *_stages_table(state), "",
             "## What next", "", "```bash", f"ownlm chat {sft}", f'ownlm generate {sft} --prompt "Hello"', "```",
             ""]  # fmt: skip
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
