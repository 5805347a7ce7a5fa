"""A hung test fails with every thread's stack instead of stalling the run (pytest-timeout with
syncline.testing.hangs), under pytest-xdist as CI runs it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HUNG = '''
import signal, threading

def _helper(stop):
    stop.wait()

def test_waits_forever():
    threading.Thread(target=_helper, args=(threading.Event(),), name="helper-thread",
                     daemon=True).start()
    threading.Event().wait()

def test_deaf_to_the_timeout_signal():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # as if stuck in C code
    threading.Event().wait()

def test_quick():
    pass
'''


def test_a_hung_test_fails_with_every_threads_stack_and_the_run_goes_on(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hung=HUNG)
    pytester.makeconftest("import syncline.testing.hangs as hangs\n"
                          "hangs.GRACE = 1.0\n"
                          "pytest_plugins = ['syncline.testing.hangs']\n")
    pytester.makeini("[pytest]\ntimeout = 2\ntimeout_method = signal\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        # the signal: the test fails in place, the other thread's stack in its report
        "*Failed: Timeout*",
        "*Stack of helper-thread*",
        "*in _helper*",
    ])
    result.stdout.fnmatch_lines([
        # the last resort: the worker ends, its stacks in the crash report
        "*crashed while running 'test_hung.py::test_deaf_to_the_timeout_signal'*",
        "*test_deaf_to_the_timeout_signal still ran 3 s after it started*",
        "*in test_deaf_to_the_timeout_signal*",
    ])
