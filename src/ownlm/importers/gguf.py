"""``ownlm import gguf FILE --out DIR``: a llama.cpp GGUF file (llama, qwen2, gpt2 architectures) as an ownlm model.

The file is memory-mapped and read one tensor at a time: each is dequantized to float32 (F32, F16, BF16, Q8_0,
Q4_0, Q4_1, Q5_0, Q5_1, Q2_K-Q6_K through the ``gguf`` package's numpy dequantizers), put back in our layout by
the architecture's tensor map (q/k rows of a "llama" file are RoPE-interleaved; ours are rotate-half) and
placed straight into the model, so memory peaks at about the model's float32 size plus the mapped file.

    >>> model, tokenizer, template, info = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.formats.model_config import config_from_gguf
from ownlm.importers.build import build_model
from ownlm.tokenizer import vocab_import

BIG_ARRAYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
)


@dataclass
class ImportGGUFConfig:
    file: str = opt(
        positional=True, help="a GGUF file (llama, qwen2 or gpt2 architecture; any common tensor type)"
    )
    out: str = opt(
        help="output model folder (model.safetensors + config.json + tokenizer.json + chat template)"
    )
    context: int | None = opt(
        None, help="shorten the model's context to this many tokens (default: the file's)"
    )


def open_gguf(path: Path):
    """The ``gguf`` package's reader over a memory-mapped file; a clear error for anything that is not GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError("import gguf needs the gguf package: pip install 'ownlm[export]'") from None
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
    try:
        return GGUFReader(path, "r")
    except Exception as e:  # a truncated or damaged file, whatever the reader's error type
        raise UserError(f"{path}: cannot read this GGUF file ({type(e).__name__}: {e})") from None


def metadata(reader, with_vocab: bool = False) -> dict:
    """GGUF key -> Python value (strings, numbers, lists); the vocabulary's large arrays only when asked."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or (key in BIG_ARRAYS and not with_vocab):
            continue
        out[key] = field.contents()
    return out


def torch_shape(t) -> tuple[int, ...]:
    """A GGUF tensor's shape in PyTorch order (ggml lists the fastest-varying dimension first)."""
    return tuple(int(n) for n in reversed(t.shape.tolist()))


def dequantized(t, where: str, chunk_bytes: int = 8 << 20) -> np.ndarray:
    """One tensor as a float32 array of its PyTorch shape, dequantized a block of rows at a time into one
    output array (the dequantizers' temporaries stay a few MB even for a 50k-row embedding)."""
    from gguf.quants import dequantize

    shape = torch_shape(t)
    data = np.asarray(t.data)
    rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(1, -1)
    out = np.empty((rows.shape[0], int(np.prod(shape)) // rows.shape[0]), np.float32)
    step = max(1, chunk_bytes // max(1, out.shape[1] * 4))
    try:
        for i in range(0, rows.shape[0], step):
            out[i : i + step] = dequantize(rows[i : i + step], t.tensor_type).reshape(-1, out.shape[1])
    except NotImplementedError:
        raise UserError(f"{where}: tensor {t.name} has type {t.tensor_type.name}, which ownlm cannot read "
                        "(convert the file to Q8_0, Q4_K, F16 or F32 with llama.cpp's quantizer)") from None  # fmt: skip
    return out.reshape(shape)


def release_pages(reader) -> None:
    """Tell the kernel the mapped file's pages may go (they are clean: dropping them costs nothing), so memory
    holds the model being built, not also the file read so far."""
    mm = getattr(getattr(reader, "data", None), "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)


def load_gguf(path, context: int | None = None):
    """``(GPT, tokenizer, chat template or None, info)`` from a GGUF file; ``info`` holds the file's
    architecture, name, tensor types and special-token ids."""
    import torch

    path = Path(path)
    reader = open_gguf(path)
    meta = metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    shapes = {name: torch_shape(t) for name, t in tensors.items()}
    cfg, arch = config_from_gguf(meta, shapes, str(path))
    if "rope_freqs.weight" in tensors:  # Llama 3.1/3.2: a per-frequency divisor table instead of metadata
        factors = dequantized(tensors["rope_freqs.weight"], str(path)).reshape(-1).tolist()
        cfg.rope_scaling = {"rope_type": "factors", "factors": factors}
    if context is not None:
        if not 1 <= context <= cfg.block_size:
            raise UserError(f"--context {context} must be between 1 and the model's {cfg.block_size}")
        cfg.block_size = context
    cfg.validate()

    # the vocabulary first: its parsed arrays are freed before the model's weights take the memory
    tokenizer, template, ids = read_tokenizer(reader, meta, path)
    for key in BIG_ARRAYS:  # ~150,000 small arrays the reader parsed
        reader.fields.pop(key, None)
    gc.collect()

    def get(name: str):
        w = torch.from_numpy(dequantized(tensors[name], str(path)))
        release_pages(reader)  # the file's pages just read are not needed again
        return w

    model = build_model(cfg, arch, "gguf", get, set(tensors), str(path), "the metadata")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    info = {"architecture": arch, "name": meta.get("general.name"), "tensor_types": types,
            "file": path.name, **ids}  # fmt: skip
    return model, tokenizer, template, info


def read_tokenizer(reader, meta: dict, path: Path):
    """``(Tokenizer, chat template or None, special ids)`` from the file's ``tokenizer.ggml.*`` keys."""
    if "tokenizer.ggml.model" not in meta:
        print(
            f"ownlm: warning: {path} holds no tokenizer; the model is imported without one", file=sys.stderr
        )
        return None, None, {}
    fields = {k: reader.fields[k].contents() for k in BIG_ARRAYS if k in reader.fields}
    fields |= {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
    try:
        tokenizer = vocab_import.tokenizer_from_gguf(fields)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    source = meta.get("tokenizer.chat_template")
    template = vocab_import.template_from_jinja(source, tokenizer, fields) if source else None
    return tokenizer, template, vocab_import.special_ids_from_gguf(fields, tokenizer).config()


def main(cfg: ImportGGUFConfig) -> int:
    from ownlm.importers.save import check_out, save_import

    path = Path(cfg.file)
    check_out(cfg.out, str(path))
    if path.is_file():  # a missing file is the reader's one error line, without this one before it
        print(f"reading {path} ...", file=sys.stderr)
    model, tokenizer, template, info = load_gguf(path, cfg.context)
    return save_import(cfg.out, model, tokenizer, template, info, source=str(path))
