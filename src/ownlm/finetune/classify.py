"""``ownlm finetune classify``: turn a pretrained GPT into a classifier; ``ownlm classify``: use it.

    ownlm finetune classify runs/base --data sms.tsv --text-field 2 --label-field 1 --balance downsample \\
        --out runs/spam --max-minutes 10
    ownlm classify runs/spam "WINNER!! Claim your prize"          # -> spam   ham=0.020  spam=0.980
    ownlm classify runs/spam --file new.csv --out labelled.csv     # adds the columns predicted, predicted_p

Data: CSV, TSV (with or without a header; columns by name or by number from 1) or JSONL/JSON records, read by
the one table reader (``ownlm.extract.tabular``). Labels are any strings; the label set is saved with every
checkpoint (``labels.json``). Without ``--val-data``/``--test-data`` the rows are shuffled with ``--seed`` and
cut into train/validation/test by ``--val-fraction``/``--test-fraction`` (70/10/20 by default, the protocol of
Raschka's *Build a Large Language Model (From Scratch)*, ch. 6). ``--balance downsample`` first keeps as many
rows of each label as the rarest has (given files: the training file only); ``weights`` scales each example's
loss by n / (labels x n_label) instead.

Texts longer than ``--max-length`` tokens (default: the context) are cut by ``--truncate``: ``right`` keeps
the start, ``left`` the end; they are counted in ``DIR/data.json``. The head reads the last real token
(``--pool last``) or the mean of the real tokens (``--pool mean``); see ``ownlm.finetune.classifier``.

Every evaluation scores the whole validation split (loss, accuracy, macro-F1) and a sample of the training
split (accuracy); ``--patience N`` stops when validation loss has not improved for N evaluations. At the end
the run keeps the checkpoint with the lowest validation loss (``--restore-best``, the default: ``latest`` is
pointed at it, so ``ownlm classify DIR``, export and serving use it; ``--no-restore-best`` keeps the last step),
and the test split is scored with that model: ``DIR/metrics.json`` (``test_accuracy``, ``test_macro_f1``, per-class precision and
recall, the confusion matrix), ``confusion.png``, ``curves.png`` and ``DIR/report.md``.

Bad input stops before anything is written, with one line naming the file and row: a row without a text or a
label, one label only, a label that only the validation or test split has, a table whose rows do not split
into columns on its delimiter.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.extract.tabular import guess_field, resolve_field, sniff_delimiter
from ownlm.finetune.classify_data import cell, chain, open_records, parse_delimiter, prepare_splits
from ownlm.finetune.classify_report import plot_confusion, plot_curves, scores, write_report
from ownlm.finetune.common import frozen_autocast, load_base, store_frozen
from ownlm.io import atomic_write, iter_jsonl, prepare_output, write_json
from ownlm.model.adapt import AdaptConfig
from ownlm.model.checkpoint import load_model
from ownlm.model.run import RunFolder
from ownlm.train.config import TrainingConfig, fine_tuning_defaults
from ownlm.train.device import pick_device
from ownlm.train.driver import Prepared, Run, run_training
from ownlm.train.trainer import RunContext, Task

# a new head on trained weights: a moderate rate, batches of 16, an evaluation every tenth of the run
CLASSIFY_TRAINING = dict(lr=2e-4, min_lr=2e-5, batch_size=16, evals=10, eval_iters=10)


@dataclass(kw_only=True)
class ClassifyConfig:
    """Fine-tune a model to classify texts (a new output head over its last real token)."""

    base: str = opt(
        help="an ownlm run or checkpoint folder, or a folder from `ownlm import gpt2`", positional=True
    )
    data: str = opt(help="CSV, TSV or JSONL with a text and a label per row")
    out: str = opt(help="run folder for checkpoints, metrics.json, report.md and the plots")
    text_field: str | None = opt(
        None, help="column or key of the text (a name, or a number from 1; default: guessed)"
    )
    label_field: str | None = opt(
        None, help="column or key of the label (a name or number; default: guessed)"
    )
    header: Literal["auto", "yes", "no"] = opt("auto", help="CSV/TSV: is the first row a header?")
    delimiter: str = opt("auto", help="CSV/TSV delimiter: auto, or the character (use 'tab' for a tab)")
    val_data: str = opt("", help="validation rows (default: --val-fraction of --data)")
    test_data: str = opt("", help="test rows (default: --test-fraction of --data)")
    val_fraction: float = opt(
        0.1, help="share of --data for validation when --val-data is not given", bounds="[0, 1)"
    )
    test_fraction: float = opt(
        0.2, help="share of --data for the test when --test-data is not given", bounds="[0, 1)"
    )
    balance: Literal["none", "downsample", "weights"] = opt(
        "none", help="skewed labels: keep the rarest label's count of each, or weigh the loss by label"
    )
    pool: Literal["last", "mean"] = opt("last", help="what the head reads: the last real token or their mean")
    max_length: int = opt(0, help="longest text in tokens (0: the model's context length)")
    truncate: Literal["right", "left"] = opt(
        "right", help="texts longer than --max-length: right keeps the start, left keeps the end"
    )
    patience: int = opt(0, help="stop when validation loss has not improved for N evaluations (0: never)")
    restore_best: bool = opt(
        True, help="end on the checkpoint with the lowest validation loss (else: the last step's)"
    )
    resume: bool = opt(False, help="continue the run in --out from its latest checkpoint")
    adapt: AdaptConfig = opt(
        AdaptConfig(), help="LoRA adapters (the new head always trains) or partial fine-tuning"
    )
    train: TrainingConfig = opt(
        fine_tuning_defaults(**CLASSIFY_TRAINING), help="budget, schedule, evaluation, machine"
    )


# ---------------------------------------------------------------------------------------------- batches


@dataclass
class Encoded:
    """Token ids and label indices of one split."""

    ids: list[list[int]]
    labels: np.ndarray  # int64
    truncated: int = 0


def encode_rows(rows: list[dict], tokenizer, labels: list[str], max_length: int, truncate: str) -> Encoded:
    from ownlm.finetune.classifier import encode_text

    index = {lab: i for i, lab in enumerate(labels)}
    ids, ys, cut = [], [], 0
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    for r in rows:
        x, was_cut = encode_text(tokenizer, r["text"], max_length, truncate)
        ids.append(x or [pad])
        ys.append(index[r["label"]])
        cut += was_cut
    return Encoded(ids, np.asarray(ys, dtype=np.int64), cut)


class ClassBatches:
    """Training batches: global batch ``i`` is a pure function of ``(seed, i)`` (an epoch is one shuffled pass;
    the last batch wraps around); each process keeps its slice of the global batch's rows."""

    def __init__(self, enc: Encoded, batch_size: int, pad_id: int, seed: int, rank: int = 0, world: int = 1):
        self.enc, self.B, self.pad_id, self.seed = enc, batch_size, pad_id, seed
        self.rank, self.world = rank, world
        self.per_epoch = math.ceil(len(enc.ids) / (batch_size * world))
        self._epoch, self._order = -1, None

    def batch(self, index: int) -> dict:
        from ownlm.finetune.classifier import pad_batch

        epoch, j = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            self._order, self._epoch = (
                np.random.default_rng([self.seed, 23, epoch]).permutation(len(self.enc.ids)),
                epoch,
            )
        rows = self.B * self.world
        pick = [int(self._order[(j * rows + k) % len(self._order)]) for k in range(rows)]
        mine = pick[self.rank * self.B : (self.rank + 1) * self.B]
        out = pad_batch([self.enc.ids[k] for k in mine], self.pad_id)
        out["labels"] = self.enc.labels[mine]
        return out


