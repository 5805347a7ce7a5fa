"""The server's HTTP/1.1 connections: uvicorn's h11 protocol with timeouts and JSON errors.

uvicorn keeps a connection that sends nothing, part of a request head or part of a body open
for as long as the client likes, and answers what it cannot parse itself (a malformed request,
an oversize head) in ``text/plain``. :class:`SynclineH11Protocol` closes such connections after
the configured timeouts and answers in the protocol's error shape:

- **header timeout**: a connection must deliver a whole request head within this many
  seconds of being opened (or of starting its next request); one that sent part of a head is
  answered 408 ``timeout``, one that sent nothing is closed silently;
- **body timeout**: a request whose body stops arriving for this many seconds is answered 408
  ``timeout`` (when the answer has not started) and closed;
- **keep-alive timeout**: an idle connection between two requests is closed (uvicorn's own).

A request uvicorn cannot parse is answered 400 ``bad_request``, a head larger than
``max_head_bytes`` 431 ``too_large``, both with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import attrs
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from syncline.core.model.errors import ConfigurationError

#: the largest request head (request line and headers) uvicorn reads, in bytes
MAX_HEAD_BYTES = 16 * 1024


@attrs.frozen
class Timeouts:
    """Seconds the server waits for a client: see the module's docstring."""

    header: float = 10.0
    body: float = 30.0
    keep_alive: float = 5.0

    def check(self) -> None:
        for name in ("header", "body", "keep_alive"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 < value <= 3600:
                raise ConfigurationError(
                    f"{name.replace('_', '-')}-timeout must be a number of seconds above 0 "
                    f"and at most 3600, got {value!r}")


def error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer in the error shape, closing the connection."""
    body = json.dumps({"error": {"status": status, "code": code, "message": message,
                                 "field": None}}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class SynclineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body timeouts and errors in the JSON shape."""

    timeouts = Timeouts()
    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._received = False  # whether the current request sent any byte yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data:
            self._received = True
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._refuse(error_bytes(431, "Request Header Fields Too Large", "too_large",
                                     f"the request head exceeds {self.max_head_bytes} bytes"))
            return
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # (part of) a request head: the head's deadline runs
            self._arm_head()
        elif state is h11.SEND_BODY:  # the head is in: now each stall of the body counts
            self._cancel_head()
            self._arm_body()
        else:
            self._cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # the next request starts: keep-alive runs
            self._cancel()
            self._received = False

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete \
                and cycle.scope.get("syncline.live"):
            self._close()  # a live stream never ends by itself: close it (clients reconnect)
            return
        super().shutdown()

    def _head_too_large(self, data: bytes) -> bool:
        # h11 only limits a head that arrives in pieces; one read can hold a larger one
        pending = self.conn.trailing_data[0] + data
        end = pending.find(b"\r\n\r\n", 0, self.max_head_bytes + 4)
        return end < 0 and len(pending) > self.max_head_bytes

    def send_400_response(self, msg: str) -> None:
        # h11 refused the request; whether for its head's size it only says in its buffer
        if len(self.conn.trailing_data[0]) > self.max_head_bytes:
            self._refuse(error_bytes(431, "Request Header Fields Too Large", "too_large",
                                     f"the request head exceeds {self.max_head_bytes} bytes"))
        else:
            self._refuse(error_bytes(400, "Bad Request", "bad_request",
                                     "the request is not valid HTTP/1.1"))

    def _refuse(self, answer: bytes) -> None:
        self._cancel()
        self.transport.write(answer)
        self.transport.close()

    # -- timers ------------------------------------------------------------------------------

    def _arm_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.timeouts.header, self._head_expired)

    def _arm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self.timeouts.body, self._body_expired)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel(self) -> None:
        self._cancel_head()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._received:
            self.transport.write(error_bytes(
                408, "Request Timeout", "timeout",
                f"the request head did not arrive within {self.timeouts.header:g} s"))
        self._close()

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(error_bytes(
                408, "Request Timeout", "timeout",
                f"the request body stalled for {self.timeouts.body:g} s"))
        self._close()

    def _close(self) -> None:
        cycle = self.cycle
        if cycle is not None:  # the app sees the client gone (and nothing is done)
            cycle.disconnected = True
            cycle.message_event.set()
        self._cancel()
        self.transport.close()


def protocol_class(timeouts: Timeouts, max_head_bytes: int = MAX_HEAD_BYTES) -> type:
    """A :class:`SynclineH11Protocol` with these limits, for ``uvicorn.Config(http=...)``."""
    timeouts.check()
    return type("SynclineH11Protocol", (SynclineH11Protocol,),
                {"timeouts": timeouts, "max_head_bytes": max_head_bytes})


def uvicorn_config(app: Any, host: str, port: int, timeouts: Timeouts,
                   **options: Any) -> Any:
    """uvicorn's configuration for the sync server: its protocol, limits and timeouts."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=protocol_class(timeouts),
                          timeout_keep_alive=timeouts.keep_alive,  # type: ignore[arg-type]
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES, **options)
