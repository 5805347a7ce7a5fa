"""A pytest plugin behind pytest-timeout: stacks of every thread when the timeout cannot stop a
test (add ``"syncline.testing.hangs"`` to ``pytest_plugins``; needs pytest-timeout).

pytest-timeout's ``signal`` method fails a test that overruns, with every thread's stack in the
report, and the run goes on. A main thread stuck where a signal handler never runs (inside C
code) would still hang the run; so at the timeout plus ``GRACE`` seconds, :mod:`faulthandler`
writes every thread's stack and ends the process. Under pytest-xdist the worker's output is not
shown, so the stacks go to a file that the controller adds to the "worker crashed" report.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest

GRACE = 60.0  # seconds after the timeout for the signal to get through
_HANG_DIR = "syncline_hang_dir"

_dir_key = pytest.StashKey[str]()  # on the xdist controller: the folder of the workers' files
_out: IO[str] | None = None
_out_is_report = False  # _out is the worker's file for xdist's report, not the real stderr


def pytest_configure(config: pytest.Config) -> None:
    global _out, _out_is_report
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and _HANG_DIR in workerinput:
        path = Path(workerinput[_HANG_DIR]) / f"{workerinput['workerid']}.txt"
        _out = path.open("w", encoding="utf-8")
        _out_is_report = True
    elif workerinput is None:
        # The real stderr: fd 2 is not captured yet, and stays ours after the test's capture.
        _out = os.fdopen(os.dup(2), "w", encoding="utf-8")
        if config.pluginmanager.hasplugin("xdist"):
            config.stash[_dir_key] = tempfile.mkdtemp(prefix="syncline-hangs-")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _out
    faulthandler.cancel_dump_traceback_later()
    if _out is not None:
        _out.close()
        _out = None
    if _dir_key in config.stash:
        shutil.rmtree(config.stash[_dir_key], ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller: tell each worker where to write its stacks."""
    if _dir_key in node.config.stash:
        node.workerinput[_HANG_DIR] = node.config.stash[_dir_key]


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Any) -> None:
    """xdist, on the controller: a worker died in a test; add the stacks it wrote, if any."""
    node = getattr(report, "node", None)
    if node is None or _dir_key not in node.config.stash:
        return
    path = Path(node.config.stash[_dir_key]) / f"{node.gateway.id}.txt"
    stacks = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if stacks.strip():
        report.longrepr = f"{report.longrepr}\n{stacks}"
        path.unlink()


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the last resort beside pytest-timeout's own timer (returning None keeps it)."""
    if _out is not None and settings.timeout and settings.timeout > 0:
        if _out_is_report:  # faulthandler's own header does not name the test
            _out.write(f"{item.nodeid} still ran {settings.timeout + GRACE:.0f} s after it "
                       "started (pytest-timeout could not stop it); every thread's stack:\n")
            _out.flush()
        faulthandler.dump_traceback_later(settings.timeout + GRACE, exit=True, file=_out)


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    faulthandler.cancel_dump_traceback_later()
    if _out is not None and _out_is_report:  # the file keeps only a hang's stacks
        _out.seek(0)
        _out.truncate()
