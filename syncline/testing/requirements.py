"""Capabilities a suite's test needs, declared as markers and resolved in one place.

A test (or a test class) says what it needs with :func:`requires`; before it runs, the
autouse fixture of :class:`SuiteBase` compares that with the capabilities the backend under
test declares (:data:`syncline.core.spi.backend.CAPABILITIES`) and skips with the reason when
one is missing. The suites never look at a backend's name, and a declared capability is
tested, never excused: a backend that declares one it does not honour fails.

::

    class PersistenceSuite(SuiteBase):
        @requires("persistent")
        def test_data_survives_reopening(self, open_store): ...
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from syncline.core.spi.backend import CAPABILITIES

MARKER = "syncline_requires"


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Mark a test as needing every one of ``capabilities`` (names of ``CAPABILITIES``)."""
    unknown = sorted(set(capabilities) - CAPABILITIES.keys())
    if unknown or not capabilities:
        raise ValueError(f"requires() takes capability names, got {unknown or 'none'}; "
                         f"known: {', '.join(sorted(CAPABILITIES))}")
    mark: pytest.MarkDecorator = getattr(pytest.mark, MARKER)(*capabilities)
    return mark


def capabilities_of(url: str) -> frozenset[str]:
    """What the backend serving ``url`` declares for it (asked without opening a store)."""
    from syncline.core.plugins import plugin_manager
    from syncline.core.store import scheme_of

    return frozenset(plugin_manager().backend_class(scheme_of(url))(url).capabilities)


def skip_unless(declared: Iterable[str], *needed: str) -> None:
    """Skip the running test, naming what is missing, unless ``declared`` has ``needed``."""
    for name in needed:
        assert name in CAPABILITIES, f"unknown capability {name!r}"
    have = frozenset(declared)
    missing = [name for name in needed if name not in have]
    if missing:
        pytest.skip("backend lacks " + "; ".join(
            f"capability {name!r} ({CAPABILITIES[name]})" for name in missing))


def needed_by(item: pytest.Item) -> list[str]:
    """The capabilities the markers on ``item`` (its function, class and module) ask for."""
    needed: list[str] = []
    for marker in item.iter_markers(MARKER):
        needed += [name for name in marker.args if name not in needed]
    return needed


class SuiteBase:
    """The base of every suite mixin: resolves :func:`requires` markers before a test runs.

    Capabilities come from the ``backend_capabilities`` fixture, by default those of the
    backend serving ``store_url``; override it for a suite without a store URL."""

    @pytest.fixture
    def backend_capabilities(self, store_url: str) -> frozenset[str]:
        return capabilities_of(store_url)

    @pytest.fixture(autouse=True)
    def _syncline_requirements(self, request: pytest.FixtureRequest) -> None:
        needed = needed_by(request.node)
        if needed:  # only then: a suite without store_url never asks for capabilities
            skip_unless(request.getfixturevalue("backend_capabilities"), *needed)
