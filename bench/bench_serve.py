"""Serving throughput of ``ownlm serve`` on loopback: 1, 4, 8 and 16 concurrent streaming clients against the
batched server, and against the same server decoding one request at a time (``--max-batch 1``).

The model is the ``mini`` shape (6 layers x 384 wide, context 256) with random weights (speed does not depend on
them) and an output head of ``--vocab`` rows; the tokenizer is byte-level, so a prompt of N ASCII characters is
N tokens. Every request streams ``--new-tokens`` tokens after a ``--prompt-len``-token prompt, greedy (a random
tied-embedding model repeats its last token, so no request stops early; the token counts are checked from the
usage the server reports). Each client sends ``--requests`` requests one after another. Each server runs in its
own process (``python -m ownlm serve``) with ``--threads`` torch threads; both are started first and measured
back to back at each level, so a machine whose load drifts treats them alike. The clients are threads here,
reading the server-sent events with the standard library.

    python bench/bench_serve.py                        # mini, 2 threads, 64-token prompts, 64 new tokens
    python bench/bench_serve.py --clients 1 8 --requests 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def make_run(folder: Path, preset: str, vocab: int) -> Path:
    import torch

    from ownlm.model.checkpoint import save_model
    from ownlm.model.gpt import GPT, config_from_preset
    from ownlm.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = GPT(config_from_preset(preset, vocab_size=vocab))
    save_model(folder / "step_000000", model, Tokenizer(special_tokens={"<|endoftext|>": 256}))
    (folder / "latest").write_text("step_000000\n")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run: Path, max_batch: int, threads: int, device: str = "cpu"
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ownlm", "serve", str(run), "--port", str(port), "--device", device,
           "--max-batch", str(max_batch), "--max-tokens-cap", "4096"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def one_request(port: int, prompt: str, new_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first text, seconds in all, completion tokens) of one streaming completion."""
    body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request(
        "POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    res = conn.getresponse()
    if res.status != 200:
        raise RuntimeError(f"HTTP {res.status}: {res.read()[:200]!r}")
    first, tokens = None, 0
    for line in res:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        elif first is None and event["choices"] and event["choices"][0]["text"]:
            first = time.perf_counter() - t0
    conn.close()
    return first if first is not None else float("nan"), time.perf_counter() - t0, tokens


def run_clients(port: int, clients: int, requests: int, prompt_len: int, new_tokens: int) -> dict:
    ttft, errors, total = [], [], [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        for j in range(requests):
            prompt = (f"client {k:02d} request {j:02d} " * prompt_len)[:prompt_len]  # prompt_len byte tokens
            try:
                first, _, n = one_request(port, prompt, new_tokens)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                ttft.append(first)
                total[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    expected = clients * requests * new_tokens
    q = statistics.quantiles(ttft, n=20) if len(ttft) > 1 else [ttft[0]] * 19
    return {"tok_s": total[0] / wall, "ttft_p50": statistics.median(ttft), "ttft_p95": q[18], "wall": wall,
            "tokens": total[0], "expected": expected, "errors": errors}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mini", help="model shape (ownlm preset name)")
    ap.add_argument(
        "--vocab", type=int, default=8192, help="output-head rows (a typical own-corpus BPE size)"
    )
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrency levels")
    ap.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt length in tokens")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    ap.add_argument("--device", default="cpu", help="the servers' --device (cpu, cuda, auto)")
    ap.add_argument("--max-batch", type=int, default=16, help="the batched server's --max-batch")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / args.preset, args.preset, args.vocab)
        results: dict[int, dict[int, dict]] = {}
        servers = {b: start_server(run, b, args.threads, args.device) for b in (args.max_batch, 1)}
        try:
            for _, port in servers.values():
                for _ in range(2):  # warm up: allocator, kernels, both request paths
                    one_request(port, "warm up " * (args.prompt_len // 8), args.new_tokens)
            for c in args.clients:  # the two servers back to back at each level: they see the same load
                for max_batch, (_, port) in servers.items():
                    r = run_clients(port, c, args.requests, args.prompt_len, args.new_tokens)
                    results.setdefault(c, {})[max_batch] = r
                    print(f"max_batch {max_batch:2d}, {c:2d} clients: {r['tok_s']:7.1f} tok/s, TTFT p50 "
                          f"{r['ttft_p50']:.3f} s p95 {r['ttft_p95']:.3f} s, {r['tokens']}/{r['expected']} "
                          f"tokens in {r['wall']:.1f} s, {len(r['errors'])} errors", flush=True)  # fmt: skip
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    print(f"\n{platform.machine()} CPU, {os.cpu_count()} cores, server threads {args.threads}; {args.preset} "
          f"(vocab {args.vocab}), prompt {args.prompt_len} + {args.new_tokens} new tokens, "
          f"{args.requests} requests per client\n")  # fmt: skip
    print("| clients | batched tok/s | TTFT p50 / p95 | one-at-a-time tok/s | TTFT p50 / p95 | speed-up |")
    print("|--:|--:|--:|--:|--:|--:|")
    for c in args.clients:
        b, s = results[c][args.max_batch], results[c][1]
        print(f"| {c} | {b['tok_s']:.0f} | {b['ttft_p50']:.2f} / {b['ttft_p95']:.2f} s | {s['tok_s']:.0f} | "
              f"{s['ttft_p50']:.2f} / {s['ttft_p95']:.2f} s | {b['tok_s'] / s['tok_s']:.1f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
