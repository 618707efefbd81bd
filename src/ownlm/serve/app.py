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
import functools
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ownlm.config import check_number
from ownlm.errors import UserError
from ownlm.io import load_json_text
from ownlm.runtime.sampling import SamplingConfig
from ownlm.runtime.text import stop_ids
from ownlm.serve.engine import Engine, Event, SamplingParams

PAGE = Path(__file__).parent / "static" / "index.html"


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
               api_key: str | None = None, limits: Limits | None = None,
               defaults: SamplingConfig | None = None) -> FastAPI:  # fmt: skip
    """The FastAPI app serving ``engine``'s model as ``model_id``; it starts the engine's loop on start-up and
    stops it on shut-down. ``template``: the chat template (None: chat requests answer 400 ``chat_error``).
    ``defaults``: the sampling settings a request gets for the fields it leaves out (``serve``'s flags)."""
    api = _API(
        engine, model_id, template, chat_error, api_key, limits or Limits(), defaults or SamplingConfig()
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="ownlm", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine, app.state.model_id = engine, model_id
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crash)
    app.get("/health")(api.health)
    app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)(_page)
    app.get("/v1/models")(api.models)
    app.get("/v1/models/{name:path}")(api.model)
    app.post("/v1/completions")(api.completions)
    app.post("/v1/chat/completions")(api.chat_completions)
    return app


async def _api_error(request: Request, e: APIError):
    return JSONResponse(e.body(), status_code=e.status)


async def _http_error(request: Request, e: StarletteHTTPException):
    kind = "not_found" if e.status_code == 404 else None
    return JSONResponse(APIError(e.status_code, str(e.detail), code=kind).body(), status_code=e.status_code)


async def _crash(request: Request, e: Exception):
    body = APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error").body()
    return JSONResponse(body, status_code=500)


async def _page():
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


