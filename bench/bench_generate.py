"""Generation speed: ownlm's KV-cache decoding against Hugging Face ``transformers`` ``generate(use_cache=True)``.

Both run the same GPT-2-shaped model (124M by default, random weights: speed does not depend on them), batch 1,
greedy decoding of a fixed number of new tokens after a short prompt, in the same process with the same threads.
The weights are copied from the transformers model into ours, so both produce the same tokens (checked).
ownlm is timed three ways: the library's ``generate()`` on a fresh model; as ``ownlm generate`` runs it on CPU
(same fp32 weights in ``inference_layout``: exact, the like-for-like row); and with ``--quantize int8`` (approximate).

    python bench/bench_generate.py                       # 124M, fp32, 2 threads, 200 new tokens
    python bench/bench_generate.py --dtype bfloat16      # both in bf16 (the int8 row is built from fp32)
    python bench/bench_generate.py --preset tiny --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2", help="model shape (ownlm preset name; default gpt2 = 124M)")
    ap.add_argument("--new-tokens", type=int, default=200, help="tokens generated per run")
    ap.add_argument("--prompt-len", type=int, default=16, help="prompt length in tokens")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both (default 2)")
    ap.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype for both"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs each (median reported)")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    import transformers

    from ownlm.formats.tensor_map import from_hf_state
    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.model.quantize import quantize_int8
    from ownlm.runtime.decode import generate
    from ownlm.runtime.device import inference_layout

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_from_preset(args.preset, vocab_size=50257, block_size=1024)
    hf_cfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head)  # fmt: skip
    dtype = getattr(torch, args.dtype)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval().to(dtype)
    state = from_hf_state(hf.state_dict(), cfg, "gpt2")
    ours = GPT(cfg).eval().to(dtype)
    ours.load_state_dict(state, strict=False)
    fast = GPT(cfg).eval().to(dtype)  # what `ownlm generate` runs on CPU: the same weights in decode layout
    fast.load_state_dict(state, strict=False)
    inference_layout(fast)
    q8 = GPT(cfg).eval()  # `ownlm generate --quantize int8`
    q8.load_state_dict(state, strict=False)
    quantize_int8(q8)
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_len))
    n = args.new_tokens

    def run_ours():
        return generate(ours, prompt[0], n, temperature=0)[0]

    def run_fast():
        return generate(fast, prompt[0], n, temperature=0)[0]

    def run_q8():
        return generate(q8, prompt[0], n, temperature=0)[0]

    def run_hf():
        out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                          pad_token_id=0, eos_token_id=None, attention_mask=torch.ones_like(prompt))  # fmt: skip
        return out[0, args.prompt_len :].tolist()

    runs = {"ownlm": run_ours, "fast": run_fast, "transformers": run_hf, "int8": run_q8}
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    tokens = {}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up (allocations, kernel selection)
        for _ in range(args.repeats):  # interleaved, so a change in machine load hits all three alike
            for name, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                tokens[name] = fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    results = {name: n / statistics.median(t) for name, t in times.items()}
    # CPU seconds per token too: on a machine busy with other jobs they move less than wall-clock time
    cpu_ms = {name: 1e3 * statistics.median(t) / n for name, t in cpu.items()}
    same = sum(a == b for a, b in zip(tokens["fast"], tokens["transformers"]))
    same8 = sum(a == b for a, b in zip(tokens["int8"], tokens["transformers"]))

    params = ours.num_params(non_embedding=False) / 1e6
    print(f"generation, {args.preset} shape ({params:.0f}M params), batch 1, prompt {args.prompt_len}, "
          f"{n} new tokens, greedy, {args.dtype}, {args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    cpu = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {cpu}, {os.cpu_count()} cores"
    )
    hf_rate = results["transformers"]
    print(f"  transformers generate(use_cache=True)       {hf_rate:8.1f} tokens/s")
    print(f"  ownlm generate(), KV cache                  {results['ownlm']:8.1f} tokens/s  "
          f"{results['ownlm'] / hf_rate:5.2f}x")  # fmt: skip
    print(f"  ownlm as the CLI runs it (+ decode layout)  {results['fast']:8.1f} tokens/s  "
          f"{results['fast'] / hf_rate:5.2f}x")  # fmt: skip
    print(f"  ownlm --quantize int8 (approximate logits)  {results['int8']:8.1f} tokens/s  "
          f"{results['int8'] / hf_rate:5.2f}x")  # fmt: skip
    print(f"  ratio ownlm CLI (exact fp32) / transformers {results['fast'] / hf_rate:8.2f}x")
    print(f"  same greedy tokens as transformers          {same}/{n} (int8: {same8}/{n})")
    print("  CPU ms per token: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_ms.items()))


if __name__ == "__main__":
    main()
