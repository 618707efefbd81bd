"""The server under slow and oversized clients, with raw sockets on 127.0.0.1: a request's head and body each
have a deadline (1 s here; 30 s by default), an over-long request line is 414 and an over-large head 431, a
client's mistake leaves no traceback in the log, and the server keeps serving. The waits below are hang guards
(a generous 20 s bound), not timing assertions."""

import json
import logging
import socket
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ownlm import cli  # noqa: E402
from ownlm.errors import UserError  # noqa: E402
from ownlm.model.checkpoint import save_model  # noqa: E402
from ownlm.model.gpt import GPT, GPTConfig  # noqa: E402
from ownlm.serve.cli import ServeConfig, bind, build_app, serve_in_thread  # noqa: E402
from ownlm.tokenizer import Tokenizer  # noqa: E402

GUARD = 20.0  # seconds: a hang guard, far above the 1 s limits under test


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    return save_model(
        tmp_path_factory.mktemp("serve") / "m", m, Tokenizer(special_tokens={"<|endoftext|>": 256})
    )


@pytest.fixture(scope="module")
def server(model):
    cfg = ServeConfig(run=str(model), device="cpu", header_timeout_s=1.0, body_timeout_s=1.0, max_url_bytes=1024,
                      max_header_bytes=4096, max_tokens_cap=4)  # fmt: skip
    with serve_in_thread(build_app(cfg)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


@pytest.fixture
def server_log(caplog):
    """The server's log records (uvicorn's loggers do not propagate to the root logger caplog watches)."""
    logger = logging.getLogger("uvicorn")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


def tracebacks(log) -> list:
    return [
        r
        for r in log.records
        if r.exc_info or "Traceback" in r.getMessage() or "Exception in" in r.getMessage()
    ]


def connect(server) -> socket.socket:
    s = socket.create_connection(server, timeout=GUARD)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by GUARD)."""
    s.settimeout(GUARD)
    data = b""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    return data


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def ok_request(server) -> int:
    body = json.dumps({"prompt": "a", "max_tokens": 2}).encode()
    with connect(server) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        return status(read_all(s))


def test_a_client_sending_one_header_line_at_a_time_is_cut_off(server):
    with connect(server) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        start, closed = time.monotonic(), False
        for i in range(int(GUARD / 0.2)):  # one header line every 0.2 s, for at most GUARD seconds
            try:
                s.sendall(b"x-slow-%d: y\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            s.setblocking(False)
            try:
                if s.recv(65536, socket.MSG_PEEK):
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
        assert closed and time.monotonic() - start < GUARD
        reply = read_all(s)
    assert reply == b"" or status(reply) == 408
    assert ok_request(server) == 200


def test_an_idle_connection_is_closed_with_408(server):
    with connect(server) as s:
        reply = read_all(s)
    assert status(reply) == 408 and b"--header-timeout-s" in reply


def test_a_body_shorter_than_its_content_length_gets_408(server, server_log):
    with connect(server) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{\"prompt\":")  # fmt: skip
        reply = read_all(s)
    assert status(reply) == 408 and b"--body-timeout-s" in reply
    assert ok_request(server) == 200
    assert not tracebacks(server_log)


@pytest.mark.parametrize(
    "head, code",
    [
        (b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-big: " + b"y" * 200_000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-many: y\r\n" * 1000 + b"\r\n", 431),
    ],
)
def test_oversized_heads_get_414_or_431_not_a_reset(server, head, code):
    with connect(server) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: the answer is still there
        reply = read_all(s)
    assert status(reply) == code, reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["message"]
    assert ok_request(server) == 200


def test_a_client_leaving_mid_body_leaves_no_traceback(server, server_log):
    for _ in range(3):
        with connect(server) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 1000\r\n\r\n{\"prompt\": \"a\"")  # fmt: skip
    # the same body nested 100k deep and a seed of 2**70: client mistakes, answered 400
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"prompt": "a", "max_tokens": 1, "seed": 1180591620717411303424}',
    ):
        with connect(server) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
            assert status(read_all(s)) == 400
    assert ok_request(server) == 200
    time.sleep(0.2)  # let the server finish handling the disconnects before looking at the log
    assert not tracebacks(server_log)


def test_a_port_in_use_or_a_bad_host_is_one_line(model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match="already in use"):
            bind("127.0.0.1", port)
        code = cli.main(["serve", str(model), "--port", str(port), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and "already in use" in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="--host"):
        bind("no-such-host.invalid", 8000)
