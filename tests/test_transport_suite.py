"""The transport suite on the bundled mock transport."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from syncline.plugins.mock import MockServer, MockTransport
from syncline.testing.transport_suite import ENTITIES, TransportEnv, TransportSuite

_names = itertools.count()


class TestMockTransport(TransportSuite):
    @pytest.fixture
    def transport_env(self) -> Iterator[TransportEnv]:
        with MockServer(f"transport-{next(_names)}", entities=ENTITIES) as server:

            def offline() -> None:
                server.offline = True

            yield TransportEnv(MockTransport(f"mock://{server.name}"), server.server, offline)
