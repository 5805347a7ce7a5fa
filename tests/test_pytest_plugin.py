"""The pytest plugin as an application's tests use it (through pytester)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

APP_TEST = '''
import attrs, pytest, syncline

reg = syncline.EntityRegistry()

@reg.entity("app_items", syncs=True)
@attrs.define
class Item:
    id: str
    n: int = 0

@pytest.fixture
def syncline_entities():
    return [Item]

def test_store(syncline_store):
    syncline_store.repository(Item).upsert(Item("a", 1))
    assert syncline_store.repository(Item).count() == 1

@pytest.mark.syncline_backends("memory")
def test_memory_only(syncline_store_url):
    assert syncline_store_url.startswith("memory://")

def test_mock_server(syncline_mock_server):
    assert syncline_mock_server.server.store.repository(Item).count() == 0

@pytest.mark.syncline_backends("memory")
def test_live_server(syncline_live_server, syncline_store_url):
    store = syncline.open(syncline_store_url, entities=[Item],
                          transport=syncline_live_server.url,
                          transport_options={"token": "test-token"})
    store.repository(Item).insert(Item("a", 1))
    assert store.sync().pushed == 1
    store.close()
'''


def test_backends_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--syncline-backend", "memory",
                                "--syncline-backend", "sqlite", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_store?memory?*PASSED*", "*test_store?sqlite?*PASSED*",
                                 "*test_memory_only?memory?*PASSED*"])


def test_backends_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TEST)
    pytester.makeini("[pytest]\nsyncline_backends =\n    sqlite-memory\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2, skipped=2)  # the memory-only tests have no backend here
    result.stdout.fnmatch_lines(["*test_store?sqlite-memory?*PASSED*"])


def test_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=APP_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--syncline-backend", "oracle")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*unknown syncline backend*oracle*memory*postgresql*sqlite*"])


def test_the_plugin_is_registered_and_lazy() -> None:
    code = ("import sys; import syncline.plugins.pytest_plugin as p; "
            "print(sorted(m for m in sys.modules if m.startswith(('syncline.core', "
            "'sqlalchemy', 'cattrs'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    from importlib.metadata import entry_points

    assert "syncline" in {ep.name for ep in entry_points(group="pytest11")}


def test_schema_verifier_fixture_reads_the_dumps_folder(pytester: pytest.Pytester) -> None:
    from syncline.core.storage import schema_dump
    from syncline.testing.entities import Counter

    schema_dump.write(pytester.path / "schemas", schema_dump.dump(3, [Counter]))
    pytester.makeini("[pytest]\nsyncline_schema_dumps = schemas\n")
    pytester.makepyfile(test_dumps="""
def test_versions(syncline_schema_verifier):
    assert syncline_schema_verifier.versions() == [3]
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_schema_verifier_fixture_without_a_folder_says_what_to_set(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_dumps="""
def test_versions(syncline_schema_verifier):
    pass
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*syncline_schema_dumps = tests/schemas*"])
