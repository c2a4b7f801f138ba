"""Graceful shutdown: SIGTERM (or SIGINT) starts a drain instead of an abrupt stop.

A rolling update sends SIGTERM and, at about the same time, starts taking the process out of its
load balancer; the two race, so for a while requests keep arriving. uvicorn alone stops listening at
once and closes every idle keep-alive connection, including those whose client has just sent its next
request: that request is lost (the client sees the connection close without an answer). So, on the
first signal:

1. `/readyz` answers 503 at once, so load balancers and Kubernetes stop sending new requests;
2. for `AE_SHUTDOWN_DRAIN_S` seconds the server goes on accepting and serving as before, except that
   every answer carries `Connection: close` (the request pipeline, app.http.middleware, adds it): each
   connection ends right after an answer, when its client knows not to send on it any more, never while
   a request may be on the wire;
3. the listening socket stops queueing new connections (its backlog set to 0: the kernel then leaves
   new handshakes unanswered, the clients retry and are refused once the socket closes) and the server
   accepts what was already queued; only then does it stop accepting. Closing a listening socket resets
   the connections still queued on it, whose clients may well have sent their request already;
4. then uvicorn's own graceful shutdown runs: it closes the connections that are idle (by now, those
   whose client sent nothing during the whole drain; app.process.connections gives one that has not sent its
   first request yet a moment to do so), waits for the requests it has read (their batches included)
   and runs the lifespan's shutdown. The process exits with 0.
   A gRPC server in the same process (AE_GRPC_PORT, app.oip) serves through the drain too (its ServerReady
   says false at once), and stops accepting calls with HTTP, then finishes the calls it has (`on_stop`).

A second SIGINT (Ctrl+C twice) stops at once, as uvicorn does.

The app installs the drain itself (`Drain.install`, from the lifespan): it takes over uvicorn's
handlers of SIGTERM and SIGINT in the process that serves, and hands over to uvicorn (its
`should_exit`, the documented way to stop a `uvicorn.Server`) when the drain ends. So it works the
same under `uvicorn app.main:app`, with `--workers N` (each worker drains) and under `ae-serve`.
Under any other server (the test client, say) nothing is installed and the process stops as that
server decides.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger("app.lifecycle")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """Whether the process is draining, since when, and the hand-over to uvicorn when the drain ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started_at: float | None = None  # time.monotonic() of the first signal
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stoppers: list[Callable[[], Awaitable[object]]] = []
        self._stopping: list[asyncio.Future[object]] = []  # kept until done: the loop holds tasks weakly

    def on_stop(self, stop: Callable[[], Awaitable[object]]) -> None:
        """Start `stop` when the drain ends, as HTTP stops accepting (the gRPC server, app.oip)."""
        self._stoppers.append(stop)

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def install(self) -> bool:
        """Take over SIGTERM and SIGINT from the uvicorn server running this app; False when there is none.

        Called from the lifespan's start-up, which uvicorn runs in the main thread after installing its
        own handlers (`uvicorn.Server.capture_signals`); uvicorn puts its handlers back when it stops."""
        if threading.current_thread() is not threading.main_thread():
            return False
        handler = signal.getsignal(signal.SIGTERM)
        server = getattr(handler, "__self__", None)
        if not isinstance(server, uvicorn.Server):
            return False
        self._server = server
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        return True

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread: hand the work to the event loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.begin, sig)

    def begin(self, sig: int = signal.SIGTERM) -> None:
        """Start draining (first signal); a second SIGINT stops at once."""
        if self.started_at is not None:
            if sig == signal.SIGINT and self._server is not None:
                logger.warning("second SIGINT: stopping without finishing the drain")
                self._server.force_exit = True
                self._server.should_exit = True
            return
        self.started_at = time.monotonic()
        logger.warning(
            "%s: draining for %g s (readiness 503, answers close their connections), then shutting down",
            signal.Signals(sig).name,
            self.seconds,
        )
        asyncio.get_running_loop().call_later(self.seconds, self.hand_over)

    def hand_over(self) -> None:
        asyncio.get_running_loop().create_task(self.stop_listening_then_exit())

    async def stop_listening_then_exit(self) -> None:
        """The drain is over: accept what the listening sockets hold, stop accepting, and let uvicorn
        finish the requests it has read."""
        logger.warning("drain over after %.1f s: stopping", time.monotonic() - (self.started_at or 0.0))
        if self._server is None:
            return
        servers = list(getattr(self._server, "servers", []))
        listeners = [sock for server in servers for sock in (server.sockets or ())]
        for sock in listeners:
            stop_queueing(sock)
        deadline = time.monotonic() + EMPTY_QUEUE_WAIT_S
        while any(accept_queue_length(sock) for sock in listeners) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the event loop accepts them meanwhile
        for server in servers:
            server.close()  # no more accepting (uvicorn's shutdown closes them too; once is enough)
        self._stopping = [asyncio.ensure_future(stop()) for stop in self._stoppers]
        self._server.should_exit = True  # no signal is re-raised: the process exits 0


EMPTY_QUEUE_WAIT_S = 1.0  # the longest the server waits for its listening sockets' queues to empty


def stop_queueing(sock: Any) -> None:
    """Set a listening socket's backlog to 0: the kernel keeps at most one connection waiting to be
    accepted and leaves further handshakes unanswered (the clients retry, and are refused once the socket
    is closed) instead of queueing connections that closing the socket would reset."""
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:  # the same socket; closing the copy is harmless
            duplicate.listen(0)
    except OSError as exc:
        logger.warning("could not stop the listening socket from queueing: %s", exc)


def accept_queue_length(sock: Any) -> int:
    """Connections waiting on a listening socket to be accepted (Linux: tcpi_unacked of TCP_INFO on a
    listener is its accept queue's length); 0 where that cannot be read."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        return int(struct.unpack_from("I", info, TCPI_UNACKED_OFFSET)[0])
    except (AttributeError, OSError, struct.error):
        return 0


TCP_INFO_SIZE = 104
TCPI_UNACKED_OFFSET = 24  # after 8 one-byte fields and 4 u32s (rto, ato, snd_mss, rcv_mss): struct tcp_info
