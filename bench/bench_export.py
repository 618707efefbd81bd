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
    from ownlm.tokenizer.export import from_gpt2

    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("# llama-cpp-python is not installed: no llama.cpp rows")
    torch.set_num_threads(args.threads)
    if (SHARED / "encoder.json").is_file():
        tok = from_gpt2(SHARED / "encoder.json", SHARED / "vocab.bpe")
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
                if llama_cpp is not None:
                    rows += llama_cpp_rows(llama_cpp, label, dtype, path, model, tok, args.threads)
                path.unlink()
            shutil.rmtree(out)
            shutil.rmtree(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| block | step | seconds | size (MB) |\n|---|---|---:|---:|")
    for label, step, t, mb in rows:
        print(f"| {label} | {step} | {t:.2f} | {'' if mb is None else f'{mb:,.0f}'} |")


def llama_cpp_rows(llama_cpp, label: str, dtype: str, path: Path, model, tok, threads: int) -> list[tuple]:
    """Load the file in llama.cpp; its logits against ownlm's on 64 random tokens; greedy decoding speed of
    llama.cpp and of ownlm's ``generate`` (KV cache) for the same 64 new tokens after a 16-token prompt."""
    import numpy as np
    import torch

    from ownlm.generate import generate

    llm, t_load = timed(lambda: llama_cpp.Llama(str(path), n_ctx=256, n_threads=threads, n_batch=256,
                                                verbose=False, logits_all=True))  # fmt: skip
    ids = torch.randint(0, tok.n_vocab, (1, 64))
    llm.reset()
    llm.eval(ids[0].tolist())
    with torch.no_grad():
        want = model(ids)[0][0].numpy()
    diff = float(np.abs(np.asarray(llm.scores[:64]) - want).max())
    print(f"{label} {dtype}: max |logits ownlm - llama.cpp| = {diff:.2e}")
    prompt, n = ids[0, :16].tolist(), 64

    def llama_decode():
        out = []
        for t in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            out.append(t)
            if len(out) == n:
                return out

    llama_decode()  # warm up
    _, t_llama = timed(llama_decode)
    _, t_ours = timed(lambda: generate(model, prompt, n, temperature=0))
    return [(label, f"llama.cpp load ({dtype})", t_load, None),
            (label, f"llama.cpp greedy, {n} tokens ({dtype}): {n / t_llama:.0f} tok/s; ownlm generate (f32): "
                    f"{n / t_ours:.0f} tok/s", t_llama, None)]  # fmt: skip


if __name__ == "__main__":
    main()
