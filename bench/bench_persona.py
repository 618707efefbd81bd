"""Persona quality: does fine-tuning on one person's replies beat the base and a model tuned on everyone's?

tinyshakespeare is a dialogue: a speaker line ending in ``:``, the speech, a blank line. It becomes conversations
in ownlm's extract format (``{"id", "source", "messages": [{"name", "time", "text"}]}``): one message per
speech, one minute apart, and a new conversation (a day later) at a scene change, taken to be where neither the
speaker nor the next speaker has spoken in the previous 8 speeches (the file has no scene markers).

The person: by default the speaker with the most speeches among those whose held-out replies (the latest 10 %,
``ownlm persona``'s time split) lie entirely in the part of the file the base never saw — the base is pretrained
on the first 90 % of the text (``bench/_pretrained.py``), so nothing held out leaks into it. Three models are
scored by the masked loss (chatml, loss on the reply and its end marker) on that person's held-out replies:

1. the base;
2. "everyone": the base fine-tuned on every speaker's replies (``build_persona`` once per speaker, each speaker in
   turn the assistant), only those before the first held-out reply;
3. "persona": the base fine-tuned on the person's own training replies (``ownlm persona`` + ``ownlm finetune sft``).

Both fine-tunes: the same base, template, learning rate, batch size and number of steps. Target: the persona model
has the lowest loss; the margins are printed, with a 95 % interval from a paired bootstrap over the held-out
replies. ``--people N`` repeats the comparison for the N eligible speakers with most speeches (each with their own
"everyone" model, cut at their own first held-out reply) and pools their replies for one interval.

    python bench/bench_persona.py                       # 8-minute base (reused when present), 60 steps each
    python bench/bench_persona.py --base-minutes 12 --people 8
    python bench/bench_persona.py --steps 100 --person PETRUCHIO
    python bench/bench_persona.py --base smol/ --person PETRUCHIO --steps 8 --then-steps 4 --control \
        --batch-size 1 --style-replies 14 --work /tmp/persona-smol

``--base DIR`` fine-tunes an imported model (``ownlm import``, e.g. SmolLM2-135M-Instruct) instead of the
tinyshakespeare base, in its own chat template (``--template auto``) and with the settings ``ownlm build --base``
gives its fine-tuning stages (``_pretrained.base_flags``: LoRA rank 8 on a frozen bf16 base, activation
checkpointing, examples packed into rows of 512 tokens — so a step is ``--batch-size`` rows of 512 tokens). Its
runs are not evaluated while they train: every model is scored afterwards, as ``ownlm eval`` scores it (the loss
per token of each held-out example's final reply and its end-of-turn token).

``--style-replies N`` adds the "sounds like them" score of ``ownlm persona score``: a character n-gram style
classifier trained on the training period (the person's replies against everyone else's, ``ownlm persona
--others``) applied to each model's sampled reply (≤ ``--max-new-tokens`` tokens, seed 0) to the person's latest N
held-out contexts, beside its rate on the real replies.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, deque
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pretrained import ROOT, SHAKESPEARE, add_memory_mode, ownlm, pretrained_base, shakespeare_split  # noqa: E402


def speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, speech) for every block ``NAME:\\nlines...`` of the play text."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.strip("\n").split("\n")
        if len(lines) >= 2 and lines[0].endswith(":"):
            out.append((lines[0][:-1].strip(), "\n".join(lines[1:]).strip()))
    return out


def play_conversations(text: str, window: int = 8, start: datetime = datetime(2024, 1, 1)) -> list[dict]:
    """The play as conversations in ownlm's extract format, with increasing synthetic times.

    >>> convs = play_conversations("A:\\nHi.\\n\\nB:\\nHello.\\n")
    >>> [(m["name"], m["text"]) for m in convs[0]["messages"]]
    [('A', 'Hi.'), ('B', 'Hello.')]
    """
    items = speeches(text)
    convs: list[dict] = []
    recent: deque[str] = deque(maxlen=window)
    for i, (name, speech) in enumerate(items):
        nxt = items[i + 1][0] if i + 1 < len(items) else None
        if not convs or (name not in recent and nxt is not None and nxt not in recent):
            convs.append({"id": f"scene-{len(convs) + 1:04d}", "source": str(SHAKESPEARE), "messages": []})
            recent.clear()
        t = start + timedelta(days=len(convs), minutes=i)
        convs[-1]["messages"].append({"name": name, "time": t.isoformat(), "text": speech})
        recent.append(name)
    return convs


def eligible_people(text: str, val_fraction: float = 0.1) -> list[str]:
    """Speakers whose latest ``val_fraction`` of speeches all lie after the base's 90 % cut, most speeches first."""
    head, _ = shakespeare_split(text)
    items = speeches(text)
    seen_in_base = len(speeches(head))
    where: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(items):
        where.setdefault(name, []).append(i)
    ok = {n: len(ix) for n, ix in where.items() if ix[-max(1, round(len(ix) * val_fraction))] >= seen_in_base}
    return sorted(ok, key=lambda n: (-ok[n], n))


