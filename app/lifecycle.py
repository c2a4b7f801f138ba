"""Graceful shutdown: SIGTERM (or SIGINT) starts a drain instead of an abrupt stop.

A rolling update sends SIGTERM and, at about the same time, starts taking the process out of its
load balancer; the two race, so for a while requests keep arriving. uvicorn alone stops listening at
once and closes every idle keep-alive connection, including those whose client has just sent its next
request: that request is lost (the client sees the connection close without an answer). So, on the
first signal:

1. `/readyz` answers 503 at once, so load balancers and Kubernetes stop sending new requests;
2. for `AE_SHUTDOWN_DRAIN_S` seconds the server goes on accepting and serving as before, except that
   every answer carries `Connection: close`: each connection ends right after an answer, when its
   client knows not to send on it any more, never while a request may be on the wire;
3. then uvicorn's own graceful shutdown runs: it stops listening, closes the connections that are
   idle (by now, those whose client sent nothing during the whole drain), waits for the requests it
   has read (their batches included) and runs the lifespan's shutdown. The process exits with 0.

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
import signal
import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app.lifecycle")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """Whether the process is draining, since when, and the hand-over to uvicorn when the drain ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started_at: float | None = None  # time.monotonic() of the first signal
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        """The drain is over: uvicorn stops listening and finishes the requests it has read."""
        logger.warning("drain over after %.1f s: stopping", time.monotonic() - (self.started_at or 0.0))
        if self._server is not None:
            self._server.should_exit = True  # no signal is re-raised: the process exits 0


class CloseConnectionsWhenDraining:
    """While draining, every answer says `Connection: close` (uvicorn then closes the connection once the
    answer is sent), so a client never sends its next request on a connection that is about to close."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
