"""``ownlm export RUN --to hf|gguf --out PATH``: check, load, write.

Everything that can be refused is refused before a file is written: a missing run, an option the target
cannot express, a checkpoint without a tokenizer, an ``--out`` that holds something else. ``--force`` replaces
an earlier export only: the folder must carry the ``ownlm-export.json`` list that every export writes first,
and hold nothing but the files it lists.

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
from ownlm.io import read_json, removed_on_failure, write_json

MARKER = "ownlm-export.json"
MARKER_FORMAT = "ownlm-export"


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
    force: bool = opt(False, help="overwrite an earlier ownlm export in --out (never other files)")


def chat_template(folder: Path):
    """The checkpoint's chat template (``ownlm.tokenizer.chat``), or None when it has none."""
    try:
        from ownlm.tokenizer.chat import load_template
    except ImportError:  # the chat-template module is not part of this ownlm
        return None
    return load_template(folder)


def plan_folder(out: Path, files: list[str], force: bool) -> list[str]:
    """Check that ``files`` may be written into ``out``; return the stale files of an earlier export to delete."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out must be a folder, found a file")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    if not force:
        raise UserError(f"{out}: folder is not empty ({', '.join(present[:3])}{', ...' if len(present) > 3 else ''});"
                        " choose an empty folder, or add --force to replace an earlier ownlm export")  # fmt: skip
    marker = read_json(out / MARKER, what="ownlm export list") if (out / MARKER).is_file() else None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise UserError(f"{out}: --force only replaces an ownlm export (no {MARKER} here); "
                        "choose another folder or move its files away")  # fmt: skip
    ours = set(marker.get("files", [])) | {MARKER}
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise UserError(f"{out}: holds files that ownlm export did not write ({', '.join(foreign[:3])}); "
                        "--force will not overwrite them: choose another folder")  # fmt: skip
    return [name for name in present if name not in set(files) | {MARKER}]


def plan_file(path: Path, force: bool) -> None:
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a folder without the .gguf suffix or another file name")
    if path.exists():
        if not force:
            raise UserError(f"{path}: already exists; add --force to replace it")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"{path}: --force only replaces a GGUF file, and this is not one")


def main(cfg: ExportConfig) -> int:
    from ownlm.export import block_kind
    from ownlm.export.hf import HF_FILES
    from ownlm.model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint
    from ownlm.model.gpt import GPTConfig

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
            import gguf  # noqa: F401
        except ImportError:
            raise UserError("export --to gguf needs the gguf package: pip install 'ownlm[export]'") from None
    run_name = Path(os.path.abspath(cfg.run)).name
    out = Path(cfg.out)
    to_file = cfg.to == "gguf" and out.suffix.lower() == ".gguf"
    stale: list[str] = []
    if to_file:
        plan_file(out, cfg.force)
        files = [out.name]
    else:
        files = [f"{run_name}-{dtype}.gguf"] if cfg.to == "gguf" else list(HF_FILES)
        stale = plan_folder(out, files, cfg.force)

    model, tokenizer, _ = load_model(folder)
    model.float()
    template = chat_template(folder)
    with removed_on_failure(out):  # a full disk or an interrupt leaves no half-written new folder behind
        where = _write(cfg, model, tokenizer, template, out, to_file, files, stale, folder, dtype, run_name)
    n = model.num_params(non_embedding=False)
    arch = block_kind(model.config, target)
    print(f"exported {folder} ({n:,} parameters, {arch} block{', chat template' if template else ''}) "
          f"-> {where} ({target}, {dtype})")  # fmt: skip
    return 0


def _write(cfg, model, tokenizer, template, out, to_file, files, stale, folder, dtype, run_name) -> Path:
    from ownlm.export.hf import write_hf

    if to_file:
        out.parent.mkdir(parents=True, exist_ok=True)
    else:  # the list of what we write goes first, so an interrupted export can still be replaced with --force
        out.mkdir(parents=True, exist_ok=True)
        for name in stale:
            (out / name).unlink()
        write_json(out / MARKER, {"format": MARKER_FORMAT, "version": 1, "to": cfg.to, "dtype": dtype,
                                  "source": str(folder), "files": files})  # fmt: skip
    if cfg.to == "hf":
        write_hf(model, tokenizer, out, template, dtype)
        where = out
    else:
        from ownlm.export.gguf import write_gguf

        where = write_gguf(model, tokenizer, out if to_file else out / files[0], template, dtype, run_name)
    return where
