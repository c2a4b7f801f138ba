"""A fresh local Ray instance (bound to 127.0.0.1) running the application, for the scale-out tests: what it
started is recorded, so that a test can check that shutting it down stops every process.

Import it after `pytest.importorskip("ray.serve")`: it imports Ray.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import serve

from ae_ray.application import build_app

APP = "ae"


@dataclass
class RayApp:
    url: str
    started_pids: set[int] = field(default_factory=set)
    shut_down: bool = False

    def shutdown(self) -> None:
        if not self.shut_down:
            self.shut_down = True
            serve.shutdown()
            ray.shutdown()


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (read from /proc: Linux, as CI)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_ray_app(env: dict[str, str], args: dict[str, Any], num_cpus: int) -> Iterator[RayApp]:
    """`build_app(args)` served on a fresh local Ray instance with `num_cpus` logical CPUs; `env` (AE_*) is the
    replicas' environment (the job's runtime_env) and the builder's (this process's, while it builds)."""
    before = descendants(os.getpid())
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    port = free_port()
    app = RayApp(f"http://127.0.0.1:{port}")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            application = build_app(args)
        serve.run(application, name=APP, route_prefix="/")
        app.started_pids = descendants(os.getpid()) - before
        yield app
    finally:
        app.shutdown()
