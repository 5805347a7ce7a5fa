"""docs/sync.md stays true: its runnable code blocks run against the code.

Convention: a ```python block immediately preceded by the line ``<!-- runnable -->`` is executed,
in document order, in one shared namespace, inside a temporary working directory. A block
preceded by ``<!-- runnable: pytest -->`` is a complete test module: it is written to a file in
that directory and run by pytest in a subprocess, which must pass. Other blocks are only shown.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "sync.md"
BLOCK = re.compile(r"<!-- runnable(?P<kind>: pytest)? -->\n```python\n(?P<code>.*?)```", re.DOTALL)


def runnable_blocks() -> list[tuple[str, int, str]]:
    """(kind, line number, code) of each runnable block, in document order."""
    text = GUIDE.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        kind = "pytest" if match.group("kind") else "exec"
        blocks.append((kind, line, match.group("code")))
    return blocks


def test_the_guide_has_runnable_blocks() -> None:
    kinds = [kind for kind, _, _ in runnable_blocks()]
    assert kinds.count("exec") >= 5 and kinds.count("pytest") >= 1
    # every ```python block after a runnable marker is caught by the pattern
    text = GUIDE.read_text()
    assert text.count("<!-- runnable") == len(kinds)


def test_the_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        guide_namespace: dict[str, Any]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = guide_namespace
    namespace["__name__"] = "sync_guide"
    pytest_modules = []
    for kind, line, code in runnable_blocks():
        if kind == "pytest":
            pytest_modules.append((line, code))
            continue
        # Pad so that tracebacks point at the guide's own line numbers.
        source = "\n" * (line - 1) + code
        exec(compile(source, str(GUIDE), "exec"), namespace)
    for line, code in pytest_modules:
        _run_pytest_module(tmp_path, line, code)


def _run_pytest_module(tmp_path: Path, line: int, code: str) -> None:
    folder = tmp_path / f"guide_tests_{line}"
    folder.mkdir()
    module = folder / f"test_sync_guide_line_{line}.py"
    module.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the example needs plain pytest only: faster
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (
        f"the pytest example at docs/sync.md line {line} failed:\n{result.stdout}\n"
        f"{result.stderr}")
