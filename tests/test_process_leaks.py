"""The session's leak check finds what it must: a live process started by the tests, even an orphaned one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from process_leaks import SESSION_VARIABLE, alive, marked_processes, own_helpers, still_alive_after, stop

# The sleeper says it runs before it is looked for: while a child is still between fork and exec, the
# kernel may show an empty /proc/PID/environ, which is not what these tests are about.
SLEEPER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]


def start_sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen(SLEEPER, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with process.stdout:  # one line is all it says
        assert process.stdout.readline().strip() == "ready"
    return process


def test_a_process_started_with_the_token_is_found_until_it_is_stopped() -> None:
    token = uuid.uuid4().hex
    process = start_sleeper(env={**os.environ, SESSION_VARIABLE: token})
    try:
        assert [leaked.pid for leaked in marked_processes(token)] == [process.pid]
        assert marked_processes(uuid.uuid4().hex) == []  # another session's token: not ours
    finally:
        stop(marked_processes(token))
    process.wait(timeout=10)
    assert marked_processes(token) == []


def test_an_orphan_whose_parent_exited_is_still_found() -> None:
    token = uuid.uuid4().hex
    # The shell starts a sleeper in the background and exits: the sleeper is re-parented, out of our tree.
    launcher = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        env={**os.environ, SESSION_VARIABLE: token},
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(launcher.stdout.strip())
    try:
        assert [leaked.pid for leaked in still_alive_after(token, grace_s=0.5)] == [orphan]
    finally:
        stop(marked_processes(token))
    assert not alive(orphan)
    assert still_alive_after(token, grace_s=5.0) == []


def test_this_session_has_a_token_that_its_children_inherit() -> None:
    token = os.environ[SESSION_VARIABLE]
    process = start_sleeper()
    try:
        assert process.pid in {leaked.pid for leaked in marked_processes(token)}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_this_process_s_own_multiprocessing_helper_is_not_counted_but_another_s_is() -> None:
    token = uuid.uuid4().hex
    # A process that starts its own resource tracker (as torch does in the pytest process), then sleeps.
    code = (
        "from multiprocessing import resource_tracker; resource_tracker.ensure_running(); import time; time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, SESSION_VARIABLE: token})
    try:
        deadline = time.monotonic() + 30
        while not own_helpers(parent.pid):
            assert time.monotonic() < deadline, "the resource tracker never started"
            time.sleep(0.1)
        helpers = own_helpers(parent.pid)
        assert {leaked.pid for leaked in marked_processes(token)} == {parent.pid, *helpers}
        assert [leaked.pid for leaked in marked_processes(token, exclude=helpers | {parent.pid})] == []
        assert own_helpers(os.getpid()) & helpers == frozenset()  # not this process's
    finally:
        stop(marked_processes(token))
        parent.wait(timeout=10)