def choose_person(text: str, val_fraction: float = 0.1) -> str:
    """The speaker with the most speeches whose held-out part the base never saw."""
    return eligible_people(text, val_fraction)[0]


def everyone_examples(convs: list[dict], before: str, context_turns: int) -> list[dict]:
    """Every speaker in turn as the assistant (``build_persona``), examples starting before ``before``."""
    from ownlm.errors import UserError
    from ownlm.finetune.persona import build_persona

    out = []
    for name in Counter(m["name"] for c in convs for m in c["messages"]):
        try:
            train, _, _ = build_persona(convs, [name], context_turns=context_turns, val_fraction=0.0)
        except UserError:  # a speaker who never answers anyone
            continue
        out += [{"messages": ex["messages"]} for ex in train if ex["time"] < before]
    return out


def finetune(base: Path, out: Path, data: list[str], val: list[str], a, steps: int = 0) -> dict:
    """``ownlm finetune sft`` with the benchmark's budget (``steps``, default ``--steps``); the first and last
    metrics records (scored on ``val``, or a persona folder's own), and the wall seconds. From an imported base
    (``a.base``): its template and ``build --base``'s settings, and no evaluation during the run (``val`` is
    ignored; a persona folder is read as its ``train.jsonl``): ``before`` and ``after`` are then None."""
    import shutil

    if a.reuse and (out / "latest").exists():  # a finished run of an interrupted benchmark
        return {"before": None, "after": None, "wall_s": 0.0}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if a.base:
        data = [str(Path(d) / "train.jsonl") if Path(d).is_dir() else d for d in data]
        extra = ["--template", "auto", "--val-fraction", "0", "--evals", "1", *a.base_flags]
    else:
        extra = ["--val-data", *val] if val else []
        extra += ["--template", "chatml", "--evals", "2"]
    ownlm("finetune", "sft", str(base), "--data", *data, *extra, "--out", str(out),
          "--max-iters", str(steps or a.steps), "--lr", str(a.lr), "--min-lr", str(a.lr / 10),
          "--batch-size", str(a.batch_size), "--responses", "0", "--eval-iters", "100000", "--threads", str(a.threads),
          "--seed", "1337", "--no-progress", "--keep-checkpoints", "1", "--no-restore-best")  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scored = [r for r in rows if r.get("val_loss") is not None]
    first, last = (scored[0], scored[-1]) if scored else (None, None)
    return {"before": first, "after": last, "wall_s": time.perf_counter() - t0}


def per_reply_losses(run: Path, examples: list[dict], dtype: str = "fp32") -> np.ndarray:
    """(n, 2): each held-out reply's summed loss and its scored tokens under the run's model, as ``ownlm eval``
    and the fine-tuning's held-out loss score them (the final reply and its end-of-turn token)."""
    import torch

    from ownlm.finetune.score import score_examples

    rows, _, dropped = score_examples(str(run), examples, True, device=torch.device("cpu"), dtype=dtype)
    assert not dropped and len(rows) == len(examples), "a held-out reply does not fit the context"
    return np.asarray([(r["loss"] * r["tokens"], r["tokens"]) for r in rows])