def score_split(
    model, enc: Encoded, ctx: RunContext, batch_size: int, pad_id: int, n_labels: int, limit: int = 0
):
    """``(sum of cross-entropies, confusion matrix)`` over ``enc`` (its first ``limit`` rows when given), in
    length order; each process scores its share and the results are added over processes."""
    import torch

    from ownlm.finetune.classifier import pad_batch

    n = min(len(enc.ids), limit) if limit else len(enc.ids)
    order = sorted(range(n), key=lambda k: len(enc.ids[k]))
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    sums = torch.zeros(1 + n_labels * n_labels, dtype=ctx.sum_dtype, device=ctx.device)
    with torch.no_grad(), ctx.autocast():
        for b in batches[ctx.rank :: ctx.world]:
            batch = pad_batch([enc.ids[k] for k in b], pad_id)
            batch["labels"] = enc.labels[b]
            batch = ctx.to_device(batch)
            logits, loss = model(batch["input_ids"], batch["lengths"], batch["labels"])
            sums[0] += loss.to(sums.dtype)
            cell = batch["labels"] * n_labels + logits.argmax(-1)
            sums[1:] += torch.bincount(cell, minlength=n_labels * n_labels).to(sums.dtype)
    ctx.all_reduce(sums)
    return sums[0].item(), sums[1:].long().cpu().numpy().reshape(n_labels, n_labels)


