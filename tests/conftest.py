"""The whole session's checks: no process a test started may outlive the session (tests/process_leaks.py)."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # process_leaks, for this file and its tests
from process_leaks import SESSION_VARIABLE, own_helpers, still_alive_after, stop

# Processes that are stopping (a server's drain, Ray's daemons after ray.shutdown) get this long to go.
LEAK_GRACE_S = 15.0


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test runs, so that every process started from here on inherits it.
    os.environ[SESSION_VARIABLE] = uuid.uuid4().hex  # a new one: a pytest run inside a test has its own


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    this_process = os.getpid()
    ignored = frozenset({this_process}) | own_helpers(this_process)  # they end with this process
    leaked = still_alive_after(os.environ[SESSION_VARIABLE], LEAK_GRACE_S, exclude=ignored)
    if not leaked:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(leaked)} process(es) started by the tests are still alive at the end of the session:"]
    lines += [f"  pid {process.pid}: {process.command[:300]}" for process in leaked]
    if reporter is not None:
        reporter.write_line("")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    stop(leaked)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
