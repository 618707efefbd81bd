"""``ownlm persona score PERSONA_DIR --model RUN``: how much like the person does the fine-tuned model sound?

    ownlm persona score runs/ann/persona --model runs/ann/sft --everyone runs/ann/sft-others --base models/smol \\
        --out runs/ann/persona-score

Two measures on the person's held-out replies (``PERSONA_DIR/val.jsonl``, the latest part of the timeline):

1. **Held-out reply loss** of each model given (the base, a model tuned on everyone's replies, the persona model):
   the loss per token of the person's real reply to each held-out context (``ownlm eval``'s number).
2. **Sounds like them**: a style classifier — character 2-4-gram TF-IDF and logistic regression, classes
   weighted to balance — trained on the training period only, the person's replies (``train.jsonl``) against
   everyone else's (``others.jsonl``). It is applied to each model's sampled reply to every held-out context, and
   to the person's real held-out replies (what a perfect imitation would score). The rate is the share of replies
   the classifier calls the person's; an empty reply counts as not theirs.

Writes ``OUT/metrics.json``, ``OUT/replies.jsonl`` (context, real reply, each model's reply and its style
probability) and ``OUT/report.md``. The classifier needs scikit-learn (``pip install 'ownlm[style]'``); without it
the style rate is left out and said so.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt, validate
from ownlm.errors import UserError
from ownlm.runtime.sampling import SamplingConfig


@dataclass(kw_only=True)
class PersonaScoreConfig:
    """Score persona models on the person's held-out replies: reply loss and a style classifier's rate."""

    persona: str = opt(help="a folder written by `ownlm persona --others`", positional=True)
    model: str = opt(help="the persona model (a fine-tuned run or checkpoint)")
    everyone: str = opt("", help="a model tuned on everyone's replies, to compare with")
    base: str = opt("", help="the model both started from, to compare with")
    out: str = opt(help="output folder: metrics.json, replies.jsonl, report.md")
    max_replies: int = opt(40, help="held-out contexts answered by each model (0: all)")
    max_minutes: float = opt(
        0.0,
        help="wall-time budget for the command (0: none): sampling stops when it runs out, each model answering "
        "the same contexts, and the report says how many",
        bounds="[0, inf)",
    )
    sampling: SamplingConfig = opt(
        SamplingConfig(max_new_tokens=64, seed=0), help="how the replies are sampled"
    )
    device: str = opt("auto", help="auto, cpu, cuda, mps")


def style_classifier(person: list[str], others: list[str], seed: int = 0):
    """A fitted scikit-learn pipeline: P(person | text) from character 2-4-grams; None without scikit-learn."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
    except ImportError:
        return None
    clf = make_pipeline(
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2, max_features=200_000
        ),
        LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    clf.fit(person + others, [1] * len(person) + [0] * len(others))
    return clf


def person_probability(clf, texts: list[str]) -> list[float]:
    """P(person) of each text; 0 for an empty one."""
    if not texts:
        return []
    probs = clf.predict_proba([t or " " for t in texts])[:, 1]
    return [float(p) if t.strip() else 0.0 for p, t in zip(probs, texts)]


def _last_replies(path: Path) -> list[str]:
    from ownlm.io import iter_jsonl

    if not path.is_file():
        return []
    return [rec["messages"][-1]["content"] for _, rec in iter_jsonl(path) if isinstance(rec, dict)]


