"""A run folder: the step folders one training run writes, the pointers that name them, its lock, pruning and
the state a resumed run continues from. The one place that reads or writes ``latest``, ``best`` and ``last``.

    RUN/step_000500/      a model folder (``ownlm.model.checkpoint``) + what training adds (``state.json``, ...)
    RUN/latest            "step_000500": the step a command that uses the run loads (written last)
    RUN/best              the saved step with the lowest validation loss, when evaluation gives one
    RUN/last              only after ``latest`` was pointed back at the best step (``finetune classify
                          --restore-best``): the newest step, the one training continues from
    RUN/.ownlm-lock       held while a command writes the run

A step folder is assembled under a hidden temp name and renamed into place, and ``latest`` is replaced only
after that, so a run killed at any instant (even ``kill -9``) leaves a complete checkpoint behind.

>>> run = RunFolder("runs/mine")
>>> run.step_folder(500).name
'step_000500'
>>> run.latest() is None  # nothing written yet
True
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ownlm.errors import UserError
from ownlm.io import (
    RunLock,
    clean_stale_temps,
    mark_output,
    prepare_output,
    read_json,
    write_json,
    write_text,
)

STATE = "state.json"
WEIGHTS = "model.safetensors"  # a step folder is complete when it holds its weights
STATE_FORMAT = "ownlm-train-state"
STATE_VERSION = 1
POINTERS = ("latest", "best", "last")


def step_name(step: int) -> str:
    return f"step_{step:06d}"


@dataclass
class RunState:
    """What ``state.json`` holds: everything a resumed run needs besides weights and optimiser moments.

    Written and read whole (``to_dict``/``from_dict``), so a field is added here once and both sides follow.
    Keys unknown to this version are kept in ``other`` and written back unchanged."""

    step: int = 0
    tokens_seen: int = 0
    data_position: int = 0  # micro-batches drawn so far (step x grad_accum)
    best_val_loss: float | None = None  # lowest validation loss seen
    best_saved_val_loss: float | None = (
        None  # lowest validation loss among saved steps (the `best` pointer's)
    )
    evals_since_best: int = 0  # evaluations since the validation loss last improved (--patience)
    elapsed_s: float = 0.0
    setup_s: float | None = None
    dtype: str | None = None
    warmup_steps: int | None = None  # fixed once known
    warmup_progress: float | None = None
    next_eval: int = 1
    window: dict | None = None  # the metrics window since the last evaluation
    world_size: int = 1
    run_config: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)  # generator states, base64 (``ownlm.train.checkpoint.rng_state``)
    rng_ranks: list | None = None  # every process' generator states (each draws its own dropout masks)
    other: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        other = d.pop("other")
        return {"format": STATE_FORMAT, "version": STATE_VERSION, **d, **other}

    @classmethod
    def from_dict(cls, d: dict, where: Path | str = STATE) -> RunState:
        if (
            not isinstance(d, dict)
            or d.get("format") != STATE_FORMAT
            or not isinstance(d.get("version"), int)
        ):
            raise UserError(f"{where}: not an ownlm training state")
        if d["version"] > STATE_VERSION:
            raise UserError(f"{where}: training state version {d['version']} is newer than this ownlm")
        known = {f.name for f in fields(cls)} - {"other"}
        values = {k: v for k, v in d.items() if k in known and v is not None}
        other = {k: v for k, v in d.items() if k not in known and k not in ("format", "version")}
        try:
            return cls(**values, other=other)
        except TypeError as e:
            raise UserError(f"{where}: damaged training state ({e})") from None


class RunFolder:
    """One training run's folder (see the module docstring).

    >>> RunFolder("runs/x").has_checkpoint()
    False
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ pointers
    def step_folder(self, step: int) -> Path:
        return self.path / step_name(step)

    def pointer(self, name: str) -> str | None:
        """The step folder's name that ``latest``, ``best`` or ``last`` holds, or None when there is no such file."""
        assert name in POINTERS, name
        p = self.path / name
        return p.read_text(encoding="utf-8").strip() if p.is_file() else None

    def _pointed(self, name: str) -> Path | None:
        step = self.pointer(name)
        return self.path / step if step is not None else None

    def has_checkpoint(self) -> bool:
        return (self.path / "latest").is_file()

    def latest(self) -> Path | None:
        """The step folder ``latest`` names (what commands that use the run load), unchecked; None if none."""
        return self._pointed("latest")

    def checkpoint(self) -> Path:
        """The step folder ``latest`` names, checked to hold weights (a ``UserError`` says what is wrong)."""
        name = self.pointer("latest")
        if name is None:
            raise UserError(f"{self.path}: neither a checkpoint ({WEIGHTS}) nor a run folder (a 'latest' file) — "
                            "was training started with --out here?")  # fmt: skip
        step = self.path / name
        if not name or not (step / WEIGHTS).is_file():
            raise UserError(f"{self.path / 'latest'} names '{name}', but {step / WEIGHTS} does not exist")
        return step

    def best(self) -> Path | None:
        """The saved step with the lowest validation loss, if evaluation gave one."""
        return self._pointed("best")

    def newest(self) -> Path | None:
        """The step training continues from: ``last`` when ``latest`` was pointed back at the best step."""
        return self._pointed("last") or self.latest()

    def point_latest_at(self, folder: Path) -> None:
        """Make ``latest`` name ``folder`` (one of this run's steps), remembering the newest step in ``last``."""
        newest = self.pointer("latest")
        if folder.name != newest:
            if self.pointer("last") is None:
                write_text(self.path / "last", newest + "\n")
            write_text(self.path / "latest", folder.name + "\n")

    # ------------------------------------------------------------------ writing a step
    def write_step(
        self, step: int, fill: Callable[[Path], None], *, best: bool = False, keep: int = 2
    ) -> Path:
        """Write step folder ``step``: ``fill(folder)`` writes the files into a hidden temp folder, which is
        renamed into place; then ``best`` (when ``best``) and ``latest`` name it. Keeps the newest ``keep``
        step folders (0 keeps all) and the one ``best`` names. Returns the step folder."""
        final = self.step_folder(step)
        tmp = self.path / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            fill(tmp)
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (after a resume): move the old one aside first
                old = self.path / f".{final.name}.old-{os.getpid()}"
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
            _fsync_dir(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if (
            best
        ):  # before `latest`: a kill between the two leaves state.json's best loss and its folder in step
            write_text(self.path / "best", final.name + "\n")
        if (self.path / "last").is_file():  # `latest` was pointed at the best model; this step is the newest
            write_text(self.path / "last", final.name + "\n")
        write_text(self.path / "latest", final.name + "\n")
        (self.path / "last").unlink(missing_ok=True)
        self.prune(keep, final)
        return final

    def prune(self, keep: int, current: Path) -> None:
        """Delete all but the newest ``keep`` step folders (0 keeps all), never ``current`` nor the best."""
        if keep <= 0:
            return
        kept = {current, self.best()} - {None}
        steps = sorted(p for p in self.path.glob("step_*") if p.is_dir() and p not in kept)
        for p in steps[: max(0, len(steps) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------ resume state
    @staticmethod
    def write_state(folder: Path, state: RunState) -> None:
        write_json(Path(folder) / STATE, state.to_dict())

    def read_state(self) -> tuple[Path, RunState]:
        """``(step folder, RunState)`` of the step training continues from (``newest``)."""
        folder = self._pointed("last") or self.checkpoint()
        return folder, read_state(folder)

    @contextlib.contextmanager
    def claim(self, resume: bool, kind: str = "ownlm-run", master: bool = True, inputs=()):
        """Claim the folder for the length of a training command: ``--resume`` needs a checkpoint here; a new
        run needs a fresh folder, an empty one, or one an earlier attempt of a run made (no checkpoint yet) —
        never a folder with other files, and never an earlier run's checkpoints. The folder is locked (a second
        command on the same ``--out`` stops with a clear error), and hidden temp files that a killed run left
        behind are cleaned up. Only process 0 of a DDP run does any of this. Yields ``(step folder, RunState)``
        of the checkpoint to resume from, or None."""
        out = self.path
        if resume and not self.has_checkpoint():
            raise UserError(f"--resume: {out} has no checkpoint to resume from (no {out / 'latest'})")
        if not resume and self.has_checkpoint():
            raise UserError(
                f"{out} already holds a run: add --resume to continue it, or choose another --out"
            )
        if not master:
            yield self.read_state() if resume else None
            return
        if not resume:
            prepare_output(out, kind=kind, folder=True, inputs=inputs)
        with RunLock(out) as lock:
            clean_stale_temps(out)
            try:
                yield self.read_state() if resume else None
            finally:  # a run that wrote something is marked as ownlm's; one that failed first leaves nothing
                if any(p.name != lock.path.name for p in out.iterdir()):
                    mark_output(out, kind)


def read_state(folder: Path) -> RunState:
    """The ``RunState`` of one step folder."""
    folder = Path(folder)
    if not (folder / STATE).is_file():
        raise UserError(f"{folder}: a model without training state ({STATE}); it cannot be resumed")
    return RunState.from_dict(read_json(folder / STATE, what="training state"), folder / STATE)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
