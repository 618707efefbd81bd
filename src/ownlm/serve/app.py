"""The OpenAI-compatible HTTP API over one ``Engine``, and the chat page at ``/``.

    GET  /health                 {"status": "ok", ...}, no key needed
    GET  /v1/models              the one model; its id is the run folder's name
    POST /v1/completions         prompt -> text ("stream": true gives server-sent events ending in [DONE])
    POST /v1/chat/completions    messages -> reply, through the checkpoint's chat template
    GET  /                       the web chat page (static/index.html)

Requests are read by hand rather than by pydantic models so that every mistake (bad JSON, unknown field, wrong
type, a value out of range, a prompt over the context) is answered in OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}`` with the status OpenAI uses, and the server keeps serving.

>>> app = create_app(Engine(model, tok), "my-run", template)  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ownlm.config import check_number
from ownlm.errors import UserError
from ownlm.io import load_json_text
from ownlm.serve.engine import Engine, Event, SamplingParams

PAGE = Path(__file__).parent / "static" / "index.html"
CHATML = ("<|im_start|>", "<|im_end|>")


@dataclass
class Limits:
    """What one request may ask for. ``max_prompt_tokens`` None: the model's context minus one."""

    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None
    max_tokens_cap: int = 1024
    max_choices: int = 16  # prompts x n in one request
    timeout_s: float = 300.0


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def chat_template_for(folder, tokenizer):
    """``(template, None)`` for a checkpoint folder, or ``(None, why chat cannot work)``.

    The checkpoint's own ``chat_template.json`` first; else ChatML when the tokenizer has its two tokens.
    """
    try:
        from ownlm.tokenizer.chat import get_template, load_template
    except ImportError:  # the chat-template module is not in this ownlm
        return None, "this ownlm has no chat templates; use /v1/completions"
    template = load_template(folder) if folder is not None else None
    if template is not None:
        missing = [t for t in template.special_tokens() if t not in tokenizer.special_tokens]
        if missing:
            return None, (f"the checkpoint's chat template '{template.name}' needs the special tokens "
                          f"{missing}, which its tokenizer lacks: use /v1/completions")  # fmt: skip
        return template, None
    if all(s in tokenizer.special_tokens for s in CHATML):
        return get_template("chatml"), None
    return None, (f"the checkpoint {Path(folder).name if folder else ''} has no chat_template.json and its "
                  f"tokenizer has no ChatML tokens {' '.join(CHATML)}: use /v1/completions, or serve a "
                  "chat fine-tuned run")  # fmt: skip


# ------------------------------------------------------------------------------------------ request fields

COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed", "n",
          "stream", "stream_options", "user"}  # fmt: skip