class _API:
    """The routes' handlers and what they share: the engine, the model's name, template and limits."""

    def __init__(self, engine: Engine, model_id: str, template, chat_error: str | None, api_key: str | None,
                 limits: Limits, defaults: SamplingConfig):  # fmt: skip
        self.engine, self.model_id, self.template, self.api_key = engine, model_id, template, api_key
        self.chat_error = chat_error and f"{chat_error}: use /v1/completions"
        self.limits, self.defaults = limits, defaults
        self.tok, self.block = engine.tokenizer, engine.block_size
        self.max_prompt = min(limits.max_prompt_tokens or self.block - 1, self.block - 1)
        self.stop_ids = stop_ids(self.tok, template)  # end of text, and the template's end of turn
        self.created = int(time.time())

    # ---------------------------------------------------------------------------------------- routes

    async def health(self):
        e = self.engine
        return {"status": "ok", "model": self.model_id, "active": len(e.active), "waiting": len(e.waiting),
                "finished": dict(e.finished), "sampling": self._default_sampling()}  # fmt: skip

    async def models(self, request: Request):
        self.authorize(request)
        return {"object": "list", "data": [self.model_card()]}

    async def model(self, name: str, request: Request):
        self.authorize(request)
        if name != self.model_id:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return self.model_card()

    async def completions(self, request: Request):
        self.authorize(request)
        body = await self.read_body(request, COMPLETION_FIELDS)
        prompts = [self.check_prompt(p, "prompt") for p in encode_prompts(body.get("prompt"), self.tok)]
        params, n = self.sampling(body)
        if len(prompts) * n > self.limits.max_choices:
            raise APIError(400, f"{len(prompts)} prompts x n={n} is over {self.limits.max_choices} choices",
                           param="n")  # fmt: skip
        return await self.respond(request, body, prompts, params, n, chat=False)

    async def chat_completions(self, request: Request):
        self.authorize(request)
        body = await self.read_body(request, CHAT_FIELDS)
        if self.template is None:
            raise APIError(400, self.chat_error or "this model has no chat template; use /v1/completions",
                           param="messages", code="no_chat_template")  # fmt: skip
        messages = parse_messages(body.get("messages"))
        try:
            ids = self.template.encode_prompt(self.tok, messages)
        except UserError as e:
            raise APIError(400, f"messages: {e}", param="messages") from None
        params, n = self.sampling(body)
        return await self.respond(request, body, [self.check_prompt(ids, "messages")], params, n, chat=True)

    # ---------------------------------------------------------------------------------------- reading

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "ownlm",
                "context_length": self.block}  # fmt: skip

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer KEY' with "
                           "the key the server was started with (--api-key)", code="invalid_api_key")  # fmt: skip

    async def read_body(self, request: Request, known: set[str]) -> dict:
        limit = self.limits.max_body_bytes
        too_big = APIError(
            413, f"request body over {limit} bytes (--max-body-bytes)", code="request_too_large"
        )
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > limit:
            raise too_big
        chunks, n = [], 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise too_big
                chunks.append(chunk)
        except ClientDisconnect:  # gone mid-body (or cut off by --body-timeout-s): an answer, not a traceback
            raise APIError(400, "the request body ended before its Content-Length") from None
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
        if model is not None and model != self.model_id:
            raise APIError(404, f"The model '{model}' does not exist; this server has '{self.model_id}'",
                           param="model", code="model_not_found")  # fmt: skip
        return body

    def check_prompt(self, ids: list[int], param: str) -> list[int]:
        if len(ids) > self.max_prompt:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most {self.max_prompt} "
                           f"(the model's context is {self.block} tokens)", param=param,
                           code="context_length_exceeded")  # fmt: skip
        return ids

    def _default_sampling(self) -> dict:
        """The server's sampling defaults (``serve``'s flags), with max_tokens resolved for this model."""
        d = self.defaults
        return {"temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k,
                "repetition_penalty": d.repetition_penalty,
                "max_tokens": min(d.max_new(self.block), self.limits.max_tokens_cap)}  # fmt: skip

    def sampling(self, body: dict) -> tuple[SamplingParams, int]:
        """The request's sampling settings (the server's defaults for what it leaves out) and its ``n``."""
        d = self._default_sampling()
        n = _number(body, "n", 1, f"[1, {self.limits.max_choices}]", integer=True)
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        params = SamplingParams(
            max_new_tokens=_number(body, name, d["max_tokens"], f"[1, {self.limits.max_tokens_cap}]", integer=True),
            temperature=_number(body, "temperature", d["temperature"], "[0, 2]"),
            top_p=_number(body, "top_p", d["top_p"], "(0, 1]"),
            top_k=_number(body, "top_k", d["top_k"], "[0, inf)", integer=True),
            repetition_penalty=_number(body, "repetition_penalty", d["repetition_penalty"], "(0, 100]"),
            stop=_stops(body), stop_ids=self.stop_ids,
            seed=_number(body, "seed", self.defaults.seed, "[0, inf)", integer=True),
        )  # fmt: skip
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise APIError(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options")
        if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
            raise APIError(400, "'stream_options' may only hold 'include_usage'", param="stream_options")
        return params, n

    # ---------------------------------------------------------------------------------------- answering

    def submit_all(self, prompts: list[list[int]], params: SamplingParams, n: int, queue: asyncio.Queue):
        """One engine sequence per prompt and choice; each emits ``(its index, event)`` into ``queue``."""
        loop = asyncio.get_running_loop()
        tickets = []
        for p, prompt in enumerate(prompts):
            for j in range(n):
                seed = None if params.seed is None else params.seed + j  # choice j: its own stream of numbers
                one = dataclasses.replace(params, seed=seed)
                emit = functools.partial(_put, loop, queue, p * n + j)
                try:
                    tickets.append(self.engine.submit(prompt, one, emit, self.limits.timeout_s))
                except RuntimeError as e:
                    for t in tickets:
                        t.cancel()
                    raise APIError(503, str(e), type="server_error") from None
        return tickets

    async def respond(self, request: Request, body: dict, prompts: list[list[int]], params: SamplingParams,
                      n: int, chat: bool):  # fmt: skip
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        tickets = self.submit_all(prompts, params, n, queue)

        def cancel_all() -> None:
            for t in tickets:
                t.cancel()

        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        usage_prompt = sum(len(p) for p in prompts)
        meta = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_id}  # fmt: skip
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self.stream_chunks(queue, len(tickets), meta, chat, usage_prompt, include_usage)
            return _EventStream(chunks, on_close=cancel_all)
        try:
            got = await self.collect(request, queue, len(tickets))
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

    async def collect(self, request: Request, queue: asyncio.Queue, count: int):
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
                        raise self.error_for(ev)
                    finish[i], made[i] = ev.finish, ev.completion_tokens
            if time.monotonic() - checked > 0.25:  # nobody to answer? respond's finally cancels the work
                if await request.is_disconnected():
                    return None
                checked = time.monotonic()
        return texts, finish, made

    async def stream_chunks(self, queue: asyncio.Queue, count: int, meta: dict, chat: bool, usage_prompt: int,
                            include_usage: bool):  # fmt: skip
        """Server-sent events: each choice's new text as it comes, its finish reason, usage, then [DONE]."""
        meta = {**meta, "object": "chat.completion.chunk" if chat else "text_completion"}
        extra = {"usage": None} if include_usage else {}
        if chat:
            for i in range(count):
                yield _chunk(meta, extra, chat, i, "", role=True)
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
                        yield "data: " + json.dumps(self.error_for(ev).body()) + "\n\n"
                        merged[i][1] = "error"
            for i, (text, finish) in merged.items():
                if finish == "error":
                    continue
                if text:
                    yield _chunk(meta, extra, chat, i, text)
                if finish is not None:
                    yield _chunk(meta, extra, chat, i, "", finish)
        if include_usage:
            usage = {"prompt_tokens": usage_prompt, "completion_tokens": made,
                     "total_tokens": usage_prompt + made}  # fmt: skip
            yield "data: " + json.dumps({**meta, "choices": [], "usage": usage}) + "\n\n"
        yield "data: [DONE]\n\n"

    def error_for(self, ev: Event) -> APIError:
        """The error a sequence that ended badly (timeout, error, cancelled) is answered with."""
        status = 504 if ev.finish == "timeout" else 500 if ev.finish == "error" else 503
        if ev.finish == "timeout":
            text = (
                f"generation took longer than the server's limit of {self.limits.timeout_s:g} s (--timeout-s)"
            )
        else:
            text = f"generation failed: {ev.error or ev.finish}"
        return APIError(status, text, type="server_error", code=ev.finish)


def _put(loop, queue: asyncio.Queue, index: int, ev: Event) -> None:
    """The engine thread's ``emit``: hand ``(index, ev)`` to the request's event loop."""
    loop.call_soon_threadsafe(queue.put_nowait, (index, ev))


def _chunk(meta: dict, extra: dict, chat: bool, i: int, text: str, finish: str | None = None,
           role: bool = False) -> str:  # fmt: skip
    """One server-sent event: choice ``i``'s new ``text`` (a chat delta, or completion text)."""
    if chat:
        delta = {"role": "assistant", "content": text} if role else {"content": text} if text else {}
        choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
    return "data: " + json.dumps({**meta, "choices": [choice], **extra}, ensure_ascii=False) + "\n\n"


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