def score_persona(cfg: PersonaScoreConfig, clock=time.monotonic) -> dict:
    """Compute the metrics (and write replies.jsonl into ``cfg.out``); see the module docstring. ``clock``: the
    time source of ``--max-minutes`` (a test passes a fake one)."""
    from ownlm.chat import load_chat_model, sample_replies
    from ownlm.finetune.data import load_persona_split
    from ownlm.finetune.score import pooled_loss, score_examples
    from ownlm.io import write_jsonl
    from ownlm.runtime.device import pick_device

    start = clock()
    folder = Path(cfg.persona)
    val, _ = load_persona_split(folder, "val")
    if not val:
        raise UserError(f"{folder}: no held-out replies (val.jsonl is empty); lower nothing, add chats")
    device = pick_device(cfg.device)
    models = {"base": cfg.base, "everyone": cfg.everyone, "persona": cfg.model}
    models = {k: v for k, v in models.items() if v}
    metrics: dict = {"held_out_examples": len(val), "loss": {}, "style": None}
    for name, run in models.items():
        rows, _, _ = score_examples(run, val, True, 8, device)
        metrics["loss"][name] = pooled_loss(rows)
    chosen = val if not cfg.max_replies else val[-cfg.max_replies :]
    planned = len(chosen)
    replies: dict[str, list[dict]] = {}
    seed = cfg.sampling.seed if cfg.sampling.seed is not None else random.randrange(2**31)
    sampled = [n for n in ("everyone", "persona") if n in models]
    for k, name in enumerate(sampled):
        model, tok, template = load_chat_model(models[name], device)
        # the budget left is shared by the models still to sample; each answers at least one context, and
        # every later model answers the contexts the first ones answered, no more (the same contexts for all)
        left = cfg.max_minutes * 60 - (clock() - start) if cfg.max_minutes else None
        until = clock() + left / (len(sampled) - k) if left is not None else None
        rows = []
        for i, ex in enumerate(chosen):
            if rows and until is not None and clock() >= until:
                break
            rows += sample_replies(model, tok, template, [ex], cfg.sampling, seed + i, progress=False)
        replies[name] = rows
        if len(rows) < len(chosen):  # cut by the budget: the earlier models keep as many as this one has
            chosen = chosen[: len(rows)]
            replies = {n: r[: len(rows)] for n, r in replies.items()}
    person_train = _last_replies(folder / "train.jsonl")
    others_train = _last_replies(folder / "others.jsonl")
    clf = (
        style_classifier(person_train, others_train)
        if len(person_train) >= 5 and len(others_train) >= 5
        else None
    )
    real = [ex["messages"][-1]["content"] for ex in chosen]
    probs = {"real": person_probability(clf, real)} if clf is not None else {}
    if clf is not None:
        for name, rows in replies.items():
            probs[name] = person_probability(clf, [r["reply"] for r in rows])
        metrics["style"] = {name: sum(p > 0.5 for p in ps) / len(ps) for name, ps in probs.items()}
        metrics["style_classifier"] = {"person_replies": len(person_train), "others_replies": len(others_train),
                                       "features": "character 2-4-grams, TF-IDF", "model": "logistic regression"}  # fmt: skip
    else:
        why = "scikit-learn is not installed" if len(person_train) >= 5 and len(others_train) >= 5 else (
            "fewer than 5 training replies of the person or of the others")  # fmt: skip
        metrics["style_missing"] = why
    metrics["replies_sampled"] = len(chosen)
    if len(chosen) < planned:
        metrics["replies_cut"] = {"planned": planned, "max_minutes": cfg.max_minutes}
    metrics["empty_replies"] = {
        name: sum(not r["reply"].strip() for r in rows) for name, rows in replies.items()
    }
    out_rows = []
    for i, ex in enumerate(chosen):
        row = {"context": ex["messages"][:-1], "real": real[i]}
        for name, rows in replies.items():
            row[name] = rows[i]["reply"]
        for name, ps in probs.items():
            row[f"style_{name}"] = ps[i]
        out_rows.append(row)
    write_jsonl(Path(cfg.out) / "replies.jsonl", out_rows)
    return metrics