class ClassifyTask(Task):
    """Cross-entropy of the head's logits against the labels (each row one loss item)."""

    loss_per_token = False  # a loss per example, not per token: no perplexity

    def __init__(self, train: ClassBatches, val: Encoded, labels: list[str], *, weights=None, eval_rows: int = 0,
                 max_length: int = 0, truncate: str = "right"):  # fmt: skip
        self.train, self.val, self.labels, self.weights = train, val, labels, weights
        self.eval_rows, self.max_length, self.truncate = eval_rows, max_length, truncate
        self._w = None

    def batch(self, index: int) -> dict:
        return self.train.batch(index)

    def count(self, batch: dict) -> int:
        return len(batch["labels"])

    def tokens(self, batch: dict) -> int:
        return int(batch["lengths"].sum())

    def loss(self, model, batch: dict):
        import torch

        if self.weights is not None and (self._w is None or self._w.device != batch["labels"].device):
            self._w = torch.tensor(self.weights, dtype=torch.float32, device=batch["labels"].device)
        return model(batch["input_ids"], batch["lengths"], batch["labels"], weight=self._w)[1]

    def evaluate(self, model, ctx: RunContext) -> dict:

        k, B, pad = len(self.labels), self.train.B, self.train.pad_id
        loss, conf = score_split(model, self.val, ctx, B, pad, k)
        s = scores(conf, self.labels)
        _, train_conf = score_split(model, self.train.enc, ctx, B, pad, k, limit=self.eval_rows)
        return {"val_loss": loss / max(len(self.val.ids), 1), "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"],
                "train_accuracy": scores(train_conf, self.labels)["accuracy"]}  # fmt: skip

    def on_eval(self, model, step: int, record: dict) -> None:
        from tqdm import tqdm

        tqdm.write(f"  accuracy: train {100 * record['train_accuracy']:.1f} %, validation "
                   f"{100 * record['val_accuracy']:.1f} % (macro-F1 {100 * record['val_macro_f1']:.1f} %)")  # fmt: skip

    def save_extra(self, folder: Path) -> None:
        from ownlm.finetune.classifier import save_labels

        save_labels(folder, self.labels, self.max_length, self.truncate)


