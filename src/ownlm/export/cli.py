"""``ownlm export RUN --to hf|gguf --out PATH``: check, load, write.

Everything that can be refused is refused before a file is written: a missing run, an option the target
cannot express, a checkpoint without a tokenizer, an ``--out`` that holds something else. A folder follows the
one output rule (``io.prepare_output``): a new or empty folder, or an earlier export, which is replaced (the
files it listed in its marker that this export does not write are removed; nothing else in it is touched);
``--force`` empties a folder another ownlm command made; a folder ownlm did not make is refused.

    ownlm export runs/mymodel --to hf --out export/mymodel-hf
    ownlm export runs/mymodel --to gguf --out export/           # export/mymodel-f16.gguf
    ownlm export runs/mymodel --to gguf --out mymodel-q8.gguf --dtype q8_0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.export import block_kind
from ownlm.export.gguf import write_gguf
from ownlm.export.hf import HF_FILES, write_hf
from ownlm.io import mark_output, output_marker, prepare_output, removed_on_failure
from ownlm.model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint
from ownlm.model.gpt import GPTConfig
from ownlm.tokenizer.chat import load_template

KIND = "ownlm-export"  # the output kind in the folder's marker (``io.mark_output``), with the files written


@dataclass
class ExportConfig:
    run: str = opt(positional=True, help="run folder (its newest checkpoint) or a checkpoint folder")
    to: Literal["hf", "gguf"] = opt(
        help="hf: a Hugging Face transformers folder; gguf: a llama.cpp GGUF file"
    )
    out: str = opt(help="output folder (must be empty or an earlier export); for gguf also a file NAME.gguf")
    dtype: Literal["auto", "f32", "f16", "bf16", "q8_0"] = opt(
        "auto",
        help="weight type: hf f32 (auto)/f16/bf16; gguf f16 (auto)/f32/q8_0 (norms and biases stay f32)",
    )
    force: bool = opt(
        False,
        help="replace a folder that another ownlm command made (an earlier export is replaced anyway; a folder "
        "ownlm did not make, never); for a .gguf file: replace an earlier GGUF",
    )


def plan_folder(out: Path, files: list[str], force: bool, inputs=()) -> list[str]:
    """Check ``out`` by the one output rule (``io.prepare_output``); return the files of an earlier export there
    that this one does not write (to delete: an f16 GGUF replaced by a q8_0 one leaves no stale copy)."""
    prepare_output(out, kind=KIND, folder=True, force=force, inputs=inputs)
    earlier = output_marker(out).get("files", []) if out.is_dir() else []
    mine = [name for name in earlier if isinstance(name, str) and name == Path(name).name]  # names, not paths
    return [name for name in mine if name not in files and (out / name).is_file()]


def plan_file(path: Path, force: bool, inputs=()) -> None:
    """A ``.gguf`` file named by --out: the output rule's checks (not a device, not an input), and, as a model
    file is large and often named by hand, replaced only with --force and only when it is a GGUF."""
    prepare_output(path, kind=KIND, folder=False, inputs=inputs)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a folder without the .gguf suffix or another file name")
    if path.exists():
        if not force:
            raise UserError(f"{path}: already exists; add --force to replace it")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{path}: --force only replaces a GGUF file, and this is not one")


def main(cfg: ExportConfig) -> int:
    folder = resolve_checkpoint(cfg.run)
    target = {"hf": "Hugging Face", "gguf": "GGUF"}[cfg.to]
    block_kind(GPTConfig.from_dict(read_checkpoint_config(folder)["model"]), target)  # before loading weights
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder}: has no tokenizer.json; an export needs the model's tokenizer beside it")
    dtype = cfg.dtype if cfg.dtype != "auto" else {"hf": "f32", "gguf": "f16"}[cfg.to]
    allowed = {"hf": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "q8_0")}[cfg.to]
    if dtype not in allowed:
        raise UserError(
            f"--dtype {dtype} is not available for --to {cfg.to} (choose one of {', '.join(allowed)})"
        )
    if cfg.to == "gguf":
        try:
            import gguf  # noqa: F401  (optional: ownlm[export])
        except ImportError:
            raise UserError("export --to gguf needs the gguf package: pip install 'ownlm[export]'") from None
    run_name = Path(os.path.abspath(cfg.run)).name
    out = Path(cfg.out)
    to_file = cfg.to == "gguf" and out.suffix.lower() == ".gguf"
    if cfg.to == "gguf" and not to_file and out.is_dir() and any(out.iterdir()) and not output_marker(out):
        # a folder of the user's (export/ beside an earlier export/mymodel-hf): one file goes into it, the
        # folder is not taken over; the file is replaced only as --out NAME.gguf would be
        out, to_file = out / f"{run_name}-{dtype}.gguf", True
    stale: list[str] = []
    if to_file:
        plan_file(out, cfg.force, [folder])
        files = [out.name]
    else:
        files = [f"{run_name}-{dtype}.gguf"] if cfg.to == "gguf" else list(HF_FILES)
        stale = plan_folder(out, files, cfg.force, [folder])

    model, tokenizer, _ = load_model(folder)
    model.float()
    template = load_template(folder)
    with removed_on_failure(out):  # a full disk or an interrupt leaves no half-written new folder behind
        where = _write(cfg, model, tokenizer, template, out, to_file, files, stale, folder, dtype, run_name)
    n = model.num_params(non_embedding=False)
    arch = block_kind(model.config, target)
    print(f"exported {folder} ({n:,} parameters, {arch} block{', chat template' if template else ''}) "
          f"-> {where} ({target}, {dtype})")  # fmt: skip
    return 0


def _write(cfg, model, tokenizer, template, out, to_file, files, stale, folder, dtype, run_name) -> Path:
    if to_file:
        out.parent.mkdir(parents=True, exist_ok=True)
    else:  # the list of what we write goes first, so an interrupted export is still known as one
        out.mkdir(parents=True, exist_ok=True)
        for name in stale:
            (out / name).unlink()
        mark_output(out, KIND, to=cfg.to, dtype=dtype, source=str(folder), files=files)
    if cfg.to == "hf":
        write_hf(model, tokenizer, out, template, dtype)
        where = out
    else:
        where = write_gguf(model, tokenizer, out if to_file else out / files[0], template, dtype, run_name)
    return where
