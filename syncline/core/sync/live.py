"""Listening to the server's live stream: the decisions the thread worker and the asyncio
worker share (when to pull, when to poll instead, how long to wait before reopening), with
the I/O left to each (a blocking iterator in a thread, an async one on the loop)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("syncline.worker")

#: seconds before reopening a broken or refused stream: doubling from FIRST_DELAY to MAX_DELAY
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


class LiveState:
    """Whether a worker listens, whether its stream is open now, and the reopening backoff.

    A listener loops: ``opening`` failed -> :meth:`refused`; the transport has no stream ->
    :meth:`absent` (stop listening: poll at the interval); each notice -> :meth:`heard` (pull
    now; True when the stream has just (re)opened, the server being reachable again); the
    stream ended -> :meth:`broke` (pull once now, then poll every ``fallback`` seconds); then
    wait :meth:`backoff` seconds and reopen.
    """

    def __init__(self, fallback: float) -> None:
        #: seconds between polls while the stream is down (at most the worker's interval)
        self.fallback = fallback
        #: a listener runs (False: none started, or the transport has no stream)
        self.listening = False
        #: whether the stream is open now
        self.streaming = False
        #: how many times the stream opened (reconnections show here)
        self.opened = 0
        self._delay = FIRST_DELAY

    def refused(self, exc: BaseException) -> None:
        log.debug("the live stream cannot be opened (%s); polling every %.0f s", exc,
                  self.fallback)

    def absent(self) -> None:
        log.debug("the transport offers no live stream; polling only")
        self.listening = False

    def heard(self) -> bool:
        """A notice arrived: pull now. True when it is the stream's first (it just opened)."""
        self._delay = FIRST_DELAY
        if self.streaming:
            return False
        self.streaming = True
        self.opened += 1
        return True

    def broke(self, exc: BaseException | None) -> None:
        """The stream ended (``exc``: how it broke); the caller pulls once now."""
        if exc is not None:
            log.info("the live stream broke (%s); polling every %.0f s until it is back", exc,
                     self.fallback)
        self.streaming = False

    def backoff(self) -> float:
        """Seconds to wait before reopening (doubling while it keeps failing)."""
        delay = self._delay
        self._delay = min(delay * 2, MAX_DELAY)
        return delay

    def poll_every(self, interval: float) -> float:
        """The polling interval now: ``fallback`` while listening with the stream down."""
        if self.listening and not self.streaming:
            return min(interval, self.fallback)
        return interval


class Listening:
    """What a worker (thread or asyncio) shows of its live stream, and how a notice wakes it
    (``_told`` and ``_wake`` are its events: a notice skips the debounce)."""

    state: LiveState
    _told: Any
    _wake: Any

    @property
    def fallback(self) -> float:
        """Seconds between polls while the live stream is down (at most ``interval``)."""
        return self.state.fallback

    @fallback.setter
    def fallback(self, seconds: float) -> None:
        self.state.fallback = seconds

    @property
    def streaming(self) -> bool:
        """Whether the live stream is open now."""
        return self.state.streaming

    @property
    def opened(self) -> int:
        """How many times the live stream opened (reconnections show here)."""
        return self.state.opened

    def _notice(self) -> None:
        self._told.set()
        self._wake.set()
