"""Capabilities as markers resolved in one place, and the test stores plugins offer."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncline.testing.requirements import requires
from syncline.testing.stores import TestStoreRegistry, collect_test_stores

pytest_plugins = ["pytester"]

SUITE = '''
import pytest
from syncline.testing.requirements import SuiteBase, requires


class TestOnMemory(SuiteBase):
    @pytest.fixture
    def store_url(self):
        return "memory://"

    @requires("savepoints", "exact_decimals")
    def test_declared(self):
        pass

    @requires("persistent")
    def test_missing(self):
        raise AssertionError("must not run")

    def test_unmarked(self):
        pass


class TestWithoutAStore(SuiteBase):
    def test_needs_no_capability_and_no_store_url(self):
        pass
'''


def test_an_unknown_capability_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match=r"'persistant'.*known: concurrent_writers"):
        requires("persistant")
    with pytest.raises(ValueError):
        requires()


def test_markers_skip_with_the_reason_and_run_what_is_declared(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "*SKIPPED*backend lacks capability 'persistent' (data survives closing and reopening "
        "the store)*"])


def test_the_bundled_backends_offer_their_test_stores_through_the_hook(tmp_path: Path) -> None:
    stores = collect_test_stores()
    assert {"memory", "memory-named", "sqlite", "sqlite-memory", "postgresql"} <= set(
        stores.names())
    assert sorted(stores.defaults()) == ["memory", "postgresql", "sqlite"]
    assert stores.stores["postgresql"].fixtures == ("syncline_postgres_server",)
    assert stores.stores["sqlite"].load()(tmp_path).startswith(f"sqlite:///{tmp_path}/")


def test_a_test_store_name_is_registered_once() -> None:
    registry = TestStoreRegistry()
    registry.register("mine", lambda tmp_path: "memory://")
    with pytest.raises(ValueError, match="'mine' is already registered"):
        registry.register("mine", lambda tmp_path: "memory://")
