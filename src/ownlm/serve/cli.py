"""``ownlm serve RUN``: load a checkpoint and serve it over HTTP (OpenAI-compatible API + chat page).

    ownlm serve runs/chat                          # http://127.0.0.1:8000  (the page, and /v1/...)
    ownlm serve runs/chat --host 0.0.0.0 --port 9000 --api-key "$(openssl rand -hex 16)"

Safe by default: it listens on 127.0.0.1 only, and caps the body size, the prompt, ``max_tokens`` and the time a
request may take. FastAPI and uvicorn are an optional extra: ``pip install 'ownlm[serve]'``.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt, validate
from ownlm.errors import UserError
from ownlm.runtime.device import DTYPE, inference_dtype, inference_layout, pick_device
from ownlm.runtime.sampling import SamplingConfig
from ownlm.runtime.text import chat_template_for
from ownlm.serve.engine import Engine


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
    header_timeout_s: float = opt(
        30.0,
        help="a request's headers must arrive within this many seconds (408 and closed after)",
        bounds="(0, inf)",
    )
    body_timeout_s: float = opt(
        30.0,
        help="a request's body must arrive within this many seconds of its headers (408 after)",
        bounds="(0, inf)",
    )
    max_url_bytes: int = opt(8192, help="longest request line (414 above)", bounds="[64, inf)")
    max_header_bytes: int = opt(
        65536, help="largest request head, headers included (431 above)", bounds="[256, inf)"
    )


def build_app(cfg: ServeConfig):
    """Load ``cfg.run`` and make the app (the engine starts with the app). Raises ``UserError``."""
    # lazy: numpy, regex and the tokenizer load when the command runs, not at `--help`; the app and the guard
    # need the optional FastAPI and uvicorn (`ownlm serve --help` works without them, `main` says how to add them)
    from ownlm.model.checkpoint import load_model, resolve_checkpoint
    from ownlm.serve.app import Limits, create_app
    from ownlm.serve.guard import ClientLimits

    validate(cfg)  # configs built in code too (flags and TOML were checked when parsed)
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
    app = create_app(
        engine, model_id, template, chat_error=why, api_key=cfg.api_key, limits=limits, defaults=cfg.sampling
    )
    app.state.client_limits = ClientLimits(cfg.header_timeout_s, cfg.body_timeout_s, cfg.max_url_bytes,
                                           cfg.max_header_bytes)  # fmt: skip
    return app


def server_config(app, **kwargs):
    """The uvicorn settings every way of serving uses: the slow/oversized-client guard (``serve.guard``) with the
    app's limits, and no access log."""
    import uvicorn  # optional (ownlm[serve]), as the guard built on it

    from ownlm.serve.guard import ClientLimits, guarded_protocol

    limits = getattr(app.state, "client_limits", None) or ClientLimits()
    return uvicorn.Config(app, http=guarded_protocol(limits), log_level="warning",
                          h11_max_incomplete_event_size=2 * limits.max_header_bytes, **kwargs)  # fmt: skip


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ``UserError`` in ownlm's words (a port in use, a host that is
    not an address of this machine), before the server starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not an address or a name this machine can resolve ({e})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port}: already in use on {host}; stop what uses it or give another --port"
            ) from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


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
    sock = bind(cfg.host, cfg.port)
    print(f"ownlm serve: {app.state.model_id} on http://{cfg.host}:{cfg.port}  (chat page at /, API at /v1)")
    try:
        uvicorn.Server(server_config(app)).run(sockets=[sock])
    finally:
        sock.close()
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
    server = uvicorn.Server(server_config(app))
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
