"""Slow and oversized clients, stopped where HTTP is parsed (uvicorn has no time limit for a request's head or
body, and answers an over-long head with a reset or a bare 400).

- a request's head (request line and headers) must arrive within ``header_timeout_s`` of the connection opening
  (or of the previous response): a client sending one header line a second is answered 408 and closed;
- its body must arrive within ``body_timeout_s`` of the head: a body shorter than its ``Content-Length`` is
  answered 408 and closed, and the request handler waiting for it sees a disconnect;
- a request line over ``max_url_bytes`` is answered 414, a head over ``max_header_bytes`` 431, before they are
  parsed or buffered further.

Each answer is one JSON error in the API's shape, then the connection closes; nothing reaches the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REASONS = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


@dataclass
class ClientLimits:
    """How long and how large a client's request may be at the protocol level (flags of ``ownlm serve``)."""

    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    max_url_bytes: int = 8192
    max_header_bytes: int = 65536


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response with an OpenAI-style error body, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": None}}).encode()  # fmt: skip
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


def oversized(head: bytes, limits: ClientLimits) -> tuple[int, str] | None:
    """414 or 431 (with its message) when the start of a request, ``head``, is already too large.

    >>> oversized(b"GET /" + b"a" * 9000, ClientLimits())[0]
    414
    >>> oversized(b"GET / HTTP/1.1\\r\\n" + b"x: y\\r\\n" * 20000, ClientLimits())[0]
    431
    >>> oversized(b"GET / HTTP/1.1\\r\\nhost: a\\r\\n\\r\\n", ClientLimits()) is None
    True
    """
    line_end = head.find(b"\n")
    line = len(head) if line_end < 0 else line_end
    if line > limits.max_url_bytes:
        return 414, f"the request line is over {limits.max_url_bytes} bytes (--max-url-bytes)"
    head_end = head.find(b"\r\n\r\n")
    size = len(head) if head_end < 0 else head_end
    if size > limits.max_header_bytes:
        return 431, f"the request headers are over {limits.max_header_bytes} bytes (--max-header-bytes)"
    return None


def guarded_protocol(limits: ClientLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's head and body, and size limits on the head."""

    class Guarded(H11Protocol):
        _timer = None
        _phase: str | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch()

        def connection_lost(self, exc) -> None:
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # still reading a request's head
                too_big = oversized(self.conn.trailing_data[0] + data, limits)
                if too_big is not None:
                    self._refuse(*too_big)
                    return
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _watch(self) -> None:
            """(Re)arm the deadline when the connection enters a new phase: a request's head, or its body."""
            state = self.conn.their_state
            phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
            if phase == self._phase:
                return
            self._cancel()
            self._phase = phase
            if phase is not None and not self.transport.is_closing():
                seconds = limits.header_timeout_s if phase == "head" else limits.body_timeout_s
                self._timer = self.loop.call_later(seconds, self._expire, phase)

        def _expire(self, phase: str) -> None:
            self._timer = None
            if self._phase == phase:
                what = ("the request's headers", "--header-timeout-s") if phase == "head" else \
                    ("the request body", "--body-timeout-s")  # fmt: skip
                seconds = limits.header_timeout_s if phase == "head" else limits.body_timeout_s
                self._refuse(408, f"{what[0]} did not arrive within {seconds:g} s ({what[1]})")

        def _refuse(self, status: int, message: str) -> None:
            self._cancel()
            if not self.transport.is_closing():
                self.transport.write(refusal(status, message))
                self.transport.close()  # the handler waiting for the body sees a disconnect

    return Guarded