def class_weights(labels: np.ndarray, n_labels: int) -> list[float]:
    """n / (n_labels x n_label) per label: each label's examples weigh as much in all as any other label's.

    >>> class_weights(np.array([0, 0, 0, 1]), 2)
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(labels, minlength=n_labels)
    return [float(len(labels) / (n_labels * c)) if c else 0.0 for c in counts]


# ---------------------------------------------------------------------------------------------- the command


def _check(cfg: ClassifyConfig) -> None:
    cfg.adapt.check()
    cfg.train.dtype = cfg.adapt.training_dtype(cfg.train.dtype)
    if not cfg.data:
        raise UserError(
            "give the labelled data: --data FILE (CSV, TSV or JSONL with a text and a label per row)"
        )
    if (
        not 0 <= cfg.val_fraction < 1
        or not 0 <= cfg.test_fraction < 1
        or cfg.val_fraction + cfg.test_fraction >= 1
    ):
        raise UserError(
            "--val-fraction and --test-fraction must be in [0, 1) and leave some rows for training"
        )
    if cfg.max_length < 0 or cfg.patience < 0:
        raise UserError("--max-length and --patience must be >= 0")
    parse_delimiter(cfg.delimiter)


def adapt_classifier(model, cfg: ClassifyConfig) -> None:
    """LoRA on the trunk or its last blocks only, as the flags ask; the new head always trains, and the
    trunk's unused language-model head never does."""
    from ownlm.model.lora import adapt_model  # torch: not at `--help`

    if cfg.adapt.lora_rank:
        adapt_model(model, cfg.adapt)
    elif cfg.adapt.train_layers != "all":
        adapt_model(model.gpt, cfg.adapt)
        model.gpt.lm_head.requires_grad_(False)  # tied: the token embedding, which partial training leaves be
    else:
        model.gpt.lm_head.requires_grad_(model.gpt.config.tie_embeddings)
    model.score.requires_grad_(True)


def main(cfg: ClassifyConfig) -> int:
    cfg.train.check()
    _check(cfg)
    splits = prepare_splits(cfg)  # bad data stops here, before the run folder is touched
    inputs = [cfg.base, cfg.data] + [p for p in (cfg.val_data, cfg.test_data) if p]
    return run_training(cfg, lambda run: make_task(cfg, run, splits), inputs=inputs)


def make_task(cfg: ClassifyConfig, run: Run, splits) -> Prepared:
    """The base with a new head (or the resumed classifier), the rows encoded, and the test scores at the end."""
    import torch  # torch and the model: imported when the run starts, not at `ownlm finetune classify --help`

    from ownlm.finetune.classifier import GPTClassifier, read_labels
    from ownlm.model.lora import trainable_summary

    tc, resume, rank, world = cfg.train, run.resume, run.rank, run.world
    train_rows, val_rows, test_rows, labels, info = splits
    kinds = ("classifier",) if resume else ("lm", "lm+lora")
    model, tok, _ = load_base(cfg.base, run.folder, kinds=kinds)
    block = model.config.block_size
    max_len = min(cfg.max_length or block, block)
    enc = {name: encode_rows(rows, tok, labels, max_len, cfg.truncate)
           for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}  # fmt: skip
    pad_id = tok.eot_id if tok.eot_id is not None else 0
    torch.manual_seed(tc.seed)  # the head's (and LoRA's) random start: the same in every process and run
    if resume:
        if read_labels(run.folder)["labels"] != labels:
            raise UserError(f"{run.folder}: the run was trained on other labels than --data has now")
        if cfg.adapt.lora_rank:  # the adapters came back with the checkpoint, the rest frozen
            model.score.requires_grad_(True)
        else:
            adapt_classifier(model, cfg)  # the same parameters train as before the interruption
    else:
        model = GPTClassifier(model, len(labels), cfg.pool)
        adapt_classifier(model, cfg)
    store_frozen(model, cfg.adapt.base_dtype)  # the new head and the adapters stay fp32
    model.train()
    batches = ClassBatches(enc["train"], tc.batch_size, pad_id, tc.seed, rank, world)
    per_epoch = math.ceil(batches.per_epoch / tc.grad_accum)
    weights = class_weights(enc["train"].labels, len(labels)) if cfg.balance == "weights" else None
    counts = {name: int(np.bincount(e.labels, minlength=len(labels)).sum()) for name, e in enc.items()}
    info.update(counts, truncated=sum(e.truncated for e in enc.values()), max_length=max_len,
                per_label={name: dict(zip(labels, np.bincount(e.labels, minlength=len(labels)).tolist()))
                           for name, e in enc.items()}, class_weights=weights, steps_per_epoch=per_epoch)  # fmt: skip
    announce = (f"classify: {counts['train']:,} train / {counts['val']:,} validation / {counts['test']:,} test "
                f"rows, labels {', '.join(labels)}; {info['truncated']} cut to {max_len} tokens; {per_epoch} "
                f"steps per epoch; {trainable_summary(model)}")  # fmt: skip
    task = ClassifyTask(batches, enc["val"], labels, weights=weights, eval_rows=tc.eval_iters * tc.batch_size,
                        max_length=max_len, truncate=cfg.truncate)  # fmt: skip

    def finish(summary: dict) -> None:
        _finish(
            cfg, run.out, model, enc["test"], labels, pad_id, run.device, summary, summary["seconds"], info
        )

    return Prepared(model, task, tok, steps_per_epoch=per_epoch, data=info, announce=lambda: announce,
                    finish=finish, flops_seq_len=max_len, patience=cfg.patience)  # fmt: skip


