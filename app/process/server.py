"""Running the service under uvicorn as `ae-serve` does: the settings, the guarded protocol, workers.

`serve(settings, host, port, workers)` is `uvicorn.run("app.main:app", ...)` with:

- the HTTP protocol of app.process.connections (header and body deadlines, the connection cap) and the
  keep-alive timeout of the settings;
- a shutdown bound: uvicorn waits for the requests it has read for at most the longest a request may
  take (its body deadline plus the batch timeout, plus a margin), then cancels what is left;
- with several workers, `Supervisor`, uvicorn's process supervisor with three changes:
  1. `/metrics` is correct whatever worker answers the scrape: each worker writes its metrics to files
     in a directory of its own (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`) and
     a scrape adds up the files of every worker, the dead ones' counters included;
  2. a worker that dies (even `kill -9`) is replaced, as uvicorn does, and marked dead for the
     metrics (its gauges leave the sums); the replacement accepts connections only once its start-up
     (models loaded, warm-up passes run) is done, since uvicorn starts listening after the lifespan;
  3. on SIGTERM the supervisor signals the workers, which drain (app.process.drain), and closes its own
     copy of the listening socket at once: the socket then closes with the last worker that drains, so
     new connections are refused rather than left in a queue nobody accepts from.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.process.connections import GuardedHttpToolsProtocol
from app.settings import Settings

logger = logging.getLogger("app.server")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
SHUTDOWN_MARGIN_S = 5.0


def uvicorn_config(settings: Settings, host: str, port: int, workers: int) -> uvicorn.Config:
    return uvicorn.Config(
        "app.main:app",
        host=host,
        port=port,
        workers=workers,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works; typed int
        timeout_graceful_shutdown=settings.body_timeout_s + settings.batch_timeout_s + SHUTDOWN_MARGIN_S,  # type: ignore[arg-type]
        log_level=settings.log_level,
        access_log=False,  # the service logs one JSON line per request itself
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run the service until SIGTERM/SIGINT and its drain are over; exits 3 if it could not start."""
    config = uvicorn_config(settings, host, port, workers)
    if workers == 1:
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)
        return
    metrics_dir = Path(tempfile.mkdtemp(prefix="ae-metrics-"))
    os.environ[METRICS_DIR_VARIABLE] = str(metrics_dir)  # inherited by the workers, read when they import
    try:
        Supervisor(config, sockets=[config.bind_socket()]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which also marks dead workers for the metrics and lets go of the
    listening socket as soon as the workers are told to stop (see the module's docstring)."""

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                logger.warning("worker %d died and was replaced", pid)
                multiprocess.mark_process_dead(pid)

    def terminate_all(self) -> None:
        super().terminate_all()  # SIGTERM: each worker drains, then stops
        for sock in self.sockets:
            sock.close()  # the workers hold their own copies; they close them when their drain ends
