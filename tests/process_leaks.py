"""Processes the test session started, found by a mark they inherit, and those still alive at its end.

The session puts a token of its own in the environment (`SESSION_VARIABLE`); every process the tests start
inherits it (servers, their workers, Ray's daemons, browsers), including processes whose parent died and
that were re-parented to init, which a walk of the process tree would miss. At the end of the session
`tests/conftest.py` looks for live processes holding the token: each is a process a test failed to stop.
Linux only (/proc); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SESSION_VARIABLE = "AE_TEST_SESSION"
PROC = Path("/proc")


@dataclass(frozen=True)
class Leaked:
    pid: int
    command: str


def environment_mark(token: str) -> bytes:
    return f"{SESSION_VARIABLE}={token}".encode()


def marked_processes(token: str, exclude: frozenset[int] = frozenset()) -> list[Leaked]:
    """Live processes (not zombies) whose environment holds this session's token."""
    mark = environment_mark(token)
    found = []
    for entry in PROC.glob("[0-9]*"):
        pid = int(entry.name)
        if pid in exclude:
            continue
        try:
            environment = (entry / "environ").read_bytes()
            if mark not in environment.split(b"\0"):
                continue
            if _state(entry) == "Z":  # exited, waiting for its parent to reap it: nothing runs
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or another user's
            continue
        found.append(Leaked(pid, command))
    return found


# Helpers that multiprocessing starts for a process (torch and others use it in the pytest process itself):
# each reads a pipe from its parent and ends when the parent does, so it cannot outlive the session.
OWN_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def own_helpers(parent: int) -> frozenset[int]:
    """The children of `parent` that are its own multiprocessing helpers (see OWN_HELPERS)."""
    found = set()
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent and any(h in command for h in OWN_HELPERS):
            found.add(int(entry.name))
    return frozenset(found)


def _state(entry: Path) -> str:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2]  # the field after the command name, which may hold spaces and ')'


def still_alive_after(token: str, grace_s: float, exclude: frozenset[int] = frozenset()) -> list[Leaked]:
    """The marked processes still alive once `grace_s` has passed (processes that are stopping get it)."""
    deadline = time.monotonic() + grace_s
    while True:
        leaked = marked_processes(token, exclude)
        if not leaked or time.monotonic() >= deadline:
            return leaked
        time.sleep(0.2)


def stop(leaked: list[Leaked], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL for what is left after `grace_s`: the machine is left clean either way."""
    for process in leaked:
        _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    remaining = {process.pid for process in leaked}
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if alive(pid)}
        time.sleep(0.1)
    for pid in remaining:
        _signal(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not: it has exited and waits to be reaped)."""
    try:
        return _state(PROC / str(pid)) != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already, or not ours
        os.kill(pid, sig)