def write_persona_report(out: Path, metrics: dict, rows: list[dict]) -> Path:
    """``OUT/report.md``: held-out reply loss of each model, the style rates, a plain verdict and a few exchanges."""
    from ownlm.io import write_text

    loss, style = metrics["loss"], metrics.get("style")
    lines = ["# How much like them does the model sound?", "",
             f"On the person's {metrics['held_out_examples']} held-out replies (the latest part of the chats, never "
             "trained on):", "", "| model | held-out reply loss (nats/token, lower is better) | replies that sound like "
             "the person |", "|---|---|---|"]  # fmt: skip
    for name in ("base", "everyone", "persona"):
        if name in loss:
            rate = f"{100 * style[name]:.0f} %" if style and name in style else "–"
            lines.append(f"| {name} | {loss[name]:.3f} | {rate} |")
    if style:
        lines.append(f"| the person's real replies | – | {100 * style['real']:.0f} % |")
        lines += ["", f"A style classifier (character 2-4-grams + logistic regression) trained on the training "
                  f"period — {metrics['style_classifier']['person_replies']:,} of the person's replies against "
                  f"{metrics['style_classifier']['others_replies']:,} of everyone else's — read each model's sampled "
                  f"reply to {metrics['replies_sampled']} held-out contexts."]  # fmt: skip
    else:
        lines += ["", f"No style score: {metrics.get('style_missing')}."]
    cut = metrics.get("replies_cut")
    if cut:
        lines += ["", f"**Note:** sampling stopped at the stage's time budget ({cut['max_minutes']:g} minutes): "
                  f"{metrics['replies_sampled']} of {cut['planned']} planned held-out contexts were answered, by "
                  "every model alike; the style rates are noisier for it."]  # fmt: skip
    verdict = []
    if "everyone" in loss and loss["persona"] >= loss["everyone"]:
        verdict.append("the persona model predicts the person's replies no better than the model tuned on everyone: "
                       "it learned little of this person — more of their replies, a longer budget or a real base "
                       "(`--base`) would help")  # fmt: skip
    if "base" in loss and loss["persona"] >= loss["base"]:
        verdict.append("it does not beat the model it started from")
    if style and style["persona"] <= style.get("everyone", 0.0):
        verdict.append("its replies sound no more like the person than the everyone model's")
    empty = metrics["empty_replies"].get("persona", 0)
    if empty:
        verdict.append(f"{empty} of its {metrics['replies_sampled']} replies were empty")
    lines += ["", ("**Warning:** " + "; ".join(verdict) + ".") if verdict else
              "The persona model predicts the person's held-out replies better than the models it is compared with."]  # fmt: skip
    lines += ["", "## Some held-out exchanges", ""]
    for row in rows[:5]:
        ctx = row["context"][-1]["content"] if row["context"] else ""
        lines += [f"**Context:** {_flat(ctx)}", "", f"**Real reply:** {_flat(row['real'])}", ""]
        for name in ("everyone", "persona"):
            if name in row:
                lines += [f"**{name.capitalize()} model:** {_flat(row[name])}", ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _flat(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return (flat[:limit] + " …" if len(flat) > limit else flat) or "(nothing)"


def main(cfg: PersonaScoreConfig) -> int:
    from ownlm.io import iter_jsonl, mark_output, prepare_output, write_json

    cfg.sampling.check()
    validate(cfg)
    out = prepare_output(cfg.out, kind="ownlm-persona-score", folder=True, inputs=[cfg.persona])
    out.mkdir(parents=True, exist_ok=True)
    metrics = score_persona(cfg)
    write_json(out / "metrics.json", metrics)
    rows = [r for _, r in iter_jsonl(out / "replies.jsonl")]
    report = write_persona_report(out, metrics, rows)
    mark_output(out, "ownlm-persona-score")
    style = metrics.get("style")
    rates = (
        ", ".join(f"{k} {100 * v:.0f} %" for k, v in style.items()) if style else metrics.get("style_missing")
    )
    losses = ", ".join(f"{k} {v:.3f}" for k, v in metrics["loss"].items())
    print(f"held-out reply loss: {losses}; sounds like the person: {rates}; report {report}")
    return 0
