"""docs/migrations.md stays true: its runnable examples run against the code.

Convention (as in tests/test_sync_docs.py, plus files and shell sessions), every marker on the
line right before its code block, all run in document order inside one temporary directory:

* ``<!-- runnable -->`` before a ```python block: executed in one shared namespace;
* ``<!-- runnable: file PATH -->`` before a ```python block: written to PATH (an app module the
  shell and pytest examples import; a later block for the same PATH replaces it);
* ``<!-- runnable: shell -->`` before a ```console block: each ``$ syncline ...`` line runs as
  ``python -m syncline.cli ...`` and must exit with 0, or with N when the line ends in
  ``# exit code N``; the lines below a command must appear in its output;
* ``<!-- runnable: pytest PATH -->`` before a ```python block: written to PATH and run by pytest
  in a subprocess with syncline's pytest plugin, on the sqlite and memory-named backends; it
  must pass.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "migrations.md"
BLOCK = re.compile(
    r"<!-- runnable(?::\s*(?P<kind>file|shell|pytest))?(?:\s+(?P<path>\S+))? -->\n"
    r"```(?P<lang>python|console)\n(?P<code>.*?)```",
    re.DOTALL)
EXIT_CODE = re.compile(r"#\s*exit code (\d+)\s*$")


def runnable_blocks() -> list[tuple[str, str | None, int, str]]:
    """(kind, path, line number, code) of each runnable block, in document order."""
    text = GUIDE.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        kind = match.group("kind") or "exec"
        assert (match.group("lang") == "console") == (kind == "shell"), match.group(0)[:80]
        assert (match.group("path") is not None) == (kind in ("file", "pytest")), (
            match.group(0)[:80])
        line = text.count("\n", 0, match.start("code")) + 1
        blocks.append((kind, match.group("path"), line, match.group("code")))
    return blocks


def test_the_guide_has_runnable_blocks() -> None:
    kinds = [kind for kind, _, _, _ in runnable_blocks()]
    assert kinds.count("exec") >= 10
    assert kinds.count("file") >= 2 and kinds.count("shell") >= 2 and kinds.count("pytest") == 1
    # every marker is followed by a block the pattern understands
    assert GUIDE.read_text().count("<!-- runnable") == len(kinds)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env["COLUMNS"] = "200"  # no wrapping of the CLI's lines
    for name in list(env):
        if name.startswith("SYNCLINE_"):  # the commands say everything they need
            del env[name]
    return env


def _run_shell(tmp_path: Path, line: int, code: str) -> None:
    commands: list[tuple[int, str, list[str]]] = []  # (line, command, expected lines)
    for offset, text in enumerate(code.splitlines()):
        if text.startswith("$ "):
            commands.append((line + offset, text[2:], []))
        elif text.strip():
            assert commands, f"docs/migrations.md line {line + offset}: output before a command"
            commands[-1][2].append(text.strip())
    assert commands, f"the shell block at docs/migrations.md line {line} has no command"
    for where, command, expected in commands:
        args = shlex.split(command, comments=True)
        assert args[0] == "syncline", f"docs/migrations.md line {where}: not a syncline command"
        code_match = EXIT_CODE.search(command)
        want = int(code_match.group(1)) if code_match else 0
        done = subprocess.run([sys.executable, "-m", "syncline.cli", *args[1:]], cwd=tmp_path,
                              env=_env(tmp_path), capture_output=True, text=True, timeout=120,
                              check=False)
        output = [out.strip() for out in done.stdout.splitlines()]
        assert done.returncode == want, (
            f"docs/migrations.md line {where}: `{command}` exited with {done.returncode}, not "
            f"{want}:\n{done.stdout}\n{done.stderr}")
        for text in expected:
            assert text in output, (
                f"docs/migrations.md line {where}: `{command}` did not print {text!r}; it "
                f"printed:\n{done.stdout}\n{done.stderr}")


def _run_pytest_module(tmp_path: Path, path: str, line: int) -> None:
    env = _env(tmp_path)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # plain pytest and syncline's plugin only
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "syncline.plugins.pytest_plugin", "--syncline-backend", "sqlite",
         "--syncline-backend", "memory-named", "--rootdir", str(tmp_path), path],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (
        f"the pytest example at docs/migrations.md line {line} failed:\n{result.stdout}\n"
        f"{result.stderr}")
    # the upgrade test ran on both backends, the memory backend was left out by its marker
    assert re.search(r"\b4 passed\b", result.stdout), result.stdout


def test_the_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        guide_namespace: dict[str, Any]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SYNCLINE_")]:
        monkeypatch.delenv(name)
    namespace = guide_namespace
    namespace["__name__"] = "migration_guide"
    for kind, path, line, code in runnable_blocks():
        if kind == "exec":
            # Pad so that tracebacks point at the guide's own line numbers.
            source = "\n" * (line - 1) + code
            exec(compile(source, str(GUIDE), "exec"), namespace)
        elif kind == "file":
            assert path is not None
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
        elif kind == "shell":
            _run_shell(tmp_path, line, code)
        else:
            assert path is not None
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
            _run_pytest_module(tmp_path, path, line)
