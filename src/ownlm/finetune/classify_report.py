"""What a classification run reports: the confusion matrix and the scores read from it, the plots, and
``DIR/report.md`` + ``DIR/metrics.json``.

Scores follow the usual definitions (those of scikit-learn, which the tests compare against): per class,
precision = TP / (TP + FP) and recall = TP / (TP + FN), 0 when the denominator is 0; F1 their harmonic mean;
macro-F1 the unweighted mean of the classes' F1, so a rare class counts as much as a common one.

>>> conf = confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], 2)
>>> conf.tolist(), round(scores(conf, ["ham", "spam"])["macro_f1"], 4)
([[1, 1], [0, 2]], 0.7333)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(y_true, y_pred, n_labels: int) -> np.ndarray:
    """(n_labels, n_labels) counts: row = true label, column = predicted label."""
    conf = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(conf, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return conf


def scores(conf: np.ndarray, labels: list[str]) -> dict:
    """``{"accuracy", "macro_f1", "per_class": {label: {"precision", "recall", "f1", "support"}}}``."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    predicted, actual = conf.sum(0), conf.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = conf.sum()
    per_class = {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(actual[i])} for i, lab in enumerate(labels)}  # fmt: skip
    return {"accuracy": float(tp.sum() / total) if total else 0.0, "macro_f1": float(f1.mean()),
            "per_class": per_class}  # fmt: skip


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, plt, path: Path) -> Path:
    from ownlm.io import atomic_write

    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def plot_confusion(conf: np.ndarray, labels: list[str], path) -> Path | None:
    """``confusion.png``: the test split's confusion matrix with counts in the cells (matplotlib, if installed)."""
    plt = _pyplot()
    if plt is None:
        return None
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2), dpi=100)
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = conf.max() if conf.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(conf[i, j]),
                ha="center",
                va="center",
                color="white" if conf[i, j] > top / 2 else "black",
            )
    return _save(fig, plt, Path(path))


def plot_curves(records: list[dict], path) -> Path | None:
    """``curves.png``: loss and accuracy (train and validation) against step."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    panels = ((("train_loss", "train"), ("val_loss", "validation")),
              (("train_accuracy", "train"), ("val_accuracy", "validation")))  # fmt: skip
    for ax, keys, name in zip(axes, panels, ("loss", "accuracy")):
        for key, label in keys:
            pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, plt, Path(path))


def write_report(out: Path, cfg, result: dict) -> Path:
    """``DIR/report.md`` from the run's ``metrics.json`` content."""
    from ownlm.io import write_text

    labels, test, data = result["labels"], result["test"], result["data"]

    def pct(x):
        return f"{100 * x:.2f} %" if isinstance(x, int | float) else "–"

    how = (
        f"LoRA rank {cfg.adapt.lora_rank}"
        if cfg.adapt.lora_rank
        else f"train layers: {cfg.adapt.train_layers}"
    )
    lines = [f"# {out.name}: a classifier fine-tuned from `{cfg.base}`", "",
             f"Data `{cfg.data}`: {data['read']:,} rows; labels {', '.join(f'`{x}`' for x in labels)}; balance "
             f"`{cfg.balance}`; split {data['train']:,} train / {data['val']:,} validation / {data['test']:,} test "
             f"({data['split']}). {data['truncated']:,} text{'' if data['truncated'] == 1 else 's'} longer than {data['max_length']} tokens cut "
             f"({'keeping the start' if cfg.truncate == 'right' else 'keeping the end'}).", "",
             f"Pooling `{cfg.pool}`; {how}; {result['steps']:,} steps in {result['train_seconds']:.0f} s"
             f"{' (stopped early)' if result.get('stopped_early') else ''}; the model kept is step "
             f"{result.get('checkpoint_step', result['steps']):,}"
             f"{' (the lowest validation loss)' if cfg.restore_best else ' (the last)'}.", "",
             "| test split | value |", "|---|---|",
             f"| accuracy | {pct(test['accuracy'])} |", f"| macro-F1 | {pct(test['macro_f1'])} |",
             f"| validation accuracy (the kept step) | {pct(result.get('val_accuracy'))} |", "",
             "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]  # fmt: skip
    for lab, s in test["per_class"].items():
        lines.append(
            f"| `{lab}` | {pct(s['precision'])} | {pct(s['recall'])} | {pct(s['f1'])} | {s['support']} |"
        )
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", "",
              "| | " + " | ".join(f"`{x}`" for x in labels) + " |", "|---" * (len(labels) + 1) + "|"]  # fmt: skip
    for lab, row in zip(labels, test["confusion"]):
        lines.append(f"| `{lab}` | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "![confusion matrix](confusion.png)", "", "![loss and accuracy](curves.png)", ""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
