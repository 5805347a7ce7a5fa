"""The syncline command, through click's runner and as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from syncline.cli import main


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "plugins" in result.output and "demo" in result.output


def test_demo_on_a_given_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--store", f"sqlite:///{tmp_path}/d.db"])
    assert result.exit_code == 0, result.output
    assert "12 posts stored" in result.output


def test_bad_store_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--store", "nosuch://x"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no backend for scheme 'nosuch'")
    assert "Traceback" not in result.output


def test_demo_as_a_process_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "syncline.cli", "demo"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "posts stored" in out.stdout
    assert list(tmp_path.iterdir()) == []
