"""A run's record: ``metrics.jsonl`` (one JSON object per evaluation), ``samples.jsonl`` and ``loss.png``.

>>> log = MetricsLog("run")                       # doctest: +SKIP
>>> log.add({"step": 100, "train_loss": 2.1, "val_loss": 2.2})  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

from ownlm.io import atomic_write, iter_jsonl, write_jsonl


class MetricsLog:
    """Rewrites ``metrics.jsonl`` atomically after each record; on resume keeps only records up to the step
    the run continues from (later ones belonged to the lost part of the interrupted run)."""

    def __init__(self, run_dir, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.records: list[dict] = []
        if resume_step is not None and self.path.is_file():
            self.records = [r for _, r in iter_jsonl(self.path, errors="skip") if isinstance(r, dict)]
            self.records = [r for r in self.records if r.get("step", 0) <= resume_step]

    def add(self, record: dict) -> None:
        self.records.append(record)
        write_jsonl(self.path, self.records)

    def plot(self, path=None) -> Path | None:
        """``loss.png``: train and validation loss against step (matplotlib, if installed)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        path = Path(path) if path else self.path.with_name("loss.png")
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for key, label in (("train_loss", "train"), ("val_loss", "validation")):
            pts = [(r["step"], r[key]) for r in self.records if _finite(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        if ax.lines:  # a run too short for any record has nothing to label
            ax.legend()
        fig.tight_layout()
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png")
        plt.close(fig)
        return path


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