def style_rates(runs: dict[str, Path], folder: Path, val: list[dict], a) -> dict[str, float]:
    """The share of each model's sampled replies (and of the real ones, ``"real"``) to the person's latest
    ``a.style_replies`` held-out contexts that the style classifier of ``ownlm persona score`` calls the
    person's."""
    from ownlm.chat import load_chat_model, sample_replies
    from ownlm.finetune.persona_score import _last_replies, person_probability, style_classifier
    from ownlm.runtime.sampling import SamplingConfig

    clf = style_classifier(_last_replies(folder / "train.jsonl"), _last_replies(folder / "others.jsonl"))
    chosen = val[-a.style_replies :]
    texts = {"real": [ex["messages"][-1]["content"] for ex in chosen]}
    from ownlm.errors import UserError

    for name, run in runs.items():
        try:
            model, tok, template = load_chat_model(str(run))
        except UserError:  # a base that is not a chat model (the tinyshakespeare one): nothing to sample
            continue
        sampling = SamplingConfig(max_new_tokens=a.max_new_tokens, seed=0)
        texts[name] = [
            r["reply"] for r in sample_replies(model, tok, template, chosen, sampling, 0, progress=False)
        ]
    rates = {name: float(np.mean([p > 0.5 for p in person_probability(clf, t)])) for name, t in texts.items()}
    for name, t in texts.items():
        print(
            f"  style: {name:<9} {rates[name]:.2f} of {len(t)} replies called the person's; first: {t[0][:100]!r}"
        )
    return rates


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean loss per token of ``a`` minus ``b`` over the same replies, with a 95 % interval from resampling the
    replies (each keeps its own token count: the statistic is a ratio of sums, as the loss is)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    diffs = a[idx, 0].sum(1) / a[idx, 1].sum(1) - b[idx, 0].sum(1) / b[idx, 1].sum(1)
    point = a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()
    return float(point), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--person", nargs="*", default=None, help="speaker name(s) (default: chosen as above)")
    ap.add_argument("--base-minutes", type=float, default=8.0, help="pretraining budget of the base")
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps, the same for both models")
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak learning rate (both)")
    ap.add_argument("--context-turns", type=int, default=3, help="turns of context before each reply")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--people", type=int, default=1, help="how many people (the eligible ones with most speeches)"
    )
    ap.add_argument(
        "--then-steps", type=int, default=0, help="also: everyone's model, then N steps on the person's"
    )
    ap.add_argument(
        "--control", action="store_true", help="with --then-steps: everyone's model for as many steps"
    )
    ap.add_argument(
        "--batch-size", type=int, default=8, help="fine-tuning batch (rows of 512 tokens with --base)"
    )
    add_memory_mode(ap)
    ap.add_argument(
        "--base", type=Path, default=None, help="fine-tune this imported model instead (see above)"
    )
    ap.add_argument(
        "--style-replies", type=int, default=0, help="held-out contexts answered for the style score"
    )
    ap.add_argument(
        "--max-new-tokens", type=int, default=48, help="longest sampled reply for the style score"
    )
    ap.add_argument("--style-models", nargs="*", default=["base", "everyone", "persona", "then", "control"],
                    help="the models whose replies are sampled for the style score")  # fmt: skip
    ap.add_argument("--work", type=Path, default=ROOT / "persona", help="scratch folder of the runs")
    ap.add_argument(
        "--reuse", action="store_true", help="keep the fine-tuned runs a stopped benchmark finished"
    )
    a = ap.parse_args()

    from ownlm.io import write_jsonl

    if a.base is not None:
        from _pretrained import base_flags, describe_imported

        from ownlm.finetune.sft import SFTConfig

        base, a.base_flags, a.score_dtype = a.base, base_flags(a.base, SFTConfig, a.memory_mode), "bf16"
        print(describe_imported(a.base) + "; " + " ".join(a.base_flags))
    else:
        base, a.score_dtype = pretrained_base("shakespeare", a.base_minutes, a.threads), "fp32"
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    text = SHAKESPEARE.read_text(encoding="utf-8")
    convs = play_conversations(text)
    write_jsonl(work / "plays.jsonl", convs)
    people = [[p] for p in a.person] if a.person else [[p] for p in eligible_people(text)[: a.people]]
    pooled: dict[str, list] = {"persona": [], "everyone": [], "then": [], "control": []}
    rows = []
    for person in people:
        row, ours, theirs, then, control = one_person(person, base, convs, work, a)
        rows.append(row)
        pooled["persona"].append(ours)
        pooled["everyone"].append(theirs)
        if then is not None:
            pooled["then"].append(then)
        if control is not None:
            pooled["control"].append(control)
    if len(rows) > 1:
        theirs = np.concatenate(pooled["everyone"])
        summary = {"people": rows}
        for name in ("persona", "then"):
            if not pooled[name]:
                continue
            ours = np.concatenate(pooled[name])
            margin, lo, hi = paired_bootstrap(theirs, ours)
            wins = int((theirs[:, 0] / theirs[:, 1] > ours[:, 0] / ours[:, 1]).sum())
            label = (
                "the person's replies only"
                if name == "persona"
                else f"everyone's, then {a.then_steps} steps on the person's"
            )
            print(f"all {len(rows)} people pooled ({len(ours)} held-out replies), {label} against everyone's: margin "
                  f"{margin:+.4f} nats/token, 95 % interval [{lo:+.4f}, {hi:+.4f}]; better on {wins} of {len(ours)} "
                  "replies")  # fmt: skip
            summary[name] = {"replies": len(ours), "margin": margin, "ci95": [lo, hi], "replies_won": wins}
        if pooled["control"]:
            control, then = np.concatenate(pooled["control"]), np.concatenate(pooled["then"])
            margin, lo, hi = paired_bootstrap(control, then)
            wins = int((control[:, 0] / control[:, 1] > then[:, 0] / then[:, 1]).sum())
            print(f"everyone's then the person's, against everyone's for as many steps ({a.steps + a.then_steps}): "
                  f"margin {margin:+.4f} nats/token, 95 % interval [{lo:+.4f}, {hi:+.4f}]; better on {wins} of "
                  f"{len(then)} replies")  # fmt: skip
            summary["then_vs_control"] = {"margin": margin, "ci95": [lo, hi], "replies_won": wins}
        print(json.dumps(summary))