def _finish(cfg, out: Path, model, test: Encoded, labels, pad_id, device, summary, seconds, info) -> None:

    best = summary.get("best_checkpoint")
    if cfg.restore_best and best and Path(best) != Path(summary["checkpoint"]):
        model = restore_checkpoint(out, Path(best), device)
        print(f"restore-best: {out / 'latest'} now names {Path(best).name}, the saved checkpoint with the lowest "
              f"validation loss ({summary['best_saved_val_loss']:.4f}); the last step's stays in "
              f"{summary['checkpoint']} (--resume continues from it)")  # fmt: skip
        summary = {**summary, "checkpoint": best}
    model.eval()
    with frozen_autocast(model):  # a base kept in bf16 (--base-dtype) multiplies under bf16 autocast
        _, conf = score_split(
            model, test, RunContext(device, "fp32"), cfg.train.batch_size, pad_id, len(labels)
        )
    test_scores = scores(conf, labels)
    records = [r for _, r in iter_jsonl(out / "metrics.jsonl", errors="skip") if isinstance(r, dict)]
    kept_step = int(Path(summary["checkpoint"]).name.removeprefix("step_"))
    last = next((r for r in reversed(records) if r.get("step") == kept_step), records[-1] if records else {})
    result = {"test_accuracy": test_scores["accuracy"], "test_macro_f1": test_scores["macro_f1"],
              "val_accuracy": last.get("val_accuracy"), "val_macro_f1": last.get("val_macro_f1"),
              "labels": labels, "test": {**test_scores, "confusion": conf.tolist()}, "data": info,
              "steps": summary["step"], "train_seconds": seconds, "stopped_early": summary.get("stopped_early"),
              "checkpoint": summary["checkpoint"], "checkpoint_step": kept_step}  # fmt: skip
    write_json(out / "metrics.json", result)
    plot_confusion(conf, labels, out / "confusion.png")
    plot_curves(records, out / "curves.png")
    write_report(out, cfg, result)
    print(f"done: test accuracy {100 * test_scores['accuracy']:.2f} %, macro-F1 {100 * test_scores['macro_f1']:.2f} "
          f"%; checkpoint {summary['checkpoint']}; report {out / 'report.md'}")  # fmt: skip


def restore_checkpoint(out: Path, folder: Path, device):
    """Point the run's ``latest`` at ``folder`` (one of its step folders) and return that classifier. The
    newest step is named in ``last``, so ``--resume`` continues the run from where it stopped."""

    model, _, _ = load_model(folder, device=device, kinds=("classifier",))
    RunFolder(out).point_latest_at(folder)
    return model


# ---------------------------------------------------------------------------------------------- ownlm classify


@dataclass(kw_only=True)
class PredictConfig:
    """Label texts with a classifier trained by `ownlm finetune classify`."""

    run: str = opt(help="a classifier run or checkpoint folder", positional=True)
    text: list[str] = opt([], help="texts to classify (each printed as: label, then every label's probability)",
                          positional=True)  # fmt: skip
    file: str = opt("", help="classify every row of this CSV/TSV/JSONL instead (needs --out)")
    out: str = opt("", help="with --file: the file to write, the input's rows plus the new columns")
    text_field: str | None = opt(
        None, help="with --file: the text's column or key (name or number; default: guessed)"
    )
    header: Literal["auto", "yes", "no"] = opt("auto", help="with --file: is the first row a header?")
    delimiter: str = opt("auto", help="with --file: CSV/TSV delimiter (auto, tab, or the character)")
    column: str = opt("predicted", help="name of the new column (its probability goes in COLUMN_p)")
    batch_size: int = opt(32, help="texts per forward pass", bounds="[1, inf)")
    device: Literal["auto", "cpu", "cuda", "mps"] = opt("auto", help="where to run the model")


