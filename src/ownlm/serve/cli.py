"""``ownlm serve RUN``: load a checkpoint and serve it over HTTP (OpenAI-compatible API + chat page).

    ownlm serve runs/chat                          # http://127.0.0.1:8000  (the page, and /v1/...)
    ownlm serve runs/chat --host 0.0.0.0 --port 9000 --api-key "$(openssl rand -hex 16)"

Safe by default: it listens on 127.0.0.1 only, and caps the body size, the prompt, ``max_tokens`` and the time a
request may take. FastAPI and uvicorn are an optional extra: ``pip install 'ownlm[serve]'``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.runtime.device import DTYPE
from ownlm.runtime.sampling import SamplingConfig


@dataclass
class ServeConfig:
    run: str = opt(help="a run folder (uses its latest checkpoint) or a checkpoint folder", positional=True)
    host: str = opt("127.0.0.1", help="address to listen on (0.0.0.0: every interface; then set --api-key)")
    port: int = opt(8000, help="TCP port", bounds="[1, 65535]")
    api_key: str | None = opt(None, help="when set, /v1/* requires the header 'Authorization: Bearer KEY'")
    max_body_bytes: int = opt(1 << 20, help="largest request body accepted (413 above)", bounds="[1, inf)")
    max_prompt_tokens: int | None = opt(
        None, help="longest prompt accepted, in tokens (None: the context - 1)", bounds="[1, inf)"
    )
    max_tokens_cap: int = opt(1024, help="largest max_tokens a request may ask for", bounds="[1, inf)")
    timeout_s: float = opt(
        300.0, help="a request's time limit, waiting included (504 after it)", bounds="(0, inf)"
    )
    max_batch: int = opt(
        8, help="sequences decoded together in one step; more wait for a free slot", bounds="[1, inf)"
    )
    sampling: SamplingConfig = opt(SamplingConfig(), help="defaults for the requests' sampling fields")
    device: str = opt("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: DTYPE = opt("auto", help="weights dtype (auto: fp32 on CPU, bf16 or fp16 on GPUs)")


def build_app(cfg: ServeConfig):
    """Load ``cfg.run`` and make the app (the engine starts with the app). Raises ``UserError``."""
    from ownlm.model.checkpoint import load_model, resolve_checkpoint
    from ownlm.runtime.device import inference_dtype, inference_layout, pick_device
    from ownlm.runtime.text import chat_template_for
    from ownlm.serve.app import Limits, create_app
    from ownlm.serve.engine import Engine

    if cfg.max_batch < 1 or cfg.max_tokens_cap < 1 or cfg.max_body_bytes < 1 or cfg.timeout_s <= 0:
        raise UserError("--max-batch, --max-tokens-cap, --max-body-bytes and --timeout-s must be positive")
    if cfg.max_prompt_tokens is not None and cfg.max_prompt_tokens < 1:
        raise UserError("--max-prompt-tokens must be at least 1")
    cfg.sampling.check()
    folder = resolve_checkpoint(cfg.run)
    device = pick_device(cfg.device)
    model, tok, _ = load_model(folder, device=device, dtype=inference_dtype(cfg.dtype, device))
    if tok is None:
        raise UserError(f"{folder}: the checkpoint has no tokenizer.json, so text cannot be encoded")
    if device.type == "cpu":
        inference_layout(model, batched=True)
    template, why = chat_template_for(folder, tok)
    limits = Limits(max_body_bytes=cfg.max_body_bytes, max_prompt_tokens=cfg.max_prompt_tokens,
                    max_tokens_cap=cfg.max_tokens_cap, timeout_s=cfg.timeout_s)  # fmt: skip
    model_id = Path(cfg.run).resolve().name
    engine = Engine(model, tok, max_batch=cfg.max_batch)
    return create_app(
        engine, model_id, template, chat_error=why, api_key=cfg.api_key, limits=limits, defaults=cfg.sampling
    )


def main(cfg: ServeConfig) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("ownlm serve needs FastAPI and uvicorn: pip install 'ownlm[serve]'") from None
    app = build_app(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.api_key is None:
        print(
            f"ownlm serve: warning: listening on {cfg.host} with no --api-key: anyone who can reach it can use it"
        )
    print(f"ownlm serve: {app.state.model_id} on http://{cfg.host}:{cfg.port}  (chat page at /, API at /v1)")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1"):
    """Run ``app`` with uvicorn on a free port in a background thread; yields its base URL (for tests,
    benchmarks and notebooks). The app's engine stops when the block ends.

    >>> with serve_in_thread(build_app(cfg)) as url:  # doctest: +SKIP
    ...     openai.OpenAI(base_url=url + "/v1", api_key="-").models.list()
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))  # bound before the thread starts: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
            thread.join(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
