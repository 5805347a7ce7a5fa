"""``http://`` and ``https://`` for asyncio stores: the sync protocol over httpx's async
client, with the synchronous transport's headers, bodies and error mapping (``HTTPCodec``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from syncline.aio.transport import AsyncNotifications, AsyncTransport
from syncline.core.model.errors import TransportError
from syncline.core.spi.transport import Mutation, PullPage, PushLimits, PushResponse
from syncline.plugins.http import HTTPCodec, ServerEvents, broken

T = TypeVar("T")


class AsyncHTTPTransport(HTTPCodec, AsyncTransport):
    """The sync protocol over HTTP(S) with ``httpx.AsyncClient``.

    ``options["httpx_transport"]`` (an ``httpx.AsyncBaseTransport``, such as
    ``httpx.ASGITransport(app)``) replaces the network, for tests and in-process servers."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        kwargs = self._client_options()
        if self.options.get("httpx_transport") is not None:
            kwargs["transport"] = self.options["httpx_transport"]
        self.client = httpx.AsyncClient(**kwargs)

    async def _post(self, path: str, body: Callable[[], dict[str, Any]],
                    parse: Callable[[Any], T]) -> T:
        # Encoding, gzip and parsing run in a thread: a large batch or page would hold the
        # loop for longer than a callback should take.
        data, headers = await asyncio.to_thread(lambda: self._encode(body()))
        try:
            try:
                response = await self.client.post(path, content=data, headers=headers)
            except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
                if not self._stale(exc):
                    raise
                response = await self.client.post(path, content=data, headers=headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            return await asyncio.to_thread(lambda: parse(self._answer(path, response)))
        except TransportError as exc:
            if not self._renegotiate(exc):
                raise
        await self.limits()
        return await self._post(path, body, parse)

    async def limits(self) -> PushLimits | None:
        try:
            response = await self.client.get("v1/schema")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return self._limits(response)

    async def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        return await self._post("v1/push", lambda: self._push_body(mutations),
                                self._push_response)

    async def pull(self, cursor: str | None, limit: int,
                   entities: Sequence[str] | None = None) -> PullPage:
        return await self._post("v1/pull", lambda: self._pull_body(cursor, limit, entities),
                                self._pull_page)

    async def notifications(self, entities: Sequence[str] | None = None
                            ) -> AsyncNotifications | None:
        """``GET v1/changes/live`` streamed with the transport's client (a connection of its
        own in the pool), with the read timeout ``live_timeout`` (default 45 s)."""
        options = self._live_client_options()
        request = self._live_request(self.client, entities)
        request.extensions["timeout"] = options["timeout"].as_dict()
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._live_unreachable(exc) from exc
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            self._live_refused(response)
            return None  # a server without live streams: poll
        return _AsyncEventStream(self.url, response)

    async def aclose(self) -> None:
        await self.client.aclose()


class _AsyncEventStream(AsyncNotifications):
    """A live stream's response read on the loop: its events' change numbers."""

    def __init__(self, url: str, response: httpx.Response) -> None:
        self.url, self.response = url, response

    async def __aiter__(self) -> AsyncIterator[int]:
        events = ServerEvents()
        try:
            async for line in self.response.aiter_lines():
                seq = events.line(line)
                if seq is not None:
                    yield seq
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise broken(self.url, exc) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()
