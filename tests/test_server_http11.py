"""The server's connections, spoken to with raw sockets: a client that sends nothing, part of a
request head or part of a body is answered and cut off after the configured timeouts, and
what uvicorn cannot parse is answered in the protocol's error shape, not text/plain."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

import syncline
from syncline.core.model.errors import ConfigurationError
from syncline.server.app import ServerConfig
from syncline.server.http11 import Timeouts, protocol_class
from syncline.testing.server import LiveServer

registry = syncline.EntityRegistry()

#: how long a test waits for the server to act (the timeouts are far shorter)
PATIENCE = 30.0


@registry.entity("conn_notes", syncs=True)
@attrs.define
class Note:
    id: str
    text: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = ServerConfig(store=f"sqlite:///{tmp_path_factory.mktemp('conn')}/server.db",
                          tokens={"t": "alice"}, header_timeout=0.5, body_timeout=0.5,
                          keep_alive_timeout=0.5)
    with LiveServer(config, [Note]) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def assert_error(raw: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = answer(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error: dict[str, Any] = body["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return error


def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        assert read_all(sock) == b""  # closed without an answer: no request to answer


def test_a_partial_request_head_is_answered_408_and_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v1/pull HTTP/1.1\r\nHost: x\r\nAuthori")
        error = assert_error(read_all(sock), 408, "timeout")
        assert "head" in error["message"]


def test_a_head_trickled_byte_by_byte_does_not_keep_the_connection(
        server: LiveServer) -> None:
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 10_000
    with connect(server) as sock:
        sent = 0
        try:
            for i in range(0, len(head), 16):  # keeps sending, never finishes the head
                sock.sendall(head[i:i + 16])
                sent += 1
                sock.settimeout(0.05)
                try:
                    if sock.recv(65536, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    continue
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(PATIENCE)
        assert_error(read_all(sock), 408, "timeout")
        assert sent < len(head) // 16  # cut off before the trickle ended


def test_a_stalled_body_is_answered_408_and_changes_nothing(server: LiveServer) -> None:
    body = json.dumps({"mutations": [{"id": "m1", "entity": "conn_notes", "action": "create",
                                      "record_id": "n1",
                                      "payload": {"id": "n1", "text": "x"}}]}).encode()
    with connect(server) as sock:
        sock.sendall(b"POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:20])
        error = assert_error(read_all(sock), 408, "timeout")
        assert "body" in error["message"]
    assert server.sync.server.store.repository(Note).count() == 0


def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_all(sock)  # the answer, then the close once the connection idles
        status, headers, body = answer(raw)
        assert status == 200 and body["status"] == "ok"
        assert headers.get("connection") != "close"  # kept alive, then timed out


def test_requests_on_a_kept_alive_connection_each_get_their_own_deadline(
        server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("v1/health").status_code == 200


def test_malformed_http_is_answered_in_the_error_shape(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        assert_error(read_all(sock), 400, "bad_request")
    with connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert_error(read_all(sock), 400, "bad_request")


def test_an_oversize_request_head_is_answered_431(server: LiveServer) -> None:
    with connect(server) as sock:
        # the server may answer and close before reading it all
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000
                         + b"\r\n\r\n")
        error = assert_error(read_all(sock), 431, "too_large")
        assert "16384" in error["message"]


@pytest.mark.parametrize("timeouts", [Timeouts(header=0), Timeouts(body=-1),
                                      Timeouts(keep_alive=True),  # type: ignore[arg-type]
                                      Timeouts(header=1e9)])
def test_timeouts_out_of_range_are_configuration_errors(timeouts: Timeouts) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
        protocol_class(timeouts)