def predict_main(cfg: PredictConfig) -> int:
    from ownlm.finetune.classifier import Classifier

    if bool(cfg.file) == bool(cfg.text):
        raise UserError("give texts to classify, or --file IN --out OUT (not both)")
    if cfg.file and not cfg.out:
        raise UserError("--file needs --out: the file to write with the new column")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    clf = Classifier.load(cfg.run, device=pick_device(cfg.device))
    if cfg.text:
        for p in clf.predict_proba(cfg.text, cfg.batch_size):
            probs = "  ".join(f"{lab}={q:.3f}" for lab, q in zip(clf.labels, p))
            print(f"{clf.labels[int(p.argmax())]}\t{probs}")
        return 0
    n = classify_file(clf, cfg)
    print(f"classified {n:,} rows -> {cfg.out}", file=sys.stderr)
    return 0


def classify_file(clf, cfg: PredictConfig) -> int:
    """Stream ``cfg.file`` through ``clf`` into ``cfg.out`` (written whole or not at all); returns the rows."""
    import csv

    from tqdm import tqdm

    out = prepare_output(cfg.out, kind="ownlm-classified", folder=False, inputs=[cfg.file])
    fields, records = open_records(cfg.file, cfg.header, cfg.delimiter, min_columns=1)
    head = []
    for item in records:
        head.append(item)
        if len(head) >= 200:
            break
    sample = [r for _, r in head]
    keys = fields or sorted({k for r in sample if isinstance(r, dict) for k in r})
    field = resolve_field(keys, cfg.text_field) if cfg.text_field else guess_field(sample)
    if field is None:
        raise UserError(
            f"{cfg.file}: no text field {cfg.text_field or ''} (fields: {', '.join(keys[:20])}); give --text-field"
        )
    is_json = fields is None
    p_col = f"{cfg.column}_p"
    n = 0
    with atomic_write(out) as f, tqdm(unit=" rows", desc="classify", disable=not sys.stderr.isatty()) as bar:
        writer = None
        if not is_json:
            delim = parse_delimiter(cfg.delimiter) or _table_delimiter(cfg.file)
            writer = csv.writer(f, delimiter=delim, lineterminator="\n")
            if cfg.header == "yes" or (cfg.header == "auto" and _has_names(fields)):
                writer.writerow(list(fields) + [cfg.column, p_col])
        chunk: list = []

        def flush():
            texts = []
            for line, rec in chunk:
                t = cell(rec, field)
                if t is None:
                    raise UserError(f"{cfg.file}:{line}: no text in field '{field}' (nothing was written)")
                texts.append(t)
            probs = clf.predict_proba(texts, cfg.batch_size)
            for (_, rec), p in zip(chunk, probs):
                lab, q = clf.labels[int(p.argmax())], round(float(p.max()), 4)
                if is_json:
                    f.write(json.dumps({**rec, cfg.column: lab, p_col: q}, ensure_ascii=False) + "\n")
                else:
                    writer.writerow([rec.get(k, "") for k in fields] + [lab, q])
            bar.update(len(chunk))
            chunk.clear()

        for item in chain(head, records):
            chunk.append(item)
            n += 1
            if len(chunk) >= cfg.batch_size * 8:
                flush()
        if chunk:
            flush()
    return n


def _table_delimiter(path) -> str:

    with open(path, encoding="utf-8-sig", errors="replace", newline="\n") as f:
        return sniff_delimiter(f.read(65536), Path(path).suffix.lower())


def _has_names(fields: list[str]) -> bool:
    """Whether a table's fields came from a header row (a headerless table's are "1", "2", ...)."""
    return fields != [str(i + 1) for i in range(len(fields))]
