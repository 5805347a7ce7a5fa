"""The proof for plugin authors: the example plugin under examples/, installed with pip like
any third-party distribution, is listed by `syncline plugins` and passes the conformance suites."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "syncline-jsonl"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example: pip builds a local project in place (build/, *.egg-info) and
    pytest caches bytecode beside the tests, and tests write only under temporary folders."""
    copy = tmp_path_factory.mktemp("source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    return copy


@pytest.fixture(scope="module")
def installed(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment where syncline-jsonl is installed (pip --target on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--quiet", "--target", str(target), str(example)], check=True, timeout=300,
                   cwd=target)
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_syncline_plugins_lists_the_example(installed: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "syncline.cli", "plugins", "--json"],
                         env=installed, capture_output=True, text=True, check=True, timeout=60)
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["jsonl"]["distribution"] == "syncline-jsonl"
    assert rows["jsonl"]["backends"] == ["jsonl"]
    assert rows["newest-wins"]["hooks"] == ["syncline_resolve_conflict"]


def test_the_example_passes_the_conformance_suites(installed: dict[str, str], example: Path,
                                                   tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", str(example / "tests")], env=installed,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


APP_TEST = """
import pytest
from syncline.testing.backend_suite import CrudSuite
from syncline.testing.entities import Counter

@pytest.fixture
def syncline_entities():
    return [Counter]

def test_app_store(syncline_store, syncline_store_url):
    assert syncline_store_url.startswith("jsonl:///")
    syncline_store.repository(Counter).upsert(Counter("a", 1))
    assert syncline_store.repository(Counter).get("a") == Counter("a", 1)

class TestCrudOnTheChosenBackend(CrudSuite):
    @pytest.fixture
    def store_url(self, syncline_store_url):
        return syncline_store_url
"""


def test_syncline_backend_runs_a_third_party_backend(installed: dict[str, str],
                                                     tmp_path: Path) -> None:
    """The example offers its test store through syncline_register_test_stores, so
    ``--syncline-backend jsonl`` runs the fixtures and a suite mixin on it."""
    (tmp_path / "test_app.py").write_text(APP_TEST)
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "--syncline-backend", "jsonl", "test_app.py"],
                         env=installed, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "test_app_store[jsonl] PASSED" in out.stdout
    assert "test_get_returns_what_was_inserted[jsonl] PASSED" in out.stdout
    assert "failed" not in out.stdout and "skipped" not in out.stdout

