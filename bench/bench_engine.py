"""The decode loops alone, for comparing two checkouts in one session: the serving engine's throughput without
HTTP or client threads, and ``generate()``'s speed per token. It runs whatever ``ownlm`` is on ``PYTHONPATH`` and
prints one JSON line, so an old and a new tree can be run alternately on a shared machine and compared by ratio.

    PYTHONPATH=/tmp/old/src python bench/bench_engine.py serve      # {"serve_1": tok/s, "serve_8": ..., ...}
    PYTHONPATH=/tmp/new/src python bench/bench_engine.py serve
    PYTHONPATH=/tmp/old/src python bench/bench_engine.py gpt2       # generate(), 124M shape, CLI layout

``serve``: the ``mini`` shape with an 8,192-row head and a byte tokenizer, ``max_batch`` 16; for 1, 8 and 16
clients, 2 requests each of a 64-token prompt and 64 greedy tokens, all submitted at once.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import threading
import time


def serve(model, tok) -> dict:
    from ownlm.serve.engine import Engine, SamplingParams

    key = (
        "max_new_tokens" if "max_new_tokens" in inspect.signature(SamplingParams).parameters else "max_tokens"
    )

    def params(n):  # the field's name before and after the runtime's one SamplingConfig
        return SamplingParams(**{key: n}, temperature=0)

    out = {}
    for clients in (1, 8, 16):
        with Engine(model, tok, max_batch=16) as engine:
            engine.generate(list(range(1, 65)), params(8))  # warm-up
            made, done = [], threading.Semaphore(0)

            def emit(ev, made=made, done=done):
                if ev.finish:
                    made.append(ev.completion_tokens)
                    done.release()

            n = 2 * clients
            t0 = time.perf_counter()
            with engine.cond:
                for i in range(n):
                    engine.submit([(i * 7 + j) % 250 + 1 for j in range(64)], params(64), emit)
            for _ in range(n):
                done.acquire()
            out[f"serve_{clients}"] = sum(made) / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["serve", "tiny", "gpt2"], help="the engine, or generate() on a preset")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.tokenizer import Tokenizer

    try:  # the one layout function, or the two it replaced
        from ownlm.runtime.device import inference_layout
    except ImportError:
        from ownlm.generate import decode_layout
        from ownlm.serve.engine import serving_layout

        def inference_layout(m, batched=False):
            return serving_layout(m) if batched else decode_layout(m)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.what == "serve":
        model = inference_layout(GPT(config_from_preset("mini", vocab_size=8192)).eval(), batched=True)
        print(json.dumps(serve(model, Tokenizer(special_tokens={"<|endoftext|>": 256}))))
        return
    try:
        from ownlm.runtime.decode import generate
    except ImportError:
        from ownlm.generate import generate
    model = inference_layout(GPT(config_from_preset(args.what, vocab_size=50257, block_size=1024)).eval())
    prompt = list(range(16))
    generate(model, prompt, 20, temperature=0)
    best = cpu = float("inf")
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        generate(model, prompt, 100, temperature=0)
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    print(json.dumps({"tok_s": 100 / best, "cpu_ms_per_token": cpu * 10}))


if __name__ == "__main__":
    main()
