"""Export round trips at the 124M shape: ``ownlm export --to hf`` then transformers loading it, and
``--to gguf`` (f32, f16, q8_0) then ``gguf.GGUFReader`` reading every tensor back.

Random weights (the times do not depend on them), GPT-2's real tokenizer (50,257 tokens, from the shared data
folder, else a small trained one) on the padded 50,304-row vocabulary. Both blocks: GPT-2's and the modern one
(RoPE, RMSNorm, SwiGLU, 4 kv heads). The logits of the loaded transformers model are checked against ownlm's.

    python bench/bench_export.py                 # both blocks, 2 threads
    python bench/bench_export.py --preset tiny   # a quick run
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt2_tokenizer"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2", help="model shape (ownlm preset; default gpt2 = 124M)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import gguf
    import numpy as np
    import torch
    import transformers

    from ownlm.export.cli import ExportConfig
    from ownlm.export.cli import main as export
    from ownlm.model.checkpoint import save_model
    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    if (SHARED / "encoder.json").is_file():
        tok = Tokenizer.from_gpt2(SHARED / "encoder.json", SHARED / "vocab.bpe")
    else:
        tok = Tokenizer.train([Path(__file__).read_text()] * 20, vocab_size=300, progress=False)
    print(f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, transformers {transformers.__version__}, "
          f"{args.threads} threads; tokenizer {tok.n_vocab} tokens")  # fmt: skip
    blocks = {"gpt2 block": {}, "modern block": dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=4,
                                                      bias=False)}  # fmt: skip
    rows = []
    root = Path(tempfile.mkdtemp(prefix="bench_export."))
    try:
        for label, options in blocks.items():
            torch.manual_seed(0)
            cfg = config_from_preset(args.preset, vocab_size=64 * -(-tok.n_vocab // 64), **options)
            model = GPT(cfg).eval()
            n = model.num_params(non_embedding=False)
            run = root / label.replace(" ", "-")
            _, t = timed(functools.partial(save_model, run, model, tok))
            rows.append((label, f"ownlm save_model ({n / 1e6:.0f}M params)", t, size_mb(run)))
            out = root / f"{run.name}-hf"
            _, t = timed(functools.partial(export, ExportConfig(run=str(run), to="hf", out=str(out))))
            rows.append((label, "export --to hf (f32)", t, size_mb(out)))
            hf, t = timed(functools.partial(transformers.AutoModelForCausalLM.from_pretrained, out))
            rows.append((label, f"transformers from_pretrained ({type(hf).__name__})", t, None))
            hf.eval()
            ids = torch.randint(0, tok.n_vocab, (1, 64))
            with torch.no_grad():
                diff = (model(ids)[0] - hf(ids).logits).abs().max().item()
            print(f"{label}: max |logits ownlm - transformers| = {diff:.2e}")
            del hf
            for dtype in ("f32", "f16", "q8_0"):
                path = root / f"{run.name}-{dtype}.gguf"
                gcfg = ExportConfig(run=str(run), to="gguf", out=str(path), dtype=dtype)
                _, t = timed(functools.partial(export, gcfg))
                rows.append((label, f"export --to gguf --dtype {dtype}", t, size_mb(path)))

                def read_all(path=path):  # every tensor as float32, as a consumer would use it
                    r = gguf.GGUFReader(path)
                    return [
                        gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in r.tensors
                    ]

                _, t = timed(read_all)
                rows.append((label, f"GGUFReader, every tensor ({dtype})", t, None))
                path.unlink()
            shutil.rmtree(out)
            shutil.rmtree(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| block | step | seconds | size (MB) |\n|---|---|---:|---:|")
    for label, step, t, mb in rows:
        print(f"| {label} | {step} | {t:.2f} | {'' if mb is None else f'{mb:,.0f}'} |")


if __name__ == "__main__":
    main()