COMPLETION_FIELDS = COMMON | {"prompt"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens"}
ROLES = {"system", "user", "assistant", "developer"}  # "developer" is OpenAI's newer name for "system"


def _number(body: dict, name: str, default, bounds: str, integer: bool = False):
    """A number field of a request, checked by the rule flags and TOML follow (``config.check_number``):
    JSON numbers only, finite (Python's JSON reads ``NaN`` and ``Infinity``), inside ``bounds``."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        raise APIError(400, f"'{name}' must be a JSON number, got {value!r}", param=name)
    try:
        return check_number(value, f"'{name}'", bounds, integer=integer)
    except UserError as e:
        raise APIError(400, str(e), param=name) from None


def _check_fields(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")  # fmt: skip


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise APIError(400, "'stop' must be a non-empty string or a list of at most 4 of them", param="stop")
    return stop


# ------------------------------------------------------------------------------------------ the app


def create_app(engine: Engine, model_id: str, template=None, *, chat_error: str | None = None,
               api_key: str | None = None, limits: Limits | None = None) -> FastAPI:  # fmt: skip
    """The FastAPI app serving ``engine``'s model as ``model_id``; it starts the engine's loop on start-up and
    stops it on shut-down. ``template``: the chat template (None: chat requests answer 400 ``chat_error``)."""
    limits = limits or Limits()
    tok = engine.tokenizer
    block = engine.block_size
    max_prompt = min(limits.max_prompt_tokens or block - 1, block - 1)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="ownlm", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine, app.state.model_id = engine, model_id

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        kind = "not_found" if e.status_code == 404 else None
        return JSONResponse(
            APIError(e.status_code, str(e.detail), code=kind).body(), status_code=e.status_code
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        body = APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer KEY' with "
                           "the key the server was started with (--api-key)", code="invalid_api_key")  # fmt: skip

    async def read_body(request: Request, known: set[str]) -> dict:
        size = request.headers.get("content-length", "")
        too_big = APIError(413, f"request body over {limits.max_body_bytes} bytes (--max-body-bytes)",
                           code="request_too_large")  # fmt: skip
        if size.isdigit() and int(size) > limits.max_body_bytes:
            raise too_big
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits.max_body_bytes:
                raise too_big
            chunks.append(chunk)
        try:  # the one JSON reader: depth-limited, no RecursionError from a body nested 100k deep
            body = load_json_text(b"".join(chunks).decode("utf-8"), "the JSON body", "could not parse it")
        except UnicodeDecodeError as e:
            raise APIError(400, f"the JSON body is not UTF-8 text (byte {e.start})") from None
        except UserError as e:
            raise APIError(400, str(e)) from None
        if not isinstance(body, dict):
            raise APIError(400, "the JSON body must be an object")
        _check_fields(body, known)
        model = body.get("model")
        if model is not None and model != model_id:
            raise APIError(404, f"The model '{model}' does not exist; this server has '{model_id}'",
                           param="model", code="model_not_found")  # fmt: skip
        return body

    def check_prompt(ids: list[int], param: str) -> list[int]:
        if len(ids) > max_prompt:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most {max_prompt} "
                           f"(the model's context is {block} tokens)", param=param,
                           code="context_length_exceeded")  # fmt: skip
        return ids

    def sampling(body: dict, default_max: int, stop_ids: list[int]) -> tuple[SamplingParams, int]:
        n = _number(body, "n", 1, f"[1, {limits.max_choices}]", integer=True)
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _number(body, name, default_max, f"[1, {limits.max_tokens_cap}]", integer=True)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=_number(body, "temperature", 1.0, "[0, 2]"),
            top_p=_number(body, "top_p", 1.0, "(0, 1]"),
            top_k=_number(body, "top_k", 0, "[0, inf)", integer=True),
            repetition_penalty=_number(body, "repetition_penalty", 1.0, "(0, 100]"),
            stop=_stops(body), stop_ids=stop_ids,
            seed=_number(body, "seed", None, "[0, inf)", integer=True),
        )  # fmt: skip
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise APIError(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options")
        if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
            raise APIError(400, "'stream_options' may only hold 'include_usage'", param="stream_options")
        return params, n

    # ---------------------------------------------------------------------------------------- routes

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "active": len(engine.active), "waiting": len(engine.waiting),
                "finished": dict(engine.finished)}  # fmt: skip

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "ownlm",
                "context_length": block}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        authorize(request)
        if name != model_id:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = await read_body(request, COMPLETION_FIELDS)
        prompts = [check_prompt(p, "prompt") for p in encode_prompts(body.get("prompt"), tok)]
        stop_ids = [tok.eot_id] if tok.eot_id is not None else []
        params, n = sampling(body, 16, stop_ids)
        if len(prompts) * n > limits.max_choices:
            raise APIError(
                400, f"{len(prompts)} prompts x n={n} is over {limits.max_choices} choices", param="n"
            )
        return await respond(request, body, prompts, params, n, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = await read_body(request, CHAT_FIELDS)
        if template is None:
            raise APIError(400, chat_error or "this model has no chat template; use /v1/completions",
                           param="messages", code="no_chat_template")  # fmt: skip
        messages = parse_messages(body.get("messages"))
        try:
            ids = template.encode_prompt(tok, messages)
        except UserError as e:
            raise APIError(400, f"messages: {e}", param="messages") from None
        stop_ids = sorted({*template.stop_ids(tok), *([tok.eot_id] if tok.eot_id is not None else [])})
        params, n = sampling(body, limits.max_tokens_cap, stop_ids)
        return await respond(request, body, [check_prompt(ids, "messages")], params, n, chat=True)

    # ---------------------------------------------------------------------------------------- answering

    async def respond(request: Request, body: dict, prompts: list[list[int]], params: SamplingParams, n: int,
                      chat: bool):  # fmt: skip
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        tickets = []

        def emitter(index: int):
            return lambda ev: loop.call_soon_threadsafe(queue.put_nowait, (index, ev))

        for p, prompt in enumerate(prompts):
            for j in range(n):
                seed = None if params.seed is None else params.seed + j  # choice j: its own stream of numbers
                one = dataclasses.replace(params, seed=seed)
                try:
                    tickets.append(engine.submit(prompt, one, emitter(p * n + j), limits.timeout_s))
                except RuntimeError as e:
                    for t in tickets:
                        t.cancel()
                    raise APIError(503, str(e), type="server_error") from None

        def cancel_all() -> None:
            for t in tickets:
                t.cancel()

        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage_prompt = sum(len(p) for p in prompts)
        meta = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": model_id}  # fmt: skip
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = stream_chunks(queue, len(tickets), meta, chat, usage_prompt, include_usage)
            return _EventStream(chunks, on_close=cancel_all)
        try:
            got = await collect(request, queue, len(tickets))
        finally:
            cancel_all()
        if got is None:
            return Response(status_code=499)  # the client closed the connection (nginx's code)
        texts, finish, made = got
        usage = {"prompt_tokens": usage_prompt, "completion_tokens": sum(made),
                 "total_tokens": usage_prompt + sum(made)}  # fmt: skip
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": None,
                        "finish_reason": finish[i]} for i in range(len(texts))]  # fmt: skip
        else:
            choices = [{"index": i, "text": texts[i], "logprobs": None, "finish_reason": finish[i]}
                       for i in range(len(texts))]  # fmt: skip
        return {**meta, "choices": choices, "usage": usage}

    async def collect(request: Request, queue: asyncio.Queue, count: int):
        """Every choice's whole text, finish reason and token count; None when the client went away."""
        texts, finish, made = [""] * count, [None] * count, [0] * count
        left, checked = count, time.monotonic()
        while left:
            with contextlib.suppress(TimeoutError):
                i, ev = await asyncio.wait_for(queue.get(), 0.25)
                texts[i] += ev.text
                if ev.finish is not None:
                    left -= 1
                    if ev.finish not in ("stop", "length"):
                        raise _error_for(ev)
                    finish[i], made[i] = ev.finish, ev.completion_tokens
            if time.monotonic() - checked > 0.25:  # nobody to answer? respond's finally cancels the work
                if await request.is_disconnected():
                    return None
                checked = time.monotonic()
        return texts, finish, made

    async def stream_chunks(queue: asyncio.Queue, count: int, meta: dict, chat: bool, usage_prompt: int,
                            include_usage: bool):  # fmt: skip
        meta = {**meta, "object": "chat.completion.chunk" if chat else "text_completion"}

        def chunk(i: int, text: str, finish: str | None = None, role: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": text} if role else {"content": text} if text else {}
                choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
            extra = {"usage": None} if include_usage else {}
            return "data: " + json.dumps({**meta, "choices": [choice], **extra}, ensure_ascii=False) + "\n\n"

        if chat:
            for i in range(count):
                yield chunk(i, "", role=True)
        left, made = count, 0
        while left:
            events = [await queue.get()]
            while not queue.empty():  # under load several tokens wait: send each choice's text as one chunk
                events.append(queue.get_nowait())
            merged: dict[int, list] = {}
            for i, ev in events:
                text, finish = merged.get(i, ["", None])
                merged[i] = [text + ev.text, ev.finish or finish]
                if ev.finish is not None:
                    left -= 1
                    made += ev.completion_tokens
                    if ev.finish not in ("stop", "length"):  # mid-stream errors go as an error event
                        yield "data: " + json.dumps(_error_for(ev).body()) + "\n\n"
                        merged[i][1] = "error"
            for i, (text, finish) in merged.items():
                if finish == "error":
                    continue
                if text:
                    yield chunk(i, text)
                if finish is not None:
                    yield chunk(i, "", finish)
        if include_usage:
            usage = {"prompt_tokens": usage_prompt, "completion_tokens": made,
                     "total_tokens": usage_prompt + made}  # fmt: skip
            yield "data: " + json.dumps({**meta, "choices": [], "usage": usage}) + "\n\n"
        yield "data: [DONE]\n\n"

    def _error_text(ev: Event) -> str:
        if ev.finish == "timeout":
            return f"generation took longer than the server's limit of {limits.timeout_s:g} s (--timeout-s)"
        return f"generation failed: {ev.error or ev.finish}"

    def _error_for(ev: Event) -> APIError:
        status = 504 if ev.finish == "timeout" else 500 if ev.finish == "error" else 503
        return APIError(status, _error_text(ev), type="server_error", code=ev.finish)

    return app


class _EventStream(StreamingResponse):
    """Server-sent events; ``on_close`` runs however the response ends (done, or the client went away)."""

    def __init__(self, chunks, on_close):
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def encode_prompts(prompt, tok) -> list[list[int]]:
    """OpenAI's prompt forms -> token id lists: a string, a list of token ids, or a list of either.
    An empty string means "start from <|endoftext|>" (as ``ownlm generate`` does)."""
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise APIError(400, "'prompt' must be a string, a list of token ids, or a non-empty list of those",
                       param="prompt")  # fmt: skip
    out = []
    for p in prompt:
        if isinstance(p, str):
            ids = (
                tok.encode(p, allowed_special="all")
                if p
                else ([tok.eot_id] if tok.eot_id is not None else [])
            )
        elif isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            ids = p
            if any(not 0 <= t < tok.n_vocab for t in ids):
                raise APIError(400, f"prompt token ids must be in [0, {tok.n_vocab})", param="prompt")
        else:
            raise APIError(400, "'prompt' must be a string, a list of token ids, or a list of those",
                           param="prompt")  # fmt: skip
        if not ids:
            raise APIError(400, "the prompt is empty (and the tokenizer has no <|endoftext|> to start from)",
                           param="prompt")  # fmt: skip
        out.append(ids)
    return out


def parse_messages(messages) -> list[dict]:
    """Check OpenAI chat messages and reduce them to ``{"role", "content"}`` with string content (text parts
    joined; "developer" read as "system")."""
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"{where}: needs a 'role' of {sorted(ROLES)}", param=where)
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise APIError(400, f"{where}: unsupported field '{extra[0]}'", param=where)
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):  # fmt: skip
                raise APIError(400, f"{where}: only text content parts are supported", param=where)
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"{where}: 'content' must be a string", param=where)
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out
