"""The HTTP transport: ``http://host:port/`` and ``https://...`` speak to a syncline server.

One keep-alive httpx client per store, timeouts, gzip both ways, the bearer token from the
``token`` option (``transport_options={"token": ...}``, ``[sync] token`` in syncline.toml, or
``SYNCLINE_SYNC_TOKEN``). Status codes map to the engine's errors: connection failures,
timeouts, 5xx and 429 are retryable (``Retry-After`` honoured); other 4xx are permanent.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from syncline.core.model.errors import AuthenticationError, SerializationError, TransportError
from syncline.core.spi.hookspecs import hookimpl
from syncline.core.spi.registries import TransportRegistry
from syncline.core.spi.transport import (
    PROTOCOL_VERSION,
    CursorRejectedError,
    Mutation,
    Notifications,
    PermanentTransportError,
    ProtocolMismatchError,
    PullPage,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    Transport,
    UpgradeRequiredError,
    from_wire,
    to_wire,
)

GZIP_FROM = 1024  # bytes: smaller bodies are not worth compressing


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _version(value: Any, default: int = 1) -> int:
    return value if type(value) is int else default


class HTTPCodec:
    """What the sync and async HTTP transports share: headers, bodies, answers and errors."""

    url: str
    options: dict[str, Any]
    client: Any
    protocol: int
    #: the server's range was read (``_limits``): the protocol spoken is settled
    _negotiated: bool

    def _client_options(self) -> dict[str, Any]:
        """The keyword arguments of the transport's httpx client (sync or async)."""
        import httpx

        token = self.options.get("token") or os.environ.get("SYNCLINE_SYNC_TOKEN")
        # ``protocol`` pins an older version (tests of older clients); else the highest the
        # server accepts, found with its limits
        self.protocol = int(self.options.get("protocol", PROTOCOL_VERSION))
        self._negotiated = False
        # one id per transport: the server leaves this client's own pushes out of its live
        # stream (it pulls right after pushing)
        headers = {"Accept-Encoding": "gzip", "Content-Type": "application/json",
                   "Syncline-Protocol": str(self.protocol), "Syncline-Client": uuid.uuid4().hex}
        schema_version = self.options.get("schema_version")
        if schema_version is not None:
            headers["Syncline-Schema"] = str(int(schema_version))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = float(self.options.get("timeout", 30.0))
        return {"base_url": self.url.rstrip("/") + "/", "headers": headers,
                "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0))}

    def _live_client_options(self) -> dict[str, Any]:
        """The live stream's own client: the transport's headers, a read timeout
        (``live_timeout``) long enough for the server's heartbeats."""
        import httpx

        return {"base_url": self.client.base_url, "headers": self.client.headers,
                "timeout": httpx.Timeout(float(self.options.get("live_timeout", 45.0)),
                                         connect=10.0)}

    @staticmethod
    def _live_request(client: Any, entities: Sequence[str] | None) -> Any:
        params = {"entities": ",".join(entities)} if entities else None
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        return client.build_request("GET", "v1/changes/live", params=params, headers=headers)

    def _live_unreachable(self, exc: Exception) -> RetryableTransportError:
        return RetryableTransportError(f"{self.url}: cannot open the live stream ({exc})")

    def _live_refused(self, response: Any) -> None:
        """A stream answered other than 200 (its body read): return for 404 (a server
        without live streams: poll), else raise its error."""
        if response.status_code != 404:
            raise self._error("v1/changes/live", response)

    @staticmethod
    def _encode(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {}
        if len(data) >= GZIP_FROM:
            data = gzip.compress(data, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        return data, headers

    @staticmethod
    def _stale(exc: Exception) -> bool:
        """Whether the server closed a kept-alive connection as the request went out on it
        (its keep-alive timeout; no answer, or a reset): sent again at once on a new one.
        Safe: a pull changes nothing, and a push sent twice is answered ``duplicate``
        (mutation ids). Timeouts and refused connections are not retried here."""
        text = str(exc)
        return any(sign in text for sign in (
            "without sending a response", "Connection reset by peer", "Broken pipe"))

    def _unreachable(self, exc: Exception) -> RetryableTransportError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return RetryableTransportError(f"{self.url}: timed out ({exc})")
        return RetryableTransportError(f"{self.url}: cannot reach the server ({exc})")

    def _answer(self, path: str, response: Any) -> Any:
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise RetryableTransportError(f"{self.url}: the answer is not JSON") from exc
        raise self._error(path, response)

    def _error(self, path: str, response: Any) -> TransportError:
        code, message = self._message(response)
        status = response.status_code
        text = f"{self.url}{path}: {status} {message}"
        if status in (408, 425, 429) or status >= 500:
            return RetryableTransportError(
                text, retry_after=_retry_after(response.headers.get("retry-after")),
                status=status)
        if status in (401, 403):
            return AuthenticationError(text)
        if code == "invalid_cursor":
            return CursorRejectedError(text, status=status)
        if code == "unsupported_protocol":  # no mutation's fault: nothing is dead-lettered
            return ProtocolMismatchError(text)
        if code == "upgrade_required":  # the app's schema version: nothing is dead-lettered
            return UpgradeRequiredError(text, status=status)
        return PermanentTransportError(text, status=status)

    @staticmethod
    def _message(response: Any) -> tuple[str | None, str]:
        try:
            error = response.json()["error"]
            return error.get("code"), str(error["message"])
        except Exception:
            return None, str(response.text[:200])

    def _limits(self, response: Any) -> PushLimits | None:
        self._negotiated = True
        if response.status_code == 404:
            self._speak(1)  # a server from before versions: protocol 1
            return None  # and no limits published
        if response.status_code != 200:
            raise self._error("v1/schema", response)
        try:
            described = response.json()
            limits = described["limits"]
            found = PushLimits(max_mutations=int(limits["max_mutations"]),
                               max_bytes=int(limits["max_body_bytes"]))
        except (ValueError, KeyError, TypeError):
            return None
        accepted = described.get("protocol")  # absent: a server of protocol 1
        low, high = ((_version(accepted.get("min")), _version(accepted.get("max")))
                     if isinstance(accepted, dict) else (1, 1))
        spoken = min(self.protocol, high)
        if spoken < low:
            raise ProtocolMismatchError(
                f"{self.url}: the server speaks the sync protocol versions {low} to {high}, "
                f"this client {self.protocol}; upgrade the older side")
        self._speak(spoken)  # an older server: speak its version (whole records)
        return found

    def _speak(self, version: int) -> None:
        self.protocol = version
        self.client.headers["Syncline-Protocol"] = str(version)

    def _renegotiate(self, exc: TransportError) -> bool:
        """Whether to read the server's range and send again: refused as a newer protocol
        before the range was read (a pull before any push, to an older server)."""
        return isinstance(exc, ProtocolMismatchError) and not self._negotiated

    @staticmethod
    def _push_body(mutations: Sequence[Mutation]) -> dict[str, Any]:
        return {"mutations": [to_wire(m) for m in mutations]}

    @staticmethod
    def _pull_body(cursor: str | None, limit: int,
                   entities: Sequence[str] | None) -> dict[str, Any]:
        request: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if entities:
            request["entities"] = list(entities)
        return request

    def _push_response(self, body: Any) -> PushResponse:
        try:
            return from_wire(body, PushResponse)
        except SerializationError as exc:
            raise PermanentTransportError(f"{self.url}: bad push answer: {exc}") from exc

    def _pull_page(self, body: Any) -> PullPage:
        try:
            return from_wire(body, PullPage)
        except SerializationError as exc:
            raise PermanentTransportError(f"{self.url}: bad pull answer: {exc}") from exc


class HTTPTransport(HTTPCodec, Transport):
    """The sync protocol over HTTP(S) with httpx."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        import httpx

        self._httpx = httpx
        self.client = httpx.Client(**self._client_options())

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        data, headers = self._encode(body)
        try:
            try:
                response = self.client.post(path, content=data, headers=headers)
            except (self._httpx.RemoteProtocolError, self._httpx.NetworkError) as exc:
                if not self._stale(exc):
                    raise
                response = self.client.post(path, content=data, headers=headers)
        except self._httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            return self._answer(path, response)
        except TransportError as exc:
            if not self._renegotiate(exc):
                raise
        self.limits()
        return self._post(path, body)

    def limits(self) -> PushLimits | None:
        """Read from the server's ``GET v1/schema`` (``limits``)."""
        try:
            response = self.client.get("v1/schema")
        except self._httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._limits(response)

    def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        return self._push_response(self._post("v1/push", self._push_body(mutations)))

    def pull(self, cursor: str | None, limit: int,
             entities: Sequence[str] | None = None) -> PullPage:
        return self._pull_page(self._post("v1/pull", self._pull_body(cursor, limit, entities)))

    def notifications(self, entities: Sequence[str] | None = None) -> Notifications | None:
        """``GET v1/changes/live`` (server-sent events); its own connection, with a read
        timeout (``live_timeout``, default 45 s: three of the server's heartbeats) that
        notices a dead connection."""
        httpx = self._httpx
        client = httpx.Client(**self._live_client_options())
        try:
            response = client.send(self._live_request(client, entities), stream=True)
        except httpx.HTTPError as exc:
            client.close()
            raise self._live_unreachable(exc) from exc
        if response.status_code != 200:
            response.read()
            client.close()
            self._live_refused(response)
            return None  # a server without live streams: poll
        return _EventStream(self.url, client, response)

    def close(self) -> None:
        self.client.close()


class ServerEvents:
    """Server-sent events, a line at a time, to change numbers: the ``seq`` of ``ready`` and
    ``change`` events (heartbeats and other events tell nothing)."""

    def __init__(self) -> None:
        self.event, self.data = "message", ""

    def line(self, line: str) -> int | None:
        """The change number an event ends with on this line, if it does."""
        if line == "":
            event, data = self.event, self.data
            self.event, self.data = "message", ""
            return _seq(data) if event in ("ready", "change") else None
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data += line[5:].strip()
        return None


class _EventStream(Notifications):
    """A live stream's response read in a thread: its events' change numbers."""

    def __init__(self, url: str, client: Any, response: Any) -> None:
        self.url, self.client, self.response = url, client, response

    def __iter__(self) -> Iterator[int]:
        import httpx

        events = ServerEvents()
        try:
            for line in self.response.iter_lines():
                seq = events.line(line)
                if seq is not None:
                    yield seq
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise broken(self.url, exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        # From another thread: closing the response does not wake a read blocked on its
        # socket (until the next heartbeat); shutting the socket down does.
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.client.close()


def broken(url: str, exc: Exception) -> RetryableTransportError:
    return RetryableTransportError(f"{url}: the live stream broke ({exc})")


def _seq(data: str) -> int:
    try:
        seq = json.loads(data).get("seq", 0)
    except (ValueError, AttributeError):
        return 0
    return seq if type(seq) is int else 0


@hookimpl
def syncline_register_transports(registry: TransportRegistry) -> None:
    for scheme in ("http", "https"):
        registry.register(scheme, HTTPTransport, description="a syncline server over HTTP")