def one_person(
    person: list[str], base: Path, convs: list[dict], work: Path, a
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The persona benchmark for one person: their own fine-tune against everyone's, scored on their held-out
    replies. Returns the figures and the two models' per-reply (loss sum, tokens)."""
    import shutil

    from ownlm.io import write_jsonl

    tag = re.sub(r"\W+", "-", person[0]).strip("-").lower()
    folder = work / f"persona-{tag}"
    shutil.rmtree(folder, ignore_errors=True)  # the benchmark's own scratch folder, rebuilt each run
    ownlm("persona", str(work / "plays.jsonl"), "--person", *person, "--out", str(folder),
          "--context-turns", str(a.context_turns), "--val-fraction", "0.1", "--others")  # fmt: skip
    val = [json.loads(line) for line in (folder / "val.jsonl").read_text().splitlines() if line]
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines() if line]
    cutoff = min(ex["time"] for ex in val)
    everyone = everyone_examples(convs, cutoff, a.context_turns)
    write_jsonl(work / f"everyone-{tag}.jsonl", everyone)
    n_msgs = sum(len(c["messages"]) for c in convs)
    print(f"\n{len(convs):,} conversations, {n_msgs:,} speeches; person {' / '.join(person)}: {len(train)} training "
          f"replies, {len(val)} held out (from {cutoff}); everyone: {len(everyone):,} replies of all speakers "
          f"before that; {a.steps} steps x batch {a.batch_size} each, lr {a.lr:g}, {a.threads} threads")  # fmt: skip
    val_files = [str(folder / "val.jsonl")]
    res_everyone = finetune(
        base, work / f"ft-everyone-{tag}", [str(work / f"everyone-{tag}.jsonl")], val_files, a
    )
    res_persona = finetune(base, work / f"ft-persona-{tag}", [str(folder)], [], a)
    ours = per_reply_losses(work / f"ft-persona-{tag}", val, a.score_dtype)
    theirs = per_reply_losses(work / f"ft-everyone-{tag}", val, a.score_dtype)
    base_rows = per_reply_losses(base, val, a.score_dtype)
    pooled = lambda x: float(x[:, 0].sum() / x[:, 1].sum())  # noqa: E731
    base_loss, ev, pe = pooled(base_rows), pooled(theirs), pooled(ours)
    if not a.base:  # the runs' own held-out loss is the same number
        check = res_persona["after"]["val_loss"]
        assert abs(check - pe) < 1e-3, f"per-reply scoring disagrees with the run's: {pe} vs {check}"
    tokens = int(base_rows[:, 1].sum())
    chars = sum(len(ex["messages"][-1]["content"]) for ex in val)
    print(f"masked loss on {person[0]}'s {len(val)} held-out replies ({tokens} scored tokens):")
    print(f"  base                      {base_loss:.4f}")
    print(f"  fine-tuned on everyone    {ev:.4f}   ({res_everyone['wall_s']:.0f} s)")
    print(f"  fine-tuned on {person[0]:<11} {pe:.4f}   ({res_persona['wall_s']:.0f} s)")
    best = pe < ev and pe < base_loss
    print(f"persona margin: {ev - pe:+.4f} nats/token vs everyone, {base_loss - pe:+.4f} vs base; "
          f"target (persona best): {'met' if best else 'missed'}")  # fmt: skip
    margin, lo, hi = paired_bootstrap(theirs, ours)
    wins = int((theirs[:, 0] / theirs[:, 1] > ours[:, 0] / ours[:, 1]).sum())
    print(f"paired bootstrap over the {len(ours)} replies: margin {margin:+.4f} nats/token, 95 % interval "
          f"[{lo:+.4f}, {hi:+.4f}]; the persona model is better on {wins} of {len(ours)} replies")  # fmt: skip
    row = {"person": person, "train": len(train), "val": len(val), "val_tokens": tokens, "val_chars": chars,
           "everyone_examples": len(everyone), "steps": a.steps, "base": base_loss, "everyone": ev, "persona": pe,
           "target_met": best, "margin_ci95": [lo, hi], "replies_won": wins}  # fmt: skip
    runs = {"everyone": work / f"ft-everyone-{tag}", "persona": work / f"ft-persona-{tag}"}
    then = None
    if a.then_steps:  # everyone's replies first, then the person's: the general dialogue, then the voice
        finetune(work / f"ft-everyone-{tag}", work / f"ft-then-{tag}", [str(folder)], [], a, a.then_steps)
        then = per_reply_losses(work / f"ft-then-{tag}", val, a.score_dtype)
        runs["then"] = work / f"ft-then-{tag}"
        tm, tlo, thi = paired_bootstrap(theirs, then)
        twins = int((theirs[:, 0] / theirs[:, 1] > then[:, 0] / then[:, 1]).sum())
        row.update(then=pooled(then), then_margin_ci95=[tlo, thi], then_replies_won=twins)
        print(f"  everyone, then {a.then_steps} steps on {person[0]}: {pooled(then):.4f}; margin over "
              f"everyone {tm:+.4f} [{tlo:+.4f}, {thi:+.4f}], better on {twins} of {len(then)} replies")  # fmt: skip
    control = None
    if (
        a.then_steps and a.control
    ):  # the same number of steps, all on everyone's replies: is it the person's data?
        steps = a.steps + a.then_steps
        everyone_files = [str(work / f"everyone-{tag}.jsonl")]
        res_ctrl = finetune(base, work / f"ft-control-{tag}", everyone_files, val_files, a, steps)
        control = per_reply_losses(work / f"ft-control-{tag}", val, a.score_dtype)
        runs["control"] = work / f"ft-control-{tag}"
        cm, clo, chi = paired_bootstrap(control, then)
        cwins = int((control[:, 0] / control[:, 1] > then[:, 0] / then[:, 1]).sum())
        row.update(control=pooled(control), then_vs_control=cm, then_vs_control_ci95=[clo, chi],
                   then_vs_control_won=cwins)  # fmt: skip
        print(f"  everyone for {steps} steps (control): {pooled(control):.4f} ({res_ctrl['wall_s']:.0f} s); everyone "
              f"then {person[0]} against it: {cm:+.4f} [{clo:+.4f}, {chi:+.4f}], better on {cwins} of {len(then)}")  # fmt: skip
    row["nats_per_char"] = {name: float(x[:, 0].sum() / chars) for name, x in
                            (("base", base_rows), ("everyone", theirs), ("persona", ours), ("then", then),
                             ("control", control)) if x is not None}  # fmt: skip
    print("  nats per reply character: " + ", ".join(f"{k} {v:.4f}" for k, v in row["nats_per_char"].items()))
    if a.style_replies:
        chosen = {k: v for k, v in {"base": base, **runs}.items() if k in a.style_models}
        row["style"] = style_rates(chosen, folder, val, a)
    print(json.dumps(row))
    for run in ("everyone", "persona", "then", "control"):
        shutil.rmtree(
            work / f"ft-{run}-{tag}", ignore_errors=True
        )  # checkpoints per person: scored, not needed
    return row, ours, theirs, then, control


if __name__ == "__main__":
    main()
